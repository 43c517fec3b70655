//! Deleting backups from a repository and freeing the data nothing uses any more
//! (docs/design/repository.md §6): `backups delete` and `backups prune` on `repo+` stores.
//!
//! Why here and not in `catalog`: a backup in a repository is a set of snapshots (its
//! artifacts' and its record), found by their tags, and its data lives in packs shared with
//! every other backup of the repository. Which backups to delete is decided by the same
//! retention plan as for plain stores ([`crate::catalog::retention`], fed with
//! [`backup_summaries`]); this module only turns a decision into rustic_core calls: delete the
//! snapshots (the record first, so an interrupted delete leaves an incomplete backup, never a
//! complete one missing an artifact), then rustic_core's prune, which marks the packs no
//! snapshot uses and deletes those an earlier prune marked long enough ago.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use cairn_repository::rustic_core::repofile::{SnapshotFile, SnapshotId};
use cairn_repository::rustic_core::{OpenStatus, PruneOptions};
use cairn_repository::{RepositoryError, RepositoryPassword};
use cairn_store::ArtifactStore;

use super::read::tag_value;
use super::record::{tag, KIND_RECORD};
use crate::error::Error;
use crate::format::store::{backup_time, BackupSummary};

type Opened = cairn_repository::rustic_core::Repository<OpenStatus>;

/// How long a pack marked unused by one prune stays before a later prune deletes it, unless
/// told otherwise: rustic's default. A backup that ran during the marking prune may have
/// deduplicated against it; the next prune then sees it used again and keeps it.
pub const DEFAULT_KEEP_MARKED: Duration = Duration::from_secs(23 * 3600);

/// The backups of `deployment` in a repository, oldest first, as the retention plan wants
/// them: one per `cairn-backup=` id among its snapshots, complete when its record snapshot
/// is there (a backup whose run was killed left artifact snapshots without one). The size is
/// the bytes of its files as its record says (0 for an incomplete backup): its stored bytes
/// are shared with other backups.
///
/// # Errors
/// The repository cannot be opened or its snapshots read.
pub async fn backup_summaries(
    url: &str,
    password: &RepositoryPassword,
    deployment: &str,
) -> Result<Vec<BackupSummary>, Error> {
    let (rustic, store) = open(url, password).await?;
    let deployment = deployment.to_string();
    let owner = Arc::clone(&store);
    let backups = cairn_repository::blocking(&owner, move || {
        let snapshots = snapshots_of(&rustic, store.as_ref(), &deployment, None)?;
        Ok(summaries(&deployment, &snapshots))
    })
    .await?;
    Ok(backups)
}

/// What [`delete_backups`] deleted: per backup id, its snapshots.
pub type Deleted = BTreeMap<String, usize>;

/// Deletes every snapshot of the backups `ids` of `deployment` (each backup's record first,
/// then its artifacts'). The data they used stays in the packs until a prune.
///
/// # Errors
/// A backup with no snapshot in the repository (nothing is deleted then), or the
/// repository's failure.
pub async fn delete_backups(
    url: &str,
    password: &RepositoryPassword,
    deployment: &str,
    ids: &[String],
) -> Result<Deleted, Error> {
    let (rustic, store) = open(url, password).await?;
    let deployment = deployment.to_string();
    let ids = ids.to_vec();
    let owner = Arc::clone(&store);
    let deleted = cairn_repository::blocking(&owner, move || {
        let snapshots = snapshots_of(&rustic, store.as_ref(), &deployment, Some(&ids))?;
        let mut deleted = Deleted::new();
        for id in &ids {
            let (records, artifacts): (Vec<&SnapshotFile>, Vec<&SnapshotFile>) = snapshots
                .iter()
                .filter(|s| tag_value(s, "cairn-backup").as_deref() == Some(id.as_str()))
                .partition(|s| s.tags.contains(&tag("cairn-kind", KIND_RECORD)));
            if records.is_empty() && artifacts.is_empty() {
                return Err(RepositoryError::Rustic {
                    store: store.to_string(),
                    detail: format!(
                        "no backup {deployment}/{id} in this repository; see `cairn backups list` with the same --store"
                    ),
                });
            }
            deleted.insert(id.clone(), records.len() + artifacts.len());
        }
        for id in &ids {
            for kind_is_record in [true, false] {
                let doomed: Vec<SnapshotId> = snapshots
                    .iter()
                    .filter(|s| tag_value(s, "cairn-backup").as_deref() == Some(id.as_str()))
                    .filter(|s| s.tags.contains(&tag("cairn-kind", KIND_RECORD)) == kind_is_record)
                    .map(|s| s.id)
                    .collect();
                if !doomed.is_empty() {
                    rustic
                        .delete_snapshots(&doomed)
                        .map_err(|e| RepositoryError::rustic(store.as_ref(), &e))?;
                }
            }
        }
        Ok(deleted)
    })
    .await?;
    Ok(deleted)
}

