//! The run journal: what a run has locked and created, written *before* each lock, each remote
//! artifact directory and each temporary SSH user, so that a run killed with SIGKILL (or a lost
//! jumpbox) can be undone by the next one.
//!
//! SIGINT and SIGTERM are handled in-process; SIGKILL cannot be. Every command that locks or
//! creates something keeps a journal: `backup`, `restore`, a drill's backup and restore, the
//! two clean-ups, and — in deployment mode, where even `pre-backup-check` and `restore --plan`
//! have the Director create a `bosh_` user — every command. Each run has its own file in the
//! local state directory (`CAIRN_STATE_DIR`, else `$XDG_STATE_HOME/cairn`, else
//! `~/.local/state/cairn`): `<deployment>.<pid>.journal.json` (mode 0600, written atomically),
//! removed once the run has unlocked, cleaned up and removed its user. Versions before the
//! format field wrote one `<deployment>.journal.json`; it is read the same way.
//!
//! # Format
//! JSON, one object ([`Journal`]). `format` is [`JOURNAL_FORMAT`]; a file without it is format
//! 1 (backups only: `locked`, `artifact_roots`), and every field added since has a default, so
//! old files still read and recover. Readers ignore fields they do not know. Fields:
//! - `kind`: the command ([`JournalKind`]);
//! - `deployment`, `pid`, `host`, `started_at`, and for liveness `process_start` (field 22 of
//!   `/proc/<pid>/stat`, clock ticks since boot) and `boot_id`;
//! - `locked`: each job whose lock script was started, with `lock`: `backup` (undone by
//!   `post-backup-unlock` with `BBR_AFTER_BACKUP_SCRIPTS_SUCCESSFUL=false`) or `restore`
//!   (`post-restore-unlock`); absent in format 1, meaning `backup`;
//! - `artifact_roots`: instances where `/var/vcap/store/bbr-backup` was (about to be) created;
//! - `ssh_users`: each temporary user asked of a Director ([`TemporaryUser`]: user name, Director
//!   URL, deployment, instance groups and ids), written before the Director is asked;
//! - `resumable_backup`: a resumable backup (`backup --resumable`, [`ResumableBackup`]): its id,
//!   start time, where it is stored and every segment stored so far, per artifact, written as
//!   each segment is completed. It is the one entry the next run does not undo by itself: its
//!   locks and users are undone, but the staged artifact directories stay and the entry is kept
//!   for `backup --resume` (which adopts it into its own journal) until `backup-cleanup`
//!   discards the backup or a resume completes it;
//! - `repository_backup`: a backup into a repository (`repo+` store, [`RepositoryBackupRef`]:
//!   its URL and id), written before its first artifact snapshot and cleared once the backup
//!   is complete or its snapshots were deleted. The next run deletes the snapshots tagged with
//!   that id unless the backup's record snapshot is there (it completed).
//!
//! # Liveness
//! A journal's run is alive when its host is this host, `/proc/<pid>` exists and is not a
//! zombie, and the process's start time equals the recorded one ([`Liveness`]); a PID that was
//! reused by another process has another start time, and a journal of an earlier boot another
//! boot id. A format-1 journal has no start time: its PID alone decides.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub use crate::format::sink::RepositoryBackupRef;
pub use crate::model::deployment::TemporaryUser;
use crate::model::job::ScriptName;

/// The journal format this version writes.
pub const JOURNAL_FORMAT: u32 = 2;

/// Which command a journal belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum JournalKind {
    /// `backup` (format-1 journals, which have no kind, are backups).
    #[default]
    Backup,
    /// `restore`.
    Restore,
    /// The restore of a drill (its backup is journaled as a `backup`).
    Drill,
    /// `backup-cleanup`.
    BackupCleanup,
    /// `restore-cleanup`.
    RestoreCleanup,
    /// `pre-backup-check` (journals only the temporary user of deployment mode).
    PreBackupCheck,
    /// `restore --plan` (journals only the temporary user of deployment mode).
    RestorePlan,
    /// A kind written by a later version.
    #[serde(other)]
    Other,
}

impl JournalKind {
    /// The command's name, for messages.
    #[must_use]
    pub fn command(self) -> &'static str {
        match self {
            JournalKind::Backup => "backup",
            JournalKind::Restore => "restore",
            JournalKind::Drill => "drill",
            JournalKind::BackupCleanup => "backup-cleanup",
            JournalKind::RestoreCleanup => "restore-cleanup",
            JournalKind::PreBackupCheck => "pre-backup-check",
            JournalKind::RestorePlan => "restore --plan",
            JournalKind::Other => "run",
        }
    }
}

