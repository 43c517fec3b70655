//! Reading a backup back from an object store: the [`BackupSource`] half of [`super`], and
//! the verification `cairn backups verify` and `prune` share with restore.
//!
//! Before a restore connects to anything, [`StoreSource::check`] reads the manifest, checks
//! that it belongs where it is stored ([`super::placement`]) and, with `--trusted-key`, its
//! signature ([`super::signed`]), checks that an encrypted backup is expected and can be
//! decrypted with `--identity`, the `metadata` object, and
//! every artifact's object at its recorded version and size (a `HEAD` each; for a segmented
//! artifact, its segment list — [`super::segment::check_segment_list`] — and every segment).
//! Each artifact is then read once ([`check_artifact_stream`]): size and sha256 of the stored
//! bytes (per segment, and each segment's plain bytes too), and after decryption and
//! decompression every tar entry and every file, while the tar stream goes on to the instance.

use std::io::{self, Read, Write};
use std::sync::Arc;

use async_trait::async_trait;
use cairn_store::{ArtifactStore, ObjectKey};
use futures::StreamExt;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use super::segment::check_segment_list;
use super::signed::read_manifest_trusted;
use super::{get_record, hash_record, invalid_name, tar_reader, StoreReader};
use crate::error::{Error, RunErrors, StoredBackupError};
use crate::format::bbr_directory::metadata::{BackupMetadata, Checksums};
use crate::format::digest::{compare_tar, FileDigests};
use crate::format::encryption::{DecryptFailure, Identities, AGE_HEADER, AGE_X25519};
use crate::format::hashing::HashingReader;
use crate::format::manifest::{
    ArtifactEncryption, Compression, DeploymentManifestObject, Manifest, ManifestArtifact,
    ManifestSegment,
};
use crate::format::signature::TrustedKeys;
use crate::format::sink::{
    ArtifactReader, ArtifactSize, BackupContents, BackupSource, CheckedBackup,
};

/// A backup in a store to restore from.
#[derive(Debug, Clone)]
pub struct StoreSource {
    /// The store.
    pub store: Arc<dyn ArtifactStore>,
    /// Deployment the backup was taken of.
    pub deployment: String,
    /// Backup id.
    pub backup_id: String,
    /// Age identities for an encrypted backup (`--identity`); may be empty.
    pub identities: Identities,
    /// Keys the backup must be signed by (`--trusted-key`); empty: signatures not checked.
    pub trusted: TrustedKeys,
}

#[async_trait]
impl BackupSource for StoreSource {
    fn location(&self) -> String {
        format!("{}/{}/{}", self.store, self.deployment, self.backup_id)
    }

    async fn check(&self, parallelism: usize) -> Result<Box<dyn CheckedBackup>, RunErrors> {
        tracing::info!(
            "Checking backup {}/{} in {}...",
            self.deployment,
            self.backup_id,
            self.store
        );
        let manifest = check_backup_objects(
            &self.store,
            &self.deployment,
            &self.backup_id,
            parallelism,
            &self.identities,
            &self.trusted,
        )
        .await?;
        let metadata = metadata_of(&manifest);
        let deployment_manifest =
            read_deployment_manifest(self.store.as_ref(), &manifest, &self.identities).await?;
        Ok(Box::new(CheckedStoreBackup {
            store: Arc::clone(&self.store),
            manifest,
            identities: self.identities.clone(),
            metadata,
            deployment_manifest,
        }))
    }
}

/// bbr's view of a stored backup: the checksums of every artifact.
fn metadata_of(manifest: &Manifest) -> BackupMetadata {
    let mut metadata = BackupMetadata::default();
    for artifact in &manifest.artifacts {
        metadata.add_files(
            artifact.is_shared().then_some(artifact.name.as_str()),
            (&artifact.group, &artifact.index, &artifact.job),
            &artifact.files,
        );
    }
    metadata
}

/// A stored backup whose manifest and objects were checked.
struct CheckedStoreBackup {
    store: Arc<dyn ArtifactStore>,
    manifest: Manifest,
    identities: Identities,
    metadata: BackupMetadata,
    deployment_manifest: Option<String>,
}

#[async_trait]
impl CheckedBackup for CheckedStoreBackup {
    fn metadata(&self) -> &BackupMetadata {
        &self.metadata
    }

