//! End-to-end: notifications (`--notify-url`) and the "backup overdue" check and metric
//! (issue 20, item 3). The real `cairn` against the real sshd test bed; the webhooks are
//! `integration/notify/webhook_receiver.py`, a real HTTP server on a free loopback port that
//! records every request and checks its `X-Cairn-Signature` with Python's own `hmac` (the
//! check docs/operations.md gives receivers); the store is a real `file://` store.

use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::common::*;
use cairn_testbed::TestBed;

/// A webhook receiver process; killed when dropped.
struct Receiver {
    child: Child,
    port: u16,
    record: PathBuf,
}

impl Receiver {
    /// Starts `webhook_receiver.py` with `extra` flags, recording into `dir`.
    fn start(dir: &Path, name: &str, secret: Option<&Path>, extra: &[&str]) -> Receiver {
        let record = dir.join(format!("{name}.jsonl"));
        let script =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("integration/notify/webhook_receiver.py");
        let mut command = Command::new("python3");
        command
            .arg(script)
            .arg("--record")
            .arg(&record)
            .args(extra)
            .stdout(Stdio::piped());
        if let Some(secret) = secret {
            command.arg("--secret-file").arg(secret);
        }
        let mut child = command.spawn().expect("python3 runs the receiver");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line.trim().parse().expect("the receiver prints its port");
        Receiver {
            child,
            port,
            record,
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hooks/cairn?token=abc", self.port)
    }

    /// Every request it received, in order.
    fn requests(&self) -> Vec<serde_json::Value> {
        fs::read_to_string(&self.record)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback port nothing listens on (bound, then closed).
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// The shared secret, in a file of `mode`.
fn secret_file(dir: &Path, mode: u32) -> PathBuf {
    let path = dir.join("notify.secret");
    fs::write(&path, "s3cr3t-shared-with-the-receiver\n").unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
    path
}

/// `cairn deployment --inventory <bed> ARGS` in `work`; killed and failed if it has not ended
/// after two minutes (the notifications' bound is seconds: a hang is a bug, not slowness).
fn cairn_bounded(bed: &TestBed, work: &Path, args: &[&str]) -> Output {
    let inventory = bed.inventory();
    let mut child = cairn_command_in(work)
        .args(["deployment", "--inventory", inventory.to_str().unwrap()])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cairn runs");
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            panic!("cairn {args:?} did not end: a notification held the run");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let output = child.wait_with_output().unwrap();
    eprintln!(
        "cairn {args:?} -> {:?}\n--- stdout\n{}--- stderr\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn events_schema() -> serde_json::Value {
    serde_json::from_str(
        &fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/events.schema.json"))
            .unwrap(),
    )
    .unwrap()
}

/// Checks the request's signature here too (Rust's `hmac`, beside the receiver's Python).
fn assert_signed(request: &serde_json::Value, secret: &[u8]) {
    assert_eq!(request["signature_valid"], true, "{request}");
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret).unwrap();
    mac.update(request["body"].as_str().unwrap().as_bytes());
    let expected = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    assert_eq!(request["headers"]["x-cairn-signature"], expected.as_str());
    assert_eq!(request["headers"]["content-type"], "application/json");
}

const SECRET: &[u8] = b"s3cr3t-shared-with-the-receiver";

/// The last line of `--json` stdout: the run's final event.
fn final_event(output: &Output) -> serde_json::Value {
    let stdout = String::from_utf8_lossy(&output.stdout);
    serde_json::from_str(stdout.lines().last().expect("events")).unwrap()
}

fn without_time(mut event: serde_json::Value) -> serde_json::Value {
    event.as_object_mut().unwrap().remove("time");
    event
}

#[test]
fn every_webhook_gets_the_signed_final_event_once_and_retries_are_bounded() {
    cairn_testbed::require_root!();
    let bed = TestBed::start(&[]).expect("test bed");
    let work = workdir();
    let secret = secret_file(work.root(), 0o600);
    let json = Receiver::start(work.root(), "json", Some(&secret), &[]);
    let slack = Receiver::start(work.root(), "slack", Some(&secret), &[]);
    let flaky = Receiver::start(work.root(), "flaky", Some(&secret), &["--fail-first", "2"]);
    let (json_url, slack_url, flaky_url) = (json.url(), slack.url(), flaky.url());
    let output = cairn_bounded(
        &bed,
        work.path(),
        &[
            "--json",
            "--notify-url",
            &json_url,
            "--notify-url",
            &slack_url,
            "--notify-url",
            &flaky_url,
            "--notify-format",
            "json",
            "--notify-format",
            "slack",
            "--notify-format",
            "json",
            "--notify-secret-file",
            secret.to_str().unwrap(),
            "backup",
            "--artifact-path",
            work.path().to_str().unwrap(),
        ],
    );
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert!(!text(&output).contains("notification to"), "no warning");
    let event = final_event(&output);
    assert_eq!(event["event"], "run_finished");

    // JSON: once, signed, the run's final event, valid against the documented schema.
    let requests = json.requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert_signed(&requests[0], SECRET);
    assert_eq!(requests[0]["path"], "/hooks/cairn?token=abc");
    let body: serde_json::Value =
        serde_json::from_str(requests[0]["body"].as_str().unwrap()).unwrap();
    cairn_testbed::schema::validate(&events_schema(), &body).unwrap();
    assert_eq!(without_time(body.clone()), without_time(event.clone()));
    assert_eq!(body["exit_code"], 0);
    assert_eq!(body["operation"], "backup");

    // Slack: once, one line with the deployment, operation, outcome, backup, duration, size.
    let requests = slack.requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert_signed(&requests[0], SECRET);
    let message: serde_json::Value =
        serde_json::from_str(requests[0]["body"].as_str().unwrap()).unwrap();
    let text_line = message["text"].as_str().unwrap();
    let backup = backup_dir(work.path());
    let name = backup.file_name().unwrap().to_str().unwrap();
    assert!(
        text_line.starts_with(&format!(
            "Cairn: deployment testbed: backup succeeded, backup {name}, "
        )),
        "{text_line}"
    );
    assert!(
        text_line.ends_with(" B") || text_line.ends_with("iB"),
        "{text_line}"
    );
    assert!(!text_line.contains('\n'));
    assert_eq!(
        message.as_object().unwrap().len(),
        1,
        "only text: {message}"
    );

    // 500, 500, then taken: three requests, one delivery, no warning.
    let requests = flaky.requests();
    let statuses: Vec<&serde_json::Value> = requests.iter().map(|r| &r["status"]).collect();
    assert_eq!(statuses, [500, 500, 204], "{requests:?}");
    for request in &requests {
        assert_signed(request, SECRET);
        assert_eq!(
            request["body"], requests[0]["body"],
            "the same body each time"
        );
    }

    // A webhook that is down and one that never answers: the backup still succeeds, complete,
    // with one warning line each naming the host but not the URL's token.
    let hanging = Receiver::start(work.root(), "hanging", Some(&secret), &["--hang"]);
    let down = format!("http://127.0.0.1:{}/x?token=abc", closed_port());
    let hanging_url = hanging.url();
    let second = workdir();
    let output = cairn_bounded(
        &bed,
        second.path(),
        &[
            "--notify-url",
            &down,
            "--notify-url",
            &hanging_url,
            "--notify-timeout",
            "1s",
            "--notify-secret-file",
            secret.to_str().unwrap(),
            "backup",
            "--artifact-path",
            second.path().to_str().unwrap(),
        ],
    );
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let all = text(&output);
    let warnings: Vec<&str> = all
        .lines()
        .filter(|l| l.contains("notification to"))
        .collect();
    assert_eq!(warnings.len(), 2, "{all}");
    for warning in &warnings {
        assert!(warning.contains("failed after 3 tries"), "{warning}");
        assert!(
            warning.contains("the run's result is unchanged"),
            "{warning}"
        );
        assert!(
            !warning.contains("token"),
            "the URL's secret part: {warning}"
        );
    }
    assert!(
        warnings.iter().any(|w| w.contains("cannot connect")),
        "{all}"
    );
    assert!(
        warnings.iter().any(|w| w.contains("no answer within 1s")),
        "{all}"
    );
    assert_eq!(hanging.requests().len(), 3, "three tries");
    let verify = run(
        second.path(),
        &[
            "backups",
            "verify",
            "--artifact-path",
            backup_dir(second.path()).to_str().unwrap(),
        ],
    );
    assert_eq!(verify.status.code(), Some(0), "complete: {}", text(&verify));
}

#[test]
fn a_failed_backup_is_notified_with_its_exit_code_and_keeps_it() {
    cairn_testbed::require_root!();
    let bed = TestBed::start(&[]).expect("test bed");
    let work = workdir();
    let secret = secret_file(work.root(), 0o600);
    let json = Receiver::start(work.root(), "json", Some(&secret), &[]);
    let slack = Receiver::start(work.root(), "slack", None, &[]);
    // A leftover artifact directory fails the backup with exit code 1 before any lock.
    fs::create_dir_all(bed.host("app", 0).vcap_dir.join("store/bbr-backup")).unwrap();
    let backup = |notify: bool| {
        let (json_url, slack_url) = (json.url(), slack.url());
        let mut args = vec![];
        if notify {
            args.extend([
                "--notify-url",
                json_url.as_str(),
                "--notify-url",
                slack_url.as_str(),
                "--notify-format",
                "json",
                "--notify-format",
                "slack",
                "--notify-secret-file",
                secret.to_str().unwrap(),
            ]);
        }
        args.extend(["backup", "--artifact-path", work.path().to_str().unwrap()]);
        cairn_bounded(&bed, work.path(), &args)
    };
    let without = backup(false);
    let with = backup(true);
    assert_eq!(without.status.code(), Some(1), "{}", text(&without));
    assert_eq!(with.status.code(), without.status.code(), "unchanged");
    let requests = json.requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert_signed(&requests[0], SECRET);
    let body: serde_json::Value =
        serde_json::from_str(requests[0]["body"].as_str().unwrap()).unwrap();
    cairn_testbed::schema::validate(&events_schema(), &body).unwrap();
    assert_eq!(body["event"], "run_finished");
    assert_eq!(body["exit_code"], 1);
    assert!(body["artifact"].is_null(), "{body}");
    assert!(
        body["errors"][0].as_str().unwrap().contains("bbr-backup"),
        "{body}"
    );
    let requests = slack.requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    let message: serde_json::Value =
        serde_json::from_str(requests[0]["body"].as_str().unwrap()).unwrap();
    let line = message["text"].as_str().unwrap();
    assert!(
        line.starts_with("Cairn: deployment testbed: backup FAILED (exit code 1), "),
        "{line}"
    );

    // A run that never started (its inventory cannot be read) is notified too: exit code 1.
    let early = Receiver::start(work.root(), "early", Some(&secret), &[]);
    let early_url = early.url();
    let missing = work.root().join("missing.yml");
    let output = run(
        work.path(),
        &[
            "deployment",
            "--inventory",
            missing.to_str().unwrap(),
            "--notify-url",
            &early_url,
            "--notify-secret-file",
            secret.to_str().unwrap(),
            "backup",
            "--artifact-path",
            work.path().to_str().unwrap(),
        ],
    );
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    let requests = early.requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert_signed(&requests[0], SECRET);
    let body: serde_json::Value =
        serde_json::from_str(requests[0]["body"].as_str().unwrap()).unwrap();
    cairn_testbed::schema::validate(&events_schema(), &body).unwrap();
    assert_eq!(body["exit_code"], 1);
    assert_eq!(body["operation"], "backup");
    assert_eq!(body["deployment"], missing.to_str().unwrap());
    assert!(
        body["errors"][0]
            .as_str()
            .unwrap()
            .contains("Cannot read inventory"),
        "{body}"
    );
}

#[test]
fn a_missing_or_open_secret_file_is_refused_before_any_lock() {
    cairn_testbed::require_root!();
    let bed = TestBed::start(&[]).expect("test bed");
    let work = workdir();
    let receiver = Receiver::start(work.root(), "json", None, &[]);
    let url = receiver.url();
    let open = secret_file(work.root(), 0o644);
    let missing = work.root().join("no-such.secret");
    for (secret, expected) in [
        (Some(missing.to_str().unwrap()), "no such file"),
        (Some(open.to_str().unwrap()), "run `chmod 600"),
        (None, "give --notify-secret-file FILE"),
    ] {
        let mut args = vec!["--notify-url", url.as_str()];
        if let Some(secret) = secret {
            args.extend(["--notify-secret-file", secret]);
        }
        args.extend(["backup", "--artifact-path", work.path().to_str().unwrap()]);
        let output = cairn_bounded(&bed, work.path(), &args);
        assert_eq!(output.status.code(), Some(1), "{}", text(&output));
        let stderr = String::from_utf8_lossy(&output.stderr);
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.is_empty()).collect();
        assert_eq!(lines.len(), 1, "one line: {stderr}");
        assert!(lines[0].contains("--notify-secret-file"), "{stderr}");
        assert!(lines[0].contains(expected), "{stderr}");
        assert!(output.stdout.is_empty(), "nothing started");
        assert_no_script_ran(&bed);
    }
    assert!(receiver.requests().is_empty());
    assert_eq!(fs::read_dir(work.path()).unwrap().count(), 0, "no backup");
}

/// `backups --store URL list --deployment testbed --max-age AGE` in `work`.
fn max_age(work: &Path, store: &str, age: &str) -> Output {
    run(
        work,
        &[
            "backups",
            "--store",
            store,
            "list",
            "--deployment",
            "testbed",
            "--max-age",
            age,
        ],
    )
}

/// The value of the sample `series` (name and labels) in a Prometheus textfile, after checking
/// each line is a comment or `name{labels} value` and each family has HELP and TYPE lines.
fn sample(textfile: &str, series: &str) -> Option<f64> {
    for line in textfile.lines() {
        if line.starts_with('#') {
            assert!(
                line.starts_with("# HELP ") || line.starts_with("# TYPE "),
                "{line}"
            );
            continue;
        }
        let (name_labels, value) = line.rsplit_once(' ').expect("a sample line");
        value.parse::<f64>().expect("a number");
        let name = name_labels.split('{').next().unwrap();
        assert!(textfile.contains(&format!("# HELP {name} ")), "{name}");
        assert!(textfile.contains(&format!("# TYPE {name} gauge")), "{name}");
    }
    textfile
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn the_overdue_check_and_metric_follow_the_newest_verified_backup() {
    cairn_testbed::require_root!();
    let bed = TestBed::start(&[]).expect("test bed");
    let work = workdir();
    let store_dir = tempfile::tempdir().unwrap();
    let store = format!("file://{}", store_dir.path().display());
    let metrics = work.root().join("cairn.prom");

    // No backup at all: overdue.
    let output = max_age(work.path(), &store, "26h");
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert!(
        text(&output).contains(
            "backup overdue: deployment testbed has no complete, verified backup in the store (--max-age 1d 2h)"
        ),
        "{}",
        text(&output)
    );

    let backup = |extra: &[&str]| {
        let mut args = vec![
            "--metrics-file",
            metrics.to_str().unwrap(),
            "backup",
            "--store",
        ];
        args.push(&store);
        args.extend_from_slice(extra);
        cairn_bounded(&bed, work.path(), &args)
    };
    let output = backup(&[]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let ids: Vec<String> = fs::read_dir(store_dir.path().join("testbed"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with('Z'))
        .collect();
    assert_eq!(ids.len(), 1, "{ids:?}");
    let id = &ids[0];
    let taken = chrono::NaiveDateTime::parse_from_str(id, "%Y%m%dT%H%M%SZ")
        .unwrap()
        .and_utc();

    // The metric: the backup's time, in a valid textfile.
    let good = "cairn_last_good_backup_timestamp_seconds{deployment=\"testbed\"}";
    let textfile = fs::read_to_string(&metrics).unwrap();
    assert_eq!(
        sample(&textfile, good),
        Some(taken.timestamp() as f64),
        "{textfile}"
    );

    // Fresh: 0, with the verdict.
    let output = max_age(work.path(), &store, "26h");
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert!(
        text(&output).contains(&format!(
            "the newest complete, verified backup of testbed is {id}, "
        )) && text(&output).contains("within --max-age 1d 2h"),
        "{}",
        text(&output)
    );

    // Older than 1 s (the id has whole seconds: make sure 2 s have passed since it).
    let older = taken + chrono::Duration::seconds(2);
    if let Ok(wait) = (older - chrono::Utc::now()).to_std() {
        std::thread::sleep(wait);
    }
    let output = max_age(work.path(), &store, "1s");
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert!(
        text(&output).contains(&format!(
            "backup overdue: the newest complete, verified backup of testbed is {id}, "
        )) && text(&output).contains("more than --max-age 1s"),
        "{}",
        text(&output)
    );

    // A failed backup keeps the metric.
    fs::create_dir_all(bed.host("app", 0).vcap_dir.join("store/bbr-backup")).unwrap();
    let output = backup(&[]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    fs::remove_dir_all(bed.host("app", 0).vcap_dir.join("store/bbr-backup")).unwrap();
    let textfile = fs::read_to_string(&metrics).unwrap();
    assert_eq!(sample(&textfile, good), Some(taken.timestamp() as f64));

    // A drill of that backup (restored into the same test bed) notifies too, as `drill`.
    let slack = Receiver::start(work.root(), "drill", None, &[]);
    let slack_url = slack.url();
    let inventory = bed.inventory();
    let output = run(
        work.path(),
        &[
            "drill",
            "--target-inventory",
            inventory.to_str().unwrap(),
            "--store",
            &store,
            "--latest",
            "testbed",
            "--report-dir",
            work.root().to_str().unwrap(),
            "--notify-url",
            &slack_url,
            "--notify-format",
            "slack",
        ],
    );
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let requests = slack.requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    let message: serde_json::Value =
        serde_json::from_str(requests[0]["body"].as_str().unwrap()).unwrap();
    let line = message["text"].as_str().unwrap();
    assert!(
        line.starts_with(&format!(
            "Cairn: deployment testbed: drill succeeded, backup {id}, "
        )),
        "{line}"
    );

    // An artifact gone from the store: the backup no longer counts.
    let artifact = fs::read_dir(store_dir.path().join("testbed").join(id))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().contains(".tar"))
        .expect("an artifact object");
    fs::remove_file(&artifact).unwrap();
    let output = max_age(work.path(), &store, "26h");
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    let all = text(&output);
    assert!(
        all.contains(&format!("warning: backup testbed/{id} does not count: ")),
        "{all}"
    );
    assert!(
        all.contains("backup overdue: deployment testbed has no complete, verified backup"),
        "{all}"
    );
}
