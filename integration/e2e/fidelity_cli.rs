//! End-to-end: what a wrapper written for bbr reads on the console (issue 18, "Drop-in
//! fidelity"). Each test runs the real `cairn` against a test bed (and the stand-in BOSH
//! Director) and compares the output with bbr's exact strings; each comment names the bbr
//! v1.9.81 source file the string comes from.
//!
//! Every run is given a time zone far from UTC (`TZ`), so a `[HH:MM:SS]` prefix printed in
//! local time instead of UTC would be caught.

use std::fs;
use std::path::Path;
use std::process::Output;

use crate::common::*;
use cairn_testbed::director::{
    DeploymentSpec, Director, DirectorOptions, DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET,
};
use cairn_testbed::TestBed;

/// UTC+5:45: no `[HH:MM:SS]` in this zone is within minutes of the same time in UTC.
const FAR_FROM_UTC: &str = "Asia/Kathmandu";

/// `cli/command/messages.go` `backupCleanupAdvisedNotice`.
const ADVICE: &str = "It is recommended that you run `bbr backup-cleanup` to ensure that any temp files are cleaned up and all jobs are unlocked.";

/// `cli/command/messages.go` `backupCleanupAllDeploymentsAdvisedNotice`.
const ALL_DEPLOYMENTS_ADVICE: &str = "It is recommended that you run `bbr deployment --all-deployments backup-cleanup` to ensure that any temp files are cleaned up and all jobs are unlocked.";

/// A backup script that writes one file.
const WRITE_DATA: &str = "#!/bin/sh\necho data > \"$BBR_ARTIFACT_DIRECTORY/f\"\n";

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// bbr's summary on stderr: what follows Cairn's warning about `--password` on the command line
/// (issue 17; bbr has no such warning), when the run was given one.
fn summary_of(output: &Output) -> String {
    let text = stderr(output);
    match text.split_once('\n') {
        Some((first, rest)) if first.contains("WARN - --password on the command line") => {
            rest.to_string()
        }
        _ => text,
    }
}

/// `cairn deployment --inventory <bed> <args>` in `work`, in [`FAR_FROM_UTC`].
fn inventory_run(bed: &TestBed, work: &Path, args: &[&str]) -> Output {
    let inventory = bed.inventory();
    let mut all = vec!["deployment", "--inventory", inventory.to_str().unwrap()];
    all.extend_from_slice(args);
    run_in_zone(work, &all, &[])
}

/// Runs cairn with `args` and `env` in `work`, in [`FAR_FROM_UTC`].
fn run_in_zone(work: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let output = cairn_command_in(work)
        .args(args)
        .env("TZ", FAR_FROM_UTC)
        .envs(env.iter().copied())
        .output()
        .expect("cairn runs");
    eprintln!(
        "cairn {args:?} -> {:?}\n--- stdout\n{}--- stderr\n{}",
        output.status.code(),
        stdout(&output),
        stderr(&output)
    );
    output
}

/// `cairn deployment -t <url> -u admin -p SECRET --ca-cert <ca> <args>` in `work`.
fn bosh(director: &Director, work: &Path, args: &[&str]) -> Output {
    let login = director_login(director);
    let all = with_director_login(&login, args);
    run_in_zone(work, &all, &[])
}

/// True when `line` is `[HH:MM:SS] <rest>` with the time of now in UTC (within two
/// minutes): bbr's `printlnWithTimestamp` (`cli/command/deployment_backup.go`) formats
/// `time.Now().UTC()` as `15:04:05`.
fn utc_stamped(line: &str, rest: &str) -> bool {
    let Some(time) = line
        .strip_prefix('[')
        .and_then(|l| l.strip_suffix(rest))
        .and_then(|l| l.strip_suffix("] "))
    else {
        return false;
    };
    let Ok(time) = chrono::NaiveTime::parse_from_str(time, "%H:%M:%S") else {
        return false;
    };
    let now = chrono::Utc::now().time();
    let apart = (now - time).num_seconds().rem_euclid(86_400);
    apart <= 120 || apart >= 86_400 - 120
}

/// The one line of `text` that is `[HH:MM:SS] <rest>` in UTC; panics if none is.
fn assert_stamped_line(text: &str, rest: &str) {
    assert!(
        text.lines().any(|line| utc_stamped(line, rest)),
        "no `[HH:MM:SS] {rest}` line in UTC in:\n{text}"
    );
}

