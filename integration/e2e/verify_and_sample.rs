//! `cairn backups verify --artifact-path` on bbr directories, `--sample` coverage over many
//! runs, and `backup_one_restore_all` from an inventory (issue 24, items 3 and 5).

use std::fs;
use std::path::{Path, PathBuf};

use cairn_testbed::TestBed;

use crate::common::{backup_dir, run, tars, text, tree_digest, workdir};

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
