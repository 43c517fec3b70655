#!/usr/bin/env bash
# Benchmark of issue 21, lever 4: the recovery time of a restore whose `restore` scripts are
# I/O-bound, with `--restore-parallelism 1` (bbr's serial order, the default) against N > 1.
# Starts (and tears down) a test bed of K sshd hosts, each with the `files` job holding SIZE
# MiB; takes one backup; then restores it R times per N, in rounds (N=1, N=4, N=1, ...) so a
# burst of someone else's work hits every N alike, and keeps the fastest run of each. Prints
# one table: the whole restore (what an operator waits for: copy, checks, locks, scripts,
# unlocks) and the restore scripts' phase alone (first script start to last script end, read
# from the timestamps each script writes on its host), each as a ratio to N=1.
# A benchmark, not a test: it asserts nothing (docs/performance.md has the figures).
#
#   sudo integration/bench/restore_parallel.sh                       # 4 instances x 1024 MiB, N = 1 and 4
#   sudo integration/bench/restore_parallel.sh --instances 4 --size 1024 --n "1 2 4" --repeat 3
#
# Options (environment variable in brackets):
#   --instances K   hosts, one `files` job each [BENCH_INSTANCES, default 4]
#   --size MIB      data per host [BENCH_SIZE, default 1024]
#   --n "N..."      values of --restore-parallelism [BENCH_N, default "1 4"]
#   --repeat R      runs per N, the fastest is kept [BENCH_REPEAT, default 1]
#   --work DIR      working directory (default: a new /var/tmp/cairn-restore-parallel.XXXXXX)
#   --keep          keep the working directory
#   --no-build      do not run `cargo build --release` [CAIRN_BIN: use this binary instead]
#
# The `files` job's backup script hard-links the store (it costs nothing); its restore script
# empties the store and writes every file of the artifact back with `dd bs=64k oflag=direct`:
# synchronous 64 KiB writes that wait for the disk each time, so one script's speed is set by
# the disk's latency, not its bandwidth, as a database import's is. On one VM per instance each
# script has a disk of its own; here all hosts share this machine's disk, which serves several
# such writers at once (measure it: `dd if=F of=G bs=64k oflag=direct` alone and four at once).
# Needs root, the test bed's requirements and /usr/bin/time.
set -euo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
times_log=/var/vcap/sys/log/files/restore-times

die() { echo "restore_parallel.sh: $*" >&2; exit 1; }
say() { echo "== $*" >&2; }

instances=${BENCH_INSTANCES:-4} size=${BENCH_SIZE:-1024} ns=${BENCH_N:-1 4} repeat=${BENCH_REPEAT:-1}
work= keep=0 build=1
while [[ $# -gt 0 ]]; do
    case $1 in
    --instances) instances=$2; shift ;;
    --size) size=$2; shift ;;
    --n) ns=$2; shift ;;
    --repeat) repeat=$2; shift ;;
    --work) work=$2; shift ;;
    --keep) keep=1 ;;
    --no-build) build=0 ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
    esac
    shift
done
for value in "$instances" "$size" "$repeat" $ns; do
    [[ $value =~ ^[1-9][0-9]*$ ]] || die "'$value' is not a whole number of at least 1 (see --help)"
done
[[ $(id -u) == 0 ]] || die "run as root (the test bed needs namespaces)"
[[ -x /usr/bin/time ]] || die "/usr/bin/time is missing (apt-get install -y time)"

if [[ -n ${CAIRN_BIN:-} ]]; then
    cairn=$CAIRN_BIN
else
    if ((build)); then
        say "cargo build --release"
        (cd "$repo" && cargo build --release --quiet)
    fi
    cairn=${CARGO_TARGET_DIR:-$repo/target}/release/cairn
fi
[[ -x $cairn ]] || die "no binary at $cairn"
cairn_built=$(date -u -r "$cairn" +%Y-%m-%dT%H:%M:%SZ)

work=${work:-$(mktemp -d /var/tmp/cairn-restore-parallel.XXXXXX)}
mkdir -p "$work"
chmod 755 "$work" # sshd reads the test bed's authorized_keys as vcap
work=$(cd "$work" && pwd)
need=$((size * instances * 3 + size + 2048))
free=$(df -Pm "$work" | awk 'NR == 2 {print $4}')
((free >= need)) || die "needs about $need MiB of free disk in $work, $free MiB free (--work DIR elsewhere)"
cp "$cairn" "$work/cairn" # a rebuild during the run does not change what is measured
cairn=$work/cairn
bed=
teardown() {
    local status=$?
    trap - EXIT INT TERM
    [[ -z $bed ]] || "$repo/integration/testbed.sh" down "$bed" >/dev/null 2>&1 || true
    if ((keep)); then echo "kept $work" >&2; else rm -rf "$work"; fi
    exit "$status"
}
trap teardown EXIT
trap 'exit 130' INT TERM

