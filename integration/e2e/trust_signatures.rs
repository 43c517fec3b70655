//! End-to-end: signed backups (`cairn keys generate`, `backup --signing-key`, `--trusted-key`
//! on restore, `backups verify`, `prune` and `delete`) against the real test bed, a `file://`
//! store and real S3 (moto): a signed backup restores with its key; a forged backup, a genuine
//! one copied under a newer id, a stranger's key and a store rolled back to before a backup
//! this machine saw are refused before any script runs; `backups verify` tells a gap that a
//! signed prune recorded from one nobody recorded; a drill signs its own backup.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;

use crate::common::*;
use cairn_testbed::TestBed;

const DEPLOYMENT: &str = "testbed";

/// A key pair written by `cairn keys generate`.
struct KeyPair {
    secret: PathBuf,
    public: PathBuf,
    /// The public key's text, as printed.
    text: String,
}

impl KeyPair {
    fn generate(work: &Path, name: &str) -> KeyPair {
        let prefix = work.join(name);
        let output = run(
            work,
            &["keys", "generate", "--out", prefix.to_str().unwrap()],
        );
        assert_eq!(output.status.code(), Some(0), "{}", text(&output));
        let secret = work.join(format!("{name}.key"));
        let public = work.join(format!("{name}.pub"));
        let mode = fs::metadata(&secret).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "the secret key is private");
        let printed = String::from_utf8_lossy(&output.stdout).trim().to_string();
        assert!(printed.starts_with("cairn-ed25519:"), "{printed}");
        assert_eq!(fs::read_to_string(&public).unwrap().trim(), printed);
        KeyPair {
            secret,
            public,
            text: printed,
        }
    }

    fn secret(&self) -> &str {
        self.secret.to_str().unwrap()
    }

    fn public(&self) -> &str {
        self.public.to_str().unwrap()
    }
}

/// A store and how a test with write access to it tampers with it.
enum Store {
    File(tempfile::TempDir),
    Moto(Emulator),
}

impl Store {
    fn url(&self) -> String {
        match self {
            Store::File(dir) => format!("file://{}", dir.path().display()),
            Store::Moto(moto) => format!(
                "s3://cairn-backups/nightly?endpoint={}&path_style=true&region=us-east-1",
                moto.endpoint
            ),
        }
    }

    /// How Cairn names the store in messages.
    fn name(&self) -> String {
        match self {
            Store::File(_) => self.url(),
            Store::Moto(_) => "s3://cairn-backups/nightly".into(),
        }
    }

    fn file() -> Store {
        Store::File(tempfile::tempdir().unwrap())
    }

    fn moto() -> Store {
        let moto = Emulator::start(Server::Moto);
        moto.fixture(&["create-bucket", "cairn-backups", "versioned"]);
        Store::Moto(moto)
    }

    /// Copies every object of backup `from` to `to`; with `rewrite`, the manifest's mentions
    /// of `from` become `to` (a forgery that names its new place); without `signature`, the
    /// copy has no signature object.
    fn copy_backup(&self, from: &str, to: &str, rewrite: bool, signature: bool) {
        match self {
            Store::File(dir) => {
                let root = dir.path().join(DEPLOYMENT);
                fs::create_dir_all(root.join(to)).unwrap();
                for entry in fs::read_dir(root.join(from)).unwrap().flatten() {
                    let name = entry.file_name().to_string_lossy().into_owned();
                    let mut bytes = fs::read(entry.path()).unwrap();
                    if rewrite && name == "manifest.json" {
                        bytes = String::from_utf8(bytes)
                            .unwrap()
                            .replace(from, to)
                            .into_bytes();
                    }
                    if signature || name != "signature.json" {
                        fs::write(root.join(to).join(&name), bytes).unwrap();
                    }
                }
            }
            Store::Moto(moto) => {
                let prefix = |id: &str| format!("nightly/{DEPLOYMENT}/{id}/");
                let mut args = vec![
                    "copy".to_string(),
                    "cairn-backups".into(),
                    prefix(from),
                    prefix(to),
                ];
                if rewrite {
                    args.extend([from.to_string(), to.to_string()]);
                }
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                moto.fixture(&args);
                if !signature {
                    moto.fixture(&[
                        "delete",
                        "cairn-backups",
                        &format!("{}signature.json", prefix(to)),
                    ]);
                }
            }
        }
    }

