//! Backups in an object store: the layout, reading the manifest back, and the two halves of
//! the [`crate::format::sink`] seam — writing a backup ([`write`]) and reading one
//! ([`read`]). The catalog operations on these backups are in [`crate::catalog`].
//!
//! Layout under the store's prefix: `<deployment>/<backup id>/` holding each job artifact as
//! a sequence of segments ([`segment`]: `<group>-<index>-<job>.tar.zst.000000`, ...;
//! `.tar.zst.age.000000` when encrypted with `--encrypt-to`; backups of schema 1 have one
//! object per artifact, `<group>-<index>-<job>.tar.zst`, and still read), `metadata` (bbr's YAML, unchanged schema) and
//! `manifest.json`, written last and only when every artifact was stored and verified; with
//! `--signing-key`, `signature.json` ([`signed`]) is written just before the manifest, so a
//! complete signed backup always has its signature. A
//! backup without a manifest is incomplete: never listed as restorable, and removed by the
//! next backup of the same deployment (once its pre-checks show no other run is active) or by
//! `backups delete`.
//!
//! A backup is bound to its place ([`placement`]): its manifest names the deployment and id it
//! is stored under, lists no object outside `<deployment>/<id>/`, and deleting it never
//! touches anything outside that prefix.

pub mod failed_run;
pub mod placement;
pub mod read;
pub mod segment;
pub mod signed;
pub mod write;

use std::collections::BTreeMap;
use std::io::{self, Read};
use std::sync::Arc;

use bytes::Bytes;
use cairn_store::{ArtifactStore, ArtifactStoreExt, ObjectKey, PutOptions, StoreError};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use tokio::sync::mpsc;

use crate::error::{Error, StoredBackupError};
use crate::format::manifest::{
    Compression, Manifest, MANIFEST_NAME, MANIFEST_SCHEMA, RECORD_LIMIT,
};

pub use read::StoreSource;
pub use write::{check_versioning, StoreSink};

/// A key or URL that is not valid, as a stored-backup error.
pub(crate) fn invalid_name(detail: String) -> Error {
    StoredBackupError::InvalidName(detail).into()
}

/// One backup found in a store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupSummary {
    /// Deployment name.
    pub deployment: String,
    /// Backup id (`YYYYMMDDTHHMMSSZ`).
    pub id: String,
    /// When it started, parsed from the id.
    pub time: Option<DateTime<Utc>>,
    /// Bytes of all its current objects.
    pub size: u64,
    /// True when its manifest exists.
    pub complete: bool,
}

pub use crate::format::bbr_directory::metadata::parse_backup_timestamp as backup_time;

pub(crate) fn backup_key(deployment: &str, id: &str) -> Result<ObjectKey, Error> {
    ObjectKey::parse(&format!("{deployment}/{id}")).map_err(invalid_name)
}

/// Every backup in the store, optionally of one deployment, oldest first.
///
/// # Errors
/// Store failures.
pub async fn list_backups(
    store: &dyn ArtifactStore,
    deployment: Option<&str>,
) -> Result<Vec<BackupSummary>, Error> {
    let prefix = deployment.map(|d| format!("{d}/")).unwrap_or_default();
    let mut backups: BTreeMap<(String, String), BackupSummary> = BTreeMap::new();
    for object in store.list(&prefix).await? {
        let mut parts = object.key.as_str().splitn(3, '/');
        let (Some(deployment), Some(id), Some(name)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let Some(time) = backup_time(id) else {
            continue;
        };
        let entry = backups
            .entry((deployment.to_string(), id.to_string()))
            .or_insert_with(|| BackupSummary {
                deployment: deployment.to_string(),
                id: id.to_string(),
                time: Some(time),
                size: 0,
                complete: false,
            });
        entry.size += object.size;
        entry.complete |= name == MANIFEST_NAME;
    }
    let mut list: Vec<BackupSummary> = backups.into_values().collect();
    list.sort_by(|a, b| (a.time, &a.deployment).cmp(&(b.time, &b.deployment)));
    Ok(list)
}

impl BackupSummary {
    /// True when its id lies more than [`placement::FUTURE_TOLERANCE`] after `now`
    /// ([`placement::is_future`]): it then fills no slot of `--latest`, prune's rules or
    /// "newest verified".
    #[must_use]
    pub fn is_future(&self, now: DateTime<Utc>) -> bool {
        self.time
            .is_some_and(|time| placement::is_future(time, now))
    }
}

/// The newest complete backup of a deployment as [`latest_backup`] chooses it among
/// `backups` (oldest first, as [`list_backups`] returns them), and the newer complete ones it
/// passed over because their ids are in the future.
#[must_use]
pub fn newest_complete(
    backups: &[BackupSummary],
    now: DateTime<Utc>,
) -> (Option<&BackupSummary>, Vec<&BackupSummary>) {
    let mut future = Vec::new();
    for backup in backups.iter().rev().filter(|b| b.complete) {
        if backup.is_future(now) {
            future.push(backup);
        } else {
            return (Some(backup), future);
        }
    }
    (None, future)
}

/// The newest complete backup of a deployment (`--latest`); backups whose ids are in the
/// future are passed over with a warning naming each.
///
/// # Errors
/// Store failures, or none found.
pub async fn latest_backup(store: &dyn ArtifactStore, deployment: &str) -> Result<String, Error> {
    let backups = list_backups(store, Some(deployment)).await?;
    let (newest, future) = newest_complete(&backups, Utc::now());
    for backup in future {
        tracing::warn!(
            "{}",
            placement::future_warning(&backup.deployment, &backup.id)
        );
    }
    newest.map(|b| b.id.clone()).ok_or_else(|| {
        StoredBackupError::NoCompleteBackup {
            deployment: deployment.to_string(),
            store: store.to_string(),
        }
        .into()
    })
}

/// Reads a backup's manifest.
///
/// # Errors
/// A missing manifest (incomplete or unknown backup) or an unreadable one.
pub async fn read_manifest(
    store: &dyn ArtifactStore,
    deployment: &str,
    id: &str,
) -> Result<Manifest, Error> {
    let data = read_manifest_bytes(store, deployment, id).await?;
    parse_manifest(store, deployment, id, &data)
}

/// The bytes of a backup's `manifest.json`, as stored (a signature covers their digest).
///
/// # Errors
/// A missing manifest (incomplete or unknown backup) or a store failure.
pub async fn read_manifest_bytes(
    store: &dyn ArtifactStore,
    deployment: &str,
    id: &str,
) -> Result<Vec<u8>, Error> {
    let key = backup_key(deployment, id)?
        .join(MANIFEST_NAME)
        .map_err(invalid_name)?;
    match get_record(store, &key, None).await {
        Ok(data) => Ok(data),
        Err(Error::Store(StoreError::NotFound { .. })) => Err(StoredBackupError::NotFound {
            backup: format!("{deployment}/{id}"),
            store: store.to_string(),
        }
        .into()),
        Err(error) => Err(error),
    }
}

/// Parses the manifest bytes of `<deployment>/<id>`.
///
/// # Errors
/// [`StoredBackupError::ManifestInvalid`].
pub fn parse_manifest(
    store: &dyn ArtifactStore,
    deployment: &str,
    id: &str,
    data: &[u8],
) -> Result<Manifest, Error> {
    let invalid = |detail: String| -> Error {
        StoredBackupError::ManifestInvalid {
            backup: format!("{deployment}/{id}"),
            store: store.to_string(),
            detail,
        }
        .into()
    };
    let manifest = Manifest::parse(data).map_err(invalid)?;
    if manifest.schema > MANIFEST_SCHEMA {
        return Err(invalid(format!(
            "it has schema {}, written by a newer Cairn (this one reads up to {MANIFEST_SCHEMA}); upgrade Cairn to read it",
            manifest.schema
        )));
    }
    Ok(manifest)
}

/// Reads a backup's manifest and checks that it belongs where it is stored
/// ([`placement::check_placement`]): what restore, drills and `backups verify` trust.
///
/// # Errors
/// As [`read_manifest`], and [`StoredBackupError::Misplaced`].
pub async fn read_placed_manifest(
    store: &dyn ArtifactStore,
    deployment: &str,
    id: &str,
) -> Result<Manifest, Error> {
    let manifest = read_manifest(store, deployment, id).await?;
    placement::check_placement(&manifest, deployment, id)
        .map_err(|detail| misplaced(store, deployment, id, detail))?;
    Ok(manifest)
}

/// The error of a backup whose manifest does not belong where it is stored.
pub(crate) fn misplaced(
    store: &dyn ArtifactStore,
    deployment: &str,
    id: &str,
    detail: placement::PlacementError,
) -> Error {
    StoredBackupError::Misplaced {
        backup: format!("{deployment}/{id}"),
        store: store.to_string(),
        detail,
    }
    .into()
}

/// Reads a record (a manifest, a `metadata` object, a journal) whole: at most
/// [`RECORD_LIMIT`] bytes, refused as soon as more arrive.
///
/// # Errors
/// The store's error, or [`StoredBackupError::RecordTooLarge`].
pub(crate) async fn get_record(
    store: &dyn ArtifactStore,
    key: &ObjectKey,
    version: Option<&str>,
) -> Result<Vec<u8>, Error> {
    let mut stream = store.get(key, version).await?;
    let mut data = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        if (data.len() as u64).saturating_add(chunk.len() as u64) > RECORD_LIMIT {
            return Err(StoredBackupError::RecordTooLarge {
                key: key.to_string(),
                limit: RECORD_LIMIT,
            }
            .into());
        }
        data.extend_from_slice(&chunk);
    }
    Ok(data)
}

