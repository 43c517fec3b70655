//! What a repository records of each backup, for `cairn backups report` on `repo+` stores
//! ([`crate::report::history`] turns it into the same model as for a plain store).
//!
//! Why its own pass: the report wants every backup of a deployment at once, and opening a
//! repository (the password's scrypt) and reading its index are the expensive parts, so they
//! are done once here, not per backup as `show` does. Per backup it reads the snapshots'
//! summaries (rustic's: when each was saved and the bytes it added to the repository, after
//! compression and encryption) and the record snapshot's `cairn.json` (each artifact's
//! snapshot size, the lock windows).

use std::collections::BTreeMap;
use std::sync::Arc;

use cairn_repository::rustic_core::repofile::SnapshotFile;
use cairn_repository::{RepositoryError, RepositoryPassword};
use chrono::{DateTime, Utc};

use super::read::tag_value;
use super::record::{Record, KIND_RECORD, RECORD_FILE};
use crate::error::Error;

/// One backup (one `cairn-backup=` id) as the repository records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupFacts {
    /// Deployment name.
    pub deployment: String,
    /// Backup id.
    pub backup_id: String,
    /// When it started (its snapshots' time, the backup's start).
    pub started_at: Option<DateTime<Utc>>,
    /// When its record snapshot was saved (complete backups).
    pub finished_at: Option<DateTime<Utc>>,
    /// Its record: `None` when it has no record snapshot (a failed or killed run's
    /// leftovers), `Some(Err)` when the record cannot be read or does not belong there.
    pub record: Option<Result<Record, String>>,
    /// Bytes each artifact's snapshot added to the repository (packed: compressed and
    /// encrypted; data already there from other backups is not counted), by artifact name.
    pub added_bytes: BTreeMap<String, u64>,
    /// Bytes the record snapshot added.
    pub record_added_bytes: u64,
}

/// Every backup of `deployment` (or of every deployment) in the repository at `url`, by
/// deployment and id.
///
/// # Errors
/// The repository cannot be opened or its snapshots or index read.
pub async fn backup_facts(
    url: &str,
    password: &RepositoryPassword,
    deployment: Option<&str>,
) -> Result<Vec<BackupFacts>, Error> {
    let repository = super::open(url, password).await?;
    let store = repository.store();
    let opened = repository.indexed(Ok).await?;
    let deployment = deployment.map(str::to_string);
    let owner = Arc::clone(&store);
    let facts = cairn_repository::blocking(&owner, move || {
        let rustic_error = |e: Box<cairn_repository::rustic_core::RusticError>| {
            RepositoryError::rustic(store.as_ref(), &e)
        };
        let snapshots = opened
            .get_matching_snapshots(|snapshot| {
                tag_value(snapshot, "cairn-kind").is_some()
                    && tag_value(snapshot, "cairn-backup").is_some()
                    && tag_value(snapshot, "deployment")
                        .is_some_and(|d| deployment.as_ref().is_none_or(|wanted| d == *wanted))
            })
            .map_err(rustic_error)?;
        let mut facts = gather(&snapshots);
        if facts.iter().any(|f| f.record.is_some()) {
            let indexed = opened.to_indexed().map_err(rustic_error)?;
            for backup in &mut facts {
                let Some(record_snapshot) = snapshots.iter().find(|s| {
                    is_record(s)
                        && tag_value(s, "deployment").as_deref() == Some(&backup.deployment)
                        && tag_value(s, "cairn-backup").as_deref() == Some(&backup.backup_id)
                }) else {
                    continue;
                };
                backup.record = Some(read_record(&indexed, record_snapshot, backup));
            }
        }
        Ok(facts)
    })
    .await?;
    Ok(facts)
}

fn is_record(snapshot: &SnapshotFile) -> bool {
    tag_value(snapshot, "cairn-kind").as_deref() == Some(KIND_RECORD)
}

