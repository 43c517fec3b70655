//! Moving artifacts between instances and a backup destination (directory or store).
//!
//! Backup: the instance's `tar -c` output arrives on an SSH channel, goes through a bounded
//! channel to a blocking thread that writes it to the tar file and hashes every entry on the
//! way ([`TeeReader`] + [`digest_tar`]); those digests are the per-file sha256 of `metadata`.
//! The instance reads each byte once, the coordinator too. What guards the bytes between
//! tar's read and the digest is SSH's authenticated encryption, and tar's own exit status (a
//! file written while tar read it, "file changed as we read it", fails the artifact).
//! With `--instance-checksums` (bbr's check, [`crate::workflow::RunOptions::instance_checksums`])
//! a second channel on the same connection also hashes every file on the instance in a second
//! read, at the same time, and the two lists must match: it catches a fault in Cairn's own
//! stream parsing at backup time rather than at the first restore, for a second read and hash
//! of every byte on the instance (docs/reliability.md, "Checksums at backup").
//!
//! A streaming job (scripts-contract "Streaming", [`crate::format::stream`]) has no artifact
//! directory: its `backup` script's stdout goes the same way as a `tar -c` (channel,
//! blocking thread, the sink's writer), hashed as a whole ([`stream_backup`]); its `restore`
//! script's stdin is the stored stream, read a second time after a full check and checked
//! again on the way ([`verify_stream`], [`stream_restore`]).
//!
//! Restore: the artifact is read once on a blocking thread, which checks every entry and file
//! while handing the tar stream, in 1 MiB chunks, to `tar -x` on the instance
//! ([`ArtifactReader::forward`]). The instance hashes each file as soon as `tar -x` has
//! written it, while the rest of the stream is still extracting
//! ([`commands::tar_extract_with_checksums`]; a name with a newline or a backslash falls back
//! to a second pass after the extraction), and its checksums are compared with the ones in
//! `metadata` once the command ended. The upload fails if either check fails, and the caller
//! runs no script.
//!
//! Both directions count the bytes they move; a stream that moves none for `--stall-timeout`
//! is stopped, its instance's connection dropped (the next command reconnects) and the copy
//! fails ([`stall`], [`Error::TransferStalled`]).

mod listed;
mod progress;
mod stall;
mod streamed;

use progress::Progress;
pub(super) use streamed::{stream_backup, stream_restore, verify_stream};

use std::future::Future;
use std::io::{self, Read, Write};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::RunContext;
use crate::error::Error;
use crate::format::bbr_directory::metadata::{first_names, mismatched_files, ListingCheck};
use crate::format::bbr_directory::{ArtifactError, Checksums};
use crate::format::digest::{digest_tar_files, EntryPolicy, FileDigests, TeeReader};
use crate::format::digest::{FileDigest, Sha256Sum};
use crate::format::hashing::HashingReader;
use crate::format::sink::{
    ArtifactReader, ArtifactWriter, OpenBackup, StoredArtifact, StoredBytes,
};
use crate::format::stream::{TarBodyWriter, STREAM_FILE};
use crate::model::deployment::Instance;
use crate::model::job::{Job, ScriptName};
use crate::remote::commands::{self, ChecksumRecord, ChecksumRecords};
use crate::remote::script::{ScriptIo, ScriptOutcome};
use crate::remote::{RemoteHostExt, StdoutMode};
use crate::workflow::scripts::run_job_script_io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Chunks in flight between the SSH channel and the disk thread (bounded memory).
const CHUNKS_IN_FLIGHT: usize = 32;
/// Size of the chunks handed to the instance's `tar -x` during restore.
const UPLOAD_CHUNK: usize = 1 << 20;
/// Chunks queued between the reading thread and the SSH channel during restore.
const UPLOAD_QUEUE: usize = 8;

/// Names per batch of the instance's checksums during extraction: about 32 batches per
/// artifact, so that only a small last part is hashed after the end of the stream while a
/// million files still take few processes (`xargs` also splits at its command-line limit).
fn checksum_batch(files: usize) -> usize {
    (files / 32).max(1)
}

