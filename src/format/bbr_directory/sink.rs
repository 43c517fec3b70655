//! bbr's directory format as a [`BackupSink`] and a [`BackupSource`].
//!
//! Writing: `<parent>/<deployment>_<id>/` is created with bbr's initial `metadata` (and
//! `manifest.yml` with `--with-manifest`); each tar is written by a thread of its own under a
//! `.partial` name ([`FileWriter`]) and renamed when its checksums matched; the final
//! `metadata` lists the artifacts only when the backup is complete, otherwise the tars are
//! removed (bbr's shape of a failed backup, which restore refuses).
//!
//! Reading: the metadata and the presence of every listed tar are checked before anything is
//! connected ([`check_backup_directory`]); each tar is then read once, every entry and file
//! checked while it streams to the instance.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;

use super::direct_io::DirectWriter;
use super::{ArtifactError, BackupDirectory, BackupMetadata, Checksums};
use crate::error::{Error, RunErrors};
use crate::format::signature::{SigningKey, TrustedKeys};
use crate::format::sink::{
    ArtifactReader, ArtifactSize, ArtifactWriter, BackupContents, BackupRecord, BackupSink,
    BackupSource, CheckedBackup, NewBackup, OpenArtifact, OpenBackup, PendingArtifact, StoredBytes,
};

/// Backups written as bbr directories under an existing directory (`--artifact-path`).
#[derive(Debug, Clone)]
pub struct BbrDirectorySink {
    parent: PathBuf,
    signing: Option<SigningKey>,
}

impl BbrDirectorySink {
    /// Backups go under `parent`, which must exist.
    #[must_use]
    pub fn new(parent: impl Into<PathBuf>) -> Self {
        Self {
            parent: parent.into(),
            signing: None,
        }
    }

    /// Signs each complete backup's `metadata` with `key` (`metadata.sig`, [`super::signed`]).
    #[must_use]
    pub fn with_signing(mut self, key: Option<SigningKey>) -> Self {
        self.signing = key;
        self
    }

    /// The directory a backup of `deployment` with `backup_id` is written to.
    #[must_use]
    pub fn backup_path(&self, deployment: &str, backup_id: &str) -> PathBuf {
        self.parent.join(format!("{deployment}_{backup_id}"))
    }
}

#[async_trait]
impl BackupSink for BbrDirectorySink {
    async fn start(&self, backup: &NewBackup<'_>) -> Result<Box<dyn OpenBackup>, Error> {
        let name = format!("{}_{}", backup.deployment, backup.backup_id);
        let directory = BackupDirectory::create(&self.parent, &name)?;
        directory.write_metadata(&BackupMetadata::started(backup.started_at))?;
        if let Some(manifest) = backup.deployment_manifest {
            directory.write_file("manifest.yml", manifest.as_bytes())?;
        }
        Ok(Box::new(DirectoryBackup {
            directory,
            signing: self.signing.clone().map(|key| DirectorySigning {
                key,
                deployment: backup.deployment.to_string(),
                backup_id: backup.backup_id.to_string(),
                deployment_manifest: backup.deployment_manifest.map(str::to_string),
            }),
        }))
    }
}

/// A bbr directory being written.
#[derive(Debug)]
struct DirectoryBackup {
    directory: BackupDirectory,
    signing: Option<DirectorySigning>,
}

/// What signing a directory's `metadata` needs.
#[derive(Debug)]
struct DirectorySigning {
    key: SigningKey,
    deployment: String,
    backup_id: String,
    deployment_manifest: Option<String>,
}

#[async_trait]
impl OpenBackup for DirectoryBackup {
    fn location(&self) -> String {
        self.directory.path().display().to_string()
    }

    async fn open_artifact(&self, name: &str) -> Result<OpenArtifact, Error> {
        open_file(&self.directory, name)
    }

    async fn open_stream(&self, name: &str) -> Result<OpenArtifact, Error> {
        let (writer, pending) = open_file_writer(&self.directory, name)?;
        let writer = StreamTarWriter::start(writer).map_err(|source| ArtifactError::Io {
            action: "Opening the artifact file",
            path: self.directory.partial_tar_path(name),
            source,
        })?;
        Ok((Box::new(writer), Box::new(pending)))
    }

