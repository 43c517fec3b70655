//! End-to-end proofs of what Cairn claims and no other test showed (issue 19, item 6):
//!
//! - exit bits 8 (a failing unlock) and 16 (a failing clean-up), alone and ORed with each
//!   other and with bit 1 (8, 16, 17, 24, 25), produced by real scripts and a real `rm -rf`
//!   that fails on a real host, in backups and (24, 25) in restores;
//! - `--parallelism N` is never exceeded, and is reached, by the scripts (their own
//!   timestamps on 20 hosts) and by the artifact transfers (the coordinator's `--json`
//!   events, over links slowed with `tc` so that every transfer lasts long enough to be seen);
//! - `--deployment-parallelism` caps the deployments of `--all-deployments` and does run
//!   them side by side;
//! - on a terminal (a pty of `script`), one progress bar per artifact appears and ends full.
//!
//! Overlaps are counted from timestamps, never timed: a measured interval always lies inside
//! the work Cairn caps (a script inside its SSH command, a transfer's first progress event and
//! its `artifact_stored` inside the transfer), so the count can only under-state the real
//! concurrency; every step sleeps or is slowed so that the count reaches the cap as well.

use std::collections::BTreeMap;
use std::process::{Command, Output, Stdio};

use crate::common::*;
use cairn_testbed::director::{DeploymentSpec, Director, DirectorOptions};
use cairn_testbed::{TestBed, TestHost};

/// The job of the exit-code proofs (not an example job: its scripts are the test's).
const JOB: &str = "proof";

/// A directory the `backup` (or `restore`) script mounts a tmpfs on when the clean-up must
/// fail: inside `/var/vcap/store/bbr-backup` but outside any job's artifact directory, so the
/// drain and the removal of each artifact succeed and only the final `sudo rm -rf
/// /var/vcap/store/bbr-backup` fails (`Device or resource busy`), as a stuck mount would make
/// it fail on a VM.
const PIN: &str = "/var/vcap/store/bbr-backup/pinned";

/// What goes wrong in one run of the exit-code proofs.
#[derive(Debug, Clone, Copy)]
struct Faults {
    /// The `backup` (or `restore`) script exits 3 (bit 1).
    script: bool,
    /// The unlock script exits 5 (bit 8).
    unlock: bool,
    /// The clean-up cannot remove `/var/vcap/store/bbr-backup` (bit 16).
    cleanup: bool,
}

impl Faults {
    /// Nothing fails.
    const NONE: Faults = Faults {
        script: false,
        unlock: false,
        cleanup: false,
    };

    /// bbr's exit code for these faults (bbr-facts §1.4).
    fn expected_code(self) -> i32 {
        i32::from(self.script) | (i32::from(self.unlock) << 3) | (i32::from(self.cleanup) << 4)
    }
}

/// A script of the proof job that logs `<time> <script>` like the example jobs, then `work`.
fn proof_script(script: &str, work: &str) -> String {
    format!(
        "#!/bin/sh\nset -eu\nmkdir -p /var/vcap/sys/log/{JOB}\n\
         echo \"$(date +%s.%N) {script}\" >> /var/vcap/sys/log/{JOB}/bbr-events.log\n{work}\n"
    )
}

/// The mount that makes the clean-up fail, as a line of a job script.
fn pin_line() -> String {
    format!("mkdir -p {PIN}\nmount -t tmpfs pinned {PIN}")
}

/// Removes the mount of [`PIN`] (if any) when dropped, so a failed assertion leaves the test
/// bed removable.
struct Unpin<'a> {
    bed: &'a TestBed,
    host: &'a TestHost,
}

impl Unpin<'_> {
    fn now(&self) {
        let output = self
            .bed
            .exec(self.host, &format!("umount {PIN} 2>/dev/null; true"))
            .expect("umount");
        assert!(output.status.success(), "{output:?}");
    }
}

impl Drop for Unpin<'_> {
    fn drop(&mut self) {
        let _ = self
            .bed
            .exec(self.host, &format!("umount {PIN} 2>/dev/null"));
    }
}

