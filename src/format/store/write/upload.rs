//! An artifact's bytes on their way into the store: the writer on the digest thread cuts the
//! plain stream into segments ([`Rollover`]), compresses and seals each one and hands it in
//! chunks through a bounded channel to the artifact's upload task ([`upload_segments`]), which
//! completes every full segment at once and the last one only when the artifact is committed
//! ([`PendingUpload`]). Split from [`super`] so that the sink's bookkeeping (manifest,
//! signatures, resumes) and the byte pipeline can each be read alone.

use std::io::{self, Write};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use cairn_store::{ArtifactStore, ObjectKey, PutOptions, StoreError, Upload};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::{delete_segments, SegmentLog, StoreBackup, UPLOAD_CHUNK, UPLOAD_QUEUE};
use crate::error::Error;
use crate::format::bbr_directory::ArtifactError;
use crate::format::encryption::Recipients;
use crate::format::hashing::HashingWriter;
use crate::format::manifest::{Compression, ManifestSegment};
use crate::format::sink::{ArtifactWriter, OpenArtifact, PendingArtifact, StoredBytes};
use crate::format::store::segment::{
    list_digest, segment_key, SegmentDigest, SegmentSize, MAX_SEGMENTS,
};

/// What the writer sends to the upload task: the stored bytes of the current segment in
/// chunks, then the segment's end.
enum Piece {
    Chunk(Bytes),
    /// The segment is complete; `last`: the artifact's last one, completed only on commit.
    End {
        digest: SegmentDigest,
        last: bool,
    },
    /// A resumed segment: stored by the run being resumed, and its plain bytes read again
    /// were the same; nothing is sent.
    Skipped {
        segment: ManifestSegment,
        last: bool,
    },
}

/// Collects bytes into fixed-size chunks and sends them to the upload task.
struct ChunkSender {
    buffer: Vec<u8>,
    sender: mpsc::Sender<Piece>,
}

impl ChunkSender {
    fn send(&self, piece: Piece) -> io::Result<()> {
        self.sender
            .blocking_send(piece)
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the store upload stopped"))
    }

    fn send_buffer(&mut self) -> io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(
            &mut self.buffer,
            Vec::with_capacity(UPLOAD_CHUNK),
        ));
        self.send(Piece::Chunk(chunk))
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

enum Encoding {
    Plain(Sealed),
    Zstd(zstd::Encoder<'static, Sealed>),
}

/// How each segment's bytes are encoded: the same for every segment of a backup.
struct SegmentEncoding {
    compression: Compression,
    workers: u32,
    encryption: Option<Recipients>,
    sender: mpsc::Sender<Piece>,
}

/// One segment being written: its own zstd frame and age file, and the digest of the plain
/// bytes it covers.
struct SegmentWriter {
    /// `None`: a segment stored before (resume), whose plain bytes are only hashed.
    encoding: Option<Encoding>,
    plain: Sha256,
    plain_size: u64,
}

impl SegmentEncoding {
    /// A segment whose plain bytes are only hashed (stored before: resume).
    fn open_check() -> SegmentWriter {
        SegmentWriter {
            encoding: None,
            plain: Sha256::new(),
            plain_size: 0,
        }
    }

    fn open(&self) -> io::Result<SegmentWriter> {
        let chunks = ChunkSender {
            buffer: Vec::with_capacity(UPLOAD_CHUNK),
            sender: self.sender.clone(),
        };
        // The age header goes into the first chunk here; nothing is sent before it is full.
        let sealed = Sealed::new(chunks, self.encryption.as_ref())?;
        let encoding = match self.compression {
            Compression::None => Encoding::Plain(sealed),
            Compression::Zstd { level } => {
                let mut encoder = zstd::Encoder::new(sealed, level)?;
                if self.workers > 1 {
                    let _ = encoder.multithread(self.workers);
                }
                Encoding::Zstd(encoder)
            }
        };
        Ok(SegmentWriter {
            encoding: Some(encoding),
            plain: Sha256::new(),
            plain_size: 0,
        })
    }
}

impl SegmentWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let count = match &mut self.encoding {
            Some(Encoding::Plain(w)) => w.write(buf)?,
            Some(Encoding::Zstd(w)) => w.write(buf)?,
            None => buf.len(),
        };
        self.plain.update(&buf[..count]);
        self.plain_size += count as u64;
        Ok(count)
    }

    /// Ends the zstd frame and the age file, sends the last bytes and the segment's end.
    fn finish(self, last: bool) -> io::Result<SegmentDigest> {
        let sealed = match self.encoding {
            Some(Encoding::Plain(w)) => w,
            Some(Encoding::Zstd(encoder)) => encoder.finish()?,
            None => {
                return Ok(SegmentDigest {
                    size: 0,
                    sha256: String::new(),
                    plain_size: self.plain_size,
                    plain_sha256: hex::encode(self.plain.finalize()),
                })
            }
        };
        let mut hashing = sealed.finish()?;
        hashing.inner.send_buffer()?;
        let stored = hashing.summary();
        let digest = SegmentDigest {
            size: stored.size,
            sha256: stored.sha256.unwrap_or_default(),
            plain_size: self.plain_size,
            plain_sha256: hex::encode(self.plain.finalize()),
        };
        hashing.inner.send(Piece::End {
            digest: digest.clone(),
            last,
        })?;
        Ok(digest)
    }
}

