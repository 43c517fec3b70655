#!/usr/bin/env python3
"""Helpers of integration/bench/throughput.sh (run with the moto venv's python, which has boto3).

  throughput_helper.py genlog OUT MIB             varied, text-like log lines (a 64 MiB block, repeated)
  throughput_helper.py bbr-hash TAR OUT.json      bbr's local pass: sha256 of every non-directory entry
  throughput_helper.py bbr-compare LOCAL.json REMOTE.txt
                                                  bbr's comparison with `shasum -a 256` output; exit 1 on mismatch
  throughput_helper.py s3-put ENDPOINT BUCKET PREFIX FILE...
                                                  uploads files as the aws CLI does (s3transfer, 8 MiB parts, 10 requests at once)
  throughput_helper.py s3-get ENDPOINT BUCKET PREFIX DIR
                                                  downloads every object under PREFIX into DIR (one GET each, 10 at once)
  throughput_helper.py cpu-sample OUT SSHD_PID... [-- MOTO_PID]
                                                  until SIGTERM, samples the CPU time of every process in the network
                                                  namespaces of those sshd (the test bed's hosts) and of moto; writes
                                                  "hosts_s moto_s kernel_threads_s sampler_s comm=s,..." to OUT
  throughput_helper.py table RESULTS.tsv [--floors]
                                                  prints the table; with --floors, exits 1 when a quick-mode floor is missed
  throughput_helper.py floors RESULTS.tsv MIB N   exits 1 (and says which) when the median over rounds of a ratio within a round misses a floor
  throughput_helper.py self-test                   checks the quick-mode verdict on made-up rounds (exits 1 when wrong)
  throughput_helper.py cpu-table RESULTS.tsv      CPU seconds per GiB of every run, by process (less sensitive to other
                                                  work on the machine than wall times)

A results line (tab-separated): size_mib instances case wall_s user_s sys_s maxrss_kib out_blocks machine_cpu_s
hosts_cpu_s moto_cpu_s kernel_cpu_s sampler_cpu_s hosts_by_command. user, sys, maxrss and out_blocks are /usr/bin/time's
%U %S %M %O of the coordinator's command; machine is the whole machine's busy CPU time (/proc/stat); hosts, moto
kernel (kernel threads: writeback, kswapd...) and sampler come from cpu-sample.
"""
import hashlib
import json
import os
import random
import sys
import tarfile
import time

MIB = 1024 * 1024


def genlog(out, mib):
    rng = random.Random(1)
    apps = ["%08x-%04x-%04x-%04x-%012x" % tuple(rng.getrandbits(b) for b in (32, 16, 16, 16, 48)) for _ in range(200)]
    paths = ["/v2/apps/{app}", "/v2/apps/{app}/stats", "/v3/processes/{app}/stats", "/v2/info",
             "/v3/apps/{app}/env", "/v2/service_instances", "/healthz", "/v3/droplets/{app}"]
    levels = ["INFO"] * 12 + ["DEBUG"] * 4 + ["WARN", "ERROR"]
    statuses = ["200"] * 15 + ["201", "204", "304", "404", "500", "502"]
    agents = ["cf/6.53.0 (go1.16; amd64 linux)", "cf/8.7.1 (go1.21; amd64 linux)", "Go-http-client/1.1",
              "curl/7.88.1", "python-requests/2.31.0"]
    hosts = ["router/%d" % i for i in range(4)] + ["cloud_controller/%d" % i for i in range(2)]
    block_size = min(64 * MIB, mib * MIB)
    lines = []
    size = 0
    t = 1795317600.0
    while size < block_size:
        t += rng.expovariate(2000)
        app = rng.choice(apps)
        line = "%s.%06dZ %s [%s] %s %s %s %dms req_id=%016x bytes=%d ua=\"%s\"\n" % (
            time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)), int(t % 1 * 1e6),
            rng.choice(levels), rng.choice(hosts), rng.choice(["GET"] * 6 + ["PUT", "POST", "DELETE"]),
            rng.choice(paths).format(app=app), rng.choice(statuses), int(rng.lognormvariate(2.5, 1.0)),
            rng.getrandbits(64), int(rng.lognormvariate(7, 1.5)), rng.choice(agents))
        lines.append(line)
        size += len(line)
    block = "".join(lines).encode()[:block_size]
    remaining = mib * MIB
    with open(out, "wb") as f:
        while remaining > 0:
            f.write(block[:remaining])
            remaining -= min(remaining, len(block))