/// The sha256 (hex) of a record as [`get_record`] would read it, hashed as it arrives instead
/// of held whole (a million files' `metadata` is ~100 MB); refused past [`RECORD_LIMIT`] as
/// [`get_record`] refuses it.
///
/// # Errors
/// As [`get_record`].
pub(crate) async fn hash_record(
    store: &dyn ArtifactStore,
    key: &ObjectKey,
    version: Option<&str>,
) -> Result<String, Error> {
    use sha2::Digest;
    let mut stream = store.get(key, version).await?;
    let mut hasher = sha2::Sha256::new();
    let mut length = 0_u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        length = length.saturating_add(chunk.len() as u64);
        if length > RECORD_LIMIT {
            return Err(StoredBackupError::RecordTooLarge {
                key: key.to_string(),
                limit: RECORD_LIMIT,
            }
            .into());
        }
        hasher.update(&chunk);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// A blocking reader of a stored object (for the digest and upload threads).
#[derive(Debug)]
pub struct StoreReader {
    receiver: mpsc::Receiver<Result<Bytes, StoreError>>,
    current: Bytes,
}

impl StoreReader {
    /// Starts reading `key` (at `version`) in the background; at most 4 chunks are buffered.
    ///
    /// # Errors
    /// When the object cannot be opened.
    pub async fn open(
        store: &dyn ArtifactStore,
        key: &ObjectKey,
        version: Option<&str>,
    ) -> Result<StoreReader, Error> {
        let mut stream = store.get(key, version).await?;
        let (sender, receiver) = mpsc::channel(4);
        tokio::spawn(async move {
            while let Some(chunk) = stream.next().await {
                let failed = chunk.is_err();
                if sender.send(chunk).await.is_err() || failed {
                    break;
                }
            }
        });
        Ok(StoreReader {
            receiver,
            current: Bytes::new(),
        })
    }
}

impl Read for StoreReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            match self.receiver.blocking_recv() {
                Some(Ok(chunk)) => self.current = chunk,
                Some(Err(error)) => return Err(io::Error::other(error.to_string())),
                None => return Ok(0),
            }
        }
        let count = buf.len().min(self.current.len());
        buf[..count].copy_from_slice(&self.current.split_to(count));
        Ok(count)
    }
}

/// Decompresses a stored artifact's bytes into its tar stream.
///
/// # Errors
/// When the zstd frame header is unreadable.
pub fn tar_reader<'a, R: Read + Send + 'a>(
    stored: R,
    compression: Compression,
) -> io::Result<Box<dyn Read + Send + 'a>> {
    Ok(match compression {
        Compression::None => Box::new(stored),
        Compression::Zstd { .. } => Box::new(zstd::Decoder::new(stored)?),
    })
}

/// Deletes every object under `<deployment>/<id>/` and the given recorded versions of keys
/// under it. A version of a key outside `<deployment>/<id>/` is never deleted, whatever the
/// caller passes ([`placement`]: a manifest may have been written by someone else).
///
/// The manifest goes first, before any recorded version, so that a partly deleted backup (a
/// prune killed half-way) is never listed as complete. When the very first version delete is
/// refused (Object Lock retention, which covers every object of a `--retain-days` backup),
/// nothing else was deleted and the manifest is put back, so a protected backup stays whole.
pub(crate) async fn delete_objects(
    store: &dyn ArtifactStore,
    deployment: &str,
    id: &str,
    versions: &[(String, Option<String>)],
) -> Result<usize, Error> {
    let prefix = placement::backup_prefix(deployment, id);
    let versions: Vec<&(String, Option<String>)> = versions
        .iter()
        .filter(|(key, _)| placement::lies_under(key, &prefix))
        .collect();
    let mut deleted = 0;
    let objects = store.list(&prefix).await?;
    let (manifests, others): (Vec<_>, Vec<_>) = objects
        .into_iter()
        .partition(|o| o.key.as_str().ends_with(MANIFEST_NAME));
    let mut saved = Vec::new();
    for object in &manifests {
        saved.push((
            object.key.clone(),
            get_record(store, &object.key, None).await?,
        ));
        delete_current(store, &object.key).await?;
        deleted += 1;
    }
    let mut first = true;
    for (key, version) in &versions {
        if let (Ok(key), Some(version)) = (ObjectKey::parse(key), version) {
            match store.delete(&key, Some(version)).await {
                Ok(()) | Err(StoreError::NotFound { .. }) => {}
                Err(error) => {
                    if first {
                        for (key, data) in saved {
                            store
                                .put_bytes(&key, Bytes::from(data), &PutOptions::default())
                                .await?;
                        }
                    }
                    return Err(error.into());
                }
            }
            first = false;
        }
    }
    for object in &others {
        delete_current(store, &object.key).await?;
        deleted += 1;
    }
    Ok(deleted.max(versions.len()))
}

