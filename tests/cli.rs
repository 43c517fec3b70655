//! Snapshot tests of the messages a newcomer meets (issue 23): the real `cairn` binary, its
//! exact output in `tests/snapshots/cli__*.snap` (review a change with `cargo insta review`,
//! or `INSTA_UPDATE=always cargo test --test cli` and `git diff`).
//!
//! Fast and self-contained: no root, no network, no test bed. Every run happens in a
//! temporary directory with an empty environment; the directory's path and the clock are
//! replaced by `[TMP]` and `[TIME]` in the snapshots.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A temporary working directory to run `cairn` in.
struct Work {
    dir: tempfile::TempDir,
}

impl Work {
    fn new() -> Work {
        Work {
            dir: tempfile::tempdir().expect("temporary directory"),
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Runs `program` (the cairn binary, or a link to it) with `args`.
    fn run_program(&self, program: &Path, args: &[&str]) -> Outcome {
        let output = Command::new(program)
            .args(args)
            .current_dir(self.path())
            .env_clear()
            .env("HOME", self.path())
            .output()
            .expect("run cairn");
        let clean = |bytes: &[u8]| {
            let text =
                String::from_utf8_lossy(bytes).replace(&self.path().display().to_string(), "[TMP]");
            text.lines().map(mask_times).collect::<Vec<_>>().join("\n")
        };
        Outcome {
            code: output.status.code(),
            stdout: clean(&output.stdout),
            stderr: clean(&output.stderr),
        }
    }

    fn cairn(&self, args: &[&str]) -> Outcome {
        self.run_program(Path::new(env!("CARGO_BIN_EXE_cairn")), args)
    }

    /// A link named `bbr` to the binary, as an installation as bbr has.
    fn bbr(&self) -> PathBuf {
        let link = self.path().join("bbr");
        if !link.exists() {
            std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_cairn"), &link).unwrap();
        }
        link
    }

    /// An inventory `inv.yml` with one instance whose key is `keys/id` (relative to it).
    fn inventory(&self) {
        std::fs::write(
            self.path().join("inv.yml"),
            "deployment: demo\ninstances:\n- group: db\n  index: 0\n  address: 127.0.0.1\n  port: 1\n  username: vcap\n  private_key: keys/id\n",
        )
        .unwrap();
    }
}

/// What a run printed, and its exit code.
struct Outcome {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Outcome {
    /// Everything, for a snapshot.
    fn all(&self) -> String {
        format!(
            "exit code: {:?}\n--- stdout\n{}\n--- stderr\n{}\n",
            self.code, self.stdout, self.stderr
        )
    }

    /// As [`Outcome::all`], with only the first line of stdout (the help that follows a
    /// message, whose exact text other tests cover).
    fn with_help_head(&self) -> String {
        format!(
            "exit code: {:?}\n--- stdout (first line of the help)\n{}\n--- stderr\n{}\n",
            self.code,
            self.stdout.lines().next().unwrap_or_default(),
            self.stderr
        )
    }
}

/// `[12:34:56]` and `2026/12/06 12:34:56` (bbr's log prefixes) become `[TIME]`.
fn mask_times(line: &str) -> String {
    let bytes = line.as_bytes();
    let matches = |at: usize, pattern: &str| {
        pattern.len() <= bytes.len() - at
            && pattern.bytes().zip(&bytes[at..]).all(|(p, &b)| {
                if p == b'9' {
                    b.is_ascii_digit()
                } else {
                    p == b
                }
            })
    };
    let mut out = String::new();
    let mut at = 0;
    while at < bytes.len() {
        if matches(at, "[99:99:99]") {
            out.push_str("[TIME]");
            at += 10;
        } else if matches(at, "9999/99/99 99:99:99") {
            out.push_str("[TIME]");
            at += 19;
        } else {
            let c = line[at..].chars().next().unwrap();
            out.push(c);
            at += c.len_utf8();
        }
    }
    out
}

#[test]
fn help_says_what_cairn_is() {
    let work = Work::new();
    let help = work.cairn(&["--help"]);
    assert_eq!(help.code, Some(0));
    let head: Vec<&str> = help.stdout.lines().take(3).collect();
    insta::assert_snapshot!("help_first_lines", head.join("\n"));
}

#[test]
fn help_keeps_bbr_wording_when_invoked_as_bbr() {
    let work = Work::new();
    let help = work.run_program(&work.bbr(), &["--help"]);
    assert_eq!(help.code, Some(0));
    let head: Vec<&str> = help.stdout.lines().take(3).collect();
    insta::assert_snapshot!("bbr_help_first_lines", head.join("\n"));
}

#[test]
fn a_mistyped_command_gets_a_suggestion() {
    let work = Work::new();
    let outcome = work.cairn(&["deploymnet"]);
    insta::assert_snapshot!("mistyped_command", outcome.with_help_head());
    let unknown = work.cairn(&["frobnicate"]);
    insta::assert_snapshot!("unknown_command", unknown.with_help_head());
    let bbr = work.run_program(&work.bbr(), &["deploymnet"]);
    insta::assert_snapshot!("bbr_mistyped_command", bbr.with_help_head());
}

#[test]
fn target_or_inventory_is_required() {
    let work = Work::new();
    let outcome = work.cairn(&["deployment", "pre-backup-check"]);
    insta::assert_snapshot!("target_or_inventory_required", outcome.all());
}

#[test]
fn a_missing_inventory_is_one_line() {
    let work = Work::new();
    let outcome = work.cairn(&[
        "deployment",
        "--inventory",
        "missing.yml",
        "pre-backup-check",
    ]);
    insta::assert_snapshot!("missing_inventory", outcome.all());
}

#[test]
fn a_missing_private_key_is_named_by_its_resolved_path() {
    let work = Work::new();
    work.inventory();
    let outcome = work.cairn(&["deployment", "--inventory", "inv.yml", "pre-backup-check"]);
    insta::assert_snapshot!("missing_private_key", outcome.all());
}

#[test]
fn restore_from_a_missing_directory_keeps_bbrs_words_once() {
    let work = Work::new();
    work.inventory();
    let outcome = work.cairn(&[
        "deployment",
        "--inventory",
        "inv.yml",
        "restore",
        "--artifact-path",
        "/nonexistent",
    ]);
    insta::assert_snapshot!("restore_missing_artifact_path", outcome.all());
}

#[test]
fn a_missing_store_is_refused_not_listed_as_empty() {
    let work = Work::new();
    let url = format!("file://{}/does-not-exist", work.path().display());
    let outcome = work.cairn(&["backups", "--store", &url, "list"]);
    insta::assert_snapshot!("missing_store_list", outcome.all());
    assert!(!work.path().join("does-not-exist").exists());
    let show = work.cairn(&["backups", "--store", &url, "show", "cf/20261206T211111Z"]);
    assert_eq!(show.code, Some(1));
    assert_eq!(
        show.stderr, outcome.stderr,
        "the same check for every command"
    );
    let file = work.path().join("a-file");
    std::fs::write(&file, b"x").unwrap();
    let not_a_dir = work.cairn(&[
        "backups",
        "--store",
        &format!("file://{}", file.display()),
        "list",
    ]);
    insta::assert_snapshot!("store_not_a_directory", not_a_dir.all());
}

/// A `file://` store holding one complete backup, written by hand.
fn store_with_a_backup(work: &Work) -> String {
    let backup = work.path().join("store/cf/20261206T211111Z");
    std::fs::create_dir_all(&backup).unwrap();
    std::fs::write(backup.join("db-0-pg.tar.zst"), b"0123456789").unwrap();
    let manifest = r#"{
  "schema": 1,
  "cairn_version": "0.1.0",
  "deployment": "cf",
  "backup_id": "20261206T211111Z",
  "started_at": "2026-12-06T21:11:11.123456Z",
  "finished_at": "2026-12-06T21:12:40Z",
  "compression": {"algorithm": "zstd", "level": 3},
  "artifacts": [{
    "name": "db-0-pg", "group": "db", "index": "0", "job": "pg",
    "key": "cf/20261206T211111Z/db-0-pg.tar.zst", "size": 10,
    "sha256": "84d89877f0d4041efb6bf91a16f0248f2fd573e6af05c19f96bedb9f882f7882",
    "version": null, "files": {}
  }],
  "jobs": [
    {"instance": "db/0", "job": "pg", "locked_at": "2026-12-06T21:11:12Z", "unlocked_at": "2026-12-06T21:11:30Z"},
    {"instance": "db/0", "job": "agent", "locked_at": null, "unlocked_at": null}
  ],
  "metadata": {"key": "cf/20261206T211111Z/metadata", "version": null, "sha256": "00"}
}
"#;
    std::fs::write(backup.join("manifest.json"), manifest).unwrap();
    format!("file://{}/store", work.path().display())
}

#[test]
fn backups_show_and_list_print_human_text() {
    let work = Work::new();
    let url = store_with_a_backup(&work);
    let show = work.cairn(&["backups", "--store", &url, "show", "cf/20261206T211111Z"]);
    insta::assert_snapshot!("backups_show", show.all());
    let list = work.cairn(&["backups", "--store", &url, "list"]);
    insta::assert_snapshot!("backups_list", list.all());
    let json = work.cairn(&["backups", "--store", &url, "list", "--json"]);
    insta::assert_snapshot!("backups_list_json", json.all());
}

#[test]
fn an_empty_store_lists_nothing() {
    let work = Work::new();
    std::fs::create_dir(work.path().join("empty")).unwrap();
    let url = format!("file://{}/empty", work.path().display());
    let outcome = work.cairn(&["backups", "--store", &url, "list"]);
    insta::assert_snapshot!("empty_store_list", outcome.all());
}

/// Every command group without its subcommand: help on stderr, exit code 1.
#[test]
fn command_groups_without_a_subcommand_are_usage_errors() {
    let work = Work::new();
    let mut summary = String::new();
    for group in [
        &[][..],
        &["deployment"][..],
        &["director"][..],
        &["backups"][..],
        &["contract"][..],
        &["config"][..],
    ] {
        let outcome = work.cairn(group);
        let usage = outcome
            .stderr
            .lines()
            .find(|line| line.starts_with("Usage: "))
            .unwrap_or("(no usage line)");
        summary.push_str(&format!(
            "{}: exit code {:?}, stdout {} bytes, stderr: {usage}\n",
            ["cairn"]
                .iter()
                .chain(group)
                .copied()
                .collect::<Vec<_>>()
                .join(" "),
            outcome.code,
            outcome.stdout.len()
        ));
    }
    insta::assert_snapshot!("command_groups_without_subcommand", summary);
}
