#!/usr/bin/env bash
# The main job, from a fresh machine: a local Kubernetes control plane (etcd +
# kube-apiserver built from source), SoftHSM2, chop's CRDs and the examples, and
# chop-responder answering OCSP from the cluster, and a sample PKI made by chop's
# core with its CA keys in SoftHSM2, ending with checks you can see: kubectl
# output and the openssl CLI verifying chains, CRLs and OCSP.
#
#   bash scripts/demo.sh [OUTPUT_DIR]      (default: ./demo-output)
#
# chop-controller runs as a local process (there is no kubelet here) under its
# least-privilege ClusterRole, with the CA keys in a fresh SoftHSM2 token. The
# control plane and the controller are stopped when the demo ends.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

if [[ ${1:-} != --inside ]]; then
  OUT=$(realpath -m "${1:-demo-output}")
  rm -rf "$OUT.run"
  ensure_packages
  echo "== building chop (release) and the control plane binaries (cached after the first run)"
  cargo build --release --locked -p ca --examples
  cargo build --release --locked -p chop-controller --bin chop-controller
  cargo build --release --locked -p kubectl-chop --bin kubectl-chop
  cargo build --release --locked -p chop-responder --bin chop-responder
  bash e2e/controlplane.sh build
  KUBECTL="$(bash e2e/controlplane.sh bin-dir)/kubectl"
  export KUBECTL OUT
  exec bash e2e/controlplane.sh run -- bash "$0" --inside
fi

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
check() { printf '  [OK] %s\n' "$*"; }
fail() { printf '  [FAILED] %s\n' "$*"; exit 1; }
k() { "$KUBECTL" "$@"; }
expect() { # expect WHAT PATTERN COMMAND...: run COMMAND, require PATTERN in its output.
  local what=$1 pattern=$2 out; shift 2
  out=$("$@" 2>&1 || true)
  if grep -q -- "$pattern" <<<"$out"; then check "$what"; else printf '%s\n' "$out" | sed 's/^/    /'; fail "$what"; fi
}

step "Kubernetes API server is up"
k version 2>/dev/null | sed 's/^/  /'
k get --raw /readyz >/dev/null && check "/readyz answers"

step "Install chop: CRDs, trusted roles and admission policies (manifests/, docs/roles.md)"
k apply --server-side -k manifests/ | sed 's/^/  /'
k wait --for condition=Established --timeout=60s crd --all >/dev/null && check "CRDs established"
k create namespace moica >/dev/null
# It will hold the CAs' registers: only such a namespace may hold a CA, and it may
# not be deleted before it is decommissioned (chop-register-protection).
k label namespace moica chop.dev/register=true >/dev/null
k create rolebinding officers -n moica --clusterrole=chop:officer --group=chop:officers >/dev/null
k create rolebinding auditors -n moica --clusterrole=chop:auditor --group=chop:auditors >/dev/null
OFFICER=$(bash e2e/controlplane.sh user officer-1 chop:officers)
AUDITOR=$(bash e2e/controlplane.sh user auditor-1 chop:auditors)
check "officer-1 (group chop:officers) and auditor-1 (chop:auditors) bound in namespace moica"
# Admission policies take effect a moment after they are created: wait until the
# one that records who asked for a request (chop.dev/requested-by) is active.
for i in $(seq 1 60); do
  who=$(k create --dry-run=server -n moica -o jsonpath='{.metadata.annotations.chop\.dev/requested-by}' -f - 2>/dev/null <<'YAML' || true
apiVersion: chop.dev/v1alpha1
kind: CertificateRequest
metadata: {name: probe}
spec: {caRef: {name: moica}, profile: Signature, subscriber: {reference: probe, commonName: probe}, publicKey: "x"}
YAML
)
  [[ -n $who ]] && break
  [[ $i == 60 ]] && fail "admission policies did not become active"
  sleep 1
done
check "admission policies active (requests record their requester: $who)"

