//! The round trip of `cairn contract check`: unlock scripts without a lock, lock, traced
//! backup, unlock twice, the artifact moved through a tar, restore-lock, restore, unlock
//! twice and `post-restore-verify`, then for a streaming job the same in streaming mode
//! (`stream_trip`). It is the part that changes the host, kept apart from
//! the static rules and from `metadata` so its cleanup guarantees can be read in one place.

use crate::model::job::{ScriptName, StreamedScript, REMOTE_ARTIFACT_ROOT};
use crate::remote::{commands, shell_quote, RemoteHostExt};

use super::checker::{Checker, Outcome};
use super::{trace, ContractError, ContractReport, Verdict};

impl Checker<'_> {
    /// The round trip; always unlocks what it locked and removes the artifact root.
    pub(super) async fn round_trip(
        &self,
        report: &mut ContractReport,
        streams: &[StreamedScript],
    ) -> Result<(), ContractError> {
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
        let trace = strace.then_some((&*trace_dir, &*cwd));
        let result = match self.round_trip_steps(report, trace).await {
            // A job that declares the streaming extension is run in that mode too.
            Ok(()) if !self.cancel.is_cancelled() => {
                self.stream_round_trip(report, streams, trace).await
            }
            other => other,
        };
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
                Some((dir, cwd)) if backed_up => {
                    self.check_write_scope(report, dir, cwd, false).await?;
                }
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
        let restored = if locked && !self.cancel.is_cancelled() {
            self.restore(report).await?
        } else {
            false
        };
        self.unlock_twice(ScriptName::PostRestoreUnlock, &[], report)
            .await?;
        if !restored || self.cancel.is_cancelled() {
            return Ok(());
        }
        self.verify_restore(report).await
    }

    /// Runs `restore` on the artifact just moved through a tar. True when it succeeded.
    async fn restore(&self, report: &mut ContractReport) -> Result<bool, ContractError> {
        let outcome = self
            .run_script(
                ScriptName::Restore,
                &self.artifact_environment(),
                true,
                None,
            )
            .await?;
        let restored = outcome.succeeded();
        report.add(
            if restored {
                Verdict::Pass
            } else {
                Verdict::Fail
            },
            "restore",
            format!("{} (restoring the backup just taken)", outcome.describe()),
        );
        Ok(restored)
    }

    /// Runs `post-restore-verify` when the job has one and judges its evidence line.
    async fn verify_restore(&self, report: &mut ContractReport) -> Result<(), ContractError> {
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
        check_evidence(&output.stdout_text(), report);
        Ok(())
    }
}

/// `post-restore-verify` must print exactly one non-empty line: the evidence a drill keeps.
fn check_evidence(stdout: &str, report: &mut ContractReport) {
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
}