/// Where the writer is in the segment sequence ([`Rollover`]): splits a stream of plain bytes
/// into segments of `segment_size` bytes. A segment is ended only when more bytes arrive for
/// the next one, so the last segment is never empty (unless the whole artifact is) and is the
/// one left open for the commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Rollover {
    segment_size: u64,
    /// Plain bytes in the current segment.
    filled: u64,
    /// Segments started so far (the current one included).
    started: usize,
}

/// What the writer must do before writing more bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Open the first segment.
    Open,
    /// End the current (full) segment and open the next.
    Roll,
    /// Write at most this many bytes into the current segment.
    Write(usize),
}

impl Rollover {
    fn new(segment_size: u64) -> Rollover {
        Rollover {
            segment_size,
            filled: 0,
            started: 0,
        }
    }

    /// The next step for `wanted` more bytes (`wanted` > 0).
    fn next(&self, wanted: usize) -> Step {
        if self.started == 0 {
            Step::Open
        } else if self.filled == self.segment_size {
            Step::Roll
        } else {
            let room = self.segment_size - self.filled;
            Step::Write(usize::try_from(room).unwrap_or(usize::MAX).min(wanted))
        }
    }

    fn opened(&mut self) {
        self.started += 1;
        self.filled = 0;
    }

    fn wrote(&mut self, count: usize) {
        self.filled += count as u64;
    }
}

/// An artifact's writer: splits the plain bytes into segments ([`Rollover`]), each compressed
/// (or not) and sealed on its own, and sends them to the upload task.
struct StoreWriter {
    encoding: SegmentEncoding,
    rollover: Rollover,
    current: Option<SegmentWriter>,
    /// Every segment ended so far.
    done: Vec<SegmentDigest>,
    /// The artifact's key, for messages.
    key: String,
    /// Segments the resumed run stored: read again, compared, not sent.
    stored_before: Vec<ManifestSegment>,
}

impl StoreWriter {
    fn open_segment(&mut self) -> io::Result<()> {
        if self.rollover.started >= MAX_SEGMENTS {
            return Err(io::Error::other(format!(
                "the artifact needs more than {MAX_SEGMENTS} segments of {}; give a larger --segment-size",
                SegmentSize::from_bytes(self.rollover.segment_size)
                    .map_or_else(|_| "?".into(), |s| s.to_string())
            )));
        }
        self.current = Some(if self.rollover.started < self.stored_before.len() {
            SegmentEncoding::open_check()
        } else {
            self.encoding.open()?
        });
        self.rollover.opened();
        Ok(())
    }

    /// Ends the current segment. One stored before is compared with the record of the run
    /// being resumed: the same plain bytes are not sent again, other bytes stop the artifact.
    fn end_segment(&mut self, last: bool) -> io::Result<()> {
        let Some(segment) = self.current.take() else {
            return Ok(());
        };
        let index = self.done.len();
        let digest = segment.finish(last)?;
        let Some(stored) = self.stored_before.get(index) else {
            self.done.push(digest);
            return Ok(());
        };
        if digest.plain_sha256 != stored.plain_sha256 || digest.plain_size != stored.plain_size {
            return Err(io::Error::other(format!(
                "segment {index} of {} differs from the one the interrupted run stored ({} plain bytes with sha256 {} now, {} with {} then): the staged artifact changed on the instance, so the backup cannot be resumed and nothing of it is marked complete; discard it with `backup-cleanup` and take a new backup",
                self.key, digest.plain_size, digest.plain_sha256, stored.plain_size, stored.plain_sha256
            )));
        }
        let chunks = ChunkSender {
            buffer: Vec::new(),
            sender: self.encoding.sender.clone(),
        };
        chunks.send(Piece::Skipped {
            segment: stored.clone(),
            last,
        })?;
        self.done.push(SegmentDigest {
            size: stored.size,
            sha256: stored.sha256.clone(),
            plain_size: stored.plain_size,
            plain_sha256: stored.plain_sha256.clone(),
        });
        Ok(())
    }
}

