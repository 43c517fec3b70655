//! End-to-end: what someone who can write to the store can no longer do (issue 17, findings
//! 1–3). Real backups from a test bed into `file://` and S3 (moto), then tampered with behind
//! Cairn's back:
//!
//! - an old genuine `manifest.json` copied to a newer id (a rollback) is refused by restore,
//!   `backups verify` and drills, marked by `backups list`, and a far-future copy is ignored by
//!   `--latest` and prune's rules;
//! - a manifest forged into an old backup to list the newest backup's objects makes neither
//!   prune nor `backups delete` delete them;
//! - an encrypted backup replaced by a plaintext one is refused by `restore --identity` unless
//!   `--allow-unencrypted`; `backup --require-encryption` without recipients never starts.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;

use crate::common::*;
use age::secrecy::ExposeSecret;
use cairn_testbed::TestBed;

const DEPLOYMENT: &str = "testbed";
const FUTURE_ID: &str = "20991231T235959Z";

/// One host with a locking job (`database`, to prove no script ran) and `files`, whose
/// `generation.txt` tells which backup a restore brought back.
fn bed() -> TestBed {
    TestBed::start(&[("app", 0, &["database", "files"])]).expect("test bed")
}

fn generation_file(bed: &TestBed) -> PathBuf {
    bed.host("app", 0)
        .vcap_dir
        .join("store/files/generation.txt")
}

fn set_generation(bed: &TestBed, generation: &str) {
    fs::write(generation_file(bed), generation).unwrap();
}

fn generation(bed: &TestBed) -> String {
    fs::read_to_string(generation_file(bed)).unwrap()
}

/// Takes a backup of generation `generation` into `store`; returns its id.
fn backup(bed: &TestBed, work: &Path, store: &str, generation: &str, flags: &[&str]) -> String {
    set_generation(bed, generation);
    let before = ids(work, store);
    let mut args = vec!["backup", "--store", store];
    args.extend_from_slice(flags);
    let output = cairn(bed, work, &args);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let new: Vec<String> = ids(work, store)
        .into_iter()
        .filter(|id| !before.contains(id))
        .collect();
    assert_eq!(new.len(), 1, "{new:?}");
    // Backup ids are seconds: the next one must not share this one's.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    new[0].clone()
}

/// `backups list` of the deployment: (id, state), oldest first.
fn listed(work: &Path, store: &str) -> Vec<(String, String)> {
    let output = run(
        work,
        &["backups", "--store", store, "list", "-d", DEPLOYMENT],
    );
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .skip(1)
        .map(|line| {
            let fields: Vec<&str> = line.split('\t').collect();
            let id = fields[0].strip_prefix("testbed/").unwrap().to_string();
            (id, fields[3].to_string())
        })
        .collect()
}

fn ids(work: &Path, store: &str) -> Vec<String> {
    listed(work, store).into_iter().map(|(id, _)| id).collect()
}

/// `backups ARGS...` against `store`: (exit code, stdout and stderr).
fn backups(work: &Path, store: &str, args: &[&str]) -> (Option<i32>, String) {
    let mut all = vec!["backups", "--store", store];
    all.extend_from_slice(args);
    let output = run(work, &all);
    (output.status.code(), text(&output))
}

/// `restore --store STORE ARGS...` against the bed: (exit code, stdout and stderr).
fn restore(bed: &TestBed, work: &Path, store: &str, args: &[&str]) -> (Option<i32>, String) {
    let mut all = vec!["restore", "--store", store];
    all.extend_from_slice(args);
    let output: Output = cairn(bed, work, &all);
    (output.status.code(), text(&output))
}

/// The stored manifest of `testbed/ID`, as JSON (`backups show --json`).
fn manifest(work: &Path, store: &str, id: &str) -> serde_json::Value {
    let output = run(
        work,
        &[
            "backups",
            "--store",
            store,
            "show",
            &format!("testbed/{id}"),
            "--json",
        ],
    );
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    serde_json::from_slice(&output.stdout).expect("manifest JSON")
}

/// A backup id `seconds` from now.
fn id_from_now(seconds: i64) -> String {
    (chrono::Utc::now() + chrono::Duration::seconds(seconds))
        .format("%Y%m%dT%H%M%SZ")
        .to_string()
}

/// An age key pair, the identity in a file (mode 0600).
fn age_key(dir: &Path) -> (String, PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let identity = age::x25519::Identity::generate();
    let file = dir.join("backup.key");
    fs::write(&file, format!("{}\n", identity.to_string().expose_secret())).unwrap();
    fs::set_permissions(&file, fs::Permissions::from_mode(0o600)).unwrap();
    (identity.to_public().to_string(), file)
}

