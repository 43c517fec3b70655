//! End-to-end: every failure edge of backup and restore leaves nothing locked and nothing
//! that looks complete.

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::common::*;
use cairn_testbed::TestBed;

const FAIL: &str = "#!/bin/sh\necho 'something broke' >&2\nexit 1\n";

#[test]
fn failing_pre_backup_lock_exits_4_and_unlocks_every_job() {
    cairn_testbed::require_root!();
    let bed = TestBed::start(&[]).expect("test bed");
    let database = bed.host("database", 0);
    // Keep the event log while failing.
    let failing_lock = "#!/bin/sh\necho \"$(date +%s.%N) pre-backup-lock failed\" >> /var/vcap/sys/log/database/bbr-events.log\necho 'cannot quiesce' >&2\nexit 3\n";
    bed.install_script(database, "database", "pre-backup-lock", failing_lock)
        .unwrap();
    let work = workdir();
    let output = backup_into(&bed, work.path(), &[]);
    assert_eq!(output.status.code(), Some(4), "{}", text(&output));
    let all = text(&output);
    assert!(
        all.contains("Error attempting to run pre-backup-lock for job database on database/0"),
        "{all}"
    );
    assert!(
        all.contains("cannot quiesce"),
        "stderr of the script is shown: {all}"
    );
    for (host, job) in locking_jobs(&bed) {
        let unlocks: Vec<_> = bed
            .events(host, job)
            .into_iter()
            .filter(|e| e.1 == "post-backup-unlock")
            .collect();
        assert_eq!(
            unlocks.len(),
            1,
            "{job} on {}/{} unlocked once",
            host.group,
            host.index
        );
        assert_eq!(unlocks[0].2, "success=false");
    }
    assert_nothing_left(&bed);
    let backup = backup_dir(work.path());
    assert!(tars(&backup).is_empty(), "no artifact after a failed lock");
}

