#!/usr/bin/env bash
# Runs every test of Cairn on a fresh machine: installs what the tests need (openssh-server,
# sudo, iproute2, strace, PostgreSQL, MariaDB, Redis, and the S3/Azure/GCS emulators), checks
# formatting, lints and the dependencies' licenses, sources and bans (cargo-deny), then runs the
# unit tests and the end-to-end tests against real sshd hosts in network and mount namespaces
# and real object-store servers, then builds the release binary and runs the throughput
# benchmark's quick mode (integration/bench/throughput.sh --quick), which fails when Cairn falls
# below a generous floor (docs/performance.md, "CI: quick mode"), and packs that binary into the
# .deb, installs, checks and removes it (integration/package-test.sh). Needs root.
#
# Finds a rustup-installed cargo also through sudo (integration/lib/cargo-path.sh) and proves it
# (integration/lib/check-cargo-path.sh); fails when the tests leave files in the temp folder or
# bbr-*.err.log files in the repository (integration/lib/leftovers.sh, before and after).
#
# CAIRN_SKIP_BENCH=1 skips the release build, the .deb and the benchmark (the tests only); CI
# never sets it.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
  echo "integration/test.sh: run as root (the test bed creates network and mount namespaces)" >&2
  exit 1
fi
# sudo's secure_path drops ~/.cargo/bin: find cargo as the user's shell would (before the
# installs, so that a missing or old Rust is said at once), with rustfmt and clippy.
# shellcheck source=integration/lib/cargo-path.sh
source integration/lib/cargo-path.sh
cairn_require_rust_components rustfmt clippy

need=()
command -v sshd >/dev/null 2>&1 || [ -x /usr/sbin/sshd ] || need+=(openssh-server)
# remote::login_key's unit tests make keys (with and without a passphrase) with ssh-keygen.
command -v ssh-keygen >/dev/null 2>&1 || need+=(openssh-client)
command -v sudo >/dev/null 2>&1 || need+=(sudo)
command -v ip >/dev/null 2>&1 || need+=(iproute2)
command -v nsenter >/dev/null 2>&1 || need+=(util-linux)
command -v tc >/dev/null 2>&1 || need+=(iproute2)
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
command -v npm >/dev/null 2>&1 || need+=(npm)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need+=(python3-venv)
# The contract check traces backup scripts; the reference jobs need real database servers.
command -v strace >/dev/null 2>&1 || need+=(strace)
command -v pgrep >/dev/null 2>&1 || need+=(procps)
# stalls.rs cuts a test host's network silently (packets dropped inside its namespace).
command -v nft >/dev/null 2>&1 || need+=(nftables)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
command -v mariadbd >/dev/null 2>&1 || need+=(mariadb-server)
command -v mysqldump >/dev/null 2>&1 || need+=(mariadb-client)
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
# The restic CLI judges Cairn's repositories (integration/e2e/repository_restic.rs).
command -v restic >/dev/null 2>&1 || need+=(restic)
# history_report.rs renders the `backups report` page in headless Chromium to a PNG.
command -v chromium >/dev/null 2>&1 || need+=(chromium)
# The benchmark: zstd (its compression limit), /usr/bin/time, bc, shasum (bbr's remote checksum).
if [ "${CAIRN_SKIP_BENCH:-0}" != 1 ]; then
  command -v zstd >/dev/null 2>&1 || need+=(zstd)
  [ -x /usr/bin/time ] || need+=(time)
  command -v bc >/dev/null 2>&1 || need+=(bc)
  command -v shasum >/dev/null 2>&1 || need+=(perl)
  # The package test (integration/package-test.sh): cargo-deb's dependency scan, the .deb's
  # own dependencies, the unit check and man -l.
  command -v dpkg-shlibdeps >/dev/null 2>&1 || need+=(dpkg-dev)
  command -v adduser >/dev/null 2>&1 || need+=(adduser)
  command -v flock >/dev/null 2>&1 || need+=(util-linux)
  command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
  command -v man >/dev/null 2>&1 || need+=(man-db)
fi
if [ "${#need[@]}" -gt 0 ]; then
  echo "== installing ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

# The README's commands work through sudo with a rustup toolchain: as root with sudo's
# secure_path, and as an unprivileged user whose toolchain is in its own home (a few seconds).
integration/lib/check-cargo-path.sh

# The object-store emulators the tests start: moto (S3), Azurite (Azure Blob), fake-gcs-server.
echo "== installing the store emulators (once)"
for emulator in moto azurite fake-gcs; do
  bash "integration/stores/$emulator.sh" install
done
# A SOCKS5 server that asks for a login, for BOSH_ALL_PROXY=socks5://USER:PASSWORD@HOST:PORT.
bash integration/socks/pproxy.sh install

# Never let a cloud client reach for a metadata service.
export AWS_EC2_METADATA_DISABLED=true

trap 'integration/testbed.sh down-all >/dev/null 2>&1 || true' EXIT

# Pids of the live processes whose environment holds exactly $1 (NAME=VALUE): what a command
# run with that marker started and left behind (an emulator started with setsid, a stray cairn).
marked() {
  grep -lsxzF -- "$1" /proc/[0-9]*/environ 2>/dev/null | cut -d/ -f3 || true
}

