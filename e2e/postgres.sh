#!/usr/bin/env bash
# A real PostgreSQL 15 (Debian's packages) on loopback in a private state
# directory, for the PostgreSQL register's tests, benchmarks and the demo
# (issue 12). Like e2e/controlplane.sh: nothing of it outlives `down`.
#
#   e2e/postgres.sh up                 start a server (idempotent), print env
#   e2e/postgres.sh down               stop it and remove its data (idempotent)
#   e2e/postgres.sh env                print `export CHOP_PG_URL=... CHOP_PG_DIR=...`
#   e2e/postgres.sh psql [ARG...]      psql connected to the database
#   e2e/postgres.sh run -- CMD...      start a server, run CMD with CHOP_PG_URL set,
#                                      stop it (unless one was already running)
#
# Environment:
#   CHOP_PG_DIR   state directory (default: <repo>/.pg; for `run`, a new one under /tmp)
#   CHOP_PG_BIN   server binaries (default: /usr/lib/postgresql/15/bin)
#
# The server listens on 127.0.0.1 only (a free port) and on a Unix socket in the
# state directory; the database `chop` belongs to role `chop`, whose password is
# random per server and is part of CHOP_PG_URL (it may also CHECKPOINT, for the
# benchmark). PostgreSQL refuses to run as
# root: when run as root, the server runs as the `postgres` account the Debian
# package creates. Settings favour a disposable test server (fsync stays on: the
# crash tests depend on it).
set -euo pipefail

E2E_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$E2E_DIR/.." && pwd)
STATE_DIR=${CHOP_PG_DIR:-$REPO_DIR/.pg}
PG_BIN=${CHOP_PG_BIN:-/usr/lib/postgresql/15/bin}

log() { printf 'postgres: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# Run a server binary as the account that owns the data.
as_owner() {
  if [[ $(id -u) -eq 0 ]]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

ensure_installed() {
  [[ -x $PG_BIN/postgres && -x $PG_BIN/initdb ]] && return 0
  log "installing postgresql-15 (Debian package)"
  local sudo=""
  [[ $(id -u) -eq 0 ]] || sudo="sudo"
  $sudo apt-get update -qq
  # The package's post-install starts a cluster of its own when it can; stop it,
  # ours runs from the state directory.
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq postgresql-15 postgresql-client-15 >/dev/null
  $sudo pg_ctlcluster 15 main stop 2>/dev/null || true
  [[ -x $PG_BIN/postgres ]] || die "postgresql-15 installed but $PG_BIN/postgres is missing"
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

is_ready() {
  [[ -f $STATE_DIR/port ]] && "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$(cat "$STATE_DIR/port")" 2>/dev/null
}

url() {
  printf 'postgres://chop:%s@127.0.0.1:%s/chop' "$(cat "$STATE_DIR/password")" "$(cat "$STATE_DIR/port")"
}

cmd_env() {
  is_ready || die "not running in $STATE_DIR"
  printf 'export CHOP_PG_DIR=%q\nexport CHOP_PG_URL=%q\n' "$STATE_DIR" "$(url)"
}

cmd_up() {
  ensure_installed
  mkdir -p "$STATE_DIR"
  if is_ready; then log "already running in $STATE_DIR"; cmd_env; return 0; fi
  stop_server
  rm -rf "$STATE_DIR/data"
  local start=$SECONDS port password
  port=$(free_port)
  password=$(openssl rand -hex 16)
  echo "$port" > "$STATE_DIR/port"
  ( umask 077; echo "$password" > "$STATE_DIR/password" )
  [[ $(id -u) -eq 0 ]] && chown postgres: "$STATE_DIR"
  as_owner "$PG_BIN/initdb" -D "$STATE_DIR/data" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
    -E UTF8 --locale=C.UTF-8 >"$STATE_DIR/initdb.log" 2>&1 || { cat "$STATE_DIR/initdb.log" >&2; die "initdb failed"; }
  cat >> "$STATE_DIR/data/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$STATE_DIR'
max_connections = 100
# A register's indexes (random serials, key fingerprints) should stay in memory.
shared_buffers = 1GB
max_wal_size = 4GB
# Random serials and key fingerprints put each insert on another index page, so
# most inserts write full-page images to the WAL; compressing them is the
# setting docs/register.md recommends for a register.
wal_compression = lz4
logging_collector = off
EOF
  as_owner "$PG_BIN/pg_ctl" -D "$STATE_DIR/data" -l "$STATE_DIR/server.log" -w -t 60 start >/dev/null \
    || { tail -n 20 "$STATE_DIR/server.log" >&2; die "the server did not start"; }
  as_owner "$PG_BIN/psql" -q -h "$STATE_DIR" -p "$port" -U postgres -d postgres -v ON_ERROR_STOP=1 \
    -c "CREATE ROLE chop LOGIN PASSWORD '$password' IN ROLE pg_checkpoint" -c "CREATE DATABASE chop OWNER chop" >/dev/null
  log "up in $(( SECONDS - start ))s: 127.0.0.1:$port (state in $STATE_DIR)"
  cmd_env
}

stop_server() {
  if [[ -f $STATE_DIR/data/postmaster.pid ]]; then
    as_owner "$PG_BIN/pg_ctl" -D "$STATE_DIR/data" -m fast -w -t 30 stop >/dev/null 2>&1 || true
  fi
}

cmd_down() {
  [[ -d $STATE_DIR ]] || { log "not running"; return 0; }
  stop_server
  rm -rf "$STATE_DIR"
  log "stopped"
}

cmd_psql() {
  is_ready || die "not running in $STATE_DIR"
  PGPASSWORD=$(cat "$STATE_DIR/password") psql -h 127.0.0.1 -p "$(cat "$STATE_DIR/port")" -U chop -d chop "$@"
}

cmd_run() {
  [[ ${1:-} == -- ]] && shift
  [[ $# -gt 0 ]] || die "usage: run -- COMMAND [ARG...]"
  if [[ -z ${CHOP_PG_DIR:-} ]]; then
    STATE_DIR=$(mktemp -d "${TMPDIR:-/tmp}/chop-pg-run.XXXXXX")
  fi
  if is_ready; then
    log "using the server already running in $STATE_DIR"
  else
    trap 'cmd_down' EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    cmd_up >/dev/null
  fi
  CHOP_PG_DIR=$STATE_DIR CHOP_PG_URL=$(url)
  export CHOP_PG_DIR CHOP_PG_URL
  "$@"
}

main() {
  local cmd=${1:-}; shift || true
  case $cmd in
    up) cmd_up ;;
    down) cmd_down ;;
    env) cmd_env ;;
    psql) cmd_psql "$@" ;;
    run) cmd_run "$@" ;;
    *) die "usage: $0 up|down|env|psql|run -- CMD" ;;
  esac
}

main "$@"
