#!/usr/bin/env bash
# moto (a Python fake of AWS; only its S3 is used) for Cairn's S3 adapter tests.
#
#   moto.sh install      creates a venv in $CAIRN_TOOLS/moto-venv and pip-installs moto (once)
#   moto.sh start DIR    starts moto_server on a free loopback port; writes DIR/endpoint and
#                        DIR/pid and prints the endpoint (http://127.0.0.1:PORT)
#   moto.sh stop DIR     stops the one started with DIR
#
# Every command is idempotent: `install` does nothing when the pinned version is there, `start`
# prints the endpoint of a moto already running for DIR, `stop` of a stopped one succeeds.
# The version is pinned: moto 5.2.x answers GetBucketVersioning in a form aws-sdk-s3 rejects.
# moto accepts any credentials unless started with INITIAL_NO_AUTH_ACTION_COUNT=N in the
# environment (then every request after the N-th must be signed by a key moto knows).
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

MOTO_VERSION=5.1.22
TOOLS=${CAIRN_TOOLS:-/opt/cairn-test-tools}
VENV=$TOOLS/moto-venv
BINARY=$VENV/bin/moto_server

die() {
    echo "moto.sh: $*" >&2
    exit 1
}

usage() {
    die "usage: moto.sh install | start DIR | stop DIR"
}

installed_version() {
    [[ -x $VENV/bin/python ]] || return 0
    "$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("moto"))' 2>/dev/null || true
}

install() {
    if [[ -x $BINARY && $(installed_version) == "$MOTO_VERSION" ]]; then
        return 0
    fi
    command -v python3 >/dev/null || die "python3 is missing; install it (apt-get install -y python3 python3-venv)"
    mkdir -p "$TOOLS"
    echo "moto.sh: installing moto[server]==$MOTO_VERSION into $VENV" >&2
    if [[ ! -x $VENV/bin/python ]]; then
        python3 -m venv "$VENV" >&2 || die "python3 -m venv $VENV failed (apt-get install -y python3-venv?)"
    fi
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
        "moto[server]==$MOTO_VERSION" >&2 || die "pip install moto[server]==$MOTO_VERSION failed"
    [[ -x $BINARY ]] || die "pip installed moto but $BINARY is missing"
}

# A port nobody listens on now (the kernel picks it; a tiny race remains, as with any such probe).
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}


# moto's own status page answers 200 once the server is up; it needs no credentials.
answers() {
    curl --silent --fail --output /dev/null --max-time 2 "$1/moto-api/" 2>/dev/null
}

start() {
    local dir=$1
    [[ -x $BINARY ]] || die "moto is not installed; run: $0 install"
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    if running "$dir"; then
        cat "$dir/endpoint"
        return 0
    fi
    command -v curl >/dev/null || die "curl is missing (apt-get install -y curl)"
    local port
    port=$(free_port)
    local endpoint=http://127.0.0.1:$port
    setsid "$BINARY" -H 127.0.0.1 -p "$port" >"$dir/moto.log" 2>&1 </dev/null &
    echo $! >"$dir/pid"
    wait_until_answering "$dir" moto "$endpoint" "$endpoint" "$dir/moto.log"
}


case ${1:-} in
install)
    [[ $# -eq 1 ]] || usage
    install
    ;;
start)
    [[ $# -eq 2 ]] || usage
    start "$2"
    ;;
stop)
    [[ $# -eq 2 ]] || usage
    stop "$2"
    ;;
*) usage ;;
esac