/// What [`discard_incomplete`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Discarded {
    /// The backup's record snapshot is there: it is complete, nothing was deleted.
    Complete,
    /// It had no record: this many artifact snapshots were deleted (0: none were left).
    Deleted(usize),
}

/// The recovery of a killed backup into a repository (the run journal's `repository_backup`):
/// deletes every snapshot of backup `id` of `deployment` unless its record snapshot is there.
/// The data the deleted snapshots used stays in the packs until a prune.
///
/// # Errors
/// The repository cannot be opened, or its snapshots read or deleted.
pub async fn discard_incomplete(
    url: &str,
    password: &RepositoryPassword,
    deployment: &str,
    id: &str,
) -> Result<Discarded, Error> {
    let (rustic, store) = open(url, password).await?;
    let deployment = deployment.to_string();
    let ids = vec![id.to_string()];
    let owner = Arc::clone(&store);
    let discarded = cairn_repository::blocking(&owner, move || {
        let snapshots = snapshots_of(&rustic, store.as_ref(), &deployment, Some(&ids))?;
        let record = tag("cairn-kind", KIND_RECORD);
        if snapshots.iter().any(|s| s.tags.contains(&record)) {
            return Ok(Discarded::Complete);
        }
        let doomed: Vec<SnapshotId> = snapshots.iter().map(|s| s.id).collect();
        if !doomed.is_empty() {
            rustic
                .delete_snapshots(&doomed)
                .map_err(|e| RepositoryError::rustic(store.as_ref(), &e))?;
        }
        Ok(Discarded::Deleted(doomed.len()))
    })
    .await?;
    Ok(discarded)
}

/// What rustic_core's prune did (or, in a dry run, would do) with the repository's packs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DataPruned {
    /// Packs no snapshot uses any more, marked for deletion by this prune.
    pub packs_marked: u64,
    /// Bytes of the blobs in them.
    pub bytes_marked: u64,
    /// Packs an earlier prune marked, deleted now.
    pub packs_deleted: u64,
    /// Their bytes.
    pub bytes_deleted: u64,
    /// Packs marked by an earlier prune that must wait longer before they are deleted.
    pub packs_waiting: u64,
    /// Packs partly used, rewritten without their unused blobs.
    pub packs_repacked: u64,
    /// Unused bytes dropped by the repacking.
    pub bytes_repacked: u64,
    /// Pack files no index lists (left by a backup that was killed), marked for deletion.
    pub packs_unindexed: u64,
    /// Packs kept as they are (used).
    pub packs_kept: u64,
}

/// rustic_core's prune of the repository at `url`: marks the packs no snapshot uses any more,
/// deletes those an earlier prune marked at least `keep_marked` ago, repacks partly used packs
/// within rustic's limits (10 % of the repository repacked, 5 % unused left). With `dry_run`
/// nothing is changed, and the snapshots `ignoring` (backups a dry run would delete first)
/// count as deleted already.
///
/// # Errors
/// The repository's failure.
pub async fn prune_data(
    url: &str,
    password: &RepositoryPassword,
    keep_marked: Duration,
    dry_run: Option<(&str, &[String])>,
) -> Result<DataPruned, Error> {
    let (rustic, store) = open(url, password).await?;
    let seconds = i64::try_from(keep_marked.as_secs()).unwrap_or(i64::MAX);
    let ignoring = dry_run.map(|(deployment, ids)| (deployment.to_string(), ids.to_vec()));
    let owner = Arc::clone(&store);
    let pruned = cairn_repository::blocking(&owner, move || {
        let rustic_error = |e: Box<cairn_repository::rustic_core::RusticError>| {
            RepositoryError::rustic(store.as_ref(), &e)
        };
        let span = cairn_repository::rustic_core::jiff::Span::new()
            .try_seconds(seconds)
            .map_err(|e| RepositoryError::Rustic {
                store: store.to_string(),
                detail: format!("keep marked packs for {seconds} s: {e}"),
            })?;
        let mut options = PruneOptions::default().keep_delete(span);
        if let Some((deployment, ids)) = &ignoring {
            let doomed = snapshots_of(&rustic, store.as_ref(), deployment, Some(ids))?;
            options = options.ignore_snaps(doomed.iter().map(|s| s.id).collect::<Vec<_>>());
        }
        let plan = rustic.prune_plan(&options).map_err(rustic_error)?;
        let stats = &plan.stats;
        let sizes = stats.size_sum();
        let pruned = DataPruned {
            packs_marked: stats.packs.unused,
            bytes_marked: sizes.remove,
            packs_deleted: stats.packs_to_delete.remove,
            bytes_deleted: stats.size_to_delete.remove,
            packs_waiting: stats.packs_to_delete.keep,
            packs_repacked: stats.packs.repack,
            bytes_repacked: sizes.repackrm,
            packs_unindexed: stats.packs_unref,
            packs_kept: stats.packs.keep,
        };
        if ignoring.is_none() {
            rustic.prune(&options, plan).map_err(rustic_error)?;
        }
        Ok(pruned)
    })
    .await?;
    Ok(pruned)
}

