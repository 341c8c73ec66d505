# kubectl-vault container image: the image the vault-bootstrap chart
# (helm-hooks/) runs as a Helm hook Job, the `unseal --watch` Deployment and
# the snapshot CronJob. For machines with a container engine; without one,
# `scripts/release --image` builds the same image with umoci and skopeo.
#
#   docker build --build-arg VERSION=0.1.0 --build-arg REVISION=$(git rev-parse HEAD) \
#     -t ghcr.io/kubectl-vault/kubectl-vault:0.1.0 .
#
# Same contents as `scripts/release --image`: the build stage is Debian 12,
# like the machines the release runs on, and lays out the root filesystem
# with the same scripts/image-rootfs (the binary, the shared libraries it
# links, Debian's CA bundle, passwd/group for user 65532); the final stage
# is `scratch` plus that tree, with the same config (user, entrypoint, env,
# working directory). No shell, no package manager.
#
# The toolchain matches the one the tests run with (rust-version in Cargo.toml
# is only the floor). Multi-arch: `docker buildx build --platform
# linux/amd64,linux/arm64 .` builds each platform natively under emulation.

FROM rust:1.95-bookworm AS build
ARG SOURCE_DATE_EPOCH=0
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin kubectl-vault \
 && target/release/kubectl-vault version \
 && SOURCE_DATE_EPOCH="$SOURCE_DATE_EPOCH" scripts/image-rootfs target/release/kubectl-vault /rootfs

FROM scratch
ARG VERSION=0.1.0
ARG REVISION=""
COPY --from=build /rootfs/ /
# COPY does not promise to keep the owner; the home is the user's.
COPY --from=build --chown=65532:65532 /rootfs/home/nonroot /home/nonroot
ENV PATH=/usr/local/bin SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
USER 65532:65532
WORKDIR /home/nonroot
LABEL org.opencontainers.image.title="kubectl-vault" \
      org.opencontainers.image.version="$VERSION" \
      org.opencontainers.image.revision="$REVISION" \
      org.opencontainers.image.source="https://github.com/kubectl-vault/kubectl-vault" \
      org.opencontainers.image.licenses="Apache-2.0"
ENTRYPOINT ["/usr/local/bin/kubectl-vault"]
CMD ["--help"]
