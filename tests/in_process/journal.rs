//! The run journal of restores and clean-ups (issue 19, item 1), in process: a restore
//! dropped mid-script (as SIGKILL would leave it) is undone by the next restore or clean-up; a
//! state directory that cannot be written stops a run before anything is touched; read-only
//! commands only report.
//!
//! A dropped future stands for the killed process. Its journal carries this process's PID, so
//! each test makes it another process's the way a reused PID would: the same PID with another
//! start time, which the journal's liveness check must treat as dead.

use super::*;
use cairn::workflow::cleanup::{cleanup, CleanupKind};
use cairn::workflow::journal::Liveness;

/// Runs a restore until a command reaches [`Outcome::Hang`], then drops it: nothing after
/// that point runs, as after SIGKILL.
async fn restore_killed_at_hang(
    target: &FakeTarget,
    source: &dyn BackupSource,
    context: &RunContext,
) {
    let run = restore(target, source, context);
    tokio::pin!(run);
    within(async {
        tokio::select! {
            report = &mut run => panic!("the restore finished without hanging: {}", report.errors),
            () = target.world().hang_reached() => {}
        }
    })
    .await;
}

/// The journal the killed run left, made another process's: same PID, another start time.
fn as_if_pid_reused(file: &JournalFile) -> Journal {
    let mut journal = file.read().expect("the killed run left its journal");
    assert_eq!(
        cairn::workflow::journal::liveness(&journal),
        Liveness::ThisRun
    );
    journal.process_start = journal.process_start.map(|start| start + 1);
    assert_eq!(cairn::workflow::journal::liveness(&journal), Liveness::Dead);
    file.write(&journal).unwrap();
    journal
}

fn journaled(context: &mut RunContext, state: &Path, kind: JournalKind) -> JournalFile {
    let file = JournalFile::new(state, "cf").with_kind(kind);
    context.journal = Some(file.clone());
    file
}

/// Calls other than discovery.
fn work_calls(target: &FakeTarget) -> Vec<Call> {
    target
        .world()
        .calls()
        .into_iter()
        .filter(|c| {
            !matches!(
                c.op,
                Op::Find
                    | Op::Script {
                        script: ScriptName::Metadata,
                        ..
                    }
            )
        })
        .collect()
}

/// A restore killed in its restore script, with its journal: every job pre-restore-locked,
/// both artifact roots created.
async fn killed_restore(parent: &Path, state: &Path) -> (PathBuf, JournalFile) {
    let backup = backed_up(parent).await;
    let target = layered();
    target.on("app/0", "api", ScriptName::Restore, Outcome::Hang);
    let mut context = context();
    let file = journaled(&mut context, state, JournalKind::Restore);
    restore_killed_at_hang(&target, &BbrDirectorySource::new(backup.clone()), &context).await;
    assert!(target
        .world()
        .script_calls(ScriptName::PostRestoreUnlock)
        .is_empty());
    let journal = as_if_pid_reused(&file);
    assert_eq!(journal.kind, JournalKind::Restore);
    let locked: BTreeSet<String> = journal
        .locked
        .iter()
        .map(|l| {
            assert_eq!(l.lock, LockKind::Restore);
            format!("{}/{}", l.instance, l.job)
        })
        .collect();
    assert_eq!(locked, set(&[PG, API, PROXY, WORKER]));
    let roots: BTreeSet<String> = journal.artifact_roots.iter().cloned().collect();
    assert_eq!(roots, set(&["db/0", "app/0"]));
    (backup, file)
}

#[tokio::test]
async fn the_next_restore_unlocks_what_a_killed_restore_left_then_restores() {
    let parent = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let (backup, file) = killed_restore(parent.path(), state.path()).await;

    // The next restore (a fresh target: the killed run's artifact roots are still there).
    let target = layered();
    target.leave_artifact_directory("db/0", "postgres");
    target.leave_artifact_directory("app/0", "api");
    let mut context = context();
    journaled(&mut context, state.path(), JournalKind::Restore);
    let report = within(restore(&target, &BbrDirectorySource::new(backup), &context)).await;
    assert!(report.errors.is_empty(), "{}", report.errors);

    let calls = work_calls(&target);
    let first_check = calls
        .iter()
        .position(|c| matches!(c.op, Op::Stat(_)))
        .expect("the restore went on to its checks");
    let recovery = &calls[..first_check];
    // post-restore-unlock of exactly the journaled jobs, one at a time in reverse restore
    // order, then exactly the journaled directories.
    let unlocks: Vec<Call> = recovery
        .iter()
        .filter(|c| c.script() == Some(ScriptName::PostRestoreUnlock))
        .cloned()
        .collect();
    assert_layers(&unlocks, &[&[PG], &[API], &[PROXY], &[WORKER]]);
    assert!(recovery
        .iter()
        .all(|c| c.script() != Some(ScriptName::PostBackupUnlock)));
    let removed: BTreeSet<String> = recovery
        .iter()
        .filter(|c| c.op == Op::Remove(REMOTE_ARTIFACT_ROOT.into()))
        .map(|c| c.host.clone())
        .collect();
    assert_eq!(removed, set(&["db/0", "app/0"]));
    assert_eq!(recovery.len(), 6, "{:?}", ids(recovery));
    // Then the restore proper ran every restore script, and the journal is gone.
    assert_eq!(
        target.world().script_calls(ScriptName::Restore).len(),
        3,
        "{:?}",
        ids(&calls)
    );
    assert!(file.read().is_none());
    let left: Vec<_> = std::fs::read_dir(state.path()).unwrap().collect();
    assert!(left.is_empty(), "{left:?}");
}

