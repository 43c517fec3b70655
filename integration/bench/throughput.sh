#!/usr/bin/env bash
# Throughput benchmark of issue 6: Cairn against the physical limit and against bbr's data path
# rebuilt from standard tools, on a test bed of N sshd hosts and a moto S3 server, all started
# (and torn down) by this script. Prints the CPU seconds per GiB of every run, then one table.
# A benchmark, not a test: only --quick asserts anything, and only generous floors (see
# docs/performance.md, which also explains every column).
#
#   sudo integration/bench/throughput.sh                 # full: 1 and 4 GiB per instance x 1, 4, 8 instances
#   sudo integration/bench/throughput.sh --quick         # CI: 256 MiB x 1, 2 instances, ~2 min, exit 1 below a floor
#   sudo integration/bench/throughput.sh --sizes 1024 --instances "1 4 8"
#
# Options (environment variable in brackets):
#   --quick                 256 MiB, 1 and 2 instances, cases raw-ssh zstd bbr-dir bbr-upload cairn-dir cairn-s3-zstd,
#                           best of 3 runs, floors checked (throughput_helper.py FLOORS); a configuration that
#                           misses one gets up to 3 more rounds [BENCH_EXTRA_ROUNDS] before the run fails; a
#                           configuration without the disk space it needs fails instead of being skipped
#   --sizes "MIB..."        data per instance in MiB [BENCH_SIZES, default "1024 4096"]
#   --instances "N..."      instance counts [BENCH_INSTANCES, default "1 4 8"]
#   --cases "CASE..."       subset of the cases below [BENCH_CASES]
#   --repeat R              runs of each case, the fastest is kept [BENCH_REPEAT, default 1]
#   --profile               record `perf record -a -e cpu-clock` around each case and print the CPU split
#                           (also kept in WORK/profile.txt; use with --keep)
#   --results FILE          also write the raw results (one line per run) to FILE
#   --work DIR              working directory (default: a new /var/tmp/cairn-throughput.XXXXXX)
#   --keep                  keep the working directory
#   --no-build              do not run `cargo build --release` [CAIRN_BIN: use this binary instead]
#   --link MBIT             give every host a link of MBIT Mbit/s in each direction (tc tbf on both ends of
#                           its veth) instead of the unshaped veth, like a real network; the limits are then
#                           measured over the same links [BENCH_LINK_MBIT]
#   --pin                   give the coordinator and the rest of the test bed CPUs of their own: every case's
#                           command runs on the first half of the CPUs (CPU 0 of 2), the hosts' sshd (with
#                           everything it starts) and moto on the other half [BENCH_PIN=1]
#
# Cases (backup: raw-ssh zstd disk bbr-dir bbr-upload cairn-dir cairn-dir-ic cairn-s3-zstd cairn-s3-none cairn-file-zstd;
#        restore: raw-ssh-up bbr-r-dir bbr-download cairn-r-dir cairn-r-s3):
#   raw-ssh        the limit: `ssh -c aes128-gcm@openssh.com host 'sudo tar -C /var/vcap/store/files -c .' > /dev/null`, all hosts at once
#   zstd           the compression limit: `zstd -T<W> -3 -c <the same files> > /dev/null`, one per instance at once,
#                  W = max(1, cores / instances), the zstd workers Cairn gives each stream [BENCH_ZSTD_THREADS]
#   disk           the local disk: `dd if=/dev/zero bs=1M conv=fsync` of the same size, one per instance at once
#                  (Cairn fsyncs every tar it writes; bbr does not)
#   bbr-dir        bbr's drain (bbr-facts 3.4, 4.4, 4.5), per host at once, a new ssh per command: du -sh, du -s,
#                  tar -c > host.tar, sha256 of every tar entry re-read from disk, remote `find | xargs shasum -a 256`, compare
#   bbr-upload     then the tars to the S3 bucket as the aws CLI would (s3transfer, 8 MiB parts, 10 at once);
#                  the table shows bbr-equiv. -> S3 = bbr-dir + bbr-upload
#   cairn-dir      cairn backup --artifact-path (bbr format, uncompressed)
#   cairn-dir-ic   the same with --instance-checksums (the instance hashes every file in a second read, as bbr)
#   cairn-s3-zstd  cairn backup --store s3://... (default zstd:3)
#   cairn-s3-none  cairn backup --store s3://... --compression none
#   cairn-file-zstd cairn backup --store file://WORK/store (zstd:3): the compressed stream without moto
#   raw-ssh-up     the restore limit: `ssh host 'sudo sh -c "mkdir -p D && tar -C D -x"' < host.tar`, all hosts at once
#   bbr-r-dir      bbr's restore data path: local sha256 of the tar, mkdir, tar -x, remote shasum, compare, rm -rf
#   bbr-download   the tars from S3 back to the coordinator's disk; bbr-equiv. S3 restore = bbr-download + bbr-r-dir
#   cairn-r-dir    cairn restore --artifact-path (the backup of cairn-dir)
#   cairn-r-s3     cairn restore --store s3://... --latest (the backup of cairn-s3-zstd)
#
# The files job's backup and restore scripts are replaced by `cp -al` (hard links) on every host,
# so the job's own copy costs nothing and what is measured is the data path. Needs root, the
# test bed's requirements, zstd, /usr/bin/time, python3 and moto (installed by moto.sh when missing).
set -euo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
bench=$repo/integration/bench
tools=${CAIRN_TOOLS:-/opt/cairn-test-tools}
py=$tools/moto-venv/bin/python
helper=$bench/throughput_helper.py
bucket=bench
job_dir=/var/vcap/store/files
restore_dir=/var/vcap/store/bench-restore
export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_EC2_METADATA_DISABLED=true AWS_REGION=us-east-1