/// A blocking [`Read`] over chunks arriving on a channel, logging progress every 5 %.
struct ChannelReader {
    receiver: mpsc::Receiver<Bytes>,
    current: Bytes,
    progress: Progress,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            match self.receiver.blocking_recv() {
                Some(chunk) => self.current = chunk,
                None => return Ok(0),
            }
        }
        let count = buf.len().min(self.current.len());
        buf[..count].copy_from_slice(&self.current.split_to(count));
        self.progress.advance(count);
        Ok(count)
    }
}

/// Streams one job's artifact from its instance into the destination and checks it against the
/// instance's checksums. On success the artifact is committed and the instance's job
/// directory removed; on failure whatever was written is discarded.
pub(super) async fn download(
    instance: &Instance,
    job: &Job,
    destination: &dyn OpenBackup,
    context: &RunContext,
) -> Result<StoredArtifact, Error> {
    // A repository sends only the files changed since its last backup.
    if destination.wants_listing() {
        if context.options.instance_checksums {
            // The listed drain hashes what it sends; the unsent files' digests are the parent's.
            tracing::warn!(
                "--instance-checksums does not apply to a backup into a repository: job {} on {} is checked from its stream only",
                job.name,
                instance.name
            );
        }
        return listed::download(instance, job, destination, context).await;
    }
    let remote_directory = instance.backup_directory(job);
    let label = format!("for job {} on {}", job.name, instance.name);
    let progress = Progress::new(label.clone(), instance, job, 0, context);
    let (writer, pending) = destination
        .open_artifact(&instance.backup_artifact_name(job))
        .await?;
    let tar_flags = destination.tar_flags();
    let streamed = stream_and_digest(
        instance,
        job,
        &remote_directory,
        tar_flags,
        writer,
        progress,
        context,
    )
    .await;
    let (files, stored) = match streamed {
        Ok(result) => result,
        Err(error) => return Err(pending.discard().await.unwrap_or(error)),
    };
    let version = pending.commit().await?;
    // A resumable backup keeps every staged artifact until the whole backup is complete.
    let removed = if destination.is_resumable() {
        None
    } else {
        Some(
            instance
                .remote
                .run(&commands::remove(&remote_directory))
                .await?,
        )
    };
    if let Some(removed) = removed.filter(|r| !r.success()) {
        return Err(remote_failure(
            instance,
            "removing the remote artifact",
            &removed,
        ));
    }
    tracing::info!("Finished validity checks -- {label}...");
    Ok(StoredArtifact {
        name: instance.backup_artifact_name(job),
        group: instance.name.group.clone(),
        index: instance.index.clone(),
        job: job.name.clone(),
        shared: instance.backs_up_shared(job),
        files,
        stored,
        version,
        stream: false,
    })
}

/// How long a stream of `job` may move no byte: the job's own `stall` setting, else
/// `--stall-timeout`.
fn stall_limit(job: &str, context: &RunContext) -> Duration {
    context
        .options
        .script_timeouts
        .stall_limit(job, context.options.stall_timeout)
}

