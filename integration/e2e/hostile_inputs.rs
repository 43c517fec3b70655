//! End-to-end: inputs written by someone else, tried as an attacker would — a Director whose
//! names are not file names (`../x`, `a/b`), and a bbr backup directory whose tar holds what
//! must not be extracted as root (a setuid file, a FIFO, a world-writable `./`).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;

use crate::common::*;
use cairn_testbed::director::{DeploymentSpec, Director, DirectorOptions};
use cairn_testbed::TestBed;

/// `cairn deployment` against the Director, run in `work`.
fn bosh(director: &Director, work: &Path, args: &[&str]) -> Output {
    let login = director_login(director);
    let all = with_director_login(&login, args);
    let output = cairn_command_in(work)
        .args(&all)
        .output()
        .expect("cairn runs");
    eprintln!(
        "cairn {all:?} -> {:?}\n--- stdout\n{}--- stderr\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Every file and directory under `root`, recursively.
fn everything_under(root: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() && !path.is_symlink() {
                pending.push(path.clone());
            }
            found.push(path);
        }
    }
    found
}

/// Nothing under the scratch directory but the artifact path's contents, the run journals'
/// folder and bbr's error logs in the working directory; and no artifact of the group named
/// `../x` anywhere.
fn assert_nothing_outside(scratch: &Workdir, artifact_path: &Path) {
    for path in everything_under(scratch.root()) {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            !name.starts_with("x-") && !name.starts_with("b_"),
            "written from a hostile name: {}",
            path.display()
        );
        let allowed = path.starts_with(artifact_path)
            || path == artifact_path
            || path.starts_with(state_dir(scratch.path()))
            || path == scratch.path()
            || (path.parent() == Some(scratch.path())
                && name.starts_with("bbr-")
                && name.ends_with(".err.log"));
        assert!(
            allowed,
            "written outside --artifact-path: {}",
            path.display()
        );
    }
}

#[test]
fn director_names_that_are_not_file_names_are_refused_before_anything_is_locked() {
    cairn_testbed::require_root!();
    let bed = TestBed::start(&[("app", 0, &["app", "files"])]).expect("test bed");
    let mut options = DirectorOptions::new(&bed);
    options
        .deployments
        .push(DeploymentSpec::new("evil", &bed).served_as("app", "../x"));
    options.deployments.push(DeploymentSpec::new("a/b", &bed));
    let director = Director::start(&options).expect("director");
    let scratch = workdir();
    let artifact_path = scratch.path().join("artifacts");
    fs::create_dir(&artifact_path).unwrap();
    let artifacts = artifact_path.to_str().unwrap();

    // An instance group `../x`: its artifact would be `<backup>/../x-0-files.tar`.
    let output = bosh(
        &director,
        scratch.path(),
        &[
            "--deployment",
            "evil",
            "backup",
            "--artifact-path",
            artifacts,
        ],
    );
    let all = text(&output);
    assert_eq!(output.status.code(), Some(1), "{all}");
    assert!(
        all.contains(
            "instance group `../x` from the Director's VMs of deployment evil contains `/`: Cairn joins it into file names and refuses it"
        ),
        "{all}"
    );
    // Refused before any SSH user was set up, so before anything could be locked.
    assert!(
        !director.requests().iter().any(|r| r
            .note
            .as_deref()
            .is_some_and(|n| n.starts_with("ssh setup"))),
        "an SSH user was set up"
    );
    assert_no_script_ran(&bed);

    // A deployment named `a/b`, given on the command line: refused before connecting.
    let output = bosh(
        &director,
        scratch.path(),
        &[
            "--deployment",
            "a/b",
            "backup",
            "--artifact-path",
            artifacts,
        ],
    );
    let all = text(&output);
    assert_eq!(output.status.code(), Some(1), "{all}");
    assert!(
        all.contains("deployment `a/b` given with --deployment contains `/`"),
        "{all}"
    );

    // Both from the Director's list: each fails as a deployment; `a/b` has no log file.
    let output = bosh(
        &director,
        scratch.path(),
        &["--all-deployments", "backup", "--artifact-path", artifacts],
    );
    let all = text(&output);
    assert_eq!(output.status.code(), Some(1), "{all}");
    assert!(
        all.contains("deployment `a/b` from the Director's list of deployments contains `/`"),
        "{all}"
    );
    assert!(all.contains("instance group `../x`"), "{all}");
    assert!(
        all.contains("2 out of 2 deployments cannot be backed up"),
        "{all}"
    );
    assert_no_script_ran(&bed);
    assert_nothing_outside(&scratch, &artifact_path);
}