step "Start chop-controller (local process, CA keys in a fresh SoftHSM2 token)"
k create rolebinding chop-controller -n moica --clusterrole=chop-controller --user=chop-controller >/dev/null
CONTROLLER_KUBECONFIG=$(bash e2e/controlplane.sh user chop-controller)
mkdir -p "$OUT.run/tokens"
printf 'directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\n' "$OUT.run/tokens" > "$OUT.run/softhsm2.conf"
export SOFTHSM2_CONF="$OUT.run/softhsm2.conf"
# The PIN is the one in examples/hsm-pin-secret.yaml.
softhsm2-util --init-token --free --label moica --pin change-me-1234 --so-pin "$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')" | sed 's/^/  /'
# The audit token: the controller generates its audit key (chop-audit) there and
# records every action in AuditSegments of namespace moica before it acts.
AUDIT_PIN=$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')
softhsm2-util --init-token --free --label chop-audit --pin "$AUDIT_PIN" --so-pin "$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')" | sed 's/^/  /'
KUBECONFIG=$CONTROLLER_KUBECONFIG POD_NAME=chop-controller-demo RUST_LOG=info \
  CHOP_AUDIT_TOKEN_LABEL=chop-audit CHOP_AUDIT_PIN=$AUDIT_PIN \
  "$TARGET"/release/chop-controller --namespace moica --lease-namespace moica --metrics-addr 127.0.0.1:0 \
  >"$OUT.run/controller.log" 2>&1 &
CONTROLLER_PID=$!
RESPONDER_PID=
trap 'kill $CONTROLLER_PID $RESPONDER_PID 2>/dev/null || true' EXIT
sleep 1
kill -0 $CONTROLLER_PID 2>/dev/null || { cat "$OUT.run/controller.log"; fail "chop-controller did not start"; }
check "chop-controller running as user chop-controller (log: $OUT.run/controller.log)"

step "Apply the MOICA-shaped examples: CAs, the PIN Secret, a CRL schedule, two requests"
for f in hsm-pin-secret certificateauthority-root certificateauthority-subordinate crlschedule \
         certificaterequest-signature certificaterequest-encryption; do
  k apply --server-side -n moica -f "examples/$f.yaml" | sed 's/^/  /'
done
k wait -n moica --for=condition=Ready --timeout=120s certificateauthority/moica-root >/dev/null \
  || { tail -20 "$OUT.run/controller.log"; fail "root CA not Ready"; }
check "root CA self-signed with its key generated in the HSM"
# A CA certificate is never signed without an officer: the subordinate asks its
# parent with a CertificateRequest of its own (profile SubordinateCA).
for i in $(seq 60); do
  k get -n moica certificaterequest moica-ca-certificate >/dev/null 2>&1 && break
  sleep 1
done
reason=$(k get -n moica certificateauthority moica -o jsonpath='{.status.conditions[?(@.type=="Ready")].reason}')
[[ $reason == WaitingForApproval ]] || fail "the subordinate is not waiting for an officer (Ready reason: $reason)"
check "subordinate CA waits for an officer to approve its certificate (CertificateRequest moica-ca-certificate)"
ca_approve='{"status":{"conditions":[{"type":"Approved","status":"True","reason":"OfficerApproved","message":"CA certificate approved at the key ceremony","lastTransitionTime":"2026-11-29T00:00:00Z"}]}}'
KUBECONFIG=$OFFICER k patch -n moica certificaterequest moica-ca-certificate --subresource=status --type=merge -p "$ca_approve" >/dev/null \
  || fail "officer-1 could not approve the subordinate's certificate"
k wait -n moica --for=condition=Ready --timeout=120s certificateauthority/moica >/dev/null \
  || { tail -20 "$OUT.run/controller.log"; fail "subordinate CA not Ready"; }
check "officer-1 approved; subordinate signed by the root"
k get certificateauthority -n moica | sed 's/^/  /'

step "kubectl explain shows the CPS where it matters"
k explain certificaterequest.spec.subscriber.reference | sed -n '1,12p' | sed 's/^/  /'

step "The API server itself refuses what the CPS forbids"
if msg=$(k apply -n moica -f - 2>&1 <<'YAML'
apiVersion: chop.dev/v1alpha1
kind: CRLSchedule
metadata: {name: too-long}
spec: {caRef: {name: moica}, validity: 37h}
YAML
); then fail "a 37h CRL validity was accepted"; fi
echo "  $msg" | head -3
check "CRL validity over 36h rejected (CPS §4.9.7)"

