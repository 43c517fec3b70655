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

pub mod trace;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::model::job::{JobMetadata, ScriptName, REMOTE_ARTIFACT_ROOT};
use crate::remote::commands;
use crate::remote::script::{run_script, ScriptCommand, ScriptOutcome};
use crate::remote::{shell_quote, CommandOutput, RemoteError, RemoteHost, RemoteHostExt};

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

/// A script file as found on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ScriptFile {
    regular: bool,
    executable: bool,
    shebang: bool,
}

/// What the scripts folder holds.
#[derive(Debug, Clone, Default)]
struct Listing {
    scripts: BTreeMap<ScriptName, ScriptFile>,
    /// Every entry of the folder, scripts included.
    entries: Vec<String>,
    /// Jobs with a `bin/bbr` folder under the same jobs root.
    sibling_jobs: BTreeSet<String>,
}

impl Listing {
    fn runnable(&self, script: ScriptName) -> bool {
        self.scripts
            .get(&script)
            .is_some_and(|f| f.regular && f.executable && f.shebang)
    }

    fn has(&self, script: ScriptName) -> bool {
        self.scripts.contains_key(&script)
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
        checker.round_trip(&mut report).await?;
    }
    Ok(report)
}

/// Lists the folder's scripts (type, executable bit, `#!`), its other entries and the jobs
/// next to it, in one command.
async fn list_folder(
    host: &dyn RemoteHost,
    folder: &ScriptsFolder,
) -> Result<Listing, ContractError> {
    let names: Vec<&str> = ScriptName::ALL.iter().map(|s| s.file_name()).collect();
    let inner = format!(
        "cd {dir} || exit 3\n\
         for s in {names}; do\n\
           if [ -e \"$s\" ] || [ -L \"$s\" ]; then\n\
             t=other; [ -f \"$s\" ] && t=file\n\
             x=no; [ -x \"$s\" ] && x=yes\n\
             b=no; [ -f \"$s\" ] && [ \"$(head -c 2 \"$s\")\" = '#!' ] && b=yes\n\
             printf 'script %s %s %s %s\\n' \"$s\" \"$t\" \"$x\" \"$b\"\n\
           fi\n\
         done\n\
         for e in * .[!.]*; do if [ -e \"$e\" ] || [ -L \"$e\" ]; then printf 'entry %s\\n' \"$e\"; fi; done\n\
         for j in {root}/*/bin/bbr; do if [ -d \"$j\" ]; then j=${{j%/bin/bbr}}; printf 'job %s\\n' \"${{j##*/}}\"; fi; done\n\
         exit 0",
        dir = shell_quote(&folder.path),
        names = names.join(" "),
        root = shell_quote(&folder.jobs_root),
    );
    let output = host
        .run(&format!("sudo sh -c {}", shell_quote(&inner)))
        .await?;
    match output.status {
        0 => Ok(parse_listing(&output.stdout_text())),
        3 => Err(ContractError::Missing {
            path: folder.path.clone(),
            host: host.to_string(),
        }),
        _ => Err(ContractError::Command {
            path: folder.path.clone(),
            host: host.to_string(),
            detail: format!("listing the folder failed: {}", output.failure_detail()),
        }),
    }
}

fn parse_listing(text: &str) -> Listing {
    let mut listing = Listing::default();
    for line in text.lines() {
        let mut words = line.splitn(2, ' ');
        match (words.next(), words.next()) {
            (Some("script"), Some(rest)) => {
                let fields: Vec<&str> = rest.split(' ').collect();
                if let [name, kind, executable, shebang] = fields[..] {
                    if let Some(script) = ScriptName::from_file_name(name) {
                        listing.scripts.insert(
                            script,
                            ScriptFile {
                                regular: kind == "file",
                                executable: executable == "yes",
                                shebang: shebang == "yes",
                            },
                        );
                    }
                }
            }
            (Some("entry"), Some(name)) => listing.entries.push(name.to_string()),
            (Some("job"), Some(name)) => {
                listing.sibling_jobs.insert(name.to_string());
            }
            _ => {}
        }
    }
    listing
}

