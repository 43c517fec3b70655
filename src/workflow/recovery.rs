//! Keeping the run journal ([`crate::workflow::journal`]) and replaying the journals of killed
//! runs.
//!
//! A run notes each lock layer before running it, each remote artifact directory before
//! creating it and each temporary SSH user before asking the Director for it; a note that
//! cannot be written is an error ([`Error::JournalWrite`]) that stops the run before that lock,
//! directory or user. The journal goes away once the run has unlocked, cleaned up and removed
//! its user.
//!
//! What the next command against the same deployment does with a journal whose run is dead
//! ([`Recovery`]): `backup`, `restore` and a drill undo exactly what it lists — the unlock
//! script of each listed lock (`post-backup-unlock` with
//! `BBR_AFTER_BACKUP_SCRIPTS_SUCCESSFUL=false`, or `post-restore-unlock`), removal of the
//! listed artifact directories, removal of the listed `bosh_` users through the Director —
//! before their own checks; the clean-ups undo what they would not do themselves (the other
//! kind's locks, the users) and clear the journal after their own work; the read-only
//! commands report it with the command that clears it and change nothing.

use std::sync::Arc;

use async_trait::async_trait;

use super::{remove_artifact_roots, run_scripts, RunContext};
use crate::error::{Error, RunErrors};
use crate::format::manifest::ManifestSegment;
use crate::format::sink::SegmentObserver;
use crate::model::deployment::{AccessJournal, Deployment, Target, TemporaryUser};
use crate::model::job::{Job, LockDirection, ScriptName};
use crate::model::lock_order::JobRef;
use crate::workflow::journal::{
    liveness, store_key, Journal, JournalFile, Liveness, LockKind, LockedJob, RepositoryBackupRef,
    ResumableBackup,
};
use cairn_store::{ArtifactStore, ArtifactStoreExt, ObjectKey, PutOptions};

impl RunContext {
    /// Writes this run's journal before anything is locked or created, so that a state
    /// directory that cannot be written stops the run at once.
    pub(crate) async fn journal_begin(&self, deployment: &str) -> Result<(), Error> {
        self.update_journal(deployment, |_| {}).await
    }

    /// Records, before they run, the lock scripts of a layer.
    pub(crate) async fn journal_locks(
        &self,
        deployment: &Deployment,
        layer: &[JobRef],
        script: ScriptName,
    ) -> Result<(), Error> {
        let Some(lock) = LockKind::of(script) else {
            return Ok(());
        };
        self.update_journal(&deployment.name, |journal| {
            for &job_ref in layer {
                let (instance, job) = deployment.job(job_ref);
                let entry = LockedJob {
                    instance: instance.name.to_string(),
                    job: job.name.clone(),
                    lock,
                };
                if job.has(script) && !journal.locked.contains(&entry) {
                    journal.locked.push(entry);
                }
            }
        })
        .await
    }

    /// Records, before it is created, an instance's remote artifact directory.
    pub(crate) async fn journal_artifact_root(
        &self,
        deployment: &Deployment,
        instance: usize,
    ) -> Result<(), Error> {
        let name = deployment.instances[instance].name.to_string();
        self.update_journal(&deployment.name, |journal| {
            if !journal.artifact_roots.contains(&name) {
                journal.artifact_roots.push(name);
            }
        })
        .await
    }

    /// Starts this run's resumable backup entry (a new one, or the one it resumes), and
    /// notes that the jobs are unlocked (a resumable backup's journal outlives the run).
    pub(crate) async fn journal_resumable(
        &self,
        deployment: &str,
        entry: ResumableBackup,
    ) -> Result<(), Error> {
        self.update_journal(deployment, |journal| {
            journal.locked.clear();
            journal.resumable_backup = Some(entry);
        })
        .await
    }

    /// The resumable backup was drained completely: the entry goes (and the journal with it
    /// at the end of the run).
    pub(crate) async fn journal_resumable_done(&self, deployment: &str) {
        if let Err(error) = self
            .update_journal(deployment, |journal| journal.resumable_backup = None)
            .await
        {
            tracing::warn!("{error}");
        }
    }

