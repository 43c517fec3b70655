//! End-to-end: `cairn contract check` against real test-bed hosts, over SSH and locally (run
//! inside a host's namespaces), on jobs that keep the contract and on a job that breaks it.

use std::process::Output;

use crate::common::*;
use cairn_testbed::{TestBed, TestHost};

/// `cairn contract check PATH --ssh vcap@HOST` with the test bed's key and known_hosts.
fn check_over_ssh(bed: &TestBed, host: &TestHost, path: &str, extra: &[&str]) -> Output {
    check_with_known_hosts(bed, host, path, &bed.known_hosts(), extra)
}

fn check_with_known_hosts(
    bed: &TestBed,
    host: &TestHost,
    path: &str,
    known_hosts: &std::path::Path,
    extra: &[&str],
) -> Output {
    contract_check_over_ssh(bed, host, path, known_hosts, extra)
}

/// The report lines with this verdict, e.g. `FAIL`.
fn lines_with<'a>(report: &'a str, verdict: &str) -> Vec<&'a str> {
    report
        .lines()
        .filter(|l| l.starts_with(&format!("{verdict} ")))
        .collect()
}

/// The report lines of one check with this verdict.
fn findings<'a>(report: &'a str, verdict: &str, check: &str) -> Vec<&'a str> {
    lines_with(report, verdict)
        .into_iter()
        .filter(|l| l.split_whitespace().nth(1) == Some(check))
        .collect()
}

#[test]
fn example_jobs_keep_the_contract_over_ssh_and_locally() {
    cairn_testbed::require_root!();
    let bed = TestBed::start(&[("database", 0, &["database", "app", "files"])]).expect("test bed");
    let host = bed.host("database", 0);
    for job in ["database", "app", "files"] {
        let path = format!("/var/vcap/jobs/{job}/bin/bbr");
        let output = check_over_ssh(&bed, host, &path, &[]);
        let report = text(&output);
        assert_eq!(output.status.code(), Some(0), "{report}");
        assert!(report.contains("CONTRACT KEPT"), "{report}");
        assert!(
            findings(&report, "PASS", "write-scope")
                .iter()
                .any(|l| l.contains("backup wrote only inside BBR_ARTIFACT_DIRECTORY")),
            "the backup must have been traced: {report}"
        );
        assert!(lines_with(&report, "FAIL").is_empty(), "{report}");
    }
    // app is locked before database: the reference resolves on this host.
    let output = check_over_ssh(
        &bed,
        host,
        "/var/vcap/jobs/app/bin/bbr",
        &["--skip-round-trip"],
    );
    let report = text(&output);
    assert!(
        report.contains("locked before database-release/database, found on this host"),
        "{report}"
    );
    assert!(report.contains("skipped (--skip-round-trip)"), "{report}");
    // The unlock scripts ran after the locks, nothing is left behind.
    assert!(!bed.is_locked(host, "database"));
    assert!(!bed.is_locked(host, "app"));
    assert!(!host.vcap_dir.join("store/bbr-backup").exists());

    // Locally: the same binary run inside the host (its own /var/vcap), no SSH.
    let local = bed
        .exec(
            host,
            &format!(
                "{} contract check /var/vcap/jobs/files/bin/bbr --json",
                env!("CARGO_BIN_EXE_cairn")
            ),
        )
        .unwrap();
    assert_eq!(local.status.code(), Some(0), "{}", text(&local));
    let report: serde_json::Value = serde_json::from_slice(&local.stdout).expect("JSON report");
    assert_eq!(report["host"], "localhost");
    assert_eq!(report["job"], "files");
    let checks: Vec<&str> = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["verdict"] == "pass")
        .map(|f| f["check"].as_str().unwrap())
        .collect();
    for expected in ["scripts", "backup", "write-scope", "artifact", "restore"] {
        assert!(
            checks.contains(&expected),
            "{expected} missing from {checks:?}"
        );
    }
}

const LEAKY_BACKUP: &str = r#"#!/bin/sh
set -eu
echo data > "${BBR_ARTIFACT_DIRECTORY}data.txt"
# Writes a second copy next to the job's data: outside the artifact directory.
echo data > /var/vcap/store/broken-copy.txt
mkdir -p /var/vcap/store/broken-scratch && cd /var/vcap/store/broken-scratch && mkdir -p rel
# A temporary file removed again is fine; one left behind is not.
t=$(mktemp); echo x > "$t"; rm "$t"
mktemp /tmp/tmp.LEAK_TAG.XXXXXX > /dev/null
ln -s /etc/passwd "${BBR_ARTIFACT_DIRECTORY}passwd"
"#;

/// Removes `/tmp/tmp.<tag>.*` when dropped.
struct TmpLeak(String);

