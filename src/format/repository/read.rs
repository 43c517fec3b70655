//! Restores from a repository: [`RepositorySource`], the third [`BackupSource`]
//! (docs/design/repository.md §6).
//!
//! `check` opens the repository with its password (a wrong one stops the restore before any
//! connection), finds the backup's record snapshot (`--latest`: the newest of the deployment),
//! reads bbr's `metadata` and `cairn.json` out of it, and checks every artifact snapshot it
//! names is there with the recorded tree. Each artifact is then rebuilt as a tar from its
//! snapshot's tree (rustic_core restores only to a local directory, so Cairn walks the tree
//! and writes the tar itself, file bodies through `dump`) and goes through the same check as
//! every other source: every file's sha256 against `metadata`, unsafe entries refused, before
//! any restore script runs.

use std::ffi::OsStr;
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use cairn_repository::rustic_core::repofile::{Metadata, Node, NodeType, SnapshotFile};
use cairn_repository::rustic_core::{CheckOptions, IndexedFullStatus, LsOptions, OpenStatus};
use cairn_repository::{Finding, RepositoryError, RepositoryPassword};

use super::mode;
use super::record::{tag, Record, RecordArtifact, KIND_RECORD, METADATA_FILE, RECORD_FILE};
use super::source::pipe;
use super::stream::STREAM_NAME;
use crate::error::{Error, RunErrors};
use crate::format::bbr_directory::metadata::{self, BackupMetadata, Checksums};
use crate::format::bbr_directory::metadata_read::parse_metadata;
use crate::format::bbr_directory::ArtifactError;
use crate::format::sink::{
    ArtifactReader, ArtifactSize, BackupContents, BackupSource, CheckedBackup,
};
use crate::format::stream::{is_stream, STREAM_FILE};

type Indexed = cairn_repository::rustic_core::Repository<IndexedFullStatus>;
type Opened = cairn_repository::rustic_core::Repository<OpenStatus>;

/// One backup in the repository at `url`: `backup_id`, or the deployment's newest.
#[derive(Debug, Clone)]
pub struct RepositorySource {
    /// The `repo+` URL.
    pub url: String,
    /// The repository password.
    pub password: Arc<RepositoryPassword>,
    /// Deployment name.
    pub deployment: String,
    /// The backup, or `None` for the newest complete one.
    pub backup_id: Option<String>,
}

/// A complete backup in a repository, as its record snapshot says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepositoryBackupEntry {
    /// Deployment name.
    pub deployment: String,
    /// Backup id.
    pub backup_id: String,
    /// The record snapshot's id.
    pub record: String,
}

/// The complete backups in the repository at `url`, oldest first (every deployment when
/// `deployment` is `None`).
///
/// # Errors
/// The repository cannot be opened or its snapshots read.
pub async fn list_backups(
    url: &str,
    password: &RepositoryPassword,
    deployment: Option<&str>,
) -> Result<Vec<RepositoryBackupEntry>, Error> {
    let repository = super::open(url, password).await?;
    let rustic = repository.rustic();
    let store = repository.store();
    let deployment = deployment.map(str::to_string);
    let owner = Arc::clone(&store);
    let records = cairn_repository::blocking(&owner, move || {
        records(&rustic, deployment.as_deref())
            .map_err(|e| RepositoryError::rustic(store.as_ref(), &e))
    })
    .await?;
    let mut entries: Vec<RepositoryBackupEntry> = records
        .iter()
        .filter_map(|snapshot| {
            Some(RepositoryBackupEntry {
                deployment: tag_value(snapshot, "deployment")?,
                backup_id: tag_value(snapshot, "cairn-backup")?,
                record: snapshot.id.to_hex().as_str().to_string(),
            })
        })
        .collect();
    entries.sort_by(|a, b| (&a.deployment, &a.backup_id).cmp(&(&b.deployment, &b.backup_id)));
    Ok(entries)
}

/// The record of backup `backup_id` of `deployment` (`None`: the newest), its artifacts'
/// snapshots checked as for a restore.
///
/// # Errors
/// No such backup, a damaged record, or the repository's failure.
pub async fn read_record(
    url: &str,
    password: &RepositoryPassword,
    deployment: &str,
    backup_id: Option<&str>,
) -> Result<Record, Error> {
    let repository = super::open(url, password).await?;
    let store = repository.store();
    let opened = repository.indexed(Ok).await?;
    let (deployment, backup_id) = (deployment.to_string(), backup_id.map(str::to_string));
    let owner = Arc::clone(&store);
    let found = cairn_repository::blocking(&owner, move || {
        find(opened, store.as_ref(), &deployment, backup_id.as_deref())
    })
    .await?;
    Ok(found.record)
}

