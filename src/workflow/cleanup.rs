//! `backup-cleanup` and `restore-cleanup` (bbr-facts §3.6): after a failed or killed run, run
//! every unlock script (with `BBR_AFTER_BACKUP_SCRIPTS_SUCCESSFUL=false` for backup) in
//! reverse lock order, and remove `/var/vcap/store/bbr-backup` from every instance.
//! Unlock scripts must therefore be idempotent: they run even when nothing was locked.
//! `post-restore-unlock` runs one job at a time, as bbr's serial executor does.
//!
//! Every failure here is a plain error (exit 1), as bbr's `CleanupPreviousStep`: removing the
//! artifact directories and the temporary SSH users too, which after a backup or restore are
//! clean-up errors (16). Success is logged as bbr's `'<deployment>' cleaned up`.

use super::{discover_or_interrupt, remove_artifact_roots, unlock, RunContext};
use crate::error::{Error, RunErrors};
use crate::model::deployment::{Deployment, Target};
use crate::model::job::{LockDirection, ScriptName};

/// Which clean-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CleanupKind {
    /// After a backup: `post-backup-unlock` with success=false.
    Backup,
    /// After a restore: `post-restore-unlock`.
    Restore,
}

/// Unlocks everything and removes leftovers.
pub async fn cleanup(target: &dyn Target, kind: CleanupKind, context: &RunContext) -> RunErrors {
    let mut errors = RunErrors::new();
    match discover_or_interrupt(target, context, "Clean-up").await {
        Ok(deployment) => errors.extend(cleanup_deployment(&deployment, kind, context).await),
        Err(e) => errors.extend(e),
    }
    if let Err(error) = target.release_access().await {
        errors.push(previous_cleanup_error(target.name(), error.to_string()));
    }
    if errors.is_empty() {
        tracing::info!("'{}' cleaned up", target.name());
    }
    errors
}

async fn cleanup_deployment(
    deployment: &Deployment,
    kind: CleanupKind,
    context: &RunContext,
) -> RunErrors {
    let (direction, script) = match kind {
        CleanupKind::Backup => (LockDirection::Backup, ScriptName::PostBackupUnlock),
        CleanupKind::Restore => (LockDirection::Restore, ScriptName::PostRestoreUnlock),
    };
    let layers = match deployment.lock_layers(direction) {
        Ok(layers) => layers,
        Err(error) => return error.into(),
    };
    let environment =
        move |_: &crate::model::deployment::Instance, _: &crate::model::job::Job| match kind {
            CleanupKind::Backup => {
                vec![("BBR_AFTER_BACKUP_SCRIPTS_SUCCESSFUL", "false".to_string())]
            }
            CleanupKind::Restore => Vec::new(),
        };
    let mut errors = unlock(deployment, &layers, script, &environment, context).await;
    let instances: Vec<usize> = (0..deployment.instances.len())
        .filter(|&i| deployment.instances[i].can_backup() || deployment.instances[i].can_restore())
        .collect();
    errors.extend(
        remove_artifact_roots(deployment, &instances, |deployment, detail| {
            previous_cleanup_error(&deployment.name, detail)
        })
        .await,
    );
    if let (CleanupKind::Backup, Some(file)) = (kind, &context.journal) {
        if let Some(journal) = file.read() {
            if !crate::workflow::journal::process_alive(journal.pid) && errors.is_empty() {
                tracing::info!(
                    "The journal of an interrupted run (pid {}, started {}) listed {} locked job(s); all jobs are now unlocked",
                    journal.pid,
                    journal.started_at,
                    journal.locked.len()
                );
                file.remove();
            }
        }
    }
    if let (CleanupKind::Backup, true) = (kind, errors.is_empty()) {
        super::recovery::clear_store_journals(deployment, context).await;
    }
    errors
}

/// bbr reports the clean-up subcommands' own removal failures (artifact directories and
/// temporary users) as plain errors (exit 1).
fn previous_cleanup_error(deployment: &str, detail: String) -> Error {
    Error::RemoteCommand {
        instance: crate::model::job::InstanceName::new(deployment.to_string(), "*"),
        action: "Cleaning up previous backup".into(),
        detail,
    }
}