say "$instances hosts x $size MiB: test bed"
hosts=()
for ((i = 0; i < instances; i++)); do hosts+=(--host "app/$i:files"); done
bed=$work/bed
"$repo/integration/testbed.sh" up "$bed" "${hosts[@]}" --no-seed >/dev/null 2>"$work/testbed-up.log" ||
    { cat "$work/testbed-up.log" >&2; die "testbed.sh up failed"; }
inventory=$bed/inventory.yml

say "generating $size MiB of incompressible data per host"
mkdir -p "$work/pool"
for ((part = 0; part < 4; part++)); do
    head -c "$((size * 1024 * 1024 / 4))" /dev/urandom >"$work/pool/part-$part.bin"
done
host_dirs=()
while IFS=$'\t' read -r _ _ _ hostdir _; do
    host_dirs+=("$hostdir")
    scripts=$hostdir/vcap/jobs/files/bin/bbr
    mkdir -p "$hostdir/vcap/store/files" "$hostdir/vcap/sys/log/files"
    cp -a "$work/pool/." "$hostdir/vcap/store/files/"
    printf '#!/bin/sh\nset -eu\ncp -al /var/vcap/store/files/. "$BBR_ARTIFACT_DIRECTORY"\n' >"$scripts/backup"
    cat >"$scripts/restore" <<EOF
#!/bin/sh
# I/O-bound on purpose (restore_parallel.sh): synchronous 64 KiB writes of every file.
set -eu
echo "start \$(date +%s.%N)" >>$times_log
store=/var/vcap/store/files
artifact=\${BBR_ARTIFACT_DIRECTORY%/}
find "\$store" -mindepth 1 -delete
cd "\$artifact"
find . -type d -exec mkdir -p "\$store/{}" \\;
find . -type f -exec dd if={} of="\$store/{}" bs=64k oflag=direct status=none \\;
echo "end \$(date +%s.%N)" >>$times_log
EOF
    chmod 755 "$scripts/backup" "$scripts/restore"
done <"$bed/hosts.tsv"
rm -rf "$work/pool"

say "backup"
mkdir -p "$work/backups"
"$cairn" deployment --inventory "$inventory" backup --artifact-path "$work/backups" >"$work/backup.log" 2>&1 ||
    { tail -n 30 "$work/backup.log" >&2; die "the backup failed"; }
backup=$(ls -d "$work"/backups/*/ | head -n 1)

results=$work/results.tsv
: >"$results"
# One restore with --restore-parallelism $1, run $2: a line "N run wall scripts" in results.tsv.
measure() {
    local n=$1 run=$2 log=$work/restore-$1-$2.log hostdir wall scripts
    for hostdir in "${host_dirs[@]}"; do rm -f "$hostdir/vcap${times_log#/var/vcap}"; done
    sync
    if ! /usr/bin/time -f '%e' -o "$work/time" "$cairn" deployment --inventory "$inventory" restore \
        --artifact-path "$backup" --restore-parallelism "$n" >"$log" 2>&1; then
        tail -n 30 "$log" >&2
        die "the restore with --restore-parallelism $n (run $run) failed; log above"
    fi
    wall=$(cat "$work/time")
    scripts=$(for hostdir in "${host_dirs[@]}"; do cat "$hostdir/vcap${times_log#/var/vcap}"; done |
        awk '$1 == "start" && (min == "" || $2 < min) {min = $2} $1 == "end" && $2 > max {max = $2}
             END {printf "%.2f", max - min}')
    printf '%s\t%s\t%s\t%s\n' "$n" "$run" "$wall" "$scripts" >>"$results"
    printf '   N=%-3s run %d: restore %7.2f s, restore scripts %7.2f s\n' "$n" "$run" "$wall" "$scripts" >&2
}

started=$(date +%s)
for ((run = 1; run <= repeat; run++)); do
    for n in $ns; do measure "$n" "$run"; done
done

echo
echo "Cairn restore-parallelism benchmark, $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo) RAM, $(($(date +%s) - started)) s; cairn built $cairn_built"
echo "$instances instances x $size MiB (4 files each), restore scripts: dd bs=64k oflag=direct; best of $repeat"
echo
awk -F'\t' -v first="${ns%% *}" '
    !($1 in wall) || $3 < wall[$1] {wall[$1] = $3}
    !($1 in scripts) || $4 < scripts[$1] {scripts[$1] = $4}
    !seen[$1]++ {order[++count] = $1}
    END {
        printf "| --restore-parallelism | restore (s) | vs N=%s | restore scripts (s) | vs N=%s |\n", first, first
        print "|---:|---:|---:|---:|---:|"
        for (i = 1; i <= count; i++) {
            n = order[i]
            printf "| %s | %.1f | %.2fx | %.1f | %.2fx |\n", n, wall[n], wall[n] / wall[first], scripts[n], scripts[n] / scripts[first]
        }
    }' "$results"