/// Which lock a job holds, and so which script undoes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LockKind {
    /// `pre-backup-lock`, undone by `post-backup-unlock` (format-1 journals hold only these).
    #[default]
    Backup,
    /// `pre-restore-lock`, undone by `post-restore-unlock`.
    Restore,
}

impl LockKind {
    /// The lock script.
    #[must_use]
    pub fn lock_script(self) -> ScriptName {
        match self {
            LockKind::Backup => ScriptName::PreBackupLock,
            LockKind::Restore => ScriptName::PreRestoreLock,
        }
    }

    /// The script that undoes the lock.
    #[must_use]
    pub fn unlock_script(self) -> ScriptName {
        match self {
            LockKind::Backup => ScriptName::PostBackupUnlock,
            LockKind::Restore => ScriptName::PostRestoreUnlock,
        }
    }

    /// The clean-up subcommand that runs that script on every job.
    #[must_use]
    pub fn cleanup_command(self) -> &'static str {
        match self {
            LockKind::Backup => "backup-cleanup",
            LockKind::Restore => "restore-cleanup",
        }
    }

    /// The lock kind of a lock script, if it is one.
    #[must_use]
    pub fn of(script: ScriptName) -> Option<LockKind> {
        match script {
            ScriptName::PreBackupLock => Some(LockKind::Backup),
            ScriptName::PreRestoreLock => Some(LockKind::Restore),
            _ => None,
        }
    }
}

/// One locked job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockedJob {
    /// `<group>/<id>`.
    pub instance: String,
    /// Job name.
    pub job: String,
    /// Which lock (absent in format 1: a backup lock).
    #[serde(default)]
    pub lock: LockKind,
}

/// What a run has done so far that must be undone if it dies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Journal {
    /// [`JOURNAL_FORMAT`] when written; 1 for files that predate the field.
    #[serde(default = "format_one")]
    pub format: u32,
    /// The command.
    #[serde(default)]
    pub kind: JournalKind,
    /// Deployment name.
    pub deployment: String,
    /// Process id of the run.
    pub pid: u32,
    /// Host name of the machine the run was on (journals in a store come from any jumpbox).
    #[serde(default)]
    pub host: String,
    /// When the run started.
    pub started_at: DateTime<Utc>,
    /// Start time of the process (field 22 of `/proc/<pid>/stat`), to tell a reused PID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process_start: Option<u64>,
    /// `/proc/sys/kernel/random/boot_id` of the run's boot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_id: Option<String>,
    /// Jobs whose lock script was started.
    #[serde(default)]
    pub locked: Vec<LockedJob>,
    /// Instances (`<group>/<id>`) where `/var/vcap/store/bbr-backup` was created.
    #[serde(default)]
    pub artifact_roots: Vec<String>,
    /// Temporary SSH users asked of a Director, recorded before the request.
    #[serde(default)]
    pub ssh_users: Vec<TemporaryUser>,
    /// A resumable backup that was started and not finished; see the module documentation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resumable_backup: Option<ResumableBackup>,
    /// A backup into a repository whose snapshots a killed run may have left; see the module
    /// documentation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository_backup: Option<RepositoryBackupRef>,
}

/// A resumable backup's entry in the run journal: what `backup --resume` needs to finish it
/// under its original id, and what `backup-cleanup` removes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResumableBackup {
    /// The backup's id (`YYYYMMDDTHHMMSSZ`).
    pub backup_id: String,
    /// When the backup started (its id and its manifest's start time).
    pub started_at: DateTime<Utc>,
    /// Where it is stored (`<store>/<deployment>/<id>`): a resume must give the same store.
    pub location: String,
    /// Every segment stored so far, by artifact key, in order.
    #[serde(default)]
    pub segments: crate::format::sink::StoredSegments,
    /// How the segments were written (compression, recipients): a resume must match it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub written_as: Option<String>,
}

fn format_one() -> u32 {
    1
}

