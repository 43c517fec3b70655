//! End-to-end: director mode, lock-free backups, disabled and ignored jobs, restore-cleanup,
//! and restores into a target that does not match the backup.

use std::fs;
use std::path::Path;

use crate::common::*;
use cairn_testbed::TestBed;

#[test]
fn director_mode_backs_up_and_restores_a_single_vm() {
    cairn_testbed::require_root!();
    let bed = TestBed::start(&[("database", 0, &["database"])]).expect("test bed");
    let host = bed.host("database", 0);
    let work = workdir();
    let key = bed.dir().join("id_ed25519");
    let director = |extra: &[&str], action: &[&str]| {
        let mut args = vec![
            "director",
            "--host",
            &host.address,
            "--username",
            "vcap",
            "--key",
            key.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        args.extend_from_slice(action);
        run(work.path(), &args)
    };
    // bbr's director mode accepts any host key; Cairn records an unknown one (trust on first
    // use, fidelity_ssh.rs), with a warning that shows it.
    let empty = bed.dir().join("empty_known_hosts");
    fs::write(&empty, "").unwrap();
    let output = director(
        &["--known-hosts", empty.to_str().unwrap()],
        &["backup", "-a", work.path().to_str().unwrap()],
    );
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert!(
        text(&output).contains("WARN - Host key of bosh/0") && text(&output).contains("SHA256:"),
        "{}",
        text(&output)
    );
    let backup = backup_dir(work.path());
    let name = backup.file_name().unwrap().to_string_lossy().into_owned();
    assert!(name.starts_with(&format!("{}_", host.address)), "{name}");
    assert_eq!(tars(&backup), vec!["bosh-0-database.tar"]);

    let tables = host.vcap_dir.join("store/database");
    let before = tree_digest(&tables);
    fs::remove_dir_all(&tables).unwrap();
    let known = bed.known_hosts();
    let output = director(
        &["--known-hosts", known.to_str().unwrap()],
        &["restore", "-a", backup.to_str().unwrap()],
    );
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert_eq!(tree_digest(&tables), before);
    // The key recorded by the first run (not ~/.ssh/known_hosts: test beds reuse addresses).
    let output = director(
        &["--known-hosts", empty.to_str().unwrap()],
        &["pre-backup-check"],
    );
    // bbr's line, with no time before it (cli/command/director_pre_backup_check.go:
    // `fmt.Printf("Director can be backed up.\n")`).
    assert!(
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .any(|line| line == "Director can be backed up."),
        "{}",
        text(&output)
    );
}

#[test]
fn unsafe_lock_free_backups_run_no_lock_script() {
    cairn_testbed::require_root!();
    let bed = TestBed::start(&[]).expect("test bed");
    let work = workdir();
    let output = cairn(
        &bed,
        work.path(),
        &[
            "backup",
            "-a",
            work.path().to_str().unwrap(),
            "--unsafe-lock-free",
        ],
    );
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    for (host, job) in locking_jobs(&bed) {
        let scripts: Vec<String> = bed.events(host, job).into_iter().map(|e| e.1).collect();
        assert_eq!(
            scripts,
            vec!["backup"],
            "{job} on {}/{}",
            host.group,
            host.index
        );
    }
    assert_eq!(tars(&backup_dir(work.path())).len(), 5);
}

#[test]
fn disabled_and_ignored_jobs_are_left_out() {
    cairn_testbed::require_root!();
    let bed = TestBed::start(&[("database", 0, &["database"])]).expect("test bed");
    let host = bed.host("database", 0);
    let broken = "#!/bin/sh\necho 'must never run' >&2\nexit 1\n";
    bed.install_script(host, "mysql-backup", "backup", broken)
        .unwrap();
    bed.install_script(host, "legacy", "backup", broken)
        .unwrap();
    bed.install_script(
        host,
        "legacy",
        "metadata",
        "#!/bin/sh\necho 'skip_bbr_scripts: true'\n",
    )
    .unwrap();
    let work = workdir();
    let output = backup_into(&bed, work.path(), &[]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert_eq!(
        tars(&backup_dir(work.path())),
        vec!["database-0-database.tar"]
    );
}

#[test]
fn restore_cleanup_unlocks_with_restore_scripts() {
    cairn_testbed::require_root!();
    let bed = TestBed::start(&[]).expect("test bed");
    fs::create_dir_all(bed.host("app", 0).vcap_dir.join("store/bbr-backup/app")).unwrap();
    let work = workdir();
    let output = cairn(&bed, work.path(), &["restore-cleanup"]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert_nothing_left(&bed);
    for (host, job) in locking_jobs(&bed) {
        let scripts: Vec<String> = bed.events(host, job).into_iter().map(|e| e.1).collect();
        assert_eq!(scripts, vec!["post-restore-unlock"]);
    }
}

#[test]
fn restore_into_a_deployment_of_another_shape_is_refused() {
    cairn_testbed::require_root!();
    let source = TestBed::start(&[]).expect("test bed");
    let work = workdir();
    let output = backup_into(&source, work.path(), &[]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let backup = backup_dir(work.path());
    let smaller = TestBed::start(&[
        ("database", 0, &["database"]),
        ("app", 0, &["app", "files"]),
    ])
    .expect("test bed");
    let output = cairn(
        &smaller,
        work.path(),
        &["restore", "-a", backup.to_str().unwrap()],
    );
    assert_eq!(output.status.code(), Some(1));
    assert!(text(&output).contains("Deployment 'testbed' does not match the structure of the provided backup: instance app/1"), "{}", text(&output));
    for (host, job) in locking_jobs(&smaller) {
        assert!(smaller.events(host, job).is_empty());
    }
    // A different deployment with the same groups and indices restores (a drill).
    let twin = TestBed::start(&[]).expect("test bed");
    let twin_files = twin.host("app", 1).vcap_dir.join("store/files");
    fs::remove_dir_all(&twin_files).unwrap();
    fs::create_dir_all(&twin_files).unwrap();
    let output = cairn(
        &twin,
        work.path(),
        &[
            "--deployment",
            "twin",
            "restore",
            "-a",
            backup.to_str().unwrap(),
        ],
    );
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert_eq!(
        tree_digest(&twin.host("app", 1).vcap_dir.join("store/files")),
        tree_digest(&source.host("app", 1).vcap_dir.join("store/files"))
    );
}

#[test]
fn metrics_file_describes_each_run() {
    cairn_testbed::require_root!();
    let bed = TestBed::start(&[]).expect("test bed");
    let work = workdir();
    let metrics = work.path().join("cairn.prom");
    let metrics_arg = metrics.to_str().unwrap().to_string();
    let inventory = bed.inventory();
    let backup = || {
        let args = [
            "deployment",
            "--inventory",
            inventory.to_str().unwrap(),
            "--metrics-file",
            &metrics_arg,
            "backup",
            "--artifact-path",
            work.path().to_str().unwrap(),
        ];
        run(work.path(), &args)
    };
    let output = backup();
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let text_file = fs::read_to_string(&metrics).unwrap();
    let value = |series: &str| -> f64 {
        text_file
            .lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("{series} missing in:\n{text_file}"))
    };
    let labels = "{deployment=\"testbed\",operation=\"backup\"}";
    assert_eq!(value(&format!("cairn_run_exit_code{labels}")), 0.0);
    let success = value(&format!("cairn_last_success_timestamp_seconds{labels}"));
    assert!(value("cairn_backup_bytes{deployment=\"testbed\"}") > 0.0);
    assert!(value("cairn_job_lock_seconds{deployment=\"testbed\",bosh_instance=\"database/0\",bosh_job=\"database\"}") > 0.0);

    // A failed run records its exit code and keeps the last success time.
    fs::create_dir_all(bed.host("app", 0).vcap_dir.join("store/bbr-backup")).unwrap();
    let output = backup();
    assert_eq!(output.status.code(), Some(1));
    let text_file = fs::read_to_string(&metrics).unwrap();
    let failed_code: f64 = text_file
        .lines()
        .find_map(|l| {
            l.strip_prefix(&format!("cairn_run_exit_code{labels}"))?
                .trim()
                .parse()
                .ok()
        })
        .unwrap();
    assert_eq!(failed_code, 1.0);
    assert!(
        text_file.contains(&format!(
            "cairn_last_success_timestamp_seconds{labels} {success}"
        )),
        "{text_file}"
    );
}

#[test]
fn json_events_follow_the_documented_schema() {
    cairn_testbed::require_root!();
    let bed = TestBed::start(&[]).expect("test bed");
    let work = workdir();
    let output = backup_into(&bed, work.path(), &["--json"]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let schema: serde_json::Value = serde_json::from_str(
        &fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/events.schema.json"))
            .unwrap(),
    )
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let mut kinds = Vec::new();
    for line in stdout.lines() {
        let event: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        cairn_testbed::schema::validate(&schema, &event)
            .unwrap_or_else(|problem| panic!("{problem}: {line}"));
        kinds.push(event["event"].as_str().unwrap().to_string());
    }
    assert_eq!(kinds.first().map(String::as_str), Some("run_started"));
    assert_eq!(kinds.last().map(String::as_str), Some("run_finished"));
    for kind in ["job_discovered", "script_finished", "artifact_stored"] {
        assert!(
            kinds.iter().any(|k| k == kind),
            "no {kind} event in:\n{stdout}"
        );
    }
    assert_eq!(kinds.iter().filter(|k| *k == "artifact_stored").count(), 5);
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("[bbr]"),
        "logs move to stderr"
    );
}

#[test]
fn pre_backup_check_prints_the_plan_as_text_json_and_dot() {
    cairn_testbed::require_root!();
    let bed = TestBed::start(&[]).expect("test bed");
    let work = workdir();
    let output = cairn(&bed, work.path(), &["pre-backup-check", "--plan"]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let plan = String::from_utf8_lossy(&output.stdout);
    assert!(
        plan.contains("1. app/0:app, app/0:files, app/1:app, app/1:files"),
        "{plan}"
    );
    assert!(plan.contains("2. database/0:database"), "{plan}");
    assert!(
        plan.contains(
            "Artifacts: database-0-database, app-0-app, app-0-files, app-1-app, app-1-files"
        ),
        "{plan}"
    );

    let output = cairn(&bed, work.path(), &["--json", "pre-backup-check", "--plan"]);
    let event = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|e| e["event"] == "plan")
        .expect("a plan event");
    assert_eq!(event["plan"]["lock_layers"].as_array().unwrap().len(), 2);
    assert_eq!(event["plan"]["artifacts"].as_array().unwrap().len(), 5);

    let output = cairn(&bed, work.path(), &["pre-backup-check", "--plan", "--dot"]);
    let dot = String::from_utf8_lossy(&output.stdout);
    assert!(dot.starts_with("digraph \"testbed\""), "{dot}");
    assert!(
        dot.contains("\"app/0:app\" -> \"database/0:database\";"),
        "{dot}"
    );
    for (host, job) in locking_jobs(&bed) {
        assert!(bed.events(host, job).is_empty(), "--plan changed nothing");
    }
}

#[test]
fn a_config_file_supplies_defaults_that_flags_override() {
    cairn_testbed::require_root!();
    let bed = TestBed::start(&[("database", 0, &["database"])]).expect("test bed");
    let work = workdir();
    let store = work.path().join("store");
    // A file:// store's root must exist, as a bucket must (Cairn refuses a missing one).
    fs::create_dir_all(&store).unwrap();
    let config = work.path().join("cairn.toml");
    fs::write(
        &config,
        format!(
            "inventory = \"{}\"\nstore = \"file://{}\"\nparallelism = 2\n",
            bed.inventory().display(),
            store.display()
        ),
    )
    .unwrap();
    let config_arg = config.to_str().unwrap();
    let output = run(
        work.path(),
        &["--config", config_arg, "deployment", "backup"],
    );
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert!(
        store.join("testbed").is_dir(),
        "the config's store was used"
    );
    // A flag beats the file: this backup goes to a directory instead.
    let output = run(
        work.path(),
        &[
            "--config",
            config_arg,
            "deployment",
            "backup",
            "-a",
            work.path().to_str().unwrap(),
        ],
    );
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert!(fs::read_dir(work.path())
        .unwrap()
        .flatten()
        .any(|e| e.file_name().to_string_lossy().starts_with("testbed_")));

    let shown = run(work.path(), &["--config", config_arg, "config", "show"]);
    let shown_text = String::from_utf8_lossy(&shown.stdout);
    assert!(shown_text.contains("parallelism = 2"), "{shown_text}");
    assert!(
        shown_text.contains("# AWS_SECRET_ACCESS_KEY: set (masked)"),
        "{shown_text}"
    );
    assert!(
        !shown_text.contains("testing"),
        "a credential value was printed: {shown_text}"
    );

    fs::write(&config, "paralelism = 2\n").unwrap();
    let output = run(
        work.path(),
        &["--config", config_arg, "deployment", "backup"],
    );
    assert_eq!(output.status.code(), Some(1));
    assert!(
        text(&output).contains("cairn.toml") && text(&output).contains("paralelism"),
        "{}",
        text(&output)
    );
}

#[test]
fn a_drill_through_a_directory_reports_unverified_jobs_and_a_mismatching_target() {
    cairn_testbed::require_root!();
    let (source, target, small) = std::thread::scope(|scope| {
        let source = scope.spawn(|| TestBed::start(&[]).expect("source"));
        let target = scope.spawn(|| TestBed::start(&[]).expect("target"));
        let small =
            scope.spawn(|| TestBed::start(&[("app", 0, &["app", "files"])]).expect("small"));
        (
            source.join().unwrap(),
            target.join().unwrap(),
            small.join().unwrap(),
        )
    });
    let work = workdir();
    let backups = work.path().join("backups");
    fs::create_dir(&backups).unwrap();
    let drill = |into: &TestBed| {
        // Each drill takes its own backup: a directory of its own, so that two drills within
        // one second do not collide on the backup's name.
        let backups = tempfile::tempdir_in(&backups).unwrap().keep();
        run(
            work.path(),
            &[
                "drill",
                "--source-inventory",
                source.inventory().to_str().unwrap(),
                "--target-inventory",
                into.inventory().to_str().unwrap(),
                "--artifact-path",
                backups.to_str().unwrap(),
                "--report-dir",
                work.path().to_str().unwrap(),
            ],
        )
    };
    let file = "store/files/nested/blob.bin"; // random bytes, different on every test bed
    let read = |bed: &TestBed| fs::read(bed.host("app", 1).vcap_dir.join(file)).unwrap();
    assert_ne!(read(&source), read(&target));
    let output = drill(&target);
    let summary = text(&output);
    assert_eq!(output.status.code(), Some(0), "{summary}");
    assert!(summary.contains("PASSED"), "{summary}");
    assert!(
        summary.contains("unverified  database/0/database: restored, but the job has no post-restore-verify script"),
        "{summary}"
    );
    assert_eq!(
        read(&source),
        read(&target),
        "the target holds the source's data"
    );
    // A target without the backup's database/0 is refused before anything is changed.
    let output = drill(&small);
    let summary = text(&output);
    assert_eq!(output.status.code(), Some(1), "{summary}");
    assert!(summary.contains("FAILED"), "{summary}");
    assert!(
        summary.contains("does not match the structure"),
        "{summary}"
    );
    assert_no_script_ran(&small);
    let reports: Vec<_> = fs::read_dir(work.path())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
        .collect();
    assert_eq!(reports.len(), 2, "one JSON report per drill");
}