/// `backups verify` of a backup in a repository: its record and snapshots found as for a
/// restore, then rustic's check of the trees of its snapshots with every pack they use read
/// (`check --read-data` limited to this backup). Returns the record and the findings.
///
/// # Errors
/// No such backup, a damaged record, or a failure that kept the check from running.
pub async fn verify_backup(
    url: &str,
    password: &RepositoryPassword,
    deployment: &str,
    backup_id: &str,
) -> Result<(Record, Vec<Finding>), Error> {
    let repository = super::open(url, password).await?;
    let store = repository.store();
    let opened = repository.indexed(Ok).await?;
    let (deployment, backup_id) = (deployment.to_string(), backup_id.to_string());
    let owner = Arc::clone(&store);
    Ok(cairn_repository::blocking(&owner, move || {
        let found = find(opened, store.as_ref(), &deployment, Some(&backup_id))?;
        let mut trees: Vec<_> = found
            .trees
            .iter()
            .filter_map(|(_, root)| root.subtree)
            .collect();
        trees.push(found.record_tree);
        let results = found
            .indexed
            .check_with_trees(CheckOptions::default().read_data(true), trees)
            .map_err(rustic_error(store.as_ref()))?;
        let findings = results
            .0
            .into_iter()
            .map(|(level, finding)| Finding {
                // rustic_core 0.13 does not export `CheckErrorLevel`: told by its name.
                error: format!("{level:?}") == "Error",
                text: finding.to_string().replace('\n', " "),
            })
            .collect();
        Ok((found.record, findings))
    })
    .await?)
}

/// The record snapshots (of `deployment`, or all).
pub(super) fn records(
    rustic: &Opened,
    deployment: Option<&str>,
) -> Result<Vec<SnapshotFile>, Box<cairn_repository::rustic_core::RusticError>> {
    let kind = tag("cairn-kind", KIND_RECORD);
    let wanted = deployment.map(|d| tag("deployment", d));
    rustic.get_matching_snapshots(|snapshot| {
        snapshot.tags.contains(&kind)
            && wanted
                .as_ref()
                .is_none_or(|wanted| snapshot.tags.contains(wanted))
    })
}

/// The value of a snapshot's `key=` tag, percent-decoded.
pub(super) fn tag_value(snapshot: &SnapshotFile, key: &str) -> Option<String> {
    let prefix = format!("{key}=");
    let raw = snapshot
        .tags
        .iter()
        .find_map(|t| t.strip_prefix(&prefix).map(str::to_string))?;
    Some(raw.replace("%2C", ",").replace("%25", "%"))
}

/// What `check` read, before it is turned into a [`CheckedRepository`].
pub(super) struct Found {
    pub(super) indexed: Indexed,
    pub(super) metadata: String,
    pub(super) record: Record,
    pub(super) trees: Vec<(String, cairn_repository::rustic_core::repofile::Node)>,
    pub(super) record_tree: cairn_repository::rustic_core::TreeId,
}

fn rustic_error(
    store: &dyn cairn_store::ArtifactStore,
) -> impl Fn(Box<cairn_repository::rustic_core::RusticError>) -> RepositoryError + '_ {
    move |e| RepositoryError::rustic(store, &e)
}

fn problem(store: &dyn cairn_store::ArtifactStore, detail: String) -> RepositoryError {
    RepositoryError::Rustic {
        store: store.to_string(),
        detail,
    }
}

