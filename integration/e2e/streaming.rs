//! The streaming extension of the job-script contract (scripts-contract/CONTRACT.md §12) end to
//! end: the reference jobs of scripts-contract/adapters with `STREAM=true` write their artifact
//! to stdout and read it from stdin, into a bbr directory, a `file://` store and S3 (moto), and
//! back byte for byte; the same scripts in classic mode still make a bbr-format backup; a
//! script failing half-way, a connection cut mid-stream and a job misusing the extension all
//! fail the backup with nothing recorded and nothing left behind.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crate::common::*;
use cairn_testbed::{TestBed, TestHost};

/// Turns the streaming declaration of a reference job on or off (its `bbr.conf`'s `STREAM`).
pub(crate) fn set_stream(host: &TestHost, job: &str, on: bool) {
    let conf = host.vcap_dir.join(format!("jobs/{job}/bin/bbr/bbr.conf"));
    let text = fs::read_to_string(&conf).unwrap_or_default();
    let mut kept: Vec<&str> = text.lines().filter(|l| !l.starts_with("STREAM=")).collect();
    let line = format!("STREAM={on}");
    kept.push(&line);
    fs::write(&conf, kept.join("\n") + "\n").unwrap();
}

/// A few files of every kind, one of them 3 MiB, for the `directory` job.
pub(crate) fn seed_directory(host: &TestHost) -> PathBuf {
    let root = host.vcap_dir.join("store/directory");
    fs::create_dir_all(root.join("uploads/2026")).unwrap();
    fs::write(root.join("uploads/2026/report 1.txt"), "quarterly\n").unwrap();
    fs::write(root.join("empty"), "").unwrap();
    fs::write(root.join(".hidden"), "dot\n").unwrap();
    write_pseudo_random(&root.join("uploads/blob.bin"), 3 * 1024 * 1024 + 17);
    root
}

fn mutate_directory(root: &Path) {
    fs::remove_file(root.join("empty")).unwrap();
    fs::write(root.join("uploads/2026/report 1.txt"), "overwritten\n").unwrap();
    fs::write(root.join("intruder"), "new\n").unwrap();
}

/// Every file named `name` under `dir`.
fn find_named(dir: &Path, name: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(find_named(&path, name));
        } else if entry.file_name() == name {
            found.push(path);
        }
    }
    found
}

