//! The history of backups in a store, as `cairn backups report` shows it: one typed model,
//! read from the store once, that the HTML page ([`super::html`]) and `--json` both render, so
//! the table, the plots and the JSON can never disagree.
//!
//! Every figure comes from what the store already records:
//!
//! - a complete backup's `manifest.json`: when it started and finished (the duration), each
//!   artifact's stored bytes and its bytes before compression (`plain_size`; manifests before
//!   it existed: the files' bytes), encryption, and each job's lock window — from the end of
//!   its `pre-backup-lock` to the end of its `post-backup-unlock` (`jobs`, in every manifest);
//! - `signature.json` beside it: signed or not, and with trusted keys whether it checks out;
//! - a failed run's record (`<deployment>/failures/<id>.json`, [`failed_run`]), written by
//!   Cairn versions that have it when a backup into a store ends incomplete;
//! - objects of a backup without a manifest and without such a record: a run that was killed
//!   (or is still going, or failed under an earlier version) — an *incomplete* run, with only
//!   its start time (its id) and the bytes it left.
//!
//! A repository (`repo+`, [`read_repository_history`]) gives the same model from its snapshots'
//! summaries and record snapshots ([`crate::format::repository::history`]): sizes there are
//! the data each backup added (its data shared with other backups is not counted again).
//!
//! Verification (`--verify`) reads every complete backup back as `backups verify` does; without
//! it the report says "not checked" (each complete backup was checked against the instances'
//! checksums when it was written).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use cairn_store::ArtifactStore;
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::error::{Error, StoredBackupError};
use crate::format::encryption::Identities;
use crate::format::manifest::{JobTimes, Manifest};
use crate::format::repository::history::{backup_facts, BackupFacts};
use crate::format::repository::RepositoryPassword;
use crate::format::signature::TrustedKeys;
use crate::format::store::failed_run::{read_failed_runs, FailedRun};
use crate::format::store::placement::check_placement;
use crate::format::store::read::verify_backup;
use crate::format::store::signed::{read_signed_manifest, signed_backup_ids};
use crate::format::store::{list_backups, read_manifest, BackupSummary};

/// Why no report can be made.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// `--deployment` names a deployment with nothing in the store.
    #[error("deployment `{deployment}` has no backups and no failed runs in {store}: check the name (`cairn backups list --store {store}` lists what is there)")]
    UnknownDeployment {
        /// The name asked for.
        deployment: String,
        /// The store.
        store: String,
    },
    /// The store holds no backup of any deployment.
    #[error("{store} holds no backups and no failed runs: check the URL (and its prefix), or take a backup first")]
    EmptyStore {
        /// The store.
        store: String,
    },
    /// The store could not be read.
    #[error(transparent)]
    Store(#[from] Error),
}

/// What the report reads beyond the listing.
#[derive(Debug, Clone, Default)]
pub struct HistoryOptions {
    /// Check signatures against these keys (empty: only say whether a backup is signed).
    pub trusted: TrustedKeys,
    /// Read every complete backup back (`backups verify`), with this many artifacts at once;
    /// `None`: not checked.
    pub verify: Option<usize>,
}

/// Every run of the deployments reported.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct History {
    /// The store, as its URL.
    pub store: String,
    /// When the report was made (the ages are counted from it).
    pub generated_at: DateTime<Utc>,
    /// One entry per deployment, by name.
    pub deployments: Vec<DeploymentHistory>,
}

/// The runs of one deployment.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeploymentHistory {
    /// Deployment name.
    pub name: String,
    /// Its runs, oldest first.
    pub runs: Vec<Run>,
}

/// How a run ended, as far as the store tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// A manifest that belongs where it is stored: restorable.
    Complete,
    /// A failed-run record: the run ended incomplete.
    Failed,
    /// Objects without a manifest and without a failed-run record: killed, still running, or
    /// failed under a version that wrote no record.
    Incomplete,
    /// A manifest that cannot be read or does not belong where it is stored.
    Unreadable,
}

impl Outcome {
    /// True for every run that did not leave a restorable backup.
    #[must_use]
    pub fn is_failure(self) -> bool {
        self != Outcome::Complete
    }
}