def bbr_hash(tar_path, out):
    """bbr's backup.CalculateChecksum: every entry but directories, keyed by its header name."""
    sums = {}
    with tarfile.open(tar_path, "r:") as tar:
        for member in tar:
            if member.isdir() or member.name in (".", "./"):
                continue
            digest = hashlib.sha256()
            source = tar.extractfile(member) if member.isfile() else None
            if source is not None:
                while True:
                    chunk = source.read(MIB)
                    if not chunk:
                        break
                    digest.update(chunk)
            name = member.name if member.name.startswith("./") else "./" + member.name
            sums[name] = digest.hexdigest()
    with open(out, "w") as f:
        json.dump(sums, f)


def bbr_compare(local_path, remote_path):
    with open(local_path) as f:
        local = json.load(f)
    remote = {}
    with open(remote_path) as f:
        for line in f:
            digest, _, name = line.rstrip("\n").partition(" ")
            name = name.strip().lstrip("*")
            if name and name != "-":
                remote[name] = digest
    if local != remote:
        print("checksums differ: %d local, %d remote" % (len(local), len(remote)), file=sys.stderr)
        sys.exit(1)


def s3_client(endpoint, validate_responses=True):
    import boto3
    from botocore.config import Config
    # moto answers a GET of a multipart object with a checksum of the parts' checksums, which
    # botocore then compares with the whole body and rejects: downloads do not validate it.
    config = Config(response_checksum_validation="when_supported" if validate_responses else "when_required")
    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", config=config,
                        aws_access_key_id="testing", aws_secret_access_key="testing")


def transfer_manager(endpoint):
    from s3transfer.manager import TransferConfig, TransferManager
    # The aws CLI's defaults: 8 MiB threshold and parts, 10 requests in flight shared by all files.
    config = TransferConfig(multipart_threshold=8 * MIB, multipart_chunksize=8 * MIB, max_request_concurrency=10)
    return TransferManager(s3_client(endpoint), config)


def s3_put(endpoint, bucket, prefix, files):
    with transfer_manager(endpoint) as manager:
        futures = [manager.upload(path, bucket, prefix.rstrip("/") + "/" + os.path.basename(path)) for path in files]
        for future in futures:
            future.result()


def s3_get(endpoint, bucket, prefix, directory):
    """One streamed GET per object, 10 objects at once. Not ranged GETs as the aws CLI would: moto
    reads the whole object for every ranged GET, which makes a multi-part download quadratic on
    the emulator (a 1 GiB object took 83 s) while real S3 serves ranges cheaply. A plain GET is
    also what Cairn does, so both sides pay the same for moto."""
    from concurrent.futures import ThreadPoolExecutor
    client = s3_client(endpoint, validate_responses=False)
    keys = [o["Key"] for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
            for o in page.get("Contents", [])]
    os.makedirs(directory, exist_ok=True)

    def get(key):
        body = client.get_object(Bucket=bucket, Key=key)["Body"]
        with open(os.path.join(directory, os.path.basename(key)), "wb") as f:
            for chunk in body.iter_chunks(MIB):
                f.write(chunk)

    with ThreadPoolExecutor(10) as pool:
        list(pool.map(get, keys))