/// The rules that need no script to run.
fn check_files(listing: &Listing, report: &mut ContractReport) {
    if !listing.has(ScriptName::Backup) && !listing.has(ScriptName::Restore) {
        report.add(
            Verdict::Fail,
            "scripts",
            "no backup and no restore script: this is not a backup-capable job",
        );
    } else {
        let present: Vec<&str> = listing.scripts.keys().map(|s| s.file_name()).collect();
        report.add(
            Verdict::Pass,
            "scripts",
            format!("found {}", present.join(", ")),
        );
    }
    for (script, file) in &listing.scripts {
        let problem = if !file.regular {
            Some("is not a regular file")
        } else if !file.executable {
            Some("is not executable (chmod 755 it in the job spec's templates)")
        } else if !file.shebang {
            Some("has no #! line: sudo cannot run it")
        } else {
            None
        };
        if let Some(problem) = problem {
            report.add(Verdict::Fail, "executable", format!("{script} {problem}"));
        }
    }
    if listing
        .scripts
        .iter()
        .all(|(_, f)| f.regular && f.executable && f.shebang)
    {
        report.add(
            Verdict::Pass,
            "executable",
            "every script is an executable file with a #! line",
        );
    }
    if listing.has(ScriptName::Backup) && !listing.has(ScriptName::Restore) {
        report.add(
            Verdict::Fail,
            "restorable",
            "backup without restore: the artifacts this job produces can never be restored",
        );
    }
    for (lock, unlock) in [
        (ScriptName::PreBackupLock, ScriptName::PostBackupUnlock),
        (ScriptName::PreRestoreLock, ScriptName::PostRestoreUnlock),
    ] {
        match (listing.has(lock), listing.has(unlock)) {
            (true, false) => report.add(
                Verdict::Fail,
                "lock-pairs",
                format!("{lock} without {unlock}: the job would stay locked after every run"),
            ),
            (false, true) => report.add(
                Verdict::Note,
                "lock-pairs",
                format!(
                    "{unlock} without {lock} (allowed: it runs after every {})",
                    lock_phase(lock)
                ),
            ),
            _ => {}
        }
    }
    for entry in &listing.entries {
        if ScriptName::from_file_name(entry).is_some() {
            continue;
        }
        match looks_like_script(entry) {
            Some(script) => report.add(
                Verdict::Warn,
                "names",
                format!("`{entry}` looks like the {script} script, but only a file named exactly `{script}` is run"),
            ),
            None => report.add(Verdict::Note, "names", format!("`{entry}` is not a script name: bbr and Cairn ignore it")),
        }
    }
}

fn lock_phase(lock: ScriptName) -> &'static str {
    if lock == ScriptName::PreBackupLock {
        "backup"
    } else {
        "restore"
    }
}

/// `backup.sh`, `pre_backup_lock`, `Restore` → the script they were probably meant to be.
fn looks_like_script(name: &str) -> Option<ScriptName> {
    let stem = name.split('.').next().unwrap_or(name);
    let normalised = stem.replace('_', "-").to_lowercase();
    ScriptName::from_file_name(&normalised).filter(|s| s.file_name() != name)
}

/// How a script run ended.
#[derive(Debug)]
enum Outcome {
    Exited(CommandOutput, Duration),
    TimedOut,
    Cancelled,
}

impl Outcome {
    fn succeeded(&self) -> bool {
        matches!(self, Outcome::Exited(output, _) if output.success())
    }

    /// `exit 0 in 1.2 s`, or why it did not exit.
    fn describe(&self) -> String {
        match self {
            Outcome::Exited(output, took) if output.success() => {
                format!("exit 0 in {:.1} s", took.as_secs_f64())
            }
            Outcome::Exited(output, took) => {
                let stderr = output.stderr.trim();
                let last = stderr.lines().last().unwrap_or("no stderr");
                format!(
                    "exit {} in {:.1} s: {last}",
                    output.status,
                    took.as_secs_f64()
                )
            }
            Outcome::TimedOut => "did not finish within the script timeout and was ended".into(),
            Outcome::Cancelled => "interrupted".into(),
        }
    }
}

struct Checker<'a> {
    host: &'a dyn RemoteHost,
    folder: &'a ScriptsFolder,
    listing: &'a Listing,
    options: &'a CheckOptions,
    cancel: &'a CancellationToken,
}

