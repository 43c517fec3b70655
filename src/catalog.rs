//! The catalog: what an operator does with backups that exist in a store — list, show,
//! verify, delete and prune. Listing and reading follow the store's layout
//! ([`crate::format::store`]); verification is the one restore uses
//! ([`crate::format::store::read`]), also for a bbr directory and for part of a backup
//! ([`verify`], chosen by [`sampling`]); [`retention`] is the pure prune policy, which the CLI
//! plans with and executes through [`delete_unless_protected`]; [`trust`] is what
//! `--trusted-key` adds (the chain walk, the rollback check of `--latest`, deletion records).

pub mod retention;
pub mod sampling;
pub mod trust;
pub mod verify;

use std::sync::Arc;

use bytes::Bytes;
use cairn_store::{ArtifactStore, ArtifactStoreExt, ObjectKey, PutOptions, StoreError};

use crate::error::Error;
use crate::format::encryption::Identities;
use crate::format::signature::TrustedKeys;
use crate::format::store::signed::read_manifest_trusted;
use crate::format::store::{delete_objects, invalid_name};
use retention::{verification_order, Verification};

pub use crate::format::store::read::{verify_backup, Verified};
pub use crate::format::store::{
    backup_time, latest_backup, list_backups, open_store, versioning_command, BackupSummary,
};

/// Deletes every object of a backup, including the recorded versions.
///
/// # Errors
/// Store failures (an object under retention cannot be deleted: the error says so).
pub async fn delete_backup(
    store: &dyn ArtifactStore,
    deployment: &str,
    id: &str,
) -> Result<usize, Error> {
    delete_backup_trusted(store, deployment, id, &TrustedKeys::default()).await
}

/// [`delete_backup`], acting on the manifest's list of versions only when `trusted` (if it
/// holds keys) vouches for it: a backup with a manifest that is unsigned, badly signed or
/// misplaced is refused and nothing is deleted. A backup without a manifest (incomplete) has
/// no list to trust; its objects under `<deployment>/<id>/` are deleted as without keys.
///
/// # Errors
/// The signature's error, or as [`delete_backup`].
pub async fn delete_backup_trusted(
    store: &dyn ArtifactStore,
    deployment: &str,
    id: &str,
    trusted: &TrustedKeys,
) -> Result<usize, Error> {
    let manifest = match read_manifest_trusted(store, deployment, id, trusted).await {
        Err(Error::StoredBackup(crate::error::StoredBackupError::NotFound { .. })) => None,
        Err(error) if !trusted.is_empty() => return Err(error),
        other => other.ok(),
    };
    let versions: Vec<(String, Option<String>)> = match manifest {
        Some(manifest) => manifest
            .artifacts
            .iter()
            .map(|a| (a.key.clone(), a.version.clone()))
            .chain(std::iter::once((
                manifest.metadata.key.clone(),
                manifest.metadata.version.clone(),
            )))
            .collect(),
        None => Vec::new(),
    };
    delete_objects(store, deployment, id, &versions).await
}

/// Verifies the complete backups of `deployment` newest first until one passes: the backup
/// `backups prune` never deletes. Each one that fails is recorded with what was wrong (a
/// store that cannot be read fails them all, which keeps them all). Encrypted backups are
/// decrypted with `identities`; without any, their stored bytes are what is verified.
pub async fn find_newest_verified(
    store: &Arc<dyn ArtifactStore>,
    deployment: &str,
    backups: &[BackupSummary],
    parallelism: usize,
    identities: &Identities,
) -> Verification {
    let mut verification = Verification::default();
    for backup in verification_order(deployment, backups) {
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
    /// The store refused to delete it (what the store said): Object Lock retention (S3
    /// answers 403 AccessDenied for a locked version, GCS 403 under a retention policy, Azure
    /// 409 BlobImmutableDueToPolicy), or a credential without delete permission. Nothing is
    /// deleted when the first object is refused, which is the case when every object of the
    /// backup carries the retention (`--retain-days` locks them all).
    Protected(String),
    /// Any other failure.
    Failed(Error),
}

/// Deletes a backup, telling a refusal by the store (retention) from other failures.
pub async fn delete_unless_protected(
    store: &dyn ArtifactStore,
    deployment: &str,
    id: &str,
    trusted: &TrustedKeys,
) -> DeleteOutcome {
    match delete_backup_trusted(store, deployment, id, trusted).await {
        Ok(count) => DeleteOutcome::Deleted(count),
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
