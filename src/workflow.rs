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
pub mod drill;
pub mod journal;
mod recovery;
pub mod restore;
pub(crate) mod scripts;
pub(crate) mod transfer;
pub mod verify;

use scripts::{lock, run_scripts, unlock};

use std::sync::atomic::{AtomicBool, Ordering};

use tokio_util::sync::CancellationToken;

use crate::error::{Error, RunErrors};
use crate::model::deployment::{discover, Deployment, Target};
use crate::model::job::{ScriptName, ScriptRecord, REMOTE_ARTIFACT_ROOT};
use crate::remote::commands;
use crate::remote::RemoteHostExt;
use crate::report::events::{Event, EventSink};

/// Settings shared by every workflow.
#[derive(Debug, Clone)]
pub struct RunContext {
    /// At most this many scripts or transfers at once.
    pub parallelism: usize,
    /// Passed to `metadata` scripts as `BBR_VERSION`.
    pub version: String,
    /// Fired on SIGINT/SIGTERM.
    pub cancel: CancellationToken,
    /// The signal that fired the token, for the message.
    pub signal_name: std::sync::Arc<std::sync::Mutex<Option<String>>>,
    /// Every script that finished, for the manifest's lock and unlock times.
    pub script_log: std::sync::Arc<std::sync::Mutex<Vec<ScriptRecord>>>,
    /// Where `--json` events go.
    pub events: Option<std::sync::Arc<dyn EventSink>>,
    /// Longest a single job script may run (`--script-timeout`).
    pub script_timeout: Option<std::time::Duration>,
    /// Where this deployment's run journal is kept (backups and backup-cleanup).
    pub journal: Option<crate::workflow::journal::JournalFile>,
    /// The store that also keeps the journal (backups into a store, and backup-cleanup with
    /// `CAIRN_STORE`), so that another jumpbox finds what a killed run left.
    pub journal_store: Option<std::sync::Arc<dyn cairn_store::ArtifactStore>>,
    journal_state: std::sync::Arc<std::sync::Mutex<Option<crate::workflow::journal::Journal>>>,
    /// Run each restored job's `post-restore-verify` after the restore (Cairn extension).
    pub verify_restore: bool,
    /// What those scripts said, in the order they finished.
    pub verifications: std::sync::Arc<std::sync::Mutex<Vec<verify::Verification>>>,
}

impl RunContext {
    /// A context with no cancellation wired.
    #[must_use]
    pub fn new(parallelism: usize, version: &str) -> RunContext {
        RunContext {
            parallelism: parallelism.max(1),
            version: version.to_string(),
            cancel: CancellationToken::new(),
            signal_name: std::sync::Arc::default(),
            script_log: std::sync::Arc::default(),
            events: None,
            script_timeout: None,
            journal: None,
            journal_store: None,
            journal_state: std::sync::Arc::default(),
            verify_restore: false,
            verifications: std::sync::Arc::default(),
        }
    }

    /// Sends an event to the `--json` sink, if any.
    pub fn emit(&self, event: Event) {
        if let Some(events) = &self.events {
            events.emit(event);
        }
    }

    /// Records a finished script for the manifest and the metrics, and emits its event.
    pub fn record_script(
        &self,
        instance: &crate::model::job::InstanceName,
        job: &str,
        script: ScriptName,
        started_at: chrono::DateTime<chrono::Utc>,
        exit_status: u32,
    ) {
        let finished_at = chrono::Utc::now();
        self.script_log.lock().expect("lock").push(ScriptRecord {
            instance: instance.to_string(),
            job: job.to_string(),
            script,
            finished_at,
            success: exit_status == 0,
        });
        self.emit(Event::ScriptFinished {
            instance: instance.to_string(),
            job: job.to_string(),
            script: script.to_string(),
            started_at,
            finished_at,
            exit_status,
        });
    }

    /// Marks the run as interrupted by `signal`.
    pub fn interrupt(&self, signal: &str) {
        *self.signal_name.lock().expect("lock") = Some(signal.to_string());
        self.cancel.cancel();
    }

    fn interrupted(&self, operation: &'static str) -> Error {
        Error::Interrupted {
            operation,
            signal: self
                .signal_name
                .lock()
                .expect("lock")
                .clone()
                .unwrap_or_else(|| "a signal".into()),
        }
    }
}

/// Discovers the deployment unless interrupted first.
async fn discover_or_interrupt(
    target: &dyn Target,
    context: &RunContext,
    operation: &'static str,
) -> Result<Deployment, RunErrors> {
    tokio::select! {
        found = discover(target, context.parallelism, &context.version) => {
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

/// Releases the target's access (temporary users), reporting a failure as a clean-up error.
async fn release_target(target: &dyn Target, errors: &mut RunErrors) {
    if let Err(error) = target.release_access().await {
        errors.push(Error::Cleanup {
            deployment: target.name().to_string(),
            detail: error.to_string(),
        });
    }
}