/// Runs `tar -c` (with `--instance-checksums` the remote checksums too, at the same time),
/// writing and hashing the stream; the `du` for bbr's size line and the progress total runs
/// beside it and ends before bbr's `Finished copying backup` line.
async fn stream_and_digest(
    instance: &Instance,
    job: &Job,
    remote_directory: &str,
    tar_flags: &[&str],
    writer: Box<dyn ArtifactWriter>,
    progress: Progress,
    context: &RunContext,
) -> Result<(FileDigests, StoredBytes), Error> {
    let label = progress.label.clone();
    // The size is only for bbr's line and the progress: `du` runs beside the stream, not
    // before it (for a million small files it takes seconds).
    let late_progress = progress.clone();
    let sized = async {
        let size = remote_size(instance, remote_directory).await;
        // bbr's drain lines (`orchestrator/backup_download_executable.go`).
        tracing::info!(
            "Copying backup -- {} uncompressed -- {label}...",
            du_human(size)
        );
        late_progress.set_total(size);
    };
    let stop = context.cancel.child_token();
    let watch = StreamWatch::new(instance, job, "from", &progress, &stop, context);
    let (sender, digest) = spawn_write_and_digest(progress, writer);
    let tar_command = commands::tar_create_with(remote_directory, tar_flags);
    let stream = instance
        .remote
        .exec(&tar_command, None, StdoutMode::Stream(sender), &stop);
    // Only the stream is watched: the checksums may rightly take a while after its end.
    let stream = unless_stalled(stream, &watch);
    let mut remote_sums = Checksums::new();
    let mut record = |name, digest| {
        remote_sums.insert(name, digest);
    };
    let listing = async {
        if context.options.instance_checksums {
            remote_checksums(instance, remote_directory, &stop, &mut record).await
        } else {
            Ok(())
        }
    };
    let (streamed, listing, ()) = tokio::join!(stream, listing, sized);
    let local = digest.await.expect("digest thread");
    // The reading thread has ended: what it moved before `du` answered is reported now.
    late_progress.catch_up();
    let (files, stored) = stream_outcome(
        instance,
        &label,
        "streaming the backup artifact",
        streamed,
        local,
    )?;
    // The copy and the checksums ran at once; bbr's lines come in its order: copied, then
    // checked (`Finished validity checks` once the artifact is kept and the instance's removed).
    tracing::info!("Finished copying backup -- {label}...");
    tracing::info!("Starting validity checks -- {label}...");
    listing?;
    if context.options.instance_checksums {
        let mismatched = mismatched_files(&remote_sums, &files);
        drop(remote_sums);
        mismatch_error(instance, &job_name(remote_directory), &mismatched)?;
    }
    Ok((files, stored))
}

/// What a drain's stream and its digest thread came to: a stall first (it is the cause,
/// whatever the other sides saw after it), then the writing side's error when it stopped
/// first (the command then only saw its reader gone), else the command's, else the digests.
fn stream_outcome<T>(
    instance: &Instance,
    label: &str,
    action: &str,
    streamed: Result<Result<crate::remote::CommandOutput, crate::remote::RemoteError>, Error>,
    local: io::Result<T>,
) -> Result<T, Error> {
    let streamed = streamed?;
    let local_error = |source| {
        Error::from(ArtifactError::Io {
            action: "Writing the artifact",
            path: label.into(),
            source,
        })
    };
    if let Err(crate::remote::RemoteError::ReaderGone { .. }) = &streamed {
        if let Err(source) = local {
            return Err(local_error(source));
        }
    }
    let streamed = streamed?;
    let written = local.map_err(local_error)?;
    if !streamed.success() {
        return Err(remote_failure(instance, action, &streamed));
    }
    Ok(written)
}

fn job_name(remote_directory: &str) -> String {
    remote_directory
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_string()
}

/// Starts the blocking thread that writes a drain's stream and digests its files
/// ([`write_and_digest`]); the sender is where the SSH channel's chunks go (bounded).
fn spawn_write_and_digest(
    progress: Progress,
    writer: Box<dyn ArtifactWriter>,
) -> (
    mpsc::Sender<Bytes>,
    tokio::task::JoinHandle<io::Result<(FileDigests, StoredBytes)>>,
) {
    let (sender, receiver) = mpsc::channel(CHUNKS_IN_FLIGHT);
    let reader = ChannelReader {
        receiver,
        current: Bytes::new(),
        progress,
    };
    let digest = tokio::task::spawn_blocking(move || write_and_digest(reader, writer));
    (sender, digest)
}

fn write_and_digest(
    reader: ChannelReader,
    writer: Box<dyn ArtifactWriter>,
) -> io::Result<(FileDigests, StoredBytes)> {
    let mut tee = TeeReader::new(reader, writer);
    let files = digest_tar_files(&mut tee, EntryPolicy::Trust).map_err(|e| match e {
        crate::format::digest::TarDigestError::Io(io) => io,
        other @ crate::format::digest::TarDigestError::UnsafeEntry { .. } => {
            io::Error::other(other.to_string())
        }
    })?;
    let stored = tee.into_writer().finish()?;
    Ok((files, stored))
}

