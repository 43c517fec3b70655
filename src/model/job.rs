//! Jobs, their bbr scripts and their metadata: the nouns of the job-script contract.
//!
//! A BOSH job is backup-capable when it ships scripts under `/var/vcap/jobs/<job>/bin/bbr/`.
//! Presence of a file is all that counts (bbr-facts §2.1): a job "can back up" when it has a
//! `backup` script and "can restore" when it has `restore`. The optional `metadata` script
//! prints YAML that orders locks between jobs and can disable a job entirely.

use std::collections::BTreeSet;
use std::fmt;

use serde::Deserialize;

/// Root of the remote artifact directories on every instance.
pub const REMOTE_ARTIFACT_ROOT: &str = "/var/vcap/store/bbr-backup";

/// Jobs bbr ignores entirely (legacy p-mysql, bbr-facts §2.1).
pub const IGNORED_JOBS: [&str; 2] = ["mysql-backup", "mysql-restore"];

/// The seven scripts of bbr's contract, plus Cairn's optional `post-restore-verify` extension
/// (ignored by bbr; run only when a restore is asked to verify, see scripts-contract/CONTRACT.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ScriptName {
    /// Prints YAML job metadata.
    Metadata,
    /// Quiesces the job before backup.
    PreBackupLock,
    /// Writes the artifact into `BBR_ARTIFACT_DIRECTORY`.
    Backup,
    /// Resumes the job after backup.
    PostBackupUnlock,
    /// Quiesces the job before restore.
    PreRestoreLock,
    /// Reads the artifact from `BBR_ARTIFACT_DIRECTORY`.
    Restore,
    /// Resumes the job after restore.
    PostRestoreUnlock,
    /// Cairn extension: checks the restored data and prints one line of evidence.
    PostRestoreVerify,
}

impl ScriptName {
    /// Every script name, in lifecycle order.
    pub const ALL: [ScriptName; 8] = [
        ScriptName::Metadata,
        ScriptName::PreBackupLock,
        ScriptName::Backup,
        ScriptName::PostBackupUnlock,
        ScriptName::PreRestoreLock,
        ScriptName::Restore,
        ScriptName::PostRestoreUnlock,
        ScriptName::PostRestoreVerify,
    ];

    /// The file name under `bin/bbr/`.
    #[must_use]
    pub fn file_name(self) -> &'static str {
        match self {
            ScriptName::Metadata => "metadata",
            ScriptName::PreBackupLock => "pre-backup-lock",
            ScriptName::Backup => "backup",
            ScriptName::PostBackupUnlock => "post-backup-unlock",
            ScriptName::PreRestoreLock => "pre-restore-lock",
            ScriptName::Restore => "restore",
            ScriptName::PostRestoreUnlock => "post-restore-unlock",
            ScriptName::PostRestoreVerify => "post-restore-verify",
        }
    }

    /// True for scripts the contract requires to be safe to run again (unlocks, metadata):
    /// after a lost connection Cairn reconnects and runs them once more.
    #[must_use]
    pub fn is_idempotent(self) -> bool {
        matches!(
            self,
            ScriptName::Metadata | ScriptName::PostBackupUnlock | ScriptName::PostRestoreUnlock
        )
    }

    /// True for scripts bbr does not know (Cairn's extensions).
    #[must_use]
    pub fn is_extension(self) -> bool {
        self == ScriptName::PostRestoreVerify
    }

    /// Parses a file name under `bin/bbr/`; anything else is not a script.
    #[must_use]
    pub fn from_file_name(name: &str) -> Option<ScriptName> {
        ScriptName::ALL.into_iter().find(|s| s.file_name() == name)
    }
}

impl fmt::Display for ScriptName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.file_name())
    }
}

/// `<group>/<id>`, the way bbr names an instance in messages.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct InstanceName {
    /// Instance group.
    pub group: String,
    /// Instance id (the BOSH index when the inventory gives none).
    pub id: String,
}

impl InstanceName {
    /// Builds a name from a group and an id.
    pub fn new(group: impl Into<String>, id: impl Into<String>) -> Self {
        Self {
            group: group.into(),
            id: id.into(),
        }
    }
}

impl fmt::Display for InstanceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.group, self.id)
    }
}

/// A `(job_name, release)` pair from `*_should_be_locked_before`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
pub struct LockSpecifier {
    /// Name of the job that must be locked after this one.
    #[serde(default)]
    pub job_name: String,
    /// Its release.
    #[serde(default)]
    pub release: String,
}