#[tokio::test]
async fn backup_cleanup_after_a_killed_restore_runs_post_restore_unlock_on_the_locked_jobs() {
    let parent = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let (_, file) = killed_restore(parent.path(), state.path()).await;

    let target = layered();
    target.leave_artifact_directory("db/0", "postgres");
    let mut context = context();
    journaled(&mut context, state.path(), JournalKind::BackupCleanup);
    let errors = within(cleanup(&target, CleanupKind::Backup, &context)).await;
    assert!(errors.is_empty(), "{errors}");
    let world = target.world();
    // The restore locks the journal lists are undone with their own script; backup-cleanup
    // then runs its own post-backup-unlock on every job, as bbr's.
    let restore_unlocks = world.script_calls(ScriptName::PostRestoreUnlock);
    assert_layers(&restore_unlocks, &[&[PG], &[API], &[PROXY], &[WORKER]]);
    let backup_unlocks = world.script_calls(ScriptName::PostBackupUnlock);
    assert_layers(&backup_unlocks, UNLOCK_LAYERS);
    assert_before(&restore_unlocks, &backup_unlocks);
    assert!(!target.host("db/0").artifact_root_exists());
    assert!(file.read().is_none(), "cleared once the clean-up succeeded");
}

#[tokio::test]
async fn restore_cleanup_after_a_killed_restore_unlocks_once_and_clears_the_journal() {
    let parent = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let (_, file) = killed_restore(parent.path(), state.path()).await;

    let target = layered();
    let mut context = context();
    journaled(&mut context, state.path(), JournalKind::RestoreCleanup);
    let errors = within(cleanup(&target, CleanupKind::Restore, &context)).await;
    assert!(errors.is_empty(), "{errors}");
    // restore-cleanup unlocks every job with post-restore-unlock itself: once, not twice.
    let unlocks = target.world().script_calls(ScriptName::PostRestoreUnlock);
    assert_layers(&unlocks, &[&[PG], &[API], &[PROXY], &[WORKER]]);
    assert!(target
        .world()
        .script_calls(ScriptName::PostBackupUnlock)
        .is_empty());
    assert!(file.read().is_none());
}

#[tokio::test]
async fn a_journal_that_cannot_be_written_stops_the_run_before_anything_is_touched() {
    let parent = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    // The state "directory" is a file: nothing can be created under it, even as root.
    let blocked = state.path().join("not-a-directory");
    std::fs::write(&blocked, "").unwrap();
    let target = layered();
    let mut context = context();
    journaled(&mut context, &blocked, JournalKind::Backup);
    let report = within(backup(&target, &options(parent.path()), &context)).await;
    assert_eq!(report.errors.errors().len(), 1, "{}", report.errors);
    let error = &report.errors.errors()[0];
    assert!(matches!(error, Error::JournalWrite { .. }), "{error}");
    let message = error.to_string();
    assert!(message.contains("not-a-directory"), "{message}");
    assert!(message.contains("CAIRN_STATE_DIR"), "{message}");
    assert_eq!(report.errors.exit_code(), 1);
    assert!(
        target.world().calls().is_empty(),
        "{:?}",
        ids(&target.world().calls())
    );
    assert!(report.artifact.is_none());

    // A restore too.
    let backup_dir = backed_up(parent.path()).await;
    let errors = within(restore(
        &target,
        &BbrDirectorySource::new(backup_dir),
        &context,
    ))
    .await
    .errors;
    assert!(
        matches!(errors.errors(), [Error::JournalWrite { .. }]),
        "{errors}"
    );
    assert!(target.world().calls().is_empty());
}

#[tokio::test]
async fn pre_backup_check_reports_a_killed_run_and_changes_nothing() {
    let parent = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let (_, file) = killed_restore(parent.path(), state.path()).await;
    let left = file.read().unwrap();

    let target = layered();
    let mut context = context();
    journaled(&mut context, state.path(), JournalKind::PreBackupCheck);
    let (errors, _) = within(cairn::workflow::backup::pre_backup_check(&target, &context)).await;
    assert!(errors.is_empty(), "{errors}");
    let scripts = target.world().ops_matching(
        |op| matches!(op, Op::Script { script, .. } if *script != ScriptName::Metadata),
    );
    assert!(scripts.is_empty(), "{:?}", ids(&scripts));
    assert_eq!(
        file.read(),
        Some(left),
        "the journal is left for a command that clears it"
    );
}

#[tokio::test]
async fn a_journal_of_a_running_process_is_left_alone() {
    let parent = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let (backup, file) = killed_restore(parent.path(), state.path()).await;
    // Make it a live process's journal (a child with its real start time).
    let mut child = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .unwrap();
    let mut journal = file.read().unwrap();
    journal.pid = child.id();
    journal.process_start = cairn::workflow::journal::process_start(child.id());
    file.write(&journal).unwrap();

    let target = layered();
    let mut context = context();
    journaled(&mut context, state.path(), JournalKind::Restore);
    let report = within(restore(&target, &BbrDirectorySource::new(backup), &context)).await;
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(report.errors.is_empty(), "{}", report.errors);
    // Nothing of the other run was undone: one post-restore-unlock per job, the restore's own.
    assert_eq!(
        target
            .world()
            .script_calls(ScriptName::PostRestoreUnlock)
            .len(),
        4
    );
    // Moved aside from this run's path (the same PID here), not overwritten nor removed.
    let kept: Vec<Journal> = file.left_behind().into_iter().map(|f| f.journal).collect();
    assert_eq!(kept, vec![journal]);
}