/// Whether a backup is signed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", content = "detail", rename_all = "lowercase")]
pub enum SignatureState {
    /// No `signature.json`.
    Unsigned,
    /// A `signature.json`, not checked (no trusted keys given).
    Signed,
    /// Its signature checks out against a trusted key.
    Verified,
    /// Its signature does not check out against the trusted keys (why).
    Rejected(String),
}

/// Whether a backup was read back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", content = "detail", rename_all = "kebab-case")]
pub enum VerificationState {
    /// Not read back (no `--verify`, or not a complete backup).
    NotChecked,
    /// Every artifact matched its manifest.
    Passed,
    /// Something did not match (what).
    Failed(String),
}

/// One run of a deployment.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Run {
    /// Backup id (`YYYYMMDDTHHMMSSZ`).
    pub id: String,
    /// How it ended.
    pub outcome: Outcome,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// When it finished (a complete backup, a failed run's record); unknown otherwise.
    pub finished_at: Option<DateTime<Utc>>,
    /// Bytes stored: a complete backup's artifacts, what a failed run had stored, the
    /// objects an incomplete one left.
    pub stored_bytes: u64,
    /// Bytes of the artifacts before compression and encryption (complete backups).
    pub plain_bytes: Option<u64>,
    /// Seconds from start to finish, when both are known.
    pub duration_seconds: Option<f64>,
    /// Bytes before compression per second of the run (complete backups that took time).
    pub throughput_bytes_per_second: Option<f64>,
    /// Stored bytes per artifact (`<group>-<index>-<job>`).
    pub artifacts: BTreeMap<String, u64>,
    /// Lock windows per job (`<group>/<id> <job>`), in seconds: a job locked and unlocked.
    pub lock_windows: BTreeMap<String, f64>,
    /// Whether its artifacts are encrypted.
    pub encrypted: bool,
    /// Whether it is signed.
    pub signature: SignatureState,
    /// Whether it was read back.
    pub verification: VerificationState,
    /// What went wrong (failed and unreadable runs).
    pub errors: Vec<String>,
}

impl Run {
    /// Fills the figures derived from the others (duration, throughput).
    fn with_figures(mut self) -> Run {
        self.duration_seconds = self
            .finished_at
            .map(|finished| seconds_between(self.started_at, finished));
        #[allow(clippy::cast_precision_loss)]
        let bytes = self.plain_bytes.map(|bytes| bytes as f64);
        self.throughput_bytes_per_second = match (bytes, self.duration_seconds) {
            (Some(bytes), Some(seconds)) if seconds > 0.0 => Some(bytes / seconds),
            _ => None,
        };
        self
    }

    /// A complete backup, from its manifest.
    #[must_use]
    pub fn complete(manifest: &Manifest, signature: SignatureState) -> Run {
        Run {
            id: manifest.backup_id.clone(),
            outcome: Outcome::Complete,
            started_at: manifest.started_at,
            finished_at: Some(manifest.finished_at),
            stored_bytes: manifest.stored_bytes(),
            plain_bytes: Some(manifest.artifacts.iter().fold(0_u64, |total, artifact| {
                total.saturating_add(
                    artifact
                        .plain_size
                        .unwrap_or_else(|| artifact.files_bytes()),
                )
            })),
            duration_seconds: None,
            throughput_bytes_per_second: None,
            artifacts: manifest
                .artifacts
                .iter()
                .map(|artifact| (artifact.name.clone(), artifact.size))
                .collect(),
            lock_windows: lock_windows(&manifest.jobs),
            encrypted: manifest.encryption().is_some(),
            signature,
            verification: VerificationState::NotChecked,
            errors: Vec::new(),
        }
        .with_figures()
    }

    /// A failed run, from its record.
    #[must_use]
    pub fn failed(record: &FailedRun) -> Run {
        Run {
            id: record.backup_id.clone(),
            outcome: Outcome::Failed,
            started_at: record.started_at,
            finished_at: Some(record.finished_at),
            stored_bytes: record
                .artifacts
                .iter()
                .fold(0_u64, |total, a| total.saturating_add(a.size)),
            plain_bytes: None,
            duration_seconds: None,
            throughput_bytes_per_second: None,
            artifacts: record
                .artifacts
                .iter()
                .map(|artifact| (artifact.name.clone(), artifact.size))
                .collect(),
            lock_windows: lock_windows(&record.jobs),
            encrypted: false,
            signature: SignatureState::Unsigned,
            verification: VerificationState::NotChecked,
            errors: record.errors.clone(),
        }
        .with_figures()
    }

