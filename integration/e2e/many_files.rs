//! End-to-end: one artifact of 100,000 small files and two larger ones (issue 15, "a million
//! files", CI's smaller version; the million is `integration/bench/million_files.sh`). Backed
//! up into a bbr directory and a `file://` store, restored from each, and the host's tree is
//! byte-identical every time: every per-file structure (the tar's digests, the instance's
//! checksum listing read as it arrives, `metadata`, the manifest, the restore check) carries
//! all of them.

use std::fs;
use std::path::Path;

use crate::common::*;
use cairn_testbed::TestBed;

/// Small files in the artifact.
const SMALL_FILES: usize = 100_000;
/// Small files per directory.
const PER_DIRECTORY: usize = 500;

#[test]
fn a_hundred_thousand_files_back_up_and_restore_byte_identically() {
    cairn_testbed::require_root!();
    let bed = TestBed::start(&[("app", 0, &["files"])]).expect("test bed");
    let files = bed.host("app", 0).vcap_dir.join("store/files");
    write_many_files(&files);
    let before = tree_digest(&files);
    // The seeded files, the small ones, the two large ones, and the directories.
    assert!(before.len() > SMALL_FILES + 2, "{}", before.len());

    let work = workdir();
    let directory = work.path().join("dir");
    let store_dir = work.path().join("store");
    fs::create_dir(&directory).unwrap();
    fs::create_dir(&store_dir).unwrap();
    let store = format!("file://{}", store_dir.display());

    let output = cairn(
        &bed,
        work.path(),
        &["backup", "--artifact-path", directory.to_str().unwrap()],
    );
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let backup = backup_dir(&directory);
    let files_listed = before.keys().filter(|name| !name.ends_with('/')).count();
    assert_eq!(
        checksums_in_metadata(&backup.join("metadata")),
        files_listed
    );

    let output = cairn(&bed, work.path(), &["backup", "--store", &store]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert_nothing_left(&bed);

    for source in [
        vec!["restore", "--artifact-path", backup.to_str().unwrap()],
        vec!["restore", "--store", &store, "--latest"],
    ] {
        fs::remove_dir_all(&files).unwrap();
        fs::create_dir(&files).unwrap();
        let output = cairn(&bed, work.path(), &source);
        assert_eq!(
            output.status.code(),
            Some(0),
            "{source:?}: {}",
            text(&output)
        );
        assert!(
            tree_digest(&files) == before,
            "{source:?}: the restored tree differs from the one backed up"
        );
        assert_nothing_left(&bed);
    }
}

/// `SMALL_FILES` files of 1 to 300 bytes, each different, in directories of `PER_DIRECTORY`,
/// plus a 6 MiB and a 1 MiB + 1 byte file, beside what the test bed seeded.
fn write_many_files(files: &Path) {
    for number in 0..SMALL_FILES {
        let directory = files.join(format!("d{:04}", number / PER_DIRECTORY));
        if number % PER_DIRECTORY == 0 {
            fs::create_dir_all(&directory).unwrap();
        }
        let line = format!("file {number} of a million-file artifact\n");
        let contents = line.repeat(1 + number % 7);
        fs::write(directory.join(format!("f{number:06}.txt")), contents).unwrap();
    }
    write_pseudo_random(&files.join("large.bin"), 6 << 20);
    write_pseudo_random(&files.join("d0000/odd size.bin"), (1 << 20) + 1);
}

/// The per-file entries of a bbr `metadata` file (`      ./name: digest` under `checksums:`).
fn checksums_in_metadata(metadata: &Path) -> usize {
    fs::read_to_string(metadata)
        .unwrap()
        .lines()
        .filter(|line| line.starts_with("      ") && line.contains(": "))
        .count()
}