    async fn finish(
        self: Box<Self>,
        record: &BackupRecord,
    ) -> Result<Option<Arc<dyn BackupSource>>, Error> {
        if !record.complete {
            self.directory.remove_tars();
        }
        if let (true, Some(signing)) = (record.complete, &self.signing) {
            // Before the final metadata, which makes the directory complete.
            super::signed::sign_directory(
                &self.directory,
                &signing.key,
                (&signing.deployment, &signing.backup_id),
                &record.metadata,
                signing.deployment_manifest.as_deref(),
            )?;
        }
        self.directory.write_metadata(&record.metadata)?;
        Ok(record.complete.then(|| {
            Arc::new(BbrDirectorySource::new(self.directory.path())) as Arc<dyn BackupSource>
        }))
    }
}

/// A tar being written into a bbr directory: counted, not hashed (the per-file digests taken
/// on the digest thread are what bbr's `metadata` records), written by a thread of its own and
/// made durable before it counts as written.
///
/// The digest thread only copies the stream into 1 MiB buffers; [`FileThread`] does the
/// `write`s (copying into the page cache costs about as much as hashing, and more when the
/// kernel must reclaim pages first), so hashing and writing overlap.
struct FileWriter {
    buffer: Vec<u8>,
    size: u64,
    file: FileThread,
}

/// Size of the buffers handed to the file thread.
const FILE_CHUNK: usize = 1 << 20;
/// Buffers queued for the file thread (bounded memory; the digest thread waits when full).
const FILE_QUEUE: usize = 8;
/// Bytes between two background `fdatasync`s of a tar being written.
const WRITEBACK_EVERY: u64 = 128 << 20;

/// Writes buffers to the file in order and hands them back for reuse; asks [`Writeback`] to
/// start writing dirty pages out every [`WRITEBACK_EVERY`] bytes.
struct FileThread {
    chunks: Option<std::sync::mpsc::SyncSender<Vec<u8>>>,
    recycled: std::sync::mpsc::Receiver<Vec<u8>>,
    thread: Option<std::thread::JoinHandle<io::Result<std::fs::File>>>,
}

impl FileThread {
    fn start(file: std::fs::File, writeback_every: u64) -> io::Result<FileThread> {
        let writeback = Writeback::start(&file)?;
        let (chunks, received) = std::sync::mpsc::sync_channel::<Vec<u8>>(FILE_QUEUE);
        let (give_back, recycled) = std::sync::mpsc::sync_channel::<Vec<u8>>(FILE_QUEUE + 1);
        let thread = std::thread::Builder::new()
            .name("cairn-tar-writer".into())
            .spawn(move || {
                let mut file = DirectWriter::new(file, FILE_CHUNK);
                let (mut written, mut flushed_at) = (0_u64, 0_u64);
                while let Ok(mut chunk) = received.recv() {
                    file.write_piece(&chunk)?;
                    written += chunk.len() as u64;
                    if written - flushed_at >= writeback_every {
                        flushed_at = written;
                        writeback.request();
                    }
                    chunk.clear();
                    let _ = give_back.try_send(chunk);
                }
                writeback.finish()?;
                file.into_file()
            })?;
        Ok(FileThread {
            chunks: Some(chunks),
            recycled,
            thread: Some(thread),
        })
    }

    /// A cleared buffer to fill: one the thread is done with, or a new one.
    fn buffer(&self) -> Vec<u8> {
        self.recycled
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(FILE_CHUNK))
    }

    fn send(&mut self, chunk: Vec<u8>) -> io::Result<()> {
        let sent = self
            .chunks
            .as_ref()
            .is_some_and(|chunks| chunks.send(chunk).is_ok());
        if sent {
            Ok(())
        } else {
            // The thread stopped at an error: that error is the answer.
            Err(self
                .join()
                .err()
                .unwrap_or_else(|| io::Error::other("the tar writer stopped")))
        }
    }

    /// Waits for every buffer to be written; returns the file.
    fn join(&mut self) -> io::Result<std::fs::File> {
        self.chunks = None;
        let thread = self
            .thread
            .take()
            .ok_or_else(|| io::Error::other("the tar writer already stopped"))?;
        thread
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the tar writer panicked")))
    }
}

/// A thread that writes a file's dirty pages out while the stream goes on (`fdatasync` on a
/// second handle of the file), so that the `fsync` at the end — a GiB of dirty pages takes
/// 0.7–1.1 s on this project's machines — finds little left and does not stall the stream.
struct Writeback {
    requests: std::sync::mpsc::SyncSender<()>,
    thread: std::thread::JoinHandle<io::Result<()>>,
}

impl Writeback {
    fn start(file: &std::fs::File) -> io::Result<Writeback> {
        let file = file.try_clone()?;
        let (requests, received) = std::sync::mpsc::sync_channel::<()>(1);
        let thread = std::thread::Builder::new()
            .name("cairn-writeback".into())
            .spawn(move || {
                while received.recv().is_ok() {
                    file.sync_data()?;
                }
                Ok(())
            })?;
        Ok(Writeback { requests, thread })
    }