impl Checker<'_> {
    /// Runs a script as an orchestrator would: `sudo K=V ... timeout N PATH`, optionally
    /// under strace writing per-process traces to `trace_prefix`.
    async fn run_script(
        &self,
        script: ScriptName,
        environment: &[(&str, String)],
        cancellable: bool,
        trace_prefix: Option<&str>,
    ) -> Result<Outcome, ContractError> {
        let mut command = ScriptCommand::new(self.folder.script(script))
            .envs(environment)
            .time_limit(Some(self.options.script_timeout));
        if let Some(prefix) = trace_prefix {
            command = command.traced(prefix, trace::TRACED_SYSCALLS);
        }
        let never = CancellationToken::new();
        let cancel = if cancellable { self.cancel } else { &never };
        let started = Instant::now();
        match run_script(self.host, &command, cancel).await {
            ScriptOutcome::Exited(output) => Ok(Outcome::Exited(output, started.elapsed())),
            ScriptOutcome::TimedOut(_) => Ok(Outcome::TimedOut),
            ScriptOutcome::Cancelled => Ok(Outcome::Cancelled),
            ScriptOutcome::Lost(error) => Err(error.into()),
        }
    }

    /// Runs a plain command as root; its failure is an error of the check.
    async fn root(&self, what: &str, inner: &str) -> Result<CommandOutput, ContractError> {
        let output = self
            .host
            .run(&format!("sudo sh -c {}", shell_quote(inner)))
            .await?;
        if output.success() {
            Ok(output)
        } else {
            Err(ContractError::Command {
                path: self.folder.path.clone(),
                host: self.host.to_string(),
                detail: format!("{what} failed: {}", output.failure_detail()),
            })
        }
    }

    fn artifact_environment(&self) -> Vec<(&'static str, String)> {
        let directory = self.folder.artifact_directory();
        vec![
            ("BBR_ARTIFACT_DIRECTORY", directory.clone()),
            ("ARTIFACT_DIRECTORY", directory),
        ]
    }

    /// Runs `metadata` and checks its YAML; `None` when it failed.
    async fn check_metadata(
        &self,
        report: &mut ContractReport,
    ) -> Result<Option<JobMetadata>, ContractError> {
        if !self.listing.has(ScriptName::Metadata) {
            report.add(
                Verdict::Note,
                "metadata",
                "no metadata script: no lock order, never skipped",
            );
            return Ok(Some(JobMetadata::default()));
        }
        if !self.listing.runnable(ScriptName::Metadata) {
            return Ok(None);
        }
        let environment = [("BBR_VERSION", self.options.bbr_version.clone())];
        let outcome = self
            .run_script(ScriptName::Metadata, &environment, true, None)
            .await?;
        let Outcome::Exited(output, _) = &outcome else {
            report.add(Verdict::Fail, "metadata", outcome.describe());
            return Ok(None);
        };
        if !output.success() {
            report.add(Verdict::Fail, "metadata", outcome.describe());
            return Ok(None);
        }
        let metadata = match JobMetadata::parse(&output.stdout_text()) {
            Ok(metadata) => metadata,
            Err(detail) => {
                report.add(
                    Verdict::Fail,
                    "metadata",
                    format!("its output is not valid job metadata: {detail}"),
                );
                return Ok(None);
            }
        };
        report.add(Verdict::Pass, "metadata", "prints valid job metadata YAML");
        if metadata
            .restore_name
            .as_deref()
            .is_some_and(|n| !n.is_empty())
        {
            report.add(
                Verdict::Fail,
                "metadata",
                "restore_name is discontinued: bbr and Cairn refuse to restore this job; remove it",
            );
        } else if metadata.has_discontinued_names() {
            report.add(
                Verdict::Warn,
                "metadata",
                "backup_name is discontinued and ignored; remove it",
            );
        }
        self.check_lock_references(&metadata, report);
        Ok(Some(metadata))
    }

    fn check_lock_references(&self, metadata: &JobMetadata, report: &mut ContractReport) {
        let mut references = 0;
        for (direction, specifiers) in [
            ("backup", &metadata.backup_should_be_locked_before),
            ("restore", &metadata.restore_should_be_locked_before),
        ] {
            for specifier in specifiers {
                references += 1;
                let name = &specifier.job_name;
                if *name == self.folder.job {
                    report.add(
                        Verdict::Fail,
                        "lock-order",
                        format!("{direction}_should_be_locked_before names the job itself: a lock cycle bbr and Cairn refuse"),
                    );
                } else if self.listing.sibling_jobs.contains(name) {
                    report.add(
                        Verdict::Pass,
                        "lock-order",
                        format!(
                            "{direction}: locked before {}/{name}, found on this host",
                            specifier.release
                        ),
                    );
                } else {
                    report.add(
                        Verdict::Warn,
                        "lock-order",
                        format!("{direction}: locked before {}/{name}, which is not on this host: it must be on another instance of the deployment (release `{}`)", specifier.release, specifier.release),
                    );
                }
            }
        }
        if references == 0 {
            report.add(Verdict::Pass, "lock-order", "no lock-order constraints");
        }
    }

    /// The round trip; always unlocks what it locked and removes the artifact root.
    async fn round_trip(&self, report: &mut ContractReport) -> Result<(), ContractError> {
        let exists = self.host.run(&commands::artifact_root_exists()).await?;
        if exists.success() {
            report.add(
                Verdict::Fail,
                "round-trip",
                format!("{REMOTE_ARTIFACT_ROOT} exists on {}: a backup or restore is running or was left behind; run backup-cleanup first", self.host),
            );
            return Ok(());
        }
        let strace = self
            .host
            .run("command -v strace >/dev/null && sudo strace -V >/dev/null 2>&1")
            .await?
            .success();
        let cwd = self.host.run("pwd").await?.stdout_text().trim().to_string();
        let trace_dir = format!(
            "/tmp/cairn-contract-{}-{}",
            self.folder.job,
            std::process::id()
        );
        let result = self
            .round_trip_steps(report, strace.then_some((&*trace_dir, &*cwd)))
            .await;
        // Clean up whatever happened above.
        let cleanup = self
            .host
            .run(&format!(
                "sudo rm -rf {} {}",
                REMOTE_ARTIFACT_ROOT,
                shell_quote(&trace_dir)
            ))
            .await;
        match cleanup {
            Ok(output) if output.success() => {}
            Ok(output) => report.add(
                Verdict::Fail,
                "cleanup",
                format!(
                    "removing {REMOTE_ARTIFACT_ROOT} failed: {}",
                    output.failure_detail()
                ),
            ),
            Err(error) => report.add(Verdict::Fail, "cleanup", error.to_string()),
        }
        if self.cancel.is_cancelled() {
            report.add(
                Verdict::Fail,
                "interrupted",
                "the check was interrupted; every lock that was attempted was followed by its unlock",
            );
        }
        result
    }

    async fn round_trip_steps(
        &self,
        report: &mut ContractReport,
        trace: Option<(&str, &str)>,
    ) -> Result<(), ContractError> {
        // bbr runs unlock scripts after a failed lock and in backup-cleanup, when nothing
        // may be locked at all.
        self.unlock_without_lock(report).await?;
        let artifact = self.folder.artifact_directory();
        self.root(
            "creating the artifact directory",
            &format!("mkdir -p {}", shell_quote(&artifact)),
        )
        .await?;
        if !self.backup_phase(report, trace).await? || self.cancel.is_cancelled() {
            return Ok(());
        }
        self.check_artifact(report).await?;
        // What a transfer does: tar the artifact off the host, later extract it into a fresh
        // artifact directory.
        let saved = format!("{REMOTE_ARTIFACT_ROOT}/.cairn-contract-check.tar");
        let artifact_q = shell_quote(&artifact);
        self.root(
            "moving the artifact through a tar",
            &format!(
                "tar -C {artifact_q} -cf {saved} . && rm -rf {artifact_q} && mkdir -p {artifact_q} && tar -C {artifact_q} -xf {saved} && rm -f {saved}"
            ),
        )
        .await?;
        self.restore_phase(report).await
    }

    async fn unlock_without_lock(&self, report: &mut ContractReport) -> Result<(), ContractError> {
        let mut runs: Vec<(ScriptName, Option<&str>)> = Vec::new();
        if self.listing.runnable(ScriptName::PostBackupUnlock) {
            runs.push((ScriptName::PostBackupUnlock, Some("false")));
            runs.push((ScriptName::PostBackupUnlock, Some("true")));
        }
        if self.listing.runnable(ScriptName::PostRestoreUnlock) {
            runs.push((ScriptName::PostRestoreUnlock, None));
        }
        for (script, success) in runs {
            let environment: Vec<(&str, String)> = success
                .map(|s| ("BBR_AFTER_BACKUP_SCRIPTS_SUCCESSFUL", s.to_string()))
                .into_iter()
                .collect();
            let detail = success
                .map(|s| format!(" with BBR_AFTER_BACKUP_SCRIPTS_SUCCESSFUL={s}"))
                .unwrap_or_default();
            let outcome = self.run_script(script, &environment, false, None).await?;
            let verdict = if outcome.succeeded() {
                Verdict::Pass
            } else {
                Verdict::Fail
            };
            report.add(
                verdict,
                "idempotent",
                format!(
                    "{script} without a prior lock (as after a failed lock){detail}: {}",
                    outcome.describe()
                ),
            );
        }
        Ok(())
    }

    /// Lock, traced backup, unlock twice. True when the backup succeeded.
    async fn backup_phase(
        &self,
        report: &mut ContractReport,
        trace: Option<(&str, &str)>,
    ) -> Result<bool, ContractError> {
        let locked = self.lock(ScriptName::PreBackupLock, report).await?;
        let mut backed_up = false;
        if locked {
            if let Some((dir, _)) = trace {
                self.root(
                    "creating the trace directory",
                    &format!("rm -rf {0} && mkdir -m 0700 {0}", shell_quote(dir)),
                )
                .await?;
            }
            let prefix = trace.map(|(dir, _)| format!("{dir}/trace"));
            let outcome = self
                .run_script(
                    ScriptName::Backup,
                    &self.artifact_environment(),
                    true,
                    prefix.as_deref(),
                )
                .await?;
            backed_up = outcome.succeeded();
            report.add(
                if backed_up {
                    Verdict::Pass
                } else {
                    Verdict::Fail
                },
                "backup",
                outcome.describe(),
            );
            match trace {
                Some((dir, cwd)) if backed_up => self.check_write_scope(report, dir, cwd).await?,
                Some(_) => {}
                None => report.add(
                    Verdict::Warn,
                    "write-scope",
                    "not checked: strace is not installed on the host (apt-get install strace)",
                ),
            }
        }
        if self.listing.has(ScriptName::PreBackupLock)
            || self.listing.has(ScriptName::PostBackupUnlock)
        {
            let success = (locked && backed_up).to_string();
            self.unlock_twice(
                ScriptName::PostBackupUnlock,
                &[("BBR_AFTER_BACKUP_SCRIPTS_SUCCESSFUL", success)],
                report,
            )
            .await?;
        }
        Ok(locked && backed_up)
    }

    /// Runs a lock script if the job has one. True when it succeeded or there is none.
    async fn lock(
        &self,
        script: ScriptName,
        report: &mut ContractReport,
    ) -> Result<bool, ContractError> {
        if !self.listing.has(script) {
            return Ok(true);
        }
        if !self.listing.runnable(script) {
            return Ok(false);
        }
        let outcome = self.run_script(script, &[], true, None).await?;
        let locked = outcome.succeeded();
        report.add(
            if locked { Verdict::Pass } else { Verdict::Fail },
            script.file_name(),
            outcome.describe(),
        );
        Ok(locked)
    }

    /// Runs an unlock script twice, as a run followed by `backup-cleanup` would.
    async fn unlock_twice(
        &self,
        script: ScriptName,
        environment: &[(&str, String)],
        report: &mut ContractReport,
    ) -> Result<(), ContractError> {
        if !self.listing.runnable(script) {
            return Ok(());
        }
        for attempt in ["", " (again: unlock must be idempotent)"] {
            let outcome = self.run_script(script, environment, false, None).await?;
            report.add(
                if outcome.succeeded() {
                    Verdict::Pass
                } else {
                    Verdict::Fail
                },
                script.file_name(),
                format!("{}{attempt}", outcome.describe()),
            );
        }
        Ok(())
    }

    /// Compares what the traced backup wrote with what the contract allows.
    async fn check_write_scope(
        &self,
        report: &mut ContractReport,
        trace_dir: &str,
        cwd: &str,
    ) -> Result<(), ContractError> {
        let dump = self
            .root(
                "reading the strace output",
                &format!(
                    "cd {} && for f in trace.*; do [ -f \"$f\" ] || continue; printf '\\n==> %s\\n' \"${{f#trace.}}\"; cat \"$f\"; done",
                    shell_quote(trace_dir)
                ),
            )
            .await?;
        let traces = split_trace_dump(&dump.stdout_text());
        let written = trace::written_paths(&traces, cwd);
        let policy = WritePolicy::new(self.folder, &self.options.allowed_writes);
        let mut outside = Vec::new();
        let mut temporary = Vec::new();
        for write in &written {
            match policy.classify(&write.path) {
                WriteClass::Allowed => {}
                WriteClass::Temporary => temporary.push(write),
                WriteClass::Forbidden => outside.push(write),
            }
        }
        // Temporary files are fine only if the script removed them.
        temporary.truncate(500);
        if !temporary.is_empty() {
            let tests: Vec<String> = temporary
                .iter()
                .map(|w| {
                    format!(
                        "if [ -e {0} ] || [ -L {0} ]; then printf '%s\\n' {0}; fi",
                        shell_quote(&w.path)
                    )
                })
                .collect();
            let left = self
                .root("looking for leftover temporary files", &tests.join("\n"))
                .await?;
            let left: BTreeSet<String> = left.stdout_text().lines().map(str::to_string).collect();
            outside.extend(temporary.iter().filter(|w| left.contains(&w.path)).copied());
        }
        if outside.is_empty() {
            report.add(
                Verdict::Pass,
                "write-scope",
                format!(
                    "backup wrote only inside BBR_ARTIFACT_DIRECTORY ({} paths written, traced with strace)",
                    written.len()
                ),
            );
        } else {
            let shown: Vec<String> = outside
                .iter()
                .take(5)
                .map(|w| format!("{} ({})", w.path, w.syscall))
                .collect();
            report.add(
                Verdict::Fail,
                "write-scope",
                format!(
                    "backup wrote outside BBR_ARTIFACT_DIRECTORY: {}{}; only the artifact directory, /var/vcap/sys/log/{job}/ and /var/vcap/sys/run/{job}/ may be written, and temporary files must be removed before the script exits",
                    shown.join(", "),
                    if outside.len() > 5 { format!(" and {} more", outside.len() - 5) } else { String::new() },
                    job = self.folder.job
                ),
            );
        }
        Ok(())
    }

    /// The artifact must hold something, and nothing a restore would refuse.
    async fn check_artifact(&self, report: &mut ContractReport) -> Result<(), ContractError> {
        let artifact = self.folder.artifact_directory();
        let listing = self
            .root(
                "inspecting the artifact",
                &format!(
                    "cd {} && printf 'files %s\\n' \"$(find . -type f | wc -l)\" && printf 'bytes %s\\n' \"$(du -sb . | cut -f1)\" && printf 'special %s\\n' \"$(find . ! -type f ! -type d ! -type l | wc -l)\" && find . -type l -printf 'link %p\\t%l\\n'",
                    shell_quote(&artifact)
                ),
            )
            .await?;
        let mut files = 0u64;
        let mut bytes = 0u64;
        for line in listing.stdout_text().lines() {
            let (kind, value) = line.split_once(' ').unwrap_or((line, ""));
            match kind {
                "files" => files = value.trim().parse().unwrap_or(0),
                "bytes" => bytes = value.trim().parse().unwrap_or(0),
                "special" if value.trim() != "0" => report.add(
                    Verdict::Fail,
                    "artifact",
                    format!("the artifact holds {} device nodes, FIFOs or sockets: restore refuses them", value.trim()),
                ),
                "link" => {
                    let (name, target) = value.split_once('\t').unwrap_or((value, ""));
                    let parent = name.rsplit_once('/').map_or(".", |(p, _)| p);
                    let resolved = trace::resolve(&format!("/artifact/{parent}"), target);
                    if target.starts_with('/') || !resolved.starts_with("/artifact/") {
                        report.add(
                            Verdict::Fail,
                            "artifact",
                            format!("symlink {name} -> {target} points outside the artifact: restore refuses it"),
                        );
                    }
                }
                _ => {}
            }
        }
        if files == 0 {
            report.add(
                Verdict::Warn,
                "artifact",
                "the backup produced no files: a restore would have nothing to put back",
            );
        } else {
            report.add(
                Verdict::Pass,
                "artifact",
                format!("{files} files, {bytes} bytes in BBR_ARTIFACT_DIRECTORY"),
            );
        }
        Ok(())
    }

    /// Restore lock, restore, unlock twice, then `post-restore-verify`.
    async fn restore_phase(&self, report: &mut ContractReport) -> Result<(), ContractError> {
        let locked = self.lock(ScriptName::PreRestoreLock, report).await?;
        let mut restored = false;
        if locked && !self.cancel.is_cancelled() {
            let outcome = self
                .run_script(
                    ScriptName::Restore,
                    &self.artifact_environment(),
                    true,
                    None,
                )
                .await?;
            restored = outcome.succeeded();
            report.add(
                if restored {
                    Verdict::Pass
                } else {
                    Verdict::Fail
                },
                "restore",
                format!("{} (restoring the backup just taken)", outcome.describe()),
            );
        }
        self.unlock_twice(ScriptName::PostRestoreUnlock, &[], report)
            .await?;
        if !restored || self.cancel.is_cancelled() {
            return Ok(());
        }
        if !self.listing.has(ScriptName::PostRestoreVerify) {
            report.add(
                Verdict::Note,
                "verify",
                "no post-restore-verify script (optional Cairn extension): restore drills cannot prove this job's data",
            );
            return Ok(());
        }
        if !self.listing.runnable(ScriptName::PostRestoreVerify) {
            return Ok(());
        }
        let outcome = self
            .run_script(
                ScriptName::PostRestoreVerify,
                &self.artifact_environment(),
                true,
                None,
            )
            .await?;
        let Outcome::Exited(output, _) = &outcome else {
            report.add(Verdict::Fail, "verify", outcome.describe());
            return Ok(());
        };
        if !output.success() {
            report.add(Verdict::Fail, "verify", outcome.describe());
            return Ok(());
        }
        let stdout = output.stdout_text();
        let lines: Vec<&str> = stdout
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        match lines[..] {
            [evidence] => report.add(
                Verdict::Pass,
                "verify",
                format!("post-restore-verify: {evidence}"),
            ),
            [] => report.add(
                Verdict::Warn,
                "verify",
                "post-restore-verify printed no evidence line",
            ),
            _ => report.add(
                Verdict::Warn,
                "verify",
                format!(
                    "post-restore-verify printed {} lines; only the last is kept as evidence: {}",
                    lines.len(),
                    lines[lines.len() - 1]
                ),
            ),
        }
        Ok(())
    }
}