    fn contents(&self) -> BackupContents {
        let artifacts = &self.manifest.artifacts;
        BackupContents {
            artifacts: artifacts.len(),
            stored_bytes: Some(
                artifacts
                    .iter()
                    .fold(0_u64, |total, a| total.saturating_add(a.size)),
            ),
            data_bytes: Some(
                artifacts
                    .iter()
                    .fold(0_u64, |total, a| total.saturating_add(a.files_bytes())),
            ),
        }
    }

    fn deployment_manifest(&self) -> Option<&str> {
        self.deployment_manifest.as_deref()
    }

    fn layout(&self) -> Option<&crate::model::layout::DeploymentLayout> {
        self.manifest.layout.as_ref()
    }

    /// The files' bytes, or what the artifact may decompress to when the manifest says more
    /// (restore stops there, [`ManifestArtifact::plain_limit`]): a manifest cannot promise a
    /// small artifact to the free-space check and deliver a large one.
    fn artifact_bytes(&self, name: &str) -> Option<u64> {
        let artifact = self.manifest.artifacts.iter().find(|a| a.name == name)?;
        Some(match artifact.plain_size {
            Some(plain) => artifact.files_bytes().max(plain),
            None => artifact.files_bytes(),
        })
    }

    async fn open_artifact(
        &self,
        name: &str,
        _expected: &Checksums,
    ) -> Result<Box<dyn ArtifactReader>, Error> {
        let artifact = self
            .manifest
            .artifacts
            .iter()
            .find(|a| a.name == name)
            .ok_or_else(|| StoredBackupError::ArtifactNotListed {
                artifact: name.to_string(),
            })?;
        Ok(Box::new(StoreArtifact {
            reader: open_artifact(&self.store, artifact).await?,
            artifact: artifact.clone(),
            compression: self.manifest.compression,
            identities: self.identities.clone(),
        }))
    }
}

/// One stored artifact, checked as it is read.
struct StoreArtifact {
    reader: ArtifactObjects,
    artifact: ManifestArtifact,
    compression: Compression,
    identities: Identities,
}

impl ArtifactReader for StoreArtifact {
    fn forward(self: Box<Self>, writer: &mut dyn Write) -> Result<(), Error> {
        check_artifact_stream(
            self.reader,
            &self.artifact,
            self.compression,
            &self.identities,
            Some(writer),
        )
        .map(|_| ())
    }

