//! End-to-end: a streaming job (scripts-contract/CONTRACT.md §12) backed up into a repository,
//! beside a directory job, into `repo+file://` and `repo+s3://` (moto): its stdout is one
//! snapshot holding one file, `cairn-stream`; a restore feeds exactly those bytes to its
//! `restore` script's stdin (the script records what it read); a second backup after a
//! change restores both nights; `backups show` and `backups verify` see both artifacts; a
//! flipped byte in the stream's pack is refused by the restore before any restore script runs.

use std::fs;
use std::path::{Path, PathBuf};

use cairn_testbed::stores::{Emulator, Server};
use cairn_testbed::{TestBed, TestHost};

use crate::common::*;
use crate::repository::{
    created_id, on_bed, password_file, repo, repository_backups, with_password,
};
use crate::streaming::{seed_directory, set_stream, wrap_backup};

/// What the streaming job's `backup` wrote (a copy taken by its wrapper), inside the host.
const SENT: &str = "sys/run/stream-sent";
/// What its `restore` read on stdin (a copy taken by its wrapper).
const RECEIVED: &str = "sys/run/stream-received";

/// A host with the `directory` job streaming (its backup's stdout and its restore's stdin
/// copied to [`SENT`] and [`RECEIVED`]) and the classic `files` job. Returns the bed and the
/// two jobs' data folders.
pub(crate) fn streaming_bed() -> (TestBed, PathBuf, PathBuf) {
    let bed = TestBed::start(&[("app", 0, &["directory", "files"])]).expect("test bed");
    let host = bed.host("app", 0);
    let directory = seed_directory(host);
    set_stream(host, "directory", true);
    wrap_backup(
        &bed,
        host,
        "directory",
        &format!("/var/vcap/jobs/directory/bin/bbr/backup.orig | tee /var/vcap/{SENT}"),
    );
    let bin = host.vcap_dir.join("jobs/directory/bin/bbr");
    fs::copy(bin.join("restore"), bin.join("restore.orig")).unwrap();
    bed.install_script(
        host,
        "directory",
        "restore",
        &format!(
            "#!/bin/sh\nset -e\ntee /var/vcap/{RECEIVED} | /var/vcap/jobs/directory/bin/bbr/restore.orig\n"
        ),
    )
    .unwrap();
    let files = host.vcap_dir.join("store/files");
    fs::create_dir_all(files.join("sub")).unwrap();
    fs::write(files.join("small.txt"), b"first night\n").unwrap();
    fs::write(files.join("sub/deep.txt"), b"in a folder\n").unwrap();
    (bed, directory, files)
}

/// The bytes the streaming job's `backup` wrote last.
pub(crate) fn sent(host: &TestHost) -> Vec<u8> {
    fs::read(host.vcap_dir.join(SENT)).unwrap()
}

/// The bytes its `restore` read last, and forgets them (`None`: no restore script ran).
fn received(host: &TestHost) -> Option<Vec<u8>> {
    let path = host.vcap_dir.join(RECEIVED);
    let bytes = fs::read(&path).ok();
    let _ = fs::remove_file(path);
    bytes
}

/// Both jobs' data as it is now.
fn state(directory: &Path, files: &Path) -> (Digests, Digests) {
    (tree_digest(directory), tree_digest(files))
}

type Digests = std::collections::BTreeMap<String, String>;

/// Changes both jobs' data, whatever state they are in (each call writes other bytes).
fn mutate(directory: &Path, files: &Path) {
    static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let _ = fs::remove_file(directory.join("empty"));
    fs::write(
        directory.join("uploads/2026/report 1.txt"),
        format!("overwritten, change {call}\n"),
    )
    .unwrap();
    fs::write(files.join("small.txt"), format!("changed, change {call}\n")).unwrap();
    let _ = fs::remove_file(files.join("sub/deep.txt"));
}

/// Restores backup `id` (`None`: `--latest`) and checks both jobs' data are `expected`, and
/// that the streaming job's `restore` read exactly `stream`.
fn restore_is(
    bed: &TestBed,
    work: &Path,
    password: &Path,
    url: &str,
    id: Option<&str>,
    expected: &(Digests, Digests),
    stream: &[u8],
) {
    let (directory, files) = (
        bed.host("app", 0).vcap_dir.join("store/directory"),
        bed.host("app", 0).vcap_dir.join("store/files"),
    );
    mutate(&directory, &files);
    assert_ne!(&state(&directory, &files), expected);
    let mut args = vec!["restore", "--store", url];
    match id {
        Some(id) => args.extend(["--backup", id]),
        None => args.push("--latest"),
    }
    let output = on_bed(bed, work, password, &args);
    let log = text(&output);
    assert_eq!(output.status.code(), Some(0), "{log}");
    assert!(
        log.contains("Verifying streamed artifact for job directory on app/"),
        "{log}"
    );
    let read = received(bed.host("app", 0)).expect("the streaming job's restore ran");
    assert!(
        read == stream,
        "the restore script read other bytes than were sent"
    );
    assert_eq!(&state(&directory, &files), expected, "{id:?}");
    assert_nothing_left(bed);
}

