#!/usr/bin/env bash
# Streaming benchmark of issue 22: the same PostgreSQL database backed up by the real `cairn`
# binary with the reference `postgres` job (scripts-contract/adapters/postgres) in classic mode
# (pg_dump into /var/vcap/store/bbr-backup, then copied off) and in streaming mode (STREAM=true:
# pg_dump to stdout, scripts-contract/CONTRACT.md §12). Starts one test-bed host with a real
# PostgreSQL server (integration/databases/postgres.sh), fills one database to about SIZE MiB,
# then runs rounds of one classic and one streaming backup into a directory (--artifact-path)
# and prints, for every run and as medians: wall time, bytes written to the VM's disk by the
# backup, the server's own writes meanwhile, peak use of /var/vcap/store/bbr-backup, the
# coordinator's writes and the artifact's size; then the ratios streaming/classic.
# A benchmark, not a test: it asserts nothing about the figures (docs/performance.md).
#
#   sudo integration/bench/streaming.sh                    # 2048 MiB database, 3 rounds, release build
#   sudo CAIRN_BIN=target/debug/cairn integration/bench/streaming.sh --size 512 --rounds 2
#
# Options:
#   --size MIB     size of the database, pg_database_size, indexes included [default 2048]
#   --rounds R     rounds of (classic, streaming); the medians are of R runs each [default 3]
#   --pg-compress C  the job's PG_DUMP_COMPRESS (pg_dump --compress) in both modes and in the
#                  timed dump to /dev/null, e.g. 0 for an uncompressed archive [default: unset,
#                  pg_dump's own default, gzip]
#   --split-cpus   model a VM and a jumpbox that are different machines: the test-bed host's
#                  processes (its sshd, the PostgreSQL server, the job's scripts) run on CPU 0
#                  only, cairn on CPU 1 only (taskset). Without it everything shares every CPU,
#                  which on a 2-core machine makes the streaming mode's overlap of dump and copy
#                  compete for the same cores. Needs at least 2 CPUs.
#   --work DIR     working directory (default: a new /var/tmp/cairn-streaming.XXXXXX)
#   --keep         keep the working directory (test bed torn down all the same)
#   --results FILE also write the raw results (one line per run) to FILE
#   CAIRN_BIN      the binary to measure (default: `cargo build --release`, then
#                  ${CARGO_TARGET_DIR:-target}/release/cairn); CAIRN_PROFILE names its build
#                  profile in the report when the path has neither /debug/ nor /release/
#
# What "VM disk written" is: the host gets disks of its own, like a BOSH VM: a loop device
# (ext4 on a sparse file in the working directory) mounted on its /var/vcap, holding the jobs,
# /var/vcap/store/bbr-backup, /var/vcap/data and /var/vcap/sys, and a second one on
# /var/vcap/store/postgres for the server's data. "VM disk" is the sectors written to the first
# device (/sys/block/loopN/stat) from just before the backup until after it, its sessions ended
# and `sync`: every write of the backup on the VM, the file system's journal and metadata
# included, counted by the device itself. "PG disk" is the second device in the same window
# (the server's own writes). The machine's disk is shared with everything else running on it,
# so its counters (column vda) cannot be split by host; per-process /proc/<pid>/io cannot be
# summed either, because the counters of processes ended inside an SSH session do not reach
# the host's sshd (docs/performance.md). Needs root, the test bed's requirements, losetup and
# mkfs.ext4, PostgreSQL (apt-get install -y postgresql), python3 and /usr/bin/time.
set -euo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
helper=$repo/integration/bench/streaming_helper.py
testbed=$repo/integration/testbed.sh
pg_script=$repo/integration/databases/postgres.sh
db=bench
rundir=/var/vcap/sys/run/postgres

die() { echo "streaming.sh: $*" >&2; exit 1; }
say() { echo "== $*" >&2; }

size=2048 rounds=3 work='' keep=0 results_copy='' pg_compress='' split_cpus=0
while [[ $# -gt 0 ]]; do
    case $1 in
    --size) size=$2; shift ;;
    --rounds) rounds=$2; shift ;;
    --pg-compress) pg_compress=$2; shift ;;
    --work) work=$2; shift ;;
    --keep) keep=1 ;;
    --split-cpus) split_cpus=1 ;;
    --results) results_copy=$2; shift ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
    esac
    shift
done
[[ $size =~ ^[1-9][0-9]*$ ]] || die "--size takes a whole number of MiB, not '$size'"
[[ $rounds =~ ^[1-9][0-9]*$ ]] || die "--rounds takes a whole number, not '$rounds'"
[[ -z $pg_compress || $pg_compress =~ ^[A-Za-z0-9][A-Za-z0-9:=,-]*$ ]] ||
    die "--pg-compress takes a pg_dump --compress value such as 0 or 6, not '$pg_compress'"
