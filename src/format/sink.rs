//! The seam between the workflows and where a backup lives: [`BackupSink`] (where backups are
//! written) and [`BackupSource`] (where one is read back from).
//!
//! The workflows only ever see these traits. A bbr directory and an object store implement
//! both today ([`crate::format::bbr_directory::sink`], [`crate::format::store`], which stores
//! each artifact as segments, [`crate::format::store::segment`]); a new kind of backup (a
//! deduplicating repository) is a new implementation, not a change to `workflow/`.
//!
//! Both seams are two-level, so that the type says what has been checked: a sink
//! [`starts`](BackupSink::start) one [`OpenBackup`] (room made, the location checked), which
//! opens artifacts and is finished with its [`BackupRecord`]; a source
//! [`checks`](BackupSource::check) a backup before anything is connected, and only the
//! [`CheckedBackup`] it returns opens artifacts for reading. An artifact is written through a
//! blocking [`ArtifactWriter`] (on the digest thread) and made visible by a
//! [`PendingArtifact`] only after the instance's checksums matched; it is read through an
//! [`ArtifactReader`] that checks every entry and file as the stream passes.

use std::fmt::Debug;
use std::io;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::error::{Error, RunErrors};
use crate::format::bbr_directory::metadata::{BackupMetadata, Checksums};
use crate::format::digest::FileDigests;
use crate::format::listing::ArtifactListing;
use crate::model::job::ScriptRecord;
use crate::model::layout::DeploymentLayout;

/// Where backups are written: a parent directory, a store location.
#[async_trait]
pub trait BackupSink: Send + Sync + Debug {
    /// Starts one backup: checks the location, makes room (removes what failed runs left),
    /// and writes whatever must exist from the start (bbr writes `metadata` first).
    ///
    /// # Errors
    /// A location that cannot hold the backup; nothing was changed on any instance yet.
    async fn start(&self, backup: &NewBackup<'_>) -> Result<Box<dyn OpenBackup>, Error>;
}

/// The backup about to be written.
#[derive(Debug, Clone, Copy)]
pub struct NewBackup<'a> {
    /// Deployment name.
    pub deployment: &'a str,
    /// Backup id (`YYYYMMDDTHHMMSSZ`, the start time).
    pub backup_id: &'a str,
    /// When the run started.
    pub started_at: DateTime<Utc>,
    /// Artifacts written at the same time (sizes per-stream buffers and compression threads).
    pub concurrent_streams: usize,
    /// The deployment's manifest, when asked to keep it (`--with-manifest`).
    pub deployment_manifest: Option<&'a str>,
}

/// One backup being written.
#[async_trait]
pub trait OpenBackup: Send + Sync + Debug {
    /// Where the backup is (a directory path, a store key), for messages and reports.
    fn location(&self) -> String;

    /// Extra GNU tar flags for the instance's `tar -c` of each artifact: none for a directory
    /// or a store; a repository wants members sorted by name, hard links as copies and pax
    /// times (`format::repository::write::TAR_FLAGS`).
    fn tar_flags(&self) -> &'static [&'static str] {
        &[]
    }

    /// True when this destination sends only what changed: the workflow then lists each
    /// staged artifact on its instance first and asks [`OpenBackup::open_listed`] which files
    /// to send (a repository, docs/design/repository.md §5 phase 2). The default: no.
    fn wants_listing(&self) -> bool {
        false
    }

    /// Opens one artifact for writing given the instance's listing of it: says which regular
    /// files must be sent (the others are already held, with their digests), and the writer
    /// for the tar of those files alone. `None` when the destination takes no listing.
    ///
    /// # Errors
    /// The artifact cannot be created.
    async fn open_listed(
        &self,
        name: &str,
        listing: Arc<ArtifactListing>,
    ) -> Result<Option<ListedArtifact>, Error> {
        let _ = (name, listing);
        Ok(None)
    }

    /// Opens one artifact (`<group>-<index>-<job>`, or a shared artifact's name) for writing.
    ///
    /// # Errors
    /// The artifact cannot be created.
    async fn open_artifact(&self, name: &str) -> Result<OpenArtifact, Error>;

    /// Opens one streamed artifact for writing (a job's `backup` writing to stdout,
    /// [`crate::format::stream`]): the writer gets the stream's bytes, not a tar. A bbr
    /// directory stores it as a one-file tar, a store as the stream itself, marked as one.
    ///
    /// # Errors
    /// The artifact cannot be created.
    async fn open_stream(&self, name: &str) -> Result<OpenArtifact, Error>;

    /// Ends the backup. A complete record is made restorable (bbr's `metadata` listing every
    /// artifact, a store's manifest written last); an incomplete one must never look
    /// complete: what it wrote is removed or left unlisted. Returns where the finished
    /// backup can be read back, when it is complete.
    ///
    /// # Errors
    /// The record could not be written; the backup is then not complete.
    async fn finish(
        self: Box<Self>,
        record: &BackupRecord,
    ) -> Result<Option<Arc<dyn BackupSource>>, Error>;

    /// Makes this backup resumable (`--resumable`, store backups only): from now on, what it
    /// stored is kept when it fails, each completed segment is reported to
    /// `resume.observer`, and the segments in `resume.stored` (of the run being resumed)
    /// are not sent again when the re-read stream matches them. The default refuses: only a
    /// store keeps segments.
    ///
    /// # Errors
    /// This kind of backup cannot be resumed.
    fn make_resumable(&self, resume: ResumeSetup) -> Result<(), Error> {
        let _ = resume;
        Err(Error::NotResumable {
            location: self.location(),
        })
    }

    /// True once [`OpenBackup::make_resumable`] succeeded: the staged artifacts stay on the
    /// instances until the whole backup is complete.
    fn is_resumable(&self) -> bool {
        false
    }

    /// How this backup writes its stored bytes (compression, encryption recipients), as far as
    /// a resume must write the rest the same way: recorded in the journal by the first run and
    /// given back to [`OpenBackup::make_resumable`] as [`ResumeSetup::written_as`].
    fn written_as(&self) -> String {
        String::new()
    }

    /// What a run killed while writing this backup would leave that the next run must find
    /// and remove: a repository's artifact snapshots ([`RepositoryBackupRef`]). The workflow
    /// records it in the run journal before the first artifact is opened. `None` (the
    /// default): a directory or a store removes an incomplete backup's files itself.
    fn journal_entry(&self) -> Option<RepositoryBackupRef> {
        None
    }
}

