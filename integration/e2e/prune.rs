//! End-to-end: `cairn backups prune` on a `file://` store holding a history made of real
//! backups (taken from a test bed, then copied to older backup ids), and on S3 (moto) with
//! Object Lock.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;

use crate::common::*;
use cairn_testbed::TestBed;

const DEPLOYMENT: &str = "testbed";

/// A `file://` store in a temporary directory.
fn file_store() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}", dir.path().display());
    (dir, url)
}

/// A test bed with one small job.
fn small_bed() -> TestBed {
    TestBed::start(&[("database", 0, &["database"])]).expect("test bed")
}

/// Takes `count` real backups into `store`, a second apart (ids are seconds); their ids,
/// oldest first.
fn real_backups(bed: &TestBed, work: &Path, store: &str, count: usize) -> Vec<String> {
    real_backups_with(bed, work, store, count, &[])
}

/// [`real_backups`] with more `backup` flags.
fn real_backups_with(
    bed: &TestBed,
    work: &Path,
    store: &str,
    count: usize,
    flags: &[&str],
) -> Vec<String> {
    let before: BTreeSet<String> = listed(work, store).into_iter().map(|b| b.0).collect();
    for _ in 0..count {
        let mut args = vec!["backup", "--store", store];
        args.extend_from_slice(flags);
        let output = cairn(bed, work, &args);
        assert_eq!(output.status.code(), Some(0), "{}", text(&output));
        std::thread::sleep(std::time::Duration::from_millis(1100));
    }
    let ids: Vec<String> = listed(work, store)
        .into_iter()
        .map(|b| b.0)
        .filter(|id| !before.contains(id))
        .collect();
    assert_eq!(ids.len(), count, "{ids:?}");
    ids
}

/// `backups list --json` of the deployment: (id, complete), oldest first.
fn listed(work: &Path, store: &str) -> Vec<(String, bool)> {
    let output = run(
        work,
        &[
            "backups",
            "--store",
            store,
            "list",
            "--deployment",
            DEPLOYMENT,
            "--json",
        ],
    );
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| {
            let backup: serde_json::Value = serde_json::from_str(line).unwrap();
            (
                backup["id"].as_str().unwrap().to_string(),
                backup["complete"].as_bool().unwrap(),
            )
        })
        .collect()
}

fn listed_ids(work: &Path, store: &str) -> Vec<String> {
    listed(work, store).into_iter().map(|b| b.0).collect()
}

fn backup_dir(root: &Path, id: &str) -> PathBuf {
    root.join(DEPLOYMENT).join(id)
}

/// Copies a backup in a `file://` store to another id, as if it had been taken then: every
/// object is copied and the manifest's mentions of the old id (its `backup_id` and its keys)
/// become the new id, so the copy verifies on its own. Without `complete`, the manifest is
/// left out: a backup that never finished.
fn copy_backup(root: &Path, from: &str, to: &str, complete: bool) {
    let source = backup_dir(root, from);
    let target = backup_dir(root, to);
    fs::create_dir_all(&target).unwrap();
    for entry in fs::read_dir(&source).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name == "manifest.json" {
            if complete {
                let manifest = fs::read_to_string(entry.path()).unwrap();
                assert!(manifest.contains(from));
                fs::write(target.join(&name), manifest.replace(from, to)).unwrap();
            }
        } else {
            fs::copy(entry.path(), target.join(&name)).unwrap();
        }
    }
}

/// Moves a backup to another id (a copy, then the original removed).
fn move_backup(root: &Path, from: &str, to: &str) {
    copy_backup(root, from, to, true);
    fs::remove_dir_all(backup_dir(root, from)).unwrap();
}