/// Finds the backup's record, reads it and checks its artifacts' snapshots (blocking).
pub(super) fn find(
    rustic: Opened,
    store: &dyn cairn_store::ArtifactStore,
    deployment: &str,
    backup_id: Option<&str>,
) -> Result<Found, RepositoryError> {
    let records = records(&rustic, Some(deployment)).map_err(rustic_error(store))?;
    let chosen = records
        .into_iter()
        .filter(|s| backup_id.is_none_or(|id| tag_value(s, "cairn-backup").as_deref() == Some(id)))
        .max_by_key(|s| tag_value(s, "cairn-backup"));
    let Some(record_snapshot) = chosen else {
        let which = backup_id.map_or_else(
            || format!("no complete backup of deployment {deployment}"),
            |id| format!("no complete backup {deployment}/{id}"),
        );
        return Err(problem(
            store,
            format!("{which} in this repository; see `cairn backups list` with the same --store"),
        ));
    };
    let indexed = rustic.to_indexed().map_err(rustic_error(store))?;
    let read = |name: &str| -> Result<String, RepositoryError> {
        let node = indexed
            .node_from_snapshot_and_path(&record_snapshot, name)
            .map_err(rustic_error(store))?;
        let mut data = Vec::new();
        indexed
            .dump(&node, &mut data)
            .map_err(rustic_error(store))?;
        String::from_utf8(data)
            .map_err(|_| problem(store, format!("the backup's {name} is not UTF-8")))
    };
    let metadata = read(METADATA_FILE)?;
    let record: Record = serde_json::from_str(&read(RECORD_FILE)?).map_err(|e| {
        problem(
            store,
            format!("the backup's {RECORD_FILE} cannot be read: {e}"),
        )
    })?;
    if record.deployment != deployment
        || tag_value(&record_snapshot, "cairn-backup").as_deref() != Some(&record.backup_id)
    {
        return Err(problem(
            store,
            format!(
                "the record snapshot {} says it is {}/{}, not where its tags place it: it was tampered with",
                record_snapshot.id, record.deployment, record.backup_id
            ),
        ));
    }
    let ids: Vec<&str> = record
        .artifacts
        .iter()
        .map(|a| a.snapshot.as_str())
        .collect();
    let snapshots = indexed.get_snapshots(&ids).map_err(rustic_error(store))?;
    let mut trees = Vec::new();
    for (artifact, snapshot) in record.artifacts.iter().zip(snapshots) {
        check_placement(store, &record, artifact, &snapshot)?;
        let mut root = Node::new_node(OsStr::new(""), NodeType::Dir, Metadata::default());
        root.subtree = Some(snapshot.tree);
        trees.push((artifact.name.clone(), root));
    }
    Ok(Found {
        indexed,
        metadata,
        record,
        trees,
        record_tree: record_snapshot.tree,
    })
}

/// An artifact snapshot must carry the record's deployment, backup and name, and its tree.
fn check_placement(
    store: &dyn cairn_store::ArtifactStore,
    record: &Record,
    artifact: &RecordArtifact,
    snapshot: &SnapshotFile,
) -> Result<(), RepositoryError> {
    let placed = tag_value(snapshot, "deployment").as_deref() == Some(record.deployment.as_str())
        && tag_value(snapshot, "cairn-backup").as_deref() == Some(record.backup_id.as_str())
        && tag_value(snapshot, "artifact").as_deref() == Some(artifact.name.as_str())
        && snapshot.tree.to_hex().as_str() == artifact.tree;
    if placed {
        Ok(())
    } else {
        Err(problem(
            store,
            format!(
                "artifact {} of backup {}/{}: its snapshot {} does not belong to this backup (other tags or tree)",
                artifact.name, record.deployment, record.backup_id, artifact.snapshot
            ),
        ))
    }
}

#[async_trait]
impl BackupSource for RepositorySource {
    fn location(&self) -> String {
        format!(
            "{} ({}/{})",
            self.url,
            self.deployment,
            self.backup_id.as_deref().unwrap_or("latest")
        )
    }

    async fn check(&self, _parallelism: usize) -> Result<Box<dyn CheckedBackup>, RunErrors> {
        let repository = super::open(&self.url, &self.password).await?;
        let store = repository.store();
        let deployment = self.deployment.clone();
        let backup_id = self.backup_id.clone();
        let found = repository.indexed(Ok).await.map_err(Error::from)?;
        let owner = Arc::clone(&store);
        let found = cairn_repository::blocking(&owner, move || {
            find(found, store.as_ref(), &deployment, backup_id.as_deref())
        })
        .await
        .map_err(Error::from)?;
        tracing::info!(
            "Checking backup {}/{} in {}...",
            found.record.deployment,
            found.record.backup_id,
            self.url
        );
        // In pieces: a million files' `metadata` without the YAML events of the whole text.
        let metadata = parse_metadata(&found.metadata).map_err(|detail| {
            Error::from(ArtifactError::BadMetadata {
                path: PathBuf::from(format!("{}/{}", self.url, METADATA_FILE)),
                detail,
            })
        })?;
        check_streams(&found.record, &metadata).map_err(|detail| {
            Error::from(ArtifactError::BadMetadata {
                path: PathBuf::from(format!(
                    "{}/{}/{}/{RECORD_FILE}",
                    self.url, found.record.deployment, found.record.backup_id
                )),
                detail,
            })
        })?;
        Ok(Box::new(CheckedRepository {
            indexed: Arc::new(found.indexed),
            metadata,
            record: found.record,
            trees: found.trees,
            url: self.url.clone(),
        }))
    }
}

