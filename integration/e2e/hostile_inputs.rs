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
