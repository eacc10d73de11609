#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what the tests need
# (SoftHSM2, OpenSSL CLI), then formatting, lints and every test in the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=scripts/lib.sh
source scripts/lib.sh
ensure_packages
ensure_python_tools

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo test"
cargo test --workspace --locked