/// A size the way `du -h` prints it (GNU coreutils: powers of 1024, rounded up, one decimal
/// below 10): `0`, `512`, `4.0K`, `9.9K`, `10K`, `1.5M`. bbr prints `du -sh` of the artifact
/// directory (backup) or of the tar file (restore).
fn du_human(bytes: u64) -> String {
    const UNITS: [&str; 8] = ["K", "M", "G", "T", "P", "E", "Z", "Y"];
    if bytes < 1024 {
        return bytes.to_string();
    }
    // In tenths of the unit, rounded up at every step as du does with `--block-size=1`.
    let mut unit = 0;
    let mut scaled = u128::from(bytes);
    let mut divisor: u128 = 1024;
    while scaled >= divisor * 1024 && unit + 1 < UNITS.len() {
        divisor *= 1024;
        unit += 1;
    }
    scaled = (scaled * 10).div_ceil(divisor);
    if scaled < 100 {
        return format!("{}.{}{}", scaled / 10, scaled % 10, UNITS[unit]);
    }
    let whole = scaled.div_ceil(10);
    if whole >= 1024 && unit + 1 < UNITS.len() {
        return format!("1.0{}", UNITS[unit + 1]);
    }
    format!("{whole}{}", UNITS[unit])
}

/// The artifact directory's disk usage in bytes (`du -sk` × 1024, bbr's `du -s` × 1024), the
/// total of the percentages and the size in the log line (`du_human`).
async fn remote_size(instance: &Instance, directory: &str) -> u64 {
    let Ok(output) = instance
        .remote
        .run(&commands::disk_usage_kib(directory))
        .await
    else {
        return 0;
    };
    output
        .stdout_text()
        .split_whitespace()
        .next()
        .and_then(|kib| kib.parse::<u64>().ok())
        .map_or(0, |kib| kib.saturating_mul(1024))
}

