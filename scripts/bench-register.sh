#!/usr/bin/env bash
# The PostgreSQL register at scale (issue 12): issuance with RECORDS existing
# records vs none (side by side, one run), a CRL of the revoked entries built
# from the database, revocation → LISTEN latency, disk per certificate.
#
#   bash scripts/bench-register.sh [RECORDS] [REVOKED]     # defaults 1000000 100000
#
# Starts a private PostgreSQL 15 (e2e/postgres.sh) and removes it afterwards.
# Disk: ~1.6 KB per record (RECORDS=10000000 needs ~20 GB free).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
source scripts/lib.sh
ensure_packages
cargo build --release --locked -q -p chop-register --example bench_pg
bash e2e/postgres.sh run -- "$TARGET/release/examples/bench_pg" "${1:-1000000}" "${2:-100000}"