/// Deletes the current version of an object; one already gone is fine.
async fn delete_current(store: &dyn ArtifactStore, key: &ObjectKey) -> Result<(), Error> {
    match store.delete(key, None).await {
        Ok(()) | Err(StoreError::NotFound { .. }) => Ok(()),
        Err(error) => Err(error.into()),
    }
}

/// Opens the store a URL names, with credentials from the store's standard chain, and checks
/// it ([`check_store`]) before anything else: every command that opens a store goes through
/// here.
///
/// # Errors
/// A bad URL, a store that cannot be set up, or one that fails [`check_store`].
pub async fn open_store(url: &str) -> Result<Arc<dyn ArtifactStore>, Error> {
    let store = connect_store(url).await?;
    check_store(store.as_ref()).await?;
    Ok(store)
}

/// The start-of-run check of a store, shared by every command: it answers and its root
/// exists — a missing directory (`file://`), bucket (S3, GCS) or container (Azure) is an
/// error naming it, never an empty store. Returns what the store supports (versioning,
/// retention), when the credential may read the store's settings.
///
/// A credential refused the settings (a least-privilege user that may read objects but not
/// the bucket's versioning, as a restore or `backups list` needs) is not refused here: the
/// command's own requests say whether it may do what it needs, and a backup checks the
/// settings it depends on when it starts.
///
/// # Errors
/// The store's error (`StoreError::Configuration` for a missing root).
pub async fn check_store(
    store: &dyn ArtifactStore,
) -> Result<Option<cairn_store::Capabilities>, Error> {
    match store.capabilities().await {
        Ok(capabilities) => Ok(Some(capabilities)),
        Err(StoreError::Credentials { .. }) => Ok(None),
        Err(error) => Err(error.into()),
    }
}

/// The adapter for a URL, not yet checked.
async fn connect_store(url: &str) -> Result<Arc<dyn ArtifactStore>, Error> {
    let location = match cairn_store::StoreUrl::parse(url).map_err(invalid_name)? {
        cairn_store::StoreUrl::Objects(location) => location,
        cairn_store::StoreUrl::Repository(_) => {
            return Err(invalid_name(format!(
                "store URL `{url}` names a repository (`repo+`): this command takes a plain store only; `cairn repo`, `backup`, `restore`, `drill`, `pre-backup-check --store` and every `backups` subcommand take repositories (docs/stores.md, \"Repositories\"). Use a plain store URL (without `repo+`)"
            )))
        }
    };
    connect_location(location).await
}

/// The adapter for a parsed store location, not yet checked.
pub async fn connect_location(
    location: cairn_store::StoreLocation,
) -> Result<Arc<dyn ArtifactStore>, Error> {
    match location {
        cairn_store::StoreLocation::File { root } => {
            Ok(Arc::new(cairn_store::local::LocalStore::new(root)))
        }
        location @ cairn_store::StoreLocation::S3 { .. } => Ok(Arc::new(
            cairn_store_s3::S3Store::from_location(&location).await?,
        )),
        location @ cairn_store::StoreLocation::Azure { .. } => Ok(Arc::new(
            cairn_store_azure::AzureStore::from_location(&location)?,
        )),
        location @ cairn_store::StoreLocation::Gcs { .. } => Ok(Arc::new(
            cairn_store_gcs::GcsStore::from_location(&location).await?,
        )),
    }
}

/// How to turn on versioning for the cloud store a URL names, for the message that refuses
/// an unversioned store (a `file://` store has no versioning and is never refused).
///
/// Every cloud store's backups are refused without versioning (unless `--allow-unversioned`):
/// without it, an object overwritten after the backup is gone, and restore can only refuse it.
#[must_use]
pub fn versioning_command(url: &str) -> Option<String> {
    match cairn_store::StoreLocation::parse(url).ok()? {
        cairn_store::StoreLocation::S3 { bucket, .. } => Some(format!(
            "`aws s3api put-bucket-versioning --bucket {bucket} --versioning-configuration Status=Enabled`"
        )),
        cairn_store::StoreLocation::Azure { account, .. } => Some(format!(
            "`az storage account blob-service-properties update --account-name {account} \
             --enable-versioning true` (Azure portal: the storage account's Data protection → \
             Enable versioning for blobs; blob versioning is an account setting, so Cairn \
             checks it by writing and deleting a probe blob)"
        )),
        cairn_store::StoreLocation::Gcs { bucket, .. } => Some(format!(
            "`gcloud storage buckets update gs://{bucket} --versioning`"
        )),
        cairn_store::StoreLocation::File { .. } => None,
    }
}

#[cfg(test)]
mod tests {
    use super::read::{
        check_artifact_stream, check_encrypted, open_artifact, verify_backup, Checked,
    };
    use super::segment::SegmentSize;
    use super::*;
    use crate::catalog::delete_backup;
    use crate::error::RunErrors;
    use crate::format::bbr_directory::metadata::BackupMetadata;
    use crate::format::digest::{digest_tar_files, EntryPolicy};
    use crate::format::encryption::{Identities, Recipients, AGE_HEADER};
    use crate::format::file_name::FileName;
    use crate::format::manifest::{ArtifactEncryption, ManifestArtifact};
    use crate::format::signature::TrustedKeys;
    use crate::format::sink::{BackupRecord, BackupSink, BackupSource, NewBackup, StoredArtifact};
    use cairn_store::local::LocalStore;
    use cairn_store::PutOptions;
    use sha2::{Digest, Sha256};
    use std::io::Write;

    /// A tar with a few files, in memory.
    fn sample_tar() -> Vec<u8> {
        tar_of(&[("./a.txt", 10_usize), ("./dir/b.bin", 300_000)])
    }

