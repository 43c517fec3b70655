//! End-to-end: `cairn repo init|check` and the bad inputs of repository store URLs
//! (`repo+…`): a URL with no store after `repo+`, a repository that does not exist (named with
//! `cairn repo init`), a password file that is missing, world-readable or not given, a wrong
//! password, and plain-store flags given a repository. No test bed: nothing here reaches an
//! instance.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;

use cairn_testbed::stores::{Emulator, Server};
use cairn_testbed::TestBed;

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
fn plain_store_flags_that_repositories_lack_are_refused_naming_what_works() {
    let work = workdir();
    let root = work.root().join("repo");
    std::fs::create_dir(&root).unwrap();
    let url = format!("repo+file://{}", root.display());
    for (args, what) in [
        (
            vec!["list", "-d", "testbed", "--max-age", "1d"],
            "`backups list --max-age` (the overdue check)",
        ),
        (
            vec!["verify", "testbed/20240101T000000Z", "--sample", "10"],
            "`backups verify --sample`",
        ),
    ] {
        let mut all = vec!["backups", "--store", &url];
        all.extend_from_slice(&args);
        let output = run(work.path(), &all);
        assert_eq!(output.status.code(), Some(1), "{}", text(&output));
        assert!(
            text(&output).contains(what) && text(&output).contains(&format!(
                "does not support repositories yet (--store {url}); `backups list|show|verify|delete|prune|report` do without it."
            )),
            "{}",
            text(&output)
        );
    }
}

/// `cairn ARGS` with the repository password in `CAIRN_REPOSITORY_PASSWORD_FILE`.
pub(crate) fn with_password(work: &Path, password: &Path, args: &[&str]) -> Output {
    let output = cairn_command_in(work)
        .args(args)
        .env("CAIRN_REPOSITORY_PASSWORD_FILE", password)
        .output()
        .expect("cairn runs");
    logged(args, output)
}

/// `cairn deployment --inventory BED ARGS` with the repository password.
pub(crate) fn on_bed(bed: &TestBed, work: &Path, password: &Path, args: &[&str]) -> Output {
    let inventory = bed.inventory();
    let mut all = vec!["deployment", "--inventory", inventory.to_str().unwrap()];
    all.extend_from_slice(args);
    with_password(work, password, &all)
}

/// The backup ids `backups list` prints for the test bed's deployment, oldest first.
pub(crate) fn repository_backups(work: &Path, url: &str, password: &Path) -> Vec<String> {
    let list = with_password(work, password, &["backups", "--store", url, "list"]);
    assert_eq!(list.status.code(), Some(0), "{}", text(&list));
    String::from_utf8_lossy(&list.stdout)
        .lines()
        .filter_map(|line| line.strip_prefix("testbed/"))
        .map(|rest| rest.split_whitespace().next().unwrap().to_string())
        .collect()
}

/// A test bed whose `files` job (app/0) backs up 16 MiB that do not compress or repeat, a
/// small file and one in a folder. Returns the bed and the job's data folder.
pub(crate) fn bed_with_files() -> (TestBed, PathBuf) {
    let bed = TestBed::start(&[("app", 0, &["files"])]).expect("test bed");
    let files = bed.host("app", 0).vcap_dir.join("store/files");
    std::fs::create_dir_all(files.join("sub")).unwrap();
    write_pseudo_random(&files.join("random.bin"), 16 << 20);
    std::fs::write(files.join("small.txt"), b"first night\n").unwrap();
    std::fs::write(files.join("sub/deep.txt"), b"in a folder\n").unwrap();
    (bed, files)
}

