//! Backups into a repository: [`RepositorySink`], a third [`BackupSink`] beside the bbr
//! directory and the plain store (docs/design/repository.md §5 phase 1, §9).
//!
//! Each artifact's tar, as it arrives, is archived as one snapshot (the demux,
//! [`super::source`]), tagged `cairn-kind=artifact`, `deployment=`, `cairn-backup=`,
//! `artifact=`; its snapshot stays until the instance's checksums matched, else it is deleted.
//! The record snapshot (bbr's `metadata` and `cairn.json`) is written last, the "complete"
//! marker: a backup without one is never listed or restored. Every file is read and chunked
//! (no parent snapshot: phase 1 sends every byte anyway, and a file is then never carried
//! over on size and mtime alone); deduplication is by content, so an unchanged file adds no
//! data to the store. A streaming job's stdout is archived the same way, as a snapshot of one
//! file ([`super::stream`]), its size and sha256 in the record as a store's manifest has them.

use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use async_trait::async_trait;
use cairn_repository::rustic_core::jiff::{tz::TimeZone, Timestamp};
use cairn_repository::rustic_core::repofile::SnapshotFile;
use cairn_repository::rustic_core::{
    BackupOptions, IndexedIdsStatus, ParentOptions, ReadSource, StringList,
};
use cairn_repository::{RepositoryError, RepositoryPassword};
use cairn_store::ArtifactStore;
use chrono::{DateTime, Utc};

use super::parent::{choose, find_parent};
use super::record::{
    tag, tags, Record, RecordArtifact, KIND_ARTIFACT, KIND_RECORD, METADATA_FILE, RECORD_FILE,
    RECORD_FORMAT,
};
use super::source::{pipe, PipeWriter, TarSource};
use super::stream::{StreamSource, STREAM_NAME};
use crate::error::Error;
use crate::format::digest::FileDigests;
use crate::format::listing::ArtifactListing;
use crate::format::sink::{
    ArtifactWriter, BackupRecord, BackupSink, BackupSource, ListedArtifact, NewBackup,
    OpenArtifact, OpenBackup, PendingArtifact, RepositoryBackupRef, StoredBytes,
};

/// GNU tar flags for an artifact sent to a repository: members sorted by name in each
/// directory (as rustic's tree builder wants them), hard links as copies (a link has no
/// content of its own), pax times with nanoseconds.
pub const TAR_FLAGS: &[&str] = &["--sort=name", "--hard-dereference", "--format=posix"];

type Indexed = cairn_repository::rustic_core::Repository<IndexedIdsStatus>;

/// Where an artifact's files are on its instance (the snapshot's `paths`, for restic's list).
const ARTIFACT_ROOT: &str = "/var/vcap/store/bbr-backup";

/// Backups into the repository at `url` (`repo+…`), opened with `password`.
#[derive(Debug, Clone)]
pub struct RepositorySink {
    /// The `repo+` URL.
    pub url: String,
    /// The repository password.
    pub password: Arc<RepositoryPassword>,
    /// `--full-read`: send and read every file, with no parent snapshot (phase 1's way).
    pub full_read: bool,
}

#[async_trait]
impl BackupSink for RepositorySink {
    /// Opens the repository: a missing repository or a wrong password stops the backup here,
    /// before any script ran.
    async fn start(&self, backup: &NewBackup<'_>) -> Result<Box<dyn OpenBackup>, Error> {
        let repository = super::open(&self.url, &self.password).await?;
        let store = repository.store();
        let indexed = Arc::new(
            repository
                .indexed(cairn_repository::rustic_core::Repository::to_indexed_ids)
                .await?,
        );
        Ok(Box::new(RepositoryBackup {
            indexed,
            store,
            url: self.url.clone(),
            password: Arc::clone(&self.password),
            deployment: backup.deployment.to_string(),
            backup_id: backup.backup_id.to_string(),
            started_at: backup.started_at,
            deployment_manifest: backup.deployment_manifest.map(str::to_string),
            written: Arc::new(Mutex::new(Vec::new())),
            full_read: self.full_read,
        }))
    }
}

/// An artifact snapshot written by this backup.
#[derive(Debug, Clone)]
struct Written {
    name: String,
    snapshot: SnapshotFile,
    plain_bytes: u64,
    file_bytes: u64,
}

