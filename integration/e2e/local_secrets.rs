//! End-to-end: what another user of the jumpbox can no longer read or borrow (issue 17,
//! findings 8 and 12). The Director's password from a file instead of `ps`; private keys open
//! to others refused and passphrase-protected ones used; `file://` store objects, the error
//! log and `--all-deployments`' logs private whatever the umask. Real `cairn`, real sshd test
//! bed, the Director stand-in.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::common::*;
use cairn_testbed::director::{
    DeploymentSpec, Director, DirectorOptions, DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET,
};
use cairn_testbed::TestBed;

/// `cairn ARGS` in `work` under umask 022 (the usual one, under which a plain create makes
/// world-readable files), with the environment `extra`.
fn cairn_umask_022(work: &Path, env: &[(&str, &str)], args: &[&str]) -> Output {
    let output = Command::new("sh")
        .args([
            "-c",
            "umask 022 && exec \"$@\"",
            "sh",
            env!("CARGO_BIN_EXE_cairn"),
        ])
        .args(args)
        .current_dir(work)
        .env("CAIRN_STATE_DIR", state_dir(work))
        .envs(STORE_ENV)
        .env_remove("BOSH_CLIENT_SECRET")
        .envs(env.iter().copied())
        .output()
        .expect("cairn runs");
    logged(args, output)
}

fn mode(path: &Path) -> u32 {
    fs::symlink_metadata(path).unwrap().permissions().mode() & 0o7777
}

fn write_with_mode(path: &Path, text: &str, mode: u32) {
    fs::write(path, text).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

/// Every file and folder under `root` (not `root` itself).
fn tree(root: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path.clone());
            }
            found.push(path);
        }
    }
    found
}

/// The Director login without its password: `deployment --target URL --username admin
/// --ca-cert CA`.
fn login_without_password(director: &Director) -> Vec<String> {
    vec![
        "deployment".into(),
        "--target".into(),
        director.url(),
        "--username".into(),
        DEFAULT_CLIENT_ID.into(),
        "--ca-cert".into(),
        director.ca_cert_path().to_string_lossy().into_owned(),
    ]
}

const PASSWORD_WARNING: &str = "--password on the command line is visible to every local user";

#[test]
fn the_director_password_comes_from_a_private_file_and_logs_are_private() {
    cairn_testbed::require_root!();
    let bed = TestBed::start(&[("app", 0, &["files"])]).expect("test bed");
    let mut options = DirectorOptions::new(&bed);
    options.deployments.push(DeploymentSpec::new("cf", &bed));
    let director = Director::start(&options).expect("director");
    let work = workdir();
    let login = login_without_password(&director);
    let with = |extra: &[&str]| -> Vec<String> {
        let mut all = login.clone();
        all.extend(extra.iter().map(|s| (*s).to_string()));
        all
    };
    let run_with = |env: &[(&str, &str)], extra: &[&str]| {
        let args = with(extra);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        cairn_umask_022(work.path(), env, &args)
    };
    let password_file = work.root().join("director-password");
    write_with_mode(&password_file, &format!("{DEFAULT_CLIENT_SECRET}\n"), 0o600);
    let file = password_file.to_str().unwrap();

    // Each source of the password logs in (a deployment that does not exist is only found
    // missing once UAA accepted the client; generating a temporary SSH key per run would
    // make this test slow), and only the command line is warned about.
    let missing = ["-d", "nothing", "pre-backup-check"];
    let logged_in = |output: &Output| {
        let all = text(output);
        assert_eq!(output.status.code(), Some(1), "{all}");
        assert!(all.contains("Deployment 'nothing' doesn't exist"), "{all}");
    };
    let from_file: Vec<&str> = ["--password-file", file]
        .into_iter()
        .chain(missing)
        .collect();
    let output = run_with(&[], &from_file);
    logged_in(&output);
    assert!(!text(&output).contains(PASSWORD_WARNING));
    let output = run_with(&[("BOSH_CLIENT_SECRET", DEFAULT_CLIENT_SECRET)], &missing);
    logged_in(&output);
    assert!(!text(&output).contains(PASSWORD_WARNING));
    let on_command_line: Vec<&str> = ["-p", DEFAULT_CLIENT_SECRET]
        .into_iter()
        .chain(missing)
        .collect();
    let output = run_with(&[], &on_command_line);
    logged_in(&output);
    assert!(
        text(&output).contains(PASSWORD_WARNING),
        "{}",
        text(&output)
    );
    // The file's first line is what is sent: another one is refused by UAA.
    let wrong_file = work.root().join("wrong-password");
    write_with_mode(&wrong_file, "not-the-secret\n", 0o600);
    let output = run_with(
        &[],
        &[
            "--password-file",
            wrong_file.to_str().unwrap(),
            "-d",
            "nothing",
            "pre-backup-check",
        ],
    );
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert!(
        text(&output).contains("refused client `admin`"),
        "{}",
        text(&output)
    );
    // Both: which one was meant is unclear.
    let output = run_with(
        &[],
        &[
            "-p",
            DEFAULT_CLIENT_SECRET,
            "--password-file",
            file,
            "-d",
            "cf",
            "pre-backup-check",
        ],
    );
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert!(text(&output).contains("Give either --password or --password-file, not both."));
    // A password file others may read is refused, with the fix.
    fs::set_permissions(&password_file, fs::Permissions::from_mode(0o644)).unwrap();
    let output = run_with(
        &[],
        &["--password-file", file, "-d", "cf", "pre-backup-check"],
    );
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert!(
        text(&output).contains(&format!(
            "Cannot use --password-file `{file}`: its group or other users may access it (mode 0644); run `chmod 600 {file}`"
        )),
        "{}",
        text(&output)
    );
    fs::set_permissions(&password_file, fs::Permissions::from_mode(0o600)).unwrap();

    // --all-deployments: each deployment's log is private.
    let output = run_with(
        &[],
        &[
            "--password-file",
            file,
            "--all-deployments",
            "backup",
            "--artifact-path",
            work.path().to_str().unwrap(),
        ],
    );
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    // And every log written here is private: that deployment's log, and the
    // bbr-<time>.err.log of each failed run above.
    let logs: Vec<PathBuf> = tree(work.path())
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    let named = |start: &str, end: &str| {
        logs.iter().any(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name.starts_with(start) && name.ends_with(end)
        })
    };
    assert!(
        named("cf_", ".log") && named("bbr-", ".err.log"),
        "{logs:?}"
    );
    for log in &logs {
        assert_eq!(mode(log), 0o600, "{}", log.display());
    }
}