    /// Records, before its first artifact snapshot, a backup into a repository (`None`: it
    /// is complete, or its snapshots were deleted: nothing of it is left to undo).
    pub(crate) async fn journal_repository_backup(
        &self,
        deployment: &str,
        entry: Option<RepositoryBackupRef>,
    ) -> Result<(), Error> {
        self.update_journal(deployment, |journal| journal.repository_backup = entry)
            .await
    }

    /// The run unlocked, cleaned up and removed its user: nothing is left to undo. A journal
    /// with a resumable backup stays for `backup --resume` (its locks and users are gone), and
    /// one with a repository backup whose snapshots could not be deleted stays for the next
    /// run to delete them.
    pub(crate) async fn journal_done(&self) {
        let written = self.journal_state.lock().expect("journal lock").clone();
        if written.is_none() {
            // Nothing was written: a file at this run's path is another run's.
            return;
        }
        if written
            .as_ref()
            .is_some_and(|j| j.resumable_backup.is_some() || j.repository_backup.is_some())
        {
            let deployment = written.map(|j| j.deployment).unwrap_or_default();
            let _ = self
                .update_journal(&deployment, |journal| {
                    journal.locked.clear();
                    journal.artifact_roots.clear();
                })
                .await;
            return;
        }
        if let Some(file) = &self.journal {
            file.remove();
        }
        if let (Some(store), Some(journal)) = (&self.journal_store, written) {
            let key = store_key(&journal.deployment, &journal.host, journal.pid);
            if let Ok(key) = ObjectKey::parse(&key) {
                if let Err(error) = store.delete(&key, None).await {
                    tracing::warn!("Cannot remove the run journal {key} from {store}: {error}");
                }
            }
        }
    }

    async fn update_journal(
        &self,
        deployment: &str,
        change: impl FnOnce(&mut Journal),
    ) -> Result<(), Error> {
        let Some(file) = &self.journal else {
            return Ok(());
        };
        let write_error = |error: std::io::Error| Error::JournalWrite {
            path: file.path().display().to_string(),
            detail: error.to_string(),
        };
        let (snapshot, first) = {
            let mut state = self.journal_state.lock().expect("journal lock");
            let first = state.is_none();
            let journal = state.get_or_insert_with(|| Journal::new(file.kind(), deployment));
            change(journal);
            (journal.clone(), first)
        };
        if first {
            file.move_aside_existing().map_err(write_error)?;
        }
        file.write(&snapshot).map_err(write_error)?;
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
        Ok(())
    }
}

#[async_trait]
impl AccessJournal for RunContext {
    async fn record_user(&self, user: &TemporaryUser) -> Result<(), Error> {
        self.update_journal(&user.deployment, |journal| {
            if !journal.ssh_users.contains(user) {
                journal.ssh_users.push(user.clone());
            }
        })
        .await
    }

    async fn user_removed(&self, user: &str) {
        let recorded = self
            .journal_state
            .lock()
            .expect("journal lock")
            .as_ref()
            .map(|j| j.deployment.clone());
        let Some(deployment) = recorded else { return };
        if let Err(error) = self
            .update_journal(&deployment, |journal| {
                journal.ssh_users.retain(|u| u.user != user);
            })
            .await
        {
            tracing::warn!("{error}");
        }
    }
}

/// Has the target record its temporary access in this run's journal (deployment mode).
pub(crate) fn journal_target_access(target: &dyn Target, context: &RunContext) {
    if context.journal.is_some() {
        target.journal_access(Arc::new(context.clone()));
    }
}

/// What a command does with the journals of killed runs of its deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Recovery {
    /// Undo everything they list (backup, restore, drill).
    Undo,
    /// A clean-up that unlocks every job with this kind's script and removes every artifact
    /// directory itself: undo the rest (the other kind's locks, temporary users) now, and
    /// clear the journals once the clean-up succeeded ([`clear_after_cleanup`]).
    BesideCleanup(LockKind),
    /// Read-only commands: report what is left and the command that clears it.
    Report,
}

/// Where a journal of a killed run was found.
#[derive(Debug)]
enum Origin {
    Local(std::path::PathBuf),
    Store(ObjectKey),
}

