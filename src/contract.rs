//! `cairn contract check`: does a job keep the job-script contract?
//!
//! A release author (or an operator adopting a release) wants to know, before the first
//! nightly backup, whether a job's `bin/bbr` scripts will behave under bbr and Cairn. Reading
//! them is not enough: what matters is what they do on a real VM. So the check runs them on
//! the host they are installed on, the way an orchestrator would, and reports each rule of
//! scripts-contract/CONTRACT.md as PASS, WARN or FAIL:
//!
//! - static: scripts present, regular, executable, with a `#!` line; lock/unlock pairs
//!   complete; a backup that can be restored; misnamed scripts;
//! - `metadata`: runs, prints valid YAML, lock references resolve among the host's jobs;
//! - a real round trip (unless skipped): unlock scripts without a prior lock, lock, backup
//!   (traced with strace to prove it writes only inside `BBR_ARTIFACT_DIRECTORY`), unlock
//!   twice, the artifact moved through a tar as a transfer would, restore-lock, restore,
//!   restore-unlock twice, and `post-restore-verify` when present.
//!
//! Whatever happens (a failing script, a lost connection, Ctrl-C), a lock that was attempted
//! is followed by its unlock, and the artifact root the check created is removed.

mod checker;
mod listing;
mod round_trip;
mod stream_trip;
pub mod trace;
mod write_scope;

use std::fmt;
use std::time::Duration;

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::model::job::{ScriptName, REMOTE_ARTIFACT_ROOT};
use crate::remote::{RemoteError, RemoteHost};

use checker::Checker;
use listing::{check_files, list_folder};

/// How serious a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// The rule holds.
    Pass,
    /// Information: nothing to fix.
    Note,
    /// Probably a mistake, or something that could not be checked.
    Warn,
    /// A violation of the contract.
    Fail,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Verdict::Pass => "PASS",
            Verdict::Note => "NOTE",
            Verdict::Warn => "WARN",
            Verdict::Fail => "FAIL",
        })
    }
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// How serious.
    pub verdict: Verdict,
    /// Which rule, e.g. `write-scope`.
    pub check: String,
    /// What was found, in one line.
    pub message: String,
}

/// Everything found about one job.
#[derive(Debug, Clone, Serialize)]
pub struct ContractReport {
    /// The job name.
    pub job: String,
    /// The folder checked.
    pub path: String,
    /// Where (`localhost` or the SSH host).
    pub host: String,
    /// Findings in the order they were made.
    pub findings: Vec<Finding>,
}

impl ContractReport {
    fn add(&mut self, verdict: Verdict, check: &str, message: impl Into<String>) {
        let message = message.into();
        tracing::debug!("{verdict} {check}: {message}");
        self.findings.push(Finding {
            verdict,
            check: check.to_string(),
            message,
        });
    }

    /// Number of findings with this verdict.
    #[must_use]
    pub fn count(&self, verdict: Verdict) -> usize {
        self.findings
            .iter()
            .filter(|f| f.verdict == verdict)
            .count()
    }

    /// True when any rule was violated.
    #[must_use]
    pub fn failed(&self) -> bool {
        self.count(Verdict::Fail) > 0
    }

    /// The readable report: one line per finding and a summary line.
    #[must_use]
    pub fn to_text(&self) -> String {
        let mut text = format!(
            "Contract check of job `{}` ({} on {})\n",
            self.job, self.path, self.host
        );
        for finding in &self.findings {
            text.push_str(&format!(
                "{}  {:<20} {}\n",
                finding.verdict, finding.check, finding.message
            ));
        }
        text.push_str(&format!(
            "{}: {} passed, {} warnings, {} failed\n",
            if self.failed() {
                "FAILED"
            } else {
                "CONTRACT KEPT"
            },
            self.count(Verdict::Pass),
            self.count(Verdict::Warn),
            self.count(Verdict::Fail)
        ));
        text
    }
}

/// How to check.
#[derive(Debug, Clone)]
pub struct CheckOptions {
    /// Run the backup/restore round trip (it really restores what it just backed up).
    pub round_trip: bool,
    /// Longest any one script may run.
    pub script_timeout: Duration,
    /// Extra path prefixes `backup` may write to (`--allow-write`).
    pub allowed_writes: Vec<String>,
    /// `BBR_VERSION` given to `metadata`.
    pub bbr_version: String,
}

