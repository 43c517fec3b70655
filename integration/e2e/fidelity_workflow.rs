//! End-to-end: drop-in fidelity of the workflows (issue 18). The real `cairn` binary against a
//! test bed, compared with bbr v1.9.81's exact strings and order; each expected string names
//! the bbr source file it comes from.

use std::path::Path;
use std::process::{Command, Output};

use crate::common::*;
use cairn_testbed::director::{DeploymentSpec, Director, DirectorOptions};
use cairn_testbed::{TestBed, TestHost};

/// The messages of the `INFO` lines (`[bbr] 2006/01/02 15:04:05 INFO - <message>`), in order.
fn info_lines(output: &Output) -> Vec<String> {
    text(output)
        .lines()
        .filter_map(|line| line.split_once(" INFO - ").map(|(_, m)| m.to_string()))
        .collect()
}

/// Asserts `expected` appear among `lines` verbatim and in this order (other lines may come
/// between them).
fn assert_in_order(lines: &[String], expected: &[String]) {
    let mut position = 0;
    for wanted in expected {
        match lines[position..].iter().position(|line| line == wanted) {
            Some(found) => position += found + 1,
            None => panic!(
                "`{wanted}` is missing or out of order; expected, in order:\n{}\ngot:\n{}",
                expected.join("\n"),
                lines.join("\n")
            ),
        }
    }
}

fn strings(lines: &[&str]) -> Vec<String> {
    lines.iter().map(|s| (*s).to_string()).collect()
}