/// Flips one byte in the middle of a stored object.
fn flip_byte(path: &Path) {
    let mut bytes = fs::read(path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    fs::write(path, bytes).unwrap();
}

/// Runs `backups --store STORE prune --deployment testbed ARGS...`.
fn prune(work: &Path, store: &str, args: &[&str]) -> Output {
    let mut all = vec![
        "backups",
        "--store",
        store,
        "prune",
        "--deployment",
        DEPLOYMENT,
    ];
    all.extend_from_slice(args);
    run(work, &all)
}

fn stdout_lines(output: &Output) -> Vec<String> {
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// The ids of the lines that start with `action ` (`keep`, `would delete`...).
fn ids_with(lines: &[String], action: &str) -> Vec<String> {
    let prefix = format!("{action} {DEPLOYMENT}/");
    lines
        .iter()
        .filter_map(|line| line.strip_prefix(&prefix))
        .map(|rest| rest.split(' ').next().unwrap().to_string())
        .collect()
}

fn sorted(ids: &[&str]) -> Vec<String> {
    let mut ids: Vec<String> = ids.iter().map(ToString::to_string).collect();
    ids.sort();
    ids
}

/// A backup id `minutes` after `id`.
fn later(id: &str, minutes: i64) -> String {
    let time = chrono::NaiveDateTime::parse_from_str(id, "%Y%m%dT%H%M%SZ").unwrap();
    (time + chrono::Duration::minutes(minutes))
        .format("%Y%m%dT%H%M%SZ")
        .to_string()
}

/// The store's files, ignoring empty directories (a `file://` delete removes files only).
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in fs::read_dir(&dir).into_iter().flatten().flatten() {
            if entry.path().is_dir() {
                pending.push(entry.path());
            } else {
                files.push(entry.path());
            }
        }
    }
    files
}

