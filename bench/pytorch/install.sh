#!/bin/sh
# Installs the PyTorch CPU comparison: Debian's python3-torch and the pthread
# OpenBLAS (without which torch falls back to the reference BLAS), plus
# libopenblas-dev for the optional cgo OpenBLAS build of package policy
# (go build -tags openblas). Needs root; safe to run twice.
set -eu
export DEBIAN_FRONTEND=noninteractive
apt-get update
apt-get install -y --no-install-recommends python3-torch libopenblas0-pthread libopenblas-dev
/usr/bin/python3 -c 'import torch; print("torch", torch.__version__, "threads", torch.get_num_threads())'
