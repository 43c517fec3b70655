#!/usr/bin/env bash
# Peak RSS of the coordinator backing up one artifact into a file:// store and restoring it, once
# per --segment-size given (docs/performance.md, "Segments"). Prints figures; asserts nothing.
#
#   sudo integration/bench/segments.sh CAIRN_BINARY SIZE_MIB "" "--segment-size 8MiB" ...
#
# An empty argument is the default segment size (1GiB).
set -euo pipefail
cd "$(dirname "$0")/../.."
cairn=$(realpath "$1"); size_mib=$2; shift 2
work=$(mktemp -d /tmp/cairn-segbench.XXXXXX); chmod 755 "$work"
bed="$work/bed"
trap 'integration/testbed.sh down "$bed" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
integration/testbed.sh up "$bed" --host app/0:files --no-seed >/dev/null
files="$bed/hosts/app-0/vcap/store/files"; mkdir -p "$files"
half=$((size_mib / 2))
head -c "$((half * 1024 * 1024))" /dev/urandom > "$files/random.bin"
{ yes "2026-11-22T03:00:00Z INFO request handled in 12ms path=/v2/apps status=200" || true; } | head -c "$(((size_mib - half) * 1024 * 1024))" > "$files/app.log"
cd "$work"
for flags in "$@"; do
  rm -rf "$work/store"; mkdir "$work/store"
  read -ra f <<< "$flags"
  /usr/bin/time -f "%M %e" -o "$work/t" "$cairn" deployment --inventory "$bed/inventory.yml" backup --store "file://$work/store" "${f[@]}" > "$work/out.log" 2>&1 || { cat "$work/out.log"; exit 1; }
  read -r rss wall < "$work/t"
  segs=$(find "$work/store" -name '*.tar.zst.[0-9]*' | wc -l)
  /usr/bin/time -f "%M %e" -o "$work/t" "$cairn" deployment --inventory "$bed/inventory.yml" restore --store "file://$work/store" --latest > "$work/out.log" 2>&1 || { cat "$work/out.log"; exit 1; }
  read -r rss2 wall2 < "$work/t"
  printf '%-22s segments %5s  backup peak RSS %6.1f MiB wall %6.1f s  restore peak RSS %6.1f MiB wall %6.1f s\n' "${flags:-default(1GiB)}" "$segs" "$(echo "$rss/1024" | bc -l)" "$wall" "$(echo "$rss2/1024" | bc -l)" "$wall2"
done