/// In a `file://` store: replaces backup `to` by a copy of backup `from`, its manifest's
/// mentions of `from` rewritten — a consistent, placed backup, as anyone who can write to the
/// store can make one.
fn replace_backup(root: &Path, from: &str, to: &str) {
    let target = root.join(DEPLOYMENT).join(to);
    fs::remove_dir_all(&target).unwrap();
    fs::create_dir_all(&target).unwrap();
    for entry in fs::read_dir(root.join(DEPLOYMENT).join(from))
        .unwrap()
        .flatten()
    {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name == "manifest.json" {
            let manifest = fs::read_to_string(entry.path()).unwrap();
            fs::write(target.join(&name), manifest.replace(from, to)).unwrap();
        } else {
            fs::copy(entry.path(), target.join(&name)).unwrap();
        }
    }
}

/// Copies the genuine `manifest.json` of `from` to `to`, unchanged (a rollback).
fn copy_manifest(root: &Path, from: &str, to: &str) {
    let target = root.join(DEPLOYMENT).join(to);
    fs::create_dir_all(&target).unwrap();
    fs::copy(
        root.join(DEPLOYMENT).join(from).join("manifest.json"),
        target.join("manifest.json"),
    )
    .unwrap();
}

#[test]
fn file_store_rollbacks_are_refused_future_ids_ignored_and_downgrades_need_consent() {
    cairn_testbed::require_root!();
    let bed = bed();
    let work = workdir();
    let store_dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}", store_dir.path().display());
    let root = store_dir.path();

    // --require-encryption with no recipient never starts (flag or config file).
    forget_script_events(&bed);
    let config = work.root().join("cairn.toml");
    fs::write(&config, "require_encryption = true\n").unwrap();
    for extra in [
        &["--require-encryption"][..],
        &["--config", config.to_str().unwrap()][..],
    ] {
        let mut args = vec!["backup", "--store", &url];
        args.extend_from_slice(extra);
        let output = cairn(&bed, work.path(), &args);
        assert_eq!(output.status.code(), Some(1), "{}", text(&output));
        assert!(
            text(&output).contains(
                "--require-encryption: no recipient to encrypt to; give --encrypt-to age1..."
            ),
            "{}",
            text(&output)
        );
    }
    assert_no_script_ran(&bed);
    assert!(ids(work.path(), &url).is_empty());

    let first = backup(&bed, work.path(), &url, "1", &[]);
    let second = backup(&bed, work.path(), &url, "2", &[]);

    // A rollback: the first backup's genuine manifest, copied to a newer id.
    let rolled = id_from_now(60);
    copy_manifest(root, &first, &rolled);
    let states = listed(work.path(), &url);
    assert_eq!(
        states,
        [
            (first.clone(), "complete".to_string()),
            (second.clone(), "complete".to_string()),
            (rolled.clone(), "misplaced".to_string()),
        ]
    );
    forget_script_events(&bed);
    let misplaced = format!(
        "Backup `testbed/{rolled}` in {url} is misplaced: its manifest names backup id `{first}`, but it is stored as `{rolled}`"
    );
    let (code, output) = restore(&bed, work.path(), &url, &["--latest"]);
    assert_eq!(code, Some(1), "{output}");
    assert!(output.contains(&misplaced), "{output}");
    assert_no_script_ran(&bed);
    assert_nothing_left(&bed);
    let (code, output) = backups(work.path(), &url, &["verify", &format!("testbed/{rolled}")]);
    assert_eq!(code, Some(1), "{output}");
    assert!(output.contains(&misplaced), "{output}");
    let inventory = bed.inventory();
    let drill = run(
        work.path(),
        &[
            "drill",
            "--backup",
            &format!("testbed/{rolled}"),
            "--target-inventory",
            inventory.to_str().unwrap(),
            "--store",
            &url,
            "--report-dir",
            work.path().to_str().unwrap(),
        ],
    );
    assert_eq!(drill.status.code(), Some(1), "{}", text(&drill));
    assert!(text(&drill).contains(&misplaced), "{}", text(&drill));
    assert_no_script_ran(&bed);
    // Deleting the copy deletes nothing of the backup its manifest lists.
    let (code, output) = backups(work.path(), &url, &["delete", &format!("testbed/{rolled}")]);
    assert_eq!(code, Some(0), "{output}");
    assert!(output.contains("not deleted: `testbed/"), "{output}");
    let (code, output) = backups(work.path(), &url, &["verify", &format!("testbed/{first}")]);
    assert_eq!(code, Some(0), "{output}");

    // The same copy far in the future: --latest passes over it, with a warning.
    copy_manifest(root, &first, FUTURE_ID);
    set_generation(&bed, "changed since");
    let (code, output) = restore(&bed, work.path(), &url, &["--latest"]);
    assert_eq!(code, Some(0), "{output}");
    assert!(
        output.contains(&format!(
            "Ignoring backup testbed/{FUTURE_ID}: its id is more than 10 minutes in the future"
        )),
        "{output}"
    );
    assert_eq!(
        generation(&bed),
        "2",
        "the newest genuine backup was restored"
    );
    let (code, output) = restore(&bed, work.path(), &url, &["--backup", FUTURE_ID]);
    assert_eq!(code, Some(1), "{output}");
    assert!(output.contains("is misplaced"), "{output}");
    // Prune counts it in no rule: keep-last 1 keeps the newest genuine backup (on main, the
    // copy took the slot and "newest verified", and both genuine backups were deleted).
    let (code, output) = backups(
        work.path(),
        &url,
        &["prune", "-d", DEPLOYMENT, "--keep-last", "1"],
    );
    assert_eq!(code, Some(0), "{output}");
    assert!(
        output.contains(&format!(
            "keep testbed/{FUTURE_ID} (id in the future, ignored by every rule)"
        )),
        "{output}"
    );
    assert!(
        output.contains(&format!("keep testbed/{second} (last, newest verified)")),
        "{output}"
    );
    assert!(
        output.contains(&format!("delete testbed/{first} (no rule keeps it")),
        "{output}"
    );
    let (code, output) = backups(work.path(), &url, &["verify", &format!("testbed/{second}")]);
    assert_eq!(code, Some(0), "{output}");

    // A downgrade: an encrypted backup replaced by a plaintext one.
    let (recipient, identity) = age_key(work.root());
    let identity = identity.to_str().unwrap();
    let encrypted = backup(
        &bed,
        work.path(),
        &url,
        "3",
        &["--encrypt-to", &recipient, "--require-encryption"],
    );
    assert!(manifest(work.path(), &url, &encrypted)["artifacts"][0]["encryption"].is_object());
    replace_backup(root, &second, &encrypted);
    forget_script_events(&bed);
    set_generation(&bed, "changed since");
    let (code, output) = restore(
        &bed,
        work.path(),
        &url,
        &["--backup", &encrypted, "--identity", identity],
    );
    assert_eq!(code, Some(1), "{output}");
    assert!(
        output.contains(&format!("Backup testbed/{encrypted} in {url} is not encrypted (no artifact is encrypted), but --identity was given")),
        "{output}"
    );
    assert!(output.contains("pass --allow-unencrypted"), "{output}");
    assert_no_script_ran(&bed);
    assert_eq!(generation(&bed), "changed since");
    let (code, output) = restore(
        &bed,
        work.path(),
        &url,
        &[
            "--backup",
            &encrypted,
            "--identity",
            identity,
            "--allow-unencrypted",
        ],
    );
    assert_eq!(code, Some(0), "{output}");
    assert_eq!(
        generation(&bed),
        "2",
        "the plaintext backup, accepted explicitly"
    );
    assert_nothing_left(&bed);
}