/// Every streamed artifact's record (`files`: the one `./cairn-stream`, its size and sha256)
/// must agree with bbr's `metadata`, whose checksum a restore checks the stream against: the
/// record's size is what the rebuilt one-file tar says ([`super::stream`]).
fn check_streams(record: &Record, metadata: &BackupMetadata) -> Result<(), String> {
    for artifact in record.artifacts.iter().filter(|a| a.stream) {
        let listed = if artifact.shared {
            metadata
                .custom_artifacts
                .iter()
                .find(|a| a.name == artifact.name)
                .map(|a| &a.checksums)
        } else {
            metadata.checksums_for(&artifact.group, &artifact.index, &artifact.job)
        };
        let recorded = artifact.files.get(STREAM_FILE.as_bytes());
        let agree = match (listed, recorded) {
            (Some(listed), Some(recorded)) => {
                artifact.files.len() == 1
                    && is_stream(listed)
                    && listed.get(STREAM_FILE.as_bytes()) == Some(&recorded.sha256)
            }
            _ => false,
        };
        if !agree {
            return Err(format!(
                "streamed artifact {} is recorded with other files or another sha256 than `metadata` lists for it; the record was tampered with, restore another backup",
                artifact.name
            ));
        }
    }
    Ok(())
}

/// A backup in a repository, its record read and its snapshots found.
struct CheckedRepository {
    indexed: Arc<Indexed>,
    metadata: BackupMetadata,
    record: Record,
    trees: Vec<(String, Node)>,
    url: String,
}

impl CheckedRepository {
    fn artifact(&self, name: &str) -> Option<&RecordArtifact> {
        self.record.artifacts.iter().find(|a| a.name == name)
    }
}

#[async_trait]
impl CheckedBackup for CheckedRepository {
    fn metadata(&self) -> &BackupMetadata {
        &self.metadata
    }

    fn contents(&self) -> BackupContents {
        BackupContents {
            artifacts: self.record.artifacts.len(),
            stored_bytes: None,
            data_bytes: Some(self.record.artifacts.iter().map(|a| a.file_bytes).sum()),
        }
    }

    fn deployment_manifest(&self) -> Option<&str> {
        self.record.deployment_manifest.as_deref()
    }

    fn layout(&self) -> Option<&crate::model::layout::DeploymentLayout> {
        Some(&self.record.layout)
    }

    fn artifact_bytes(&self, name: &str) -> Option<u64> {
        self.artifact(name).map(|a| a.file_bytes)
    }

    async fn open_artifact(
        &self,
        name: &str,
        expected: &Checksums,
    ) -> Result<Box<dyn ArtifactReader>, Error> {
        let (Some(artifact), Some((_, root))) = (
            self.artifact(name),
            self.trees.iter().find(|(n, _)| n == name),
        ) else {
            return Err(ArtifactError::Missing {
                action: "Reading artifact",
                path: PathBuf::from(format!(
                    "{}/{}/{}/{name}",
                    self.url, self.record.deployment, self.record.backup_id
                )),
                reason: "it is not in the backup's record",
                what_to_do: "restore a backup that has it (`cairn backups show`)",
            }
            .into());
        };
        // A stream's size, checked against `metadata` by `check`.
        let stream = artifact
            .stream
            .then(|| artifact.files.get(STREAM_FILE.as_bytes()).map(|f| f.size))
            .flatten();
        Ok(Box::new(RepositoryArtifact {
            indexed: Arc::clone(&self.indexed),
            root: root.clone(),
            expected: expected.clone(),
            label: format!("{}/{}/{name}", self.url, self.record.backup_id),
            name: name.to_string(),
            // A stream's progress counts its bytes, as from a plain store.
            size: ArtifactSize {
                tar_bytes: stream.unwrap_or(artifact.plain_bytes),
                disk_usage: artifact.file_bytes,
            },
            stream,
        }))
    }
}