/// What a job's `metadata` script printed (bbr-facts §2.4). Unknown keys are ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct JobMetadata {
    /// Jobs this one must be locked before, during backup.
    #[serde(default)]
    pub backup_should_be_locked_before: Vec<LockSpecifier>,
    /// Jobs this one must be locked before, during restore.
    #[serde(default)]
    pub restore_should_be_locked_before: Vec<LockSpecifier>,
    /// When true the job is left out of everything.
    #[serde(default)]
    pub skip_bbr_scripts: bool,
    /// Discontinued: ignored with a warning.
    #[serde(default)]
    pub backup_name: Option<String>,
    /// Discontinued: restore refuses.
    #[serde(default)]
    pub restore_name: Option<String>,
    /// Cairn's extensions (`cairn:`), which bbr ignores (its `yaml.Unmarshal` into
    /// `instance.Metadata` drops unknown keys).
    #[serde(default)]
    pub cairn: CairnMetadata,
}

/// The `cairn:` key of a job's metadata: Cairn's opt-in extensions of the contract.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct CairnMetadata {
    /// The scripts that stream their artifact (`stream: [backup, restore]`): with
    /// `CAIRN_STREAM=1`, `backup` writes it to stdout and `restore` reads it from stdin.
    #[serde(default)]
    pub stream: Vec<StreamedScript>,
}

/// A script that may stream its artifact (scripts-contract/CONTRACT.md, "Streaming").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StreamedScript {
    /// `backup` writes the artifact to stdout.
    Backup,
    /// `restore` reads the artifact from stdin.
    Restore,
}

impl JobMetadata {
    /// Parses the stdout of a `metadata` script. Empty output means no metadata.
    ///
    /// # Errors
    /// Returns a description when the YAML is malformed or a lock specifier lacks a field.
    pub fn parse(stdout: &str) -> Result<JobMetadata, String> {
        if stdout.trim().is_empty() {
            return Ok(JobMetadata::default());
        }
        let metadata: JobMetadata = yaml_serde::from_str(stdout)
            .map_err(|error| format!("failed to unmarshal job metadata: {error}"))?;
        let all_specifiers = metadata
            .backup_should_be_locked_before
            .iter()
            .chain(&metadata.restore_should_be_locked_before);
        for specifier in all_specifiers {
            if specifier.job_name.is_empty() || specifier.release.is_empty() {
                return Err(
                    "both job name and release should be specified for should be locked before"
                        .into(),
                );
            }
        }
        Ok(metadata)
    }

    /// True when `backup_name` or `restore_name` is set.
    #[must_use]
    pub fn has_discontinued_names(&self) -> bool {
        self.backup_name.as_deref().is_some_and(|n| !n.is_empty())
            || self.restore_name.as_deref().is_some_and(|n| !n.is_empty())
    }
}

/// A backup-capable job found on an instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    /// Job name, the directory under `/var/vcap/jobs/`.
    pub name: String,
    /// Its release, used to match lock specifiers; empty when unknown (director mode).
    pub release: String,
    /// The scripts present.
    pub scripts: BTreeSet<ScriptName>,
    /// Parsed metadata, default when the job has no `metadata` script.
    pub metadata: JobMetadata,
    /// `<job>-<release>-backup-one-restore-all` when the manifest marks the job
    /// `bbr.backup_one_restore_all` (bbr-facts §2.5).
    pub shared_artifact: Option<String>,
}

impl Job {
    /// True when the job has this script.
    #[must_use]
    pub fn has(&self, script: ScriptName) -> bool {
        self.scripts.contains(&script)
    }

    /// Remote path of one of its scripts.
    #[must_use]
    pub fn script_path(&self, script: ScriptName) -> String {
        format!(
            "/var/vcap/jobs/{}/bin/bbr/{}",
            self.name,
            script.file_name()
        )
    }

    /// Remote artifact directory of this job, with bbr's trailing slash.
    #[must_use]
    pub fn artifact_directory(&self) -> String {
        format!("{REMOTE_ARTIFACT_ROOT}/{}/", self.name)
    }

    /// True when the job's `backup` streams its artifact to stdout (`cairn: {stream: [backup]}`).
    #[must_use]
    pub fn streams_backup(&self) -> bool {
        self.metadata.cairn.stream.contains(&StreamedScript::Backup)
    }

    /// True when the job's `restore` reads a streamed artifact from stdin
    /// (`cairn: {stream: [restore]}`).
    #[must_use]
    pub fn streams_restore(&self) -> bool {
        self.metadata
            .cairn
            .stream
            .contains(&StreamedScript::Restore)
    }

    /// The lock specifiers for backup or restore.
    #[must_use]
    pub fn locked_before(&self, direction: LockDirection) -> &[LockSpecifier] {
        match direction {
            LockDirection::Backup => &self.metadata.backup_should_be_locked_before,
            LockDirection::Restore => &self.metadata.restore_should_be_locked_before,
        }
    }
}

