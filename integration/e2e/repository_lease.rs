//! End-to-end: the prune lease of a repository (`repo+file://`). A first `backups prune` is
//! held in its first delete (`strace` delays every `unlink`/`unlinkat` by 5 minutes, as the kill -9
//! matrix does), which comes after it took the lease; while it is held:
//! - a second prune is refused with one line naming the holder (`cairn backups prune`, its
//!   pid, this host, since when) and changes nothing;
//! - the real `restic` reads the lease as a restic lock (`restic list locks`, `restic cat
//!   lock`: exclusive) and refuses its own `check` because of it.
//!
//! The first prune is then SIGKILLed: its lease is left, stale (its process on this host is
//! gone), and the next prune removes it, says so and prunes. A lock restic holds (`restic
//! backup --stdin` waiting on its input) refuses a prune the same way, naming restic. Finally
//! restic lists the snapshots and checks the repository clean.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use cairn_testbed::TestBed;

use crate::common::*;
use crate::repository::{created_id, on_bed, password_file, repo, with_password};
use crate::repository_restic::restic;

/// The lock objects of a folder repository.
fn locks(root: &Path) -> Vec<PathBuf> {
    fs::read_dir(root.join("locks"))
        .map(|entries| entries.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

/// Waits until the repository has a lock object; panics if `child` ends first.
fn wait_for_lock(root: &Path, child: &mut Child, what: &str) -> PathBuf {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(lock) = locks(root).into_iter().next() {
            return lock;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} ended ({status}) before it took a lock");
        }
        assert!(Instant::now() < deadline, "{what} took no lock in 120 s");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn prune(work: &Path, password: &Path, url: &str) -> Output {
    with_password(
        work,
        password,
        &[
            "backups",
            "--store",
            url,
            "prune",
            "-d",
            "testbed",
            "--keep-last",
            "1",
        ],
    )
}

fn assert_said(output: &Output, needle: &str) {
    assert!(
        text(output).contains(needle),
        "no {needle:?} in:\n{}",
        text(output)
    );
}

#[test]
fn a_second_prune_is_refused_while_the_lease_is_held_and_a_dead_holder_s_lease_is_taken_over() {
    cairn_testbed::require_root!();
    let bed = TestBed::start(&[("app", 0, &["files"])]).expect("test bed");
    let files = bed.host("app", 0).vcap_dir.join("store/files");
    let work = workdir();
    let root = work.root().join("repo");
    fs::create_dir(&root).unwrap();
    let url = format!("repo+file://{}", root.display());
    let password = password_file(work.root(), "password", "correct horse", 0o600);
    created_id(&repo(work.path(), &["init"], &url, &password));
    for night in 1..=2 {
        fs::create_dir_all(&files).unwrap();
        write_pseudo_random(&files.join(format!("night-{night}.bin")), 1 << 20);
        std::thread::sleep(Duration::from_millis(1100));
        let output = on_bed(&bed, work.path(), &password, &["backup", "--store", &url]);
        assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    }

    // The first prune, held in its first delete (after it took the lease).
    let mut first = Command::new("strace")
        .args([
            "-f",
            "-qq",
            "-o",
            "/dev/null",
            "-e",
            "trace=unlink,unlinkat",
        ])
        .args(["-e", "inject=unlink,unlinkat:delay_enter=300000000"])
        .arg(env!("CARGO_BIN_EXE_cairn"))
        .args(["backups", "--store", &url, "prune", "-d", "testbed"])
        .args(["--keep-last", "1"])
        .envs(STORE_ENV)
        .env("CAIRN_STATE_DIR", state_dir(work.path()))
        .env("CAIRN_REPOSITORY_PASSWORD_FILE", &password)
        .current_dir(work.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("strace starts");
    let lease = wait_for_lock(&root, &mut first, "the first prune");
    let holder: u32 = fs::read_to_string(format!("/proc/{0}/task/{0}/children", first.id()))
        .unwrap()
        .split_whitespace()
        .next()
        .expect("strace's child, cairn")
        .parse()
        .unwrap();
    let host = fs::read_to_string("/proc/sys/kernel/hostname").unwrap();

    let second = prune(work.path(), &password, &url);
    assert_eq!(second.status.code(), Some(1), "{}", text(&second));
    assert_said(
        &second,
        &format!(
            "The repository {url} is locked by `cairn backups prune` (pid {holder} on {}, user ",
            host.trim()
        ),
    );
    assert_said(&second, "two prunes of one repository must not run at once");
    assert_eq!(
        locks(&root),
        std::slice::from_ref(&lease),
        "the refused prune left no lock"
    );

    // restic reads the lease as its own kind of lock, and honours it.
    let id = lease.file_name().unwrap().to_str().unwrap();
    let repository = root.to_str().unwrap();
    let listed = restic(
        work.path(),
        repository,
        &password,
        &["list", "locks", "--no-lock"],
    );
    assert_eq!(String::from_utf8_lossy(&listed.stdout).trim(), id);
    let shown = restic(
        work.path(),
        repository,
        &password,
        &["cat", "lock", id, "--no-lock"],
    );
    assert_eq!(shown.status.code(), Some(0), "{}", text(&shown));
    let shown: serde_json::Value = serde_json::from_slice(&shown.stdout).unwrap();
    assert_eq!(shown["exclusive"], true, "{shown}");
    assert_eq!(shown["pid"], holder, "{shown}");
    let refused = restic(work.path(), repository, &password, &["check"]);
    assert_ne!(refused.status.code(), Some(0), "{}", text(&refused));
    assert!(
        text(&refused).contains("locked exclusively"),
        "{}",
        text(&refused)
    );

    // The holder dies: its lease is stale at once on this host, and taken over.
    Command::new("kill")
        .args(["-9", &holder.to_string()])
        .status()
        .unwrap();
    // strace itself would sit out the injected delay.
    let _ = first.kill();
    first.wait().unwrap();
    assert_eq!(
        locks(&root),
        std::slice::from_ref(&lease),
        "SIGKILL leaves the lease"
    );
    let third = prune(work.path(), &password, &url);
    assert_eq!(third.status.code(), Some(0), "{}", text(&third));
    assert_said(
        &third,
        &format!("Removing the stale lock locks/{id} of `cairn backups prune` (pid {holder} on"),
    );
    assert!(locks(&root).is_empty(), "the prune released its lease");

    // A lock restic holds (a backup waiting for its input) refuses a prune, naming restic.
    let mut held = Command::new("restic")
        .args(["-r", repository, "--no-cache", "backup", "--stdin"])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", work.path())
        .env("RESTIC_PASSWORD_FILE", &password)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("restic runs");
    wait_for_lock(&root, &mut held, "restic backup --stdin");
    let fourth = prune(work.path(), &password, &url);
    assert_eq!(fourth.status.code(), Some(1), "{}", text(&fourth));
    assert_said(
        &fourth,
        &format!(
            "is locked by a restic lock (restic backup, check or another command) (pid {} on",
            held.id()
        ),
    );
    {
        use std::io::Write;
        let mut input = held.stdin.take().unwrap();
        input.write_all(b"restic's own data\n").unwrap();
    }
    assert!(held.wait().unwrap().success());

    // The restic CLI still reads the repository: Cairn's snapshots listed, the check clean.
    let snapshots = restic(
        work.path(),
        repository,
        &password,
        &["snapshots", "--json", "--tag", "cairn-kind=record"],
    );
    let snapshots: serde_json::Value = serde_json::from_slice(&snapshots.stdout).unwrap();
    assert_eq!(snapshots.as_array().unwrap().len(), 1, "{snapshots}");
    let checked = restic(work.path(), repository, &password, &["check"]);
    assert_eq!(checked.status.code(), Some(0), "{}", text(&checked));
}