    /// The files' bytes, from the manifest (the tar's headers are not counted).
    fn size(&self) -> ArtifactSize {
        let bytes = self.artifact.files_bytes();
        ArtifactSize {
            tar_bytes: bytes,
            disk_usage: bytes,
        }
    }
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
/// is read: one error naming the backup when identities were given and it is not encrypted
/// ([`check_encrypted`]), when it is encrypted with a scheme Cairn cannot read, when no
/// identity was given (and `require_identity`), or when none of them matches (the header of
/// the first encrypted artifact is read to find out). A damaged header is left for the full
/// verification to report.
///
/// # Errors
/// The one error.
// Long on purpose: each refusal in the order an operator needs them (scheme, no identity,
// no matching identity), with the early returns that keep the header read last.
pub async fn check_identities(
    store: &Arc<dyn ArtifactStore>,
    manifest: &Manifest,
    identities: &Identities,
    require_identity: bool,
) -> Result<(), Error> {
    check_encrypted(store.as_ref(), manifest, identities)?;
    let Some(encryption) = manifest.encryption() else {
        return Ok(());
    };
    let backup = format!("{}/{}", manifest.deployment, manifest.backup_id);
    if let Some(artifact) = manifest.artifacts.iter().find(|a| {
        a.encryption
            .as_ref()
            .is_some_and(|e| e.scheme != AGE_X25519)
    }) {
        return Err(StoredBackupError::UnknownEncryption {
            backup,
            store: store.to_string(),
            artifact: artifact.name.clone(),
            scheme: artifact
                .encryption
                .as_ref()
                .map_or(String::new(), |e| e.scheme.clone()),
        }
        .into());
    }
    if identities.is_empty() {
        if !require_identity {
            return Ok(());
        }
        return Err(StoredBackupError::IdentityRequired {
            backup,
            store: store.to_string(),
            encryption: describe_encryption(encryption),
        }
        .into());
    }
    let Some(artifact) = manifest.artifacts.iter().find(|a| a.encryption.is_some()) else {
        return Ok(());
    };
    let (first_key, first_version) = match artifact.segments.first() {
        Some(segment) => (&segment.key, segment.version.as_deref()),
        None => (&artifact.key, artifact.version.as_deref()),
    };
    let Ok(key) = ObjectKey::parse(first_key) else {
        return Ok(());
    };
    let Ok(reader) = StoreReader::open(store.as_ref(), &key, first_version).await else {
        return Ok(());
    };
    let identities = identities.clone();
    let failure = tokio::task::spawn_blocking(move || identities.decrypt(reader).err())
        .await
        .expect("header thread");
    match failure {
        Some(DecryptFailure::NoMatchingIdentity) => Err(StoredBackupError::NoMatchingIdentity {
            backup,
            store: store.to_string(),
            encryption: describe_encryption(encryption),
        }
        .into()),
        _ => Ok(()),
    }
}

/// Refuses an encryption downgrade: when `identities` expect encryption (identities given,
/// no `--allow-unencrypted`), every artifact and the deployment manifest must be encrypted.
/// Cairn encrypts all of them or none, so a plaintext one where identities are given is a
/// backup someone replaced (or one taken without `--encrypt-to`, which the operator then
/// accepts explicitly).
///
/// # Errors
/// [`StoredBackupError::NotEncrypted`] naming the backup and what is not encrypted.
pub fn check_encrypted(
    store: &dyn ArtifactStore,
    manifest: &Manifest,
    identities: &Identities,
) -> Result<(), Error> {
    if !identities.expect_encryption() {
        return Ok(());
    }
    let plaintext = manifest
        .artifacts
        .iter()
        .filter(|a| a.encryption.is_none())
        .map(|a| a.key.as_str())
        .chain(
            manifest
                .deployment_manifest
                .iter()
                .filter(|object| object.encryption.is_none())
                .map(|object| object.key.as_str()),
        )
        .next();
    let detail = match (manifest.encryption(), plaintext) {
        (None, _) => "no artifact is encrypted".to_string(),
        (Some(_), Some(key)) => format!("`{key}` is stored in plaintext"),
        (Some(_), None) => return Ok(()),
    };
    Err(StoredBackupError::NotEncrypted {
        backup: format!("{}/{}", manifest.deployment, manifest.backup_id),
        store: store.to_string(),
        detail,
    }
    .into())
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
    let trusted = TrustedKeys::default();
    verify_backup_trusted(
        store,
        deployment,
        id,
        parallelism,
        identities,
        require_identity,
        &trusted,
    )
    .await
}

/// [`verify_backup`] of a manifest that must first pass the signature check of `trusted`
/// (none when empty) and, in any case, the check of its place ([`read_manifest_trusted`]), so
/// every object is checked against the manifest that was signed and belongs there.
///
/// # Errors
/// As [`verify_backup`], the signature's error and [`StoredBackupError::Misplaced`].
pub async fn verify_backup_trusted(
    store: &Arc<dyn ArtifactStore>,
    deployment: &str,
    id: &str,
    parallelism: usize,
    identities: &Identities,
    require_identity: bool,
    trusted: &TrustedKeys,
) -> Result<Verified, RunErrors> {
    let manifest = read_manifest_trusted(store.as_ref(), deployment, id, trusted).await?;
    check_identities(store, &manifest, identities, require_identity).await?;
    let results = verify_artifacts(store, &manifest, None, parallelism, identities).await;
    let contents_unchecked = results
        .iter()
        .filter(|(_, r)| matches!(r, Ok(Checked::StoredBytes)))
        .count();
    let mut errors: Vec<Error> = results.into_iter().filter_map(|(_, r)| r.err()).collect();
    if let Err(error) = verify_metadata(store.as_ref(), &manifest).await {
        errors.push(error);
    }
    if let Some(object) = &manifest.deployment_manifest {
        if let Err(error) = stored_deployment_manifest(store.as_ref(), object).await {
            errors.push(error);
        }
    }
    RunErrors(errors).into_result()?;
    Ok(Verified {
        manifest,
        contents_unchecked,
    })
}

/// Verifies the artifacts of a backup named in `only` (every one when `None`), at most
/// `parallelism` at once; returns each one's name and outcome, in no particular order.
pub async fn verify_artifacts(
    store: &Arc<dyn ArtifactStore>,
    manifest: &Manifest,
    only: Option<&std::collections::BTreeSet<String>>,
    parallelism: usize,
    identities: &Identities,
) -> Vec<(String, Result<Checked, Error>)> {
    let checks = manifest
        .artifacts
        .iter()
        .filter(|artifact| only.is_none_or(|names| names.contains(&artifact.name)))
        .map(|artifact| async move {
            let result = verify_artifact(store, artifact, manifest.compression, identities).await;
            (artifact.name.clone(), result)
        });
    futures::stream::iter(checks)
        .buffer_unordered(parallelism.max(1))
        .collect()
        .await
}

/// Reads the `metadata` object at its recorded version and compares its sha256 with the
/// manifest.
///
/// # Errors
/// A missing or damaged object.
pub async fn verify_metadata(store: &dyn ArtifactStore, manifest: &Manifest) -> Result<(), Error> {
    let key = ObjectKey::parse(&manifest.metadata.key).map_err(invalid_name)?;
    let sha256 = hash_record(store, &key, manifest.metadata.version.as_deref())
        .await
        .map_err(|e| match e {
            Error::Store(e) => damaged(&manifest.metadata.key, &e.to_string()),
            other => other,
        })?;
    if sha256 != manifest.metadata.sha256 {
        return Err(damaged(
            &manifest.metadata.key,
            "its sha256 does not match the manifest",
        ));
    }
    Ok(())
}

/// The stored bytes of a backup's deployment manifest object, checked against the manifest
/// (size and sha256; still encrypted when the backup is).
async fn stored_deployment_manifest(
    store: &dyn ArtifactStore,
    object: &DeploymentManifestObject,
) -> Result<Vec<u8>, Error> {
    let key = ObjectKey::parse(&object.key).map_err(invalid_name)?;
    let data = get_record(store, &key, object.version.as_deref())
        .await
        .map_err(|e| damaged(&object.key, &e.to_string()))?;
    if data.len() as u64 != object.size || hex::encode(Sha256::digest(&data)) != object.sha256 {
        return Err(damaged(
            &object.key,
            "its sha256 does not match the manifest",
        ));
    }
    Ok(data)
}

/// The deployment manifest saved with a backup (`--with-manifest`), checked against the
/// manifest and decrypted with `identities` when the backup is encrypted; `None` when the
/// backup has none.
///
/// # Errors
/// A damaged or missing object; an encrypted one without a matching identity.
pub async fn read_deployment_manifest(
    store: &dyn ArtifactStore,
    manifest: &Manifest,
    identities: &Identities,
) -> Result<Option<String>, Error> {
    let Some(object) = &manifest.deployment_manifest else {
        return Ok(None);
    };
    let data = stored_deployment_manifest(store, object).await?;
    let plain = match &object.encryption {
        None => data,
        Some(encryption) => decrypt_small(manifest, store, object, encryption, identities, &data)?,
    };
    String::from_utf8(plain)
        .map(Some)
        .map_err(|_| damaged(&object.key, "it is not UTF-8 text"))
}

/// Decrypts a small object held in memory.
fn decrypt_small(
    manifest: &Manifest,
    store: &dyn ArtifactStore,
    object: &DeploymentManifestObject,
    encryption: &ArtifactEncryption,
    identities: &Identities,
    data: &[u8],
) -> Result<Vec<u8>, Error> {
    let backup = format!("{}/{}", manifest.deployment, manifest.backup_id);
    if identities.is_empty() {
        return Err(StoredBackupError::IdentityRequired {
            backup,
            store: store.to_string(),
            encryption: describe_encryption(encryption),
        }
        .into());
    }
    let mut plain = Vec::new();
    match identities.decrypt(data) {
        Ok(mut reader) => reader
            .read_to_end(&mut plain)
            .map_err(|e| damaged(&object.key, &e.to_string()))?,
        Err(DecryptFailure::NoMatchingIdentity) => {
            return Err(StoredBackupError::NoMatchingIdentity {
                backup,
                store: store.to_string(),
                encryption: describe_encryption(encryption),
            }
            .into())
        }
        Err(DecryptFailure::Damaged(detail)) => return Err(damaged(&object.key, &detail)),
    };
    Ok(plain)
}

fn damaged(key: &str, detail: &str) -> Error {
    StoredBackupError::Damaged {
        key: key.to_string(),
        detail: detail.to_string(),
    }
    .into()
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

/// A stored artifact's objects, opened for reading: the one object of a schema 1 artifact, or
/// its segments, opened one after the other in the background ([`SegmentObjects`]).
#[derive(Debug)]
pub enum ArtifactObjects {
    /// The artifact's one object.
    One(StoreReader),
    /// The segments, in order.
    Segments(SegmentObjects),
}

/// The segments of an artifact, opened in order by a background task: the next one is
/// requested while the current one is read, and at most one waits (memory stays bounded).
#[derive(Debug)]
pub struct SegmentObjects {
    receiver: mpsc::Receiver<Result<StoreReader, Error>>,
}

impl SegmentObjects {
    /// Starts opening `segments` in order.
    fn open(store: &Arc<dyn ArtifactStore>, segments: &[ManifestSegment]) -> SegmentObjects {
        let (sender, receiver) = mpsc::channel(1);
        let store = Arc::clone(store);
        let segments = segments.to_vec();
        tokio::spawn(async move {
            for segment in segments {
                let opened = match ObjectKey::parse(&segment.key) {
                    Ok(key) => StoreReader::open(store.as_ref(), &key, segment.version.as_deref())
                        .await
                        .map_err(|e| damaged(&segment.key, &e.to_string())),
                    Err(detail) => Err(invalid_name(detail)),
                };
                let failed = opened.is_err();
                if sender.send(opened).await.is_err() || failed {
                    break;
                }
            }
        });
        SegmentObjects { receiver }
    }

    /// The next segment's reader (blocking; on a reading thread).
    fn next(&mut self, key: &str) -> Result<StoreReader, Error> {
        match self.receiver.blocking_recv() {
            Some(result) => result,
            None => Err(damaged(key, "it could not be opened")),
        }
    }
}

/// Opens a stored artifact for reading after checking that its objects exist at the recorded
/// versions with the recorded sizes (a `HEAD` each, nothing downloaded yet), and, when it is
/// segmented, its segment list ([`check_segment_list`]).
///
/// # Errors
/// Missing object or wrong size, as "damaged or missing".
pub async fn open_artifact(
    store: &Arc<dyn ArtifactStore>,
    artifact: &ManifestArtifact,
) -> Result<ArtifactObjects, Error> {
    head_artifact(store.as_ref(), artifact).await?;
    if !artifact.segments.is_empty() {
        return Ok(ArtifactObjects::Segments(SegmentObjects::open(
            store,
            &artifact.segments,
        )));
    }
    let key = ObjectKey::parse(&artifact.key).map_err(invalid_name)?;
    StoreReader::open(store.as_ref(), &key, artifact.version.as_deref())
        .await
        .map(ArtifactObjects::One)
        .map_err(|e| damaged(&artifact.key, &e.to_string()))
}

/// Checks that an artifact's objects exist at their recorded versions with their recorded
/// sizes: its one object, or (segmented) its segment list and every segment.
async fn head_artifact(
    store: &dyn ArtifactStore,
    artifact: &ManifestArtifact,
) -> Result<(), Error> {
    if artifact.segments.is_empty() {
        return head_object(
            store,
            &artifact.key,
            artifact.version.as_deref(),
            artifact.size,
        )
        .await;
    }
    check_segment_list(artifact).map_err(|detail| damaged(&artifact.key, &detail))?;
    let heads: Vec<_> = artifact
        .segments
        .iter()
        .map(|s| head_object(store, &s.key, s.version.as_deref(), s.size))
        .collect();
    let results: Vec<Result<(), Error>> = futures::stream::iter(heads)
        .buffer_unordered(SEGMENT_HEADS)
        .collect()
        .await;
    results.into_iter().collect()
}

/// `HEAD`s of one segmented artifact's objects sent at once.
const SEGMENT_HEADS: usize = 8;

/// Checks that one object exists at `version` with `size` bytes.
async fn head_object(
    store: &dyn ArtifactStore,
    key: &str,
    version: Option<&str>,
    size: u64,
) -> Result<(), Error> {
    let object = ObjectKey::parse(key).map_err(invalid_name)?;
    let head = store
        .head(&object, version)
        .await
        .map_err(|e| damaged(key, &e.to_string()))?;
    if head.size != size {
        return Err(damaged(
            key,
            &format!("it has {} bytes, the manifest says {size}", head.size),
        ));
    }
    Ok(())
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
    trusted: &TrustedKeys,
) -> Result<Manifest, RunErrors> {
    let manifest = read_manifest_trusted(store.as_ref(), deployment, id, trusted).await?;
    check_identities(store, &manifest, identities, true).await?;
    check_stored_objects(store.as_ref(), &manifest, parallelism).await?;
    Ok(manifest)
}

/// The objects of [`check_backup_objects`] without reading any artifact: every artifact's
/// object at its recorded version and size (a `HEAD` each) and the `metadata` object against
/// its sha256; also what `backups list --max-age` counts as a verified backup.
///
/// # Errors
/// One error per missing or damaged object.
pub async fn check_stored_objects(
    store: &dyn ArtifactStore,
    manifest: &Manifest,
    parallelism: usize,
) -> Result<(), RunErrors> {
    // Collected first: a lazy `map` over borrowed artifacts is not `Send` for every lifetime,
    // which the boxed futures of the `BackupSource` trait need.
    let heads: Vec<_> = manifest
        .artifacts
        .iter()
        .map(|artifact| head_artifact(store, artifact))
        .collect();
    let results: Vec<Result<(), Error>> = futures::stream::iter(heads)
        .buffer_unordered(parallelism.max(1))
        .collect()
        .await;
    let mut errors: Vec<Error> = results.into_iter().filter_map(Result::err).collect();
    if let Err(error) = verify_metadata(store, manifest).await {
        errors.push(error);
    }
    RunErrors(errors).into_result()
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
    reader: ArtifactObjects,
    expected: &ManifestArtifact,
    compression: Compression,
    identities: &Identities,
    forward: Option<&mut dyn Write>,
) -> Result<Checked, Error> {
    match reader {
        ArtifactObjects::One(reader) => {
            check_object_stream(reader, expected, compression, identities, forward)
        }
        ArtifactObjects::Segments(segments) => {
            check_segments_stream(segments, expected, compression, identities, forward)
        }
    }
}

/// [`check_artifact_stream`] of an artifact stored as one object (schema 1).
fn check_object_stream(
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
        return Err(StoredBackupError::ArtifactEncrypted {
            key: expected.key.clone(),
        }
        .into());
    }
    let files = match checked {
        Checked::StoredBytes => check_age_header(&mut hashing).map(|()| None),
        Checked::Everything => {
            let stream_size = expected.stream.then(|| stream_size(expected));
            let layers = StoredLayers {
                compression,
                encrypted,
                plain_limit: expected.plain_limit(),
                stream_size,
            };
            digest_stored(&mut hashing, &layers, identities, forward, &expected.files).map(Some)
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
    if files.is_some_and(|mismatched| !mismatched.is_empty()) {
        return Err(damaged(
            &expected.key,
            "the files inside do not match the manifest",
        ));
    }
    Ok(checked)
}

/// [`check_artifact_stream`] of a segmented artifact: every segment's stored bytes (size,
/// sha256) and, decrypted and decompressed, its plain bytes (size, sha256), while their
/// concatenation — the artifact's tar, or its stream read as the one-file tar — is checked
/// entry by entry and file by file as one. The segment list itself was checked before
/// ([`check_segment_list`], by [`open_artifact`]).
fn check_segments_stream(
    mut objects: SegmentObjects,
    expected: &ManifestArtifact,
    compression: Compression,
    identities: &Identities,
    forward: Option<&mut dyn Write>,
) -> Result<Checked, Error> {
    let encrypted = expected.encryption.is_some();
    if encrypted && identities.is_empty() {
        if forward.is_some() {
            return Err(StoredBackupError::ArtifactEncrypted {
                key: expected.key.clone(),
            }
            .into());
        }
        for segment in &expected.segments {
            check_sealed_segment(&mut objects, segment)?;
        }
        return Ok(Checked::StoredBytes);
    }
    let failure = Arc::new(std::sync::Mutex::new(None));
    let mut plain = SegmentsReader {
        objects,
        segments: expected.segments.iter().cloned().collect(),
        compression,
        encrypted,
        identities: identities.clone(),
        current: None,
        failure: Arc::clone(&failure),
    };
    let files = {
        let tar: Box<dyn Read + Send + '_> = if expected.stream {
            Box::new(crate::format::stream::OneFileTar::new(
                &mut plain,
                stream_size(expected),
            ))
        } else {
            Box::new(&mut plain)
        };
        compare_tar(tar, forward, &expected.files).map_err(|e| e.to_string())
    };
    // The rest (the tar's end blocks) is read too, so every segment is checked to its end.
    let mismatched = files.and_then(|mismatched| {
        io::copy(&mut plain, &mut io::sink())
            .map(|_| mismatched)
            .map_err(|e| e.to_string())
    });
    let taken = failure
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .take();
    if let Some(error) = taken {
        return Err(error);
    }
    let mismatched = mismatched.map_err(|detail| damaged(&expected.key, &detail))?;
    if !mismatched.is_empty() {
        return Err(damaged(
            &expected.key,
            "the files inside do not match the manifest",
        ));
    }
    Ok(Checked::Everything)
}

/// Checks an encrypted segment read without an identity: its age header, size and sha256.
fn check_sealed_segment(
    objects: &mut SegmentObjects,
    segment: &ManifestSegment,
) -> Result<(), Error> {
    let reader = objects.next(&segment.key)?;
    let mut hashing = HashingReader::new(reader);
    let header = check_age_header(&mut hashing);
    io::copy(&mut hashing, &mut io::sink()).map_err(|e| damaged(&segment.key, &e.to_string()))?;
    header.map_err(|detail| damaged(&segment.key, &detail))?;
    check_stored_segment(segment, hashing.summary())
}

fn check_stored_segment(
    segment: &ManifestSegment,
    (size, sha256): (u64, String),
) -> Result<(), Error> {
    if size != segment.size || sha256 != segment.sha256 {
        return Err(damaged(
            &segment.key,
            "its sha256 does not match the manifest",
        ));
    }
    Ok(())
}

/// The plain bytes of a segmented artifact, segment after segment, each checked at its end
/// (stored and plain size and sha256). The first failure is kept in `failure`, naming its
/// segment, since the tar parser above only passes on its text.
struct SegmentsReader {
    objects: SegmentObjects,
    segments: std::collections::VecDeque<ManifestSegment>,
    compression: Compression,
    encrypted: bool,
    identities: Identities,
    current: Option<OpenSegment>,
    failure: Arc<std::sync::Mutex<Option<Error>>>,
}

/// One segment being read: its stored bytes (hashed; shared so the rest can be read once the
/// decoders are done) and its plain bytes (hashed, at most its recorded plain size).
struct OpenSegment {
    stored: Arc<std::sync::Mutex<HashingReader<StoreReader>>>,
    plain: HashingReader<PlainLimit<Box<dyn Read + Send>>>,
    segment: ManifestSegment,
}

/// A reader shared between a segment's decoders and its end check.
struct SharedReader(Arc<std::sync::Mutex<HashingReader<StoreReader>>>);

impl Read for SharedReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .read(buf)
    }
}

