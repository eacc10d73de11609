#!/usr/bin/env bash
# chop e2e control plane: etcd + kube-apiserver (+ kubectl) built from source,
# run on loopback in a private state directory.
#
#   e2e/controlplane.sh build              build (or reuse) the pinned binaries
#   e2e/controlplane.sh bin-dir            print the cached binary directory
#   e2e/controlplane.sh up                 start the plane (idempotent), print env
#   e2e/controlplane.sh down               stop it and remove its state (idempotent)
#   e2e/controlplane.sh status             exit 0 if the plane answers /readyz
#   e2e/controlplane.sh env                print `export KUBECONFIG=... CHOP_E2E_DIR=... CHOP_E2E_AUDIT_LOG=...`
#   e2e/controlplane.sh user NAME [GROUP...]  mint a client certificate, print a kubeconfig path
#   e2e/controlplane.sh run -- CMD...      start a plane, run CMD with CHOP_E2E_DIR/KUBECONFIG
#                                          set, stop the plane (unless it was already running)
#
# Environment:
#   CHOP_E2E_DIR        state directory (default: <repo>/.e2e; for `run`, a new one under /tmp)
#   CHOP_CACHE          binary cache root (default: ${XDG_CACHE_HOME:-~/.cache}/chop)
#   CHOP_E2E_WATCH_PID  `up` also starts a watchdog that runs `down` when this pid exits
#   CHOP_E2E_API_AUDIT  0: start kube-apiserver without its audit log (default 1: on,
#                       policy e2e/audit-policy.yaml, log $CHOP_E2E_DIR/audit.log)
#   GO_BUILD_P          go build -p (default 2)
set -euo pipefail

E2E_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$E2E_DIR/.." && pwd)
TOOLS_DIR="$E2E_DIR/tools"
# Bump when the build recipe below changes in a way that changes the binaries.
BUILD_REV=1
STATE_DIR=${CHOP_E2E_DIR:-$REPO_DIR/.e2e}
CACHE_ROOT=${CHOP_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/chop}