/// One backup being written into a repository.
#[derive(Debug)]
struct RepositoryBackup {
    indexed: Arc<Indexed>,
    store: Arc<dyn ArtifactStore>,
    url: String,
    password: Arc<RepositoryPassword>,
    deployment: String,
    backup_id: String,
    started_at: DateTime<Utc>,
    deployment_manifest: Option<String>,
    written: Arc<Mutex<Vec<Written>>>,
    full_read: bool,
}

impl RepositoryBackup {
    fn snapshot(&self, kind: &str, label: &str, extra: &[String]) -> Result<SnapshotFile, Error> {
        let mut snapshot = SnapshotFile::default();
        let seconds = self.started_at.timestamp();
        snapshot.time = Timestamp::from_second(seconds)
            .map_err(|e| self.failed(&format!("backup time {seconds}: {e}")))?
            .to_zoned(TimeZone::UTC);
        snapshot.hostname.clone_from(&self.deployment);
        snapshot.label = label.to_string();
        let mut list = StringList::default();
        for text in tags(kind, &self.deployment, &self.backup_id)
            .into_iter()
            .chain(extra.iter().cloned())
        {
            list.add(text);
        }
        snapshot.tags = list;
        Ok(snapshot)
    }

    fn failed(&self, detail: &str) -> Error {
        failed(self.store.as_ref(), detail)
    }

    /// Starts archiving a tar stream as one snapshot; returns the writer that feeds it.
    fn archive(
        &self,
        snapshot: SnapshotFile,
        path: PathBuf,
        name: &str,
    ) -> Result<RepositoryWriter, Error> {
        self.archive_from(snapshot, path, name, None, TarSource::start)
    }

    /// [`RepositoryBackup::archive`] with the source `start` makes of the bytes written (the
    /// demux of a tar, or a streamed artifact's one file), against the `parent` snapshot
    /// (none: every file is read).
    fn archive_from<S>(
        &self,
        snapshot: SnapshotFile,
        path: PathBuf,
        name: &str,
        parent: Option<String>,
        start: impl FnOnce(super::source::PipeReader) -> io::Result<(S, super::source::Demux)>,
    ) -> Result<RepositoryWriter, Error>
    where
        S: ReadSource + Send + 'static,
        S::Open: Send,
        S::Iter: Send,
    {
        let (writer, reader) = pipe();
        let (source, demux) = start(reader)
            .map_err(|e| self.failed(&format!("cannot start reading artifact {name}: {e}")))?;
        let indexed = Arc::clone(&self.indexed);
        let checked = demux.clone();
        let archive = std::thread::Builder::new()
            .name("cairn-repo-archive".into())
            .spawn(move || archive(&indexed, &source, &checked, snapshot, path, parent))
            .map_err(|e| self.failed(&format!("cannot start archiving artifact {name}: {e}")))?;
        Ok(RepositoryWriter {
            pipe: writer,
            plain: 0,
            archive: Some(archive),
            demux,
            name: name.to_string(),
            written: Arc::clone(&self.written),
            full_tar_bytes: None,
        })
    }

    async fn delete(&self, snapshots: Vec<SnapshotFile>) -> Result<(), Error> {
        delete_snapshots(&self.indexed, &self.store, snapshots).await
    }
}

/// Archives `source` as a snapshot (run on a plain thread: the backend blocks on the runtime)
/// and checks it holds every file and byte the demux fed: rustic ends a snapshot where the
/// stream ended and leaves out a file it could not read, and still succeeds, so a stream cut
/// short (the writer dropped without `finish`) or a demux error deletes the snapshot here.
fn archive<S>(
    indexed: &Indexed,
    source: &S,
    demux: &super::source::Demux,
    snapshot: SnapshotFile,
    path: PathBuf,
    parent: Option<String>,
) -> Result<SnapshotFile, String>
where
    S: ReadSource + 'static,
    S::Open: Send,
    S::Iter: Send,
{
    let parents = match parent {
        // Nodes carry no ctime and inode 0, which match anything (`rc:parent.rs:177-182`).
        Some(id) => ParentOptions::default()
            .parents(vec![id])
            .ignore_ctime(true),
        None => ParentOptions::default().force(true),
    };
    let options = BackupOptions::default().no_scan(true).parent_opts(parents);
    let saved = indexed
        .archive(&options, source, snapshot, &[path])
        .map_err(|e| e.display_log().replace('\n', " "))?;
    let summary = saved.summary.clone().unwrap_or_default();
    let archived = summary.files_new + summary.files_changed + summary.files_unmodified;
    let problem = match demux.outcome() {
        Err(error) => error,
        Ok(fed) if fed.files != archived => format!(
            "the snapshot holds {archived} of the {} files sent (rustic could not read the others)",
            fed.files
        ),
        Ok(fed) if fed.file_bytes != summary.total_bytes_processed => format!(
            "the snapshot's files hold {} of the {} bytes sent",
            summary.total_bytes_processed, fed.file_bytes
        ),
        Ok(_) => return Ok(saved),
    };
    let deleted = match indexed.delete_snapshots(&[saved.id]) {
        Ok(()) => "deleted".to_string(),
        Err(e) => format!(
            "not deleted ({}): remove snapshot {} by hand",
            e.display_log().replace('\n', " "),
            saved.id
        ),
    };
    Err(format!("{problem}; its partial snapshot was {deleted}"))
}

