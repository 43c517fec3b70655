#!/usr/bin/env bash
# Runs every test of Cairn on a fresh machine: installs what the tests need (openssh-server,
# sudo, iproute2, strace, PostgreSQL, MariaDB, Redis, and the S3/Azure/GCS emulators), checks
# formatting and lints, then runs the
# unit tests and the end-to-end tests against real sshd hosts in network and mount namespaces
# and real object-store servers. Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
  echo "integration/test.sh: run as root (the test bed creates network and mount namespaces)" >&2
  exit 1
fi

need=()
command -v sshd >/dev/null 2>&1 || [ -x /usr/sbin/sshd ] || need+=(openssh-server)
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
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
command -v mariadbd >/dev/null 2>&1 || need+=(mariadb-server)
command -v mysqldump >/dev/null 2>&1 || need+=(mariadb-client)
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
if [ "${#need[@]}" -gt 0 ]; then
  echo "== installing ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

# The object-store emulators the tests start: moto (S3), Azurite (Azure Blob), fake-gcs-server.
echo "== installing the store emulators (once)"
for emulator in moto azurite fake-gcs; do
  bash "integration/stores/$emulator.sh" install
done

# Never let a cloud client reach for a metadata service.
export AWS_EC2_METADATA_DISABLED=true

trap 'integration/testbed.sh down-all >/dev/null 2>&1 || true' EXIT

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo test (unit and end-to-end)"
cargo test --workspace --locked -- --test-threads="${CAIRN_TEST_THREADS:-4}"
echo "== all tests passed"