impl SegmentsReader {
    fn fail(&self, error: Error) -> io::Error {
        let text = error.to_string();
        let mut failure = self
            .failure
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        failure.get_or_insert(error);
        io::Error::other(text)
    }

    fn open(&mut self, segment: ManifestSegment) -> Result<OpenSegment, Error> {
        let key = segment.key.clone();
        let reader = self.objects.next(&key)?;
        let stored = Arc::new(std::sync::Mutex::new(HashingReader::new(reader)));
        let shared = SharedReader(Arc::clone(&stored));
        let decrypted: Box<dyn Read + Send> = if self.encrypted {
            Box::new(
                self.identities
                    .decrypt(shared)
                    .map_err(|e| damaged(&key, &e.to_string()))?,
            )
        } else {
            Box::new(shared)
        };
        let decompressed =
            tar_reader(decrypted, self.compression).map_err(|e| damaged(&key, &e.to_string()))?;
        Ok(OpenSegment {
            stored,
            plain: HashingReader::new(PlainLimit::new(decompressed, segment.plain_size)),
            segment,
        })
    }

    /// Reads what is left of a finished segment's stored bytes and checks both digests.
    fn finish(done: OpenSegment) -> Result<(), Error> {
        let OpenSegment {
            stored,
            plain,
            segment,
        } = done;
        let (plain_size, plain_sha256) = plain.summary();
        drop(plain);
        let mut stored = stored
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        io::copy(&mut *stored, &mut io::sink())
            .map_err(|e| damaged(&segment.key, &e.to_string()))?;
        check_stored_segment(&segment, stored.summary())?;
        if plain_size != segment.plain_size || plain_sha256 != segment.plain_sha256 {
            return Err(damaged(
                &segment.key,
                "its plain bytes do not match the manifest's size and sha256",
            ));
        }
        Ok(())
    }
}

