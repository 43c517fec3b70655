//! Restore drills: prove a backup can be restored somewhere else, and measure how long it takes.
//!
//! A backup nobody has restored is a hope. A drill takes one (a fresh backup of the source
//! deployment, or an existing one from a store), restores it into a *different* deployment
//! with the same instance groups, runs each restored job's `post-restore-verify` (the jobs'
//! own evidence that their data is right) and writes a report an auditor can keep: which
//! backup, how old it was when the restore started (the recovery point), how long the restore
//! took (the recovery time), how many bytes, and each job's verdict.
//!
//! The drill reuses the ordinary workflows unchanged ([`backup`], [`restore`] with
//! verification on), so what it proves is what a real disaster recovery would do.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::error::{Error, RunErrors};
use crate::format::sink::{BackupSink, BackupSource};
use crate::model::deployment::Target;
use crate::report::size_text;
use crate::workflow::backup::{backup, BackupOptions};
use crate::workflow::journal::JournalKind;
use crate::workflow::restore::restore;
use crate::workflow::verify::{Verification, VerifyResult};
use crate::workflow::RunContext;

/// Schema name of the JSON report.
pub const DRILL_SCHEMA: &str = "cairn.drill/1";

/// Where the drill's backup comes from.
#[derive(Debug)]
pub enum DrillSource<'a> {
    /// Take a new backup of this deployment first.
    NewBackup {
        /// The deployment to back up.
        target: &'a dyn Target,
        /// Where the backup goes (a store sink carries the identities to read it back).
        sink: Arc<dyn BackupSink>,
        /// The deployment manifest to save with it (a Director's), which the restore then
        /// compares with the drill deployment.
        manifest: Option<String>,
    },
    /// Restore a backup that already exists.
    Stored {
        /// The backup.
        source: Arc<dyn BackupSource>,
        /// Deployment the backup was taken of.
        deployment: String,
        /// Backup id.
        backup_id: String,
    },
}

/// The backup a drill restored.
#[derive(Debug, Clone, Serialize)]
pub struct DrillBackup {
    /// Deployment it was taken of.
    pub deployment: String,
    /// Backup id (`YYYYMMDDTHHMMSSZ`).
    pub id: String,
    /// Where it is: a directory or a store key.
    pub location: String,
    /// True when the drill took it.
    pub taken_by_drill: bool,
    /// When it was taken.
    pub taken_at: Option<DateTime<Utc>>,
    /// Bytes stored (compressed size in a store, tar size in a directory).
    pub stored_bytes: u64,
    /// Bytes of the files inside the artifacts, when known.
    pub data_bytes: Option<u64>,
    /// Number of job artifacts.
    pub artifacts: usize,
}

/// Everything a drill found; written as JSON and as a readable summary.
#[derive(Debug, Clone, Serialize)]
pub struct DrillReport {
    /// [`DRILL_SCHEMA`].
    pub schema: &'static str,
    /// Cairn's version.
    pub cairn_version: String,
    /// True when the backup, the restore and every verification succeeded.
    pub passed: bool,
    /// The deployment restored into.
    pub target_deployment: String,
    /// The backup, when one was taken or found.
    pub backup: Option<DrillBackup>,
    /// When the drill started.
    pub started_at: DateTime<Utc>,
    /// When the restore started.
    pub restore_started_at: Option<DateTime<Utc>>,
    /// When the restore (with verification) finished.
    pub restore_finished_at: Option<DateTime<Utc>>,
    /// The recovery point: the backup's age when the restore started, in seconds.
    pub recovery_point_seconds: Option<f64>,
    /// The recovery time: how long the restore took, verification included, in seconds.
    pub recovery_time_seconds: Option<f64>,
    /// Each restored job's verification.
    pub verifications: Vec<Verification>,
    /// Everything that went wrong.
    pub errors: Vec<String>,
}

impl DrillReport {
    /// The readable summary.
    #[must_use]
    pub fn to_text(&self) -> String {
        let mut text = format!(
            "Restore drill into {}: {}\n",
            self.target_deployment,
            if self.passed { "PASSED" } else { "FAILED" }
        );
        if let Some(backup) = &self.backup {
            text.push_str(&format!(
                "  backup:         {}/{} ({}){}\n",
                backup.deployment,
                backup.id,
                backup.location,
                if backup.taken_by_drill {
                    ", taken by this drill"
                } else {
                    ""
                }
            ));
            text.push_str(&format!(
                "  size:           {} stored in {} artifacts{}\n",
                size_text(backup.stored_bytes),
                backup.artifacts,
                backup
                    .data_bytes
                    .map(|b| format!(", {} of data", size_text(b)))
                    .unwrap_or_default()
            ));
        }
        if let Some(seconds) = self.recovery_point_seconds {
            text.push_str(&format!(
                "  recovery point: {} (age of the backup when the restore started)\n",
                human_duration(seconds)
            ));
        }
        if let Some(seconds) = self.recovery_time_seconds {
            text.push_str(&format!(
                "  recovery time:  {} (restore and verification)\n",
                human_duration(seconds)
            ));
        }
        for check in &self.verifications {
            text.push_str(&format!("  {}\n", verification_line(check)));
        }
        for error in &self.errors {
            for (n, line) in error.lines().enumerate() {
                let lead = if n == 0 { "  error: " } else { "         " };
                text.push_str(&format!("{lead}{line}\n"));
            }
        }
        text
    }

