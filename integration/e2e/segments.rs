//! End-to-end: artifacts stored as segments (`--segment-size`, docs/stores.md "Segments")
//! against `file://`, moto (S3), Azurite and fake-gcs-server: a ~100 MiB artifact in 8 MiB
//! segments is listed with its segment count, verifies, restores byte for byte; a deleted
//! middle segment, and a segment list reordered or repeated behind Cairn's back, are refused
//! before any restore script runs.

use std::fs;
use std::path::Path;

use crate::common::*;
use crate::stores::list;
use cairn_testbed::TestBed;

/// Size of the file the `files` job backs up: with the rest of its tar, ~100 MiB.
const BIG: usize = 100 * 1024 * 1024 - 300_000;
/// Plain bytes per segment.
const SEGMENT: u64 = 8 << 20;

/// A test bed whose one job (`files` on app/0) backs up ~100 MiB: half pseudo-random, half
/// text, so zstd has work either way. Returns the bed and the folder restored into.
fn bed_with_big_artifact() -> (TestBed, std::path::PathBuf) {
    let bed = TestBed::start(&[("app", 0, &["files"])]).expect("test bed");
    let files = bed.host("app", 0).vcap_dir.join("store/files");
    fs::create_dir_all(&files).unwrap();
    write_pseudo_random(&files.join("random.bin"), BIG / 2);
    let line = "a line of log text, compressible\n";
    fs::write(files.join("text.log"), line.repeat(BIG / 2 / line.len())).unwrap();
    (bed, files)
}

/// The manifest of backup `id`, as `backups show --json` prints it.
fn manifest(work: &Path, store: &str, id: &str) -> serde_json::Value {
    let show = run(work, &["backups", "--store", store, "show", id, "--json"]);
    assert_eq!(show.status.code(), Some(0), "{}", text(&show));
    serde_json::from_slice(&show.stdout).expect("manifest JSON")
}

/// Backs up in 8 MiB segments, checks the segment list, `show`, `verify` and a byte-identical
/// restore; then `delete_segment` removes the middle segment (its key relative to the store's
/// prefix) behind Cairn's back, and verify and restore must refuse it before any script runs.
/// Returns the test bed, the working folder, the backup id and its manifest.
fn segmented_round_trip(
    store: &str,
    backup_flags: &[&str],
    delete_segment: &dyn Fn(&str),
) -> (TestBed, Workdir, String, serde_json::Value) {
    let (bed, files) = bed_with_big_artifact();
    let before = tree_digest(&files);
    let work = workdir();
    let mut backup = vec!["backup", "--store", store, "--segment-size", "8MiB"];
    backup.extend_from_slice(backup_flags);
    let output = cairn(&bed, work.path(), &backup);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert_nothing_left(&bed);
    let id = list(work.path(), store)[0]
        .split('\t')
        .next()
        .unwrap()
        .to_string();

    let manifest = manifest(work.path(), store, &id);
    assert_eq!(manifest["schema"], 2);
    let artifact = &manifest["artifacts"][0];
    let key = artifact["key"].as_str().unwrap();
    let plain_size = artifact["plain_size"].as_u64().unwrap();
    assert!(plain_size > BIG as u64, "{plain_size}");
    let segments = artifact["segments"].as_array().unwrap();
    assert_eq!(segments.len() as u64, plain_size.div_ceil(SEGMENT));
    for (index, segment) in segments.iter().enumerate() {
        assert_eq!(segment["key"], format!("{key}.{index:06}"));
        let expected = if index + 1 == segments.len() {
            plain_size - SEGMENT * index as u64
        } else {
            SEGMENT
        };
        assert_eq!(segment["plain_size"], expected);
        assert_eq!(segment["plain_sha256"].as_str().unwrap().len(), 64);
    }
    let stored: u64 = segments.iter().map(|s| s["size"].as_u64().unwrap()).sum();
    assert_eq!(artifact["size"], stored);
    let show = run(work.path(), &["backups", "--store", store, "show", &id]);
    assert_eq!(show.status.code(), Some(0), "{}", text(&show));
    let shown = String::from_utf8_lossy(&show.stdout).into_owned();
    assert!(
        shown.contains(&format!("(1 artifacts in {} segments, ", segments.len()))
            && shown.contains(&format!("\t{} segments\t", segments.len())),
        "{shown}"
    );

    let verify = run(work.path(), &["backups", "--store", store, "verify", &id]);
    assert_eq!(verify.status.code(), Some(0), "{}", text(&verify));

    fs::write(files.join("random.bin"), b"overwritten").unwrap();
    fs::remove_file(files.join("text.log")).unwrap();
    let output = cairn(
        &bed,
        work.path(),
        &["restore", "--store", store, "--backup", &id],
    );
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert_eq!(tree_digest(&files), before);
    assert_nothing_left(&bed);

    // The middle segment deleted behind Cairn's back: refused before any script runs.
    let middle = segments[segments.len() / 2]["key"]
        .as_str()
        .unwrap()
        .to_string();
    delete_segment(&middle);
    let verify = run(work.path(), &["backups", "--store", store, "verify", &id]);
    assert_eq!(verify.status.code(), Some(1), "{}", text(&verify));
    assert!(text(&verify).contains(&middle), "{}", text(&verify));
    forget_script_events(&bed);
    let output = cairn(
        &bed,
        work.path(),
        &["restore", "--store", store, "--backup", &id],
    );
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert!(
        text(&output).contains(&format!("{middle}` is damaged or missing")),
        "{}",
        text(&output)
    );
    assert_no_script_ran(&bed);
    assert_nothing_left(&bed);
    (bed, work, id, manifest)
}

