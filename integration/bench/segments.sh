#!/usr/bin/env bash
# Peak RSS and wall time of the coordinator backing up one artifact into a store and restoring
# it, once per --segment-size given (docs/performance.md, "Segments"). Prints figures; asserts
# nothing.
#
#   sudo integration/bench/segments.sh CAIRN_BINARY SIZE_MIB "" "--segment-size 8MiB" ...
#   sudo SEGBENCH_STORE=s3 integration/bench/segments.sh ...     # into moto (versioned bucket)
#
# An empty argument is the default segment size (1GiB). SEGBENCH_STORE is `file` (default) or
# `s3`: moto is a Python server, so its wall times measure moto more than Cairn; the memory
# figures are Cairn's own.
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$(pwd)
cairn=$(realpath "$1"); size_mib=$2; shift 2
kind=${SEGBENCH_STORE:-file}
[[ $kind == file || $kind == s3 ]] || { echo "segments.sh: SEGBENCH_STORE is file or s3, not '$kind'" >&2; exit 1; }
work=$(mktemp -d /tmp/cairn-segbench.XXXXXX); chmod 755 "$work"
bed="$work/bed"
moto_dir="$work/moto"
teardown() {  # absolute paths: the runs below change into $work
  "$repo/integration/testbed.sh" down "$bed" >/dev/null 2>&1 || true
  [[ $kind != s3 ]] || "$repo/integration/stores/moto.sh" stop "$moto_dir" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap teardown EXIT
integration/testbed.sh up "$bed" --host app/0:files --no-seed >/dev/null
files="$bed/hosts/app-0/vcap/store/files"; mkdir -p "$files"
half=$((size_mib / 2))
head -c "$((half * 1024 * 1024))" /dev/urandom > "$files/random.bin"
{ yes "2026-11-22T03:00:00Z INFO request handled in 12ms path=/v2/apps status=200" || true; } | head -c "$(((size_mib - half) * 1024 * 1024))" > "$files/app.log"
if [[ $kind == s3 ]]; then
  integration/stores/moto.sh install
  endpoint=$(integration/stores/moto.sh start "$moto_dir")
  export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_EC2_METADATA_DISABLED=true AWS_REGION=us-east-1
  py=${CAIRN_TOOLS:-/opt/cairn-test-tools}/moto-venv/bin/python
fi
cd "$work"
run=0
for flags in "$@"; do
  run=$((run + 1))
  if [[ $kind == s3 ]]; then
    "$py" "$repo/integration/stores/fixture.py" s3 "$endpoint" create-bucket "seg$run" versioned >/dev/null
    store="s3://seg$run/bench?endpoint=$endpoint&path_style=true&region=us-east-1"
  else
    rm -rf "$work/store"; mkdir "$work/store"
    store="file://$work/store"
  fi
  read -ra f <<< "$flags"
  /usr/bin/time -f "%M %e" -o "$work/t" "$cairn" deployment --inventory "$bed/inventory.yml" backup --store "$store" "${f[@]}" > "$work/out.log" 2>&1 || { cat "$work/out.log"; exit 1; }
  read -r rss wall < "$work/t"
  id=$("$cairn" backups --store "$store" list --json | python3 -c 'import json, sys; b = [json.loads(l) for l in sys.stdin if l.strip()]; print(b[-1]["deployment"] + "/" + b[-1]["id"])')
  segs=$("$cairn" backups --store "$store" show --json "$id" 2>/dev/null | python3 -c 'import json, sys; m = json.load(sys.stdin); print(sum(len(a.get("segments") or [0]) for a in m["artifacts"]))')
  /usr/bin/time -f "%M %e" -o "$work/t" "$cairn" deployment --inventory "$bed/inventory.yml" restore --store "$store" --latest > "$work/out.log" 2>&1 || { cat "$work/out.log"; exit 1; }
  read -r rss2 wall2 < "$work/t"
  printf '%-4s %-22s segments %5s  backup peak RSS %6.1f MiB wall %6.1f s  restore peak RSS %6.1f MiB wall %6.1f s\n' "$kind" "${flags:-default(1GiB)}" "$segs" "$(echo "$rss/1024" | bc -l)" "$wall" "$(echo "$rss2/1024" | bc -l)" "$wall2"
done
