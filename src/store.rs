//! Backups in an object store: layout, manifest, catalog (list, show, verify, delete) and
//! reading artifacts back.
//!
//! Layout under the store's prefix: `<deployment>/<backup id>/` holding one object per job
//! artifact (`<group>-<index>-<job>.tar.zst`), `metadata` (bbr's YAML, unchanged schema) and
//! `manifest.json`, written last and only when every artifact was stored and verified. A
//! backup without a manifest is incomplete: never listed as restorable, and removed by the
//! next backup of the same deployment (once its pre-checks show no other run is active) or by
//! `backups delete`.

use std::collections::BTreeMap;
use std::io::{self, Read};
use std::sync::Arc;

use bytes::Bytes;
use cairn_store::{ArtifactStore, ArtifactStoreExt, ObjectKey, PutOptions, StoreError};
use chrono::{DateTime, NaiveDateTime, Utc};
use futures::StreamExt;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use crate::artifact::tar_digest::{digest_tar_files, EntryPolicy};
use crate::artifact::BackupMetadata;
use crate::error::{Error, RunErrors};
use crate::job::ScriptName;
use crate::manifest::{
    Compression, JobTimes, Manifest, ManifestArtifact, ManifestObject, MANIFEST_NAME,
    MANIFEST_SCHEMA, METADATA_NAME,
};
use crate::orchestrator::backup::StoreTarget;
use crate::orchestrator::destination::StoreDestination;
use crate::orchestrator::transfer::Downloaded;
use crate::orchestrator::ScriptRecord;
use crate::retention::{verification_order, Verification};

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

/// Parses a backup id into a time.
#[must_use]
pub fn backup_time(id: &str) -> Option<DateTime<Utc>> {
    NaiveDateTime::parse_from_str(id, "%Y%m%dT%H%M%SZ")
        .ok()
        .map(|t| t.and_utc())
}

fn backup_key(deployment: &str, id: &str) -> Result<ObjectKey, Error> {
    ObjectKey::parse(&format!("{deployment}/{id}")).map_err(Error::StoredBackup)
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

/// The newest complete backup of a deployment.
///
/// # Errors
/// Store failures, or none found.
pub async fn latest_backup(store: &dyn ArtifactStore, deployment: &str) -> Result<String, Error> {
    list_backups(store, Some(deployment))
        .await?
        .into_iter()
        .rev()
        .find(|b| b.complete)
        .map(|b| b.id)
        .ok_or_else(|| {
            Error::StoredBackup(format!(
                "No complete backup of deployment `{deployment}` in {store}"
            ))
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
    let key = backup_key(deployment, id)?
        .join(MANIFEST_NAME)
        .map_err(Error::StoredBackup)?;
    let data = match store.get_bytes(&key, None).await {
        Ok(data) => data,
        Err(StoreError::NotFound { .. }) => {
            return Err(Error::StoredBackup(format!(
                "Backup `{deployment}/{id}` in {store} has no {MANIFEST_NAME}: it does not exist or is incomplete; run `cairn backups list`"
            )))
        }
        Err(error) => return Err(error.into()),
    };
    Manifest::parse(&data).map_err(|e| {
        Error::StoredBackup(format!(
            "Manifest of `{deployment}/{id}` in {store} is invalid: {e}"
        ))
    })
}

/// Checks the store and starts a backup in it; removes incomplete backups of the deployment.
///
/// # Errors
/// Store failures, an unversioned store when versioning is required, retention unsupported.
pub async fn prepare_backup(
    target: &StoreTarget,
    deployment: &str,
    backup_id: &str,
    concurrent_streams: usize,
) -> Result<StoreDestination, Error> {
    let store = &target.store;
    let capabilities = store.capabilities().await?;
    if let Some(command) = &target.require_versioning {
        if !capabilities.versioning {
            return Err(StoreError::Configuration {
                store: store.to_string(),
                detail: format!("versioning is not enabled; enable it with `{command}`, or pass --allow-unversioned"),
            }
            .into());
        }
    }
    if target.retention.is_some() && !capabilities.retention {
        return Err(StoreError::Configuration {
            store: store.to_string(),
            detail: "--retain-days needs Object Lock (object retention) enabled on the bucket; it is not".into(),
        }
        .into());
    }
    remove_incomplete(store.as_ref(), deployment).await?;
    Ok(StoreDestination {
        store: Arc::clone(store),
        backup_key: backup_key(deployment, backup_id)?,
        compression: target.compression,
        put_options: PutOptions {
            retention: target.retention,
        },
        compression_workers: crate::orchestrator::destination::compression_workers(
            concurrent_streams,
        ),
    })
}

async fn remove_incomplete(store: &dyn ArtifactStore, deployment: &str) -> Result<(), Error> {
    let aborted = store
        .abort_unfinished_uploads(&format!("{deployment}/"))
        .await?;
    if aborted > 0 {
        tracing::info!("Aborted {aborted} unfinished upload(s) of an earlier backup of {deployment} in {store}");
    }
    for backup in list_backups(store, Some(deployment)).await? {
        if !backup.complete {
            tracing::info!(
                "Removing incomplete backup {}/{} from {store}",
                backup.deployment,
                backup.id
            );
            delete_objects(store, &backup.deployment, &backup.id, &[]).await?;
        }
    }
    Ok(())
}

/// Removes what a failed backup stored (best effort: leftovers are removed by the next run).
pub(crate) async fn discard_backup<'a>(
    destination: &StoreDestination,
    artifacts: impl Iterator<Item = (&'a str, &'a Downloaded)>,
) {
    for (name, downloaded) in artifacts {
        let key = destination.key(&format!("{name}.{}", destination.compression.extension()));
        if let Err(error) = destination
            .store
            .delete(&key, downloaded.version.as_deref())
            .await
        {
            tracing::warn!("Could not remove {key} of a failed backup: {error}");
        }
    }
}

/// A verified artifact to record in the manifest.
#[derive(Debug)]
pub(crate) struct StoredArtifact<'a> {
    pub name: &'a str,
    pub group: &'a str,
    pub index: &'a str,
    pub job: &'a str,
    pub downloaded: &'a Downloaded,
}

/// What the manifest records besides the artifacts.
#[derive(Debug)]
pub(crate) struct BackupRecord<'a> {
    pub deployment: &'a str,
    pub backup_id: &'a str,
    pub started_at: DateTime<Utc>,
    pub metadata: &'a BackupMetadata,
    pub scripts: &'a [ScriptRecord],
}