impl Write for StoreWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            match self.rollover.next(buf.len()) {
                Step::Open => self.open_segment()?,
                Step::Roll => {
                    self.end_segment(false)?;
                    self.open_segment()?;
                }
                Step::Write(room) => {
                    let segment = self
                        .current
                        .as_mut()
                        .ok_or_else(|| io::Error::other("no segment open"))?;
                    let count = segment.write(&buf[..room])?;
                    self.rollover.wrote(count);
                    return Ok(count);
                }
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl ArtifactWriter for StoreWriter {
    /// Ends the last segment (an empty artifact is one empty segment) and reports the totals;
    /// `sha256` is the digest of the segment list ([`list_digest`]).
    fn finish(mut self: Box<Self>) -> io::Result<StoredBytes> {
        if self.current.is_none() {
            self.open_segment()?;
        }
        self.end_segment(true)?;
        if self.done.len() < self.stored_before.len() {
            return Err(io::Error::other(format!(
                "{} now ends after {} segment(s), but the interrupted run stored {}: the staged artifact changed on the instance, so the backup cannot be resumed and nothing of it is marked complete; discard it with `backup-cleanup` and take a new backup",
                self.key,
                self.done.len(),
                self.stored_before.len()
            )));
        }
        Ok(StoredBytes {
            size: self.done.iter().map(|d| d.size).sum(),
            sha256: Some(list_digest(&self.done)),
            plain_size: self.done.iter().map(|d| d.plain_size).sum(),
        })
    }
}

/// The artifact's last segment, uploaded and waiting for the commit.
struct LastSegment {
    /// `None`: stored by the resumed run (already in the log).
    upload: Option<Box<dyn Upload>>,
    segment: ManifestSegment,
}

/// The upload task of one artifact: uploads each segment as its chunks arrive and completes it
/// at its end (recording it in the log), except the last, which waits for the commit.
/// Returns `None` when the writer stopped before the last segment (it failed).
async fn upload_segments(
    store: Arc<dyn ArtifactStore>,
    artifact_key: String,
    options: PutOptions,
    log: SegmentLog,
    mut pieces: mpsc::Receiver<Piece>,
) -> Result<Option<LastSegment>, StoreError> {
    let mut index = 0;
    let mut upload: Option<Box<dyn Upload>> = None;
    let key_of = |index: usize| {
        ObjectKey::parse(&segment_key(&artifact_key, index)).map_err(|detail| StoreError::Other {
            store: store.to_string(),
            detail,
        })
    };
    while let Some(piece) = pieces.recv().await {
        if let Piece::Skipped { segment, last } = piece {
            if last {
                return Ok(Some(LastSegment {
                    upload: None,
                    segment,
                }));
            }
            index += 1;
            continue;
        }
        let current = match upload.take() {
            Some(current) => current,
            None => store.put(&key_of(index)?, &options).await?,
        };
        match piece {
            Piece::Chunk(chunk) => {
                let mut current = current;
                if let Err(error) = current.write(chunk).await {
                    let _ = current.abort().await;
                    return Err(error);
                }
                upload = Some(current);
            }
            Piece::End { digest, last } => {
                let segment = ManifestSegment {
                    key: segment_key(&artifact_key, index),
                    version: None,
                    size: digest.size,
                    sha256: digest.sha256,
                    plain_size: digest.plain_size,
                    plain_sha256: digest.plain_sha256,
                };
                if last {
                    return Ok(Some(LastSegment {
                        upload: Some(current),
                        segment,
                    }));
                }
                let put = current.complete().await?;
                log.record_and_tell(
                    &artifact_key,
                    ManifestSegment {
                        version: put.version,
                        ..segment
                    },
                )
                .await;
                index += 1;
            }
            Piece::Skipped { .. } => unreachable!("handled above"),
        }
    }
    if let Some(current) = upload {
        let _ = current.abort().await;
    }
    Ok(None)
}

struct PendingUpload {
    task: JoinHandle<Result<Option<LastSegment>, StoreError>>,
    store: Arc<dyn ArtifactStore>,
    key: ObjectKey,
    log: SegmentLog,
}

/// Removes the segments an artifact completed (it is discarded, or its commit failed); a
/// resumable backup keeps them for `backup --resume`.
async fn remove_completed(store: &dyn ArtifactStore, key: &ObjectKey, log: &SegmentLog) {
    if log.kept() {
        return;
    }
    let completed = log.take(Some(key.as_str()));
    delete_segments(store, &completed).await;
}

#[async_trait]
impl PendingArtifact for PendingUpload {
    /// Completes the last segment; the artifact's segments are in the backup's log (the
    /// manifest lists them), so there is no one version to return.
    async fn commit(self: Box<Self>) -> Result<Option<String>, Error> {
        let PendingUpload {
            task,
            store,
            key,
            log,
        } = *self;
        let failure = match task.await {
            Ok(Ok(Some(LastSegment { upload: None, .. }))) => return Ok(None),
            Ok(Ok(Some(LastSegment {
                upload: Some(upload),
                segment,
            }))) => match upload.complete().await {
                Ok(put) => {
                    log.record_and_tell(
                        key.as_str(),
                        ManifestSegment {
                            version: put.version,
                            ..segment
                        },
                    )
                    .await;
                    return Ok(None);
                }
                Err(error) => error.into(),
            },
            Ok(Ok(None)) => store_failure(&key, "the artifact's writer did not finish"),
            Ok(Err(error)) => error.into(),
            Err(error) => store_failure(&key, &error.to_string()),
        };
        remove_completed(store.as_ref(), &key, &log).await;
        Err(failure)
    }

