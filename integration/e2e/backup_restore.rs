//! End-to-end: backup and restore of a 3-host test bed, lock order, data fidelity.

use std::fs;

use crate::common::*;
use cairn_testbed::TestBed;

#[test]
fn backup_then_restore_brings_back_identical_data_in_lock_order() {
    cairn_testbed::require_root!();
    let bed = TestBed::start(&[]).expect("test bed");
    let app0 = bed.host("app", 0).clone();
    let files = app0.vcap_dir.join("store/files");
    fs::create_dir_all(files.join("deep/er/still")).unwrap();
    fs::write(files.join("deep/er/still/leaf with spaces.txt"), b"leaf").unwrap();
    fs::write(files.join("empty file"), b"").unwrap();
    fs::write(files.join("line\nbreak"), b"newline in the name").unwrap();
    write_pseudo_random(&files.join("big.bin"), 100 * 1024 * 1024 + 17);
    let before = tree_digest(&files);
    let database_before = tree_digest(&bed.host("database", 0).vcap_dir.join("store/database"));

    let work = workdir();
    let output = cairn(
        &bed,
        work.path(),
        &["backup", "--artifact-path", work.path().to_str().unwrap()],
    );
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let backup = backup_dir(work.path());
    assert!(backup
        .file_name()
        .unwrap()
        .to_string_lossy()
        .starts_with("testbed_"));
    assert_eq!(
        tars(&backup),
        vec![
            "app-0-app.tar",
            "app-0-files.tar",
            "app-1-app.tar",
            "app-1-files.tar",
            "database-0-database.tar"
        ]
    );
    assert_nothing_left(&bed);
    assert_lock_order(&bed, "pre-backup-lock", "post-backup-unlock");
    let database = bed.host("database", 0);
    assert_eq!(
        bed.events(database, "database")
            .iter()
            .rfind(|e| e.1 == "post-backup-unlock")
            .unwrap()
            .2,
        "success=true"
    );

    // Damage the data, then restore.
    fs::remove_file(files.join("big.bin")).unwrap();
    fs::write(files.join("empty file"), b"not empty any more").unwrap();
    fs::remove_dir_all(files.join("deep")).unwrap();
    fs::write(
        bed.host("database", 0)
            .vcap_dir
            .join("store/database/tables.txt"),
        b"dropped",
    )
    .unwrap();

    let output = cairn(
        &bed,
        work.path(),
        &["restore", "--artifact-path", backup.to_str().unwrap()],
    );
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert_eq!(
        tree_digest(&files),
        before,
        "files job data differs after restore"
    );
    assert_eq!(
        tree_digest(&bed.host("database", 0).vcap_dir.join("store/database")),
        database_before
    );
    assert_nothing_left(&bed);
    assert_lock_order(&bed, "pre-restore-lock", "post-restore-unlock");
}

/// app must be locked before database on every host, and unlocked after it.
fn assert_lock_order(bed: &TestBed, lock: &str, unlock: &str) {
    let database = bed.host("database", 0);
    let db_lock = *event_times(bed, database, "database", lock)
        .last()
        .expect("database locked");
    let db_unlock = *event_times(bed, database, "database", unlock)
        .last()
        .expect("database unlocked");
    for index in [0, 1] {
        let app = bed.host("app", index);
        let app_lock = *event_times(bed, app, "app", lock)
            .last()
            .expect("app locked");
        let app_unlock = *event_times(bed, app, "app", unlock)
            .last()
            .expect("app unlocked");
        assert!(
            app_lock < db_lock,
            "app/{index} {lock} at {app_lock} not before database at {db_lock}"
        );
        assert!(
            db_unlock < app_unlock,
            "database {unlock} at {db_unlock} not before app/{index} at {app_unlock}"
        );
    }
}

#[test]
fn pre_backup_check_reports_and_changes_nothing() {
    cairn_testbed::require_root!();
    let bed = TestBed::start(&[]).expect("test bed");
    let work = workdir();
    let output = cairn(&bed, work.path(), &["pre-backup-check"]);
    assert_eq!(output.status.code(), Some(0));
    assert!(text(&output).contains("Deployment 'testbed' can be backed up."));
    for (host, job) in locking_jobs(&bed) {
        assert!(
            bed.events(host, job).is_empty(),
            "pre-backup-check ran a script"
        );
    }
    assert!(
        fs::read_dir(work.path()).unwrap().next().is_none(),
        "pre-backup-check wrote files"
    );
}
