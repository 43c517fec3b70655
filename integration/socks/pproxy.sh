#!/usr/bin/env bash
# pproxy (PyPI, MIT): a SOCKS5 server that asks for a user name and password (RFC 1929), for
# the end-to-end test of `BOSH_ALL_PROXY=socks5://USER:PASSWORD@HOST:PORT`.
#
#   pproxy.sh install    creates a venv in $CAIRN_TOOLS/pproxy-venv and pip-installs pproxy (once)
#
# The test starts `$CAIRN_TOOLS/pproxy-venv/bin/pproxy -l socks5://127.0.0.1:PORT#USER:PASSWORD`
# itself (integration/e2e/socks_login.rs).
set -euo pipefail

PPROXY_VERSION=2.7.9
TOOLS=${CAIRN_TOOLS:-/opt/cairn-test-tools}
VENV=$TOOLS/pproxy-venv
BINARY=$VENV/bin/pproxy

die() {
    echo "pproxy.sh: $*" >&2
    exit 1
}

installed_version() {
    [[ -x $VENV/bin/python ]] || return 0
    "$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("pproxy"))' 2>/dev/null || true
}

install() {
    if [[ -x $BINARY && $(installed_version) == "$PPROXY_VERSION" ]]; then
        return 0
    fi
    command -v python3 >/dev/null || die "python3 is missing; install it (apt-get install -y python3 python3-venv)"
    mkdir -p "$TOOLS"
    echo "pproxy.sh: installing pproxy==$PPROXY_VERSION into $VENV" >&2
    if [[ ! -x $VENV/bin/python ]]; then
        python3 -m venv "$VENV" >&2 || die "python3 -m venv $VENV failed (apt-get install -y python3-venv?)"
    fi
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
        "pproxy==$PPROXY_VERSION" >&2 || die "pip install pproxy==$PPROXY_VERSION failed"
    [[ -x $BINARY ]] || die "pip installed pproxy but $BINARY is missing"
}

case ${1:-} in
install) install ;;
*) die "usage: pproxy.sh install" ;;
esac