    /// Asks for a writeback unless one is already waiting.
    fn request(&self) {
        let _ = self.requests.try_send(());
    }

    fn finish(self) -> io::Result<()> {
        drop(self.requests);
        self.thread
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the writeback thread panicked")))
    }
}

impl Write for FileWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.buffer.capacity() == 0 {
            self.buffer = self.file.buffer();
        }
        let count = buf.len().min(FILE_CHUNK - self.buffer.len());
        self.buffer.extend_from_slice(&buf[..count]);
        self.size += count as u64;
        if self.buffer.len() == FILE_CHUNK {
            let full = std::mem::take(&mut self.buffer);
            self.file.send(full)?;
        }
        Ok(count)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl FileWriter {
    /// Writes what is buffered and waits for the file thread; returns the file (not yet
    /// synced) and its size.
    fn close(mut self) -> io::Result<(std::fs::File, u64)> {
        if !self.buffer.is_empty() {
            let rest = std::mem::take(&mut self.buffer);
            self.file.send(rest)?;
        }
        Ok((self.file.join()?, self.size))
    }
}

impl ArtifactWriter for FileWriter {
    fn finish(self: Box<Self>) -> io::Result<StoredBytes> {
        let (file, size) = (*self).close()?;
        file.sync_all()?;
        Ok(StoredBytes {
            size,
            sha256: None,
            plain_size: size,
        })
    }
}

/// A streamed artifact written as bbr's one-file tar ([`crate::format::stream`]): a header
/// block held open, the stream, then the tail; the header is written in place once the
/// stream's size is known (the file is local, so it can be).
struct StreamTarWriter {
    file: FileWriter,
    size: u64,
}

impl StreamTarWriter {
    fn start(mut file: FileWriter) -> io::Result<StreamTarWriter> {
        // A placeholder, rewritten by `finish`.
        file.write_all(&crate::format::stream::header(0))?;
        Ok(StreamTarWriter { file, size: 0 })
    }
}

impl Write for StreamTarWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let count = self.file.write(buf)?;
        self.size += count as u64;
        Ok(count)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl ArtifactWriter for StreamTarWriter {
    fn finish(self: Box<Self>) -> io::Result<StoredBytes> {
        use std::os::unix::fs::FileExt;
        let StreamTarWriter {
            file: mut writer,
            size: stream_size,
        } = *self;
        writer.write_all(&crate::format::stream::tail(stream_size))?;
        let (file, size) = writer.close()?;
        file.write_all_at(&crate::format::stream::header(stream_size), 0)?;
        file.sync_all()?;
        Ok(StoredBytes {
            size,
            sha256: None,
            plain_size: size,
        })
    }
}

struct PendingFile {
    directory: BackupDirectory,
    name: String,
}

#[async_trait]
impl PendingArtifact for PendingFile {
    async fn commit(self: Box<Self>) -> Result<Option<String>, Error> {
        self.directory.commit_tar(&self.name)?;
        Ok(None)
    }

    async fn discard(self: Box<Self>) -> Option<Error> {
        let _ = std::fs::remove_file(self.directory.partial_tar_path(&self.name));
        None
    }
}

fn open_file(directory: &BackupDirectory, name: &str) -> Result<OpenArtifact, Error> {
    let (writer, pending) = open_file_writer(directory, name)?;
    Ok((Box::new(writer), Box::new(pending)))
}

fn open_file_writer(
    directory: &BackupDirectory,
    name: &str,
) -> Result<(FileWriter, PendingFile), Error> {
    let file = directory.create_partial_tar(name)?;
    let file = FileThread::start(file, WRITEBACK_EVERY).map_err(|source| ArtifactError::Io {
        action: "Opening the artifact file",
        path: directory.partial_tar_path(name),
        source,
    })?;
    let writer = FileWriter {
        buffer: Vec::new(),
        size: 0,
        file,
    };
    let pending = PendingFile {
        directory: BackupDirectory::open(directory.path()),
        name: name.to_string(),
    };
    Ok((writer, pending))
}

/// A bbr backup directory to restore from.
#[derive(Debug, Clone)]
pub struct BbrDirectorySource {
    path: PathBuf,
    trusted: TrustedKeys,
}

impl BbrDirectorySource {
    /// The backup directory at `path`.
    #[must_use]
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            trusted: TrustedKeys::default(),
        }
    }

    /// Refuses the directory unless its `metadata.sig` is signed by one of `trusted`
    /// (`--trusted-key`; empty: not checked).
    #[must_use]
    pub fn with_trusted(mut self, trusted: TrustedKeys) -> Self {
        self.trusted = trusted;
        self
    }
}

