//! Backups in an object store: layout, manifest, catalog (list, show, verify, delete) and
//! reading artifacts back.
//!
//! Layout under the store's prefix: `<deployment>/<backup id>/` holding one object per job
//! artifact (`<group>-<index>-<job>.tar.zst`, `.tar.zst.age` when encrypted with
//! `--encrypt-to`), `metadata` (bbr's YAML, unchanged schema) and
//! `manifest.json`, written last and only when every artifact was stored and verified. A
//! backup without a manifest is incomplete: never listed as restorable, and removed by the
//! next backup of the same deployment (once its pre-checks show no other run is active) or by
//! `backups delete`.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::sync::Arc;

use bytes::Bytes;
use cairn_store::{ArtifactStore, ArtifactStoreExt, ObjectKey, PutOptions, StoreError};
use chrono::{DateTime, NaiveDateTime, Utc};
use futures::StreamExt;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use crate::format::digest::{digest_tar_files, digest_tar_forwarding, EntryPolicy};
use crate::format::bbr_directory::BackupMetadata;
use crate::format::encryption::{DecryptFailure, Identities, AGE_HEADER, AGE_X25519};
use crate::error::{Error, RunErrors};
use crate::model::job::ScriptName;
use crate::format::manifest::{
    ArtifactEncryption, Compression, JobTimes, Manifest, ManifestArtifact, ManifestObject,
    MANIFEST_NAME, MANIFEST_SCHEMA, METADATA_NAME,
};
use crate::workflow::backup::StoreTarget;
use crate::workflow::destination::StoreDestination;
use crate::workflow::transfer::Downloaded;
use crate::workflow::ScriptRecord;
use crate::catalog::retention::{verification_order, Verification};

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
        compression_workers: crate::workflow::destination::compression_workers(
            concurrent_streams,
        ),
        encryption: target.encryption.clone(),
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
        let key = destination.artifact_key(name);
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
            key: destination.artifact_key(a.name).to_string(),
            size: a.downloaded.stored.size,
            sha256: a
                .downloaded
                .stored
                .sha256
                .clone()
                .expect("a store writer hashes what it stores"),
            version: a.downloaded.version.clone(),
            files: a.downloaded.files.clone(),
            encryption: destination
                .encryption
                .as_ref()
                .map(crate::format::encryption::Recipients::record),
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

/// A backup [`verify_backup`] found intact.
#[derive(Debug, Clone)]
pub struct Verified {
    /// Its manifest.
    pub manifest: Manifest,
    /// Encrypted artifacts whose stored bytes were checked, but not the files inside (no
    /// identity was given); 0 when every file of every artifact was checked.
    pub contents_unchecked: usize,
}

/// Checks that an encrypted backup can be decrypted with `identities`, before anything else
/// is read: one error naming the backup when it is encrypted with a scheme Cairn cannot read,
/// when no identity was given (and `require_identity`), or when none of them matches (the
/// header of the first encrypted artifact is read to find out). A damaged header is left for
/// the full verification to report.
///
/// # Errors
/// The one error.
pub async fn check_identities(
    store: &Arc<dyn ArtifactStore>,
    manifest: &Manifest,
    identities: &Identities,
    require_identity: bool,
) -> Result<(), Error> {
    let Some(encryption) = manifest.encryption() else {
        return Ok(());
    };
    let backup = format!("{}/{}", manifest.deployment, manifest.backup_id);
    if let Some(artifact) = manifest.artifacts.iter().find(|a| {
        a.encryption
            .as_ref()
            .is_some_and(|e| e.scheme != AGE_X25519)
    }) {
        return Err(Error::StoredBackup(format!(
            "Backup {backup} in {store}: artifact `{}` is encrypted with `{}`, which this Cairn cannot read",
            artifact.name,
            artifact.encryption.as_ref().map_or("", |e| e.scheme.as_str())
        )));
    }
    if identities.is_empty() {
        if !require_identity {
            return Ok(());
        }
        return Err(Error::StoredBackup(format!(
            "Backup {backup} in {store} is encrypted ({}): give its age identity file with --identity FILE; nothing was restored",
            describe_encryption(encryption)
        )));
    }
    let Some(artifact) = manifest.artifacts.iter().find(|a| a.encryption.is_some()) else {
        return Ok(());
    };
    let Ok(key) = ObjectKey::parse(&artifact.key) else {
        return Ok(());
    };
    let Ok(reader) = StoreReader::open(store.as_ref(), &key, artifact.version.as_deref()).await
    else {
        return Ok(());
    };
    let identities = identities.clone();
    let failure = tokio::task::spawn_blocking(move || identities.decrypt(reader).err())
        .await
        .expect("header thread");
    match failure {
        Some(DecryptFailure::NoMatchingIdentity) => Err(Error::StoredBackup(format!(
            "Backup {backup} in {store} is encrypted ({}) and no identity given with --identity matches its recipients",
            describe_encryption(encryption)
        ))),
        _ => Ok(()),
    }
}

