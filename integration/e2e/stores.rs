//! End-to-end: backups streamed into an object store, restored from it, verified, and refused
//! when damaged — against the local `file://` store and real S3 (moto), Azure Blob (Azurite)
//! and GCS (fake-gcs-server) servers started by `integration/stores/*.sh`.

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::common::*;
use cairn_testbed::TestBed;

/// The data rows of `backups list` (its header row, when there are rows, checked and left out).
pub(crate) fn list(work: &Path, store: &str) -> Vec<String> {
    let output = run(work, &["backups", "--store", store, "list"]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let mut lines: Vec<String> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    if !lines.is_empty() {
        assert_eq!(lines.remove(0), "BACKUP\tTIME\tSIZE\tSTATE\tSIGNED");
    }
    lines
}

/// Backup into `store`, damage the data, restore the latest backup, compare.
pub(crate) fn round_trip(store: &str) {
    round_trip_with(store, &[]);
}

/// [`round_trip`] with more flags for the backup (`--allow-unversioned` for Azurite).
pub(crate) fn round_trip_with(store: &str, backup_flags: &[&str]) {
    let bed = TestBed::start(&[]).expect("test bed");
    let files = bed.host("app", 0).vcap_dir.join("store/files");
    fs::create_dir_all(files.join("a b/c")).unwrap();
    fs::write(files.join("a b/c/empty"), b"").unwrap();
    write_pseudo_random(&files.join("random.bin"), 24 * 1024 * 1024 + 3);
    fs::write(files.join("text.log"), "line of text\n".repeat(200_000)).unwrap();
    let before = tree_digest(&files);
    let work = workdir();

    let mut backup = vec!["backup", "--store", store];
    backup.extend_from_slice(backup_flags);
    let output = cairn(&bed, work.path(), &backup);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert!(
        fs::read_dir(work.path()).unwrap().next().is_none(),
        "nothing is written to the working directory"
    );
    assert_nothing_left(&bed);
    let backups = list(work.path(), store);
    assert_eq!(backups.len(), 1, "{backups:?}");
    assert!(
        backups[0].starts_with("testbed/") && backups[0].contains("\tcomplete\t"),
        "{backups:?}"
    );
    let id = backups[0].split('\t').next().unwrap().to_string();

    let verify = run(work.path(), &["backups", "--store", store, "verify", &id]);
    assert_eq!(verify.status.code(), Some(0), "{}", text(&verify));
    let show = run(
        work.path(),
        &["backups", "--store", store, "show", &id, "--json"],
    );
    let manifest: serde_json::Value = serde_json::from_slice(&show.stdout).expect("manifest JSON");
    assert_eq!(manifest["artifacts"].as_array().unwrap().len(), 5);
    assert!(manifest["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .all(|j| !j["locked_at"].is_null() && !j["unlocked_at"].is_null()));
    let files_artifact = manifest["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == "app-0-files")
        .unwrap();
    assert_eq!(
        files_artifact["files"]["./random.bin"]["size"],
        24 * 1024 * 1024 + 3
    );

    fs::remove_dir_all(files.join("a b")).unwrap();
    fs::write(files.join("random.bin"), b"overwritten").unwrap();
    let output = cairn(
        &bed,
        work.path(),
        &["restore", "--store", store, "--latest"],
    );
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert_eq!(tree_digest(&files), before);
    assert_nothing_left(&bed);
}

/// A deleted or damaged object makes verify and restore fail before any script runs.
pub(crate) fn damaged_backup_is_refused(store: &str, damage: impl Fn(&str)) {
    damaged_backup_is_refused_with(store, &[], damage);
}

/// [`damaged_backup_is_refused`] with more flags for the backup.
pub(crate) fn damaged_backup_is_refused_with(
    store: &str,
    backup_flags: &[&str],
    damage: impl Fn(&str),
) {
    let bed = TestBed::start(&[
        ("database", 0, &["database"]),
        ("app", 0, &["app", "files"]),
    ])
    .expect("test bed");
    let work = workdir();
    let mut backup = vec!["backup", "--store", store];
    backup.extend_from_slice(backup_flags);
    let output = cairn(&bed, work.path(), &backup);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let id = list(work.path(), store)[0]
        .split('\t')
        .next()
        .unwrap()
        .to_string();
    damage(&format!("{id}/app-0-files.tar.zst.000000"));
    let verify = run(work.path(), &["backups", "--store", store, "verify", &id]);
    assert_ne!(verify.status.code(), Some(0));
    assert!(
        text(&verify).contains("app-0-files.tar.zst"),
        "{}",
        text(&verify)
    );
    let events_before = script_counts(&bed);
    let output = cairn(
        &bed,
        work.path(),
        &["restore", "--store", store, "--backup", &id],
    );
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    let events_after = script_counts(&bed);
    assert_eq!(
        events_before, events_after,
        "a script ran for a damaged backup"
    );
    assert_nothing_left(&bed);
}

/// A signal while artifacts stream: no manifest, listed incomplete, removed by the next
/// backup. After SIGKILL (nothing can be cleaned up) `backup-cleanup` comes first, as with bbr.
/// `ready` is polled (after at least 3 s of transfer) until it says the moment to signal has come.
pub(crate) fn interrupted_backup_is_never_complete(
    store: &str,
    signal: &str,
    ready: &dyn Fn() -> bool,
    after_signal: &dyn Fn(),
) {
    let bed = TestBed::start(&[("database", 0, &["database"]), ("app", 0, &["files"])])
        .expect("test bed");
    let app = bed.host("app", 0);
    write_pseudo_random(&app.vcap_dir.join("store/files/big.bin"), 64 * 1024 * 1024);
    // 40 Mbit/s: the 64 MiB artifact takes ~13 s to cross the wire.
    let shaped = bed
        .exec(
            app,
            "tc qdisc add dev eth0 root tbf rate 40mbit burst 64kb latency 500ms",
        )
        .unwrap();
    assert!(
        shaped.status.success(),
        "{}",
        String::from_utf8_lossy(&shaped.stderr)
    );
    let work = workdir();
    let inventory = bed.inventory();
    let mut child = cairn_command_in(work.path())
        .args([
            "deployment",
            "--inventory",
            inventory.to_str().unwrap(),
            "backup",
            "--store",
            store,
            "--compression",
            "none",
        ])
        .spawn()
        .unwrap();
    let backed_up = || bed.events(app, "files").iter().any(|e| e.1 == "backup");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !backed_up() {
        assert!(Instant::now() < deadline, "the backup script never ran");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(3));
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ready() {
        assert!(Instant::now() < deadline, "the moment to signal never came");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        child.try_wait().unwrap().is_none(),
        "the transfer finished before the signal; slow it down"
    );
    std::process::Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .unwrap();
    let status = child.wait().unwrap();
    assert_ne!(status.code(), Some(0));
    after_signal();
    if signal == "-KILL" {
        let cleanup = cairn(&bed, work.path(), &["backup-cleanup"]);
        assert_eq!(cleanup.status.code(), Some(0), "{}", text(&cleanup));
    }
    assert_nothing_left(&bed);
    let backups = list(work.path(), store);
    assert!(
        backups.iter().all(|b| b.contains("\tincomplete\t")),
        "{backups:?}"
    );
    bed.exec(app, "tc qdisc del dev eth0 root").unwrap();

    let output = cairn(&bed, work.path(), &["backup", "--store", store]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let backups = list(work.path(), store);
    assert_eq!(
        backups.len(),
        1,
        "the incomplete backup was removed: {backups:?}"
    );
    assert!(backups[0].ends_with("\tcomplete\tunsigned"));
}

fn file_store() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}", dir.path().display());
    (dir, url)
}

#[test]
fn local_store_round_trip() {
    cairn_testbed::require_root!();
    let (_dir, url) = file_store();
    round_trip(&url);
}

#[test]
fn local_store_damaged_backup_is_refused() {
    cairn_testbed::require_root!();
    let (dir, url) = file_store();
    let root = dir.path().to_path_buf();
    damaged_backup_is_refused(&url, |key| {
        let path = root.join(key);
        let mut bytes = fs::read(&path).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0xff;
        fs::write(&path, bytes).unwrap();
    });
    let (dir, url) = file_store();
    let root = dir.path().to_path_buf();
    damaged_backup_is_refused(&url, |key| fs::remove_file(root.join(key)).unwrap());
}

#[test]
fn local_store_interrupted_backup_is_never_complete() {
    cairn_testbed::require_root!();
    let (_dir, url) = file_store();
    interrupted_backup_is_never_complete(&url, "-TERM", &|| true, &|| {});
}

#[test]
fn local_store_backup_interrupted_by_sigint_during_the_transfer_is_never_complete() {
    cairn_testbed::require_root!();
    let (_dir, url) = file_store();
    interrupted_backup_is_never_complete(&url, "-INT", &|| true, &|| {});
}

fn moto_with_bucket(versioning: &str) -> (Emulator, String) {
    let moto = Emulator::start(Server::Moto);
    moto.fixture(&["create-bucket", "cairn-backups", versioning]);
    let url = format!(
        "s3://cairn-backups/nightly?endpoint={}&path_style=true&region=us-east-1",
        moto.endpoint
    );
    (moto, url)
}

#[test]
fn s3_round_trip() {
    cairn_testbed::require_root!();
    let (_moto, url) = moto_with_bucket("versioned");
    round_trip(&url);
}

#[test]
fn s3_unversioned_bucket_is_refused_unless_allowed() {
    cairn_testbed::require_root!();
    let (_moto, url) = moto_with_bucket("unversioned");
    let bed = TestBed::start(&[("database", 0, &["database"])]).expect("test bed");
    let work = workdir();
    let output = cairn(&bed, work.path(), &["backup", "--store", &url]);
    assert_eq!(output.status.code(), Some(1));
    assert!(text(&output).contains("versioning is not enabled; enable it with `aws s3api put-bucket-versioning --bucket cairn-backups"), "{}", text(&output));
    for (host, job) in locking_jobs(&bed) {
        assert!(
            bed.events(host, job).is_empty(),
            "a job was locked for a refused store"
        );
    }
    let output = cairn(
        &bed,
        work.path(),
        &["backup", "--store", &url, "--allow-unversioned"],
    );
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
}

#[test]
fn s3_overwritten_object_does_not_change_what_is_restored() {
    cairn_testbed::require_root!();
    let (moto, url) = moto_with_bucket("versioned");
    overwritten_object_does_not_change_restore(&url, |key| {
        moto.fixture(&["put", "cairn-backups", &format!("nightly/{key}")]);
    });
}

#[test]
fn s3_deleted_object_is_refused() {
    cairn_testbed::require_root!();
    let (moto, url) = moto_with_bucket("versioned");
    damaged_backup_is_refused(&url, |key| {
        moto.fixture(&["delete", "cairn-backups", &format!("nightly/{key}")]);
    });
}

#[test]
fn s3_interrupted_backup_leaves_no_manifest_and_no_open_upload() {
    cairn_testbed::require_root!();
    let (moto, url) = moto_with_bucket("versioned");
    interrupted_backup_is_never_complete(&url, "-TERM", &|| true, &|| {});
    let open = moto.fixture(&["open-uploads", "cairn-backups"]);
    assert!(
        open.trim().is_empty(),
        "open multipart uploads left: {open}"
    );
}

#[test]
fn s3_killed_backup_is_cleaned_up_by_the_next_one() {
    cairn_testbed::require_root!();
    let (moto, url) = moto_with_bucket("versioned");
    // Kill once a multipart upload is open (at least one 8 MiB part on its way).
    let open_uploads = || moto.fixture(&["open-uploads", "cairn-backups"]);
    let upload_open = || !open_uploads().trim().is_empty();
    let still_open = || {
        assert!(
            upload_open(),
            "SIGKILL should leave the multipart upload open"
        );
    };
    interrupted_backup_is_never_complete(&url, "-KILL", &upload_open, &still_open);
    let open = moto.fixture(&["open-uploads", "cairn-backups"]);
    assert!(
        open.trim().is_empty(),
        "the next backup aborts what a killed one left open: {open}"
    );
}

#[test]
fn s3_retention_locks_every_object_of_the_backup() {
    cairn_testbed::require_root!();
    let (moto, url) = moto_with_bucket("locked");
    let bed = TestBed::start(&[("database", 0, &["database"])]).expect("test bed");
    let work = workdir();
    let output = cairn(
        &bed,
        work.path(),
        &[
            "backup",
            "--store",
            &url,
            "--retain-days",
            "2",
            "--retention-mode",
            "compliance",
        ],
    );
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let id = list(work.path(), &url)[0]
        .split('\t')
        .next()
        .unwrap()
        .to_string();
    for object in [
        "manifest.json",
        "metadata",
        "database-0-database.tar.zst.000000",
    ] {
        let lock = moto.fixture(&[
            "head-lock",
            "cairn-backups",
            &format!("nightly/{id}/{object}"),
        ]);
        assert!(
            lock.starts_with("COMPLIANCE "),
            "{object} is not locked: {lock}"
        );
    }
    // Without Object Lock on the bucket, retention is refused before anything is locked.
    let (_plain, plain_url) = moto_with_bucket("versioned");
    let output = cairn(
        &bed,
        work.path(),
        &["backup", "--store", &plain_url, "--retain-days", "2"],
    );
    assert_eq!(output.status.code(), Some(1));
    assert!(
        text(&output).contains("--retain-days needs Object Lock"),
        "{}",
        text(&output)
    );
}

#[test]
fn gcs_round_trip_and_generation_pinning() {
    cairn_testbed::require_root!();
    let gcs = Emulator::start(Server::FakeGcs);
    gcs.fixture(&["create-bucket", "cairn-backups", "versioned"]);
    let url = format!("gs://cairn-backups/nightly?endpoint={}", gcs.endpoint);
    round_trip(&url);
    let pinned = format!("gs://cairn-backups/pinned?endpoint={}", gcs.endpoint);
    overwritten_object_does_not_change_restore(&pinned, |key| {
        gcs.fixture(&["put", "cairn-backups", &format!("pinned/{key}")]);
    });
}

#[test]
fn azure_round_trip_and_damage() {
    cairn_testbed::require_root!();
    let azurite = Emulator::start(Server::Azurite);
    azurite.fixture(&["create-container", "cairn-backups"]);
    let url = format!(
        "az://devstoreaccount1/cairn-backups/nightly?endpoint={}",
        azurite.endpoint
    );
    // Azurite has no blob versioning (store_versioning.rs tests the refusal and the flag).
    round_trip_with(&url, &["--allow-unversioned"]);
    let damaged = format!(
        "az://devstoreaccount1/cairn-backups/damaged?endpoint={}",
        azurite.endpoint
    );
    damaged_backup_is_refused_with(&damaged, &["--allow-unversioned"], |key| {
        azurite.fixture(&["put", "cairn-backups", &format!("damaged/{key}")]);
    });
}

/// Overwrite an artifact after the backup: verify and restore still use the recorded version.
pub(crate) fn overwritten_object_does_not_change_restore(store: &str, overwrite: impl Fn(&str)) {
    let bed = TestBed::start(&[("app", 0, &["files"])]).expect("test bed");
    let files = bed.host("app", 0).vcap_dir.join("store/files");
    let before = tree_digest(&files);
    let work = workdir();
    let output = cairn(&bed, work.path(), &["backup", "--store", store]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let id = list(work.path(), store)[0]
        .split('\t')
        .next()
        .unwrap()
        .to_string();
    overwrite(&format!("{id}/app-0-files.tar.zst.000000"));
    let verify = run(work.path(), &["backups", "--store", store, "verify", &id]);
    assert_eq!(
        verify.status.code(),
        Some(0),
        "the recorded version is still intact: {}",
        text(&verify)
    );
    fs::remove_dir_all(&files).unwrap();
    fs::create_dir_all(&files).unwrap();
    let output = cairn(
        &bed,
        work.path(),
        &["restore", "--store", store, "--backup", &id],
    );
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert_eq!(tree_digest(&files), before);
}

#[test]
fn secrets_never_appear_in_output_even_with_debug() {
    cairn_testbed::require_root!();
    let (_moto, url) = moto_with_bucket("versioned");
    let bed = TestBed::start(&[("database", 0, &["database"])]).expect("test bed");
    let work = workdir();
    let secret = "sEcReT-0123456789-do-not-print";
    let inventory = bed.inventory();
    let runs: Vec<Vec<&str>> = vec![
        vec![
            "deployment",
            "--debug",
            "--inventory",
            inventory.to_str().unwrap(),
            "pre-backup-check",
            "--store",
            &url,
        ],
        vec![
            "deployment",
            "--debug",
            "--inventory",
            inventory.to_str().unwrap(),
            "backup",
            "--store",
            &url,
        ],
        vec![
            "deployment",
            "--debug",
            "--inventory",
            inventory.to_str().unwrap(),
            "--json",
            "restore",
            "--store",
            &url,
            "--latest",
        ],
        vec!["backups", "--debug", "--store", &url, "list"],
        vec!["config", "show"],
        vec![
            "deployment",
            "--debug",
            "-t",
            "10.0.0.6",
            "-u",
            "admin",
            "-p",
            secret,
            "-d",
            "cf",
            "backup",
        ],
    ];
    for args in runs {
        let output = cairn_command_in(work.path())
            .args(&args)
            .env("AWS_SECRET_ACCESS_KEY", secret)
            .env("BOSH_CLIENT_SECRET", secret)
            .env("AZURE_STORAGE_KEY", secret)
            .output()
            .unwrap();
        let all = text(&output);
        assert!(
            !all.contains(secret),
            "`cairn {}` printed a secret:\n{all}",
            args.join(" ")
        );
    }
}
