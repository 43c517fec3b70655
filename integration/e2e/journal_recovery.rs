//! End-to-end: the run journal of restores, clean-ups and deployment mode's temporary users
//! (issue 19, item 1). The real `cairn` binary is SIGKILLed mid-run; the next command against
//! the same deployment must undo exactly what the dead run left and say so. Also: a journal
//! that cannot be written refuses the run before any lock, and a journal whose PID is alive
//! but belongs to another process (another start time) is treated as dead.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

use crate::common::*;
use cairn_testbed::director::{DeploymentSpec, Director, DirectorOptions};
use cairn_testbed::{TestBed, TestHost};

const STARTED: &str = "sys/run/slow-script-started";

/// Replaces `job`'s `script` on `host` with one that marks its start and sleeps; returns the
/// original.
fn make_slow(bed: &TestBed, host: &TestHost, job: &str, script: &str) -> String {
    let path = host.vcap_dir.join(format!("jobs/{job}/bin/bbr/{script}"));
    let original = fs::read_to_string(path).unwrap();
    let _ = fs::remove_file(host.vcap_dir.join(STARTED));
    let slow = format!("#!/bin/sh\ntouch /var/vcap/{STARTED}\nsleep 60\n");
    bed.install_script(host, job, script, &slow).unwrap();
    original
}

