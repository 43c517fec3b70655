//! Smoke tests of the test bed itself: isolation of the hosts' `/var/vcap`, SSH + sudo through
//! the inventory's key and `known_hosts`, the example jobs, and two test beds at once.
//! They need root, like the test bed.

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

use cairn_testbed::{TestBed, TestBedOptions, TestHost};

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn assert_success(output: &Output, what: &str) {
    assert!(
        output.status.success(),
        "{what} failed ({}): stdout {:?} stderr {:?}",
        output.status,
        stdout(output),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// One instance of `inventory.yml`, read with plain string handling (the crate has no YAML
/// dependency; the format is fixed).
#[derive(Debug)]
struct InventoryEntry {
    group: String,
    index: u32,
    address: String,
    port: u16,
    username: String,
    private_key: String,
    host_key: String,
}

fn read_inventory(path: &Path) -> (String, Vec<InventoryEntry>) {
    let text = fs::read_to_string(path).unwrap();
    let deployment = text
        .lines()
        .find_map(|l| l.strip_prefix("deployment: "))
        .unwrap()
        .to_owned();
    let mut entries = Vec::new();
    for block in text.split("\n- ").skip(1) {
        let field = |name: &str| {
            block
                .lines()
                .map(str::trim)
                .find_map(|l| l.strip_prefix(&format!("{name}: ")))
                .unwrap_or_else(|| panic!("no {name} in {block:?}"))
                .to_owned()
        };
        entries.push(InventoryEntry {
            group: field("group"),
            index: field("index").parse().unwrap(),
            address: field("address"),
            port: field("port").parse().unwrap(),
            username: field("username"),
            private_key: field("private_key"),
            host_key: field("host_key").trim_matches('"').to_owned(),
        });
    }
    (deployment, entries)
}

/// `ssh ... sudo true` exactly as a client of the inventory would do it.
fn ssh_with_inventory(bed: &TestBed, entry: &InventoryEntry, command: &str) -> Output {
    Command::new("ssh")
        .args([
            "-F",
            "/dev/null",
            "-o",
            "BatchMode=yes",
            "-o",
            "IdentitiesOnly=yes",
        ])
        .arg("-i")
        .arg(bed.dir().join(&entry.private_key))
        .arg("-o")
        .arg(format!(
            "UserKnownHostsFile={}",
            bed.known_hosts().display()
        ))
        .args(["-o", "StrictHostKeyChecking=yes", "-p"])
        .arg(entry.port.to_string())
        .arg(format!("{}@{}", entry.username, entry.address))
        .arg(command)
        .output()
        .unwrap()
}

/// Whether `pid` runs (a zombie waiting for its reaper does not count: the orphaned sshd's
/// parent is pid 1, which may reap late).
fn is_running(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z'))
    })
}

#[test]
fn default_test_bed_matches_its_inventory() {
    cairn_testbed::require_root!();
    let bed = TestBed::start(&[]).unwrap();
    let names: Vec<String> = bed.hosts().iter().map(TestHost::name).collect();
    assert_eq!(names, ["database/0", "app/0", "app/1"]);

    let (deployment, entries) = read_inventory(&bed.inventory());
    assert_eq!(deployment, "testbed");
    assert_eq!(entries.len(), 3);
    let known_hosts = fs::read_to_string(bed.known_hosts()).unwrap();
    for (entry, host) in entries.iter().zip(bed.hosts()) {
        assert_eq!(
            (entry.group.as_str(), entry.index),
            (host.group.as_str(), host.index)
        );
        assert_eq!(entry.address, host.address);
        assert!(entry.host_key.starts_with("ssh-ed25519 AAAA"), "{entry:?}");
        assert!(known_hosts.contains(&format!("{} {}\n", entry.address, entry.host_key)));

        let output = ssh_with_inventory(&bed, entry, "sudo true && hostname");
        assert_success(&output, &format!("ssh sudo true on {}", host.name()));
        assert_eq!(
            stdout(&output).trim(),
            format!("{}-{}", host.group, host.index)
        );
    }
    let mode = fs::metadata(bed.private_key()).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
        0o600
    );
}