/// A repository failure on one line.
fn failed(store: &dyn ArtifactStore, detail: &str) -> Error {
    Error::Repository(RepositoryError::Rustic {
        store: store.to_string(),
        detail: detail.to_string(),
    })
}

/// Deletes snapshots (a failed artifact's, an incomplete backup's).
async fn delete_snapshots(
    indexed: &Arc<Indexed>,
    store: &Arc<dyn ArtifactStore>,
    snapshots: Vec<SnapshotFile>,
) -> Result<(), Error> {
    if snapshots.is_empty() {
        return Ok(());
    }
    let rustic = Arc::clone(indexed);
    let store = Arc::clone(store);
    let ids: Vec<_> = snapshots.iter().map(|s| s.id).collect();
    let owner = Arc::clone(&store);
    cairn_repository::blocking(&owner, move || {
        rustic
            .delete_snapshots(&ids)
            .map_err(|e| RepositoryError::rustic(store.as_ref(), &e))
    })
    .await?;
    Ok(())
}

#[async_trait]
impl OpenBackup for RepositoryBackup {
    fn location(&self) -> String {
        format!("{} ({}/{})", self.url, self.deployment, self.backup_id)
    }

    fn tar_flags(&self) -> &'static [&'static str] {
        TAR_FLAGS
    }

    fn journal_entry(&self) -> Option<RepositoryBackupRef> {
        Some(RepositoryBackupRef {
            store: self.url.clone(),
            backup_id: self.backup_id.clone(),
        })
    }

    async fn open_artifact(&self, name: &str) -> Result<OpenArtifact, Error> {
        let snapshot = self.snapshot(KIND_ARTIFACT, name, &[tag("artifact", name)])?;
        let path = PathBuf::from(format!("{ARTIFACT_ROOT}/{name}"));
        let writer = self.archive(snapshot, path, name)?;
        let pending = RepositoryPending {
            indexed: Arc::clone(&self.indexed),
            store: Arc::clone(&self.store),
            name: name.to_string(),
            written: Arc::clone(&self.written),
        };
        Ok((Box::new(writer), Box::new(pending)))
    }

    fn wants_listing(&self) -> bool {
        true
    }

    /// Finds the parent (the artifact in the deployment's newest complete backup; none with
    /// `--full-read`, or when it cannot be read: then every file is sent), chooses the files
    /// to send, and starts the snapshot fed by the listing and the tar of those files.
    async fn open_listed(
        &self,
        name: &str,
        listing: Arc<ArtifactListing>,
    ) -> Result<Option<ListedArtifact>, Error> {
        let parent = if self.full_read {
            None
        } else {
            match find_parent(&self.url, &self.password, &self.deployment, name).await {
                Ok(parent) => parent,
                Err(error) => {
                    tracing::warn!(
                        "Cannot read artifact {name} of the last backup in {} ({error}); sending every file of it",
                        self.url
                    );
                    None
                }
            }
        };
        let choice = choose(&listing, parent.as_ref());
        if let Some(parent) = &parent {
            tracing::info!(
                "Artifact {name}: {} of {} files changed since backup {} (by size and mtime); sending those",
                choice.wanted.len(),
                choice.wanted.len() + choice.carried.len(),
                parent.backup_id
            );
        } else {
            let why = if self.full_read {
                "--full-read"
            } else {
                "no earlier backup of it in the repository"
            };
            tracing::info!("Artifact {name}: {why}; sending every file");
        }
        let mut sent = vec![false; listing.entries.len()];
        for index in &choice.wanted {
            sent[*index] = true;
        }
        let snapshot = self.snapshot(KIND_ARTIFACT, name, &[tag("artifact", name)])?;
        let path = PathBuf::from(format!("{ARTIFACT_ROOT}/{name}"));
        let full_tar_bytes = tar_bytes(&listing);
        let source_listing = Arc::clone(&listing);
        let mut writer = self.archive_from(
            snapshot,
            path,
            name,
            parent.map(|p| p.snapshot),
            move |reader| TarSource::start_listed(reader, source_listing, sent),
        )?;
        writer.full_tar_bytes = Some(full_tar_bytes);
        let pending = RepositoryPending {
            indexed: Arc::clone(&self.indexed),
            store: Arc::clone(&self.store),
            name: name.to_string(),
            written: Arc::clone(&self.written),
        };
        Ok(Some(ListedArtifact {
            wanted: choice.wanted,
            carried: choice.carried,
            writer: Box::new(writer),
            pending: Box::new(pending),
        }))
    }

    /// A streaming job's stdout as a snapshot of one file, `cairn-stream` ([`super::stream`]),
    /// tagged as any artifact's; never against a parent (a stream has no files to carry over:
    /// its chunks deduplicate by content).
    async fn open_stream(&self, name: &str) -> Result<OpenArtifact, Error> {
        let snapshot = self.snapshot(KIND_ARTIFACT, name, &[tag("artifact", name)])?;
        let mtime = Timestamp::from_second(self.started_at.timestamp()).ok();
        let path = PathBuf::from(format!("/{STREAM_NAME}"));
        let writer = self.archive_from(snapshot, path, name, None, move |reader| {
            Ok(StreamSource::start(reader, mtime))
        })?;
        let pending = RepositoryPending {
            indexed: Arc::clone(&self.indexed),
            store: Arc::clone(&self.store),
            name: name.to_string(),
            written: Arc::clone(&self.written),
        };
        Ok((Box::new(writer), Box::new(pending)))
    }

    async fn finish(
        self: Box<Self>,
        record: &BackupRecord,
    ) -> Result<Option<Arc<dyn BackupSource>>, Error> {
        let written = std::mem::take(&mut *self.written.lock().expect("written"));
        if !record.complete {
            let snapshots = written.into_iter().map(|w| w.snapshot).collect();
            self.delete(snapshots).await?;
            return Ok(None);
        }
        let file = self.record_file(record, &written)?;
        let tar = record_tar(&record.metadata.to_yaml(), &file)
            .map_err(|e| self.failed(&format!("cannot build the backup's record: {e}")))?;
        let snapshot = self.snapshot(KIND_RECORD, &self.backup_id, &[])?;
        let mut writer = self.archive(snapshot, PathBuf::from("/cairn-record"), "record")?;
        let finished = tokio::task::spawn_blocking(move || {
            writer.write_all(&tar)?;
            Box::new(writer).finish()
        })
        .await
        .map_err(|e| self.failed(&format!("the record task failed: {e}")))?;
        if let Err(error) = finished {
            let written = std::mem::take(&mut *self.written.lock().expect("written"));
            let _ = self
                .delete(written.into_iter().map(|w| w.snapshot).collect())
                .await;
            return Err(self.failed(&format!("cannot write the backup's record: {error}")));
        }
        Ok(Some(Arc::new(super::read::RepositorySource {
            url: self.url.clone(),
            password: Arc::clone(&self.password),
            deployment: self.deployment.clone(),
            backup_id: Some(self.backup_id.clone()),
        })))
    }
}

