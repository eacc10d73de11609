#!/usr/bin/env bash
# chop-responder on the PostgreSQL register (issue 12), side by side in one run:
# a register of SMALL vs RECORDS certificates, one responder each with the same
# bounds; RSS, requests/s for pre-signed hits vs misses, revocation → first OCSP
# "revoked" p50/p99 over 200 revocations (responder/examples/bench_register.rs).
#
#   bash scripts/bench-responder-register.sh [RECORDS] [SMALL] [QUERIES]   # 1000000 10000 30000
#
# Starts a private PostgreSQL 15 (e2e/postgres.sh) and removes it afterwards.
# Disk: ~0.5 KB per record while it runs.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
source scripts/lib.sh
ensure_packages
cargo build --release --locked -q -p chop-responder --bin chop-responder --example bench_register
CHOP_RESPONDER_BIN="$TARGET/release/chop-responder" \
  bash e2e/postgres.sh run -- "$TARGET/release/examples/bench_register" "${1:-1000000}" "${2:-10000}" "${3:-30000}"