impl Journal {
    /// A new, empty journal of this process.
    #[must_use]
    pub fn new(kind: JournalKind, deployment: &str) -> Journal {
        let pid = std::process::id();
        Journal {
            format: JOURNAL_FORMAT,
            kind,
            deployment: deployment.to_string(),
            pid,
            host: this_host(),
            started_at: Utc::now(),
            process_start: process_start(pid),
            boot_id: boot_id(),
            locked: Vec::new(),
            artifact_roots: Vec::new(),
            ssh_users: Vec::new(),
            resumable_backup: None,
            repository_backup: None,
        }
    }

    /// True when nothing is listed to undo.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.locked.is_empty()
            && self.artifact_roots.is_empty()
            && self.ssh_users.is_empty()
            && self.repository_backup.is_none()
    }

    /// The clean-up subcommand that undoes everything listed: `restore-cleanup` when a job holds
    /// a restore lock, else `backup-cleanup` (which also removes directories and users).
    #[must_use]
    pub fn cleanup_command(&self) -> &'static str {
        if self.locked.iter().any(|l| l.lock == LockKind::Restore) {
            LockKind::Restore.cleanup_command()
        } else {
            LockKind::Backup.cleanup_command()
        }
    }

    /// What the journal lists, for messages: `2 job(s) locked for restore (db/0 postgres, ...),
    /// artifact directories on db/0, SSH user bosh_... on db/0, app/0`.
    #[must_use]
    pub fn listing(&self) -> String {
        let mut parts = Vec::new();
        for kind in [LockKind::Backup, LockKind::Restore] {
            let jobs: Vec<String> = self
                .locked
                .iter()
                .filter(|l| l.lock == kind)
                .map(|l| format!("{} on {}", l.job, l.instance))
                .collect();
            if !jobs.is_empty() {
                let what = match kind {
                    LockKind::Backup => "backup",
                    LockKind::Restore => "restore",
                };
                parts.push(format!(
                    "{} job(s) locked for {what} ({})",
                    jobs.len(),
                    jobs.join(", ")
                ));
            }
        }
        if !self.artifact_roots.is_empty() {
            parts.push(format!(
                "/var/vcap/store/bbr-backup on {}",
                self.artifact_roots.join(", ")
            ));
        }
        for user in &self.ssh_users {
            parts.push(format!(
                "SSH user {} on {} (Director {})",
                user.user,
                user.instance_list(),
                user.director
            ));
        }
        if let Some(entry) = &self.repository_backup {
            parts.push(format!(
                "the artifact snapshots of backup {}/{} in {} (incomplete unless its record snapshot is there)",
                self.deployment, entry.backup_id, entry.store
            ));
        }
        if parts.is_empty() {
            "nothing".to_string()
        } else {
            parts.join("; ")
        }
    }

    /// `backup of cf (pid 42 on jumpbox, started ...)`.
    #[must_use]
    pub fn origin(&self) -> String {
        format!(
            "{} of {} (pid {} on {}, started {})",
            self.kind.command(),
            self.deployment,
            self.pid,
            if self.host.is_empty() {
                "this machine"
            } else {
                &self.host
            },
            self.started_at
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        )
    }
}

/// Whether the run that wrote a journal is still going.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    /// This very process.
    ThisRun,
    /// Another process on this machine, still running.
    Running,
    /// Gone: no such process, a zombie, another process with the same PID (another start
    /// time), or an earlier boot.
    Dead,
    /// A run on another machine (journals in a store): cannot be known from here.
    OtherHost,
}

/// How a process on this machine looks now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessState {
    /// Running or sleeping (not a zombie).
    pub running: bool,
    /// Field 22 of `/proc/<pid>/stat`.
    pub start: Option<u64>,
}

/// The liveness of `journal`'s run, looking processes up with `probe` (`None`: no process).
#[must_use]
pub fn liveness_with(journal: &Journal, probe: &dyn Fn(u32) -> Option<ProcessState>) -> Liveness {
    let here = this_host();
    if !journal.host.is_empty() && journal.host != here {
        return Liveness::OtherHost;
    }
    if let (Some(recorded), Some(now)) = (&journal.boot_id, boot_id()) {
        if *recorded != now {
            return Liveness::Dead;
        }
    }
    let Some(state) = probe(journal.pid) else {
        return Liveness::Dead;
    };
    if !state.running {
        return Liveness::Dead;
    }
    if let (Some(recorded), Some(now)) = (journal.process_start, state.start) {
        if recorded != now {
            return Liveness::Dead;
        }
    }
    if journal.pid == std::process::id() {
        Liveness::ThisRun
    } else {
        Liveness::Running
    }
}