/// Writes `metadata`, then `manifest.json` — the last object of a backup.
pub(crate) async fn write_manifest(
    destination: &StoreDestination,
    record: &BackupRecord<'_>,
    artifacts: Vec<StoredArtifact<'_>>,
) -> Result<(), Error> {
    let store = &destination.store;
    let metadata_bytes = Bytes::from(record.metadata.to_yaml());
    let metadata_key = destination.key(METADATA_NAME);
    let metadata_put = store
        .put_bytes(
            &metadata_key,
            metadata_bytes.clone(),
            &destination.put_options,
        )
        .await?;
    let mut manifest_artifacts: Vec<ManifestArtifact> = artifacts
        .iter()
        .map(|a| ManifestArtifact {
            name: a.name.to_string(),
            group: a.group.to_string(),
            index: a.index.to_string(),
            job: a.job.to_string(),
            key: destination
                .key(&format!(
                    "{}.{}",
                    a.name,
                    destination.compression.extension()
                ))
                .to_string(),
            size: a.downloaded.stored.size,
            sha256: a.downloaded.stored.sha256.clone(),
            version: a.downloaded.version.clone(),
            files: a.downloaded.files.clone(),
        })
        .collect();
    manifest_artifacts.sort_by(|a, b| a.name.cmp(&b.name));
    let manifest = Manifest {
        schema: MANIFEST_SCHEMA,
        cairn_version: crate::VERSION.to_string(),
        deployment: record.deployment.to_string(),
        backup_id: record.backup_id.to_string(),
        started_at: record.started_at,
        finished_at: Utc::now(),
        compression: destination.compression,
        artifacts: manifest_artifacts,
        jobs: job_times(record.scripts),
        metadata: ManifestObject {
            key: metadata_key.to_string(),
            version: metadata_put.version,
            sha256: hex::encode(Sha256::digest(&metadata_bytes)),
        },
    };
    let manifest_key = destination.key(MANIFEST_NAME);
    store
        .put_bytes(
            &manifest_key,
            Bytes::from(manifest.to_json()),
            &destination.put_options,
        )
        .await?;
    Ok(())
}

fn job_times(scripts: &[ScriptRecord]) -> Vec<JobTimes> {
    let mut jobs: BTreeMap<(String, String), JobTimes> = BTreeMap::new();
    for record in scripts {
        let entry = jobs
            .entry((record.instance.clone(), record.job.clone()))
            .or_insert_with(|| JobTimes {
                instance: record.instance.clone(),
                job: record.job.clone(),
                locked_at: None,
                unlocked_at: None,
            });
        match record.script {
            ScriptName::PreBackupLock if record.success => {
                entry.locked_at = Some(record.finished_at)
            }
            ScriptName::PostBackupUnlock => entry.unlocked_at = Some(record.finished_at),
            _ => {}
        }
    }
    jobs.into_values()
        .filter(|j| j.locked_at.is_some() || j.unlocked_at.is_some())
        .collect()
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

/// Counts and hashes bytes as they are read.
pub struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    size: u64,
}