log() { printf 'controlplane: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

pin_hash() {
  { echo "rev=$BUILD_REV"; cat "$TOOLS_DIR/go.mod" "$TOOLS_DIR/go.sum"; } | sha256sum | cut -c1-16
}
bin_dir() { echo "$CACHE_ROOT/controlplane/$(pin_hash)/bin"; }
kube_version() { sed -nE 's#^(require)?[[:space:]]*k8s\.io/kubernetes (v[0-9][^ ]*).*#\2#p' "$TOOLS_DIR/go.mod" | head -n1; }
have_bins() {
  local d; d=$(bin_dir)
  [[ -x $d/etcd && -x $d/kube-apiserver && -x $d/kubectl ]]
}

cmd_build() {
  if have_bins; then log "binaries cached in $(bin_dir)"; return 0; fi
  command -v go >/dev/null || die "go is not installed (need Go >= $(awk '$1=="go"{print $2}' "$TOOLS_DIR/go.mod"))"
  local out; out=$(bin_dir)
  mkdir -p "$(dirname "$out")"
  # One build at a time per pin; a second caller waits and then reuses the result.
  exec 9>"$(dirname "$out")/build.lock"
  flock 9
  if have_bins; then log "binaries cached in $out"; return 0; fi
  local kv minor tmp start
  kv=$(kube_version); minor=${kv#v1.}; minor=${minor%%.*}
  [[ -n $kv ]] || die "cannot read the k8s.io/kubernetes version from $TOOLS_DIR/go.mod"
  local ld="-s -w"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld+=" -X $pkg.gitVersion=$kv -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean"
  done
  tmp=$(mktemp -d "$(dirname "$out")/build.XXXXXX")
  start=$(date +%s)
  log "building kube-apiserver, kubectl ($kv) and etcd into $out (first build takes a while)"
  # A private Go build cache, removed afterwards: the binaries are what is kept
  # (the cache is ~3 GiB, and CI's disk is shared with the Rust build).
  (
    cd "$TOOLS_DIR"
    GOCACHE=$tmp/gocache CGO_ENABLED=0 go build -mod=readonly -p "${GO_BUILD_P:-2}" -trimpath -ldflags "$ld" -o "$tmp/" \
      k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kubectl go.etcd.io/etcd/server/v3
  ) || { chmod -R u+w "$tmp"; rm -rf "$tmp"; die "go build failed"; }
  chmod -R u+w "$tmp/gocache"; rm -rf "$tmp/gocache"
  mv "$tmp/server" "$tmp/etcd"
  rm -rf "$out"
  chmod 755 "$tmp"
  mv "$tmp" "$out"
  log "built in $(( $(date +%s) - start ))s: $(du -sh "$out" | cut -f1) in $out"
}


# ---------------------------------------------------------------- running plane

pid_alive() { [[ -f $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

# A TCP port on 127.0.0.1 that nothing listens on right now (checked via /proc).
free_port() {
  local p hex
  for _ in $(seq 1 200); do
    p=$(( 20000 + RANDOM % 40000 ))
    printf -v hex '%04X' "$p"
    if ! grep -qs ":$hex " /proc/net/tcp /proc/net/tcp6; then echo "$p"; return 0; fi
  done
  die "no free port found"
}

kubectl_admin() { "$(bin_dir)/kubectl" --kubeconfig "$STATE_DIR/admin.kubeconfig" "$@"; }

is_ready() {
  [[ -f $STATE_DIR/admin.kubeconfig ]] && pid_alive "$STATE_DIR/etcd.pid" && pid_alive "$STATE_DIR/kube-apiserver.pid" \
    && kubectl_admin get --raw /readyz --request-timeout=5s >/dev/null 2>&1
}

# ca.crt signs the serving certificate and every client certificate.
gen_pki() {
  local pki=$STATE_DIR/pki
  mkdir -p "$pki"
  local ossl="openssl"
  $ossl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$pki/ca.key" 2>/dev/null
  $ossl req -x509 -new -key "$pki/ca.key" -sha256 -days 30 -subj "/CN=chop-e2e-ca" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -out "$pki/ca.crt" 2>/dev/null
  $ossl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$pki/apiserver.key" 2>/dev/null
  $ossl req -new -key "$pki/apiserver.key" -subj "/CN=kube-apiserver" -out "$pki/apiserver.csr" 2>/dev/null
  printf '%s\n' "basicConstraints=CA:FALSE" "keyUsage=critical,digitalSignature" "extendedKeyUsage=serverAuth" \
    "subjectAltName=IP:127.0.0.1,IP:10.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local" \
    > "$pki/apiserver.ext"
  $ossl x509 -req -in "$pki/apiserver.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -CAcreateserial -sha256 -days 30 \
    -extfile "$pki/apiserver.ext" -out "$pki/apiserver.crt" 2>/dev/null
  # Service-account token signing key.
  $ossl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$pki/sa.key" 2>/dev/null
  $ossl pkey -in "$pki/sa.key" -pubout -out "$pki/sa.pub" 2>/dev/null
}

# Static bearer tokens for the pre-defined users (random per plane).
# Format of tokens.csv: token,user,uid,"group1,group2"
gen_tokens() {
  local f=$STATE_DIR/tokens.csv
  : > "$f"
  local line name groups
  for line in \
    "admin system:masters" \
    "chop-admin-1 chop:administrators" "chop-admin-2 chop:administrators" \
    "officer-1 chop:officers" "officer-2 chop:officers" \
    "auditor-1 chop:auditors" "ra-system chop:registration-authorities" \
    "controller-1 chop:controllers"; do
    name=${line%% *}; groups=${line#* }
    printf '%s,%s,%s,"%s"\n' "$(openssl rand -hex 24)" "$name" "$name" "$groups" >> "$f"
  done
  chmod 600 "$f"
}

token_of() { awk -F, -v u="$1" '$2 == u {print $1; exit}' "$STATE_DIR/tokens.csv"; }

# write_kubeconfig FILE USER (token from tokens.csv) | write_kubeconfig FILE USER CERT KEY
write_kubeconfig() {
  local file=$1 user=$2 cred tmp
  if [[ $# -eq 2 ]]; then
    cred="    token: $(token_of "$user")"
  else
    cred="    client-certificate-data: $(base64 -w0 < "$3")
    client-key-data: $(base64 -w0 < "$4")"
  fi
  tmp=$(mktemp "$file.XXXXXX")
  cat > "$tmp" <<KUBECONFIG
apiVersion: v1
kind: Config
clusters:
- name: chop-e2e
  cluster:
    server: https://127.0.0.1:$(cat "$STATE_DIR/apiserver.port")
    certificate-authority-data: $(base64 -w0 < "$STATE_DIR/pki/ca.crt")
users:
- name: $user
  user:
$cred
contexts:
- name: $user@chop-e2e
  context:
    cluster: chop-e2e
    user: $user
current-context: $user@chop-e2e
KUBECONFIG
  chmod 600 "$tmp"
  mv "$tmp" "$file"
}

start_etcd() {
  local cport pport
  cport=$(free_port); pport=$(free_port)
  echo "$cport" > "$STATE_DIR/etcd.port"
  setsid "$(bin_dir)/etcd" --name chop-e2e --data-dir "$STATE_DIR/etcd" \
    --listen-client-urls "http://127.0.0.1:$cport" --advertise-client-urls "http://127.0.0.1:$cport" \
    --listen-peer-urls "http://127.0.0.1:$pport" --initial-advertise-peer-urls "http://127.0.0.1:$pport" \
    --initial-cluster "chop-e2e=http://127.0.0.1:$pport" --unsafe-no-fsync --log-level warn \
    </dev/null >"$STATE_DIR/etcd.log" 2>&1 8>&- 9>&- &
  echo $! > "$STATE_DIR/etcd.pid"
}

start_apiserver() {
  local port pki=$STATE_DIR/pki audit=()
  # The API server's own audit log (who sent which request): docs/controlplane.md.
  if [[ ${CHOP_E2E_API_AUDIT:-1} != 0 ]]; then
    audit=(--audit-policy-file "$E2E_DIR/audit-policy.yaml" --audit-log-path "$STATE_DIR/audit.log"
      --audit-log-format json --audit-log-maxsize 100 --audit-log-maxbackup 1)
  fi
  port=$(free_port)
  echo "$port" > "$STATE_DIR/apiserver.port"
  setsid "$(bin_dir)/kube-apiserver" \
    --etcd-servers "http://127.0.0.1:$(cat "$STATE_DIR/etcd.port")" \
    --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$port" \
    --tls-cert-file "$pki/apiserver.crt" --tls-private-key-file "$pki/apiserver.key" \
    --client-ca-file "$pki/ca.crt" --token-auth-file "$STATE_DIR/tokens.csv" \
    --authorization-mode RBAC \
    --enable-admission-plugins NamespaceLifecycle,ServiceAccount,ValidatingAdmissionPolicy,ValidatingAdmissionWebhook,MutatingAdmissionWebhook \
    --service-account-issuer https://kubernetes.default.svc.cluster.local \
    --service-account-key-file "$pki/sa.pub" --service-account-signing-key-file "$pki/sa.key" \
    --api-audiences https://kubernetes.default.svc.cluster.local \
    --service-cluster-ip-range 10.0.0.0/24 --endpoint-reconciler-type none \
    --cert-dir "$STATE_DIR/apiserver-certs" --profiling=false \
    "${audit[@]}" \
    </dev/null >"$STATE_DIR/kube-apiserver.log" 2>&1 8>&- 9>&- &
  echo $! > "$STATE_DIR/kube-apiserver.pid"
}

wait_ready() {
  local what=$1 deadline=$(( SECONDS + $2 )) pidfile=$3
  shift 3
  until "$@" >/dev/null 2>&1; do
    pid_alive "$pidfile" || return 1
    (( SECONDS < deadline )) || return 1
    sleep 0.2
  done
  log "$what ready"
}

# GET /health over bash's /dev/tcp, so no HTTP client is needed.
etcd_healthy() {
  (
    exec 3<>"/dev/tcp/127.0.0.1/$(cat "$STATE_DIR/etcd.port")"
    printf 'GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' >&3
    timeout 5 cat <&3 | grep -q '"health":"true"'
  )
}

stop_pidfile() {
  local f=$1 pid
  [[ -f $f ]] || return 0
  pid=$(cat "$f")
  # Each daemon was started with setsid: signal its whole process group.
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$f"
}

cmd_up() {
  have_bins || die "control-plane binaries missing in $(bin_dir): run e2e/controlplane.sh build"
  mkdir -p "$STATE_DIR"
  exec 8>"$STATE_DIR/.lock"
  flock 8
  if is_ready; then log "already running in $STATE_DIR"; cmd_env; return 0; fi
  # Leftovers of a crashed plane: clear them, then start afresh.
  stop_all
  local start=$SECONDS attempt
  for attempt in 1 2 3; do
    gen_pki; gen_tokens
    start_etcd
    if ! wait_ready etcd 30 "$STATE_DIR/etcd.pid" etcd_healthy; then
      log "etcd did not start (attempt $attempt):"; tail -n 5 "$STATE_DIR/etcd.log" >&2; stop_all; continue
    fi
    start_apiserver
    write_kubeconfig "$STATE_DIR/admin.kubeconfig" admin
    if ! wait_ready kube-apiserver 90 "$STATE_DIR/kube-apiserver.pid" kubectl_admin get --raw /readyz --request-timeout=5s; then
      log "kube-apiserver did not become ready (attempt $attempt):"; tail -n 15 "$STATE_DIR/kube-apiserver.log" >&2; stop_all; continue
    fi
    [[ -n ${CHOP_E2E_WATCH_PID:-} ]] && start_watchdog "$CHOP_E2E_WATCH_PID"
    log "up in $(( SECONDS - start ))s: https://127.0.0.1:$(cat "$STATE_DIR/apiserver.port") (state in $STATE_DIR)"
    cmd_env
    return 0
  done
  die "control plane failed to start; logs in $STATE_DIR"
}

# Runs `down` once PID is gone, so a killed test run leaves nothing behind.
start_watchdog() {
  local watched=$1
  stop_pidfile "$STATE_DIR/watchdog.pid"
  # shellcheck disable=SC2016 # expanded by the inner bash
  setsid bash -c '
    while kill -0 "$1" 2>/dev/null && [[ -d $3 ]]; do sleep 1; done
    [[ -d $3 ]] && CHOP_E2E_DIR="$3" CHOP_E2E_FROM_WATCHDOG=1 exec "$2" down
  ' chop-e2e-watchdog "$watched" "$E2E_DIR/controlplane.sh" "$STATE_DIR" </dev/null >/dev/null 2>&1 8>&- 9>&- &
  echo $! > "$STATE_DIR/watchdog.pid"
}

stop_all() {
  stop_pidfile "$STATE_DIR/kube-apiserver.pid"
  stop_pidfile "$STATE_DIR/etcd.pid"
  rm -rf "$STATE_DIR/etcd" "$STATE_DIR/pki" "$STATE_DIR/users" "$STATE_DIR/apiserver-certs" "$STATE_DIR"/*.kubeconfig
}

cmd_down() {
  [[ -d $STATE_DIR ]] || { log "not running"; return 0; }
  { exec 8>>"$STATE_DIR/.lock"; } 2>/dev/null || { log "not running"; return 0; }
  flock 8
  [[ -n ${CHOP_E2E_FROM_WATCHDOG:-} ]] || stop_pidfile "$STATE_DIR/watchdog.pid"
  stop_all
  rm -rf "$STATE_DIR"
  log "stopped"
}

cmd_env() {
  [[ -f $STATE_DIR/admin.kubeconfig ]] || die "not running (no $STATE_DIR/admin.kubeconfig)"
  printf 'export CHOP_E2E_DIR=%q\nexport KUBECONFIG=%q\nexport CHOP_E2E_AUDIT_LOG=%q\n' \
    "$STATE_DIR" "$STATE_DIR/admin.kubeconfig" "$STATE_DIR/audit.log"
}

# Mint a client certificate (CN=NAME, O=GROUP...) signed by the plane's CA.
cmd_user() {
  local name=${1:-}; shift || true
  [[ $name =~ ^[A-Za-z0-9:._@-]+$ ]] || die "usage: user NAME [GROUP...] (NAME: letters, digits, : . _ @ -)"
  local g subj="/CN=$name"
  for g in "$@"; do
    [[ $g =~ ^[A-Za-z0-9:._@-]+$ ]] || die "bad group name: $g"
    subj+="/O=$g"
  done
  [[ -f $STATE_DIR/pki/ca.key ]] || die "not running (no CA in $STATE_DIR/pki)"
  local id dir=$STATE_DIR/users
  id=$(printf '%s\n' "$name" "$@" | sha256sum | cut -c1-12)
  local kc="$dir/$name-$id.kubeconfig"
  if [[ ! -f $kc ]]; then
    mkdir -p "$dir"
    local w; w=$(mktemp -d "$dir/.mint.XXXXXX")
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$w/key.pem" 2>/dev/null
    openssl req -new -key "$w/key.pem" -subj "$subj" -out "$w/csr.pem" 2>/dev/null
    printf '%s\n' "basicConstraints=CA:FALSE" "keyUsage=critical,digitalSignature" "extendedKeyUsage=clientAuth" > "$w/ext"
    openssl x509 -req -in "$w/csr.pem" -CA "$STATE_DIR/pki/ca.crt" -CAkey "$STATE_DIR/pki/ca.key" \
      -set_serial "0x$(openssl rand -hex 16)" -sha256 -days 30 -extfile "$w/ext" -out "$w/cert.pem" 2>/dev/null
    write_kubeconfig "$kc" "$name" "$w/cert.pem" "$w/key.pem"
    rm -rf "$w"
  fi
  echo "$kc"
}

cmd_run() {
  [[ ${1:-} == -- ]] && shift
  [[ $# -gt 0 ]] || die "usage: run -- COMMAND [ARG...]"
  [[ -n ${CHOP_E2E_DIR:-} ]] || STATE_DIR=$(mktemp -d "${TMPDIR:-/tmp}/chop-e2e-run.XXXXXX")
  if is_ready; then
    log "using the plane already running in $STATE_DIR"
  else
    trap 'cmd_down' EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    CHOP_E2E_WATCH_PID=$$ cmd_up >/dev/null
  fi
  # kubectl of the same build on PATH: tests run documented commands as written.
  export CHOP_E2E_DIR=$STATE_DIR KUBECONFIG=$STATE_DIR/admin.kubeconfig CHOP_E2E_AUDIT_LOG=$STATE_DIR/audit.log \
    PATH="$(bin_dir):$PATH"
  # Without the plane's lock (fd 8): a server the command starts and leaves
  # running (a test restarting PostgreSQL) must not hold it, or `down` would
  # wait for that server forever.
  "$@" 8>&- 9>&-
}

cmd_status() {
  if is_ready; then log "running in $STATE_DIR"; else log "not running"; return 1; fi
}

main() {
  local cmd=${1:-}; shift || true
  case $cmd in
    build) cmd_build "$@" ;;
    bin-dir) bin_dir ;;
    up) cmd_up "$@" ;;
    down) cmd_down "$@" ;;
    status) cmd_status "$@" ;;
    env) cmd_env "$@" ;;
    user) cmd_user "$@" ;;
    run) cmd_run "$@" ;;
    *) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//' >&2; exit 2 ;;
  esac
}
main "$@"