impl RepositoryBackup {
    fn record_file(&self, record: &BackupRecord, written: &[Written]) -> Result<Record, Error> {
        let mut artifacts = Vec::new();
        for artifact in &record.artifacts {
            let Some(snapshot) = written.iter().find(|w| w.name == artifact.name) else {
                return Err(self.failed(&format!(
                    "artifact {} has no snapshot in this backup",
                    artifact.name
                )));
            };
            artifacts.push(RecordArtifact {
                name: artifact.name.clone(),
                group: artifact.group.clone(),
                index: artifact.index.clone(),
                job: artifact.job.clone(),
                shared: artifact.shared,
                snapshot: snapshot.snapshot.id.to_hex().as_str().to_string(),
                tree: snapshot.snapshot.tree.to_hex().as_str().to_string(),
                plain_bytes: snapshot.plain_bytes,
                file_bytes: snapshot.file_bytes,
                stream: artifact.stream,
                files: if artifact.stream {
                    artifact.files.clone()
                } else {
                    FileDigests::new()
                },
            });
        }
        Ok(Record {
            format: RECORD_FORMAT,
            deployment: self.deployment.clone(),
            backup_id: self.backup_id.clone(),
            artifacts,
            layout: record.layout.clone(),
            deployment_manifest: self.deployment_manifest.clone(),
            jobs: crate::format::store::write::job_times(&record.scripts),
        })
    }
}