/// How Cairn names the store of [`moto`]'s URL in messages.
const S3_STORE: &str = "s3://cairn-backups/nightly";

/// moto with a versioned bucket; the store URL (prefix `nightly`).
fn moto() -> (Emulator, String) {
    let moto = Emulator::start(Server::Moto);
    moto.fixture(&["create-bucket", "cairn-backups", "versioned"]);
    let url = format!(
        "s3://cairn-backups/nightly?endpoint={}&path_style=true&region=us-east-1",
        moto.endpoint
    );
    (moto, url)
}

/// Every (key, version id) of the bucket under `nightly/testbed/ID/`.
fn versions(moto: &Emulator, id: &str) -> Vec<String> {
    let mut versions: Vec<String> = moto
        .fixture(&[
            "versions",
            "cairn-backups",
            &format!("nightly/testbed/{id}/"),
        ])
        .lines()
        .map(str::to_string)
        .collect();
    versions.sort();
    versions
}

/// Writes `manifest` as `nightly/testbed/ID/manifest.json`, behind Cairn's back.
fn put_manifest(moto: &Emulator, work: &Path, id: &str, manifest: &serde_json::Value) {
    let file = work.join(format!("forged-{id}.json"));
    fs::write(&file, serde_json::to_vec_pretty(manifest).unwrap()).unwrap();
    moto.fixture(&[
        "put-file",
        "cairn-backups",
        &format!("nightly/testbed/{id}/manifest.json"),
        file.to_str().unwrap(),
    ]);
}

