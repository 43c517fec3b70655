//! Limits on every wait: a hanging `metadata` script ended by `--script-timeout`, a lock
//! script ended by its job's own limit in the config file's `[timeouts]`, and a silent network
//! cut (packets dropped inside the host's namespace with nftables, no FIN, no RST) during the
//! drain, caught by `--stall-timeout`: the copy is stopped, the connection dropped, the
//! instance cleaned up over a new connection once packets flow again, and the backup is
//! never complete. A silent cut while a script runs is noticed by SSH keepalives
//! (`--keepalive-interval`), and the unlock runs over a new connection.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::common::*;
use cairn_testbed::TestBed;

/// A script that never ends on its own.
const HANG: &str = "#!/bin/sh\nexec sleep 600\n";

#[test]
fn a_hanging_metadata_script_is_ended_by_the_script_timeout() {
    cairn_testbed::require_root!();
    let bed = TestBed::start(&[]).expect("test bed");
    // A minute, not for ever: were the limit not applied, the run would go on after it
    // (with empty metadata) and the test fail instead of hanging.
    let slow = "#!/bin/sh\nexec sleep 60\n";
    bed.install_script(bed.host("database", 0), "database", "metadata", slow)
        .unwrap();
    let work = workdir();
    let output = backup_into(&bed, work.path(), &["--script-timeout", "3s"]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert!(
        text(&output).contains(
            "Error attempting to run metadata for job database on database/0: it did not finish within 3 s (--script-timeout) and was sent SIGTERM"
        ),
        "{}",
        text(&output)
    );
    // Discovery failed: nothing was locked and no backup was started.
    assert_no_script_ran(&bed);
    assert_eq!(directories(work.path()), Vec::<String>::new());
}

#[test]
fn a_jobs_own_limit_in_the_config_file_ends_its_lock_script() {
    cairn_testbed::require_root!();
    let bed = TestBed::start(&[]).expect("test bed");
    bed.install_script(bed.host("database", 0), "database", "pre-backup-lock", HANG)
        .unwrap();
    let work = workdir();
    // The job's override beats the script's default and --script-timeout.
    let config = work.root().join("cairn.toml");
    std::fs::write(
        &config,
        "script_timeout = \"20m\"\n[timeouts]\npre-backup-lock = \"10m\"\n[timeouts.jobs.database]\npre-backup-lock = \"3s\"\n",
    )
    .unwrap();
    let output = backup_into(
        &bed,
        work.path(),
        &[
            "--config",
            config.to_str().unwrap(),
            "--script-timeout",
            "15m",
        ],
    );
    assert_eq!(output.status.code(), Some(4), "{}", text(&output));
    assert!(
        text(&output).contains(
            "pre-backup-lock for job database on database/0: it did not finish within 3 s (`pre-backup-lock` under [timeouts.jobs.database] in the config file)"
        ),
        "{}",
        text(&output)
    );
    // Every job that was locked is unlocked, after a failed lock.
    assert_nothing_left(&bed);
    for (host, job) in locking_jobs(&bed) {
        let unlocks = event_times(&bed, host, job, "post-backup-unlock");
        assert_eq!(unlocks.len(), 1, "{job} on {}", host.name());
    }
}

#[test]
fn a_silent_cut_during_the_drain_is_caught_by_the_stall_timeout() {
    cairn_testbed::require_root!();
    let bed = TestBed::start(&[("app", 0, &["app", "files"])]).expect("test bed");
    let app = bed.host("app", 0);
    let nft = bed.exec(app, "nft --version").unwrap();
    assert!(
        nft.status.success(),
        "nft is missing: install nftables (integration/test.sh does): {}",
        text(&nft)
    );
    write_pseudo_random(
        &app.vcap_dir.join("store/files/large.bin"),
        24 * 1024 * 1024,
    );
    // Once sshd has sent 4 MiB, every packet it sends is dropped: the drain of the 24 MiB
    // artifact goes silent half-way, without a FIN or an RST.
    let cut = bed
        .exec(
            app,
            "nft add table inet cairn_cut && \
             nft 'add chain inet cairn_cut out { type filter hook output priority 0; }' && \
             nft add rule inet cairn_cut out tcp sport 22 quota over 4 mbytes drop",
        )
        .unwrap();
    assert!(cut.status.success(), "{}", text(&cut));
    let work = workdir();
    let child = spawn_cairn(
        &bed.inventory(),
        work.path(),
        &[
            "--stall-timeout",
            "5s",
            // Keepalives would declare the connection lost after 5 unanswered intervals
            // (15 s): later than the stall, which must be what ends the copy.
            "--keepalive-interval",
            "3s",
            "backup",
            "-a",
            work.path().to_str().unwrap(),
        ],
    );
    // Packets flow again once Cairn said it dropped the connection: its clean-up then
    // reconnects.
    let output = finish_watching(child, "dropping the connection to app/0", || {
        let restored = bed.exec(app, "nft delete table inet cairn_cut").unwrap();
        assert!(restored.status.success(), "{}", text(&restored));
    });
    let all = text(&output);
    assert_eq!(output.status.code(), Some(1), "{all}");
    assert!(
        all.contains("No data moved from app/0 for job ")
            && all.contains(
                "for 5 s: the copy was stopped and the connection dropped; check the network, or raise --stall-timeout"
            ),
        "{all}"
    );
    assert!(
        all.contains("The SSH connection to app/0 was lost; reconnecting"),
        "{all}"
    );
    // Never complete: no tar, no partial file, and `metadata` lists no instance.
    let backup = backup_dir(work.path());
    assert_eq!(tars(&backup), Vec::<String>::new());
    let metadata = std::fs::read_to_string(backup.join("metadata")).unwrap();
    assert!(!metadata.contains("instances:"), "{metadata}");
    // The app job was unlocked (before the drain, as bbr does) and the instance's artifact
    // directory was removed over the new connection.
    let unlocks: Vec<String> = bed
        .events(app, "app")
        .into_iter()
        .filter(|(_, script, _)| script == "post-backup-unlock")
        .map(|(_, _, extra)| extra)
        .collect();
    assert_eq!(unlocks, vec!["success=true".to_string()]);
    assert_nothing_left(&bed);
    let next = workdir();
    let again = backup_into(&bed, next.path(), &[]);
    assert_eq!(again.status.code(), Some(0), "{}", text(&again));
}

#[test]
fn a_silent_cut_during_a_restore_copy_is_caught_before_any_restore_script() {
    cairn_testbed::require_root!();
    let bed = TestBed::start(&[("app", 0, &["app", "files"])]).expect("test bed");
    let app = bed.host("app", 0);
    write_pseudo_random(
        &app.vcap_dir.join("store/files/large.bin"),
        24 * 1024 * 1024,
    );
    let work = workdir();
    let backed_up = backup_into(&bed, work.path(), &[]);
    assert_eq!(backed_up.status.code(), Some(0), "{}", text(&backed_up));
    let backup = backup_dir(work.path());
    let before = bed.events(app, "app").len();
    // Once sshd has received 4 MiB, every packet to it is dropped: the copy of the 24 MiB
    // artifact to the instance goes silent half-way.
    let cut = bed
        .exec(
            app,
            "nft add table inet cairn_cut && \
             nft 'add chain inet cairn_cut in { type filter hook input priority 0; }' && \
             nft add rule inet cairn_cut in tcp dport 22 quota over 4 mbytes drop",
        )
        .unwrap();
    assert!(cut.status.success(), "{}", text(&cut));
    let child = spawn_cairn(
        &bed.inventory(),
        work.path(),
        &[
            "--stall-timeout",
            "5s",
            "restore",
            "--artifact-path",
            backup.to_str().unwrap(),
        ],
    );
    let output = finish_watching(child, "dropping the connection to app/0", || {
        let restored = bed.exec(app, "nft delete table inet cairn_cut").unwrap();
        assert!(restored.status.success(), "{}", text(&restored));
    });
    let all = text(&output);
    assert_eq!(output.status.code(), Some(1), "{all}");
    assert!(
        all.contains("No data moved to app/0 for job ")
            && all.contains("check the network, or raise --stall-timeout"),
        "{all}"
    );
    // No restore script ran on data that did not arrive, nothing is locked, and the artifact
    // directories were removed over a new connection.
    assert_eq!(bed.events(app, "app").len(), before, "a restore script ran");
    assert_nothing_left(&bed);
}

#[test]
fn a_silent_cut_during_a_script_is_noticed_by_keepalives_and_the_unlock_reconnects() {
    cairn_testbed::require_root!();
    let bed = TestBed::start(&[("app", 0, &["app"])]).expect("test bed");
    let app = bed.host("app", 0);
    // The backup script marks that it runs, then outlasts the cut.
    bed.install_script(
        app,
        "app",
        "backup",
        "#!/bin/sh\ntouch /var/vcap/sys/run/cut-here\nsleep 20\n",
    )
    .unwrap();
    let marker = app.vcap_dir.join("sys/run/cut-here");
    let work = workdir();
    let child = spawn_cairn(
        &bed.inventory(),
        work.path(),
        &[
            "--keepalive-interval",
            "1s",
            "backup",
            "-a",
            work.path().to_str().unwrap(),
        ],
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while !marker.exists() {
        assert!(Instant::now() < deadline, "the backup script never ran");
        std::thread::sleep(Duration::from_millis(20));
    }
    // From now on the host sends nothing: no FIN, no RST, only silence.
    let cut = bed
        .exec(
            app,
            "nft add table inet cairn_cut && \
             nft 'add chain inet cairn_cut out { type filter hook output priority 0; }' && \
             nft add rule inet cairn_cut out tcp sport 22 drop",
        )
        .unwrap();
    assert!(cut.status.success(), "{}", text(&cut));
    // Only unanswered keepalives end the script's wait (with the default interval that takes
    // minutes and the bound of `finish_watching` fails the test). Packets flow again once
    // Cairn reconnects for the unlock.
    let output = finish_watching(
        child,
        "The SSH connection to app/0 was lost; reconnecting",
        || {
            let restored = bed.exec(app, "nft delete table inet cairn_cut").unwrap();
            assert!(restored.status.success(), "{}", text(&restored));
        },
    );
    let all = text(&output);
    assert_eq!(output.status.code(), Some(1), "{all}");
    assert!(
        all.contains("Error attempting to run backup for job app on app/0:"),
        "{all}"
    );
    let unlocks: Vec<String> = bed
        .events(app, "app")
        .into_iter()
        .filter(|(_, script, _)| script == "post-backup-unlock")
        .map(|(_, _, extra)| extra)
        .collect();
    assert_eq!(unlocks, vec!["success=false".to_string()]);
    assert_eq!(tars(&backup_dir(work.path())), Vec::<String>::new());
    assert_nothing_left(&bed);
}

/// Names of the directories in a directory (a backup is one), sorted.
fn directories(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn spawn_cairn(inventory: &Path, work: &Path, args: &[&str]) -> Child {
    let mut all = vec!["deployment", "--inventory", inventory.to_str().unwrap()];
    all.extend_from_slice(args);
    cairn_command_in(work)
        .args(&all)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits for `child`, running `on_line` once when a line of its output contains `line`. A
/// generous bound (90 s; the runs here take 10 to 20 s) kills a run that hangs, so the test
/// fails instead of hanging.
fn finish_watching(mut child: Child, line: &str, on_line: impl FnOnce()) -> Output {
    let (sender, lines) = mpsc::channel::<String>();
    let readers: Vec<_> = [
        Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>,
        Box::new(child.stderr.take().unwrap()),
    ]
    .into_iter()
    .map(|pipe| {
        let sender = sender.clone();
        std::thread::spawn(move || {
            for text in BufReader::new(pipe).lines().map_while(Result::ok) {
                let _ = sender.send(text);
            }
        })
    })
    .collect();
    drop(sender);
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut seen = String::new();
    let mut on_line = Some(on_line);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(text) => {
                if text.contains(line) {
                    if let Some(run) = on_line.take() {
                        run();
                    }
                }
                seen.push_str(&text);
                seen.push('\n');
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let _ = child.kill();
                panic!("cairn did not finish within 90 s:\n{seen}");
            }
        }
    }
    for reader in readers {
        reader.join().unwrap();
    }
    let status = child.wait().unwrap();
    eprintln!("cairn -> {:?}\n{seen}", status.code());
    Output {
        status,
        stdout: seen.into_bytes(),
        stderr: Vec::new(),
    }
}
