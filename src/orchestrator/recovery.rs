//! Keeping and replaying the run journal ([`crate::journal`]) during backups.
//!
//! A backup notes each lock layer before running it and each remote artifact directory before
//! creating it; the journal goes away once the run has unlocked and cleaned up. The next backup
//! or `backup-cleanup` of the deployment that finds a journal left by a dead process unlocks
//! exactly the jobs it lists and removes exactly the directories it lists.

use super::{remove_artifact_roots, run_scripts, RunContext};
use crate::deployment::Deployment;
use crate::error::{Error, RunErrors};
use crate::job::{Job, LockDirection, ScriptName};
use crate::journal::{process_alive, Journal, LockedJob};
use crate::lock_order::JobRef;

impl RunContext {
    /// Records, before they run, the lock scripts of a layer.
    pub(crate) fn journal_locks(&self, deployment: &Deployment, layer: &[JobRef]) {
        self.update_journal(deployment, |journal| {
            for &job_ref in layer {
                let (instance, job) = deployment.job(job_ref);
                let entry = LockedJob {
                    instance: instance.name.to_string(),
                    job: job.name.clone(),
                };
                if job.has(ScriptName::PreBackupLock) && !journal.locked.contains(&entry) {
                    journal.locked.push(entry);
                }
            }
        });
    }

    /// Records, before it is created, an instance's remote artifact directory.
    pub(crate) fn journal_artifact_root(&self, deployment: &Deployment, instance: usize) {
        let name = deployment.instances[instance].name.to_string();
        self.update_journal(deployment, |journal| {
            if !journal.artifact_roots.contains(&name) {
                journal.artifact_roots.push(name);
            }
        });
    }

    /// The run unlocked and cleaned up: nothing is left to undo.
    pub(crate) fn journal_done(&self) {
        if let Some(file) = &self.journal {
            file.remove();
        }
    }

    fn update_journal(&self, deployment: &Deployment, change: impl FnOnce(&mut Journal)) {
        let Some(file) = &self.journal else { return };
        let mut state = self.journal_state.lock().expect("journal lock");
        let journal = state.get_or_insert_with(|| Journal {
            deployment: deployment.name.clone(),
            pid: std::process::id(),
            started_at: chrono::Utc::now(),
            locked: Vec::new(),
            artifact_roots: Vec::new(),
        });
        change(journal);
        if let Err(error) = file.write(journal) {
            tracing::warn!(
                "Cannot write the run journal: {error}; a SIGKILL now would need backup-cleanup"
            );
        }
    }
}

/// Undoes what an interrupted earlier run left, as its journal lists it. Returns the errors of
/// the unlock scripts and removals; the journal is removed only when everything succeeded.
pub(crate) async fn recover_interrupted_run(
    deployment: &Deployment,
    context: &RunContext,
) -> RunErrors {
    let Some(file) = &context.journal else {
        return RunErrors::new();
    };
    let Some(journal) = file.read() else {
        return RunErrors::new();
    };
    if journal.pid != std::process::id() && process_alive(journal.pid) {
        tracing::warn!(
            "The journal {} belongs to a run that is still going (pid {}); leaving it alone",
            file.path().display(),
            journal.pid
        );
        return RunErrors::new();
    }
    tracing::warn!(
        "Found the journal of an interrupted run of {} (pid {}, started {}): unlocking {} job(s) and removing {} artifact directory(ies) it left",
        journal.deployment,
        journal.pid,
        journal.started_at,
        journal.locked.len(),
        journal.artifact_roots.len()
    );
    let mut errors = unlock_listed(deployment, &journal, context).await;
    let roots: Vec<usize> = (0..deployment.instances.len())
        .filter(|&i| {
            journal
                .artifact_roots
                .contains(&deployment.instances[i].name.to_string())
        })
        .collect();
    errors.extend(remove_artifact_roots(deployment, &roots, recovery_error).await);
    if errors.is_empty() {
        for locked in &journal.locked {
            tracing::info!("Recovered: unlocked {} on {}", locked.job, locked.instance);
        }
        for root in &journal.artifact_roots {
            tracing::info!("Recovered: removed /var/vcap/store/bbr-backup on {root}");
        }
        file.remove();
    }
    errors
}

async fn unlock_listed(
    deployment: &Deployment,
    journal: &Journal,
    context: &RunContext,
) -> RunErrors {
    let layers = match deployment.lock_layers(LockDirection::Backup) {
        Ok(layers) => layers,
        Err(error) => return error.into(),
    };
    let listed = |job_ref: &JobRef| {
        let (instance, job) = deployment.job(*job_ref);
        journal
            .locked
            .iter()
            .any(|l| l.instance == instance.name.to_string() && l.job == job.name)
    };
    let environment = |_: &crate::deployment::Instance, _: &Job| {
        vec![("BBR_AFTER_BACKUP_SCRIPTS_SUCCESSFUL", "false".to_string())]
    };
    let never = tokio_util::sync::CancellationToken::new();
    let mut errors = RunErrors::new();
    for layer in layers.unlock_order() {
        let subset: Vec<JobRef> = layer.iter().copied().filter(|r| listed(r)).collect();
        errors.extend(
            run_scripts(
                deployment,
                &subset,
                ScriptName::PostBackupUnlock,
                &environment,
                context,
                &never,
            )
            .await,
        );
    }
    errors
}

fn recovery_error(deployment: &Deployment, detail: String) -> Error {
    Error::RemoteCommand {
        instance: crate::job::InstanceName::new(deployment.name.clone(), "*"),
        action: "Recovering an interrupted run".into(),
        detail,
    }
}