die() { echo "throughput.sh: $*" >&2; exit 1; }
say() { echo "== $*" >&2; }

# ---- the cases run under /usr/bin/time: `throughput.sh __case NAME` with the state in the environment ----

ssh_to() { # ADDRESS COMMAND
    ssh -F /dev/null -c aes128-gcm@openssh.com -i "$BED/id_ed25519" -o IdentitiesOnly=yes -o BatchMode=yes \
        -o UserKnownHostsFile="$BED/known_hosts" -o StrictHostKeyChecking=yes -o LogLevel=ERROR "vcap@$1" "$2"
}

addresses() { cut -f3 "$BED/hosts.tsv"; }

# Runs FUNCTION ADDRESS INDEX for every host at once; fails if any failed.
on_every_host() {
    local fn=$1 pids=() i=0 address failed=0 all
    mapfile -t all < <(addresses)
    for address in "${all[@]}"; do
        "$fn" "$address" "$i" </dev/null &
        pids+=($!)
        i=$((i + 1))
    done
    for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
    return $failed
}

raw_ssh_one() { ssh_to "$1" "sudo tar -C $job_dir -c ." >/dev/null; }
zstd_one() { zstd -q -T"$ZSTD_THREADS" -3 -c "$POOL/random.bin" "$POOL/log/app.log" >/dev/null; }
disk_one() { dd if=/dev/zero of="$WORK/disk-$2" bs=1M count="$SIZE" conv=fsync status=none; }
bbr_backup_one() {
    local tar=$WORK/bbr/host-$2.tar
    ssh_to "$1" "sudo du -sh $job_dir" >/dev/null
    ssh_to "$1" "sudo du -s $job_dir" >/dev/null
    ssh_to "$1" "sudo tar -C $job_dir -c ." >"$tar"
    "$py" "$helper" bbr-hash "$tar" "$tar.local.json"
    ssh_to "$1" "sudo sh -c 'cd $job_dir && find . -type f | xargs shasum -a 256'" >"$tar.remote.txt"
    "$py" "$helper" bbr-compare "$tar.local.json" "$tar.remote.txt"
}
raw_ssh_up_one() { ssh_to "$1" "sudo sh -c 'mkdir -p $restore_dir && tar -C $restore_dir -x'" <"$WORK/bbr/host-$2.tar"; }
bbr_restore_one() {
    local tar=$WORK/bbr/host-$2.tar
    "$py" "$helper" bbr-hash "$tar" "$tar.restore.json"
    ssh_to "$1" "sudo mkdir -p $restore_dir"
    ssh_to "$1" "sudo sh -c 'tar -C $restore_dir -x'" <"$tar"
    ssh_to "$1" "sudo sh -c 'cd $restore_dir && find . -type f | xargs shasum -a 256'" >"$tar.restored.txt"
    "$py" "$helper" bbr-compare "$tar.restore.json" "$tar.restored.txt"
    ssh_to "$1" "sudo rm -rf $restore_dir"
}

