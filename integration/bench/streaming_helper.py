#!/usr/bin/env python3
"""Measuring helpers of integration/bench/streaming.sh (classic vs streaming backups of a real
PostgreSQL on a test-bed host). Standard library only; run as root.

  streaming_helper.py settle SSHD_PID POSTMASTER_PID TIMEOUT_S
      Waits until the only process of the host outside the server is SSHD_PID itself (every
      SSH session of the backup has ended); exit 1 after TIMEOUT_S.
  streaming_helper.py du-peak DIR OUT
      Every 0.2 s, the allocated size of the tree DIR (st_blocks, as `du`), until SIGTERM;
      then writes `peak_bytes samples` to OUT.
  streaming_helper.py table RESULTS
      The table of medians per mode and the ratios streaming/classic.

The figures of the VM's disk come from the block-device counters of the host's own disks
(loop devices, see streaming.sh), read by streaming.sh itself.
"""

import os
import signal
import statistics
import sys
import time


def netns_of(pid):
    return os.readlink(f"/proc/{pid}/ns/net")


def processes_in_netns(netns):
    """{pid: ppid} of every live process whose network namespace is `netns`."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.readlink(f"/proc/{entry}/ns/net") != netns:
                continue
            with open(f"/proc/{entry}/stat") as stat:
                # comm may contain spaces and parentheses: the fields after the last ')'.
                fields = stat.read().rsplit(")", 1)[1].split()
            found[int(entry)] = int(fields[1])
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    return found


def server_tree(processes, postmaster):
    tree = {postmaster}
    grew = True
    while grew:
        grew = False
        for pid, ppid in processes.items():
            if ppid in tree and pid not in tree:
                tree.add(pid)
                grew = True
    return tree


def cmd_settle(sshd_pid, postmaster_pid, timeout):
    netns = netns_of(sshd_pid)
    deadline = time.monotonic() + timeout
    while True:
        processes = processes_in_netns(netns)
        others = set(processes) - server_tree(processes, postmaster_pid) - {sshd_pid}
        if not others:
            return 0
        if time.monotonic() > deadline:
            print(f"streaming_helper.py: after {timeout} s processes of the host are still running: "
                  f"{sorted(others)}", file=sys.stderr)
            return 1
        time.sleep(0.1)


def allocated(root):
    total = 0
    for directory, _, files in os.walk(root):
        for name in [directory] + [os.path.join(directory, f) for f in files]:
            try:
                total += os.lstat(name).st_blocks * 512
            except FileNotFoundError:
                pass
    return total


def cmd_du_peak(root, out):
    state = {"peak": 0, "samples": 0, "stop": False}

    def stop(*_):
        state["stop"] = True

    signal.signal(signal.SIGTERM, stop)
    while not state["stop"]:
        state["peak"] = max(state["peak"], allocated(root) if os.path.exists(root) else 0)
        state["samples"] += 1
        time.sleep(0.2)
    with open(out, "w") as f:
        f.write(f"{state['peak']} {state['samples']}\n")


FIELDS = ["mode", "run", "wall", "jumpbox_written", "artifact", "vm_written", "server_written",
          "peak_store", "du_samples", "vda_written", "coordinator_cpu"]


def mib(n):
    return f"{n / 1048576:9.1f}"


def cmd_table(results):
    rows = []
    with open(results) as f:
        for line in f:
            values = line.split()
            if len(values) != len(FIELDS):
                continue
            row = dict(zip(FIELDS, values))
            for key in FIELDS[2:]:
                row[key] = float(row[key])
            rows.append(row)
    medians = {}
    for mode in ("classic", "streaming"):
        runs = [r for r in rows if r["mode"] == mode]
        if runs:
            medians[mode] = {k: statistics.median(r[k] for r in runs) for k in FIELDS[2:]}
            medians[mode]["runs"] = len(runs)
    header = (f"{'mode':10} {'run':>4} {'wall s':>7} {'VM disk':>9} {'PG disk':>9} "
              f"{'peak store':>10} {'jumpbox':>9} {'artifact':>9} {'cairn cpu':>8}")

    def line(mode, run, r):
        return (f"{mode:10} {run:>4} {r['wall']:7.1f} {mib(r['vm_written'])} {mib(r['server_written'])} "
                f"{mib(r['peak_store']):>10} {mib(r['jumpbox_written'])} {mib(r['artifact'])} "
                f"{r['coordinator_cpu']:8.1f}")

    print("Every run (MiB; VM disk = written to the host's /var/vcap disk, PG disk = the PostgreSQL data")
    print("disk meanwhile, peak store = most in /var/vcap/store/bbr-backup at once, jumpbox = written by")
    print("cairn on the coordinator, cairn cpu = its user + system CPU seconds, vda = the machine's")
    print("disk, everyone's writes included):")
    print(header + f" {'vda':>9}")
    for r in rows:
        print(line(r["mode"], r["run"], r) + f" {mib(r['vda_written'])}")
    print()
    print("Medians (run = number of runs):")
    print(header)
    for mode, m in medians.items():
        print(line(mode, m["runs"], m))
    if len(medians) == 2:
        c, s = medians["classic"], medians["streaming"]
        print()
        print(f"streaming / classic: wall time {s['wall'] / c['wall']:.2f}x (goal <= 0.70x); "
              f"VM disk written {s['vm_written'] / 1048576:.2f} MiB vs {c['vm_written'] / 1048576:.1f} MiB "
              f"(goal ~0); peak store {s['peak_store'] / 1048576:.1f} MiB vs {c['peak_store'] / 1048576:.1f} MiB; "
              f"jumpbox written {s['jumpbox_written'] / max(c['jumpbox_written'], 1):.2f}x")


def main(argv):
    if len(argv) == 5 and argv[1] == "settle":
        return cmd_settle(int(argv[2]), int(argv[3]), float(argv[4]))
    elif len(argv) == 4 and argv[1] == "du-peak":
        cmd_du_peak(argv[2], argv[3])
    elif len(argv) == 3 and argv[1] == "table":
        cmd_table(argv[2])
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