    /// `drill-<target>-<YYYYMMDDTHHMMSSZ>`, the base name of the report files.
    #[must_use]
    pub fn file_stem(&self) -> String {
        format!(
            "drill-{}-{}",
            self.target_deployment,
            self.started_at.format("%Y%m%dT%H%M%SZ")
        )
    }
}

/// One line about one job's verification.
#[must_use]
pub fn verification_line(check: &Verification) -> String {
    match check.result {
        VerifyResult::Passed => format!(
            "verified    {}/{}: {}",
            check.instance, check.job, check.evidence
        ),
        VerifyResult::Failed => format!(
            "FAILED      {}/{}: {}",
            check.instance, check.job, check.detail
        ),
        VerifyResult::NoScript => format!(
            "unverified  {}/{}: restored, but the job has no post-restore-verify script",
            check.instance, check.job
        ),
    }
}

/// Runs a drill: the backup (or the stored one), then the restore into `target` with every
/// `post-restore-verify`. `context` carries the cancellation, parallelism and timeouts.
pub async fn drill(
    source: DrillSource<'_>,
    target: &dyn Target,
    context: &RunContext,
) -> (DrillReport, RunErrors) {
    let mut report = DrillReport {
        schema: DRILL_SCHEMA,
        cairn_version: crate::VERSION.to_string(),
        passed: false,
        target_deployment: target.name().to_string(),
        backup: None,
        started_at: Utc::now(),
        restore_started_at: None,
        restore_finished_at: None,
        recovery_point_seconds: None,
        recovery_time_seconds: None,
        verifications: Vec::new(),
        errors: Vec::new(),
    };
    let mut errors = RunErrors::new();
    let restore_source = match obtain_backup(source, context, &mut report).await {
        Ok(source) => source,
        Err(e) => {
            errors.extend(e);
            return finish(report, errors);
        }
    };
    // The restore into the drill deployment is journaled as its own run: a drill killed
    // mid-restore is undone by the next command against that deployment.
    let restore_journal = context
        .journal
        .as_ref()
        .map(|file| file.for_deployment(target.name(), JournalKind::Drill));
    let restore_context = context.for_step(
        crate::workflow::RunOptions {
            verify_restore: true,
            ..context.options.clone()
        },
        restore_journal,
    );
    let started = std::time::Instant::now();
    let restore_started_at = Utc::now();
    report.restore_started_at = Some(restore_started_at);
    tracing::info!("Drill: restoring into {}...", target.name());
    let restored = restore(target, restore_source.as_ref(), &restore_context).await;
    errors.extend(restored.errors);
    report.restore_finished_at = Some(Utc::now());
    report.recovery_time_seconds = Some(started.elapsed().as_secs_f64());
    report.recovery_point_seconds = report
        .backup
        .as_ref()
        .and_then(|b| b.taken_at)
        .map(|taken| (restore_started_at - taken).num_milliseconds() as f64 / 1000.0);
    report.verifications = restored.verifications;
    finish(report, errors)
}

fn finish(mut report: DrillReport, errors: RunErrors) -> (DrillReport, RunErrors) {
    report.errors = errors.errors().iter().map(ToString::to_string).collect();
    report.passed = errors.is_empty()
        && report.backup.is_some()
        && report.restore_finished_at.is_some()
        && report
            .verifications
            .iter()
            .all(|v| v.result != VerifyResult::Failed);
    (report, errors)
}