#[test]
fn hosts_have_their_own_var_vcap() {
    cairn_testbed::require_root!();
    let bed = TestBed::start(&[]).unwrap();
    let (app0, app1) = (bed.host("app", 0), bed.host("app", 1));
    let marker = format!("marker-{}", std::process::id());
    fs::write(app0.vcap_dir.join("store").join(&marker), "app/0 only\n").unwrap();

    let seen = bed
        .exec(app0, &format!("cat /var/vcap/store/{marker}"))
        .unwrap();
    assert_success(&seen, "cat on app/0");
    assert_eq!(stdout(&seen), "app/0 only\n");

    let absent = bed
        .exec(app1, &format!("test ! -e /var/vcap/store/{marker}"))
        .unwrap();
    assert_success(&absent, "marker absent on app/1");
    assert!(
        !Path::new("/var/vcap/store").join(&marker).exists(),
        "leaked into the root namespace"
    );

    // Over SSH too, and the seeded data and example jobs are where bbr looks for them.
    let over_ssh = bed
        .ssh(app0, &format!("sudo cat /var/vcap/store/{marker}"))
        .unwrap();
    assert_eq!(stdout(&over_ssh), "app/0 only\n");
    let scripts = bed
        .ssh(
            app1,
            "sudo sh -c 'find /var/vcap/jobs/*/bin/bbr/* -type f' | sort",
        )
        .unwrap();
    assert_success(&scripts, "find scripts");
    assert!(stdout(&scripts).contains("/var/vcap/jobs/app/bin/bbr/pre-backup-lock\n"));
    assert!(stdout(&scripts).contains("/var/vcap/jobs/files/bin/bbr/backup\n"));
    assert!(app1
        .vcap_dir
        .join("store/files/report 2024 final.txt")
        .exists());
    assert!(bed
        .host("database", 0)
        .vcap_dir
        .join("store/database/users.table")
        .exists());
}

#[test]
fn example_scripts_lock_and_log_events() {
    cairn_testbed::require_root!();
    let bed = TestBed::start(&[("database", 0, &["database"]), ("app", 0, &["app"])]).unwrap();
    let (database, app) = (bed.host("database", 0), bed.host("app", 0));

    let metadata = bed
        .ssh(
            app,
            "sudo BBR_VERSION=1.9.81 /var/vcap/jobs/app/bin/bbr/metadata",
        )
        .unwrap();
    assert_success(&metadata, "app metadata");
    assert!(
        stdout(&metadata).starts_with("backup_should_be_locked_before:\n- job_name: database\n")
    );

    let lock = bed
        .ssh(app, "sudo /var/vcap/jobs/app/bin/bbr/pre-backup-lock")
        .unwrap();
    assert_success(&lock, "app pre-backup-lock");
    assert!(bed.is_locked(app, "app"));
    assert!(!bed.is_locked(database, "database"));

    let dir = "/var/vcap/store/bbr-backup/app/";
    let backup = bed
        .ssh(app, &format!("sudo mkdir -p {dir} && sudo BBR_ARTIFACT_DIRECTORY={dir} ARTIFACT_DIRECTORY={dir} /var/vcap/jobs/app/bin/bbr/backup"))
        .unwrap();
    assert_success(&backup, "app backup");
    assert!(app
        .vcap_dir
        .join("store/bbr-backup/app/config.yml")
        .exists());

    // Unlock twice: the second run must succeed too (backup-cleanup does that).
    for _ in 0..2 {
        let unlock = bed
            .ssh(app, "sudo BBR_AFTER_BACKUP_SCRIPTS_SUCCESSFUL=true /var/vcap/jobs/app/bin/bbr/post-backup-unlock")
            .unwrap();
        assert_success(&unlock, "app post-backup-unlock");
    }
    assert!(!bed.is_locked(app, "app"));

    let events = bed.events(app, "app");
    let scripts: Vec<(&str, &str)> = events
        .iter()
        .map(|(_, s, e)| (s.as_str(), e.as_str()))
        .collect();
    assert_eq!(
        scripts,
        [
            ("pre-backup-lock", ""),
            ("backup", "dir=/var/vcap/store/bbr-backup/app/"),
            ("post-backup-unlock", "success=true"),
            ("post-backup-unlock", "success=true"),
        ]
    );
    assert!(
        events.windows(2).all(|pair| pair[0].0 <= pair[1].0),
        "times not increasing: {events:?}"
    );
    assert!(bed.events(database, "database").is_empty());
    assert_eq!(bed.timeline().len(), 4);

    // A test's own script replaces the example one.
    bed.install_script(
        database,
        "database",
        "pre-backup-lock",
        "#!/bin/sh\necho 'database is busy' >&2\nexit 3\n",
    )
    .unwrap();
    let failed = bed
        .ssh(
            database,
            "sudo /var/vcap/jobs/database/bin/bbr/pre-backup-lock",
        )
        .unwrap();
    assert_eq!(failed.status.code(), Some(3));
    assert_eq!(
        String::from_utf8_lossy(&failed.stderr),
        "database is busy\n"
    );
}