    /// A tar of files of these sizes, in memory (barely compressible contents).
    fn tar_of(files: &[(&str, usize)]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for &(name, size) in files {
            let data: Vec<u8> = (0..size).map(|i| (i * 7 % 251) as u8).collect();
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            header.set_entry_type(tar::EntryType::Regular);
            builder
                .append_data(&mut header, name, data.as_slice())
                .unwrap();
        }
        builder.into_inner().unwrap()
    }

    /// Writes a one-artifact backup `cf/20240102T030405Z` through the real store sink.
    async fn write_backup(
        store: Arc<dyn ArtifactStore>,
        compression: Compression,
        encryption: Option<Recipients>,
    ) -> Vec<u8> {
        write_backup_of(
            store,
            compression,
            encryption,
            SegmentSize::default(),
            sample_tar(),
        )
        .await
    }

    /// [`write_backup`] of `tar` in segments of `segment_size`.
    async fn write_backup_of(
        store: Arc<dyn ArtifactStore>,
        compression: Compression,
        encryption: Option<Recipients>,
        segment_size: SegmentSize,
        tar: Vec<u8>,
    ) -> Vec<u8> {
        let sink = StoreSink {
            encryption,
            segment_size,
            ..StoreSink::new(store, compression)
        };
        let backup = sink
            .start(&NewBackup {
                deployment: "cf",
                backup_id: "20240102T030405Z",
                started_at: Utc::now(),
                concurrent_streams: 1,
                deployment_manifest: None,
            })
            .await
            .unwrap();
        let (mut writer, pending) = backup.open_artifact("app-0-files").await.unwrap();
        let data = tar.clone();
        let stored = tokio::task::spawn_blocking(move || {
            for piece in data.chunks(4096) {
                writer.write_all(piece).unwrap();
            }
            writer.finish().unwrap()
        })
        .await
        .unwrap();
        let version = pending.commit().await.unwrap();
        let files = digest_tar_files(tar.as_slice(), EntryPolicy::Trust).unwrap();
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
                files,
                stored,
                version,
            }],
            scripts: Vec::new(),
            layout: crate::model::layout::DeploymentLayout::default(),
            failure: Vec::new(),
        };
        assert!(backup.finish(&record).await.unwrap().is_some());
        tar
    }

    fn key_pair() -> (Identities, String) {
        let identity = age::x25519::Identity::generate();
        let public = identity.to_public().to_string();
        (Identities::from_keys(vec![identity]), public)
    }

    fn messages(errors: &RunErrors) -> Vec<String> {
        errors.errors().iter().map(ToString::to_string).collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn encrypted_artifacts_are_stored_as_age_and_verified_with_or_without_identity() {
        for compression in [Compression::Zstd { level: 3 }, Compression::None] {
            let dir = tempfile::tempdir().unwrap();
            let store: Arc<dyn ArtifactStore> = Arc::new(LocalStore::new(dir.path()));
            let (first, first_public) = key_pair();
            let (second, second_public) = key_pair();
            let (stranger, _) = key_pair();
            let recipients = Recipients::parse(&[first_public.clone(), second_public.clone()])
                .unwrap()
                .unwrap();
            let tar = write_backup(Arc::clone(&store), compression, Some(recipients)).await;
            as_one_object(dir.path());

            let manifest = read_manifest(store.as_ref(), "cf", "20240102T030405Z")
                .await
                .unwrap();
            let artifact = &manifest.artifacts[0];
            assert!(artifact.key.ends_with(".age"), "{}", artifact.key);
            assert_eq!(
                artifact.encryption,
                Some(ArtifactEncryption {
                    scheme: "age-x25519".into(),
                    recipients: 2
                })
            );
            let json = manifest.to_json();
            assert!(!json.contains(&first_public) && !json.contains(&second_public));
            assert!(!json.contains("AGE-SECRET-KEY"));
            let stored = std::fs::read(dir.path().join(&artifact.key)).unwrap();
            assert!(stored.starts_with(AGE_HEADER));
            assert_eq!(hex::encode(Sha256::digest(&stored)), artifact.sha256);
            assert_eq!(stored.len() as u64, artifact.size);

            // Either identity checks everything; none checks the stored bytes only.
            for identities in [&first, &second] {
                let verified = verify_backup(&store, "cf", "20240102T030405Z", 2, identities, true)
                    .await
                    .unwrap();
                assert_eq!(verified.contents_unchecked, 0);
            }
            let none = Identities::default();
            let verified = verify_backup(&store, "cf", "20240102T030405Z", 2, &none, false)
                .await
                .unwrap();
            assert_eq!(verified.contents_unchecked, 1);

            // Restore refuses without an identity, and with one that does not match.
            let refused = verify_backup(&store, "cf", "20240102T030405Z", 2, &none, true)
                .await
                .unwrap_err();
            let refused = messages(&refused);
            assert_eq!(refused.len(), 1, "{refused:?}");
            assert!(refused[0].contains("cf/20240102T030405Z"), "{refused:?}");
            assert!(refused[0].contains("--identity FILE"), "{refused:?}");
            assert!(
                refused[0].contains("age-x25519, 2 recipients"),
                "{refused:?}"
            );
            let wrong = verify_backup(&store, "cf", "20240102T030405Z", 2, &stranger, false)
                .await
                .unwrap_err();
            let wrong = messages(&wrong);
            assert_eq!(wrong.len(), 1, "{wrong:?}");
            assert!(wrong[0].contains("no identity given with --identity matches"));

            // The restore stream gives back the tar, checked on the way.
            let reader = open_artifact(&store, artifact).await.unwrap();
            let expected = artifact.clone();
            let compression = manifest.compression;
            let identities = second.clone();
            let restored = tokio::task::spawn_blocking(move || {
                let mut out = Vec::new();
                let checked = check_artifact_stream(
                    reader,
                    &expected,
                    compression,
                    &identities,
                    Some(&mut out),
                )
                .unwrap();
                assert_eq!(checked, Checked::Everything);
                out
            })
            .await
            .unwrap();
            assert_eq!(restored, tar);

            // One flipped byte: refused with the identity and without it.
            let mut damaged_bytes = stored.clone();
            let middle = damaged_bytes.len() / 2;
            damaged_bytes[middle] ^= 0x01;
            std::fs::write(dir.path().join(&artifact.key), &damaged_bytes).unwrap();
            for (identities, require) in [(&first, true), (&none, false)] {
                let errors =
                    verify_backup(&store, "cf", "20240102T030405Z", 2, identities, require)
                        .await
                        .unwrap_err();
                let errors = messages(&errors);
                assert!(
                    errors.len() == 1 && errors[0].contains("is damaged or missing"),
                    "{errors:?}"
                );
            }
        }
    }

    /// A tar whose one file `./a.txt` is `size` zero bytes, zstd-compressed as it is made:
    /// a few KiB stored, `size` bytes once decompressed.
    fn zstd_bomb(size: u64) -> Vec<u8> {
        let mut encoder = zstd::Encoder::new(Vec::new(), 3).unwrap();
        let mut header = tar::Header::new_gnu();
        header.set_path("./a.txt").unwrap();
        header.set_size(size);
        header.set_mode(0o644);
        header.set_entry_type(tar::EntryType::Regular);
        header.set_cksum();
        encoder.write_all(header.as_bytes()).unwrap();
        let zeros = vec![0_u8; 1 << 20];
        let mut left = size + 1024;
        while left > 0 {
            let part = left.min(zeros.len() as u64);
            encoder.write_all(&zeros[..part as usize]).unwrap();
            left -= part;
        }
        encoder.finish().unwrap()
    }

    /// Rewrites backup `cf/20240102T030405Z` of a `file://` store into the layout of manifest
    /// schema 1, which earlier Cairn versions wrote: each artifact one object at its key (its
    /// one segment renamed), no segment list. Such backups must keep reading.
    fn as_one_object(dir: &std::path::Path) -> Manifest {
        let manifest_path = dir.join("cf/20240102T030405Z/manifest.json");
        let mut manifest = Manifest::parse(&std::fs::read(&manifest_path).unwrap()).unwrap();
        manifest.schema = 1;
        for artifact in &mut manifest.artifacts {
            assert_eq!(
                artifact.segments.len(),
                1,
                "a small artifact is one segment"
            );
            let segment = artifact.segments.remove(0);
            std::fs::rename(dir.join(&segment.key), dir.join(&artifact.key)).unwrap();
            artifact.size = segment.size;
            artifact.sha256 = segment.sha256;
            artifact.version = segment.version;
        }
        std::fs::write(&manifest_path, manifest.to_json()).unwrap();
        manifest
    }

    /// Replaces the artifact object with `stored` and makes the manifest's size and sha256
    /// match it (so only the decompressed size can give it away); `plain_size` as given.
    fn replace_artifact(dir: &std::path::Path, stored: &[u8], plain_size: Option<u64>) -> Manifest {
        let manifest_path = dir.join("cf/20240102T030405Z/manifest.json");
        let mut manifest = Manifest::parse(&std::fs::read(&manifest_path).unwrap()).unwrap();
        let artifact = &mut manifest.artifacts[0];
        std::fs::write(dir.join(&artifact.key), stored).unwrap();
        artifact.size = stored.len() as u64;
        artifact.sha256 = hex::encode(Sha256::digest(stored));
        artifact.plain_size = plain_size;
        std::fs::write(&manifest_path, manifest.to_json()).unwrap();
        manifest
    }

    /// Counts what a restore would send to the instance.
    #[derive(Default)]
    struct Counted(u64);

    impl Write for Counted {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len() as u64;
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_zstd_bomb_stops_at_the_size_the_manifest_records() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn ArtifactStore> = Arc::new(LocalStore::new(dir.path()));
        let tar = write_backup(Arc::clone(&store), Compression::Zstd { level: 3 }, None).await;
        as_one_object(dir.path());
        let manifest = read_manifest(store.as_ref(), "cf", "20240102T030405Z")
            .await
            .unwrap();
        assert_eq!(manifest.artifacts[0].plain_size, Some(tar.len() as u64));
        let bomb = zstd_bomb(256 << 20);
        assert!(bomb.len() < 64 << 10, "{} bytes", bomb.len());
        // The recorded size, and (an earlier manifest) the bound from the files listed.
        for plain_size in [Some(tar.len() as u64), None] {
            let manifest = replace_artifact(dir.path(), &bomb, plain_size);
            let artifact = manifest.artifacts[0].clone();
            let limit = artifact.plain_limit();
            assert!(limit < 256 << 20, "{limit}");
            let reader = open_artifact(&store, &artifact).await.unwrap();
            let (result, sent) = tokio::task::spawn_blocking(move || {
                let mut sent = Counted::default();
                let result = check_artifact_stream(
                    reader,
                    &artifact,
                    Compression::Zstd { level: 3 },
                    &Identities::default(),
                    Some(&mut sent),
                );
                (result, sent.0)
            })
            .await
            .unwrap();
            let error = result.unwrap_err().to_string();
            assert!(
                error.contains(&format!("decompresses to more than the {limit} bytes")),
                "{error}"
            );
            assert!(sent <= limit, "{sent} bytes sent, limit {limit}");
            let errors = verify_backup(
                &store,
                "cf",
                "20240102T030405Z",
                1,
                &Identities::default(),
                true,
            )
            .await
            .unwrap_err();
            assert!(
                messages(&errors)
                    .iter()
                    .any(|m| m.contains("decompresses to more than")),
                "{errors}"
            );
        }
    }

    /// Reads artifact 0 of `manifest` as a restore does; returns what it forwarded.
    async fn restore_artifact(
        store: &Arc<dyn ArtifactStore>,
        manifest: &Manifest,
        identities: &Identities,
    ) -> Result<Vec<u8>, Error> {
        let artifact = manifest.artifacts[0].clone();
        let reader = open_artifact(store, &artifact).await?;
        let (compression, identities) = (manifest.compression, identities.clone());
        tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            check_artifact_stream(reader, &artifact, compression, &identities, Some(&mut out))
                .map(|_| out)
        })
        .await
        .unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn segmented_artifacts_restore_whole_and_refuse_any_damaged_missing_or_moved_segment() {
        let one_mib = SegmentSize::parse("1MiB").unwrap();
        let (identities, public) = key_pair();
        for (compression, encrypted) in [
            (Compression::Zstd { level: 1 }, false),
            (Compression::None, true),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let store: Arc<dyn ArtifactStore> = Arc::new(LocalStore::new(dir.path()));
            let recipients = encrypted.then(|| {
                Recipients::parse(std::slice::from_ref(&public))
                    .unwrap()
                    .unwrap()
            });
            let tar = tar_of(&[("./a.bin", 1_500_000), ("./b.bin", 900_000), ("./c.txt", 5)]);
            write_backup_of(
                Arc::clone(&store),
                compression,
                recipients,
                one_mib,
                tar.clone(),
            )
            .await;
            let manifest = read_manifest(store.as_ref(), "cf", "20240102T030405Z")
                .await
                .unwrap();
            assert_eq!(manifest.schema, 2);
            let artifact = &manifest.artifacts[0];
            // 2.4 MB of tar in 1 MiB segments: two full ones and the rest.
            let plain: Vec<u64> = artifact.segments.iter().map(|s| s.plain_size).collect();
            assert_eq!(plain, [1 << 20, 1 << 20, tar.len() as u64 - (2 << 20)]);
            for (index, segment) in artifact.segments.iter().enumerate() {
                assert_eq!(segment.key, format!("{}.{index:06}", artifact.key));
                let stored = std::fs::read(dir.path().join(&segment.key)).unwrap();
                assert_eq!(hex::encode(Sha256::digest(&stored)), segment.sha256);
                assert_eq!(stored.len() as u64, segment.size);
                // Each its own age file, or zstd frame.
                assert_eq!(stored.starts_with(AGE_HEADER), encrypted);
                let start = index * (1 << 20);
                let covered = &tar[start..start + segment.plain_size as usize];
                assert_eq!(hex::encode(Sha256::digest(covered)), segment.plain_sha256);
            }
            assert!(!dir.path().join(&artifact.key).exists());
            let identities = if encrypted {
                identities.clone()
            } else {
                Identities::default()
            };
            assert_eq!(
                restore_artifact(&store, &manifest, &identities)
                    .await
                    .unwrap(),
                tar
            );
            let verified = verify_backup(&store, "cf", "20240102T030405Z", 2, &identities, true)
                .await
                .unwrap();
            assert_eq!(verified.contents_unchecked, 0);
            if encrypted {
                let none = Identities::default();
                let verified = verify_backup(&store, "cf", "20240102T030405Z", 2, &none, false)
                    .await
                    .unwrap();
                assert_eq!(verified.contents_unchecked, 1);
            }

            // A flipped byte in the middle segment: named in the error.
            let middle = dir.path().join(&artifact.segments[1].key);
            let genuine = std::fs::read(&middle).unwrap();
            let mut damaged_bytes = genuine.clone();
            let at = damaged_bytes.len() / 2;
            damaged_bytes[at] ^= 0x01;
            std::fs::write(&middle, &damaged_bytes).unwrap();
            let error = restore_artifact(&store, &manifest, &identities)
                .await
                .unwrap_err()
                .to_string();
            assert!(
                error.contains(&artifact.segments[1].key) && error.contains("damaged or missing"),
                "{error}"
            );
            std::fs::write(&middle, &genuine).unwrap();

            // The middle segment deleted: refused before anything is connected.
            std::fs::remove_file(&middle).unwrap();
            let source = StoreSource {
                store: Arc::clone(&store),
                deployment: "cf".into(),
                backup_id: "20240102T030405Z".into(),
                identities: identities.clone(),
                trusted: TrustedKeys::default(),
            };
            let Err(refused) = source.check(1).await else {
                panic!("a backup missing a segment passed the check");
            };
            let refused = messages(&refused);
            assert!(
                refused.len() == 1 && refused[0].contains(&artifact.segments[1].key),
                "{refused:?}"
            );
            std::fs::write(&middle, &genuine).unwrap();
            assert!(source.check(1).await.is_ok());

            // Segments reordered or repeated in the manifest: refused before anything is read.
            for edit in [
                (|a: &mut ManifestArtifact| a.segments.swap(1, 2)) as fn(&mut ManifestArtifact),
                |a| {
                    let copy = a.segments[0].clone();
                    a.segments[1] = copy;
                },
            ] {
                forge_manifest(dir.path(), |m| edit(&mut m.artifacts[0]));
                let Err(refused) = source.check(1).await else {
                    panic!("a reordered or repeated segment passed the check");
                };
                let refused = messages(&refused);
                assert!(
                    refused[0].contains("reordered, repeated or cut"),
                    "{refused:?}"
                );
                forge_manifest(dir.path(), |m| m.artifacts[0] = artifact.clone());
            }
            assert!(source.check(1).await.is_ok());
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn records_past_the_limit_are_refused_as_they_arrive() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn ArtifactStore> = Arc::new(LocalStore::new(dir.path()));
        write_backup(Arc::clone(&store), Compression::Zstd { level: 1 }, None).await;
        let manifest_path = dir.path().join("cf/20240102T030405Z/manifest.json");
        let mut text = std::fs::read(&manifest_path).unwrap();
        // Valid JSON still, one byte past the limit.
        text.resize(usize::try_from(RECORD_LIMIT).unwrap() + 1, b' ');
        std::fs::write(&manifest_path, &text).unwrap();
        let error = read_manifest(store.as_ref(), "cf", "20240102T030405Z")
            .await
            .unwrap_err();
        assert!(
            matches!(&error, Error::StoredBackup(StoredBackupError::RecordTooLarge { key, .. }) if key.ends_with("manifest.json")),
            "{error}"
        );
        text.truncate(usize::try_from(RECORD_LIMIT).unwrap());
        std::fs::write(&manifest_path, &text).unwrap();
        let manifest = read_manifest(store.as_ref(), "cf", "20240102T030405Z")
            .await
            .unwrap();
        // The `metadata` object is hashed as it arrives, and refused past the same limit.
        read::verify_metadata(store.as_ref(), &manifest)
            .await
            .unwrap();
        let metadata_path = dir.path().join("cf/20240102T030405Z/metadata");
        let mut metadata = std::fs::read(&metadata_path).unwrap();
        metadata.resize(usize::try_from(RECORD_LIMIT).unwrap() + 1, b' ');
        std::fs::write(&metadata_path, &metadata).unwrap();
        let error = read::verify_metadata(store.as_ref(), &manifest)
            .await
            .unwrap_err();
        assert!(
            matches!(&error, Error::StoredBackup(StoredBackupError::RecordTooLarge { key, .. }) if key.ends_with("/metadata")),
            "{error}"
        );
        metadata.truncate(usize::try_from(RECORD_LIMIT).unwrap());
        std::fs::write(&metadata_path, &metadata).unwrap();
        let error = read::verify_metadata(store.as_ref(), &manifest)
            .await
            .unwrap_err();
        assert!(error.to_string().contains("sha256"), "{error}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_backup_whose_records_a_restore_would_refuse_is_not_completed() {
        use crate::format::digest::FileDigest;
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn ArtifactStore> = Arc::new(LocalStore::new(dir.path()));
        let sink = StoreSink::new(Arc::clone(&store), Compression::Zstd { level: 1 });
        let backup = sink
            .start(&NewBackup {
                deployment: "cf",
                backup_id: "20240102T030405Z",
                started_at: Utc::now(),
                concurrent_streams: 1,
                deployment_manifest: None,
            })
            .await
            .unwrap();
        // 65 files with 1 MiB names: records of more than 64 MiB, cheaply.
        let files: crate::format::digest::FileDigests = (0..65)
            .map(|i| {
                let name = FileName::from_text(&format!("./{i}{}", "n".repeat(1 << 20)));
                let digest = FileDigest {
                    size: 1,
                    sha256: "00".repeat(32).into(),
                };
                (name, digest)
            })
            .collect();
        let mut metadata = BackupMetadata::default();
        metadata.add_files(None, ("app", "0", "files"), &files);
        let record = BackupRecord {
            complete: true,
            metadata,
            artifacts: vec![StoredArtifact {
                stream: false,
                name: "app-0-files".into(),
                group: "app".into(),
                index: "0".into(),
                job: "files".into(),
                shared: false,
                files,
                stored: crate::format::sink::StoredBytes {
                    size: 1,
                    sha256: Some("00".repeat(32)),
                    plain_size: 1,
                },
                version: None,
            }],
            scripts: Vec::new(),
            layout: crate::model::layout::DeploymentLayout::default(),
            failure: Vec::new(),
        };
        let Err(error) = backup.finish(&record).await else {
            panic!("a backup with a 65 MiB metadata object was completed");
        };
        let message = error.to_string();
        assert!(
            message.starts_with("Backup cf/20240102T030405Z: its metadata would be ")
                && message
                    .contains("(it lists 65 files), more than the 67108864 bytes a restore reads"),
            "{}",
            &message[..message.len().min(300)]
        );
        assert!(!dir
            .path()
            .join("cf/20240102T030405Z/manifest.json")
            .exists());
        let listed = list_backups(store.as_ref(), Some("cf")).await.unwrap();
        assert!(listed.iter().all(|b| !b.complete), "{listed:?}");
    }

    #[tokio::test]
    async fn an_artifact_name_with_a_control_character_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let sink = StoreSink::new(
            Arc::new(LocalStore::new(dir.path())),
            Compression::Zstd { level: 1 },
        );
        let backup = sink
            .start(&NewBackup {
                deployment: "cf",
                backup_id: "20240102T030405Z",
                started_at: Utc::now(),
                concurrent_streams: 1,
                deployment_manifest: None,
            })
            .await
            .unwrap();
        for name in ["app-0-ev\u{1b}[31mil", "app-0-a\nb"] {
            let Err(error) = backup.open_artifact(name).await else {
                panic!("{name:?} was accepted");
            };
            let message = error.to_string();
            assert!(
                message.contains("cannot hold a control character"),
                "{message}"
            );
            assert!(message.contains(name), "{message:?}");
            assert!(backup.open_stream(name).await.is_err());
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn unencrypted_backups_need_no_identity_and_are_refused_with_one_unless_allowed() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn ArtifactStore> = Arc::new(LocalStore::new(dir.path()));
        write_backup(Arc::clone(&store), Compression::Zstd { level: 1 }, None).await;
        let manifest = read_manifest(store.as_ref(), "cf", "20240102T030405Z")
            .await
            .unwrap();
        assert!(manifest.artifacts[0].key.ends_with("app-0-files.tar.zst"));
        assert_eq!(manifest.artifacts[0].encryption, None);
        assert!(!manifest.to_json().contains("encryption"));
        let (identities, _) = key_pair();
        for identities in [
            Identities::default(),
            identities.clone().allowing_unencrypted(true),
        ] {
            let verified = verify_backup(&store, "cf", "20240102T030405Z", 1, &identities, true)
                .await
                .unwrap();
            assert_eq!(verified.contents_unchecked, 0);
        }
        // --identity says an encrypted backup is expected: a plaintext one may have been put
        // in its place (the downgrade), so restore (and verify) refuse it.
        for require_identity in [true, false] {
            let refused = verify_backup(
                &store,
                "cf",
                "20240102T030405Z",
                1,
                &identities,
                require_identity,
            )
            .await
            .unwrap_err();
            let refused = messages(&refused);
            assert_eq!(refused.len(), 1, "{refused:?}");
            assert!(
                refused[0].starts_with("Backup cf/20240102T030405Z in ")
                    && refused[0].contains(
                        "is not encrypted (no artifact is encrypted), but --identity was given"
                    )
                    && refused[0].contains("pass --allow-unencrypted"),
                "{refused:?}"
            );
        }
        let source = StoreSource {
            store: Arc::clone(&store),
            deployment: "cf".into(),
            backup_id: "20240102T030405Z".into(),
            identities: identities.clone(),
            trusted: TrustedKeys::default(),
        };
        let Err(refused) = source.check(1).await else {
            panic!("restore accepted a plaintext backup with --identity");
        };
        assert!(messages(&refused)[0].contains("is not encrypted"));
        let allowed = StoreSource {
            identities: identities.allowing_unencrypted(true),
            ..source
        };
        assert!(allowed.check(1).await.is_ok());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_plaintext_artifact_in_an_encrypted_backup_is_refused_with_an_identity() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn ArtifactStore> = Arc::new(LocalStore::new(dir.path()));
        let (identities, public) = key_pair();
        let recipients = Recipients::parse(&[public]).unwrap().unwrap();
        write_backup(Arc::clone(&store), Compression::None, Some(recipients)).await;
        let mut manifest = read_manifest(store.as_ref(), "cf", "20240102T030405Z")
            .await
            .unwrap();
        let mut plain = manifest.artifacts[0].clone();
        plain.name = "app-1-files".into();
        plain.index = "1".into();
        plain.key = "cf/20240102T030405Z/app-1-files.tar".into();
        plain.encryption = None;
        manifest.artifacts.push(plain);
        let error = check_encrypted(store.as_ref(), &manifest, &identities)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains(
                "is not encrypted (`cf/20240102T030405Z/app-1-files.tar` is stored in plaintext)"
            ),
            "{error}"
        );
        assert!(check_encrypted(
            store.as_ref(),
            &manifest,
            &identities.clone().allowing_unencrypted(true)
        )
        .is_ok());
        assert!(check_encrypted(store.as_ref(), &manifest, &Identities::default()).is_ok());
        manifest.artifacts.pop();
        assert!(check_encrypted(store.as_ref(), &manifest, &identities).is_ok());
    }

    /// Rewrites the manifest of `cf/20240102T030405Z` in a `file://` store.
    fn forge_manifest(dir: &std::path::Path, edit: impl FnOnce(&mut Manifest)) {
        let path = dir.join("cf/20240102T030405Z/manifest.json");
        let mut manifest = Manifest::parse(&std::fs::read(&path).unwrap()).unwrap();
        edit(&mut manifest);
        std::fs::write(&path, manifest.to_json()).unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_manifest_copied_elsewhere_is_refused_by_restore_and_verify() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn ArtifactStore> = Arc::new(LocalStore::new(dir.path()));
        write_backup(Arc::clone(&store), Compression::Zstd { level: 1 }, None).await;
        // The genuine manifest, copied to a newer id: its objects are all intact.
        let copy = dir.path().join("cf/20991231T235959Z");
        std::fs::create_dir_all(&copy).unwrap();
        std::fs::copy(
            dir.path().join("cf/20240102T030405Z/manifest.json"),
            copy.join("manifest.json"),
        )
        .unwrap();
        let none = Identities::default();
        let refused = verify_backup(&store, "cf", "20991231T235959Z", 1, &none, false)
            .await
            .unwrap_err();
        let refused = messages(&refused);
        assert_eq!(refused.len(), 1, "{refused:?}");
        assert!(
            refused[0].starts_with("Backup `cf/20991231T235959Z` in ")
                && refused[0].contains("is misplaced: its manifest names backup id `20240102T030405Z`, but it is stored as `20991231T235959Z`"),
            "{refused:?}"
        );
        let source = StoreSource {
            store: Arc::clone(&store),
            deployment: "cf".into(),
            backup_id: "20991231T235959Z".into(),
            identities: none.clone(),
            trusted: TrustedKeys::default(),
        };
        let Err(refused) = source.check(1).await else {
            panic!("restore accepted a misplaced backup");
        };
        assert!(messages(&refused)[0].contains("is misplaced"));
        // Its id is in the future: --latest passes over it to the genuine backup.
        assert_eq!(
            latest_backup(store.as_ref(), "cf").await.unwrap(),
            "20240102T030405Z"
        );
        // The original is untouched by all of it.
        verify_backup(&store, "cf", "20240102T030405Z", 1, &none, true)
            .await
            .unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn deleting_a_backup_never_deletes_a_key_outside_its_own_prefix() {
        use crate::catalog::IfMisplaced;
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn ArtifactStore> = Arc::new(LocalStore::new(dir.path()));
        write_backup(Arc::clone(&store), Compression::Zstd { level: 1 }, None).await;
        // The newest backup's artifact, which a forged manifest in the old backup lists (with
        // a version, which a file:// store's delete ignores: it deletes the file).
        let victim = "cf/20240103T000000Z/app-0-files.tar.zst";
        store
            .put_bytes(
                &ObjectKey::parse(victim).unwrap(),
                Bytes::from_static(b"newest"),
                &PutOptions::default(),
            )
            .await
            .unwrap();
        forge_manifest(dir.path(), |manifest| {
            manifest.artifacts[0].key = victim.into();
            manifest.artifacts[0].version = Some("1".into());
        });
        // prune's delete: refused, nothing deleted.
        let refused = delete_backup(
            store.as_ref(),
            "cf",
            "20240102T030405Z",
            IfMisplaced::Refuse,
        )
        .await
        .unwrap_err()
        .to_string();
        assert!(refused.contains("is misplaced: its manifest lists artifact app-0-files `cf/20240103T000000Z/app-0-files.tar.zst`, outside the backup's own `cf/20240102T030405Z/`"), "{refused}");
        assert_eq!(
            list_backups(store.as_ref(), Some("cf"))
                .await
                .unwrap()
                .len(),
            2
        );
        assert!(dir
            .path()
            .join("cf/20240102T030405Z/manifest.json")
            .exists());
        // backups delete: its own objects go, the other backup's stays.
        let deletion = delete_backup(
            store.as_ref(),
            "cf",
            "20240102T030405Z",
            IfMisplaced::DeleteOwnObjects,
        )
        .await
        .unwrap();
        assert_eq!(deletion.left_outside, [victim]);
        assert!(deletion.misplaced.is_some());
        assert!(!dir
            .path()
            .join("cf/20240102T030405Z/manifest.json")
            .exists());
        assert!(!dir.path().join("cf/20240102T030405Z/metadata").exists());
        assert_eq!(std::fs::read(dir.path().join(victim)).unwrap(), b"newest");
        // The lowest level holds too, whatever a caller passes.
        delete_objects(
            store.as_ref(),
            "cf",
            "20240102T030405Z",
            &[(victim.to_string(), Some("1".into()))],
        )
        .await
        .unwrap();
        assert!(dir.path().join(victim).exists());
    }

    #[test]
    fn every_cloud_store_gets_the_setting_that_turns_versioning_on() {
        let fix = |url: &str| versioning_command(url).unwrap_or_default();
        assert!(fix("s3://b/p?region=r").contains(
            "`aws s3api put-bucket-versioning --bucket b --versioning-configuration Status=Enabled`"
        ));
        let azure = fix("az://acct/c/p");
        assert!(azure.contains(
            "`az storage account blob-service-properties update --account-name acct --enable-versioning true`"
        ), "{azure}");
        assert!(azure.contains("Data protection → Enable versioning for blobs"));
        assert!(fix("gs://b/p").contains("`gcloud storage buckets update gs://b --versioning`"));
        assert_eq!(versioning_command("file:///tmp/x"), None);
    }

    #[tokio::test]
    async fn a_backup_needing_versioning_is_refused_by_a_store_without_it() {
        let dir = tempfile::tempdir().unwrap();
        let sink = StoreSink {
            require_versioning: versioning_command("gs://b"),
            ..StoreSink::new(Arc::new(LocalStore::new(dir.path())), Compression::None)
        };
        let new = NewBackup {
            deployment: "cf",
            backup_id: "20240102T030405Z",
            started_at: Utc::now(),
            concurrent_streams: 1,
            deployment_manifest: None,
        };
        let Err(error) = sink.start(&new).await else {
            panic!("a store without versioning was accepted");
        };
        let error = error.to_string();
        assert!(
            error.contains("versioning is not enabled; enable it with `gcloud storage buckets update gs://b --versioning`, or pass --allow-unversioned"),
            "{error}"
        );
        assert!(std::fs::read_dir(dir.path()).unwrap().next().is_none());
    }

    #[tokio::test]
    async fn backups_are_listed_complete_only_with_a_manifest() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path());
        let put = |key: &str, data: &'static [u8]| {
            let key = ObjectKey::parse(key).unwrap();
            let store = store.clone();
            async move {
                store
                    .put_bytes(&key, Bytes::from_static(data), &PutOptions::default())
                    .await
                    .unwrap()
            }
        };
        put("cf/20240102T030405Z/a-0-x.tar.zst", b"12345").await;
        put("cf/20240102T030405Z/manifest.json", b"{}").await;
        put("cf/20240103T030405Z/a-0-x.tar.zst", b"123").await;
        put("other/20240101T000000Z/manifest.json", b"{}").await;
        put("cf/not-a-backup/x", b"1").await;
        let all = list_backups(&store, None).await.unwrap();
        assert_eq!(all.len(), 3);
        let cf = list_backups(&store, Some("cf")).await.unwrap();
        assert_eq!(
            cf.iter()
                .map(|b| (b.id.as_str(), b.complete, b.size))
                .collect::<Vec<_>>(),
            vec![
                ("20240102T030405Z", true, 7),
                ("20240103T030405Z", false, 3)
            ]
        );
        assert_eq!(
            latest_backup(&store, "cf").await.unwrap(),
            "20240102T030405Z"
        );
        assert_eq!(
            delete_backup(
                &store,
                "cf",
                "20240103T030405Z",
                crate::catalog::IfMisplaced::Refuse
            )
            .await
            .unwrap()
            .objects,
            1
        );
        assert_eq!(list_backups(&store, Some("cf")).await.unwrap().len(), 1);
    }
}