    /// A backup without a manifest (or whose manifest cannot be trusted), from the listing.
    #[must_use]
    pub fn unfinished(summary: &BackupSummary, outcome: Outcome, errors: Vec<String>) -> Run {
        Run {
            id: summary.id.clone(),
            outcome,
            started_at: summary.time.unwrap_or_default(),
            finished_at: None,
            stored_bytes: summary.size,
            plain_bytes: None,
            duration_seconds: None,
            throughput_bytes_per_second: None,
            artifacts: BTreeMap::new(),
            lock_windows: BTreeMap::new(),
            encrypted: false,
            signature: SignatureState::Unsigned,
            verification: VerificationState::NotChecked,
            errors,
        }
    }
}

/// Seconds from `start` to `end` (negative when a clock went back).
fn seconds_between(start: DateTime<Utc>, end: DateTime<Utc>) -> f64 {
    #[allow(clippy::cast_precision_loss)]
    let millis = end.signed_duration_since(start).num_milliseconds() as f64;
    millis / 1000.0
}

/// Each job that was both locked and unlocked, with the seconds between.
fn lock_windows(jobs: &[JobTimes]) -> BTreeMap<String, f64> {
    jobs.iter()
        .filter_map(|job| {
            let (Some(locked), Some(unlocked)) = (job.locked_at, job.unlocked_at) else {
                return None;
            };
            Some((
                format!("{} {}", job.instance, job.job),
                seconds_between(locked, unlocked).max(0.0),
            ))
        })
        .collect()
}

/// Puts the runs of a deployment together: every listed backup (complete ones as `complete`
/// gives them, by id) and every failed-run record; a record wins over the leftovers of the
/// same id. Oldest first.
#[must_use]
pub fn merge_runs(
    listed: &[BackupSummary],
    mut complete: BTreeMap<String, Run>,
    failed: &[FailedRun],
) -> Vec<Run> {
    let failed_ids: BTreeSet<&str> = failed.iter().map(|r| r.backup_id.as_str()).collect();
    let mut runs: Vec<Run> = failed.iter().map(Run::failed).collect();
    for summary in listed {
        if let Some(run) = complete.remove(&summary.id) {
            runs.push(run);
        } else if !failed_ids.contains(summary.id.as_str()) {
            runs.push(Run::unfinished(summary, Outcome::Incomplete, Vec::new()));
        }
    }
    runs.sort_by(|a, b| (a.started_at, &a.id).cmp(&(b.started_at, &b.id)));
    runs
}

/// Reads the history of `deployment` (or of every deployment) in `store`.
///
/// # Errors
/// [`HistoryError::UnknownDeployment`] / [`HistoryError::EmptyStore`] when there is nothing to
/// report; store failures.
pub async fn read_history(
    store: &Arc<dyn ArtifactStore>,
    deployment: Option<&str>,
    options: &HistoryOptions,
) -> Result<History, HistoryError> {
    let listed = list_backups(store.as_ref(), deployment).await?;
    let mut names: BTreeSet<String> = listed.iter().map(|b| b.deployment.clone()).collect();
    match deployment {
        Some(name) => {
            names.insert(name.to_string());
        }
        None => names.extend(deployments_with_failures(store.as_ref()).await?),
    }
    let mut deployments = Vec::new();
    for name in names {
        let backups: Vec<BackupSummary> = listed
            .iter()
            .filter(|b| b.deployment == name)
            .cloned()
            .collect();
        let runs = read_deployment(store, &name, &backups, options).await?;
        if !runs.is_empty() {
            deployments.push(DeploymentHistory { name, runs });
        }
    }
    if deployments.is_empty() {
        return Err(match deployment {
            Some(name) => HistoryError::UnknownDeployment {
                deployment: name.to_string(),
                store: store.to_string(),
            },
            None => HistoryError::EmptyStore {
                store: store.to_string(),
            },
        });
    }
    Ok(History {
        store: store.to_string(),
        generated_at: Utc::now(),
        deployments,
    })
}