/// Installs the backup scripts of the proof job with `faults`.
fn install_backup_scripts(bed: &TestBed, host: &TestHost, faults: Faults) {
    let mut backup = String::from("echo proof > \"$BBR_ARTIFACT_DIRECTORY/data\"\n");
    if faults.cleanup {
        backup.push_str(&pin_line());
        backup.push('\n');
    }
    if faults.script {
        backup.push_str("echo 'backup broke' >&2\nexit 3\n");
    }
    let unlock = if faults.unlock {
        "echo 'unlock broke' >&2\nexit 5"
    } else {
        ""
    };
    for (script, work) in [
        ("pre-backup-lock", ""),
        ("backup", backup.as_str()),
        ("post-backup-unlock", unlock),
    ] {
        bed.install_script(host, JOB, script, &proof_script(script, work))
            .expect("install script");
    }
}

/// The names of the scripts the proof job ran, in order.
fn scripts_run(bed: &TestBed, host: &TestHost) -> Vec<String> {
    bed.events(host, JOB)
        .into_iter()
        .map(|(_, script, _)| script)
        .collect()
}

/// One backup with `faults` on a one-host test bed: the exit code is the OR of the faults'
/// bits, each fault's error is reported, the job was unlocked, and the backup is complete
/// exactly when no script failed (an unlock or clean-up failure does not lose the artifact).
fn backup_exit_code_is_the_or_of(faults: Faults) {
    let bed = TestBed::start(&[("node", 0, &[JOB])]).expect("test bed");
    let host = bed.host("node", 0);
    let unpin = Unpin { bed: &bed, host };
    install_backup_scripts(&bed, host, faults);
    let work = workdir();
    let output = backup_into(&bed, work.path(), &[]);
    let all = text(&output);
    assert_eq!(
        output.status.code(),
        Some(faults.expected_code()),
        "{faults:?}: {all}"
    );
    assert_eq!(
        scripts_run(&bed, host),
        ["pre-backup-lock", "backup", "post-backup-unlock"],
        "the job is unlocked whatever failed"
    );
    assert_eq!(all.contains("backup broke"), faults.script, "{all}");
    assert_eq!(
        all.contains("post-backup-unlock") && all.contains("unlock broke"),
        faults.unlock,
        "{all}"
    );
    assert_eq!(
        all.contains("Deployment 'testbed' failed while cleaning up with error:")
            && all.contains("/var/vcap/store/bbr-backup"),
        faults.cleanup,
        "{all}"
    );
    let tars: Vec<String> = std::fs::read_dir(work.path())
        .unwrap()
        .flatten()
        .filter(|entry| entry.path().is_dir())
        .flat_map(|entry| tars(&entry.path()))
        .collect();
    if faults.script {
        assert!(tars.is_empty(), "a failed backup has no artifact: {tars:?}");
    } else {
        assert_eq!(tars, ["node-0-proof.tar"], "the artifact was drained");
    }
    if faults.cleanup {
        // `backup-cleanup` cannot remove the directory either: a plain error (bbr: bit 1,
        // never 16), ORed with 8 when its unlock fails again; once the mount is gone and the
        // unlock script mended it can, and nothing is left.
        let stuck = cairn(&bed, work.path(), &["backup-cleanup"]);
        let expected = 1 | (i32::from(faults.unlock) << 3);
        assert_eq!(stuck.status.code(), Some(expected), "{}", text(&stuck));
        unpin.now();
        install_backup_scripts(&bed, host, Faults::NONE);
        let cleaned = cairn(&bed, work.path(), &["backup-cleanup"]);
        assert_eq!(cleaned.status.code(), Some(0), "{}", text(&cleaned));
        assert!(!host.vcap_dir.join("store/bbr-backup").exists());
    }
}

#[test]
fn a_failing_unlock_alone_exits_8() {
    cairn_testbed::require_root!();
    backup_exit_code_is_the_or_of(Faults {
        script: false,
        unlock: true,
        cleanup: false,
    });
}

