#!/usr/bin/env bash
# Issue 4's operator benchmark, in one run on a private local control plane
# with the release chop-controller and chop-responder binaries
# (controller/examples/bench_operator.rs does the work):
#   1. raw SoftHSM2 RSA-2048 signing rate with the CA key (same token);
#   2. N certificates end to end (create -> approval -> Issued=True), certs/s
#      next to the raw HSM rate; target >= 50 certs/s;
#   3. Revocation -> first OCSP "revoked" from chop-responder --kube:
#      p50/p99/max; target p99 < 2 s;
#   4. BENCH_RECORDS IssuedCertificates: VmRSS/VmHWM of controller, responder,
#      kube-apiserver and etcd, and one revocation latency at that size.
#
#   5. with --audit-compare: only step 2, with the same N, the audit trail off
#      (`--audit off`) and on in BENCH_ROUNDS (default 3) alternating rounds, each
#      on a fresh plane, printing the medians' ratio (target >= 0.90) and the
#      trail's records and bytes per certificate.
#
#   6. with --scale-compare: instead of 2-4, BENCH_ROUNDS (default 2) rounds of
#      N certificates with an empty register, then BENCH_RECORDS records created
#      directly, then BENCH_ROUNDS rounds more, on one plane; prints each round,
#      the medians' ratio (issue 12: >= 0.90) and the API requests per
#      certificate of each side. The rounds cannot alternate (records are not
#      removed), so the empty side runs first.
#
# Usage: scripts/bench-operator.sh [--audit-compare|--scale-compare] [N]   (N certificates, default 500)
# Environment (defaults): BENCH_RECORDS=100000, BENCH_REVOCATIONS=50,
#   BENCH_INFLIGHT=32 (requests not yet issued at a time),
#   BENCH_APPROVAL=auto (autoApproveUsers; `officer`: an officer's SSA approval),
#   KEEP=0 (1: keep the work directory with the controller and responder logs),
#   BENCH_CONTROLLER_BIN (another chop-controller binary to measure, e.g. an
#   older build for a before/after comparison; default: the one built here).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
# shellcheck source=scripts/lib.sh
source scripts/lib.sh
ensure_packages
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
COMPARE=0
if [[ ${1:-} == --audit-compare ]]; then
  COMPARE=1
  shift
elif [[ ${1:-} == --scale-compare ]]; then
  export BENCH_SCALE_COMPARE=1
  shift
fi
export BENCH_N=${1:-${BENCH_N:-500}}
KEEP=${KEEP:-0}

echo "== building chop-controller, chop-responder and the benchmark (release)"
cargo build --release --locked -q -p chop-controller -p chop-responder --bins --example bench_operator
export CHOP_CONTROLLER_BIN=${BENCH_CONTROLLER_BIN:-$CARGO_TARGET_DIR/release/chop-controller}
export CHOP_RESPONDER_BIN=$CARGO_TARGET_DIR/release/chop-responder
bash e2e/controlplane.sh build >/dev/null 2>&1 || bash e2e/controlplane.sh build
# kubectl reads kube-apiserver's request counters (API calls per certificate).
CHOP_KUBECTL=$(bash e2e/controlplane.sh bin-dir)/kubectl
export CHOP_KUBECTL

BENCH_DIR=$(mktemp -d /tmp/bench-operator.XXXXXX)
export BENCH_DIR
cleanup() {
  if [[ $KEEP == 1 ]]; then echo "work directory kept: $BENCH_DIR"; else rm -rf "$BENCH_DIR"; fi
}
trap cleanup EXIT

# The SoftHSM2 token the controller uses (and the benchmark, for the raw rate).
mkdir -p "$BENCH_DIR/tokens"
export SOFTHSM2_CONF=$BENCH_DIR/softhsm2.conf
printf '%s\n' "directories.tokendir = $BENCH_DIR/tokens" "objectstore.backend = file" \
  "log.level = ERROR" "slots.removable = false" >"$SOFTHSM2_CONF"
export BENCH_PIN=bench-$RANDOM$RANDOM
softhsm2-util --init-token --free --label moica --pin "$BENCH_PIN" --so-pin "so-$RANDOM$RANDOM" >/dev/null
# The audit token (the controller's audit key, label chop-audit).
softhsm2-util --init-token --free --label chop-audit --pin "$BENCH_PIN" --so-pin "so-$RANDOM$RANDOM" >/dev/null

if [[ $COMPARE == 1 ]]; then
  ROUNDS=${BENCH_ROUNDS:-3}
  echo "== audit trail off vs on, N=$BENCH_N each, $ROUNDS alternating rounds (a fresh plane each), $(nproc) cores"
  declare -a OFF ON
  for round in $(seq 1 "$ROUNDS"); do
    for mode in off on; do
      out=$(BENCH_AUDIT=$mode BENCH_ISSUANCE_ONLY=1 env -u CHOP_E2E_DIR \
        bash e2e/controlplane.sh run -- "$CARGO_TARGET_DIR/release/examples/bench_operator" 2>&1) || {
        echo "$out"
        exit 1
      }
      echo "-- round $round, audit $mode"
      echo "$out" | grep -E '^== (2|audit)|audit trail:|BENCH_RATE'
      rate=$(echo "$out" | sed -n 's/^BENCH_RATE audit=[a-z]* //p')
      if [[ $mode == off ]]; then OFF+=("$rate"); else ON+=("$rate"); fi
    done
  done
  # Median of each mode's rounds (the machine is noisy; rounds alternate).
  median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR % 2 ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2)}'; }
  awk -v on="$(median "${ON[@]}")" -v off="$(median "${OFF[@]}")" -v ons="${ON[*]}" -v offs="${OFF[*]}" 'BEGIN {
    r = on / off
    printf "== audit on/off (medians; on: %s, off: %s): %.1f / %.1f certs/s = %.3f; target >= 0.90 %s\n", ons, offs, on, off, r, (r >= 0.9 ? "MET" : "NOT MET")
  }'
  exit 0
fi

echo "== N=$BENCH_N, records=${BENCH_RECORDS:-100000}, approval=${BENCH_APPROVAL:-auto}; $(nproc) cores"
# `run` starts a private plane, runs the benchmark with KUBECONFIG and
# CHOP_E2E_DIR set, and stops the plane; the benchmark kills its children.
env -u CHOP_E2E_DIR bash e2e/controlplane.sh run -- "$CARGO_TARGET_DIR/release/examples/bench_operator"
