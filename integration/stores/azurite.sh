#!/usr/bin/env bash
# Azurite (Microsoft's Azure Storage emulator, blob service only) for Cairn's Azure adapter tests.
#
#   azurite.sh install      npm-installs azurite into $CAIRN_TOOLS/azurite (once)
#   azurite.sh start DIR    starts it on a free loopback port, data in DIR/data; writes
#                           DIR/endpoint and DIR/pid and prints the endpoint
#   azurite.sh stop DIR     stops the one started with DIR
#
# Every command is idempotent: `install` does nothing when the pinned version is there, `start`
# prints the endpoint of an Azurite already running for DIR, `stop` of a stopped one succeeds.
# Azurite always runs with --disableTelemetry (it would otherwise phone home) and only on
# 127.0.0.1. The account is the well-known `devstoreaccount1` with its published key.
#
# With AZURITE_OAUTH=basic in the environment of `start`, it serves https with a self-signed
# certificate made for DIR (DIR/cert.pem) and accepts OAuth bearer tokens (`--oauth basic`:
# well-formed JWTs with an Azure issuer, the storage audience and a valid lifetime; signatures
# are not checked), as well as the account key; the endpoint printed is then https://...
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

AZURITE_VERSION=3.37.0
TOOLS=${CAIRN_TOOLS:-/opt/cairn-test-tools}
INSTALL_DIR=$TOOLS/azurite
BINARY=$INSTALL_DIR/node_modules/.bin/azurite-blob

die() {
    echo "azurite.sh: $*" >&2
    exit 1
}

usage() {
    die "usage: azurite.sh install | start DIR | stop DIR"
}

installed_version() {
    local package=$INSTALL_DIR/node_modules/azurite/package.json
    [[ -f $package ]] || return 0
    sed -n 's/^ *"version": *"\([^"]*\)".*/\1/p' "$package" | head -n 1
}

install() {
    if [[ -x $BINARY && $(installed_version) == "$AZURITE_VERSION" ]]; then
        return 0
    fi
    command -v npm >/dev/null || die "npm is missing; install Node.js (apt-get install -y nodejs npm)"
    mkdir -p "$INSTALL_DIR"
    echo "azurite.sh: installing azurite@$AZURITE_VERSION into $INSTALL_DIR" >&2
    (cd "$INSTALL_DIR" &&
        npm install --no-audit --no-fund --loglevel=error "azurite@$AZURITE_VERSION" >&2) ||
        die "npm install azurite@$AZURITE_VERSION failed"
    [[ -x $BINARY ]] || die "npm installed azurite but $BINARY is missing"
}

# A port nobody listens on now (the kernel picks it; a tiny race remains, as with any such probe).
# Node is there anyway: Azurite runs on it.
free_port() {
    node -e 'const s = require("net").createServer();
        s.listen(0, "127.0.0.1", () => { console.log(s.address().port); s.close(); });'
}


# Azurite accepts connections only once the blob service is ready.
answers() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

start() {
    local dir=$1
    [[ -x $BINARY ]] || die "azurite is not installed; run: $0 install"
    mkdir -p "$dir/data"
    dir=$(cd "$dir" && pwd)
    if running "$dir"; then
        cat "$dir/endpoint"
        return 0
    fi
    local port
    port=$(free_port)
    local endpoint=http://127.0.0.1:$port/devstoreaccount1
    local tls=()
    if [[ ${AZURITE_OAUTH:-} == basic ]]; then
        openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=127.0.0.1 \
            -addext subjectAltName=IP:127.0.0.1 -keyout "$dir/key.pem" -out "$dir/cert.pem" \
            >/dev/null 2>&1 || die "openssl could not make a certificate for $dir"
        tls=(--cert "$dir/cert.pem" --key "$dir/key.pem" --oauth basic)
        endpoint=https://127.0.0.1:$port/devstoreaccount1
    fi
    setsid "$BINARY" --blobHost 127.0.0.1 --blobPort "$port" --location "$dir/data" \
        --skipApiVersionCheck --loose --disableTelemetry "${tls[@]}" \
        >"$dir/azurite.log" 2>&1 </dev/null &
    echo $! >"$dir/pid"
    wait_until_answering "$dir" azurite "$endpoint" "$port" "$dir/azurite.log"
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
