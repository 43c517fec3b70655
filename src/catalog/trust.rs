//! What `--trusted-key` means for the catalog and for `--latest`: the chain walk of
//! `backups verify`, the rollback check of `restore --latest` and `drill --latest`, which
//! backups `prune` must not act on, and the deletion records of `prune`/`delete` given
//! `--signing-key`.
//!
//! Why a chain and a local state: a signature proves that a backup is genuine, not that it is
//! the newest, nor that nothing was deleted. Each signed backup names the signed backup before
//! it ([`crate::format::signature::ChainLink`]), so a backup deleted from the middle leaves a
//! link to nothing, which is either explained by a signed deletion record ("pruned,
//! recorded") or not ("missing"). Deleting the newest backups leaves no dangling link; that
//! is what the newest backup this machine has seen
//! ([`crate::format::signature::SeenBackups`]) catches: `--latest` refuses a store whose
//! newest signed backup is older, unless signed records account for every backup in between.

use std::collections::{BTreeMap, BTreeSet};

use cairn_store::ArtifactStore;

use crate::error::Error;
use crate::format::signature::{
    ChainLink, DeletedBackup, DeletionRecord, Rollback, SeenBackup, SeenBackups, SignatureError,
    SigningKey, TrustedKeys,
};
use crate::format::store::signed::{
    read_deletion_records, read_signed_manifest, write_deletion_record, SignedManifest,
};
use crate::format::store::{latest_backup, list_backups, BackupSummary};

/// What the chain of a deployment's signed backups looks like.
#[derive(Debug, Default)]
pub struct ChainReport {
    /// Complete backups whose signature checked out, newest first.
    pub signed: Vec<SignedManifest>,
    /// Complete backups without a signature (id).
    pub unsigned: Vec<String>,
    /// Complete backups whose signature was refused (id, why).
    pub refused: Vec<(String, String)>,
    /// Deletion records refused (why).
    pub refused_records: Vec<String>,
    /// Every link that does not lead to the backup it names.
    pub gaps: Vec<Gap>,
    /// Backups whose statement starts a chain (no previous).
    pub starts: Vec<String>,
}

/// A link of the chain that does not lead to a signed backup in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gap {
    /// The backup the link names.
    pub missing: String,
    /// The backup (or recorded deletion) whose statement holds the link.
    pub after: String,
    /// What explains it.
    pub kind: GapKind,
}

/// Why a link leads nowhere.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GapKind {
    /// Deleted by a `prune` or `delete` that signed a record of it (the record's key).
    Recorded(String),
    /// Gone, and no signed record says so.
    Missing,
    /// A backup of that id is in the store, but it is not the one that was signed before.
    Replaced,
}

impl ChainReport {
    /// True when something is wrong: a missing or replaced link, a refused signature or
    /// record, or an unsigned backup newer than the oldest signed one.
    #[must_use]
    pub fn has_problems(&self) -> bool {
        let oldest_signed = self.signed.last().map(|s| s.statement.backup_id.as_str());
        self.gaps
            .iter()
            .any(|g| !matches!(g.kind, GapKind::Recorded(_)))
            || !self.refused.is_empty()
            || !self.refused_records.is_empty()
            || self
                .unsigned
                .iter()
                .any(|id| oldest_signed.is_some_and(|oldest| id.as_str() > oldest))
    }

    /// The newest signed backup.
    #[must_use]
    pub fn newest(&self) -> Option<&SignedManifest> {
        self.signed.first()
    }
}