/// About the bytes of the tar a restore rebuilds of a listed artifact (GNU headers, no long
/// names counted): its progress lines' total.
fn tar_bytes(listing: &ArtifactListing) -> u64 {
    let members: u64 = listing
        .entries
        .iter()
        .map(|e| {
            512 + if e.kind == crate::format::listing::ListedKind::File {
                e.size.div_ceil(512) * 512
            } else {
                0
            }
        })
        .sum();
    members + 1024
}

/// The record snapshot's content as a tar: `metadata` and `cairn.json`.
fn record_tar(metadata: &str, record: &Record) -> io::Result<Vec<u8>> {
    let json = serde_json::to_vec_pretty(record).map_err(io::Error::other)?;
    let mut builder = tar::Builder::new(Vec::new());
    for (name, data) in [(METADATA_FILE, metadata.as_bytes()), (RECORD_FILE, &json)] {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o600);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        header.set_entry_type(tar::EntryType::Regular);
        builder.append_data(&mut header, name, data)?;
    }
    builder.into_inner()
}

/// The tar stream into the demux, and the archive it feeds.
struct RepositoryWriter {
    pipe: PipeWriter,
    plain: u64,
    archive: Option<JoinHandle<Result<SnapshotFile, String>>>,
    demux: super::source::Demux,
    name: String,
    written: Arc<Mutex<Vec<Written>>>,
    /// A listed artifact's whole tar, as a restore rebuilds it (only the changed files were sent).
    full_tar_bytes: Option<u64>,
}

impl Write for RepositoryWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self.pipe.write(buf) {
            Ok(count) => {
                self.plain += count as u64;
                Ok(count)
            }
            // The archive stopped: its own error (or the demux's) is the cause.
            Err(error) => Err(match self.archive.take().map(JoinHandle::join) {
                Some(Ok(Err(cause))) => {
                    io::Error::other(format!("the repository archive failed: {cause}"))
                }
                _ => match self.demux.outcome() {
                    Err(cause) => io::Error::other(cause),
                    Ok(_) => error,
                },
            }),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl ArtifactWriter for RepositoryWriter {
    /// Ends the stream, waits for the snapshot and checks it holds every file fed (rustic
    /// leaves out a file it could not read and still succeeds).
    fn finish(mut self: Box<Self>) -> io::Result<StoredBytes> {
        self.pipe.close();
        let snapshot = self
            .archive
            .take()
            .ok_or_else(|| io::Error::other("the repository archive already failed"))?
            .join()
            .map_err(|_| io::Error::other("the repository archiver panicked"))?
            .map_err(io::Error::other)?;
        // `archive` checked the snapshot against what the demux fed.
        let fed = self.demux.outcome().map_err(io::Error::other)?;
        let summary = snapshot.summary.clone().unwrap_or_default();

        self.written.lock().expect("written").push(Written {
            name: self.name.clone(),
            snapshot,
            plain_bytes: self.full_tar_bytes.unwrap_or(self.plain),
            file_bytes: fed.file_bytes,
        });
        Ok(StoredBytes {
            size: summary.data_added_packed,
            sha256: None,
            plain_size: self.plain,
        })
    }
}

/// An artifact snapshot waiting for the instance's checksums.
struct RepositoryPending {
    indexed: Arc<Indexed>,
    store: Arc<dyn ArtifactStore>,
    name: String,
    written: Arc<Mutex<Vec<Written>>>,
}

#[async_trait]
impl PendingArtifact for RepositoryPending {
    /// The snapshot stays (the record lists it); its id is the artifact's "version".
    async fn commit(self: Box<Self>) -> Result<Option<String>, Error> {
        let written = self.written.lock().expect("written");
        Ok(written
            .iter()
            .find(|w| w.name == self.name)
            .map(|w| w.snapshot.id.to_hex().as_str().to_string()))
    }