/// A backup being written into a repository, as the run journal records it: its snapshots are
/// found again by their tags (`deployment=`, `cairn-backup=`), since a snapshot's id is known
/// only once it is saved, and a kill may land in between.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RepositoryBackupRef {
    /// The `repo+` URL.
    pub store: String,
    /// The backup's id.
    pub backup_id: String,
}

/// Segments of a backup, by artifact key, in order.
pub type StoredSegments =
    std::collections::BTreeMap<String, Vec<crate::format::manifest::ManifestSegment>>;

/// What [`OpenBackup::make_resumable`] needs.
#[derive(Clone)]
pub struct ResumeSetup {
    /// Told of every segment as soon as it is completed in the store.
    pub observer: Arc<dyn SegmentObserver>,
    /// The segments an earlier run of this backup stored (empty for a new backup).
    pub stored: StoredSegments,
    /// [`OpenBackup::written_as`] of the run being resumed (`None`: a new backup, or a journal
    /// written before it was recorded).
    pub written_as: Option<String>,
}

impl Debug for ResumeSetup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResumeSetup")
            .field("stored", &self.stored)
            .field("written_as", &self.written_as)
            .finish_non_exhaustive()
    }
}

/// Records the segments of a resumable backup as they are stored (the run journal).
#[async_trait]
pub trait SegmentObserver: Send + Sync {
    /// `segments` are all those of `artifact_key` stored so far, the new one last.
    async fn stored(
        &self,
        artifact_key: &str,
        segments: Vec<crate::format::manifest::ManifestSegment>,
    );
}

/// The blocking side of an artifact being written (the tar stream, on the digest thread).
pub trait ArtifactWriter: io::Write + Send {
    /// Flushes everything and reports what was written.
    ///
    /// # Errors
    /// The bytes could not be written or made durable.
    fn finish(self: Box<Self>) -> io::Result<StoredBytes>;
}

/// The async side of an artifact being written: committed or discarded once verified.
#[async_trait]
pub trait PendingArtifact: Send {
    /// Makes the artifact visible; returns the store's version id, if any.
    ///
    /// # Errors
    /// The artifact could not be made visible.
    async fn commit(self: Box<Self>) -> Result<Option<String>, Error>;
    /// Removes what was written; returns the store's own error if the upload had failed.
    async fn discard(self: Box<Self>) -> Option<Error>;
}

/// An artifact opened with its listing ([`OpenBackup::open_listed`]).
pub struct ListedArtifact {
    /// Indexes into the listing's entries of the regular files to send, in listing order.
    pub wanted: Vec<usize>,
    /// Size and sha256 of every file not sent, carried from what the destination holds.
    pub carried: FileDigests,
    /// Takes the tar of the wanted files, in that order.
    pub writer: Box<dyn ArtifactWriter>,
    /// Committed or discarded once verified.
    pub pending: Box<dyn PendingArtifact>,
}

impl Debug for ListedArtifact {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ListedArtifact")
            .field("wanted", &self.wanted.len())
            .field("carried", &self.carried.len())
            .finish_non_exhaustive()
    }
}

/// The two halves of an artifact being written.
pub type OpenArtifact = (Box<dyn ArtifactWriter>, Box<dyn PendingArtifact>);

/// What was written for one artifact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredBytes {
    /// Bytes written (after compression and encryption).
    pub size: u64,
    /// sha256 of those bytes: for a store (the manifest records it); `None` for a bbr
    /// directory, whose format has only per-file digests, so the tar is not hashed twice.
    pub sha256: Option<String>,
    /// Bytes handed to the writer (the tar, or a streamed artifact's stream), before
    /// compression and encryption: a store's manifest records it, and a restore reads no more.
    pub plain_size: u64,
}

