# Shared set-up for scripts/*.sh. Sourced, not run.

# Debian packages the tests and the demo need. Installed only when missing, so a
# second run costs nothing.
CHOP_APT_PACKAGES=(softhsm2 openssl curl postgresql-15 postgresql-client-15)

# Where cargo puts what it builds (scripts run from the repository root).
TARGET=${CARGO_TARGET_DIR:-target}

ensure_packages() {
  local missing=()
  for p in "${CHOP_APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "== installing ${missing[*]}"
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}"
  fi
}

# Python packages the tests need: pkilint (PKIX linter, an independent
# validator) and the official Kubernetes client that the example RA client
# (examples/ra-client/, pinned in its requirements.txt) runs on in
# controller/tests/ra_client.rs. Each is checked at its pinned version, so a
# missing or different one is (re)installed.
CHOP_PIP_PACKAGES=(pkilint==0.13.3 kubernetes==37.0.2)

ensure_python_tools() {
  local p missing=()
  for p in "${CHOP_PIP_PACKAGES[@]}"; do
    [ "$(python3 -m pip show "${p%%==*}" 2>/dev/null | sed -n 's/^Version: //p')" = "${p#*==}" ] || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "== installing ${missing[*]}"
    python3 -m pip install -q "${missing[@]}"
  fi
  # pyenv puts console scripts behind shims; refresh them after an install.
  command -v pyenv >/dev/null 2>&1 && pyenv rehash || true
  export CHOP_REQUIRE_PKILINT=1
}