/// `age-x25519, 2 recipients`.
#[must_use]
pub fn describe_encryption(encryption: &ArtifactEncryption) -> String {
    format!(
        "{}, {} recipient{}",
        encryption.scheme,
        encryption.recipients,
        if encryption.recipients == 1 { "" } else { "s" }
    )
}

/// Re-reads every object of a backup and checks sizes, digests, every file and every tar
/// entry. Encrypted artifacts are decrypted with `identities`; without any, only their stored
/// bytes are checked (size, sha256, the age header) unless `require_identity`, which refuses
/// the backup instead (restore). No identity that matches is refused either way.
///
/// # Errors
/// One error per damaged or missing object, or the one of [`check_identities`].
pub async fn verify_backup(
    store: &Arc<dyn ArtifactStore>,
    deployment: &str,
    id: &str,
    parallelism: usize,
    identities: &Identities,
    require_identity: bool,
) -> Result<Verified, RunErrors> {
    let manifest = read_manifest(store.as_ref(), deployment, id).await?;
    check_identities(store, &manifest, identities, require_identity).await?;
    let checks = manifest
        .artifacts
        .iter()
        .map(|artifact| verify_artifact(store, artifact, manifest.compression, identities));
    let results: Vec<Result<Checked, Error>> = futures::stream::iter(checks)
        .buffer_unordered(parallelism.max(1))
        .collect()
        .await;
    let contents_unchecked = results
        .iter()
        .filter(|r| matches!(r, Ok(Checked::StoredBytes)))
        .count();
    let mut errors: Vec<Error> = results.into_iter().filter_map(Result::err).collect();
    if let Err(error) = verify_metadata(store.as_ref(), &manifest).await {
        errors.push(error);
    }
    RunErrors(errors).into_result()?;
    Ok(Verified {
        manifest,
        contents_unchecked,
    })
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

/// How much of one artifact [`verify_artifact`] checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checked {
    /// Size and sha256 of the stored bytes, every file, every tar entry.
    Everything,
    /// Size and sha256 of the stored bytes only: encrypted, and no identity was given.
    StoredBytes,
}

/// Verifies one stored artifact, reading it once: completely, or (encrypted, no identity)
/// its stored bytes.
///
/// # Errors
/// Missing object, wrong size or digest, files that differ, unsafe entries, an artifact that
/// cannot be decrypted.
pub async fn verify_artifact(
    store: &Arc<dyn ArtifactStore>,
    artifact: &ManifestArtifact,
    compression: Compression,
    identities: &Identities,
) -> Result<Checked, Error> {
    let reader = open_artifact(store, artifact).await?;
    let expected = artifact.clone();
    let identities = identities.clone();
    tokio::task::spawn_blocking(move || {
        check_artifact_stream(reader, &expected, compression, &identities, None)
    })
    .await
    .expect("verify thread")
}

/// Opens a stored artifact for reading after checking that it exists at the recorded version
/// with the recorded size (a `HEAD`, nothing downloaded yet).
///
/// # Errors
/// Missing object or wrong size, as "damaged or missing".
pub async fn open_artifact(
    store: &Arc<dyn ArtifactStore>,
    artifact: &ManifestArtifact,
) -> Result<StoreReader, Error> {
    let key = head_artifact(store.as_ref(), artifact).await?;
    StoreReader::open(store.as_ref(), &key, artifact.version.as_deref())
        .await
        .map_err(|e| damaged(&artifact.key, &e.to_string()))
}

/// Checks that an artifact's object exists at its recorded version with its recorded size.
async fn head_artifact(
    store: &dyn ArtifactStore,
    artifact: &ManifestArtifact,
) -> Result<ObjectKey, Error> {
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
    Ok(key)
}

