#!/usr/bin/env bash
# Only changed files cross the wire into a repository (issue 16 item 3; docs/performance.md,
# "Repository: incremental backups"). One artifact of FILES files, TOTAL_MIB MiB of random
# bytes, backed up into `repo+file://` three times: first (everything), again with no change,
# again after CHURN_PERCENT % of the files were rewritten (same size, new content and mtime).
# Prints per backup: files and bytes sent over SSH (the instance's tar of the changed files, as
# Cairn counts it off the channel), the drain's time (listing + tar + archive, from Cairn's log
# lines), the whole backup's wall time and peak RSS, and what the repository grew by. Asserts
# nothing.
#
#   sudo integration/bench/repository_incremental.sh CAIRN_BINARY [TOTAL_MIB] [FILES] [CHURN_PERCENT]
#   (defaults: 4096 MiB, 20000 files, 5 %)
#   REPOBENCH_RESTORE=1 also restores the last backup and times it.
#   REPOBENCH_LOGS=DIR keeps each backup's log (Cairn's output) in DIR.
#
# Nights mode: REPOBENCH_NIGHTS=N (e.g. 30) makes N nightly backups instead: the first backs up
# everything, before each later one CHURN_PERCENT % of the files (a different set each night)
# are rewritten with new content. Prints per night what moved and the repository's whole size
# (every object: data, index, snapshots, keys, Cairn's records), and at the end that size
# against the size after the first backup ("one full backup"). For the plain format, the same
# artifact is backed up once into a `file://` store and its stored size is printed with N
# copies of it: what N nightly full copies occupy. REPOBENCH_PRUNE=1 then runs `backups prune
# --keep-last 7 --keep-marked 1s` twice (the first marks unused packs, the second deletes them;
# one backup per night, but all made within minutes here: --keep-daily would keep one) and
# prints the size after each.
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$(pwd)
cairn=$(realpath "$1"); total_mib=${2:-4096}; count=${3:-20000}; churn=${4:-5}
work=$(mktemp -d /tmp/cairn-repobench.XXXXXX); chmod 755 "$work"
bed="$work/bed"
teardown() {  # absolute paths: the runs below change into $work
  "$repo/integration/testbed.sh" down "$bed" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap teardown EXIT
integration/testbed.sh up "$bed" --host app/0:files --no-seed >/dev/null
files="$bed/hosts/app-0/vcap/store/files"; mkdir -p "$files"
# FILES files of random bytes in 100 folders (content that neither compresses nor repeats).
python3 - "$files" "$total_mib" "$count" <<'EOF'
import os, sys
root, total, count = sys.argv[1], int(sys.argv[2]) << 20, int(sys.argv[3])
size = total // count
for i in range(count):
    folder = os.path.join(root, f"d{i % 100:02d}")
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, f"f{i:06d}.bin"), "wb") as f:
        f.write(os.urandom(size))
