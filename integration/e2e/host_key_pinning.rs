//! End-to-end: a man in the middle after a reconnect (issue 17, finding 6). A host's key seen
//! once in a run is the only one accepted when Cairn reconnects to it later in that run —
//! an instance, the `BOSH_ALL_PROXY` jumpbox, a director VM — whatever known_hosts says or
//! `--insecure-skip-host-key-check` allows. Each case cuts the connection in the middle of a
//! backup and puts another key on the host (sshd reads its host key at every connection), as
//! an attacker who took over the address would; the run is refused with one clear line, and
//! once the genuine host is back, `backup-cleanup` unlocks every job.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;
use cairn_testbed::{TestBed, TestHost};

/// Replaces a script of `job` by: the original, a marker file, a 4 s pause — so the
/// connection can be cut at a known point. Returns the marker.
fn pause_after(bed: &TestBed, host: &TestHost, job: &str, script: &str) -> PathBuf {
    let bin = host.vcap_dir.join(format!("jobs/{job}/bin/bbr"));
    fs::copy(bin.join(script), bin.join(format!("{script}.orig"))).unwrap();
    let body = format!(
        "#!/bin/sh\nset -e\n/var/vcap/jobs/{job}/bin/bbr/{script}.orig \"$@\"\ntouch /var/vcap/sys/run/pinning-{script}\nsleep 4\n"
    );
    bed.install_script(host, job, script, &body).unwrap();
    host.vcap_dir.join(format!("sys/run/pinning-{script}"))
}

fn restore_original(host: &TestHost, job: &str, script: &str) {
    let bin = host.vcap_dir.join(format!("jobs/{job}/bin/bbr"));
    fs::rename(bin.join(format!("{script}.orig")), bin.join(script)).unwrap();
    let _ = fs::remove_file(host.vcap_dir.join(format!("sys/run/pinning-{script}")));
}

