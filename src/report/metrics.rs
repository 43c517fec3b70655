//! A Prometheus textfile describing the last run (`--metrics-file PATH`), for node_exporter's
//! textfile collector: when it ran, whether it succeeded, how long it took, how much it
//! stored and how long each job stayed locked.
//!
//! node_exporter reads the whole directory, so the file is written to a temporary name and
//! renamed: a scrape never sees half a file. Job labels are `bosh_instance` and `bosh_job`,
//! because Prometheus itself puts `instance` and `job` on every scraped series. Earlier values of `last_success` are kept by
//! reading the previous file, so a failed run does not erase when the last good one was.
//!
//! `cairn_last_good_backup_timestamp_seconds{deployment}` is the time (its id's, when it
//! started) of the newest good backup a run wrote into this file: complete, every artifact
//! verified against the instance's checksums, and the run exited 0. It is kept from the
//! previous file through failed backups and other runs (a restore, a clean-up), so
//! `time() - cairn_last_good_backup_timestamp_seconds > 26 * 3600` is the "backup overdue"
//! alert (docs/operations.md, "Notifications and overdue backups").

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use chrono::{DateTime, Utc};

use crate::model::job::ScriptName;
use crate::model::job::ScriptRecord;

/// What one run did, for the metrics file.
#[derive(Debug, Clone)]
pub struct RunSummary {
    /// Deployment (or director host) name.
    pub deployment: String,
    /// `backup`, `restore`, `pre-backup-check`, `backup-cleanup` or `restore-cleanup`.
    pub operation: String,
    /// Start of the run.
    pub started_at: DateTime<Utc>,
    /// End of the run.
    pub finished_at: DateTime<Utc>,
    /// The exit code.
    pub exit_code: i32,
    /// Bytes stored by a backup.
    pub stored_bytes: Option<u64>,
    /// Scripts that ran.
    pub scripts: Vec<ScriptRecord>,
    /// When the good backup this run made was taken (a complete backup of a run that exited
    /// 0); `None` for every other run.
    pub good_backup_at: Option<DateTime<Utc>>,
}

/// What is kept from the previous file of the same path.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Previous {
    /// `cairn_last_success_timestamp_seconds` of the same deployment and operation.
    pub success: Option<f64>,
    /// `cairn_last_good_backup_timestamp_seconds` of the same deployment.
    pub good_backup: Option<f64>,
}

/// Seconds each job stayed locked: from the end of its lock script to the end of its unlock.
#[must_use]
pub fn lock_seconds(scripts: &[ScriptRecord]) -> BTreeMap<(String, String), f64> {
    let mut locked: BTreeMap<(String, String), DateTime<Utc>> = BTreeMap::new();
    let mut seconds = BTreeMap::new();
    for record in scripts {
        let key = (record.instance.clone(), record.job.clone());
        match record.script {
            ScriptName::PreBackupLock | ScriptName::PreRestoreLock => {
                locked.insert(key, record.finished_at);
            }
            ScriptName::PostBackupUnlock | ScriptName::PostRestoreUnlock => {
                if let Some(start) = locked.remove(&key) {
                    let held = (record.finished_at - start).num_milliseconds() as f64 / 1000.0;
                    seconds.insert(key, held);
                }
            }
            _ => {}
        }
    }
    seconds
}

fn escape(value: &str) -> String {
    value
        .replace('\\', r"\\")
        .replace('"', "\\\"")
        .replace('\n', r"\n")
}

