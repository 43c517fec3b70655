//! `post-restore-verify`: Cairn's optional extension of the job-script contract.
//!
//! A restore that exits 0 proves the bytes arrived and the restore scripts did not fail; it
//! does not prove the service reads its data back. Jobs that ship `bin/bbr/post-restore-verify`
//! can say so themselves: after `post-restore-unlock` (the job is live again) and before the
//! artifact directories are removed, each such script checks the restored data against its
//! artifact and prints one line of evidence. bbr never runs it; Cairn runs it only when asked
//! (`restore --verify`, `cairn drill`). See scripts-contract/CONTRACT.md.

use super::scripts::run_job_script;
use super::RunContext;
use crate::error::{Error, RunErrors};
use crate::model::deployment::Deployment;
use crate::model::job::ScriptName;
use crate::model::lock_order::JobRef;
use crate::remote::script::ScriptOutcome;
pub use crate::report::verification::{Verification, VerifyResult};

/// Runs `post-restore-verify` on every job in `restored` that has one, at most
/// `parallelism` at once, recording each result (and each restored job without the script)
/// with the run (they come back in the restore's report). A failing or hanging script is an error of the run (exit bit 1).
pub async fn verify_restored(
    deployment: &Deployment,
    restored: &[JobRef],
    context: &RunContext,
) -> RunErrors {
    let (jobs, unverifiable): (Vec<JobRef>, Vec<JobRef>) = restored
        .iter()
        .copied()
        .partition(|r| deployment.job(*r).1.has(ScriptName::PostRestoreVerify));
    for job_ref in unverifiable {
        let (instance, job) = deployment.job(job_ref);
        context.record_verification(Verification {
            instance: instance.name.to_string(),
            job: job.name.clone(),
            result: VerifyResult::NoScript,
            evidence: String::new(),
            detail: "the job has no post-restore-verify script".into(),
            seconds: 0.0,
        });
    }
    if jobs.is_empty() {
        tracing::warn!(
            "No restored job has a post-restore-verify script: the restored data was not verified"
        );
        return RunErrors::new();
    }
    let runs = jobs.into_iter().map(|job_ref| async move {
        verify_one(deployment, job_ref, context)
            .await
            .map_or(Ok(()), Err)
    });
    super::gather_errors(runs, context.options.parallelism).await
}

async fn verify_one(
    deployment: &Deployment,
    job_ref: JobRef,
    context: &RunContext,
) -> Option<Error> {
    let (instance, job) = deployment.job(job_ref);
    let environment = [
        ("BBR_ARTIFACT_DIRECTORY", instance.restore_directory(job)),
        ("ARTIFACT_DIRECTORY", instance.restore_directory(job)),
    ];
    let started = std::time::Instant::now();
    let result = run_job_script(
        instance,
        job,
        ScriptName::PostRestoreVerify,
        &environment,
        context,
        &context.cancel,
    )
    .await;
    let mut record = Verification {
        instance: instance.name.to_string(),
        job: job.name.clone(),
        result: VerifyResult::Failed,
        evidence: String::new(),
        detail: String::new(),
        seconds: started.elapsed().as_secs_f64(),
    };
    match &result.outcome {
        ScriptOutcome::Exited(output) => {
            record.evidence = if output.stdout_dropped > 0 {
                format!(
                    "(its stdout passed {} MiB: the last {} bytes were dropped, and its last line with them)",
                    crate::remote::script::STDOUT_KEPT >> 20,
                    output.stdout_dropped
                )
            } else {
                last_line(&output.stdout_text())
            };
            if output.success() {
                record.result = VerifyResult::Passed;
                tracing::info!(
                    "Verified {} on {}: {}",
                    job.name,
                    instance.name,
                    record.evidence
                );
            } else {
                record.detail = output.stderr.trim().to_string();
            }
        }
        ScriptOutcome::Cancelled => record.detail = "interrupted".into(),
        ScriptOutcome::TimedOut(seconds) => {
            record.detail = format!("did not finish within {seconds} s (--script-timeout)");
        }
        ScriptOutcome::Lost(error) => record.detail = error.to_string(),
    }
    context.record_verification(record);
    result.error
}

/// The last non-empty line of a script's stdout, trimmed.
fn last_line(stdout: &str) -> String {
    stdout
        .lines()
        .rev()
        .map(str::trim)
        .find(|line| !line.is_empty())
        .unwrap_or_default()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::last_line;

    #[test]
    fn evidence_is_the_last_non_empty_line() {
        assert_eq!(
            last_line("debug\npostgres: 5 tables match\n\n"),
            "postgres: 5 tables match"
        );
        assert_eq!(last_line(""), "");
        assert_eq!(last_line("  only  "), "only");
    }
}
