#!/usr/bin/env bash
# Issue 2's benchmarks of the CA core, each printing its comparisons side by side
# from one run (this machine is noisy: ratios, not absolute numbers, are the result):
#   (a) CRLs of 10k/100k/1M entries vs `openssl ca -gencrl`: time and peak memory
#   (b) the full issuance path vs the raw SoftHSM2 signing rate
#   (c) OCSP responses per second from the core
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
CHOP_APT_PACKAGES+=(time)   # /usr/bin/time measures peak RSS of each child
ensure_packages
cargo build --release --locked -p ca --examples
echo; echo "== (a) CRL generation: chop vs openssl ca -gencrl"
"$TARGET"/release/examples/bench_crl
echo; echo "== (b) issuance: full path vs raw HSM signing"
"$TARGET"/release/examples/bench_issue
echo; echo "== (c) OCSP responses from the core"
"$TARGET"/release/examples/bench_ocsp
