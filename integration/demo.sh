#!/usr/bin/env bash
# The demo: starts a local test bed (3 sshd hosts, two instance groups, a lock-order
# dependency), backs it up with Cairn, damages the data, restores it, checks the data is back,
# also backs it up into a local object store (file://), stops the test bed and prints where the
# backups are and the commands to try next. Needs root (namespaces) and Rust (see README.md).
#
# CAIRN_DEMO_DIR: where the test bed and the backups go (default /tmp/cairn-demo).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

if [ "$(id -u)" -ne 0 ]; then
  echo "integration/demo.sh: run as root (the test bed creates network and mount namespaces)" >&2
  exit 1
fi
# sudo's secure_path drops ~/.cargo/bin: find cargo as the user's shell would.
# shellcheck source=integration/lib/cargo-path.sh
source integration/lib/cargo-path.sh

work=${CAIRN_DEMO_DIR:-/tmp/cairn-demo}
bed="$work/testbed"
backups="$work/backups"
store_dir="$work/store"
store="file://$store_dir"
restore_bed="$work/restore-bed"
target=${CARGO_TARGET_DIR:-$root/target}
cairn="$target/debug/cairn"

# The binary is rebuilt unless it is newer than every source file it is built from.
stale=yes
if [ -x "$cairn" ] && [ -z "$(find Cargo.toml Cargo.lock src adapters -newer "$cairn" -type f \
  -not -path '*/target/*' -print -quit)" ]; then
  stale=no
fi
if [ "$stale" = yes ]; then
  echo "== compiling cairn with $(cargo --version) (a first build takes about 3 minutes on 2 cores)"
  cargo build --locked --bin cairn
else
  echo "== reusing $cairn (newer than the sources)"
fi

for old in "$bed" "$restore_bed"; do
  integration/testbed.sh down "$old" >/dev/null 2>&1 || true
  rm -rf "$old"
done
rm -rf "$store_dir"
mkdir -p "$backups" "$store_dir"
trap 'integration/testbed.sh down "$bed" >/dev/null 2>&1 || true' EXIT
echo "== starting the test bed in $bed (3 sshd hosts in their own network namespaces)"
integration/testbed.sh up "$bed" >/dev/null
inventory="$bed/inventory.yml"
echo "== the test bed's inventory (the instances Cairn backs up): $inventory"

files="$bed/hosts/app-0/vcap/store/files"
before=$(cd "$files" && find . -type f -print0 | sort -z | xargs -0 sha256sum)

echo
echo "== backup in bbr's directory format:"
echo "   cairn deployment --inventory $inventory backup --artifact-path $backups"
"$cairn" deployment --inventory "$inventory" backup --artifact-path "$backups"
backup=$(find "$backups" -mindepth 1 -maxdepth 1 -type d -name 'testbed_*' | sort | tail -n 1)
echo "== the backup: $backup"

echo
echo "== damaging the data on app/0 (deleting 2 files of $files)"
find "$files" -type f -print0 | head -z -n 2 | xargs -0 rm -f

echo
echo "== restore:"
echo "   cairn deployment --inventory $inventory restore --artifact-path $backup"
"$cairn" deployment --inventory "$inventory" restore --artifact-path "$backup"

after=$(cd "$files" && find . -type f -print0 | sort -z | xargs -0 sha256sum)
if [ "$before" != "$after" ]; then
  echo "== FAILED: restored data differs" >&2
  exit 1
fi
echo "== restored data is identical to the backed-up data"

echo
echo "== backup into an object store (here a local directory; s3://, az:// and gs:// work alike):"
echo "   cairn deployment --inventory $inventory backup --store $store"
"$cairn" deployment --inventory "$inventory" backup --store "$store"
id=$(find "$store_dir/testbed" -mindepth 1 -maxdepth 1 -type d -name '[0-9]*Z' -printf '%f\n' | sort | tail -n 1)

echo
echo "== the backup (bbr format) is in: $backup"
ls -l "$backup"
echo "== the store backup is testbed/$id in: $store"
echo "== the test bed is stopped (its files stay in $bed)"
cat <<NEXT

Try next (as root):
  # list the backups in the store, then check every checksum of one without restoring it
  sudo $cairn backups --store $store list
  sudo $cairn backups --store $store verify testbed/$id
  # restore the bbr-format backup into a fresh test bed, then stop it
  sudo $root/integration/testbed.sh up $restore_bed
  sudo $cairn deployment --inventory $restore_bed/inventory.yml restore --artifact-path $backup
  sudo $root/integration/testbed.sh down $restore_bed
NEXT