impl<R> std::fmt::Debug for HashingReader<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HashingReader")
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

impl<R: Read> HashingReader<R> {
    /// Wraps a reader.
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            size: 0,
        }
    }

    /// `(size, sha256 hex)` of everything read so far.
    pub fn summary(&self) -> (u64, String) {
        (self.size, hex::encode(self.hasher.clone().finalize()))
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let count = self.inner.read(buf)?;
        self.hasher.update(&buf[..count]);
        self.size += count as u64;
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

/// Re-reads every object of a backup and checks sizes, digests, every file and every tar entry.
///
/// # Errors
/// One error per damaged or missing object.
pub async fn verify_backup(
    store: &Arc<dyn ArtifactStore>,
    deployment: &str,
    id: &str,
    parallelism: usize,
) -> Result<Manifest, RunErrors> {
    let manifest = read_manifest(store.as_ref(), deployment, id).await?;
    let checks = manifest
        .artifacts
        .iter()
        .map(|artifact| verify_artifact(store, artifact, manifest.compression));
    let mut errors: Vec<Error> = futures::stream::iter(checks)
        .buffer_unordered(parallelism.max(1))
        .filter_map(|r| async move { r.err() })
        .collect()
        .await;
    if let Err(error) = verify_metadata(store.as_ref(), &manifest).await {
        errors.push(error);
    }
    RunErrors(errors).into_result()?;
    Ok(manifest)
}

async fn verify_metadata(store: &dyn ArtifactStore, manifest: &Manifest) -> Result<(), Error> {
    let key = ObjectKey::parse(&manifest.metadata.key).map_err(Error::StoredBackup)?;
    let data = store
        .get_bytes(&key, manifest.metadata.version.as_deref())
        .await
        .map_err(|e| damaged(&manifest.metadata.key, &e.to_string()))?;
    if hex::encode(Sha256::digest(&data)) != manifest.metadata.sha256 {
        return Err(damaged(
            &manifest.metadata.key,
            "its sha256 does not match the manifest",
        ));
    }
    Ok(())
}

fn damaged(key: &str, detail: &str) -> Error {
    Error::StoredBackup(format!(
        "Stored object `{key}` is damaged or missing: {detail}"
    ))
}

/// Verifies one stored artifact completely, reading it once.
///
/// # Errors
/// Missing object, wrong size or digest, files that differ, unsafe entries.
pub async fn verify_artifact(
    store: &Arc<dyn ArtifactStore>,
    artifact: &ManifestArtifact,
    compression: Compression,
) -> Result<(), Error> {
    let key = ObjectKey::parse(&artifact.key).map_err(Error::StoredBackup)?;
    let head = store
        .head(&key, artifact.version.as_deref())
        .await
        .map_err(|e| damaged(&artifact.key, &e.to_string()))?;
    if head.size != artifact.size {
        return Err(damaged(
            &artifact.key,
            &format!(
                "it has {} bytes, the manifest says {}",
                head.size, artifact.size
            ),
        ));
    }
    let reader = StoreReader::open(store.as_ref(), &key, artifact.version.as_deref())
        .await
        .map_err(|e| damaged(&artifact.key, &e.to_string()))?;
    let expected = artifact.clone();
    tokio::task::spawn_blocking(move || {
        let mut hashing = HashingReader::new(reader);
        let files = {
            let tar = tar_reader(&mut hashing, compression)
                .map_err(|e| damaged(&expected.key, &e.to_string()));
            match tar {
                Ok(tar) => digest_tar_files(tar, EntryPolicy::RefuseEscapes)
                    .map_err(|e| damaged(&expected.key, &e.to_string())),
                Err(e) => Err(e),
            }
        };
        io::copy(&mut hashing, &mut io::sink())
            .map_err(|e| damaged(&expected.key, &e.to_string()))?;
        let files = files?;
        let (size, sha256) = hashing.summary();
        if size != expected.size || sha256 != expected.sha256 {
            return Err(damaged(
                &expected.key,
                "its sha256 does not match the manifest",
            ));
        }
        if files != expected.files {
            return Err(damaged(
                &expected.key,
                "the files inside do not match the manifest",
            ));
        }
        Ok(())
    })
    .await
    .expect("verify thread")
}

/// Deletes every object of a backup, including the recorded versions.
///
/// # Errors
/// Store failures (an object under retention cannot be deleted: the error says so).
pub async fn delete_backup(
    store: &dyn ArtifactStore,
    deployment: &str,
    id: &str,
) -> Result<usize, Error> {
    let versions: Vec<(String, Option<String>)> = match read_manifest(store, deployment, id).await {
        Ok(manifest) => manifest
            .artifacts
            .iter()
            .map(|a| (a.key.clone(), a.version.clone()))
            .chain(std::iter::once((
                manifest.metadata.key.clone(),
                manifest.metadata.version.clone(),
            )))
            .collect(),
        Err(_) => Vec::new(),
    };
    delete_objects(store, deployment, id, &versions).await
}

async fn delete_objects(
    store: &dyn ArtifactStore,
    deployment: &str,
    id: &str,
    versions: &[(String, Option<String>)],
) -> Result<usize, Error> {
    let prefix = format!("{deployment}/{id}/");
    let mut deleted = 0;
    for (key, version) in versions {
        if let (Ok(key), Some(version)) = (ObjectKey::parse(key), version) {
            match store.delete(&key, Some(version)).await {
                Ok(()) | Err(StoreError::NotFound { .. }) => {}
                Err(error) => return Err(error.into()),
            }
        }
    }
    // The manifest goes first so that a partly deleted backup is never listed as complete.
    let mut objects = store.list(&prefix).await?;
    objects.sort_by_key(|o| !o.key.as_str().ends_with(MANIFEST_NAME));
    for object in objects {
        match store.delete(&object.key, None).await {
            Ok(()) | Err(StoreError::NotFound { .. }) => deleted += 1,
            Err(error) => return Err(error.into()),
        }
    }
    Ok(deleted.max(versions.len()))
}

/// Verifies the complete backups of `deployment` newest first until one passes: the backup
/// `backups prune` never deletes. Each one that fails is recorded with what was wrong (a
/// store that cannot be read fails them all, which keeps them all).
pub async fn find_newest_verified(
    store: &Arc<dyn ArtifactStore>,
    deployment: &str,
    backups: &[BackupSummary],
    parallelism: usize,
) -> Verification {
    let mut verification = Verification::default();
    for backup in verification_order(deployment, backups) {
        match verify_backup(store, deployment, &backup.id, parallelism).await {
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
) -> DeleteOutcome {
    match delete_backup(store, deployment, id).await {
        Ok(count) => DeleteOutcome::Deleted(count),
        Err(error) => match refusal(&error) {
            Some(detail) => DeleteOutcome::Protected(detail.to_string()),
            None => DeleteOutcome::Failed(error),
        },
    }
}

/// What the store said, when `error` is a refusal (see [`DeleteOutcome::Protected`]). The
/// adapters map 401 and 403 to [`StoreError::Credentials`]; Azure's immutability refusal is
/// a 409 whose error code the adapter keeps in the detail.
fn refusal(error: &Error) -> Option<&str> {
    match error {
        Error::Store(StoreError::Credentials { detail, .. }) => Some(detail),
        Error::Store(StoreError::Other { detail, .. })
            if detail.contains("BlobImmutableDueToPolicy") =>
        {
            Some(detail)
        }
        _ => None,
    }
}

/// Opens the store a URL names, with credentials from the store's standard chain.
///
/// # Errors
/// A bad URL or a store that cannot be set up.
pub async fn open_store(url: &str) -> Result<Arc<dyn ArtifactStore>, Error> {
    let location = cairn_store::StoreLocation::parse(url).map_err(Error::StoredBackup)?;
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

/// The command that enables versioning on an S3 bucket, when the URL is S3 (the only store
/// whose backups are refused without versioning).
#[must_use]
pub fn versioning_command(url: &str) -> Option<String> {
    match cairn_store::StoreLocation::parse(url).ok()? {
        cairn_store::StoreLocation::S3 { bucket, .. } => Some(format!(
            "aws s3api put-bucket-versioning --bucket {bucket} --versioning-configuration Status=Enabled"
        )),
        _ => None,
    }
}

/// Checks a store is reachable and writable by writing and deleting a small object.
///
/// # Errors
/// The store's error.
pub async fn check_writable(store: &dyn ArtifactStore, deployment: &str) -> Result<(), Error> {
    store.capabilities().await?;
    let key = ObjectKey::parse(&format!("{deployment}/.cairn-write-check"))
        .map_err(Error::StoredBackup)?;
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
    use cairn_store::local::LocalStore;

    #[test]
    fn refusals_by_the_store_are_told_from_other_delete_failures() {
        let store = || "s3://b".to_string();
        let locked = Error::Store(StoreError::Credentials {
            store: store(),
            detail: "HTTP 403 AccessDenied: Access Denied".into(),
            hint: "set AWS_*".into(),
        });
        let immutable = Error::Store(StoreError::Other {
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
        assert_eq!(refusal(&Error::StoredBackup("x".into())), None);
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
            delete_backup(&store, "cf", "20240103T030405Z")
                .await
                .unwrap(),
            1
        );
        assert_eq!(list_backups(&store, Some("cf")).await.unwrap().len(), 1);
    }
}