#[test]
fn a_failing_cleanup_alone_exits_16() {
    cairn_testbed::require_root!();
    backup_exit_code_is_the_or_of(Faults {
        script: false,
        unlock: false,
        cleanup: true,
    });
}

#[test]
fn a_failing_backup_script_and_cleanup_exit_17() {
    cairn_testbed::require_root!();
    backup_exit_code_is_the_or_of(Faults {
        script: true,
        unlock: false,
        cleanup: true,
    });
}

#[test]
fn a_failing_unlock_and_cleanup_exit_24() {
    cairn_testbed::require_root!();
    backup_exit_code_is_the_or_of(Faults {
        script: false,
        unlock: true,
        cleanup: true,
    });
}

#[test]
fn a_failing_backup_script_unlock_and_cleanup_exit_25() {
    cairn_testbed::require_root!();
    backup_exit_code_is_the_or_of(Faults {
        script: true,
        unlock: true,
        cleanup: true,
    });
}

/// One restore with `faults` (in the `restore` script and `post-restore-unlock`) of a good
/// backup: the exit code is the OR of the faults' bits, the job was unlocked, and the data the
/// restore script copied is there.
fn restore_exit_code_is_the_or_of(faults: Faults) {
    let bed = TestBed::start(&[("node", 0, &[JOB])]).expect("test bed");
    let host = bed.host("node", 0);
    let _unpin = Unpin { bed: &bed, host };
    install_backup_scripts(&bed, host, Faults::NONE);
    let work = workdir();
    let backup = backup_into(&bed, work.path(), &[]);
    assert_eq!(backup.status.code(), Some(0), "{}", text(&backup));
    let mut restore = format!(
        "mkdir -p /var/vcap/store/{JOB}
cp \"$BBR_ARTIFACT_DIRECTORY/data\" /var/vcap/store/{JOB}/data\n"
    );
    if faults.cleanup {
        restore.push_str(&pin_line());
        restore.push('\n');
    }
    if faults.script {
        restore.push_str("echo 'restore broke' >&2\nexit 3\n");
    }
    let unlock = if faults.unlock {
        "echo 'unlock broke' >&2\nexit 5"
    } else {
        ""
    };
    for (script, work) in [
        ("pre-restore-lock", ""),
        ("restore", restore.as_str()),
        ("post-restore-unlock", unlock),
    ] {
        bed.install_script(host, JOB, script, &proof_script(script, work))
            .expect("install script");
    }
    let artifact = backup_dir(work.path());
    let output = cairn(
        &bed,
        work.path(),
        &["restore", "--artifact-path", artifact.to_str().unwrap()],
    );
    let all = text(&output);
    assert_eq!(
        output.status.code(),
        Some(faults.expected_code()),
        "{faults:?}: {all}"
    );
    assert_eq!(
        scripts_run(&bed, host)[3..],
        ["pre-restore-lock", "restore", "post-restore-unlock"],
        "the job is unlocked whatever failed"
    );
    assert_eq!(all.contains("restore broke"), faults.script, "{all}");
    assert_eq!(
        all.contains("post-restore-unlock") && all.contains("unlock broke"),
        faults.unlock,
        "{all}"
    );
    assert_eq!(
        all.contains("failed while cleaning up"),
        faults.cleanup,
        "{all}"
    );
    assert_eq!(
        std::fs::read_to_string(host.vcap_dir.join("store").join(JOB).join("data")).unwrap(),
        "proof\n"
    );
}

#[test]
fn a_restore_with_a_failing_unlock_and_cleanup_exits_24() {
    cairn_testbed::require_root!();
    restore_exit_code_is_the_or_of(Faults {
        script: false,
        unlock: true,
        cleanup: true,
    });
}

#[test]
fn a_restore_with_a_failing_restore_script_unlock_and_cleanup_exits_25() {
    cairn_testbed::require_root!();
    restore_exit_code_is_the_or_of(Faults {
        script: true,
        unlock: true,
        cleanup: true,
    });
}