/// Backup, change a file, backup again into the repository at `url` (created here); both
/// restores byte-identical; `pack_bytes` (when the store can be counted) shows the second
/// backup added far less than the first.
fn two_nights_and_both_restores(
    url: &str,
    pack_bytes: Option<&dyn Fn() -> u64>,
) -> (Workdir, PathBuf, String) {
    let (bed, files) = bed_with_files();
    let work = workdir();
    let password = password_file(work.root(), "password", "correct horse", 0o600);
    created_id(&repo(
        work.path(),
        &["init", "--allow-unversioned"],
        url,
        &password,
    ));
    let first_tree = tree_digest(&files);
    let first = on_bed(&bed, work.path(), &password, &["backup", "--store", url]);
    assert_eq!(first.status.code(), Some(0), "{}", text(&first));
    assert_nothing_left(&bed);
    let after_first = pack_bytes.map(|count| count());

    std::fs::write(files.join("small.txt"), b"second night, changed\n").unwrap();
    let second_tree = tree_digest(&files);
    // Backup ids have a one-second resolution.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let second = on_bed(&bed, work.path(), &password, &["backup", "--store", url]);
    assert_eq!(second.status.code(), Some(0), "{}", text(&second));
    if let (Some(count), Some(after_first)) = (pack_bytes, after_first) {
        let added = count() - after_first;
        eprintln!("packs: first backup {after_first} bytes, second added {added} bytes");
        assert!(after_first > 16 << 20, "{after_first}");
        assert!(
            added * 50 < after_first,
            "second backup added {added} of {after_first}"
        );
    }
    let ids = repository_backups(work.path(), url, &password);
    assert_eq!(ids.len(), 2, "{ids:?}");
    let show = with_password(
        work.path(),
        &password,
        &[
            "backups",
            "--store",
            url,
            "show",
            &format!("testbed/{}", ids[0]),
        ],
    );
    assert_eq!(show.status.code(), Some(0), "{}", text(&show));
    assert!(
        String::from_utf8_lossy(&show.stdout).contains("app-0-files  snapshot "),
        "{}",
        text(&show)
    );

    for (id, tree) in [(&ids[0], &first_tree), (&ids[1], &second_tree)] {
        std::fs::write(files.join("random.bin"), b"overwritten").unwrap();
        std::fs::remove_file(files.join("sub/deep.txt")).unwrap();
        let restore = on_bed(
            &bed,
            work.path(),
            &password,
            &["restore", "--store", url, "--backup", id],
        );
        assert_eq!(restore.status.code(), Some(0), "{}", text(&restore));
        assert_eq!(&tree_digest(&files), tree, "restore of {id}");
        assert_nothing_left(&bed);
    }
    let latest = on_bed(
        &bed,
        work.path(),
        &password,
        &["restore", "--store", url, "--latest"],
    );
    assert_eq!(latest.status.code(), Some(0), "{}", text(&latest));
    assert_eq!(tree_digest(&files), second_tree);

    // A wrong password stops a backup and a restore before any script runs.
    let wrong = password_file(work.root(), "wrong", "not it", 0o600);
    forget_script_events(&bed);
    for args in [
        vec!["backup", "--store", url],
        vec!["restore", "--store", url, "--latest"],
    ] {
        let refused = on_bed(&bed, work.path(), &wrong, &args);
        assert_eq!(refused.status.code(), Some(1), "{}", text(&refused));
        assert!(
            text(&refused).contains("The repository password does not open the repository"),
            "{}",
            text(&refused)
        );
        assert_no_script_ran(&bed);
    }
    // `backups verify`: the backup's snapshots, every pack they use read.
    let backup = format!("testbed/{}", ids[1]);
    let verify = with_password(
        work.path(),
        &password,
        &["backups", "--store", url, "verify", &backup],
    );
    assert_eq!(verify.status.code(), Some(0), "{}", text(&verify));
    assert!(
        String::from_utf8_lossy(&verify.stdout)
            .contains(": verified (1 artifacts, every pack they use read)"),
        "{}",
        text(&verify)
    );
    (work, password, backup)
}

/// Bytes of the files under `dir`.
fn bytes_under(dir: &Path) -> u64 {
    let mut total = 0;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    for entry in entries.flatten() {
        let meta = entry.metadata().unwrap();
        total += if meta.is_dir() {
            bytes_under(&entry.path())
        } else {
            meta.len()
        };
    }
    total
}

#[test]
fn backups_into_a_folder_repository_deduplicate_and_restore_byte_identical() {
    let work = workdir();
    let root = work.root().join("repo");
    std::fs::create_dir(&root).unwrap();
    let data = root.join("data");
    let url = format!("repo+file://{}", root.display());
    let (work, password, backup) = two_nights_and_both_restores(&url, Some(&|| bytes_under(&data)));
    // The biggest data pack (random.bin's chunks) deleted behind Cairn's back: `backups
    // verify` finds it (the trees, in their own packs, still read).
    let mut packs: Vec<(u64, PathBuf)> = std::fs::read_dir(&data)
        .unwrap()
        .flat_map(|folder| std::fs::read_dir(folder.unwrap().path()).unwrap())
        .map(|pack| {
            let pack = pack.unwrap();
            (pack.metadata().unwrap().len(), pack.path())
        })
        .collect();
    packs.sort();
    std::fs::remove_file(&packs.last().unwrap().1).unwrap();
    let verify = with_password(
        work.path(),
        &password,
        &["backups", "--store", &url, "verify", &backup],
    );
    assert_eq!(verify.status.code(), Some(1), "{}", text(&verify));
    assert!(
        String::from_utf8_lossy(&verify.stdout).contains("error: "),
        "{}",
        text(&verify)
    );
}

#[test]
fn backups_into_an_s3_repository_restore_byte_identical() {
    let moto = Emulator::start(Server::Moto);
    moto.fixture(&["create-bucket", "cairn-repos", "versioned"]);
    let url = format!(
        "repo+s3://cairn-repos/nightly?region=us-east-1&endpoint={}&path_style=true",
        moto.endpoint
    );
    two_nights_and_both_restores(&url, None);
}