run_case() {
    case $1 in
    raw-ssh) on_every_host raw_ssh_one ;;
    zstd) on_every_host zstd_one ;;
    disk) on_every_host disk_one ;;
    bbr-dir) rm -rf "$WORK/bbr" && mkdir -p "$WORK/bbr" && on_every_host bbr_backup_one ;;
    bbr-upload) "$py" "$helper" s3-put "$ENDPOINT" "$bucket" "bbr/run$RUN" "$WORK"/bbr/host-*.tar ;;
    raw-ssh-up) on_every_host raw_ssh_up_one ;;
    bbr-r-dir) on_every_host bbr_restore_one ;;
    bbr-download) "$py" "$helper" s3-get "$ENDPOINT" "$bucket" "bbr/run1/" "$WORK/bbr-download" ;;
    *) die "unknown case $1" ;;
    esac
}

if [[ ${1:-} == __case ]]; then
    run_case "$2"
    exit
fi

# ---- options ----

quick=0 keep=0 build=1 profile=0 results_copy= work=
link_mbit=${BENCH_LINK_MBIT:-} pin=${BENCH_PIN:-0}
sizes=${BENCH_SIZES:-} instances=${BENCH_INSTANCES:-} cases=${BENCH_CASES:-} repeat=${BENCH_REPEAT:-}
while [[ $# -gt 0 ]]; do
    case $1 in
    --quick) quick=1 ;;
    --sizes) sizes=$2; shift ;;
    --instances) instances=$2; shift ;;
    --cases) cases=$2; shift ;;
    --repeat) repeat=$2; shift ;;
    --profile) profile=1 ;;
    --results) results_copy=$2; shift ;;
    --work) work=$2; shift ;;
    --keep) keep=1 ;;
    --no-build) build=0 ;;
    --link) link_mbit=$2; shift ;;
    --pin) pin=1 ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
    esac
    shift
done
all_cases="raw-ssh zstd disk bbr-dir bbr-upload cairn-dir cairn-dir-ic cairn-s3-zstd cairn-s3-none cairn-file-zstd raw-ssh-up bbr-r-dir bbr-download cairn-r-dir cairn-r-s3"
if ((quick)); then
    sizes=${sizes:-256} instances=${instances:-1 2} repeat=${repeat:-3}
    cases=${cases:-raw-ssh zstd bbr-dir bbr-upload cairn-dir cairn-s3-zstd}
fi
sizes=${sizes:-1024 4096} instances=${instances:-1 4 8} repeat=${repeat:-1} cases=${cases:-$all_cases}
extra_rounds=0
((quick == 0)) || extra_rounds=${BENCH_EXTRA_ROUNDS:-3}
for c in $cases; do [[ " $all_cases " == *" $c "* ]] || die "unknown case $c"; done
[[ -z $link_mbit || $link_mbit =~ ^[1-9][0-9]*$ ]] || die "--link takes a whole number of Mbit/s, not '$link_mbit'"
[[ $pin =~ ^[01]$ ]] || die "BENCH_PIN must be 0 or 1, not '$pin'"
cores=$(nproc)
if ((pin)); then
    ((cores >= 2)) || die "--pin needs at least 2 CPUs, this machine has $cores"
    coordinator_cpus="0-$((cores / 2 - 1))" bed_cpus="$((cores / 2))-$((cores - 1))"
    cores=$((cores / 2)) # what the coordinator's commands get
fi
wants() { [[ " $cases " == *" $1 "* ]]; }

[[ $(id -u) == 0 ]] || die "run as root (the test bed needs namespaces)"
for tool in zstd /usr/bin/time python3 ssh; do
    command -v "$tool" >/dev/null || die "$tool is missing (apt-get install -y zstd time python3 openssh-client)"
done
if wants bbr-dir || wants bbr-r-dir; then
    command -v shasum >/dev/null || die "shasum is missing (bbr's remote checksum; apt-get install -y perl)"
fi
if ((profile)); then command -v perf >/dev/null || die "--profile needs perf"; fi
if [[ -n $link_mbit ]]; then command -v tc >/dev/null || die "--link needs tc (apt-get install -y iproute2)"; fi
if ((pin)); then command -v taskset >/dev/null || die "--pin needs taskset (apt-get install -y util-linux)"; fi