EOF
printf 'bench password\n' > "$work/password"; chmod 600 "$work/password"
export CAIRN_REPOSITORY_PASSWORD_FILE="$work/password"
url="repo+file://$work/repo"; mkdir "$work/repo"
cd "$work"
"$cairn" repo init --allow-unversioned --store "$url" >/dev/null
data_bytes() { du -sb "$work/repo/data" 2>/dev/null | cut -f1 || echo 0; }
seconds() {  # "[bbr] 2026/12/07 18:45:07 INFO - ..." -> seconds since the epoch
  date -d "$(awk '{print $2, $3}' <<< "$1")" +%s
}
backup() {  # NAME [FLAGS...]
  local name=$1; shift
  local before; before=$(data_bytes)
  /usr/bin/time -f "%M %e" -o "$work/t" "$cairn" deployment --inventory "$bed/inventory.yml" backup --store "$url" "$@" > "$work/out.log" 2>&1 || { cat "$work/out.log"; exit 1; }
  read -r rss wall < "$work/t"
  [[ -z ${REPOBENCH_LOGS:-} ]] || cp "$work/out.log" "$REPOBENCH_LOGS/${name//[^A-Za-z0-9-]/_}.log"
  local line; line=$(grep -m1 'the others unchanged since the last backup' "$work/out.log")
  # Sent C of N files (B of T bytes; S bytes of tar over SSH), ...
  read -r sent all sent_bytes all_bytes tar_bytes < <(sed -E 's/.*Sent ([0-9]+) of ([0-9]+) files \(([0-9]+) of ([0-9]+) bytes; ([0-9]+) bytes of tar.*/\1 \2 \3 \4 \5/' <<< "$line")
  local start end
  start=$(seconds "$(grep -m1 'Copying backup -- ' "$work/out.log")")
  end=$(seconds "$(grep -m1 'Finished copying backup -- ' "$work/out.log")")
  # the job's own backup script (the files job's `cp -a` of the store into the artifact directory)
  local script_start script_end
  script_start=$(seconds "$(grep -m1 'Running backup scripts' "$work/out.log")")
  script_end=$(seconds "$(grep -m1 'Finished running backup scripts' "$work/out.log")")
  local grown=$(( $(data_bytes) - before ))
  printf '%-22s sent %6d of %6d files, %12d of %12d bytes (%6.2f %%) tar %12d  drain %5d s  backup script %4d s  backup wall %7.1f s  peak RSS %6.1f MiB  repository +%d bytes\n' \
    "$name" "$sent" "$all" "$sent_bytes" "$all_bytes" "$(echo "100*$tar_bytes/$all_bytes" | bc -l)" "$tar_bytes" \
    "$((end - start))" "$((script_end - script_start))" "$wall" "$(echo "$rss/1024" | bc -l)" "$grown"
}
# rewrite OFFSET: rewrite every (100/churn)-th file from OFFSET: same size, new bytes, new mtime.
rewrite() {
  python3 - "$files" "$count" "$churn" "$1" <<'EOF'
import os, sys
root, count, churn, offset = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
step = max(1, round(100 / churn))
for i in range(offset % step, count, step):
    path = os.path.join(root, f"d{i % 100:02d}", f"f{i:06d}.bin")
    size = os.path.getsize(path)
    with open(path, "wb") as f:
        f.write(os.urandom(size))
EOF
}
echo "artifact: $count files, $total_mib MiB; churn $churn %; $(nproc) cores; $("$cairn" --version 2>/dev/null || echo cairn); load $(cut -d' ' -f1-3 /proc/loadavg)"
if [[ -n ${REPOBENCH_NIGHTS:-} ]]; then
  nights=$REPOBENCH_NIGHTS
  repo_bytes() { du -sb "$work/repo" | cut -f1; }
  mkdir "$work/plain"
  "$cairn" deployment --inventory "$bed/inventory.yml" backup --store "file://$work/plain" > "$work/out.log" 2>&1 || { cat "$work/out.log"; exit 1; }
  plain=$(du -sb "$work/plain" | cut -f1); rm -rf "$work/plain"
  echo "plain file:// backup: $plain bytes stored; $nights nightly full copies: $((plain * nights)) bytes"
  backup "night 1"
  full=$(repo_bytes)
  echo "repository after night 1 (one full backup): $full bytes"
  for ((night = 2; night <= nights; night++)); do
    rewrite "$night"
    backup "night $night"
    echo "  repository now $(repo_bytes) bytes; load $(cut -d' ' -f1-3 /proc/loadavg)"
  done
  total=$(repo_bytes)
  printf 'repository after %d nights: %d bytes = %.3f x one full backup (plain format: %.1f x)\n' \
    "$nights" "$total" "$(echo "$total/$full" | bc -l)" "$(echo "$plain*$nights/$full" | bc -l)"
  if [[ ${REPOBENCH_PRUNE:-0} == 1 ]]; then
    # Twice: rustic's prune marks the packs no snapshot uses, and deletes them in a later prune
    # once they were marked --keep-marked ago (1 s here, the least it takes).
    deployment=$(awk '$1 == "deployment:" {print $2; exit}' "$bed/inventory.yml")
    for pass in 1 2; do
      ((pass == 1)) || sleep 2
      /usr/bin/time -f "%M %e" -o "$work/t" "$cairn" backups --store "$url" prune --deployment "$deployment" --keep-last 7 --keep-marked 1s > "$work/out.log" 2>&1 || { cat "$work/out.log"; exit 1; }
      read -r rss wall < "$work/t"
      grep '^repository ' "$work/out.log" || true
      pruned=$(repo_bytes)
      printf 'after prune %d --keep-last 7: %d bytes = %.3f x one full backup; prune wall %.1f s, peak RSS %.1f MiB\n' \
        "$pass" "$pruned" "$(echo "$pruned/$full" | bc -l)" "$wall" "$(echo "$rss/1024" | bc -l)"
    done
  fi
  exit 0
fi
backup "first"
backup "no change"
rewrite 0
backup "after $churn % changed"
backup "--full-read" --full-read
if [[ ${REPOBENCH_RESTORE:-0} == 1 ]]; then
  /usr/bin/time -f "%M %e" -o "$work/t" "$cairn" deployment --inventory "$bed/inventory.yml" restore --store "$url" --latest > "$work/out.log" 2>&1 || { cat "$work/out.log"; exit 1; }
  read -r rss wall < "$work/t"
  printf '%-22s wall %7.1f s  peak RSS %6.1f MiB\n' "restore --latest" "$wall" "$(echo "$rss/1024" | bc -l)"
fi