# As the job passes it to pg_dump (nothing when unset: pg_dump's default).
compress_args=()
[[ -z $pg_compress ]] || compress_args=("--compress=$pg_compress")
compress_label=${pg_compress:-default}
[[ $(id -u) == 0 ]] || die "run as root (the test bed needs namespaces)"
((split_cpus == 0 || $(nproc) >= 2)) || die "--split-cpus needs at least 2 CPUs (this machine has $(nproc))"
# The coordinator's CPU (--split-cpus: CPU 1; else every CPU).
coordinator_cpus=()
((split_cpus == 0)) || coordinator_cpus=(taskset -c 1)
for tool in python3 /usr/bin/time ssh losetup mkfs.ext4 bc taskset; do
    command -v "$tool" >/dev/null || die "$tool is missing (apt-get install -y python3 time openssh-client mount e2fsprogs bc)"
done
ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || die "PostgreSQL is missing (apt-get install -y postgresql)"

if [[ -n ${CAIRN_BIN:-} ]]; then
    cairn=$CAIRN_BIN
else
    say "cargo build --release --bin cairn"
    (cd "$repo" && cargo build --release --quiet --bin cairn)
    cairn=${CARGO_TARGET_DIR:-$repo/target}/release/cairn
fi
[[ -x $cairn ]] || die "no binary at $cairn"
cairn_built=$(date -u -r "$cairn" +%Y-%m-%dT%H:%M:%SZ)
case $cairn in
*/debug/*) profile=debug ;;
*/release/*) profile=release ;;
*) profile=${CAIRN_PROFILE:-unknown-profile} ;;
esac

work=${work:-$(mktemp -d /var/tmp/cairn-streaming.XXXXXX)}
mkdir -p "$work"
chmod 755 "$work" # sshd reads the test bed's authorized_keys as vcap
work=$(cd "$work" && pwd)
results=$work/results.tsv
: >"$results"
cp "$cairn" "$work/cairn" # a rebuild during the run does not change what is measured
cairn=$work/cairn
bed=$work/bed
bed_up=0
sampler=
loops=()
teardown() {
    local status=$?
    trap - EXIT INT TERM
    [[ -z $sampler ]] || kill "$sampler" 2>/dev/null || true
    if ((bed_up)); then
        in_host "$pg_script" stop >/dev/null 2>&1 || true
        in_host umount -l /var/vcap/store/postgres >/dev/null 2>&1 || true
        in_host umount -l /var/vcap >/dev/null 2>&1 || true
        "$testbed" down "$bed" >/dev/null 2>&1 || true
    fi
    # The host's mounts go with its mount namespace, released a moment after its processes;
    # `losetup -d` of a device still in use succeeds without detaching it, hence the check.
    local loop tries
    for loop in "${loops[@]}"; do
        for ((tries = 0; tries < 50; tries++)); do
            losetup -d "$loop" 2>/dev/null || true
            losetup -n -O BACK-FILE -l "$loop" 2>/dev/null | grep -q "$work/disks/" || break
            sleep 0.2
        done
        ((tries < 50)) || echo "streaming.sh: could not detach $loop (losetup -d $loop later)" >&2
    done
    [[ -z $results_copy || ! -f $results ]] || cp "$results" "$results_copy"
    if ((keep)); then echo "kept $work" >&2; else rm -rf "$work"; fi
    exit "$status"
}
trap teardown EXIT
trap 'exit 130' INT TERM

in_host() { "$testbed" exec "$bed" pg/0 -- "$@"; }
# psql as vcap on database $1 inside the host: quiet, unaligned, stop at the first error.
sql() {
    local database=$1
    shift
    in_host runuser -u vcap -- psql -X -q -A -t -v ON_ERROR_STOP=1 -h "$rundir" -d "$database" "$@"
}

say "cairn $profile binary built $cairn_built; test bed with one PostgreSQL host; work in $work"
bed_up=1
"$testbed" up "$bed" --host pg/0:postgres --no-seed >/dev/null 2>"$work/testbed-up.log" ||
    { cat "$work/testbed-up.log" >&2; die "testbed.sh up failed"; }
read -r _ _ _ hostdir sshd_pid <"$bed/hosts.tsv"
# --split-cpus: the host's sshd on CPU 0; every session, script and server it starts inherits it.
((split_cpus == 0)) || taskset -a -p -c 0 "$sshd_pid" >/dev/null
# The host's view of its files (its mount namespace), from outside.
root=/proc/$sshd_pid/root

# new_disk NAME GIB: a loop device holding a fresh ext4 (inode tables and journal written now,
# not lazily during a measurement); prints the device.
new_disk() {
    local image=$work/disks/$1.img
    mkdir -p "$work/disks"
    truncate -s "$2G" "$image"
    mkfs.ext4 -q -F -E lazy_itable_init=0,lazy_journal_init=0 "$image"
    losetup -f --show "$image"
}
vm_disk=$(new_disk vm 8)
loops+=("$vm_disk")
pg_disk=$(new_disk pgdata $((size * 3 / 1024 + 4)))
loops+=("$pg_disk")
mkdir -p "$work/mnt"
mount "$vm_disk" "$work/mnt"
cp -a "$hostdir/vcap/." "$work/mnt/"
umount "$work/mnt"
in_host mount "$vm_disk" /var/vcap
in_host mkdir -p /var/vcap/store/postgres
in_host mount "$pg_disk" /var/vcap/store/postgres
in_host findmnt -n -o SOURCE --target /var/vcap/store | grep -qx "$vm_disk" ||
    die "the host's /var/vcap/store is not on $vm_disk"
in_host findmnt -n -o SOURCE --target /var/vcap/store/postgres | grep -qx "$pg_disk" ||
    die "the host's /var/vcap/store/postgres is not on $pg_disk"
store=$root/var/vcap/store/bbr-backup
conf=$root/var/vcap/jobs/postgres/bin/bbr/bbr.conf
in_host "$pg_script" start
# (testbed.sh exec enters the host's namespaces from here, not through its sshd.)
if ((split_cpus)); then # the server and its workers, started above: every process of the host
    host_mnt=$(readlink "/proc/$sshd_pid/ns/mnt")
    for proc in /proc/[0-9]*; do
        [[ $(readlink "$proc/ns/mnt" 2>/dev/null) == "$host_mnt" ]] || continue
        taskset -a -p -c 0 "${proc#/proc/}" >/dev/null 2>&1 || true
    done
fi
in_host "$pg_script" configure-job
# One database: a streamed PostgreSQL backup is one pg_dump archive. Classic mode dumps the
# same one, so both modes back up exactly the same data.
echo "DATABASES=$db" >>"$conf"
[[ -z $pg_compress ]] || echo "PG_DUMP_COMPRESS=$pg_compress" >>"$conf"
set_stream() { sed -i '/^STREAM=/d' "$conf" && echo "STREAM=$1" >>"$conf"; }

# ---- the database: ~SIZE MiB of rows that compress like real data (hex digests, numbers, times) ----
started=$(date +%s)
say "filling database $db to about $size MiB"
sql postgres -c "CREATE DATABASE $db"
sql "$db" -c "CREATE TABLE items (id bigint NOT NULL, account integer NOT NULL, amount numeric(12, 2) NOT NULL,
    created_at timestamptz NOT NULL, ref text NOT NULL, body text NOT NULL, tag text NOT NULL)"
batch=500000 rows=0
# The primary key index takes about 22 bytes a row, added at the end.
while (($(sql "$db" -c "SELECT pg_database_size(current_database()) + $rows * 22") < size * 1048576)); do
    sql "$db" -c "INSERT INTO items SELECT i, (i * 7919) % 1000003, ((i * 37) % 10000000) / 100.0,
        timestamptz '2024-01-01 00:00:00+00' + i * interval '1 second', md5(i::text),
        md5((i * 3)::text) || md5((i * 5)::text), md5((i * 7)::text)
        FROM generate_series($rows + 1::bigint, $rows + $batch) AS i"
    rows=$((rows + batch))
done
sql "$db" -c "ALTER TABLE items ADD PRIMARY KEY (id)"
# Frozen and checkpointed, so that neither mode's first read of the rows sets hint bits (writes
# by the server that would otherwise land in whichever backup runs first).
sql "$db" -c "VACUUM (FREEZE, ANALYZE) items"
sql "$db" -c "CHECKPOINT"
db_bytes=$(sql "$db" -c "SELECT pg_database_size(current_database())")
count_started=$(date +%s.%N)
sql "$db" -c "SELECT count(*) FROM items" >/dev/null
count_s=$(echo "$(date +%s.%N) - $count_started" | bc)
say "database $db: $rows rows, $((db_bytes / 1048576)) MiB (pg_database_size), made in $(($(date +%s) - started)) s; count(*) takes $count_s s"
# The floor of both modes: the job's own work, pg_dump of the database to nowhere, as the
# adapter runs it (custom format, compressed by default; --pg-compress as the job gets it).
dump_started=$(date +%s.%N)
host_cpus=()
((split_cpus == 0)) || host_cpus=(taskset -c 0)
"${host_cpus[@]}" "$testbed" exec "$bed" pg/0 -- runuser -u vcap -- pg_dump --format=custom "${compress_args[@]}" -h "$rundir" -d "$db" >/dev/null
dump_s=$(echo "$(date +%s.%N) - $dump_started" | bc)
say "pg_dump --format=custom ${compress_args[*]} of $db to /dev/null: $dump_s s"
postmaster=$(head -n 1 "$root/var/vcap/store/postgres/data/postmaster.pid")
kill -0 "$postmaster" || die "no PostgreSQL server at pid $postmaster"

vda_written() { # bytes written to the machine's whole disks (everyone's), /proc/diskstats
    awk '$3 !~ /^(loop|ram|zram|dm-)/ && $3 !~ /[0-9]p?[0-9]+$/ {s += $10} END {printf "%.0f\n", s * 512}' /proc/diskstats
}
written() { # bytes written to block device $1 (/dev/loopN) since it was set up
    echo $(($(awk '{print $7}' "/sys/block/${1#/dev/}/stat") * 512))
}

# measure MODE RUN: one backup, one line of results.tsv (fields: streaming_helper.py FIELDS)
measure() {
    local mode=$1 run=$2 out=$work/backups/$1-$2 log=$work/logs/$1-$2.log
    mkdir -p "$out" "$work/logs"
    if [[ $mode == streaming ]]; then set_stream true; else set_stream false; fi
    sync
    local vm0 pg0 vda0 vm1 pg1 vda1
    vm0=$(written "$vm_disk") pg0=$(written "$pg_disk") vda0=$(vda_written)
    python3 "$helper" du-peak "$store" "$work/du" &
    sampler=$!
    if ! CAIRN_STATE_DIR=$work/state /usr/bin/time -f '%e %O %U %S' -o "$work/time" \
        "${coordinator_cpus[@]}" "$cairn" deployment --inventory "$bed/inventory.yml" backup --artifact-path "$out" >"$log" 2>&1; then
        tail -n 30 "$log" >&2
        die "$mode backup, run $run, failed; log above"
    fi
    python3 "$helper" settle "$sshd_pid" "$postmaster" 30 || die "the backup's sessions did not end"
    sync
    vm1=$(written "$vm_disk") pg1=$(written "$pg_disk") vda1=$(vda_written)
    kill -TERM "$sampler"
    wait "$sampler" || true
    sampler=
    local wall blocks user system peak samples artifact
    read -r wall blocks user system <"$work/time"
    read -r peak samples <"$work/du"
    artifact=$(du -sb "$out" | cut -f1)
    grep -q cairn-stream "$out"/*/metadata && [[ $mode == classic ]] && die "classic run $run streamed"
    grep -q cairn-stream "$out"/*/metadata || [[ $mode == classic ]] || die "streaming run $run did not stream"
    printf '%s %s %s %s %s %s %s %s %s %s %s\n' "$mode" "$run" "$wall" "$((blocks * 512))" "$artifact" \
        "$((vm1 - vm0))" "$((pg1 - pg0))" "$peak" "$samples" "$((vda1 - vda0))" \
        "$(echo "$user + $system" | bc)" >>"$results"
    printf '   %-9s run %d: %6.1f s, VM disk written %8.2f MiB, peak store %7.1f MiB, artifact %7.1f MiB\n' \
        "$mode" "$run" "$wall" "$(echo "($vm1 - $vm0) / 1048576" | bc -l)" "$(echo "$peak / 1048576" | bc -l)" \
        "$(echo "$artifact / 1048576" | bc -l)" >&2
    rm -rf "$out"
}

# Rounds of (classic, streaming) rather than runs of one mode in a row: a burst of someone
# else's work on a shared machine then hits both modes alike.
for ((run = 1; run <= rounds; run++)); do
    measure classic "$run"
    measure streaming "$run"
done

echo
echo "Cairn streaming benchmark (issue 22), $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo) RAM, load $(cut -d ' ' -f 1-3 /proc/loadavg)"
echo "cairn $profile binary built $cairn_built, tree $(git -C "$repo" describe --always --dirty 2>/dev/null || echo unknown)"
echo "$(in_host runuser -u vcap -- psql -X -A -t -h "$rundir" -d "$db" -c 'SELECT version()' | cut -d ',' -f 1); database $db: $rows rows, $((db_bytes / 1048576)) MiB; count(*) of all rows $count_s s (classic mode's row counts)"
echo "pg_dump --format=custom (PG_DUMP_COMPRESS=$compress_label) to /dev/null inside the host, once before the runs: $dump_s s (the job's own work, the floor of both modes)"
echo "the host's disks: /var/vcap on $vm_disk, /var/vcap/store/postgres on $pg_disk (ext4 on loop devices)"
if ((split_cpus)); then
    echo "CPUs split (--split-cpus): the host (sshd, server, scripts) on CPU 0, cairn on CPU 1"
else
    echo "CPUs shared: the host and cairn on all $(nproc) CPUs"
fi
echo
python3 "$helper" table "$results"
