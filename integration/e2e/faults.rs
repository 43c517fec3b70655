//! Fault injection: real backups and restores on the test bed while something breaks — an
//! instance's SSH connection dies in each phase, its disk fills up, the store fails a share of
//! requests or goes down, the operator sends SIGINT or SIGTERM. After each: no job is left
//! locked, the exit code is the documented one, no remote `bbr-backup` directory remains, an
//! incomplete backup has no manifest and no open multipart upload, and the next backup works.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

use crate::common::*;
use cairn_testbed::{TestBed, TestHost};

fn wait_for(path: &Path, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !path.exists() {
        assert!(Instant::now() < deadline, "{what} never happened");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn spawn_cairn(bed: &TestBed, work: &Path, args: &[&str]) -> Child {
    let inventory = bed.inventory();
    let mut all = vec!["deployment", "--inventory", inventory.to_str().unwrap()];
    all.extend_from_slice(args);
    cairn_command_in(work)
        .args(&all)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
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

/// Kills every sshd session process of the host (not its listener): its connections die.
fn kill_ssh_sessions(host: &TestHost) {
    let script = format!(
        "l={pid}; n=$(readlink /proc/$l/ns/net); for p in $(pgrep -x sshd); do \
         [ \"$p\" != \"$l\" ] && [ \"$(readlink /proc/$p/ns/net 2>/dev/null)\" = \"$n\" ] && kill -9 \"$p\"; done; true",
        pid = host.sshd_pid
    );
    let status = Command::new("sh").args(["-c", &script]).status().unwrap();
    assert!(status.success());
}

/// Replaces a script of the database job by: the original, then a marker file, then a pause,
/// so the connection can be cut at a known point of that phase.
fn pause_after(bed: &TestBed, host: &TestHost, job: &str, script: &str) -> PathBuf {
    let bin = host.vcap_dir.join(format!("jobs/{job}/bin/bbr"));
    fs::copy(bin.join(script), bin.join(format!("{script}.orig"))).unwrap();
    let body = format!(
        "#!/bin/sh\nset -e\n/var/vcap/jobs/{job}/bin/bbr/{script}.orig \"$@\"\ntouch /var/vcap/sys/run/fault-{script}\nsleep 4\n"
    );
    bed.install_script(host, job, script, &body).unwrap();
    host.vcap_dir.join(format!("sys/run/fault-{script}"))
}

fn restore_original(host: &TestHost, job: &str, script: &str) {
    let bin = host.vcap_dir.join(format!("jobs/{job}/bin/bbr"));
    fs::rename(bin.join(format!("{script}.orig")), bin.join(script)).unwrap();
    let _ = fs::remove_file(host.vcap_dir.join(format!("sys/run/fault-{script}")));
}

fn assert_next_backup_succeeds(bed: &TestBed) {
    let work = workdir();
    let output = backup_into(bed, work.path(), &[]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert_nothing_left(bed);
}

#[test]
fn a_lost_ssh_connection_in_any_phase_leaves_nothing_locked() {
    cairn_testbed::require_root!();
    let bed = TestBed::start(&[]).expect("test bed");
    let database = bed.host("database", 0);
    // phase, exit code, backup complete: a lost lock is a failed lock (4), a lost backup a
    // failed backup (1); an unlock is run again over a new connection, so the run succeeds.
    for (script, code, complete) in [
        ("pre-backup-lock", 4, false),
        ("backup", 1, false),
        ("post-backup-unlock", 0, true),
    ] {
        let marker = pause_after(&bed, database, "database", script);
        let work = workdir();
        let child = spawn_cairn(
            &bed,
            work.path(),
            &["backup", "-a", work.path().to_str().unwrap()],
        );
        wait_for(&marker, script);
        kill_ssh_sessions(database);
        let output = finish(child);
        assert_eq!(
            output.status.code(),
            Some(code),
            "{script}: {}",
            text(&output)
        );
        assert!(
            text(&output).contains("was lost; reconnecting"),
            "{script}: {}",
            text(&output)
        );
        let tars = tars(&backup_dir(work.path()));
        assert_eq!(!tars.is_empty(), complete, "{script}: {tars:?}");
        // The orphaned script's pause ends; then nothing may be left locked or behind.
        std::thread::sleep(Duration::from_secs(4));
        assert_nothing_left(&bed);
        restore_original(database, "database", script);
        assert_next_backup_succeeds(&bed);
    }
}

#[test]
fn a_lost_ssh_connection_during_the_transfer_fails_the_backup_and_cleans_up() {
    cairn_testbed::require_root!();
    let bed = TestBed::start(&[("app", 0, &["app", "files"])]).expect("test bed");
    let app = bed.host("app", 0);
    write_pseudo_random(
        &app.vcap_dir.join("store/files/large.bin"),
        24 * 1024 * 1024,
    );
    // 16 Mbit/s out of the host: the transfer takes about 12 s.
    let shaped = bed
        .exec(
            app,
            "tc qdisc add dev eth0 root tbf rate 16mbit burst 64kb latency 500ms",
        )
        .unwrap();
    assert!(shaped.status.success(), "{}", text(&shaped));
    let work = workdir();
    let child = spawn_cairn(
        &bed,
        work.path(),
        &["backup", "-a", work.path().to_str().unwrap()],
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let partial = fs::read_dir(work.path()).unwrap().flatten().any(|d| {
            d.path().is_dir()
                && fs::read_dir(d.path()).unwrap().flatten().any(|f| {
                    f.file_name().to_string_lossy().ends_with(".partial")
                        && f.metadata().unwrap().len() > 1_000_000
                })
        });
        if partial {
            break;
        }
        assert!(Instant::now() < deadline, "the transfer never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    kill_ssh_sessions(app);
    let output = finish(child);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert!(
        tars(&backup_dir(work.path())).is_empty(),
        "no tar of an interrupted transfer"
    );
    assert_nothing_left(&bed);
    let _ = bed.exec(app, "tc qdisc del dev eth0 root");
    assert_next_backup_succeeds(&bed);
}

#[test]
fn a_full_disk_during_the_backup_script_fails_cleanly() {
    cairn_testbed::require_root!();
    let bed = TestBed::start(&[("app", 0, &["app", "files"])]).expect("test bed");
    let app = bed.host("app", 0);
    // The host's persistent disk becomes a 256 KiB tmpfs holding 160 KiB of data: the
    // backup's copy of it cannot fit.
    let filled = bed
        .exec(
            app,
            "mount -t tmpfs -o size=256k tmpfs /var/vcap/store && mkdir -p /var/vcap/store/files /var/vcap/store/app \
             && head -c 163840 /dev/urandom > /var/vcap/store/files/data.bin",
        )
        .unwrap();
    assert!(filled.status.success(), "{}", text(&filled));
    let work = workdir();
    let output = backup_into(&bed, work.path(), &[]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert!(
        text(&output).contains("No space left on device"),
        "{}",
        text(&output)
    );
    assert!(!bed.is_locked(app, "app"));
    let leftover = bed
        .exec(app, "test ! -e /var/vcap/store/bbr-backup")
        .unwrap();
    assert!(
        leftover.status.success(),
        "/var/vcap/store/bbr-backup was left on the full disk"
    );
    assert!(tars(&backup_dir(work.path())).is_empty());
    let unmounted = bed.exec(app, "umount /var/vcap/store").unwrap();
    assert!(unmounted.status.success(), "{}", text(&unmounted));
    assert_next_backup_succeeds(&bed);
}

#[test]
fn sigint_and_sigterm_in_lock_backup_and_restore_leave_nothing_locked() {
    cairn_testbed::require_root!();
    let bed = TestBed::start(&[]).expect("test bed");
    let database = bed.host("database", 0);
    let work = workdir();
    let output = backup_into(&bed, work.path(), &[]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let backup = backup_dir(work.path());
    for signal in ["-INT", "-TERM"] {
        for script in ["pre-backup-lock", "backup", "pre-restore-lock", "restore"] {
            let marker = pause_after(&bed, database, "database", script);
            let scratch = workdir();
            let args: Vec<&str> = if script.contains("restore") {
                vec!["restore", "-a", backup.to_str().unwrap()]
            } else {
                vec!["backup", "-a", scratch.path().to_str().unwrap()]
            };
            let child = spawn_cairn(&bed, scratch.path(), &args);
            wait_for(&marker, script);
            Command::new("kill")
                .args([signal, &child.id().to_string()])
                .status()
                .unwrap();
            let output = finish(child);
            assert_eq!(
                output.status.code(),
                Some(1),
                "{signal} in {script}: {}",
                text(&output)
            );
            assert!(
                text(&output).contains("interrupted by SIG"),
                "{}",
                text(&output)
            );
            std::thread::sleep(Duration::from_secs(4));
            assert_nothing_left(&bed);
            restore_original(database, "database", script);
        }
    }
    assert_next_backup_succeeds(&bed);
}

fn s3_url(endpoint: &str) -> String {
    format!("s3://cairn-backups/faults?endpoint={endpoint}&path_style=true&region=us-east-1")
}

#[test]
fn a_flaky_store_is_retried_and_the_backup_and_restore_complete() {
    cairn_testbed::require_root!();
    let moto = Emulator::start(Server::Moto);
    moto.fixture(&["create-bucket", "cairn-backups", "versioned"]);
    let proxy = FaultProxy::start(
        &moto.endpoint,
        r#"{"error_rate": 0.2, "reset_rate": 0.1, "seed": 11}"#,
    );
    let bed = TestBed::start(&[("app", 0, &["app", "files"])]).expect("test bed");
    let app = bed.host("app", 0);
    // Several multipart parts, so that part uploads are retried too.
    write_pseudo_random(
        &app.vcap_dir.join("store/files/large.bin"),
        20 * 1024 * 1024,
    );
    let files = app.vcap_dir.join("store/files");
    let before = tree_digest(&files);
    let url = s3_url(&proxy.endpoint);
    let work = workdir();
    let output = cairn(
        &bed,
        work.path(),
        &["backup", "--store", &url, "--compression", "none"],
    );
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let outcomes = proxy.outcomes();
    let injected = outcomes
        .iter()
        .filter(|o| o.starts_with("injected") || *o == "reset")
        .count();
    assert!(
        injected >= 2,
        "faults were injected and survived: {outcomes:?}"
    );
    fs::remove_dir_all(&files).unwrap();
    let output = cairn(&bed, work.path(), &["restore", "--store", &url, "--latest"]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert_eq!(tree_digest(&files), before);
    assert_nothing_left(&bed);
}

#[test]
fn a_store_that_goes_down_mid_backup_fails_the_run_cleanly() {
    cairn_testbed::require_root!();
    let moto = Emulator::start(Server::Moto);
    moto.fixture(&["create-bucket", "cairn-backups", "versioned"]);
    let proxy = FaultProxy::start(&moto.endpoint, r#"{}"#);
    let bed = TestBed::start(&[]).expect("test bed");
    let database = bed.host("database", 0);
    let marker = pause_after(&bed, database, "database", "backup");
    let url = s3_url(&proxy.endpoint);
    let work = workdir();
    let mut command = cairn_command_in(work.path());
    let inventory = bed.inventory();
    command
        .env("CAIRN_S3_MAX_ATTEMPTS", "3")
        .args([
            "deployment",
            "--inventory",
            inventory.to_str().unwrap(),
            "backup",
            "--store",
            &url,
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = command.spawn().unwrap();
    wait_for(&marker, "the backup script");
    proxy.set(r#"{"down": true}"#);
    let output = finish(child);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert_nothing_left(&bed);
    // Straight to the store: there is no complete backup (no manifest).
    let direct = s3_url(&moto.endpoint);
    let listed = run(
        work.path(),
        &["backups", "--store", &direct, "list", "--json"],
    );
    let listing = String::from_utf8_lossy(&listed.stdout).into_owned();
    // (Nothing may have reached it at all; what did is not a complete backup.)
    assert!(!listing.contains("\"complete\":true"), "{listing}");
    assert!(
        text(&output).contains("503"),
        "the store's answer is named: {}",
        text(&output)
    );
    // The store comes back: the next backup works and leaves no upload open.
    proxy.set(r#"{}"#);
    restore_original(database, "database", "backup");
    let output = cairn(&bed, work.path(), &["backup", "--store", &url]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert_eq!(moto.fixture(&["open-uploads", "cairn-backups"]).trim(), "");
    assert_nothing_left(&bed);
}

#[test]
fn a_sigkilled_backup_is_found_from_the_journal_in_the_store_by_another_jumpbox() {
    cairn_testbed::require_root!();
    let bed = TestBed::start(&[]).expect("test bed");
    let database = bed.host("database", 0);
    let store_dir = workdir();
    let store = format!("file://{}", store_dir.path().display());
    let marker = pause_after(&bed, database, "database", "backup");
    // Jumpbox 1 is killed mid-backup: jobs stay locked.
    let jumpbox1 = workdir();
    let mut child = spawn_cairn(&bed, jumpbox1.path(), &["backup", "--store", &store]);
    wait_for(&marker, "the backup script");
    child.kill().unwrap();
    let _ = child.wait();
    assert!(
        bed.is_locked(database, "database"),
        "SIGKILL leaves the lock"
    );
    let journals: Vec<PathBuf> = fs::read_dir(store_dir.path().join("testbed/journal"))
        .expect("a journal in the store")
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(journals.len(), 1, "{journals:?}");
    restore_original(database, "database", "backup");

    // Jumpbox 2 (no local journal) sees a journal of another machine: it stops and says so.
    let text_of = fs::read_to_string(&journals[0]).unwrap();
    let journal: serde_json::Value = serde_json::from_str(&text_of).unwrap();
    let foreign = text_of.replace(
        &format!("\"host\": \"{}\"", journal["host"].as_str().unwrap()),
        "\"host\": \"jumpbox-1.example\"",
    );
    fs::write(&journals[0], foreign).unwrap();
    let jumpbox2 = workdir();
    let output = cairn(&bed, jumpbox2.path(), &["backup", "--store", &store]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert!(
        text(&output).contains("from jumpbox-1.example"),
        "{}",
        text(&output)
    );
    assert!(
        text(&output).contains("backup-cleanup"),
        "{}",
        text(&output)
    );
    assert!(bed.is_locked(database, "database"), "nothing was changed");
    // backup-cleanup with the store unlocks everything and clears the journal.
    let mut cleanup = cairn_command_in(jumpbox2.path());
    let inventory = bed.inventory();
    let output = cleanup
        .env("CAIRN_STORE", &store)
        .args([
            "deployment",
            "--inventory",
            inventory.to_str().unwrap(),
            "backup-cleanup",
        ])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert!(
        text(&output).contains("locked job(s); all jobs are now unlocked"),
        "{}",
        text(&output)
    );
    assert!(!journals[0].exists());
    assert_nothing_left(&bed);

    // The same machine, without its local journal (a lost state directory): the store's
    // journal of its own dead run is enough to undo exactly what it left.
    let marker = pause_after(&bed, database, "database", "backup");
    let mut child = spawn_cairn(&bed, jumpbox1.path(), &["backup", "--store", &store]);
    wait_for(&marker, "the backup script");
    child.kill().unwrap();
    let _ = child.wait();
    restore_original(database, "database", "backup");
    // A new second, so the new backup's id differs from the killed run's.
    std::thread::sleep(Duration::from_millis(1100));
    let output = cairn(&bed, jumpbox2.path(), &["backup", "--store", &store]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert!(
        text(&output).contains("Found the journal of an interrupted run"),
        "{}",
        text(&output)
    );
    assert!(
        text(&output).contains("Recovered: unlocked database on database/0"),
        "{}",
        text(&output)
    );
    assert_nothing_left(&bed);
    assert_eq!(
        fs::read_dir(store_dir.path().join("testbed/journal"))
            .unwrap()
            .count(),
        0
    );
}

#[test]
fn truncated_objects_and_a_wrong_manifest_digest_are_refused_before_any_script() {
    cairn_testbed::require_root!();
    let bed = TestBed::start(&[("database", 0, &["database"])]).expect("test bed");
    let store_dir = workdir();
    let store = format!("file://{}", store_dir.path().display());
    let work = workdir();
    let output = cairn(&bed, work.path(), &["backup", "--store", &store]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let backup = fs::read_dir(store_dir.path().join("testbed"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.join("manifest.json").exists())
        .expect("a complete backup");
    let id = format!("testbed/{}", backup.file_name().unwrap().to_string_lossy());
    let object = fs::read_dir(&backup)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().ends_with(".tar.zst.000000"))
        .unwrap();
    let original = fs::read(&object).unwrap();
    let manifest_path = backup.join("manifest.json");
    let manifest = fs::read_to_string(&manifest_path).unwrap();
    let events_before = script_counts(&bed);
    let refused = |what: &str| {
        let verify = run(work.path(), &["backups", "--store", &store, "verify", &id]);
        assert_ne!(
            verify.status.code(),
            Some(0),
            "verify of {what}: {}",
            text(&verify)
        );
        let restore = cairn(
            &bed,
            work.path(),
            &["restore", "--store", &store, "--backup", &id],
        );
        assert_eq!(
            restore.status.code(),
            Some(1),
            "restore of {what}: {}",
            text(&restore)
        );
        assert_eq!(
            script_counts(&bed),
            events_before,
            "no script ran for {what}"
        );
        // What was copied before the damage showed is gone.
        assert_nothing_left(&bed);
        text(&restore)
    };
    // A truncated object (refused by its size, before any connection).
    fs::write(&object, &original[..original.len() / 2]).unwrap();
    let message = refused("a truncated object");
    assert!(message.contains("damaged or missing"), "{message}");
    fs::write(&object, &original).unwrap();
    // One flipped byte near the end: same size, found only while it is copied.
    let mut flipped = original.clone();
    let near_end = flipped.len() - 64;
    flipped[near_end] ^= 0x40;
    fs::write(&object, &flipped).unwrap();
    let message = refused("a flipped byte");
    assert!(message.contains("damaged"), "{message}");
    fs::write(&object, &original).unwrap();
    // A manifest whose sha256 for that object is wrong.
    let parsed: serde_json::Value = serde_json::from_str(&manifest).unwrap();
    let digest = parsed["artifacts"][0]["sha256"]
        .as_str()
        .unwrap()
        .to_string();
    let wrong = format!(
        "{}{}",
        &digest[..63],
        if digest.ends_with('0') { "1" } else { "0" }
    );
    fs::write(&manifest_path, manifest.replace(&digest, &wrong)).unwrap();
    let message = refused("a wrong manifest digest");
    assert!(message.contains("damaged"), "{message}");
    // Put back, it restores again.
    fs::write(&manifest_path, &manifest).unwrap();
    let output = cairn(
        &bed,
        work.path(),
        &["restore", "--store", &store, "--backup", &id],
    );
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
}