/// The liveness of `journal`'s run, from `/proc`.
#[must_use]
pub fn liveness(journal: &Journal) -> Liveness {
    liveness_with(journal, &process_state)
}

/// `/proc/<pid>/stat` of a process, if there is one.
#[must_use]
pub fn process_state(pid: u32) -> Option<ProcessState> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces and parentheses.
    let (_, rest) = stat.rsplit_once(") ")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some(ProcessState {
        running: fields
            .first()
            .is_some_and(|state| *state != "Z" && *state != "X"),
        // `rest` starts at field 3 (state): field 22 is its 20th.
        start: fields.get(19).and_then(|s| s.parse().ok()),
    })
}

/// The start time of process `pid` (field 22 of `/proc/<pid>/stat`).
#[must_use]
pub fn process_start(pid: u32) -> Option<u64> {
    process_state(pid).and_then(|state| state.start)
}

/// True when `pid` is a running process (not a zombie).
#[must_use]
pub fn process_alive(pid: u32) -> bool {
    process_state(pid).is_some_and(|state| state.running)
}

fn boot_id() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .map(|id| id.trim().to_string())
        .filter(|id| !id.is_empty())
}

/// A run's journal in the local state directory.
#[derive(Debug, Clone)]
pub struct JournalFile {
    dir: PathBuf,
    deployment: String,
    kind: JournalKind,
    path: PathBuf,
}

/// A journal found in the state directory, with its file.
#[derive(Debug, Clone)]
pub struct FoundJournal {
    /// The file.
    pub path: PathBuf,
    /// What it lists.
    pub journal: Journal,
}