    /// Deletes the artifact's snapshot, if one was saved (its data stays until a prune).
    async fn discard(self: Box<Self>) -> Option<Error> {
        let snapshots: Vec<SnapshotFile> = {
            let mut written = self.written.lock().expect("written");
            let (gone, kept): (Vec<_>, Vec<_>) =
                written.drain(..).partition(|w| w.name == self.name);
            *written = kept;
            gone.into_iter().map(|w| w.snapshot).collect()
        };
        delete_snapshots(&self.indexed, &self.store, snapshots)
            .await
            .err()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// A new repository in a temporary folder: the folder, its store, password and index.
    async fn local_repository() -> (
        tempfile::TempDir,
        Arc<dyn ArtifactStore>,
        RepositoryPassword,
        Indexed,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("repo");
        std::fs::create_dir(&root).unwrap();
        let file = dir.path().join("password");
        std::fs::write(&file, "pw\n").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let password = RepositoryPassword::read(&file).unwrap();
        let store: Arc<dyn ArtifactStore> = Arc::new(cairn_store::local::LocalStore::new(&root));
        cairn_repository::init(Arc::clone(&store), &password)
            .await
            .unwrap();
        let indexed = cairn_repository::open(Arc::clone(&store), &password)
            .await
            .unwrap()
            .indexed(cairn_repository::rustic_core::Repository::to_indexed_ids)
            .await
            .unwrap();
        (dir, store, password, indexed)
    }

    /// Asserts the archive was refused with every one of `expected` in its message and left
    /// no snapshot in the repository.
    async fn assert_refused_without_snapshot(
        archived: Result<SnapshotFile, String>,
        expected: &[&str],
        store: Arc<dyn ArtifactStore>,
        password: &RepositoryPassword,
    ) {
        let error = archived.unwrap_err();
        assert!(expected.iter().all(|part| error.contains(part)), "{error}");
        let opened = cairn_repository::open(store, password).await.unwrap();
        assert_eq!(opened.snapshot_count().await.unwrap(), 0);
    }

    /// Archives `data` as a streamed artifact, the writer closed (`close`) or dropped.
    async fn archive_stream(
        indexed: Indexed,
        data: Vec<u8>,
        close: bool,
    ) -> Result<SnapshotFile, String> {
        tokio::task::spawn_blocking(move || {
            let (mut writer, reader) = super::super::source::pipe();
            let (source, demux) = StreamSource::start(reader, None);
            let feeding = std::thread::spawn(move || {
                let _ = writer.write_all(&data);
                if close {
                    writer.close();
                }
            });
            let archived = archive(
                &indexed,
                &source,
                &demux,
                SnapshotFile::default(),
                PathBuf::from("/cairn-stream"),
                None,
            );
            feeding.join().unwrap();
            archived
        })
        .await
        .unwrap()
    }

    /// A stream (several chunks, not a multiple of anything) is one file `cairn-stream` at the
    /// snapshot's root, whose content is the stream.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stream_is_one_file_at_the_snapshots_root() {
        let (_dir, store, password, indexed) = local_repository().await;
        let data: Vec<u8> = (0..3_000_017_u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
            .collect();
        let saved = archive_stream(indexed, data.clone(), true).await.unwrap();
        let summary = saved.summary.clone().unwrap();
        assert_eq!(summary.files_new, 1);
        assert_eq!(summary.total_bytes_processed, data.len() as u64);
        let full = cairn_repository::open(store, &password)
            .await
            .unwrap()
            .indexed(cairn_repository::rustic_core::Repository::to_indexed)
            .await
            .unwrap();
        let dumped = tokio::task::spawn_blocking(move || {
            let node = full
                .node_from_path(saved.tree, std::path::Path::new(STREAM_NAME))
                .unwrap();
            let mut root = cairn_repository::rustic_core::repofile::Node::new_node(
                std::ffi::OsStr::new(""),
                cairn_repository::rustic_core::repofile::NodeType::Dir,
                cairn_repository::rustic_core::repofile::Metadata::default(),
            );
            root.subtree = Some(saved.tree);
            let names: Vec<PathBuf> = full
                .ls(
                    &root,
                    &cairn_repository::rustic_core::LsOptions::default().recursive(true),
                )
                .unwrap()
                .map(|item| item.unwrap().0)
                .collect();
            assert_eq!(names, [PathBuf::from(STREAM_NAME)]);
            let mut dumped = Vec::new();
            full.dump(&node, &mut dumped).unwrap();
            dumped
        })
        .await
        .unwrap();
        assert!(dumped == data, "the file is the stream");
    }

    /// Fewer bytes in the snapshot than the source counted as fed (here: a count off by one,
    /// as if rustic had stopped reading early and still saved the file): no snapshot.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_snapshot_short_of_the_bytes_fed_is_deleted() {
        let (_dir, store, password, indexed) = local_repository().await;
        let archived = tokio::task::spawn_blocking(move || {
            let (mut writer, reader) = super::super::source::pipe();
            let (source, _) = StreamSource::start(reader, None);
            let counted = Arc::new(super::super::source::Shared::default());
            counted.count(1, 100_001);
            writer.write_all(&vec![3; 100_000]).unwrap();
            writer.close();
            archive(
                &indexed,
                &source,
                &super::super::source::Demux::of(counted),
                SnapshotFile::default(),
                PathBuf::from("/cairn-stream"),
                None,
            )
        })
        .await
        .unwrap();
        assert_refused_without_snapshot(
            archived,
            &["the snapshot's files hold 100000 of the 100001 bytes sent; its partial snapshot was deleted"],
            store,
            &password,
        )
        .await;
    }

