//! End-to-end: SSH host-key checking, bbr-compatible command line, and the bbr-format fixture.

use std::fs;
use std::path::{Path, PathBuf};

use crate::common::*;
use cairn_testbed::TestBed;

/// Writes a variant of the test bed's inventory next to it (keys stay relative to it).
fn inventory_variant(bed: &TestBed, name: &str, edit: impl Fn(&str) -> String) -> PathBuf {
    let original = fs::read_to_string(bed.inventory()).unwrap();
    let path = bed.dir().join(name);
    fs::write(&path, edit(&original)).unwrap();
    path
}

fn without_host_keys(inventory: &str) -> String {
    inventory
        .lines()
        .filter(|l| !l.trim_start().starts_with("host_key:"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn check(work: &Path, inventory: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec!["deployment", "--inventory", inventory.to_str().unwrap()];
    args.extend_from_slice(extra);
    args.push("pre-backup-check");
    run(work, &args)
}

#[test]
fn host_keys_are_checked_against_pins_and_known_hosts() {
    cairn_testbed::require_root!();
    let bed =
        TestBed::start(&[("database", 0, &["database"]), ("app", 0, &["app"])]).expect("test bed");
    let work = workdir();
    let unpinned = inventory_variant(&bed, "unpinned.yml", without_host_keys);

    // An inventory host that is neither pinned nor known is refused, and not recorded: the
    // inventory is written by hand (trust on first use is for the jumpbox and the director VM,
    // fidelity_ssh.rs).
    let empty_known_hosts = bed.dir().join("empty_known_hosts");
    fs::write(&empty_known_hosts, "").unwrap();
    let output = check(
        work.path(),
        &unpinned,
        &["--known-hosts", empty_known_hosts.to_str().unwrap()],
    );
    assert_eq!(output.status.code(), Some(1));
    let all = text(&output);
    assert!(
        all.contains("Host key of database/0 at") && all.contains("is unknown (SHA256:"),
        "{all}"
    );
    assert_eq!(fs::read_to_string(&empty_known_hosts).unwrap(), "");

    let output = check(
        work.path(),
        &unpinned,
        &["--known-hosts", bed.known_hosts().to_str().unwrap()],
    );
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));

    let output = check(
        work.path(),
        &unpinned,
        &[
            "--known-hosts",
            empty_known_hosts.to_str().unwrap(),
            "--insecure-skip-host-key-check",
        ],
    );
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));

    // A man in the middle: the database's address answers with another host's key.
    let keys: Vec<String> = fs::read_to_string(bed.inventory())
        .unwrap()
        .lines()
        .filter(|l| l.trim_start().starts_with("host_key:"))
        .map(str::to_string)
        .collect();
    let swapped = inventory_variant(&bed, "swapped.yml", |text| {
        text.replacen(&keys[0], "@@", 1)
            .replacen(&keys[1], &keys[0], 1)
            .replacen("@@", &keys[1], 1)
    });
    let output = check(work.path(), &swapped, &[]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        text(&output).contains("does not match the pinned host_key"),
        "{}",
        text(&output)
    );

    let mut wrong_known_hosts = String::new();
    for line in fs::read_to_string(bed.known_hosts()).unwrap().lines() {
        let (address, key) = line.split_once(' ').unwrap();
        wrong_known_hosts.push_str(&format!(
            "{address} {}\n",
            if key == keys[0].split('"').nth(1).unwrap() {
                keys[1].split('"').nth(1).unwrap()
            } else {
                key
            }
        ));
    }
    let wrong = bed.dir().join("wrong_known_hosts");
    fs::write(&wrong, wrong_known_hosts).unwrap();
    let output = check(
        work.path(),
        &unpinned,
        &["--known-hosts", wrong.to_str().unwrap()],
    );
    assert_eq!(output.status.code(), Some(1));
    assert!(
        text(&output).contains("does not match"),
        "{}",
        text(&output)
    );
    // With OpenSSH's command that forgets the recorded key (port 22: the bare address).
    let database = bed.host("database", 0);
    assert!(
        text(&output).contains(&format!(
            "`ssh-keygen -f {} -R {}`",
            wrong.display(),
            database.address
        )),
        "{}",
        text(&output)
    );
}

#[test]
fn command_line_follows_bbr() {
    let work = workdir();
    let output = run(work.path(), &["deployment", "backup"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(text(&output).contains("--target flag is required."));
    let output = run(
        work.path(),
        &["deployment", "-t", "x", "-u", "u", "-p", "p", "backup"],
    );
    assert_eq!(output.status.code(), Some(1));
    assert!(text(&output).contains("provide one of '--deployment' or '--all-deployments' flags."));
    let output = run(
        work.path(),
        &["director", "--host", "h", "-u", "u", "backup"],
    );
    assert_eq!(output.status.code(), Some(1));
    assert!(text(&output).contains("--private-key-path flag is required."));
    let output = run(work.path(), &["frobnicate"]);
    // bbr's commandNotFoundFunc prints to stdout and exits 0 (cmd/bbr/main.go).
    assert_eq!(output.status.code(), Some(0));
    assert!(text(&output).contains("Error command 'frobnicate' not found"));
    let output = run(
        work.path(),
        &["deployment", "--inventory", "/nonexistent.yml", "backup"],
    );
    assert_eq!(output.status.code(), Some(1));
    assert!(
        text(&output).contains("Cannot read inventory `/nonexistent.yml`"),
        "{}",
        text(&output)
    );

    let completions = run(work.path(), &["completions", "bash"]);
    assert_eq!(completions.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&completions.stdout).contains("complete -F _cairn"));
    let man = run(work.path(), &["man"]);
    assert!(String::from_utf8_lossy(&man.stdout).contains(".TH cairn 1"));

    // Installed as `bbr`, it is bbr.
    let link = work.path().join("bbr");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_cairn"), &link).unwrap();
    let output = std::process::Command::new(&link)
        .arg("version")
        .current_dir(work.path())
        .output()
        .unwrap();
    // bbr's line with the bbr version Cairn implements, then Cairn's own.
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        format!("bbr version 1.9.81 (cairn {})", env!("CARGO_PKG_VERSION"))
    );
    let output = run(work.path(), &["version"]);
    assert!(String::from_utf8_lossy(&output.stdout).starts_with("cairn version "));
}

#[test]
fn a_bbr_format_backup_written_by_hand_restores() {
    cairn_testbed::require_root!();
    let bed = TestBed::start(&[("database", 0, &["database"]), ("app", 0, &["files"])])
        .expect("test bed");
    let fixture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/bbr-backup/testbed_20240102T030405Z");
    let work = workdir();
    let output = cairn(
        &bed,
        work.path(),
        &["restore", "--artifact-path", fixture.to_str().unwrap()],
    );
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let files = bed.host("app", 0).vcap_dir.join("store/files");
    assert_eq!(
        fs::read_to_string(files.join("hello world.txt")).unwrap(),
        "restored from a bbr backup\n"
    );
    assert_eq!(fs::read(files.join("sub/empty")).unwrap(), b"");
    let users = bed
        .host("database", 0)
        .vcap_dir
        .join("store/database/users");
    assert_eq!(
        fs::read_to_string(users).unwrap(),
        "id,name\n1,ada\n2,grace\n"
    );
    assert_nothing_left(&bed);
}
