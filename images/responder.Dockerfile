# syntax=docker/dockerfile:1
# chop-responder, the image the controller runs per CA (--responder-image).
# Build from the repository root:
#
#   docker build -f images/responder.Dockerfile -t ghcr.io/chop-dev/chop-responder:0.1.0 .
#
# Only the chop-responder binary is in the image; it never touches an HSM (it
# signs with the delegated OCSP key from its Secret), and no controller code:
# chop-responder depends on chop-register (the CRL publication format and the
# partitioning it shares with the controller), never on chop-controller
# (responder/tests/dependencies.rs checks it).

FROM docker.io/library/rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p chop-responder --bin chop-responder \
 && install -D -m 0755 target/release/chop-responder /out/chop-responder

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/chop-responder /usr/local/bin/chop-responder
# Numeric, so that the kubelet can check runAsNonRoot.
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/chop-responder"]
