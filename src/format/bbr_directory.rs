//! The local artifact directory in bbr's format (bbr-facts §4): one uncompressed tar per job
//! artifact and a `metadata` file with the sha256 of every file.
//!
//! A backup is written so that it can never look complete when it is not: tars are written
//! under a `.partial` name and renamed only once their checksums matched the instance's, and
//! the final `metadata` (the one listing instances) replaces the initial one by an atomic
//! rename at the very end. A failed backup keeps bbr's shape — a `metadata` listing no
//! instances and no tars — which restore refuses.

mod direct_io;
pub mod metadata;
pub mod metadata_read;
pub mod signed;
pub mod sink;

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::format::digest::{compare_tar, TarDigestError};
pub use metadata::{BackupMetadata, Checksums};

/// A problem with a local artifact directory or one of its files.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    /// `--artifact-path` is not an existing directory.
    #[error("artifact path {0} is not a directory")]
    NotADirectory(PathBuf),
    /// The backup directory exists already.
    #[error("failed creating artifact directory {path}: {source}")]
    Create {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file could not be read or written.
    #[error("{}", io_message(action, path, source))]
    Io {
        /// What was attempted.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A directory or file that a backup needs is not there (or is not what it should be).
    #[error("{action} `{path}`: {reason}; {what_to_do}")]
    Missing {
        /// What was attempted, in bbr's words (`failed opening the directory`).
        action: &'static str,
        /// The directory or file.
        path: PathBuf,
        /// What is wrong with it (`no such file or directory`).
        reason: &'static str,
        /// What the operator can do.
        what_to_do: &'static str,
    },
    /// `metadata` is not bbr metadata.
    #[error("Invalid metadata `{path}`: {detail}")]
    BadMetadata {
        /// The file.
        path: PathBuf,
        /// Why.
        detail: String,
    },
    /// The backup lists no artifact: it is what a failed backup leaves.
    #[error("Backup `{0}` lists no artifacts: it is incomplete (a failed or interrupted backup); choose another backup")]
    Incomplete(PathBuf),
    /// A tar's content does not match `metadata`.
    #[error("Backup is corrupted, checksum failed for {artifact} - checksums don't match for [{files}]. Checksum failed for {count} files in total")]
    Corrupted {
        /// The tar file.
        artifact: String,
        /// First mismatching names.
        files: String,
        /// Number of mismatching names.
        count: usize,
    },
    /// A tar in the directory that `metadata` does not list (`backups verify`).
    #[error("Backup artifact `{0}` is not listed in `metadata`: its checksums are unknown, so it can be neither verified nor restored; `metadata` lost an entry or the file does not belong to this backup")]
    Unlisted(PathBuf),
    /// `manifest.yml` (`--with-manifest`) is there but is not YAML (`backups verify`).
    #[error("Deployment manifest `{path}` is not valid YAML: {detail}")]
    BadManifest {
        /// The file.
        path: PathBuf,
        /// Why.
        detail: String,
    },
    /// A tar cannot be parsed or holds an unsafe entry.
    #[error("Backup artifact `{path}` is unusable: {source}")]
    BadTar {
        /// The tar file.
        path: PathBuf,
        /// Why.
        source: TarDigestError,
    },
}

/// `Writing `x` failed: why`, or `Error reading artifact file `x`: why` when the action (bbr's
/// wording) already says it failed.
fn io_message(action: &str, path: &Path, source: &std::io::Error) -> String {
    let path = path.display();
    if action.starts_with("Error") || action.starts_with("failed") {
        format!("{action} `{path}`: {source}")
    } else {
        format!("{action} `{path}` failed: {source}")
    }
}

/// A backup directory being written: `<parent>/<deployment>_<timestamp>`, mode 0700.
#[derive(Debug)]
pub struct BackupDirectory {
    path: PathBuf,
}

impl BackupDirectory {
    /// Creates the directory; it must not exist yet.
    ///
    /// # Errors
    /// [`ArtifactError::NotADirectory`] for a bad parent, [`ArtifactError::Create`] otherwise.
    pub fn create(parent: &Path, name: &str) -> Result<BackupDirectory, ArtifactError> {
        if !parent.is_dir() {
            return Err(ArtifactError::NotADirectory(parent.to_path_buf()));
        }
        let path = parent.join(name);
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .map_err(|source| ArtifactError::Create {
                path: path.clone(),
                source,
            })?;
        Ok(BackupDirectory { path })
    }

    /// Opens an existing backup directory for reading.
    #[must_use]
    pub fn open(path: &Path) -> BackupDirectory {
        BackupDirectory {
            path: path.to_path_buf(),
        }
    }

    /// The directory.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Final path of an artifact's tar.
    #[must_use]
    pub fn tar_path(&self, artifact_name: &str) -> PathBuf {
        self.path.join(format!("{artifact_name}.tar"))
    }

    /// Where a tar is written before it is verified.
    #[must_use]
    pub fn partial_tar_path(&self, artifact_name: &str) -> PathBuf {
        self.path.join(format!("{artifact_name}.tar.partial"))
    }

    /// Creates the file a tar is streamed into (mode 0600).
    ///
    /// # Errors
    /// [`ArtifactError::Io`].
    pub fn create_partial_tar(&self, artifact_name: &str) -> Result<fs::File, ArtifactError> {
        let path = self.partial_tar_path(artifact_name);
        fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|source| ArtifactError::Io {
                action: "Creating",
                path,
                source,
            })
    }

    /// Renames a verified tar to its final name.
    ///
    /// # Errors
    /// [`ArtifactError::Io`].
    pub fn commit_tar(&self, artifact_name: &str) -> Result<(), ArtifactError> {
        let path = self.tar_path(artifact_name);
        fs::rename(self.partial_tar_path(artifact_name), &path).map_err(|source| {
            ArtifactError::Io {
                action: "Renaming",
                path,
                source,
            }
        })
    }

    /// Writes `metadata` atomically (temporary file, fsync, rename).
    ///
    /// # Errors
    /// [`ArtifactError::Io`].
    pub fn write_metadata(&self, metadata: &BackupMetadata) -> Result<(), ArtifactError> {
        let path = self.path.join("metadata");
        let temporary = self.path.join(".metadata.tmp");
        let io_error = |source| ArtifactError::Io {
            action: "Writing",
            path: path.clone(),
            source,
        };
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&temporary)
            .map_err(io_error)?;
        metadata
            .write_yaml(std::io::BufWriter::with_capacity(1 << 20, &mut file))
            .and_then(|()| file.sync_all())
            .map_err(io_error)?;
        fs::rename(&temporary, &path).map_err(io_error)
    }

    /// Writes an extra file (e.g. `manifest.yml`), mode 0600.
    ///
    /// # Errors
    /// [`ArtifactError::Io`].
    pub fn write_file(&self, name: &str, contents: &[u8]) -> Result<(), ArtifactError> {
        let path = self.path.join(name);
        fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .and_then(|mut f| f.write_all(contents))
            .map_err(|source| ArtifactError::Io {
                action: "Writing",
                path,
                source,
            })
    }

    /// Removes every tar, partial or complete: what a failed backup must not leave behind.
    pub fn remove_tars(&self) {
        let Ok(entries) = fs::read_dir(&self.path) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".tar") || name.ends_with(".tar.partial") {
                let _ = fs::remove_file(entry.path());
            }
        }
    }

    /// Reads `metadata`.
    ///
    /// # Errors
    /// [`ArtifactError::Io`] or [`ArtifactError::BadMetadata`].
    pub fn read_metadata(&self) -> Result<BackupMetadata, ArtifactError> {
        let path = self.path.join("metadata");
        metadata_read::read_metadata(&path).map_err(|error| match error {
            metadata_read::ReadError::Io(source) => ArtifactError::Io {
                action: "Reading",
                path,
                source,
            },
            metadata_read::ReadError::Yaml(detail) => ArtifactError::BadMetadata { path, detail },
        })
    }

    /// Every `(tar file name without .tar, recorded checksums)` the metadata lists (borrowed:
    /// an artifact may list a million files).
    #[must_use]
    pub fn listed_artifacts(metadata: &BackupMetadata) -> Vec<(String, &Checksums)> {
        let per_job = metadata.instances.iter().flat_map(|instance| {
            instance.artifacts.iter().map(move |artifact| {
                (
                    format!("{}-{}-{}", instance.name, instance.index, artifact.name),
                    &artifact.checksums,
                )
            })
        });
        let named = metadata
            .custom_artifacts
            .iter()
            .map(|a| (a.name.clone(), &a.checksums));
        per_job.chain(named).collect()
    }

    /// Tars in the directory that `metadata` does not list, sorted.
    #[must_use]
    pub fn unlisted_tars(&self, metadata: &BackupMetadata) -> Vec<PathBuf> {
        let listed: std::collections::BTreeSet<String> = Self::listed_artifacts(metadata)
            .into_iter()
            .map(|(name, _)| format!("{name}.tar"))
            .collect();
        let Ok(entries) = fs::read_dir(&self.path) else {
            return Vec::new();
        };
        let mut unlisted: Vec<PathBuf> = entries
            .flatten()
            .filter(|entry| {
                let name = entry.file_name().to_string_lossy().into_owned();
                name.ends_with(".tar") && !listed.contains(&name)
            })
            .map(|entry| entry.path())
            .collect();
        unlisted.sort();
        unlisted
    }

    /// Checks `manifest.yml`, when the backup has one (`--with-manifest`), is YAML: bbr's
    /// format records no digest of it, so that is all that can be checked.
    ///
    /// # Errors
    /// [`ArtifactError::Io`] or [`ArtifactError::BadManifest`].
    pub fn check_deployment_manifest(&self) -> Result<(), ArtifactError> {
        let path = self.path.join("manifest.yml");
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(source) => {
                return Err(ArtifactError::Io {
                    action: "Reading",
                    path,
                    source,
                })
            }
        };
        yaml_serde::from_str::<yaml_serde::Value>(&text)
            .map(|_| ())
            .map_err(|error| ArtifactError::BadManifest {
                path,
                detail: error.to_string(),
            })
    }

    /// Reads a tar once, refusing unsafe entries, and compares every file's sha256 with
    /// `expected`.
    ///
    /// # Errors
    /// Unreadable file, unsafe entries, or mismatching checksums.
    pub fn verify_tar(
        &self,
        artifact_name: &str,
        expected: &Checksums,
    ) -> Result<(), ArtifactError> {
        self.check_tar(artifact_name, expected, None)
    }

    /// Like [`Self::verify_tar`], passing the tar stream on to `forward` while it is checked
    /// (restore: into the instance's `tar -x`; an unsafe entry is never passed on, see
    /// [`crate::format::digest::digest_tar_forwarding`]). What was forwarded must be discarded when this
    /// fails: mismatching checksums are only known at the end.
    ///
    /// # Errors
    /// As [`Self::verify_tar`], and errors of `forward`.
    pub fn check_tar(
        &self,
        artifact_name: &str,
        expected: &Checksums,
        forward: Option<&mut dyn Write>,
    ) -> Result<(), ArtifactError> {
        let path = self.tar_path(artifact_name);
        let file = fs::File::open(&path).map_err(|source| ArtifactError::Io {
            action: "Error reading artifact file",
            path: path.clone(),
            source,
        })?;
        let reader = direct_io::DirectReader::new(file, 1 << 20);
        let mismatched = compare_tar(reader, forward, expected)
            .map_err(|source| ArtifactError::BadTar { path, source })?;
        if mismatched.is_empty() {
            Ok(())
        } else {
            Err(ArtifactError::Corrupted {
                artifact: format!("{artifact_name}.tar"),
                files: metadata::first_names(&mismatched),
                count: mismatched.len(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn creates_a_private_directory_once() {
        let parent = tempfile::tempdir().unwrap();
        let backup = BackupDirectory::create(parent.path(), "d_20240102T030405Z").unwrap();
        let mode = fs::metadata(backup.path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        assert!(matches!(
            BackupDirectory::create(parent.path(), "d_20240102T030405Z"),
            Err(ArtifactError::Create { .. })
        ));
        let not_dir = parent.path().join("missing");
        assert!(matches!(
            BackupDirectory::create(&not_dir, "x"),
            Err(ArtifactError::NotADirectory(_))
        ));
    }

    #[test]
    fn verify_detects_a_changed_byte() {
        let parent = tempfile::tempdir().unwrap();
        let backup = BackupDirectory::create(parent.path(), "b").unwrap();
        let mut builder = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_size(3);
        header.set_mode(0o644);
        header.as_old_mut().name[..3].copy_from_slice(b"./f");
        header.set_cksum();
        builder.append(&header, &b"abc"[..]).unwrap();
        let mut bytes = builder.into_inner().unwrap();
        let checksums: Checksums = [(
            "./f".into(),
            crate::format::digest::Sha256Sum::digest(b"abc"),
        )]
        .into();
        fs::write(backup.tar_path("g-0-j"), &bytes).unwrap();
        backup.verify_tar("g-0-j", &checksums).unwrap();
        bytes[512] = b'X';
        fs::write(backup.tar_path("g-0-j"), &bytes).unwrap();
        let error = backup.verify_tar("g-0-j", &checksums).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("checksums don't match for [./f]"),
            "{error}"
        );
    }
}
