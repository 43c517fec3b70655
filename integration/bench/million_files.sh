#!/usr/bin/env bash
# A million files (issue 15): one artifact of N small files (default 1,000,000) and three
# large ones on one test-bed host, backed up into a bbr directory and a file:// store and
# restored from each, against the raw `ssh ... tar` of the same tree in the same run. Prints,
# for each run, the wall time, the coordinator's peak RSS and CPU, and the ratios to the raw
# tar; for the restores also Cairn's own part (the copy with the instance's checksum listing,
# and the clean-up) apart from the job's restore script; checks that every restore gave back
# the same tree (a listing of every entry with its size and every file's sha256, taken on the
# host before and after). A benchmark, not a test: it fails only when a command fails or a
# tree differs. Targets (docs/performance.md): peak RSS <= 512 MiB, wall time <= 2x the raw tar.
# Each case runs --rounds times, raw tar and Cairn side by side in each round; the table gives
# the median wall time and CPU and the highest peak RSS, and the ratios of the medians (the
# rounds' own ratios are printed as they go: on a shared 2-core machine one round can be off by
# half).
#
#   sudo integration/bench/million_files.sh                  # 1,000,000 files
#   sudo integration/bench/million_files.sh --files 100000   # a smaller tree
#
# Options (environment variable in brackets):
#   --files N        small files [BENCH_FILES, default 1000000], 1,000 per directory, 1 to 300 bytes
#   --rounds N       rounds of every case [BENCH_ROUNDS, default 3]
#   --disk           keep the host's /var/vcap/store on the disk of the working directory instead
#                    of a tmpfs (see below); needs about N x 10 KiB of free disk
#   --work DIR       working directory (default: a new /var/tmp/cairn-million.XXXXXX); needs about
#                    N x 1.5 KiB of free disk (the directory backup, the file:// store)
#   --keep           keep the working directory
#   --no-build       do not run `cargo build --release` [CAIRN_BIN: use this binary instead]
#   --profile        record `perf record -g` of each Cairn run into WORK/perf-CASE.data
#
# The host's /var/vcap/store is a tmpfs by default (about N x 8 KiB of memory at the peak: the
# tree and its restored copy, a page per small file): on this project's machines the disk is
# mounted with `discard`, and deleting a million files there takes 5 to 15 minutes however it
# is done, which would measure the disk, not Cairn or tar. Raw tar and Cairn run on the same
# file system either way.
#
# The files job's scripts are replaced by cheap ones, as a job of many files would write them:
# the backup script hard-links the tree into the artifact directory (`cp -al`), the restore
# script replaces the tree with the restored artifact directory (`rm -rf` of the old tree,
# `mv`). Their cost is still in Cairn's wall time (they run inside the backup and the restore),
# and is printed on its own (`job-backup`: the `cp -al` and the removal of the copy;
# `restore script` from Cairn's log).
set -euo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
files=${BENCH_FILES:-1000000} rounds=${BENCH_ROUNDS:-3} work= keep=0 build=1 profile=0 disk=0
while [[ $# -gt 0 ]]; do
    case $1 in
    --files) files=$2; shift ;;
    --rounds) rounds=$2; shift ;;
    --disk) disk=1 ;;
    --work) work=$2; shift ;;
    --keep) keep=1 ;;
    --no-build) build=0 ;;
    --profile) profile=1 ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "million_files.sh: unknown option $1 (see --help)" >&2; exit 1 ;;
    esac
    shift
done
die() { echo "million_files.sh: $*" >&2; exit 1; }
say() { echo "== $*" >&2; }
[[ $files =~ ^[1-9][0-9]*$ ]] || die "--files takes a whole number, not '$files'"
[[ $rounds =~ ^[1-9][0-9]*$ ]] || die "--rounds takes a whole number, not '$rounds'"
[[ $(id -u) == 0 ]] || die "run as root (the test bed needs namespaces)"
for tool in /usr/bin/time python3 ssh bc; do
    command -v "$tool" >/dev/null || die "$tool is missing (apt-get install -y time python3 openssh-client bc)"
done
((profile == 0)) || command -v perf >/dev/null || die "--profile needs perf"

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

work=${work:-$(mktemp -d /var/tmp/cairn-million.XXXXXX)}
mkdir -p "$work"
chmod 755 "$work" # sshd reads the test bed's authorized_keys as vcap
work=$(cd "$work" && pwd)
need_mib=$((files * (disk ? 10 : 2) / 1024 + 1024))
free_mib=$(df -Pm "$work" | awk 'NR == 2 {print $4}')
((free_mib > need_mib)) || die "$files files need about $need_mib MiB of free disk, $free_mib MiB free in $work"
tmpfs_mib=$((files * 9 / 1024 + 1024))
if ((disk == 0)); then
    available_mib=$(awk '/^MemAvailable:/ {print int($2 / 1024)}' /proc/meminfo)
    ((available_mib > tmpfs_mib + 2048)) ||
        die "a tmpfs of $files files needs about $tmpfs_mib MiB of memory, $available_mib MiB available (or --disk)"
