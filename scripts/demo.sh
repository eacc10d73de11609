#!/usr/bin/env bash
# The main job, from a fresh machine: a local Kubernetes control plane (etcd +
# kube-apiserver built from source), SoftHSM2, chop's CRDs and the examples, and
# a sample PKI made by chop's core with its CA keys in SoftHSM2, ending with checks
# you can see: kubectl output and the openssl CLI verifying chains, CRLs and OCSP.
#
#   bash scripts/demo.sh [OUTPUT_DIR]      (default: ./demo-output)
#
# The control plane is stopped when the demo ends. The chop-controller and
# chop-responder binaries are issue 4's; until they land, the demo shows the
# resources and the CA core's output, and says so.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

if [[ ${1:-} != --inside ]]; then
  OUT=$(realpath -m "${1:-demo-output}")
  ensure_packages
  echo "== building chop (release) and the control plane binaries (cached after the first run)"
  cargo build --release --locked -p ca --examples -p chop-crds
  bash e2e/controlplane.sh build
  KUBECTL="$(bash e2e/controlplane.sh bin-dir)/kubectl"
  export KUBECTL OUT
  exec bash e2e/controlplane.sh run -- bash "$0" --inside
fi

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
check() { printf '  [OK] %s\n' "$*"; }
fail() { printf '  [FAILED] %s\n' "$*"; exit 1; }
k() { "$KUBECTL" "$@"; }

step "Kubernetes API server is up"
k version 2>/dev/null | sed 's/^/  /'
k get --raw /readyz >/dev/null && check "/readyz answers"

step "Install chop: CRDs, trusted roles and admission policies (manifests/, docs/roles.md)"
k kustomize --load-restrictor LoadRestrictionsNone manifests | k apply --server-side -f - | sed 's/^/  /'
k wait --for condition=Established --timeout=60s crd --all >/dev/null && check "CRDs established"
k create namespace moica >/dev/null
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

step "Apply the MOICA-shaped examples (examples/*.yaml) in namespace moica"
k apply --server-side -n moica -f examples/ | sed 's/^/  /'
k get chop -n moica | sed 's/^/  /'

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
if msg=$(k patch -n moica revocation wang-xiaoming-key-compromise --type merge -p '{"spec":{"reason":"superseded"}}' 2>&1); then
  fail "a revocation was changed"
fi
echo "  $msg" | head -2
check "a Revocation cannot be changed or undone"

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
k get certificaterequest -n moica wang-xiaoming-signature | sed 's/^/  /'

step "A sample PKI from chop's core, CA keys in a fresh SoftHSM2 token"
rm -rf "$OUT"
target/release/examples/sample_pki "$OUT" | sed -n '1p' | sed 's/^/  /'
cd "$OUT"
openssl x509 -in signature.pem -noout -subject -issuer -nameopt utf8,sep_comma_plus_space | sed 's/^/  /'
expect() { # expect WHAT PATTERN COMMAND...: run COMMAND, require PATTERN in its output.
  local what=$1 pattern=$2 out; shift 2
  out=$("$@" 2>&1 || true)
  if grep -q -- "$pattern" <<<"$out"; then check "$what"; else printf '%s\n' "$out" | sed 's/^/    /'; fail "$what"; fi
}
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
echo "  Not yet: chop-controller and chop-responder reconciling these resources (issue 4)."