/// Splits `\n==> PID\n<trace>` sections.
fn split_trace_dump(text: &str) -> BTreeMap<u32, String> {
    let mut traces = BTreeMap::new();
    for section in text.split("\n==> ").skip(1) {
        let (pid, body) = section.split_once('\n').unwrap_or((section, ""));
        if let Ok(pid) = pid.trim().parse() {
            traces.insert(pid, body.to_string());
        }
    }
    traces
}

/// Where a `backup` script may write.
struct WritePolicy {
    /// Anything strictly inside these.
    allowed: Vec<String>,
    /// These directories themselves too (a job creates its own log and run folders).
    own_folders: Vec<String>,
    temporary: Vec<&'static str>,
}

enum WriteClass {
    Allowed,
    /// Under /tmp or /var/tmp: allowed if gone when the script exits.
    Temporary,
    Forbidden,
}

impl WritePolicy {
    fn new(folder: &ScriptsFolder, extra: &[String]) -> WritePolicy {
        let own_folders = vec![
            format!("/var/vcap/sys/log/{}", folder.job),
            format!("/var/vcap/sys/run/{}", folder.job),
        ];
        let mut allowed = vec![
            folder
                .artifact_directory()
                .trim_end_matches('/')
                .to_string(),
            "/dev".to_string(),
            "/proc".to_string(),
        ];
        allowed.extend(own_folders.iter().cloned());
        allowed.extend(extra.iter().map(|p| p.trim_end_matches('/').to_string()));
        WritePolicy {
            allowed,
            own_folders,
            temporary: vec!["/tmp", "/var/tmp"],
        }
    }