step "Only officers approve, and only through the API server's own checks"
approve='{"status":{"conditions":[{"type":"Approved","status":"True","reason":"OfficerApproved","message":"identity checked at the counter","lastTransitionTime":"2026-11-29T00:00:00Z"}]}}'
if msg=$(KUBECONFIG=$AUDITOR k patch -n moica certificaterequest wang-xiaoming-signature --subresource=status --type=merge -p "$approve" 2>&1); then
  fail "an auditor approved a request"
fi
echo "  auditor-1: $msg" | head -2
check "an auditor cannot approve (CPS §5.2)"
KUBECONFIG=$OFFICER k patch -n moica certificaterequest wang-xiaoming-signature --subresource=status --type=merge -p "$approve" >/dev/null \
  || fail "officer-1 could not approve"
check "officer-1 approved wang-xiaoming-signature"
KUBECONFIG=$OFFICER k patch -n moica certificaterequest wang-xiaoming-encryption --subresource=status --type=merge -p "$approve" >/dev/null \
  || fail "officer-1 could not approve the encryption request"
k get certificaterequest -n moica | sed 's/^/  /'

step "The applicant accepts (CPS §4.4); only then does the CA sign"
k patch -n moica certificaterequest wang-xiaoming-signature --type=merge -p '{"spec":{"accepted":true}}' >/dev/null
k wait -n moica --for=condition=Issued --timeout=120s certificaterequest/wang-xiaoming-signature certificaterequest/wang-xiaoming-encryption >/dev/null \
  || { tail -20 "$OUT.run/controller.log"; fail "requests not issued"; }
k get certificaterequest -n moica -o wide | sed 's/^/  /'
mkdir -p "$OUT.run/issued"
for r in signature encryption; do
  k get certificaterequest -n moica "wang-xiaoming-$r" -o jsonpath='{.status.certificate}' > "$OUT.run/issued/$r.pem"
done
k get certificaterequest -n moica wang-xiaoming-signature -o jsonpath='{.status.chain}' > "$OUT.run/issued/chain.pem"
k get certificateauthority -n moica moica-root -o jsonpath='{.status.certificate}' > "$OUT.run/issued/root.pem"
openssl x509 -in "$OUT.run/issued/signature.pem" -noout -subject -nameopt utf8,sep_comma_plus_space | sed 's/^/  /'
expect "openssl verify: the issued signature and encryption certificates chain to the root" "encryption.pem: OK" \
  openssl verify -x509_strict -CAfile "$OUT.run/issued/root.pem" -untrusted "$OUT.run/issued/chain.pem" \
  "$OUT.run/issued/signature.pem" "$OUT.run/issued/encryption.pem"
k get issuedcertificates -n moica | sed 's/^/  /'

step "Revoke the signature certificate, hold the encryption certificate"
k apply --server-side -n moica -f examples/revocation.yaml -f examples/suspension.yaml | sed 's/^/  /'
k wait -n moica --for=condition=Applied --timeout=60s revocation/wang-xiaoming-key-compromise >/dev/null || fail "revocation not applied"
k wait -n moica --for=jsonpath='{.status.state}'=Held --timeout=60s suspension/wang-xiaoming-hold >/dev/null || fail "suspension not held"
expect "a Revocation cannot be changed or undone (the API server says so)" "cannot be changed or undone" \
  k patch -n moica revocation wang-xiaoming-key-compromise --type merge -p '{"spec":{"reason":"superseded"}}'
k get issuedcertificates -n moica | sed 's/^/  /'
k wait -n moica --for=jsonpath='{.status.entries}'=2 --timeout=60s crlschedule/moica >/dev/null || fail "no CRL with both entries"
k get crlschedule -n moica | sed 's/^/  /'
n=$(k get configmap -n moica moica-crl -o jsonpath='{.data.number}')
chunks=$(k get configmap -n moica moica-crl -o jsonpath='{.data.chunks}')
: > "$OUT.run/issued/crl.der"
for ((i = 0; i < chunks; i++)); do
  k get configmap -n moica "moica-crl-$n-$i" -o jsonpath='{.binaryData.chunk}' | base64 -d >> "$OUT.run/issued/crl.der"