    /// Deletes every object (and version) of a backup behind Cairn's back.
    fn delete_backup(&self, id: &str) {
        match self {
            Store::File(dir) => fs::remove_dir_all(dir.path().join(DEPLOYMENT).join(id)).unwrap(),
            Store::Moto(moto) => {
                moto.fixture(&[
                    "delete",
                    "cairn-backups",
                    &format!("nightly/{DEPLOYMENT}/{id}/"),
                ]);
            }
        }
    }
}

/// Takes a backup signed with `key`; returns its id (a second later than any before).
fn signed_backup(bed: &TestBed, work: &Path, store: &str, key: &KeyPair) -> String {
    let before = listed(work, store);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let output = cairn(
        bed,
        work,
        &["backup", "--store", store, "--signing-key", key.secret()],
    );
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let new: Vec<String> = listed(work, store)
        .into_iter()
        .filter(|id| !before.contains(id))
        .collect();
    assert_eq!(new.len(), 1, "{new:?}");
    new[0].clone()
}

/// Complete backup ids of the deployment, oldest first.
fn listed(work: &Path, store: &str) -> Vec<String> {
    let output = run(
        work,
        &[
            "backups", "--store", store, "list", "-d", DEPLOYMENT, "--json",
        ],
    );
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap())
        .filter(|b| b["complete"].as_bool() == Some(true))
        .map(|b| b["id"].as_str().unwrap().to_string())
        .collect()
}

/// The id one second after `id`.
fn next_second(id: &str) -> String {
    let time = chrono::NaiveDateTime::parse_from_str(id, "%Y%m%dT%H%M%SZ").unwrap();
    (time + chrono::Duration::seconds(1))
        .format("%Y%m%dT%H%M%SZ")
        .to_string()
}

/// `restore --latest` (or `--backup ID`) with `--trusted-key`s.
fn restore(bed: &TestBed, work: &Path, store: &str, backup: Option<&str>, keys: &[&str]) -> Output {
    let mut args = vec!["restore", "--store", store];
    match backup {
        Some(id) => args.extend(["--backup", id]),
        None => args.push("--latest"),
    }
    for key in keys {
        args.extend(["--trusted-key", key]);
    }
    cairn(bed, work, &args)
}

/// Asserts a restore was refused with `expected` in its output and no script ran.
fn assert_refused_before_any_script(bed: &TestBed, output: &Output, expected: &str) {
    let all = text(output);
    assert_eq!(output.status.code(), Some(1), "{all}");
    assert!(all.contains(expected), "`{expected}` not in: {all}");
    assert_no_script_ran(bed);
}