    fn classify(&self, path: &str) -> WriteClass {
        let inside = |root: &str| {
            path.strip_prefix(root)
                .is_some_and(|rest| rest.starts_with('/'))
        };
        if self.allowed.iter().any(|root| inside(root))
            || self.own_folders.iter().any(|f| f == path)
        {
            WriteClass::Allowed
        } else if self.temporary.iter().any(|root| inside(root)) {
            WriteClass::Temporary
        } else {
            WriteClass::Forbidden
        }
    }
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

    #[test]
    fn misnamed_scripts_are_recognised() {
        assert_eq!(looks_like_script("backup.sh"), Some(ScriptName::Backup));
        assert_eq!(
            looks_like_script("pre_backup_lock"),
            Some(ScriptName::PreBackupLock)
        );
        assert_eq!(looks_like_script("bbr.conf"), None);
        assert_eq!(looks_like_script("backup"), None);
    }

    #[test]
    fn listing_output_is_parsed() {
        let listing = parse_listing(
            "script backup file yes yes\nscript restore file no yes\nscript metadata other no no\nentry backup\nentry bbr.conf\njob postgres\njob app\n",
        );
        assert!(listing.runnable(ScriptName::Backup));
        assert!(!listing.runnable(ScriptName::Restore));
        assert!(listing.has(ScriptName::Metadata));
        assert_eq!(listing.entries, ["backup", "bbr.conf"]);
        assert!(listing.sibling_jobs.contains("app"));
    }

