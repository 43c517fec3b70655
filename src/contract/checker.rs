//! The `Checker`: runs a job's scripts on its host as an orchestrator would (environment,
//! timeout, optional strace) and judges `metadata`, lock scripts and unlock scripts.
//! The round trip (`round_trip`) and the write-scope rule (`write_scope`) add methods to it
//! from their own modules; this one holds what they share, and uses neither.

use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::model::job::{JobMetadata, ScriptName};
use crate::remote::script::{run_script_io, ScriptCommand, ScriptIo, ScriptOutcome};
use crate::remote::{shell_quote, CommandOutput, RemoteHost, RemoteHostExt};

use super::listing::Listing;
use super::{trace, CheckOptions, ContractError, ContractReport, ScriptsFolder, Verdict};

/// How a script run ended.
#[derive(Debug)]
pub(super) enum Outcome {
    Exited(CommandOutput, Duration),
    TimedOut,
    Cancelled,
}

impl Outcome {
    pub(super) fn succeeded(&self) -> bool {
        matches!(self, Outcome::Exited(output, _) if output.success())
    }

    /// `exit 0 in 1.2 s`, or why it did not exit.
    pub(super) fn describe(&self) -> String {
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

/// Runs a job's scripts on its host the way an orchestrator would, for the checks.
pub(super) struct Checker<'a> {
    pub(super) host: &'a dyn RemoteHost,
    pub(super) folder: &'a ScriptsFolder,
    pub(super) listing: &'a Listing,
    pub(super) options: &'a CheckOptions,
    pub(super) cancel: &'a CancellationToken,
}

impl Checker<'_> {
    /// Runs a script as an orchestrator would: `sudo K=V ... timeout N PATH`, optionally
    /// under strace writing per-process traces to `trace_prefix`.
    pub(super) async fn run_script(
        &self,
        script: ScriptName,
        environment: &[(&str, String)],
        cancellable: bool,
        trace_prefix: Option<&str>,
    ) -> Result<Outcome, ContractError> {
        self.run_script_io(
            script,
            environment,
            cancellable,
            trace_prefix,
            ScriptIo::default(),
        )
        .await
    }

    /// [`Checker::run_script`] with the script's stdin and stdout given (a streaming job).
    pub(super) async fn run_script_io(
        &self,
        script: ScriptName,
        environment: &[(&str, String)],
        cancellable: bool,
        trace_prefix: Option<&str>,
        io: ScriptIo,
    ) -> Result<Outcome, ContractError> {
        // Every script gets Cairn's version, as in a run (`workflow/scripts.rs`).
        let mut variables = environment.to_vec();
        variables.push(("CAIRN_VERSION", crate::VERSION.to_string()));
        let mut command = ScriptCommand::new(self.folder.script(script))
            .envs(&variables)
            .time_limit(Some(self.options.script_timeout));
        if let Some(prefix) = trace_prefix {
            command = command.traced(prefix, trace::TRACED_SYSCALLS);
        }
        let never = CancellationToken::new();
        let cancel = if cancellable { self.cancel } else { &never };
        let started = Instant::now();
        match run_script_io(self.host, &command, io, cancel).await {
            ScriptOutcome::Exited(output) => Ok(Outcome::Exited(output, started.elapsed())),
            ScriptOutcome::TimedOut(_) => Ok(Outcome::TimedOut),
            ScriptOutcome::Cancelled => Ok(Outcome::Cancelled),
            ScriptOutcome::Lost(error) => Err(error.into()),
        }
    }

    /// Runs a plain command as root; its failure is an error of the check.
    pub(super) async fn root(
        &self,
        what: &str,
        inner: &str,
    ) -> Result<CommandOutput, ContractError> {
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

    pub(super) fn artifact_environment(&self) -> Vec<(&'static str, String)> {
        let directory = self.folder.artifact_directory();
        vec![
            ("BBR_ARTIFACT_DIRECTORY", directory.clone()),
            ("ARTIFACT_DIRECTORY", directory),
        ]
    }

    /// Runs `metadata` and checks its YAML; `None` when it failed.
    pub(super) async fn check_metadata(
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
        check_discontinued_names(&metadata, report);
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

    /// Runs a lock script if the job has one. True when it succeeded or there is none.
    pub(super) async fn lock(
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
    pub(super) async fn unlock_twice(
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
}

/// `restore_name` makes bbr and Cairn refuse the job; `backup_name` is only ignored.
fn check_discontinued_names(metadata: &JobMetadata, report: &mut ContractReport) {
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
}