#[test]
fn two_test_beds_run_at_once() {
    cairn_testbed::require_root!();
    let first = std::thread::spawn(|| TestBed::start(&[("web", 0, &["files"])]).unwrap());
    let options = TestBedOptions { no_seed: true };
    let second =
        TestBed::start_with(&[("web", 0, &["files"]), ("worker", 0, &[])], &options).unwrap();
    let first = first.join().unwrap();

    let (a, b) = (first.host("web", 0), second.host("web", 0));
    assert_ne!(a.address, b.address);
    assert_ne!(first.dir(), second.dir());
    assert!(a.vcap_dir.join("store/files/readme.txt").exists());
    assert!(
        !b.vcap_dir.join("store/files").exists(),
        "--no-seed still seeded"
    );

    for (bed, host) in [(&first, a), (&second, b)] {
        let output = bed.ssh(host, "sudo true").unwrap();
        assert_success(
            &output,
            &format!("ssh to {} in {}", host.address, bed.dir().display()),
        );
    }

    // Tearing one down leaves the other working, and leaves nothing of the first behind.
    let first_dir = first.dir().to_path_buf();
    let first_pid = a.sshd_pid;
    drop(first);
    assert!(!first_dir.exists());
    assert!(!is_running(first_pid), "sshd {first_pid} survived down");
    let output = second.ssh(b, "sudo true").unwrap();
    assert_success(
        &output,
        "ssh to the second test bed after the first went down",
    );
}

#[test]
fn files_job_round_trips_awkward_names() {
    cairn_testbed::require_root!();
    let bed = TestBed::start(&[("web", 0, &["files"]), ("web", 1, &["files"])]).unwrap();
    let (source, target) = (bed.host("web", 0), bed.host("web", 1));
    let store = source.vcap_dir.join("store/files");
    fs::write(store.join("new\nline"), "x").unwrap();
    fs::write(store.join(" leading space"), "").unwrap();
    fs::write(store.join("big.bin"), vec![7_u8; 3 << 20]).unwrap();

    let dir = "/var/vcap/store/bbr-backup/files/";
    let backup = bed
        .ssh(source, &format!("sudo mkdir -p {dir} && sudo BBR_ARTIFACT_DIRECTORY={dir} ARTIFACT_DIRECTORY={dir} /var/vcap/jobs/files/bin/bbr/backup"))
        .unwrap();
    assert_success(&backup, "files backup");

    // Move the artifact to the other host (as a restore would) and restore it there.
    let copy = Command::new("cp")
        .arg("-a")
        .arg(source.vcap_dir.join("store/bbr-backup"))
        .arg(target.vcap_dir.join("store/"))
        .output()
        .unwrap();
    assert_success(&copy, "cp artifact");
    let restore = bed
        .ssh(target, &format!("sudo BBR_ARTIFACT_DIRECTORY={dir} ARTIFACT_DIRECTORY={dir} /var/vcap/jobs/files/bin/bbr/restore"))
        .unwrap();
    assert_success(&restore, "files restore");

    let diff = Command::new("diff")
        .arg("-r")
        .arg(&store)
        .arg(target.vcap_dir.join("store/files"))
        .output()
        .unwrap();
    assert_success(&diff, "diff of the restored store");
    assert_eq!(
        bed.events(target, "files")
            .into_iter()
            .map(|(_, script, extra)| format!("{script} {extra}"))
            .collect::<Vec<_>>(),
        ["restore dir=/var/vcap/store/bbr-backup/files/"]
    );
}