/// Deployments that have failed-run records (a deployment whose every run failed has no
/// backup to list).
async fn deployments_with_failures(store: &dyn ArtifactStore) -> Result<Vec<String>, Error> {
    use crate::format::store::failed_run::FAILURES_FOLDER;
    let names: BTreeSet<String> = store
        .list("")
        .await?
        .into_iter()
        .filter_map(|object| {
            let mut parts = object.key.as_str().splitn(3, '/');
            let (name, folder) = (parts.next()?, parts.next()?);
            (folder == FAILURES_FOLDER).then(|| name.to_string())
        })
        .collect();
    Ok(names.into_iter().collect())
}

/// The runs of one deployment: its listed backups, read one by one, and its failed runs.
async fn read_deployment(
    store: &Arc<dyn ArtifactStore>,
    deployment: &str,
    backups: &[BackupSummary],
    options: &HistoryOptions,
) -> Result<Vec<Run>, Error> {
    let signed = signed_backup_ids(store.as_ref(), deployment).await?;
    let failed = read_failed_runs(store.as_ref(), deployment).await?;
    let mut complete = BTreeMap::new();
    let mut unreadable = Vec::new();
    for backup in backups.iter().filter(|b| b.complete) {
        match read_complete(store, backup, signed.contains(&backup.id), options).await {
            Ok(run) => {
                complete.insert(backup.id.clone(), run);
            }
            Err(detail) => {
                unreadable.push(Run::unfinished(backup, Outcome::Unreadable, vec![detail]));
            }
        }
    }
    let unreadable_ids: BTreeSet<String> = unreadable.iter().map(|r| r.id.clone()).collect();
    let listed: Vec<BackupSummary> = backups
        .iter()
        .filter(|b| !unreadable_ids.contains(&b.id))
        .cloned()
        .collect();
    let mut runs = merge_runs(&listed, complete, &failed);
    runs.extend(unreadable);
    runs.sort_by(|a, b| (a.started_at, &a.id).cmp(&(b.started_at, &b.id)));
    Ok(runs)
}

/// Whether `<deployment>/<id>` is signed (`signed`: it has a `signature.json`, as
/// [`signed_backup_ids`] lists them) and, with `trusted` keys, whether its signature checks
/// out ([`read_signed_manifest`]: one more read of the manifest and the signature).
pub async fn signature_state(
    store: &dyn ArtifactStore,
    deployment: &str,
    id: &str,
    signed: bool,
    trusted: &TrustedKeys,
) -> SignatureState {
    match (signed, trusted.is_empty()) {
        (false, _) => SignatureState::Unsigned,
        (true, true) => SignatureState::Signed,
        (true, false) => match read_signed_manifest(store, deployment, id, trusted).await {
            Ok(_) => SignatureState::Verified,
            Err(error) => SignatureState::Rejected(error.to_string()),
        },
    }
}

/// A complete backup's run: its manifest (which must belong where it is stored), its
/// signature and, when asked, its verification. `Err`: why its manifest cannot be used.
async fn read_complete(
    store: &Arc<dyn ArtifactStore>,
    backup: &BackupSummary,
    signed: bool,
    options: &HistoryOptions,
) -> Result<Run, String> {
    let (deployment, id) = (backup.deployment.as_str(), backup.id.as_str());
    let manifest = match read_manifest(store.as_ref(), deployment, id).await {
        Ok(manifest) => manifest,
        Err(Error::StoredBackup(StoredBackupError::NotFound { .. })) => {
            return Err(format!(
                "{deployment}/{id}: its manifest disappeared while read"
            ))
        }
        Err(error) => return Err(error.to_string()),
    };
    check_placement(&manifest, deployment, id)
        .map_err(|detail| format!("{deployment}/{id} is misplaced: {detail}"))?;
    let signature = signature_state(store.as_ref(), deployment, id, signed, &options.trusted).await;
    let mut run = Run::complete(&manifest, signature);
    if let Some(parallelism) = options.verify {
        run.verification = match verify_backup(
            store,
            deployment,
            id,
            parallelism,
            &Identities::default(),
            false,
        )
        .await
        {
            Ok(_) => VerificationState::Passed,
            Err(errors) => VerificationState::Failed(errors.to_string()),
        };
    }
    Ok(run)
}

