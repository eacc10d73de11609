#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what the tests need
# (SoftHSM2, OpenSSL CLI, PostgreSQL 15, pkilint, the Go-built control plane),
# then formatting, lints and every test in the workspace, against a real
# kube-apiserver and a real PostgreSQL (the register's contract tests).
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=scripts/lib.sh
source scripts/lib.sh
ensure_packages
ensure_python_tools

# No incremental compilation: the suite builds once, and incremental data would
# add gigabytes to a target dir on a disk that CI shares (a fresh test build is
# ~3.7 GB with the workspace's profile, Cargo.toml).
export CARGO_INCREMENTAL=0

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== e2e control plane binaries (built once per pin, then cached)"
bash e2e/controlplane.sh build
echo "== promtool for the alert unit tests (built once per pin, then cached)"
bash e2e/promtool.sh build
echo "== cargo test (against a real etcd + kube-apiserver and PostgreSQL, stopped afterwards)"
bash e2e/postgres.sh run -- bash e2e/controlplane.sh run -- cargo test --workspace --locked