#[test]
fn failing_backup_script_leaves_no_complete_artifact() {
    cairn_testbed::require_root!();
    let bed = TestBed::start(&[]).expect("test bed");
    bed.install_script(bed.host("app", 1), "files", "backup", FAIL)
        .unwrap();
    let work = workdir();
    let output = backup_into(&bed, work.path(), &[]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert!(text(&output).contains("Error attempting to run backup for job files on app/1"));
    assert_nothing_left(&bed);
    let backup = backup_dir(work.path());
    assert!(tars(&backup).is_empty(), "tars left: {:?}", tars(&backup));
    let metadata = fs::read_to_string(backup.join("metadata")).unwrap();
    assert!(
        !metadata.contains("instances"),
        "metadata lists instances: {metadata}"
    );
    let restore = cairn(
        &bed,
        work.path(),
        &["restore", "-a", backup.to_str().unwrap()],
    );
    assert_eq!(restore.status.code(), Some(1));
    assert!(text(&restore).contains("incomplete"), "{}", text(&restore));
}

#[test]
fn existing_remote_artifact_directory_is_refused_and_left_alone() {
    cairn_testbed::require_root!();
    let bed = TestBed::start(&[]).expect("test bed");
    let app1 = bed.host("app", 1);
    let leftover = app1.vcap_dir.join("store/bbr-backup/files");
    fs::create_dir_all(&leftover).unwrap();
    fs::write(leftover.join("from-another-run"), b"x").unwrap();
    let work = workdir();
    let output = backup_into(&bed, work.path(), &[]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert!(text(&output)
        .contains("Directory /var/vcap/store/bbr-backup already exists on instance app/1"));
    assert!(
        leftover.join("from-another-run").exists(),
        "the other run's directory was touched"
    );
    assert_no_script_ran(&bed);
    let left: Vec<String> = fs::read_dir(work.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left.len(), 1, "only bbr's error log is written: {left:?}");
    assert!(
        left[0].starts_with("bbr-") && left[0].ends_with(".err.log"),
        "{left:?}"
    );
}

#[test]
fn a_lock_cycle_is_refused_before_any_lock() {
    cairn_testbed::require_root!();
    let bed = TestBed::start(&[]).expect("test bed");
    let cycle = "#!/bin/sh\ncat <<'YAML'\nbackup_should_be_locked_before:\n- job_name: app\n  release: app-release\nYAML\n";
    bed.install_script(bed.host("database", 0), "database", "metadata", cycle)
        .unwrap();
    let work = workdir();
    let output = backup_into(&bed, work.path(), &[]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert!(text(&output).contains("job locking dependency graph is cyclic"));
    assert_no_script_ran(&bed);
}

#[test]
fn a_tampered_artifact_is_refused_before_any_script_runs() {
    cairn_testbed::require_root!();
    let bed = TestBed::start(&[]).expect("test bed");
    let work = workdir();
    let output = backup_into(&bed, work.path(), &[]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let backup = backup_dir(work.path());
    let tar = backup.join("database-0-database.tar");
    let mut bytes = fs::read(&tar).unwrap();
    let content = bytes
        .iter()
        .position(|b| *b == b'\n')
        .expect("a text byte in the tar");
    bytes[content] = b'#';
    fs::write(&tar, bytes).unwrap();
    let events_before = script_counts(&bed);

    let output = cairn(
        &bed,
        work.path(),
        &["restore", "-a", backup.to_str().unwrap()],
    );
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert!(
        text(&output).contains("Backup is corrupted, checksum failed for database-0-database.tar"),
        "{}",
        text(&output)
    );
    let events_after = script_counts(&bed);
    assert_eq!(
        events_before, events_after,
        "a script ran during a refused restore"
    );
    assert_nothing_left(&bed);
}

/// Starts a backup whose `files` backup script on app/0 hangs, and returns once that script
/// runs (every job is then locked), with the script the test bed shipped.
fn backup_stuck_in_backup_script(bed: &TestBed, work: &Path) -> (std::process::Child, String) {
    let app0 = bed.host("app", 0);
    let original = fs::read_to_string(app0.vcap_dir.join("jobs/files/bin/bbr/backup")).unwrap();
    let slow = "#!/bin/sh\ntouch /var/vcap/sys/run/slow-backup-started\nsleep 60\n";
    bed.install_script(app0, "files", "backup", slow).unwrap();
    let inventory = bed.inventory();
    let child = cairn_command_in(work)
        .args([
            "deployment",
            "--inventory",
            inventory.to_str().unwrap(),
            "backup",
            "-a",
            work.to_str().unwrap(),
        ])
        .spawn()
        .unwrap();
    let started = app0.vcap_dir.join("sys/run/slow-backup-started");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !started.exists() {
        assert!(Instant::now() < deadline, "the backup script never started");
        std::thread::sleep(Duration::from_millis(100));
    }
    for (host, job) in locking_jobs(bed) {
        assert!(
            bed.is_locked(host, job),
            "{job} on {}/{} should be locked mid-backup",
            host.group,
            host.index
        );
    }
    (child, original)
}

#[test]
fn sigterm_during_backup_unlocks_and_removes_everything() {
    cairn_testbed::require_root!();
    let bed = TestBed::start(&[]).expect("test bed");
    let work = workdir();
    let (mut child, _) = backup_stuck_in_backup_script(&bed, work.path());
    let pid = child.id().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let status = child.wait().unwrap();
    assert_ne!(status.code(), Some(0), "an interrupted backup must fail");
    assert_nothing_left(&bed);
    for (host, job) in locking_jobs(&bed) {
        let last = bed.events(host, job).last().cloned().unwrap();
        assert_eq!(
            (last.1.as_str(), last.2.as_str()),
            ("post-backup-unlock", "success=false")
        );
    }
    assert!(tars(&backup_dir(work.path())).is_empty());
}

#[test]
fn backup_cleanup_unlocks_every_job_and_removes_leftovers() {
    cairn_testbed::require_root!();
    let bed = TestBed::start(&[]).expect("test bed");
    let leftover = bed
        .host("database", 0)
        .vcap_dir
        .join("store/bbr-backup/database");
    fs::create_dir_all(&leftover).unwrap();
    let work = workdir();
    let output = cairn(&bed, work.path(), &["backup-cleanup"]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert!(text(&output).contains("'testbed' cleaned up"));
    assert_nothing_left(&bed);
    for (host, job) in locking_jobs(&bed) {
        let events = bed.events(host, job);
        assert_eq!(events.len(), 1);
        assert_eq!(
            (events[0].1.as_str(), events[0].2.as_str()),
            ("post-backup-unlock", "success=false")
        );
    }
}

#[test]
fn a_hanging_lock_script_is_ended_by_the_script_timeout() {
    cairn_testbed::require_root!();
    let bed = TestBed::start(&[]).expect("test bed");
    // The sleeping child must end too, not only the script's shell.
    let hang = "#!/bin/sh\nsleep 600 &\necho $! > /var/vcap/sys/run/hang.pid\nwait\n";
    bed.install_script(bed.host("database", 0), "database", "pre-backup-lock", hang)
        .unwrap();
    let work = workdir();
    let started = Instant::now();
    let output = backup_into(&bed, work.path(), &["--script-timeout", "3s"]);
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "the timeout did not end the script"
    );
    assert_eq!(output.status.code(), Some(4), "{}", text(&output));
    assert!(
        text(&output).contains(
            "pre-backup-lock for job database on database/0: it did not finish within 3 s"
        ),
        "{}",
        text(&output)
    );
    assert_nothing_left(&bed);
    for (host, job) in locking_jobs(&bed) {
        let unlocks: Vec<_> = bed
            .events(host, job)
            .into_iter()
            .filter(|e| e.1 == "post-backup-unlock")
            .collect();
        assert_eq!(
            unlocks.len(),
            1,
            "{job} on {}/{} unlocked",
            host.group,
            host.index
        );
    }
    let pid =
        fs::read_to_string(bed.host("database", 0).vcap_dir.join("sys/run/hang.pid")).unwrap();
    let state = fs::read_to_string(format!("/proc/{}/stat", pid.trim())).unwrap_or_default();
    let alive = state.split_whitespace().nth(2).is_some_and(|s| s != "Z");
    assert!(
        !alive,
        "the timed-out script's child is still running: {state}"
    );
}

/// A tar entry with raw header fields (the tar crate's builder refuses hostile names).
fn raw_entry(
    builder: &mut tar::Builder<Vec<u8>>,
    name: &str,
    kind: tar::EntryType,
    link: &str,
    data: &[u8],
) {
    let mut header = tar::Header::new_gnu();
    header.set_size(data.len() as u64);
    header.set_mode(0o644);
    header.set_entry_type(kind);
    header.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
    header.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
    header.set_cksum();
    builder.append(&header, data).unwrap();
}

#[test]
fn hostile_tar_entries_are_refused_before_any_script_runs() {
    cairn_testbed::require_root!();
    let bed = TestBed::start(&[("database", 0, &["database"])]).expect("test bed");
    let cases: [(&str, tar::EntryType, &str); 3] = [
        ("./../../../../etc/cairn-evil", tar::EntryType::Regular, ""),
        ("/etc/cairn-evil", tar::EntryType::Regular, ""),
        ("./escape", tar::EntryType::Symlink, "../../../../etc"),
    ];
    for (name, kind, link) in cases {
        let work = workdir();
        let backup = work.path().join("testbed_20240102T030405Z");
        fs::create_dir(&backup).unwrap();
        let mut builder = tar::Builder::new(Vec::new());
        raw_entry(
            &mut builder,
            "./database.dump",
            tar::EntryType::Regular,
            "",
            b"ok",
        );
        raw_entry(&mut builder, name, kind, link, b"evil");
        fs::write(
            backup.join("database-0-database.tar"),
            builder.into_inner().unwrap(),
        )
        .unwrap();
        let mut checksums = format!(
            "      ./database.dump: {}\n",
            hex::encode(<sha2::Sha256 as sha2::Digest>::digest(b"ok"))
        );
        if kind == tar::EntryType::Regular {
            checksums.push_str(&format!(
                "      {name}: {}\n",
                hex::encode(<sha2::Sha256 as sha2::Digest>::digest(b"evil"))
            ));
        }
        let metadata = format!("instances:\n- name: database\n  index: \"0\"\n  artifacts:\n  - name: database\n    checksums:\n{checksums}");
        fs::write(backup.join("metadata"), metadata).unwrap();
        let output = cairn(
            &bed,
            work.path(),
            &["restore", "-a", backup.to_str().unwrap()],
        );
        assert_eq!(output.status.code(), Some(1), "{}", text(&output));
        assert!(
            text(&output).contains("unsafe tar entry"),
            "{name}: {}",
            text(&output)
        );
        assert_no_script_ran(&bed);
        assert!(!Path::new("/etc/cairn-evil").exists());
    }
}

#[test]
fn a_backup_killed_with_sigkill_is_undone_by_the_next_backup() {
    cairn_testbed::require_root!();
    let bed = TestBed::start(&[]).expect("test bed");
    let app0 = bed.host("app", 0);
    let work = workdir();
    let (mut child, original) = backup_stuck_in_backup_script(&bed, work.path());
    std::process::Command::new("kill")
        .args(["-KILL", &child.id().to_string()])
        .status()
        .unwrap();
    child.wait().unwrap();
    for (host, job) in locking_jobs(&bed) {
        assert!(
            bed.is_locked(host, job),
            "SIGKILL cannot unlock {job} on {}/{}",
            host.group,
            host.index
        );
    }
    assert!(app0.vcap_dir.join("store/bbr-backup").exists());

    bed.install_script(app0, "files", "backup", &original)
        .unwrap();
    // A new second, so the new backup directory's name differs from the killed run's.
    std::thread::sleep(Duration::from_millis(1100));
    let output = backup_into(&bed, work.path(), &[]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert!(
        text(&output).contains("Found the journal of an interrupted run"),
        "{}",
        text(&output)
    );
    assert!(
        text(&output).contains("Recovered: unlocked database on database/0"),
        "{}",
        text(&output)
    );
    assert_nothing_left(&bed);
    for (host, job) in locking_jobs(&bed) {
        let unlocks: Vec<String> = bed
            .events(host, job)
            .into_iter()
            .filter(|e| e.1 == "post-backup-unlock")
            .map(|e| e.2)
            .collect();
        assert_eq!(
            unlocks,
            vec!["success=false", "success=true"],
            "{job} on {}/{}",
            host.group,
            host.index
        );
    }
}
