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
fn a_bad_segment_size_is_one_line_before_anything_is_connected() {
    let work = Work::new();
    work.inventory();
    let url = format!("file://{}", work.path().display());
    let mut summary = String::new();
    for (size, target) in [
        ("0", "--store"),
        ("lots", "--store"),
        ("512KiB", "--store"),
        ("8MiB", "--artifact-path"),
    ] {
        let place = if target == "--store" {
            url.as_str()
        } else {
            "."
        };
        let outcome = work.cairn(&[
            "deployment",
            "--inventory",
            "inv.yml",
            "backup",
            target,
            place,
            "--segment-size",
            size,
        ]);
        summary.push_str(&format!(
            "--segment-size {size} with {target}:\n{}\n",
            outcome.all()
        ));
    }
    insta::assert_snapshot!("bad_segment_size", summary);
}

#[test]
fn resumable_and_resume_are_refused_for_a_bbr_directory() {
    let work = Work::new();
    work.inventory();
    let mut summary = String::new();
    for flag in ["--resumable", "--resume"] {
        let outcome = work.cairn(&[
            "deployment",
            "--inventory",
            "inv.yml",
            "backup",
            "--artifact-path",
            ".",
            flag,
        ]);
        summary.push_str(&format!(
            "{flag} with --artifact-path:\n{}\n",
            outcome.all()
        ));
    }
    insta::assert_snapshot!("resumable_needs_a_store", summary);
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

/// `--store` (and the other flags of `backups`) where people type them: before the subcommand
/// or after it, the same listing, and the same refusal of a missing store.
#[test]
fn backups_flags_work_before_and_after_the_subcommand() {
    let work = Work::new();
    let url = store_with_a_backup(&work);
    let before = work.cairn(&["backups", "--store", &url, "--debug", "list", "--json"]);
    let after = work.cairn(&["backups", "list", "--json", "--store", &url, "--debug"]);
    assert_eq!(before.code, Some(0), "{}", before.all());
    assert!(
        before.stdout.contains("20261206T211111Z"),
        "{}",
        before.all()
    );
    assert_eq!(after.all(), before.all());
    let mixed = work.cairn(&["backups", "--debug", "list", "--store", &url, "--json"]);
    assert_eq!(mixed.all(), before.all());
    let missing = format!("file://{}/does-not-exist", work.path().display());
    let before = work.cairn(&["backups", "--store", &missing, "list"]);
    let after = work.cairn(&["backups", "list", "--store", &missing]);
    assert_eq!(before.code, Some(1));
    assert_eq!(after.all(), before.all());
}

/// A genuine manifest copied to another id (a rollback) is listed as `misplaced`, and `show`
/// marks it; its original is still `complete`.
#[test]
fn a_misplaced_backup_is_marked_by_list_and_show() {
    let work = Work::new();
    let url = store_with_a_backup(&work);
    let copy = work.path().join("store/cf/20261207T000000Z");
    std::fs::create_dir_all(&copy).unwrap();
    std::fs::copy(
        work.path().join("store/cf/20261206T211111Z/manifest.json"),
        copy.join("manifest.json"),
    )
    .unwrap();
    let list = work.cairn(&["backups", "--store", &url, "list"]);
    insta::assert_snapshot!("backups_list_misplaced", list.all());
    let show = work.cairn(&["backups", "--store", &url, "show", "cf/20261207T000000Z"]);
    insta::assert_snapshot!("backups_show_misplaced", show.all());
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

/// `--version`, `-v`, `version` and `v` (issue 18). bbr is a urfave/cli v1 app: its global
/// flag `version, v` (urfave `flag.go` `VersionFlag`) and its `version, v` command
/// (`cmd/bbr/main.go`) both print `printVersion`'s `"%v version %v\n"` (urfave `help.go`):
/// `bbr version 1.9.81`. Invoked as `bbr`, Cairn prints that line with its own version after
/// it; invoked as `cairn`, its own version first.
#[test]
fn version_flags_and_command_print_bbrs_line() {
    let work = Work::new();
    let cairn_line = format!("cairn version {} (bbr 1.9.81)", env!("CARGO_PKG_VERSION"));
    let bbr_line = format!("bbr version 1.9.81 (cairn {})", env!("CARGO_PKG_VERSION"));
    for args in [["--version"], ["-v"], ["version"], ["v"]] {
        let outcome = work.cairn(&args);
        assert_eq!(outcome.code, Some(0), "{args:?}: {}", outcome.all());
        assert_eq!(outcome.stdout, cairn_line, "{args:?}");
        assert_eq!(outcome.stderr, "", "{args:?}");
        let outcome = work.run_program(&work.bbr(), &args);
        assert_eq!(outcome.code, Some(0), "{args:?}: {}", outcome.all());
        assert_eq!(outcome.stdout, bbr_line, "{args:?}");
    }
    // `-v` is the top-level flag only, as in bbr (whose `deployment` has no version flag).
    let outcome = work.cairn(&["--version", "deployment", "backup"]);
    assert_eq!(outcome.stdout, cairn_line);
}

/// An unknown command (issue 18): bbr's `commandNotFoundFunc` (`cmd/bbr/main.go`) prints
/// `fmt.Printf("Error command '%s' not found\n\n", msg)` and then the help of the command it
/// was given to (urfave `ShowAppHelp`), all on stdout; urfave's `ShowCommandHelp` then returns
/// nil, so bbr exits 0. Inside `deployment` the subcommand app inherits `CommandNotFound` and
/// prints the `deployment` help.
#[test]
fn an_unknown_command_prints_bbrs_line_and_the_help_on_stdout() {
    let work = Work::new();
    let help = work.cairn(&["help"]);
    let outcome = work.cairn(&["frobnicate"]);
    assert_eq!(outcome.code, Some(0), "{}", outcome.all());
    assert_eq!(
        outcome.stdout,
        format!("Error command 'frobnicate' not found\n\n{}", help.stdout)
    );
    assert_eq!(outcome.stderr, "");

    let mode_help = work.cairn(&["deployment", "help"]);
    assert_eq!(mode_help.code, Some(0));
    assert!(mode_help
        .stdout
        .contains("Usage: cairn deployment [OPTIONS] <COMMAND>"));
    let outcome = work.cairn(&["deployment", "-t", "10.0.0.6", "-d", "cf", "frobnicate"]);
    assert_eq!(outcome.code, Some(0), "{}", outcome.all());
    assert_eq!(
        outcome.stdout,
        format!(
            "Error command 'frobnicate' not found\n\n{}",
            mode_help.stdout
        )
    );
}

/// `help` inside a mode (issue 18): urfave v1 appends its `help, h` command to every command
/// with subcommands (`app.go` `RunAsSubcommand`), so `bbr deployment ... help` prints the
/// mode's help and `help backup` the subcommand's, on stdout, exit code 0.
#[test]
fn help_inside_a_mode_prints_its_help() {
    let work = Work::new();
    for mode in ["deployment", "director"] {
        let help = work.cairn(&[mode, "help"]);
        assert_eq!(help.code, Some(0), "{}", help.all());
        assert!(
            help.stdout
                .contains(&format!("Usage: cairn {mode} [OPTIONS] <COMMAND>")),
            "{}",
            help.all()
        );
        assert_eq!(work.cairn(&[mode, "h"]).stdout, help.stdout);
        let backup = work.cairn(&[mode, "help", "backup"]);
        assert_eq!(backup.code, Some(0));
        assert!(
            backup
                .stdout
                .contains(&format!("Usage: cairn {mode} backup [OPTIONS]")),
            "{}",
            backup.all()
        );
        let unknown = work.cairn(&[mode, "help", "nope"]);
        assert_eq!(unknown.code, Some(0));
        assert_eq!(
            unknown.stdout,
            format!("Error command 'nope' not found\n\n{}", help.stdout)
        );
    }
}

#[test]
fn repository_urls_and_password_files_are_named_in_their_errors() {
    let work = Work::new();
    let no_password = work.cairn(&["repo", "init", "--store", "repo+file:///srv/repo"]);
    insta::assert_snapshot!("repo_init_without_password_file", no_password.all());
    let password = work.path().join("password");
    std::fs::write(&password, "pw\n").unwrap();
    std::fs::set_permissions(
        &password,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let password = password.to_str().unwrap();
    let bare = work.cairn(&[
        "repo",
        "init",
        "--store",
        "repo+",
        "--repository-password-file",
        password,
    ]);
    insta::assert_snapshot!("repo_init_bare_repo_plus", bare.all());
    let missing = work.path().join("missing");
    let missing_repo = work.cairn(&[
        "repo",
        "check",
        "--store",
        &format!("repo+file://{}", work.path().display()),
        "--repository-password-file",
        password,
    ]);
    insta::assert_snapshot!("repo_check_no_repository", missing_repo.all());
    let plain = work.cairn(&[
        "backups",
        "--store",
        &format!("repo+file://{}", missing.display()),
        "list",
    ]);
    insta::assert_snapshot!("backups_list_given_a_repository", plain.all());
    let flag = work.cairn(&[
        "backups",
        "--store",
        &format!("repo+file://{}", missing.display()),
        "list",
        "--repository-password-file",
        "/nonexistent/cairn-password",
    ]);
    insta::assert_snapshot!("backups_list_password_file_missing", flag.all());
    std::fs::create_dir(&missing).unwrap();
    let plain_prune = work.cairn(&[
        "backups",
        "--store",
        &format!("file://{}", missing.display()),
        "prune",
        "-d",
        "redis",
        "--keep-last",
        "1",
        "--keep-marked",
        "1h",
    ]);
    insta::assert_snapshot!("prune_keep_marked_on_a_plain_store", plain_prune.all());
}

#[test]
fn a_restore_parallelism_of_zero_or_not_a_number_is_one_line() {
    let work = Work::new();
    work.inventory();
    for (name, value) in [
        ("restore_parallelism_zero", "0"),
        ("restore_parallelism_not_a_number", "two"),
    ] {
        let outcome = work.cairn(&[
            "deployment",
            "--inventory",
            "inv.yml",
            "restore",
            "--artifact-path",
            "/nonexistent",
            "--restore-parallelism",
            value,
        ]);
        insta::assert_snapshot!(name, outcome.all());
    }
}
