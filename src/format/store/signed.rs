//! Signatures of backups in an object store: writing `signature.json` with a backup, checking
//! it against the manifest and against where both are stored, and the deletion records of
//! `prune`/`delete` (`<deployment>/deletions/<time>-<nonce>.json`).
//!
//! `signature.json` lies in the backup's own prefix and is written just before
//! `manifest.json`, the object that makes a backup complete: a complete backup written with
//! a key therefore always has its signature, and a run that dies in between leaves an
//! incomplete backup (signature, no manifest) that the next backup removes like any other.
//! Its statement ([`BackupStatement`]) names the deployment and id, the sha256 of the
//! manifest's exact bytes, every other object with its version and sha256, the age recipients,
//! and the link to the newest signed backup of the deployment found in the store (a hash
//! chain). A reader with `--trusted-key` accepts the manifest only when that statement is
//! signed by a trusted key, names the place it was read from, lists only keys under that
//! place and matches the manifest it read.

use std::collections::BTreeSet;

use bytes::Bytes;
use cairn_store::{ArtifactStore, ArtifactStoreExt, ObjectKey, PutOptions, StoreError};

use super::placement::{backup_prefix, check_placement, lies_under};
use super::{
    backup_key, get_record, invalid_name, list_backups, misplaced, parse_manifest,
    read_manifest_bytes, read_placed_manifest,
};
use crate::error::Error;
use crate::format::manifest::{Manifest, MANIFEST_NAME};
use crate::format::signature::{
    BackupStatement, ChainLink, DeletionRecord, Envelope, PublicKey, SignatureError, SignedObject,
    SigningKey, Statement, TrustedKeys,
};

/// Name of the signature object inside a backup.
pub const SIGNATURE_NAME: &str = "signature.json";
/// Folder of the deletion records of a deployment (`<deployment>/deletions/`); not a backup
/// id, so never listed as a backup.
pub const DELETIONS_FOLDER: &str = "deletions";

/// A manifest whose signature was checked.
#[derive(Debug, Clone)]
pub struct SignedManifest {
    /// The manifest.
    pub manifest: Manifest,
    /// Its signed statement.
    pub statement: BackupStatement,
    /// The statement's digest (what the next backup's chain link names).
    pub digest: String,
    /// The trusted key that signed it.
    pub key: PublicKey,
}

impl SignedManifest {
    /// The chain link that names this backup.
    #[must_use]
    pub fn link(&self) -> ChainLink {
        ChainLink {
            backup_id: self.statement.backup_id.clone(),
            statement_sha256: self.digest.clone(),
        }
    }
}

/// `cf/20240102T030405Z in s3://bucket/prefix`, for messages.
#[must_use]
pub fn describe(store: &dyn ArtifactStore, deployment: &str, id: &str) -> String {
    format!("{deployment}/{id} in {store}")
}

/// The objects of a manifest a statement covers (all but the manifest itself), sorted by key.
#[must_use]
pub fn manifest_objects(manifest: &Manifest) -> Vec<SignedObject> {
    let mut objects: Vec<SignedObject> = manifest
        .artifacts
        .iter()
        .flat_map(artifact_objects)
        .chain(std::iter::once(SignedObject {
            key: manifest.metadata.key.clone(),
            version: manifest.metadata.version.clone(),
            sha256: manifest.metadata.sha256.clone(),
        }))
        .chain(manifest.deployment_manifest.iter().map(|o| SignedObject {
            key: o.key.clone(),
            version: o.version.clone(),
            sha256: o.sha256.clone(),
        }))
        .collect();
    objects.sort();
    objects
}

/// The objects of one artifact: its one object, or every segment (a segmented artifact's own
/// `key` names no object; its segment list is in the signed manifest bytes as well).
fn artifact_objects(artifact: &crate::format::manifest::ManifestArtifact) -> Vec<SignedObject> {
    if artifact.segments.is_empty() {
        return vec![SignedObject {
            key: artifact.key.clone(),
            version: artifact.version.clone(),
            sha256: artifact.sha256.clone(),
        }];
    }
    artifact
        .segments
        .iter()
        .map(|s| SignedObject {
            key: s.key.clone(),
            version: s.version.clone(),
            sha256: s.sha256.clone(),
        })
        .collect()
}