/// The most intervals open at one instant; one that ends when another starts does not
/// overlap it.
fn max_overlap(intervals: &[(f64, f64)]) -> usize {
    let mut points: Vec<(f64, i32)> = intervals
        .iter()
        .flat_map(|&(start, end)| [(start, 1), (end, -1)])
        .collect();
    points.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    let (mut open, mut most) = (0i32, 0i32);
    for (_, step) in points {
        open += step;
        most = most.max(open);
    }
    usize::try_from(most).unwrap_or(0)
}

/// A script of job `job` that logs `<time> <script> start`, does `work`, then logs `<time>
/// <script> end` (the host's clock is the machine's, so times compare across hosts).
fn timed_script(job: &str, script: &str, work: &str) -> String {
    format!(
        "#!/bin/sh\nset -eu\nlog=/var/vcap/sys/log/{job}/bbr-events.log\nmkdir -p \"${{log%/*}}\"\n\
         echo \"$(date +%s.%N) {script} start\" >> \"$log\"\n{work}\n\
         echo \"$(date +%s.%N) {script} end\" >> \"$log\"\n"
    )
}

/// `(script, start, end)` of every timed script run of `job` on `host`.
fn script_intervals(bed: &TestBed, host: &TestHost, job: &str) -> Vec<(String, f64, f64)> {
    let mut open: BTreeMap<String, f64> = BTreeMap::new();
    let mut intervals = Vec::new();
    for (time, script, edge) in bed.events(host, job) {
        match edge.as_str() {
            "start" => {
                assert!(
                    open.insert(script.clone(), time).is_none(),
                    "{script} twice"
                );
            }
            "end" => {
                let start = open.remove(&script).expect("an end after its start");
                intervals.push((script, start, time));
            }
            other => panic!("unexpected event {script} {other}"),
        }
    }
    assert!(open.is_empty(), "scripts that never ended: {open:?}");
    intervals
}

/// Installs the timed lock, backup and unlock scripts of `job`: each sleeps `sleep` seconds;
/// the backup writes `artifact_kib` KiB of random data.
fn install_timed_job(bed: &TestBed, host: &TestHost, job: &str, sleep: &str, artifact_kib: u32) {
    let pause = format!("sleep {sleep}");
    let backup = format!(
        "{pause}\nhead -c {} /dev/urandom > \"$BBR_ARTIFACT_DIRECTORY/data\"",
        artifact_kib * 1024
    );
    for (script, work) in [
        ("pre-backup-lock", pause.as_str()),
        ("backup", backup.as_str()),
        ("post-backup-unlock", pause.as_str()),
    ] {
        bed.install_script(host, job, script, &timed_script(job, script, work))
            .expect("install script");
    }
}

/// `(instance, job)` → (time of its first `transfer_progress`, time of its
/// `artifact_stored`), from `--json` events on stdout.
fn transfer_intervals(stdout: &[u8]) -> BTreeMap<(String, String), (f64, f64)> {
    let mut first_progress: BTreeMap<(String, String), f64> = BTreeMap::new();
    let mut intervals = BTreeMap::new();
    for line in String::from_utf8_lossy(stdout).lines() {
        let Ok(event) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let key = (
            event["instance"].as_str().unwrap_or_default().to_owned(),
            event["job"].as_str().unwrap_or_default().to_owned(),
        );
        let time = event["time"].as_str().expect("every event has a time");
        let time = chrono::DateTime::parse_from_rfc3339(time).expect("RFC 3339 time");
        #[allow(clippy::cast_precision_loss)]
        let seconds = time.timestamp_micros() as f64 / 1e6;
        match event["event"].as_str() {
            Some("transfer_progress") => {
                first_progress.entry(key).or_insert(seconds);
            }
            Some("artifact_stored") => {
                let start = *first_progress
                    .get(&key)
                    .unwrap_or_else(|| panic!("{key:?} stored without progress"));
                intervals.insert(key, (start, seconds));
            }
            _ => {}
        }
    }
    intervals
}