/// Two nights of both jobs into the repository at `url` (created here), each restored byte
/// for byte; `backups show` and `verify` of the second. Returns the workdir, the password
/// file, the bed and the backup ids.
fn two_nights(url: &str) -> (Workdir, PathBuf, TestBed, Vec<String>) {
    let (bed, directory, files) = streaming_bed();
    let host = bed.host("app", 0);
    let work = workdir();
    let password = password_file(work.root(), "password", "correct horse", 0o600);
    created_id(&repo(
        work.path(),
        &["init", "--allow-unversioned"],
        url,
        &password,
    ));
    let first = state(&directory, &files);
    let output = on_bed(&bed, work.path(), &password, &["backup", "--store", url]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert!(
        text(&output).contains("Finished streaming backup for job directory on app/"),
        "{}",
        text(&output)
    );
    assert_nothing_left(&bed);
    let first_stream = sent(host);
    assert!(first_stream.len() > 3 << 20, "{}", first_stream.len());

    mutate(&directory, &files);
    let second = state(&directory, &files);
    // Backup ids have a one-second resolution.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let output = on_bed(&bed, work.path(), &password, &["backup", "--store", url]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let second_stream = sent(host);
    assert!(second_stream != first_stream);
    let ids = repository_backups(work.path(), url, &password);
    assert_eq!(ids.len(), 2, "{ids:?}");

    let backup = format!("testbed/{}", ids[1]);
    let show = with_password(
        work.path(),
        &password,
        &["backups", "--store", url, "show", &backup],
    );
    let shown = String::from_utf8_lossy(&show.stdout).into_owned();
    assert_eq!(show.status.code(), Some(0), "{}", text(&show));
    assert!(shown.contains(": 2 artifacts"), "{shown}");
    let streamed = shown
        .lines()
        .find(|l| l.starts_with("app-0-directory  snapshot "))
        .unwrap_or_else(|| panic!("{shown}"));
    assert!(
        streamed.ends_with(&format!(
            "  {} bytes  streamed: one file, /cairn-stream",
            second_stream.len()
        )),
        "{shown}"
    );
    assert!(shown.contains("app-0-files  snapshot "), "{shown}");
    let verify = with_password(
        work.path(),
        &password,
        &["backups", "--store", url, "verify", &backup],
    );
    assert_eq!(verify.status.code(), Some(0), "{}", text(&verify));
    assert!(
        String::from_utf8_lossy(&verify.stdout)
            .contains(": verified (2 artifacts, every pack they use read)"),
        "{}",
        text(&verify)
    );

    for (id, expected, stream) in [
        (Some(ids[0].as_str()), &first, &first_stream),
        (Some(ids[1].as_str()), &second, &second_stream),
        (None, &second, &second_stream),
    ] {
        restore_is(&bed, work.path(), &password, url, id, expected, stream);
    }
    (work, password, bed, ids)
}

/// Data packs of a folder repository.
fn packs(root: &Path) -> Vec<PathBuf> {
    fs::read_dir(root.join("data"))
        .unwrap()
        .flat_map(|folder| fs::read_dir(folder.unwrap().path()).unwrap())
        .map(|pack| pack.unwrap().path())
        .collect()
}

#[test]
fn a_streaming_job_round_trips_through_a_folder_repository_and_a_damaged_pack_stops_the_restore() {
    cairn_testbed::require_root!();
    let root = tempfile::tempdir().unwrap();
    let url = format!("repo+file://{}", root.path().display());
    let (work, password, bed, ids) = two_nights(&url);

    // A flipped byte in the biggest pack: the first night's stream, 3 MiB of random data (the
    // `files` job's are a few bytes; the second night added only the chunks that changed, so
    // the first backup uses every blob of it). The restore's first full read of the stream
    // fails on the blob's MAC, before the streaming job's restore script (or any other) runs.
    let biggest = packs(root.path())
        .into_iter()
        .max_by_key(|p| fs::metadata(p).unwrap().len())
        .unwrap();
    let mut content = fs::read(&biggest).unwrap();
    let middle = content.len() / 2;
    content[middle] ^= 0x01;
    fs::write(&biggest, content).unwrap();
    let host = bed.host("app", 0);
    let directory = host.vcap_dir.join("store/directory");
    let files = host.vcap_dir.join("store/files");
    mutate(&directory, &files);
    let before = state(&directory, &files);
    let output = on_bed(
        &bed,
        work.path(),
        &password,
        &["restore", "--store", &url, "--backup", &ids[0]],
    );
    let log = text(&output);
    assert_eq!(output.status.code(), Some(1), "{log}");
    assert!(log.contains("app-0-directory"), "names the artifact: {log}");
    assert_eq!(
        received(host),
        None,
        "the streaming job's restore never ran"
    );
    // Nor did the `files` job's: its data is as it was.
    assert_eq!(state(&directory, &files), before, "nothing was restored");
    assert_nothing_left(&bed);
}

#[test]
fn a_streaming_job_round_trips_through_an_s3_repository() {
    cairn_testbed::require_root!();
    let moto = Emulator::start(Server::Moto);
    moto.fixture(&["create-bucket", "cairn-repos", "versioned"]);
    let url = format!(
        "repo+s3://cairn-repos/streams?region=us-east-1&endpoint={}&path_style=true",
        moto.endpoint
    );
    two_nights(&url);
}
