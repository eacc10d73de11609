# syntax=docker/dockerfile:1
# chop-controller. Build from the repository root:
#
#   docker build -f images/controller.Dockerfile -t ghcr.io/chop-dev/chop-controller:0.1.0 .
#
# No PKCS#11 module inside: the HSM component of the install
# (manifests/overlays/) mounts one at /opt/chop/pkcs11 (docs/install.md).

FROM docker.io/library/rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p chop-controller --bin chop-controller \
 && install -D -m 0755 target/release/chop-controller /out/chop-controller

# glibc (the module is loaded with dlopen), libgcc, libstdc++ and OpenSSL's
# libraries for vendor modules that link them; no shell, no package manager.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/chop-controller /usr/local/bin/chop-controller
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/chop-controller"]