fi
cp "$cairn" "$work/cairn" # a rebuild during the run does not change what is measured
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
IFS=$'\t' read -r _ _ address hostdir _ <"$bed/hosts.tsv"
scripts=$hostdir/vcap/jobs/files/bin/bbr
# shellcheck source=integration/bench/million_tree.sh
source "$repo/integration/bench/million_tree.sh"
million_job_scripts "$scripts"
# on_host COMMAND...: as root in the host's namespaces (its /var/vcap, and the tmpfs).
on_host() { "$repo/integration/testbed.sh" exec "$bed" app/0 -- "$@"; }
if ((disk == 0)); then
    on_host mount -t tmpfs -o "size=${tmpfs_mib}m,mode=0755" cairn-million /var/vcap/store
fi

say "writing $files small files and 3 large ones (2 x 64 MiB random, 64 MiB of log lines) on app/0"
million_write_tree "$files"

say "listing of the tree"
before=$(million_listing)
tar_bytes=$(on_host sh -c 'cd /var/vcap/store/files && tar -c . | wc -c')

# WORK/ssh-host COMMAND: the command on app/0 over ssh, as throughput.sh's raw-ssh case (a file,
# so that /usr/bin/time can run it).
printf '#!/bin/sh\nexec ssh -F /dev/null -c aes128-gcm@openssh.com -i %s -o IdentitiesOnly=yes -o BatchMode=yes -o UserKnownHostsFile=%s -o StrictHostKeyChecking=yes -o LogLevel=ERROR vcap@%s "$@"\n' \
    "$bed/id_ed25519" "$bed/known_hosts" "$address" >"$work/ssh-host"
chmod 755 "$work/ssh-host"

declare -A wall rss cpu walls cpus
# measure CASE COMMAND...: wall time, peak RSS (KiB) and CPU seconds of the command, kept for
# this round (wall, rss, cpu) and added to the rounds' lists (walls, cpus; rss keeps the peak).
measure() {
    local case=$1
    shift
    local runner=()
    ((profile == 0)) || runner=(perf record -q -g -F 199 -o "$work/perf-$case-$round.data" --)
    sync
    if ! "${runner[@]}" /usr/bin/time -f '%e %M %U %S' -o "$work/time" "$@" >"$work/$case.log" 2>&1; then
        tail -n 30 "$work/$case.log" >&2
        die "$case failed; log above"
    fi
    local w m u s
    read -r w m u s <"$work/time"
    wall[$case]=$w cpu[$case]=$(echo "$u + $s" | bc)
    walls[$case]+=" $w" cpus[$case]+=" ${cpu[$case]}"
    ((m > ${rss[$case]:-0})) && rss[$case]=$m
    printf '   %-16s %8.2f s  peak RSS %7.1f MiB  CPU %7.2f s\n' "$case" "$w" "$(echo "$m / 1024" | bc -l)" "${cpu[$case]}" >&2
}
# median NUMBERS...: the middle one (the mean of the two middle ones for an even count).
median() {
    printf '%s\n' "$@" | sort -g | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'
}

check_tree() { # CASE
    local after
    after=$(million_listing)
    [[ $after == "$before" ]] || die "$1: the restored tree differs from the one backed up"
    echo "   $1: tree identical ($files files + 3 large, listing $before)" >&2
}

# phases CASE: a restore's seconds before its restore script (checks, the copy into tar -x
# with the instance's checksum listing), in it, and after it (unlock, clean-up), from the
# times of its log lines (whole seconds) and its wall time.
declare -A script_s
phases() {
    local log=$work/$1.log start=$2 begin end
    begin=$(sed -n 's/^\[bbr\] \([0-9/]* [0-9:]*\) INFO - Restoring .*/\1/p' "$log" | head -n 1)
    end=$(sed -n 's/^\[bbr\] \([0-9/]* [0-9:]*\) INFO - Finished restoring .*/\1/p' "$log" | tail -n 1)
    begin=$(date -d "$begin" +%s) end=$(date -d "$end" +%s)
    script_s[$1]=$((end - begin))
    printf '   %-16s before the restore script %d s, the script %d s, after it %s s\n' "$1" \
        $((begin - start)) $((end - begin)) "$(echo "${wall[$1]} - ($end - $start)" | bc)" >&2
}

