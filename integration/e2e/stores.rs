//! End-to-end: backups streamed into an object store, restored from it, verified, and refused
//! when damaged. Runs against the local `file://` store here; the cloud adapters run the same
//! scenarios against their emulators (see `store_matrix`).

mod common;

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use cairn_testbed::TestBed;
use common::*;

fn list(work: &Path, store: &str) -> Vec<String> {
    let output = run(work, &["backups", "--store", store, "list"]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// Backup into `store`, damage the data, restore the latest backup, compare.
pub fn round_trip(store: &str) {
    let bed = TestBed::start(&[]).expect("test bed");
    let files = bed.host("app", 0).vcap_dir.join("store/files");
    fs::create_dir_all(files.join("a b/c")).unwrap();
    fs::write(files.join("a b/c/empty"), b"").unwrap();
    write_pseudo_random(&files.join("random.bin"), 24 * 1024 * 1024 + 3);
    fs::write(files.join("text.log"), "line of text\n".repeat(200_000)).unwrap();
    let before = tree_digest(&files);
    let work = workdir();

    let output = cairn(&bed, work.path(), &["backup", "--store", store]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert!(
        fs::read_dir(work.path()).unwrap().next().is_none(),
        "nothing is written to the working directory"
    );
    assert_nothing_left(&bed);
    let backups = list(work.path(), store);
    assert_eq!(backups.len(), 1, "{backups:?}");
    assert!(
        backups[0].starts_with("testbed/") && backups[0].ends_with("complete"),
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
pub fn damaged_backup_is_refused(store: &str, damage: impl Fn(&str)) {
    let bed = TestBed::start(&[
        ("database", 0, &["database"]),
        ("app", 0, &["app", "files"]),
    ])
    .expect("test bed");
    let work = workdir();
    let output = cairn(&bed, work.path(), &["backup", "--store", store]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let id = list(work.path(), store)[0]
        .split('\t')
        .next()
        .unwrap()
        .to_string();
    damage(&format!("{id}/app-0-files.tar.zst"));
    let verify = run(work.path(), &["backups", "--store", store, "verify", &id]);
    assert_ne!(verify.status.code(), Some(0));
    assert!(
        text(&verify).contains("app-0-files.tar.zst"),
        "{}",
        text(&verify)
    );
    let events_before: Vec<usize> = locking_jobs(&bed)
        .iter()
        .map(|(h, j)| bed.events(h, j).len())
        .collect();
    let output = cairn(
        &bed,
        work.path(),
        &["restore", "--store", store, "--backup", &id],
    );
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    let events_after: Vec<usize> = locking_jobs(&bed)
        .iter()
        .map(|(h, j)| bed.events(h, j).len())
        .collect();
    assert_eq!(
        events_before, events_after,
        "a script ran for a damaged backup"
    );
    assert_nothing_left(&bed);
}

/// SIGTERM while artifacts stream: no manifest, listed incomplete, removed by the next backup.
pub fn interrupted_backup_is_never_complete(store: &str) {
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
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_cairn"))
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
        .current_dir(work.path())
        .spawn()
        .unwrap();
    let backed_up = || bed.events(app, "files").iter().any(|e| e.1 == "backup");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !backed_up() {
        assert!(Instant::now() < deadline, "the backup script never ran");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        child.try_wait().unwrap().is_none(),
        "the transfer finished before the signal; slow it down"
    );
    std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let status = child.wait().unwrap();
    assert_ne!(status.code(), Some(0));
    assert_nothing_left(&bed);
    let backups = list(work.path(), store);
    assert!(
        backups.iter().all(|b| b.ends_with("incomplete")),
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
    assert!(backups[0].ends_with("\tcomplete"));
}

fn file_store() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}", dir.path().display());
    (dir, url)
}

#[test]
fn local_store_round_trip() {
    let (_dir, url) = file_store();
    round_trip(&url);
}

#[test]
fn local_store_damaged_backup_is_refused() {
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
    let (_dir, url) = file_store();
    interrupted_backup_is_never_complete(&url);
}
