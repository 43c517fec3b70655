//! End-to-end: one artifact of 100,000 small files and two larger ones (issue 15, "a million
//! files", CI's smaller version; the million is `integration/bench/million_files.sh`). Backed
//! up into a bbr directory and a `file://` store, restored from each, and the host's tree is
//! byte-identical every time (names, kinds, sizes and sha256 of every entry): every per-file
//! structure (the tar's digests, the instance's checksum listings read as they arrive,
//! `metadata`, the manifest, the restore check) carries all of them.
//!
//! Made to take seconds, not minutes, so that it measures Cairn and not the machine: the
//! host's `/var/vcap/store` is a tmpfs (on this project's machines, a disk mounted with
//! `discard` takes 40 to 80 s to delete 100,000 files, once per tree made), the tree is
//! written and listed on the host by one command each, and the job is the test's own
//! (`many`): its backup script hard-links the tree into the artifact directory (`cp -al`) and
//! its restore script replaces the tree with the restored artifact directory (`rm -rf`, `mv`),
//! where the example `files` job copies and deletes file by file.

use std::fs;
use std::path::Path;

use crate::common::*;
use cairn_testbed::{TestBed, TestBedOptions, TestHost};

/// Small files in the artifact.
const SMALL_FILES: usize = 100_000;
/// The test's job.
const JOB: &str = "many";

const BACKUP: &str =
    "#!/bin/sh\nset -eu\ncp -al /var/vcap/store/many/. \"$BBR_ARTIFACT_DIRECTORY\"\n";
const RESTORE: &str = "#!/bin/sh\nset -eu\nrm -rf /var/vcap/store/many\n\
                       mv \"${BBR_ARTIFACT_DIRECTORY%/}\" /var/vcap/store/many\n";

/// On the host: a tmpfs on `/var/vcap/store`, and in `many/` `SMALL_FILES` files of 1 to 300
/// bytes, each different, 500 to a directory, plus a 6 MiB and a 1 MiB + 1 byte file.
fn write_tree() -> String {
    WRITE_TREE.replace("COUNT", &SMALL_FILES.to_string())
}

const WRITE_TREE: &str = "set -eu\n\
    mount -t tmpfs -o size=2g,mode=0755 cairn-many /var/vcap/store\n\
    mkdir /var/vcap/store/many && cd /var/vcap/store/many\n\
    awk -v count=COUNT 'BEGIN { for (n = 0; n < count; n++) {\n\
        d = sprintf(\"d%04d\", int(n / 500)); if (n % 500 == 0) system(\"mkdir \" d)\n\
        f = sprintf(\"%s/f%06d.txt\", d, n)\n\
        for (i = 0; i <= n % 7; i++) printf \"file %d of a million-file artifact\\n\", n > f\n\
        close(f) } }'\n\
    head -c 6291456 /dev/urandom > large.bin\n\
    head -c 1048577 /dev/urandom > 'd0000/odd size.bin'\n";

/// On the host: every entry of the tree, sorted: `d NAME` for a directory, `f SIZE NAME` for a
/// file, then the `sha256sum` line of every file.
const LIST_TREE: &str = "set -eu\ncd /var/vcap/store/many\n\
    find . \\( -type d -printf 'd %p\\n' \\) -o \\( -type f -printf 'f %s %p\\n' \\) \
        -o -printf '? %p\\n' | LC_ALL=C sort\n\
    find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum\n";

/// On the host: changes a restore must undo (a file rewritten, a directory of files gone, a
/// file that was not backed up).
const DAMAGE_TREE: &str = "set -eu\ncd /var/vcap/store/many\n\
    echo changed > d0001/f000500.txt\nrm -rf d0002\necho new > d0003/new.txt\n";

#[test]
fn a_hundred_thousand_files_back_up_and_restore_byte_identically() {
    cairn_testbed::require_root!();
    let options = TestBedOptions { no_seed: true };
    let bed = TestBed::start_with(&[("app", 0, &[JOB])], &options).expect("test bed");
    let host = bed.host("app", 0);
    bed.install_script(host, JOB, "backup", BACKUP).unwrap();
    bed.install_script(host, JOB, "restore", RESTORE).unwrap();
    on_host(&bed, host, &write_tree());
    let before = on_host(&bed, host, LIST_TREE);
    let files = before.lines().filter(|line| line.starts_with("f ")).count();
    assert_eq!(
        files,
        SMALL_FILES + 2,
        "{}",
        &before[..before.len().min(2000)]
    );

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
    assert_eq!(checksums_in_metadata(&backup.join("metadata")), files);
    let output = cairn(&bed, work.path(), &["backup", "--store", &store]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert_no_artifact_directory(&bed, host);

    for source in [
        vec!["restore", "--artifact-path", backup.to_str().unwrap()],
        vec!["restore", "--store", &store, "--latest"],
    ] {
        on_host(&bed, host, DAMAGE_TREE);
        assert!(on_host(&bed, host, LIST_TREE) != before);
        let output = cairn(&bed, work.path(), &source);
        assert_eq!(
            output.status.code(),
            Some(0),
            "{source:?}: {}",
            text(&output)
        );
        assert!(
            on_host(&bed, host, LIST_TREE) == before,
            "{source:?}: the restored tree differs from the one backed up"
        );
        assert_no_artifact_directory(&bed, host);
    }
}

/// Runs `script` as root on the host (inside its mount namespace, where the tmpfs is) and
/// returns its stdout; fails the test when it fails.
fn on_host(bed: &TestBed, host: &TestHost, script: &str) -> String {
    let output = bed.exec(host, script).expect("exec on the host");
    assert!(output.status.success(), "{script}: {}", text(&output));
    String::from_utf8(output.stdout).expect("UTF-8 listing")
}

/// No artifact directory is left on the host's tmpfs ([`assert_nothing_left`] looks under
/// the host's directory, which the tmpfs hides).
fn assert_no_artifact_directory(bed: &TestBed, host: &TestHost) {
    let left = on_host(bed, host, "ls -A /var/vcap/store");
    assert_eq!(left.trim(), JOB, "left on the host's /var/vcap/store");
}

/// The per-file entries of a bbr `metadata` file (`      ./name: digest` under `checksums:`).
fn checksums_in_metadata(metadata: &Path) -> usize {
    fs::read_to_string(metadata)
        .unwrap()
        .lines()
        .filter(|line| line.starts_with("      ") && line.contains(": "))
        .count()
}
