//! The catalog: what an operator does with backups that exist in a store — list, show,
//! verify, delete and prune. Listing and reading follow the store's layout
//! ([`crate::format::store`]); verification is the one restore uses
//! ([`crate::format::store::read`]), also for a bbr directory and for part of a backup
//! ([`verify`], chosen by [`sampling`]); [`retention`] is the pure prune policy, which the CLI
//! plans with and executes through [`delete_unless_protected`]; [`trust`] is what
//! `--trusted-key` adds (the chain walk, the rollback check of `--latest`, deletion records);
//! [`freshness`] is `backups list --max-age`, the "backup overdue" check.

pub mod freshness;
pub mod retention;
pub mod sampling;
pub mod trust;
pub mod verify;

/// Where a stored backup may point ([`crate::format::store::placement`]): the check that
/// binds a manifest to the deployment, id and prefix it is stored under.
pub use crate::format::store::placement;

use std::sync::Arc;

use bytes::Bytes;
use cairn_store::{ArtifactStore, ArtifactStoreExt, ObjectKey, PutOptions, StoreError};
use chrono::{DateTime, Utc};

use crate::error::{Error, StoredBackupError};
use crate::format::encryption::Identities;
use crate::format::signature::TrustedKeys;
use crate::format::store::signed::read_signed_manifest;
use crate::format::store::{delete_objects, invalid_name, misplaced, read_manifest};
use placement::{backup_prefix, check_placement, lies_under, listed_keys, PlacementError};
use retention::{verification_order, Verification};

pub use crate::format::store::read::{verify_backup, Verified};
pub use crate::format::store::{
    backup_time, latest_backup, list_backups, newest_complete, open_store, read_placed_manifest,
    versioning_command, BackupSummary,
};

/// What [`delete_backup`] does with a backup whose manifest does not belong where it is
/// stored ([`placement`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IfMisplaced {
    /// Delete nothing ([`StoredBackupError::Misplaced`]): `backups prune`, which runs
    /// unattended, keeps it for an operator to look at.
    Refuse,
    /// Delete the backup's own objects (everything under `<deployment>/<id>/`), never a key
    /// its manifest lists elsewhere: `backups delete`, an operator removing it.
    DeleteOwnObjects,
}

/// What deleting a backup did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deletion {
    /// Objects (and recorded versions) deleted.
    pub objects: usize,
    /// How its manifest did not belong where it was stored, if it did not.
    pub misplaced: Option<PlacementError>,
    /// Keys its manifest listed outside `<deployment>/<id>/`: never deleted.
    pub left_outside: Vec<String>,
}

/// Deletes every object of a backup, including the recorded versions of keys under
/// `<deployment>/<id>/`; a key its manifest lists anywhere else is never deleted (a manifest
/// forged into an old backup would otherwise make a prune destroy the newest backups'
/// versions).
///
/// # Errors
/// Store failures (an object under retention cannot be deleted: the error says so); a
/// misplaced backup with [`IfMisplaced::Refuse`] (nothing deleted).
pub async fn delete_backup(
    store: &dyn ArtifactStore,
    deployment: &str,
    id: &str,
    if_misplaced: IfMisplaced,
) -> Result<Deletion, Error> {
    delete_backup_trusted(store, deployment, id, &TrustedKeys::default(), if_misplaced).await
}