/// Hosts and `--parallelism` of the parallelism proof.
const HOSTS: u32 = 20;
const PARALLELISM: usize = 3;

#[test]
fn parallelism_3_is_never_exceeded_and_is_reached_by_scripts_and_transfers_over_20_hosts() {
    cairn_testbed::require_root!();
    let groups: Vec<(&str, u32, &[&str])> =
        (0..HOSTS).map(|i| ("node", i, &["timed"][..])).collect();
    let bed = TestBed::start(&groups).expect("test bed");
    for host in bed.hosts() {
        // 160 KiB at 2 Mbit/s: each transfer takes most of a second.
        install_timed_job(&bed, host, "timed", "0.4", 160);
        let slowed = bed
            .exec(
                host,
                "tc qdisc add dev eth0 root tbf rate 2mbit burst 16kb latency 2s",
            )
            .expect("tc");
        assert!(
            slowed.status.success(),
            "tc (sch_tbf) is needed to slow a host's link: {}",
            String::from_utf8_lossy(&slowed.stderr)
        );
    }
    let work = workdir();
    let parallelism = PARALLELISM.to_string();
    let output = backup_into(
        &bed,
        work.path(),
        &["--json", "--parallelism", &parallelism],
    );
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));

    let mut by_script: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    for host in bed.hosts() {
        for (script, start, end) in script_intervals(&bed, host, "timed") {
            by_script.entry(script).or_default().push((start, end));
        }
    }
    let all_scripts: Vec<(f64, f64)> = by_script.values().flatten().copied().collect();
    assert_eq!(all_scripts.len(), 3 * HOSTS as usize, "{by_script:?}");
    for (script, intervals) in &by_script {
        assert_eq!(
            max_overlap(intervals),
            PARALLELISM,
            "{script}: at most and at some point exactly {PARALLELISM} at once: {intervals:?}"
        );
    }
    assert_eq!(max_overlap(&all_scripts), PARALLELISM);

    let transfers = transfer_intervals(&output.stdout);
    assert_eq!(transfers.len(), HOSTS as usize, "{transfers:?}");
    let transfers: Vec<(f64, f64)> = transfers.into_values().collect();
    eprintln!(
        "transfer seconds: {:?}",
        transfers.iter().map(|(s, e)| e - s).collect::<Vec<_>>()
    );
    assert_eq!(
        max_overlap(&transfers),
        PARALLELISM,
        "at most and at some point exactly {PARALLELISM} transfers at once: {transfers:?}"
    );
}

/// How many live (not zombie) processes have `parent` as their parent, from `/proc`.
fn live_children(parent: u32) -> usize {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                return false;
            };
            // `pid (comm) state ppid ...`; comm may hold spaces and parentheses.
            let mut fields = stat
                .rsplit_once(')')
                .map(|(_, rest)| rest.split_whitespace())
                .into_iter()
                .flatten();
            let state = fields.next();
            let ppid = fields.next().and_then(|ppid| ppid.parse::<u32>().ok());
            state != Some("Z") && ppid == Some(parent)
        })
        .count()
}