def cpu_sample(out, sshd_pids, moto_pid):
    """Per-process sampling, because the sshd listeners do not account for their sessions: the
    privileged monitor exits without waiting for the session process, which pid 1 then reaps."""
    import resource
    import signal
    tick = os.sysconf("SC_CLK_TCK")
    namespaces = {os.readlink("/proc/%s/ns/net" % pid) for pid in sshd_pids}
    first, last, comms = {}, {}, {}

    def ticks(pid):
        with open("/proc/%s/stat" % pid) as f:
            data = f.read()
        comm = data[data.index("(") + 1:data.rindex(")")]
        fields = data[data.rindex(")") + 2:].split()
        # key with the start time, command, utime + stime, parent
        return (pid, fields[19]), comm, int(fields[11]) + int(fields[12]), fields[1]

    def scan(initial):
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                key, comm, used, parent = ticks(entry.name)
                if parent == "2" or entry.name == "2":
                    comm = "[kernel]"  # kernel threads: writeback, kswapd, ...
                elif os.readlink("/proc/%s/ns/net" % entry.name) not in namespaces:
                    continue
            except OSError:
                continue
            first.setdefault(key, used if initial else 0)
            last[key] = used
            comms[key] = comm

    def moto_ticks():
        try:
            return ticks(moto_pid)[2] if moto_pid else 0
        except OSError:
            return 0

    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    moto0 = moto_ticks()
    scan(True)
    while not stop:
        time.sleep(0.2)
        scan(False)
    scan(False)
    by_comm = {}
    for key, used in last.items():
        by_comm[comms[key]] = by_comm.get(comms[key], 0) + used - first[key]
    kernel = by_comm.pop("[kernel]", 0)
    own = resource.getrusage(resource.RUSAGE_SELF)
    with open(out, "w") as f:
        f.write("%.2f %.2f %.2f %.2f %s\n" % (sum(by_comm.values()) / tick, (moto_ticks() - moto0) / tick,
                                              kernel / tick, own.ru_utime + own.ru_stime,
                                         ",".join("%s=%.2f" % (c, t / tick) for c, t in
                                                  sorted(by_comm.items(), key=lambda i: -i[1]) if t)))


# ---- the table ----

CASES = [
    # case, label, direction, limit case, bbr case
    ("raw-ssh", "limit: ssh tar -c > /dev/null", "backup", None, None),
    ("zstd", "limit: zstd -3 alone", "backup", None, None),
    ("disk", "limit: local disk write+fsync", "backup", None, None),
    ("bbr-dir", "bbr-equiv. -> local dir", "backup", "raw-ssh", None),
    ("bbr-upload", "  (its upload step alone)", "backup", None, None),
    ("bbr-s3", "bbr-equiv. -> dir, then S3", "backup", "raw-ssh", None),
    ("cairn-dir", "cairn -> --artifact-path", "backup", "raw-ssh", "bbr-dir"),
    ("cairn-dir-ic", "  the same, --instance-checksums", "backup", "raw-ssh", "bbr-dir"),
    ("cairn-s3-zstd", "cairn -> S3 (zstd:3)", "backup", "zstd", "bbr-s3"),
    ("cairn-s3-none", "cairn -> S3 (none)", "backup", "raw-ssh", "bbr-s3"),
    ("cairn-file-zstd", "cairn -> file:// store (zstd:3)", "backup", "zstd", None),
    ("raw-ssh-up", "limit: ssh < tar | tar -x", "restore", None, None),
    ("bbr-r-dir", "bbr-equiv. restore from dir", "restore", "raw-ssh-up", None),
    ("bbr-download", "  (its S3 download step alone)", "restore", None, None),
    ("bbr-r-s3", "bbr-equiv. S3 -> dir -> restore", "restore", "raw-ssh-up", None),
    ("cairn-r-dir", "cairn restore from dir", "restore", "raw-ssh-up", "bbr-r-dir"),
    ("cairn-r-s3", "cairn restore from S3 (zstd)", "restore", "raw-ssh-up", "bbr-r-s3"),
]