async fn open(
    url: &str,
    password: &RepositoryPassword,
) -> Result<(Arc<Opened>, Arc<dyn ArtifactStore>), Error> {
    let repository = super::open(url, password).await?;
    Ok((repository.rustic(), repository.store()))
}

/// The snapshots of `deployment` (of the backups `ids` only, when given), artifact and record
/// snapshots alike.
fn snapshots_of(
    rustic: &Opened,
    store: &dyn ArtifactStore,
    deployment: &str,
    ids: Option<&[String]>,
) -> Result<Vec<SnapshotFile>, RepositoryError> {
    let wanted = tag("deployment", deployment);
    rustic
        .get_matching_snapshots(|snapshot| {
            snapshot.tags.contains(&wanted)
                && tag_value(snapshot, "cairn-kind").is_some()
                && tag_value(snapshot, "cairn-backup")
                    .is_some_and(|id| ids.is_none_or(|ids| ids.contains(&id)))
        })
        .map_err(|e| RepositoryError::rustic(store, &e))
}

/// One summary per backup id among `snapshots`, oldest first.
fn summaries(deployment: &str, snapshots: &[SnapshotFile]) -> Vec<BackupSummary> {
    let record = tag("cairn-kind", KIND_RECORD);
    let mut backups: BTreeMap<String, BackupSummary> = BTreeMap::new();
    for snapshot in snapshots {
        let Some(id) = tag_value(snapshot, "cairn-backup") else {
            continue;
        };
        let entry = backups.entry(id.clone()).or_insert_with(|| BackupSummary {
            deployment: deployment.to_string(),
            time: backup_time(&id),
            id,
            size: 0,
            complete: false,
        });
        entry.complete |= snapshot.tags.contains(&record);
    }
    let mut backups: Vec<BackupSummary> = backups.into_values().collect();
    backups.sort_by(|a, b| (a.time, &a.id).cmp(&(b.time, &b.id)));
    backups
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::repository::record::{tags, KIND_ARTIFACT};
    use cairn_repository::rustic_core::StringList;

    fn snapshot(kind: &str, deployment: &str, id: &str) -> SnapshotFile {
        let mut snapshot = SnapshotFile::default();
        let mut list = StringList::default();
        for text in tags(kind, deployment, id) {
            list.add(text);
        }
        snapshot.tags = list;
        snapshot
    }

    #[test]
    fn a_backup_is_complete_when_its_record_snapshot_is_there() {
        let snapshots = [
            snapshot(KIND_ARTIFACT, "redis", "20240103T000000Z"),
            snapshot(KIND_ARTIFACT, "redis", "20240101T000000Z"),
            snapshot(KIND_RECORD, "redis", "20240101T000000Z"),
            snapshot(KIND_ARTIFACT, "redis", "20240102T000000Z"),
            snapshot(KIND_RECORD, "redis", "20240102T000000Z"),
        ];
        let summaries = summaries("redis", &snapshots);
        let seen: Vec<(&str, bool)> = summaries
            .iter()
            .map(|b| (b.id.as_str(), b.complete))
            .collect();
        assert_eq!(
            seen,
            [
                ("20240101T000000Z", true),
                ("20240102T000000Z", true),
                ("20240103T000000Z", false)
            ]
        );
        assert!(summaries.iter().all(|b| b.time.is_some()));
    }
}
