#!/usr/bin/env bash
# Builds the exgrpo container image: compiles a static binary on the host
# (CGO_ENABLED=0, so no golang base image is needed) and packs it into the
# FROM-scratch image of the top-level Dockerfile.
#
#   deploy/build-image.sh [TAG]        default tag: $EXGRPO_IMAGE or exgrpo:latest
#
# Environment: GOARCH (default: the host's), EXGRPO_IMAGE.
set -euo pipefail
cd "$(dirname "$0")/.."

tag=${1:-${EXGRPO_IMAGE:-exgrpo:latest}}
stage=deploy/.image
rm -rf "$stage"
mkdir -p "$stage/rootfs/data" "$stage/rootfs/auth" "$stage/rootfs/tmp"

echo "build-image: compiling static binary" >&2
CGO_ENABLED=0 GOOS=linux GOARCH=${GOARCH:-$(go env GOARCH)} \
  go build -trimpath -ldflags='-s -w' -o "$stage/exgrpo" ./cmd/exgrpo

echo "build-image: docker build -t $tag" >&2
docker build -q -t "$tag" -f Dockerfile . >/dev/null
echo "$tag"