/// Reads the signature of every complete backup of `deployment` and every deletion record,
/// and follows each link.
///
/// # Errors
/// Store failures while listing.
pub async fn walk_chain(
    store: &dyn ArtifactStore,
    deployment: &str,
    trusted: &TrustedKeys,
) -> Result<ChainReport, Error> {
    let mut report = ChainReport::default();
    let backups = list_backups(store, Some(deployment)).await?;
    let present: BTreeSet<&str> = backups
        .iter()
        .filter(|b| b.complete)
        .map(|b| b.id.as_str())
        .collect();
    for backup in backups.iter().rev().filter(|b| b.complete) {
        match read_signed_manifest(store, deployment, &backup.id, trusted).await {
            Ok(signed) => report.signed.push(signed),
            Err(Error::Signature(SignatureError::Unsigned { .. })) => {
                report.unsigned.push(backup.id.clone());
            }
            Err(error) => report.refused.push((backup.id.clone(), error.to_string())),
        }
    }
    let records = read_deletion_records(store, deployment, trusted).await?;
    report.refused_records = records.refused.iter().map(ToString::to_string).collect();
    let deleted = recorded_deletions(&records.accepted);
    let signed: BTreeMap<&str, &str> = report
        .signed
        .iter()
        .map(|s| (s.statement.backup_id.as_str(), s.digest.as_str()))
        .collect();
    // Every node: the signed backups in the store, and the recorded deletions no longer there.
    let mut nodes: Vec<(String, Option<ChainLink>)> = report
        .signed
        .iter()
        .map(|s| (s.statement.backup_id.clone(), s.statement.previous.clone()))
        .collect();
    for (id, (_, entry, _)) in &deleted {
        // An unsigned backup that was deleted has no link to follow.
        if !present.contains(id.as_str()) && entry.statement_sha256.is_some() {
            nodes.push((id.clone(), entry.previous.clone()));
        }
    }
    for (id, previous) in nodes {
        let Some(link) = previous else {
            report.starts.push(id);
            continue;
        };
        let kind = match signed.get(link.backup_id.as_str()) {
            Some(digest) if *digest == link.statement_sha256 => continue,
            Some(_) => GapKind::Replaced,
            None if present.contains(link.backup_id.as_str()) => GapKind::Replaced,
            None => match deleted.get(&link.backup_id) {
                Some((record, entry, _))
                    if entry.statement_sha256.as_deref() == Some(&link.statement_sha256) =>
                {
                    GapKind::Recorded(record.clone())
                }
                _ => GapKind::Missing,
            },
        };
        report.gaps.push(Gap {
            missing: link.backup_id,
            after: id,
            kind,
        });
    }
    report.gaps.sort_by(|a, b| b.after.cmp(&a.after));
    Ok(report)
}

/// Recorded deletions by backup id: (record key, entry, record). A backup recorded twice keeps
/// its newest record.
fn recorded_deletions(
    records: &[(String, DeletionRecord)],
) -> BTreeMap<String, (String, DeletedBackup, DeletionRecord)> {
    let mut deleted = BTreeMap::new();
    for (key, record) in records {
        for entry in &record.deleted {
            deleted.insert(
                entry.backup_id.clone(),
                (key.clone(), entry.clone(), record.clone()),
            );
        }
    }
    deleted
}

/// The newest complete backup of `deployment` for `--latest`, refused unless it is signed by
/// a trusted key where it lies ([`read_signed_manifest`]) and, with `seen`, unless it is at
/// least as new as the newest backup this machine has seen, or signed deletion records
/// account for every backup in between. It is then recorded as seen.
///
/// # Errors
/// No complete backup, its signature's error, [`SignatureError::Rollback`], store failures.
pub async fn latest_trusted(
    store: &dyn ArtifactStore,
    deployment: &str,
    trusted: &TrustedKeys,
    seen: Option<&SeenBackups>,
) -> Result<String, Error> {
    let id = latest_backup(store, deployment).await?;
    let signed = read_signed_manifest(store, deployment, &id, trusted).await?;
    let Some(seen) = seen else {
        return Ok(id);
    };
    let store_name = store.to_string();
    if let Some(newest) = seen.newest(&store_name, deployment)? {
        if newest.is_newer_than(&id) {
            let records = read_deletion_records(store, deployment, trusted).await?;
            if !deletions_lead_to(&newest, &signed, &recorded_deletions(&records.accepted)) {
                return Err(SignatureError::Rollback(Box::new(Rollback {
                    path: seen.path(&store_name, deployment),
                    deployment: deployment.to_string(),
                    store: store_name,
                    found: id,
                    seen: newest.backup_id,
                    seen_at: newest.seen_at,
                }))
                .into());
            }
        }
    }
    remember(seen, store, &signed);
    Ok(id)
}