declare -A own_walls
mib() { echo "scale=1; $1 / 1024" | bc; }
ratio() { echo "scale=2; $1 / $2" | bc; }
for round in $(seq "$rounds"); do
    say "round $round of $rounds: the raw tar over ssh, the same tree (backup) and back (restore)"
    measure raw-ssh-tar sh -c "'$work/ssh-host' 'sudo tar -C /var/vcap/store/files -c .' >'$work/raw.tar'"
    measure raw-ssh-untar sh -c "'$work/ssh-host' 'sudo sh -c \"mkdir -p /var/vcap/store/raw-restore && tar -C /var/vcap/store/raw-restore -x\"' <'$work/raw.tar'"
    on_host rm -rf /var/vcap/store/raw-restore
    rm -f "$work/raw.tar"
    measure job-backup "$work/ssh-host" "sudo sh -c 'mkdir -p /var/vcap/store/bbr-copy && cp -al /var/vcap/store/files/. /var/vcap/store/bbr-copy && rm -rf /var/vcap/store/bbr-copy'"

    rm -rf "$work/dir" "$work/store"
    mkdir -p "$work/dir" "$work/store"
    cd "$work"
    say "round $round of $rounds: Cairn: backup and restore, directory and file:// store"
    measure cairn-dir "$cairn" deployment --inventory "$bed/inventory.yml" backup --artifact-path "$work/dir"
    measure cairn-file "$cairn" deployment --inventory "$bed/inventory.yml" backup --store "file://$work/store"
    backup=$(ls -d "$work"/dir/*/ | head -n 1)
    manifest_bytes=$(find "$work/store" -name manifest.json -printf '%s\n' | head -n 1)
    start=$(date +%s)
    measure cairn-r-dir "$cairn" deployment --inventory "$bed/inventory.yml" restore --artifact-path "$backup"
    phases cairn-r-dir "$start"
    check_tree cairn-r-dir
    start=$(date +%s)
    measure cairn-r-file "$cairn" deployment --inventory "$bed/inventory.yml" restore --store "file://$work/store" --latest
    phases cairn-r-file "$start"
    check_tree cairn-r-file
    # Cairn's own part: the backups without the job's cp -al (job-backup), the restores without
    # their restore script.
    for case in cairn-dir cairn-file; do
        own_walls[$case]+=" $(echo "${wall[$case]} - ${wall[job-backup]}" | bc)"
    done
    for case in cairn-r-dir cairn-r-file; do
        own_walls[$case]+=" $(echo "${wall[$case]} - ${script_s[$case]}" | bc)"
    done
    echo "   round $round: vs the raw tar (without the job's script): backups $(ratio "${wall[cairn-dir]}" "${wall[raw-ssh-tar]}") / $(ratio "${wall[cairn-file]}" "${wall[raw-ssh-tar]}") ($(ratio "$(echo "${wall[cairn-dir]} - ${wall[job-backup]}" | bc)" "${wall[raw-ssh-tar]}") / $(ratio "$(echo "${wall[cairn-file]} - ${wall[job-backup]}" | bc)" "${wall[raw-ssh-tar]}")), restores $(ratio "${wall[cairn-r-dir]}" "${wall[raw-ssh-untar]}") / $(ratio "${wall[cairn-r-file]}" "${wall[raw-ssh-untar]}") ($(ratio "$(echo "${wall[cairn-r-dir]} - ${script_s[cairn-r-dir]}" | bc)" "${wall[raw-ssh-untar]}") / $(ratio "$(echo "${wall[cairn-r-file]} - ${script_s[cairn-r-file]}" | bc)" "${wall[raw-ssh-untar]}"))" >&2
done

stored=$(du -sk "$work/store" | cut -f1)
echo
echo "$files small files + 3 x 64 MiB on $( ((disk)) && echo disk || echo tmpfs), tar stream $(mib $((tar_bytes / 1024))) MiB, file:// store $(mib "$stored") MiB, manifest.json $(mib $((manifest_bytes / 1024))) MiB; $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg); medians of $rounds round(s)"
printf '%-14s %9s %12s %9s %10s %14s\n' case wall_s peak_RSS_MiB CPU_s vs_raw_tar without_script
for case in raw-ssh-tar raw-ssh-untar job-backup cairn-dir cairn-file cairn-r-dir cairn-r-file; do
    # shellcheck disable=SC2086 # the lists are space-separated numbers
    median_wall=$(median ${walls[$case]}) median_cpu=$(median ${cpus[$case]})
    base= own=
    case $case in
    cairn-dir | cairn-file) base=$(median ${walls[raw-ssh-tar]}) ;;
    cairn-r-dir | cairn-r-file) base=$(median ${walls[raw-ssh-untar]}) ;;
    esac
    [[ -z ${own_walls[$case]:-} ]] || own=$(ratio "$(median ${own_walls[$case]})" "$base")
    printf '%-14s %9.2f %12.1f %9.2f %10s %14s\n' "$case" "$median_wall" "$(echo "${rss[$case]} / 1024" | bc -l)" \
        "$median_cpu" "${base:+$(ratio "$median_wall" "$base")}" "$own"
done
