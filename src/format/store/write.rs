//! Writing a backup into an object store: the [`BackupSink`] half of [`super`].
//!
//! [`StoreSink::start`] checks the store once (versioning when required — through
//! `capabilities_for_writing`, which on Azure writes and deletes a probe blob — and Object Lock
//! for `--retain-days`, and that one object can hold a segment of `--segment-size`) and removes
//! incomplete backups of the deployment. Each artifact's writer splits the plain stream into
//! segments ([`super::segment`]); each segment is compressed with zstd, encrypted with age when
//! the backup has recipients (`--encrypt-to`), hashed as stored (and its plain bytes too), and
//! handed in fixed-size chunks to the artifact's upload task through a bounded channel, so
//! nothing touches the coordinator's disk and memory stays bounded. Each full segment is
//! completed at once and recorded in the backup's [`SegmentLog`]; the last one only after the
//! instance's checksums matched. A discarded artifact (or failed backup) has every segment it
//! completed deleted at its version and its open upload aborted. `metadata` and
//! then `manifest.json` are written last, only for a complete backup (with `--signing-key`,
//! `signature.json` just before the manifest, [`super::signed`]); an incomplete one has its
//! artifacts removed (and anything left is removed by the next backup). The byte pipeline
//! (segments cut, compressed, sealed, uploaded) is the `upload` module; this one keeps the sink's
//! bookkeeping: the store checks, the segment log and resumes, the manifest and signatures.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use cairn_store::{
    ArtifactStore, ArtifactStoreExt, Capabilities, ObjectKey, PutOptions, Retention, StoreError,
};
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

use super::failed_run::{write_failed_run, FailedArtifact, FailedRun};
use super::segment::{list_digest, SegmentDigest, SegmentSize};
use super::signed::{backup_statement, newest_signed, write_signature};
use super::{backup_key, delete_objects, invalid_name, list_backups, StoreSource};
use crate::error::{Error, StoredBackupError};
use crate::format::bbr_directory::ArtifactError;
use crate::format::encryption::{Identities, Recipients};
use crate::format::manifest::{
    Compression, DeploymentManifestObject, JobTimes, Manifest, ManifestArtifact, ManifestObject,
    ManifestSegment, DEPLOYMENT_MANIFEST_NAME, MANIFEST_NAME, MANIFEST_SCHEMA, METADATA_NAME,
    RECORD_LIMIT,
};
use crate::format::signature::{SeenBackup, SeenBackups, SigningKey, Statement, TrustedKeys};
use crate::format::sink::{
    BackupRecord, BackupSink, BackupSource, NewBackup, OpenArtifact, OpenBackup, ResumeSetup,
    SegmentObserver, StoredArtifact,
};
use crate::model::job::{ScriptName, ScriptRecord};

mod upload;
use upload::{open_upload, store_failure};

/// Size of the chunks handed to an upload (the adapter assembles its own parts). Small, since
/// every parallel stream holds a few of them on top of the process's shared part budget.
const UPLOAD_CHUNK: usize = 256 << 10;
/// Chunks queued between the digest thread and the upload task.
const UPLOAD_QUEUE: usize = 4;

/// Backups written into an object store (`--store URL`).
#[derive(Debug, Clone)]
pub struct StoreSink {
    /// The store.
    pub store: Arc<dyn ArtifactStore>,
    /// Artifact compression.
    pub compression: Compression,
    /// Retention for every object, manifest included.
    pub retention: Option<Retention>,
    /// Refuse a store without versioning, with this fix in the message
    /// ([`super::versioning_command`]).
    pub require_versioning: Option<String>,
    /// Encrypt every artifact to these age recipients (`--encrypt-to`).
    pub encryption: Option<Recipients>,
    /// Identities to read the backup back with (drills), when encrypted.
    pub identities: Identities,
    /// Sign the backup (`--signing-key`); `None`: unsigned.
    pub signing: Option<Signing>,
    /// Plain bytes per segment of an artifact (`--segment-size`, [`super::segment`]).
    pub segment_size: SegmentSize,
    /// `backup --resume`: the backup being finished is incomplete on purpose, so `start`
    /// leaves the deployment's incomplete backups in place.
    pub resuming: bool,
}

impl StoreSink {
    /// Backups into `store` with `compression`: no retention, no versioning required, not
    /// encrypted, not signed (the fields are public to turn each on).
    #[must_use]
    pub fn new(store: Arc<dyn ArtifactStore>, compression: Compression) -> StoreSink {
        StoreSink {
            store,
            compression,
            retention: None,
            require_versioning: None,
            encryption: None,
            identities: Identities::default(),
            signing: None,
            segment_size: SegmentSize::default(),
            resuming: false,
        }
    }
}

/// How a backup is signed: the key, and where this machine records the newest backup it
/// signed (the rollback check of `restore --latest`, [`crate::format::signature::seen`]).
#[derive(Debug, Clone)]
pub struct Signing {
    /// `--signing-key`.
    pub key: SigningKey,
    /// The local state of seen backups; `None`: not recorded.
    pub seen: Option<SeenBackups>,
}