/// Finds the journals that killed runs of `deployment` left and undoes or reports them
/// ([`Recovery`]). Returns the errors of the undoing; a journal is removed only when
/// everything it lists was undone.
pub(crate) async fn recover_interrupted_runs(
    target: &dyn Target,
    deployment: &Deployment,
    context: &RunContext,
    recovery: Recovery,
) -> RunErrors {
    let (left, mut errors) = journals_left(deployment, context, recovery).await;
    for (origin, journal) in left {
        if journal.is_empty() && journal.resumable_backup.is_none() {
            if recovery != Recovery::Report {
                forget(&origin, &journal, context).await;
            }
            continue;
        }
        match recovery {
            Recovery::Report => report(&journal, context),
            Recovery::Undo => {
                let undone = undo(target, deployment, &journal, context, None).await;
                if undone.is_empty() {
                    forget(&origin, &journal, context).await;
                }
                errors.extend(undone);
            }
            Recovery::BesideCleanup(kind) => {
                errors.extend(undo(target, deployment, &journal, context, Some(kind)).await);
            }
        }
    }
    errors
}

/// The dead runs' journals, local then in the store (those not already found locally).
async fn journals_left(
    deployment: &Deployment,
    context: &RunContext,
    recovery: Recovery,
) -> (Vec<(Origin, Journal)>, RunErrors) {
    let mut errors = RunErrors::new();
    let mut left = Vec::new();
    let Some(file) = &context.journal else {
        return (left, errors);
    };
    for found in file.left_behind() {
        match liveness(&found.journal) {
            Liveness::Dead => left.push((Origin::Local(found.path), found.journal)),
            Liveness::ThisRun => {}
            Liveness::Running | Liveness::OtherHost => tracing::warn!(
                "The journal {} belongs to a run that may still be going ({}); leaving it alone",
                found.path.display(),
                found.journal.origin()
            ),
        }
    }
    let Some(store) = &context.journal_store else {
        return (left, errors);
    };
    let journals = match store_journals(store.as_ref(), &deployment.name).await {
        Ok(journals) => journals,
        Err(error) => {
            errors.push(error);
            return (left, errors);
        }
    };
    for (key, journal) in journals {
        let known = left
            .iter()
            .any(|(_, j)| j.pid == journal.pid && j.host == journal.host);
        match liveness(&journal) {
            _ if known => {}
            Liveness::Dead => left.push((Origin::Store(key), journal)),
            // A resumable backup's entry is written once its jobs were unlocked: nothing of it
            // waits to be undone. `backup --resume` adopts it from any jumpbox
            // ([`pending_resumables`]); a plain backup is refused naming both commands.
            Liveness::OtherHost
                if recovery == Recovery::Undo && journal.resumable_backup.is_some() => {}
            Liveness::OtherHost if recovery == Recovery::Undo => {
                errors.push(Error::ForeignJournal {
                    deployment: deployment.name.clone(),
                    host: journal.host.clone(),
                    pid: journal.pid,
                    started_at: journal.started_at.to_rfc3339(),
                    locked: journal.locked.len(),
                });
            }
            Liveness::OtherHost if recovery == Recovery::Report => report(&journal, context),
            Liveness::OtherHost | Liveness::Running | Liveness::ThisRun => {}
        }
    }
    (left, errors)
}

/// Removes a journal whose every entry was undone (and its copy in the store); a journal
/// with a resumable backup keeps that entry for `backup --resume`.
async fn forget(origin: &Origin, journal: &Journal, context: &RunContext) {
    if let (Origin::Store(_), Some(_)) = (origin, &journal.resumable_backup) {
        return;
    }
    if let (Origin::Local(path), Some(_)) = (origin, &journal.resumable_backup) {
        let kept = Journal {
            locked: Vec::new(),
            artifact_roots: Vec::new(),
            ssh_users: Vec::new(),
            ..journal.clone()
        };
        if let Ok(text) = serde_json::to_string_pretty(&kept) {
            if std::fs::write(path, text).is_ok() {
                return;
            }
        }
    }
    let Some(store) = &context.journal_store else {
        if let Origin::Local(path) = origin {
            let _ = std::fs::remove_file(path);
        }
        return;
    };
    let key = match origin {
        Origin::Local(path) => {
            let _ = std::fs::remove_file(path);
            ObjectKey::parse(&store_key(&journal.deployment, &journal.host, journal.pid)).ok()
        }
        Origin::Store(key) => Some(key.clone()),
    };
    if let Some(key) = key {
        let _ = store.delete(&key, None).await;
    }
}