impl FoundJournal {
    /// Removes the file (a missing one is fine).
    pub fn remove(&self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

impl JournalFile {
    /// This process's journal of a `kind` run of `deployment` under `state_dir`.
    #[must_use]
    pub fn new(state_dir: &Path, deployment: &str) -> JournalFile {
        JournalFile {
            dir: state_dir.to_path_buf(),
            deployment: deployment.to_string(),
            kind: JournalKind::Backup,
            path: state_dir.join(format!(
                "{}.{}.journal.json",
                file_name_part(deployment),
                std::process::id()
            )),
        }
    }

    /// The same file for a `kind` run.
    #[must_use]
    pub fn with_kind(mut self, kind: JournalKind) -> JournalFile {
        self.kind = kind;
        self
    }

    /// This process's journal of another deployment, in the same directory (a drill restores
    /// into another deployment than it backs up).
    #[must_use]
    pub fn for_deployment(&self, deployment: &str, kind: JournalKind) -> JournalFile {
        JournalFile::new(&self.dir, deployment).with_kind(kind)
    }

    /// The command this journal is for.
    #[must_use]
    pub fn kind(&self) -> JournalKind {
        self.kind
    }

    /// The deployment this journal is for.
    #[must_use]
    pub fn deployment(&self) -> &str {
        &self.deployment
    }

    /// `CAIRN_STATE_DIR`, else `$XDG_STATE_HOME/cairn`, else `~/.local/state/cairn`.
    #[must_use]
    pub fn default_state_dir() -> PathBuf {
        if let Some(dir) = std::env::var_os("CAIRN_STATE_DIR").filter(|d| !d.is_empty()) {
            return PathBuf::from(dir);
        }
        if let Some(dir) = std::env::var_os("XDG_STATE_HOME").filter(|d| !d.is_empty()) {
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

    /// Reads this run's journal, if there is a readable one.
    #[must_use]
    pub fn read(&self) -> Option<Journal> {
        read_journal(&self.path)
    }

    /// Every journal of this deployment in the directory — this run's own file included when
    /// it holds another run's journal — whose run is not this one; oldest first. Unreadable
    /// files are skipped with a warning.
    #[must_use]
    pub fn left_behind(&self) -> Vec<FoundJournal> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut found: Vec<FoundJournal> = entries
            .flatten()
            .map(|entry| entry.path())
            .filter(|path| {
                path.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.ends_with(".journal.json"))
            })
            .filter_map(|path| {
                let Some(journal) = read_journal(&path) else {
                    tracing::warn!(
                        "Cannot read the run journal {} (unreadable, not a journal, or larger than 64 MiB); leaving it alone",
                        path.display()
                    );
                    return None;
                };
                (journal.deployment == self.deployment && liveness(&journal) != Liveness::ThisRun)
                    .then_some(FoundJournal { path, journal })
            })
            .collect();
        found.sort_by_key(|f| f.journal.started_at);
        found
    }

    /// Writes the journal atomically (mode 0600), creating the directory.
    ///
    /// # Errors
    /// The I/O error.
    pub fn write(&self, journal: &Journal) -> std::io::Result<()> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::create_dir_all(&self.dir)?;
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
        std::fs::rename(&temporary, &self.path)
    }

    /// Removes the journal (a missing one is fine).
    pub fn remove(&self) {
        let _ = std::fs::remove_file(&self.path);
    }

    /// Before a run's first write: a file already at this run's path is another run's (a
    /// dead process whose PID this one reuses), so it is renamed aside, where
    /// [`JournalFile::left_behind`] still finds it, instead of being overwritten.
    ///
    /// # Errors
    /// The rename failed.
    pub fn move_aside_existing(&self) -> std::io::Result<()> {
        if !self.path.exists() {
            return Ok(());
        }
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let name = format!(
            "{}.{}.earlier-{nanos}.journal.json",
            file_name_part(&self.deployment),
            std::process::id()
        );
        std::fs::rename(&self.path, self.dir.join(name))
    }
}

/// The most of a journal file read (64 MiB): Cairn's are a few KiB.
const JOURNAL_LIMIT: u64 = 64 << 20;

/// A journal file, when it is one: JSON of at most [`JOURNAL_LIMIT`] bytes (a larger file is
/// not read past the limit).
fn read_journal(path: &Path) -> Option<Journal> {
    use std::io::Read;
    let mut data = Vec::new();
    std::fs::File::open(path)
        .ok()?
        .take(JOURNAL_LIMIT + 1)
        .read_to_end(&mut data)
        .ok()?;
    if data.len() as u64 > JOURNAL_LIMIT {
        return None;
    }
    serde_json::from_slice(&data).ok()
}

/// A deployment name as part of a file name.
fn file_name_part(deployment: &str) -> String {
    deployment
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect()
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

#[cfg(test)]
mod tests {
    use super::*;

    fn journal(pid: u32) -> Journal {
        Journal {
            pid,
            ..Journal::new(JournalKind::Restore, "cf/prod")
        }
    }

    #[test]
    fn a_journal_file_larger_than_the_record_limit_is_not_read() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let file = JournalFile::new(dir.path(), "cf/prod");
        let written = journal(std::process::id());
        file.write(&written).unwrap();
        assert_eq!(file.read(), Some(written.clone()));
        // Still valid JSON with trailing blanks, but past the limit: not read.
        let mut padded = std::fs::OpenOptions::new()
            .append(true)
            .open(file.path())
            .unwrap();
        let blanks = vec![b' '; 1 << 20];
        let length = std::fs::metadata(file.path()).unwrap().len();
        for _ in 0..=(JOURNAL_LIMIT - length) >> 20 {
            padded.write_all(&blanks).unwrap();
        }
        assert!(std::fs::metadata(file.path()).unwrap().len() > JOURNAL_LIMIT);
        assert!(file.read().is_none());
    }

    #[test]
    fn journals_round_trip_and_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let file = JournalFile::new(dir.path(), "cf/prod");
        assert!(file.read().is_none());
        let mut written = journal(std::process::id());
        written.locked.push(LockedJob {
            instance: "db/0".into(),
            job: "pg".into(),
            lock: LockKind::Restore,
        });
        written.artifact_roots.push("db/0".into());
        written.ssh_users.push(TemporaryUser {
            user: "bosh_0123456789abcde".into(),
            director: "https://10.0.0.6:25555".into(),
            deployment: "cf/prod".into(),
            groups: vec![("db".into(), vec!["uuid-1".into()])],
        });
        file.write(&written).unwrap();
        assert_eq!(file.read(), Some(written));
        let name = file.path().file_name().unwrap().to_str().unwrap();
        assert_eq!(name, format!("cf_prod.{}.journal.json", std::process::id()));
        assert_eq!(
            std::fs::metadata(file.path()).unwrap().permissions().mode() & 0o777,
            0o600
        );
        file.remove();
        assert!(file.read().is_none());
    }