# Quick-mode floors: (case, against, {instances: minimum ratio of throughputs}); a count of
# instances without its own floor takes the one of the next smaller count. Set so that a run on a
# busy 2-core machine passes and a Cairn whose per-byte cost doubled fails (docs/performance.md,
# "CI: quick mode", has the measurements behind every number).
FLOORS = [
    ("cairn-dir", "raw-ssh", {1: 0.45, 2: 0.30}),
    ("cairn-dir", "bbr-dir", {1: 2.0, 2: 1.4}),
    ("cairn-s3-zstd", "bbr-s3", {1: 1.6, 2: 1.2}),
]


def floor_for(minimums, n):
    return minimums[max([k for k in minimums if k <= n] or [min(minimums)])]


def load(path):
    rows = {}
    with open(path) as f:
        for line in f:
            parts = line.split()
            if len(parts) < 13:
                continue
            size, n, case = int(parts[0]), int(parts[1]), parts[2]
            wall, user, system, rss, blocks, machine, hosts, moto, kernel, sampler = map(float, parts[3:13])
            key = (size, n, case)
            cpu = user + system
            row = {"wall": wall, "cpu": cpu, "rss": rss / 1024, "disk": blocks * 512 / MIB, "hosts": hosts,
                   "moto": moto, "kernel": kernel, "other": max(0.0, machine - cpu - hosts - moto - kernel - sampler),
                   "runs": 1}
            if key in rows:  # repeated runs: keep the fastest, count the runs
                row["runs"] = rows[key]["runs"] + 1
                if rows[key]["wall"] <= wall:
                    rows[key]["runs"] = row["runs"]
                    continue
            rows[key] = row
    # bbr's pipeline into S3 is its drain to disk followed by the upload; its restore from S3
    # the download followed by the restore from disk.
    for total, first, second in COMPOSITES:
        for size, n in {(s, n) for s, n, _ in rows}:
            a, b = rows.get((size, n, first)), rows.get((size, n, second))
            if a and b:
                rows[(size, n, total)] = {k: a[k] + b[k] for k in ("wall", "cpu", "disk", "hosts", "moto", "kernel", "other")}
                rows[(size, n, total)].update(rss=max(a["rss"], b["rss"]), runs=1)
    return rows


# bbr's pipeline into S3 is its drain to disk followed by the upload; its restore from S3 the
# download followed by the restore from disk.
COMPOSITES = (("bbr-s3", "bbr-dir", "bbr-upload"), ("bbr-r-s3", "bbr-download", "bbr-r-dir"))


def round_walls(path, size, n):
    """Wall seconds of every run of SIZE x N per case, in the order they ran. Every round runs every
    case once, so the k-th run of each case belongs to round k (bbr's composites included)."""
    walls = {}
    with open(path) as f:
        for line in f:
            parts = line.split()
            if len(parts) < 13 or int(parts[0]) != size or int(parts[1]) != n:
                continue
            walls.setdefault(parts[2], []).append(float(parts[3]))
    for total, first, second in COMPOSITES:
        if first in walls and second in walls:
            walls[total] = [a + b for a, b in zip(walls[first], walls[second])]
    return walls


def median(values):
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def verdict_ratios(path, size, n):
    """For every floor: the median over rounds of the case's throughput over the other's in the
    same round, and how many rounds. Both sides of a ratio ran minutes apart at most, under the same
    load, so a burst of other work or one lucky run of the baseline moves one round's ratio only;
    the median of the rounds is the verdict (the best run of each case, paired across rounds, made
    the verdict swing with the baseline's luckiest run)."""
    walls = round_walls(path, size, n)
    ratios = {}
    for case, against, _ in FLOORS:
        pairs = [theirs / ours for ours, theirs in zip(walls.get(case, []), walls.get(against, []))
                 if ours > 0 and theirs > 0]
        if pairs:
            ratios[(case, against)] = (median(pairs), len(pairs))
    return ratios