impl Run {
    /// A backup in a repository, from what the repository records of it
    /// ([`crate::format::repository::history`]): complete with its record, incomplete
    /// without one (a failed or killed run's snapshots), unreadable when its record cannot be
    /// read. `stored_bytes` is the data its snapshots *added* to the repository (packed; data
    /// already there is shared and not counted), `plain_bytes` the size of its snapshots (the
    /// artifacts' tars as a restore rebuilds them).
    #[must_use]
    pub fn from_repository(facts: &BackupFacts) -> Run {
        let artifacts = facts.added_bytes.clone();
        let stored_bytes = artifacts
            .values()
            .fold(facts.record_added_bytes, |total, bytes| {
                total.saturating_add(*bytes)
            });
        let mut run = Run {
            id: facts.backup_id.clone(),
            outcome: Outcome::Incomplete,
            started_at: facts
                .started_at
                .or_else(|| crate::format::store::backup_time(&facts.backup_id))
                .unwrap_or_default(),
            finished_at: None,
            stored_bytes,
            plain_bytes: None,
            duration_seconds: None,
            throughput_bytes_per_second: None,
            artifacts,
            lock_windows: BTreeMap::new(),
            // A repository's data is always encrypted, with the repository's key.
            encrypted: true,
            signature: SignatureState::Unsigned,
            verification: VerificationState::NotChecked,
            errors: Vec::new(),
        };
        match &facts.record {
            None => {}
            Some(Err(detail)) => {
                run.outcome = Outcome::Unreadable;
                run.errors.push(detail.clone());
            }
            Some(Ok(record)) => {
                run.outcome = Outcome::Complete;
                run.finished_at = facts.finished_at;
                run.plain_bytes = Some(
                    record
                        .artifacts
                        .iter()
                        .fold(0_u64, |total, a| total.saturating_add(a.plain_bytes)),
                );
                run.lock_windows = lock_windows(&record.jobs);
            }
        }
        run.with_figures()
    }
}

