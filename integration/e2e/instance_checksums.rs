//! Checksums at backup (issue 21, lever 1): by default the instance reads each staged byte
//! once (`tar -c`) and `metadata`'s per-file sha256 come from that stream; with
//! `--instance-checksums` the instance hashes every file in a second read, as bbr does, and a
//! difference fails the backup. Without the second read, a file written while tar reads it
//! still fails the artifact (tar's "file changed as we read it").

use std::fs;
use std::os::unix::fs::PermissionsExt;

use crate::common::*;
use cairn_testbed::TestBed;
use sha2::{Digest, Sha256};

/// An `openssl` on the host that counts its calls in `/var/vcap/openssl-calls` and prints a
/// wrong digest (all zeros) for every file it is given.
const LYING_OPENSSL: &str = "#!/bin/sh\n\
echo call >> /var/vcap/openssl-calls\n\
for f in \"$@\"; do case \"$f\" in -*|dgst) ;; *) printf '%064d *%s\\n' 0 \"$f\" ;; esac; done\n";

#[test]
fn the_instance_hashes_files_a_second_time_only_with_instance_checksums() {
    cairn_testbed::require_root!();
    let bed = TestBed::start(&[("app", 0, &["files"])]).expect("test bed");
    let host = bed.host("app", 0);
    let content = b"each byte is read once on the instance\n";
    let store = host.vcap_dir.join("store/files");
    fs::create_dir_all(&store).unwrap();
    fs::write(store.join("known"), content).unwrap();
    let fake = host.vcap_dir.join("lying-openssl");
    fs::write(&fake, LYING_OPENSSL).unwrap();
    fs::set_permissions(&fake, fs::Permissions::from_mode(0o755)).unwrap();
    let mounted = bed
        .exec(
            host,
            "mount --bind /var/vcap/lying-openssl \"$(command -v openssl)\"",
        )
        .unwrap();
    assert!(mounted.status.success(), "{mounted:?}");
    let calls = host.vcap_dir.join("openssl-calls");

    // Default: no second read, and metadata's digest is the file's.
    let work = workdir();
    let output = logged(&["backup"], backup_into(&bed, work.path(), &[]));
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert!(
        !calls.exists(),
        "the instance hashed files without --instance-checksums"
    );
    let metadata = fs::read_to_string(backup_dir(work.path()).join("metadata")).unwrap();
    let expected = hex::encode(Sha256::digest(content));
    assert!(
        metadata.contains(&format!("./known: {expected}")),
        "{metadata}"
    );

    // --instance-checksums: the instance's second read is compared, and here it lies.
    let work = workdir();
    let output = logged(
        &["backup", "--instance-checksums"],
        backup_into(&bed, work.path(), &["--instance-checksums"]),
    );
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert!(
        calls.exists(),
        "--instance-checksums did not hash on the instance"
    );
    assert!(
        text(&output).contains("checksum failed for app/0 files - checksums don't match for [")
            && text(&output).contains("./known"),
        "{}",
        text(&output)
    );
    assert!(tars(&backup_dir(work.path())).is_empty());
    assert_nothing_left(&bed);
}

#[test]
fn a_file_written_while_tar_reads_it_fails_the_backup() {
    cairn_testbed::require_root!();
    let bed = TestBed::start(&[("app", 0, &["files"])]).expect("test bed");
    // The job stages a 64 MiB file and leaves a writer appending to it until the staged
    // directory is gone (it ends within 2,000,000 appends in any case).
    let backup = "#!/bin/sh\nset -eu\n\
        a=${BBR_ARTIFACT_DIRECTORY:?}\n\
        head -c 67108864 /dev/zero > \"$a/growing\"\n\
        ( exec 3>>\"$a/growing\"; i=0; \
          while [ -d \"$a\" ] && [ $i -lt 2000000 ]; do echo x >&3; i=$((i+1)); done ) \
          >/dev/null 2>&1 </dev/null &\n";
    bed.install_script(bed.host("app", 0), "files", "backup", backup)
        .unwrap();
    let work = workdir();
    let output = logged(&["backup"], backup_into(&bed, work.path(), &[]));
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert!(
        text(&output).contains("file changed as we read it"),
        "{}",
        text(&output)
    );
    assert!(tars(&backup_dir(work.path())).is_empty());
    assert_nothing_left(&bed);
}