/// The start-of-backup check of versioning, shared by `backup` and `pre-backup-check --store`:
/// with `required` (the command that turns it on, [`super::versioning_command`]) a store
/// without versioning is refused. Only a check that depends on versioning pays for a probe
/// that writes (Azure's); returns what the store supports.
///
/// # Errors
/// `StoreError::Configuration` naming the fix and `--allow-unversioned`, or the store's error.
pub async fn check_versioning(
    store: &dyn ArtifactStore,
    required: Option<&str>,
) -> Result<Capabilities, Error> {
    let Some(command) = required else {
        return Ok(store.capabilities().await?);
    };
    let capabilities = store.capabilities_for_writing().await?;
    if !capabilities.versioning {
        return Err(StoreError::Configuration {
            store: store.to_string(),
            detail: format!(
                "versioning is not enabled; enable it with {command}, or pass --allow-unversioned"
            ),
        }
        .into());
    }
    Ok(capabilities)
}

#[async_trait]
impl BackupSink for StoreSink {
    async fn start(&self, backup: &NewBackup<'_>) -> Result<Box<dyn OpenBackup>, Error> {
        let store = &self.store;
        let capabilities =
            check_versioning(store.as_ref(), self.require_versioning.as_deref()).await?;
        if self.retention.is_some() && !capabilities.retention {
            return Err(StoreError::Configuration {
                store: store.to_string(),
                detail: "--retain-days needs Object Lock (object retention) enabled on the bucket; it is not".into(),
            }
            .into());
        }
        self.segment_size.check_store(store.as_ref())?;
        if !self.resuming {
            remove_incomplete(store.as_ref(), backup.deployment).await?;
        }
        Ok(Box::new(StoreBackup {
            store: Arc::clone(store),
            deployment: backup.deployment.to_string(),
            backup_id: backup.backup_id.to_string(),
            started_at: backup.started_at,
            backup_key: backup_key(backup.deployment, backup.backup_id)?,
            compression: self.compression,
            put_options: PutOptions {
                retention: self.retention,
            },
            compression_workers: compression_workers(backup.concurrent_streams),
            encryption: self.encryption.clone(),
            identities: self.identities.clone(),
            deployment_manifest: backup.deployment_manifest.map(str::to_string),
            signing: self.signing.clone(),
            segment_size: self.segment_size,
            segments: SegmentLog::default(),
        }))
    }
}

/// zstd workers per stream: the cores shared by the streams that run at once, so that
/// parallel streams neither oversubscribe the CPU nor multiply zstd's per-worker buffers.
#[must_use]
pub fn compression_workers(concurrent_streams: usize) -> u32 {
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    u32::try_from((cores / concurrent_streams.max(1)).max(1)).unwrap_or(1)
}

/// A backup being written into a store.
#[derive(Debug, Clone)]
pub struct StoreBackup {
    store: Arc<dyn ArtifactStore>,
    deployment: String,
    backup_id: String,
    started_at: DateTime<Utc>,
    /// `<deployment>/<backup id>`.
    backup_key: ObjectKey,
    compression: Compression,
    put_options: PutOptions,
    /// zstd worker threads per artifact stream (1: compress on the digest thread itself).
    compression_workers: u32,
    encryption: Option<Recipients>,
    identities: Identities,
    /// The deployment manifest to save (`--with-manifest`).
    deployment_manifest: Option<String>,
    signing: Option<Signing>,
    segment_size: SegmentSize,
    /// Every segment completed so far, per artifact key.
    segments: SegmentLog,
}

/// The segments completed so far of each artifact of a backup, by artifact key, in order: what
/// the manifest lists, and what a failed backup removes. A segment is recorded as soon as it
/// is completed in the store (with its version and the sha256 of the plain bytes it covers),
/// so a run that stops part-way knows exactly what it stored. A resumable backup
/// ([`OpenBackup::make_resumable`]) also tells its observer (the run journal) of each, keeps
/// them when it fails, and starts from the segments of the run it resumes.
#[derive(Debug, Clone, Default)]
pub struct SegmentLog(Arc<std::sync::Mutex<LogState>>);

#[derive(Debug, Default)]
struct LogState {
    segments: BTreeMap<String, Vec<ManifestSegment>>,
    resume: Option<ResumeSetup>,
}

impl SegmentLog {
    /// Records a completed segment; returns the artifact's segments so far.
    fn record(&self, artifact_key: &str, segment: ManifestSegment) -> Vec<ManifestSegment> {
        tracing::debug!(
            "Stored segment {} ({} bytes, {} plain bytes, plain sha256 {})",
            segment.key,
            segment.size,
            segment.plain_size,
            segment.plain_sha256
        );
        let mut log = self.lock();
        let list = log.segments.entry(artifact_key.to_string()).or_default();
        list.push(segment);
        list.clone()
    }

    /// Records a completed segment and, for a resumable backup, tells the observer before
    /// the next segment is started.
    async fn record_and_tell(&self, artifact_key: &str, segment: ManifestSegment) {
        let all = self.record(artifact_key, segment);
        let observer = self.observer();
        if let Some(observer) = observer {
            observer.stored(artifact_key, all).await;
        }
    }