/// A read-only command's report of a killed run's journal: what it left and the command
/// that clears it.
fn report(journal: &Journal, context: &RunContext) {
    let prefix = context
        .command_prefix
        .clone()
        .unwrap_or_else(|| format!("cairn deployment --deployment {}", journal.deployment));
    tracing::warn!(
        "A killed run left: {}, from the {}. `{prefix} {}` clears it (so does the next backup or restore of {}); this command changes nothing",
        journal.listing(),
        journal.origin(),
        journal.cleanup_command(),
        journal.deployment
    );
}

/// For the catalog commands, which have no target (`backups list`, `show`, `verify`): what
/// runs of `deployment` that are over left behind, from this machine's journals and those in
/// `store`, one line each naming the command that clears it. Changes nothing.
pub async fn left_behind_report(store: &dyn ArtifactStore, deployment: &str) -> Vec<String> {
    let mut lines = Vec::new();
    let mut seen = Vec::new();
    let local = JournalFile::new(&JournalFile::default_state_dir(), deployment);
    for found in local.left_behind() {
        let journal = found.journal;
        seen.push((journal.host.clone(), journal.pid));
        if liveness(&journal) == Liveness::Dead && !nothing_left(&journal) {
            lines.push(left_behind_line(&journal, false));
        }
    }
    match store_journals(store, deployment).await {
        Ok(journals) => {
            for (_, journal) in journals {
                let known = seen.contains(&(journal.host.clone(), journal.pid));
                let over = match liveness(&journal) {
                    Liveness::Dead => Some(false),
                    Liveness::OtherHost => Some(true),
                    Liveness::Running | Liveness::ThisRun => None,
                };
                if let (Some(elsewhere), false, false) = (over, known, nothing_left(&journal)) {
                    lines.push(left_behind_line(&journal, elsewhere));
                }
            }
        }
        Err(error) => lines.push(format!(
            "Cannot read the run journals of {deployment} in {store}: {error}"
        )),
    }
    lines
}

/// The ids of `deployment`'s resumable backups pending in `store` (journals of runs that are
/// over, or of another machine, kept in the store beside the segments): `backups list` shows
/// them as `resumable`, not `incomplete`.
pub async fn pending_resumable_ids(store: &dyn ArtifactStore, deployment: &str) -> Vec<String> {
    let Ok(journals) = store_journals(store, deployment).await else {
        return Vec::new();
    };
    journals
        .into_iter()
        .filter(|(_, journal)| matches!(liveness(journal), Liveness::Dead | Liveness::OtherHost))
        .filter_map(|(_, journal)| journal.resumable_backup.map(|entry| entry.backup_id))
        .collect()
}

/// A journal that lists nothing to undo and no pending resumable backup.
fn nothing_left(journal: &Journal) -> bool {
    journal.is_empty() && journal.resumable_backup.is_none()
}

fn left_behind_line(journal: &Journal, elsewhere: bool) -> String {
    if let Some(entry) = &journal.resumable_backup {
        let stored: usize = entry.segments.values().map(Vec::len).sum();
        let command = format!("`cairn deployment --deployment {} ...", journal.deployment);
        return format!(
            "The resumable backup {} of {} is pending ({stored} segment(s) stored, the rest staged on the instances, from the {}): finish it with {command} backup --resume` or discard it with {command} backup-cleanup` (same target and store); this command changes nothing",
            entry.backup_id,
            journal.deployment,
            journal.origin()
        );
    }
    let password = if journal.repository_backup.is_some() {
        " (and CAIRN_REPOSITORY_PASSWORD_FILE, for the repository's snapshots)"
    } else {
        ""
    };
    let clear = format!(
        "`cairn deployment --deployment {} ... {}` with the same target and store{password}",
        journal.deployment,
        journal.cleanup_command()
    );
    if elsewhere {
        format!(
            "A run on another machine left: {}, from the {}. If it is not running any more, {clear} clears it; this command changes nothing",
            journal.listing(),
            journal.origin()
        )
    } else {
        format!(
            "A killed run left: {}, from the {}. {clear} clears it (so does the next backup or restore of {}); this command changes nothing",
            journal.listing(),
            journal.origin(),
            journal.deployment
        )
    }
}