/// True when every backup from `seen` down to (not including) `latest` is recorded as deleted
/// with the very statement digest the chain names.
fn deletions_lead_to(
    seen: &SeenBackup,
    latest: &SignedManifest,
    deleted: &BTreeMap<String, (String, DeletedBackup, DeletionRecord)>,
) -> bool {
    let mut id = seen.backup_id.clone();
    let mut digest = seen.statement_sha256.clone();
    let mut previous = seen.previous.clone();
    for _ in 0..=deleted.len() {
        if id == latest.statement.backup_id {
            return digest == latest.digest;
        }
        let recorded = deleted
            .get(&id)
            .is_some_and(|(_, entry, _)| entry.statement_sha256.as_deref() == Some(&digest));
        let Some(link) = previous.filter(|_| recorded) else {
            return false;
        };
        previous = deleted
            .get(&link.backup_id)
            .and_then(|(_, e, _)| e.previous.clone());
        id = link.backup_id;
        digest = link.statement_sha256;
    }
    false
}

/// Records a verified backup as seen (a failure only costs the record, with a warning).
pub fn remember(seen: &SeenBackups, store: &dyn ArtifactStore, signed: &SignedManifest) {
    let record = SeenBackup {
        store: store.to_string(),
        deployment: signed.statement.deployment.clone(),
        backup_id: signed.statement.backup_id.clone(),
        statement_sha256: signed.digest.clone(),
        previous: signed.statement.previous.clone(),
        seen_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    };
    if let Err(error) = seen.record(&record) {
        tracing::warn!("{error}; the rollback check of --latest cannot use this backup");
    }
}

/// The complete backups of `deployment` among `backups` whose signature `trusted` refuses,
/// with why: `prune` keeps them and does not count them as verified.
pub async fn untrusted_backups(
    store: &dyn ArtifactStore,
    deployment: &str,
    backups: &[BackupSummary],
    trusted: &TrustedKeys,
) -> BTreeMap<String, String> {
    let mut refused = BTreeMap::new();
    for backup in backups
        .iter()
        .filter(|b| b.complete && b.deployment == deployment)
    {
        if let Err(error) = read_signed_manifest(store, deployment, &backup.id, trusted).await {
            refused.insert(backup.id.clone(), error.to_string());
        }
    }
    refused
}

/// Signs and writes the record of what `command` (`prune`, `delete`) is about to delete; each
/// backup signed by `key` or a `trusted` key is listed with its statement's digest and link,
/// so the chain can be followed through it. Returns the record's key.
///
/// # Errors
/// Store failures.
pub async fn record_deletions(
    store: &dyn ArtifactStore,
    deployment: &str,
    ids: &[String],
    command: &str,
    key: &SigningKey,
    trusted: &TrustedKeys,
) -> Result<String, Error> {
    let readers = trusted.with(key.public());
    let mut deleted = Vec::new();
    for id in ids {
        let signed = read_signed_manifest(store, deployment, id, &readers)
            .await
            .ok();
        deleted.push(DeletedBackup {
            backup_id: id.clone(),
            statement_sha256: signed.as_ref().map(|s| s.digest.clone()),
            previous: signed.and_then(|s| s.statement.previous),
        });
    }
    let record = DeletionRecord {
        deployment: deployment.to_string(),
        command: command.to_string(),
        deleted_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        deleted,
    };
    Ok(write_deletion_record(store, key, record).await?.to_string())
}

