//! Draining an artifact into a destination that sends only what changed (a repository,
//! docs/design/repository.md §5 phase 2, [`OpenBackup::wants_listing`]).
//!
//! One command lists the staged tree on the instance ([`commands::list_tree`]); the
//! destination says which regular files it must receive ([`OpenBackup::open_listed`], by size
//! and mtime against what it already holds) and carries the others' digests over; the changed
//! files alone cross the wire, as ONE `tar -c` of their list ([`commands::tar_create_list`],
//! names on its stdin, in the listing's order). Their sha256 are computed from the stream as
//! for any artifact; the record gets every file's digest, sent or carried.
//!
//! No instance-side checksum pass here: what is sent is hashed on the way, and the files not
//! sent were not read (their digests are those verified when they were last sent). A file
//! modified with its size and mtime kept is missed until the next `--full-read` (restic's own
//! trade-off).

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::mpsc;

use super::{du_human, remote_failure, spawn_write_and_digest, Progress, StreamWatch};
use crate::error::Error;
use crate::format::digest::FileDigests;
use crate::format::listing::{self, ArtifactListing};
use crate::format::sink::{
    ArtifactWriter, ListedArtifact, OpenBackup, StoredArtifact, StoredBytes,
};
use crate::model::deployment::Instance;
use crate::model::job::Job;
use crate::remote::commands;
use crate::remote::{RemoteHostExt, StdoutMode};
use crate::workflow::RunContext;

/// Bytes of the changed files' names per chunk on `tar`'s stdin.
const NAMES_CHUNK: usize = 1 << 20;

/// [`super::download`] for a destination that wants the listing: lists, sends the changed
/// files, commits with every file's digest, removes the staged directory.
pub(in crate::workflow) async fn download(
    instance: &Instance,
    job: &Job,
    destination: &dyn OpenBackup,
    context: &RunContext,
) -> Result<StoredArtifact, Error> {
    let directory = instance.backup_directory(job);
    let name = instance.backup_artifact_name(job);
    let label = format!("for job {} on {}", job.name, instance.name);
    let listing = Arc::new(list(instance, &directory, context).await?);
    let Some(listed) = destination.open_listed(&name, Arc::clone(&listing)).await? else {
        return Err(listing_error(
            instance,
            format!("{} takes no listing", destination.location()),
        ));
    };
    let ListedArtifact {
        wanted,
        carried,
        writer,
        pending,
    } = listed;
    let (file_count, file_bytes) = listing.files();
    let wanted_bytes: u64 = wanted.iter().map(|i| listing.entries[*i].size).sum();
    tracing::info!(
        "Copying backup -- {} uncompressed -- {label}...",
        du_human(file_bytes)
    );
    let progress = Progress::new(label.clone(), instance, job, wanted_bytes, context);
    let sent = send_changed(
        instance,
        job,
        &directory,
        destination.tar_flags(),
        names(&listing, &wanted),
        writer,
        progress,
        context,
    )
    .await
    .and_then(|(sent, stored)| {
        tracing::info!("Finished copying backup -- {label}...");
        tracing::info!("Starting validity checks -- {label}...");
        tracing::info!(
            "Sent {} of {file_count} files ({} of {file_bytes} bytes; {} bytes of tar over SSH), the others unchanged since the last backup -- {label}",
            wanted.len(),
            wanted_bytes,
            stored.plain_size
        );
        merge(instance, &listing, &wanted, carried, sent).map(|files| (files, stored))
    });
    let (files, stored) = match sent {
        Ok(result) => result,
        Err(error) => return Err(pending.discard().await.unwrap_or(error)),
    };
    let version = pending.commit().await?;
    let removed = instance.remote.run(&commands::remove(&directory)).await?;
    if !removed.success() {
        return Err(remote_failure(
            instance,
            "removing the remote artifact",
            &removed,
        ));
    }
    tracing::info!("Finished validity checks -- {label}...");
    Ok(StoredArtifact {
        name,
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

/// The instance's listing of the staged directory.
async fn list(
    instance: &Instance,
    directory: &str,
    context: &RunContext,
) -> Result<ArtifactListing, Error> {
    let output = instance
        .remote
        .run_cancellable(&commands::list_tree(directory), &context.cancel)
        .await?;
    if !output.success() {
        return Err(remote_failure(instance, "listing the artifact", &output));
    }
    listing::parse(&output.stdout).map_err(|detail| listing_error(instance, detail))
}

fn listing_error(instance: &Instance, detail: String) -> Error {
    Error::RemoteCommand {
        instance: instance.name.clone(),
        action: "listing the artifact".into(),
        detail,
    }
}

/// The wanted files' `./` names, NUL-terminated, for `tar -T -`.
fn names(listing: &ArtifactListing, wanted: &[usize]) -> Vec<u8> {
    let mut names = Vec::new();
    for index in wanted {
        names.extend_from_slice(&listing.entries[*index].tar_name());
        names.push(0);
    }
    names
}

/// Every listed file's digest: the sent ones from the stream (exactly those asked for), the
/// others carried.
fn merge(
    instance: &Instance,
    listing: &ArtifactListing,
    wanted: &[usize],
    mut files: FileDigests,
    sent: FileDigests,
) -> Result<FileDigests, Error> {
    let asked = wanted
        .iter()
        .all(|i| sent.contains_key(listing.entries[*i].tar_name().as_slice()));
    if !asked || sent.len() != wanted.len() {
        return Err(listing_error(
            instance,
            format!(
                "the tar of the changed files held {} files, not the {} asked for",
                sent.len(),
                wanted.len()
            ),
        ));
    }
    for (name, digest) in sent {
        files.insert(name, digest);
    }
    Ok(files)
}

/// Runs the `tar -c` of the changed files (their names on its stdin) into `writer`, hashing
/// the stream on the way.
#[allow(clippy::too_many_arguments)]
async fn send_changed(
    instance: &Instance,
    job: &Job,
    directory: &str,
    tar_flags: &[&str],
    names: Vec<u8>,
    writer: Box<dyn ArtifactWriter>,
    progress: Progress,
    context: &RunContext,
) -> Result<(FileDigests, StoredBytes), Error> {
    let label = progress.label.clone();
    let stop = context.cancel.child_token();
    let watch = StreamWatch::new(instance, job, "from", &progress, &stop, context);
    let (sender, digest) = spawn_write_and_digest(progress, writer);
    let (names_sender, names_receiver) = mpsc::channel(4);
    let feeder = tokio::spawn(async move {
        let mut names = Bytes::from(names);
        while !names.is_empty() {
            let chunk = names.split_to(names.len().min(NAMES_CHUNK));
            if names_sender.send(chunk).await.is_err() {
                break;
            }
        }
    });
    let command = commands::tar_create_list(directory, tar_flags);
    let stream = instance.remote.exec(
        &command,
        Some(names_receiver),
        StdoutMode::Stream(sender),
        &stop,
    );
    let streamed = super::unless_stalled(stream, &watch).await;
    feeder.abort();
    let local = digest.await.expect("digest thread");
    super::stream_outcome(
        instance,
        &label,
        "streaming the changed files of the backup artifact",
        streamed,
        local,
    )
}