/// The statement of a backup whose manifest is `manifest_bytes` (about to be written at
/// `manifest_key`).
#[must_use]
pub fn backup_statement(
    manifest: &Manifest,
    manifest_key: &str,
    manifest_bytes: &[u8],
    mut recipients: Vec<String>,
    previous: Option<ChainLink>,
) -> BackupStatement {
    use sha2::{Digest, Sha256};
    recipients.sort();
    BackupStatement {
        deployment: manifest.deployment.clone(),
        backup_id: manifest.backup_id.clone(),
        manifest: SignedObject {
            key: manifest_key.to_string(),
            version: None,
            sha256: hex::encode(Sha256::digest(manifest_bytes)),
        },
        objects: manifest_objects(manifest),
        recipients,
        previous,
        signed_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    }
}

/// Checks a signed statement against where it was found and the manifest read from there:
/// the deployment and id it names, every key under `<deployment>/<id>/` (the rule of
/// [`super::placement::lies_under`]), the manifest's digest, objects and encryption. That the
/// manifest itself names its place is [`check_placement`]'s part ([`read_signed_manifest`]
/// runs both).
///
/// # Errors
/// [`SignatureError::Misplaced`], [`SignatureError::KeyOutsideBackup`] or
/// [`SignatureError::ContentChanged`].
pub fn check_statement(
    backup: &str,
    deployment: &str,
    id: &str,
    statement: &BackupStatement,
    manifest_bytes: &[u8],
    manifest: &Manifest,
) -> Result<(), SignatureError> {
    use sha2::{Digest, Sha256};
    if statement.deployment != deployment || statement.backup_id != id {
        return Err(SignatureError::Misplaced {
            backup: backup.to_string(),
            signed_as: format!("{}/{}", statement.deployment, statement.backup_id),
        });
    }
    let prefix = backup_prefix(deployment, id);
    let keys = std::iter::once(&statement.manifest).chain(&statement.objects);
    if let Some(outside) = keys.map(|o| &o.key).find(|key| !lies_under(key, &prefix)) {
        return Err(SignatureError::KeyOutsideBackup {
            backup: backup.to_string(),
            key: outside.clone(),
        });
    }
    let changed = |detail: String| SignatureError::ContentChanged {
        backup: backup.to_string(),
        object: MANIFEST_NAME,
        detail,
    };
    if statement.manifest.key != format!("{prefix}{MANIFEST_NAME}") {
        return Err(changed(format!(
            "the statement signs `{}`",
            statement.manifest.key
        )));
    }
    if hex::encode(Sha256::digest(manifest_bytes)) != statement.manifest.sha256 {
        return Err(changed("its sha256 differs from the signed one".into()));
    }
    if manifest_objects(manifest) != statement.objects {
        return Err(changed("its objects differ from the signed list".into()));
    }
    let encrypted_to = manifest.encryption().map_or(0, |e| e.recipients);
    if encrypted_to != statement.recipients.len() {
        return Err(changed(format!(
            "it is encrypted to {encrypted_to} recipients, the statement names {}",
            statement.recipients.len()
        )));
    }
    Ok(())
}

/// Key of the signature object of `<deployment>/<id>`.
fn signature_key(deployment: &str, id: &str) -> Result<ObjectKey, Error> {
    backup_key(deployment, id)?
        .join(SIGNATURE_NAME)
        .map_err(invalid_name)
}