/// Streams one artifact into a job's artifact directory on an instance, checking it on the way
/// ([`ArtifactReader::forward`]), then checks the instance's checksums against `expected`.
/// An error means the artifact directory must not be used (the caller removes it).
// Long on purpose: the reading thread, the channel and `tar -x` share their stop token and
// the order of their results decides which error is the cause; split, that would be lost.
pub(super) async fn upload(
    instance: &Instance,
    job: &Job,
    artifact: Box<dyn ArtifactReader>,
    expected: &Checksums,
    context: &RunContext,
) -> Result<(), Error> {
    let cancel = &context.cancel;
    let remote_directory = instance.restore_directory(job);
    // bbr's lines (`orchestrator/backup_upload_executable.go`): the group and *index* here,
    // the group and id in the percentages.
    let at_index = format!(
        "for job {} on {}/{}",
        job.name, instance.name.group, instance.index
    );
    let size = artifact.size();
    tracing::info!(
        "Copying backup -- {} uncompressed -- {at_index}...",
        du_human(size.disk_usage)
    );
    let progress = Progress::new(
        format!("for job {} on {}", job.name, instance.name),
        instance,
        job,
        size.tar_bytes,
        context,
    );
    let made = instance
        .remote
        .run(&commands::make_restore_directory(&remote_directory))
        .await?;
    if !made.success() {
        return Err(remote_failure(
            instance,
            "creating the artifact directory",
            &made,
        ));
    }
    let (sender, receiver) = mpsc::channel(UPLOAD_QUEUE);
    // Stops the reading thread when the run is interrupted, the instance side failed or the
    // stream stalled.
    let stop = cancel.child_token();
    let watch = StreamWatch::new(instance, job, "to", &progress, &stop, context);
    let mut chunks = ChunkForwarder::new(sender, stop.clone(), progress);
    let sent = Arc::clone(&chunks.sent);
    let label = format!("{} on {}", job.name, instance.name);
    let reader = tokio::task::spawn_blocking(move || {
        let read = artifact.forward(&mut chunks).and_then(|()| {
            chunks.finish().map_err(|source| {
                Error::from(ArtifactError::Io {
                    action: "Sending the artifact of",
                    path: label.into(),
                    source,
                })
            })
        });
        (read, chunks.stopped)
    });
    // The instance hashes the files as tar completes them, unless a name needs the second
    // pass's NUL-separated records (commands::checksum_files).
    let overlapped = commands::lists_while_extracting(
        expected
            .keys()
            .map(crate::format::digest::FileName::as_bytes),
    );
    let extract_command = if overlapped {
        commands::tar_extract_with_checksums(&remote_directory, checksum_batch(expected.len()))
    } else {
        commands::tar_extract(&remote_directory)
    };
    // The records are compared as they arrive (a million files' are ~80 MB), never held.
    let (listing_sender, listing) = mpsc::channel(CHUNKS_IN_FLIGHT);
    let extracted = instance.remote.exec(
        &extract_command,
        Some(receiver),
        StdoutMode::Stream(listing_sender),
        &stop,
    );
    let mut check = ListingCheck::new(expected);
    let mut record = |name, digest: Sha256Sum| check.record(name, &digest);
    // `-v`'s records are lines: `openssl dgst -r`'s or `sha256sum`'s without `-z`.
    let listed = read_records(listing, ChecksumRecords::with_separator(b'\n'), &mut record);
    // Watched while bytes are to be sent; after the end of the stream the instance may rightly
    // take a while for the last files' checksums.
    let both = async { tokio::join!(extracted, listed) };
    let (extracted, listed) = match unless_stalled(both, &watch.until(&sent)).await {
        Ok(both) => both,
        Err(stalled) => {
            let _ = reader.await;
            return Err(stalled);
        }
    };
    if let Some(error) = listing_cut_short(&extracted, &listed, instance) {
        stop.cancel();
        let _ = reader.await;
        return Err(error);
    }
    if !extracted
        .as_ref()
        .is_ok_and(crate::remote::CommandOutput::success)
    {
        stop.cancel();
    }
    let (read, stopped) = reader.await.expect("reader thread");
    let extracted = match read {
        // What the artifact itself failed comes first (damaged, hostile, unreadable): the
        // instance's side then only saw a stream cut short.
        Err(error) if !stopped => return Err(error),
        _ => extracted?,
    };
    if !extracted.success() {
        return Err(remote_failure(
            instance,
            "Unable to send backup to remote machine",
            &extracted,
        ));
    }
    if overlapped {
        listed.map_err(|detail| checksum_output_error(instance, detail))?;
    } else {
        remote_checksums(instance, &remote_directory, cancel, &mut record).await?;
    }
    mismatch_error(instance, &job.name, &check.finish())?;
    tracing::info!("Finished copying backup {at_index}.");
    Ok(())
}

/// One artifact stream under the stall watchdog.
struct StreamWatch<'a> {
    instance: &'a Instance,
    job: &'a str,
    /// `from` the instance (backup) or `to` it (restore).
    direction: &'static str,
    /// Bytes the stream moved so far.
    moved: stall::Moved,
    /// Stops the stream's command (and the restore's reading thread).
    stop: &'a CancellationToken,
    /// `--stall-timeout`.
    limit: Duration,
    /// Once set, the stream is complete and no longer watched.
    sent: Option<Arc<AtomicBool>>,
}

impl<'a> StreamWatch<'a> {
    /// The watch of `job`'s stream on `instance`, counting what `progress` moves, under the
    /// job's stall limit.
    fn new(
        instance: &'a Instance,
        job: &'a Job,
        direction: &'static str,
        progress: &Progress,
        stop: &'a CancellationToken,
        context: &RunContext,
    ) -> StreamWatch<'a> {
        StreamWatch {
            instance,
            job: &job.name,
            direction,
            moved: progress.moved.clone(),
            stop,
            limit: stall_limit(&job.name, context),
            sent: None,
        }
    }

    /// The same watch, ending once `sent` is set (the whole stream handed over).
    fn until(&self, sent: &Arc<AtomicBool>) -> StreamWatch<'a> {
        StreamWatch {
            moved: self.moved.clone(),
            sent: Some(Arc::clone(sent)),
            ..*self
        }
    }

    /// Resolves once the stream moved nothing for the limit before it was complete.
    async fn stalled(&self) {
        loop {
            stall::stalled(&self.moved, self.limit).await;
            match &self.sent {
                Some(sent) if sent.load(Ordering::SeqCst) => std::future::pending::<()>().await,
                _ => return,
            }
        }
    }
}

