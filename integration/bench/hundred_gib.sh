#!/usr/bin/env bash
# A 100 GiB artifact (issue 15): one job's artifact of SIZE GiB (default 100) on one test-bed
# host, backed up into a file:// store, against an artifact of 1 GiB made the same way in the
# same run. Prints whether it completed, the coordinator's peak RSS (budget <= 200 MiB) and
# the throughput of both, and their ratio (target: within 10 %). A benchmark, not a test: it
# fails only when a command fails.
#
#   sudo integration/bench/hundred_gib.sh                 # 100 GiB against 1 GiB
#   sudo integration/bench/hundred_gib.sh --size 20       # 20 GiB against 1 GiB
#
# The source takes almost no disk: every GiB is a file of 1 MiB of log lines followed by a
# hole (a sparse file). `tar -c` (without --sparse, as Cairn runs it) reads the hole as zeros,
# so the stream is the full size, and the store keeps it compressed (zstd:3: a few MiB per
# GiB). Whatever layout the store writes (one object per artifact, or segments) is measured as
# it is: the script does not depend on it. No restore: extracting would write the zeros out.
#
# Options (environment variable in brackets):
#   --size GIB       the large artifact [BENCH_GIB, default 100]
#   --verify         also time `cairn backups verify` of the large backup (reads it all back)
#   --work DIR       working directory (default: a new /var/tmp/cairn-100gib.XXXXXX)
#   --keep           keep the working directory
#   --no-build       do not run `cargo build --release` [CAIRN_BIN: use this binary instead]
set -euo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
size=${BENCH_GIB:-100} work= keep=0 build=1 verify=0
while [[ $# -gt 0 ]]; do
    case $1 in
    --size) size=$2; shift ;;
    --verify) verify=1 ;;
    --work) work=$2; shift ;;
    --keep) keep=1 ;;
    --no-build) build=0 ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "hundred_gib.sh: unknown option $1 (see --help)" >&2; exit 1 ;;
    esac
    shift
done
die() { echo "hundred_gib.sh: $*" >&2; exit 1; }
say() { echo "== $*" >&2; }
[[ $size =~ ^[1-9][0-9]*$ ]] || die "--size takes a whole number of GiB, not '$size'"
[[ $(id -u) == 0 ]] || die "run as root (the test bed needs namespaces)"
for tool in /usr/bin/time python3 bc truncate; do
    command -v "$tool" >/dev/null || die "$tool is missing (apt-get install -y time python3 bc coreutils)"
done

if [[ -n ${CAIRN_BIN:-} ]]; then
    cairn=$CAIRN_BIN
else
    target=${CARGO_TARGET_DIR:-$repo/target}
    if ((build)); then
        say "cargo build --release"
        (cd "$repo" && cargo build --release --quiet --bin cairn)
    fi
    cairn=$target/release/cairn
fi
[[ -x $cairn ]] || die "no binary at $cairn"

work=${work:-$(mktemp -d /var/tmp/cairn-100gib.XXXXXX)}
mkdir -p "$work"
chmod 755 "$work" # sshd reads the test bed's authorized_keys as vcap
work=$(cd "$work" && pwd)
free_mib=$(df -Pm "$work" | awk 'NR == 2 {print $4}')
((free_mib > 4096)) || die "needs about 4 GiB of free disk (the stored artifacts, logs), $free_mib MiB free in $work"
cp "$cairn" "$work/cairn"
cairn=$work/cairn
bed=$work/bed
teardown() {
    local status=$?
    trap - EXIT INT TERM
    "$repo/integration/testbed.sh" down "$bed" >/dev/null 2>&1 || true
    if ((keep)); then echo "kept $work" >&2; else rm -rf "$work"; fi
    exit "$status"
}
trap teardown EXIT
trap 'exit 130' INT TERM

say "test bed: app/0 with the files job"
"$repo/integration/testbed.sh" up "$bed" --host app/0:files --no-seed >/dev/null
IFS=$'\t' read -r _ _ _ hostdir _ <"$bed/hosts.tsv"
tree=$hostdir/vcap/store/files
scripts=$hostdir/vcap/jobs/files/bin/bbr
# Hard links: the job's copy costs nothing and keeps the holes.
printf '#!/bin/sh\nset -eu\ncp -al /var/vcap/store/files/. "$BBR_ARTIFACT_DIRECTORY"\n' >"$scripts/backup"
chmod 755 "$scripts/backup"

# sparse_tree GIB: GIB files of 1 GiB in the host's tree (replacing what was there).
sparse_tree() {
    rm -rf "$tree"
    mkdir -p "$tree"
    local i line="2026-12-07T03:00:00Z INFO request handled in 12ms path=/v2/apps status=200"
    for ((i = 0; i < $1; i++)); do
        { yes "$line $i" || true; } | head -c $((1 << 20)) >"$tree/part-$i.bin"
        truncate -s 1G "$tree/part-$i.bin"
    done
}

declare -A wall rss
measure() { # CASE COMMAND...
    local case=$1
    shift
    sync
    if ! /usr/bin/time -f '%e %M' -o "$work/time" "$@" >"$work/$case.log" 2>&1; then
        tail -n 30 "$work/$case.log" >&2
        die "$case failed; log above"
    fi
    read -r 'wall[$case]' 'rss[$case]' <"$work/time"
    printf '   %-12s %9.2f s  peak RSS %7.1f MiB\n' "$case" "${wall[$case]}" "$(echo "${rss[$case]} / 1024" | bc -l)" >&2
}

cd "$work"
mkdir -p store-1 "store-$size"
say "1 GiB artifact into file://"
sparse_tree 1
measure 1GiB "$cairn" deployment --inventory "$bed/inventory.yml" backup --store "file://$work/store-1"
say "$size GiB artifact into file:// (host disk used by the source: $(du -sh "$tree" | cut -f1))"
sparse_tree "$size"
measure "${size}GiB" "$cairn" deployment --inventory "$bed/inventory.yml" backup --store "file://$work/store-$size"
if ((verify)); then
    measure verify "$cairn" backups --store "file://$work/store-$size" verify --latest testbed
fi

throughput() { echo "scale=1; $1 * 1024 / $2" | bc; }
small=$(throughput 1 "${wall[1GiB]}")
large=$(throughput "$size" "${wall[${size}GiB]}")
echo
echo "artifact  completed  wall_s  peak_RSS_MiB  MiB/s  stored_MiB   ($(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg))"
for s in 1 "$size"; do
    printf '%4s GiB  yes %10.1f %13.1f %6s %11s\n' "$s" "${wall[${s}GiB]}" "$(echo "${rss[${s}GiB]} / 1024" | bc -l)" \
        "$(throughput "$s" "${wall[${s}GiB]}")" "$(($(du -sk "$work/store-$s" | cut -f1) / 1024))"
done
echo "throughput ratio ${size} GiB / 1 GiB: $(echo "scale=2; $large / $small" | bc)"
((verify == 0)) || echo "backups verify of ${size} GiB: ${wall[verify]} s, peak RSS $(echo "${rss[verify]} / 1024" | bc) MiB"
