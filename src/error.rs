//! Errors of a Cairn run, and how they map to bbr's exit-code bitmask.
//!
//! bbr does not stop at the first error: a backup that fails to lock still unlocks and cleans
//! up, and every error met along the way is reported. The exit code ORs one bit per kind of
//! error (bbr-facts §1.4): 1 for anything general, 4 for a failed `pre-backup-lock`, 8 for a
//! failed unlock script, 16 for a failed clean-up step. [`RunErrors`] is that list, and
//! [`Error::exit_bit`] is the kind of each entry.

use std::fmt;

use crate::model::job::{InstanceName, ScriptName};

/// bbr's exit-code bits (bbr-facts §1.4); a run's code ORs the bits of its errors.
pub mod exit_bit {
    /// Anything general: scripts, transfers, checksums, usage, interruption.
    pub const GENERAL: i32 = 1;
    /// `pre-backup-lock` failed.
    pub const LOCK: i32 = 4;
    /// An unlock script failed.
    pub const UNLOCK: i32 = 8;
    /// A clean-up step failed.
    pub const CLEANUP: i32 = 16;
}

/// One thing that went wrong during a run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A job script exited non-zero.
    #[error("Error attempting to run {script} for job {job} on {instance}: {stderr} - exit code {status}")]
    ScriptFailed {
        /// The instance the script ran on.
        instance: InstanceName,
        /// The job the script belongs to.
        job: String,
        /// Which script.
        script: ScriptName,
        /// Its exit status.
        status: u32,
        /// The end of its standard error, trimmed.
        stderr: String,
    },
    /// A `metadata` script exited non-zero during discovery (bbr's message,
    /// `instance/job_finder.go`).
    #[error("An error occurred while running metadata script for job {job} on {instance}: {stderr} - exit code {status}")]
    MetadataFailed {
        /// The instance the script ran on.
        instance: InstanceName,
        /// The job the script belongs to.
        job: String,
        /// Its exit status.
        status: u32,
        /// The end of its standard error, trimmed.
        stderr: String,
    },
    /// A `metadata` script printed more than it may ([`crate::remote::script::METADATA_STDOUT_LIMIT`]):
    /// its stdout is parsed, so it is refused rather than kept.
    #[error("The metadata script of job {job} on {instance} printed more than {limit} bytes to stdout; bbr job metadata is a short YAML document: fix the job's bin/bbr/metadata script")]
    MetadataTooLarge {
        /// The instance the script ran on.
        instance: InstanceName,
        /// The job the script belongs to.
        job: String,
        /// The limit in bytes.
        limit: usize,
    },
    /// A job script ran longer than its time limit (`--script-timeout`, the config file's
    /// `[timeouts]`, or metadata's built-in limit) and was ended.
    #[error("Error attempting to run {script} for job {job} on {instance}: it did not finish within {seconds} s ({setting}) and was sent SIGTERM")]
    ScriptTimedOut {
        /// The instance the script ran on.
        instance: InstanceName,
        /// The job the script belongs to.
        job: String,
        /// Which script.
        script: ScriptName,
        /// The limit.
        seconds: u64,
        /// The setting that gave the limit ([`crate::model::timeouts::ScriptLimit::setting`]).
        setting: String,
    },
    /// No byte moved on an artifact's stream for `--stall-timeout`: the stream was stopped and
    /// the instance's connection dropped (the next command reconnects).
    #[error("No data moved {direction} {instance} for job {job} for {seconds} s: the copy was stopped and the connection dropped; check the network, or raise --stall-timeout (or `stall` under [timeouts.jobs.{job}] in the config file for this job alone)")]
    TransferStalled {
        /// The instance.
        instance: InstanceName,
        /// The job whose artifact was being copied.
        job: String,
        /// `from` (backup) or `to` (restore).
        direction: &'static str,
        /// The limit.
        seconds: u64,
    },
    /// A run on another machine left a journal in the store.
    #[error("A backup of {deployment} from {host} (pid {pid}, started {started_at}) left a run journal in the store listing {locked} locked job(s): it may still be running. If it is not, run `cairn deployment ... backup-cleanup` with the same store (CAIRN_STORE), which unlocks every job and clears the journal")]
    ForeignJournal {
        /// Deployment name.
        deployment: String,
        /// The other machine.
        host: String,
        /// Its process.
        pid: u32,
        /// When it started.
        started_at: String,
        /// How many jobs it had locked.
        locked: usize,
    },
    /// The run journal cannot be written, so the run stops before it locks or creates anything.
    #[error("Cannot write the run journal `{path}`: {detail}. Nothing was locked or created. Make that directory writable, or set CAIRN_STATE_DIR to a writable directory, and run the command again")]
    JournalWrite {
        /// The journal file.
        path: String,
        /// The I/O error.
        detail: String,
    },
    /// Another prune (or a restic command) holds a lock on the repository.
    #[error("The repository {store} is locked by {holder}: two prunes of one repository must not run at once. Run this prune again once that one has ended (a lock is stale, and then removed, 30 minutes after its last refresh, or at once when its process on this host is gone)")]
    RepositoryLocked {
        /// The `repo+` URL.
        store: String,
        /// Who holds the lock, since when.
        holder: String,
    },
    /// The artifact snapshots a killed backup left in a repository could not be deleted.
    #[error("Cannot delete the artifact snapshots that the killed backup {deployment}/{backup_id} left in {store}: {detail}. They are never listed complete; run the command again once the repository can be opened, or delete them with `cairn backups --store {store} delete {deployment}/{backup_id}`")]
    LeftoverSnapshots {
        /// Deployment name.
        deployment: String,
        /// The killed backup's id.
        backup_id: String,
        /// The `repo+` URL.
        store: String,
        /// Why they were not deleted.
        detail: String,
    },
    /// A temporary SSH user that a killed run left could not be removed.
    #[error("The SSH user {user} that a killed run asked of Director {director} is still on deployment {deployment}'s instances: {detail}. Run `cairn deployment --target {director} --deployment {deployment} backup-cleanup` (with that Director's credentials) to remove it")]
    LeftoverUser {
        /// The user.
        user: String,
        /// The Director that created it.
        director: String,
        /// The deployment.
        deployment: String,
        /// Why it was not removed.
        detail: String,
    },
    /// The connection to the instance failed while a job script ran.
    #[error("Error attempting to run {script} for job {job} on {instance}: {detail}")]
    ScriptLost {
        /// The instance the script ran on.
        instance: InstanceName,
        /// The job the script belongs to.
        job: String,
        /// Which script.
        script: ScriptName,
        /// The transport error.
        detail: String,
    },
    /// A job that declares a streaming backup (`cairn: {stream: [backup]}`) wrote nothing to
    /// stdout, or wrote into its artifact directory instead (scripts-contract, "Streaming").
    #[error("Job {job} on {instance} declares a streaming backup (metadata `cairn: {{stream: [backup]}}`) but {what}; with CAIRN_STREAM=1 its backup script must write the artifact to stdout, or drop `backup` from `cairn.stream`")]
    StreamMisused {
        /// The instance.
        instance: InstanceName,
        /// The job.
        job: String,
        /// What it did instead: `wrote nothing to stdout`, `wrote into ...`.
        what: String,
    },
    /// A remote command other than a job script failed.
    #[error("{action} on {instance} failed: {detail}")]
    RemoteCommand {
        /// The instance the command ran on.
        instance: InstanceName,
        /// What Cairn was doing, e.g. `Finding scripts`.
        action: String,
        /// The remote error or exit status and stderr.
        detail: String,
    },
    /// The SSH transport failed.
    #[error(transparent)]
    Remote(#[from] crate::remote::RemoteError),
    /// `metadata` printed YAML that is not bbr job metadata.
    #[error("Parsing metadata from job {job} on {instance} failed: {detail}")]
    BadJobMetadata {
        /// The instance.
        instance: InstanceName,
        /// The job.
        job: String,
        /// What was wrong.
        detail: String,
    },
    /// A restore was asked of an instance whose job declares `restore_name`.
    #[error("discontinued metadata keys backup_name/restore_name found on instance {group}. bbr cannot restore this backup artifact.")]
    DiscontinuedRestoreName {
        /// The instance group.
        group: String,
    },
    /// `/var/vcap/store/bbr-backup` exists on an instance before a backup or restore.
    #[error("Directory /var/vcap/store/bbr-backup already exists on instance {instance}")]
    ArtifactDirExists {
        /// The instance.
        instance: InstanceName,
    },
    /// The deployment has no job with a `backup` script.
    #[error("Deployment '{deployment}' has no backup scripts")]
    NoBackupScripts {
        /// Deployment name.
        deployment: String,
    },
    /// The deployment has no job with a `restore` script.
    #[error("Deployment '{deployment}' has no restore scripts")]
    NoRestoreScripts {
        /// Deployment name.
        deployment: String,
    },
    /// The artifacts of an instance do not fit in the free space under `/var/vcap/store`
    /// (a restore extracts them there before any script runs).
    #[error("Instance {instance} has {} free under /var/vcap/store (file system {mount}), but the artifacts to restore there need {}", size_text(*.available), size_text(*.needed))]
    InsufficientSpace {
        /// The instance.
        instance: InstanceName,
        /// Bytes the artifacts take once extracted.
        needed: u64,
        /// Bytes free.
        available: u64,
        /// Mount point of the file system.
        mount: String,
    },
    /// The lock-ordering metadata forms a cycle.
    #[error("job locking dependency graph is cyclic")]
    CyclicLockGraph,
    /// The target does not have the groups and indices the backup was taken from.
    #[error(
        "Deployment '{deployment}' does not match the structure of the provided backup: {detail}"
    )]
    StructureMismatch {
        /// Deployment name.
        deployment: String,
        /// Which instance or artifact is missing.
        detail: String,
    },
    /// Digests of transferred files do not match.
    #[error("Backup is corrupted, checksum failed for {instance} {job} - checksums don't match for [{files}]. Checksum failed for {count} files in total")]
    ChecksumMismatch {
        /// The instance.
        instance: InstanceName,
        /// The job or artifact name.
        job: String,
        /// The first mismatching file names, comma separated.
        files: String,
        /// How many files mismatch.
        count: usize,
    },
    /// The local artifact is missing, unreadable, unsafe or corrupt.
    #[error(transparent)]
    Artifact(#[from] crate::format::bbr_directory::ArtifactError),
    /// Removing what a run created failed.
    #[error("Deployment '{deployment}' failed while cleaning up with error: {detail}")]
    Cleanup {
        /// Deployment name.
        deployment: String,
        /// What failed.
        detail: String,
    },
    /// `--resumable` asked of a backup that cannot keep what it stored (a bbr directory).
    #[error("The backup at {location} cannot be resumable: --resumable applies to backups into a store (--store), not to a bbr directory (--artifact-path)")]
    NotResumable {
        /// Where the backup is.
        location: String,
    },
    /// A plain backup while a resumable one of the deployment is pending.
    #[error("A resumable backup of {deployment} is pending ({backup_id} in {location}, staged on the instances): finish it with `backup --resume` (same target and store), or discard it with `backup-cleanup`")]
    ResumablePending {
        /// Deployment name.
        deployment: String,
        /// The pending backup's id.
        backup_id: String,
        /// Where it is being stored.
        location: String,
    },
    /// `backup --resume` with no resumable backup pending.
    #[error("No resumable backup of {deployment} is pending (no run journal with one, on this machine or in the store); run `backup` (with --resumable to make it resumable)")]
    NothingToResume {
        /// Deployment name.
        deployment: String,
    },
    /// `backup --resume` into another store than the pending backup's.
    #[error("The pending resumable backup of {deployment} is stored at {recorded}, not at {given}; resume it with the same --store, or discard it with `backup-cleanup`")]
    ResumeElsewhere {
        /// Deployment name.
        deployment: String,
        /// Where the pending backup is.
        recorded: String,
        /// Where this run would store it.
        given: String,
    },
    /// `--resumable` with a job that streams its backup (nothing is staged to resume from).
    #[error("--resumable needs artifacts staged on the instances, but job {job} on {instance} streams its backup (CAIRN_STREAM); back up {deployment} without --resumable")]
    ResumableStreaming {
        /// Deployment name.
        deployment: String,
        /// Instance of the streaming job.
        instance: String,
        /// The streaming job.
        job: String,
    },
    /// The backup a drill took did not complete, though no step reported an error.
    #[error("The drill's backup did not complete; nothing was restored")]
    DrillBackupIncomplete,
    /// The operator interrupted the run.
    #[error("{operation} was interrupted by {signal}; locked jobs were unlocked and remote artifact directories removed")]
    Interrupted {
        /// `Backup` or `Restore`.
        operation: &'static str,
        /// `SIGINT` or `SIGTERM`.
        signal: String,
    },
    /// The operator interrupted a resumable backup's drain: what it staged and stored is kept.
    #[error("Backup was interrupted by {signal}; the jobs were unlocked, and the staged artifacts and stored segments were kept: finish the backup with `backup --resume`, or discard it with `backup-cleanup`")]
    InterruptedResumable {
        /// `SIGINT` or `SIGTERM`.
        signal: String,
    },
    /// The object store failed.
    #[error(transparent)]
    Store(#[from] cairn_store::StoreError),
    /// A backup in a store is missing, incomplete, damaged or cannot be read.
    #[error(transparent)]
    StoredBackup(#[from] StoredBackupError),
    /// A deduplicating repository (`repo+` store URL) cannot be created, opened or read.
    #[error(transparent)]
    Repository(#[from] cairn_repository::RepositoryError),
    /// A backup's signature is missing, untrusted, wrong or misplaced, or the store was
    /// rolled back (with `--trusted-key`); a key or the trust state cannot be used.
    #[error(transparent)]
    Signature(#[from] crate::format::signature::SignatureError),
    /// The inventory or another input is invalid.
    #[error(transparent)]
    Inventory(#[from] crate::target::inventory::InventoryError),
    /// The BOSH Director refused or failed a request.
    #[error(transparent)]
    Director(#[from] crate::target::bosh::BoshError),
    /// A name from the Director, an instance or a backup cannot become part of a file name
    /// (exit code 1, before anything is locked).
    #[error(transparent)]
    UnsafeName(#[from] crate::model::name::UnsafeName),
    /// Copying an artifact off an instance (or checking it) failed: bbr's `DrainError`, after
    /// which it advises `backup-cleanup`. The message is the inner error's.
    #[error(transparent)]
    Drain(Box<Error>),
}

/// `1.5 MiB (1572864 bytes)`.
fn size_text(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = None;
    while value >= 1024.0 && unit.is_none_or(|u| u + 1 < UNITS.len()) {
        value /= 1024.0;
        unit = Some(unit.map_or(0, |u| u + 1));
    }
    match unit {
        None => format!("{bytes} bytes"),
        Some(unit) => format!("{value:.1} {} ({bytes} bytes)", UNITS[unit]),
    }
}

impl Error {
    /// The bit this error contributes to the exit code (bbr-facts §1.4).
    #[must_use]
    pub fn exit_bit(&self) -> i32 {
        match self {
            Error::ScriptFailed { script, .. }
            | Error::ScriptTimedOut { script, .. }
            | Error::ScriptLost { script, .. } => match script {
                ScriptName::PreBackupLock => exit_bit::LOCK,
                ScriptName::PostBackupUnlock | ScriptName::PostRestoreUnlock => exit_bit::UNLOCK,
                _ => exit_bit::GENERAL,
            },
            Error::Cleanup { .. } => exit_bit::CLEANUP,
            _ => exit_bit::GENERAL,
        }
    }

    /// Marks an error of the drain step (copying artifacts off the instances).
    #[must_use]
    pub fn in_drain(self) -> Error {
        match self {
            drain @ Error::Drain(_) => drain,
            other => Error::Drain(Box::new(other)),
        }
    }

    /// True when an unlock script failed (exit bit 8).
    #[must_use]
    pub fn is_unlock_failure(&self) -> bool {
        self.exit_bit() == exit_bit::UNLOCK
    }

    /// True for the kinds of error after which bbr's `backup` advises `backup-cleanup`
    /// (`orchestrator/error.go` `ContainsUnlockOrCleanupOrArtifactDirExists`: an unlock, a
    /// clean-up, a leftover artifact directory or the drain), and for an interrupted backup
    /// (bbr prints the same advice when a backup is stopped).
    #[must_use]
    pub fn needs_cleanup_advice(&self) -> bool {
        matches!(
            self,
            Error::Cleanup { .. }
                | Error::ArtifactDirExists { .. }
                | Error::Drain(_)
                | Error::Interrupted { .. }
        ) || self.is_unlock_failure()
    }
}

/// What is wrong with a backup in a store, as a caller can match it.
#[derive(Debug, thiserror::Error)]
pub enum StoredBackupError {
    /// The store holds no complete backup of the deployment.
    #[error("No complete backup of deployment `{deployment}` in {store}")]
    NoCompleteBackup {
        /// Deployment name.
        deployment: String,
        /// The store.
        store: String,
    },
    /// The backup has no manifest: it does not exist or is incomplete.
    #[error("Backup `{backup}` in {store} has no manifest.json: it does not exist or is incomplete; run `cairn backups list`")]
    NotFound {
        /// `<deployment>/<id>`.
        backup: String,
        /// The store.
        store: String,
    },
    /// The manifest cannot be parsed.
    #[error("Manifest of `{backup}` in {store} is invalid: {detail}")]
    ManifestInvalid {
        /// `<deployment>/<id>`.
        backup: String,
        /// The store.
        store: String,
        /// Why.
        detail: String,
    },
    /// An object of the backup is missing or differs from what its manifest records.
    #[error("Stored object `{key}` is damaged or missing: {detail}")]
    Damaged {
        /// The object's key.
        key: String,
        /// What differs.
        detail: String,
    },
    /// A manifest, `metadata` object or journal is larger than Cairn reads
    /// ([`crate::format::manifest::RECORD_LIMIT`]).
    #[error("Stored object `{key}` is larger than {limit} bytes, the most Cairn reads of a manifest, `metadata` or run journal: Cairn never writes one this large, so it was replaced or is not Cairn's; nothing was read past the limit")]
    RecordTooLarge {
        /// The object's key.
        key: String,
        /// The limit in bytes.
        limit: u64,
    },
    /// A backup's manifest or `metadata` would be larger than a restore reads.
    #[error("Backup {backup}: its {record} would be {bytes} bytes (it lists {files} files), more than the {limit} bytes a restore reads, so the backup was not completed; back up into a bbr directory (--artifact-path) instead, or split the job's data")]
    RecordWouldBeTooLarge {
        /// `<deployment>/<id>`.
        backup: String,
        /// `manifest.json` or `metadata`.
        record: &'static str,
        /// Its size in bytes.
        bytes: u64,
        /// Files listed.
        files: usize,
        /// The limit in bytes.
        limit: u64,
    },
    /// The manifest lists no artifact of this name.
    #[error("The manifest has no artifact `{artifact}`")]
    ArtifactNotListed {
        /// The artifact's name.
        artifact: String,
    },
    /// An artifact is encrypted with a scheme this Cairn cannot read.
    #[error("Backup {backup} in {store}: artifact `{artifact}` is encrypted with `{scheme}`, which this Cairn cannot read")]
    UnknownEncryption {
        /// `<deployment>/<id>`.
        backup: String,
        /// The store.
        store: String,
        /// The artifact.
        artifact: String,
        /// The scheme the manifest names.
        scheme: String,
    },
    /// The backup is encrypted and no identity was given.
    #[error("Backup {backup} in {store} is encrypted ({encryption}): give its age identity file with --identity FILE; nothing was restored")]
    IdentityRequired {
        /// `<deployment>/<id>`.
        backup: String,
        /// The store.
        store: String,
        /// `age-x25519, 2 recipients`.
        encryption: String,
    },
    /// No identity given matches the backup's recipients.
    #[error("Backup {backup} in {store} is encrypted ({encryption}) and no identity given with --identity matches its recipients")]
    NoMatchingIdentity {
        /// `<deployment>/<id>`.
        backup: String,
        /// The store.
        store: String,
        /// `age-x25519, 2 recipients`.
        encryption: String,
    },
    /// An encrypted artifact was to be read without an identity.
    #[error("`{key}` is encrypted: give its age identity file with --identity FILE")]
    ArtifactEncrypted {
        /// The object's key.
        key: String,
    },
    /// The manifest does not belong where it is stored
    /// ([`crate::format::store::placement`]): copied or forged into another place.
    #[error("Backup `{backup}` in {store} is misplaced: {detail}. A manifest copied or forged into another backup's place is refused; look at it with `cairn backups show {backup}`, and `cairn backups delete {backup}` removes it without touching anything outside `{backup}/`")]
    Misplaced {
        /// `<deployment>/<id>`: where it is stored.
        backup: String,
        /// The store.
        store: String,
        /// How it does not match.
        detail: crate::format::store::placement::PlacementError,
    },
    /// `--identity` was given, and the backup is not encrypted (or not all of it).
    #[error("Backup {backup} in {store} is not encrypted ({detail}), but --identity was given, so an encrypted one was expected: refused, since anyone who can write to the store can put a plaintext backup in place of an encrypted one. If this backup is known to be unencrypted, pass --allow-unencrypted (or `allow_unencrypted = true` in the config file)")]
    NotEncrypted {
        /// `<deployment>/<id>`.
        backup: String,
        /// The store.
        store: String,
        /// `no artifact is encrypted`, or which object is not.
        detail: String,
    },
    /// A key or store URL that is not valid.
    #[error("{0}")]
    InvalidName(String),
}

/// Every error of one run, in the order they happened.
#[derive(Debug, Default)]
pub struct RunErrors(pub Vec<Error>);

impl RunErrors {
    /// An empty list.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one error.
    pub fn push(&mut self, error: Error) {
        self.0.push(error);
    }

    /// Adds every error of `other`.
    pub fn extend(&mut self, other: RunErrors) {
        self.0.extend(other.0);
    }

    /// True when nothing went wrong.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The errors.
    #[must_use]
    pub fn errors(&self) -> &[Error] {
        &self.0
    }

    /// True when a backup with these errors may have left temp files or locked jobs behind,
    /// so bbr's advice to run `backup-cleanup` follows its report.
    #[must_use]
    pub fn advise_backup_cleanup(&self) -> bool {
        self.0.iter().any(Error::needs_cleanup_advice)
    }

    /// True when the first error is a leftover artifact directory: the one case in which
    /// bbr's `pre-backup-check` advises `backup-cleanup` (`ContainsArtifactDirError` looks at
    /// the first error only).
    #[must_use]
    pub fn first_is_artifact_dir(&self) -> bool {
        matches!(self.0.first(), Some(Error::ArtifactDirExists { .. }))
    }

    /// Marks every error as one of the drain step ([`Error::Drain`]).
    #[must_use]
    pub fn in_drain(self) -> RunErrors {
        RunErrors(self.0.into_iter().map(Error::in_drain).collect())
    }

    /// bbr's exit code: the OR of every error's bit, 0 when there is none.
    #[must_use]
    pub fn exit_code(&self) -> i32 {
        self.0.iter().fold(0, |code, error| code | error.exit_bit())
    }

    /// `Ok(())` when empty.
    ///
    /// # Errors
    /// Returns `self` when it holds at least one error.
    pub fn into_result(self) -> Result<(), RunErrors> {
        if self.is_empty() {
            Ok(())
        } else {
            Err(self)
        }
    }
}

impl From<Error> for RunErrors {
    fn from(error: Error) -> Self {
        RunErrors(vec![error])
    }
}

impl fmt::Display for RunErrors {
    /// bbr's `PrettyError` (`orchestrator/error.go`), byte for byte: `1 error occurred:` or
    /// `N errors occurred:`, then for each error `error K:` on a line of its own followed by
    /// the message with no newline after it — so bbr's `error 2:` follows the end of the
    /// first message on the same line, and so does Cairn's (wrappers compare the report).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count = self.0.len();
        let plural = if count == 1 { "" } else { "s" };
        writeln!(f, "{count} error{plural} occurred:")?;
        for (number, error) in self.0.iter().enumerate() {
            writeln!(f, "error {}:", number + 1)?;
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for RunErrors {}

#[cfg(test)]
mod tests {
    use super::*;

    fn script_error(script: ScriptName) -> Error {
        Error::ScriptFailed {
            instance: InstanceName::new("db", "0"),
            job: "postgres".into(),
            script,
            status: 1,
            stderr: "boom".into(),
        }
    }

    #[test]
    fn exit_code_ors_the_bits_of_every_error() {
        let mut errors = RunErrors::new();
        assert_eq!(errors.exit_code(), 0);
        errors.push(script_error(ScriptName::PreBackupLock));
        assert_eq!(errors.exit_code(), 4);
        errors.push(script_error(ScriptName::PostBackupUnlock));
        assert_eq!(errors.exit_code(), 12);
        errors.push(Error::Cleanup {
            deployment: "d".into(),
            detail: "x".into(),
        });
        assert_eq!(errors.exit_code(), 28);
        errors.push(script_error(ScriptName::Backup));
        assert_eq!(errors.exit_code(), 29);
    }

    #[test]
    fn restore_lock_failure_is_a_general_error() {
        assert_eq!(script_error(ScriptName::PreRestoreLock).exit_bit(), 1);
    }

    #[test]
    fn pretty_error_matches_bbr() {
        let errors = RunErrors(vec![script_error(ScriptName::Backup)]);
        assert_eq!(
            errors.to_string(),
            "1 error occurred:\nerror 1:\nError attempting to run backup for job postgres on db/0: boom - exit code 1"
        );
        let two = RunErrors(vec![
            script_error(ScriptName::Backup),
            script_error(ScriptName::PostBackupUnlock),
        ]);
        assert!(two
            .to_string()
            .starts_with("2 errors occurred:\nerror 1:\n"));
        assert!(two.to_string().contains("exit code 1error 2:\n"));
    }

    #[test]
    fn backup_cleanup_is_advised_for_bbrs_kinds_only() {
        let advise = |error: Error| RunErrors(vec![error]).advise_backup_cleanup();
        assert!(advise(script_error(ScriptName::PostBackupUnlock)));
        assert!(advise(Error::Cleanup {
            deployment: "d".into(),
            detail: "x".into(),
        }));
        assert!(advise(Error::ArtifactDirExists {
            instance: InstanceName::new("db", "0"),
        }));
        assert!(advise(script_error(ScriptName::Backup).in_drain()));
        assert!(!advise(script_error(ScriptName::Backup)));
        assert!(!advise(script_error(ScriptName::PreBackupLock)));
        let drained = script_error(ScriptName::Backup).in_drain().in_drain();
        assert!(matches!(&drained, Error::Drain(inner) if !matches!(**inner, Error::Drain(_))));
        assert_eq!(
            drained.to_string(),
            script_error(ScriptName::Backup).to_string()
        );
    }

    #[test]
    fn pre_backup_check_advises_cleanup_only_for_a_first_artifact_dir_error() {
        let dir = || Error::ArtifactDirExists {
            instance: InstanceName::new("db", "0"),
        };
        assert!(RunErrors(vec![dir(), script_error(ScriptName::Backup)]).first_is_artifact_dir());
        assert!(!RunErrors(vec![script_error(ScriptName::Backup), dir()]).first_is_artifact_dir());
    }
}
