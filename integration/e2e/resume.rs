//! End-to-end: resumable drains (`backup --resumable`, `backup --resume`, `backup-cleanup`;
//! docs/stores.md "Resuming a drain"). A ~5.3 MiB artifact in 1 MiB segments, against moto
//! (through the fault proxy, which holds the third segment's upload or takes the store down)
//! and `file://` (the instance's network slowed with `tc`, so the coordinator can be killed
//! between segments):
//! - SIGKILL after two segments: the jobs are unlocked, the staged artifact and the two
//!   segments stay; `--resume` sends only the other segments (the proxy's requests, and one
//!   version per segment in the bucket) and the restore is byte-identical;
//! - a store that goes down during the drain: the run fails with the jobs unlocked and the
//!   staged artifact kept, and `--resume` finishes it once the store is back;
//! - a plain backup is refused while one is pending, naming `--resume` and `backup-cleanup`;
//! - a staged artifact changed between the runs: `--resume` fails with a clear error and
//!   writes no manifest; `backup-cleanup` then discards the backup (staged artifact, segments,
//!   journal);
//! - SIGTERM during a resumable drain keeps what it staged and stored, says so, and `--resume`
//!   finishes it.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;
use cairn_testbed::{TestBed, TestHost};

/// `backup --store URL --resume --segment-size 1MiB`, as every resume in these tests.
fn resume(bed: &TestBed, work: &Path, url: &str) -> Output {
    cairn(
        bed,
        work,
        &[
            "backup",
            "--store",
            url,
            "--resume",
            "--segment-size",
            "1MiB",
        ],
    )
}

/// The one file the `files` job backs up: six 1 MiB segments with its tar.
const ARTIFACT: usize = 5 * 1024 * 1024 + 300_000;

/// A test bed whose `files` job (app/0) backs up [`ARTIFACT`] pseudo-random bytes, and the
/// folder it backs up.
fn bed() -> (TestBed, PathBuf) {
    let bed = TestBed::start(&[("app", 0, &["app", "files"])]).expect("test bed");
    let files = bed.host("app", 0).vcap_dir.join("store/files");
    fs::create_dir_all(&files).unwrap();
    write_pseudo_random(&files.join("random.bin"), ARTIFACT);
    (bed, files)
}

/// The staged artifact of the `files` job on app/0.
fn staged(bed: &TestBed) -> PathBuf {
    bed.host("app", 0)
        .vcap_dir
        .join("store/bbr-backup/files/random.bin")
}

fn command(bed: &TestBed, work: &Path, env: &[(&str, &str)], args: &[&str]) -> Command {
    let inventory = bed.inventory();
    let mut command = cairn_command_in(work);
    command
        .envs(env.iter().copied())
        .args(["deployment", "--inventory", inventory.to_str().unwrap()])
        .args(args);
    command
}

fn spawn(bed: &TestBed, work: &Path, env: &[(&str, &str)], args: &[&str]) -> Child {
    command(bed, work, env, args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn finish(child: Child) -> Output {
    let output = child.wait_with_output().unwrap();
    eprintln!("cairn -> {:?}\n{}", output.status.code(), text(&output));
    output
}

fn wait_for(path: &Path, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !path.exists() {
        assert!(Instant::now() < deadline, "{what} never happened");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The run journals in the state directory of `work`.
fn journals(work: &Path) -> Vec<serde_json::Value> {
    let Ok(entries) = fs::read_dir(state_dir(work)) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".journal.json"))
        .filter_map(|e| serde_json::from_slice(&fs::read(e.path()).ok()?).ok())
        .collect()
}

/// The segments of the `files` artifact a journal's resumable backup lists, in order.
fn journal_segments(journal: &serde_json::Value) -> Vec<serde_json::Value> {
    journal["resumable_backup"]["segments"]
        .as_object()
        .and_then(|by_artifact| {
            by_artifact
                .iter()
                .find(|(key, _)| key.ends_with("/app-0-files.tar.zst"))
                .and_then(|(_, segments)| segments.as_array().cloned())
        })
        .unwrap_or_default()
}

/// The one journal with a resumable backup.
fn pending_journal(work: &Path) -> serde_json::Value {
    let pending: Vec<serde_json::Value> = journals(work)
        .into_iter()
        .filter(|j| !j["resumable_backup"].is_null())
        .collect();
    assert_eq!(pending.len(), 1, "{pending:?}");
    pending.into_iter().next().unwrap()
}

/// SIGKILLs the run once its journal lists two stored segments.
fn kill_after_two_segments(child: &mut Child, work: &Path) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if journals(work)
            .iter()
            .any(|j| journal_segments(j).len() >= 2)
        {
            child.kill().unwrap();
            let _ = child.wait();
            return;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the backup ended before two segments were stored"
        );
        assert!(Instant::now() < deadline, "two segments were never stored");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The host's outgoing bandwidth limited with `tc` (a token bucket on its one link) while
/// this lives: a drain of a few MiB takes seconds.
struct Throttle {
    pid: String,
    link: String,
}

impl Throttle {
    fn start(host: &TestHost, rate: &str) -> Throttle {
        let pid = host.sshd_pid.to_string();
        let links = Command::new("nsenter")
            .args(["-t", &pid, "-n", "ip", "-o", "link", "show"])
            .output()
            .unwrap();
        let link = String::from_utf8_lossy(&links.stdout)
            .lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|name| name.split('@').next().unwrap().to_string())
            .find(|name| name != "lo")
            .expect("the host's link");
        let status = Command::new("nsenter")
            .args(["-t", &pid, "-n", "tc", "qdisc", "add", "dev", &link, "root"])
            .args(["tbf", "rate", rate, "burst", "32kb", "latency", "5s"])
            .status()
            .unwrap();
        assert!(status.success(), "tc qdisc add on {link}");
        Throttle { pid, link }
    }
}

impl Drop for Throttle {
    fn drop(&mut self) {
        let _ = Command::new("nsenter")
            .args([
                "-t", &self.pid, "-n", "tc", "qdisc", "del", "dev", &self.link,
            ])
            .arg("root")
            .status();
    }
}

/// Every file under `dir` (none when it does not exist).
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = fs::read_dir(dir) else {
        return found;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(files_under(&path));
        } else {
            found.push(path);
        }
    }
    found
}