/// Reads `<deployment>/<id>`'s manifest and signature and checks both ([`check_statement`])
/// against `trusted`, then that the manifest belongs where it is stored
/// ([`check_placement`]); the manifest returned is parsed from the very bytes that were
/// checked.
///
/// # Errors
/// A missing or unreadable manifest, a store failure, [`SignatureError`], or
/// [`crate::error::StoredBackupError::Misplaced`].
pub async fn read_signed_manifest(
    store: &dyn ArtifactStore,
    deployment: &str,
    id: &str,
    trusted: &TrustedKeys,
) -> Result<SignedManifest, Error> {
    let manifest_bytes = read_manifest_bytes(store, deployment, id).await?;
    let backup = describe(store, deployment, id);
    let signature = match get_record(store, &signature_key(deployment, id)?, None).await {
        Ok(bytes) => bytes,
        Err(Error::Store(StoreError::NotFound { .. })) => {
            return Err(SignatureError::Unsigned {
                backup,
                object: SIGNATURE_NAME,
            }
            .into())
        }
        Err(error) => return Err(error),
    };
    let opened = Envelope::open(&signature, trusted)
        .map_err(|rejection| SignatureError::rejected(backup.clone(), SIGNATURE_NAME, rejection))?;
    let Statement::StoreBackup(statement) = opened.statement else {
        return Err(SignatureError::Malformed {
            backup,
            object: SIGNATURE_NAME,
            detail: "it signs something other than a backup in a store".into(),
        }
        .into());
    };
    let manifest = parse_manifest(store, deployment, id, &manifest_bytes)?;
    check_statement(
        &backup,
        deployment,
        id,
        &statement,
        &manifest_bytes,
        &manifest,
    )?;
    check_placement(&manifest, deployment, id)
        .map_err(|detail| misplaced(store, deployment, id, detail))?;
    Ok(SignedManifest {
        manifest,
        statement,
        digest: opened.digest,
        key: opened.key,
    })
}

/// The manifest of `<deployment>/<id>`: checked by [`read_signed_manifest`] when `trusted`
/// holds keys, otherwise only for its place ([`read_placed_manifest`]): signed or not, a
/// manifest that does not belong where it is stored is never trusted.
///
/// # Errors
/// As [`read_signed_manifest`] or [`read_placed_manifest`].
pub async fn read_manifest_trusted(
    store: &dyn ArtifactStore,
    deployment: &str,
    id: &str,
    trusted: &TrustedKeys,
) -> Result<Manifest, Error> {
    if trusted.is_empty() {
        return read_placed_manifest(store, deployment, id).await;
    }
    Ok(read_signed_manifest(store, deployment, id, trusted)
        .await?
        .manifest)
}

/// The ids of the backups of `deployment` that have a signature object (one listing).
///
/// # Errors
/// Store failures.
pub async fn signed_backup_ids(
    store: &dyn ArtifactStore,
    deployment: &str,
) -> Result<BTreeSet<String>, Error> {
    Ok(store
        .list(&format!("{deployment}/"))
        .await?
        .into_iter()
        .filter_map(|object| {
            let mut parts = object.key.as_str().splitn(3, '/');
            let (_, id, name) = (parts.next()?, parts.next()?, parts.next()?);
            (name == SIGNATURE_NAME).then(|| id.to_string())
        })
        .collect())
}

/// True when the store holds a signed backup or a deletion record of `deployment` (every
/// deployment when `None`): without `--trusted-key`, commands then say signatures go unchecked.
///
/// # Errors
/// Store failures.
pub async fn holds_signatures(
    store: &dyn ArtifactStore,
    deployment: Option<&str>,
) -> Result<bool, Error> {
    let prefix = deployment.map(|d| format!("{d}/")).unwrap_or_default();
    Ok(store.list(&prefix).await?.iter().any(|object| {
        let key = object.key.as_str();
        key.ends_with(&format!("/{SIGNATURE_NAME}"))
            || key.split('/').nth(1) == Some(DELETIONS_FOLDER)
    }))
}

