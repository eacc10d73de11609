#!/usr/bin/env bash
# promtool, built from the Prometheus Go module pinned in e2e/promtool/go.mod
# and cached per pin (like the control plane, e2e/controlplane.sh).
#
#   e2e/promtool.sh build          build (or reuse) the pinned promtool
#   e2e/promtool.sh path           print the cached binary's path
#   e2e/promtool.sh -- ARG...      run the cached promtool with ARGs (builds if missing)
#
# The rules are checked and unit-tested by `cargo test -p e2e --test monitoring`
# (e2e/tests/monitoring.rs), which builds promtool with this script if missing.
#
# Environment:
#   CHOP_CACHE   binary cache root (default: ${XDG_CACHE_HOME:-~/.cache}/chop)
#   GO_BUILD_P   go build -p (default 2)
set -euo pipefail

E2E_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
MOD_DIR="$E2E_DIR/promtool"
# Bump when the build recipe below changes in a way that changes the binary.
BUILD_REV=2
# Service discovery plugins are irrelevant to rule checks and tests; leaving
# them out skips compiling the cloud SDKs they pull in.
TAGS=remove_all_sd
CACHE_ROOT=${CHOP_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/chop}

log() { printf 'promtool: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

pin_hash() {
  { echo "rev=$BUILD_REV tags=$TAGS"; cat "$MOD_DIR/go.mod" "$MOD_DIR/go.sum"; } | sha256sum | cut -c1-16
}
bin_path() { echo "$CACHE_ROOT/promtool/$(pin_hash)/bin/promtool"; }
prom_version() { sed -nE 's#^[[:space:]]*github\.com/prometheus/prometheus (v[0-9][^ ]*).*#\1#p' "$MOD_DIR/go.mod" | head -n1; }

cmd_build() {
  local out; out=$(bin_path)
  if [[ -x $out ]]; then log "cached: $out"; return 0; fi
  command -v go >/dev/null || die "go is not installed (need Go >= $(awk '$1=="go"{print $2}' "$MOD_DIR/go.mod"))"
  local dir; dir=$(dirname "$(dirname "$out")")
  mkdir -p "$dir"
  # One build at a time per pin; a second caller waits and then reuses the result.
  exec 9>"$dir/build.lock"
  flock 9
  if [[ -x $out ]]; then log "cached: $out"; return 0; fi
  local v tmp start
  v=$(prom_version)
  [[ -n $v ]] || die "cannot read the github.com/prometheus/prometheus version from $MOD_DIR/go.mod"
  # Module v0.3XX.Y is Prometheus 3.XX.Y.
  if [[ $v =~ ^v0\.3([0-9]{2})\.(.*)$ ]]; then v="3.$((10#${BASH_REMATCH[1]})).${BASH_REMATCH[2]}"; fi
  tmp=$(mktemp -d "$dir/build.XXXXXX")
  start=$(date +%s)
  log "building promtool ($v, tags $TAGS) into $(dirname "$out") (first build takes a few minutes)"
  (
    cd "$MOD_DIR"
    # A private Go build cache, removed afterwards (disk is shared with the Rust build).
    GOCACHE=$tmp/gocache CGO_ENABLED=0 go build -mod=readonly -p "${GO_BUILD_P:-2}" -trimpath -tags "$TAGS" \
      -ldflags "-s -w -X github.com/prometheus/common/version.Version=$v" \
      -o "$tmp/promtool" github.com/prometheus/prometheus/cmd/promtool
  ) || { chmod -R u+w "$tmp"; rm -rf "$tmp"; die "go build failed"; }
  chmod -R u+w "$tmp/gocache"; rm -rf "$tmp/gocache"
  rm -rf "$(dirname "$out")"
  chmod 755 "$tmp"
  mv "$tmp" "$(dirname "$out")"
  log "built in $(( $(date +%s) - start ))s: $(du -sh "$out" | cut -f1) at $out"
}

main() {
  local cmd=${1:-}; shift || true
  case $cmd in
    build) cmd_build "$@" ;;
    path) bin_path ;;
    --) cmd_build; exec "$(bin_path)" "$@" ;;
    *) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//' >&2; exit 2 ;;
  esac
}
main "$@"