/// One tar entry of a crafted artifact: name, kind, mode, contents.
type Crafted<'a> = (&'a [u8], tar::EntryType, u32, &'a [u8]);

/// A tar as GNU tar writes one (`./`-prefixed names, GNU headers) holding `entries`.
fn crafted_tar(entries: &[Crafted<'_>]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (name, kind, mode, data) in entries {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(*kind);
        header.set_mode(*mode);
        header.set_size(data.len() as u64);
        header.set_uid(0);
        header.set_gid(0);
        header.as_old_mut().name[..name.len()].copy_from_slice(name);
        header.set_cksum();
        builder.append(&header, *data).unwrap();
    }
    builder.into_inner().unwrap()
}

/// Replaces a job's tar in a bbr backup directory and records its checksums in `metadata`, as
/// someone with write access to the backup would: every check but the restore check passes.
fn replace_artifact(backup: &Path, group: &str, job: &str, tar: &[u8]) {
    use cairn::format::bbr_directory::BackupMetadata;
    use cairn::format::digest::{digest_tar, EntryPolicy};
    fs::write(backup.join(format!("{group}-0-{job}.tar")), tar).unwrap();
    let checksums = digest_tar(tar, EntryPolicy::Trust).unwrap();
    let path = backup.join("metadata");
    let mut metadata = BackupMetadata::parse(&fs::read_to_string(&path).unwrap()).unwrap();
    let instance = metadata
        .instances
        .iter_mut()
        .find(|i| i.name == group)
        .unwrap();
    let artifact = instance
        .artifacts
        .iter_mut()
        .find(|a| a.name == job)
        .unwrap();
    artifact.checksums = checksums;
    fs::write(&path, metadata.to_yaml()).unwrap();
}

