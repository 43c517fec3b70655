//! End-to-end: every cloud store is held to S3's standard — a backup into a bucket or an Azure
//! account without versioning is refused before anything is locked, naming the setting to turn
//! on, unless `--allow-unversioned`; and a store root that does not exist is refused by every
//! command. Azurite has no blob versioning, so the refusal runs against Azurite and the
//! versioned path against `integration/stores/azure_versioned.py`, a scripted server that
//! answers as an Azure account with blob versioning does.

use std::fs;
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use cairn_testbed::stores::{Emulator, Server};
use cairn_testbed::TestBed;

use crate::common::*;
use crate::stores::{list, overwritten_object_does_not_change_restore, round_trip};

/// A backup of a one-instance bed into `store` that must be refused before any lock, with a
/// message holding every one of `expected`.
fn assert_refused_before_any_lock(bed: &TestBed, work: &Path, store: &str, expected: &[&str]) {
    let output = cairn(bed, work, &["backup", "--store", store]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    for part in expected {
        assert!(text(&output).contains(part), "{part}: {}", text(&output));
    }
    for (host, job) in locking_jobs(bed) {
        assert!(
            bed.events(host, job).is_empty(),
            "a job was locked for a refused store"
        );
    }
}

#[test]
fn azure_without_blob_versioning_is_refused_unless_allowed() {
    cairn_testbed::require_root!();
    let azurite = Emulator::start(Server::Azurite);
    azurite.fixture(&["create-container", "cairn-backups"]);
    let url = format!(
        "az://devstoreaccount1/cairn-backups/nightly?endpoint={}",
        azurite.endpoint
    );
    let bed = TestBed::start(&[("database", 0, &["database"])]).expect("test bed");
    let work = workdir();
    assert_refused_before_any_lock(
        &bed,
        work.path(),
        &url,
        &[
            "versioning is not enabled; enable it with `az storage account \
             blob-service-properties update --account-name devstoreaccount1 \
             --enable-versioning true`",
            "Enable versioning for blobs",
            "or pass --allow-unversioned",
        ],
    );
    // The probe left nothing: the store is as empty as before, and listing it writes nothing.
    let bare = format!(
        "az://devstoreaccount1/cairn-backups?endpoint={}",
        azurite.endpoint
    );
    assert!(list(work.path(), &bare).is_empty());
    // pre-backup-check --store says so before the night's backup does, with the same fix.
    let output = cairn(&bed, work.path(), &["pre-backup-check", "--store", &url]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert!(
        text(&output).contains(
            "`az storage account blob-service-properties update --account-name devstoreaccount1 --enable-versioning true`"
        ),
        "{}",
        text(&output)
    );
    let output = cairn(
        &bed,
        work.path(),
        &["pre-backup-check", "--store", &url, "--allow-unversioned"],
    );
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let output = cairn(
        &bed,
        work.path(),
        &["backup", "--store", &url, "--allow-unversioned"],
    );
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert_eq!(list(work.path(), &url).len(), 1);
}

#[test]
fn gcs_without_object_versioning_is_refused_unless_allowed() {
    cairn_testbed::require_root!();
    let gcs = Emulator::start(Server::FakeGcs);
    gcs.fixture(&["create-bucket", "cairn-backups", "unversioned"]);
    let url = format!("gs://cairn-backups/nightly?endpoint={}", gcs.endpoint);
    let bed = TestBed::start(&[("database", 0, &["database"])]).expect("test bed");
    let work = workdir();
    assert_refused_before_any_lock(
        &bed,
        work.path(),
        &url,
        &[
            "versioning is not enabled; enable it with \
             `gcloud storage buckets update gs://cairn-backups --versioning`",
            "or pass --allow-unversioned",
        ],
    );
    let output = cairn(
        &bed,
        work.path(),
        &["backup", "--store", &url, "--allow-unversioned"],
    );
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert_eq!(list(work.path(), &url).len(), 1);
}

/// `integration/stores/azure_versioned.py`, killed when dropped.
struct VersionedAzure {
    child: Child,
    dir: tempfile::TempDir,
    endpoint: String,
}

impl VersionedAzure {
    fn start(container: &str) -> VersionedAzure {
        let dir = tempfile::tempdir().unwrap();
        let ready = dir.path().join("ready");
        let child = Command::new("python3")
            .arg(stores_dir().join("azure_versioned.py"))
            .args(["--account", "devstoreaccount1", "--container", container])
            .arg("--ready")
            .arg(&ready)
            .arg("--log")
            .arg(dir.path().join("requests.log"))
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while !ready.exists() {
            assert!(
                Instant::now() < deadline,
                "the scripted server did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let port = fs::read_to_string(&ready).unwrap();
        let port = port.trim().trim_start_matches("port=").to_string();
        VersionedAzure {
            child,
            dir,
            endpoint: format!("http://127.0.0.1:{port}/devstoreaccount1"),
        }
    }

    /// Overwrites a blob behind Cairn's back (the server checks no signature).
    fn overwrite(&self, container: &str, key: &str) {
        let output = Command::new("python3")
            .arg(stores_dir().join("fixture.py"))
            .args(["azure", &self.endpoint, "put", container, key])
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", text(&output));
    }

    /// Requests that wrote or deleted a probe blob.
    fn probe_requests(&self) -> Vec<String> {
        fs::read_to_string(self.dir.path().join("requests.log"))
            .unwrap_or_default()
            .lines()
            .filter(|line| line.contains("/.cairn-probe/"))
            .map(str::to_string)
            .collect()
    }
}

impl Drop for VersionedAzure {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A version id as Azure writes it (`2026-12-07T01:02:03.1234567Z`), not an ETag.
fn assert_version_id(version: &serde_json::Value) {
    let version = version.as_str().expect("a recorded version");
    assert!(
        version.len() == 28 && version.ends_with('Z') && version.as_bytes()[10] == b'T',
        "not a blob version id: {version}"
    );
}

#[test]
fn azure_with_blob_versioning_records_version_ids_and_restores_them() {
    cairn_testbed::require_root!();
    let server = VersionedAzure::start("cairn-backups");
    let url = format!(
        "az://devstoreaccount1/cairn-backups/nightly?endpoint={}",
        server.endpoint
    );
    // Without --allow-unversioned: the probe finds versioning, backup, verify and restore work.
    round_trip(&url);
    let probes = server.probe_requests();
    assert_eq!(
        probes.iter().filter(|l| l.starts_with("PUT")).count(),
        1,
        "one probe blob per backup: {probes:?}"
    );
    assert_eq!(
        probes.iter().filter(|l| l.starts_with("DELETE")).count(),
        2,
        "the probe blob and its version are deleted: {probes:?}"
    );
    let work = workdir();
    let id = list(work.path(), &url)[0]
        .split('\t')
        .next()
        .unwrap()
        .to_string();
    let show = run(
        work.path(),
        &["backups", "--store", &url, "show", &id, "--json"],
    );
    assert_eq!(show.status.code(), Some(0), "{}", text(&show));
    let manifest: serde_json::Value = serde_json::from_slice(&show.stdout).expect("manifest JSON");
    for artifact in manifest["artifacts"].as_array().unwrap() {
        for segment in artifact["segments"].as_array().unwrap() {
            assert_version_id(&segment["version"]);
        }
    }
    assert_version_id(&manifest["metadata"]["version"]);

    // An overwritten blob: verify and restore read the recorded version by its id.
    let pinned = format!(
        "az://devstoreaccount1/cairn-backups/pinned?endpoint={}",
        server.endpoint
    );
    overwritten_object_does_not_change_restore(&pinned, |key| {
        server.overwrite("cairn-backups", &format!("pinned/{key}"));
    });
}

#[test]
fn a_missing_store_root_is_refused_by_every_command_on_every_store() {
    cairn_testbed::require_root!();
    let moto = Emulator::start(Server::Moto);
    let azurite = Emulator::start(Server::Azurite);
    let gcs = Emulator::start(Server::FakeGcs);
    let work = workdir();
    let missing_dir = work.root().join("no-such-dir");
    let stores = [
        (
            format!("file://{}", missing_dir.display()),
            format!("`{}` does not exist", missing_dir.display()),
        ),
        (
            format!(
                "s3://no-such-bucket/p?endpoint={}&path_style=true&region=us-east-1",
                moto.endpoint
            ),
            "`no-such-bucket`".to_string(),
        ),
        (
            format!(
                "az://devstoreaccount1/no-such-container/p?endpoint={}",
                azurite.endpoint
            ),
            "container `no-such-container` does not exist".to_string(),
        ),
        (
            format!("gs://no-such-bucket/p?endpoint={}", gcs.endpoint),
            "`no-such-bucket`".to_string(),
        ),
    ];
    let bed = TestBed::start(&[("database", 0, &["database"])]).expect("test bed");
    for (url, expected) in &stores {
        let output = run(work.path(), &["backups", "--store", url, "list"]);
        assert_eq!(output.status.code(), Some(1), "{url}: {}", text(&output));
        assert!(text(&output).contains(expected), "{url}: {}", text(&output));
        for flags in [&[][..], &["--allow-unversioned"][..]] {
            let mut backup = vec!["backup", "--store", url.as_str()];
            backup.extend_from_slice(flags);
            let output = cairn(&bed, work.path(), &backup);
            assert_eq!(output.status.code(), Some(1), "{url}: {}", text(&output));
            assert!(text(&output).contains(expected), "{url}: {}", text(&output));
        }
    }
    for (host, job) in locking_jobs(&bed) {
        assert!(
            bed.events(host, job).is_empty(),
            "a job was locked for a missing store"
        );
    }
    assert!(!missing_dir.exists(), "nothing creates the missing root");
}