impl Drop for TmpLeak {
    fn drop(&mut self) {
        let prefix = format!("tmp.{}.", self.0);
        for entry in std::fs::read_dir("/tmp").into_iter().flatten().flatten() {
            if entry.file_name().to_string_lossy().starts_with(&prefix) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
}

const RESTORE: &str = "#!/bin/sh\nset -eu\ncat \"${BBR_ARTIFACT_DIRECTORY}data.txt\" > /dev/null\n";
const LOCK: &str =
    "#!/bin/sh\nset -eu\nmkdir -p /var/vcap/sys/run/broken\ntouch /var/vcap/sys/run/broken/locked\n";
// Not idempotent: fails when there is no lock to remove.
const STRICT_UNLOCK: &str = "#!/bin/sh\nset -eu\nrm /var/vcap/sys/run/broken/locked\n";

#[test]
fn a_broken_job_is_caught_with_one_line_per_violation() {
    cairn_testbed::require_root!();
    let bed = TestBed::start(&[("database", 0, &["broken"])]).expect("test bed");
    let host = bed.host("database", 0);
    // The temporary files the leaky script leaves in the machine's /tmp (shared with the
    // hosts), tagged with this test run and removed at the end, even when the test fails.
    let leak = TmpLeak(format!("cairn-leak-{}", std::process::id()));
    let leaky_backup = LEAKY_BACKUP.replace("LEAK_TAG", &leak.0);
    for (script, body) in [
        ("backup", leaky_backup.as_str()),
        ("restore", RESTORE),
        ("pre-backup-lock", LOCK),
        ("post-backup-unlock", STRICT_UNLOCK),
        ("metadata", "#!/bin/sh\necho '{}'\n"),
    ] {
        bed.install_script(host, "broken", script, body).unwrap();
    }
    // A script copied in under a wrong name.
    bed.install_script(host, "broken", "pre-restore-lock.sh", LOCK)
        .unwrap();
    let output = check_over_ssh(&bed, host, "/var/vcap/jobs/broken/bin/bbr", &[]);
    let report = text(&output);
    assert_eq!(output.status.code(), Some(1), "{report}");
    let failures = lines_with(&report, "FAIL");
    let scope = failures
        .iter()
        .find(|l| l.contains("write-scope"))
        .unwrap_or_else(|| panic!("no write-scope failure: {report}"));
    assert!(
        scope.contains("/var/vcap/store/broken-copy.txt (openat)"),
        "{scope}"
    );
    assert!(
        scope.contains("/var/vcap/store/broken-scratch/rel (mkdir)"),
        "{scope}"
    );
    assert!(
        scope.contains("/tmp/tmp."),
        "the leftover temporary file: {scope}"
    );
    assert_eq!(
        scope.matches("/tmp/tmp.").count(),
        1,
        "the removed temporary file is not a violation: {scope}"
    );
    assert!(
        failures
            .iter()
            .any(|l| l.contains("post-backup-unlock without a prior lock")),
        "{report}"
    );
    assert!(
        failures
            .iter()
            .any(|l| l.contains("(again: unlock must be idempotent)")),
        "{report}"
    );
    assert!(
        failures
            .iter()
            .any(|l| l.contains("symlink ./passwd -> /etc/passwd points outside")),
        "{report}"
    );
    assert!(
        report.contains("`pre-restore-lock.sh` looks like the pre-restore-lock script"),
        "{report}"
    );
    assert!(report.contains("FAILED:"), "{report}");
    // The check unlocked after its lock and removed the artifact root.
    assert!(!bed.is_locked(host, "broken"));
    assert!(!host.vcap_dir.join("store/bbr-backup").exists());

    // A script that is not executable stops the round trip before anything runs.
    std::fs::set_permissions(
        host.vcap_dir.join("jobs/broken/bin/bbr/restore"),
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .unwrap();
    let output = check_over_ssh(&bed, host, "/var/vcap/jobs/broken/bin/bbr", &[]);
    let report = text(&output);
    assert_eq!(output.status.code(), Some(1), "{report}");
    assert!(
        findings(&report, "FAIL", "executable")
            .iter()
            .any(|l| l.contains("restore is not executable")),
        "{report}"
    );
    assert!(report.contains("round trip needs runnable"), "{report}");
}

#[test]
fn a_check_that_cannot_run_says_why_and_exits_2() {
    cairn_testbed::require_root!();
    let bed = TestBed::start(&[("database", 0, &["database"])]).expect("test bed");
    let host = bed.host("database", 0);
    let output = check_over_ssh(&bed, host, "/var/vcap/jobs/nosuchjob/bin/bbr", &[]);
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("`/var/vcap/jobs/nosuchjob/bin/bbr` is not a directory on"),
        "{stderr}"
    );
    let output = check_over_ssh(&bed, host, "/var/vcap/jobs/database", &[]);
    assert_eq!(output.status.code(), Some(2));
    assert!(text(&output).contains("is not a job's scripts folder"));
    // A host whose key is not the one on record is refused.
    let wrong = bed.dir().join("wrong_known_hosts");
    std::fs::write(
        &wrong,
        format!(
            "{} ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl\n",
            host.address
        ),
    )
    .unwrap();
    let output = check_with_known_hosts(&bed, host, "/var/vcap/jobs/database/bin/bbr", &wrong, &[]);
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    assert!(
        text(&output).contains("does not match"),
        "{}",
        text(&output)
    );
}