done
[[ $(sha256sum < "$OUT.run/issued/crl.der" | cut -d' ' -f1) == $(k get configmap -n moica moica-crl -o jsonpath='{.data.sha256}') ]] \
  && check "CRL number $n reassembled from $chunks ConfigMap chunk(s), SHA-256 matches the manifest"
openssl crl -inform DER -in "$OUT.run/issued/crl.der" -out "$OUT.run/issued/crl.pem"
cat "$OUT.run/issued/chain.pem" "$OUT.run/issued/root.pem" > "$OUT.run/issued/all.pem"
expect "openssl crl: the published CRL verifies under the issuing CA" "verify OK" \
  openssl crl -in "$OUT.run/issued/crl.pem" -CAfile "$OUT.run/issued/all.pem" -noout
openssl crl -in "$OUT.run/issued/crl.pem" -noout -text | grep -E "Serial Number|Key Compromise|Certificate Hold|CRL Number" -A0 | sed 's/^ */  /'
expect "openssl verify -crl_check: the signature certificate is revoked" "certificate revoked" \
  openssl verify -crl_check -CAfile "$OUT.run/issued/all.pem" -CRLfile "$OUT.run/issued/crl.pem" "$OUT.run/issued/signature.pem"
expect "openssl verify -crl_check: the encryption certificate is on hold" "certificate revoked" \
  openssl verify -crl_check -CAfile "$OUT.run/issued/all.pem" -CRLfile "$OUT.run/issued/crl.pem" "$OUT.run/issued/encryption.pem"

step "chop-responder answers OCSP from the cluster (the CA's delegated responder, read-only RBAC)"
k wait -n moica --for=condition=ResponderReady --timeout=60s certificateauthority/moica >/dev/null \
  || { tail -20 "$OUT.run/controller.log"; fail "responder not configured"; }
k get -n moica secret/moica-ocsp-responder deployment/moica-responder service/moica-responder \
  role/moica-responder rolebinding/moica-responder rolebinding/moica-responder-key 2>&1 | sed 's/^/  /'
check "the controller certified a delegated OCSP key and applied the responder workload (owned by the CA)"
k get -n moica secret moica-ocsp-responder -o jsonpath='{.data.tls\.crt}' | base64 -d > "$OUT.run/issued/ocsp-responder.pem"
expect "openssl: the delegated responder certificate is for OCSP signing, with ocsp-nocheck" "OCSP No Check" \
  openssl x509 -in "$OUT.run/issued/ocsp-responder.pem" -noout -text
# No kubelet here: run the Deployment's command as a local process, as its
# ServiceAccount (RBAC matches a ServiceAccount subject by user name).
cp "$(bash e2e/controlplane.sh user system:serviceaccount:moica:moica-responder system:serviceaccounts)" "$OUT.run/responder.kubeconfig"
KUBECONFIG=$OUT.run/responder.kubeconfig RUST_LOG=info \
  "$TARGET"/release/chop-responder serve --kube --namespace moica --ca moica --listen 127.0.0.1:18080 \
  >"$OUT.run/responder.log" 2>&1 &
RESPONDER_PID=$!
for i in $(seq 1 60); do
  curl -fsS http://127.0.0.1:18080/readyz >/dev/null 2>&1 && break
  [[ $i == 60 ]] && { cat "$OUT.run/responder.log"; fail "chop-responder not ready"; }
  sleep 0.5
done
check "chop-responder ready as system:serviceaccount:moica:moica-responder (log: $OUT.run/responder.log)"
openssl x509 -in "$OUT.run/issued/chain.pem" -out "$OUT.run/issued/issuer.pem"
ocsp_status() { # ocsp_status CERT: "good", "revoked (keyCompromise)", ... from chop-responder
  local out
  out=$(openssl ocsp -url http://127.0.0.1:18080/ -issuer "$OUT.run/issued/issuer.pem" -CAfile "$OUT.run/issued/all.pem" \
    -cert "$1" -resp_text 2>&1 || true)
  grep -q "Response verify OK" <<<"$out" || { printf '%s\n' "$out" | sed 's/^/    /'; return 1; }
  grep -oE "Cert Status: [a-z]+|Revocation Reason: [A-Za-z]+" <<<"$out" | paste -sd, -
}
expect "openssl ocsp (nonce, verified to the root): the signature certificate is revoked, keyCompromise" \
  "Cert Status: revoked,Revocation Reason: keyCompromise" ocsp_status "$OUT.run/issued/signature.pem"