    #[test]
    fn a_format_one_journal_reads_as_a_backup_with_backup_locks() {
        // Exactly what the first version wrote (`<deployment>.journal.json`).
        let old = r#"{
  "deployment": "cf",
  "pid": 4194303,
  "host": "jumpbox",
  "started_at": "2026-11-30T10:00:00Z",
  "locked": [{"instance": "db/0", "job": "pg"}],
  "artifact_roots": ["db/0"]
}"#;
        let read: Journal = serde_json::from_str(old).unwrap();
        assert_eq!(read.format, 1);
        assert_eq!(read.kind, JournalKind::Backup);
        assert_eq!(read.locked[0].lock, LockKind::Backup);
        assert_eq!(read.process_start, None);
        assert!(read.ssh_users.is_empty());
        assert_eq!(read.cleanup_command(), "backup-cleanup");
        // And a later version's unknown kind and fields do not make it unreadable.
        let newer = r#"{"format": 9, "kind": "scrub", "deployment": "cf", "pid": 1,
            "started_at": "2026-11-30T10:00:00Z", "future": true}"#;
        let read: Journal = serde_json::from_str(newer).unwrap();
        assert_eq!(read.kind, JournalKind::Other);
    }

    #[test]
    fn left_behind_finds_every_journal_of_the_deployment_but_this_run_s() {
        let dir = tempfile::tempdir().unwrap();
        let mine = JournalFile::new(dir.path(), "cf");
        mine.write(&Journal::new(JournalKind::Backup, "cf"))
            .unwrap();
        let legacy = dir.path().join("cf.journal.json");
        std::fs::write(
            &legacy,
            r#"{"deployment":"cf","pid":4194303,"started_at":"2026-11-30T10:00:00Z","locked":[],"artifact_roots":["db/0"]}"#,
        )
        .unwrap();
        let other = JournalFile::new(dir.path(), "cf-other");
        other.write(&journal(4_194_302)).unwrap();
        std::fs::write(dir.path().join("garbage.journal.json"), "{").unwrap();
        let found = mine.left_behind();
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].path, legacy);
        assert_eq!(found[0].journal.artifact_roots, vec!["db/0"]);
    }

    #[test]
    fn store_keys_are_not_backup_ids() {
        assert_eq!(store_key("cf", "jump box", 7), "cf/journal/jump_box-7.json");
    }

    #[test]
    fn the_start_time_is_field_22_of_proc_stat() {
        let me = process_state(std::process::id()).expect("this process");
        assert!(me.running);
        let start = me.start.expect("a start time");
        // A child started later has a later (or equal, within a tick) start time.
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        let child_start = process_start(child.id()).expect("the child's start time");
        assert!(child_start >= start, "{child_start} < {start}");
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(process_state(child.id()).is_none());
        assert!(!process_alive(u32::MAX - 1));
    }

    #[test]
    fn liveness_is_pid_and_start_time_and_host() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = child.id();
        let mut running = journal(pid);
        running.process_start = process_start(pid);
        assert!(running.process_start.is_some());
        assert_eq!(liveness(&running), Liveness::Running);
        // The same PID with another start time: the PID was reused, the run is dead.
        let mut reused = running.clone();
        reused.process_start = running.process_start.map(|s| s + 1);
        assert_eq!(liveness(&reused), Liveness::Dead);
        // A format-1 journal (no start time) goes by the PID alone.
        let mut legacy = running.clone();
        legacy.process_start = None;
        legacy.boot_id = None;
        assert_eq!(liveness(&legacy), Liveness::Running);
        // An earlier boot.
        let mut earlier_boot = running.clone();
        earlier_boot.boot_id = Some("another-boot".into());
        assert_eq!(liveness(&earlier_boot), Liveness::Dead);
        // Another machine cannot be known from here.
        let mut elsewhere = running.clone();
        elsewhere.host = format!("{}-other", this_host());
        assert_eq!(liveness(&elsewhere), Liveness::OtherHost);
        // This very process.
        assert_eq!(
            liveness(&Journal::new(JournalKind::Backup, "cf")),
            Liveness::ThisRun
        );
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(liveness(&running), Liveness::Dead);
        // A zombie is dead.
        let zombie = |_: u32| {
            Some(ProcessState {
                running: false,
                start: running.process_start,
            })
        };
        assert_eq!(liveness_with(&running, &zombie), Liveness::Dead);
    }
}