/// The entries of a tar file, as `tar -tvf` lists them.
fn tar_entries(tar: &Path) -> Vec<String> {
    let output = Command::new("tar").arg("-tf").arg(tar).output().unwrap();
    assert!(output.status.success(), "{}", text(&output));
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// Replaces a job's `backup` with `body` (a shell script), keeping the original as
/// `backup.orig` for it to call.
pub(crate) fn wrap_backup(bed: &TestBed, host: &TestHost, job: &str, body: &str) {
    let bin = host.vcap_dir.join(format!("jobs/{job}/bin/bbr"));
    if !bin.join("backup.orig").exists() {
        fs::copy(bin.join("backup"), bin.join("backup.orig")).unwrap();
    }
    bed.install_script(host, job, "backup", &format!("#!/bin/sh\n{body}\n"))
        .unwrap();
}

fn unwrap_backup(host: &TestHost, job: &str) {
    let bin = host.vcap_dir.join(format!("jobs/{job}/bin/bbr"));
    fs::rename(bin.join("backup.orig"), bin.join("backup")).unwrap();
}

/// A directory backup that failed: no tar, `metadata` without instances.
fn assert_incomplete_directory_backup(work: &Path) {
    let backup = backup_dir(work);
    assert!(tars(&backup).is_empty(), "{:?}", tars(&backup));
    let metadata = fs::read_to_string(backup.join("metadata")).unwrap();
    assert!(!metadata.contains("instances:"), "{metadata}");
}

fn moto_url(moto: &Emulator) -> String {
    format!(
        "s3://cairn-backups/stream?endpoint={}&path_style=true&region=us-east-1",
        moto.endpoint
    )
}

#[test]
fn a_streaming_directory_job_round_trips_through_a_bbr_directory_a_file_store_and_s3() {
    cairn_testbed::require_root!();
    let moto = Emulator::start(Server::Moto);
    moto.fixture(&["create-bucket", "cairn-backups", "versioned"]);
    let bed = TestBed::start(&[("dir", 0, &["directory"])]).expect("test bed");
    let host = bed.host("dir", 0);
    let root = seed_directory(host);
    let before = tree_digest(&root);
    set_stream(host, "directory", true);
    // Proof that Cairn creates no artifact directory for a streaming job: the backup script
    // records whether /var/vcap/store/bbr-backup exists while it runs.
    let seen = host.vcap_dir.join("sys/run/bbr-backup-seen");
    wrap_backup(
        &bed,
        host,
        "directory",
        "[ -e /var/vcap/store/bbr-backup ] && touch /var/vcap/sys/run/bbr-backup-seen\n\
         exec /var/vcap/jobs/directory/bin/bbr/backup.orig",
    );

    // 1. A bbr directory: the stream is a one-file tar, `./cairn-stream`, listed in metadata.
    let work = workdir();
    let output = backup_into(&bed, work.path(), &[]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert!(!seen.exists(), "the streaming job's backup saw bbr-backup");
    let backup = backup_dir(work.path());
    assert_eq!(tars(&backup), vec!["dir-0-directory.tar".to_string()]);
    assert_eq!(
        tar_entries(&backup.join("dir-0-directory.tar")),
        vec!["./cairn-stream".to_string()]
    );
    let metadata = fs::read_to_string(backup.join("metadata")).unwrap();
    assert!(metadata.contains("./cairn-stream:"), "{metadata}");
    assert_nothing_left(&bed);
    mutate_directory(&root);
    assert_ne!(tree_digest(&root), before);
    let restore = |args: &[&str]| {
        let mut all = vec!["restore"];
        all.extend_from_slice(args);
        cairn(&bed, work.path(), &all)
    };
    let output = restore(&["--artifact-path", backup.to_str().unwrap()]);
    let log = text(&output);
    assert_eq!(output.status.code(), Some(0), "{log}");
    assert!(
        log.contains("Verifying streamed artifact for job directory on dir/"),
        "{log}"
    );
    assert_eq!(tree_digest(&root), before, "restored byte for byte");
    assert_nothing_left(&bed);

    // The same one-file tar restored classically, as bbr would (the job without STREAM gets
    // `cairn-stream` in its artifact directory).
    set_stream(host, "directory", false);
    mutate_directory(&root);
    let output = restore(&["--artifact-path", backup.to_str().unwrap()]);
    let log = text(&output);
    assert_eq!(output.status.code(), Some(0), "{log}");
    assert!(!log.contains("Verifying streamed artifact"), "{log}");
    assert_eq!(
        tree_digest(&root),
        before,
        "restored classically from the stream"
    );
    set_stream(host, "directory", true);

    // 2. A file:// store and S3: the object is the stream itself, marked in the manifest.
    let store_dir = tempfile::tempdir().unwrap();
    let file_url = format!("file://{}", store_dir.path().display());
    for url in [file_url.as_str(), moto_url(&moto).as_str()] {
        let output = cairn(&bed, work.path(), &["backup", "--store", url]);
        assert_eq!(output.status.code(), Some(0), "{url}: {}", text(&output));
        assert!(!seen.exists(), "{url}: the backup saw bbr-backup");
        mutate_directory(&root);
        let output = restore(&["--store", url, "--latest"]);
        assert_eq!(output.status.code(), Some(0), "{url}: {}", text(&output));
        assert_eq!(tree_digest(&root), before, "{url}: restored byte for byte");
        assert_nothing_left(&bed);
    }
    let manifests = find_named(store_dir.path(), "manifest.json");
    assert_eq!(manifests.len(), 1, "{manifests:?}");
    // `backups verify` reads the stream as its one-file tar.
    let id_dir = manifests[0].parent().unwrap();
    let id = format!(
        "{}/{}",
        id_dir
            .parent()
            .unwrap()
            .file_name()
            .unwrap()
            .to_string_lossy(),
        id_dir.file_name().unwrap().to_string_lossy()
    );
    let output = run(
        work.path(),
        &["backups", "--store", &file_url, "verify", &id],
    );
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let manifest: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(&manifests[0]).unwrap()).unwrap();
    let artifact = &manifest["artifacts"][0];
    assert_eq!(artifact["stream"], true, "{manifest}");
    assert!(
        artifact["key"]
            .as_str()
            .unwrap()
            .ends_with("dir-0-directory.stream.zst"),
        "{artifact}"
    );
    assert_eq!(
        artifact["files"]
            .as_object()
            .unwrap()
            .keys()
            .collect::<Vec<_>>(),
        vec!["./cairn-stream"]
    );

    // 3. The same scripts in classic mode: a bbr-format backup of the files, which restores.
    unwrap_backup(host, "directory");
    set_stream(host, "directory", false);
    let classic = workdir();
    let output = backup_into(&bed, classic.path(), &[]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let backup = backup_dir(classic.path());
    let entries = tar_entries(&backup.join("dir-0-directory.tar"));
    assert!(
        entries.contains(&"./directory.tar".to_string()) && entries.len() == 3,
        "{entries:?}"
    );
    mutate_directory(&root);
    let output = cairn(
        &bed,
        classic.path(),
        &["restore", "--artifact-path", backup.to_str().unwrap()],
    );
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert_eq!(tree_digest(&root), before);
    assert_nothing_left(&bed);
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

fn wait_for(path: &Path, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !path.exists() {
        assert!(Instant::now() < deadline, "{what} never happened");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn backup_store(bed: &TestBed, work: &Path, url: &str) -> Output {
    cairn(bed, work, &["backup", "--store", url])
}

/// No manifest in a `file://` store: nothing was recorded complete.
fn assert_no_manifest(store: &Path) {
    let manifests = find_named(store, "manifest.json");
    assert!(manifests.is_empty(), "{manifests:?}");
}

#[test]
fn a_stream_cut_by_a_failing_script_or_a_lost_connection_is_never_recorded() {
    cairn_testbed::require_root!();
    let bed = TestBed::start(&[("dir", 0, &["directory"])]).expect("test bed");
    let host = bed.host("dir", 0);
    seed_directory(host);
    set_stream(host, "directory", true);
    let store_dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}", store_dir.path().display());

    // Half the stream written, then a non-zero exit.
    wrap_backup(
        &bed,
        host,
        "directory",
        "set -e\n/var/vcap/jobs/directory/bin/bbr/backup.orig | head -c 1048576\n\
         echo 'dump failed half-way' >&2\nexit 3",
    );
    let work = workdir();
    let output = backup_into(&bed, work.path(), &[]);
    let log = text(&output);
    assert_eq!(output.status.code(), Some(1), "{log}");
    assert!(
        log.contains("Error attempting to run backup for job directory on dir/")
            && log.contains("dump failed half-way - exit code 3"),
        "{log}"
    );
    assert_incomplete_directory_backup(work.path());
    let output = backup_store(&bed, work.path(), &url);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert_no_manifest(store_dir.path());
    assert_nothing_left(&bed);

    // The connection cut while the stream is open (the script paused mid-stream).
    wrap_backup(
        &bed,
        host,
        "directory",
        "/var/vcap/jobs/directory/bin/bbr/backup.orig\n\
         touch /var/vcap/sys/run/streamed\nsleep 6",
    );
    let marker = host.vcap_dir.join("sys/run/streamed");
    for sink in ["directory", "store"] {
        let _ = fs::remove_file(&marker);
        let work = workdir();
        let inventory = bed.inventory();
        let mut args = vec![
            "deployment".to_string(),
            "--inventory".into(),
            inventory.to_str().unwrap().into(),
            "backup".into(),
        ];
        if sink == "directory" {
            args.extend(["--artifact-path".into(), work.path().display().to_string()]);
        } else {
            args.extend(["--store".into(), url.clone()]);
        }
        let child = cairn_command_in(work.path())
            .args(&args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        wait_for(&marker, "the stream");
        kill_ssh_sessions(host);
        let output = child.wait_with_output().unwrap();
        let log = text(&output);
        assert_eq!(output.status.code(), Some(1), "{sink}: {log}");
        assert!(
            log.contains("Error attempting to run backup for job directory on dir/"),
            "{sink}: {log}"
        );
        if sink == "directory" {
            assert_incomplete_directory_backup(work.path());
        } else {
            assert_no_manifest(store_dir.path());
        }
        std::thread::sleep(Duration::from_secs(6));
        assert_nothing_left(&bed);
    }

    // The original script works again afterwards.
    unwrap_backup(host, "directory");
    let work = workdir();
    let output = backup_into(&bed, work.path(), &[]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));

    // The artifact changes between the full check and the streamed restore (here: in
    // pre-restore-lock, which runs between them): the second read's check fails the restore,
    // the script never sees EOF, the data stays as it was and the job is unlocked.
    let tar = backup_dir(work.path()).join("dir-0-directory.tar");
    let root = host.vcap_dir.join("store/directory");
    mutate_directory(&root);
    let changed = tree_digest(&root);
    let bin = host.vcap_dir.join("jobs/directory/bin/bbr");
    fs::copy(
        bin.join("pre-restore-lock"),
        bin.join("pre-restore-lock.orig"),
    )
    .unwrap();
    bed.install_script(
        host,
        "directory",
        "pre-restore-lock",
        &format!(
            "#!/bin/sh
set -e
/var/vcap/jobs/directory/bin/bbr/pre-restore-lock.orig
printf X | dd of={} bs=1 seek=2000000 conv=notrunc status=none
",
            tar.display()
        ),
    )
    .unwrap();
    let output = cairn(
        &bed,
        work.path(),
        &[
            "restore",
            "--artifact-path",
            tar.parent().unwrap().to_str().unwrap(),
        ],
    );
    let log = text(&output);
    assert_eq!(output.status.code(), Some(1), "{log}");
    assert!(
        log.contains("dir-0-directory"),
        "the error names the artifact: {log}"
    );
    assert!(log.contains("Unlocking directory on dir/"), "{log}");
    assert_eq!(tree_digest(&root), changed, "the restore changed nothing");
    assert_nothing_left(&bed);
    fs::rename(
        bin.join("pre-restore-lock.orig"),
        bin.join("pre-restore-lock"),
    )
    .unwrap();
}

#[test]
fn a_job_that_declares_streaming_but_writes_nothing_or_into_its_directory_is_named() {
    cairn_testbed::require_root!();
    let bed = TestBed::start(&[("dir", 0, &["directory"])]).expect("test bed");
    let host = bed.host("dir", 0);
    seed_directory(host);
    set_stream(host, "directory", true);
    for (body, what) in [
        ("exit 0", "wrote nothing to stdout"),
        (
            "mkdir -p \"$BBR_ARTIFACT_DIRECTORY\"\n\
             env -u CAIRN_STREAM /var/vcap/jobs/directory/bin/bbr/backup.orig",
            "wrote into its artifact directory /var/vcap/store/bbr-backup/directory/ instead of stdout",
        ),
    ] {
        wrap_backup(&bed, host, "directory", body);
        let work = workdir();
        let output = backup_into(&bed, work.path(), &[]);
        let log = text(&output);
        assert_eq!(output.status.code(), Some(1), "{log}");
        let expected = format!(
            "Job directory on dir/{} declares a streaming backup (metadata `cairn: {{stream: [backup]}}`) but {what}; with CAIRN_STREAM=1 its backup script must write the artifact to stdout",
            host_id(&log)
        );
        assert!(log.contains(&expected), "{expected}\n{log}");
        assert_incomplete_directory_backup(work.path());
        assert_nothing_left(&bed);
    }

    // `contract check` catches a streaming backup that writes to disk, and passes the
    // unchanged one.
    wrap_backup(
        &bed,
        host,
        "directory",
        "date > /var/vcap/store/directory-stamp
exec /var/vcap/jobs/directory/bin/bbr/backup.orig",
    );
    let check = || {
        let output = contract_check_over_ssh(
            &bed,
            host,
            "/var/vcap/jobs/directory/bin/bbr",
            &bed.known_hosts(),
            &[],
        );
        (output.status.code(), text(&output))
    };
    let finding = |report: &str, verdict: &str, name: &str| {
        report
            .lines()
            .find(|l| {
                let mut words = l.split_whitespace();
                words.next() == Some(verdict) && words.next() == Some(name)
            })
            .map(str::to_string)
    };
    let (code, report) = check();
    assert_eq!(code, Some(1), "{report}");
    let failed = finding(&report, "FAIL", "stream-write-scope").expect(&report);
    assert!(
        failed.contains("/var/vcap/store/directory-stamp"),
        "{failed}"
    );
    unwrap_backup(host, "directory");
    let (code, report) = check();
    assert_eq!(code, Some(0), "{report}");
    for name in ["stream-backup", "stream-write-scope", "stream-restore"] {
        assert!(finding(&report, "PASS", name).is_some(), "{name}: {report}");
    }
    assert_nothing_left(&bed);
}

/// The instance id in `dir/<id>` of a log.
fn host_id(log: &str) -> String {
    let start = log.find("on dir/").expect("an instance in the log") + "on dir/".len();
    log[start..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
        .collect()
}

/// Runs `integration/databases/<engine>.sh SUBCOMMAND` inside the host; returns its stdout.
fn server(bed: &TestBed, host: &TestHost, engine: &str, subcommand: &str) -> String {
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("integration/databases/{engine}.sh"));
    let output = bed
        .exec(host, &format!("{} {subcommand}", script.display()))
        .expect("exec");
    assert!(
        output.status.success(),
        "{engine}.sh {subcommand}: {}",
        text(&output)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Appends `KEY=VALUE` to a reference job's `bbr.conf` (a later line wins).
fn configure(host: &TestHost, job: &str, line: &str) {
    let conf = host.vcap_dir.join(format!("jobs/{job}/bin/bbr/bbr.conf"));
    let mut text = fs::read_to_string(&conf).unwrap_or_default();
    text.push_str(line);
    text.push('\n');
    fs::write(&conf, text).unwrap();
}

/// The `Compression:` of the `pg_dump` archive streamed into a backup's tar, as `pg_restore -l`
/// prints it (`0` for none, `-1` for the default gzip level on PostgreSQL 15).
fn pg_dump_compression(tar: &Path) -> String {
    let script = format!(
        "tar -xOf '{}' ./cairn-stream | pg_restore -l",
        tar.display()
    );
    let output = Command::new("sh").args(["-c", &script]).output().unwrap();
    assert!(output.status.success(), "{script}: {}", text(&output));
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .find_map(|l| {
            l.trim_start_matches(';')
                .trim()
                .strip_prefix("Compression:")
        })
        .unwrap_or_else(|| panic!("no Compression line from {script}"))
        .trim()
        .to_string()
}

#[test]
fn postgres_and_mariadb_stream_their_dumps_and_restore_them_exactly() {
    cairn_testbed::require_root!();
    let moto = Emulator::start(Server::Moto);
    moto.fixture(&["create-bucket", "cairn-backups", "versioned"]);
    let bed = TestBed::start(&[("pg", 0, &["postgres"]), ("my", 0, &["mysql"])]).expect("test bed");
    let engines = [("pg", "postgres"), ("my", "mysql")];
    std::thread::scope(|scope| {
        for (group, engine) in engines {
            let bed = &bed;
            scope.spawn(move || {
                let host = bed.host(group, 0);
                server(bed, host, engine, "start");
                server(bed, host, engine, "configure-job");
                server(bed, host, engine, "seed");
            });
        }
    });
    let pg = bed.host("pg", 0);
    // A streamed PostgreSQL backup is one pg_dump archive: one database.
    configure(pg, "postgres", "DATABASES=shop");
    for (group, job) in engines {
        set_stream(bed.host(group, 0), job, true);
    }
    // The restored data: PostgreSQL's `shop` (rows and md5 of every table), all of MariaDB.
    let digests = |bed: &TestBed| {
        let shop: Vec<String> = server(bed, pg, "postgres", "digest")
            .lines()
            .filter(|l| l.starts_with("shop."))
            .map(str::to_string)
            .collect();
        (shop, server(bed, bed.host("my", 0), "mysql", "digest"))
    };
    let before = digests(&bed);
    assert!(before.0.len() >= 3, "{before:?}");
    let mutate = |bed: &TestBed| {
        for (group, engine) in engines {
            server(bed, bed.host(group, 0), engine, "mutate");
        }
        assert_ne!(digests(bed), before, "mutate changes the data");
    };

    let store_dir = tempfile::tempdir().unwrap();
    let file_url = format!("file://{}", store_dir.path().display());
    let work = workdir();
    let artifact_path = work.path().display().to_string();
    let s3_url = moto_url(&moto);
    // The directory round dumps uncompressed (PG_DUMP_COMPRESS=0, the store's zstd left to
    // compress); the store rounds with pg_dump's default (an empty later line wins).
    configure(pg, "postgres", "PG_DUMP_COMPRESS=0");
    for (label, backup_args) in [
        ("bbr directory", ["--artifact-path", artifact_path.as_str()]),
        ("file store", ["--store", file_url.as_str()]),
        ("s3", ["--store", s3_url.as_str()]),
    ] {
        let mut args = vec!["backup"];
        args.extend(backup_args);
        let output = cairn(&bed, work.path(), &args);
        let log = text(&output);
        assert_eq!(output.status.code(), Some(0), "{label}: {log}");
        assert!(
            !log.contains("Copying backup --"),
            "{label}: nothing is copied: {log}"
        );
        assert_nothing_left(&bed);
        mutate(&bed);
        let backup = (label == "bbr directory").then(|| backup_dir(work.path()));
        let backup_path = backup.as_ref().map(|b| b.display().to_string());
        let mut args = vec!["restore"];
        if let (Some(backup), Some(path)) = (&backup, &backup_path) {
            for tar in tars(backup) {
                assert_eq!(
                    tar_entries(&backup.join(&tar)),
                    vec!["./cairn-stream"],
                    "{tar}"
                );
            }
            assert_eq!(
                pg_dump_compression(&backup.join("pg-0-postgres.tar")),
                "0",
                "PG_DUMP_COMPRESS=0 reaches pg_dump"
            );
            configure(pg, "postgres", "PG_DUMP_COMPRESS=");
            args.extend(["--artifact-path", path.as_str()]);
        } else {
            args.extend(backup_args);
            args.push("--latest");
        }
        let output = cairn(&bed, work.path(), &args);
        let log = text(&output);
        assert_eq!(output.status.code(), Some(0), "{label}: {log}");
        assert_eq!(digests(&bed), before, "{label}: restored exactly");
        assert_nothing_left(&bed);
    }

    // `contract check` runs both modes: the streaming backup writes nothing to disk (strace)
    // and its stream restores.
    for (group, job) in engines {
        let host = bed.host(group, 0);
        let output = contract_check_over_ssh(
            &bed,
            host,
            &format!("/var/vcap/jobs/{job}/bin/bbr"),
            &bed.known_hosts(),
            &[],
        );
        let report = text(&output);
        assert_eq!(output.status.code(), Some(0), "{job}: {report}");
        for check in [
            "stream-backup",
            "stream-write-scope",
            "stream-restore",
            "write-scope",
        ] {
            assert!(
                report.lines().any(|l| {
                    let mut words = l.split_whitespace();
                    words.next() == Some("PASS") && words.next() == Some(check)
                }),
                "{job}: no PASS {check}: {report}"
            );
        }
    }
    assert_eq!(
        digests(&bed),
        before,
        "the contract check restored the same data"
    );

    // A dump failing half-way (the server stops answering) fails the backup.
    wrap_backup(
        &bed,
        pg,
        "postgres",
        "/var/vcap/jobs/postgres/bin/bbr/backup.orig | head -c 65536\nexit 1",
    );
    let failed = workdir();
    let output = backup_into(&bed, failed.path(), &[]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert_incomplete_directory_backup(failed.path());
    assert_nothing_left(&bed);
    unwrap_backup(pg, "postgres");
}

/// A streaming dump that goes silent (as `pg_dump` waiting on a lock does) is ended by
/// `--stall-timeout` like any artifact stream, and nothing is recorded; the job's own `stall`
/// under `[timeouts.jobs.<job>]` lets that job alone wait longer.
#[test]
fn a_silent_stream_is_ended_by_the_stall_timeout_unless_its_job_may_wait_longer() {
    cairn_testbed::require_root!();
    let bed = TestBed::start(&[("dir", 0, &["directory"])]).expect("test bed");
    let host = bed.host("dir", 0);
    seed_directory(host);
    set_stream(host, "directory", true);
    // 1 MiB, then 8 s of silence, then the rest of the stream.
    wrap_backup(
        &bed,
        host,
        "directory",
        "copy=/var/vcap/data/stall-copy\nmkdir -p /var/vcap/data\n\
         /var/vcap/jobs/directory/bin/bbr/backup.orig > $copy\n\
         head -c 1048576 $copy\nsleep 8\ntail -c +1048577 $copy",
    );

    let work = workdir();
    let output = backup_into(&bed, work.path(), &["--stall-timeout", "3s"]);
    let log = text(&output);
    assert_eq!(output.status.code(), Some(1), "{log}");
    assert!(
        log.contains(&format!(
            "No data moved from dir/{} for job directory for 3 s: the copy was stopped and the connection dropped",
            host_id(&log)
        )) && log.contains("`stall` under [timeouts.jobs.directory]"),
        "{log}"
    );
    assert_incomplete_directory_backup(work.path());
    assert_nothing_left(&bed);

    let work = workdir();
    let config = work.root().join("cairn.toml");
    fs::write(&config, "[timeouts.jobs.directory]\nstall = \"60s\"\n").unwrap();
    let output = backup_into(
        &bed,
        work.path(),
        &[
            "--stall-timeout",
            "3s",
            "--config",
            config.to_str().unwrap(),
        ],
    );
    assert!(output.status.success(), "{}", text(&output));
    let backup = backup_dir(work.path());
    assert_eq!(tars(&backup).len(), 1, "{:?}", tars(&backup));
    assert_eq!(
        tar_entries(&backup.join("dir-0-directory.tar")),
        vec!["./cairn-stream".to_string()]
    );
    unwrap_backup(host, "directory");
    assert_nothing_left(&bed);
}
