//! End-to-end: the real `restic` CLI (Debian's package, 0.14) judges Cairn's repositories, and
//! Cairn opens restic's. `cairn repo init` into `repo+file://` and `repo+s3://` (moto), then
//! `restic cat config`, `restic snapshots` and `restic check` with the same password; the
//! reverse: a repository made and backed up by `restic`, checked by `cairn repo check
//! --read-data` (every pack read through Cairn's ranged reads).

use std::path::Path;
use std::process::{Command, Output};

use cairn_testbed::stores::{Emulator, Server, AWS_ENV};

use crate::common::*;
use crate::repository::{bed_with_files, created_id, on_bed, password_file, repo};
use crate::repository_streaming::{sent, streaming_bed};

/// `restic -r REPOSITORY --no-cache ARGS` with the password file, the emulators' keys and a
/// home of its own.
pub(crate) fn restic(work: &Path, repository: &str, password: &Path, args: &[&str]) -> Output {
    let output = Command::new("restic")
        .args(["-r", repository, "--no-cache"])
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", work)
        .env("RESTIC_PASSWORD_FILE", password)
        .envs(AWS_ENV)
        .env("NO_PROXY", "127.0.0.1")
        .output()
        .expect("restic runs (install Debian's restic package)");
    // A dump's bytes are not shown whole.
    let stdout = String::from_utf8_lossy(&output.stdout);
    let shown: String = stdout.chars().take(4000).collect();
    eprintln!(
        "restic {args:?} -> {:?}\n--- stdout ({} bytes)\n{shown}\n--- stderr\n{}",
        output.status.code(),
        output.stdout.len(),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn succeeded(output: &Output) -> String {
    assert_eq!(output.status.code(), Some(0), "{}", text(output));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// restic opens the repository Cairn made at `url` (`restic_repository` in restic's words):
/// the config is the one Cairn created, there are no snapshots, and `restic check` passes.
fn restic_reads_cairns_repository(work: &Path, url: &str, restic_repository: &str) {
    let password = password_file(work, "password", "correct horse battery", 0o600);
    let id = created_id(&repo(work, &["init"], url, &password));
    let config = succeeded(&restic(
        work,
        restic_repository,
        &password,
        &["cat", "config"],
    ));
    let config: serde_json::Value = serde_json::from_str(&config).expect("config is JSON");
    assert_eq!(config["version"], 2, "{config}");
    assert_eq!(config["id"], id.as_str(), "{config}");
    let snapshots = succeeded(&restic(
        work,
        restic_repository,
        &password,
        &["--no-lock", "snapshots", "--json"],
    ));
    assert_eq!(snapshots.trim(), "[]");
    succeeded(&restic(work, restic_repository, &password, &["check"]));
    // A wrong password is refused by restic too: the key really is sealed with the password.
    let wrong = password_file(work, "wrong", "not it", 0o600);
    let refused = restic(work, restic_repository, &wrong, &["--no-lock", "snapshots"]);
    assert_ne!(refused.status.code(), Some(0), "{}", text(&refused));
}

/// Cairn checks, reading every pack, a repository restic made and backed up into.
fn cairn_reads_restics_repository(work: &Path, url: &str, restic_repository: &str) {
    let password = password_file(work, "restic-password", "made by restic", 0o600);
    succeeded(&restic(work, restic_repository, &password, &["init"]));
    let data = work.join("data");
    std::fs::create_dir_all(data.join("sub")).unwrap();
    let big: Vec<u8> = (0..2_000_000_u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    std::fs::write(data.join("big.bin"), &big).unwrap();
    std::fs::write(data.join("sub/small.txt"), b"small\n").unwrap();
    succeeded(&restic(
        work,
        restic_repository,
        &password,
        &["backup", data.to_str().unwrap()],
    ));
    let check = repo(work, &["check", "--read-data"], url, &password);
    let stdout = succeeded(&check);
    assert!(
        stdout.contains("structure and data checked, no errors (1 snapshots)"),
        "{stdout}"
    );
}

#[test]
fn restic_reads_a_repository_cairn_made_in_a_folder_and_cairn_reads_restics() {
    let work = workdir();
    let root = work.root().join("repo");
    std::fs::create_dir(&root).unwrap();
    restic_reads_cairns_repository(
        work.path(),
        &format!("repo+file://{}", root.display()),
        root.to_str().unwrap(),
    );
    let theirs = work.root().join("restic-repo");
    std::fs::create_dir(&theirs).unwrap();
    cairn_reads_restics_repository(
        work.path(),
        &format!("repo+file://{}", theirs.display()),
        theirs.to_str().unwrap(),
    );
}

#[test]
fn restic_reads_a_repository_cairn_made_in_s3_and_cairn_reads_restics() {
    let moto = Emulator::start(Server::Moto);
    moto.fixture(&["create-bucket", "cairn-repos", "versioned"]);
    let work = workdir();
    let store = |prefix: &str| {
        format!(
            "repo+s3://cairn-repos/{prefix}?region=us-east-1&endpoint={}&path_style=true",
            moto.endpoint
        )
    };
    let restic_repository = |prefix: &str| format!("s3:{}/cairn-repos/{prefix}", moto.endpoint);
    restic_reads_cairns_repository(work.path(), &store("ours"), &restic_repository("ours"));
    cairn_reads_restics_repository(work.path(), &store("theirs"), &restic_repository("theirs"));
}

/// restic lists the snapshots of a Cairn backup and restores one job's files byte-identically
/// (docs/design/repository.md §10).
#[test]
fn restic_lists_and_restores_a_cairn_backup() {
    let (bed, files) = bed_with_files();
    let work = workdir();
    let root = work.root().join("repo");
    std::fs::create_dir(&root).unwrap();
    let url = format!("repo+file://{}", root.display());
    let password = password_file(work.root(), "password", "correct horse", 0o600);
    created_id(&repo(work.path(), &["init"], &url, &password));
    let backup = on_bed(&bed, work.path(), &password, &["backup", "--store", &url]);
    assert_eq!(backup.status.code(), Some(0), "{}", text(&backup));
    let repository = root.to_str().unwrap();
    let listed = succeeded(&restic(
        work.path(),
        repository,
        &password,
        &[
            "--no-lock",
            "snapshots",
            "--json",
            "--tag",
            "cairn-kind=artifact,deployment=testbed",
        ],
    ));
    let snapshots: serde_json::Value = serde_json::from_str(&listed).expect("snapshots JSON");
    let snapshots = snapshots.as_array().unwrap();
    assert_eq!(snapshots.len(), 1, "{listed}");
    assert_eq!(
        snapshots[0]["paths"][0],
        "/var/vcap/store/bbr-backup/app-0-files"
    );
    let records = succeeded(&restic(
        work.path(),
        repository,
        &password,
        &[
            "--no-lock",
            "snapshots",
            "--json",
            "--tag",
            "cairn-kind=record",
        ],
    ));
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&records)
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let id = snapshots[0]["id"].as_str().unwrap();
    let out = work.root().join("restored");
    succeeded(&restic(
        work.path(),
        repository,
        &password,
        &[
            "--no-lock",
            "restore",
            id,
            "--target",
            out.to_str().unwrap(),
        ],
    ));
    assert_eq!(tree_digest(&out), tree_digest(&files));
    succeeded(&restic(
        work.path(),
        repository,
        &password,
        &["check", "--read-data"],
    ));
}

/// A streaming job's artifact is one file, `/cairn-stream`, which `restic dump` gives back
/// byte for byte; the record (`cairn.json`, itself dumped by restic) holds the stream's size
/// and sha256 as a store's manifest does.
#[test]
fn restic_dumps_a_streamed_artifact() {
    cairn_testbed::require_root!();
    let (bed, _, _) = streaming_bed();
    let work = workdir();
    let root = work.root().join("repo");
    std::fs::create_dir(&root).unwrap();
    let url = format!("repo+file://{}", root.display());
    let password = password_file(work.root(), "password", "correct horse", 0o600);
    created_id(&repo(work.path(), &["init"], &url, &password));
    let backup = on_bed(&bed, work.path(), &password, &["backup", "--store", &url]);
    assert_eq!(backup.status.code(), Some(0), "{}", text(&backup));
    let stream = sent(bed.host("app", 0));
    let repository = root.to_str().unwrap();
    let snapshot_of = |tags: &str| {
        let listed = succeeded(&restic(
            work.path(),
            repository,
            &password,
            &["--no-lock", "snapshots", "--json", "--tag", tags],
        ));
        let snapshots: serde_json::Value = serde_json::from_str(&listed).expect("snapshots JSON");
        assert_eq!(snapshots.as_array().unwrap().len(), 1, "{listed}");
        snapshots[0].clone()
    };
    let artifact = snapshot_of("cairn-kind=artifact,deployment=testbed,artifact=app-0-directory");
    assert_eq!(artifact["paths"][0], "/cairn-stream", "{artifact}");
    let dump = restic(
        work.path(),
        repository,
        &password,
        &[
            "--no-lock",
            "dump",
            artifact["id"].as_str().unwrap(),
            "/cairn-stream",
        ],
    );
    assert_eq!(dump.status.code(), Some(0), "{}", text(&dump));
    assert!(
        dump.stdout == stream,
        "restic dump gives the streamed bytes"
    );

    let record = snapshot_of("cairn-kind=record,deployment=testbed");
    let record = succeeded(&restic(
        work.path(),
        repository,
        &password,
        &[
            "--no-lock",
            "dump",
            record["id"].as_str().unwrap(),
            "/cairn.json",
        ],
    ));
    let record: serde_json::Value = serde_json::from_str(&record).expect("cairn.json");
    let artifacts = record["artifacts"].as_array().unwrap();
    let streamed = artifacts
        .iter()
        .find(|a| a["name"] == "app-0-directory")
        .expect("the streamed artifact in cairn.json");
    assert_eq!(streamed["stream"], true, "{streamed}");
    let file = &streamed["files"]["./cairn-stream"];
    assert_eq!(file["size"], stream.len(), "{streamed}");
    assert_eq!(
        file["sha256"],
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&stream)),
        "{streamed}"
    );
    let classic = artifacts
        .iter()
        .find(|a| a["name"] == "app-0-files")
        .expect("the files artifact in cairn.json");
    assert!(classic.get("stream").is_none(), "{classic}");
    succeeded(&restic(
        work.path(),
        repository,
        &password,
        &["check", "--read-data"],
    ));
}
