//! The workflows: backup, restore, pre-backup-check and the two clean-ups (bbr-facts §3).
//!
//! Each workflow is a sequence of steps over a discovered [`Deployment`]. The rules that make
//! them safe live here, shared by all of them:
//! - once a lock was attempted, the unlock scripts run, whatever failed after;
//! - unlock and clean-up are never cancelled: an interrupt stops the work in flight, then
//!   unlocks and removes what this run created;
//! - every error is collected, none stops the clean-up, and the exit code ORs their kinds.

pub mod backup;
pub mod cleanup;
mod context;
pub mod drill;
pub mod journal;
mod recovery;
pub mod restore;
pub(crate) mod scripts;
pub(crate) mod transfer;
pub mod verify;

pub use context::{RunContext, RunOptions, DEFAULT_STALL_TIMEOUT};
pub use recovery::{left_behind_report, pending_resumable_ids};
use scripts::{lock, run_scripts, unlock};

use std::sync::atomic::{AtomicBool, Ordering};

use futures::StreamExt;

use crate::error::{Error, RunErrors};
use crate::model::deployment::{discover, Deployment, Target};
use crate::model::job::REMOTE_ARTIFACT_ROOT;
use crate::remote::commands;
use crate::remote::RemoteHostExt;
use crate::report::events::Event;

/// Runs `steps` at most `parallelism` at once and gathers what failed. An interrupted step is
/// no error of its own: the workflow reports the interruption once.
async fn gather_errors<F>(steps: impl Iterator<Item = F>, parallelism: usize) -> RunErrors
where
    F: std::future::Future<Output = Result<(), Error>>,
{
    let results: Vec<Result<(), Error>> = futures::stream::iter(steps)
        .buffer_unordered(parallelism)
        .collect()
        .await;
    RunErrors(
        results
            .into_iter()
            .filter_map(Result::err)
            .filter(|e| {
                !matches!(
                    e,
                    Error::Remote(crate::remote::RemoteError::Cancelled { .. })
                )
            })
            .collect(),
    )
}

/// Discovers the deployment unless interrupted first, logging bbr's `Looking for scripts`
/// (its `FindDeploymentStep`) first.
async fn discover_or_interrupt(
    target: &dyn Target,
    context: &RunContext,
    operation: &'static str,
) -> Result<Deployment, RunErrors> {
    tracing::info!("Looking for scripts");
    recovery::journal_target_access(target, context);
    tokio::select! {
        found = discover(target, context.options.parallelism, &context.options.version, &context.options.script_timeouts) => {
            if let Ok(deployment) = &found {
                announce_jobs(deployment, context);
            }
            found
        }
        () = context.cancel.cancelled() => Err(context.interrupted(operation).into()),
    }
}

fn announce_jobs(deployment: &Deployment, context: &RunContext) {
    for instance in &deployment.instances {
        for job in &instance.jobs {
            context.emit(Event::JobDiscovered {
                instance: instance.name.to_string(),
                job: job.name.clone(),
                release: job.release.clone(),
                scripts: job.scripts.iter().map(ToString::to_string).collect(),
            });
        }
    }
}

/// Fails with one error per instance where `/var/vcap/store/bbr-backup` exists.
async fn check_artifact_root_absent(deployment: &Deployment, instances: &[usize]) -> RunErrors {
    let checks = instances.iter().map(|&i| async move {
        let instance = &deployment.instances[i];
        match instance.remote.run(&commands::artifact_root_exists()).await {
            Ok(output) if output.success() => Some(Error::ArtifactDirExists {
                instance: instance.name.clone(),
            }),
            Ok(_) => None,
            Err(error) => Some(Error::RemoteCommand {
                instance: instance.name.clone(),
                action: format!("Error checking {REMOTE_ARTIFACT_ROOT}"),
                detail: error.to_string(),
            }),
        }
    });
    RunErrors(
        futures::future::join_all(checks)
            .await
            .into_iter()
            .flatten()
            .collect(),
    )
}

/// Which instances had their remote artifact root created by this run.
#[derive(Debug)]
struct CreatedRoots(Vec<AtomicBool>);

impl CreatedRoots {
    fn new(count: usize) -> Self {
        Self((0..count).map(|_| AtomicBool::new(false)).collect())
    }

    fn mark(&self, instance: usize) {
        self.0[instance].store(true, Ordering::SeqCst);
    }

    fn created(&self) -> Vec<usize> {
        (0..self.0.len())
            .filter(|&i| self.0[i].load(Ordering::SeqCst))
            .collect()
    }
}

/// Removes `/var/vcap/store/bbr-backup` from the given instances; failures are clean-up errors.
async fn remove_artifact_roots(
    deployment: &Deployment,
    instances: &[usize],
    error_kind: fn(&Deployment, String) -> Error,
) -> RunErrors {
    let removals = instances.iter().map(|&i| async move {
        let instance = &deployment.instances[i];
        let result = instance
            .remote
            .run(&commands::remove(REMOTE_ARTIFACT_ROOT))
            .await;
        let detail = match result {
            Ok(output) if output.success() => return None,
            Ok(output) => format!(
                "removing {REMOTE_ARTIFACT_ROOT} on {}: {}",
                instance.name,
                output.failure_detail()
            ),
            Err(error) => format!(
                "removing {REMOTE_ARTIFACT_ROOT} on {}: {error}",
                instance.name
            ),
        };
        Some(error_kind(deployment, detail))
    });
    RunErrors(
        futures::future::join_all(removals)
            .await
            .into_iter()
            .flatten()
            .collect(),
    )
}

fn cleanup_error(deployment: &Deployment, detail: String) -> Error {
    Error::Cleanup {
        deployment: deployment.name.clone(),
        detail,
    }
}

/// Releases the target's access (temporary users), reporting a failure as a clean-up error
/// (exit bit 16, bbr's `CleanupStep`).
async fn release_target(target: &dyn Target, errors: &mut RunErrors) {
    if let Err(error) = target.release_access().await {
        errors.push(Error::Cleanup {
            deployment: target.name().to_string(),
            detail: error.to_string(),
        });
    }
}

/// The end of a journaled run: its journal goes unless something it lists may be left (an
/// unlock or a clean-up failed, or the journal could not be kept up to date), in which case
/// the next command against the deployment undoes it.
async fn finish_journal(context: &RunContext, errors: &RunErrors) {
    let left = errors.errors().iter().any(|e| {
        e.is_unlock_failure()
            || e.exit_bit() == crate::error::exit_bit::CLEANUP
            || matches!(e, Error::JournalWrite { .. } | Error::LeftoverUser { .. })
    });
    if !left {
        context.journal_done().await;
    }
}

/// Starts a journaled run: writes its journal before anything is reached, so that a state
/// directory that cannot be written stops the run at once ([`Error::JournalWrite`]).
async fn begin_journal(target: &dyn Target, context: &RunContext) -> Result<(), RunErrors> {
    context
        .journal_begin(target.name())
        .await
        .map_err(RunErrors::from)
}
