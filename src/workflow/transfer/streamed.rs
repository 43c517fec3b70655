//! Streaming jobs (scripts-contract §12): the `backup` script's stdout is the artifact, stored
//! as it arrives and hashed as a whole; the `restore` script's stdin is the stored stream, read
//! a second time after a full check and checked again on the way. The channels, progress,
//! stall watch and chunking are the parent's, shared with the drain and the restore copy.

#[allow(clippy::wildcard_imports)]
use super::*;

/// Runs a streaming job's `backup` script with `CAIRN_STREAM=1`, its stdout stored as the
/// artifact as it arrives (hashed on the way, never written on the instance). Committed only
/// when the script exited 0 having written something and left no artifact directory behind;
/// otherwise discarded. `Ok(None)`: the run was interrupted (the workflow reports that).
///
/// # Errors
/// The script failed, timed out or its connection was lost (the stream is then incomplete
/// and never recorded), the sink failed, or the job misused the contract.
pub(in crate::workflow) async fn stream_backup(
    instance: &Instance,
    job: &Job,
    destination: &dyn OpenBackup,
    environment: &[(&'static str, String)],
    context: &RunContext,
) -> Result<Option<StoredArtifact>, Error> {
    let name = instance.backup_artifact_name(job);
    let (writer, pending) = destination.open_stream(&name).await?;
    let label = format!("for job {} on {}", job.name, instance.name);
    let (sender, receiver) = mpsc::channel(CHUNKS_IN_FLIGHT);
    // The size is unknown until the end: no percentages.
    let progress = Progress::new(label.clone(), instance, job, 0, context);
    let stop = context.cancel.child_token();
    let watch = StreamWatch::new(instance, job, "from", &progress, &stop, context);
    let reader = ChannelReader {
        receiver,
        current: Bytes::new(),
        progress,
    };
    let storing = tokio::task::spawn_blocking(move || store_stream(reader, writer));
    let io = ScriptIo {
        stdin: None,
        stdout: StdoutMode::Stream(sender),
    };
    let script = run_job_script_io(
        instance,
        job,
        ScriptName::Backup,
        environment,
        io,
        context,
        &stop,
    );
    let script = unless_stalled(script, &watch).await;
    let stored = storing.await.expect("stream thread");
    let script = match script {
        Ok(script) => script,
        Err(stalled) => return Err(pending.discard().await.unwrap_or(stalled)),
    };
    let outcome = match (script.error, stored) {
        (_, Err(source)) if reader_gone(&script.outcome) || script_succeeded(&script.outcome) => {
            Err(Error::from(ArtifactError::Io {
                action: "Writing the streamed artifact",
                path: label.clone().into(),
                source,
            }))
        }
        (Some(error), _) => Err(error),
        (None, _) if !script_succeeded(&script.outcome) => {
            let _ = pending.discard().await;
            return Ok(None);
        }
        (None, Err(source)) => Err(Error::from(ArtifactError::Io {
            action: "Writing the streamed artifact",
            path: label.clone().into(),
            source,
        })),
        (None, Ok(stored)) => check_stream_use(instance, job, stored).await,
    };
    let (file, stored) = match outcome {
        Ok(done) => done,
        Err(error) => return Err(pending.discard().await.unwrap_or(error)),
    };
    let version = pending.commit().await?;
    tracing::info!("Finished streaming backup {label} -- {} bytes.", file.size);
    Ok(Some(StoredArtifact {
        name,
        group: instance.name.group.clone(),
        index: instance.index.clone(),
        job: job.name.clone(),
        shared: instance.backs_up_shared(job),
        files: [(STREAM_FILE.into(), file)].into_iter().collect(),
        stored,
        version,
        stream: true,
    }))
}

fn script_succeeded(outcome: &ScriptOutcome) -> bool {
    matches!(outcome, ScriptOutcome::Exited(output) if output.success())
}

fn reader_gone(outcome: &ScriptOutcome) -> bool {
    matches!(
        outcome,
        ScriptOutcome::Lost(crate::remote::RemoteError::ReaderGone { .. })
    )
}

/// A streaming job must have written something, and nothing into its artifact directory
/// (which Cairn did not create); a directory it made is removed.
async fn check_stream_use(
    instance: &Instance,
    job: &Job,
    stored: (FileDigest, StoredBytes),
) -> Result<(FileDigest, StoredBytes), Error> {
    let directory = instance.backup_directory(job);
    let misused = |what: String| Error::StreamMisused {
        instance: instance.name.clone(),
        job: job.name.clone(),
        what,
    };
    if instance
        .remote
        .run(&commands::path_exists(&directory))
        .await?
        .success()
    {
        let _ = instance.remote.run(&commands::remove(&directory)).await;
        return Err(misused(format!(
            "wrote into its artifact directory {directory} instead of stdout"
        )));
    }
    if stored.0.size == 0 {
        return Err(misused("wrote nothing to stdout".into()));
    }
    Ok(stored)
}

/// Copies the stream into the sink's writer, hashing it as a whole.
fn store_stream(
    reader: ChannelReader,
    mut writer: Box<dyn ArtifactWriter>,
) -> io::Result<(FileDigest, StoredBytes)> {
    let mut hashing = HashingReader::new(reader);
    io::copy(&mut hashing, &mut writer)?;
    let (size, sha256) = hashing.summary();
    let stored = writer.finish()?;
    let sha256 = sha256.into();
    Ok((FileDigest { size, sha256 }, stored))
}

/// The first read of a streamed artifact before its restore: every byte read and checked
/// (as `backups verify` does), nothing sent anywhere.
///
/// # Errors
/// Anything that differs from what was recorded, or cannot be read.
pub(in crate::workflow) async fn verify_stream(
    artifact: Box<dyn ArtifactReader>,
) -> Result<(), Error> {
    tokio::task::spawn_blocking(move || artifact.forward(&mut TarBodyWriter::new(io::sink())))
        .await
        .expect("verify thread")
}

/// Runs a streaming job's `restore` script with `CAIRN_STREAM=1`, the stored stream (read a
/// second time, checked again on the way) on its stdin. The last chunk, and so EOF, is sent
/// only once the whole stream has matched its record; if it does not, the script is stopped
/// before it sees EOF and the difference is the error.
pub(in crate::workflow) async fn stream_restore(
    instance: &Instance,
    job: &Job,
    artifact: Box<dyn ArtifactReader>,
    environment: &[(&'static str, String)],
    context: &RunContext,
) -> Option<Error> {
    let label = format!("for job {} on {}", job.name, instance.name);
    let progress = Progress::new(
        label.clone(),
        instance,
        job,
        artifact.size().tar_bytes,
        context,
    );
    let (sender, receiver) = mpsc::channel(UPLOAD_QUEUE);
    // Stops the script when the stream differs, and the reading when the run is interrupted.
    let stop = context.cancel.child_token();
    let watch = StreamWatch::new(instance, job, "to", &progress, &stop, context);
    let mut chunks = ChunkForwarder::new(sender, stop.clone(), progress);
    let reading = tokio::task::spawn_blocking(move || {
        let forwarded = artifact.forward(&mut TarBodyWriter::new(&mut chunks));
        let read = forwarded.and_then(|()| {
            chunks.finish().map_err(|source| {
                Error::from(ArtifactError::Io {
                    action: "Streaming the artifact",
                    path: label.into(),
                    source,
                })
            })
        });
        // On an error the sender is handed back alive: dropping it would be EOF.
        (read, chunks)
    });
    let watching = async {
        let (read, chunks) = reading.await.expect("stream thread");
        if read.is_err() {
            stop.cancel();
        }
        (read, chunks)
    };
    let io = ScriptIo {
        stdin: Some(receiver),
        stdout: StdoutMode::KeepHead(crate::remote::script::STDOUT_KEPT),
    };
    let script = run_job_script_io(
        instance,
        job,
        ScriptName::Restore,
        environment,
        io,
        context,
        &stop,
    );
    let script = unless_stalled(script, &watch);
    let (script, (read, chunks)) = tokio::join!(script, watching);
    let script = match script {
        Ok(script) => script,
        Err(stalled) => return Some(stalled),
    };
    match read {
        Err(error) if !chunks.stopped => Some(error),
        _ => script.error,
    }
}
