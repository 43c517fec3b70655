#!/usr/bin/env bash
# Lists, sorted, what Cairn's tests could leave behind: entries of the temp folder ($TMPDIR, else
# /tmp) with the names cairn, the test bed, the tests and the scripts they run give them
# (cairn-*, cairn_*, bbr-*, tempfile's .tmp*, mktemp's tmp.*, Python's tmp*cacert.pem), and
# bbr-*.err.log files anywhere in the repository (outside target/). integration/test.sh runs it
# before and after the tests: anything new is a leftover.
set -euo pipefail
cd "$(dirname "$0")/../.."
tmp=${TMPDIR:-/tmp}
{
  find "$tmp" -mindepth 1 -maxdepth 1 \( -name 'cairn-*' -o -name 'cairn_*' -o -name 'bbr-*' \
    -o -name '.tmp*' -o -name 'tmp.*' -o -name 'tmp*cacert.pem' \) -print 2>/dev/null || true
  find . \( -path ./target -o -path ./.git \) -prune -o -name 'bbr-*.err.log' -print
} | LC_ALL=C sort