/// Reads the history of `deployment` (or of every deployment) in the repository at `url`
/// ([`Run::from_repository`]); with `options.verify`, each complete backup is checked as
/// `backups verify` does (rustic's check of its snapshots, every pack they use read).
/// Signatures do not apply to a repository (its snapshots are authenticated by its key).
///
/// # Errors
/// As [`read_history`].
pub async fn read_repository_history(
    url: &str,
    password: &RepositoryPassword,
    deployment: Option<&str>,
    options: &HistoryOptions,
) -> Result<History, HistoryError> {
    let facts = backup_facts(url, password, deployment).await?;
    let mut deployments: BTreeMap<String, Vec<Run>> = BTreeMap::new();
    for backup in &facts {
        let mut run = Run::from_repository(backup);
        if options.verify.is_some() && run.outcome == Outcome::Complete {
            run.verification = match crate::format::repository::read::verify_backup(
                url,
                password,
                &backup.deployment,
                &backup.backup_id,
            )
            .await
            {
                Ok((_, findings)) => {
                    let errors: Vec<String> = findings
                        .into_iter()
                        .filter(|f| f.error)
                        .map(|f| f.text)
                        .collect();
                    if errors.is_empty() {
                        VerificationState::Passed
                    } else {
                        VerificationState::Failed(errors.join("; "))
                    }
                }
                Err(error) => VerificationState::Failed(error.to_string()),
            };
        }
        deployments
            .entry(backup.deployment.clone())
            .or_default()
            .push(run);
    }
    if deployments.is_empty() {
        return Err(match deployment {
            Some(name) => HistoryError::UnknownDeployment {
                deployment: name.to_string(),
                store: url.to_string(),
            },
            None => HistoryError::EmptyStore {
                store: url.to_string(),
            },
        });
    }
    let deployments = deployments
        .into_iter()
        .map(|(name, mut runs)| {
            runs.sort_by(|a, b| (a.started_at, &a.id).cmp(&(b.started_at, &b.id)));
            DeploymentHistory { name, runs }
        })
        .collect();
    Ok(History {
        store: url.to_string(),
        generated_at: Utc::now(),
        deployments,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::format::digest::FileDigests;
    use crate::format::manifest::{
        ArtifactEncryption, Compression, ManifestArtifact, ManifestObject, MANIFEST_SCHEMA,
    };
    use crate::format::store::failed_run::FailedArtifact;

    pub(crate) fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + seconds, 0).unwrap()
    }

    fn id_at(seconds: i64) -> String {
        crate::format::bbr_directory::metadata::format_backup_timestamp(at(seconds))
    }

    pub(crate) fn manifest(start: i64, seconds: i64, encrypted: bool) -> Manifest {
        let artifact = |name: &str, size: u64| ManifestArtifact {
            name: name.into(),
            group: "db".into(),
            index: "0".into(),
            job: name.rsplit('-').next().unwrap().into(),
            key: format!("cf/{}/{name}.tar.zst", id_at(start)),
            size,
            sha256: "00".into(),
            version: None,
            files: FileDigests::new(),
            plain_size: Some(size * 4),
            encryption: encrypted.then(|| ArtifactEncryption {
                scheme: "age-x25519".into(),
                recipients: 1,
            }),
            stream: false,
            segments: Vec::new(),
        };
        Manifest {
            schema: MANIFEST_SCHEMA,
            cairn_version: "0.1.0".into(),
            deployment: "cf".into(),
            backup_id: id_at(start),
            started_at: at(start),
            finished_at: at(start + seconds),
            compression: Compression::Zstd { level: 3 },
            artifacts: vec![artifact("db-0-pg", 1000), artifact("db-0-redis", 24)],
            jobs: vec![
                JobTimes {
                    instance: "db/0".into(),
                    job: "pg".into(),
                    locked_at: Some(at(start + 1)),
                    unlocked_at: Some(at(start + 4)),
                },
                // Never locked (no lock script): no window.
                JobTimes {
                    instance: "db/0".into(),
                    job: "redis".into(),
                    locked_at: None,
                    unlocked_at: Some(at(start + 4)),
                },
            ],
            metadata: ManifestObject {
                key: format!("cf/{}/metadata", id_at(start)),
                version: None,
                sha256: "00".into(),
            },
            deployment_manifest: None,
            layout: None,
        }
    }

    pub(crate) fn failed(start: i64) -> FailedRun {
        FailedRun {
            cairn_version: "0.1.0".into(),
            deployment: "cf".into(),
            backup_id: id_at(start),
            started_at: at(start),
            finished_at: at(start + 3),
            errors: vec!["pre-backup-lock of db/0 pg exited 1".into()],
            artifacts: vec![FailedArtifact {
                name: "db-0-redis".into(),
                job: "redis".into(),
                size: 7,
            }],
            jobs: vec![],
        }
    }

    fn summary(start: i64, size: u64, complete: bool) -> BackupSummary {
        BackupSummary {
            deployment: "cf".into(),
            id: id_at(start),
            time: Some(at(start)),
            size,
            complete,
        }
    }

    #[test]
    fn a_complete_backup_gives_its_figures() {
        let run = Run::complete(&manifest(0, 10, true), SignatureState::Signed);
        assert_eq!(run.outcome, Outcome::Complete);
        assert_eq!(run.stored_bytes, 1024);
        assert_eq!(run.plain_bytes, Some(4096));
        assert_eq!(run.duration_seconds, Some(10.0));
        assert_eq!(run.throughput_bytes_per_second, Some(409.6));
        assert!(run.encrypted);
        assert_eq!(run.artifacts.get("db-0-pg"), Some(&1000));
        // Only the job that was locked and unlocked has a window.
        assert_eq!(
            run.lock_windows,
            BTreeMap::from([("db/0 pg".to_string(), 3.0)])
        );
        assert!(!Run::complete(&manifest(0, 10, false), SignatureState::Unsigned).encrypted);
    }

    #[test]
    fn a_run_of_no_time_has_no_throughput() {
        let run = Run::complete(&manifest(0, 0, false), SignatureState::Unsigned);
        assert_eq!(run.duration_seconds, Some(0.0));
        assert_eq!(run.throughput_bytes_per_second, None);
    }

    #[test]
    fn runs_merge_complete_failed_and_incomplete_oldest_first() {
        let listed = vec![
            summary(0, 1024, true),
            // The leftovers of the failed run: its record wins.
            summary(100, 7, false),
            // Killed: no record.
            summary(200, 99, false),
        ];
        let complete = BTreeMap::from([(
            id_at(0),
            Run::complete(&manifest(0, 10, false), SignatureState::Unsigned),
        )]);
        let runs = merge_runs(&listed, complete, &[failed(100), failed(50)]);
        let outcomes: Vec<(String, Outcome)> =
            runs.iter().map(|r| (r.id.clone(), r.outcome)).collect();
        assert_eq!(
            outcomes,
            vec![
                (id_at(0), Outcome::Complete),
                (id_at(50), Outcome::Failed),
                (id_at(100), Outcome::Failed),
                (id_at(200), Outcome::Incomplete),
            ]
        );
        assert_eq!(runs[2].stored_bytes, 7);
        assert_eq!(runs[2].duration_seconds, Some(3.0));
        assert_eq!(runs[3].stored_bytes, 99);
        assert_eq!(runs[3].duration_seconds, None);
        assert!(runs[1].outcome.is_failure() && !runs[0].outcome.is_failure());
    }

    #[tokio::test]
    async fn a_store_is_read_into_runs_and_nothing_to_report_is_an_error() {
        use crate::format::store::failed_run::write_failed_run;
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn ArtifactStore> =
            Arc::new(cairn_store::local::LocalStore::new(dir.path()));
        let options = HistoryOptions::default();
        let empty = read_history(&store, None, &options).await.unwrap_err();
        assert!(matches!(empty, HistoryError::EmptyStore { .. }), "{empty}");
        // A deployment whose only run failed is reported; another name is not known.
        write_failed_run(store.as_ref(), &failed(100))
            .await
            .unwrap();
        let history = read_history(&store, None, &options).await.unwrap();
        assert_eq!(history.deployments.len(), 1);
        assert_eq!(history.deployments[0].name, "cf");
        assert_eq!(history.deployments[0].runs[0].outcome, Outcome::Failed);
        let unknown = read_history(&store, Some("nope"), &options)
            .await
            .unwrap_err();
        assert!(
            unknown
                .to_string()
                .starts_with("deployment `nope` has no backups and no failed runs in file://"),
            "{unknown}"
        );
        // Leftovers of a killed run: incomplete, with their bytes.
        let leftover = dir
            .path()
            .join(format!("cf/{}/db-0-pg.tar.zst", id_at(200)));
        std::fs::create_dir_all(leftover.parent().unwrap()).unwrap();
        std::fs::write(&leftover, b"12345").unwrap();
        let runs = read_history(&store, Some("cf"), &options)
            .await
            .unwrap()
            .deployments
            .remove(0)
            .runs;
        let outcomes: Vec<Outcome> = runs.iter().map(|r| r.outcome).collect();
        assert_eq!(outcomes, [Outcome::Failed, Outcome::Incomplete]);
        assert_eq!(runs[1].stored_bytes, 5);
    }

    #[test]
    fn the_json_names_states_plainly() {
        let mut run = Run::complete(
            &manifest(0, 10, false),
            SignatureState::Rejected("x".into()),
        );
        run.verification = VerificationState::Failed("y".into());
        let json = serde_json::to_value(&run).unwrap();
        assert_eq!(json["outcome"], "complete");
        assert_eq!(json["signature"]["state"], "rejected");
        assert_eq!(json["signature"]["detail"], "x");
        assert_eq!(json["verification"]["state"], "failed");
        let unsigned = serde_json::to_value(SignatureState::Unsigned).unwrap();
        assert_eq!(unsigned["state"], "unsigned");
        let unchecked = serde_json::to_value(VerificationState::NotChecked).unwrap();
        assert_eq!(unchecked["state"], "not-checked");
    }
}