/// What the `file://` and S3 tests share: a signed backup restores with its key (inline or
/// from a file); a stranger's key, a forgery without a signature, a genuine backup copied under
/// a newer id and a rollback are refused before any script runs.
fn forgeries_and_rollback_are_refused(store: &Store) {
    let bed = TestBed::start(&[("database", 0, &["database"])]).expect("test bed");
    let work = workdir();
    let url = store.url();
    let key = KeyPair::generate(work.path(), "backup");
    let stranger = KeyPair::generate(work.path(), "stranger");
    let data = bed.host("database", 0).vcap_dir.join("store/database");
    let first = signed_backup(&bed, work.path(), &url, &key);
    let second = signed_backup(&bed, work.path(), &url, &key);
    let before = tree_digest(&data);

    // Genuine: restores with the key given inline.
    write_pseudo_random(&data.join("damage.bin"), 4096);
    let output = restore(&bed, work.path(), &url, None, &[&key.text]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert_eq!(tree_digest(&data), before, "the newest backup was restored");
    forget_script_events(&bed);

    // A stranger's key.
    let output = restore(&bed, work.path(), &url, Some(&second), &[stranger.public()]);
    assert_refused_before_any_script(&bed, &output, "which is not one of the --trusted-key keys");

    // A forgery under a newer id: objects copied, manifest rewritten to name its place, no
    // signature (nobody else has the key).
    let forged = next_second(&second);
    store.copy_backup(&second, &forged, true, false);
    let output = restore(&bed, work.path(), &url, None, &[key.public()]);
    assert_refused_before_any_script(
        &bed,
        &output,
        &format!(
            "Backup {DEPLOYMENT}/{forged} in {} is not signed",
            store.name()
        ),
    );
    // Without --trusted-key: today's behaviour, and one line saying signatures go unchecked.
    let output = run(
        work.path(),
        &[
            "backups",
            "--store",
            &url,
            "verify",
            &format!("{DEPLOYMENT}/{forged}"),
        ],
    );
    let all = text(&output);
    assert!(
        all.contains("holds signed backups of testbed, but no --trusted-key was given"),
        "{all}"
    );
    store.delete_backup(&forged);

    // An old genuine backup copied, signature and all, under a newer id (finding 1).
    store.copy_backup(&first, &forged, false, true);
    let output = restore(&bed, work.path(), &url, None, &[key.public()]);
    assert_refused_before_any_script(
        &bed,
        &output,
        &format!("was signed as {DEPLOYMENT}/{first}: it was copied or moved"),
    );
    store.delete_backup(&forged);

    // Rollback: this machine saw `second` (it wrote it); the store loses it.
    store.delete_backup(&second);
    let output = restore(&bed, work.path(), &url, None, &[key.public()]);
    assert_refused_before_any_script(
        &bed,
        &output,
        &format!(
            "Rollback refused: the newest backup of {DEPLOYMENT} in {} is {first}, but this machine already saw {second}",
            store.name()
        ),
    );
    // A backup chosen by id still restores.
    let output = restore(&bed, work.path(), &url, Some(&first), &[key.public()]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert_nothing_left(&bed);
}

#[test]
fn file_store_signed_backups_restore_and_forgeries_and_rollback_are_refused() {
    cairn_testbed::require_root!();
    forgeries_and_rollback_are_refused(&Store::file());
}

#[test]
fn s3_signed_backups_restore_and_forgeries_and_rollback_are_refused() {
    cairn_testbed::require_root!();
    forgeries_and_rollback_are_refused(&Store::moto());
}

/// `backups verify --trusted-key` walks the chain: a backup pruned with `--signing-key` is a
/// recorded gap, one deleted without it a missing gap (exit 1); bbr directories are signed too.
#[test]
fn verify_tells_recorded_gaps_from_missing_ones_and_directories_are_signed() {
    cairn_testbed::require_root!();
    let bed = TestBed::start(&[("database", 0, &["database"])]).expect("test bed");
    let work = workdir();
    let store = Store::file();
    let url = store.url();
    let key = KeyPair::generate(work.path(), "backup");
    let ids: Vec<String> = (0..4)
        .map(|_| signed_backup(&bed, work.path(), &url, &key))
        .collect();
    let verify = |id: &str| {
        run(
            work.path(),
            &[
                "backups",
                "--store",
                &url,
                "verify",
                &format!("{DEPLOYMENT}/{id}"),
                "--trusted-key",
                key.public(),
            ],
        )
    };
    let output = verify(&ids[3]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert!(
        text(&output).contains("4 signed backups")
            && text(&output).contains("0 gaps pruned (recorded), 0 gaps missing"),
        "{}",
        text(&output)
    );
    // A prune that signs what it deletes (the oldest), then a delete that does not. A forged
    // unsigned backup newer than all of them is kept and takes no --keep-last slot.
    let forged = next_second(&ids[3]);
    store.copy_backup(&ids[3], &forged, true, false);
    let output = run(
        work.path(),
        &[
            "backups",
            "--store",
            &url,
            "prune",
            "-d",
            DEPLOYMENT,
            "--keep-last",
            "3",
            "--signing-key",
            key.secret(),
            "--trusted-key",
            key.public(),
        ],
    );
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let pruned = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        pruned.contains(&format!(
            "failed-verify {DEPLOYMENT}/{forged} (kept, inspect it: Backup {DEPLOYMENT}/{forged}"
        )),
        "{pruned}"
    );
    assert!(
        pruned.contains(&format!("delete {DEPLOYMENT}/{} ", ids[0])),
        "{pruned}"
    );
    assert!(
        pruned.contains(&format!("keep {DEPLOYMENT}/{} ", ids[1])),
        "{pruned}"
    );
    store.delete_backup(&forged);
    let output = run(
        work.path(),
        &[
            "backups",
            "--store",
            &url,
            "delete",
            &format!("{DEPLOYMENT}/{}", ids[2]),
        ],
    );
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let output = verify(&ids[3]);
    let all = text(&output);
    assert_eq!(output.status.code(), Some(1), "{all}");
    assert!(
        all.contains(&format!(
            "gap: {DEPLOYMENT}/{} (before {DEPLOYMENT}/{}): pruned, recorded in {DEPLOYMENT}/deletions/",
            ids[0], ids[1]
        )),
        "{all}"
    );
    assert!(
        all.contains(&format!(
            "gap: {DEPLOYMENT}/{} (before {DEPLOYMENT}/{}): missing: deleted with no signed record",
            ids[2], ids[3]
        )),
        "{all}"
    );
    assert!(
        all.contains(&format!("Backup {DEPLOYMENT}/{} is intact", ids[3])),
        "{all}"
    );
    // delete --trusted-key refuses a backup whose manifest is not signed; nothing is deleted.
    let unsigned = next_second(&ids[3]);
    store.copy_backup(&ids[3], &unsigned, true, false);
    let output = run(
        work.path(),
        &[
            "backups",
            "--store",
            &url,
            "delete",
            &format!("{DEPLOYMENT}/{unsigned}"),
            "--trusted-key",
            key.public(),
        ],
    );
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert!(text(&output).contains("is not signed"), "{}", text(&output));
    assert!(listed(work.path(), &url).contains(&unsigned));

    // A bbr directory backup: `metadata.sig` next to `metadata`, checked by verify and restore.
    let output = backup_into(&bed, work.path(), &["--signing-key", key.secret()]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let directory = backup_dir(work.path());
    assert!(directory.join("metadata.sig").is_file());
    let verify_directory = |keys: &[&str]| {
        let mut args = vec![
            "backups",
            "verify",
            "--artifact-path",
            directory.to_str().unwrap(),
        ];
        for key in keys {
            args.extend(["--trusted-key", key]);
        }
        run(work.path(), &args)
    };
    let output = verify_directory(&[key.public()]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert!(text(&output).contains("Signature of"), "{}", text(&output));
    let stranger = KeyPair::generate(work.path(), "stranger");
    let output = verify_directory(&[stranger.public()]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    forget_script_events(&bed);
    let output = cairn(
        &bed,
        work.path(),
        &[
            "restore",
            "--artifact-path",
            directory.to_str().unwrap(),
            "--trusted-key",
            stranger.public(),
        ],
    );
    assert_refused_before_any_script(&bed, &output, "which is not one of the --trusted-key keys");
    let output = cairn(
        &bed,
        work.path(),
        &[
            "restore",
            "--artifact-path",
            directory.to_str().unwrap(),
            "--trusted-key",
            key.public(),
        ],
    );
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
}

/// `cairn drill --signing-key` signs the drill's own backup, so a drill in a store of signed
/// backups does not leave an unsigned one that `--trusted-key` commands refuse; with
/// `--latest` (no backup taken) the flag is refused before anything runs.
#[test]
fn a_drill_signs_its_own_backup() {
    cairn_testbed::require_root!();
    let bed = TestBed::start(&[("database", 0, &["database"])]).expect("test bed");
    let work = workdir();
    let store = Store::file();
    let url = store.url();
    let key = KeyPair::generate(work.path(), "backup");
    let first = signed_backup(&bed, work.path(), &url, &key);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let inventory = bed.inventory();
    let inventory = inventory.to_str().unwrap();
    let drill = |extra: &[&str]| {
        let mut args = vec![
            "drill",
            "--target-inventory",
            inventory,
            "--store",
            &url,
            "--signing-key",
            key.secret(),
            "--report-dir",
            work.path().to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        run(work.path(), &args)
    };
    let output = drill(&["--source-inventory", inventory]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let ids = listed(work.path(), &url);
    assert_eq!(ids.len(), 2, "{ids:?}");
    assert_eq!(ids[0], first);
    let output = run(
        work.path(),
        &[
            "backups",
            "--store",
            &url,
            "verify",
            &format!("{DEPLOYMENT}/{}", ids[1]),
            "--trusted-key",
            key.public(),
        ],
    );
    let all = text(&output);
    assert_eq!(output.status.code(), Some(0), "{all}");
    assert!(all.contains("2 signed backups"), "{all}");
    let output = drill(&["--latest", DEPLOYMENT]);
    let all = text(&output);
    assert_eq!(output.status.code(), Some(1), "{all}");
    assert!(
        all.contains("--signing-key signs the drill's new backup"),
        "{all}"
    );
}