impl Read for SegmentsReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            if self.current.is_none() {
                let Some(segment) = self.segments.pop_front() else {
                    return Ok(0);
                };
                match self.open(segment) {
                    Ok(open) => self.current = Some(open),
                    Err(error) => return Err(self.fail(error)),
                }
            }
            let Some(current) = self.current.as_mut() else {
                continue;
            };
            match current.plain.read(buf) {
                Ok(0) => {
                    if let Some(done) = self.current.take() {
                        if let Err(error) = SegmentsReader::finish(done) {
                            return Err(self.fail(error));
                        }
                    }
                }
                Ok(count) => return Ok(count),
                Err(error) => {
                    let key = current.segment.key.clone();
                    return Err(self.fail(damaged(&key, &error.to_string())));
                }
            }
        }
    }
}

/// A streamed artifact's stored stream holds its one file ([`crate::format::stream`]).
fn stream_size(artifact: &ManifestArtifact) -> u64 {
    artifact.files_bytes()
}

/// What lies between a stored artifact's bytes and its tar.
struct StoredLayers {
    compression: Compression,
    encrypted: bool,
    /// The most the plain bytes may be ([`ManifestArtifact::plain_limit`]).
    plain_limit: u64,
    /// A streamed artifact's size: it is read as its one-file tar.
    stream_size: Option<u64>,
}