#[async_trait]
impl BackupSource for BbrDirectorySource {
    fn location(&self) -> String {
        self.path.display().to_string()
    }

    async fn check(&self, _parallelism: usize) -> Result<Box<dyn CheckedBackup>, RunErrors> {
        tracing::info!("Checking backup {}...", self.path.display());
        let signed = if self.trusted.is_empty() {
            None
        } else {
            Some(super::signed::read_signed_metadata(
                &self.path,
                &self.trusted,
            )?)
        };
        let metadata = check_backup_directory(&self.path)?;
        if signed.as_ref().is_some_and(|signed| *signed != metadata) {
            return Err(
                Error::from(crate::format::signature::SignatureError::ContentChanged {
                    backup: format!("directory {}", self.path.display()),
                    object: "metadata",
                    detail: "it changed while it was being checked".into(),
                })
                .into(),
            );
        }
        // bbr writes `manifest.yml` with --with-manifest and never reads it back; Cairn
        // compares it with the restore's target.
        let deployment_manifest = std::fs::read_to_string(self.path.join("manifest.yml")).ok();
        Ok(Box::new(CheckedDirectory {
            path: self.path.clone(),
            metadata,
            deployment_manifest,
        }))
    }
}

/// Checks a backup directory without reading its tars: the metadata, and that every tar it
/// lists is there (the tars are verified as they are sent).
///
/// # Errors
/// A missing directory or tar, unreadable metadata, an incomplete backup.
pub fn check_backup_directory(path: &Path) -> Result<BackupMetadata, RunErrors> {
    if !path.is_dir() {
        // bbr's `failed opening the directory`, and the reason in its words.
        return Err(Error::from(ArtifactError::Missing {
            action: "failed opening the directory",
            path: path.to_path_buf(),
            reason: if path.exists() {
                "not a directory"
            } else {
                "no such file or directory"
            },
            what_to_do: "give --artifact-path the backup's directory (`<deployment>_<timestamp>`)",
        })
        .into());
    }
    let directory = BackupDirectory::open(path);
    let metadata = directory.read_metadata().map_err(Error::from)?;
    if metadata.instances.is_empty() && metadata.custom_artifacts.is_empty() {
        return Err(Error::from(ArtifactError::Incomplete(path.to_path_buf())).into());
    }
    let missing: Vec<Error> = BackupDirectory::listed_artifacts(&metadata)
        .into_iter()
        .map(|(name, _)| directory.tar_path(&name))
        .filter(|tar| !tar.is_file())
        .map(|tar| {
            Error::from(ArtifactError::Missing {
                action: "Error reading artifact file",
                path: tar,
                reason: "no such file",
                what_to_do: "the backup is incomplete or damaged; choose another backup",
            })
        })
        .collect();
    RunErrors(missing).into_result()?;
    Ok(metadata)
}

/// A backup directory whose metadata was read and whose tars exist.
struct CheckedDirectory {
    path: PathBuf,
    metadata: BackupMetadata,
    deployment_manifest: Option<String>,
}

#[async_trait]
impl CheckedBackup for CheckedDirectory {
    fn metadata(&self) -> &BackupMetadata {
        &self.metadata
    }

    fn contents(&self) -> BackupContents {
        let directory = BackupDirectory::open(&self.path);
        let artifacts = BackupDirectory::listed_artifacts(&self.metadata);
        let size = artifacts
            .iter()
            .filter_map(|(name, _)| std::fs::metadata(directory.tar_path(name)).ok())
            .map(|m| m.len())
            .sum();
        BackupContents {
            artifacts: artifacts.len(),
            stored_bytes: Some(size),
            // bbr's metadata records no file sizes: the tars are the closest measure.
            data_bytes: Some(size),
        }
    }

    fn deployment_manifest(&self) -> Option<&str> {
        self.deployment_manifest.as_deref()
    }

    /// bbr's directory format records no layout beyond `metadata` (and `manifest.yml`).
    fn layout(&self) -> Option<&crate::model::layout::DeploymentLayout> {
        None
    }

    /// The tar's size: its files' bytes and their headers.
    fn artifact_bytes(&self, name: &str) -> Option<u64> {
        let tar = BackupDirectory::open(&self.path).tar_path(name);
        std::fs::metadata(tar).ok().map(|m| m.len())
    }

