//! End-to-end: `cairn backups report` over real backups of the test bed, in a `file://` store
//! and in S3 (moto): complete, failed and signed runs. The page is read with a real HTML parser
//! (Python's `html.parser`, `integration/report/inspect_report.py`): one table row per run with
//! the right outcome, size, encryption and signature; four inline SVG plots per deployment
//! with one line per series and one point per complete run, the failed run marked on each; no
//! reference that would fetch anything. Headless Chromium renders it to a PNG that is decoded
//! (the `png` crate) and must be a real picture (not one flat colour). `--json` holds the same
//! runs as the table. Bad input: an unknown deployment, an empty store and an unwritable output
//! path each fail with one line and exit code 1.
//!
//! With `CAIRN_REPORT_SCREENSHOT=PATH`, the file-store test also copies its PNG there (how
//! docs/images/report.png was made).

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::common::*;
use cairn_testbed::TestBed;
use serde_json::Value;

const DEPLOYMENT: &str = "testbed";
const FAIL: &str = "#!/bin/sh\necho 'the files job cannot be read' >&2\nexit 1\n";

/// What the test did, run by run, oldest first: the id and the outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Taken {
    id: String,
    outcome: &'static str,
    signed: bool,
}

/// One host with a locking job (`app`) and one without (`files`): two artifact series, one
/// lock-window series.
fn bed() -> TestBed {
    TestBed::start(&[("app", 0, &["app", "files"])]).expect("test bed")
}

/// Backup ids of the deployment in the store (any state).
fn ids(work: &Path, store: &str) -> BTreeSet<String> {
    let output = run(
        work,
        &[
            "backups", "--store", store, "list", "-d", DEPLOYMENT, "--json",
        ],
    );
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| {
            serde_json::from_str::<Value>(line).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect()
}

/// Backup ids are the start second: each run waits for a new second first.
fn next_id() {
    std::thread::sleep(std::time::Duration::from_millis(1100));
}

/// Takes a backup (signed with `key` when given) that must succeed.
fn good_backup(bed: &TestBed, work: &Path, store: &str, key: Option<&Path>) -> Taken {
    let before = ids(work, store);
    next_id();
    let mut args = vec!["backup", "--store", store];
    if let Some(key) = key {
        args.extend(["--signing-key", key.to_str().unwrap()]);
    }
    let output = cairn(bed, work, &args);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let new: Vec<String> = ids(work, store).difference(&before).cloned().collect();
    assert_eq!(new.len(), 1, "{new:?}");
    Taken {
        id: new[0].clone(),
        outcome: "complete",
        signed: key.is_some(),
    }
}

/// Takes a backup whose `files` job's backup script fails after `app` was locked, backed up
/// and stored; puts the script back. `records` lists the failed-run records in the store (read
/// behind Cairn's back): the new one names the run.
fn failed_backup(
    bed: &TestBed,
    work: &Path,
    store: &str,
    records: &dyn Fn() -> BTreeSet<String>,
) -> Taken {
    let host = bed.host("app", 0);
    let script = host.vcap_dir.join("jobs/files/bin/bbr/backup");
    let original = fs::read_to_string(&script).unwrap();
    bed.install_script(host, "files", "backup", FAIL).unwrap();
    let before = records();
    next_id();
    let output = cairn(bed, work, &["backup", "--store", store]);
    bed.install_script(host, "files", "backup", &original)
        .unwrap();
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert_nothing_left(bed);
    let new: Vec<String> = records().difference(&before).cloned().collect();
    assert_eq!(new.len(), 1, "one failed-run record: {new:?}");
    // Nothing of it lists as a backup.
    assert!(!ids(work, store).contains(&new[0]));
    Taken {
        id: new[0].clone(),
        outcome: "failed",
        signed: false,
    }
}

/// The ids of the failed-run records among `keys` (`.../failures/<id>.json`).
fn record_ids<'a>(keys: impl Iterator<Item = &'a str>) -> BTreeSet<String> {
    keys.filter_map(|key| key.rsplit_once("failures/"))
        .filter_map(|(_, name)| name.strip_suffix(".json"))
        .map(str::to_string)
        .collect()
}

/// `cairn backups --store STORE report ARGS...`.
fn report(work: &Path, store: &str, args: &[&str]) -> Output {
    let mut all = vec!["backups", "--store", store, "report"];
    all.extend_from_slice(args);
    run(work, &all)
}

