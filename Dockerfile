# The exgrpo image: one static Go binary (CGO_ENABLED=0) and nothing else.
#
# FROM scratch on purpose: the docker engine this project is built and tested
# on has no registry to pull base images from, so no other base (distroless,
# alpine, golang) is possible here. It also means no shell and no curl in the
# container: health checks run the binary itself (`exgrpo health --url ...`).
#
# Build with deploy/build-image.sh (or `make image`), which compiles the
# binary on the host and stages it under deploy/.image/ (the only part of the
# repository .dockerignore lets into the build context). Plain
# `docker build .` without that staging fails on the missing binary.
FROM scratch

# /data: JetStream storage and run directories; /auth: credentials written by
# `exgrpo auth init`; /tmp: scratch space. Owned by the unprivileged user so
# that named volumes mounted there (copied up from the image) are writable.
COPY --chown=65532:65532 deploy/.image/rootfs/ /
COPY deploy/.image/exgrpo /exgrpo

USER 65532:65532
WORKDIR /data
ENV TMPDIR=/tmp
# 4222 NATS clients, 6222 NATS routes, 8222 NATS monitoring, 9090 metrics and
# /healthz of a role, 8080 the inspect web page.
EXPOSE 4222 6222 8222 9090 8080
ENTRYPOINT ["/exgrpo"]
CMD ["help"]
