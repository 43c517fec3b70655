#!/usr/bin/env bash
# A million files into a repository (issue 16, "Peak RSS <= 512 MiB for a 1,000,000-file
# artifact"; docs/performance.md, "Repository: incremental backups"). The tree of
# million_files.sh (N small files of 1 to 300 bytes, 1,000 per directory, and three 64 MiB
# files, on a tmpfs on one test-bed host, the files job's scripts replaced by `cp -al` and
# `mv`), backed up into a `repo+file://` repository twice (the first reads everything; the
# second finds nothing changed: its listing of every entry and the lookup of each in the parent
# snapshot are what grow with N), then restored with `--latest`. Prints each run's wall time,
# the coordinator's peak RSS and CPU, what was sent, and checks that the restore gave back the
# same tree. A benchmark, not a test: it fails only when a command fails or a tree differs.
#
#   sudo CAIRN_BIN=target/release/cairn integration/bench/repository_million.sh [--files N] [--no-restore] [--keep]
#   BENCH_WRAP="heaptrack -o /tmp/h" runs each Cairn command under heaptrack (/tmp/h-CASE...);
#   BENCH_WRAP_CASE=backup-again only that one.
set -euo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
files=${BENCH_FILES:-1000000} keep=0 restore=1
while [[ $# -gt 0 ]]; do
    case $1 in
    --files) files=$2; shift ;;
    --no-restore) restore=0 ;;
    --keep) keep=1 ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "repository_million.sh: unknown option $1 (see --help)" >&2; exit 1 ;;
    esac
    shift
done
die() { echo "repository_million.sh: $*" >&2; exit 1; }
say() { echo "== $* ($(date -u +%H:%M:%S), load $(cut -d' ' -f1-3 /proc/loadavg))" >&2; }
[[ $files =~ ^[1-9][0-9]*$ ]] || die "--files takes a whole number, not '$files'"
[[ $(id -u) == 0 ]] || die "run as root (the test bed needs namespaces)"
cairn=${CAIRN_BIN:-${CARGO_TARGET_DIR:-$repo/target}/release/cairn}
[[ -x $cairn ]] || die "no binary at $cairn (cargo build --release --bin cairn, or CAIRN_BIN=...)"
tmpfs_mib=$((files * 9 / 1024 + 1024))
available_mib=$(awk '/^MemAvailable:/ {print int($2 / 1024)}' /proc/meminfo)
((available_mib > tmpfs_mib + 2048)) ||
    die "a tmpfs of $files files needs about $tmpfs_mib MiB of memory, $available_mib MiB available"

work=$(mktemp -d /var/tmp/cairn-repomillion.XXXXXX)
chmod 755 "$work" # sshd reads the test bed's authorized_keys as vcap
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
IFS=$'\t' read -r _ _ _ hostdir _ <"$bed/hosts.tsv"
scripts=$hostdir/vcap/jobs/files/bin/bbr
# shellcheck source=integration/bench/million_tree.sh
source "$repo/integration/bench/million_tree.sh"
million_job_scripts "$scripts"
on_host() { "$repo/integration/testbed.sh" exec "$bed" app/0 -- "$@"; }
on_host mount -t tmpfs -o "size=${tmpfs_mib}m,mode=0755" cairn-million /var/vcap/store

say "writing $files small files and 3 large ones on app/0"
million_write_tree "$files"
say "listing of the tree"
before=$(million_listing)

printf 'bench password\n' >"$work/password"
chmod 600 "$work/password"
export CAIRN_REPOSITORY_PASSWORD_FILE=$work/password
url="repo+file://$work/repo"
mkdir "$work/repo"
cd "$work"
"$cairn" repo init --allow-unversioned --store "$url" >/dev/null

# measure CASE COMMAND...: wall time, peak RSS and CPU of the command, and its "Sent" line.
measure() {
    local case=$1
    shift
    say "$case"
    sync
    # BENCH_WRAP: a command to run Cairn under (e.g. "heaptrack -o /tmp/h"; then CASE is added).
    local wrap=()
    [[ -z ${BENCH_WRAP:-} || ${BENCH_WRAP_CASE:-$case} != "$case" ]] || read -r -a wrap <<<"$BENCH_WRAP-$case"
    if ! /usr/bin/time -f '%e %M %U %S' -o "$work/time" "${wrap[@]}" "$@" >"$work/$case.log" 2>&1; then
        tail -n 30 "$work/$case.log" >&2
        die "$case failed; log above"
    fi
    local w m u s
    read -r w m u s <"$work/time"
    printf '%-16s %8.2f s  peak RSS %7.1f MiB  CPU %7.2f s  %s\n' "$case" "$w" "$(echo "$m / 1024" | bc -l)" \
        "$(echo "$u + $s" | bc)" "$(grep -m1 -o 'Sent [0-9]* of [0-9]* files ([^)]*)' "$work/$case.log" || true)"
}
echo "$files small files + 3 x 64 MiB on tmpfs; $(nproc) CPUs; $("$cairn" --version 2>/dev/null || echo cairn)"
measure backup-first "$cairn" deployment --inventory "$bed/inventory.yml" backup --store "$url"
measure backup-again "$cairn" deployment --inventory "$bed/inventory.yml" backup --store "$url"
echo "repository: $(du -sb "$work/repo" | cut -f1) bytes"
if ((restore)); then
    measure restore "$cairn" deployment --inventory "$bed/inventory.yml" restore --store "$url" --latest
    [[ $(million_listing) == "$before" ]] || die "restore: the restored tree differs from the one backed up"
    echo "restore: tree identical ($files files + 3 large)"
fi
echo "load $(cut -d' ' -f1-3 /proc/loadavg)"