/// After a clean-up succeeded: every dead run's journal of the deployment is cleared, and
/// the journals kept in the store (`CAIRN_STORE`) are reported and removed.
pub(crate) async fn clear_after_cleanup(deployment: &Deployment, context: &RunContext) {
    if let Some(file) = &context.journal {
        for found in file.left_behind() {
            if liveness(&found.journal) == Liveness::Dead {
                if !found.journal.is_empty() {
                    tracing::info!(
                        "The journal of an interrupted run ({}) listed {}; all of it is now undone",
                        found.journal.origin(),
                        found.journal.listing()
                    );
                }
                forget(&Origin::Local(found.path.clone()), &found.journal, context).await;
            }
        }
    }
    clear_store_journals(deployment, context).await;
}

/// Journals of `deployment` kept in the store, with their keys.
async fn store_journals(
    store: &dyn ArtifactStore,
    deployment: &str,
) -> Result<Vec<(ObjectKey, Journal)>, Error> {
    let mut found = Vec::new();
    for object in store.list(&format!("{deployment}/journal/")).await? {
        let key = object.key.clone();
        let data = crate::format::store::get_record(store, &key, None).await?;
        if let Ok(journal) = serde_json::from_slice::<Journal>(&data) {
            found.push((key, journal));
        }
    }
    Ok(found)
}