    async fn open_artifact(
        &self,
        name: &str,
        expected: &Checksums,
    ) -> Result<Box<dyn ArtifactReader>, Error> {
        Ok(Box::new(DirectoryArtifact {
            backup: self.path.clone(),
            name: name.to_string(),
            expected: expected.clone(),
        }))
    }
}

/// One tar of a backup directory, checked as it is read.
struct DirectoryArtifact {
    backup: PathBuf,
    name: String,
    expected: Checksums,
}

impl ArtifactReader for DirectoryArtifact {
    fn forward(self: Box<Self>, writer: &mut dyn Write) -> Result<(), Error> {
        Ok(BackupDirectory::open(&self.backup).check_tar(
            &self.name,
            &self.expected,
            Some(writer),
        )?)
    }

    /// The tar file's length, and its blocks as `du` counts them (an unreadable file is
    /// reported by `forward`).
    fn size(&self) -> ArtifactSize {
        use std::os::unix::fs::MetadataExt;
        let path = BackupDirectory::open(&self.backup).tar_path(&self.name);
        std::fs::metadata(path).map_or(ArtifactSize::default(), |file| ArtifactSize {
            tar_bytes: file.len(),
            disk_usage: file.blocks() * 512,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writebacks requested while the stream goes on (here every 64 KiB, so several run and
    /// some requests find one already waiting) change nothing in what is written.
    #[test]
    fn a_tar_written_with_background_writeback_is_complete() {
        let directory = tempfile::tempdir().unwrap();
        let backup = BackupDirectory::create(directory.path(), "d_20240102T030405Z").unwrap();
        let file = backup.create_partial_tar("g-0-j").unwrap();
        let mut writer = FileWriter {
            buffer: Vec::new(),
            size: 0,
            file: FileThread::start(file, 64 << 10).unwrap(),
        };
        let data: Vec<u8> = (0..5_000_000_u32).map(|n| (n % 251) as u8).collect();
        for chunk in data.chunks(33_333) {
            writer.write_all(chunk).unwrap();
        }
        let stored = Box::new(writer).finish().unwrap();
        assert_eq!(stored.size, data.len() as u64);
        assert_eq!(stored.sha256, None);
        assert_eq!(
            std::fs::read(backup.partial_tar_path("g-0-j")).unwrap(),
            data
        );
    }

    /// A stream is written as bbr's one-file tar: GNU tar lists `./cairn-stream`, and the
    /// digest of that file is the stream's.
    #[test]
    fn a_stream_is_written_as_a_one_file_tar_with_its_header_filled_in_at_the_end() {
        use sha2::Digest;
        let directory = tempfile::tempdir().unwrap();
        let backup = BackupDirectory::create(directory.path(), "d_20240102T030405Z").unwrap();
        let (writer, _pending) = open_file_writer(&backup, "g-0-j").unwrap();
        let mut writer = Box::new(StreamTarWriter::start(writer).unwrap());
        let data: Vec<u8> = (0..1_300_001_u32).map(|n| (n % 253) as u8).collect();
        for chunk in data.chunks(70_001) {
            writer.write_all(chunk).unwrap();
        }
        let stored = writer.finish().unwrap();
        let tar = std::fs::read(backup.partial_tar_path("g-0-j")).unwrap();
        assert_eq!(stored.size, tar.len() as u64);
        let files = crate::format::digest::digest_tar(
            tar.as_slice(),
            crate::format::digest::EntryPolicy::RefuseEscapes,
        )
        .unwrap();
        assert_eq!(files.len(), 1);
        assert_eq!(
            files[crate::format::stream::STREAM_FILE.as_bytes()],
            hex::encode(sha2::Sha256::digest(&data))
        );
        let listed = std::process::Command::new("tar")
            .arg("-tvf")
            .arg(backup.partial_tar_path("g-0-j"))
            .output()
            .unwrap();
        let listed = String::from_utf8_lossy(&listed.stdout);
        assert!(
            listed.contains("1300001") && listed.contains("./cairn-stream"),
            "{listed}"
        );
    }

    /// A failing `write` on the file thread (here: a file opened read-only) is the error of
    /// the next write or of `finish`.
    #[test]
    fn a_failing_file_write_is_reported() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("read-only");
        std::fs::write(&path, b"").unwrap();
        let file = std::fs::File::open(&path).unwrap();
        let mut writer = FileWriter {
            buffer: Vec::new(),
            size: 0,
            file: FileThread::start(file, WRITEBACK_EVERY).unwrap(),
        };
        let data = vec![7_u8; 3 * FILE_CHUNK];
        let written = writer.write_all(&data);
        let finished = Box::new(writer).finish();
        assert!(written.is_err() || finished.is_err());
    }
}