expect "openssl ocsp: the encryption certificate is on hold (certificateHold)" \
  "Cert Status: revoked,Revocation Reason: certificateHold" ocsp_status "$OUT.run/issued/encryption.pem"
k patch -n moica suspension wang-xiaoming-hold --type=merge -p '{"spec":{"resumed":true}}' >/dev/null
good=
for i in $(seq 1 40); do
  if ocsp_status "$OUT.run/issued/encryption.pem" 2>/dev/null | grep -q "Cert Status: good"; then good=1; break; fi
  sleep 0.25
done
[[ -n $good ]] && check "resumed: openssl ocsp says good again for the encryption certificate" || fail "resume not visible in OCSP"
curl -fsS http://127.0.0.1:18080/crl/moica.crl -o "$OUT.run/issued/served.crl"
expect "the repository serves the current CRL (/crl/moica.crl), verified by openssl" "verify OK" \
  openssl crl -inform DER -in "$OUT.run/issued/served.crl" -CAfile "$OUT.run/issued/all.pem" -noout
serial=$(openssl x509 -in "$OUT.run/issued/signature.pem" -noout -serial | cut -d= -f2)
curl -fsS "http://127.0.0.1:18080/certs/$serial.pem" -o "$OUT.run/issued/served-signature.pem"
cmp -s "$OUT.run/issued/served-signature.pem" "$OUT.run/issued/signature.pem" \
  && check "the repository serves the issued certificate by serial (/certs/$serial.pem)" \
  || fail "/certs/$serial.pem differs from the issued certificate"

step "The audit trail: every action above, signed by the HSM audit key, verified"
k get auditsegments -n moica | sed 's/^/  /'
expect "kubectl chop audit verify --from-cluster: the trail verifies" "audit trail verified" \
  "$TARGET"/release/kubectl-chop audit verify --from-cluster -n moica

step "A sample PKI from chop's core, CA keys in a fresh SoftHSM2 token"
rm -rf "$OUT"
"$TARGET"/release/examples/sample_pki "$OUT" | sed -n '1p' | sed 's/^/  /'
cd "$OUT"
openssl x509 -in signature.pem -noout -subject -issuer -nameopt utf8,sep_comma_plus_space | sed 's/^/  /'
expect "openssl verify: root → subordinate → signature, encryption, OCSP responder" "responder.pem: OK" \
  openssl verify -x509_strict -CAfile root.pem -untrusted subordinate.pem signature.pem encryption.pem responder.pem
openssl crl -inform DER -in crl.der -out crl.pem && openssl crl -inform DER -in root-crl.der -out root-crl.pem
expect "openssl crl: the subordinate's CRL verifies" "verify OK" openssl crl -in crl.pem -CAfile chain.pem -noout
verify_crl() { openssl verify -crl_check_all -CAfile root.pem -untrusted subordinate.pem -CRLfile crl.pem -CRLfile root-crl.pem "$1"; }
expect "openssl verify -crl_check_all: signature.pem is good" "signature.pem: OK" verify_crl signature.pem
expect "openssl verify -crl_check_all: revoked.pem is revoked" "certificate revoked" verify_crl revoked.pem
expect "openssl verify -crl_check_all: held.pem is on hold" "certificate revoked" verify_crl held.pem
for s in good revoked held unknown; do
  out=$(openssl ocsp -respin "ocsp-$s.der" -reqin "ocsp-$s.req.der" -CAfile chain.pem -resp_text 2>&1 || true)
  status=$(grep -oE "Cert Status: [a-z]+|Revocation Reason: [A-Za-z]+" <<<"$out" | paste -sd, -)
  grep -q "Response verify OK" <<<"$out" || fail "openssl ocsp ($s) did not verify"
  check "openssl ocsp ($s request, nonce checked): Response verify OK, $status"
done

step "Done"
echo "  Sample PKI in $OUT (see ca/examples/sample_pki.rs for what each file is)."
echo "  The operator's own output (issued certificates, the published CRL) is in $OUT.run/issued."
echo "  chop-responder's log: $OUT.run/responder.log; the controller's: $OUT.run/controller.log."