/// An edit of a manifest's segment list.
type SegmentEdit = dyn Fn(&mut Vec<serde_json::Value>);

/// Rewrites the manifest of `id` in a `file://` store (behind Cairn's back, unsigned).
fn forge(store_dir: &Path, id: &str, manifest: &serde_json::Value) {
    fs::write(
        store_dir.join(id).join("manifest.json"),
        serde_json::to_string_pretty(manifest).unwrap(),
    )
    .unwrap();
}

#[test]
fn local_store_segments_round_trip_and_a_moved_segment_is_refused() {
    cairn_testbed::require_root!();
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}", dir.path().display());
    let root = dir.path().to_path_buf();
    let (bed, work, first, _) = segmented_round_trip(&url, &[], &|key| {
        fs::remove_file(root.join(key)).unwrap();
    });
    let restore =
        |work: &Path, id: &str| cairn(&bed, work, &["restore", "--store", &url, "--backup", id]);
    // A second backup, every segment present, whose segment list is edited.
    let output = cairn(
        &bed,
        work.path(),
        &["backup", "--store", &url, "--segment-size", "8MiB"],
    );
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let id = list(work.path(), &url)
        .into_iter()
        .map(|line| line.split('\t').next().unwrap().to_string())
        .find(|b| *b != first)
        .expect("a second backup");
    let genuine = manifest(work.path(), &url, &id);
    let count = genuine["artifacts"][0]["segments"]
        .as_array()
        .unwrap()
        .len();
    assert!(count >= 12, "{count} segments");
    // Reordered, repeated, dropped: each refused before any script runs.
    let edits: [(&str, &SegmentEdit); 3] = [
        ("reordered", &|s| s.swap(3, 4)),
        ("repeated", &|s| s[4] = s[3].clone()),
        ("dropped", &|s| drop(s.remove(5))),
    ];
    for (what, edit) in edits {
        let mut forged = genuine.clone();
        edit(forged["artifacts"][0]["segments"].as_array_mut().unwrap());
        forge(dir.path(), &id, &forged);
        forget_script_events(&bed);
        let output = restore(work.path(), &id);
        assert_eq!(output.status.code(), Some(1), "{what}: {}", text(&output));
        assert!(
            text(&output).contains("the segment list was reordered, repeated or cut"),
            "{what}: {}",
            text(&output)
        );
        assert_no_script_ran(&bed);
        let verify = run(work.path(), &["backups", "--store", &url, "verify", &id]);
        assert_eq!(verify.status.code(), Some(1), "{what}: {}", text(&verify));
    }
    // The genuine list restores.
    forge(dir.path(), &id, &genuine);
    let output = restore(work.path(), &id);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert_nothing_left(&bed);
}

#[test]
fn s3_segments_round_trip_and_a_deleted_segment_is_refused() {
    cairn_testbed::require_root!();
    let moto = Emulator::start(Server::Moto);
    moto.fixture(&["create-bucket", "cairn-backups", "versioned"]);
    let url = format!(
        "s3://cairn-backups/nightly?endpoint={}&path_style=true&region=us-east-1",
        moto.endpoint
    );
    segmented_round_trip(&url, &[], &|key| {
        moto.fixture(&["delete", "cairn-backups", &format!("nightly/{key}")]);
    });
}

#[test]
fn s3_refuses_a_segment_size_one_object_cannot_hold() {
    cairn_testbed::require_root!();
    let moto = Emulator::start(Server::Moto);
    moto.fixture(&["create-bucket", "cairn-backups", "versioned"]);
    let url = format!(
        "s3://cairn-backups/nightly?endpoint={}&path_style=true&region=us-east-1",
        moto.endpoint
    );
    let bed = TestBed::start(&[("app", 0, &["files"])]).expect("test bed");
    let work = workdir();
    let output = cairn(
        &bed,
        work.path(),
        &["backup", "--store", &url, "--segment-size", "100GiB"],
    );
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert!(
        text(&output).contains(
            "--segment-size 100GiB does not fit: one object there holds at most 83886080000 bytes"
        ) && text(&output).contains("give --segment-size 77GiB or less"),
        "{}",
        text(&output)
    );
    assert_no_script_ran(&bed);
    // Up to the limit is accepted (the backup itself is small).
    let output = cairn(
        &bed,
        work.path(),
        &["backup", "--store", &url, "--segment-size", "77GiB"],
    );
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
}

#[test]
fn azure_segments_round_trip_and_a_deleted_segment_is_refused() {
    cairn_testbed::require_root!();
    let azurite = Emulator::start(Server::Azurite);
    azurite.fixture(&["create-container", "cairn-backups"]);
    let url = format!(
        "az://devstoreaccount1/cairn-backups/nightly?endpoint={}",
        azurite.endpoint
    );
    segmented_round_trip(&url, &["--allow-unversioned"], &|key| {
        azurite.fixture(&["delete", "cairn-backups", &format!("nightly/{key}")]);
    });
}

#[test]
fn gcs_segments_round_trip_and_a_deleted_segment_is_refused() {
    cairn_testbed::require_root!();
    let gcs = Emulator::start(Server::FakeGcs);
    // Without versioning, so that deleting a segment removes its only generation (the
    // fixture deletes the live one; a versioned bucket keeps the generation Cairn reads).
    gcs.fixture(&["create-bucket", "cairn-backups", "unversioned"]);
    let url = format!("gs://cairn-backups/nightly?endpoint={}", gcs.endpoint);
    segmented_round_trip(&url, &["--allow-unversioned"], &|key| {
        gcs.fixture(&["delete", "cairn-backups", &format!("nightly/{key}")]);
    });
}