# ---- set-up and tear-down ----

if [[ -n ${CAIRN_BIN:-} ]]; then
    cairn=$CAIRN_BIN
elif ((build)); then
    say "cargo build --release"
    (cd "$repo" && cargo build --release --quiet)
    cairn=$repo/target/release/cairn
else
    cairn=$repo/target/release/cairn
fi
[[ -x $cairn ]] || die "no binary at $cairn"
cairn_built=$(date -u -r "$cairn" +%Y-%m-%dT%H:%M:%SZ)
"$repo/integration/stores/moto.sh" install

work=${work:-$(mktemp -d /var/tmp/cairn-throughput.XXXXXX)}
mkdir -p "$work"
chmod 755 "$work" # sshd reads the test bed's authorized_keys as vcap
work=$(cd "$work" && pwd)
results=$work/results.tsv
: >"$results"
# A copy, so that a rebuild during the run does not change what is measured.
cp "$cairn" "$work/cairn"
cairn=$work/cairn
bed= moto_dir=
teardown() {
    local status=$?
    trap - EXIT INT TERM
    local pids
    pids=$(jobs -p)
    [[ -z $pids ]] || kill $pids 2>/dev/null || true
    [[ -z $bed ]] || "$repo/integration/testbed.sh" down "$bed" >/dev/null 2>&1 || true
    [[ -z $moto_dir ]] || "$repo/integration/stores/moto.sh" stop "$moto_dir" || true
    [[ -z $results_copy || ! -f $results ]] || cp "$results" "$results_copy"
    if ((keep)); then echo "kept $work" >&2; else rm -rf "$work"; fi
    exit "$status"
}
trap teardown EXIT
trap 'exit 130' INT TERM

cpu_ticks() { awk '/^cpu /{print $2 + $3 + $4 + $7 + $8 + $9; exit}' /proc/stat; }
ticks_to_s() { echo "scale=2; $1 / $(getconf CLK_TCK)" | bc; }

# measure SIZE N CASE RUN COMMAND...: one line of results.tsv (see throughput_helper.py for the fields)
measure() {
    local size=$1 n=$2 case=$3 run=$4
    shift 4
    local log=$work/logs/$size-$n-$case-$run.log perf_data=$work/perf-$size-$n-$case-$run.data
    local machine0 machine1 sampler hosts moto kernel own by_command
    mkdir -p "$work/logs"
    sync
    rm -f "$work/cpu"
    "$py" "$helper" cpu-sample "$work/cpu" $(cut -f5 "$bed/hosts.tsv") -- "$(cat "$moto_dir/pid")" &
    sampler=$!
    sleep 0.3 # the sampler's first scan
    machine0=$(cpu_ticks)
    local runner=()
    if ((profile)); then
        runner=(perf record -q -a -e cpu-clock -F 499 -o "$perf_data" --)
    fi
    if ((pin)); then
        runner+=(taskset -c "$coordinator_cpus")
    fi
    if ! "${runner[@]}" /usr/bin/time -f '%e %U %S %M %O' -o "$work/time" "$@" >"$log" 2>&1; then
        tail -n 30 "$log" >&2
        local pid
        for pid in $(cut -f5 "$bed/hosts.tsv"); do
            kill -0 "$pid" 2>/dev/null ||
                die "case $case ($size MiB x $n, run $run) failed: the test bed's sshd $pid is gone; someone tore the bed down (integration/test.sh runs 'testbed.sh down-all' when it ends)"
        done
        die "case $case ($size MiB x $n, run $run) failed; log above"
    fi
    machine1=$(cpu_ticks)
    kill -TERM "$sampler" && wait "$sampler" || true
    read -r wall user sys rss blocks <"$work/time"
    read -r hosts moto kernel own by_command <"$work/cpu" || true
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$size" "$n" "$case" "$wall" "$user" "$sys" "$rss" \
        "$blocks" "$(ticks_to_s $((machine1 - machine0)))" "${hosts:-0}" "${moto:-0}" "${kernel:-0}" "${own:-0}" \
        "${by_command:--}" >>"$results"
    printf '   %-14s run %d: %6.2f s  %7.1f MiB/s   hosts: %s\n' "$case" "$run" "$wall" "$(echo "$size * $n / $wall" | bc -l)" "${by_command:--}" >&2
    if ((profile)) && [[ -f $perf_data ]]; then
        {
            echo "--- $case, $size MiB x $n, run $run: CPU samples by command, then by function"
            perf report -q -i "$perf_data" --sort comm --stdio 2>/dev/null | grep -v '^$' | head -n 12
            perf report -q -i "$perf_data" --sort comm,dso,sym --stdio 2>/dev/null | grep -v '^$' | head -n 30
        } | tee -a "$work/profile.txt" >&2 || true
    fi
}