/// What `inspect_report.py` read from the page.
fn inspect(page: &Path) -> Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("integration/report/inspect_report.py");
    let output = Command::new("python3")
        .arg(script)
        .arg(page)
        .output()
        .expect("python3");
    assert!(output.status.success(), "{}", text(&output));
    serde_json::from_slice(&output.stdout).unwrap()
}

/// Renders `page` with headless Chromium to a PNG in `work`; returns its path.
fn screenshot(work: &Path, page: &Path) -> PathBuf {
    let png = work.join("report.png");
    let profile = work.join("chromium-profile");
    let output = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--window-size=1280,1400",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--screenshot={}", png.display()))
        .arg(format!("file://{}", page.display()))
        .env("TMPDIR", work)
        .env("HOME", work)
        .output()
        .expect("chromium (Debian package `chromium`; integration/test.sh installs it)");
    assert!(
        png.is_file(),
        "chromium wrote no screenshot: {}",
        text(&output)
    );
    png
}

/// Width, height and the number of distinct colours of a PNG.
fn picture(png: &Path) -> (u32, u32, usize) {
    let decoder = png::Decoder::new(std::io::BufReader::new(fs::File::open(png).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buffer = vec![0; reader.output_buffer_size().unwrap()];
    let frame = reader.next_frame(&mut buffer).unwrap();
    let channels = frame.color_type.samples();
    assert_eq!(frame.bit_depth, png::BitDepth::Eight);
    let colours: BTreeSet<&[u8]> = buffer[..frame.buffer_size()]
        .chunks_exact(channels)
        .collect();
    (frame.width, frame.height, colours.len())
}

/// The checks both stores share: the table, the plots, the JSON, the picture.
fn check_report(work: &Path, store: &str, taken: &[Taken], key: Option<&Path>) -> PathBuf {
    let page = work.join("report.html");
    let mut args = vec![
        "--deployment",
        DEPLOYMENT,
        "--html",
        page.to_str().unwrap(),
        "--json",
        "--verify",
    ];
    if let Some(key) = key {
        args.extend(["--trusted-key", key.to_str().unwrap()]);
    }
    let output = report(work, store, &args);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let json: Value = serde_json::from_slice(&output.stdout).unwrap();
    let html = inspect(&page);
    assert_eq!(html["doctype"], true);
    assert_eq!(
        html["external"],
        serde_json::json!([]),
        "the page fetches nothing"
    );

    // The table: one row per run, oldest first, as the test took them.
    let rows = html["rows"].as_array().unwrap();
    let got: Vec<(String, String)> = rows
        .iter()
        .map(|row| {
            let outcome = row["cells"][1].as_str().unwrap();
            let outcome = outcome.split(':').next().unwrap().to_string();
            (row["id"].as_str().unwrap().to_string(), outcome)
        })
        .collect();
    let want: Vec<(String, String)> = taken
        .iter()
        .map(|t| (t.id.clone(), t.outcome.to_string()))
        .collect();
    assert_eq!(got, want);
    for (row, taken) in rows.iter().zip(taken) {
        let cells: Vec<&str> = row["cells"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap())
            .collect();
        let complete = taken.outcome == "complete";
        assert_eq!(row["class"] == "failure", !complete, "{row}");
        assert_eq!(
            cells[6],
            if complete { "yes" } else { "not checked" },
            "verified: {row}"
        );
        assert_eq!(cells[7], "no", "encrypted: {row}");
        let signed = match (taken.signed, key.is_some()) {
            (false, _) => "unsigned",
            (true, false) => "signed",
            (true, true) => "signed, verified",
        };
        assert_eq!(cells[8], signed, "{row}");
        if !complete {
            assert!(cells[1].contains("the files job cannot be read"), "{row}");
        }
    }

    // The JSON holds the same runs, with the figures behind the cells.
    let runs = json["deployments"][0]["runs"].as_array().unwrap();
    let json_rows: Vec<(String, String)> = runs
        .iter()
        .map(|r| {
            (
                r["id"].as_str().unwrap().into(),
                r["outcome"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(json_rows, want);
    for (run, row) in runs.iter().zip(rows) {
        let size = cairn::report::size_text(run["stored_bytes"].as_u64().unwrap());
        assert_eq!(row["cells"][4], size.as_str(), "{run}");
    }

    // Four plots, each with its series and a point per complete run, the failed runs marked.
    let complete = taken.iter().filter(|t| t.outcome == "complete").count();
    let failed = taken.len() - complete;
    let figures = html["figures"].as_array().unwrap();
    let by_id = |id: &str| {
        figures
            .iter()
            .find(|f| f["id"] == format!("{DEPLOYMENT}-{id}"))
            .unwrap_or_else(|| panic!("no {id} plot in {figures:?}"))
    };
    for (id, series, legend) in [
        ("size", 2, vec!["app-0-app", "app-0-files"]),
        ("duration", 1, vec!["duration"]),
        ("lock", 1, vec!["app/0 app"]),
        ("throughput", 1, vec!["throughput"]),
    ] {
        let figure = by_id(id);
        assert_eq!(figure["svgs"], 1, "{figure}");
        assert_eq!(figure["series"], series, "{figure}");
        assert_eq!(figure["circles"], series * complete, "{figure}");
        assert_eq!(figure["polygons"], failed, "{figure}");
        let mut want: Vec<&str> = legend;
        if failed > 0 {
            want.push("failed run");
        }
        assert_eq!(figure["legend"], serde_json::json!(want), "{figure}");
    }
    // Each lock window is one the manifest recorded, and the failed run's record has the job
    // it locked before it failed.
    for run in runs {
        let windows = run["lock_windows"].as_object().unwrap();
        assert_eq!(windows.keys().collect::<Vec<_>>(), ["app/0 app"], "{run}");
        assert!(windows["app/0 app"].as_f64().unwrap() >= 0.0);
    }

    // The picture Chromium makes of it is a real one.
    let png = screenshot(work, &page);
    let (width, height, colours) = picture(&png);
    assert_eq!((width, height), (1280, 1400));
    assert!(
        fs::metadata(&png).unwrap().len() > 20_000,
        "a screenshot of a page with four plots is more than a few bytes"
    );
    assert!(colours > 50, "{colours} colours: not a rendered page");
    png
}

#[test]
fn a_file_store_report_shows_complete_failed_and_signed_runs() {
    cairn_testbed::require_root!();
    let bed = bed();
    let work = workdir();
    let store_dir = tempfile::tempdir().unwrap();
    let store = format!("file://{}", store_dir.path().display());
    let prefix = work.path().join("report");
    let keys = run(
        work.path(),
        &["keys", "generate", "--out", prefix.to_str().unwrap()],
    );
    assert_eq!(keys.status.code(), Some(0), "{}", text(&keys));
    let (secret, public) = (prefix.with_extension("key"), prefix.with_extension("pub"));

    let failures = store_dir.path().join(DEPLOYMENT).join("failures");
    let records = || -> BTreeSet<String> {
        let names: Vec<String> = fs::read_dir(&failures)
            .map(|dir| {
                dir.flatten()
                    .map(|e| format!("failures/{}", e.file_name().to_string_lossy()))
                    .collect()
            })
            .unwrap_or_default();
        record_ids(names.iter().map(String::as_str))
    };
    // The files job's data grows between runs (incompressible), so the sizes differ.
    let data = bed.host("app", 0).vcap_dir.join("store/files");
    let grow = |n: usize| write_pseudo_random(&data.join(format!("grow-{n}.bin")), n << 18);
    grow(1);
    let first = good_backup(&bed, work.path(), &store, None);
    grow(2);
    let second = good_backup(&bed, work.path(), &store, None);
    let failed = failed_backup(&bed, work.path(), &store, &records);
    grow(3);
    let signed = good_backup(&bed, work.path(), &store, Some(&secret));
    let taken = vec![first, second, failed, signed];

    // Without keys: signed or not; with the key: verified.
    check_report(work.path(), &store, &taken, None);
    let png = check_report(work.path(), &store, &taken, Some(&public));
    if let Ok(path) = std::env::var("CAIRN_REPORT_SCREENSHOT") {
        fs::copy(&png, path).unwrap();
    }

    // `backups list` and `show` say whether each backup is signed.
    let list = run(
        work.path(),
        &["backups", "--store", &store, "list", "-d", DEPLOYMENT],
    );
    let listed = String::from_utf8_lossy(&list.stdout).to_string();
    assert!(
        listed.starts_with("BACKUP\tTIME\tSIZE\tSTATE\tSIGNED\n"),
        "{listed}"
    );
    let column = |listed: &str, id: &str| -> String {
        listed
            .lines()
            .find(|line| line.starts_with(&format!("{DEPLOYMENT}/{id}\t")))
            .and_then(|line| line.rsplit('\t').next())
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(column(&listed, &taken[0].id), "unsigned");
    assert_eq!(column(&listed, &taken[3].id), "signed");
    let list = run(
        work.path(),
        &[
            "backups",
            "--store",
            &store,
            "list",
            "-d",
            DEPLOYMENT,
            "--trusted-key",
            public.to_str().unwrap(),
        ],
    );
    let listed = String::from_utf8_lossy(&list.stdout).to_string();
    assert_eq!(column(&listed, &taken[3].id), "verified");
    assert_eq!(column(&listed, &taken[0].id), "unsigned");
    let show = run(
        work.path(),
        &[
            "backups",
            "--store",
            &store,
            "show",
            &format!("{DEPLOYMENT}/{}", taken[3].id),
        ],
    );
    assert!(
        text(&show).contains("\nsignature: signed\n"),
        "{}",
        text(&show)
    );
    let show = run(
        work.path(),
        &[
            "backups",
            "--store",
            &store,
            "show",
            &format!("{DEPLOYMENT}/{}", taken[0].id),
        ],
    );
    assert!(
        text(&show).contains("\nsignature: unsigned\n"),
        "{}",
        text(&show)
    );
}

#[test]
fn an_s3_store_report_shows_complete_and_failed_runs() {
    cairn_testbed::require_root!();
    let bed = bed();
    let work = workdir();
    let moto = Emulator::start(Server::Moto);
    moto.fixture(&["create-bucket", "cairn-backups", "versioned"]);
    let store = format!(
        "s3://cairn-backups/nightly?endpoint={}&path_style=true&region=us-east-1",
        moto.endpoint
    );
    let records = || {
        let listing = moto.fixture(&["versions", "cairn-backups", "nightly/testbed/failures/"]);
        record_ids(listing.lines().filter_map(|line| line.split('\t').next()))
    };
    let taken = vec![
        failed_backup(&bed, work.path(), &store, &records),
        good_backup(&bed, work.path(), &store, None),
        good_backup(&bed, work.path(), &store, None),
    ];
    check_report(work.path(), &store, &taken, None);
}

/// One line on stderr, nothing on stdout, exit code 1.
fn assert_one_line_failure(output: &Output, expected: &str) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{}", text(output));
    assert!(output.stdout.is_empty(), "{}", text(output));
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(stderr.contains(expected), "`{expected}` not in {stderr}");
}

#[test]
fn bad_input_fails_with_one_line_and_exit_code_1() {
    // No test bed: nothing here reaches an instance.
    let work = workdir();
    let store_dir = tempfile::tempdir().unwrap();
    let store = format!("file://{}", store_dir.path().display());
    let page = work.path().join("report.html");
    let page = page.to_str().unwrap();

    let output = report(work.path(), &store, &["--html", page]);
    assert_one_line_failure(
        &output,
        &format!("{store} holds no backups and no failed runs"),
    );
    assert!(
        !Path::new(page).exists(),
        "no page is left for a failed report"
    );

    // A deployment the store does not know (here: only a failed run of another one).
    let record = store_dir
        .path()
        .join("other/failures/20240102T030405Z.json");
    fs::create_dir_all(record.parent().unwrap()).unwrap();
    fs::write(
        &record,
        r#"{"cairn_version":"0.1.0","deployment":"other","backup_id":"20240102T030405Z","started_at":"2024-01-02T03:04:05Z","finished_at":"2024-01-02T03:04:09Z"}"#,
    )
    .unwrap();
    let output = report(work.path(), &store, &["--deployment", "nope", "--json"]);
    assert_one_line_failure(
        &output,
        "deployment `nope` has no backups and no failed runs in",
    );
    // ... while the one it knows is reported, also with a record of an earlier form.
    let output = report(work.path(), &store, &["--json"]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let json: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(json["deployments"][0]["runs"][0]["outcome"], "failed");

    let output = report(
        work.path(),
        &store,
        &["--html", "/nonexistent-dir/report.html"],
    );
    assert_one_line_failure(
        &output,
        "Cannot write the report to `/nonexistent-dir/report.html`",
    );

    // Neither --html nor --json: a usage error.
    let output = report(work.path(), &store, &[]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert!(text(&output).contains("--html"), "{}", text(&output));
}