/// bbr's error header (`orchestrator/error.go` `PrettyError`: `"%d error%s occurred:\n"`,
/// then `"error %d:\n"` before each message), and its advice to run `backup-cleanup` only
/// where bbr gives it: after a backup's unlock, artifact-directory, clean-up or drain error
/// (`cli/command/deployment_backup.go`, `orchestrator/error.go`
/// `ContainsUnlockOrCleanupOrArtifactDirExists`), after a pre-backup-check whose first error
/// is the artifact directory (`deployment_pre_backup_check.go`), never after a restore
/// (`deployment_restore.go`) or a clean-up (`deployment_backup_cleanup.go`,
/// `deployment_restore_cleanup.go`).
#[test]
fn error_reports_and_the_cleanup_advice_follow_bbr() {
    cairn_testbed::require_root!();
    let bed = TestBed::start(&[]).expect("test bed");
    let work = workdir();
    // One artifact directory per run: two runs within one second would name the same backup
    // directory, which bbr (and Cairn) refuse to reuse.
    let paths: Vec<String> = (0..3)
        .map(|run| {
            let dir = work.path().join(format!("run-{run}"));
            std::fs::create_dir(&dir).unwrap();
            dir.display().to_string()
        })
        .collect();
    let (app0, app1) = (bed.host("app", 0), bed.host("app", 1));
    let fail = |message: &str| format!("#!/bin/sh\necho '{message}' >&2\nexit 1\n");

    // Two failing backup scripts: `2 errors occurred:`, no advice (BackupError).
    bed.install_script(app0, "files", "backup", &fail("first"))
        .unwrap();
    bed.install_script(app1, "files", "backup", &fail("second"))
        .unwrap();
    let output = inventory_run(&bed, work.path(), &["backup", "-a", &paths[0]]);
    assert_eq!(output.status.code(), Some(1));
    let report = stderr(&output);
    assert!(
        report.starts_with(
            "2 errors occurred:\nerror 1:\nError attempting to run backup for job files on app/"
        ),
        "{report}"
    );
    // bbr writes no newline after a message (`PrettyError`): `error 2:` follows it.
    assert!(report.contains(" - exit code 1error 2:\n"), "{report}");
    assert!(!report.contains("error(s)"), "{report}");
    assert!(!report.contains(ADVICE), "{report}");
    bed.install_script(app1, "files", "backup", WRITE_DATA)
        .unwrap();

    // A failing unlock: `1 error occurred:`, exit code 8, and the advice as the last line.
    bed.install_script(app0, "files", "backup", "#!/bin/sh\ntrue\n")
        .unwrap();
    let database = bed.host("database", 0);
    bed.install_script(database, "database", "post-backup-unlock", &fail("stuck"))
        .unwrap();
    let output = inventory_run(&bed, work.path(), &["backup", "-a", &paths[1]]);
    assert_eq!(output.status.code(), Some(8), "{}", stderr(&output));
    let report = stderr(&output);
    assert!(
        report.starts_with("1 error occurred:\nerror 1:\nError attempting to run post-backup-unlock for job database on database/0"),
        "{report}"
    );
    assert_eq!(report.lines().last(), Some(ADVICE), "{report}");

    // backup-cleanup meets the same unlock failure: no advice (bbr's processError).
    let output = inventory_run(&bed, work.path(), &["backup-cleanup"]);
    assert_eq!(output.status.code(), Some(8), "{}", text(&output));
    assert!(stderr(&output).starts_with("1 error occurred:\n"));
    assert!(!text(&output).contains(ADVICE), "{}", text(&output));
    bed.remove_script(database, "database", "post-backup-unlock")
        .unwrap();

    // A drain failure (the artifact directory is gone when it is copied): the advice.
    bed.install_script(
        app0,
        "files",
        "backup",
        "#!/bin/sh\nrmdir \"$BBR_ARTIFACT_DIRECTORY\"\n",
    )
    .unwrap();
    let output = inventory_run(&bed, work.path(), &["backup", "-a", &paths[2]]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    let report = stderr(&output);
    assert!(
        report.starts_with("1 error occurred:\nerror 1:\n"),
        "{report}"
    );
    assert_eq!(report.lines().last(), Some(ADVICE), "{report}");
    for host in [app0, app1] {
        bed.install_script(host, "files", "backup", WRITE_DATA)
            .unwrap();
    }

    // A complete backup, restored with a failing unlock: exit code 8 and no advice.
    let restore_from = work.root().join("complete");
    fs::create_dir_all(&restore_from).unwrap();
    let output = inventory_run(
        &bed,
        work.path(),
        &["backup", "-a", restore_from.to_str().unwrap()],
    );
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let backup = backup_dir(&restore_from);
    bed.install_script(database, "database", "post-restore-unlock", &fail("stuck"))
        .unwrap();
    let output = inventory_run(
        &bed,
        work.path(),
        &["restore", "-a", backup.to_str().unwrap()],
    );
    assert_eq!(output.status.code(), Some(8), "{}", text(&output));
    assert!(stderr(&output).starts_with("1 error occurred:\nerror 1:\n"));
    assert!(
        !text(&output).contains("It is recommended"),
        "{}",
        text(&output)
    );
    let output = inventory_run(&bed, work.path(), &["restore-cleanup"]);
    assert!(
        !text(&output).contains("It is recommended"),
        "{}",
        text(&output)
    );
    bed.remove_script(database, "database", "post-restore-unlock")
        .unwrap();

    // pre-backup-check with a leftover artifact directory: bbr's verdict in UTC, the report
    // indented two spaces (`deployment_pre_backup_check.go`, `executor/deployment/error.go`
    // `IndentBlock`), and the advice.
    fs::create_dir_all(app1.vcap_dir.join("store/bbr-backup/files")).unwrap();
    let output = inventory_run(&bed, work.path(), &["pre-backup-check"]);
    assert_eq!(output.status.code(), Some(1));
    let out = stdout(&output);
    assert_stamped_line(&out, "Deployment 'testbed' cannot be backed up.");
    assert!(
        out.contains("cannot be backed up.\n  1 error occurred:\n  error 1:\n  Directory /var/vcap/store/bbr-backup already exists on instance app/1\n"),
        "{out}"
    );
    assert_eq!(stderr(&output).lines().last(), Some(ADVICE));
    fs::remove_dir_all(app1.vcap_dir.join("store/bbr-backup")).unwrap();
    let output = inventory_run(&bed, work.path(), &["pre-backup-check"]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let out = stdout(&output);
    assert_stamped_line(&out, "Deployment 'testbed' can be backed up.");
    assert!(out.ends_with(" can be backed up.\n"), "{out}");
}

/// `--all-deployments` as bbr prints it (`cli/command/all_deployments.go`,
/// `deployment_backup.go`, `deployment_backup_cleanup.go`, `deployment_pre_backup_check.go`,
/// `executor/deployment/error.go`): the first lines, the UTC-stamped `Pending`, dashes,
/// per-deployment and summary lines, the summary error on stderr, the all-deployments
/// advice (backup and check, never cleanup), exit code 1; pre-backup-check writes no log
/// file. Also bosh-cli's target rules (`director/factory_config.go` `NewConfigFromURL`:
/// any scheme, always HTTPS, default port 25555) and `--ca-cert ~/...` (bosh-cli
/// `cmd/opts/ca_cert_arg.go`, bosh-utils `ExpandPath`).
#[test]
fn all_deployments_and_director_inputs_follow_bbr() {
    cairn_testbed::require_root!();
    let (good, bad) = std::thread::scope(|s| {
        let a = s.spawn(|| TestBed::start(&[("app", 0, &["files"])]).expect("test bed"));
        let b = s.spawn(|| TestBed::start(&[("db", 0, &["database"])]).expect("test bed"));
        (a.join().unwrap(), b.join().unwrap())
    });
    let db = bad.host("db", 0);
    bad.install_script(
        db,
        "database",
        "post-backup-unlock",
        "#!/bin/sh\necho 'cannot unlock' >&2\nexit 1\n",
    )
    .unwrap();
    let mut options = DirectorOptions::new(&good);
    options.deployments.push(DeploymentSpec::new("good", &good));
    options.deployments.push(DeploymentSpec::new("bad", &bad));
    let director = Director::start(&options).expect("director");
    let work = workdir();
    let path = work.path().to_str().unwrap();

    let output = bosh(
        &director,
        work.path(),
        &["--all-deployments", "backup", "--artifact-path", path],
    );
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    let out = stdout(&output);
    assert!(out.starts_with("Starting backup...\n"), "{out}");
    let pending = out.lines().nth(1).unwrap_or_default();
    // The Director lists deployments by name (BOSH does too).
    assert!(utc_stamped(pending, "Pending: bad, good"), "{out}");
    assert!(utc_stamped(
        out.lines().nth(2).unwrap_or_default(),
        "-------------------------"
    ));
    for line in [
        "Finished backup of good",
        "ERROR: failed to backup bad",
        "Successfully backed up: good",
        "FAILED: bad",
    ] {
        assert_stamped_line(&out, line);
    }
    assert!(
        out.lines()
            .any(|l| l.contains("] Starting backup of good, log file: ") && l.ends_with(".log")),
        "{out}"
    );
    let summary = summary_of(&output);
    assert!(
        summary.starts_with("1 out of 2 deployments cannot be backed up:\n  bad\n\nDeployment 'bad':\n  1 error occurred:\n  error 1:\n  Error attempting to run post-backup-unlock for job database on db/"),
        "{summary}"
    );
    assert!(
        summary.ends_with(&format!("\n\n{ALL_DEPLOYMENTS_ADVICE}\n")),
        "{summary}"
    );
    assert!(!summary.contains(ADVICE), "{summary}");

    // backup-cleanup: `Starting cleanup...`, `could not be cleaned up`, no advice.
    let output = bosh(
        &director,
        work.path(),
        &["--all-deployments", "backup-cleanup"],
    );
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    let out = stdout(&output);
    assert!(out.starts_with("Starting cleanup...\n"), "{out}");
    assert!(
        out.contains("Failed to cleanup deployment 'bad'\n"),
        "{out}"
    );
    for line in [
        "ERROR: failed to cleanup bad",
        "Finished cleanup of good",
        "Successfully cleaned up: good",
        "FAILED: bad",
    ] {
        assert_stamped_line(&out, line);
    }
    let summary = summary_of(&output);
    assert!(
        summary.starts_with("1 out of 2 deployments could not be cleaned up:\n  bad\n\nDeployment 'bad':\n  1 error occurred:\n"),
        "{summary}"
    );
    assert!(!summary.contains("It is recommended"), "{summary}");
    bad.remove_script(db, "database", "post-backup-unlock")
        .unwrap();

    // pre-backup-check: a verdict per deployment, no log files, no `Starting` lines.
    let logs_before = log_files(work.path());
    let output = bosh(
        &director,
        work.path(),
        &["--all-deployments", "pre-backup-check"],
    );
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let out = stdout(&output);
    assert_stamped_line(&out, "Deployment 'good' can be backed up.");
    assert_stamped_line(&out, "Deployment 'bad' can be backed up.");
    assert_stamped_line(&out, "Successfully can be backed up: bad, good");
    assert!(!out.contains("Starting"), "{out}");
    assert_eq!(
        log_files(work.path()),
        logs_before,
        "pre-backup-check wrote a log"
    );

    // A leftover artifact directory: the verdict with the indented report, the summary and
    // the all-deployments advice; a single-deployment check gives the plain advice.
    fs::create_dir_all(db.vcap_dir.join("store/bbr-backup/database")).unwrap();
    let output = bosh(
        &director,
        work.path(),
        &["--all-deployments", "pre-backup-check"],
    );
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    let out = stdout(&output);
    assert_stamped_line(&out, "Deployment 'bad' cannot be backed up.");
    assert!(
        out.contains("cannot be backed up.\n  1 error occurred:\n  error 1:\n  Directory /var/vcap/store/bbr-backup already exists on instance db/"),
        "{out}"
    );
    assert_stamped_line(&out, "Successfully can be backed up: good");
    assert_stamped_line(&out, "FAILED: bad");
    let summary = summary_of(&output);
    assert!(
        summary.starts_with("1 out of 2 deployments cannot be backed up:\n  bad\n\nDeployment 'bad':\n  1 error occurred:\n  error 1:\n  Directory /var/vcap/store/bbr-backup already exists on instance db/"),
        "{summary}"
    );
    assert!(
        summary.ends_with(&format!("\n\n{ALL_DEPLOYMENTS_ADVICE}\n")),
        "{summary}"
    );
    let output = bosh(&director, work.path(), &["-d", "bad", "pre-backup-check"]);
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(stderr(&output).lines().last(), Some(ADVICE));
    fs::remove_dir_all(db.vcap_dir.join("store/bbr-backup")).unwrap();

    // `--target http://host:port` is reached over HTTPS; `--ca-cert=~/ca.pem` is read from
    // the home directory.
    let home = work.root().join("home");
    fs::create_dir_all(&home).unwrap();
    fs::copy(director.ca_cert_path(), home.join("ca.pem")).unwrap();
    let mut targets = vec![format!("http://{}:{}", director.address(), director.port())];
    if director.port() == 25555 {
        targets.push(director.address().to_string());
    }
    for target in &targets {
        let output = run_in_zone(
            work.path(),
            &[
                "deployment",
                "--target",
                target,
                "--username",
                DEFAULT_CLIENT_ID,
                "--password",
                DEFAULT_CLIENT_SECRET,
                "--ca-cert=~/ca.pem",
                "--deployment",
                "good",
                "pre-backup-check",
            ],
            &[("HOME", home.to_str().unwrap())],
        );
        assert_eq!(output.status.code(), Some(0), "{target}: {}", text(&output));
        assert_stamped_line(&stdout(&output), "Deployment 'good' can be backed up.");
    }
}

/// The `<deployment>_<time>.log` files in `dir`.
fn log_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".log") && !n.ends_with(".err.log"))
        .collect();
    names.sort();
    names
}