/// Renders the textfile, with what an earlier file said ([`previous`]).
#[must_use]
// Long on purpose: one flat list of metric families, in the order they appear in the file;
// split up, the textfile's layout would be spread over several functions.
pub fn render(summary: &RunSummary, previous: Previous) -> String {
    let labels = format!(
        "deployment=\"{}\",operation=\"{}\"",
        escape(&summary.deployment),
        escape(&summary.operation)
    );
    let finished = summary.finished_at.timestamp_millis() as f64 / 1000.0;
    let duration = (summary.finished_at - summary.started_at).num_milliseconds() as f64 / 1000.0;
    let last_success = if summary.exit_code == 0 {
        Some(finished)
    } else {
        previous.success
    };
    let good_backup = summary
        .good_backup_at
        .map(|at| at.timestamp_millis() as f64 / 1000.0)
        .or(previous.good_backup);
    let mut text = String::new();
    let mut metric = |name: &str, help: &str, kind: &str, lines: Vec<String>| {
        let _ = writeln!(text, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for line in lines {
            let _ = writeln!(text, "{name}{line}");
        }
    };
    metric(
        "cairn_last_run_timestamp_seconds",
        "When the last run finished.",
        "gauge",
        vec![format!("{{{labels}}} {finished}")],
    );
    if let Some(success) = last_success {
        metric(
            "cairn_last_success_timestamp_seconds",
            "When the last successful run finished.",
            "gauge",
            vec![format!("{{{labels}}} {success}")],
        );
    }
    metric(
        "cairn_run_duration_seconds",
        "How long the last run took.",
        "gauge",
        vec![format!("{{{labels}}} {duration}")],
    );
    metric(
        "cairn_run_exit_code",
        "Exit code of the last run (bbr's bitmask; 0 is success).",
        "gauge",
        vec![format!("{{{labels}}} {}", summary.exit_code)],
    );
    if let Some(bytes) = summary.stored_bytes {
        metric(
            "cairn_backup_bytes",
            "Bytes stored by the last backup.",
            "gauge",
            vec![format!(
                "{{deployment=\"{}\"}} {bytes}",
                escape(&summary.deployment)
            )],
        );
    }
    if let Some(at) = good_backup {
        metric(
            "cairn_last_good_backup_timestamp_seconds",
            "When the newest good backup (complete, verified, its run exited 0) was taken.",
            "gauge",
            vec![format!(
                "{{deployment=\"{}\"}} {at}",
                escape(&summary.deployment)
            )],
        );
    }
    let locks: Vec<String> = lock_seconds(&summary.scripts)
        .into_iter()
        .map(|((instance, job), seconds)| {
            format!(
                "{{deployment=\"{}\",bosh_instance=\"{}\",bosh_job=\"{}\"}} {seconds}",
                escape(&summary.deployment),
                escape(&instance),
                escape(&job)
            )
        })
        .collect();
    if !locks.is_empty() {
        metric(
            "cairn_job_lock_seconds",
            "How long each job stayed locked in the last run.",
            "gauge",
            locks,
        );
    }
    text
}

/// Reads what is kept for `summary`'s deployment (and operation) from an earlier file.
#[must_use]
pub fn previous(existing: &str, summary: &RunSummary) -> Previous {
    let deployment = escape(&summary.deployment);
    let value = |prefix: String| {
        existing
            .lines()
            .find_map(|line| line.strip_prefix(&prefix)?.trim().parse().ok())
    };
    Previous {
        success: value(format!(
            "cairn_last_success_timestamp_seconds{{deployment=\"{deployment}\",operation=\"{}\"}} ",
            escape(&summary.operation)
        )),
        good_backup: value(format!(
            "cairn_last_good_backup_timestamp_seconds{{deployment=\"{deployment}\"}} "
        )),
    }
}

/// Writes the textfile atomically, keeping the last success time of an earlier file.
///
/// # Errors
/// The I/O error, with the path.
pub fn write(path: &Path, summary: &RunSummary) -> std::io::Result<()> {
    let previous = std::fs::read_to_string(path)
        .ok()
        .map(|text| previous(&text, summary))
        .unwrap_or_default();
    let temporary = path.with_extension("prom.tmp");
    std::fs::write(&temporary, render(summary, previous))
        .and_then(|()| std::fs::rename(&temporary, path))
        .map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("writing metrics file `{}`: {e}", path.display()),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(job: &str, script: ScriptName, second: i64) -> ScriptRecord {
        ScriptRecord {
            instance: "db/0".into(),
            job: job.into(),
            script,
            finished_at: DateTime::from_timestamp(1_700_000_000 + second, 0).unwrap(),
            success: true,
        }
    }

    fn summary(exit_code: i32) -> RunSummary {
        RunSummary {
            deployment: "cf".into(),
            operation: "backup".into(),
            started_at: DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
            finished_at: DateTime::from_timestamp(1_700_000_090, 0).unwrap(),
            exit_code,
            stored_bytes: Some(1234),
            scripts: vec![
                record("pg", ScriptName::PreBackupLock, 5),
                record("pg", ScriptName::Backup, 30),
                record("pg", ScriptName::PostBackupUnlock, 47),
            ],
            good_backup_at: (exit_code == 0)
                .then(|| DateTime::from_timestamp(1_700_000_000, 0).unwrap()),
        }
    }

    /// Reads the textfile with `prometheus-parse`: every sample line must parse (the crate
    /// skips lines it cannot read, so the count of samples is compared with the count of
    /// lines), every family has its HELP, and each series is keyed by its name and labels
    /// in the order written.
    fn parse(text: &str) -> BTreeMap<String, f64> {
        let scrape = prometheus_parse::Scrape::parse(text.lines().map(|line| Ok(line.to_string())))
            .expect("a Prometheus textfile");
        let sample_lines = text.lines().filter(|line| !line.starts_with('#')).count();
        assert_eq!(
            scrape.samples.len(),
            sample_lines,
            "unparsed lines in:\n{text}"
        );
        let mut samples = BTreeMap::new();
        for sample in scrape.samples {
            assert!(
                scrape.docs.contains_key(&sample.metric),
                "{} has no HELP",
                sample.metric
            );
            let prometheus_parse::Value::Gauge(value) = sample.value else {
                panic!("{} is not a gauge: {:?}", sample.metric, sample.value);
            };
            let written = text
                .lines()
                .find(|line| {
                    line.starts_with(&format!("{}{{", sample.metric))
                        && sample
                            .labels
                            .iter()
                            .all(|(k, v)| line.contains(&format!("{k}=\"{v}\"")))
                })
                .expect("the sample's line");
            let series = written.rsplit_once(' ').expect("a value").0;
            samples.insert(series.to_string(), value);
        }
        samples
    }

    #[test]
    fn a_successful_backup_reports_everything() {
        let samples = parse(&render(&summary(0), Previous::default()));
        let labels = "{deployment=\"cf\",operation=\"backup\"}";
        assert_eq!(
            samples[&format!("cairn_run_duration_seconds{labels}")],
            90.0
        );
        assert_eq!(samples[&format!("cairn_run_exit_code{labels}")], 0.0);
        assert_eq!(
            samples[&format!("cairn_last_success_timestamp_seconds{labels}")],
            1_700_000_090.0
        );
        assert_eq!(samples["cairn_backup_bytes{deployment=\"cf\"}"], 1234.0);
        assert_eq!(
            samples["cairn_job_lock_seconds{deployment=\"cf\",bosh_instance=\"db/0\",bosh_job=\"pg\"}"],
            42.0
        );
    }

    #[test]
    fn a_failed_run_keeps_the_previous_success_time() {
        let first = render(&summary(0), Previous::default());
        let failed = summary(4);
        let kept = previous(&first, &failed);
        assert_eq!(kept.success, Some(1_700_000_090.0));
        let samples = parse(&render(&failed, kept));
        assert_eq!(
            samples["cairn_run_exit_code{deployment=\"cf\",operation=\"backup\"}"],
            4.0
        );
        assert_eq!(
            samples["cairn_last_success_timestamp_seconds{deployment=\"cf\",operation=\"backup\"}"],
            1_700_000_090.0
        );
        let never = parse(&render(&summary(1), Previous::default()));
        assert!(!never.keys().any(|k| k.starts_with("cairn_last_success")));
        assert!(!never
            .keys()
            .any(|k| k.starts_with("cairn_last_good_backup")));
    }

    #[test]
    fn the_newest_good_backup_is_kept_through_failures_and_other_runs() {
        let good = "cairn_last_good_backup_timestamp_seconds{deployment=\"cf\"}";
        let first = render(&summary(0), Previous::default());
        assert_eq!(parse(&first)[good], 1_700_000_000.0);
        let failed = summary(1);
        let second = render(&failed, previous(&first, &failed));
        assert_eq!(parse(&second)[good], 1_700_000_000.0);
        let restore = RunSummary {
            operation: "restore".into(),
            good_backup_at: None,
            ..summary(0)
        };
        let third = render(&restore, previous(&second, &restore));
        assert_eq!(parse(&third)[good], 1_700_000_000.0);
        let other = RunSummary {
            deployment: "other".into(),
            ..failed
        };
        assert_eq!(previous(&third, &other).good_backup, None);
    }
}
