//! Records of failed backups into a store: `<deployment>/failures/<backup id>.json`.
//!
//! A failed backup never looks complete: its artifacts are removed when it ends, and what is
//! left is removed by the next backup of the deployment ([`super::write`]). That keeps the
//! store clean, but it also erases the only trace that the run happened. `backups report`
//! plots failed runs beside the good ones, so a backup that ends incomplete leaves this small
//! record (when it started and ended, what it had stored, its lock windows, the first lines
//! of its errors). The folder is not a backup id, so the record is never listed as a backup,
//! and only the newest [`KEEP_FAILED_RUNS`] records of a deployment are kept. The record is
//! written without retention (`--retain-days`) and best effort: a store that refuses it only
//! costs the record, never the run's outcome.

use bytes::Bytes;
use cairn_store::{ArtifactStore, ArtifactStoreExt, ObjectKey, PutOptions, StoreError};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{get_record, invalid_name};
use crate::error::Error;
use crate::format::manifest::JobTimes;

/// Folder of a deployment's failed-run records (`<deployment>/failures/`); not a backup id,
/// so never listed as a backup.
pub const FAILURES_FOLDER: &str = "failures";
/// Records kept per deployment: writing one more removes the oldest beyond this.
pub const KEEP_FAILED_RUNS: usize = 50;
/// Error lines kept in a record, and characters kept of each.
const KEEP_ERROR_LINES: usize = 10;
const KEEP_ERROR_CHARS: usize = 500;

/// What a failed backup into a store leaves behind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailedRun {
    /// Cairn version that wrote it.
    pub cairn_version: String,
    /// Deployment name.
    pub deployment: String,
    /// The id the backup would have had (`YYYYMMDDTHHMMSSZ`, its start time).
    pub backup_id: String,
    /// Start of the run.
    pub started_at: DateTime<Utc>,
    /// When the run gave up.
    pub finished_at: DateTime<Utc>,
    /// The first lines of what went wrong (empty: interrupted, or no error was recorded).
    #[serde(default)]
    pub errors: Vec<String>,
    /// Artifacts stored and verified before it failed (all were then removed).
    #[serde(default)]
    pub artifacts: Vec<FailedArtifact>,
    /// Lock and unlock times per job, as a manifest records them.
    #[serde(default)]
    pub jobs: Vec<JobTimes>,
}

/// One artifact a failed run had stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailedArtifact {
    /// Artifact name.
    pub name: String,
    /// Job name.
    pub job: String,
    /// Bytes stored.
    pub size: u64,
}

impl FailedRun {
    /// Keeps the first [`KEEP_ERROR_LINES`] errors, each cut to [`KEEP_ERROR_CHARS`]
    /// characters: a record, not a log.
    #[must_use]
    pub fn with_errors(mut self, errors: &[String]) -> FailedRun {
        self.errors = errors
            .iter()
            .take(KEEP_ERROR_LINES)
            .map(|line| line.chars().take(KEEP_ERROR_CHARS).collect())
            .collect();
        self
    }
}

/// Key of the record of `<deployment>`'s failed run `id`.
fn record_key(deployment: &str, id: &str) -> Result<ObjectKey, Error> {
    ObjectKey::parse(&format!("{deployment}/{FAILURES_FOLDER}/{id}.json")).map_err(invalid_name)
}

/// Writes a failed run's record, then removes the oldest records of the deployment beyond
/// [`KEEP_FAILED_RUNS`].
///
/// # Errors
/// Store failures.
pub async fn write_failed_run(store: &dyn ArtifactStore, run: &FailedRun) -> Result<(), Error> {
    let key = record_key(&run.deployment, &run.backup_id)?;
    let json = serde_json::to_vec_pretty(run).expect("a failed-run record serializes");
    store
        .put_bytes(&key, Bytes::from(json), &PutOptions::default())
        .await?;
    let mut keys: Vec<ObjectKey> = store
        .list(&format!("{}/{FAILURES_FOLDER}/", run.deployment))
        .await?
        .into_iter()
        .map(|object| object.key)
        .collect();
    keys.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    let excess = keys.len().saturating_sub(KEEP_FAILED_RUNS);
    for key in keys.into_iter().take(excess) {
        match store.delete(&key, None).await {
            Ok(()) | Err(StoreError::NotFound { .. }) => {}
            Err(error) => return Err(error.into()),
        }
    }
    Ok(())
}

/// The failed-run records of `deployment`, oldest first. A record that cannot be parsed is
/// skipped with a warning naming it (the report is about the others).
///
/// # Errors
/// Store failures.
pub async fn read_failed_runs(
    store: &dyn ArtifactStore,
    deployment: &str,
) -> Result<Vec<FailedRun>, Error> {
    let mut runs = Vec::new();
    for object in store
        .list(&format!("{deployment}/{FAILURES_FOLDER}/"))
        .await?
    {
        let data = match get_record(store, &object.key, None).await {
            Ok(data) => data,
            Err(Error::Store(StoreError::NotFound { .. })) => continue,
            Err(error) => return Err(error),
        };
        match serde_json::from_slice::<FailedRun>(&data) {
            Ok(run) => runs.push(run),
            Err(error) => tracing::warn!(
                "Skipping the failed-run record {} in {store}: {error}",
                object.key
            ),
        }
    }
    runs.sort_by_key(|a| a.started_at);
    Ok(runs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_store::local::LocalStore;

    fn run(id: &str, started: i64) -> FailedRun {
        let started_at = DateTime::from_timestamp(started, 0).unwrap();
        FailedRun {
            cairn_version: "0.1.0".into(),
            deployment: "cf".into(),
            backup_id: id.into(),
            started_at,
            finished_at: started_at + chrono::Duration::seconds(5),
            errors: vec![],
            artifacts: vec![FailedArtifact {
                name: "db-0-pg".into(),
                job: "pg".into(),
                size: 10,
            }],
            jobs: vec![],
        }
    }

    #[test]
    fn errors_are_kept_short() {
        let long = "x".repeat(KEEP_ERROR_CHARS + 7);
        let errors: Vec<String> = (0..KEEP_ERROR_LINES + 3).map(|_| long.clone()).collect();
        let kept = run("20240102T030405Z", 0).with_errors(&errors);
        assert_eq!(kept.errors.len(), KEEP_ERROR_LINES);
        assert!(kept.errors.iter().all(|e| e.len() == KEEP_ERROR_CHARS));
    }

    #[tokio::test]
    async fn records_are_written_read_back_and_capped() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path());
        let total = KEEP_FAILED_RUNS + 2;
        for n in 0..total {
            let id = format!("2024010{}T03{:04}Z", 1 + n / 10_000, n);
            write_failed_run(&store, &run(&id, i64::try_from(n).unwrap()))
                .await
                .unwrap();
        }
        let runs = read_failed_runs(&store, "cf").await.unwrap();
        assert_eq!(runs.len(), KEEP_FAILED_RUNS);
        // The two oldest went; the rest are oldest first.
        assert_eq!(runs[0].backup_id, "20240101T030002Z");
        assert!(runs.windows(2).all(|w| w[0].started_at <= w[1].started_at));
        // Never listed as a backup.
        assert!(super::super::list_backups(&store, Some("cf"))
            .await
            .unwrap()
            .is_empty());
    }
}