# make_pool SIZE: SIZE MiB of data, half /dev/urandom, half log lines, in $work/pool-SIZE
make_pool() {
    local size=$1 pool=$work/pool-$1
    [[ -d $pool ]] && return 0
    say "generating $size MiB of data (half incompressible, half log lines)"
    mkdir -p "$pool.tmp/log"
    head -c "$((size / 2 * 1024 * 1024))" /dev/urandom >"$pool.tmp/random.bin"
    "$py" "$helper" genlog "$pool.tmp/log/app.log" "$((size - size / 2))"
    mv "$pool.tmp" "$pool"
}

# Every host of the bed gets its own copy of the pool (hard links shared between hosts would not
# do: a link made or removed by one host's backup changes the ctime under another host's `tar`,
# which then fails with "file changed as we read it"), and the files job's scripts become
# hard-link copies within the host so that the job itself costs nothing.
seed_bed() {
    local pool=$1 hostdir
    while IFS=$'\t' read -r _ _ _ hostdir _; do
        local store=$hostdir/vcap/store/files scripts=$hostdir/vcap/jobs/files/bin/bbr
        mkdir -p "$store"
        cp -a "$pool/." "$store/"
        printf '#!/bin/sh\nset -eu\ncp -al /var/vcap/store/files/. "$BBR_ARTIFACT_DIRECTORY"\n' >"$scripts/backup"
        printf '#!/bin/sh\nset -eu\nfind /var/vcap/store/files -mindepth 1 -delete\ncp -al "${BBR_ARTIFACT_DIRECTORY%%/}/." /var/vcap/store/files/\n' >"$scripts/restore"
        chmod 755 "$scripts/backup" "$scripts/restore"
    done <"$bed/hosts.tsv"
}

# shape_links: every host's link becomes $link_mbit Mbit/s in each direction: a token bucket on
# the host's eth0 (what it sends) and one on its veth's bridge end (what it receives). The bucket
# holds 4 ms of the rate (at least 64 KiB, one GSO packet), so bursts stay short.
shape_links() {
    local rate=${link_mbit}mbit burst=$((link_mbit * 1000 * 1000 / 8 / 250)) pid ns port bridge
    ((burst >= 65536)) || burst=65536
    local hosts=0 ports=0
    while IFS=$'\t' read -r _ _ _ _ pid; do
        ns=$(ip netns identify "$pid") || true
        [[ -n $ns ]] || die "--link: no network namespace for the test bed's sshd $pid"
        ip netns exec "$ns" tc qdisc replace dev eth0 root tbf rate "$rate" burst "$burst" latency 20ms ||
            die "--link: tc failed in $ns"
        hosts=$((hosts + 1))
    done <"$bed/hosts.tsv"
    bridge=$(sed -n 's/^BRIDGE=//p' "$bed/testbed.env")
    [[ -n $bridge ]] || die "--link: no BRIDGE= in $bed/testbed.env"
    for port in $(ip -o link show master "$bridge" | awk -F': ' '{print $2}' | cut -d@ -f1); do
        tc qdisc replace dev "$port" root tbf rate "$rate" burst "$burst" latency 20ms ||
            die "--link: tc failed on $port"
        ports=$((ports + 1))
    done
    ((ports == hosts)) || die "--link: shaped $hosts hosts but $ports ports of bridge $bridge"
}

# pin_bed: the hosts' sshd (sessions inherit it) and moto on $bed_cpus; measure puts every
# case's command on $coordinator_cpus.
pin_bed() {
    local pid
    for pid in $(cut -f5 "$bed/hosts.tsv") "$(cat "$moto_dir/pid")"; do
        taskset -a -p -c "$bed_cpus" "$pid" >/dev/null || die "--pin: taskset failed for pid $pid"
    done
}

