//! The parent of a listed artifact (docs/design/repository.md §5 phase 2): the same artifact
//! in the deployment's newest complete backup, and which of the staged files it already holds.
//!
//! Why Cairn decides and not only rustic: the files rustic will take from the parent (same
//! type, size and mtime, `rc:src/archiver/parent.rs:162-190`) must not be sent at all, so the
//! choice is made before the drain, with the same rule; and each file's sha256 for bbr's
//! `metadata` must come from somewhere: the parent backup's `metadata`. A file whose digest
//! the parent's `metadata` lacks is sent. Inode and ctime are never compared (the staging
//! directory is new every night; nodes carry neither).

use std::collections::HashMap;
use std::sync::Arc;

use cairn_repository::rustic_core::jiff::Timestamp;
use cairn_repository::rustic_core::LsOptions;
use cairn_repository::{RepositoryError, RepositoryPassword};

use super::read::{find, records};
use super::source::listed_mtime;
use crate::error::Error;
use crate::format::bbr_directory::metadata::Checksums;
use crate::format::bbr_directory::metadata_read::parse_metadata;
use crate::format::digest::{FileDigest, FileDigests, FileName};
use crate::format::listing::{ArtifactListing, ListedKind};

/// An artifact of an earlier backup, as far as choosing what to send needs it.
#[derive(Debug, Default)]
pub struct ParentArtifact {
    /// Its snapshot's id (hex).
    pub snapshot: String,
    /// The backup it belongs to.
    pub backup_id: String,
    /// Its regular files (path relative to the artifact) and their size and mtime.
    pub files: HashMap<Vec<u8>, (u64, Option<Timestamp>)>,
    /// Its files' sha256 from the backup's `metadata` (`./`-prefixed names).
    pub digests: Checksums,
}

/// The files to send and the digests carried over.
#[derive(Debug, Default)]
pub struct Choice {
    /// Indexes of the listing's regular files to send, in listing order.
    pub wanted: Vec<usize>,
    /// The other files' digests, from the parent.
    pub carried: FileDigests,
}

/// Which regular files of `listing` must be sent: all without a parent; else those new, or
/// whose size or mtime differ from the parent's node, or whose digest the parent's
/// `metadata` does not have.
#[must_use]
pub fn choose(listing: &ArtifactListing, parent: Option<&ParentArtifact>) -> Choice {
    let mut choice = Choice::default();
    for (index, entry) in listing.entries.iter().enumerate() {
        if entry.kind != ListedKind::File {
            continue;
        }
        let name = entry.tar_name();
        let carried = parent.and_then(|parent| {
            let (size, mtime) = parent.files.get(&entry.path)?;
            if *size != entry.size || *mtime != listed_mtime(entry) || mtime.is_none() {
                return None;
            }
            parent.digests.get(name.as_slice()).cloned()
        });
        match carried {
            Some(sha256) => {
                choice.carried.insert(
                    FileName::new(name),
                    FileDigest {
                        size: entry.size,
                        sha256,
                    },
                );
            }
            None => choice.wanted.push(index),
        }
    }
    choice
}