# Ends the processes marked with $1 (TERM, then KILL after 5 s) and says which they were.
end_marked() {
  local marker=$1 what=$2 pids pid
  pids=$(marked "$marker")
  [ -n "$pids" ] || return 0
  echo "== $what left these processes running; ending them:"
  for pid in $pids; do
    echo "   $pid $(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | cut -c1-160)"
  done
  # shellcheck disable=SC2086 # a list of pids, split on purpose
  kill $pids 2>/dev/null || true
  for _ in $(seq 50); do
    [ -n "$(marked "$marker")" ] || return 0
    sleep 0.1
  done
  # shellcheck disable=SC2046 # a list of pids, split on purpose
  kill -9 $(marked "$marker") 2>/dev/null || true
}

echo "== module cycles (integration/check_module_cycles.py)"
python3 integration/check_module_cycles.py --self-test
python3 integration/check_module_cycles.py
echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
# Dependencies' licenses, sources and bans (deny.toml; offline). The pinned cargo-deny is
# built from crates.io once and kept in ~/.cargo/bin: the first build takes ~6.5 min of CPU
# (38 min of wall time on a busy 2-core machine), later runs skip it. Advisories need the
# RustSec database, which CI cannot fetch: docs/operations.md says how to run them by hand.
CARGO_DENY_VERSION=0.20.2
if [ "$(cargo deny --version 2>/dev/null)" != "cargo-deny $CARGO_DENY_VERSION" ]; then
  echo "== installing cargo-deny $CARGO_DENY_VERSION (once: kept in ~/.cargo/bin)"
  cargo install --locked cargo-deny --version "$CARGO_DENY_VERSION"
fi
# The .deb is built with a pinned cargo-deb, installed the same way (once; a few minutes).
CARGO_DEB_VERSION=3.8.0
if [ "${CAIRN_SKIP_BENCH:-0}" != 1 ] && [ "$(cargo deb --version 2>/dev/null)" != "cargo-deb $CARGO_DEB_VERSION" ]; then
  echo "== installing cargo-deb $CARGO_DEB_VERSION (once: kept in ~/.cargo/bin)"
  cargo install --locked cargo-deb --version "$CARGO_DEB_VERSION"
fi
echo "== cargo deny check licenses sources bans"
cargo deny --locked check licenses sources bans
echo "== cargo test (unit and end-to-end)"
test_marker=CAIRN_TEST_RUN=$$-$(date +%s%N)
leftovers_before=$(integration/lib/leftovers.sh)
env "$test_marker" cargo test --workspace --locked -- --test-threads="${CAIRN_TEST_THREADS:-4}"
echo "== all tests passed"
# The tests leave nothing behind: nothing of theirs in the temp folder, no bbr-*.err.log here.
left=$(LC_ALL=C comm -13 <(echo "$leftovers_before") <(integration/lib/leftovers.sh))
if [ -n "$left" ]; then
  echo "== the tests left these behind (new since they started):" >&2
  while IFS= read -r line; do echo "   $line"; done <<<"$left" >&2
  exit 1
fi
echo "== the tests left nothing in ${TMPDIR:-/tmp} or the repository"

if [ "${CAIRN_SKIP_BENCH:-0}" = 1 ]; then
  echo "== benchmark skipped (CAIRN_SKIP_BENCH=1)"
  echo "== .deb package test skipped too (CAIRN_SKIP_BENCH=1: it packs the release binary)"
  exit 0
fi

# The benchmark starts its own test bed and moto and measures CPU time on the whole machine:
# nothing the tests started may still run (their test beds, an emulator, a stray process).
integration/testbed.sh down-all >/dev/null 2>&1 || true
end_marked "$test_marker" "the tests"

echo "== the benchmark's verdict on made-up rounds (integration/bench/throughput_helper.py self-test)"
python3 integration/bench/throughput_helper.py self-test
echo "== benchmark, quick mode: cargo build --release, then integration/bench/throughput.sh --quick"
bench_started=$(date +%s)
cargo build --release --locked --bin cairn
bench_built=$(date +%s)
echo "== release build: $((bench_built - bench_started)) s"
# The .deb of that release binary: dpkg -i, cairn and bbr from /usr/bin, systemd-analyze verify,
# man pages and completions in place, dpkg -r (integration/package-test.sh).
package_started=$(date +%s)
integration/package-test.sh
bench_run_started=$(date +%s)
echo "== package test: $((bench_run_started - package_started)) s"
bench_marker=CAIRN_BENCH_RUN=$$-$(date +%s%N)
bench_status=0
env "$bench_marker" CAIRN_BIN="${CARGO_TARGET_DIR:-$PWD/target}/release/cairn" \
  integration/bench/throughput.sh --quick --no-build || bench_status=$?
bench_done=$(date +%s)
# The benchmark tears down its test bed and moto itself (also when it fails); anything it
# started that still runs is a bug in it.
leaked=$(marked "$bench_marker")
end_marked "$bench_marker" "the benchmark"
echo "== benchmark: $((bench_done - bench_run_started)) s (release build $((bench_built - bench_started)) s, total $((bench_done - bench_started)) s)"
if [ "$bench_status" -ne 0 ]; then
  echo "== the benchmark's quick mode FAILED (exit $bench_status): a floor was missed or a case failed; see above" >&2
  exit "$bench_status"
fi
if [ -n "$leaked" ]; then
  echo "== the benchmark left processes running (listed above)" >&2
  exit 1
fi
echo "== benchmark floors met"