    fn report_of(listing: &Listing) -> ContractReport {
        let mut report = ContractReport {
            job: "j".into(),
            path: "/var/vcap/jobs/j/bin/bbr".into(),
            host: "h".into(),
            findings: Vec::new(),
        };
        check_files(listing, &mut report);
        report
    }

    #[test]
    fn static_rules_flag_broken_jobs() {
        let listing = parse_listing(
            "script pre-backup-lock file yes yes\nscript backup file no yes\nentry restore.sh\n",
        );
        let report = report_of(&listing);
        let failed: Vec<&str> = report
            .findings
            .iter()
            .filter(|f| f.verdict == Verdict::Fail)
            .map(|f| f.check.as_str())
            .collect();
        assert_eq!(failed, ["executable", "restorable", "lock-pairs"]);
        assert!(report
            .findings
            .iter()
            .any(|f| f.verdict == Verdict::Warn && f.message.contains("restore.sh")));
    }

    #[test]
    fn a_complete_job_passes_the_static_rules() {
        let listing = parse_listing(
            "script backup file yes yes\nscript restore file yes yes\nscript pre-backup-lock file yes yes\nscript post-backup-unlock file yes yes\nentry bbr.conf\n",
        );
        let report = report_of(&listing);
        assert!(!report.failed(), "{}", report.to_text());
    }