    /// A stream whose writer is dropped without `close` (the script's connection lost): no
    /// snapshot, whatever rustic archived.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stream_cut_short_is_no_snapshot() {
        let (_dir, store, password, indexed) = local_repository().await;
        let archived = archive_stream(indexed, vec![9; 2_000_000], false).await;
        assert_refused_without_snapshot(
            archived,
            &[
                "the streamed artifact was cut short",
                "its partial snapshot was deleted",
            ],
            store,
            &password,
        )
        .await;
    }

    /// A stream cut short in the middle of a file: the archive fails and leaves no snapshot.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stream_cut_short_leaves_no_snapshot() {
        let (_dir, store, password, indexed) = local_repository().await;
        let mut builder = tar::Builder::new(Vec::new());
        for name in ["a", "b"] {
            let mut header = tar::Header::new_gnu();
            header.set_size(100_000);
            header.set_mode(0o644);
            header.set_uid(0);
            header.set_gid(0);
            header.set_mtime(0);
            builder
                .append_data(&mut header, name, &vec![7; 100_000][..])
                .unwrap();
        }
        let tar = builder.into_inner().unwrap();
        let (mut writer, reader) = super::super::source::pipe();
        let (source, demux) = TarSource::start(reader).unwrap();
        let archived = tokio::task::spawn_blocking(move || {
            // The second file is cut in the middle; the writer goes without `close`.
            writer.write_all(&tar[..150_000]).unwrap();
            drop(writer);
            archive(
                &indexed,
                &source,
                &demux,
                SnapshotFile::default(),
                PathBuf::from("/x"),
                None,
            )
        })
        .await
        .unwrap();
        assert_refused_without_snapshot(
            archived,
            &["its partial snapshot was deleted"],
            store,
            &password,
        )
        .await;
    }

    #[test]
    fn the_record_is_a_tar_the_demux_reads() {
        let record = Record {
            format: RECORD_FORMAT,
            deployment: "d".into(),
            backup_id: "20240102T030405Z".into(),
            artifacts: Vec::new(),
            layout: crate::model::layout::DeploymentLayout::default(),
            deployment_manifest: None,
            jobs: Vec::new(),
        };
        let tar = record_tar("backup_name: x\n", &record).unwrap();
        let (source, demux) = TarSource::start(io::Cursor::new(tar)).unwrap();
        let names: Vec<_> = source.entries().map(|e| e.unwrap().path).collect();
        assert_eq!(
            names,
            [PathBuf::from(METADATA_FILE), PathBuf::from(RECORD_FILE)]
        );
        assert_eq!(demux.outcome().unwrap().files, 2);
    }
}