fn wait_for(path: &Path) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn spawn(work: &Path, env: &[(&str, &str)], args: &[&str]) -> Child {
    cairn_command_in(work)
        .args(args)
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn finish(child: Child) -> Output {
    let output = child.wait_with_output().unwrap();
    eprintln!(
        "cairn -> {:?}\n--- stdout\n{}--- stderr\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Another sshd key on the host's address from now on, and its current SSH sessions killed
/// (not its listener): the next connection Cairn makes meets the impostor's key. Dropping it
/// puts the genuine key back.
struct Impostor {
    key: PathBuf,
}

impl Impostor {
    fn take_over(host: &TestHost) -> Impostor {
        let key = host.dir.join("ssh_host_ed25519_key");
        for suffix in ["", ".pub"] {
            let path = PathBuf::from(format!("{}{suffix}", key.display()));
            fs::rename(&path, format!("{}.genuine", path.display())).unwrap();
        }
        let made = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "impostor", "-f"])
            .arg(&key)
            .status()
            .unwrap();
        assert!(made.success());
        let script = format!(
            "l={pid}; n=$(readlink /proc/$l/ns/net); for p in $(pgrep -x sshd); do \
             [ \"$p\" != \"$l\" ] && [ \"$(readlink /proc/$p/ns/net 2>/dev/null)\" = \"$n\" ] && kill -9 \"$p\"; done; true",
            pid = host.sshd_pid
        );
        assert!(Command::new("sh")
            .args(["-c", &script])
            .status()
            .unwrap()
            .success());
        Impostor { key }
    }
}

impl Drop for Impostor {
    fn drop(&mut self) {
        for suffix in ["", ".pub"] {
            let path = format!("{}{suffix}", self.key.display());
            let _ = fs::rename(format!("{path}.genuine"), &path);
        }
    }
}

/// `SHA256:...` of the host's genuine key.
fn fingerprint(host: &TestHost) -> String {
    let output = Command::new("ssh-keygen")
        .arg("-lf")
        .arg(host.dir.join("ssh_host_ed25519_key.pub"))
        .output()
        .unwrap();
    String::from_utf8_lossy(&output.stdout)
        .split_whitespace()
        .nth(1)
        .unwrap()
        .to_string()
}

/// Runs `args` (a backup whose `backup` script of the database job pauses), lets the
/// impostor of `victim` take over during that pause, and returns the run's output; the
/// genuine key is back when it returns.
fn backup_meeting_an_impostor(
    bed: &TestBed,
    victim: &TestHost,
    env: &[(&str, &str)],
    args: &[&str],
) -> Output {
    let database = bed.host("database", 0);
    let marker = pause_after(bed, database, "database", "backup");
    let work = workdir();
    let child = spawn(work.path(), env, args);
    wait_for(&marker);
    let impostor = Impostor::take_over(victim);
    let output = finish(child);
    drop(impostor);
    restore_original(database, "database", "backup");
    assert!(
        tars(&backup_dir(work.path())).is_empty(),
        "a backup that met a man in the middle has no artifact"
    );
    output
}

/// The line of the refusal: the host's name, its genuine key first seen, another one now.
fn assert_refused(output: &Output, name: &str, host: &TestHost, genuine: &str) {
    let all = text(output);
    let line = all
        .lines()
        .find(|l| {
            l.contains(&format!(
                "Host key of {name} at {}:22 changed during this run",
                host.address
            ))
        })
        .unwrap_or_else(|| panic!("no refusal for {name}:\n{all}"));
    assert!(
        line.contains(&format!(", {genuine} before;"))
            && line.contains(
                "refused whatever known_hosts or --insecure-skip-host-key-check would allow"
            ),
        "{line}"
    );
    // 1 (the backup failed) + 8 (unlock) + 16 (clean-up): the jobs behind the impostor stay
    // locked until `backup-cleanup` reaches the genuine host.
    assert_eq!(output.status.code(), Some(25), "{all}");
}

fn assert_cleanup_unlocks_everything(bed: &TestBed, args: &[&str], env: &[(&str, &str)]) {
    let work = workdir();
    let output = finish(spawn(work.path(), env, args));
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert_nothing_left(bed);
}

#[test]
fn a_host_key_that_changes_at_a_reconnect_is_refused_and_the_jobs_are_unlocked() {
    cairn_testbed::require_root!();
    let bed = TestBed::start(&[
        ("database", 0, &["database"]),
        ("app", 0, &["app"]),
        ("jumpbox", 0, &[]),
    ])
    .expect("test bed");
    let database = bed.host("database", 0);
    let app = bed.host("app", 0);
    let jumpbox = bed.host("jumpbox", 0);
    let inventory = bed.inventory();
    let inventory = inventory.to_str().unwrap();
    let key = bed.private_key();
    let key = key.to_str().unwrap();

    // An instance, its pinned key not checked (--insecure-skip-host-key-check): the impostor
    // is still refused, and the other instance's job is unlocked.
    let deployment = [
        "deployment",
        "--inventory",
        inventory,
        "--insecure-skip-host-key-check",
    ];
    let backup: Vec<&str> = deployment.iter().copied().chain(["backup"]).collect();
    let output = backup_meeting_an_impostor(&bed, database, &[], &backup);
    assert_refused(&output, "database/0", database, &fingerprint(database));
    assert!(!bed.is_locked(app, "app"), "{}", text(&output));
    let cleanup: Vec<&str> = deployment
        .iter()
        .copied()
        .chain(["backup-cleanup"])
        .collect();
    assert_cleanup_unlocks_everything(&bed, &cleanup, &[]);

    // The jumpbox of BOSH_ALL_PROXY: its tunnel carries every instance's connection, so a
    // refused jumpbox stops them all; the clean-up through the genuine one unlocks them.
    let proxy = format!("ssh+socks5://vcap@{}:22?private-key={key}", jumpbox.address);
    let env = [("BOSH_ALL_PROXY", proxy.as_str())];
    let output = backup_meeting_an_impostor(&bed, jumpbox, &env, &backup);
    let name = format!("jumpbox {}", jumpbox.address);
    assert_refused(&output, &name, jumpbox, &fingerprint(jumpbox));
    assert!(
        text(&output).contains("The SSH connection to jumpbox"),
        "the tunnel was reconnected: {}",
        text(&output)
    );
    assert_cleanup_unlocks_everything(&bed, &cleanup, &env);

    // A director VM trusted on first use whose key could not be recorded (a known_hosts that
    // cannot be written): before this issue, the reconnect trusted the impostor on first use
    // all over again.
    let unwritable = bed.known_hosts().join("known_hosts");
    let director = [
        "director",
        "--host",
        &database.address,
        "--username",
        "vcap",
        "--private-key-path",
        key,
        "--known-hosts",
        unwritable.to_str().unwrap(),
    ];
    let backup: Vec<&str> = director.iter().copied().chain(["backup"]).collect();
    let output = backup_meeting_an_impostor(&bed, database, &[], &backup);
    assert!(
        text(&output).contains("trusting it on first use and not recording it"),
        "{}",
        text(&output)
    );
    assert_refused(&output, "bosh/0", database, &fingerprint(database));
    let cleanup: Vec<&str> = director.iter().copied().chain(["backup-cleanup"]).collect();
    assert_cleanup_unlocks_everything(&bed, &cleanup, &[]);
}