/// Decrypts (when encrypted), decompresses and digests every file of a stored artifact
/// (a streamed one read as its one-file tar) and compares it with `expected`
/// ([`compare_tar`]: the names that differ), passing the tar stream on to `forward` when
/// given; the decompressed bytes stop at the manifest's limit ([`PlainLimit`]).
fn digest_stored<R: Read + Send>(
    stored: R,
    layers: &StoredLayers,
    identities: &Identities,
    forward: Option<&mut dyn Write>,
    expected: &FileDigests,
) -> Result<Vec<String>, String> {
    let plain: Box<dyn Read + Send + '_> = if layers.encrypted {
        Box::new(identities.decrypt(stored).map_err(|e| e.to_string())?)
    } else {
        Box::new(stored)
    };
    let decompressed = tar_reader(plain, layers.compression).map_err(|e| e.to_string())?;
    let mut tar: Box<dyn Read + Send + '_> =
        Box::new(PlainLimit::new(decompressed, layers.plain_limit));
    if let Some(size) = layers.stream_size {
        tar = Box::new(crate::format::stream::OneFileTar::new(tar, size));
    }
    compare_tar(tar, forward, expected).map_err(|e| e.to_string())
}

/// The decompressed bytes of a stored artifact, refused as soon as they pass the manifest's
/// limit: the bytes that would pass it are never handed on, so a zstd bomb (a small object
/// that decompresses to terabytes) cannot fill an instance's disk or run forever.
struct PlainLimit<R> {
    inner: R,
    limit: u64,
    read: u64,
}

impl<R> PlainLimit<R> {
    fn new(inner: R, limit: u64) -> Self {
        Self {
            inner,
            limit,
            read: 0,
        }
    }
}

impl<R: Read> Read for PlainLimit<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let count = self.inner.read(buf)?;
        let read = self.read.saturating_add(count as u64);
        if read > self.limit {
            return Err(io::Error::other(format!(
                "it decompresses to more than the {} bytes its manifest records; reading stopped there and nothing past it was used (the object was replaced: a decompression bomb?)",
                self.limit
            )));
        }
        self.read = read;
        Ok(count)
    }
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