#[test]
fn file_stores_keep_backups_private_whatever_the_umask() {
    cairn_testbed::require_root!();
    let bed = TestBed::start(&[("app", 0, &["files"])]).expect("test bed");
    let work = workdir();
    let store = work.root().join("store");
    fs::create_dir(&store).unwrap();
    let url = format!("file://{}", store.display());
    let inventory = bed.inventory();
    let output = cairn_umask_022(
        work.path(),
        &[],
        &[
            "deployment",
            "--inventory",
            inventory.to_str().unwrap(),
            "backup",
            "--store",
            &url,
        ],
    );
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let entries = tree(&store);
    assert!(
        entries.iter().any(|p| p.ends_with("manifest.json")),
        "{entries:?}"
    );
    for path in entries {
        let expected = if path.is_dir() { 0o700 } else { 0o600 };
        assert_eq!(mode(&path), expected, "{}", path.display());
    }
}

#[test]
fn private_keys_must_be_private_and_may_have_a_passphrase() {
    cairn_testbed::require_root!();
    let bed = TestBed::start(&[("app", 0, &["files"])]).expect("test bed");
    let work = workdir();
    let check = |key: &Path, extra: &[&str]| {
        let original = fs::read_to_string(bed.inventory()).unwrap();
        let inventory = work.root().join("inventory.yml");
        fs::write(
            &inventory,
            original.replace(
                "private_key: id_ed25519",
                &format!("private_key: {}", key.display()),
            ),
        )
        .unwrap();
        let mut args = vec!["deployment", "--inventory", inventory.to_str().unwrap()];
        args.extend_from_slice(extra);
        args.push("pre-backup-check");
        cairn_umask_022(work.path(), &[], &args)
    };

    // A key its group or others may read: refused, with the chmod that fixes it.
    let loose = work.root().join("loose_key");
    fs::copy(bed.private_key(), &loose).unwrap();
    fs::set_permissions(&loose, fs::Permissions::from_mode(0o644)).unwrap();
    let output = check(&loose, &[]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert!(
        text(&output).contains(&format!(
            "Cannot use private key `{0}`: its group or other users may access it (mode 0644); run `chmod 600 {0}`",
            loose.display()
        )),
        "{}",
        text(&output)
    );
    fs::set_permissions(&loose, fs::Permissions::from_mode(0o600)).unwrap();
    let output = check(&loose, &[]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));

    // The same key with a passphrase: refused without it, used with it.
    let locked = work.root().join("locked_key");
    fs::copy(bed.private_key(), &locked).unwrap();
    let protected = Command::new("ssh-keygen")
        .args(["-q", "-p", "-P", "", "-N", "correct horse battery", "-f"])
        .arg(&locked)
        .status()
        .unwrap();
    assert!(protected.success());
    let output = check(&locked, &[]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert!(
        text(&output).contains("it is passphrase-protected; give its passphrase in a file (mode 0600) with --private-key-passphrase-file FILE"),
        "{}",
        text(&output)
    );
    let passphrase = work.root().join("passphrase");
    write_with_mode(&passphrase, "correct horse battery\n", 0o600);
    let passphrase_flag = [
        "--private-key-passphrase-file",
        passphrase.to_str().unwrap(),
    ];
    let output = check(&locked, &passphrase_flag);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    write_with_mode(&passphrase, "wrong\n", 0o600);
    let output = check(&locked, &passphrase_flag);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert!(
        text(&output)
            .contains("the passphrase of --private-key-passphrase-file does not decrypt it"),
        "{}",
        text(&output)
    );
}
