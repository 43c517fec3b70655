//! End-to-end: `cairn repo init|check` and the bad inputs of repository store URLs
//! (`repo+…`): a URL with no store after `repo+`, a repository that does not exist (named with
//! `cairn repo init`), a password file that is missing, world-readable or not given, a wrong
//! password, and plain-store commands given a repository. No test bed: nothing here reaches an
//! instance.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;

use crate::common::*;

/// A password file holding `password`, with `mode`.
pub(crate) fn password_file(dir: &Path, name: &str, password: &str, mode: u32) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("{password}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    path
}

/// `cairn repo ARGS --store URL --repository-password-file FILE`.
pub(crate) fn repo(work: &Path, action: &[&str], url: &str, password: &Path) -> Output {
    let mut args = vec!["repo"];
    args.extend_from_slice(action);
    args.extend_from_slice(&[
        "--store",
        url,
        "--repository-password-file",
        password.to_str().unwrap(),
    ]);
    run(work, &args)
}

/// The repository id `cairn repo init` printed.
pub(crate) fn created_id(output: &Output) -> String {
    assert_eq!(output.status.code(), Some(0), "{}", text(output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let id = stdout
        .strip_prefix("Created repository ")
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no id in {stdout}"));
    assert_eq!(id.len(), 64, "{stdout}");
    id.to_string()
}

#[test]
fn init_then_check_and_a_second_init_is_refused() {
    let work = workdir();
    let root = work.root().join("repo");
    std::fs::create_dir(&root).unwrap();
    let url = format!("repo+file://{}", root.display());
    let password = password_file(work.root(), "password", "correct horse", 0o600);
    let init = repo(work.path(), &["init"], &url, &password);
    let id = created_id(&init);
    assert_eq!(
        String::from_utf8_lossy(&init.stdout),
        format!("Created repository {id} (restic format version 2) at {url}\n")
    );
    assert!(!text(&init).contains("correct horse"));
    assert!(root.join("config").is_file());

    let check = repo(work.path(), &["check"], &url, &password);
    assert_eq!(check.status.code(), Some(0), "{}", text(&check));
    assert_eq!(
        String::from_utf8_lossy(&check.stdout),
        format!("Repository {id} at {url}: structure checked, no errors (0 snapshots)\n")
    );

    let again = repo(work.path(), &["init"], &url, &password);
    assert_eq!(again.status.code(), Some(1), "{}", text(&again));
    assert!(
        text(&again).contains(&format!(
            "A repository already exists at repo+file://{}; Cairn does not overwrite it",
            root.display()
        )),
        "{}",
        text(&again)
    );

    // The password through the variable instead of the flag.
    let output = cairn_command_in(work.path())
        .args(["repo", "check", "--store", &url])
        .env("CAIRN_REPOSITORY_PASSWORD_FILE", &password)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));

    // A wrong password is refused, saying which file to check, and never echoed.
    let wrong = password_file(work.root(), "wrong", "battery staple", 0o600);
    let output = repo(work.path(), &["check"], &url, &wrong);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert!(
        text(&output).contains(&format!(
            "The repository password does not open the repository at repo+file://{}: no key of the repository accepts it; check --repository-password-file (or CAIRN_REPOSITORY_PASSWORD_FILE)",
            root.display()
        )),
        "{}",
        text(&output)
    );
    assert!(!text(&output).contains("battery staple"));
}

#[test]
fn a_repository_that_does_not_exist_names_cairn_repo_init() {
    let work = workdir();
    let root = work.root().join("empty");
    std::fs::create_dir(&root).unwrap();
    let url = format!("repo+file://{}", root.display());
    let password = password_file(work.root(), "password", "pw", 0o600);
    let output = repo(work.path(), &["check"], &url, &password);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert!(
        text(&output).contains(&format!(
            "There is no repository at {url} (it has no `config` object); create one with `cairn repo init --store {url}`, or fix the store URL"
        )),
        "{}",
        text(&output)
    );
    assert_eq!(
        std::fs::read_dir(&root).unwrap().count(),
        0,
        "check wrote nothing"
    );
}

#[test]
fn bad_urls_and_password_files_are_refused_before_anything_is_written() {
    let work = workdir();
    let root = work.root().join("repo");
    std::fs::create_dir(&root).unwrap();
    let url = format!("repo+file://{}", root.display());
    let good = password_file(work.root(), "password", "pw", 0o600);

    let output = repo(work.path(), &["init"], "repo+", &good);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert!(
        text(&output).contains("store URL `repo+` names no store after `repo+`; use repo+s3://BUCKET/PREFIX, repo+az://ACCOUNT/CONTAINER/PREFIX, repo+gs://BUCKET/PREFIX or repo+file:///DIR"),
        "{}",
        text(&output)
    );
    let plain = format!("file://{}", root.display());
    let output = repo(work.path(), &["init"], &plain, &good);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert!(
        text(&output).contains(&format!("store URL `{plain}` names a plain store, not a repository; write `repo+{plain}` for a repository kept there")),
        "{}",
        text(&output)
    );

    let missing = work.root().join("no-such-file");
    let output = repo(work.path(), &["init"], &url, &missing);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert!(
        text(&output).contains(&format!(
            "Cannot use repository password file `{}`: it does not exist",
            missing.display()
        )),
        "{}",
        text(&output)
    );
    let exposed = password_file(work.root(), "exposed", "pw", 0o644);
    let output = repo(work.path(), &["init"], &url, &exposed);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert!(
        text(&output).contains(&format!(
            "Cannot use repository password file `{0}`: other users may read it or its group may write it (mode 0644); run `chmod 600 {0}`",
            exposed.display()
        )),
        "{}",
        text(&output)
    );
    let output = cairn_command_in(work.path())
        .args(["repo", "init", "--store", &url])
        .env_remove("CAIRN_REPOSITORY_PASSWORD_FILE")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert!(
        text(&output).contains(
            "--repository-password-file flag is required (or set CAIRN_REPOSITORY_PASSWORD_FILE)"
        ),
        "{}",
        text(&output)
    );
    assert_eq!(
        std::fs::read_dir(&root).unwrap().count(),
        0,
        "nothing was written"
    );
}

#[test]
fn plain_store_commands_say_repositories_are_not_yet_supported() {
    let work = workdir();
    let root = work.root().join("repo");
    std::fs::create_dir(&root).unwrap();
    let url = format!("repo+file://{}", root.display());
    let output = run(work.path(), &["backups", "--store", &url, "list"]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert!(
        text(&output).contains(&format!(
            "store URL `{url}` names a repository (`repo+`): this command does not yet support repositories"
        )),
        "{}",
        text(&output)
    );
}