/// One entry per (deployment, id) among `snapshots`, by deployment and id; the records are
/// marked present (`Some(Err)`, to be read) but not read.
fn gather(snapshots: &[SnapshotFile]) -> Vec<BackupFacts> {
    let mut backups: BTreeMap<(String, String), BackupFacts> = BTreeMap::new();
    for snapshot in snapshots {
        let (Some(deployment), Some(id)) = (
            tag_value(snapshot, "deployment"),
            tag_value(snapshot, "cairn-backup"),
        ) else {
            continue;
        };
        let entry = backups
            .entry((deployment.clone(), id.clone()))
            .or_insert_with(|| BackupFacts {
                deployment,
                backup_id: id,
                started_at: None,
                finished_at: None,
                record: None,
                added_bytes: BTreeMap::new(),
                record_added_bytes: 0,
            });
        let time = utc(&snapshot.time);
        entry.started_at = match (entry.started_at, time) {
            (Some(earlier), Some(time)) => Some(earlier.min(time)),
            (earlier, time) => earlier.or(time),
        };
        let summary = snapshot.summary.clone().unwrap_or_default();
        if is_record(snapshot) {
            entry.finished_at = snapshot.summary.as_ref().and_then(|s| utc(&s.backup_end));
            entry.record_added_bytes = summary.data_added_packed;
            entry.record = Some(Err("not read".into()));
        } else if let Some(name) = tag_value(snapshot, "artifact") {
            *entry.added_bytes.entry(name).or_default() += summary.data_added_packed;
        }
    }
    backups.into_values().collect()
}

/// A jiff time as chrono's.
fn utc(time: &cairn_repository::rustic_core::jiff::Zoned) -> Option<DateTime<Utc>> {
    let stamp = time.timestamp();
    DateTime::from_timestamp(
        stamp.as_second(),
        stamp.subsec_nanosecond().try_into().ok()?,
    )
}

/// Reads `cairn.json` out of the record snapshot; it must name the deployment and id its
/// tags place it under.
fn read_record(
    indexed: &cairn_repository::rustic_core::Repository<
        cairn_repository::rustic_core::IndexedFullStatus,
    >,
    snapshot: &SnapshotFile,
    backup: &BackupFacts,
) -> Result<Record, String> {
    let which = format!("{}/{}", backup.deployment, backup.backup_id);
    let node = indexed
        .node_from_snapshot_and_path(snapshot, RECORD_FILE)
        .map_err(|e| {
            format!(
                "{which}: its {RECORD_FILE} cannot be found: {}",
                e.display_log()
            )
        })?;
    let mut data = Vec::new();
    indexed.dump(&node, &mut data).map_err(|e| {
        format!(
            "{which}: its {RECORD_FILE} cannot be read: {}",
            e.display_log()
        )
    })?;
    let record: Record = serde_json::from_slice(&data)
        .map_err(|e| format!("{which}: its {RECORD_FILE} cannot be read: {e}"))?;
    if record.deployment != backup.deployment || record.backup_id != backup.backup_id {
        return Err(format!(
            "{which}: its record says it is {}/{}, not where its tags place it",
            record.deployment, record.backup_id
        ));
    }
    Ok(record)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::repository::record::{tag, tags, KIND_ARTIFACT};
    use cairn_repository::rustic_core::repofile::SnapshotSummary;
    use cairn_repository::rustic_core::StringList;

    fn snapshot(kind: &str, id: &str, artifact: Option<&str>, added: u64) -> SnapshotFile {
        let mut snapshot = SnapshotFile::default();
        let mut list = StringList::default();
        for text in tags(kind, "redis", id) {
            list.add(text);
        }
        if let Some(name) = artifact {
            list.add(tag("artifact", name));
        }
        snapshot.tags = list;
        let mut summary = SnapshotSummary::default();
        summary.data_added_packed = added;
        snapshot.summary = Some(summary);
        snapshot
    }

    #[test]
    fn each_backup_gathers_its_snapshots_added_bytes_and_whether_it_has_a_record() {
        let snapshots = [
            snapshot(KIND_ARTIFACT, "20240101T000000Z", Some("db-0-pg"), 700),
            snapshot(KIND_ARTIFACT, "20240101T000000Z", Some("app-0-files"), 50),
            snapshot(KIND_RECORD, "20240101T000000Z", None, 3),
            snapshot(KIND_ARTIFACT, "20240102T000000Z", Some("db-0-pg"), 9),
        ];
        let facts = gather(&snapshots);
        assert_eq!(facts.len(), 2);
        assert_eq!(facts[0].backup_id, "20240101T000000Z");
        assert!(facts[0].record.is_some());
        assert_eq!(facts[0].record_added_bytes, 3);
        assert_eq!(
            facts[0].added_bytes,
            BTreeMap::from([("app-0-files".into(), 50), ("db-0-pg".into(), 700)])
        );
        assert_eq!(facts[1].backup_id, "20240102T000000Z");
        assert!(facts[1].record.is_none(), "no record: incomplete");
        assert_eq!(facts[1].added_bytes["db-0-pg"], 9);
    }
}
