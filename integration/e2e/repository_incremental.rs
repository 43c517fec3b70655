//! End-to-end: into a repository, only the files changed since the last backup cross the wire
//! (issue 16 item 3, docs/design/repository.md §5 phase 2). Three backups of the test bed's
//! `files` job into `repo+file://`: the first sends everything; the second, after one file
//! changed and one was added, sends those two alone (the instance's `tar` of the changed files,
//! as Cairn counted it off the SSH channel, is a few KiB against the 16 MiB of the first);
//! `--full-read` sends everything again. Every restore is byte-identical, which also proves the
//! digests carried over from the parent for the files not sent (restore checks every file
//! against `metadata`).

use std::process::Output;

use crate::common::*;
use crate::repository::{
    bed_with_files, created_id, on_bed, password_file, repo, repository_backups,
};

/// What the drain of the `files` job said: (changed files, all files, tar bytes over SSH).
fn sent(output: &Output) -> (u64, u64, u64) {
    let all = text(output);
    let line = all
        .lines()
        .find(|l| l.contains("the others unchanged since the last backup -- for job files on app/"))
        .unwrap_or_else(|| panic!("no drain line in {all}"));
    // `Sent C of N files (B of T bytes; S bytes of tar over SSH), ...`
    let numbers: Vec<u64> = line
        .split_once("Sent ")
        .unwrap()
        .1
        .split_once(" over SSH")
        .unwrap()
        .0
        .split(|c: char| !c.is_ascii_digit())
        .filter(|w| !w.is_empty())
        .map(|w| w.parse().unwrap())
        .collect();
    assert_eq!(numbers.len(), 5, "{line}");
    (numbers[0], numbers[1], numbers[4])
}

#[test]
fn a_second_backup_sends_only_the_changed_files() {
    let (bed, files) = bed_with_files();
    let work = workdir();
    let root = work.root().join("repo");
    std::fs::create_dir(&root).unwrap();
    let url = format!("repo+file://{}", root.display());
    let password = password_file(work.root(), "password", "correct horse", 0o600);
    created_id(&repo(
        work.path(),
        &["init", "--allow-unversioned"],
        &url,
        &password,
    ));
    let backup = |extra: &[&str]| {
        // Backup ids have a one-second resolution.
        std::thread::sleep(std::time::Duration::from_millis(1100));
        let mut args = vec!["backup", "--store", url.as_str()];
        args.extend_from_slice(extra);
        let output = on_bed(&bed, work.path(), &password, &args);
        assert_eq!(output.status.code(), Some(0), "{}", text(&output));
        assert_nothing_left(&bed);
        output
    };

    let first_tree = tree_digest(&files);
    let (changed, all, first_bytes) = sent(&backup(&[]));
    assert_eq!(changed, all, "the first backup sends every file");
    assert!(first_bytes > 16 << 20, "{first_bytes}");

    std::fs::write(files.join("small.txt"), b"second night, changed\n").unwrap();
    std::fs::write(files.join("sub/added.txt"), b"new on the second night\n").unwrap();
    let second_tree = tree_digest(&files);
    let second = backup(&[]);
    let (changed, all_now, second_bytes) = sent(&second);
    assert_eq!((changed, all_now), (2, all + 1), "{}", text(&second));
    assert!(
        second_bytes < 64 << 10,
        "the second backup sent {second_bytes} bytes of tar, the first {first_bytes}"
    );

    let third = backup(&["--full-read"]);
    let (changed, all_then, third_bytes) = sent(&third);
    assert_eq!(changed, all_then, "--full-read sends every file");
    assert!(third_bytes > 16 << 20, "{third_bytes}");

    let ids = repository_backups(work.path(), &url, &password);
    assert_eq!(ids.len(), 3, "{ids:?}");
    for (id, tree) in [
        (&ids[0], &first_tree),
        (&ids[1], &second_tree),
        (&ids[2], &second_tree),
    ] {
        std::fs::write(files.join("random.bin"), b"overwritten").unwrap();
        std::fs::remove_file(files.join("sub/deep.txt")).unwrap();
        let restore = on_bed(
            &bed,
            work.path(),
            &password,
            &["restore", "--store", &url, "--backup", id],
        );
        assert_eq!(restore.status.code(), Some(0), "{}", text(&restore));
        assert_eq!(&tree_digest(&files), tree, "restore of {id}");
        assert_nothing_left(&bed);
    }
}

#[test]
fn full_read_needs_a_repository() {
    let work = workdir();
    let output = run(
        work.path(),
        &[
            "deployment",
            "--inventory",
            "/nonexistent",
            "backup",
            "--store",
            "file:///tmp",
            "--full-read",
        ],
    );
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert!(
        text(&output).contains("--full-read applies to backups into a repository (--store repo+...); a directory or a plain store always receives every file"),
        "{}",
        text(&output)
    );
}
