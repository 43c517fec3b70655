//! The one script runner of the workflows: backup, restore, verification and the recovery of a
//! killed run all run job scripts through [`run_job_script`], so every script is logged,
//! recorded (manifest lock times, metrics, `--json` events), limited by its time limit
//! (`--script-timeout` and the config file's `[timeouts]`, [`crate::model::timeouts`]),
//! retried once after a lost connection when it is idempotent (the unlock scripts), and
//! every outcome becomes the same [`Error`]: a non-zero exit is `ScriptFailed`, the limit
//! `ScriptTimedOut`, a lost connection `ScriptLost`; an interruption is no error (the
//! workflow reports the interruption itself). The command line and the time limit are
//! [`crate::remote::script`]'s, which the contract check uses too.

use tokio_util::sync::CancellationToken;

use super::RunContext;
use crate::error::{Error, RunErrors};
use crate::model::deployment::{Deployment, Instance};
use crate::model::job::{InstanceName, Job, ScriptName};
use crate::model::lock_order::{JobRef, LockLayers};
use crate::remote::script::{
    run_script, run_script_io, ScriptCommand, ScriptIo, ScriptOutcome, STDOUT_KEPT,
};
use crate::remote::StdoutMode;

/// The environment of a job's script, given its instance and job.
pub(crate) type ScriptEnvironment<'a> =
    dyn Fn(&Instance, &Job) -> Vec<(&'static str, String)> + Sync + 'a;

/// How one job script ended, and the error it is for the run (none for a success or an
/// interruption).
#[derive(Debug)]
pub(crate) struct ScriptResult {
    /// How it ended.
    pub outcome: ScriptOutcome,
    /// What it means for the run.
    pub error: Option<Error>,
}

/// Runs one job script on its instance: see the module documentation.
pub(crate) async fn run_job_script(
    instance: &Instance,
    job: &Job,
    script: ScriptName,
    environment: &[(&'static str, String)],
    context: &RunContext,
    cancel: &CancellationToken,
) -> ScriptResult {
    run_job_script_io(
        instance,
        job,
        script,
        environment,
        ScriptIo::default(),
        context,
        cancel,
    )
    .await
}

/// [`run_job_script`] with the script's stdin and stdout given (a streaming job's artifact).
/// A script with a stream is never run again after a lost connection: the stream is gone.
// Long on purpose: the one mapping of every script outcome to an error, in one place.
pub(crate) async fn run_job_script_io(
    instance: &Instance,
    job: &Job,
    script: ScriptName,
    environment: &[(&'static str, String)],
    io: ScriptIo,
    context: &RunContext,
    cancel: &CancellationToken,
) -> ScriptResult {
    let (starting, finished) = log_lines(script, &job.name, &instance.name);
    tracing::info!("{starting}");
    let started_at = chrono::Utc::now();
    let mut variables = environment.to_vec();
    variables.push(("CAIRN_VERSION", context.options.version.clone()));
    let limit = context.options.script_timeouts.limit(&job.name, script);
    let command = ScriptCommand::new(job.script_path(script))
        .envs(&variables)
        .time_limit(limit.as_ref().map(|l| l.duration));
    let streamed = io.stdin.is_some() || matches!(io.stdout, StdoutMode::Stream(_));
    let mut outcome = run_script_io(instance.remote.as_ref(), &command, io, cancel).await;
    if let (ScriptOutcome::Lost(error), true, false) = (&outcome, script.is_idempotent(), streamed)
    {
        // An unlock must not be lost with a connection: the next command reconnects.
        tracing::warn!(
            "{script} of {} on {} failed ({error}); running it again",
            job.name,
            instance.name
        );
        outcome = run_script(instance.remote.as_ref(), &command, cancel).await;
    }
    let error = match &outcome {
        ScriptOutcome::Exited(output) => {
            context.record_script(&instance.name, &job.name, script, started_at, output.status);
            if output.stdout_dropped > 0 {
                tracing::warn!(
                    "{script} of {} on {} printed more than {} to stdout: the first {} were kept and the remaining {} bytes dropped",
                    job.name,
                    instance.name,
                    mib(STDOUT_KEPT),
                    mib(STDOUT_KEPT),
                    output.stdout_dropped
                );
            }
            if output.success() {
                tracing::debug!("stdout: {}", output.stdout_text().trim_end());
                if let Some(finished) = finished {
                    tracing::info!("{finished}");
                }
                None
            } else {
                Some(Error::ScriptFailed {
                    instance: instance.name.clone(),
                    job: job.name.clone(),
                    script,
                    status: output.status,
                    stderr: output.stderr.trim().to_string(),
                })
            }
        }
        ScriptOutcome::Cancelled => None,
        ScriptOutcome::TimedOut(seconds) => Some(Error::ScriptTimedOut {
            instance: instance.name.clone(),
            job: job.name.clone(),
            script,
            seconds: *seconds,
            setting: limit
                .as_ref()
                .map(|l| l.setting(script))
                .unwrap_or_default(),
        }),
        ScriptOutcome::Lost(error) => Some(Error::ScriptLost {
            instance: instance.name.clone(),
            job: job.name.clone(),
            script,
            detail: error.to_string(),
        }),
    };
    ScriptResult { outcome, error }
}

/// Runs `script` on each of `jobs` (those that have it), at most `--parallelism` at once (one
/// at a time for the restore locks, [`parallelism`]).
/// `environment` gives each job's variables.
pub(crate) async fn run_scripts(
    deployment: &Deployment,
    jobs: &[JobRef],
    script: ScriptName,
    environment: &ScriptEnvironment<'_>,
    context: &RunContext,
    cancel: &CancellationToken,
) -> RunErrors {
    let runs = jobs
        .iter()
        .map(|r| deployment.job(*r))
        .filter(|(_, job)| job.has(script))
        .map(|(instance, job)| async move {
            let variables = environment(instance, job);
            let result = run_job_script(instance, job, script, &variables, context, cancel).await;
            result.error.map_or(Ok(()), Err)
        });
    super::gather_errors(runs, parallelism(script, context)).await
}

/// bbr's log lines before and after a job's script (`instance/job.go`): `Locking J on G/ID for
/// backup...` and `Finished locking J on G/ID for backup.`, and so on. `post-restore-verify`
/// (a Cairn extension) has no closing line: its evidence line follows instead.
fn log_lines(script: ScriptName, job: &str, instance: &InstanceName) -> (String, Option<String>) {
    let (verb, suffix) = match script {
        ScriptName::PreBackupLock => ("locking", " for backup"),
        ScriptName::PreRestoreLock => ("locking", " for restore"),
        ScriptName::PostBackupUnlock | ScriptName::PostRestoreUnlock => ("unlocking", ""),
        ScriptName::Backup => ("backing up", ""),
        ScriptName::Restore => ("restoring", ""),
        ScriptName::Metadata => ("reading metadata of", ""),
        ScriptName::PostRestoreVerify => {
            return (format!("Verifying restored {job} on {instance}..."), None)
        }
    };
    let mut capitalized = verb.to_string();
    capitalized[..1].make_ascii_uppercase();
    (
        format!("{capitalized} {job} on {instance}{suffix}..."),
        Some(format!("Finished {verb} {job} on {instance}{suffix}.")),
    )
}

/// `16 MiB`.
fn mib(bytes: usize) -> String {
    format!("{} MiB", bytes >> 20)
}

/// How many jobs run `script` at once: bbr runs the restore lock scripts one job at a time
/// (`NewSerialExecutor` for `pre-restore-lock` and `post-restore-unlock`, in `restore` and
/// `restore-cleanup`), every other script up to `--parallelism` at once.
fn parallelism(script: ScriptName, context: &RunContext) -> usize {
    match script {
        ScriptName::PreRestoreLock | ScriptName::PostRestoreUnlock => 1,
        _ => context.options.parallelism,
    }
}

/// Runs a lock script layer by layer, stopping at the first layer with a failure; logged
/// between bbr's `Running <script> scripts...` and `Finished running <script> scripts.`
pub(crate) async fn lock(
    deployment: &Deployment,
    layers: &LockLayers,
    script: ScriptName,
    context: &RunContext,
) -> RunErrors {
    tracing::info!("Running {script} scripts...");
    let errors = lock_layers(deployment, layers, script, context).await;
    tracing::info!("Finished running {script} scripts.");
    errors
}

async fn lock_layers(
    deployment: &Deployment,
    layers: &LockLayers,
    script: ScriptName,
    context: &RunContext,
) -> RunErrors {
    for layer in layers.lock_order() {
        if context.cancel.is_cancelled() {
            break;
        }
        // Written before the layer runs; a journal that cannot be written stops the locking.
        if let Err(error) = context.journal_locks(deployment, layer, script).await {
            return error.into();
        }
        let errors = run_scripts(
            deployment,
            layer,
            script,
            &|_, _| Vec::new(),
            context,
            &context.cancel,
        )
        .await;
        if !errors.is_empty() {
            return errors;
        }
    }
    RunErrors::new()
}

/// Runs an unlock script on every job, layers in reverse; never cancelled, never stops early.
/// Logged between bbr's `Running <script> scripts...` and `Finished running <script> scripts.`
pub(crate) async fn unlock(
    deployment: &Deployment,
    layers: &LockLayers,
    script: ScriptName,
    environment: &ScriptEnvironment<'_>,
    context: &RunContext,
) -> RunErrors {
    tracing::info!("Running {script} scripts...");
    let never = CancellationToken::new();
    let mut errors = RunErrors::new();
    for layer in layers.unlock_order() {
        errors.extend(run_scripts(deployment, layer, script, environment, context, &never).await);
    }
    tracing::info!("Finished running {script} scripts.");
    errors
}