/// The newest complete backup of `deployment` whose signature checks out with `trusted`
/// (anything else is skipped): the previous link of a new backup.
///
/// # Errors
/// Store failures while listing.
pub async fn newest_signed(
    store: &dyn ArtifactStore,
    deployment: &str,
    trusted: &TrustedKeys,
) -> Result<Option<SignedManifest>, Error> {
    let signed = signed_backup_ids(store, deployment).await?;
    for backup in list_backups(store, Some(deployment)).await?.iter().rev() {
        if !backup.complete || !signed.contains(&backup.id) {
            continue;
        }
        match read_signed_manifest(store, deployment, &backup.id, trusted).await {
            Ok(signed) => return Ok(Some(signed)),
            Err(error) => tracing::debug!("Not chained to {deployment}/{}: {error}", backup.id),
        }
    }
    Ok(None)
}

/// Writes a backup's signature object (before its manifest).
///
/// # Errors
/// Store failures.
pub async fn write_signature(
    store: &dyn ArtifactStore,
    envelope: &Envelope,
    deployment: &str,
    id: &str,
    options: &PutOptions,
) -> Result<(), Error> {
    store
        .put_bytes(
            &signature_key(deployment, id)?,
            Bytes::from(envelope.to_json()),
            options,
        )
        .await?;
    Ok(())
}

/// Signs and writes a deletion record; returns its key.
///
/// # Errors
/// Store failures.
pub async fn write_deletion_record(
    store: &dyn ArtifactStore,
    key: &SigningKey,
    record: DeletionRecord,
) -> Result<ObjectKey, Error> {
    let name = format!(
        "{}-{:08x}.json",
        chrono::Utc::now().format("%Y%m%dT%H%M%SZ"),
        rand::random::<u32>()
    );
    let object = ObjectKey::parse(&format!("{}/{DELETIONS_FOLDER}/{name}", record.deployment))
        .map_err(invalid_name)?;
    let envelope = Statement::Deletion(record).sign(key);
    store
        .put_bytes(
            &object,
            Bytes::from(envelope.to_json()),
            &PutOptions::default(),
        )
        .await?;
    Ok(object)
}

/// The deletion records of a deployment: those signed by a trusted key for this deployment,
/// and every other one with why it was refused.
#[derive(Debug, Default)]
pub struct DeletionRecords {
    /// Accepted records: object key and record.
    pub accepted: Vec<(String, DeletionRecord)>,
    /// Refused records.
    pub refused: Vec<SignatureError>,
}

/// Reads every deletion record of `deployment`.
///
/// # Errors
/// Store failures.
pub async fn read_deletion_records(
    store: &dyn ArtifactStore,
    deployment: &str,
    trusted: &TrustedKeys,
) -> Result<DeletionRecords, Error> {
    let mut records = DeletionRecords::default();
    for object in store
        .list(&format!("{deployment}/{DELETIONS_FOLDER}/"))
        .await?
    {
        let name = format!("deletion record {} in {store}", object.key);
        let bytes = get_record(store, &object.key, None).await?;
        match Envelope::open(&bytes, trusted) {
            Ok(opened) => match opened.statement {
                Statement::Deletion(record) if record.deployment == deployment => {
                    records.accepted.push((object.key.to_string(), record));
                }
                Statement::Deletion(record) => records.refused.push(SignatureError::Misplaced {
                    backup: name,
                    signed_as: format!("a record of deployment {}", record.deployment),
                }),
                _ => records.refused.push(SignatureError::Malformed {
                    backup: name,
                    object: "the record",
                    detail: "it signs something other than a deletion".into(),
                }),
            },
            Err(rejection) => {
                records
                    .refused
                    .push(SignatureError::rejected(name, "the record", rejection));
            }
        }
    }
    Ok(records)
}

/// A real backup written through [`super::StoreSink`], for the tests of signatures here and
/// in [`crate::catalog::trust`].
#[cfg(test)]
pub(crate) mod test_support {
    use std::io::Write;
    use std::sync::Arc;

    use cairn_store::ArtifactStore;

    use crate::format::bbr_directory::metadata::BackupMetadata;
    use crate::format::digest::{digest_tar_files, EntryPolicy};
    use crate::format::manifest::Compression;
    use crate::format::signature::{SeenBackups, SigningKey};
    use crate::format::sink::{BackupRecord, BackupSink, NewBackup, StoredArtifact};
    use crate::format::store::write::Signing;
    use crate::format::store::StoreSink;