/// Runs a stream's command unless nothing moves on it for `--stall-timeout`; then stops it,
/// drops the instance's connection (a silent network would hold it for minutes) and fails with
/// [`Error::TransferStalled`] once the command has ended.
async fn unless_stalled<T>(
    command: impl Future<Output = T>,
    watch: &StreamWatch<'_>,
) -> Result<T, Error> {
    tokio::pin!(command);
    tokio::select! {
        output = &mut command => Ok(output),
        () = watch.stalled() => {
            let instance = &watch.instance.name;
            tracing::warn!(
                "No data moved {} {instance} for job {} for {} s; stopping the copy and dropping the connection to {instance}",
                watch.direction,
                watch.job,
                watch.limit.as_secs()
            );
            watch.stop.cancel();
            watch.instance.remote.sever_connection().await;
            let _ = command.await;
            Err(Error::TransferStalled {
                instance: instance.clone(),
                job: watch.job.to_string(),
                direction: watch.direction,
                seconds: watch.limit.as_secs(),
            })
        }
    }
}

/// The restore side's writer: collects the tar stream into chunks for the SSH channel. Once the
/// instance stops reading (its `tar -x` ended), the rest is still read and checked, and
/// dropped; `stop` ends the reading instead (interrupted, or the instance side failed).
struct ChunkForwarder {
    buffer: Vec<u8>,
    sender: Option<mpsc::Sender<Bytes>>,
    stop: CancellationToken,
    /// Whether `stop` ended the reading (rather than the artifact failing its checks).
    stopped: bool,
    /// Set once the whole stream was handed to the channel.
    sent: Arc<AtomicBool>,
    progress: Progress,
}

impl ChunkForwarder {
    fn new(sender: mpsc::Sender<Bytes>, stop: CancellationToken, progress: Progress) -> Self {
        Self {
            buffer: Vec::with_capacity(UPLOAD_CHUNK),
            sender: Some(sender),
            stop,
            stopped: false,
            sent: Arc::default(),
            progress,
        }
    }

    fn send_buffer(&mut self) {
        if self.buffer.is_empty() {
            return;
        }
        let chunk = Bytes::from(std::mem::replace(
            &mut self.buffer,
            Vec::with_capacity(UPLOAD_CHUNK),
        ));
        if let Some(sender) = &self.sender {
            if sender.blocking_send(chunk).is_err() {
                self.sender = None;
            }
        }
    }

    /// Sends what is left; dropping the sender then ends the instance's stdin.
    fn finish(&mut self) -> io::Result<()> {
        self.check_stop()?;
        self.send_buffer();
        self.sender = None;
        self.sent.store(true, Ordering::SeqCst);
        Ok(())
    }

    fn check_stop(&mut self) -> io::Result<()> {
        if self.stop.is_cancelled() {
            self.stopped = true;
            // Not `Interrupted`: readers retry those.
            return Err(io::Error::other("the copy to the instance stopped"));
        }
        Ok(())
    }
}