/// Takes the backup (or finds the stored one) and fills `report.backup`: what it is, and its
/// size as far as its format records it (checked as a restore would, nothing downloaded).
// Long on purpose: the two sources of a drill's backup side by side, filling one report.
async fn obtain_backup(
    source: DrillSource<'_>,
    context: &RunContext,
    report: &mut DrillReport,
) -> Result<Arc<dyn BackupSource>, RunErrors> {
    let (source, backup, stored_bytes) = match source {
        DrillSource::NewBackup {
            target,
            sink,
            manifest,
        } => {
            let options = BackupOptions {
                sink,
                unsafe_lock_free: false,
                manifest,
                started_at: Utc::now(),
                resumable: false,
                resume: false,
            };
            tracing::info!("Drill: backing up {}...", target.name());
            let result = backup(target, &options, context).await;
            let source = match result.source {
                Some(source) if result.complete && result.errors.is_empty() => source,
                _ => {
                    let mut errors = result.errors;
                    if errors.is_empty() {
                        errors.push(Error::DrillBackupIncomplete);
                    }
                    return Err(errors);
                }
            };
            let backup = DrillBackup {
                deployment: target.name().to_string(),
                id: crate::format::bbr_directory::metadata::format_backup_timestamp(
                    options.started_at,
                ),
                location: result.artifact.clone().unwrap_or_default(),
                taken_by_drill: true,
                taken_at: Some(options.started_at),
                stored_bytes: result.stored_bytes,
                data_bytes: None,
                artifacts: 0,
            };
            (source, backup, Some(result.stored_bytes))
        }
        DrillSource::Stored {
            source,
            deployment,
            backup_id,
        } => {
            let backup = DrillBackup {
                location: source.location(),
                taken_at: crate::format::bbr_directory::metadata::parse_backup_timestamp(
                    &backup_id,
                ),
                deployment,
                id: backup_id,
                taken_by_drill: false,
                stored_bytes: 0,
                data_bytes: None,
                artifacts: 0,
            };
            (source, backup, None)
        }
    };
    let backup = report.backup.insert(backup);
    let contents = source.check(context.options.parallelism).await?.contents();
    backup.artifacts = contents.artifacts;
    backup.data_bytes = contents.data_bytes;
    backup.stored_bytes = stored_bytes.or(contents.stored_bytes).unwrap_or(0);
    Ok(source)
}

fn human_duration(seconds: f64) -> String {
    if seconds < 120.0 {
        return format!("{seconds:.1} s");
    }
    let total = seconds.round() as u64;
    let (days, rest) = (total / 86_400, total % 86_400);
    let (hours, rest) = (rest / 3600, rest % 3600);
    let minutes = rest / 60;
    match (days, hours) {
        (0, 0) => format!("{minutes} min {} s", rest % 60),
        (0, _) => format!("{hours} h {minutes} min"),
        _ => format!("{days} d {hours} h {minutes} min"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations_read_well() {
        assert_eq!(size_text(512), "512 B");
        assert_eq!(size_text(3 * 1024 * 1024 / 2), "1.5 MiB");
        assert_eq!(human_duration(4.25), "4.2 s");
        assert_eq!(human_duration(3_725.0), "1 h 2 min");
        assert_eq!(human_duration(90_061.0), "1 d 1 h 1 min");
        assert_eq!(human_duration(150.0), "2 min 30 s");
    }

    fn report(verifications: Vec<Verification>, errors: RunErrors) -> DrillReport {
        let report = DrillReport {
            schema: DRILL_SCHEMA,
            cairn_version: "0".into(),
            passed: false,
            target_deployment: "dr".into(),
            backup: Some(DrillBackup {
                deployment: "cf".into(),
                id: "20261203T010203Z".into(),
                location: "/b".into(),
                taken_by_drill: true,
                taken_at: None,
                stored_bytes: 1,
                data_bytes: None,
                artifacts: 1,
            }),
            started_at: Utc::now(),
            restore_started_at: Some(Utc::now()),
            restore_finished_at: Some(Utc::now()),
            recovery_point_seconds: Some(1.0),
            recovery_time_seconds: Some(2.0),
            verifications,
            errors: Vec::new(),
        };
        finish(report, errors).0
    }

    fn check(result: VerifyResult) -> Verification {
        Verification {
            instance: "db/0".into(),
            job: "postgres".into(),
            result,
            evidence: "5 tables match".into(),
            detail: "rows differ".into(),
            seconds: 0.1,
        }
    }

    #[test]
    fn a_drill_passes_only_when_nothing_failed() {
        assert!(report(vec![check(VerifyResult::Passed)], RunErrors::new()).passed);
        assert!(report(vec![check(VerifyResult::NoScript)], RunErrors::new()).passed);
        assert!(!report(vec![check(VerifyResult::Failed)], RunErrors::new()).passed);
        let mut errors = RunErrors::new();
        errors.push(Error::DrillBackupIncomplete);
        let failed = report(vec![check(VerifyResult::Passed)], errors);
        assert!(!failed.passed);
        assert!(failed
            .to_text()
            .contains("error: The drill's backup did not complete"));
    }

    #[test]
    fn the_summary_names_the_backup_and_each_verdict() {
        let text = report(
            vec![check(VerifyResult::Passed), check(VerifyResult::NoScript)],
            RunErrors::new(),
        )
        .to_text();
        assert!(text.contains("PASSED"), "{text}");
        assert!(text.contains("cf/20261203T010203Z"), "{text}");
        assert!(text.contains("recovery point: 1.0 s"), "{text}");
        assert!(
            text.contains("verified    db/0/postgres: 5 tables match"),
            "{text}"
        );
        assert!(text.contains("unverified  db/0/postgres"), "{text}");
    }
}
