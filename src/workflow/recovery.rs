//! Keeping and replaying the run journal ([`crate::workflow::journal`]) during backups.
//!
//! A backup notes each lock layer before running it and each remote artifact directory before
//! creating it; the journal goes away once the run has unlocked and cleaned up. The next backup
//! or `backup-cleanup` of the deployment that finds a journal left by a dead process unlocks
//! exactly the jobs it lists and removes exactly the directories it lists.

use super::{remove_artifact_roots, run_scripts, RunContext};
use crate::error::{Error, RunErrors};
use crate::model::deployment::Deployment;
use crate::model::job::{Job, LockDirection, ScriptName};
use crate::model::lock_order::JobRef;
use crate::workflow::journal::{process_alive, store_key, this_host, Journal, LockedJob};
use cairn_store::{ArtifactStore, ArtifactStoreExt, ObjectKey, PutOptions};

impl RunContext {
    /// Records, before they run, the lock scripts of a layer.
    pub(crate) async fn journal_locks(&self, deployment: &Deployment, layer: &[JobRef]) {
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
        })
        .await;
    }

    /// Records, before it is created, an instance's remote artifact directory.
    pub(crate) async fn journal_artifact_root(&self, deployment: &Deployment, instance: usize) {
        let name = deployment.instances[instance].name.to_string();
        self.update_journal(deployment, |journal| {
            if !journal.artifact_roots.contains(&name) {
                journal.artifact_roots.push(name);
            }
        })
        .await;
    }

    /// The run unlocked and cleaned up: nothing is left to undo.
    pub(crate) async fn journal_done(&self) {
        if let Some(file) = &self.journal {
            file.remove();
        }
        let written = self.journal_state.lock().expect("journal lock").clone();
        if let (Some(store), Some(journal)) = (&self.journal_store, written) {
            let key = store_key(&journal.deployment, &journal.host, journal.pid);
            if let Ok(key) = ObjectKey::parse(&key) {
                if let Err(error) = store.delete(&key, None).await {
                    tracing::warn!("Cannot remove the run journal {key} from {store}: {error}");
                }
            }
        }
    }

    async fn update_journal(&self, deployment: &Deployment, change: impl FnOnce(&mut Journal)) {
        let Some(file) = &self.journal else { return };
        let snapshot = {
            let mut state = self.journal_state.lock().expect("journal lock");
            let journal = state.get_or_insert_with(|| Journal {
                deployment: deployment.name.clone(),
                pid: std::process::id(),
                host: this_host(),
                started_at: chrono::Utc::now(),
                locked: Vec::new(),
                artifact_roots: Vec::new(),
            });
            change(journal);
            journal.clone()
        };
        if let Err(error) = file.write(&snapshot) {
            tracing::warn!(
                "Cannot write the run journal: {error}; a SIGKILL now would need backup-cleanup"
            );
        }
        if let Some(store) = &self.journal_store {
            let key = store_key(&snapshot.deployment, &snapshot.host, snapshot.pid);
            let data = serde_json::to_vec_pretty(&snapshot).expect("journal serializes");
            let written = match ObjectKey::parse(&key) {
                Ok(key) => store
                    .put_bytes(&key, data.into(), &PutOptions::default())
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string()),
                Err(error) => Err(error),
            };
            if let Err(error) = written {
                tracing::warn!("Cannot write the run journal to {store}: {error}");
            }
        }
    }
}

/// Journals of `deployment` kept in the store, with their keys.
async fn store_journals(
    store: &dyn ArtifactStore,
    deployment: &str,
) -> Result<Vec<(ObjectKey, Journal)>, Error> {
    let mut found = Vec::new();
    for object in store.list(&format!("{deployment}/journal/")).await? {
        let key = object.key.clone();
        let data = store.get_bytes(&key, None).await?;
        if let Ok(journal) = serde_json::from_slice::<Journal>(&data) {
            found.push((key, journal));
        }
    }
    Ok(found)
}

/// After `backup-cleanup` unlocked everything: reports and removes the journals in the store.
pub(crate) async fn clear_store_journals(deployment: &Deployment, context: &RunContext) {
    let Some(store) = &context.journal_store else {
        return;
    };
    match store_journals(store.as_ref(), &deployment.name).await {
        Ok(journals) => {
            for (key, journal) in journals {
                tracing::info!(
                    "The run journal {key} in {store} (pid {} on {}, started {}) listed {} locked job(s); all jobs are now unlocked",
                    journal.pid,
                    journal.host,
                    journal.started_at,
                    journal.locked.len()
                );
                if let Err(error) = store.delete(&key, None).await {
                    tracing::warn!("Cannot remove the run journal {key}: {error}");
                }
            }
        }
        Err(error) => tracing::warn!("Cannot read the run journals in {store}: {error}"),
    }
}

/// Journals in the store: this machine's dead runs are recovered like local ones; a journal
/// of another machine cannot be known dead, so the backup stops and names it.
async fn recover_from_store(deployment: &Deployment, context: &RunContext) -> RunErrors {
    let Some(store) = &context.journal_store else {
        return RunErrors::new();
    };
    let journals = match store_journals(store.as_ref(), &deployment.name).await {
        Ok(journals) => journals,
        Err(error) => return error.into(),
    };
    let here = this_host();
    let mut errors = RunErrors::new();
    for (key, journal) in journals {
        if journal.host == here && journal.pid == std::process::id() {
            continue;
        }
        if journal.host != here {
            errors.push(Error::ForeignJournal {
                deployment: deployment.name.clone(),
                host: journal.host.clone(),
                pid: journal.pid,
                started_at: journal.started_at.to_rfc3339(),
                locked: journal.locked.len(),
            });
            continue;
        }
        if process_alive(journal.pid) {
            continue;
        }
        let undone = undo(deployment, &journal, context).await;
        if undone.is_empty() {
            let _ = store.delete(&key, None).await;
        }
        errors.extend(undone);
    }
    errors
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
        return recover_from_store(deployment, context).await;
    };
    if journal.pid != std::process::id() && process_alive(journal.pid) {
        tracing::warn!(
            "The journal {} belongs to a run that is still going (pid {}); leaving it alone",
            file.path().display(),
            journal.pid
        );
        return RunErrors::new();
    }
    let errors = undo(deployment, &journal, context).await;
    if errors.is_empty() {
        file.remove();
        if let Some(store) = &context.journal_store {
            let key = store_key(&journal.deployment, &journal.host, journal.pid);
            if let Ok(key) = ObjectKey::parse(&key) {
                let _ = store.delete(&key, None).await;
            }
        }
    }
    errors
}

/// Unlocks the jobs and removes the directories a journal lists, reporting each.
async fn undo(deployment: &Deployment, journal: &Journal, context: &RunContext) -> RunErrors {
    tracing::warn!(
        "Found the journal of an interrupted run of {} (pid {} on {}, started {}): unlocking {} job(s) and removing {} artifact directory(ies) it left",
        journal.deployment,
        journal.pid,
        if journal.host.is_empty() { "this machine" } else { &journal.host },
        journal.started_at,
        journal.locked.len(),
        journal.artifact_roots.len()
    );
    let mut errors = unlock_listed(deployment, journal, context).await;
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
    let environment = |_: &crate::model::deployment::Instance, _: &Job| {
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
        instance: crate::model::job::InstanceName::new(deployment.name.clone(), "*"),
        action: "Recovering an interrupted run".into(),
        detail,
    }
}