# disk_needed_mib SIZE N: the most the chosen cases hold on the disk at once, in MiB. Kept for
# the whole configuration: the pool, the hosts' copies, bbr's tars, moto's spool (bbr's upload and
# every Cairn S3 backup; zstd keeps 0.6 of the data), Cairn's directory and file:// backups (one
# per round). Held for one case at a time: a restored copy on the hosts, bbr's download, the
# disk case's files. Plus 2 GiB for logs and slack.
disk_needed_mib() {
    local size=$1 data=$(($1 * $2)) rounds=$((repeat + extra_rounds)) need c
    need=$((size + data + 2048))
    wants bbr-dir && need=$((need + data))
    wants bbr-upload && need=$((need + data * rounds))
    wants cairn-dir && need=$((need + data * rounds))
    wants cairn-dir-ic && need=$((need + data * rounds))
    wants cairn-s3-none && need=$((need + data * rounds))
    wants cairn-s3-zstd && need=$((need + data * 6 / 10 * rounds))
    wants cairn-file-zstd && need=$((need + data * 6 / 10 * rounds))
    for c in disk raw-ssh-up bbr-r-dir bbr-download cairn-r-dir cairn-r-s3; do
        if wants "$c"; then
            need=$((need + data))
            break
        fi
    done
    echo "$need"
}

free_mib() { df -Pm "$work" | awk 'NR == 2 {print $4}'; }

