//! End-to-end: the run journal of backups into a repository (issue 16). The real `cairn` is
//! SIGKILLed after the first artifact's snapshot was saved and before the backup's record: the
//! snapshot is left in the repository with the backup's id and no record, so `backups list`
//! does not list the backup (and warns about what the killed run left), and the journal names
//! the repository and the backup. The next `backup`, or `backup-cleanup` with the password in
//! `CAIRN_REPOSITORY_PASSWORD_FILE`, deletes that snapshot and says so; the real `restic` then
//! finds no snapshot of the killed backup and checks the repository clean.
//!
//! `backups report` on the repository at that moment shows the earlier backup complete (with
//! its sizes and lock windows, verified) and the killed one incomplete.
//!
//! The kill lands at an exact point, never after a sleep: `tar` on app/0 is bind-mounted over
//! (in that host's own mount namespace only) by a wrapper that, for the `app` job's artifact
//! (the second drained with `--parallelism 1`), says so through a file and waits; the run's
//! `--json` events prove that exactly one artifact was stored at the kill.

use std::fs;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cairn_testbed::{TestBed, TestHost};

use crate::common::*;
use crate::repository::{created_id, on_bed, password_file, repo, with_password};
use crate::repository_restic::restic;

/// The wrapper's helpers: `started` writes its pid to the marker, `wait_release` waits (at
/// most 2 minutes) for the release file.
const WAIT: &str = "#!/bin/sh\n\
    started() { mkdir -p /var/vcap/sys/run; echo $$ > /var/vcap/sys/run/rj-started.tmp; \
    mv /var/vcap/sys/run/rj-started.tmp /var/vcap/sys/run/rj-started; }\n\
    wait_release() { i=0; while [ ! -e /var/vcap/sys/run/rj-release ] && [ $i -lt 2400 ]; do \
    sleep 0.05; i=$((i+1)); done; }\n";

/// Bind-mounts a `tar` that stalls the drain of `job`'s artifact (the repository's `tar -c
/// ... -T -` of its changed files) over `/usr/bin/tar` on `host`; returns the marker it writes
/// when reached.
fn trap_tar(bed: &TestBed, host: &TestHost, job: &str) -> std::path::PathBuf {
    let body = format!(
        "{WAIT}case \"$*\" in\n\
         \"-C /var/vcap/store/bbr-backup/{job}/ \"*\" -T -\") started; wait_release; exit 1 ;;\n\
         *) exec /var/vcap/data/rj-real-tar \"$@\" ;;\n\
         esac\n"
    );
    fs::write(host.vcap_dir.join("data/rj-tar"), body).unwrap();
    let output = bed
        .exec(
            host,
            "chmod 755 /var/vcap/data/rj-tar && cp /usr/bin/tar /var/vcap/data/rj-real-tar \
             && mount --bind /var/vcap/data/rj-tar /usr/bin/tar",
        )
        .unwrap();
    assert!(output.status.success(), "{}", text(&output));
    host.vcap_dir.join("sys/run/rj-started")
}