/// Which of the two lock orders applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockDirection {
    /// `backup_should_be_locked_before`.
    Backup,
    /// `restore_should_be_locked_before`.
    Restore,
}

impl fmt::Display for LockDirection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LockDirection::Backup => "backup",
            LockDirection::Restore => "restore",
        })
    }
}

/// Parses one line of the discovery `find` output into `(job, script)`.
///
/// Only `/var/vcap/jobs/<job>/bin/bbr/<script>` with one of the script names counts, where
/// `<job>` is a single path segment (bbr uses `filepath.Match`, whose `*` does not cross `/`).
#[must_use]
pub fn parse_script_path(line: &str) -> Option<(String, ScriptName)> {
    let rest = line
        .trim_end_matches('\r')
        .strip_prefix("/var/vcap/jobs/")?;
    let (job, rest) = rest.split_once('/')?;
    let script = rest.strip_prefix("bin/bbr/")?;
    if job.is_empty() || script.contains('/') {
        return None;
    }
    Some((job.to_string(), ScriptName::from_file_name(script)?))
}

/// A script that ran to completion.
#[derive(Debug, Clone)]
pub struct ScriptRecord {
    /// `<group>/<id>`.
    pub instance: String,
    /// Job name.
    pub job: String,
    /// Which script.
    pub script: ScriptName,
    /// When it finished.
    pub finished_at: chrono::DateTime<chrono::Utc>,
    /// Whether it exited 0.
    pub success: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_paths_follow_the_discovery_glob() {
        assert_eq!(
            parse_script_path("/var/vcap/jobs/redis/bin/bbr/backup"),
            Some(("redis".into(), ScriptName::Backup))
        );
        assert_eq!(
            parse_script_path("/var/vcap/jobs/redis/bin/bbr/post-backup-unlock"),
            Some(("redis".into(), ScriptName::PostBackupUnlock))
        );
        assert_eq!(
            parse_script_path("/var/vcap/jobs/redis/bin/bbr/helper.sh"),
            None
        );
        assert_eq!(
            parse_script_path("/var/vcap/jobs/redis/bin/bbr/sub/backup"),
            None
        );
        assert_eq!(parse_script_path("/var/vcap/jobs/redis/bin/backup"), None);
        assert_eq!(
            parse_script_path("/var/vcap/packages/x/bin/bbr/backup"),
            None
        );
    }

    #[test]
    fn metadata_parses_lock_order_and_ignores_unknown_keys() {
        let metadata = JobMetadata::parse(
            "---\nbackup_should_be_locked_before:\n- job_name: db\n  release: pg\nfuture_key: 1\n",
        )
        .unwrap();
        assert_eq!(
            metadata.backup_should_be_locked_before,
            vec![LockSpecifier {
                job_name: "db".into(),
                release: "pg".into()
            }]
        );
        assert!(metadata.restore_should_be_locked_before.is_empty());
        assert!(!metadata.skip_bbr_scripts);
    }

    #[test]
    fn metadata_declares_streaming_scripts_under_the_cairn_key() {
        let metadata = JobMetadata::parse("cairn:\n  stream: [backup, restore]\n").unwrap();
        assert_eq!(
            metadata.cairn.stream,
            vec![StreamedScript::Backup, StreamedScript::Restore]
        );
        let backup_only = JobMetadata::parse("cairn: {stream: [backup]}").unwrap();
        assert_eq!(backup_only.cairn.stream, vec![StreamedScript::Backup]);
        assert_eq!(
            JobMetadata::parse("{}").unwrap().cairn,
            CairnMetadata::default()
        );
        let error = JobMetadata::parse("cairn: {stream: [lock]}").unwrap_err();
        assert!(error.contains("lock"), "{error}");
    }

    #[test]
    fn metadata_requires_both_fields_of_a_specifier() {
        let error =
            JobMetadata::parse("backup_should_be_locked_before:\n- job_name: db\n").unwrap_err();
        assert!(error.contains("both job name and release"), "{error}");
    }

    #[test]
    fn metadata_rejects_malformed_yaml_and_accepts_empty_output() {
        assert!(JobMetadata::parse("skip_bbr_scripts: [").is_err());
        assert_eq!(JobMetadata::parse("\n").unwrap(), JobMetadata::default());
        assert!(
            JobMetadata::parse("skip_bbr_scripts: true")
                .unwrap()
                .skip_bbr_scripts
        );
    }

    #[test]
    fn discontinued_names_are_detected() {
        assert!(JobMetadata::parse("restore_name: x")
            .unwrap()
            .has_discontinued_names());
        assert!(!JobMetadata::parse("{}").unwrap().has_discontinued_names());
    }
}
