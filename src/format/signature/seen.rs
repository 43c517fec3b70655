//! What this machine has already seen: per store and deployment, the newest signed backup it
//! wrote or verified, so that `restore --latest` can refuse a store rolled back to an older
//! backup (TUF's rollback protection: a signature proves a backup is genuine, not that it is
//! the newest).
//!
//! One small JSON file per store and deployment under `<state dir>/trust/` (the run journal's
//! state directory, `CAIRN_STATE_DIR`), named by a hash of both so that any deployment name
//! is a safe file name. It only moves forward: recording an older backup changes nothing.
//! Writes go to a temporary file renamed into place, under an exclusive lock, since
//! `--all-deployments` runs several processes at once.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::statement::ChainLink;
use super::SignatureError;
use crate::format::bbr_directory::metadata::parse_backup_timestamp;

/// The newest signed backup of a deployment this machine has seen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeenBackup {
    /// The store (its display form).
    pub store: String,
    /// Deployment name.
    pub deployment: String,
    /// Backup id.
    pub backup_id: String,
    /// Digest of its statement.
    pub statement_sha256: String,
    /// Its statement's link to the backup before it.
    pub previous: Option<ChainLink>,
    /// When it was first seen (RFC 3339).
    pub seen_at: String,
}

impl SeenBackup {
    /// True when `backup_id` is older than this one.
    #[must_use]
    pub fn is_newer_than(&self, backup_id: &str) -> bool {
        match (
            parse_backup_timestamp(&self.backup_id),
            parse_backup_timestamp(backup_id),
        ) {
            (Some(seen), Some(other)) => seen > other,
            _ => self.backup_id.as_str() > backup_id,
        }
    }
}

/// The state directory of the seen backups.
#[derive(Debug, Clone)]
pub struct SeenBackups {
    dir: PathBuf,
}

impl SeenBackups {
    /// Files under `dir` (`<state dir>/trust`).
    #[must_use]
    pub fn at(dir: impl Into<PathBuf>) -> SeenBackups {
        SeenBackups { dir: dir.into() }
    }

    /// The file of one store and deployment.
    #[must_use]
    pub fn path(&self, store: &str, deployment: &str) -> PathBuf {
        let digest = hex::encode(Sha256::digest(format!("{store}\n{deployment}")));
        self.dir.join(format!("seen-{}.json", &digest[..24]))
    }

    /// The newest backup seen of `deployment` in `store`, if any.
    ///
    /// # Errors
    /// An unreadable or damaged file ([`SignatureError::SeenState`]).
    pub fn newest(
        &self,
        store: &str,
        deployment: &str,
    ) -> Result<Option<SeenBackup>, SignatureError> {
        let path = self.path(store, deployment);
        let text = match std::fs::read(&path) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(state_error(&path, &error.to_string())),
        };
        serde_json::from_slice(&text)
            .map(Some)
            .map_err(|e| state_error(&path, &format!("{e}; remove it to start over")))
    }

    /// Records `seen` unless a newer backup was seen already; returns true when it was
    /// recorded.
    ///
    /// # Errors
    /// The file or its directory cannot be written.
    pub fn record(&self, seen: &SeenBackup) -> Result<bool, SignatureError> {
        let path = self.path(&seen.store, &seen.deployment);
        let io = |e: std::io::Error| state_error(&path, &e.to_string());
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .map_err(io)?;
        let lock = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(self.dir.join(".lock"))
            .map_err(io)?;
        lock.lock().map_err(io)?;
        if let Some(current) = self.newest(&seen.store, &seen.deployment)? {
            if !seen.is_newer_than(&current.backup_id) {
                return Ok(false);
            }
        }
        let temporary = temporary_path(&path);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temporary)
            .map_err(io)?;
        let text = serde_json::to_string_pretty(seen).expect("seen state serializes");
        let written = file
            .write_all(text.as_bytes())
            .and_then(|()| file.sync_all())
            .and_then(|()| std::fs::rename(&temporary, &path));
        if written.is_err() {
            let _ = std::fs::remove_file(&temporary);
        }
        written.map_err(io)?;
        Ok(true)
    }
}

fn temporary_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{}.tmp", std::process::id()));
    PathBuf::from(name)
}

fn state_error(path: &Path, detail: &str) -> SignatureError {
    SignatureError::SeenState {
        path: path.to_path_buf(),
        detail: detail.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(id: &str) -> SeenBackup {
        SeenBackup {
            store: "s3://b/p".into(),
            deployment: "cf".into(),
            backup_id: id.into(),
            statement_sha256: format!("digest of {id}"),
            previous: None,
            seen_at: "2024-01-02T03:04:05Z".into(),
        }
    }

    #[test]
    fn the_state_only_moves_forward() {
        let dir = tempfile::tempdir().unwrap();
        let state = SeenBackups::at(dir.path().join("trust"));
        assert_eq!(state.newest("s3://b/p", "cf").unwrap(), None);
        assert!(state.record(&seen("20240102T030405Z")).unwrap());
        assert!(!state.record(&seen("20240101T030405Z")).unwrap());
        assert_eq!(
            state.newest("s3://b/p", "cf").unwrap().unwrap().backup_id,
            "20240102T030405Z"
        );
        assert!(state.record(&seen("20240103T030405Z")).unwrap());
        assert_eq!(
            state.newest("s3://b/p", "cf").unwrap().unwrap().backup_id,
            "20240103T030405Z"
        );
        // Another deployment or store has its own file.
        assert_eq!(state.newest("s3://b/p", "other").unwrap(), None);
        assert_eq!(state.newest("s3://b/q", "cf").unwrap(), None);
        // A damaged file is an error naming it, not an empty state.
        std::fs::write(state.path("s3://b/p", "cf"), "{").unwrap();
        let error = state.newest("s3://b/p", "cf").unwrap_err().to_string();
        assert!(error.contains("remove it to start over"), "{error}");
    }
}