impl Write for ChunkForwarder {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.check_stop()?;
        let room = UPLOAD_CHUNK - self.buffer.len();
        let count = buf.len().min(room);
        self.buffer.extend_from_slice(&buf[..count]);
        self.progress.advance(count);
        if self.buffer.len() == UPLOAD_CHUNK {
            self.send_buffer();
        }
        Ok(count)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Runs [`commands::checksum_files`] over `directory` on the instance, handing each record to
/// `record` as it arrives: the listing of a million files (~110 MB) is never held whole, and
/// has no size limit.
async fn remote_checksums(
    instance: &Instance,
    directory: &str,
    cancel: &CancellationToken,
    record: &mut ChecksumRecord<'_>,
) -> Result<(), Error> {
    let (sender, receiver) = mpsc::channel(CHUNKS_IN_FLIGHT);
    let command = commands::checksum_files(directory);
    let run = instance
        .remote
        .exec(&command, None, StdoutMode::Stream(sender), cancel);
    let parse = read_records(receiver, ChecksumRecords::default(), record);
    let (output, parsed) = tokio::join!(run, parse);
    if let Some(error) = listing_cut_short(&output, &parsed, instance) {
        return Err(error);
    }
    let output = output?;
    if !output.success() {
        return Err(remote_failure(instance, "computing checksums", &output));
    }
    parsed.map_err(|detail| checksum_output_error(instance, detail))
}

/// The most of an instance's checksum listing read (256 MiB, some 2.4 million files of
/// 40-byte names, as much as a restore captured before the listing was read as it arrives):
/// a backup keeps a map of what is listed, and an instance printing without end must not fill
/// the jumpbox's memory.
const LISTING_LIMIT: u64 = 256 << 20;

/// Hands every checksum record arriving on `receiver` to `record`. Reads to the end even after
/// a malformed record, so that the command writing them is not cut short; stops at once past
/// [`LISTING_LIMIT`] (the command then fails with [`crate::remote::RemoteError::ReaderGone`],
/// and this error is the cause).
async fn read_records(
    mut receiver: mpsc::Receiver<Bytes>,
    mut records: ChecksumRecords,
    record: &mut ChecksumRecord<'_>,
) -> Result<(), String> {
    let mut failure = None;
    let mut read: u64 = 0;
    while let Some(chunk) = receiver.recv().await {
        read = read.saturating_add(chunk.len() as u64);
        if read > LISTING_LIMIT {
            return Err(format!(
                "the checksum listing is larger than {LISTING_LIMIT} bytes, the most Cairn reads"
            ));
        }
        if failure.is_none() {
            failure = records.push(&chunk, record).err();
        }
    }
    failure.map_or_else(|| records.finish(record), Err)
}

/// The listing's error when reading it stopped the command (it then only saw its reader gone).
fn listing_cut_short(
    output: &Result<crate::remote::CommandOutput, crate::remote::RemoteError>,
    listed: &Result<(), String>,
    instance: &Instance,
) -> Option<Error> {
    match (output, listed) {
        (Err(crate::remote::RemoteError::ReaderGone { .. }), Err(detail)) => {
            Some(checksum_output_error(instance, detail.clone()))
        }
        _ => None,
    }
}

/// A malformed record in the instance's checksum listing.
fn checksum_output_error(instance: &Instance, detail: String) -> Error {
    Error::RemoteCommand {
        instance: instance.name.clone(),
        action: "computing checksums".into(),
        detail,
    }
}

/// bbr's checksum error for the names [`mismatched_files`] found, if any.
fn mismatch_error(instance: &Instance, job: &str, mismatched: &[String]) -> Result<(), Error> {
    if mismatched.is_empty() {
        return Ok(());
    }
    Err(Error::ChecksumMismatch {
        instance: instance.name.clone(),
        job: job.to_string(),
        files: first_names(mismatched),
        count: mismatched.len(),
    })
}

fn remote_failure(
    instance: &Instance,
    action: &str,
    output: &crate::remote::CommandOutput,
) -> Error {
    Error::RemoteCommand {
        instance: instance.name.clone(),
        action: action.to_string(),
        detail: output.failure_detail(),
    }
}

#[cfg(test)]
mod tests {
    use super::du_human;

    #[test]
    fn sizes_read_as_du_prints_them() {
        // Each pair checked against GNU coreutils `du --apparent-size -sh` of a file that size.
        for (bytes, expected) in [
            (0, "0"),
            (512, "512"),
            (1023, "1023"),
            (1024, "1.0K"),
            (1025, "1.1K"),
            (4096, "4.0K"),
            (10_239, "10K"),
            (10_241, "11K"),
            (102_400, "100K"),
            (1_048_575, "1.0M"),
            (1_572_864, "1.5M"),
            (10_485_760, "10M"),
            (1_073_741_823, "1.0G"),
        ] {
            assert_eq!(du_human(bytes), expected, "{bytes}");
        }
    }
}