/// Lets the trapped `tar` end and puts the real one back.
fn release_tar(bed: &TestBed, host: &TestHost, marker: &Path) {
    let run_dir = host.vcap_dir.join("sys/run");
    fs::write(run_dir.join("rj-release"), "").unwrap();
    if let Some(pid) = fs::read_to_string(marker)
        .ok()
        .and_then(|p| p.trim().parse::<u32>().ok())
    {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Path::new(&format!("/proc/{pid}")).exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    let output = bed
        .exec(
            host,
            "umount -l /usr/bin/tar && rm -f /var/vcap/data/rj-tar /var/vcap/data/rj-real-tar",
        )
        .unwrap();
    assert!(output.status.success(), "{}", text(&output));
    let _ = fs::remove_file(run_dir.join("rj-release"));
    let _ = fs::remove_file(marker);
}

/// Waits until `marker` holds the trapped process's pid; panics if `child` ends first.
fn wait_for(marker: &Path, child: &mut Child, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !fs::read_to_string(marker).is_ok_and(|pid| !pid.trim().is_empty()) {
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "the backup ended ({status}) before the second artifact's drain: {}",
                fs::read_to_string(log).unwrap_or_default()
            );
        }
        assert!(
            Instant::now() < deadline,
            "the trap was not reached in 120 s"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The journal files in the state directory.
fn journals(work: &Path) -> Vec<std::path::PathBuf> {
    fs::read_dir(state_dir(work))
        .map(|entries| entries.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

/// The ids of the snapshots restic lists with `tag` (`key=value`).
fn snapshots_tagged(work: &Path, root: &Path, password: &Path, tag: &str) -> Vec<String> {
    let output = restic(
        work,
        root.to_str().unwrap(),
        password,
        &["--no-lock", "snapshots", "--json", "--tag", tag],
    );
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let listed: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    listed
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect()
}

/// `backups report` on the repository right after the kill: the backup before it complete
/// (its snapshot sizes, the data it added, its lock windows, verified with `--verify`), the
/// killed one incomplete with the one artifact it left; the HTML page has its plots.
fn check_report(work: &Path, url: &str, password: &Path, killed: &str) {
    let page = work.join("report.html");
    let output = with_password(
        work,
        password,
        &[
            "backups",
            "--store",
            url,
            "report",
            "-d",
            "testbed",
            "--json",
            "--verify",
            "--html",
            page.to_str().unwrap(),
        ],
    );
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let history: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(history["store"], url);
    let runs = history["deployments"][0]["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2, "{history:#}");
    let (earlier, dead) = (&runs[0], &runs[1]);
    assert_eq!(earlier["outcome"], "complete", "{earlier:#}");
    assert_eq!(earlier["verification"]["state"], "passed", "{earlier:#}");
    assert_eq!(earlier["encrypted"], true);
    assert!(earlier["stored_bytes"].as_u64().unwrap() > 0, "{earlier:#}");
    assert!(earlier["plain_bytes"].as_u64().unwrap() > 0, "{earlier:#}");
    assert!(
        earlier["duration_seconds"].as_f64().is_some(),
        "{earlier:#}"
    );
    let artifacts: Vec<&String> = earlier["artifacts"].as_object().unwrap().keys().collect();
    assert_eq!(
        artifacts,
        ["app-0-app", "database-0-database"],
        "{earlier:#}"
    );
    let windows: Vec<&String> = earlier["lock_windows"]
        .as_object()
        .unwrap()
        .keys()
        .collect();
    assert_eq!(windows.len(), 2, "{earlier:#}");
    assert_eq!(dead["id"], killed);
    assert_eq!(dead["outcome"], "incomplete", "{dead:#}");
    let left: Vec<&String> = dead["artifacts"].as_object().unwrap().keys().collect();
    assert_eq!(left, ["database-0-database"], "{dead:#}");
    let html = fs::read_to_string(&page).unwrap();
    assert!(html.contains("<svg") && html.contains(killed), "the page");
}

#[test]
fn a_repository_backup_killed_after_its_first_snapshot_is_reported_incomplete_and_undone_by_the_next_backup_and_by_backup_cleanup(
) {
    cairn_testbed::require_root!();
    let bed =
        TestBed::start(&[("database", 0, &["database"]), ("app", 0, &["app"])]).expect("test bed");
    let app = bed.host("app", 0);
    let work = workdir();
    let root = work.root().join("repo");
    fs::create_dir(&root).unwrap();
    let url = format!("repo+file://{}", root.display());
    let password = password_file(work.root(), "password", "correct horse", 0o600);
    created_id(&repo(work.path(), &["init"], &url, &password));
    let earlier = on_bed(&bed, work.path(), &password, &["backup", "--store", &url]);
    assert_eq!(earlier.status.code(), Some(0), "{}", text(&earlier));
    let inventory = bed.inventory();

    for next in ["backup", "backup-cleanup"] {
        std::thread::sleep(Duration::from_millis(1100)); // backup ids are per second
        let marker = trap_tar(&bed, app, "app");
        let events = work.root().join("killed.jsonl");
        let log = work.root().join("killed.err");
        let mut child = cairn_command_in(work.path())
            .args(["deployment", "--inventory", inventory.to_str().unwrap()])
            .args(["backup", "--store", &url, "--parallelism", "1", "--json"])
            .env("CAIRN_REPOSITORY_PASSWORD_FILE", &password)
            .stdout(fs::File::create(&events).unwrap())
            .stderr(fs::File::create(&log).unwrap())
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        wait_for(&marker, &mut child, &log);
        Command::new("kill")
            .args(["-KILL", &child.id().to_string()])
            .status()
            .unwrap();
        child.wait().unwrap();
        release_tar(&bed, app, &marker);
        let stored = fs::read_to_string(&events)
            .unwrap()
            .matches("\"artifact_stored\"")
            .count();
        assert_eq!(
            stored, 1,
            "the kill must land after one artifact's snapshot"
        );

        // The journal names the repository and the backup; its snapshot is there, no record.
        let files = journals(work.path());
        assert_eq!(files.len(), 1, "{files:?}");
        let journal: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(&files[0]).unwrap()).unwrap();
        assert_eq!(journal["repository_backup"]["store"], url.as_str());
        let killed = journal["repository_backup"]["backup_id"]
            .as_str()
            .unwrap()
            .to_string();
        let tag = format!("cairn-backup={killed}");
        assert_eq!(
            snapshots_tagged(work.path(), &root, &password, &tag).len(),
            1,
            "the first artifact's snapshot is left"
        );
        assert!(snapshots_tagged(
            work.path(),
            &root,
            &password,
            &format!("{tag},cairn-kind=record")
        )
        .is_empty());

        // Never listed complete; the listing says what the killed run left.
        let listed = with_password(
            work.path(),
            &password,
            &["backups", "--store", &url, "list"],
        );
        assert_eq!(listed.status.code(), Some(0), "{}", text(&listed));
        assert!(!String::from_utf8_lossy(&listed.stdout).contains(&killed));
        for said in [
            "warning: A killed run left: ".to_string(),
            format!("; the artifact snapshots of backup testbed/{killed} in {url} (incomplete unless its record snapshot is there), from the backup of testbed"),
            "(and CAIRN_REPOSITORY_PASSWORD_FILE, for the repository's snapshots) clears it".to_string(),
        ] {
            assert!(text(&listed).contains(&said), "no {said:?} in {}", text(&listed));
        }

        if next == "backup" {
            check_report(work.path(), &url, &password, &killed);
        }

        let output = on_bed(
            &bed,
            work.path(),
            &password,
            &if next == "backup" {
                vec!["backup", "--store", &url]
            } else {
                vec![next]
            },
        );
        assert_eq!(output.status.code(), Some(0), "{next}: {}", text(&output));
        assert!(
            text(&output).contains(&format!(
                "Recovered: deleted 1 artifact snapshot(s) of the incomplete backup testbed/{killed} from {url}; the data only they used is freed by `cairn backups prune`"
            )),
            "{next}: {}",
            text(&output)
        );
        assert!(
            snapshots_tagged(work.path(), &root, &password, &tag).is_empty(),
            "{next} deleted the killed backup's snapshot"
        );
        assert_nothing_left(&bed);
        assert!(journals(work.path()).is_empty(), "{next}");
    }
    // Every backup listed is complete and verifies; restic reads the repository cleanly.
    let listed = with_password(
        work.path(),
        &password,
        &["backups", "--store", &url, "list"],
    );
    let ids: Vec<String> = String::from_utf8_lossy(&listed.stdout)
        .lines()
        .filter_map(|line| line.strip_prefix("testbed/"))
        .map(|rest| rest.split_whitespace().next().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 2, "the first and the recovering backup: {ids:?}");
    for id in &ids {
        let verified = with_password(
            work.path(),
            &password,
            &[
                "backups",
                "--store",
                &url,
                "verify",
                &format!("testbed/{id}"),
            ],
        );
        assert_eq!(verified.status.code(), Some(0), "{}", text(&verified));
    }
    let checked = restic(work.path(), root.to_str().unwrap(), &password, &["check"]);
    assert_eq!(checked.status.code(), Some(0), "{}", text(&checked));
}