#[test]
fn deployment_parallelism_2_caps_four_deployments_and_runs_two_side_by_side() {
    cairn_testbed::require_root!();
    let names = ["d0", "d1", "d2", "d3"];
    let hosts: Vec<(&str, u32, &[&str])> = names.iter().map(|g| (*g, 0, &["timed"][..])).collect();
    let bed = TestBed::start(&hosts).expect("test bed");
    for host in bed.hosts() {
        install_timed_job(&bed, host, "timed", "0.5", 4);
    }
    let mut options = DirectorOptions::new(&bed);
    for name in names {
        options
            .deployments
            .push(DeploymentSpec::new(name, &bed).groups(&[name]));
    }
    let director = Director::start(&options).expect("director");
    let work = workdir();
    let login = director_login(&director);
    let artifact_path = work.path().to_str().unwrap();
    let args = with_director_login(
        &login,
        &[
            "--all-deployments",
            "--deployment-parallelism",
            "2",
            "backup",
            "--artifact-path",
            artifact_path,
        ],
    );
    // Each deployment runs in a `cairn` process of its own, a child of this one, from its
    // Director login to its last clean-up: count them while the run goes.
    let log = work.root().join("all-deployments.log");
    let mut child = cairn_command_in(work.path())
        .args(&args)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("cairn runs");
    let mut counts = Vec::new();
    let status = loop {
        counts.push(live_children(child.id()));
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let output = std::fs::read_to_string(&log).unwrap();
    assert_eq!(status.code(), Some(0), "{output}");
    let most = counts.iter().max().copied().unwrap_or(0);
    eprintln!(
        "deployment processes seen at once: at most {most} in {} samples",
        counts.len()
    );
    assert_eq!(
        most, 2,
        "at most and at some point exactly 2 deployment processes at once: {output}"
    );
    // The scripts agree: no three deployments' scripts ran at one instant (each deployment
    // is one host; its span is its first script's start to its last script's end).
    let spans: Vec<(f64, f64)> = bed
        .hosts()
        .iter()
        .map(|host| {
            let intervals = script_intervals(&bed, host, "timed");
            assert_eq!(intervals.len(), 3, "{}: {intervals:?}", host.name());
            let start = intervals.iter().map(|i| i.1).fold(f64::MAX, f64::min);
            let end = intervals.iter().map(|i| i.2).fold(f64::MIN, f64::max);
            (start, end)
        })
        .collect();
    assert!(max_overlap(&spans) <= 2, "{spans:?}");
}

/// Quotes `word` for `sh`.
fn sh_quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', r"'\''"))
}

/// What a terminal of `columns` × `lines` shows after `output`, the rows scrolled off the top
/// included, one string per row without trailing blanks: printable text with auto-wrap,
/// carriage return, line feed (scrolling at the bottom), and the cursor-up, cursor-down
/// (both stopping at the screen's edges) and erase-line sequences indicatif draws with; other
/// escape sequences are ignored.
fn terminal_rows(output: &str, columns: usize, lines: usize) -> Vec<String> {
    let mut rows: Vec<Vec<char>> = vec![Vec::new()];
    // `top` is the screen's first row, `row` the cursor's, both indices into `rows`.
    let (mut top, mut row, mut col) = (0usize, 0usize, 0usize);
    let line_feed = |rows: &mut Vec<Vec<char>>, top: &mut usize, row: &mut usize| {
        *row += 1;
        if *row == rows.len() {
            rows.push(Vec::new());
        }
        if *row >= *top + lines {
            *top += 1;
        }
    };
    let mut chars = output.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\r' => col = 0,
            '\n' => line_feed(&mut rows, &mut top, &mut row),
            '\x1b' => {
                if chars.next_if_eq(&'[').is_none() {
                    chars.next();
                    continue;
                }
                let mut parameter = String::new();
                let mut command = ' ';
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        command = c;
                        break;
                    }
                    parameter.push(c);
                }
                let count = parameter.parse::<usize>().unwrap_or(1);
                match (command, parameter.as_str()) {
                    ('A', _) => row = row.saturating_sub(count).max(top),
                    ('B', _) => {
                        row = (row + count).min(top + lines - 1);
                        if rows.len() <= row {
                            rows.resize(row + 1, Vec::new());
                        }
                    }
                    ('K', "2") => rows[row].clear(),
                    ('K', "" | "0") => rows[row].truncate(col),
                    _ => {}
                }
                // A cursor movement cancels a pending wrap.
                col = col.min(columns - 1);
            }
            c => {
                if col == columns {
                    line_feed(&mut rows, &mut top, &mut row);
                    col = 0;
                }
                let line = &mut rows[row];
                if line.len() <= col {
                    line.resize(col, ' ');
                    line.push(c);
                } else {
                    line[col] = c;
                }
                col += 1;
            }
        }
    }
    rows.into_iter()
        .map(|row| row.into_iter().collect::<String>().trim_end().to_owned())
        .collect()
}