def speeds(rows, size, n):
    """MiB/s of the best run of every case (and of the bbr pipelines) of SIZE x N."""
    return {c: size * n / rows[(size, n, c)]["wall"] for c, *_ in CASES
            if (size, n, c) in rows and rows[(size, n, c)]["wall"] > 0}


def missed_floors(ratios, size, n):
    missed = []
    for case, against, minimums in FLOORS:
        minimum = floor_for(minimums, n)
        if (case, against) in ratios and ratios[(case, against)][0] < minimum:
            ratio, rounds = ratios[(case, against)]
            missed.append("%d MiB x %d: %s is %.2f x %s (median of %d rounds), floor %.2f" % (
                size, n, case, ratio, against, rounds, minimum))
    return missed


def floors_of(path, size, n):
    missed = missed_floors(verdict_ratios(path, size, n), size, n)
    for line in missed:
        print("floor missed: " + line, file=sys.stderr)
    sys.exit(1 if missed else 0)


def table(path, floors):
    rows = load(path)
    configs = sorted({(s, n) for s, n, _ in rows})
    header = "%-5s %2s  %-32s %7s %7s %6s %6s %7s %8s %6s %6s %6s %6s %6s" % (
        "MiB", "N", "case", "wall s", "MiB/s", "/limit", "/bbr", "RSS MiB", "disk MiB", "coord", "hosts", "moto",
        "kern", "other")
    print(header)
    print("-" * len(header))
    failures = []
    for size, n in configs:
        speed = speeds(rows, size, n)
        for case, label, _direction, limit, bbr in CASES:
            row = rows.get((size, n, case))
            if row is None:
                continue
            ratio = lambda other: ("%.2f" % (speed[case] / speed[other])) if other in speed else "-"
            busy = row["other"] > 0.2 * row["wall"]  # another workload took over 10 % of 2 cores
            print("%-5d %2d  %-32s %7.2f %7.1f %6s %6s %7.1f %8.1f %6.2f %6.2f %6.2f %6.2f %5.2f%s" % (
                size, n, label, row["wall"], speed[case], ratio(limit) if limit else "-",
                ratio(bbr) if bbr else "-", row["rss"], row["disk"], row["cpu"], row["hosts"], row["moto"],
                row["kernel"], row["other"], "!" if busy else " "))
        if floors:
            ratios = verdict_ratios(path, size, n)
            print("verdict, %d MiB x %d (median over rounds of the ratio within a round): %s" % (
                size, n, ", ".join("%s/%s %.2f (floor %.2f, %d rounds)" % (
                    case, against, ratios[(case, against)][0], floor_for(minimums, n), ratios[(case, against)][1])
                    for case, against, minimums in FLOORS if (case, against) in ratios)))
            failures += missed_floors(ratios, size, n)
        print()
    runs = max(r["runs"] for r in rows.values())
    print("MiB = data per instance, N = instances, MiB/s = N x MiB / wall. /limit: throughput over the raw-ssh limit"
          " (the zstd limit for the zstd:3 cases); /bbr: over the bbr-equivalent pipeline with the same destination."
          " RSS: peak of the largest coordinator process; disk: bytes the coordinator's processes wrote"
          " (for a local directory that is the backup itself). CPU seconds: coord = the coordinator's command with its"
          " children (cairn with its zstd threads; ssh, python, zstd for the others), hosts = the test bed's sshd"
          " with sessions, sudo, tar, sha256sum/shasum, moto = the S3 server, kern = kernel threads (writeback...),"
          " other = the rest of the machine (someone else's work);"
          " 2 cores give 2 x wall. ! = other work on the machine took over 10 % of it during the run."
          + (" Best of %d runs (the verdict uses the median over rounds instead)." % runs if runs > 1 else ""))
    if floors:
        if failures:
            print("\nFLOORS MISSED:")
            for failure in failures:
                print("  " + failure)
            sys.exit(1)
        print("\nfloors: " + ", ".join("%s >= %s x %s" % (c, " / ".join("%.2f (N=%d)" % (m, k) for k, m in sorted(ms.items())), a)
                                        for c, a, ms in FLOORS) + ": all met")