/// One artifact stored and verified against its instance's checksums.
#[derive(Debug, Clone)]
pub struct StoredArtifact {
    /// `<group>-<index>-<job>`, or the shared artifact's name.
    pub name: String,
    /// Instance group.
    pub group: String,
    /// Instance index.
    pub index: String,
    /// Job name.
    pub job: String,
    /// A backup-one-restore-all artifact (bbr's `custom_artifacts`).
    pub shared: bool,
    /// Size and sha256 of every file.
    pub files: FileDigests,
    /// What was stored.
    pub stored: StoredBytes,
    /// The store's version id, if any (none for a store's segmented artifacts: the store sink
    /// records each segment's version itself).
    pub version: Option<String>,
    /// A streamed artifact: `files` is the one [`crate::format::stream::STREAM_FILE`].
    pub stream: bool,
}

/// What a finished backup records.
#[derive(Debug, Clone)]
pub struct BackupRecord {
    /// True when every artifact was stored and verified, and the run was not interrupted.
    pub complete: bool,
    /// bbr's `metadata` (listing the artifacts only when complete).
    pub metadata: BackupMetadata,
    /// The artifacts stored and verified (all of them when complete).
    pub artifacts: Vec<StoredArtifact>,
    /// Every script that ran, for lock and unlock times.
    pub scripts: Vec<ScriptRecord>,
    /// The deployment's instance groups, jobs and releases, for a restore's compatibility
    /// check (a store's manifest records it; bbr's directory format has no place for it).
    pub layout: DeploymentLayout,
    /// Why an incomplete backup is incomplete: the run's errors so far, one line each (empty
    /// when complete, or when interrupted with no error). A store keeps the first lines in its
    /// failed-run record (`format::store::failed_run`).
    pub failure: Vec<String>,
}

/// Where one backup is read from.
#[async_trait]
pub trait BackupSource: Send + Sync + Debug {
    /// Where the backup is, for messages and reports.
    fn location(&self) -> String;

    /// Checks everything that needs no reading of the artifacts (metadata, every artifact
    /// present at its recorded size and version, an identity for an encrypted backup),
    /// before anything is connected.
    ///
    /// # Errors
    /// Everything found wrong.
    async fn check(&self, parallelism: usize) -> Result<Box<dyn CheckedBackup>, RunErrors>;
}

/// A backup whose metadata was checked, ready to be read artifact by artifact.
#[async_trait]
pub trait CheckedBackup: Send + Sync {
    /// bbr's view of the backup: every artifact's checksums.
    fn metadata(&self) -> &BackupMetadata;

    /// What the backup holds, for reports.
    fn contents(&self) -> BackupContents;

    /// The deployment manifest saved with the backup (`--with-manifest`), decrypted.
    fn deployment_manifest(&self) -> Option<&str>;

    /// The instance groups, jobs and releases recorded at backup time, when the format
    /// records them (beyond what `metadata` and the deployment manifest say).
    fn layout(&self) -> Option<&DeploymentLayout>;

    /// The bytes one artifact takes once extracted, at least (the files' sizes in a store,
    /// the tar's size in a directory); `None` when unknown.
    fn artifact_bytes(&self, name: &str) -> Option<u64>;

    /// Opens one artifact for reading.
    ///
    /// # Errors
    /// The artifact is not in the backup or cannot be opened.
    async fn open_artifact(
        &self,
        name: &str,
        expected: &Checksums,
    ) -> Result<Box<dyn ArtifactReader>, Error>;
}

/// Size of a backup, as far as its format records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackupContents {
    /// Job artifacts.
    pub artifacts: usize,
    /// Bytes stored (compressed and encrypted in a store, tar size in a directory).
    pub stored_bytes: Option<u64>,
    /// Bytes of the files inside the artifacts, when the format records them.
    pub data_bytes: Option<u64>,
}

/// One artifact opened for reading.
pub trait ArtifactReader: Send {
    /// Reads the whole artifact (blocking), passing its tar stream on to `writer` while every
    /// entry and file is checked. An unsafe entry is never passed on; a damaged artifact may
    /// be known only at its end, so the caller discards what was forwarded on an error.
    ///
    /// # Errors
    /// Anything that differs from what was recorded, or cannot be read.
    fn forward(self: Box<Self>, writer: &mut dyn io::Write) -> Result<(), Error>;

    /// How big the tar stream is, for the copy's log lines (bbr's `Copying backup -- <size>
    /// uncompressed --` and its percentages); zero when unknown.
    fn size(&self) -> ArtifactSize;
}

/// How big an artifact's tar stream is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ArtifactSize {
    /// Bytes [`ArtifactReader::forward`] writes (the percentages' total).
    pub tar_bytes: u64,
    /// The space it takes, as bbr's `du -sh <tar>` counts it (the log line's size): the
    /// tar file's blocks in a bbr directory, the files' bytes in a store.
    pub disk_usage: u64,
}