#[test]
fn prune_keeps_exactly_what_the_policy_says() {
    cairn_testbed::require_root!();
    let bed = small_bed();
    let work = workdir();
    let (dir, url) = file_store();
    let root = dir.path();
    let real = real_backups(&bed, work.path(), &url, 2);
    let today = real[1].clone();

    // The older real backup becomes 2025-03-01 06:00, and is copied to every night at 02:00
    // from 2025-01-01 to 2025-03-01, to 03:00..05:00 on 2025-03-01, and, without its
    // manifest, to two failed nights and to a backup started a minute after today's (which
    // may still be running).
    let template = "20250301T060000Z";
    move_backup(root, &real[0], template);
    let first = chrono::NaiveDate::from_ymd_opt(2025, 1, 1).unwrap();
    for day in 0..60 {
        let date = first + chrono::Duration::days(day);
        copy_backup(
            root,
            template,
            &format!("{}T020000Z", date.format("%Y%m%d")),
            true,
        );
    }
    for hour in 3..6 {
        copy_backup(root, template, &format!("20250301T{hour:02}0000Z"), true);
    }
    copy_backup(root, template, "20250115T030000Z", false);
    copy_backup(root, template, "20250210T030000Z", false);
    let running = later(&today, 1);
    copy_backup(root, template, &running, false);
    let all = listed(work.path(), &url);
    assert_eq!(all.len(), 60 + 4 + 2 + 1 + 1, "{all:?}");
    assert_eq!(all.iter().filter(|b| !b.1).count(), 3);

    // 2025-03-01 is a Saturday of ISO week 9 (Feb 24 - Mar 2); Feb 23 is the Sunday of week 8.
    let policy = [
        "--keep-last",
        "2",
        "--keep-daily",
        "5",
        "--keep-weekly",
        "3",
        "--keep-monthly",
        "2",
    ];
    let expected = sorted(&[
        "20250223T020000Z", // weekly 2025-W08
        "20250226T020000Z", // daily
        "20250227T020000Z", // daily
        "20250228T020000Z", // daily
        template,           // last, daily, weekly 2025-W09, monthly 2025-03
        &today,             // last, daily, weekly, monthly, newest verified
        &running,           // incomplete, may still be running
    ]);

    // Dry run: the plan, and not one file touched.
    let before = tree_digest(root);
    let mut dry = policy.to_vec();
    dry.push("--dry-run");
    let output = prune(work.path(), &url, &dry);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let lines = stdout_lines(&output);
    assert_eq!(lines.len(), 68 + 1, "one line per backup and a summary");
    assert_eq!(sorted_strings(ids_with(&lines, "keep")), expected);
    assert_eq!(ids_with(&lines, "would delete").len(), 61);
    assert!(ids_with(&lines, "delete").is_empty());
    assert!(
        lines.contains(&format!(
            "keep {DEPLOYMENT}/{today} (last, daily {}, weekly {}, monthly {}, newest verified)",
            day_of(&today),
            week_of(&today),
            month_of(&today)
        )),
        "{lines:#?}"
    );
    assert!(lines.contains(&format!(
        "keep {DEPLOYMENT}/{template} (last, daily 2025-03-01, weekly 2025-W09, monthly 2025-03)"
    )));
    assert!(lines.contains(&format!(
        "keep {DEPLOYMENT}/{running} (incomplete, may still be running)"
    )));
    assert!(lines.contains(&format!(
        "would delete {DEPLOYMENT}/20250210T030000Z (incomplete)"
    )));
    assert!(lines.contains(&format!(
        "would delete {DEPLOYMENT}/20250225T020000Z (no rule keeps it)"
    )));
    assert_eq!(
        lines.last().unwrap(),
        &format!("summary {DEPLOYMENT} (dry run, nothing deleted): 68 backups, 7 kept, 61 would be deleted; newest verified backup: {DEPLOYMENT}/{today}")
    );
    assert_eq!(tree_digest(root), before, "a dry run deletes nothing");

    // The same as JSON lines.
    dry.push("--json");
    let output = prune(work.path(), &url, &dry);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let events: Vec<serde_json::Value> = stdout_lines(&output)
        .iter()
        .map(|line| serde_json::from_str(line).expect("JSON line"))
        .collect();
    let (summary, backups) = events.split_last().unwrap();
    assert_eq!(summary["type"], "summary");
    assert_eq!(summary["dry_run"], true);
    assert_eq!(summary["backups"], 68);
    assert_eq!(summary["kept"], 7);
    assert_eq!(summary["would_delete"], 61);
    assert_eq!(summary["deleted"], 0);
    assert_eq!(summary["verified"], today.as_str());
    assert!(backups.iter().all(|b| b["type"] == "backup"));
    let kept: Vec<String> = backups
        .iter()
        .filter(|b| b["action"] == "keep")
        .map(|b| b["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(sorted_strings(kept), expected);
    let newest = backups.iter().find(|b| b["id"] == today.as_str()).unwrap();
    assert_eq!(newest["reasons"][0], "last");
    assert_eq!(newest["reasons"][4], "newest verified");
    assert_eq!(newest["complete"], true);
    assert!(backups
        .iter()
        .filter(|b| b["action"] == "would-delete")
        .all(|b| !b["reasons"].as_array().unwrap().is_empty()));
    assert_eq!(tree_digest(root), before, "a dry run deletes nothing");

    // For real.
    let output = prune(work.path(), &url, &policy);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let lines = stdout_lines(&output);
    assert_eq!(sorted_strings(ids_with(&lines, "keep")), expected);
    assert_eq!(ids_with(&lines, "delete").len(), 61);
    assert!(lines.last().unwrap().starts_with(&format!(
        "summary {DEPLOYMENT}: 68 backups, 7 kept, 61 deleted;"
    )));
    assert_eq!(
        listed_ids(work.path(), &url),
        expected,
        "backups list agrees"
    );
    for (id, _) in all.iter().filter(|b| !expected.contains(&b.0)) {
        assert!(
            files_under(&backup_dir(root, id)).is_empty(),
            "{id} was not deleted"
        );
    }
    for id in [&today, template] {
        let verify = run(
            work.path(),
            &[
                "backups",
                "--store",
                &url,
                "verify",
                &format!("{DEPLOYMENT}/{id}"),
            ],
        );
        assert_eq!(verify.status.code(), Some(0), "{}", text(&verify));
    }

    // Pruning again changes nothing.
    let output = prune(work.path(), &url, &policy);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert!(stdout_lines(&output).last().unwrap().starts_with(&format!(
        "summary {DEPLOYMENT}: 7 backups, 7 kept, 0 deleted;"
    )));
    assert_eq!(listed_ids(work.path(), &url), expected);
}

#[test]
fn damaged_newest_backups_are_kept_and_reported_and_an_older_verified_one_is_kept() {
    cairn_testbed::require_root!();
    let bed = small_bed();
    let work = workdir();
    let (dir, url) = file_store();
    let root = dir.path();
    let real = real_backups(&bed, work.path(), &url, 2);
    for day in 1..=3 {
        copy_backup(root, &real[0], &format!("2025020{day}T020000Z"), true);
    }
    // The newest has a flipped byte, the one before lost its `metadata` object.
    flip_byte(&backup_dir(root, &real[1]).join("database-0-database.tar.zst.000000"));
    fs::remove_file(backup_dir(root, &real[0]).join("metadata")).unwrap();

    let output = prune(work.path(), &url, &["--keep-last", "1"]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let lines = stdout_lines(&output);
    assert_eq!(
        ids_with(&lines, "failed-verify"),
        vec![real[0].clone(), real[1].clone()]
    );
    let damaged = lines
        .iter()
        .find(|l| l.starts_with(&format!("failed-verify {DEPLOYMENT}/{}", real[1])))
        .unwrap();
    assert!(
        damaged.contains("kept, inspect it:") && damaged.contains("database-0-database.tar.zst"),
        "{damaged}"
    );
    assert!(
        lines.contains(&format!(
            "keep {DEPLOYMENT}/20250203T020000Z (last, newest verified)"
        )),
        "{lines:#?}"
    );
    assert_eq!(
        ids_with(&lines, "delete"),
        vec!["20250201T020000Z", "20250202T020000Z"]
    );
    assert_eq!(
        lines.last().unwrap(),
        &format!("summary {DEPLOYMENT}: 5 backups, 1 kept, 2 deleted, 2 failed verify and kept (look at them with `cairn backups verify`); newest verified backup: {DEPLOYMENT}/20250203T020000Z")
    );
    assert_eq!(
        listed_ids(work.path(), &url),
        sorted(&["20250203T020000Z", &real[0], &real[1]])
    );
}

#[test]
fn a_policy_that_keeps_nothing_is_refused() {
    let (dir, url) = file_store();
    let work = workdir();
    fs::create_dir_all(backup_dir(dir.path(), "20250101T000000Z")).unwrap();
    fs::write(
        backup_dir(dir.path(), "20250101T000000Z").join("manifest.json"),
        "{}",
    )
    .unwrap();
    let before = tree_digest(dir.path());
    for args in [&[][..], &["--keep-last", "0", "--keep-daily", "0"][..]] {
        let output = prune(work.path(), &url, args);
        assert_eq!(output.status.code(), Some(1));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
        assert!(stderr.contains("--keep-last"), "{stderr}");
        assert!(output.stdout.is_empty());
    }
    assert_eq!(tree_digest(dir.path()), before);
}

#[test]
fn a_delete_that_fails_is_reported_prune_goes_on_and_exits_1() {
    cairn_testbed::require_root!();
    let bed = small_bed();
    let work = workdir();
    let (dir, url) = file_store();
    let root = dir.path();
    let real = real_backups(&bed, work.path(), &url, 1);
    for day in 1..=3 {
        copy_backup(root, &real[0], &format!("2025020{day}T020000Z"), true);
    }
    // 2025-02-02 sits on a read-only mount, in a mount namespace of cairn's own.
    let stuck = backup_dir(root, "20250202T020000Z");
    let output = std::process::Command::new("unshare")
        .args(["--mount", "--", "sh", "-c"])
        .arg(r#"mount --bind -o ro "$0" "$0" && exec "$@""#)
        .arg(&stuck)
        .arg(env!("CARGO_BIN_EXE_cairn"))
        .args([
            "backups",
            "--store",
            &url,
            "prune",
            "--deployment",
            DEPLOYMENT,
            "--keep-last",
            "1",
        ])
        .current_dir(work.path())
        .env("CAIRN_STATE_DIR", state_dir(work.path()))
        .output()
        .unwrap();
    eprintln!("{}", text(&output));
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    let lines = stdout_lines(&output);
    assert_eq!(
        ids_with(&lines, "delete"),
        vec!["20250201T020000Z", "20250203T020000Z"]
    );
    let failed = ids_with(&lines, "delete-failed");
    assert_eq!(failed, vec!["20250202T020000Z"]);
    assert!(lines.iter().any(|l| l.contains("Read-only file system")));
    assert!(lines
        .last()
        .unwrap()
        .contains("2 deleted, 1 could not be deleted"));
    assert!(String::from_utf8_lossy(&output.stderr).contains("1 error occurred:"));
    assert_eq!(
        listed_ids(work.path(), &url),
        vec!["20250202T020000Z".to_string(), real[0].clone()]
    );
}

#[test]
fn s3_object_lock_protected_backups_are_reported_and_kept() {
    cairn_testbed::require_root!();
    let moto = Emulator::start(Server::Moto);
    moto.fixture(&["create-bucket", "cairn-backups", "locked"]);
    let url = format!(
        "s3://cairn-backups/nightly?endpoint={}&path_style=true&region=us-east-1",
        moto.endpoint
    );
    let bed = small_bed();
    let work = workdir();
    let locked = real_backups_with(
        &bed,
        work.path(),
        &url,
        1,
        &["--retain-days", "2", "--retention-mode", "compliance"],
    );
    let open = real_backups(&bed, work.path(), &url, 2);

    let output = prune(work.path(), &url, &["--keep-last", "1", "--dry-run"]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert_eq!(
        ids_with(&stdout_lines(&output), "would delete"),
        vec![locked[0].clone(), open[0].clone()],
        "a dry run cannot know what the store will refuse"
    );

    let output = prune(work.path(), &url, &["--keep-last", "1"]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let lines = stdout_lines(&output);
    assert_eq!(ids_with(&lines, "protected"), locked);
    assert_eq!(ids_with(&lines, "delete"), vec![open[0].clone()]);
    assert_eq!(ids_with(&lines, "keep"), vec![open[1].clone()]);
    let protected = lines.iter().find(|l| l.starts_with("protected ")).unwrap();
    assert!(
        protected.contains("(kept: the store refused to delete it: ")
            && protected.contains("AccessDenied"),
        "{protected}"
    );
    assert_eq!(
        lines.last().unwrap(),
        &format!(
            "summary {DEPLOYMENT}: 3 backups, 1 kept, 1 deleted, 1 protected by the store (Object Lock) and kept; newest verified backup: {DEPLOYMENT}/{}",
            open[1]
        )
    );
    assert_eq!(
        listed(work.path(), &url),
        vec![(locked[0].clone(), true), (open[1].clone(), true)],
        "the locked backup is still complete"
    );
    let verify = run(
        work.path(),
        &[
            "backups",
            "--store",
            &url,
            "verify",
            &format!("{DEPLOYMENT}/{}", locked[0]),
        ],
    );
    assert_eq!(verify.status.code(), Some(0), "{}", text(&verify));
}

fn sorted_strings(mut ids: Vec<String>) -> Vec<String> {
    ids.sort();
    ids
}

fn time_of(id: &str) -> chrono::NaiveDateTime {
    chrono::NaiveDateTime::parse_from_str(id, "%Y%m%dT%H%M%SZ").unwrap()
}

fn day_of(id: &str) -> String {
    time_of(id).format("%Y-%m-%d").to_string()
}

fn week_of(id: &str) -> String {
    use chrono::Datelike;
    let week = time_of(id).iso_week();
    format!("{}-W{:02}", week.year(), week.week())
}

fn month_of(id: &str) -> String {
    time_of(id).format("%Y-%m").to_string()
}