/// `cairn deployment --inventory <bed> <args>` in `work` with extra environment variables.
fn cairn_with(bed: &TestBed, work: &Path, env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut command: Command = cairn_command_in(work);
    command
        .envs(env.iter().copied())
        .arg("deployment")
        .arg("--inventory")
        .arg(bed.inventory())
        .args(args);
    let output = command.output().expect("cairn runs");
    eprintln!(
        "cairn {args:?} -> {:?}\n--- stdout\n{}--- stderr\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// The percentages of bbr's `Copying backup for job J on I -- N% complete` lines
/// (`readwriter/log_percentage.go`, message built in `orchestrator/backup_download_executable.go`
/// and `backup_upload_executable.go`), checked to rise from at least 5 % (bbr never logs 0 %).
fn percentages(lines: &[String], job: &str, instance: &str) -> Vec<u64> {
    let prefix = format!("Copying backup for job {job} on {instance} -- ");
    let found: Vec<u64> = lines
        .iter()
        .filter_map(|line| line.strip_prefix(&prefix)?.strip_suffix("% complete"))
        .map(|n| n.parse().expect("a percentage"))
        .collect();
    assert!(
        !found.is_empty(),
        "no progress line for {job} on {instance}"
    );
    assert!(
        found[0] >= 5,
        "bbr's first progress line is at 5 %: {found:?}"
    );
    assert!(found.windows(2).all(|w| w[0] < w[1]), "{found:?}");
    assert!(found.iter().all(|p| *p <= 100), "{found:?}");
    found
}

/// A job `blob` on app/0 whose backup writes 3 MB and records what `du -sh` of its artifact
/// directory prints (bbr's `sudo du -sh <dir>`, `ssh/remote_runner.go SizeOf`) once the
/// directory is final.
fn install_blob_job(bed: &TestBed, host: &TestHost) {
    let backup = "#!/bin/sh\nset -eu\nhead -c 3000000 /dev/urandom > \"${BBR_ARTIFACT_DIRECTORY}blob.bin\"\nmkdir -p /var/vcap/sys/log/blob\ndu -sh /var/vcap/store/bbr-backup/blob | cut -f1 > /var/vcap/sys/log/blob/du-sh\n";
    let restore = "#!/bin/sh\ntest -s \"${BBR_ARTIFACT_DIRECTORY}blob.bin\"\n";
    bed.install_script(host, "blob", "backup", backup).unwrap();
    bed.install_script(host, "blob", "restore", restore)
        .unwrap();
}

/// Go's `%v` of a local `time.Now()` without the monotonic suffix: `2006-01-02
/// 15:04:05.999999999 -0700 MST`; returns the offset and zone.
fn go_time_zone(time: &str) -> (String, String) {
    let parts: Vec<&str> = time.split(' ').collect();
    assert_eq!(parts.len(), 4, "{time}");
    let date_time = format!("{} {}", parts[0], parts[1]);
    chrono::NaiveDateTime::parse_from_str(&date_time, "%Y-%m-%d %H:%M:%S%.f")
        .unwrap_or_else(|e| panic!("{time}: {e}"));
    assert!(
        !parts[1].ends_with('0') || !parts[1].contains('.'),
        "{time}"
    );
    (parts[2].to_string(), parts[3].to_string())
}

#[test]
fn backup_restore_and_cleanups_log_bbrs_lines_in_bbrs_order() {
    cairn_testbed::require_root!();
    let bed = TestBed::start(&[]).expect("test bed");
    let app0 = bed.host("app", 0).clone();
    install_blob_job(&bed, &app0);
    let work = workdir();
    let artifact_path = work.path().to_str().unwrap();
    // bbr formats `time.Now()` in the jumpbox's zone: run cairn in one that is not UTC.
    let berlin = [("TZ", "Europe/Berlin")];
    let output = cairn_with(
        &bed,
        work.path(),
        &berlin,
        &["backup", "--artifact-path", artifact_path],
    );
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let lines = info_lines(&output);
    let du = std::fs::read_to_string(app0.vcap_dir.join("sys/log/blob/du-sh")).unwrap();
    let du = du.trim();
    assert_in_order(
        &lines,
        &[
            // orchestrator/find_deployment_step.go
            "Looking for scripts".to_string(),
            // orchestrator/backupable_step.go
            "Running pre-checks for backup of testbed...".to_string(),
            // orchestrator/create_artifact_step.go
            "Starting backup of testbed...".to_string(),
            // orchestrator/deployment.go PreBackupLock; instance/job.go PreBackupLock
            "Running pre-backup-lock scripts...".to_string(),
            "Locking app on app/0 for backup...".to_string(),
            "Finished locking app on app/0 for backup.".to_string(),
            "Locking database on database/0 for backup...".to_string(),
            "Finished locking database on database/0 for backup.".to_string(),
            "Finished running pre-backup-lock scripts.".to_string(),
            // orchestrator/deployment.go Backup; instance/job.go Backup
            "Running backup scripts...".to_string(),
            "Backing up blob on app/0...".to_string(),
            "Finished backing up blob on app/0.".to_string(),
            "Finished running backup scripts.".to_string(),
            // orchestrator/deployment.go PostBackupUnlock; instance/job.go PostBackupUnlock
            "Running post-backup-unlock scripts...".to_string(),
            "Unlocking database on database/0...".to_string(),
            "Finished unlocking database on database/0.".to_string(),
            "Unlocking app on app/0...".to_string(),
            "Finished unlocking app on app/0.".to_string(),
            "Finished running post-backup-unlock scripts.".to_string(),
            // orchestrator/backup_download_executable.go
            format!("Copying backup -- {du} uncompressed -- for job blob on app/0..."),
            "Finished copying backup -- for job blob on app/0...".to_string(),
            "Starting validity checks -- for job blob on app/0...".to_string(),
            "Finished validity checks -- for job blob on app/0...".to_string(),
        ],
    );
    percentages(&lines, "blob", "app/0");
    let copying = lines
        .iter()
        .position(|l| l.starts_with("Copying backup -- ") && l.contains("job blob on app/0"))
        .unwrap();
    let copied = lines
        .iter()
        .position(|l| l == "Finished copying backup -- for job blob on app/0...")
        .unwrap();
    let progress = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| l.starts_with("Copying backup for job blob on app/0 -- "))
        .map(|(i, _)| i);
    assert!(progress.clone().all(|i| copying < i && i < copied));
    // orchestrator/drain_step.go: `Backup created of %s on %v`, after every artifact.
    let created = lines
        .iter()
        .position(|l| l.starts_with("Backup created of testbed on "))
        .expect("Backup created line");
    assert!(created > copied);
    let (offset, zone) = go_time_zone(&lines[created]["Backup created of testbed on ".len()..]);
    assert!(
        [("+0100", "CET"), ("+0200", "CEST")].contains(&(offset.as_str(), zone.as_str())),
        "{offset} {zone}"
    );
    assert!(!lines
        .iter()
        .any(|l| l.starts_with("Failed to create backup")));

    // backup/backup_directory.go: `backup_activity` times in `2006/01/02 15:04:05 MST`, local.
    let backup = backup_dir(work.path());
    let metadata = std::fs::read_to_string(backup.join("metadata")).unwrap();
    for key in ["start_time", "finish_time"] {
        let value = metadata
            .lines()
            .find_map(|l| l.trim().strip_prefix(&format!("{key}: ")))
            .unwrap_or_else(|| panic!("no {key} in {metadata}"));
        let (local, zone) = value.rsplit_once(' ').unwrap();
        assert!(["CET", "CEST"].contains(&zone), "{value}");
        let local = chrono::NaiveDateTime::parse_from_str(local, "%Y/%m/%d %H:%M:%S").unwrap();
        let utc = chrono::Utc::now().naive_utc();
        let ahead = (local - utc).num_minutes();
        assert!((55..=125).contains(&ahead), "{value} is not Berlin's time");
    }

    // Restore from it (with the zone unset: the metadata reads the same either way).
    let restored = cairn_with(
        &bed,
        work.path(),
        &[],
        &["restore", "--artifact-path", backup.to_str().unwrap()],
    );
    assert_eq!(restored.status.code(), Some(0), "{}", text(&restored));
    let lines = info_lines(&restored);
    // bbr's `du -sh <tar>` on the jumpbox (backup/backup_directory.go GetArtifactSize).
    let tar_du = Command::new("du")
        .arg("-sh")
        .arg(backup.join("app-0-blob.tar"))
        .output()
        .unwrap();
    let tar_du = String::from_utf8_lossy(&tar_du.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    assert_in_order(
        &lines,
        &[
            // orchestrator/validate_artifact_step.go
            "Starting restore of testbed...".to_string(),
            "Validating backup artifact for testbed...".to_string(),
            // orchestrator/find_deployment_step.go
            "Looking for scripts".to_string(),
            // orchestrator/backup_upload_executable.go (group/index; no `--` in the last)
            format!("Copying backup -- {tar_du} uncompressed -- for job blob on app/0..."),
            "Finished copying backup for job blob on app/0.".to_string(),
            // orchestrator/deployment.go PreRestoreLock; instance/job.go PreRestoreLock
            "Running pre-restore-lock scripts...".to_string(),
            "Locking app on app/0 for restore...".to_string(),
            "Finished locking app on app/0 for restore.".to_string(),
            "Finished running pre-restore-lock scripts.".to_string(),
            // orchestrator/deployment.go Restore; instance/job.go Restore
            "Running restore scripts...".to_string(),
            "Restoring blob on app/0...".to_string(),
            "Finished restoring blob on app/0.".to_string(),
            "Finished running restore scripts.".to_string(),
            // orchestrator/restore_step.go
            "Completed restore of testbed".to_string(),
            // orchestrator/deployment.go PostRestoreUnlock; instance/job.go PostRestoreUnlock
            "Running post-restore-unlock scripts...".to_string(),
            "Unlocking app on app/0...".to_string(),
            "Finished unlocking app on app/0.".to_string(),
            "Finished running post-restore-unlock scripts.".to_string(),
        ],
    );
    percentages(&lines, "blob", "app/0");
    assert_nothing_left(&bed);

    // orchestrator/backup_cleaner.go and restore_cleaner.go: `'%s' cleaned up`.
    for (command, script) in [
        ("backup-cleanup", "post-backup-unlock"),
        ("restore-cleanup", "post-restore-unlock"),
    ] {
        let output = cairn_with(&bed, work.path(), &[], &[command]);
        assert_eq!(output.status.code(), Some(0), "{}", text(&output));
        assert_in_order(
            &info_lines(&output),
            &[
                "Looking for scripts".to_string(),
                format!("Running {script} scripts..."),
                format!("Finished running {script} scripts."),
                "'testbed' cleaned up".to_string(),
            ],
        );
    }
}

#[test]
fn unsafe_lock_free_logs_bbrs_skip_lines_and_a_failed_drain_says_so() {
    cairn_testbed::require_root!();
    let bed = TestBed::start(&[]).expect("test bed");
    let work = workdir();
    let output = cairn_with(
        &bed,
        work.path(),
        &[("TZ", "UTC")],
        &[
            "backup",
            "-a",
            work.path().to_str().unwrap(),
            "--unsafe-lock-free",
        ],
    );
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let lines = info_lines(&output);
    // orchestrator/skip_step.go `Skipping %s for deployment`, named in orchestrator/backuper.go.
    assert_in_order(
        &lines,
        &strings(&[
            "Skipping lock for deployment",
            "Running backup scripts...",
            "Finished running backup scripts.",
            "Skipping unlock after successful backup for deployment",
        ]),
    );
    assert!(!lines
        .iter()
        .any(|l| l.starts_with("Running pre-backup-lock")));
    let created = lines
        .iter()
        .find_map(|l| l.strip_prefix("Backup created of testbed on "))
        .expect("Backup created line");
    assert_eq!(go_time_zone(created), ("+0000".into(), "UTC".into()));
    let metadata = std::fs::read_to_string(backup_dir(work.path()).join("metadata")).unwrap();
    assert!(
        metadata.contains(" UTC\n"),
        "UTC times in UTC's zone: {metadata}"
    );

    // A failed backup script: the other skip line, and no drain line at all (bbr's drain step
    // is not reached).
    bed.install_script(
        bed.host("app", 1),
        "files",
        "backup",
        "#!/bin/sh\necho broke >&2\nexit 1\n",
    )
    .unwrap();
    let failed_work = workdir();
    let output = cairn_with(
        &bed,
        failed_work.path(),
        &[],
        &[
            "backup",
            "-a",
            failed_work.path().to_str().unwrap(),
            "--unsafe-lock-free",
        ],
    );
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    let lines = info_lines(&output);
    assert_in_order(
        &lines,
        &strings(&[
            "Skipping lock for deployment",
            "Skipping unlock after unsuccessful backup for deployment",
        ]),
    );
    assert!(!lines
        .iter()
        .any(|l| l.starts_with("Backup created") || l.starts_with("Failed to create backup")));
    let example =
        std::fs::read_to_string("scripts-contract/examples/files/bin/bbr/backup").unwrap();
    bed.install_script(bed.host("app", 1), "files", "backup", &example)
        .unwrap();

    // A drain that fails (the instance's `tar -c` is killed as it streams):
    // orchestrator/drain_step.go's failure line.
    let app0 = bed.host("app", 0);
    let killer = "#!/bin/sh\nset -eu\nhead -c 50000000 /dev/zero > \"${BBR_ARTIFACT_DIRECTORY}zeros\"\nsetsid sh -c 'p=\"tar -C /var/vcap/store/bbr-\"; i=0; while [ $i -lt 6000 ]; do pkill -f \"${p}backup/grow\" && exit 0; i=$((i+1)); sleep 0.01; done' </dev/null >/dev/null 2>&1 &\n";
    bed.install_script(app0, "grow", "backup", killer).unwrap();
    let drain_work = workdir();
    let output = cairn_with(
        &bed,
        drain_work.path(),
        &[],
        &["backup", "-a", drain_work.path().to_str().unwrap()],
    );
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    let lines = info_lines(&output);
    let failed = lines
        .iter()
        .find_map(|l| l.strip_prefix("Failed to create backup of testbed on "))
        .expect("the drain failure line");
    let time = failed
        .strip_suffix(", failed during drain step")
        .expect("bbr's suffix");
    go_time_zone(time);
    assert!(!lines.iter().any(|l| l.starts_with("Backup created")));
    assert_nothing_left(&bed);
}

/// A lock or unlock script of `job` that logs its start and end around a short sleep
/// (`<script>-start` / `<script>-end` events), and marks the job locked or unlocked.
fn timed_script(job: &str, script: &str) -> String {
    let mark = if script.starts_with("pre-") {
        format!("touch /var/vcap/sys/run/{job}/locked")
    } else {
        format!("rm -f /var/vcap/sys/run/{job}/locked")
    };
    format!(
        "#!/bin/sh\nset -eu\nmkdir -p /var/vcap/sys/log/{job} /var/vcap/sys/run/{job}\nlog=/var/vcap/sys/log/{job}/bbr-events.log\necho \"$(date +%s.%N) {script}-start\" >> $log\nsleep 0.3\n{mark}\necho \"$(date +%s.%N) {script}-end\" >> $log\n"
    )
}

/// `(start, end, who)` of every run of `script` across the test bed, by start time.
fn intervals(bed: &TestBed, script: &str) -> Vec<(f64, f64, String)> {
    let timeline = bed.timeline();
    let mut runs = Vec::new();
    for start in timeline
        .iter()
        .filter(|e| e.script == format!("{script}-start"))
    {
        let end = timeline
            .iter()
            .find(|e| {
                e.script == format!("{script}-end")
                    && e.host == start.host
                    && e.job == start.job
                    && e.time >= start.time
            })
            .expect("every start has an end");
        runs.push((
            start.time,
            end.time,
            format!("{} {}", start.host, start.job),
        ));
    }
    runs.sort_by(|a, b| a.0.total_cmp(&b.0));
    runs
}

fn assert_one_at_a_time(runs: &[(f64, f64, String)], count: usize) {
    assert_eq!(runs.len(), count, "{runs:?}");
    for pair in runs.windows(2) {
        assert!(
            pair[1].0 >= pair[0].1,
            "{} started before {} ended: {runs:?}",
            pair[1].2,
            pair[0].2
        );
    }
}

#[test]
fn restore_locks_and_unlocks_run_one_job_at_a_time() {
    cairn_testbed::require_root!();
    let bed = TestBed::start(&[]).expect("test bed");
    // Five jobs with lock scripts: app and files on app/0 and app/1 (one lock layer), database.
    let jobs: Vec<(TestHost, &str)> = vec![
        (bed.host("database", 0).clone(), "database"),
        (bed.host("app", 0).clone(), "app"),
        (bed.host("app", 0).clone(), "files"),
        (bed.host("app", 1).clone(), "app"),
        (bed.host("app", 1).clone(), "files"),
    ];
    for (host, job) in &jobs {
        for script in ["pre-backup-lock", "pre-restore-lock", "post-restore-unlock"] {
            bed.install_script(host, job, script, &timed_script(job, script))
                .unwrap();
        }
    }
    let work = workdir();
    let output = backup_into(&bed, work.path(), &[]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    // The backup locks of a layer run at once (bbr's parallel executor): the check below
    // would see overlaps.
    let backup_locks = intervals(&bed, "pre-backup-lock");
    assert_eq!(backup_locks.len(), 5);
    assert!(
        backup_locks.windows(2).any(|p| p[1].0 < p[0].1),
        "backup locks of one layer overlap: {backup_locks:?}"
    );

    let backup = backup_dir(work.path());
    let output = cairn(
        &bed,
        work.path(),
        &["restore", "--artifact-path", backup.to_str().unwrap()],
    );
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    // bbr: orchestrator/restorer.go with executor/serial.go (`NewSerialExecutor` for the
    // pre-restore-lock and post-restore-unlock steps, cli/command/deployment_restore.go).
    assert_one_at_a_time(&intervals(&bed, "pre-restore-lock"), 5);
    assert_one_at_a_time(&intervals(&bed, "post-restore-unlock"), 5);
    assert_nothing_left(&bed);

    // restore-cleanup likewise (orchestrator/restore_cleaner.go).
    let output = cairn(&bed, work.path(), &["restore-cleanup"]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert_one_at_a_time(&intervals(&bed, "post-restore-unlock"), 10);
}

#[test]
fn restore_runs_every_job_of_the_failing_instance_then_stops() {
    cairn_testbed::require_root!();
    let bed = TestBed::start(&[]).expect("test bed");
    let work = workdir();
    let output = backup_into(&bed, work.path(), &[]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let app0 = bed.host("app", 0);
    // Instances restore in order database/0, app/0, app/1; on app/0, app then files.
    bed.install_script(
        app0,
        "app",
        "restore",
        "#!/bin/sh\necho \"$(date +%s.%N) restore failed\" >> /var/vcap/sys/log/app/bbr-events.log\necho 'restore broke' >&2\nexit 2\n",
    )
    .unwrap();
    let backup = backup_dir(work.path());
    let output = cairn(
        &bed,
        work.path(),
        &["restore", "--artifact-path", backup.to_str().unwrap()],
    );
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    // instance/job.go Restore's error.
    assert!(text(&output).contains("Error attempting to run restore for job app on app/0"));
    let restores = |host: &TestHost, job: &str| {
        bed.events(host, job)
            .into_iter()
            .filter(|e| e.1 == "restore")
            .count()
    };
    // bbr: instance/deployed_instance.go Restore runs every job of the instance;
    // orchestrator/instance.go instances.Restore stops at the first failing instance.
    assert_eq!(restores(bed.host("database", 0), "database"), 1);
    assert_eq!(
        restores(app0, "files"),
        1,
        "app/0's other job still restored"
    );
    assert_eq!(restores(bed.host("app", 1), "app"), 0, "app/1 not restored");
    assert_eq!(
        restores(bed.host("app", 1), "files"),
        0,
        "app/1 not restored"
    );
    let lines = info_lines(&output);
    assert_in_order(
        &lines,
        &strings(&[
            "Running restore scripts...",
            "Restoring app on app/0...",
            "Restoring files on app/0...",
            "Finished restoring files on app/0.",
            "Finished running restore scripts.",
            "Running post-restore-unlock scripts...",
        ]),
    );
    assert!(!lines.iter().any(|l| l.starts_with("Completed restore")));
    assert!(!lines
        .iter()
        .any(|l| l.contains("on app/1...") && l.starts_with("Restoring")));
    assert_nothing_left(&bed);
}

#[test]
fn scripts_get_bbr_version_and_cairn_version_and_a_failed_metadata_reads_as_bbr() {
    cairn_testbed::require_root!();
    let bed = TestBed::start(&[]).expect("test bed");
    let database = bed.host("database", 0);
    let record = |script: &str| {
        format!("mkdir -p /var/vcap/sys/log/versions\necho \"{script} BBR_VERSION=${{BBR_VERSION:-}} CAIRN_VERSION=${{CAIRN_VERSION:-}}\" >> /var/vcap/sys/log/versions/env\n")
    };
    bed.install_script(
        database,
        "versions",
        "metadata",
        &format!(
            "#!/bin/sh\n{}echo 'backup_should_be_locked_before: []'\n",
            record("metadata")
        ),
    )
    .unwrap();
    bed.install_script(
        database,
        "versions",
        "backup",
        &format!("#!/bin/sh\n{}", record("backup")),
    )
    .unwrap();
    let work = workdir();
    let output = backup_into(&bed, work.path(), &[]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let recorded = std::fs::read_to_string(database.vcap_dir.join("sys/log/versions/env")).unwrap();
    let cairn_version = env!("CARGO_PKG_VERSION");
    // instance/job_finder.go findMetadata: BBR_VERSION for metadata only (bbr 1.9.81, the
    // release whose behaviour Cairn implements); CAIRN_VERSION for every script.
    assert_eq!(
        recorded,
        format!(
            "metadata BBR_VERSION=1.9.81 CAIRN_VERSION={cairn_version}\nbackup BBR_VERSION= CAIRN_VERSION={cairn_version}\n"
        )
    );

    bed.install_script(
        database,
        "versions",
        "metadata",
        "#!/bin/sh\necho 'metadata broke' >&2\nexit 3\n",
    )
    .unwrap();
    let failed = workdir();
    let before = script_counts(&bed);
    let output = backup_into(&bed, failed.path(), &[]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    // instance/job_finder.go findMetadata: errors.Wrapf(err, "An error occurred while running
    // metadata script for job %s on %s"), err being `<stderr> - exit code <n>`.
    assert!(
        text(&output).contains("An error occurred while running metadata script for job versions on database/0: metadata broke - exit code 3"),
        "{}",
        text(&output)
    );
    assert_eq!(
        script_counts(&bed),
        before,
        "no script ran after discovery failed"
    );
}

/// `cairn deployment` against the Director stand-in, deployment `cf`.
fn against_director(director: &Director, work: &Path, args: &[&str]) -> Output {
    let login = director_login(director);
    let mut all = with_director_login(&login, &["-d", "cf"]);
    all.extend_from_slice(args);
    run(work, &all)
}

#[test]
fn a_failed_temporary_user_removal_is_exit_16_after_backup_and_exit_1_in_backup_cleanup() {
    cairn_testbed::require_root!();
    let bed = TestBed::start(&[("db", 0, &["database"])]).expect("test bed");
    let db = bed.host("db", 0).clone();
    let mut options = DirectorOptions::new(&bed);
    options.deployments.push(DeploymentSpec::new("cf", &bed));
    let director = Director::start(&options).expect("director");
    // The unlock mounts a file system inside the temporary user's home, so the Director's
    // `ssh cleanup` task cannot remove it (`rm`: Device or resource busy) and fails.
    let busy = "#!/bin/sh\nset -eu\nrm -f /var/vcap/sys/run/database/locked\nhome=$(getent passwd \"$SUDO_USER\" | cut -d: -f6)\nmkdir -p \"$home/busy\"\nmount -t tmpfs cairn-busy \"$home/busy\"\n";
    bed.install_script(&db, "database", "post-backup-unlock", busy)
        .unwrap();
    let unmount = || {
        bed.exec(
            &db,
            "for m in $(grep -o '/var/vcap/bosh_ssh/[^ ]*/busy' /proc/mounts); do umount \"$m\"; done",
        )
        .unwrap()
    };
    let work = workdir();

    // After a backup, bbr's CleanupStep error: exit bit 16 (orchestrator/error.go, CleanupError).
    let output = against_director(
        &director,
        work.path(),
        &["backup", "-a", work.path().to_str().unwrap()],
    );
    unmount();
    assert_eq!(output.status.code(), Some(16), "{}", text(&output));

    // In backup-cleanup, bbr's CleanupPreviousStep error is a plain error: exit 1
    // (orchestrator/backup_cleaner.go; bbr-facts §1.4).
    let output = against_director(&director, work.path(), &["backup-cleanup"]);
    unmount();
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert!(
        text(&output).contains("Deleting Ephemeral Users") || text(&output).contains("busy"),
        "{}",
        text(&output)
    );
    assert!(!info_lines(&output)
        .iter()
        .any(|l| l.ends_with("cleaned up")));
}