/// The one-line warning for a command run without `--trusted-key` on a store that holds
/// signatures of `deployment` (every deployment when `None`); `None` when it holds none or
/// cannot be listed.
pub async fn unchecked_signatures_warning(
    store: &dyn ArtifactStore,
    deployment: Option<&str>,
) -> Option<String> {
    let holds = crate::format::store::signed::holds_signatures(store, deployment)
        .await
        .unwrap_or(false);
    holds.then(|| {
        format!(
            "{store} holds signed backups{}, but no --trusted-key was given: signatures are not checked (docs/stores.md, \"Signed backups\")",
            deployment.map(|d| format!(" of {d}")).unwrap_or_default()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::IfMisplaced;
    use crate::format::manifest::{Compression, Manifest, ManifestObject, MANIFEST_SCHEMA};
    use crate::format::signature::{BackupStatement, SignedObject};

    fn signed(id: &str, previous: Option<ChainLink>) -> SignedManifest {
        let statement = BackupStatement {
            deployment: "cf".into(),
            backup_id: id.into(),
            manifest: SignedObject {
                key: format!("cf/{id}/manifest.json"),
                version: None,
                sha256: "00".into(),
            },
            objects: vec![],
            recipients: vec![],
            previous,
            signed_at: "2024-01-01T00:00:00Z".into(),
        };
        let digest = crate::format::signature::Statement::StoreBackup(statement.clone()).digest();
        SignedManifest {
            manifest: Manifest {
                schema: MANIFEST_SCHEMA,
                cairn_version: "0".into(),
                deployment: "cf".into(),
                backup_id: id.into(),
                started_at: chrono::Utc::now(),
                finished_at: chrono::Utc::now(),
                compression: Compression::None,
                artifacts: vec![],
                jobs: vec![],
                metadata: ManifestObject {
                    key: String::new(),
                    version: None,
                    sha256: String::new(),
                },
                deployment_manifest: None,
                layout: None,
            },
            statement,
            digest,
            key: SigningKey::generate().public(),
        }
    }

    fn seen_of(backup: &SignedManifest) -> SeenBackup {
        SeenBackup {
            store: "s".into(),
            deployment: "cf".into(),
            backup_id: backup.statement.backup_id.clone(),
            statement_sha256: backup.digest.clone(),
            previous: backup.statement.previous.clone(),
            seen_at: String::new(),
        }
    }

    fn deleted(
        backups: &[&SignedManifest],
    ) -> BTreeMap<String, (String, DeletedBackup, DeletionRecord)> {
        let record = DeletionRecord {
            deployment: "cf".into(),
            command: "delete".into(),
            deleted_at: String::new(),
            deleted: backups
                .iter()
                .map(|b| DeletedBackup {
                    backup_id: b.statement.backup_id.clone(),
                    statement_sha256: Some(b.digest.clone()),
                    previous: b.statement.previous.clone(),
                })
                .collect(),
        };
        recorded_deletions(&[("cf/deletions/x.json".into(), record)])
    }

    #[test]
    fn a_rollback_is_accepted_only_through_recorded_deletions() {
        let b1 = signed("20240101T000000Z", None);
        let b2 = signed("20240102T000000Z", Some(b1.link()));
        let b3 = signed("20240103T000000Z", Some(b2.link()));
        // b3 seen, b2 and b3 recorded as deleted: b1 is the newest, legitimately.
        assert!(deletions_lead_to(&seen_of(&b3), &b1, &deleted(&[&b2, &b3])));
        // Only b3 recorded: b2 vanished without a record.
        assert!(!deletions_lead_to(&seen_of(&b3), &b1, &deleted(&[&b3])));
        // Nothing recorded.
        assert!(!deletions_lead_to(&seen_of(&b3), &b1, &deleted(&[])));
        // A record of another statement under the same id does not count.
        let other_b3 = signed("20240103T000000Z", None);
        assert!(!deletions_lead_to(
            &seen_of(&b3),
            &b1,
            &deleted(&[&b2, &other_b3])
        ));
        // The seen backup itself is the latest.
        assert!(deletions_lead_to(&seen_of(&b1), &b1, &deleted(&[])));
        // A chain that does not lead to the latest found.
        let stray = signed(
            "20240101T000000Z",
            Some(ChainLink {
                backup_id: "20231231T000000Z".into(),
                statement_sha256: "00".into(),
            }),
        );
        assert!(!deletions_lead_to(&seen_of(&b2), &stray, &deleted(&[&b2])));
    }

    #[tokio::test]
    async fn the_chain_tells_recorded_deletions_from_missing_backups_and_latest_refuses_rollback() {
        use crate::format::store::signed::test_support::write_backup;
        use std::sync::Arc;
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn ArtifactStore> =
            Arc::new(cairn_store::local::LocalStore::new(dir.path()));
        let key = SigningKey::generate();
        let trusted = TrustedKeys::of(&[key.public()]);
        let seen = SeenBackups::at(dir.path().join("state"));
        let ids = [
            "20240101T000000Z",
            "20240102T000000Z",
            "20240103T000000Z",
            "20240104T000000Z",
            "20240105T000000Z",
        ];
        for id in ids {
            write_backup(&store, id, Some(&key), Some(&seen)).await;
        }
        let chain = walk_chain(store.as_ref(), "cf", &trusted).await.unwrap();
        assert_eq!(chain.signed.len(), 5);
        assert_eq!(chain.gaps, vec![]);
        assert_eq!(chain.starts, vec![ids[0].to_string()]);
        assert!(!chain.has_problems());
        // ids[1] deleted with a signed record, ids[3] without.
        let record = record_deletions(
            store.as_ref(),
            "cf",
            &[ids[1].to_string()],
            "delete",
            &key,
            &trusted,
        )
        .await
        .unwrap();
        crate::catalog::delete_backup(store.as_ref(), "cf", ids[1], IfMisplaced::Refuse)
            .await
            .unwrap();
        crate::catalog::delete_backup(store.as_ref(), "cf", ids[3], IfMisplaced::Refuse)
            .await
            .unwrap();
        let chain = walk_chain(store.as_ref(), "cf", &trusted).await.unwrap();
        assert_eq!(
            chain.gaps,
            vec![
                Gap {
                    missing: ids[3].into(),
                    after: ids[4].into(),
                    kind: GapKind::Missing
                },
                Gap {
                    missing: ids[1].into(),
                    after: ids[2].into(),
                    kind: GapKind::Recorded(record)
                },
            ]
        );
        assert!(chain.has_problems());
        // The newest, seen when it was written, is deleted: --latest refuses the rollback...
        assert_eq!(
            latest_trusted(store.as_ref(), "cf", &trusted, Some(&seen))
                .await
                .unwrap(),
            ids[4]
        );
        crate::catalog::delete_backup(store.as_ref(), "cf", ids[4], IfMisplaced::Refuse)
            .await
            .unwrap();
        let refused = latest_trusted(store.as_ref(), "cf", &trusted, Some(&seen))
            .await
            .unwrap_err();
        assert!(
            matches!(refused, Error::Signature(SignatureError::Rollback(_))),
            "{refused}"
        );
        assert!(refused.to_string().contains(ids[4]), "{refused}");
        let chain_before = walk_chain(store.as_ref(), "cf", &trusted).await.unwrap();
        assert_eq!(chain_before.newest().unwrap().statement.backup_id, ids[2]);
        // Without a local state there is nothing to compare with.
        assert_eq!(
            latest_trusted(store.as_ref(), "cf", &trusted, None)
                .await
                .unwrap(),
            ids[2]
        );
    }

    #[tokio::test]
    async fn latest_accepts_newest_backups_deleted_with_signed_records() {
        use crate::format::store::signed::test_support::write_backup;
        use std::sync::Arc;
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn ArtifactStore> =
            Arc::new(cairn_store::local::LocalStore::new(dir.path()));
        let key = SigningKey::generate();
        let trusted = TrustedKeys::of(&[key.public()]);
        let seen = SeenBackups::at(dir.path().join("state"));
        let ids = ["20240101T000000Z", "20240102T000000Z", "20240103T000000Z"];
        for id in ids {
            write_backup(&store, id, Some(&key), Some(&seen)).await;
        }
        let newest: Vec<String> = vec![ids[2].into(), ids[1].into()];
        record_deletions(store.as_ref(), "cf", &newest, "prune", &key, &trusted)
            .await
            .unwrap();
        for id in &newest {
            crate::catalog::delete_backup(store.as_ref(), "cf", id, IfMisplaced::Refuse)
                .await
                .unwrap();
        }
        assert_eq!(
            latest_trusted(store.as_ref(), "cf", &trusted, Some(&seen))
                .await
                .unwrap(),
            ids[0]
        );
        let chain = walk_chain(store.as_ref(), "cf", &trusted).await.unwrap();
        assert!(!chain.has_problems(), "{chain:?}");
    }
}
