//! Writing a backup into an object store: the [`BackupSink`] half of [`super`].
//!
//! [`StoreSink::start`] checks the store once (versioning when required — through
//! `capabilities_for_writing`, which on Azure writes and deletes a probe blob — and Object Lock
//! for `--retain-days`) and removes incomplete backups of the deployment. Each artifact's writer
//! compresses with zstd, encrypts with age when the backup has recipients (`--encrypt-to`),
//! hashes the bytes as stored and hands fixed-size chunks to an upload task through a bounded
//! channel, so nothing touches the coordinator's disk and memory stays bounded. The upload is
//! completed only after the instance's checksums matched, otherwise aborted. `metadata` and
//! then `manifest.json` are written last, only for a complete backup (with `--signing-key`,
//! `signature.json` just before the manifest, [`super::signed`]); an incomplete one has its
//! artifacts removed (and anything left is removed by the next backup).

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use cairn_store::{
    ArtifactStore, ArtifactStoreExt, Capabilities, ObjectKey, PutOptions, Retention, StoreError,
    Upload,
};
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::failed_run::{write_failed_run, FailedArtifact, FailedRun};
use super::signed::{backup_statement, newest_signed, write_signature};
use super::{backup_key, delete_objects, invalid_name, list_backups, StoreSource};
use crate::error::{Error, StoredBackupError};
use crate::format::bbr_directory::ArtifactError;
use crate::format::encryption::{Identities, Recipients};
use crate::format::hashing::HashingWriter;
use crate::format::manifest::{
    Compression, DeploymentManifestObject, JobTimes, Manifest, ManifestArtifact, ManifestObject,
    DEPLOYMENT_MANIFEST_NAME, MANIFEST_NAME, MANIFEST_SCHEMA, METADATA_NAME, RECORD_LIMIT,
};
use crate::format::signature::{SeenBackup, SeenBackups, SigningKey, Statement, TrustedKeys};
use crate::format::sink::{
    ArtifactWriter, BackupRecord, BackupSink, BackupSource, NewBackup, OpenArtifact, OpenBackup,
    PendingArtifact, StoredArtifact, StoredBytes,
};
use crate::model::job::{ScriptName, ScriptRecord};

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
        remove_incomplete(store.as_ref(), backup.deployment).await?;
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

    /// Removes what a failed backup stored (best effort: leftovers are removed by the next run).
    async fn discard(&self, record: &BackupRecord) {
        // Only artifacts that were stored are listed, so their keys are valid.
        for key_and_artifact in record.artifacts.iter().map(|a| (self.stored_key(a), a)) {
            let (Ok(key), artifact) = key_and_artifact else {
                continue;
            };
            if let Err(error) = self.store.delete(&key, artifact.version.as_deref()).await {
                tracing::warn!("Could not remove {key} of a failed backup: {error}");
            }
        }
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
        open_upload(self, self.artifact_key(name)?).await
    }

    async fn open_stream(&self, name: &str) -> Result<OpenArtifact, Error> {
        open_upload(self, self.stream_key(name)?).await
    }

    async fn finish(
        self: Box<Self>,
        record: &BackupRecord,
    ) -> Result<Option<Arc<dyn BackupSource>>, Error> {
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
    let metadata_put = store
        .put_bytes(
            &metadata_key,
            metadata_bytes.clone(),
            &destination.put_options,
        )
        .await?;
    let mut manifest_artifacts: Vec<ManifestArtifact> = record
        .artifacts
        .iter()
        .map(|a| -> Result<ManifestArtifact, Error> {
            Ok(ManifestArtifact {
                name: a.name.clone(),
                group: a.group.clone(),
                index: a.index.clone(),
                job: a.job.clone(),
                key: destination.stored_key(a)?.to_string(),
                size: a.stored.size,
                sha256: a
                    .stored
                    .sha256
                    .clone()
                    .expect("a store writer hashes what it stores"),
                version: a.version.clone(),
                files: a.files.clone(),
                plain_size: Some(a.stored.plain_size),
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
            sha256: hex::encode(Sha256::digest(&metadata_bytes)),
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

/// Collects bytes into fixed-size chunks and sends them to the upload task.
struct ChunkSender {
    buffer: Vec<u8>,
    sender: Option<mpsc::Sender<Bytes>>,
}

impl ChunkSender {
    fn send_buffer(&mut self) -> io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(
            &mut self.buffer,
            Vec::with_capacity(UPLOAD_CHUNK),
        ));
        let sender = self
            .sender
            .as_ref()
            .ok_or_else(|| io::Error::other("upload already finished"))?;
        sender
            .blocking_send(chunk)
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the store upload stopped"))
    }
}

impl Write for ChunkSender {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let room = UPLOAD_CHUNK - self.buffer.len();
        let count = buf.len().min(room);
        self.buffer.extend_from_slice(&buf[..count]);
        if self.buffer.len() == UPLOAD_CHUNK {
            self.send_buffer()?;
        }
        Ok(count)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The stored bytes: hashed and chunked, through age first when encrypted.
enum Sealed {
    Plain(HashingWriter<ChunkSender>),
    Age(age::stream::StreamWriter<HashingWriter<ChunkSender>>),
}

impl Write for Sealed {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Sealed::Plain(w) => w.write(buf),
            Sealed::Age(w) => w.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Sealed {
    fn new(chunks: ChunkSender, encryption: Option<&Recipients>) -> io::Result<Sealed> {
        let hashing = HashingWriter::new(chunks);
        Ok(match encryption {
            None => Sealed::Plain(hashing),
            Some(recipients) => Sealed::Age(recipients.encrypt(hashing)?),
        })
    }

    /// Writes the last (authenticated) age chunk.
    fn finish(self) -> io::Result<HashingWriter<ChunkSender>> {
        match self {
            Sealed::Plain(w) => Ok(w),
            Sealed::Age(w) => w.finish(),
        }
    }
}

/// An artifact's writer: counts the plain bytes, compresses them (or not), then seals them.
struct StoreWriter {
    encoding: Encoding,
    /// Bytes written before compression (the manifest's `plain_size`).
    plain_size: u64,
}

enum Encoding {
    Plain(Sealed),
    Zstd(zstd::Encoder<'static, Sealed>),
}

impl Write for StoreWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let count = match &mut self.encoding {
            Encoding::Plain(w) => w.write(buf)?,
            Encoding::Zstd(w) => w.write(buf)?,
        };
        self.plain_size += count as u64;
        Ok(count)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl ArtifactWriter for StoreWriter {
    fn finish(self: Box<Self>) -> io::Result<StoredBytes> {
        let sealed = match self.encoding {
            Encoding::Plain(w) => w,
            Encoding::Zstd(encoder) => encoder.finish()?,
        };
        let mut hashing = sealed.finish()?;
        hashing.inner.send_buffer()?;
        hashing.inner.sender = None;
        Ok(StoredBytes {
            plain_size: self.plain_size,
            ..hashing.summary()
        })
    }
}

struct PendingUpload {
    task: JoinHandle<Result<Box<dyn Upload>, StoreError>>,
    key: ObjectKey,
}

#[async_trait]
impl PendingArtifact for PendingUpload {
    async fn commit(self: Box<Self>) -> Result<Option<String>, Error> {
        let upload = self
            .task
            .await
            .map_err(|e| store_failure(&self.key, &e.to_string()))??;
        Ok(upload.complete().await?.version)
    }

    async fn discard(self: Box<Self>) -> Option<Error> {
        match self.task.await {
            Ok(Ok(upload)) => upload.abort().await.err().map(Error::from),
            Ok(Err(error)) => Some(error.into()),
            Err(error) => Some(store_failure(&self.key, &error.to_string())),
        }
    }
}

fn store_failure(key: &ObjectKey, detail: &str) -> Error {
    Error::Artifact(ArtifactError::Io {
        action: "Uploading",
        path: key.as_str().into(),
        source: io::Error::other(detail.to_string()),
    })
}

async fn open_upload(destination: &StoreBackup, key: ObjectKey) -> Result<OpenArtifact, Error> {
    let mut upload = destination
        .store
        .put(&key, &destination.put_options)
        .await?;
    let (sender, mut receiver) = mpsc::channel::<Bytes>(UPLOAD_QUEUE);
    let task = tokio::spawn(async move {
        while let Some(chunk) = receiver.recv().await {
            if let Err(error) = upload.write(chunk).await {
                let _ = upload.abort().await;
                return Err(error);
            }
        }
        Ok(upload)
    });
    let chunks = ChunkSender {
        buffer: Vec::with_capacity(UPLOAD_CHUNK),
        sender: Some(sender),
    };
    // The age header goes into the first chunk here; nothing is sent before it is full.
    let sealed = Sealed::new(chunks, destination.encryption.as_ref())
        .map_err(|e| store_failure(&key, &e.to_string()))?;
    let encoding = match destination.compression {
        Compression::None => Encoding::Plain(sealed),
        Compression::Zstd { level } => {
            let mut encoder = zstd::Encoder::new(sealed, level)
                .map_err(|e| store_failure(&key, &e.to_string()))?;
            if destination.compression_workers > 1 {
                let _ = encoder.multithread(destination.compression_workers);
            }
            Encoding::Zstd(encoder)
        }
    };
    let writer = StoreWriter {
        encoding,
        plain_size: 0,
    };
    Ok((Box::new(writer), Box::new(PendingUpload { task, key })))
}