    async fn discard(self: Box<Self>) -> Option<Error> {
        let PendingUpload {
            task,
            store,
            key,
            log,
        } = *self;
        let failure = match task.await {
            Ok(Ok(Some(LastSegment {
                upload: Some(upload),
                ..
            }))) => upload.abort().await.err().map(Error::from),
            Ok(Ok(Some(LastSegment { upload: None, .. }) | None)) => None,
            Ok(Err(error)) => Some(error.into()),
            Err(error) => Some(store_failure(&key, &error.to_string())),
        };
        remove_completed(store.as_ref(), &key, &log).await;
        failure
    }
}

pub(super) fn store_failure(key: &ObjectKey, detail: &str) -> Error {
    Error::Artifact(ArtifactError::Io {
        action: "Uploading",
        path: key.as_str().into(),
        source: io::Error::other(detail.to_string()),
    })
}

/// Opens an artifact whose segments are `<key>.000000`, `<key>.000001`, ...: the writer on the
/// digest thread and the upload task.
pub(super) fn open_upload(
    destination: &StoreBackup,
    key: ObjectKey,
) -> Result<OpenArtifact, Error> {
    let (sender, receiver) = mpsc::channel::<Piece>(UPLOAD_QUEUE);
    // A key that cannot take the suffix is refused now, not in the middle of the stream.
    ObjectKey::parse(&segment_key(key.as_str(), 0)).map_err(|e| store_failure(&key, &e))?;
    let task = tokio::spawn(upload_segments(
        Arc::clone(&destination.store),
        key.to_string(),
        destination.put_options.clone(),
        destination.segments.clone(),
        receiver,
    ));
    let writer = StoreWriter {
        encoding: SegmentEncoding {
            compression: destination.compression,
            workers: destination.compression_workers,
            encryption: destination.encryption.clone(),
            sender,
        },
        rollover: Rollover::new(destination.segment_size.bytes()),
        current: None,
        done: Vec::new(),
        stored_before: destination.segments.stored_before(key.as_str()),
        key: key.to_string(),
    };
    Ok((
        Box::new(writer),
        Box::new(PendingUpload {
            task,
            store: Arc::clone(&destination.store),
            key,
            log: destination.segments.clone(),
        }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `writes` (sizes) through the rollover and returns each segment's plain size.
    fn segments_of(segment_size: u64, writes: &[usize]) -> Vec<u64> {
        let mut rollover = Rollover::new(segment_size);
        let mut sizes: Vec<u64> = Vec::new();
        for &wanted in writes {
            let mut left = wanted;
            while left > 0 {
                match rollover.next(left) {
                    Step::Open | Step::Roll => {
                        rollover.opened();
                        sizes.push(0);
                    }
                    Step::Write(count) => {
                        assert!(count > 0 && count <= left);
                        rollover.wrote(count);
                        *sizes.last_mut().unwrap() += count as u64;
                        left -= count;
                    }
                }
            }
        }
        sizes
    }

    #[test]
    fn segments_fill_to_their_size_and_the_last_holds_the_rest() {
        assert_eq!(segments_of(10, &[25]), vec![10, 10, 5]);
        assert_eq!(segments_of(10, &[3, 3, 3, 3, 3, 3, 3]), vec![10, 10, 1]);
        // Exactly full: no empty segment after it (the last one stays open for the commit).
        assert_eq!(segments_of(10, &[10]), vec![10]);
        assert_eq!(segments_of(10, &[10, 10]), vec![10, 10]);
        assert_eq!(segments_of(10, &[9, 1, 1]), vec![10, 1]);
        assert_eq!(segments_of(10, &[]), Vec::<u64>::new());
        // A write never crosses a boundary: it is cut at the room left.
        let rollover = Rollover {
            segment_size: 10,
            filled: 7,
            started: 1,
        };
        assert_eq!(rollover.next(100), Step::Write(3));
    }
}