/// What a restore checks before it connects to anything, without downloading the artifacts:
/// the manifest, that an encrypted backup can be decrypted with `identities` (one header is
/// read), the `metadata` object, and every artifact's object at its recorded version and
/// size. The contents are checked as they are restored ([`check_artifact_stream`]).
///
/// # Errors
/// One error per missing or damaged object, or the one of [`check_identities`].
pub async fn check_backup_objects(
    store: &Arc<dyn ArtifactStore>,
    deployment: &str,
    id: &str,
    parallelism: usize,
    identities: &Identities,
) -> Result<Manifest, RunErrors> {
    let manifest = read_manifest(store.as_ref(), deployment, id).await?;
    check_identities(store, &manifest, identities, true).await?;
    let heads = manifest
        .artifacts
        .iter()
        .map(|artifact| head_artifact(store.as_ref(), artifact));
    let mut errors: Vec<Error> = futures::stream::iter(heads)
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

/// Checks one stored artifact as it is read (blocking; on a reading thread): size and sha256
/// of the stored bytes, and, after decryption and decompression, every tar entry and every
/// file against the manifest. With `forward`, the tar stream is passed on while it is checked
/// ([`digest_tar_forwarding`]: an unsafe entry is never passed on), which is how a restore
/// reads each artifact once; the caller must discard what was forwarded when this fails, as
/// a damaged object is only known at its end.
///
/// # Errors
/// As [`verify_artifact`]; with `forward`, also an encrypted artifact without `identities`.
pub fn check_artifact_stream(
    reader: StoreReader,
    expected: &ManifestArtifact,
    compression: Compression,
    identities: &Identities,
    forward: Option<&mut dyn Write>,
) -> Result<Checked, Error> {
    let mut hashing = HashingReader::new(reader);
    let encrypted = expected.encryption.is_some();
    let checked = if encrypted && identities.is_empty() {
        Checked::StoredBytes
    } else {
        Checked::Everything
    };
    if checked == Checked::StoredBytes && forward.is_some() {
        return Err(Error::StoredBackup(format!(
            "`{}` is encrypted: give its age identity file with --identity FILE",
            expected.key
        )));
    }
    let files = match checked {
        Checked::StoredBytes => check_age_header(&mut hashing).map(|()| None),
        Checked::Everything => {
            digest_stored(&mut hashing, compression, encrypted, identities, forward).map(Some)
        }
    }
    .map_err(|detail| damaged(&expected.key, &detail));
    io::copy(&mut hashing, &mut io::sink()).map_err(|e| damaged(&expected.key, &e.to_string()))?;
    let files = files?;
    let (size, sha256) = hashing.summary();
    if size != expected.size || sha256 != expected.sha256 {
        return Err(damaged(
            &expected.key,
            "its sha256 does not match the manifest",
        ));
    }
    if files.is_some_and(|files| files != expected.files) {
        return Err(damaged(
            &expected.key,
            "the files inside do not match the manifest",
        ));
    }
    Ok(checked)
}

/// Decrypts (when encrypted), decompresses and digests every file of a stored artifact,
/// passing the tar stream on to `forward` when given.
fn digest_stored<R: Read + Send>(
    stored: R,
    compression: Compression,
    encrypted: bool,
    identities: &Identities,
    forward: Option<&mut dyn Write>,
) -> Result<crate::format::digest::FileDigests, String> {
    let plain: Box<dyn Read + Send + '_> = if encrypted {
        Box::new(identities.decrypt(stored).map_err(|e| e.to_string())?)
    } else {
        Box::new(stored)
    };
    let tar = tar_reader(plain, compression).map_err(|e| e.to_string())?;
    match forward {
        Some(writer) => digest_tar_forwarding(tar, writer),
        None => digest_tar_files(tar, EntryPolicy::RefuseEscapes),
    }
    .map_err(|e| e.to_string())
}

/// The stored bytes of an encrypted artifact start with the age header.
fn check_age_header<R: Read>(stored: &mut R) -> Result<(), String> {
    let mut start = [0_u8; AGE_HEADER.len()];
    match stored.read_exact(&mut start) {
        Ok(()) if start == AGE_HEADER => Ok(()),
        Ok(()) => Err("it is not an age file, but the manifest says it is encrypted".into()),
        Err(error) => Err(error.to_string()),
    }
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
    use crate::format::encryption::Recipients;
    use crate::workflow::destination::Destination;
    use cairn_store::local::LocalStore;
    use std::io::Write;

    /// A tar with a few files, in memory.
    fn sample_tar() -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (name, size) in [("./a.txt", 10_usize), ("./dir/b.bin", 300_000)] {
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

    /// Writes a one-artifact backup `cf/20240102T030405Z` through the real store writer
    /// and manifest writer.
    async fn write_backup(
        store: Arc<dyn ArtifactStore>,
        compression: Compression,
        encryption: Option<Recipients>,
    ) -> Vec<u8> {
        let destination = StoreDestination {
            store,
            backup_key: ObjectKey::parse("cf/20240102T030405Z").unwrap(),
            compression,
            put_options: PutOptions::default(),
            compression_workers: 1,
            encryption,
        };
        let tar = sample_tar();
        let (mut writer, pending) = Destination::Store(destination.clone())
            .open_artifact("app-0-files")
            .await
            .unwrap();
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
        let downloaded = Downloaded {
            files,
            stored,
            version,
        };
        let record = BackupRecord {
            deployment: "cf",
            backup_id: "20240102T030405Z",
            started_at: Utc::now(),
            metadata: &BackupMetadata::default(),
            scripts: &[],
        };
        let artifacts = vec![StoredArtifact {
            name: "app-0-files",
            group: "app",
            index: "0",
            job: "files",
            downloaded: &downloaded,
        }];
        write_manifest(&destination, &record, artifacts)
            .await
            .unwrap();
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

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn unencrypted_backups_need_no_identity_and_ignore_one() {
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
        for identities in [Identities::default(), identities] {
            let verified = verify_backup(&store, "cf", "20240102T030405Z", 1, &identities, true)
                .await
                .unwrap();
            assert_eq!(verified.contents_unchecked, 0);
        }
    }

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
