//! Where a backup's artifacts go: a bbr directory on local disk, or an object store.
//!
//! Both are driven the same way by the data path ([`super::transfer`]): for each artifact,
//! [`Destination::open_artifact`] gives a blocking [`ArtifactWriter`] (the tar bytes are
//! written to it on the digest thread) and a [`PendingArtifact`] that is committed only after
//! the instance's checksums matched, or discarded. For a store, the writer compresses with
//! zstd, encrypts with age when the backup has recipients (`--encrypt-to`), hashes the bytes
//! as stored and hands fixed-size chunks to an upload task through a bounded channel, so
//! nothing touches the coordinator's disk and memory stays bounded.

use std::io::{self, Write};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use cairn_store::{ArtifactStore, ObjectKey, PutOptions, StoreError, Upload};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::format::bbr_directory::{ArtifactError, BackupDirectory};
use crate::format::encryption::Recipients;
use crate::error::Error;
use crate::format::manifest::Compression;

/// Size of the chunks handed to an upload (the adapter assembles its own parts). Small, since
/// every parallel stream holds a few of them on top of the process's shared part budget.
const UPLOAD_CHUNK: usize = 256 << 10;
/// Chunks queued between the digest thread and the upload task.
const UPLOAD_QUEUE: usize = 4;

/// What was written for one artifact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredBytes {
    /// Bytes written (after compression and encryption).
    pub size: u64,
    /// sha256 of those bytes: for a store (the manifest records it); `None` for a bbr
    /// directory, whose format has only per-file digests, so the tar is not hashed twice.
    pub sha256: Option<String>,
}

/// The blocking side of an artifact being written.
pub(crate) trait ArtifactWriter: Write + Send {
    /// Flushes everything and reports what was written.
    fn finish(self: Box<Self>) -> io::Result<StoredBytes>;
}

/// The async side of an artifact being written: commit or discard once verified.
#[async_trait]
pub(crate) trait PendingArtifact: Send {
    /// Makes the artifact visible; returns the store's version id, if any.
    async fn commit(self: Box<Self>) -> Result<Option<String>, Error>;
    /// Removes what was written; returns the store's own error if the upload had failed.
    async fn discard(self: Box<Self>) -> Option<Error>;
}

/// The two halves of an artifact being written.
pub(crate) type OpenArtifact = (Box<dyn ArtifactWriter>, Box<dyn PendingArtifact>);

/// A backup's destination.
#[derive(Debug)]
pub enum Destination {
    /// bbr's local directory format (uncompressed tars, `metadata`).
    Directory(BackupDirectory),
    /// An object store: `<deployment>/<backup id>/<artifact>.tar.zst`, `metadata`, `manifest.json`.
    Store(StoreDestination),
}

/// A backup being written into a store.
#[derive(Debug, Clone)]
pub struct StoreDestination {
    /// The store.
    pub store: Arc<dyn ArtifactStore>,
    /// `<deployment>/<backup id>`.
    pub backup_key: ObjectKey,
    /// How artifacts are compressed.
    pub compression: Compression,
    /// Retention and other put options.
    pub put_options: PutOptions,
    /// zstd worker threads per artifact stream (1: compress on the digest thread itself).
    pub compression_workers: u32,
    /// Encrypt every artifact to these age recipients (after compression).
    pub encryption: Option<Recipients>,
}

/// zstd workers per stream: the cores shared by the streams that run at once, so that
/// parallel streams neither oversubscribe the CPU nor multiply zstd's per-worker buffers.
#[must_use]
pub fn compression_workers(concurrent_streams: usize) -> u32 {
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    u32::try_from((cores / concurrent_streams.max(1)).max(1)).unwrap_or(1)
}

impl StoreDestination {
    /// Key of an object of this backup.
    ///
    /// # Panics
    /// Never for names Cairn makes (group, index and job names are single segments).
    #[must_use]
    pub fn key(&self, name: &str) -> ObjectKey {
        self.backup_key
            .join(name)
            .expect("artifact names are valid key segments")
    }

