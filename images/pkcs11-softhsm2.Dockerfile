# syntax=docker/dockerfile:1
# The PKCS#11 module image of the SoftHSM2 component (manifests/overlays/softhsm),
# development only. The controller's init container copies /pkcs11 into the
# volume the controller loads the module from (the contract of
# manifests/deploy/deployment.yaml: /pkcs11/libpkcs11.so, its libraries in
# /pkcs11/lib, and `cp`).
#
#   docker build -f images/pkcs11-softhsm2.Dockerfile -t ghcr.io/chop-dev/chop-pkcs11-softhsm2:0.1.0 images

FROM docker.io/library/debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends softhsm2 \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /pkcs11/lib \
 && cp -L /usr/lib/softhsm/libsofthsm2.so /pkcs11/libpkcs11.so \
 && ldd /usr/lib/softhsm/libsofthsm2.so | awk '$2 == "=>" && $3 ~ /^\// {print $3}' \
      | grep -Ev '/(libc|libm|libdl|libpthread|librt|libgcc_s|ld-linux[^/]*)\.so' \
      | xargs -r -I{} cp -L {} /pkcs11/lib/ \
 && chmod -R a+rX /pkcs11
USER 65532:65532
