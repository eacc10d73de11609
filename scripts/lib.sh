# Shared set-up for scripts/*.sh. Sourced, not run.

# Debian packages the tests and the demo need. Installed only when missing, so a
# second run costs nothing.
CHOP_APT_PACKAGES=(softhsm2 openssl)

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