/// One artifact rebuilt as a tar from its snapshot.
struct RepositoryArtifact {
    indexed: Arc<Indexed>,
    root: Node,
    expected: Checksums,
    label: String,
    name: String,
    size: ArtifactSize,
    /// A streamed artifact: its recorded size (its one-file tar is rebuilt around it).
    stream: Option<u64>,
}

impl ArtifactReader for RepositoryArtifact {
    fn forward(self: Box<Self>, writer: &mut dyn Write) -> Result<(), Error> {
        let (mut tar_writer, tar_reader) = pipe();
        let indexed = Arc::clone(&self.indexed);
        let root = self.root.clone();
        let stream = self.stream;
        let producer = std::thread::Builder::new()
            .name("cairn-repo-tar".into())
            .spawn(move || {
                let written = match stream {
                    Some(size) => write_stream_tar(&indexed, &root, size, &mut tar_writer),
                    None => write_tar(&indexed, &root, &mut tar_writer),
                };
                if written.is_ok() {
                    tar_writer.close();
                }
                written
            })
            .map_err(|source| ArtifactError::Io {
                action: "Reading artifact",
                path: PathBuf::from(&self.label),
                source,
            })?;
        let digested = crate::format::digest::digest_tar_forwarding(tar_reader, writer);
        let produced = producer
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the tar builder panicked")));
        if let Err(source) = produced {
            return Err(ArtifactError::Io {
                action: "Reading artifact",
                path: PathBuf::from(&self.label),
                source,
            }
            .into());
        }
        let actual: Checksums = digested
            .map_err(|source| ArtifactError::BadTar {
                path: PathBuf::from(&self.label),
                source,
            })?
            .into_iter()
            .map(|(name, file)| (name, file.sha256))
            .collect();
        let mismatched = metadata::mismatched_files(&self.expected, &actual);
        if mismatched.is_empty() {
            Ok(())
        } else {
            Err(ArtifactError::Corrupted {
                artifact: self.name.clone(),
                files: metadata::first_names(&mismatched),
                count: mismatched.len(),
            }
            .into())
        }
    }

    fn size(&self) -> ArtifactSize {
        self.size
    }
}

/// Writes the tree under `root` as a tar (`./`-prefixed names, as `tar -c .` sends them, so
/// the names match `metadata`'s; the tar crate's builder would drop the `./`).
fn write_tar(indexed: &Indexed, root: &Node, out: &mut impl Write) -> io::Result<()> {
    let rustic = |e: Box<cairn_repository::rustic_core::RusticError>| {
        io::Error::other(e.display_log().replace('\n', " "))
    };
    let nodes = indexed
        .ls(root, &LsOptions::default().recursive(true))
        .map_err(rustic)?;
    for item in nodes {
        let (path, node) = item.map_err(rustic)?;
        let mut name = b"./".to_vec();
        name.extend_from_slice(path.as_os_str().as_encoded_bytes());
        let mut header = header_for(&node);
        match &node.node_type {
            NodeType::Dir => {
                name.push(b'/');
                header.set_entry_type(tar::EntryType::Directory);
                header.set_size(0);
                append_header(out, &mut header, &name, None)?;
            }
            NodeType::File => {
                header.set_entry_type(tar::EntryType::Regular);
                header.set_size(node.meta.size);
                append_header(out, &mut header, &name, None)?;
                let mut counted = Counted {
                    inner: &mut *out,
                    count: 0,
                };
                indexed.dump(&node, &mut counted).map_err(rustic)?;
                let count = counted.count;
                if count != node.meta.size {
                    return Err(io::Error::other(format!(
                        "file {} has {count} bytes in the repository, its node says {}",
                        path.display(),
                        node.meta.size
                    )));
                }
                pad(out, count)?;
            }
            NodeType::Symlink { .. } => {
                header.set_entry_type(tar::EntryType::Symlink);
                header.set_size(0);
                let target = node
                    .node_type
                    .to_link()
                    .as_os_str()
                    .as_encoded_bytes()
                    .to_vec();
                append_header(out, &mut header, &name, Some(&target))?;
            }
            other => {
                return Err(io::Error::other(format!(
                    "entry {} is a {other}, which Cairn never writes into a repository",
                    path.display()
                )));
            }
        }
    }
    // The end of the archive: two zero blocks.
    out.write_all(&[0; 1024])
}