    #[test]
    fn write_policy_allows_the_artifact_logs_and_devices_only() {
        let folder = ScriptsFolder::parse("/var/vcap/jobs/pg/bin/bbr").unwrap();
        let policy = WritePolicy::new(&folder, &["/var/vcap/data/pg-tmp".into()]);
        let class = |p: &str| match policy.classify(p) {
            WriteClass::Allowed => "allowed",
            WriteClass::Temporary => "temporary",
            WriteClass::Forbidden => "forbidden",
        };
        assert_eq!(class("/var/vcap/store/bbr-backup/pg/db.dump"), "allowed");
        assert_eq!(class("/var/vcap/store/bbr-backup/pg"), "forbidden");
        assert_eq!(class("/var/vcap/store/bbr-backup/other/x"), "forbidden");
        assert_eq!(class("/var/vcap/sys/log/pg/backup.log"), "allowed");
        assert_eq!(class("/var/vcap/sys/log/pg"), "allowed");
        assert_eq!(class("/var/vcap/sys/log"), "forbidden");
        assert_eq!(class("/var/vcap/sys/log/pgx/backup.log"), "forbidden");
        assert_eq!(class("/dev/null"), "allowed");
        assert_eq!(class("/tmp/tmp.abc"), "temporary");
        assert_eq!(class("/var/vcap/data/pg-tmp/x"), "allowed");
        assert_eq!(class("/var/vcap/store/pg/data"), "forbidden");
    }

    #[test]
    fn trace_dumps_are_split_by_pid() {
        let traces = split_trace_dump("\n==> 12\nmkdir(\"a\", 0777) = 0\n\n==> 13\n");
        assert_eq!(traces.len(), 2);
        assert!(traces[&12].contains("mkdir"));
    }
}