# One round of every case, run number $1, on run_config's test bed and moto (its locals:
# size, n, inventory, self, s3_url).
run_round() {
    local run=$1 case
    for case in $cases; do
        export RUN=$run
        case $case in
        cairn-dir)
            mkdir -p "$work/cairn-dir/run$run"
            measure "$size" "$n" "$case" "$run" "$cairn" deployment --inventory "$inventory" backup --artifact-path "$work/cairn-dir/run$run" ;;
        cairn-dir-ic)
            mkdir -p "$work/cairn-dir-ic/run$run"
            measure "$size" "$n" "$case" "$run" "$cairn" deployment --inventory "$inventory" backup --instance-checksums --artifact-path "$work/cairn-dir-ic/run$run" ;;
        cairn-s3-zstd)
            measure "$size" "$n" "$case" "$run" "$cairn" deployment --inventory "$inventory" backup --store "$(s3_url "zstd$run")" ;;
        cairn-s3-none)
            measure "$size" "$n" "$case" "$run" "$cairn" deployment --inventory "$inventory" backup --store "$(s3_url "none$run")" --compression none ;;
        cairn-file-zstd)
            # A file:// store's root must exist (Cairn refuses a missing one, as a missing bucket).
            mkdir -p "$work/store/run$run"
            measure "$size" "$n" "$case" "$run" "$cairn" deployment --inventory "$inventory" backup --store "file://$work/store/run$run" ;;
        cairn-r-dir)
            local backup
            backup=$(ls -d "$work"/cairn-dir/run1/*/ 2>/dev/null | head -n 1) || true
            [[ -n $backup ]] || die "cairn-r-dir needs the backup of cairn-dir"
            measure "$size" "$n" "$case" "$run" "$cairn" deployment --inventory "$inventory" restore --artifact-path "$backup" ;;
        cairn-r-s3)
            wants cairn-s3-zstd || die "cairn-r-s3 needs the backup of cairn-s3-zstd"
            measure "$size" "$n" "$case" "$run" "$cairn" deployment --inventory "$inventory" restore --store "$(s3_url zstd1)" --latest ;;
        bbr-upload | raw-ssh-up | bbr-r-dir | bbr-download)
            [[ -f $work/bbr/host-0.tar ]] || die "$case needs the tars of bbr-dir"
            [[ $case != bbr-download ]] || wants bbr-upload || die "bbr-download needs bbr-upload"
            measure "$size" "$n" "$case" "$run" "${self[@]}" "$case"
            case $case in
            raw-ssh-up) while read -r a; do ssh_to "$a" "sudo rm -rf $restore_dir" </dev/null; done < <(addresses) ;;
            bbr-download) rm -rf "$work/bbr-download" ;;
            esac ;;
        disk)
            measure "$size" "$n" "$case" "$run" "${self[@]}" "$case"
            rm -f "$work"/disk-* ;;
        *) measure "$size" "$n" "$case" "$run" "${self[@]}" "$case" ;;
        esac
    done
}

run_config() {
    local size=$1 n=$2 run
    local need
    need=$(disk_needed_mib "$size" "$n")
    if (($(free_mib) < need)); then
        # CI must not pass because nothing was measured.
        ((quick == 0)) || die "$size MiB x $n needs about $need MiB of free disk, $(free_mib) MiB free in $work (--work DIR elsewhere)"
        say "SKIPPED $size MiB x $n: needs about $need MiB of free disk, $(free_mib) MiB free"
        return 0
    fi
    make_pool "$size"
    say "$size MiB x $n instances: test bed and moto"
    local hosts=() i
    for ((i = 0; i < n; i++)); do hosts+=(--host "app/$i:files"); done
    bed=$work/bed-$size-$n
    "$repo/integration/testbed.sh" up "$bed" "${hosts[@]}" --no-seed >/dev/null 2>"$work/testbed-up.log" ||
        { cat "$work/testbed-up.log" >&2; die "testbed.sh up failed"; }
    seed_bed "$work/pool-$size"
    moto_dir=$work/moto-$size-$n
    local endpoint
    endpoint=$("$repo/integration/stores/moto.sh" start "$moto_dir")
    "$py" "$repo/integration/stores/fixture.py" s3 "$endpoint" create-bucket "$bucket" versioned
    s3_url() { echo "s3://$bucket/$1?endpoint=$endpoint&path_style=true&region=us-east-1"; }
    # In the body of an `if`, not after `||`, so that set -e holds inside them.
    if [[ -n $link_mbit ]]; then shape_links; fi
    if ((pin)); then pin_bed; fi
    local zstd_threads=${BENCH_ZSTD_THREADS:-$((cores / n > 1 ? cores / n : 1))}
    export WORK=$work BED=$bed POOL=$work/pool-$size ENDPOINT=$endpoint SIZE=$size ZSTD_THREADS=$zstd_threads
    local self=("$bench/throughput.sh" __case) inventory=$bed/inventory.yml

    # Rounds of every case rather than runs of one case in a row: a burst of someone else's work
    # then hits all cases alike, and the best of each is kept.
    for ((run = 1; run <= repeat; run++)); do
        run_round "$run"
    done
    # Quick mode: while a floor is missed, up to $extra_rounds more rounds (the best of all runs
    # counts), so that a burst of someone else's work on a shared machine does not fail CI; a real
    # regression misses the floor in every round.
    if ((quick)); then
        while ! "$py" "$helper" floors "$results" "$size" "$n" && ((run <= repeat + extra_rounds)); do
            say "$size MiB x $n: a floor is missed; extra round $((run - repeat)) of $extra_rounds"
            run_round "$run"
            run=$((run + 1))
        done
    fi

    "$repo/integration/testbed.sh" down "$bed" >/dev/null 2>&1
    rm -rf "$bed"
    bed=
    "$repo/integration/stores/moto.sh" stop "$moto_dir"
    moto_dir=
    rm -rf "$work/bbr" "$work/cairn-dir" "$work/cairn-dir-ic" "$work/bbr-download" "$work/store"
}

started=$(date +%s)
tree=$(git -C "$repo" describe --always --dirty 2>/dev/null || echo unknown)
say "cairn binary built $cairn_built (tree now at $tree); sizes: $sizes MiB; instances: $instances; $repeat run(s) per case; work in $work"
for size in $sizes; do
    for n in $instances; do
        run_config "$size" "$n"
    done
    rm -rf "$work/pool-$size"
done
echo
"$py" "$helper" cpu-table "$results"
echo
echo "Cairn throughput benchmark, $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo) RAM, $(($(date +%s) - started)) s; cairn built $cairn_built, tree $tree"
links=unshaped
[[ -z $link_mbit ]] || links="$link_mbit Mbit/s per host in each direction (tc tbf)"
cpus="shared by everything"
((pin == 0)) || cpus="coordinator $coordinator_cpus, hosts and moto $bed_cpus"
echo "links: $links; CPUs: $cpus"
echo
floors=()
((quick)) && floors=(--floors)
"$py" "$helper" table "$results" "${floors[@]}"