#[test]
fn local_store_refuses_a_plain_backup_and_a_changed_staged_artifact_then_cleanup_discards() {
    cairn_testbed::require_root!();
    let (bed, _files) = bed();
    let app = bed.host("app", 0);
    let store_dir = workdir();
    let url = format!("file://{}", store_dir.path().display());
    let work = workdir();
    let resumable = [
        "backup",
        "--store",
        &url,
        "--resumable",
        "--segment-size",
        "1MiB",
    ];
    let throttle = Throttle::start(app, "16mbit");
    let mut child = spawn(&bed, work.path(), &[], &resumable);
    kill_after_two_segments(&mut child, work.path());
    drop(throttle);
    let journal = pending_journal(work.path());
    let id = journal["resumable_backup"]["backup_id"]
        .as_str()
        .unwrap()
        .to_string();
    let backup_dir = store_dir.path().join("testbed").join(&id);
    // Killed after the unlock: the jobs are unlocked, the staged artifact and the journal's
    // segments stay.
    assert!(!bed.is_locked(app, "app"));
    assert!(staged(&bed).exists());
    for segment in journal_segments(&journal) {
        let key = segment["key"].as_str().unwrap();
        assert!(store_dir.path().join(key).exists(), "{key}");
    }
    assert!(!backup_dir.join("manifest.json").exists());

    // A plain backup is refused, naming both ways out, and changes nothing.
    let output = cairn(&bed, work.path(), &["backup", "--store", &url]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert!(
        text(&output).contains("`backup --resume`") && text(&output).contains("`backup-cleanup`"),
        "{}",
        text(&output)
    );
    assert!(staged(&bed).exists());

    // The staged artifact changes on the instance: the resume stops, nothing is complete.
    let mut changed = fs::read(staged(&bed)).unwrap();
    changed[0] ^= 0xff;
    fs::write(staged(&bed), changed).unwrap();
    let output = resume(&bed, work.path(), &url);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert!(
        text(&output).contains("differs from the one the interrupted run stored"),
        "{}",
        text(&output)
    );
    assert!(!backup_dir.join("manifest.json").exists());
    let listed = run(work.path(), &["backups", "--store", &url, "list", "--json"]);
    assert!(
        !String::from_utf8_lossy(&listed.stdout).contains("\"complete\":true"),
        "{}",
        text(&listed)
    );
    assert!(staged(&bed).exists(), "still pending");

    // backup-cleanup discards it: staged artifact, segments, journals.
    let output = command(
        &bed,
        work.path(),
        &[("CAIRN_STORE", url.as_str())],
        &["backup-cleanup"],
    )
    .output()
    .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert!(
        text(&output).contains(&format!("Discarded the resumable backup {id}")),
        "{}",
        text(&output)
    );
    assert_nothing_left(&bed);
    assert_eq!(files_under(&backup_dir), Vec::<PathBuf>::new());
    assert!(journals(work.path()).is_empty());
    assert_eq!(
        files_under(&store_dir.path().join("testbed/journal")),
        Vec::<PathBuf>::new()
    );
    // Nothing is pending any more: a plain backup works.
    let output = cairn(&bed, work.path(), &["backup", "--store", &url]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert_nothing_left(&bed);

    // SIGTERM during a resumable drain keeps it too, and says so; the resume finishes it.
    let throttle = Throttle::start(app, "16mbit");
    let mut child = spawn(&bed, work.path(), &[], &resumable);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !journals(work.path())
        .iter()
        .any(|j| !journal_segments(j).is_empty())
    {
        assert!(Instant::now() < deadline, "no segment was ever stored");
        assert!(
            child.try_wait().unwrap().is_none(),
            "the backup ended early"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let output = finish(child);
    drop(throttle);
    assert_ne!(output.status.code(), Some(0), "{}", text(&output));
    assert!(
        text(&output).contains("staged artifacts and stored segments were kept"),
        "{}",
        text(&output)
    );
    assert!(!bed.is_locked(app, "app"));
    assert!(staged(&bed).exists());
    let id = pending_journal(work.path())["resumable_backup"]["backup_id"]
        .as_str()
        .unwrap()
        .to_string();
    // Another jumpbox finishes it: only the store's copy of the journal is left, written by
    // another host. A plain backup is refused naming both commands; `--resume` adopts it.
    fs::remove_dir_all(state_dir(work.path())).unwrap();
    let journal_dir = store_dir.path().join("testbed/journal");
    let stored = files_under(&journal_dir);
    assert_eq!(stored.len(), 1, "{stored:?}");
    let mut journal: serde_json::Value =
        serde_json::from_slice(&fs::read(&stored[0]).unwrap()).unwrap();
    journal["host"] = "another-jumpbox".into();
    fs::remove_file(&stored[0]).unwrap();
    fs::write(
        journal_dir.join("another-jumpbox-4242.json"),
        serde_json::to_vec(&journal).unwrap(),
    )
    .unwrap();
    // `backups list` shows it as resumable (not merely incomplete), with both commands.
    let listed = run(work.path(), &["backups", "--store", &url, "list"]);
    assert_eq!(listed.status.code(), Some(0), "{}", text(&listed));
    let rows = String::from_utf8_lossy(&listed.stdout).to_string();
    assert!(
        rows.lines()
            .any(|row| row.starts_with(&format!("testbed/{id}\t")) && row.contains("\tresumable\t")),
        "{rows}"
    );
    assert!(
        text(&listed).contains(&format!("The resumable backup {id} of testbed is pending"))
            && text(&listed).contains("backup --resume`"),
        "{}",
        text(&listed)
    );
    for command in [
        vec!["backup", "--store", &url],
        vec!["pre-backup-check", "--store", &url],
    ] {
        let output = cairn(&bed, work.path(), &command);
        assert_eq!(
            output.status.code(),
            Some(1),
            "{command:?}: {}",
            text(&output)
        );
        assert!(
            text(&output).contains(&format!("A resumable backup of testbed is pending ({id}")),
            "{command:?}: {}",
            text(&output)
        );
    }
    let output = resume(&bed, work.path(), &url);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert!(
        text(&output).contains("left by a run on another-jumpbox"),
        "{}",
        text(&output)
    );
    assert!(store_dir
        .path()
        .join("testbed")
        .join(&id)
        .join("manifest.json")
        .exists());
    assert_nothing_left(&bed);
    assert!(journals(work.path()).is_empty());
}

fn s3_url(endpoint: &str) -> String {
    format!("s3://cairn-backups/resume?endpoint={endpoint}&path_style=true&region=us-east-1")
}

/// Segment index of an upload request to the backup's segments (`…tar.zst.000002`), if it
/// is one.
fn segment_request(request: &str) -> Option<u32> {
    let (method, path) = request.split_once(' ')?;
    if method != "PUT" && method != "POST" {
        return None;
    }
    let path = path.split('?').next()?;
    let (_, index) = path.rsplit_once(".tar.zst.")?;
    index.parse().ok()
}

/// Object keys and their versions in the bucket under `prefix`.
fn versions(moto: &Emulator, prefix: &str) -> Vec<(String, String)> {
    moto.fixture(&["versions", "cairn-backups", prefix])
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn s3_resume_after_sigkill_and_after_a_store_outage_sends_only_the_rest() {
    cairn_testbed::require_root!();
    let moto = Emulator::start(Server::Moto);
    moto.fixture(&["create-bucket", "cairn-backups", "versioned"]);
    let (bed, files) = bed();
    let app = bed.host("app", 0);
    let before = tree_digest(&files);
    let work = workdir();
    // The third segment's first request is held: two segments are stored, then the run waits.
    let proxy = FaultProxy::start_logging_authorization(&moto.endpoint, "{}");
    let held = proxy.marker("held");
    proxy.set(
        &serde_json::json!({"hold": {"match": "^(PUT|POST) [^?]*\\.tar\\.zst\\.000002", "after": 0, "marker": held}})
            .to_string(),
    );
    let url = s3_url(&proxy.endpoint);
    let resumable = [
        "backup",
        "--store",
        &url,
        "--resumable",
        "--segment-size",
        "1MiB",
    ];
    let mut child = spawn(&bed, work.path(), &[], &resumable);
    wait_for(&held, "the third segment's upload");
    child.kill().unwrap();
    let _ = child.wait();
    let journal = pending_journal(work.path());
    let id = journal["resumable_backup"]["backup_id"]
        .as_str()
        .unwrap()
        .to_string();
    let first_two = journal_segments(&journal);
    assert_eq!(first_two.len(), 2, "{journal}");
    assert!(!bed.is_locked(app, "app"));
    assert!(staged(&bed).exists());
    let uploads_before = proxy.authorized_requests().len();

    // The resume sends only the segments after the first two (the `app` job's one-segment
    // artifact was stored whole: three segments are compared, not sent).
    proxy.set("{}");
    let output = resume(&bed, work.path(), &url);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert!(
        text(&output).contains(&format!(
            "Resuming backup {id} of testbed: the 3 segment(s)"
        )),
        "{}",
        text(&output)
    );
    let sent: Vec<u32> = proxy.authorized_requests()[uploads_before..]
        .iter()
        .filter_map(|(request, _)| segment_request(request))
        .collect();
    assert!(!sent.is_empty(), "the rest was sent");
    assert!(sent.iter().all(|&i| i >= 2), "sent again: {sent:?}");
    // In the bucket: six segments (5.3 MiB of tar in 1 MiB segments); the first two have one
    // version each, the one the killed run stored.
    let prefix = format!("resume/testbed/{id}/app-0-files.tar.zst.");
    let stored = versions(&moto, &prefix);
    let mut keys: Vec<&String> = stored.iter().map(|(k, _)| k).collect();
    keys.dedup();
    assert_eq!(keys.len(), 6, "{stored:?}");
    for segment in &first_two {
        let key = format!("resume/{}", segment["key"].as_str().unwrap());
        let version = segment["version"].as_str().unwrap();
        let of_key: Vec<&String> = stored
            .iter()
            .filter(|(k, _)| *k == key)
            .map(|(_, v)| v)
            .collect();
        assert_eq!(of_key, vec![version], "{key}: {stored:?}");
    }
    assert_nothing_left(&bed);
    assert!(journals(work.path()).is_empty());
    // The resumed backup restores byte for byte.
    fs::remove_dir_all(&files).unwrap();
    let output = cairn(
        &bed,
        work.path(),
        &["restore", "--store", &url, "--backup", &id],
    );
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert_eq!(tree_digest(&files), before);

    // The store goes down during the drain: the run fails, jobs unlocked, staged data kept.
    let run_dir = app.vcap_dir.join("sys/run");
    let example = fs::read_to_string("scripts-contract/examples/files/bin/bbr/backup").unwrap();
    let paused = format!(
        "{example}\ntouch /var/vcap/sys/run/resume-staged\nwhile [ ! -e /var/vcap/sys/run/resume-go ]; do sleep 0.05; done\n"
    );
    bed.install_script(app, "files", "backup", &paused).unwrap();
    let child = spawn(
        &bed,
        work.path(),
        &[("CAIRN_S3_MAX_ATTEMPTS", "2")],
        &resumable,
    );
    wait_for(&run_dir.join("resume-staged"), "the backup script");
    proxy.set(r#"{"down": true}"#);
    fs::write(run_dir.join("resume-go"), "").unwrap();
    let output = finish(child);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    // The report ends with the two commands that end the pending backup, not with bbr's
    // advice to clean up (which would discard it).
    let said = text(&output);
    assert!(
        said.contains(
            "stored segments were kept: finish the backup with `cairn deployment --inventory"
        ) && said.contains(
            " backup --resume` (the same store), or discard it with `cairn deployment --inventory"
        ),
        "{said}"
    );
    assert!(!said.contains("It is recommended that you run"), "{said}");
    assert!(!bed.is_locked(app, "app"));
    assert!(staged(&bed).exists());
    let pending = pending_journal(work.path());
    let second = pending["resumable_backup"]["backup_id"]
        .as_str()
        .unwrap()
        .to_string();
    // The store is back: the resume finishes it.
    proxy.set("{}");
    let output = resume(&bed, work.path(), &url);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert_nothing_left(&bed);
    let second = format!("testbed/{second}");
    let verify = run(
        work.path(),
        &["backups", "--store", &url, "verify", &second],
    );
    assert_eq!(verify.status.code(), Some(0), "{}", text(&verify));
}