/// Writes a streamed artifact's snapshot as the one-file tar a store's stream is read as
/// ([`crate::format::stream::OneFileTar`]): its one file must be `cairn-stream` and hold
/// exactly the `size` bytes recorded.
fn write_stream_tar(
    indexed: &Indexed,
    root: &Node,
    size: u64,
    out: &mut impl Write,
) -> io::Result<()> {
    let rustic = |e: Box<cairn_repository::rustic_core::RusticError>| {
        io::Error::other(e.display_log().replace('\n', " "))
    };
    let nodes: Vec<(PathBuf, Node)> = indexed
        .ls(root, &LsOptions::default().recursive(true))
        .map_err(rustic)?
        .collect::<Result<_, _>>()
        .map_err(rustic)?;
    let node = match &nodes[..] {
        [(path, node)] if path.as_os_str() == STREAM_NAME && node.node_type == NodeType::File => {
            node
        }
        _ => {
            let names: Vec<String> = nodes
                .iter()
                .map(|(path, _)| path.display().to_string())
                .collect();
            return Err(io::Error::other(format!(
                "the snapshot of a streamed artifact holds [{}], not the one file {STREAM_NAME}",
                names.join(", ")
            )));
        }
    };
    out.write_all(&crate::format::stream::header(size))?;
    let mut bounded = Bounded {
        inner: &mut *out,
        count: 0,
        size,
    };
    indexed.dump(node, &mut bounded).map_err(rustic)?;
    let count = bounded.count;
    if count != size {
        return Err(io::Error::other(format!(
            "the stream has {count} bytes in the repository, {size} were recorded"
        )));
    }
    out.write_all(&crate::format::stream::tail(size))
}

/// A writer that passes at most `size` bytes: a stream longer in the repository than recorded
/// is an error before its extra bytes go anywhere.
struct Bounded<'a, W: Write> {
    inner: &'a mut W,
    count: u64,
    size: u64,
}

impl<W: Write> Write for Bounded<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.count + buf.len() as u64 > self.size {
            return Err(io::Error::other(format!(
                "the stream has more bytes in the repository than the {} recorded",
                self.size
            )));
        }
        let written = self.inner.write(buf)?;
        self.count += written as u64;
        Ok(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Zeros up to the next 512-byte block after `len` bytes.
fn pad(out: &mut impl Write, len: u64) -> io::Result<()> {
    let padding = usize::try_from((512 - len % 512) % 512).unwrap_or(0);
    out.write_all(&[0; 512][..padding])
}

/// Writes `header` with `name` (and a symlink's `link`) as given, byte for byte: a GNU long
/// name (`L`) or long link (`K`) entry first when one does not fit in 100 bytes.
fn append_header(
    out: &mut impl Write,
    header: &mut tar::Header,
    name: &[u8],
    link: Option<&[u8]>,
) -> io::Result<()> {
    for (bytes, kind, field) in [
        (Some(name), tar::EntryType::GNULongName, 0),
        (link, tar::EntryType::GNULongLink, 1),
    ] {
        let Some(bytes) = bytes else { continue };
        let old = header.as_old_mut();
        let slot: &mut [u8; 100] = if field == 0 {
            &mut old.name
        } else {
            &mut old.linkname
        };
        *slot = [0; 100];
        if bytes.len() <= 100 {
            slot[..bytes.len()].copy_from_slice(bytes);
            continue;
        }
        slot.copy_from_slice(&bytes[..100]);
        let mut long = tar::Header::new_gnu();
        long.as_old_mut().name[..13].copy_from_slice(b"././@LongLink");
        long.set_mode(0o644);
        long.set_uid(0);
        long.set_gid(0);
        long.set_mtime(0);
        long.set_entry_type(kind);
        long.set_size(bytes.len() as u64 + 1);
        long.set_cksum();
        out.write_all(long.as_bytes())?;
        out.write_all(bytes)?;
        out.write_all(&[0])?;
        pad(out, bytes.len() as u64 + 1)?;
    }
    header.set_cksum();
    out.write_all(header.as_bytes())
}

/// A tar header with a node's mode, owners and mtime.
fn header_for(node: &Node) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_mode(mode::permissions_from_go(node.meta.mode.unwrap_or(0o644)));
    header.set_uid(u64::from(node.meta.uid.unwrap_or(0)));
    header.set_gid(u64::from(node.meta.gid.unwrap_or(0)));
    if let Some(user) = &node.meta.user {
        let _ = header.set_username(user);
    }
    if let Some(group) = &node.meta.group {
        let _ = header.set_groupname(group);
    }
    let mtime = node
        .meta
        .mtime
        .map_or(0, |t| u64::try_from(t.as_second()).unwrap_or(0));
    header.set_mtime(mtime);
    header
}