/// After `backup-cleanup` unlocked everything: reports and removes the journals in the store.
async fn clear_store_journals(deployment: &Deployment, context: &RunContext) {
    let Some(store) = &context.journal_store else {
        return;
    };
    match store_journals(store.as_ref(), &deployment.name).await {
        Ok(journals) => {
            for (key, journal) in journals {
                if liveness(&journal) == Liveness::ThisRun {
                    continue;
                }
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

/// Unlocks the jobs, removes the directories and the temporary users a journal lists
/// (all but what the clean-up of kind `beside` does itself), reporting each.
async fn undo(
    target: &dyn Target,
    deployment: &Deployment,
    journal: &Journal,
    context: &RunContext,
    beside: Option<LockKind>,
) -> RunErrors {
    if beside.is_some() {
        tracing::warn!(
            "Found the journal of an interrupted run: the {}. It left: {}; this clean-up undoes all of it",
            journal.origin(),
            journal.listing()
        );
    } else if let Some(entry) = &journal.resumable_backup {
        tracing::warn!(
            "Found the journal of an interrupted resumable backup: the {}. Its backup {} stays pending (staged artifacts kept); left to undo: {}",
            journal.origin(),
            entry.backup_id,
            journal.listing()
        );
    } else {
        tracing::warn!(
            "Found the journal of an interrupted run: the {}. Undoing what it left: {}",
            journal.origin(),
            journal.listing()
        );
    }
    let mut errors = RunErrors::new();
    for kind in [LockKind::Backup, LockKind::Restore] {
        if beside != Some(kind) {
            errors.extend(unlock_listed(deployment, journal, kind, context).await);
        }
    }
    // A resumable backup's staged artifacts stay for `backup --resume` (`backup-cleanup`
    // removes them with everything else).
    let keep_roots = journal.resumable_backup.is_some();
    if beside.is_none() && !keep_roots {
        let roots: Vec<usize> = (0..deployment.instances.len())
            .filter(|&i| {
                journal
                    .artifact_roots
                    .contains(&deployment.instances[i].name.to_string())
            })
            .collect();
        errors.extend(remove_artifact_roots(deployment, &roots, recovery_error).await);
    }
    let mut users_removed = Vec::new();
    for user in &journal.ssh_users {
        tracing::info!(
            "Removing the SSH user {} that the interrupted run left on {}...",
            user.user,
            user.instance_list()
        );
        match target.remove_leftover_user(user).await {
            Ok(()) => users_removed.push(user),
            Err(error) => errors.push(error),
        }
    }
    for user in users_removed {
        tracing::info!(
            "Recovered: removed SSH user {} from {} through the Director",
            user.user,
            user.instance_list()
        );
    }
    let snapshots = match discard_repository_backup(journal, context).await {
        Ok(line) => line,
        Err(error) => {
            errors.push(error);
            None
        }
    };
    if errors.is_empty() {
        if let Some(line) = snapshots {
            tracing::info!("{line}");
        }
        for locked in &journal.locked {
            if beside != Some(locked.lock) {
                tracing::info!(
                    "Recovered: unlocked {} on {} ({})",
                    locked.job,
                    locked.instance,
                    locked.lock.unlock_script()
                );
            }
        }
        if beside.is_none() && !keep_roots {
            for root in &journal.artifact_roots {
                tracing::info!("Recovered: removed /var/vcap/store/bbr-backup on {root}");
            }
        }
    }
    errors
}

/// Deletes the artifact snapshots of the repository backup a journal lists, unless it
/// completed (its record snapshot is there); returns the line that says what was done. With
/// no repository password given to this run they are left (never listed complete) for
/// `backups prune` or `backups delete`, with a warning.
async fn discard_repository_backup(
    journal: &Journal,
    context: &RunContext,
) -> Result<Option<String>, Error> {
    use crate::format::repository::catalog::{discard_incomplete, Discarded};
    let Some(entry) = &journal.repository_backup else {
        return Ok(None);
    };
    let deployment = &journal.deployment;
    let which = format!("{deployment}/{}", entry.backup_id);
    let Some(file) = &context.repository_password_file else {
        tracing::warn!(
            "The interrupted backup {which} into {} may have left artifact snapshots (never listed complete: it has no record); this command was given no repository password (--repository-password-file or CAIRN_REPOSITORY_PASSWORD_FILE), so they stay until `cairn backups --store {} prune -d {deployment}` or `backups delete {which}` removes them",
            entry.store,
            entry.store
        );
        return Ok(None);
    };
    let leftover = |detail: String| Error::LeftoverSnapshots {
        deployment: deployment.clone(),
        backup_id: entry.backup_id.clone(),
        store: entry.store.clone(),
        detail,
    };
    let password =
        crate::format::repository::read_password(file).map_err(|e| leftover(e.to_string()))?;
    let discarded = discard_incomplete(&entry.store, &password, deployment, &entry.backup_id)
        .await
        .map_err(|e| leftover(e.to_string()))?;
    Ok(Some(match discarded {
        Discarded::Complete => format!(
            "Recovered: backup {which} in {} is complete (its record snapshot is there); nothing to delete",
            entry.store
        ),
        Discarded::Deleted(count) => format!(
            "Recovered: deleted {count} artifact snapshot(s) of the incomplete backup {which} from {}; the data only they used is freed by `cairn backups prune`",
            entry.store
        ),
    }))
}

/// Runs the unlock script of every job the journal lists as locked with `kind`, in reverse
/// lock order.
async fn unlock_listed(
    deployment: &Deployment,
    journal: &Journal,
    kind: LockKind,
    context: &RunContext,
) -> RunErrors {
    if !journal.locked.iter().any(|l| l.lock == kind) {
        return RunErrors::new();
    }
    let direction = match kind {
        LockKind::Backup => LockDirection::Backup,
        LockKind::Restore => LockDirection::Restore,
    };
    let layers = match deployment.lock_layers(direction) {
        Ok(layers) => layers,
        Err(error) => return error.into(),
    };
    let listed = |job_ref: &JobRef| {
        let (instance, job) = deployment.job(*job_ref);
        journal
            .locked
            .iter()
            .any(|l| l.lock == kind && l.instance == instance.name.to_string() && l.job == job.name)
    };
    let environment = move |_: &crate::model::deployment::Instance, _: &Job| match kind {
        LockKind::Backup => vec![("BBR_AFTER_BACKUP_SCRIPTS_SUCCESSFUL", "false".to_string())],
        LockKind::Restore => Vec::new(),
    };
    let never = tokio_util::sync::CancellationToken::new();
    let mut errors = RunErrors::new();
    for layer in layers.unlock_order() {
        let subset: Vec<JobRef> = layer.iter().copied().filter(|r| listed(r)).collect();
        errors.extend(
            run_scripts(
                deployment,
                &subset,
                kind.unlock_script(),
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

/// Writes each segment of a resumable backup into the run journal (local and in the store)
/// as soon as it is stored, before the next one starts.
pub(crate) struct JournalSegments {
    pub(crate) context: RunContext,
    pub(crate) deployment: String,
}

#[async_trait]
impl SegmentObserver for JournalSegments {
    async fn stored(&self, artifact_key: &str, segments: Vec<ManifestSegment>) {
        let written = self
            .context
            .update_journal(&self.deployment, |journal| {
                if let Some(entry) = journal.resumable_backup.as_mut() {
                    entry.segments.insert(artifact_key.to_string(), segments);
                }
            })
            .await;
        if let Err(error) = written {
            tracing::warn!("{error}");
        }
    }
}

/// A resumable backup a dead run of the deployment left, with its journal.
#[derive(Debug)]
pub(crate) struct PendingResume {
    origin: Origin,
    /// The journal (its `resumable_backup` is set).
    pub(crate) journal: Journal,
}

impl PendingResume {
    /// The entry.
    pub(crate) fn entry(&self) -> &ResumableBackup {
        self.journal
            .resumable_backup
            .as_ref()
            .expect("a pending resume has an entry")
    }
}

/// The resumable backups of `deployment` that dead runs (or runs on other machines, from the
/// store's journals) left, oldest first.
pub(crate) async fn pending_resumables(
    deployment: &Deployment,
    context: &RunContext,
) -> Result<Vec<PendingResume>, Error> {
    let mut pending = Vec::new();
    let Some(file) = &context.journal else {
        return Ok(pending);
    };
    for found in file.left_behind() {
        if found.journal.resumable_backup.is_some() && liveness(&found.journal) == Liveness::Dead {
            pending.push(PendingResume {
                origin: Origin::Local(found.path),
                journal: found.journal,
            });
        }
    }
    let Some(store) = &context.journal_store else {
        return Ok(pending);
    };
    for (key, journal) in store_journals(store.as_ref(), &deployment.name).await? {
        let known = pending
            .iter()
            .any(|p| p.journal.pid == journal.pid && p.journal.host == journal.host);
        let over = matches!(liveness(&journal), Liveness::Dead | Liveness::OtherHost);
        if journal.resumable_backup.is_some() && over && !known {
            pending.push(PendingResume {
                origin: Origin::Store(key),
                journal,
            });
        }
    }
    Ok(pending)
}

/// Removes a pending resume's journal (local file and copy in the store): this run adopted
/// its entry, or it was discarded.
pub(crate) async fn drop_pending(pending: &PendingResume, context: &RunContext) {
    let journal = &pending.journal;
    let key = match &pending.origin {
        Origin::Local(path) => {
            let _ = std::fs::remove_file(path);
            ObjectKey::parse(&store_key(&journal.deployment, &journal.host, journal.pid)).ok()
        }
        Origin::Store(key) => Some(key.clone()),
    };
    if let (Some(store), Some(key)) = (&context.journal_store, key) {
        match store.delete(&key, None).await {
            Ok(()) | Err(cairn_store::StoreError::NotFound { .. }) => {}
            Err(error) => tracing::warn!("Cannot remove the run journal {key}: {error}"),
        }
    }
}

/// `backup-cleanup`: discards every pending resumable backup of the deployment — its stored
/// segments (those under Object Lock are reported and left to expire) and its journal. The
/// staged artifacts were removed by the clean-up itself.
pub(crate) async fn discard_resumables(deployment: &Deployment, context: &RunContext) -> RunErrors {
    let mut errors = RunErrors::new();
    let pending = match pending_resumables(deployment, context).await {
        Ok(pending) => pending,
        Err(error) => return error.into(),
    };
    for resume in pending {
        let entry = resume.entry();
        let segments: Vec<ManifestSegment> = entry.segments.values().flatten().cloned().collect();
        let Some(store) = &context.journal_store else {
            tracing::warn!(
                "Discarded the resumable backup {} of {}; its {} stored segment(s) at {} were not removed (no store given: set CAIRN_STORE); the next backup into that store removes them",
                entry.backup_id,
                deployment.name,
                segments.len(),
                entry.location
            );
            drop_pending(&resume, context).await;
            continue;
        };
        match crate::format::store::write::discard_resumable(
            store.as_ref(),
            &deployment.name,
            &entry.backup_id,
            &segments,
        )
        .await
        {
            Ok(protected) => {
                for key in &protected {
                    tracing::warn!(
                        "Segment {key} is under Object Lock and stays until its retention ends; no complete backup references it"
                    );
                }
                tracing::info!(
                    "Discarded the resumable backup {} of {} ({} stored segment(s) removed, {} left under Object Lock)",
                    entry.backup_id,
                    deployment.name,
                    segments.len().saturating_sub(protected.len()),
                    protected.len()
                );
                drop_pending(&resume, context).await;
            }
            Err(error) => errors.push(error),
        }
    }
    errors
}