#[test]
fn a_backup_with_what_root_must_not_extract_is_refused_before_any_script_runs() {
    cairn_testbed::require_root!();
    let bed = TestBed::start(&[("app", 0, &["app", "files"])]).expect("test bed");
    let host = bed.host("app", 0);
    let store = host.vcap_dir.join("store/files");
    fs::write(store.join("kept"), b"as it was").unwrap();
    let work = workdir();
    let output = backup_into(&bed, work.path(), &[]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let backup = backup_dir(work.path());
    let genuine_tar = fs::read(backup.join("app-0-files.tar")).unwrap();
    let genuine_metadata = fs::read(backup.join("metadata")).unwrap();
    let scripts = script_counts(&bed);
    let files_events = bed.events(host, "files").len();
    let store_before = tree_digest(&store);

    let directory = tar::EntryType::Directory;
    let file = tar::EntryType::Regular;
    let cases: [(&[Crafted<'_>], &str); 3] = [
        (
            &[
                (b"./", directory, 0o755, b""),
                (b"./before", file, 0o644, b"extracted first"),
                (b"./suid", file, 0o4755, b"#!/bin/sh\n"),
            ],
            "unsafe tar entry `./suid`: mode 4755 has a setuid, setgid or sticky bit",
        ),
        (
            &[
                (b"./", directory, 0o755, b""),
                (b"./before", file, 0o644, b"extracted first"),
                (b"./pipe", tar::EntryType::Fifo, 0o644, b""),
            ],
            "unsafe tar entry `./pipe`: FIFO",
        ),
        (
            &[
                (b"./", directory, 0o777, b""),
                (b"./before", file, 0o644, b"extracted first"),
            ],
            "unsafe tar entry `./`: mode 0777 is world-writable",
        ),
    ];
    for (entries, refusal) in cases {
        replace_artifact(&backup, "app", "files", &crafted_tar(entries));
        let output = cairn(
            &bed,
            work.path(),
            &["restore", "--artifact-path", backup.to_str().unwrap()],
        );
        let all = text(&output);
        assert_eq!(output.status.code(), Some(1), "{all}");
        assert!(all.contains(refusal), "{all}");
        assert!(
            all.contains("app-0-files.tar"),
            "the artifact is named: {all}"
        );
        // No lock or restore script ran, nothing extracted is left, the job's data is as it was.
        assert_eq!(script_counts(&bed), scripts, "{all}");
        assert_eq!(bed.events(host, "files").len(), files_events, "{all}");
        assert!(
            !host.vcap_dir.join("store/bbr-backup").exists(),
            "the artifact directories are removed"
        );
        assert_eq!(tree_digest(&store), store_before);
    }

    // The genuine backup restores; its artifact root was root's alone while the script ran.
    fs::write(backup.join("app-0-files.tar"), &genuine_tar).unwrap();
    fs::write(backup.join("metadata"), &genuine_metadata).unwrap();
    bed.install_script(
        host,
        "files",
        "restore",
        "#!/bin/sh\nstat -c '%a %U' /var/vcap/store/bbr-backup > /var/vcap/sys/log/artifact-root\n",
    )
    .unwrap();
    let output = cairn(
        &bed,
        work.path(),
        &["restore", "--artifact-path", backup.to_str().unwrap()],
    );
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let root = fs::read_to_string(host.vcap_dir.join("sys/log/artifact-root")).unwrap();
    assert_eq!(root.trim(), "700 root");
}

#[test]
fn file_names_that_are_not_utf8_are_each_verified_in_a_directory_and_a_store() {
    use std::os::unix::ffi::OsStrExt;
    cairn_testbed::require_root!();
    let bed = TestBed::start(&[("app", 0, &["files"])]).expect("test bed");
    let host = bed.host("app", 0);
    let store = host.vcap_dir.join("store/files");
    let ff = store.join(std::ffi::OsStr::from_bytes(b"a\xff"));
    let fe = store.join(std::ffi::OsStr::from_bytes(b"a\xfe"));
    fs::write(&ff, b"one").unwrap();
    fs::write(&fe, b"two").unwrap();

    // A bbr directory: `metadata` holds both names, as bbr's yaml.v2 writes them.
    let work = workdir();
    let output = backup_into(&bed, work.path(), &[]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let backup = backup_dir(work.path());
    let metadata = fs::read_to_string(backup.join("metadata")).unwrap();
    assert!(metadata.contains("!!binary Li9h/w==: "), "{metadata}");
    assert!(metadata.contains("!!binary Li9h/g==: "), "{metadata}");
    let restore = |work: &Path, args: &[&str]| {
        fs::remove_file(&ff).unwrap();
        fs::remove_file(&fe).unwrap();
        let output = cairn(&bed, work, args);
        (output.status.code(), text(&output))
    };
    let from_directory = ["restore", "--artifact-path", backup.to_str().unwrap()];
    let (code, all) = restore(work.path(), &from_directory);
    assert_eq!(code, Some(0), "{all}");
    assert_eq!(fs::read(&ff).unwrap(), b"one");
    assert_eq!(fs::read(&fe).unwrap(), b"two");

    // One of the two changed (same size), the other not: the changed one is named.
    let tar_path = backup.join("app-0-files.tar");
    let mut tar = fs::read(&tar_path).unwrap();
    let at = tar.windows(3).position(|w| w == b"one").unwrap();
    tar[at..at + 3].copy_from_slice(b"ONE");
    fs::write(&tar_path, &tar).unwrap();
    let (code, all) = restore(work.path(), &from_directory);
    assert_eq!(code, Some(1), "{all}");
    assert!(
        all.contains("checksums don't match for [./a\\xff]. Checksum failed for 1 files"),
        "{all}"
    );

    // A store: `manifest.json` keeps both names apart too.
    fs::write(&ff, b"one").unwrap();
    fs::write(&fe, b"two").unwrap();
    let store_dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}", store_dir.path().display());
    let work = workdir();
    let output = cairn(&bed, work.path(), &["backup", "--store", &url]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let manifest = everything_under(store_dir.path())
        .into_iter()
        .find(|p| p.ends_with("manifest.json"))
        .unwrap();
    let manifest = fs::read_to_string(manifest).unwrap();
    assert!(manifest.contains("\"Li9h/w==\""), "{manifest}");
    assert!(manifest.contains("\"Li9h/g==\""), "{manifest}");
    let (code, all) = restore(work.path(), &["restore", "--store", &url, "--latest"]);
    assert_eq!(code, Some(0), "{all}");
    assert_eq!(fs::read(&ff).unwrap(), b"one");
    assert_eq!(fs::read(&fe).unwrap(), b"two");
}