/// A writer that counts what passes.
struct Counted<'a, W: Write> {
    inner: &'a mut W,
    count: u64,
}

impl<W: Write> Write for Counted<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let written = self.inner.write(buf)?;
        self.count += written as u64;
        Ok(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::digest::{digest_tar_files, EntryPolicy, FileDigest, FileDigests};

    /// A record of one streamed artifact of `job` on app/0 with `sha256`, and bbr's `metadata`
    /// listing `listed` for it.
    fn stream_record(sha256: &str, listed: &[(&str, &str)]) -> (Record, BackupMetadata) {
        let digest = |hex: &str| crate::format::digest::Sha256Sum::from(hex);
        let files: FileDigests = [(
            STREAM_FILE.into(),
            FileDigest {
                size: 5,
                sha256: digest(sha256),
            },
        )]
        .into();
        let record = Record {
            format: super::super::record::RECORD_FORMAT,
            deployment: "d".into(),
            backup_id: "20240102T030405Z".into(),
            artifacts: vec![RecordArtifact {
                name: "app-0-db".into(),
                group: "app".into(),
                index: "0".into(),
                job: "db".into(),
                shared: false,
                snapshot: "s".into(),
                tree: "t".into(),
                plain_bytes: 5,
                file_bytes: 5,
                stream: true,
                files,
            }],
            layout: crate::model::layout::DeploymentLayout::default(),
            deployment_manifest: None,
            jobs: Vec::new(),
        };
        let mut metadata = BackupMetadata::default();
        metadata.add_artifact(
            "app",
            "0",
            "db",
            listed
                .iter()
                .map(|(name, hex)| ((*name).into(), digest(hex)))
                .collect(),
        );
        (record, metadata)
    }

    #[test]
    fn a_streamed_artifacts_record_must_agree_with_metadata() {
        let a = "a".repeat(64);
        let b = "b".repeat(64);
        let (record, metadata) = stream_record(&a, &[(STREAM_FILE, &a)]);
        assert_eq!(check_streams(&record, &metadata), Ok(()));
        for listed in [
            vec![(STREAM_FILE, b.as_str())],
            vec![("./other", a.as_str())],
            vec![(STREAM_FILE, a.as_str()), ("./other", a.as_str())],
            vec![],
        ] {
            let (record, metadata) = stream_record(&a, &listed);
            let error = check_streams(&record, &metadata).unwrap_err();
            assert!(
                error.contains("streamed artifact app-0-db is recorded with other files"),
                "{listed:?}: {error}"
            );
        }
    }

    #[test]
    fn rebuilt_names_keep_dot_slash_and_long_names_and_links_survive() {
        let long = format!("./{}", "d/".repeat(60) + "file");
        let mut out = Vec::new();
        let mut file = tar::Header::new_gnu();
        file.set_mode(0o640);
        file.set_uid(0);
        file.set_gid(0);
        file.set_mtime(1);
        file.set_entry_type(tar::EntryType::Regular);
        file.set_size(3);
        append_header(&mut out, &mut file, long.as_bytes(), None).unwrap();
        out.extend_from_slice(b"abc");
        pad(&mut out, 3).unwrap();
        let mut link = tar::Header::new_gnu();
        link.set_mode(0o777);
        link.set_uid(0);
        link.set_gid(0);
        link.set_mtime(1);
        link.set_entry_type(tar::EntryType::Symlink);
        link.set_size(0);
        let target = "t/".repeat(70);
        append_header(&mut out, &mut link, b"./short", Some(target.as_bytes())).unwrap();
        out.extend_from_slice(&[0; 1024]);

        let files = digest_tar_files(out.as_slice(), EntryPolicy::Trust).unwrap();
        let names: Vec<String> = files.keys().map(ToString::to_string).collect();
        assert_eq!(names, std::slice::from_ref(&long));
        let mut archive = tar::Archive::new(out.as_slice());
        let links: Vec<Vec<u8>> = archive
            .entries()
            .unwrap()
            .map(|e| {
                e.unwrap()
                    .link_name_bytes()
                    .map(std::borrow::Cow::into_owned)
                    .unwrap_or_default()
            })
            .collect();
        assert_eq!(links[1], target.as_bytes());
    }
}