/// [`delete_backup`], acting on the manifest's list of versions only when `trusted` (if it
/// holds keys) vouches for it: with keys, a backup whose manifest is unsigned, badly signed or
/// misplaced is refused whatever `if_misplaced` says, and nothing is deleted. A backup without
/// a manifest (incomplete), or without keys one whose manifest cannot be read, has no list to
/// act on: its objects under `<deployment>/<id>/` are deleted.
///
/// # Errors
/// The signature's error, or as [`delete_backup`].
pub async fn delete_backup_trusted(
    store: &dyn ArtifactStore,
    deployment: &str,
    id: &str,
    trusted: &TrustedKeys,
    if_misplaced: IfMisplaced,
) -> Result<Deletion, Error> {
    let prefix = backup_prefix(deployment, id);
    let mut deletion = Deletion {
        objects: 0,
        misplaced: None,
        left_outside: Vec::new(),
    };
    // Without keys the manifest is read as stored, so that a misplaced one can be told (and,
    // for `backups delete`, its own objects removed); with keys, only a signed and placed one
    // is acted on ([`read_signed_manifest`] checks both).
    let read = if trusted.is_empty() {
        read_manifest(store, deployment, id).await
    } else {
        read_signed_manifest(store, deployment, id, trusted)
            .await
            .map(|signed| signed.manifest)
    };
    let manifest = match read {
        Ok(manifest) => Some(manifest),
        Err(Error::StoredBackup(StoredBackupError::NotFound { .. })) => None,
        Err(error) if !trusted.is_empty() => return Err(error),
        Err(_) => None,
    };
    let mut versions: Vec<(String, Option<String>)> = Vec::new();
    if let Some(manifest) = manifest {
        if let Err(detail) = check_placement(&manifest, deployment, id) {
            if if_misplaced == IfMisplaced::Refuse {
                return Err(misplaced(store, deployment, id, detail));
            }
            deletion.misplaced = Some(detail);
        }
        versions = manifest
            .artifacts
            .iter()
            .flat_map(|a| {
                std::iter::once((a.key.clone(), a.version.clone())).chain(
                    a.segments
                        .iter()
                        .map(|s| (s.key.clone(), s.version.clone())),
                )
            })
            .chain(std::iter::once((
                manifest.metadata.key.clone(),
                manifest.metadata.version.clone(),
            )))
            .collect();
        deletion.left_outside = listed_keys(&manifest)
            .into_iter()
            .filter(|(_, key)| !lies_under(key, &prefix))
            .map(|(_, key)| key.to_string())
            .collect();
    }
    deletion.objects = delete_objects(store, deployment, id, &versions).await?;
    Ok(deletion)
}

/// Whether a stored backup's manifest belongs where it is stored, as `backups list` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// Its manifest names its deployment and id and lists nothing outside its prefix.
    Placed,
    /// Its manifest does not belong there.
    Misplaced(PlacementError),
    /// It has no manifest (incomplete).
    NoManifest,
    /// Its manifest cannot be read or parsed (what went wrong).
    Unreadable(String),
}

/// Reads a backup's manifest and checks its placement ([`placement::check_placement`]).
pub async fn placement_of(store: &dyn ArtifactStore, deployment: &str, id: &str) -> Placement {
    match read_manifest(store, deployment, id).await {
        Ok(manifest) => match check_placement(&manifest, deployment, id) {
            Ok(()) => Placement::Placed,
            Err(detail) => Placement::Misplaced(detail),
        },
        Err(Error::StoredBackup(StoredBackupError::NotFound { .. })) => Placement::NoManifest,
        Err(error) => Placement::Unreadable(error.to_string()),
    }
}

/// Verifies the complete backups of `deployment` newest first until one passes: the backup
/// `backups prune` never deletes. Each one that fails is recorded with what was wrong (a
/// store that cannot be read fails them all, which keeps them all; a misplaced one fails).
/// Backups whose ids are more than 10 minutes after `now` are not candidates
/// ([`placement::is_future`]). Encrypted backups are decrypted with `identities`; without
/// any, their stored bytes are what is verified.
pub async fn find_newest_verified(
    store: &Arc<dyn ArtifactStore>,
    deployment: &str,
    backups: &[BackupSummary],
    parallelism: usize,
    identities: &Identities,
    now: DateTime<Utc>,
) -> Verification {
    let mut verification = Verification::default();
    for backup in verification_order(deployment, backups, now) {
        match verify_backup(
            store,
            deployment,
            &backup.id,
            parallelism,
            identities,
            false,
        )
        .await
        {
            Ok(_) => {
                verification.passed = Some(backup.id.clone());
                break;
            }
            Err(errors) => {
                let detail: Vec<String> = errors.errors().iter().map(ToString::to_string).collect();
                verification
                    .failed
                    .insert(backup.id.clone(), detail.join("; "));
            }
        }
    }
    verification
}