/// Columns of the pseudo-terminal: wide enough for a finished bar on one row.
const COLUMNS: usize = 200;
/// Lines of the pseudo-terminal.
const LINES: usize = 40;

/// `cairn deployment --inventory <bed> <args>` on a pseudo-terminal (util-linux `script`,
/// [`COLUMNS`] × [`LINES`]): everything written to it, stdout and stderr, escape sequences
/// included.
fn cairn_on_a_terminal(bed: &TestBed, work: &std::path::Path, args: &[&str]) -> Output {
    let inventory = bed.inventory();
    let mut words = vec![
        env!("CARGO_BIN_EXE_cairn"),
        "deployment",
        "--inventory",
        inventory.to_str().unwrap(),
    ];
    words.extend_from_slice(args);
    let line = words
        .iter()
        .map(|w| sh_quote(w))
        .collect::<Vec<_>>()
        .join(" ");
    let output = Command::new("script")
        .args([
            "-qfec",
            &format!("stty cols {COLUMNS} rows {LINES}; exec {line}"),
            "/dev/null",
        ])
        .envs(STORE_ENV)
        .env("CAIRN_STATE_DIR", state_dir(work))
        .env("TERM", "xterm")
        .env_remove("CAIRN_NO_PROGRESS")
        .current_dir(work)
        .stdin(Stdio::null())
        .output()
        .expect("script (util-linux) runs");
    eprintln!(
        "script -c cairn {args:?} -> {:?}\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout)
    );
    output
}

/// The rows of `screen` that show the progress bar of `prefix` (`<instance> <job>`, padded
/// with spaces, then `[`).
fn bar_rows<'a>(screen: &'a [String], prefix: &str) -> Vec<&'a str> {
    screen
        .iter()
        .filter_map(|row| {
            let rest = row.strip_prefix(prefix)?;
            let bar = rest.trim_start_matches(' ');
            (bar.len() < rest.len() && bar.starts_with('[')).then_some(row.as_str())
        })
        .collect()
}

#[test]
fn progress_bars_appear_on_a_terminal_and_each_ends_full() {
    cairn_testbed::require_root!();
    let bed = TestBed::start(&[]).expect("test bed");
    let work = workdir();
    let output = cairn_on_a_terminal(
        &bed,
        work.path(),
        &["backup", "--artifact-path", work.path().to_str().unwrap()],
    );
    assert_eq!(output.status.code(), Some(0));
    let written = String::from_utf8_lossy(&output.stdout);
    let screen = terminal_rows(&written, COLUMNS, LINES);
    let shown = screen.join("\n");
    let full_bar = format!("[{}]", "=".repeat(30));
    let artifacts = [
        "database/0 database",
        "app/0 app",
        "app/0 files",
        "app/1 app",
        "app/1 files",
    ];
    for prefix in artifacts {
        // The bottom-most drawing of the bar is the one indicatif drew last.
        let last = *bar_rows(&screen, prefix)
            .last()
            .unwrap_or_else(|| panic!("no progress bar for {prefix}:\n{shown}"));
        assert!(last.contains(&full_bar), "{prefix} ends full: {last:?}");
        assert!(last.contains("stored ("), "{prefix} ends stored: {last:?}");
        // `{bytes}/{total_bytes}`, e.g. `12.00 KiB/12.00 KiB`.
        let counts = last
            .split_once("] ")
            .map(|(_, rest)| rest)
            .unwrap_or_default();
        let (done, rest) = counts.split_once('/').unwrap_or_default();
        let total: Vec<&str> = rest.split_whitespace().take(2).collect();
        assert!(
            !done.is_empty() && done == total.join(" "),
            "{prefix} ends at 100 %: {last:?}"
        );
    }
    assert!(
        screen
            .iter()
            .any(|row| row == "database/0 database: backup done"),
        "script outcomes are printed above the bars:\n{shown}"
    );
}