/// Why a check could not be carried out at all (as opposed to a job that failed it).
#[derive(Debug, thiserror::Error)]
pub enum ContractError {
    /// The path does not end in `<job>/bin/bbr`.
    #[error("`{path}` is not a job's scripts folder: give the path of a folder like /var/vcap/jobs/<job>/bin/bbr")]
    NotAScriptsFolder {
        /// The path given.
        path: String,
    },
    /// The folder is not there.
    #[error("`{path}` is not a directory on {host}: check the job name and that the job is installed there")]
    Missing {
        /// The path.
        path: String,
        /// The host.
        host: String,
    },
    /// Running a command failed.
    #[error("Cannot check `{path}` on {host}: {detail}")]
    Command {
        /// The path.
        path: String,
        /// The host.
        host: String,
        /// What failed.
        detail: String,
    },
    /// The transport failed.
    #[error(transparent)]
    Remote(#[from] RemoteError),
}

/// Where a job's scripts are: `<jobs root>/<job>/bin/bbr`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptsFolder {
    /// The folder, without a trailing slash.
    pub path: String,
    /// The folder holding every job (`/var/vcap/jobs` on a BOSH VM).
    pub jobs_root: String,
    /// The job's name.
    pub job: String,
}

impl ScriptsFolder {
    /// Parses `/var/vcap/jobs/<job>/bin/bbr` (any absolute jobs root).
    ///
    /// # Errors
    /// [`ContractError::NotAScriptsFolder`].
    pub fn parse(path: &str) -> Result<ScriptsFolder, ContractError> {
        let not_a_folder = || ContractError::NotAScriptsFolder {
            path: path.to_string(),
        };
        let trimmed = path.trim_end_matches('/');
        let job_dir = trimmed.strip_suffix("/bin/bbr").ok_or_else(not_a_folder)?;
        let (jobs_root, job) = job_dir.rsplit_once('/').ok_or_else(not_a_folder)?;
        if !trimmed.starts_with('/') || job.is_empty() || job.starts_with('.') {
            return Err(not_a_folder());
        }
        Ok(ScriptsFolder {
            path: trimmed.to_string(),
            jobs_root: if jobs_root.is_empty() {
                "/".into()
            } else {
                jobs_root.to_string()
            },
            job: job.to_string(),
        })
    }

    fn script(&self, script: ScriptName) -> String {
        format!("{}/{}", self.path, script.file_name())
    }

    /// The artifact directory the orchestrator would give this job, with bbr's trailing slash.
    #[must_use]
    pub fn artifact_directory(&self) -> String {
        format!("{REMOTE_ARTIFACT_ROOT}/{}/", self.job)
    }
}

/// Checks the job whose scripts are in `path` on `host`.
///
/// # Errors
/// [`ContractError`] when the check cannot be carried out (bad path, missing folder, lost
/// connection); a job that breaks the contract is a report with FAIL findings, not an error.
pub async fn check_job(
    host: &dyn RemoteHost,
    path: &str,
    options: &CheckOptions,
    cancel: &CancellationToken,
) -> Result<ContractReport, ContractError> {
    let folder = ScriptsFolder::parse(path)?;
    let listing = list_folder(host, &folder).await?;
    let mut report = ContractReport {
        job: folder.job.clone(),
        path: folder.path.clone(),
        host: host.to_string(),
        findings: Vec::new(),
    };
    check_files(&listing, &mut report);
    let checker = Checker {
        host,
        folder: &folder,
        listing: &listing,
        options,
        cancel,
    };
    let metadata = checker.check_metadata(&mut report).await?;
    let disabled = metadata.as_ref().is_some_and(|m| m.skip_bbr_scripts);
    if !options.round_trip {
        report.add(
            Verdict::Note,
            "round-trip",
            "skipped (--skip-round-trip): backup, restore and the unlock scripts were not run",
        );
    } else if disabled {
        report.add(
            Verdict::Note,
            "round-trip",
            "skipped: the job's metadata disables it (skip_bbr_scripts: true)",
        );
    } else if metadata.is_none()
        || !listing.runnable(ScriptName::Backup)
        || !listing.runnable(ScriptName::Restore)
        || report.failed()
    {
        report.add(
            Verdict::Warn,
            "round-trip",
            "skipped: fix the failures above first (the round trip needs runnable backup, restore and metadata scripts)",
        );
    } else {
        let streams = metadata
            .as_ref()
            .map_or(Vec::new(), |m| m.cairn.stream.clone());
        checker.round_trip(&mut report, &streams).await?;
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_folders_are_parsed() {
        let folder = ScriptsFolder::parse("/var/vcap/jobs/postgres/bin/bbr/").unwrap();
        assert_eq!(folder.job, "postgres");
        assert_eq!(folder.jobs_root, "/var/vcap/jobs");
        assert_eq!(
            folder.artifact_directory(),
            "/var/vcap/store/bbr-backup/postgres/"
        );
        assert!(ScriptsFolder::parse("/var/vcap/jobs/postgres").is_err());
        assert!(ScriptsFolder::parse("relative/job/bin/bbr").is_err());
        assert!(ScriptsFolder::parse("/bin/bbr").is_err());
    }
}
