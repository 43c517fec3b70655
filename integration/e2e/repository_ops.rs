//! End-to-end: the operations on repositories beyond backup and restore — `backups prune`
//! (the retention plan, then rustic_core's prune marking and later deleting the packs no
//! snapshot uses), `backups delete`, `backups verify` finding a flipped byte in a pack, and
//! `cairn drill` into and from a repository — on `repo+file://` and `repo+az://` (Azurite).
//! The password is given with `--repository-password-file` throughout (repository.rs uses the
//! variable).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Output;

use cairn_testbed::stores::{Emulator, Server};
use cairn_testbed::TestBed;

use crate::common::*;
use crate::repository::{created_id, password_file, repo};

/// `cairn ARGS --repository-password-file PASSWORD`.
fn with_flag(work: &Path, password: &Path, args: &[&str]) -> Output {
    let mut all = args.to_vec();
    all.extend_from_slice(&["--repository-password-file", password.to_str().unwrap()]);
    let output = cairn_command_in(work)
        .args(&all)
        .env_remove("CAIRN_REPOSITORY_PASSWORD_FILE")
        .output()
        .expect("cairn runs");
    logged(&all, output)
}

/// `cairn backups --store URL prune -d testbed --keep-last KEEP EXTRA` with the password flag;
/// asserts it exited 0.
fn prune_keeping(work: &Path, password: &Path, url: &str, keep: &str, extra: &[&str]) -> Output {
    let mut args = vec![
        "backups",
        "--store",
        url,
        "prune",
        "-d",
        "testbed",
        "--keep-last",
        keep,
    ];
    args.extend_from_slice(extra);
    let output = with_flag(work, password, &args);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    output
}

/// `cairn deployment --inventory BED ARGS --repository-password-file PASSWORD`.
fn on_bed(bed: &TestBed, work: &Path, password: &Path, args: &[&str]) -> Output {
    let inventory = bed.inventory();
    let mut all = vec!["deployment", "--inventory", inventory.to_str().unwrap()];
    all.extend_from_slice(args);
    with_flag(work, password, &all)
}

/// The backup ids of the test bed's deployment in the repository, oldest first.
fn backups(work: &Path, url: &str, password: &Path) -> Vec<String> {
    let list = with_flag(work, password, &["backups", "--store", url, "list"]);
    assert_eq!(list.status.code(), Some(0), "{}", text(&list));
    String::from_utf8_lossy(&list.stdout)
        .lines()
        .filter_map(|line| line.strip_prefix("testbed/"))
        .map(|rest| rest.split_whitespace().next().unwrap().to_string())
        .collect()
}

/// `size` bytes that do not compress or repeat, different for every `seed`.
fn write_random(path: &Path, size: usize, seed: u64) {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15 ^ seed.wrapping_mul(0xD1B5_4A32_D192_ED03);
    let mut data = Vec::with_capacity(size);
    while data.len() < size {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        data.extend_from_slice(&state.to_le_bytes());
    }
    data.truncate(size);
    std::fs::write(path, data).unwrap();
}

/// Night `n`'s files of the `files` job: every file different from every other night's.
fn night(files: &Path, n: u64) -> BTreeMap<String, String> {
    std::fs::create_dir_all(files.join("sub")).unwrap();
    write_random(&files.join("random.bin"), 3 << 20, n);
    std::fs::write(files.join("small.txt"), format!("night {n}\n")).unwrap();
    std::fs::write(
        files.join("sub/deep.txt"),
        format!("in a folder, night {n}\n"),
    )
    .unwrap();
    tree_digest(files)
}

/// A test bed whose `files` job (app/0) backs up the files of [`night`].
fn bed() -> (TestBed, PathBuf) {
    let bed = TestBed::start(&[("app", 0, &["files"])]).expect("test bed");
    let files = bed.host("app", 0).vcap_dir.join("store/files");
    (bed, files)
}