    fn observer(&self) -> Option<Arc<dyn SegmentObserver>> {
        self.lock().resume.as_ref().map(|r| Arc::clone(&r.observer))
    }

    /// True for a resumable backup: what it stored is kept when it fails.
    fn kept(&self) -> bool {
        self.lock().resume.is_some()
    }

    /// The segments of `artifact_key` that the resumed run stored.
    fn stored_before(&self, artifact_key: &str) -> Vec<ManifestSegment> {
        self.lock()
            .resume
            .as_ref()
            .and_then(|r| r.stored.get(artifact_key).cloned())
            .unwrap_or_default()
    }

    /// Makes the backup resumable, starting from what the resumed run stored.
    fn resume(&self, setup: ResumeSetup) {
        let mut log = self.lock();
        for (key, segments) in &setup.stored {
            log.segments.insert(key.clone(), segments.clone());
        }
        log.resume = Some(setup);
    }

    /// The segments of one artifact, in order.
    #[must_use]
    pub fn of(&self, artifact_key: &str) -> Vec<ManifestSegment> {
        self.lock()
            .segments
            .get(artifact_key)
            .cloned()
            .unwrap_or_default()
    }

    /// Forgets the segments of one artifact (or of all), returning them.
    fn take(&self, artifact_key: Option<&str>) -> Vec<ManifestSegment> {
        let mut log = self.lock();
        match artifact_key {
            Some(key) => log.segments.remove(key).unwrap_or_default(),
            None => std::mem::take(&mut log.segments)
                .into_values()
                .flatten()
                .collect(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LogState> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Deletes stored segments at their versions (best effort: what is left is removed by the
/// next backup of the deployment, or expires under Object Lock).
async fn delete_segments(store: &dyn ArtifactStore, segments: &[ManifestSegment]) {
    for segment in segments {
        let Ok(key) = ObjectKey::parse(&segment.key) else {
            continue;
        };
        match store.delete(&key, segment.version.as_deref()).await {
            Ok(()) | Err(StoreError::NotFound { .. }) => {}
            Err(error) => tracing::warn!("Could not remove segment {key}: {error}"),
        }
    }
}

impl StoreBackup {
    /// Key of an object of this backup.
    ///
    /// # Errors
    /// A name that cannot be one segment of a key: a job or instance group name with a control
    /// character (names come from instances and the Director, unchecked by BOSH).
    pub fn key(&self, name: &str) -> Result<ObjectKey, Error> {
        self.backup_key.join(name).map_err(|_| {
            invalid_name(format!(
                "Cannot store `{name}` in backup {}: an object key segment cannot hold a control character, `/`, or be `.` or `..`; rename the job or instance group, or back up into a bbr directory (--artifact-path)",
                self.backup_key
            ))
        })
    }

    /// Key of an artifact's object: `<name>.tar.zst`, `<name>.tar` without compression, and
    /// `.age` appended when encrypted.
    ///
    /// # Errors
    /// As [`StoreBackup::key`].
    pub fn artifact_key(&self, name: &str) -> Result<ObjectKey, Error> {
        let mut file = format!("{name}.{}", self.compression.extension());
        if self.encryption.is_some() {
            file.push('.');
            file.push_str(crate::format::encryption::EXTENSION);
        }
        self.key(&file)
    }

    /// Key of a streamed artifact's object ([`crate::format::stream`]): `<name>.stream.zst`,
    /// `<name>.stream` without compression, `.age` appended when encrypted. It holds the
    /// stream itself, not a tar.
    ///
    /// # Errors
    /// As [`StoreBackup::key`].
    pub fn stream_key(&self, name: &str) -> Result<ObjectKey, Error> {
        let mut file = format!("{name}.stream");
        if let Compression::Zstd { .. } = self.compression {
            file.push_str(".zst");
        }
        if self.encryption.is_some() {
            file.push('.');
            file.push_str(crate::format::encryption::EXTENSION);
        }
        self.key(&file)
    }

    fn stored_key(&self, artifact: &StoredArtifact) -> Result<ObjectKey, Error> {
        if artifact.stream {
            self.stream_key(&artifact.name)
        } else {
            self.artifact_key(&artifact.name)
        }
    }

    /// Removes what a failed backup stored: every segment of every artifact opened, committed
    /// or not (best effort: leftovers are removed by the next run).
    async fn discard(&self, _record: &BackupRecord) {
        delete_segments(self.store.as_ref(), &self.segments.take(None)).await;
    }
}

impl StoreBackup {
    /// Leaves the record of this failed run ([`super::failed_run`]); a store that refuses it
    /// costs only the record (a warning).
    async fn record_failure(&self, record: &BackupRecord) {
        let run = FailedRun {
            cairn_version: crate::VERSION.to_string(),
            deployment: self.deployment.clone(),
            backup_id: self.backup_id.clone(),
            started_at: self.started_at,
            finished_at: Utc::now(),
            errors: Vec::new(),
            artifacts: record
                .artifacts
                .iter()
                .map(|a| FailedArtifact {
                    name: a.name.clone(),
                    job: a.job.clone(),
                    size: a.stored.size,
                })
                .collect(),
            jobs: job_times(&record.scripts),
        }
        .with_errors(&record.failure);
        if let Err(error) = write_failed_run(self.store.as_ref(), &run).await {
            tracing::warn!(
                "Could not record the failed backup {}/{} in {}: {error}",
                self.deployment,
                self.backup_id,
                self.store
            );
        }
    }
}

#[async_trait]
impl OpenBackup for StoreBackup {
    fn location(&self) -> String {
        format!("{}/{}", self.store, self.backup_key)
    }

    async fn open_artifact(&self, name: &str) -> Result<OpenArtifact, Error> {
        let key = self.artifact_key(name)?;
        check_stored_before(
            self.store.as_ref(),
            &self.segments.stored_before(key.as_str()),
        )
        .await?;
        open_upload(self, key)
    }

    async fn open_stream(&self, name: &str) -> Result<OpenArtifact, Error> {
        open_upload(self, self.stream_key(name)?)
    }

    fn make_resumable(&self, resume: ResumeSetup) -> Result<(), Error> {
        check_resumed_segment_size(self.segment_size.bytes(), &resume, &self.location())?;
        check_resumed_writing(&self.written_as(), &resume, &self.location())?;
        self.segments.resume(resume);
        Ok(())
    }

    fn is_resumable(&self) -> bool {
        self.segments.kept()
    }

    fn written_as(&self) -> String {
        let compression = match self.compression {
            Compression::None => "no compression".to_string(),
            Compression::Zstd { .. } => "zstd".to_string(),
        };
        match &self.encryption {
            None => format!("{compression}, not encrypted"),
            Some(recipients) => format!("{compression}, encrypted to {}", recipients.describe()),
        }
    }

    async fn finish(
        self: Box<Self>,
        record: &BackupRecord,
    ) -> Result<Option<Arc<dyn BackupSource>>, Error> {
        if !record.complete && self.segments.kept() {
            let kept: usize = self.segments.lock().segments.values().map(Vec::len).sum();
            tracing::info!(
                "Kept the {kept} stored segment(s) of the resumable backup {}: finish it with `backup --resume`, or discard it with `backup-cleanup`",
                self.location()
            );
            return Ok(None);
        }
        if !record.complete {
            self.discard(record).await;
            self.record_failure(record).await;
            return Ok(None);
        }
        write_manifest(&self, record).await?;
        Ok(Some(Arc::new(StoreSource {
            store: Arc::clone(&self.store),
            deployment: self.deployment.clone(),
            backup_id: self.backup_id.clone(),
            identities: self.identities.clone(),
            trusted: TrustedKeys::default(),
        })))
    }
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

/// A resume trusts the segments the interrupted run stored only when each is still there at
/// its recorded version and size (a `prune` or a hand may have removed the incomplete backup):
/// otherwise the manifest would list what is gone.
async fn check_stored_before(
    store: &dyn ArtifactStore,
    segments: &[ManifestSegment],
) -> Result<(), Error> {
    for segment in segments {
        let key =
            ObjectKey::parse(&segment.key).map_err(|e| store_failure_key(&segment.key, &e))?;
        let found = store.head(&key, segment.version.as_deref()).await;
        let problem = match found {
            Ok(meta) if meta.size == segment.size => continue,
            Ok(meta) => format!(
                "it has {} bytes, the journal says {}",
                meta.size, segment.size
            ),
            Err(error) => error.to_string(),
        };
        return Err(StoreError::Configuration {
            store: store.to_string(),
            detail: format!(
                "segment {} that the interrupted run stored is not in the store as recorded ({problem}), so the backup cannot be resumed; discard it with `backup-cleanup` and take a new backup",
                segment.key
            ),
        }
        .into());
    }
    Ok(())
}

fn store_failure_key(key: &str, detail: &str) -> Error {
    Error::Artifact(ArtifactError::Io {
        action: "Uploading",
        path: key.into(),
        source: io::Error::other(detail.to_string()),
    })
}

/// A resume must write the rest as the interrupted run wrote its segments: with other
/// compression the stored segments would not be found again (other keys) and stay in the
/// store unreferenced; with other recipients one artifact would need two identities.
fn check_resumed_writing(mine: &str, resume: &ResumeSetup, location: &str) -> Result<(), Error> {
    match &resume.written_as {
        Some(recorded) if recorded != mine => Err(StoreError::Configuration {
            store: location.to_string(),
            detail: format!(
                "the interrupted run wrote its segments with {recorded}, this run would write them with {mine}; resume with the same --compression and --encrypt-to (or discard it with backup-cleanup)"
            ),
        }
        .into()),
        _ => Ok(()),
    }
}

/// A resume must cut the stream where the interrupted run did: every stored segment but an
/// artifact's last holds exactly `--segment-size` plain bytes, and none holds more.
fn check_resumed_segment_size(
    segment_size: u64,
    resume: &ResumeSetup,
    location: &str,
) -> Result<(), Error> {
    for segments in resume.stored.values() {
        let Some((last, full)) = segments.split_last() else {
            continue;
        };
        let wrong = full
            .iter()
            .find(|s| s.plain_size != segment_size)
            .or_else(|| (last.plain_size > segment_size).then_some(last));
        if let Some(segment) = wrong {
            let size = full.first().unwrap_or(segment).plain_size;
            return Err(StoreError::Configuration {
                store: location.to_string(),
                detail: format!(
                    "the interrupted run stored segments of {}, not of --segment-size {}; resume with --segment-size {}",
                    SegmentSize::from_bytes(size).map_or_else(|_| format!("{size} bytes"), |s| s.to_string()),
                    SegmentSize::from_bytes(segment_size).map_or_else(|_| format!("{segment_size} bytes"), |s| s.to_string()),
                    SegmentSize::from_bytes(size).map_or_else(|_| size.to_string(), |s| s.to_string()),
                ),
            }
            .into());
        }
    }
    Ok(())
}

/// Discards a resumable backup that will not be finished (`backup-cleanup`): aborts its
/// unfinished uploads, deletes every segment the journal lists at its version, then whatever
/// else is under `<deployment>/<id>/`. Returns the segments left because Object Lock keeps
/// them (they expire with their retention; no manifest references them).
///
/// # Errors
/// The store failed otherwise.
pub async fn discard_resumable(
    store: &dyn ArtifactStore,
    deployment: &str,
    backup_id: &str,
    segments: &[ManifestSegment],
) -> Result<Vec<String>, Error> {
    let prefix = format!("{}/", backup_key(deployment, backup_id)?);
    store.abort_unfinished_uploads(&prefix).await?;
    let mut protected = Vec::new();
    for segment in segments {
        let Ok(key) = ObjectKey::parse(&segment.key) else {
            continue;
        };
        if !segment.key.starts_with(&prefix) {
            continue;
        }
        match store.delete(&key, segment.version.as_deref()).await {
            Ok(()) | Err(StoreError::NotFound { .. }) => {}
            Err(StoreError::Protected { .. }) => protected.push(segment.key.clone()),
            Err(error) => return Err(error.into()),
        }
    }
    for object in store.list(&prefix).await? {
        if protected.iter().any(|p| p == object.key.as_str()) {
            continue;
        }
        match store.delete(&object.key, None).await {
            Ok(()) | Err(StoreError::NotFound { .. }) => {}
            Err(StoreError::Protected { .. }) => protected.push(object.key.to_string()),
            Err(error) => return Err(error.into()),
        }
    }
    Ok(protected)
}

/// Writes the deployment manifest (`--with-manifest`) as an object of the backup, encrypted
/// like the artifacts when the backup is (it holds the deployment's secrets).
async fn write_deployment_manifest(
    destination: &StoreBackup,
    text: &str,
) -> Result<DeploymentManifestObject, Error> {
    let mut name = DEPLOYMENT_MANIFEST_NAME.to_string();
    let bytes = match &destination.encryption {
        None => text.as_bytes().to_vec(),
        Some(recipients) => {
            name.push('.');
            name.push_str(crate::format::encryption::EXTENSION);
            let key = destination.key(&name)?;
            let seal = || -> io::Result<Vec<u8>> {
                let mut writer = recipients.encrypt(Vec::new())?;
                writer.write_all(text.as_bytes())?;
                writer.finish()
            };
            seal().map_err(|e| store_failure(&key, &e.to_string()))?
        }
    };
    let key = destination.key(&name)?;
    let sha256 = hex::encode(Sha256::digest(&bytes));
    let size = bytes.len() as u64;
    let put = destination
        .store
        .put_bytes(&key, Bytes::from(bytes), &destination.put_options)
        .await?;
    Ok(DeploymentManifestObject {
        key: key.to_string(),
        version: put.version,
        size,
        sha256,
        encryption: destination
            .encryption
            .as_ref()
            .map(crate::format::encryption::Recipients::record),
    })
}

/// Writes the deployment manifest (if saved), `metadata`, then `manifest.json` — the last
/// object of a backup.
// Long on purpose: the manifest is one record, written field by field after `metadata`.
async fn write_manifest(destination: &StoreBackup, record: &BackupRecord) -> Result<(), Error> {
    let store = &destination.store;
    let deployment_manifest = match &destination.deployment_manifest {
        Some(text) => Some(write_deployment_manifest(destination, text).await?),
        None => None,
    };
    let metadata_bytes = Bytes::from(record.metadata.to_yaml());
    within_record_limit(destination, record, METADATA_NAME, metadata_bytes.len())?;
    let metadata_key = destination.key(METADATA_NAME)?;
    let metadata_sha256 = hex::encode(Sha256::digest(&metadata_bytes));
    // Not kept while the manifest is written: a million files' `metadata` is ~110 MB.
    let metadata_put = store
        .put_bytes(&metadata_key, metadata_bytes, &destination.put_options)
        .await?;
    let mut manifest_artifacts: Vec<ManifestArtifact> = record
        .artifacts
        .iter()
        .map(|a| -> Result<ManifestArtifact, Error> {
            let key = destination.stored_key(a)?.to_string();
            let segments = destination.segments.of(&key);
            let digests: Vec<SegmentDigest> = segments.iter().map(SegmentDigest::of).collect();
            Ok(ManifestArtifact {
                name: a.name.clone(),
                group: a.group.clone(),
                index: a.index.clone(),
                job: a.job.clone(),
                key,
                size: digests.iter().map(|d| d.size).sum(),
                sha256: list_digest(&digests),
                version: None,
                segments,
                files: a.files.clone(),
                plain_size: Some(digests.iter().map(|d| d.plain_size).sum()),
                encryption: destination
                    .encryption
                    .as_ref()
                    .map(crate::format::encryption::Recipients::record),
                stream: a.stream,
            })
        })
        .collect::<Result<_, _>>()?;
    manifest_artifacts.sort_by(|a, b| a.name.cmp(&b.name));
    let manifest = Manifest {
        schema: MANIFEST_SCHEMA,
        cairn_version: crate::VERSION.to_string(),
        deployment: destination.deployment.clone(),
        backup_id: destination.backup_id.clone(),
        started_at: destination.started_at,
        finished_at: Utc::now(),
        compression: destination.compression,
        artifacts: manifest_artifacts,
        jobs: job_times(&record.scripts),
        metadata: ManifestObject {
            key: metadata_key.to_string(),
            version: metadata_put.version,
            sha256: metadata_sha256,
        },
        deployment_manifest,
        layout: Some(record.layout.clone()),
    };
    let manifest_json = manifest.to_json();
    within_record_limit(destination, record, MANIFEST_NAME, manifest_json.len())?;
    let manifest_key = destination.key(MANIFEST_NAME)?;
    let signed = match &destination.signing {
        Some(signing) => Some(
            sign_backup(
                destination,
                &signing.key,
                &manifest,
                &manifest_key,
                manifest_json.as_bytes(),
            )
            .await?,
        ),
        None => None,
    };
    store
        .put_bytes(
            &manifest_key,
            Bytes::from(manifest_json),
            &destination.put_options,
        )
        .await?;
    if let (Some(seen), Some(statement)) = (
        destination.signing.as_ref().and_then(|s| s.seen.as_ref()),
        &signed,
    ) {
        remember_signed(seen, store.as_ref(), statement);
    }
    Ok(())
}

/// Writes the signature object of a backup whose manifest is `manifest_bytes`, chained to the
/// newest backup of the deployment this key signed; returns its statement. Runs before the
/// manifest is written, so a complete signed backup always has its signature.
async fn sign_backup(
    destination: &StoreBackup,
    key: &SigningKey,
    manifest: &Manifest,
    manifest_key: &ObjectKey,
    manifest_bytes: &[u8],
) -> Result<Statement, Error> {
    let store = destination.store.as_ref();
    let own = TrustedKeys::of(&[key.public()]);
    let previous = newest_signed(store, &destination.deployment, &own)
        .await?
        .map(|signed| signed.link());
    let recipients = destination
        .encryption
        .as_ref()
        .map(Recipients::public_keys)
        .unwrap_or_default();
    let statement = Statement::StoreBackup(backup_statement(
        manifest,
        manifest_key.as_str(),
        manifest_bytes,
        recipients,
        previous,
    ));
    let envelope = statement.clone().sign(key);
    write_signature(
        store,
        &envelope,
        &destination.deployment,
        &destination.backup_id,
        &destination.put_options,
    )
    .await?;
    Ok(statement)
}

/// Records a backup this machine just signed as seen (a failure only costs the record).
fn remember_signed(seen: &SeenBackups, store: &dyn ArtifactStore, statement: &Statement) {
    let Statement::StoreBackup(backup) = statement else {
        return;
    };
    let record = SeenBackup {
        store: store.to_string(),
        deployment: backup.deployment.clone(),
        backup_id: backup.backup_id.clone(),
        statement_sha256: statement.digest(),
        previous: backup.previous.clone(),
        seen_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    };
    if let Err(error) = seen.record(&record) {
        tracing::warn!("{error}; restore --latest on this machine cannot tell a rollback to before this backup");
    }
}

/// A manifest or `metadata` a restore would refuse ([`RECORD_LIMIT`]) fails the backup
/// before it is written: no backup may look complete that cannot be restored.
fn within_record_limit(
    destination: &StoreBackup,
    record: &BackupRecord,
    name: &'static str,
    bytes: usize,
) -> Result<(), Error> {
    if bytes as u64 <= RECORD_LIMIT {
        return Ok(());
    }
    Err(StoredBackupError::RecordWouldBeTooLarge {
        backup: format!("{}/{}", destination.deployment, destination.backup_id),
        record: name,
        bytes: bytes as u64,
        files: record.artifacts.iter().map(|a| a.files.len()).sum(),
        limit: RECORD_LIMIT,
    }
    .into())
}

/// Each job's lock and unlock times (a store's manifest, a repository's record).
pub(crate) fn job_times(scripts: &[ScriptRecord]) -> Vec<JobTimes> {
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
                entry.locked_at = Some(record.finished_at);
            }
            ScriptName::PostBackupUnlock => entry.unlocked_at = Some(record.finished_at),
            _ => {}
        }
    }
    jobs.into_values()
        .filter(|j| j.locked_at.is_some() || j.unlocked_at.is_some())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The objects under a `file://` store's backup folder (the upload folder left out).
    fn stored(dir: &std::path::Path) -> Vec<String> {
        let folder = dir.join("cf/20240102T030405Z");
        let mut names: Vec<String> = std::fs::read_dir(folder)
            .map(|entries| {
                entries
                    .flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn full_segments_are_stored_as_they_fill_and_all_removed_when_discarded() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn ArtifactStore> =
            Arc::new(cairn_store::local::LocalStore::new(dir.path()));
        let sink = StoreSink {
            segment_size: SegmentSize::parse("1MiB").unwrap(),
            ..StoreSink::new(store, Compression::None)
        };
        let backup = sink.start(&cf_backup()).await.unwrap();
        for (name, keep_writer) in [("app-0-files", true), ("app-1-files", false)] {
            let (mut writer, pending) = backup.open_artifact(name).await.unwrap();
            let finished = tokio::task::spawn_blocking(move || {
                writer.write_all(&vec![7_u8; (5 << 20) / 2]).unwrap();
                // The second artifact's writer fails part-way (dropped unfinished).
                keep_writer.then(|| writer.finish().unwrap())
            })
            .await
            .unwrap();
            if let Some(bytes) = finished {
                assert_eq!(bytes.plain_size, (5 << 20) / 2);
                // Two full segments are stored already; the last waits for the commit.
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
                while stored(dir.path()).len() < 2 && std::time::Instant::now() < deadline {
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
                assert_eq!(
                    stored(dir.path()),
                    ["app-0-files.tar.000000", "app-0-files.tar.000001"]
                );
            }
            // The instance's checksums did not match (or the writer failed): nothing stays.
            let _ = pending.discard().await;
            assert_eq!(stored(dir.path()), Vec::<String>::new(), "{name}");
        }
    }

    /// Backup `cf/20240102T030405Z`, one stream at a time.
    fn cf_backup() -> crate::format::sink::NewBackup<'static> {
        crate::format::sink::NewBackup {
            deployment: "cf",
            backup_id: "20240102T030405Z",
            started_at: Utc::now(),
            concurrent_streams: 1,
            deployment_manifest: None,
        }
    }

    /// Records what a resumable backup reports (the run journal's part).
    #[derive(Default)]
    struct Journal(std::sync::Mutex<Vec<(String, Vec<ManifestSegment>)>>);

    #[async_trait]
    impl SegmentObserver for Journal {
        async fn stored(&self, artifact_key: &str, segments: Vec<ManifestSegment>) {
            self.0
                .lock()
                .unwrap()
                .push((artifact_key.to_string(), segments));
        }
    }

    /// Starts backup `cf/20240102T030405Z` in 1 MiB segments, made resumable from `stored`.
    async fn resumable(
        dir: &std::path::Path,
        stored: crate::format::sink::StoredSegments,
        journal: Arc<Journal>,
    ) -> Box<dyn OpenBackup> {
        let store: Arc<dyn ArtifactStore> = Arc::new(cairn_store::local::LocalStore::new(dir));
        let sink = StoreSink {
            segment_size: SegmentSize::parse("1MiB").unwrap(),
            resuming: !stored.is_empty(),
            ..StoreSink::new(store, Compression::None)
        };
        let backup = sink.start(&cf_backup()).await.unwrap();
        backup
            .make_resumable(ResumeSetup {
                observer: journal,
                stored,
                written_as: None,
            })
            .unwrap();
        backup
    }

    #[tokio::test]
    async fn a_resume_that_would_write_with_other_compression_or_recipients_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let start = |compression, recipients: &[&str]| {
            let store: Arc<dyn ArtifactStore> =
                Arc::new(cairn_store::local::LocalStore::new(dir.path()));
            let sink = StoreSink {
                encryption: Recipients::parse(recipients).unwrap(),
                ..StoreSink::new(store, compression)
            };
            async move { sink.start(&cf_backup()).await.unwrap() }
        };
        let setup = |written_as: Option<String>| ResumeSetup {
            observer: Arc::new(Journal::default()),
            stored: BTreeMap::new(),
            written_as,
        };
        let one = age::x25519::Identity::generate().to_public().to_string();
        let two = age::x25519::Identity::generate().to_public().to_string();
        let zstd = Compression::Zstd { level: 3 };
        let first = start(zstd, &[&one, &two]).await.written_as();
        assert_eq!(
            first,
            start(Compression::Zstd { level: 9 }, &[&two, &one])
                .await
                .written_as(),
            "the level and the order of recipients change nothing a resume reads"
        );
        // The same settings resume; a journal from before the record resumes too.
        let same = start(zstd, &[&one, &two]).await;
        same.make_resumable(setup(Some(first.clone()))).unwrap();
        start(zstd, &[&one])
            .await
            .make_resumable(setup(None))
            .unwrap();
        for (compression, recipients) in [
            (zstd, vec![one.as_str()]),
            (zstd, vec![]),
            (Compression::None, vec![one.as_str(), two.as_str()]),
        ] {
            let error = start(compression, &recipients)
                .await
                .make_resumable(setup(Some(first.clone())))
                .unwrap_err()
                .to_string();
            assert!(
                error.contains("resume with the same --compression and --encrypt-to"),
                "{error}"
            );
        }
    }

    /// Writes `data` into artifact `app-0-files`; returns the writer's result.
    async fn write_artifact(
        backup: &dyn OpenBackup,
        data: Vec<u8>,
        finish: bool,
    ) -> io::Result<()> {
        let (mut writer, pending) = backup.open_artifact("app-0-files").await.unwrap();
        let written = tokio::task::spawn_blocking(move || {
            writer.write_all(&data)?;
            if finish {
                writer.finish().map(|_| ())
            } else {
                Err(io::Error::other("the drain failed"))
            }
        })
        .await
        .unwrap();
        match written {
            Ok(()) => pending
                .commit()
                .await
                .map(|_| ())
                .map_err(|e| io::Error::other(e.to_string())),
            Err(error) => {
                let _ = pending.discard().await;
                Err(error)
            }
        }
    }

    #[tokio::test]
    async fn a_resumable_backup_keeps_its_segments_and_a_resume_sends_only_the_rest() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..(5 << 20) / 2).map(|i: u32| (i % 251) as u8).collect();
        let key = "cf/20240102T030405Z/app-0-files.tar";
        // The first run fails after two full segments: they stay, each one reported.
        let journal = Arc::new(Journal::default());
        let backup = resumable(dir.path(), BTreeMap::new(), Arc::clone(&journal)).await;
        assert!(write_artifact(backup.as_ref(), data.clone(), false)
            .await
            .is_err());
        assert_eq!(
            stored(dir.path()),
            ["app-0-files.tar.000000", "app-0-files.tar.000001"]
        );
        let reported = journal.0.lock().unwrap().clone();
        assert_eq!(reported.len(), 2);
        let (reported_key, segments) = reported.last().unwrap().clone();
        assert_eq!(reported_key, key);
        let inode = |name: &str| {
            std::fs::metadata(dir.path().join("cf/20240102T030405Z").join(name))
                .unwrap()
                .ino()
        };
        let before = [
            inode("app-0-files.tar.000000"),
            inode("app-0-files.tar.000001"),
        ];
        let stored_before: crate::format::sink::StoredSegments =
            [(key.to_string(), segments.clone())].into();

        // A resume over other bytes stops at the first segment and stores nothing.
        let mut changed = data.clone();
        changed[0] ^= 1;
        let journal = Arc::new(Journal::default());
        let backup = resumable(dir.path(), stored_before.clone(), Arc::clone(&journal)).await;
        let error = write_artifact(backup.as_ref(), changed, true)
            .await
            .unwrap_err();
        assert!(
            error.to_string().contains("segment 0 of cf/20240102T030405Z/app-0-files.tar differs from the one the interrupted run stored"),
            "{error}"
        );
        assert_eq!(
            stored(dir.path()),
            ["app-0-files.tar.000000", "app-0-files.tar.000001"]
        );
        assert!(journal.0.lock().unwrap().is_empty());

        // A resume over the same bytes sends only the last segment.
        let journal = Arc::new(Journal::default());
        let backup = resumable(dir.path(), stored_before, Arc::clone(&journal)).await;
        write_artifact(backup.as_ref(), data, true).await.unwrap();
        assert_eq!(
            stored(dir.path()),
            [
                "app-0-files.tar.000000",
                "app-0-files.tar.000001",
                "app-0-files.tar.000002"
            ]
        );
        assert_eq!(
            [
                inode("app-0-files.tar.000000"),
                inode("app-0-files.tar.000001")
            ],
            before,
            "not written again"
        );
        let reported = journal.0.lock().unwrap().clone();
        assert_eq!(reported.len(), 1);
        assert_eq!(reported[0].1.len(), 3);
        assert_eq!(reported[0].1[..2], segments[..]);

        // A recorded segment gone from the store: the resume refuses before reading anything.
        std::fs::remove_file(
            dir.path()
                .join("cf/20240102T030405Z/app-0-files.tar.000001"),
        )
        .unwrap();
        let stored_before: crate::format::sink::StoredSegments =
            [(key.to_string(), segments)].into();
        let backup = resumable(dir.path(), stored_before, Arc::new(Journal::default())).await;
        let error = backup.open_artifact("app-0-files").await.err().unwrap();
        assert!(
            error.to_string().contains("segment cf/20240102T030405Z/app-0-files.tar.000001 that the interrupted run stored is not in the store as recorded"),
            "{error}"
        );
    }
}
