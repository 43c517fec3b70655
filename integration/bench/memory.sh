#!/usr/bin/env bash
# Measures the coordinator's peak memory and disk writes while backing up one large artifact
# into a store, then restoring it. Prints figures; asserts nothing (a benchmark, not a test).
#
#   sudo integration/bench/memory.sh [SIZE_MIB] [STORE_URL]
#
# SIZE_MIB defaults to 1024. STORE_URL defaults to a file:// store in a temporary directory;
# give an s3:// URL (with AWS_* variables and endpoint=) to measure an upload to S3. A cloud
# store without versioning (Azurite, an unversioned bucket) is refused unless
# BACKUP_FLAGS=--allow-unversioned is set (extra flags for the backup, split on spaces).
set -euo pipefail
cd "$(dirname "$0")/../.."
size_mib=${1:-1024}
work=$(mktemp -d /tmp/cairn-bench.XXXXXX)
chmod 755 "$work"   # the test bed's sshd reads authorized_keys below it as the vcap user
store=${2:-file://$work/store}
read -ra backup_flags <<< "${BACKUP_FLAGS:-}"
export AWS_EC2_METADATA_DISABLED=true

cargo build --release --quiet
cairn=$(pwd)/target/release/cairn
bed="$work/bed"
trap 'integration/testbed.sh down "$bed" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
integration/testbed.sh up "$bed" --host app/0:files --no-seed >/dev/null
files="$bed/hosts/app-0/vcap/store/files"
mkdir -p "$files"
echo "== writing ${size_mib} MiB (half incompressible, half text) on app/0"
half=$((size_mib / 2))
head -c "$((half * 1024 * 1024))" /dev/urandom > "$files/random.bin"
# `yes` dies of SIGPIPE when head has enough; that is the expected end, not a failure.
{ yes "2026-11-22T03:00:00Z INFO request handled in 12ms path=/v2/apps status=200" || true; } \
  | head -c "$(((size_mib - half) * 1024 * 1024))" > "$files/app.log"

measure() {
  local label=$1; shift
  /usr/bin/time -f "%M %e %U %S %O" -o "$work/time" "$@" > "$work/out.log" 2>&1 || { cat "$work/out.log"; exit 1; }
  read -r rss_kib wall user sys blocks_out < "$work/time"
  printf '%-8s peak RSS %6.1f MiB  wall %6.2f s  %7.1f MiB/s  CPU %6.2f s  coordinator disk writes %s KiB\n' \
    "$label" "$(echo "$rss_kib / 1024" | bc -l)" "$wall" "$(echo "$size_mib / $wall" | bc -l)" \
    "$(echo "$user + $sys" | bc -l)" "$((blocks_out / 2))"
}

command -v /usr/bin/time >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq time >/dev/null
command -v bc >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bc >/dev/null
cd "$work"
measure backup "$cairn" deployment --inventory "$bed/inventory.yml" backup --store "$store" "${backup_flags[@]}"
measure restore "$cairn" deployment --inventory "$bed/inventory.yml" restore --store "$store" --latest
echo "(disk writes include the store's own files when the store is file://; use an s3:// store to see the coordinator alone)"