/// A backup of night `n` (a second later than the one before: ids have one-second steps).
fn backup_night(
    bed: &TestBed,
    files: &Path,
    work: &Path,
    password: &Path,
    url: &str,
    n: u64,
) -> BTreeMap<String, String> {
    let tree = night(files, n);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let output = on_bed(bed, work, password, &["backup", "--store", url]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    tree
}

/// Restores `id` after damaging the files, and checks they are `tree` again.
fn restore_is(
    bed: &TestBed,
    files: &Path,
    work: &Path,
    password: &Path,
    url: &str,
    id: &str,
    tree: &BTreeMap<String, String>,
) {
    std::fs::write(files.join("random.bin"), b"overwritten").unwrap();
    let _ = std::fs::remove_file(files.join("sub/deep.txt"));
    let output = on_bed(
        bed,
        work,
        password,
        &["restore", "--store", url, "--backup", id],
    );
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert_eq!(&tree_digest(files), tree, "restore of {id}");
}

/// The pack files of a folder repository.
fn packs(root: &Path) -> BTreeSet<PathBuf> {
    let mut packs = BTreeSet::new();
    for folder in std::fs::read_dir(root.join("data")).unwrap().flatten() {
        for pack in std::fs::read_dir(folder.path()).unwrap().flatten() {
            packs.insert(pack.path());
        }
    }
    packs
}

/// The JSON line of `type` in `output`'s stdout.
fn json_line(output: &Output, kind: &str) -> serde_json::Value {
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .find(|value| value["type"] == kind)
        .unwrap_or_else(|| panic!("no {kind} line in {}", text(output)))
}

#[test]
fn prune_keeps_the_right_snapshots_and_later_deletes_the_packs_only_the_pruned_backup_used() {
    let (bed, files) = bed();
    let work = workdir();
    let root = work.root().join("repo");
    std::fs::create_dir(&root).unwrap();
    let url = format!("repo+file://{}", root.display());
    let password = password_file(work.root(), "password", "correct horse", 0o600);
    created_id(&repo(work.path(), &["init"], &url, &password));
    // pre-backup-check opens the repository: the password is checked before the night.
    let check = on_bed(
        &bed,
        work.path(),
        &password,
        &["pre-backup-check", "--store", &url],
    );
    assert_eq!(check.status.code(), Some(0), "{}", text(&check));
    let wrong = password_file(work.root(), "wrong", "battery staple", 0o600);
    let check = on_bed(
        &bed,
        work.path(),
        &wrong,
        &["pre-backup-check", "--store", &url],
    );
    assert_eq!(check.status.code(), Some(1), "{}", text(&check));
    assert!(
        text(&check).contains("The repository password does not open the repository"),
        "{}",
        text(&check)
    );

    let mut trees = Vec::new();
    let mut packs_of = Vec::new();
    let mut before = BTreeSet::new();
    for n in 1..=3 {
        trees.push(backup_night(&bed, &files, work.path(), &password, &url, n));
        let now = packs(&root);
        packs_of.push(now.difference(&before).cloned().collect::<BTreeSet<_>>());
        before = now;
    }
    let ids = backups(work.path(), &url, &password);
    assert_eq!(ids.len(), 3, "{ids:?}");
    let bytes = |packs: &BTreeSet<PathBuf>| -> u64 {
        packs
            .iter()
            .map(|p| std::fs::metadata(p).map_or(0, |m| m.len()))
            .sum()
    };
    let before_bytes = bytes(&before);
    assert!(packs_of.iter().all(|p| !p.is_empty()), "{packs_of:?}");
    let prune = |extra: &[&str]| prune_keeping(work.path(), &password, &url, "2", extra);

    // A dry run says what it would do and changes nothing.
    let dry = prune(&["--dry-run"]);
    let stdout = String::from_utf8_lossy(&dry.stdout).into_owned();
    assert!(
        stdout.contains(&format!(
            "would delete testbed/{} (no rule keeps it)",
            ids[0]
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("keep testbed/{} (last)", ids[1])),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("keep testbed/{} (last, newest verified)", ids[2])),
        "{stdout}"
    );
    assert!(stdout.contains("would be marked for deletion"), "{stdout}");
    assert!(
        stdout.contains(
            "summary testbed (dry run, nothing deleted): 3 backups, 2 kept, 1 would be deleted"
        ),
        "{stdout}"
    );
    assert_eq!(backups(work.path(), &url, &password), ids);
    assert_eq!(packs(&root), before);

    // The prune deletes the oldest backup's two snapshots and marks its packs...
    let pruned = prune(&["--json"]);
    let deleted = String::from_utf8_lossy(&pruned.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .find(|value| value["id"] == ids[0].as_str())
        .unwrap();
    assert_eq!(deleted["action"], "delete", "{deleted}");
    assert_eq!(deleted["snapshots"], 2, "{deleted}");
    // Night 1's packs are no longer used (rustic marks the wholly unused ones, and repacks
    // partly used or undersized ones, marking the old packs); nothing is deleted yet.
    let data = json_line(&pruned, "repository");
    let marked = data["packs_marked"].as_u64().unwrap() + data["packs_repacked"].as_u64().unwrap();
    let freed = data["bytes_marked"].as_u64().unwrap() + data["bytes_repacked"].as_u64().unwrap();
    assert!(
        marked > 0 && freed >= 3 << 20,
        "night 1's 3 MiB are freed: {data}"
    );
    assert_eq!(data["packs_deleted"], 0, "{data}");
    assert_eq!(backups(work.path(), &url, &password), ids[1..]);
    assert!(packs(&root).is_superset(&before), "marked, not deleted yet");

    // A prune `--keep-marked` later deletes what the first one marked: night 1's packs are gone.
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let later = prune(&["--keep-marked", "1s", "--json"]);
    let data = json_line(&later, "repository");
    assert_eq!(data["packs_deleted"].as_u64(), Some(marked), "{data}");
    let after = packs(&root);
    assert!(after.is_disjoint(&packs_of[0]), "night 1's packs are gone");
    assert!(
        bytes(&after) + (3 << 20) <= before_bytes,
        "{} bytes of packs left of {before_bytes}",
        bytes(&after)
    );

    // The kept backups restore byte-identically; the pruned one is gone.
    restore_is(
        &bed,
        &files,
        work.path(),
        &password,
        &url,
        &ids[1],
        &trees[1],
    );
    restore_is(
        &bed,
        &files,
        work.path(),
        &password,
        &url,
        &ids[2],
        &trees[2],
    );
    let gone = on_bed(
        &bed,
        work.path(),
        &password,
        &["restore", "--store", &url, "--backup", &ids[0]],
    );
    assert_eq!(gone.status.code(), Some(1), "{}", text(&gone));
    assert!(
        text(&gone).contains(&format!("no complete backup testbed/{}", ids[0])),
        "{}",
        text(&gone)
    );

    // A flipped byte in the biggest pack (a kept night's random data): the structure still
    // checks out, reading the data finds it (`backups verify` reads every pack the backup
    // uses, as `check --read-data` does).
    let verify = |id: &str| {
        let backup = format!("testbed/{id}");
        with_flag(
            work.path(),
            &password,
            &["backups", "--store", &url, "verify", &backup],
        )
    };
    assert_eq!(verify(&ids[2]).status.code(), Some(0));
    let biggest = packs(&root)
        .into_iter()
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap();
    let mut content = std::fs::read(&biggest).unwrap();
    let middle = content.len() / 2;
    content[middle] ^= 0x01;
    std::fs::write(&biggest, content).unwrap();
    let structure = repo(work.path(), &["check"], &url, &password);
    assert_eq!(structure.status.code(), Some(0), "{}", text(&structure));
    let failed: Vec<Output> = ids[1..]
        .iter()
        .map(|id| verify(id))
        .filter(|output| output.status.code() == Some(1))
        .collect();
    assert!(!failed.is_empty(), "a kept backup uses the damaged pack");
    for output in &failed {
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            stdout.contains("error: ") && stdout.ends_with(" errors\n"),
            "{stdout}"
        );
    }
    let data = repo(work.path(), &["check", "--read-data"], &url, &password);
    assert_eq!(data.status.code(), Some(1), "{}", text(&data));
}

#[test]
fn an_azure_repository_backs_up_restores_deletes_and_prunes() {
    let azurite = Emulator::start(Server::Azurite);
    azurite.fixture(&["create-container", "cairn-repos"]);
    let url = format!(
        "repo+az://devstoreaccount1/cairn-repos/nightly?endpoint={}",
        azurite.endpoint
    );
    let (bed, files) = bed();
    let work = workdir();
    let password = password_file(work.root(), "password", "correct horse", 0o600);
    // Azurite has no blob versioning.
    created_id(&repo(
        work.path(),
        &["init", "--allow-unversioned"],
        &url,
        &password,
    ));
    let first = backup_night(&bed, &files, work.path(), &password, &url, 1);
    let second = backup_night(&bed, &files, work.path(), &password, &url, 2);
    let ids = backups(work.path(), &url, &password);
    assert_eq!(ids.len(), 2, "{ids:?}");
    restore_is(&bed, &files, work.path(), &password, &url, &ids[0], &first);
    restore_is(&bed, &files, work.path(), &password, &url, &ids[1], &second);

    let delete = with_flag(
        work.path(),
        &password,
        &[
            "backups",
            "--store",
            &url,
            "delete",
            &format!("testbed/{}", ids[0]),
        ],
    );
    assert_eq!(delete.status.code(), Some(0), "{}", text(&delete));
    assert_eq!(
        String::from_utf8_lossy(&delete.stdout),
        format!("Deleted backup testbed/{} (2 snapshots); the data only it used is freed by the next `cairn backups prune`\n", ids[0])
    );
    assert_eq!(backups(work.path(), &url, &password), ids[1..]);
    let again = with_flag(
        work.path(),
        &password,
        &[
            "backups",
            "--store",
            &url,
            "delete",
            &format!("testbed/{}", ids[0]),
        ],
    );
    assert_eq!(again.status.code(), Some(1), "{}", text(&again));
    assert!(
        text(&again).contains(&format!("no backup testbed/{} in this repository", ids[0])),
        "{}",
        text(&again)
    );

    let prune = |extra: &[&str]| {
        let mut json = vec!["--json"];
        json.extend_from_slice(extra);
        json_line(
            &prune_keeping(work.path(), &password, &url, "1", &json),
            "repository",
        )
    };
    let marked = prune(&[]);
    let count =
        marked["packs_marked"].as_u64().unwrap() + marked["packs_repacked"].as_u64().unwrap();
    assert!(count > 0, "{marked}");
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let deleted = prune(&["--keep-marked", "1s"]);
    assert_eq!(deleted["packs_deleted"].as_u64(), Some(count), "{deleted}");
    restore_is(&bed, &files, work.path(), &password, &url, &ids[1], &second);
    let check = repo(work.path(), &["check", "--read-data"], &url, &password);
    assert_eq!(check.status.code(), Some(0), "{}", text(&check));
}

#[test]
fn a_drill_backs_up_into_a_repository_and_restores_from_it() {
    cairn_testbed::require_root!();
    let (source, target) = std::thread::scope(|scope| {
        let source = scope.spawn(bed);
        let target = scope.spawn(bed);
        (source.join().unwrap(), target.join().unwrap())
    });
    let ((source, source_files), (target, target_files)) = (source, target);
    let work = workdir();
    let root = work.root().join("repo");
    std::fs::create_dir(&root).unwrap();
    let url = format!("repo+file://{}", root.display());
    let password = password_file(work.root(), "password", "correct horse", 0o600);
    created_id(&repo(work.path(), &["init"], &url, &password));
    let tree = night(&source_files, 7);
    night(&target_files, 8);
    let (source_inventory, target_inventory) = (source.inventory(), target.inventory());
    let drill = |extra: &[&str]| {
        let mut args = vec![
            "drill",
            "--target-inventory",
            target_inventory.to_str().unwrap(),
            "--store",
            &url,
            "--report-dir",
            work.path().to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let output = with_flag(work.path(), &password, &args);
        (output.status.code(), text(&output))
    };
    let (code, summary) = drill(&["--source-inventory", source_inventory.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{summary}");
    assert!(summary.contains("PASSED"), "{summary}");
    assert_eq!(
        tree_digest(&target_files),
        tree,
        "the target holds the source's data"
    );
    assert_eq!(backups(work.path(), &url, &password).len(), 1);

    // The backup the drill took, restored again from the repository with --latest.
    night(&target_files, 9);
    let (code, summary) = drill(&["--latest", "testbed"]);
    assert_eq!(code, Some(0), "{summary}");
    assert!(summary.contains("PASSED"), "{summary}");
    assert_eq!(tree_digest(&target_files), tree);
}