/// Waits until the slow script of [`make_slow`] started, then SIGKILLs `child`.
fn kill_when_started(host: &TestHost, mut child: Child) {
    let started = host.vcap_dir.join(STARTED);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !started.exists() {
        assert!(Instant::now() < deadline, "the slow script never started");
        assert!(
            child.try_wait().unwrap().is_none(),
            "cairn ended before the slow script started"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Command::new("kill")
        .args(["-KILL", &child.id().to_string()])
        .status()
        .unwrap();
    child.wait().unwrap();
}

fn spawn(work: &Path, args: &[&str]) -> Child {
    cairn_command_in(work).args(args).spawn().unwrap()
}

fn inventory_args<'a>(inventory: &'a Path, args: &[&'a str]) -> Vec<&'a str> {
    let mut all = vec!["deployment", "--inventory", inventory.to_str().unwrap()];
    all.extend_from_slice(args);
    all
}

/// Script names each locking job ran, in order.
fn scripts_of(bed: &TestBed, host: &TestHost, job: &str) -> Vec<String> {
    bed.events(host, job).into_iter().map(|e| e.1).collect()
}

fn journal_files(work: &Path) -> Vec<PathBuf> {
    fs::read_dir(state_dir(work))
        .map(|entries| entries.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

fn assert_contains(output: &Output, needle: &str) {
    assert!(
        text(output).contains(needle),
        "no {needle:?} in:\n{}",
        text(output)
    );
}

#[test]
fn a_restore_killed_with_sigkill_is_undone_by_the_next_restore_and_by_restore_cleanup() {
    cairn_testbed::require_root!();
    let bed = TestBed::start(&[]).expect("test bed");
    let db = bed.host("database", 0);
    let work = workdir();
    let output = backup_into(&bed, work.path(), &[]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let backup = backup_dir(work.path());
    let inventory = bed.inventory();
    let restore_args = inventory_args(&inventory, &["restore", "-a", backup.to_str().unwrap()]);

    for next in ["restore", "restore-cleanup"] {
        let before: Vec<usize> = script_counts(&bed);
        let original = make_slow(&bed, db, "database", "restore");
        kill_when_started(db, spawn(work.path(), &restore_args));
        for (host, job) in locking_jobs(&bed) {
            assert!(bed.is_locked(host, job), "SIGKILL cannot unlock {job}");
            assert_eq!(
                scripts_of(&bed, host, job).last().map(String::as_str),
                Some("pre-restore-lock")
            );
        }
        assert!(db.vcap_dir.join("store/bbr-backup").exists());
        let journals = journal_files(work.path());
        assert_eq!(journals.len(), 1, "{journals:?}");
        let journal = fs::read_to_string(&journals[0]).unwrap();
        assert!(journal.contains("\"kind\": \"restore\""), "{journal}");
        assert!(journal.contains("\"lock\": \"restore\""), "{journal}");
        bed.install_script(db, "database", "restore", &original)
            .unwrap();
        if next == "restore" {
            // The catalog commands have no target to undo it on: they say what is left and
            // which command clears it, and change nothing.
            let store = work.root().join("empty-store");
            fs::create_dir_all(&store).unwrap();
            let url = format!("file://{}", store.display());
            let listed = run(
                work.path(),
                &[
                    "backups",
                    "--store",
                    &url,
                    "list",
                    "--deployment",
                    "testbed",
                ],
            );
            assert_eq!(listed.status.code(), Some(0), "{}", text(&listed));
            assert_contains(&listed, "warning: A killed run left: ");
            assert_contains(&listed, " job(s) locked for restore (app on app/0, ");
            assert_contains(&listed, "database on database/0)");
            assert_contains(
                &listed,
                "`cairn deployment --deployment testbed ... restore-cleanup` with the same target and store clears it",
            );
            assert_eq!(journal_files(work.path()).len(), 1);
            assert!(bed.is_locked(db, "database"));
        }

        let output = if next == "restore" {
            run(work.path(), &restore_args)
        } else {
            run(
                work.path(),
                &inventory_args(&inventory, &["restore-cleanup"]),
            )
        };
        assert_eq!(output.status.code(), Some(0), "{next}: {}", text(&output));
        assert_nothing_left(&bed);
        assert!(journal_files(work.path()).is_empty(), "{next}");
        if next == "restore" {
            assert_contains(
                &output,
                "Found the journal of an interrupted run: the restore of testbed",
            );
            assert_contains(
                &output,
                "Recovered: unlocked database on database/0 (post-restore-unlock)",
            );
            assert_contains(
                &output,
                "Recovered: removed /var/vcap/store/bbr-backup on database/0",
            );
        } else {
            assert_contains(
                &output,
                "The journal of an interrupted run (restore of testbed",
            );
            assert_contains(
                &output,
                "3 job(s) locked for restore (app on app/0, app on app/1, database on database/0)",
            );
        }
        // Each locking job: the killed run's lock, then the undo, with no backup unlock.
        for ((host, job), count) in locking_jobs(&bed).into_iter().zip(before) {
            let scripts = scripts_of(&bed, host, job);
            let expected: &[&str] = if next == "restore" {
                &[
                    "pre-restore-lock",
                    "post-restore-unlock",
                    "pre-restore-lock",
                    "post-restore-unlock",
                ]
            } else {
                &["pre-restore-lock", "post-restore-unlock"]
            };
            let new: Vec<&str> = scripts[count..]
                .iter()
                .map(String::as_str)
                .filter(|s| *s != "restore")
                .collect();
            assert_eq!(new, expected, "{next}: {job} on {}", host.name());
        }
    }
}

#[test]
fn an_unwritable_journal_refuses_the_run_before_any_lock_and_a_reused_pid_is_dead() {
    cairn_testbed::require_root!();
    let bed = TestBed::start(&[("database", 0, &["database"])]).expect("test bed");
    let db = bed.host("database", 0);
    let work = workdir();
    let inventory = bed.inventory();

    // CAIRN_STATE_DIR under a regular file: not even root can create it.
    let blocked = work.root().join("a-file");
    fs::write(&blocked, "").unwrap();
    let state = blocked.join("state");
    for args in [
        vec!["backup", "-a", work.path().to_str().unwrap()],
        vec!["backup-cleanup"],
    ] {
        let output = cairn_command_in(work.path())
            .env("CAIRN_STATE_DIR", &state)
            .args(inventory_args(&inventory, &args))
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(1), "{}", text(&output));
        let message = format!("Cannot write the run journal `{}", state.display());
        assert_contains(&output, &message);
        assert_contains(&output, "Nothing was locked or created");
        assert_contains(&output, "CAIRN_STATE_DIR");
        assert_no_script_ran(&bed);
    }

    // A journal whose PID is alive — a process of ours — with its real start time belongs to
    // a running run: left alone. With another start time the PID was reused: the run is dead.
    let mut other = Command::new("sleep").arg("60").spawn().unwrap();
    let start = process_start(other.id());
    let journal_path = state_dir(work.path()).join(format!("testbed.{}.journal.json", other.id()));
    let write_journal = |start: u64| {
        let journal = serde_json::json!({
            "format": 2, "kind": "backup", "deployment": "testbed", "pid": other.id(),
            "host": fs::read_to_string("/proc/sys/kernel/hostname").unwrap().trim(),
            "started_at": "2026-12-01T00:00:00Z", "process_start": start,
            "locked": [{"instance": "database/0", "job": "database", "lock": "backup"}],
            "artifact_roots": [], "ssh_users": []
        });
        fs::write(
            &journal_path,
            serde_json::to_string_pretty(&journal).unwrap(),
        )
        .unwrap();
    };
    write_journal(start);
    let output = run(
        work.path(),
        &inventory_args(&inventory, &["backup", "-a", work.path().to_str().unwrap()]),
    );
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert_contains(&output, "belongs to a run that may still be going");
    assert!(
        journal_path.exists(),
        "a running run's journal is left alone"
    );
    let unlocks_of = |bed: &TestBed| -> Vec<String> {
        bed.events(db, "database")
            .into_iter()
            .filter(|e| e.1 == "post-backup-unlock")
            .map(|e| e.2)
            .collect()
    };
    assert_eq!(unlocks_of(&bed), vec!["success=true"]);

    write_journal(start + 1);
    std::thread::sleep(Duration::from_millis(1100));
    let output = run(
        work.path(),
        &inventory_args(&inventory, &["backup", "-a", work.path().to_str().unwrap()]),
    );
    other.kill().unwrap();
    other.wait().unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert_contains(
        &output,
        "Recovered: unlocked database on database/0 (post-backup-unlock)",
    );
    assert!(!journal_path.exists());
    assert_eq!(
        unlocks_of(&bed),
        vec!["success=true", "success=false", "success=true"]
    );
    assert_nothing_left(&bed);
}

/// Field 22 of `/proc/<pid>/stat`.
fn process_start(pid: u32) -> u64 {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let (_, rest) = stat.rsplit_once(") ").unwrap();
    rest.split_whitespace().nth(19).unwrap().parse().unwrap()
}

#[test]
fn a_temporary_user_left_by_a_sigkilled_run_is_removed_through_the_director() {
    cairn_testbed::require_root!();
    let bed = TestBed::start(&[("db", 0, &["database"]), ("app", 0, &["app"])]).expect("test bed");
    let db = bed.host("db", 0);
    let mut options = DirectorOptions::new(&bed);
    options.deployments.push(DeploymentSpec::new("cf", &bed));
    let director = Director::start(&options).expect("director");
    let work = workdir();
    let login = director_login(&director);
    let artifacts = work.path().to_str().unwrap().to_string();

    let original = make_slow(&bed, db, "database", "backup");
    let args = with_director_login(&login, &["-d", "cf", "backup", "-a", &artifacts]);
    kill_when_started(db, spawn(work.path(), &args));
    bed.install_script(db, "database", "backup", &original)
        .unwrap();
    let left: Vec<String> = bed
        .hosts()
        .iter()
        .flat_map(|h| director.bosh_users_on(h))
        .collect();
    assert_eq!(
        left.len(),
        2,
        "SIGKILL leaves the user on both hosts: {left:?}"
    );
    let user = left[0].clone();
    let journal = fs::read_to_string(&journal_files(work.path())[0]).unwrap();
    assert!(journal.contains(&user), "{journal}");
    assert!(journal.contains(&director.url()), "{journal}");

    // A read-only command reports it and names the command that clears it; changes nothing.
    let output = run(
        work.path(),
        &with_director_login(&login, &["-d", "cf", "pre-backup-check"]),
    );
    // The killed run's artifact directories fail the check, as with bbr.
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert_contains(
        &output,
        "Directory /var/vcap/store/bbr-backup already exists",
    );
    assert_contains(&output, &format!("SSH user {user} on "));
    assert_contains(&output, "-d cf backup-cleanup` clears it");
    assert!(!text(&output).contains(cairn_testbed::director::DEFAULT_CLIENT_SECRET));
    for host in bed.hosts() {
        assert_eq!(
            director.bosh_users_on(host),
            vec![user.clone()],
            "{}",
            host.name()
        );
    }

    // The next backup removes it through the Director, unlocks, and backs up.
    let output = run(
        work.path(),
        &with_director_login(&login, &["-d", "cf", "backup", "-a", &artifacts]),
    );
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert_contains(
        &output,
        &format!("Recovered: removed SSH user {user} from "),
    );
    assert_contains(&output, "Recovered: unlocked database on db/");
    for host in bed.hosts() {
        assert!(
            director.bosh_users_on(host).is_empty(),
            "{}: {:?}",
            host.name(),
            director.bosh_users_on(host)
        );
    }
    assert!(!cairn_testbed::director::bosh_accounts().contains(&user));
    assert_nothing_left(&bed);
    assert!(journal_files(work.path()).is_empty());
}

#[test]
fn a_drill_killed_during_its_restore_is_undone_by_restore_cleanup_of_the_drill_deployment() {
    cairn_testbed::require_root!();
    let layout: &[(&str, u32, &[&str])] = &[("database", 0, &["database"])];
    let (source, target) = std::thread::scope(|scope| {
        let source = scope.spawn(|| TestBed::start(layout).expect("source"));
        let target = scope.spawn(|| TestBed::start(layout).expect("target"));
        (source.join().unwrap(), target.join().unwrap())
    });
    let db = target.host("database", 0);
    let work = workdir();
    let original = make_slow(&target, db, "database", "restore");
    let (source_inventory, target_inventory) = (source.inventory(), target.inventory());
    let drill = spawn(
        work.path(),
        &[
            "drill",
            "--source-inventory",
            source_inventory.to_str().unwrap(),
            "--target-inventory",
            target_inventory.to_str().unwrap(),
            "--artifact-path",
            work.path().to_str().unwrap(),
            "--report-dir",
            work.path().to_str().unwrap(),
        ],
    );
    kill_when_started(db, drill);
    target
        .install_script(db, "database", "restore", &original)
        .unwrap();
    assert!(target.is_locked(db, "database"), "SIGKILL cannot unlock");
    assert_nothing_left(&source);
    let journals = journal_files(work.path());
    assert_eq!(journals.len(), 1, "{journals:?}");
    let journal = fs::read_to_string(&journals[0]).unwrap();
    assert!(journal.contains("\"kind\": \"drill\""), "{journal}");
    assert!(journal.contains("\"lock\": \"restore\""), "{journal}");
    assert!(journal.contains("\"database/0\""), "{journal}");

    let output = run(
        work.path(),
        &inventory_args(&target_inventory, &["restore-cleanup"]),
    );
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert_contains(
        &output,
        "The journal of an interrupted run (drill of testbed",
    );
    assert_nothing_left(&target);
    assert!(journal_files(work.path()).is_empty());
}