/// What deleting a backup came to.
#[derive(Debug)]
pub enum DeleteOutcome {
    /// Deleted: this many objects.
    Deleted(usize),
    /// Its manifest does not belong where it is stored ([`StoredBackupError::Misplaced`]):
    /// nothing was deleted, and it is kept for an operator to look at.
    Misplaced(Error),
    /// The store refused to delete it (what the store said): Object Lock retention (S3
    /// answers 403 AccessDenied for a locked version, GCS 403 under a retention policy, Azure
    /// 409 BlobImmutableDueToPolicy), or a credential without delete permission. Nothing is
    /// deleted when the first object is refused, which is the case when every object of the
    /// backup carries the retention (`--retain-days` locks them all).
    Protected(String),
    /// Any other failure.
    Failed(Error),
}

/// Deletes a backup unless it is misplaced, telling a refusal by the store (retention) from
/// other failures.
pub async fn delete_unless_protected(
    store: &dyn ArtifactStore,
    deployment: &str,
    id: &str,
    trusted: &TrustedKeys,
) -> DeleteOutcome {
    match delete_backup_trusted(store, deployment, id, trusted, IfMisplaced::Refuse).await {
        Ok(deletion) => DeleteOutcome::Deleted(deletion.objects),
        Err(error @ Error::StoredBackup(StoredBackupError::Misplaced { .. })) => {
            DeleteOutcome::Misplaced(error)
        }
        Err(error) => match refusal(&error) {
            Some(detail) => DeleteOutcome::Protected(detail.to_string()),
            None => DeleteOutcome::Failed(error),
        },
    }
}

/// What the store said, when `error` is a refusal (see [`DeleteOutcome::Protected`]). The
/// adapters map 401 and 403 to [`StoreError::Credentials`], and a refusal by an immutability
/// policy (Azure's 409 `BlobImmutableDueToPolicy`) to [`StoreError::Protected`].
fn refusal(error: &Error) -> Option<&str> {
    match error {
        Error::Store(
            StoreError::Credentials { detail, .. } | StoreError::Protected { detail, .. },
        ) => Some(detail),
        _ => None,
    }
}

/// Checks a store is reachable and writable by writing and deleting a small object.
///
/// # Errors
/// The store's error.
pub async fn check_writable(store: &dyn ArtifactStore, deployment: &str) -> Result<(), Error> {
    store.capabilities().await?;
    let key =
        ObjectKey::parse(&format!("{deployment}/.cairn-write-check")).map_err(invalid_name)?;
    let put = store
        .put_bytes(&key, Bytes::from_static(b"cairn"), &PutOptions::default())
        .await?;
    store.delete(&key, put.version.as_deref()).await?;
    if put.version.is_some() {
        let _ = store.delete(&key, None).await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_by_the_store_are_told_from_other_delete_failures() {
        let store = || "s3://b".to_string();
        let locked = Error::Store(StoreError::Credentials {
            store: store(),
            detail: "HTTP 403 AccessDenied: Access Denied".into(),
            hint: "set AWS_*".into(),
        });
        let immutable = Error::Store(StoreError::Protected {
            store: store(),
            detail: "HTTP 409 BlobImmutableDueToPolicy: This operation is not permitted".into(),
        });
        let down = Error::Store(StoreError::Transient {
            store: store(),
            detail: "HTTP 503".into(),
        });
        let other = Error::Store(StoreError::Other {
            store: store(),
            detail: "HTTP 409 Conflict".into(),
        });
        assert_eq!(
            refusal(&locked),
            Some("HTTP 403 AccessDenied: Access Denied")
        );
        assert_eq!(
            refusal(&immutable),
            Some("HTTP 409 BlobImmutableDueToPolicy: This operation is not permitted")
        );
        assert_eq!(refusal(&down), None);
        assert_eq!(refusal(&other), None);
        assert_eq!(
            refusal(&Error::from(crate::error::StoredBackupError::InvalidName(
                "x".into()
            ))),
            None
        );
    }
}
