//! `backup-cleanup` and `restore-cleanup` (bbr-facts §3.6): after a failed or killed run, run
//! every unlock script (with `BBR_AFTER_BACKUP_SCRIPTS_SUCCESSFUL=false` for backup) in
//! reverse lock order, and remove `/var/vcap/store/bbr-backup` from every instance.
//! Unlock scripts must therefore be idempotent: they run even when nothing was locked.
//! `post-restore-unlock` runs one job at a time, as bbr's serial executor does.
//!
//! Every failure here is a plain error (exit 1), as bbr's `CleanupPreviousStep`: removing the
//! artifact directories and the temporary SSH users too, which after a backup or restore are
//! clean-up errors (16). Success is logged as bbr's `'<deployment>' cleaned up`.
//!
//! `backup-cleanup` also discards a pending resumable backup (`backup --resumable`): its
//! staged artifacts go with the artifact directories, its stored segments are deleted (those
//! under Object Lock are reported and left to expire) and its journal entry is removed.
//!
//! The journals of killed runs ([`super::recovery`]): what a clean-up does not do itself —
//! the other kind's unlock for jobs a journal lists (`post-restore-unlock` in a
//! `backup-cleanup` after a killed restore, and the reverse), the temporary users a killed run
//! left — is undone first; once the clean-up succeeded, the journals are cleared.

use super::recovery::{
    clear_after_cleanup, discard_resumables, recover_interrupted_runs, Recovery,
};
use super::{begin_journal, discover_or_interrupt, remove_artifact_roots, unlock, RunContext};
use crate::error::{Error, RunErrors};
use crate::model::deployment::{Deployment, Target};
use crate::model::job::{LockDirection, ScriptName};
use crate::workflow::journal::LockKind;

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
    if let Err(errors) = begin_journal(target, context).await {
        return errors;
    }
    let mut errors = RunErrors::new();
    match discover_or_interrupt(target, context, "Clean-up").await {
        Ok(deployment) => {
            errors.extend(cleanup_deployment(target, &deployment, kind, context).await);
        }
        Err(e) => errors.extend(e),
    }
    let released = target.release_access().await;
    if let Err(error) = released {
        errors.push(previous_cleanup_error(target.name(), error.to_string()));
    } else if errors.is_empty() {
        context.journal_done().await;
    }
    if errors.is_empty() {
        tracing::info!("'{}' cleaned up", target.name());
    }
    errors
}

async fn cleanup_deployment(
    target: &dyn Target,
    deployment: &Deployment,
    kind: CleanupKind,
    context: &RunContext,
) -> RunErrors {
    let own_lock = match kind {
        CleanupKind::Backup => LockKind::Backup,
        CleanupKind::Restore => LockKind::Restore,
    };
    let mut errors = recover_interrupted_runs(
        target,
        deployment,
        context,
        Recovery::BesideCleanup(own_lock),
    )
    .await;
    let (direction, script) = match kind {
        CleanupKind::Backup => (LockDirection::Backup, ScriptName::PostBackupUnlock),
        CleanupKind::Restore => (LockDirection::Restore, ScriptName::PostRestoreUnlock),
    };
    let layers = match deployment.lock_layers(direction) {
        Ok(layers) => layers,
        Err(error) => {
            errors.push(error);
            return errors;
        }
    };
    let environment =
        move |_: &crate::model::deployment::Instance, _: &crate::model::job::Job| match kind {
            CleanupKind::Backup => {
                vec![("BBR_AFTER_BACKUP_SCRIPTS_SUCCESSFUL", "false".to_string())]
            }
            CleanupKind::Restore => Vec::new(),
        };
    errors.extend(unlock(deployment, &layers, script, &environment, context).await);
    let instances: Vec<usize> = (0..deployment.instances.len())
        .filter(|&i| deployment.instances[i].can_backup() || deployment.instances[i].can_restore())
        .collect();
    errors.extend(
        remove_artifact_roots(deployment, &instances, |deployment, detail| {
            previous_cleanup_error(&deployment.name, detail)
        })
        .await,
    );
    if errors.is_empty() && kind == CleanupKind::Backup {
        errors.extend(discard_resumables(deployment, context).await);
    }
    if errors.is_empty() {
        clear_after_cleanup(deployment, context).await;
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
