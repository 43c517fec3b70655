//! `cairn backups verify --artifact-path` on bbr directories, `--sample` coverage over many
//! runs, and `backup_one_restore_all` from an inventory (issue 24, items 3 and 5).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;

use cairn::format::bbr_directory::metadata::BackupMetadata;
use cairn_testbed::TestBed;
use sha2::{Digest, Sha256};

use crate::common::{
    backup_dir, backup_into, cairn, run, state_dir, tars, text, tree_digest, workdir,
};

const MARKER: &str = "cairn-verify-marker: a line that only the backed-up file holds";

/// `backups verify --artifact-path DIR [extra...]`.
fn verify_directory(work: &Path, backup: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "backups",
        "verify",
        "--artifact-path",
        backup.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    run(work, &args)
}

/// Flips one byte of the first occurrence of [`MARKER`] in `file`.
fn flip_marker(file: &Path) {
    let mut bytes = fs::read(file).unwrap();
    let at = bytes
        .windows(MARKER.len())
        .position(|w| w == MARKER.as_bytes())
        .unwrap_or_else(|| panic!("no marker in {}", file.display()));
    bytes[at + 3] ^= 0x20;
    fs::write(file, bytes).unwrap();
}

/// A test bed of two `files` instances holding [`MARKER`], backed up into a bbr directory.
fn backed_up_directory() -> (TestBed, crate::common::Workdir, PathBuf) {
    let bed = TestBed::start(&[("app", 0, &["files"]), ("app", 1, &["files"])]).expect("test bed");
    for host in bed.hosts() {
        fs::write(host.vcap_dir.join("store/files/marker"), MARKER).unwrap();
    }
    let work = workdir();
    let output = backup_into(&bed, work.path(), &[]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let backup = backup_dir(work.path());
    (bed, work, backup)
}

#[test]
fn a_flipped_byte_in_a_bbr_directory_is_found_with_the_exit_code_of_a_store() {
    cairn_testbed::require_root!();
    let (bed, work, backup) = backed_up_directory();
    let intact = verify_directory(work.path(), &backup, &[]);
    assert_eq!(intact.status.code(), Some(0), "{}", text(&intact));
    let said = String::from_utf8_lossy(&intact.stdout);
    assert!(
        said.starts_with(&format!(
            "Backup {} is intact: 2 artifacts, ",
            backup.display()
        )),
        "{said}"
    );
    flip_marker(&backup.join("app-1-files.tar"));
    let damaged = verify_directory(work.path(), &backup, &[]);
    let message = text(&damaged);
    assert!(
        message
            .contains("checksum failed for app-1-files.tar - checksums don't match for [./marker]"),
        "{message}"
    );
    assert!(!message.contains("app-0-files.tar"), "{message}");
    // The same damage in a store backup: the same exit code.
    let store_dir = workdir();
    let store = format!("file://{}", store_dir.path().display());
    let output = cairn(
        &bed,
        work.path(),
        &["backup", "--store", &store, "--compression", "none"],
    );
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let stored = fs::read_dir(store_dir.path().join("testbed"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.join("manifest.json").exists())
        .expect("a complete backup");
    let id = format!("testbed/{}", stored.file_name().unwrap().to_string_lossy());
    flip_marker(&stored.join("app-1-files.tar.000000"));
    let store_damaged = run(work.path(), &["backups", "--store", &store, "verify", &id]);
    assert_eq!(
        store_damaged.status.code(),
        Some(1),
        "{}",
        text(&store_damaged)
    );
    assert_eq!(damaged.status.code(), store_damaged.status.code());
}

#[test]
fn a_missing_tar_a_lost_metadata_entry_and_a_missing_directory_fail_verify() {
    cairn_testbed::require_root!();
    let (_bed, work, backup) = backed_up_directory();
    let tar = backup.join("app-0-files.tar");
    let kept = work.root().join("kept.tar");
    fs::rename(&tar, &kept).unwrap();
    let missing = verify_directory(work.path(), &backup, &[]);
    assert_eq!(missing.status.code(), Some(1), "{}", text(&missing));
    assert!(
        text(&missing).contains(&format!(
            "Error reading artifact file `{}`: no such file",
            tar.display()
        )),
        "{}",
        text(&missing)
    );
    fs::rename(&kept, &tar).unwrap();
    // `metadata` loses app-0's entry: its tar is there, but nothing says what it holds.
    let path = backup.join("metadata");
    let original = fs::read_to_string(&path).unwrap();
    let mut metadata = BackupMetadata::parse(&original).unwrap();
    metadata.instances.retain(|instance| instance.index != "0");
    fs::write(&path, metadata.to_yaml()).unwrap();
    let unlisted = verify_directory(work.path(), &backup, &[]);
    assert_eq!(unlisted.status.code(), Some(1), "{}", text(&unlisted));
    assert!(
        text(&unlisted).contains("app-0-files.tar` is not listed in `metadata`"),
        "{}",
        text(&unlisted)
    );
    // One file's checksum lost: that file no longer matches.
    let mut metadata = BackupMetadata::parse(&original).unwrap();
    metadata.instances[0].artifacts[0]
        .checksums
        .remove(b"./marker".as_slice());
    fs::write(&path, metadata.to_yaml()).unwrap();
    let lost = verify_directory(work.path(), &backup, &[]);
    assert_eq!(lost.status.code(), Some(1), "{}", text(&lost));
    assert!(
        text(&lost).contains("checksums don't match for [./marker]"),
        "{}",
        text(&lost)
    );
    fs::write(&path, &original).unwrap();
    let again = verify_directory(work.path(), &backup, &[]);
    assert_eq!(again.status.code(), Some(0), "{}", text(&again));
    let nowhere = verify_directory(work.path(), &work.path().join("no-such-backup"), &[]);
    assert_eq!(nowhere.status.code(), Some(1), "{}", text(&nowhere));
    assert!(
        text(&nowhere).contains("no such file or directory"),
        "{}",
        text(&nowhere)
    );
}

/// A bbr directory of `count` small artifacts (`g-<n>-job.tar`), written here without a test
/// bed: what is sampled is the files, not how they were made.
fn many_artifacts(parent: &Path, count: usize) -> PathBuf {
    let backup = parent.join("many_20261201T000000Z");
    fs::create_dir(&backup).unwrap();
    let mut metadata = BackupMetadata::default();
    for n in 0..count {
        let content = format!("artifact {n}\n").repeat(100 + n);
        let mut builder = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_size(content.len() as u64);
        header.set_mode(0o644);
        header.as_old_mut().name[..6].copy_from_slice(b"./data");
        header.set_cksum();
        builder.append(&header, content.as_bytes()).unwrap();
        fs::write(
            backup.join(format!("g-{n}-job.tar")),
            builder.into_inner().unwrap(),
        )
        .unwrap();
        let digest = hex::encode(Sha256::digest(content.as_bytes()));
        metadata.add_artifact(
            "g",
            &n.to_string(),
            "job",
            [("./data".into(), digest.into())].into(),
        );
    }
    fs::write(backup.join("metadata"), metadata.to_yaml()).unwrap();
    backup
}

/// The numbers of `verified K of N artifacts` in a sampled run's output.
fn verified_count(output: &Output) -> (usize, usize) {
    let said = String::from_utf8_lossy(&output.stdout);
    let rest = said
        .split("verified ")
        .nth(1)
        .unwrap_or_else(|| panic!("{said}"));
    let mut words = rest.split_whitespace();
    let checked = words.next().unwrap().parse().unwrap();
    assert_eq!(words.next(), Some("of"));
    (checked, words.next().unwrap().parse().unwrap())
}

#[test]
fn twenty_sampled_runs_at_5_percent_verify_every_artifact() {
    let work = workdir();
    let backup = many_artifacts(work.path(), 40);
    let mut seen = std::collections::BTreeSet::new();
    for run_number in 1..=20 {
        let output = verify_directory(work.path(), &backup, &["--sample", "5"]);
        assert_eq!(output.status.code(), Some(0), "{}", text(&output));
        assert_eq!(
            verified_count(&output),
            (2, 40),
            "run {run_number}: 5 % of 40"
        );
        let state = state_file(work.path());
        let state: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(state).unwrap()).unwrap();
        assert_eq!(state["runs"], run_number);
        let verified = state["verified"].as_object().unwrap();
        let this_run: Vec<&String> = verified
            .iter()
            .filter(|(_, v)| v["run"] == run_number)
            .map(|(name, _)| name)
            .collect();
        assert_eq!(this_run.len(), 2, "run {run_number}");
        for name in this_run {
            assert!(
                seen.insert(name.clone()),
                "{name} verified twice within 20 runs"
            );
        }
        let said = String::from_utf8_lossy(&output.stdout);
        if run_number == 19 {
            assert!(said.contains("Coverage: 38 of 40 artifacts verified at least once in the last 19 runs, 2 never verified"), "{said}");
        }
        if run_number == 20 {
            assert!(said.contains("Coverage: 40 of 40 artifacts verified at least once in the last 20 runs, oldest verification "), "{said}");
        }
    }
    assert_eq!(seen.len(), 40, "every artifact verified by run 20");
    // Run 21 starts the next round with the artifacts of run 1.
    let output = verify_directory(work.path(), &backup, &["--sample", "5"]);
    assert_eq!(verified_count(&output), (2, 40));
    // A damaged state file: a warning, and a fresh start.
    fs::write(state_file(work.path()), "{ not json").unwrap();
    let output = verify_directory(work.path(), &backup, &["--sample", "5"]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert!(text(&output).contains("starting over"), "{}", text(&output));
    assert!(
        String::from_utf8_lossy(&output.stdout).contains(
            "2 of 40 artifacts verified at least once in the last 1 runs, 38 never verified"
        ),
        "{}",
        text(&output)
    );
}

/// The one `--sample` state file under the state directory of cairn run in `work`.
fn state_file(work: &Path) -> PathBuf {
    let dir = state_dir(work).join("verify");
    let files: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    files[0].clone()
}

#[test]
fn a_sampled_store_verification_finds_damage_and_reads_the_damaged_artifact_again() {
    cairn_testbed::require_root!();
    let bed = TestBed::start(&[
        ("app", 0, &["files"]),
        ("app", 1, &["files"]),
        ("app", 2, &["files"]),
        ("app", 3, &["files"]),
    ])
    .expect("test bed");
    let store_dir = workdir();
    let store = format!("file://{}", store_dir.path().display());
    let work = workdir();
    let output = cairn(&bed, work.path(), &["backup", "--store", &store]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let stored = fs::read_dir(store_dir.path().join("testbed"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.join("manifest.json").exists())
        .expect("a complete backup");
    let id = format!("testbed/{}", stored.file_name().unwrap().to_string_lossy());
    let state = work.root().join("sample-state.json");
    let sample = |work: &Path| {
        run(
            work,
            &[
                "backups",
                "--store",
                &store,
                "verify",
                &id,
                "--sample",
                "50",
                "--state-file",
                state.to_str().unwrap(),
            ],
        )
    };
    let first = sample(work.path());
    assert_eq!(first.status.code(), Some(0), "{}", text(&first));
    assert_eq!(verified_count(&first), (2, 4));
    let recorded: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(&state).unwrap()).unwrap();
    let first_two: Vec<String> = recorded["verified"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    // Damage one of the two not verified yet: the second run reads it and fails as a full
    // verification does, exit 1.
    let target = ["app-0-files", "app-1-files", "app-2-files", "app-3-files"]
        .into_iter()
        .find(|name| !first_two.iter().any(|n| n == name))
        .unwrap();
    let object = stored.join(format!("{target}.tar.zst.000000"));
    let mut bytes = fs::read(&object).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    fs::write(&object, bytes).unwrap();
    let second = sample(work.path());
    assert_eq!(second.status.code(), Some(1), "{}", text(&second));
    assert!(text(&second).contains("1 damaged"), "{}", text(&second));
    assert!(
        text(&second).contains(&format!("{target}.tar.zst")),
        "{}",
        text(&second)
    );
    let full = run(work.path(), &["backups", "--store", &store, "verify", &id]);
    assert_eq!(full.status.code(), second.status.code());
    // The damaged artifact was not recorded as verified: the third run reads it again.
    let third = sample(work.path());
    assert_eq!(third.status.code(), Some(1), "{}", text(&third));
    assert!(
        text(&third).contains(&format!("{target}.tar.zst")),
        "{}",
        text(&third)
    );
}

/// The test bed's inventory with `extra` added before `instances:` and `bootstrap: true` on
/// `bootstrap` (`group/index`), written next to it (so its relative key path still resolves).
fn inventory_with(bed: &TestBed, extra: &str, bootstrap: (&str, u32)) -> PathBuf {
    let original = fs::read_to_string(bed.inventory()).unwrap();
    let mut text = original.replace("instances:\n", &format!("{extra}instances:\n"));
    let entry = format!("- group: {}\n  index: {}\n", bootstrap.0, bootstrap.1);
    assert!(text.contains(&entry), "{text}");
    text = text.replace(&entry, &format!("{entry}  bootstrap: true\n"));
    let path = bed.inventory().with_file_name("inventory-shared.yml");
    fs::write(&path, text).unwrap();
    path
}

fn deployment(inventory: &Path, work: &Path, args: &[&str]) -> std::process::Output {
    let mut all = vec!["deployment", "--inventory", inventory.to_str().unwrap()];
    all.extend_from_slice(args);
    run(work, &all)
}

#[test]
fn backup_one_restore_all_from_an_inventory_restores_the_bootstrap_artifact_everywhere() {
    cairn_testbed::require_root!();
    let bed = TestBed::start(&[("app", 0, &["files"]), ("app", 1, &["files"])]).expect("test bed");
    // Different data on each instance, so the restore proves whose artifact it got.
    for host in bed.hosts() {
        fs::write(
            host.vcap_dir.join("store/files/which"),
            format!("{}/{}", host.group, host.index),
        )
        .unwrap();
    }
    let inventory = inventory_with(&bed, "backup_one_restore_all: [files]\n", ("app", 1));
    let work = workdir();
    let output = deployment(
        &inventory,
        work.path(),
        &["backup", "--artifact-path", work.path().to_str().unwrap()],
    );
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let backup = backup_dir(work.path());
    assert_eq!(
        tars(&backup),
        [
            "app-0-files.tar",
            "files-files-release-backup-one-restore-all.tar"
        ],
        "the bootstrap instance (app/1, marked in the inventory) writes the shared artifact"
    );
    let metadata = fs::read_to_string(backup.join("metadata")).unwrap();
    assert!(
        metadata.contains("custom_artifacts:\n- name: files-files-release-backup-one-restore-all"),
        "{metadata}"
    );
    let original = tree_digest(&bed.host("app", 1).vcap_dir.join("store/files"));
    for host in bed.hosts() {
        fs::remove_dir_all(host.vcap_dir.join("store/files")).unwrap();
    }
    let output = deployment(
        &inventory,
        work.path(),
        &["restore", "--artifact-path", backup.to_str().unwrap()],
    );
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    for host in bed.hosts() {
        assert_eq!(
            tree_digest(&host.vcap_dir.join("store/files")),
            original,
            "{}/{}",
            host.group,
            host.index
        );
    }
}