def cpu_table(path):
    print("CPU seconds per GiB moved (every run; hosts split by command)")
    print("%-5s %2s  %-16s %7s %7s %7s %7s %7s  %s" % ("MiB", "N", "case", "wall s", "coord", "hosts", "moto", "total",
                                                      "hosts by command"))
    with open(path) as f:
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if len(parts) < 13:
                continue
            size, n, case = int(parts[0]), int(parts[1]), parts[2]
            wall, user, system, _rss, _blocks, _machine, hosts, moto, kernel, _sampler = map(float, parts[3:13])
            gib = size * n / 1024
            by_command = ",".join("%s=%.2f" % (c, float(t) / gib) for c, _, t in
                                  (item.partition("=") for item in (parts[13] if len(parts) > 13 else "").split(","))
                                  if t and float(t) / gib >= 0.01)
            print("%-5d %2d  %-16s %7.2f %7.2f %7.2f %7.2f %7.2f  %s" % (
                size, n, case, wall, (user + system) / gib, hosts / gib, moto / gib,
                (user + system + hosts + moto + kernel) / gib, by_command))


def main():
    command, *args = sys.argv[1:]
    if command == "genlog":
        genlog(args[0], int(args[1]))
    elif command == "bbr-hash":
        bbr_hash(args[0], args[1])
    elif command == "bbr-compare":
        bbr_compare(args[0], args[1])
    elif command == "s3-put":
        s3_put(args[0], args[1], args[2], args[3:])
    elif command == "s3-get":
        s3_get(args[0], args[1], args[2], args[3])
    elif command == "cpu-sample":
        pids = args[1:]
        moto = pids[pids.index("--") + 1] if "--" in pids else None
        cpu_sample(args[0], pids[:pids.index("--")] if "--" in pids else pids, moto)
    elif command == "cpu-table":
        cpu_table(args[0])
    elif command == "floors":
        floors_of(args[0], int(args[1]), int(args[2]))
    elif command == "self-test":
        self_test()
    elif command == "table":
        table(args[0], "--floors" in args[1:])
    else:
        sys.exit(__doc__)


def self_test():
    """The verdict on made-up rounds: one lucky run of the baseline (which the best-of-each-case
    verdict failed on) passes; a Cairn that takes twice as long fails, in every round."""
    import tempfile
    normal = [  # raw-ssh, zstd, bbr-dir, bbr-upload, cairn-dir, cairn-s3-zstd walls, per round
        (1.0, 0.7, 4.5, 3.0, 1.8, 3.0), (0.6, 0.7, 4.6, 3.1, 1.8, 3.1), (1.0, 0.7, 4.5, 3.0, 1.9, 3.0)]
    doubled = [r[:4] + (2 * r[4], 2 * r[5]) for r in normal]
    cases = ("raw-ssh", "zstd", "bbr-dir", "bbr-upload", "cairn-dir", "cairn-s3-zstd")
    failures = []
    for name, rounds, should_pass in (("one lucky baseline run", normal, True), ("doubled cost", doubled, False)):
        with tempfile.NamedTemporaryFile("w", suffix=".tsv") as results:
            for walls in rounds:
                for case, wall in zip(cases, walls):
                    results.write("256\t1\t%s\t%f\t1\t1\t1000\t0\t1\t1\t1\t1\t1\n" % (case, wall))
            results.flush()
            missed = missed_floors(verdict_ratios(results.name, 256, 1), 256, 1)
        if (not missed) != should_pass:
            failures.append("%s: expected %s, got %s" % (name, "a pass" if should_pass else "a miss", missed or "a pass"))
    for failure in failures:
        print("self-test FAILED: " + failure, file=sys.stderr)
    print("throughput_helper self-test: %d of 2 passed" % (2 - len(failures)))
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
