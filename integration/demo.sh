#!/usr/bin/env bash
# The demo: starts a local test bed (3 sshd hosts, two instance groups, a lock-order
# dependency), backs it up with Cairn, damages the data, restores it, checks the data is back,
# stops the test bed and prints where the backup is. Needs root (namespaces).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

if [ "$(id -u)" -ne 0 ]; then
  echo "integration/demo.sh: run as root (the test bed creates network and mount namespaces)" >&2
  exit 1
fi

work=${CAIRN_DEMO_DIR:-/tmp/cairn-demo}
bed="$work/testbed"
backups="$work/backups"
mkdir -p "$backups"

echo "== building cairn"
cargo build --quiet
cairn="$root/target/debug/cairn"

integration/testbed.sh down "$bed" >/dev/null 2>&1 || true
rm -rf "$bed"
trap 'integration/testbed.sh down "$bed" >/dev/null 2>&1 || true' EXIT
echo "== starting the test bed in $bed"
integration/testbed.sh up "$bed"
inventory="$bed/inventory.yml"

files="$bed/hosts/app-0/vcap/store/files"
before=$(cd "$files" && find . -type f -print0 | sort -z | xargs -0 sha256sum)

echo "== cairn deployment --inventory $inventory backup --artifact-path $backups"
"$cairn" deployment --inventory "$inventory" backup --artifact-path "$backups"
backup=$(ls -dt "$backups"/testbed_* | head -n 1)

echo "== damaging the data on app/0"
find "$files" -type f -print0 | head -z -n 2 | xargs -0 rm -f

echo "== cairn deployment --inventory $inventory restore --artifact-path $backup"
"$cairn" deployment --inventory "$inventory" restore --artifact-path "$backup"

after=$(cd "$files" && find . -type f -print0 | sort -z | xargs -0 sha256sum)
if [ "$before" != "$after" ]; then
  echo "== FAILED: restored data differs" >&2
  exit 1
fi
echo
echo "== restored data is identical to the backed-up data"
echo "== the backup (bbr format) is in: $backup"
ls -l "$backup"