/// Artifact `name` in the newest complete backup of `deployment` in the repository at `url`;
/// `None` when there is no backup yet, or the newest has no such artifact.
///
/// # Errors
/// The repository, the record or the parent's tree cannot be read.
pub async fn find_parent(
    url: &str,
    password: &RepositoryPassword,
    deployment: &str,
    name: &str,
) -> Result<Option<ParentArtifact>, Error> {
    let repository = super::open(url, password).await?;
    let store = repository.store();
    let opened = repository.indexed(Ok).await?;
    let (deployment, name) = (deployment.to_string(), name.to_string());
    let owner = Arc::clone(&store);
    Ok(cairn_repository::blocking(&owner, move || {
        let rustic = |e: Box<cairn_repository::rustic_core::RusticError>| {
            RepositoryError::rustic(store.as_ref(), &e)
        };
        if records(&opened, Some(&deployment))
            .map_err(rustic)?
            .is_empty()
        {
            return Ok(None);
        }
        let mut found = find(opened, store.as_ref(), &deployment, None)?;
        let (Some(artifact), Some((_, root))) = (
            found.record.artifacts.iter().find(|a| a.name == name),
            found.trees.iter().find(|(n, _)| *n == name),
        ) else {
            return Ok(None);
        };
        // A million files' `metadata` is ~100 MiB of text: read it in pieces (not the YAML
        // reader's events of the whole document), keep this artifact's digests only, and let
        // the text and the other artifacts' digests go before the parent's tree is listed.
        let text = std::mem::take(&mut found.metadata);
        let mut metadata = parse_metadata(&text).map_err(|detail| RepositoryError::Rustic {
            store: store.to_string(),
            detail: format!(
                "the metadata of backup {}/{} cannot be read: {detail}",
                found.record.deployment, found.record.backup_id
            ),
        })?;
        drop(text);
        let digests = if artifact.shared {
            metadata
                .custom_artifacts
                .iter_mut()
                .find(|a| a.name == name)
                .map(|a| std::mem::take(&mut a.checksums))
        } else {
            metadata
                .instances
                .iter_mut()
                .find(|i| i.name == artifact.group && i.index == artifact.index)
                .and_then(|i| i.artifacts.iter_mut().find(|a| a.name == artifact.job))
                .map(|a| std::mem::take(&mut a.checksums))
        }
        .unwrap_or_default();
        drop(metadata);
        let mut files = HashMap::new();
        for item in found
            .indexed
            .ls(root, &LsOptions::default().recursive(true))
            .map_err(rustic)?
        {
            let (path, node) = item.map_err(rustic)?;
            if node.is_file() {
                files.insert(
                    path.as_os_str().as_encoded_bytes().to_vec(),
                    (node.meta.size, node.meta.mtime),
                );
            }
        }
        Ok(Some(ParentArtifact {
            snapshot: artifact.snapshot.clone(),
            backup_id: found.record.backup_id.clone(),
            files,
            digests,
        }))
    })
    .await?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::digest::Sha256Sum;
    use crate::format::listing::ListedEntry;

    fn entry(path: &str, kind: ListedKind, size: u64, seconds: i64) -> ListedEntry {
        ListedEntry {
            path: path.as_bytes().to_vec(),
            kind,
            size,
            mtime_seconds: seconds,
            mtime_nanos: 5,
            mode: 0o644,
            uid: 0,
            gid: 0,
            user: "root".into(),
            group: "root".into(),
            inode: 7,
            link: Vec::new(),
        }
    }

    #[test]
    fn only_new_changed_or_undigested_files_are_sent() {
        let listing = ArtifactListing {
            entries: vec![
                entry("dir", ListedKind::Directory, 0, 1),
                entry("dir/same", ListedKind::File, 10, 100),
                entry("grown", ListedKind::File, 11, 100),
                entry("touched", ListedKind::File, 10, 101),
                entry("new", ListedKind::File, 10, 100),
                entry("no-digest", ListedKind::File, 10, 100),
            ],
        };
        let at = |seconds| Timestamp::new(seconds, 5).ok();
        let sha = Sha256Sum::digest(b"x");
        let parent = ParentArtifact {
            files: [
                ("dir/same", (10, at(100))),
                ("grown", (10, at(100))),
                ("touched", (10, at(100))),
                ("no-digest", (10, at(100))),
            ]
            .into_iter()
            .map(|(p, v)| (p.as_bytes().to_vec(), v))
            .collect(),
            digests: ["./dir/same", "./grown", "./touched", "./new"]
                .into_iter()
                .map(|n| (FileName::from(n), sha.clone()))
                .collect(),
            ..ParentArtifact::default()
        };
        let choice = choose(&listing, Some(&parent));
        assert_eq!(choice.wanted, [2, 3, 4, 5]);
        assert_eq!(choice.carried.len(), 1);
        assert_eq!(choice.carried[b"./dir/same".as_slice()].sha256, sha);
        assert_eq!(choose(&listing, None).wanted, [1, 2, 3, 4, 5]);
    }
}