#[test]
fn s3_a_forged_manifest_makes_neither_prune_nor_delete_destroy_another_backup() {
    cairn_testbed::require_root!();
    let (moto, bed) = std::thread::scope(|scope| {
        let moto = scope.spawn(moto);
        let bed = scope.spawn(bed);
        (moto.join().unwrap(), bed.join().unwrap())
    });
    let (moto, url) = moto;
    let work = workdir();
    let old = backup(&bed, work.path(), &url, "1", &[]);
    let newest = backup(&bed, work.path(), &url, "2", &[]);
    let newest_versions = versions(&moto, &newest);
    assert!(newest_versions.len() >= 4, "{newest_versions:?}");

    // The old backup's manifest, forged to list the newest backup's objects at their versions.
    let genuine_newest = manifest(work.path(), &url, &newest);
    let mut forged = manifest(work.path(), &url, &old);
    for artifact in forged["artifacts"].as_array_mut().unwrap() {
        let name = artifact["name"].clone();
        let target = genuine_newest["artifacts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["name"] == name)
            .unwrap();
        artifact["key"] = target["key"].clone();
        artifact["version"] = target["version"].clone();
        artifact["segments"] = target["segments"].clone();
    }
    forged["metadata"] = genuine_newest["metadata"].clone();
    put_manifest(&moto, work.path(), &old, &forged);
    assert_eq!(
        listed(work.path(), &url),
        [
            (old.clone(), "misplaced".to_string()),
            (newest.clone(), "complete".to_string())
        ]
    );

    // Prune keeps the forged backup and deletes nothing (on main it deleted every version
    // the forged manifest lists: the newest backup's).
    let (code, output) = backups(
        work.path(),
        &url,
        &["prune", "-d", DEPLOYMENT, "--keep-last", "1"],
    );
    assert_eq!(code, Some(1), "{output}");
    assert!(
        output.contains(&format!(
            "misplaced testbed/{old} (kept, inspect it: Backup `testbed/{old}` in {S3_STORE} is misplaced: its manifest lists artifact app-0-"
        )) && output.contains(&format!("`testbed/{newest}/app-0-")),
        "{output}"
    );
    assert!(output.contains("1 misplaced and kept"), "{output}");
    assert_eq!(versions(&moto, &newest), newest_versions);
    assert_eq!(ids(work.path(), &url), [old.clone(), newest.clone()]);

    // backups delete removes the forged backup's own objects, and nothing of the newest.
    let (code, output) = backups(work.path(), &url, &["delete", &format!("testbed/{old}")]);
    assert_eq!(code, Some(0), "{output}");
    assert!(
        output.contains(&format!("not deleted: `testbed/{newest}/metadata`")),
        "{output}"
    );
    assert_eq!(versions(&moto, &newest), newest_versions);
    assert_eq!(ids(work.path(), &url), std::slice::from_ref(&newest));
    let (code, output) = backups(work.path(), &url, &["verify", &format!("testbed/{newest}")]);
    assert_eq!(code, Some(0), "{output}");

    // A rollback on S3: the newest genuine manifest, copied far into the future. --latest
    // passes over it and restores the newest genuine backup; named, it is refused.
    put_manifest(&moto, work.path(), FUTURE_ID, &genuine_newest);
    set_generation(&bed, "changed since");
    let (code, output) = restore(&bed, work.path(), &url, &["--backup", FUTURE_ID]);
    assert_eq!(code, Some(1), "{output}");
    assert!(
        output.contains(&format!("Backup `testbed/{FUTURE_ID}` in {S3_STORE} is misplaced: its manifest names backup id `{newest}`")),
        "{output}"
    );
    let (code, output) = restore(&bed, work.path(), &url, &["--latest"]);
    assert_eq!(code, Some(0), "{output}");
    assert!(
        output.contains(&format!("Ignoring backup testbed/{FUTURE_ID}")),
        "{output}"
    );
    assert_eq!(generation(&bed), "2");
    assert_nothing_left(&bed);
}