    /// Writes backup `cf/<id>` with one small artifact, signed with `key` when given.
    pub(crate) async fn write_backup(
        store: &Arc<dyn ArtifactStore>,
        id: &str,
        key: Option<&SigningKey>,
        seen: Option<&SeenBackups>,
    ) {
        let sink = StoreSink {
            signing: key.map(|key| Signing {
                key: key.clone(),
                seen: seen.cloned(),
            }),
            ..StoreSink::new(Arc::clone(store), Compression::None)
        };
        let backup = sink
            .start(&NewBackup {
                deployment: "cf",
                backup_id: id,
                started_at: chrono::Utc::now(),
                concurrent_streams: 1,
                deployment_manifest: None,
            })
            .await
            .unwrap();
        let mut builder = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        let data = format!("data of {id}");
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        builder
            .append_data(&mut header, "./file", data.as_bytes())
            .unwrap();
        let tar = builder.into_inner().unwrap();
        let (mut writer, pending) = backup.open_artifact("app-0-files").await.unwrap();
        let copy = tar.clone();
        let stored = tokio::task::spawn_blocking(move || {
            writer.write_all(&copy).unwrap();
            writer.finish().unwrap()
        })
        .await
        .unwrap();
        let version = pending.commit().await.unwrap();
        let record = BackupRecord {
            complete: true,
            metadata: BackupMetadata::default(),
            artifacts: vec![StoredArtifact {
                stream: false,
                name: "app-0-files".into(),
                group: "app".into(),
                index: "0".into(),
                job: "files".into(),
                shared: false,
                files: digest_tar_files(tar.as_slice(), EntryPolicy::Trust).unwrap(),
                stored,
                version,
            }],
            scripts: Vec::new(),
            layout: crate::model::layout::DeploymentLayout::default(),
            failure: Vec::new(),
        };
        assert!(backup.finish(&record).await.unwrap().is_some());
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use cairn_store::local::LocalStore;

    use super::test_support::write_backup;
    use super::*;
    use crate::format::encryption::Identities;
    use crate::format::sink::BackupSource;
    use crate::format::store::StoreSource;

    const B1: &str = "20240101T000000Z";
    const B2: &str = "20240102T000000Z";

    fn local() -> (tempfile::TempDir, Arc<dyn ArtifactStore>) {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn ArtifactStore> = Arc::new(LocalStore::new(dir.path()));
        (dir, store)
    }

    fn signature_error(result: Result<SignedManifest, Error>) -> SignatureError {
        match result {
            Err(Error::Signature(error)) => error,
            other => panic!("not a signature error: {other:?}"),
        }
    }

    #[tokio::test]
    async fn signed_backups_open_with_their_key_and_chain_to_the_one_before() {
        let (_dir, store) = local();
        let key = SigningKey::generate();
        let trusted = TrustedKeys::of(&[key.public()]);
        write_backup(&store, B1, Some(&key), None).await;
        write_backup(&store, B2, Some(&key), None).await;
        let first = read_signed_manifest(store.as_ref(), "cf", B1, &trusted)
            .await
            .unwrap();
        let second = read_signed_manifest(store.as_ref(), "cf", B2, &trusted)
            .await
            .unwrap();
        // The statement signs every segment of the artifact (its own key names no object).
        let keys: Vec<&str> = second
            .statement
            .objects
            .iter()
            .map(|o| o.key.as_str())
            .collect();
        assert_eq!(
            keys,
            [
                format!("cf/{B2}/app-0-files.tar.000000").as_str(),
                format!("cf/{B2}/metadata").as_str()
            ]
        );
        assert_eq!(first.statement.previous, None);
        assert_eq!(second.statement.previous, Some(first.link()));
        assert_eq!(second.manifest.backup_id, B2);
        // Another key is not trusted; without keys nothing is checked.
        let stranger = TrustedKeys::of(&[SigningKey::generate().public()]);
        assert!(matches!(
            signature_error(read_signed_manifest(store.as_ref(), "cf", B2, &stranger).await),
            SignatureError::UntrustedKey { .. }
        ));
        assert!(
            read_manifest_trusted(store.as_ref(), "cf", B2, &TrustedKeys::default())
                .await
                .is_ok()
        );
        assert!(holds_signatures(store.as_ref(), Some("cf")).await.unwrap());
    }

    #[tokio::test]
    async fn unsigned_forged_and_moved_backups_are_refused() {
        let (dir, store) = local();
        let key = SigningKey::generate();
        let trusted = TrustedKeys::of(&[key.public()]);
        write_backup(&store, B1, None, None).await;
        assert!(!holds_signatures(store.as_ref(), Some("cf")).await.unwrap());
        assert!(matches!(
            signature_error(read_signed_manifest(store.as_ref(), "cf", B1, &trusted).await),
            SignatureError::Unsigned { .. }
        ));
        // Through the restore's own check, before anything else is read.
        let source = StoreSource {
            store: Arc::clone(&store),
            deployment: "cf".into(),
            backup_id: B1.into(),
            identities: Identities::default(),
            trusted: trusted.clone(),
        };
        let errors = source.check(1).await.err().expect("refused");
        assert!(
            errors.errors()[0].to_string().contains("is not signed"),
            "{errors:?}"
        );

        write_backup(&store, B2, Some(&key), None).await;
        let root = dir.path().join("cf");
        // An old genuine backup copied under a newer id, manifest rewritten to match.
        let moved = "20991231T235959Z";
        std::fs::create_dir_all(root.join(moved)).unwrap();
        for entry in std::fs::read_dir(root.join(B2)).unwrap().flatten() {
            let text = std::fs::read(entry.path()).unwrap();
            let text = if entry.file_name() == MANIFEST_NAME {
                String::from_utf8_lossy(&text)
                    .replace(B2, moved)
                    .into_bytes()
            } else {
                text
            };
            std::fs::write(root.join(moved).join(entry.file_name()), text).unwrap();
        }
        assert!(matches!(
            signature_error(read_signed_manifest(store.as_ref(), "cf", moved, &trusted).await),
            SignatureError::Misplaced { .. }
        ));
        // The manifest changed after signing (one byte).
        let manifest = root.join(B2).join(MANIFEST_NAME);
        let text = std::fs::read_to_string(&manifest).unwrap();
        std::fs::write(&manifest, text.replacen("\"schema\": ", "\"schema\":  ", 1)).unwrap();
        assert!(matches!(
            signature_error(read_signed_manifest(store.as_ref(), "cf", B2, &trusted).await),
            SignatureError::ContentChanged { .. }
        ));
        // A signature that is not JSON.
        std::fs::write(root.join(B2).join(SIGNATURE_NAME), "x").unwrap();
        assert!(matches!(
            signature_error(read_signed_manifest(store.as_ref(), "cf", B2, &trusted).await),
            SignatureError::Malformed { .. }
        ));
    }

    #[tokio::test]
    async fn a_statement_must_match_its_place_and_its_manifest() {
        let (_dir, store) = local();
        let key = SigningKey::generate();
        write_backup(&store, B1, Some(&key), None).await;
        let bytes = read_manifest_bytes(store.as_ref(), "cf", B1).await.unwrap();
        let manifest = parse_manifest(store.as_ref(), "cf", B1, &bytes).unwrap();
        let key = format!("cf/{B1}/{MANIFEST_NAME}");
        let good = backup_statement(&manifest, &key, &bytes, vec![], None);
        check_statement("b", "cf", B1, &good, &bytes, &manifest).unwrap();
        let mut outside = good.clone();
        outside.objects[0].key = "cf/20990101T000000Z/app-0-files.tar".into();
        assert!(matches!(
            check_statement("b", "cf", B1, &outside, &bytes, &manifest),
            Err(SignatureError::KeyOutsideBackup { .. })
        ));
        // A key that only starts like the prefix, and leads out of it (placement's rule).
        outside.objects[0].key = format!("cf/{B1}/../20990101T000000Z/app-0-files.tar");
        assert!(matches!(
            check_statement("b", "cf", B1, &outside, &bytes, &manifest),
            Err(SignatureError::KeyOutsideBackup { .. })
        ));
        let mut recipients = good.clone();
        recipients.recipients.push("age1x".into());
        assert!(matches!(
            check_statement("b", "cf", B1, &recipients, &bytes, &manifest),
            Err(SignatureError::ContentChanged { .. })
        ));
        assert!(matches!(
            check_statement("b", "other", B1, &good, &bytes, &manifest),
            Err(SignatureError::Misplaced { .. })
        ));
    }

    #[tokio::test]
    async fn a_signed_manifest_that_does_not_name_its_place_is_refused_on_every_trusted_path() {
        use crate::catalog::{delete_backup_trusted, delete_unless_protected, DeleteOutcome};
        use crate::catalog::{trust::untrusted_backups, IfMisplaced};
        use crate::error::StoredBackupError;
        use crate::format::store::read::verify_backup_trusted;

        let (dir, store) = local();
        let key = SigningKey::generate();
        let trusted = TrustedKeys::of(&[key.public()]);
        write_backup(&store, B1, Some(&key), None).await;
        // A statement that names the place it lies in, over a manifest that names another id
        // (a holder of the key signing what it was handed): the signature holds, the place
        // does not.
        let mut manifest = crate::format::store::read_manifest(store.as_ref(), "cf", B1)
            .await
            .unwrap();
        manifest.backup_id = B2.into();
        let bytes = manifest.to_json();
        let manifest_key = format!("cf/{B1}/{MANIFEST_NAME}");
        let mut statement =
            backup_statement(&manifest, &manifest_key, bytes.as_bytes(), vec![], None);
        statement.backup_id = B1.into();
        let envelope = Statement::StoreBackup(statement).sign(&key);
        write_signature(store.as_ref(), &envelope, "cf", B1, &PutOptions::default())
            .await
            .unwrap();
        let manifest_path = dir.path().join("cf").join(B1).join(MANIFEST_NAME);
        std::fs::write(&manifest_path, &bytes).unwrap();
        let is_misplaced = |error: &Error| {
            matches!(
                error,
                Error::StoredBackup(StoredBackupError::Misplaced { .. })
            )
        };

        // restore, drill and verify read it through read_manifest_trusted.
        let error = read_manifest_trusted(store.as_ref(), "cf", B1, &trusted)
            .await
            .unwrap_err();
        assert!(is_misplaced(&error), "{error}");
        let source = StoreSource {
            store: Arc::clone(&store),
            deployment: "cf".into(),
            backup_id: B1.into(),
            identities: Identities::default(),
            trusted: trusted.clone(),
        };
        let errors = source.check(1).await.err().expect("refused");
        assert!(is_misplaced(&errors.errors()[0]), "{errors:?}");
        let errors =
            verify_backup_trusted(&store, "cf", B1, 1, &Identities::default(), false, &trusted)
                .await
                .unwrap_err();
        assert!(is_misplaced(&errors.errors()[0]), "{errors:?}");
        // prune keeps it out of every slot, and its delete refuses it.
        let backups = list_backups(store.as_ref(), Some("cf")).await.unwrap();
        let untrusted = untrusted_backups(store.as_ref(), "cf", &backups, &trusted).await;
        assert!(untrusted[B1].contains("is misplaced"), "{untrusted:?}");
        assert!(matches!(
            delete_unless_protected(store.as_ref(), "cf", B1, &trusted).await,
            DeleteOutcome::Misplaced(_)
        ));
        // backups delete with --trusted-key: refused too, nothing deleted.
        let error = delete_backup_trusted(
            store.as_ref(),
            "cf",
            B1,
            &trusted,
            IfMisplaced::DeleteOwnObjects,
        )
        .await
        .unwrap_err();
        assert!(is_misplaced(&error), "{error}");
        assert!(manifest_path.exists());
    }
}