    /// Key of an artifact's object: `<name>.tar.zst`, `<name>.tar` without compression, and
    /// `.age` appended when encrypted.
    #[must_use]
    pub fn artifact_key(&self, name: &str) -> ObjectKey {
        let mut file = format!("{name}.{}", self.compression.extension());
        if self.encryption.is_some() {
            file.push('.');
            file.push_str(crate::format::encryption::EXTENSION);
        }
        self.key(&file)
    }
}

impl Destination {
    /// Opens one artifact for writing.
    pub(crate) async fn open_artifact(&self, name: &str) -> Result<OpenArtifact, Error> {
        match self {
            Destination::Directory(directory) => open_file(directory, name),
            Destination::Store(store) => open_upload(store, name).await,
        }
    }

    /// Where the backup is, for messages.
    #[must_use]
    pub fn describe(&self) -> String {
        match self {
            Destination::Directory(directory) => directory.path().display().to_string(),
            Destination::Store(store) => format!("{}/{}", store.store, store.backup_key),
        }
    }
}

/// Counts and hashes bytes on their way to `inner`.
struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    size: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let count = self.inner.write(buf)?;
        self.hasher.update(&buf[..count]);
        self.size += count as u64;
        Ok(count)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<W> HashingWriter<W> {
    fn new(inner: W) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            size: 0,
        }
    }

    fn summary(&self) -> StoredBytes {
        StoredBytes {
            size: self.size,
            sha256: Some(hex::encode(self.hasher.clone().finalize())),
        }
    }
}

// ---- local directory ----

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
                let mut file = file;
                let (mut written, mut flushed_at) = (0_u64, 0_u64);
                while let Ok(mut chunk) = received.recv() {
                    file.write_all(&chunk)?;
                    written += chunk.len() as u64;
                    if written - flushed_at >= writeback_every {
                        flushed_at = written;
                        writeback.request();
                    }
                    chunk.clear();
                    let _ = give_back.try_send(chunk);
                }
                writeback.finish()?;
                Ok(file)
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

impl ArtifactWriter for FileWriter {
    fn finish(mut self: Box<Self>) -> io::Result<StoredBytes> {
        if !self.buffer.is_empty() {
            let rest = std::mem::take(&mut self.buffer);
            self.file.send(rest)?;
        }
        let file = self.file.join()?;
        file.sync_all()?;
        Ok(StoredBytes {
            size: self.size,
            sha256: None,
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
    Ok((Box::new(writer), Box::new(pending)))
}

// ---- object store ----

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

enum StoreWriter {
    Plain(Sealed),
    Zstd(zstd::Encoder<'static, Sealed>),
}

impl Write for StoreWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            StoreWriter::Plain(w) => w.write(buf),
            StoreWriter::Zstd(w) => w.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl ArtifactWriter for StoreWriter {
    fn finish(self: Box<Self>) -> io::Result<StoredBytes> {
        let sealed = match *self {
            StoreWriter::Plain(w) => w,
            StoreWriter::Zstd(encoder) => encoder.finish()?,
        };
        let mut hashing = sealed.finish()?;
        hashing.inner.send_buffer()?;
        hashing.inner.sender = None;
        Ok(hashing.summary())
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

async fn open_upload(destination: &StoreDestination, name: &str) -> Result<OpenArtifact, Error> {
    let key = destination.artifact_key(name);
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
    let writer = match destination.compression {
        Compression::None => StoreWriter::Plain(sealed),
        Compression::Zstd { level } => {
            let mut encoder = zstd::Encoder::new(sealed, level)
                .map_err(|e| store_failure(&key, &e.to_string()))?;
            if destination.compression_workers > 1 {
                let _ = encoder.multithread(destination.compression_workers);
            }
            StoreWriter::Zstd(encoder)
        }
    };
    Ok((Box::new(writer), Box::new(PendingUpload { task, key })))
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
