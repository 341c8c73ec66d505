# kubectl-vault container image: the image the vault-bootstrap chart
# (helm-hooks/) runs as a Helm hook Job. A static musl binary on
# distroless/static, running as the nonroot user (65532).
#
#   docker build -t ghcr.io/kubectl-vault/kubectl-vault:0.1.0 .
#
# The toolchain matches the one the tests run with (rust-version in Cargo.toml
# is only the floor). Multi-arch:
#   docker buildx build --platform linux/amd64,linux/arm64 .
# builds each platform natively under emulation; Alpine's toolchain targets
# musl, so the binary is static without cross-compilation.

FROM rust:1.95-alpine AS build
# ring (TLS) needs a C compiler; musl-dev provides the static libc.
RUN apk add --no-cache build-base musl-dev
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin kubectl-vault \
 && cp target/release/kubectl-vault /kubectl-vault \
 && /kubectl-vault version

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /kubectl-vault /usr/local/bin/kubectl-vault
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/kubectl-vault"]
CMD ["--help"]
