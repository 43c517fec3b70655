//! The run journal: what a backup has locked and created, written before each lock, so that a
//! run killed with SIGKILL (or a lost jumpbox) can be undone by the next one.
//!
//! SIGINT and SIGTERM are handled in-process; SIGKILL cannot be. The journal is written to a
//! local state directory (`CAIRN_STATE_DIR`, default `~/.local/state/cairn`) before every lock
//! layer and after the remote directories are created, and removed when the run has unlocked
//! and cleaned up. The next `backup` or `backup-cleanup` of the same deployment that finds a
//! journal whose process is gone unlocks exactly the jobs it lists (with
//! `BBR_AFTER_BACKUP_SCRIPTS_SUCCESSFUL=false`), removes the listed artifact directories, and
//! reports what it did.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// One locked job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockedJob {
    /// `<group>/<id>`.
    pub instance: String,
    /// Job name.
    pub job: String,
}

/// What a run has done so far that must be undone if it dies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Journal {
    /// Deployment name.
    pub deployment: String,
    /// Process id of the run.
    pub pid: u32,
    /// Host name of the machine the run was on (journals in a store come from any jumpbox).
    #[serde(default)]
    pub host: String,
    /// When the run started.
    pub started_at: DateTime<Utc>,
    /// Jobs whose lock script was started.
    pub locked: Vec<LockedJob>,
    /// Instances (`<group>/<id>`) where `/var/vcap/store/bbr-backup` was created.
    pub artifact_roots: Vec<String>,
}

/// Where a deployment's journal lives.
#[derive(Debug, Clone)]
pub struct JournalFile {
    path: PathBuf,
}

impl JournalFile {
    /// The journal of `deployment` under `state_dir`.
    #[must_use]
    pub fn new(state_dir: &Path, deployment: &str) -> JournalFile {
        let name: String = deployment
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        JournalFile {
            path: state_dir.join(format!("{name}.journal.json")),
        }
    }

    /// `CAIRN_STATE_DIR`, else `$XDG_STATE_HOME/cairn`, else `~/.local/state/cairn`.
    #[must_use]
    pub fn default_state_dir() -> PathBuf {
        if let Some(dir) = std::env::var_os("CAIRN_STATE_DIR") {
            return PathBuf::from(dir);
        }
        if let Some(dir) = std::env::var_os("XDG_STATE_HOME") {
            return PathBuf::from(dir).join("cairn");
        }
        std::env::home_dir()
            .unwrap_or_else(|| PathBuf::from("/var/lib"))
            .join(".local/state/cairn")
    }

    /// The file.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the journal, if there is a readable one.
    #[must_use]
    pub fn read(&self) -> Option<Journal> {
        let text = std::fs::read_to_string(&self.path).ok()?;
        serde_json::from_str(&text).ok()
    }

    /// Writes the journal atomically (mode 0600).
    ///
    /// # Errors
    /// The I/O error, naming the file.
    pub fn write(&self, journal: &Journal) -> std::io::Result<()> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        if let Some(parent) = self.path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let temporary = self.path.with_extension("tmp");
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&temporary)?;
        file.write_all(
            serde_json::to_string_pretty(journal)
                .expect("journal serializes")
                .as_bytes(),
        )?;
        file.sync_all()?;
        std::fs::rename(&temporary, &self.path).map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("writing journal `{}`: {e}", self.path.display()),
            )
        })
    }

    /// Removes the journal (a missing one is fine).
    pub fn remove(&self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// This machine's host name (`/proc/sys/kernel/hostname`), for journals kept in a store.
#[must_use]
pub fn this_host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default()
}

/// Key of a run's journal in a store: `<deployment>/journal/<host>-<pid>.json` (not a backup
/// id, so `backups list` and prune never see it).
#[must_use]
pub fn store_key(deployment: &str, host: &str, pid: u32) -> String {
    let host: String = host
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{deployment}/journal/{host}-{pid}.json")
}

/// True when `pid` is a running process (not a zombie).
#[must_use]
pub fn process_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            stat.rsplit_once(") ")
                .map(|(_, rest)| !rest.starts_with('Z'))
        })
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journals_round_trip_and_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let file = JournalFile::new(dir.path(), "cf/prod");
        assert!(file.read().is_none());
        let journal = Journal {
            deployment: "cf/prod".into(),
            pid: 42,
            host: "jumpbox".into(),
            started_at: Utc::now(),
            locked: vec![LockedJob {
                instance: "db/0".into(),
                job: "pg".into(),
            }],
            artifact_roots: vec!["db/0".into()],
        };
        file.write(&journal).unwrap();
        assert_eq!(file.read(), Some(journal));
        assert!(file.path().ends_with("cf_prod.journal.json"));
        assert_eq!(
            std::fs::metadata(file.path()).unwrap().permissions().mode() & 0o777,
            0o600
        );
        file.remove();
        assert!(file.read().is_none());
    }

    #[test]
    fn store_keys_are_not_backup_ids() {
        assert_eq!(store_key("cf", "jump box", 7), "cf/journal/jump_box-7.json");
    }

    #[test]
    fn liveness_comes_from_proc() {
        assert!(process_alive(std::process::id()));
        assert!(!process_alive(u32::MAX - 1));
    }
}
