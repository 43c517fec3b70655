//! In-process workflow tests (issue 14, item 6): backup, restore and journal replay against
//! scripted fake instances ([`fake`]), without SSH, root or sleeps.
//!
//! The deployment of most tests ([`layered`]) has two instances and jobs of two releases:
//!
//! ```text
//! db/0:  postgres (pg-release)
//! app/0: api (cf)      locked before postgres/pg-release
//!        proxy (cf)    locked before api/cf (and before postgres/other-release, which matches nothing)
//!        worker (cf)   locked before postgres/pg-release; lock and unlock scripts only
//! ```
//!
//! so the backup lock layers are `{proxy, worker}`, `{api}`, `{postgres}`, and the unlock
//! layers the reverse.

mod fake;
mod journal;
mod restore_parallelism;

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use cairn::error::Error;
use cairn::format::bbr_directory::sink::{BbrDirectorySink, BbrDirectorySource};
use cairn::format::bbr_directory::{BackupDirectory, Checksums};
use cairn::format::sink::BackupSource;
use cairn::model::job::{ScriptName, REMOTE_ARTIFACT_ROOT};
use cairn::workflow::backup::{backup, BackupOptions, BackupReport};
use cairn::workflow::journal::{Journal, JournalFile, JournalKind, LockKind, LockedJob};
use cairn::workflow::restore::restore;
use cairn::workflow::RunContext;
use sha2::{Digest, Sha256};

use fake::{backup_files, Call, FakeJob, FakeTarget, Op, Outcome};

const PG: &str = "db/0/postgres";
const API: &str = "app/0/api";
const PROXY: &str = "app/0/proxy";
const WORKER: &str = "app/0/worker";

const LOCK_LAYERS: &[&[&str]] = &[&[PROXY, WORKER], &[API], &[PG]];
const UNLOCK_LAYERS: &[&[&str]] = &[&[PG], &[API], &[PROXY, WORKER]];
const SUCCESSFUL: &str = "BBR_AFTER_BACKUP_SCRIPTS_SUCCESSFUL";

fn layered() -> FakeTarget {
    FakeTarget::new("cf")
        .instance("db", "0", vec![FakeJob::new("postgres", "pg-release")])
        .instance(
            "app",
            "0",
            vec![
                FakeJob::new("api", "cf").locked_before("postgres", "pg-release"),
                FakeJob::new("proxy", "cf")
                    .locked_before("api", "cf")
                    .locked_before("postgres", "other-release"),
                FakeJob::new("worker", "cf")
                    .locked_before("postgres", "pg-release")
                    .without(ScriptName::Backup)
                    .without(ScriptName::Restore),
            ],
        )
}

fn context() -> RunContext {
    RunContext::new(4, cairn::VERSION)
}

fn options(parent: &Path) -> BackupOptions {
    BackupOptions {
        sink: std::sync::Arc::new(BbrDirectorySink::new(parent)),
        unsafe_lock_free: false,
        manifest: None,
        started_at: chrono::Utc::now(),
        resumable: false,
        resume: false,
    }
}

/// Fails the test instead of hanging it.
async fn within<F: Future>(future: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(10), future)
        .await
        .expect("the workflow did not finish")
}

/// Runs a backup; once a command reaches [`Outcome::Hang`], interrupts it as SIGTERM would.
async fn backup_interrupted_at_hang(
    target: &FakeTarget,
    options: &BackupOptions,
    context: &RunContext,
) -> BackupReport {
    let run = backup(target, options, context);
    tokio::pin!(run);
    within(async {
        tokio::select! {
            report = &mut run => panic!("the backup finished without hanging: {:?}", report.errors),
            () = target.world().hang_reached() => context.interrupt("SIGTERM"),
        }
        run.await
    })
    .await
}

/// Runs a restore; once a command reaches [`Outcome::Hang`], interrupts it as SIGTERM would.
async fn restore_interrupted_at_hang(
    target: &FakeTarget,
    source: &dyn BackupSource,
    context: &RunContext,
) -> cairn::error::RunErrors {
    let run = async { restore(target, source, context).await.errors };
    tokio::pin!(run);
    within(async {
        tokio::select! {
            errors = &mut run => panic!("the restore finished without hanging: {errors}"),
            () = target.world().hang_reached() => context.interrupt("SIGTERM"),
        }
        run.await
    })
    .await
}

/// A complete backup of [`layered`] under `parent`, taken with the fake.
async fn backed_up(parent: &Path) -> PathBuf {
    let source = layered();
    let report = within(backup(&source, &options(parent), &context())).await;
    assert!(report.complete, "{}", report.errors);
    backup_dir(parent)
}

/// The one backup directory under `parent`.
fn backup_dir(parent: &Path) -> PathBuf {
    let entries: Vec<PathBuf> = std::fs::read_dir(parent)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert!(entries[0]
        .file_name()
        .unwrap()
        .to_string_lossy()
        .starts_with("cf_"));
    entries[0].clone()
}

fn file_names(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| (*s).to_string()).collect()
}

fn ids(calls: &[Call]) -> Vec<String> {
    calls
        .iter()
        .map(|c| format!("{} {}", c.host, c.command))
        .collect()
}

/// The calls form these layers, in this order: each layer exactly this set of jobs (each once),
/// every call of a layer started after every call of the layer before had returned.
fn assert_layers(calls: &[Call], expected: &[&[&str]]) {
    let mut rest = calls;
    let mut previous_end = None;
    for layer in expected {
        assert!(
            rest.len() >= layer.len(),
            "expected layers {expected:?}, got {:?}",
            ids(calls)
        );
        let (these, tail) = rest.split_at(layer.len());
        let got: BTreeSet<String> = these.iter().filter_map(Call::job_id).collect();
        assert_eq!(got, set(layer), "layers {expected:?} vs {:?}", ids(calls));
        if let Some(end) = previous_end {
            assert!(
                these.iter().all(|c| c.started > end),
                "layer {layer:?} started before the previous one finished: {:?}",
                ids(calls)
            );
        }
        previous_end = these.iter().filter_map(|c| c.ended).max();
        rest = tail;
    }
    assert!(rest.is_empty(), "calls beyond the layers: {:?}", ids(rest));
}

/// Every call of `before` returned before any call of `after` started.
fn assert_before(before: &[Call], after: &[Call]) {
    let last_end = before.iter().map(|c| c.ended.expect("returned")).max();
    let first_start = after.iter().map(|c| c.started).min();
    if let (Some(last_end), Some(first_start)) = (last_end, first_start) {
        assert!(
            last_end < first_start,
            "{:?} should all come before {:?}",
            ids(before),
            ids(after)
        );
    }
}

/// Hosts where the run created something under the artifact root, and hosts where it removed
/// the root itself.
fn roots_created_and_removed(target: &FakeTarget) -> (BTreeSet<String>, BTreeSet<String>) {
    let world = target.world();
    let created = world
        .ops_matching(|op| matches!(op, Op::Mkdir(p) if p.starts_with(REMOTE_ARTIFACT_ROOT)))
        .into_iter()
        .map(|c| c.host)
        .collect();
    let removed = world
        .ops_matching(|op| *op == Op::Remove(REMOTE_ARTIFACT_ROOT.into()))
        .into_iter()
        .map(|c| c.host)
        .collect();
    (created, removed)
}

/// Every root this run created was removed (and nothing else), after the last script.
fn assert_roots_removed_where_created(target: &FakeTarget, expected: &[&str]) {
    let (created, removed) = roots_created_and_removed(target);
    assert_eq!(created, set(expected));
    assert_eq!(removed, set(expected));
    let world = target.world();
    let scripts = world.ops_matching(|op| matches!(op, Op::Script { .. }));
    let removals = world.ops_matching(|op| *op == Op::Remove(REMOTE_ARTIFACT_ROOT.into()));
    assert_before(&scripts, &removals);
    for host in target.host_names() {
        assert!(!target.host(&host).artifact_root_exists(), "{host}");
    }
}

fn interrupted(report_errors: &[Error], operation: &str) -> usize {
    report_errors
        .iter()
        .filter(|e| {
            matches!(e, Error::Interrupted { operation: o, signal } if *o == operation && signal == "SIGTERM")
        })
        .count()
}

fn checksums(files: &BTreeMap<String, Vec<u8>>) -> Checksums {
    files
        .iter()
        .map(|(name, data)| {
            (
                name.as_str().into(),
                hex::encode(Sha256::digest(data)).into(),
            )
        })
        .collect()
}

/// The directory of a failed backup: bbr's shape, a `metadata` listing nothing and no tar.
fn assert_empty_backup(parent: &Path) {
    let dir = backup_dir(parent);
    let metadata = BackupDirectory::open(&dir).read_metadata().unwrap();
    assert!(metadata.instances.is_empty(), "{metadata:?}");
    assert!(metadata.custom_artifacts.is_empty(), "{metadata:?}");
    assert_eq!(file_names(&dir), set(&["metadata"]));
}

/// After a failed lock or backup: every job unlocked once, in reverse layers, with
/// `BBR_AFTER_BACKUP_SCRIPTS_SUCCESSFUL=false`; nothing drained.
fn assert_unlocked_after_failure(target: &FakeTarget, report: &BackupReport) {
    assert!(!report.complete);
    let world = target.world();
    let unlocks = world.script_calls(ScriptName::PostBackupUnlock);
    assert_layers(&unlocks, UNLOCK_LAYERS);
    for call in &unlocks {
        assert_eq!(call.env(SUCCESSFUL), Some("false"), "{}", call.command);
    }
    let locks = world.script_calls(ScriptName::PreBackupLock);
    let backups = world.script_calls(ScriptName::Backup);
    assert_before(&locks, &unlocks);
    assert_before(&backups, &unlocks);
    assert!(world
        .ops_matching(|op| matches!(op, Op::TarCreate(_)))
        .is_empty());
    assert_eq!(target.released(), 1);
}

#[tokio::test]
async fn backup_locks_in_layers_unlocks_in_reverse_and_lists_every_artifact() {
    let parent = tempfile::tempdir().unwrap();
    let target = layered();
    let report = within(backup(&target, &options(parent.path()), &context())).await;
    assert!(report.errors.is_empty(), "{}", report.errors);
    assert!(report.complete);

    let world = target.world();
    let locks = world.script_calls(ScriptName::PreBackupLock);
    let backups = world.script_calls(ScriptName::Backup);
    let unlocks = world.script_calls(ScriptName::PostBackupUnlock);
    let transfers = world.ops_matching(|op| matches!(op, Op::TarCreate(_)));
    assert_layers(&locks, LOCK_LAYERS);
    assert_layers(&backups, &[&[PG, API, PROXY]]);
    assert_layers(&unlocks, UNLOCK_LAYERS);
    for call in &unlocks {
        assert_eq!(call.env(SUCCESSFUL), Some("true"), "{}", call.command);
    }
    for call in &backups {
        let Op::Script { job, .. } = &call.op else {
            unreachable!()
        };
        let directory = format!("{REMOTE_ARTIFACT_ROOT}/{job}/");
        assert_eq!(call.env("BBR_ARTIFACT_DIRECTORY"), Some(directory.as_str()));
        assert_eq!(call.env("ARTIFACT_DIRECTORY"), Some(directory.as_str()));
    }
    // lock → backup → unlock → drain, each phase finished before the next began.
    assert_before(&locks, &backups);
    assert_before(&backups, &unlocks);
    assert_before(&unlocks, &transfers);
    let drained: BTreeSet<String> = transfers
        .iter()
        .map(|c| format!("{} {:?}", c.host, c.op))
        .collect();
    assert_eq!(
        drained,
        set(&[
            "db/0 TarCreate(\"/var/vcap/store/bbr-backup/postgres/\")",
            "app/0 TarCreate(\"/var/vcap/store/bbr-backup/api/\")",
            "app/0 TarCreate(\"/var/vcap/store/bbr-backup/proxy/\")",
        ])
    );
    assert_roots_removed_where_created(&target, &["db/0", "app/0"]);
    assert_eq!(target.released(), 1);

    let dir = backup_dir(parent.path());
    assert_eq!(report.artifact.as_deref(), Some(dir.to_str().unwrap()));
    let metadata = BackupDirectory::open(&dir).read_metadata().unwrap();
    let listed: BTreeMap<String, Checksums> = BackupDirectory::listed_artifacts(&metadata)
        .into_iter()
        .map(|(name, checksums)| (name, checksums.clone()))
        .collect();
    let expected: BTreeMap<String, Checksums> = [
        ("db-0-postgres", "db/0", "postgres"),
        ("app-0-api", "app/0", "api"),
        ("app-0-proxy", "app/0", "proxy"),
    ]
    .into_iter()
    .map(|(artifact, host, job)| (artifact.to_string(), checksums(&backup_files(host, job))))
    .collect();
    assert_eq!(listed, expected);
    assert!(metadata.backup_activity.unwrap().finish_time.is_some());
    assert_eq!(
        file_names(&dir),
        set(&[
            "metadata",
            "db-0-postgres.tar",
            "app-0-api.tar",
            "app-0-proxy.tar"
        ])
    );
    let stored = std::fs::read(dir.join("app-0-api.tar")).unwrap();
    assert_eq!(stored, fake::build_tar(&backup_files("app/0", "api")));
}

#[tokio::test]
async fn failing_lock_stops_locking_and_unlocks_every_job_with_exit_4() {
    let parent = tempfile::tempdir().unwrap();
    let target = layered();
    target.on(
        "app/0",
        "api",
        ScriptName::PreBackupLock,
        Outcome::Fail(3, "cannot quiesce".into()),
    );
    let report = within(backup(&target, &options(parent.path()), &context())).await;

    assert_unlocked_after_failure(&target, &report);
    let world = target.world();
    // The failing layer is the last one locked: postgres is never locked.
    assert_layers(
        &world.script_calls(ScriptName::PreBackupLock),
        &[&[PROXY, WORKER], &[API]],
    );
    assert!(world.script_calls(ScriptName::Backup).is_empty());
    assert_roots_removed_where_created(&target, &[]);
    assert_eq!(report.errors.errors().len(), 1, "{}", report.errors);
    assert!(matches!(
        &report.errors.errors()[0],
        Error::ScriptFailed { script: ScriptName::PreBackupLock, job, status: 3, stderr, .. }
            if job == "api" && stderr == "cannot quiesce"
    ));
    assert_eq!(report.errors.exit_code(), 4);
    assert_empty_backup(parent.path());
}

#[tokio::test]
async fn lost_connection_during_lock_unlocks_every_job_with_exit_4() {
    let parent = tempfile::tempdir().unwrap();
    let target = layered();
    target.on("app/0", "worker", ScriptName::PreBackupLock, Outcome::Lost);
    let report = within(backup(&target, &options(parent.path()), &context())).await;

    assert_unlocked_after_failure(&target, &report);
    // A lock is not idempotent: it is not run again, and the next layers are not locked.
    assert_layers(
        &target.world().script_calls(ScriptName::PreBackupLock),
        &[&[PROXY, WORKER]],
    );
    assert!(target.world().script_calls(ScriptName::Backup).is_empty());
    assert_roots_removed_where_created(&target, &[]);
    assert_eq!(report.errors.errors().len(), 1, "{}", report.errors);
    assert!(matches!(
        &report.errors.errors()[0],
        Error::ScriptLost { script: ScriptName::PreBackupLock, job, .. } if job == "worker"
    ));
    assert_eq!(report.errors.exit_code(), 4);
    assert_empty_backup(parent.path());
}

#[tokio::test]
async fn failing_backup_script_unlocks_every_job_with_exit_1() {
    let parent = tempfile::tempdir().unwrap();
    let target = layered();
    target.on(
        "db/0",
        "postgres",
        ScriptName::Backup,
        Outcome::Fail(2, "disk full".into()),
    );
    let report = within(backup(&target, &options(parent.path()), &context())).await;

    assert_unlocked_after_failure(&target, &report);
    let world = target.world();
    assert_layers(&world.script_calls(ScriptName::PreBackupLock), LOCK_LAYERS);
    assert_layers(
        &world.script_calls(ScriptName::Backup),
        &[&[PG, API, PROXY]],
    );
    assert_roots_removed_where_created(&target, &["db/0", "app/0"]);
    assert_eq!(report.errors.errors().len(), 1, "{}", report.errors);
    assert!(matches!(
        &report.errors.errors()[0],
        Error::ScriptFailed { script: ScriptName::Backup, job, status: 2, .. } if job == "postgres"
    ));
    assert_eq!(report.errors.exit_code(), 1);
    assert_empty_backup(parent.path());
}

#[tokio::test]
async fn lost_connection_during_backup_script_unlocks_every_job_with_exit_1() {
    let parent = tempfile::tempdir().unwrap();
    let target = layered();
    target.on("app/0", "proxy", ScriptName::Backup, Outcome::Lost);
    let report = within(backup(&target, &options(parent.path()), &context())).await;

    assert_unlocked_after_failure(&target, &report);
    let world = target.world();
    // A backup script is not idempotent: it is not run again.
    assert_layers(
        &world.script_calls(ScriptName::Backup),
        &[&[PG, API, PROXY]],
    );
    assert_roots_removed_where_created(&target, &["db/0", "app/0"]);
    assert_eq!(report.errors.errors().len(), 1, "{}", report.errors);
    assert!(matches!(
        &report.errors.errors()[0],
        Error::ScriptLost { script: ScriptName::Backup, job, .. } if job == "proxy"
    ));
    assert_eq!(report.errors.exit_code(), 1);
    assert_empty_backup(parent.path());
}

#[tokio::test]
async fn lost_connection_during_unlock_is_retried_once() {
    let parent = tempfile::tempdir().unwrap();
    let target = layered();
    target.on_each(
        "app/0",
        "api",
        ScriptName::PostBackupUnlock,
        vec![Outcome::Lost, Outcome::Succeed],
    );
    let report = within(backup(&target, &options(parent.path()), &context())).await;
    assert!(report.errors.is_empty(), "{}", report.errors);
    assert!(report.complete);
    let unlocks = target.world().script_calls(ScriptName::PostBackupUnlock);
    // api's unlock twice, in its own layer, the second identical to the first.
    assert_layers(&unlocks, &[&[PG], &[API], &[API], &[PROXY, WORKER]]);
    assert_eq!(unlocks[1].command, unlocks[2].command);
    assert!(
        unlocks[1].result.contains("session ended"),
        "{}",
        unlocks[1].result
    );
    assert_eq!(unlocks[2].result, "exit 0");
}

#[tokio::test]
async fn unlock_lost_twice_is_not_run_a_third_time_and_gives_exit_8() {
    let parent = tempfile::tempdir().unwrap();
    let target = layered();
    target.on(
        "db/0",
        "postgres",
        ScriptName::PostBackupUnlock,
        Outcome::Lost,
    );
    let report = within(backup(&target, &options(parent.path()), &context())).await;
    let unlocks = target.world().script_calls(ScriptName::PostBackupUnlock);
    assert_layers(&unlocks, &[&[PG], &[PG], &[API], &[PROXY, WORKER]]);
    assert_eq!(report.errors.errors().len(), 1, "{}", report.errors);
    assert!(matches!(
        &report.errors.errors()[0],
        Error::ScriptLost { script: ScriptName::PostBackupUnlock, job, .. } if job == "postgres"
    ));
    assert_eq!(report.errors.exit_code(), 8);
}

#[tokio::test]
async fn failing_unlock_gives_exit_8_still_unlocks_the_rest_and_keeps_the_journal() {
    let parent = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let target = layered();
    target.on(
        "app/0",
        "api",
        ScriptName::PostBackupUnlock,
        Outcome::Fail(7, "still busy".into()),
    );
    let mut context = context();
    let journal = JournalFile::new(state.path(), "cf");
    context.journal = Some(journal.clone());
    let report = within(backup(&target, &options(parent.path()), &context)).await;

    let unlocks = target.world().script_calls(ScriptName::PostBackupUnlock);
    // A script that ran and failed is not retried; the later layers still unlock.
    assert_layers(&unlocks, UNLOCK_LAYERS);
    assert_eq!(report.errors.errors().len(), 1, "{}", report.errors);
    assert!(matches!(
        &report.errors.errors()[0],
        Error::ScriptFailed { script: ScriptName::PostBackupUnlock, job, status: 7, .. } if job == "api"
    ));
    assert_eq!(report.errors.exit_code(), 8);
    // The artifacts were drained (an unlock failure does not void the backup, as in bbr).
    assert!(report.complete);
    assert_roots_removed_where_created(&target, &["db/0", "app/0"]);
    // The journal stays, listing what a backup-cleanup or the next backup must undo.
    let kept = journal.read().expect("journal kept after a failed unlock");
    assert_eq!(kept.deployment, "cf");
    assert_eq!(kept.pid, std::process::id());
    let locked: BTreeSet<String> = kept
        .locked
        .iter()
        .map(|l| format!("{}/{}", l.instance, l.job))
        .collect();
    assert_eq!(locked, set(&[PG, API, PROXY, WORKER]));
    assert_eq!(kept.artifact_roots, vec!["db/0", "app/0"]);
}

#[tokio::test]
async fn interrupt_during_discovery_touches_nothing() {
    let parent = tempfile::tempdir().unwrap();
    let target = layered();
    target.on("app/0", "proxy", ScriptName::Metadata, Outcome::Hang);
    let report = backup_interrupted_at_hang(&target, &options(parent.path()), &context()).await;

    assert!(!report.complete);
    assert!(report.artifact.is_none());
    assert_eq!(report.errors.errors().len(), 1, "{}", report.errors);
    assert_eq!(interrupted(report.errors.errors(), "Backup"), 1);
    assert_eq!(report.errors.exit_code(), 1);
    let others = target.world().ops_matching(|op| {
        !matches!(
            op,
            Op::Find
                | Op::Script {
                    script: ScriptName::Metadata,
                    ..
                }
        )
    });
    assert!(others.is_empty(), "{:?}", ids(&others));
    assert!(file_names(parent.path()).is_empty());
    assert_eq!(target.released(), 1);
}

#[tokio::test]
async fn interrupt_during_lock_unlocks_every_job_and_stops_locking() {
    let parent = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let target = layered();
    target.on("app/0", "api", ScriptName::PreBackupLock, Outcome::Hang);
    let mut context = context();
    context.journal = Some(JournalFile::new(state.path(), "cf"));
    let report = backup_interrupted_at_hang(&target, &options(parent.path()), &context).await;

    let world = target.world();
    let locks = world.script_calls(ScriptName::PreBackupLock);
    assert_layers(&locks, &[&[PROXY, WORKER], &[API]]);
    assert!(locks[2].result.contains("cancelled"), "{}", locks[2].result);
    assert_unlocked_after_failure(&target, &report);
    assert!(world.script_calls(ScriptName::Backup).is_empty());
    assert_roots_removed_where_created(&target, &[]);
    assert_eq!(report.errors.errors().len(), 1, "{}", report.errors);
    assert_eq!(interrupted(report.errors.errors(), "Backup"), 1);
    assert_eq!(report.errors.exit_code(), 1);
    assert_empty_backup(parent.path());
    // Everything was undone: nothing is left for the next run to replay.
    assert!(context.journal.as_ref().unwrap().read().is_none());
}

#[tokio::test]
async fn interrupt_during_backup_script_unlocks_every_job_and_removes_artifact_roots() {
    let parent = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let target = layered();
    target.on("db/0", "postgres", ScriptName::Backup, Outcome::Hang);
    let mut context = context();
    context.journal = Some(JournalFile::new(state.path(), "cf"));
    let report = backup_interrupted_at_hang(&target, &options(parent.path()), &context).await;

    let world = target.world();
    assert_layers(&world.script_calls(ScriptName::PreBackupLock), LOCK_LAYERS);
    let backups = world.script_calls(ScriptName::Backup);
    assert_layers(&backups, &[&[PG, API, PROXY]]);
    assert!(
        backups[0].result.contains("cancelled"),
        "{}",
        backups[0].result
    );
    assert_unlocked_after_failure(&target, &report);
    assert_roots_removed_where_created(&target, &["db/0", "app/0"]);
    assert_eq!(report.errors.errors().len(), 1, "{}", report.errors);
    assert_eq!(interrupted(report.errors.errors(), "Backup"), 1);
    assert_empty_backup(parent.path());
    assert!(context.journal.as_ref().unwrap().read().is_none());
}

#[tokio::test]
async fn interrupt_during_transfer_removes_artifact_roots_and_every_tar() {
    let parent = tempfile::tempdir().unwrap();
    let target = layered();
    target.on_transfer("app/0", "api", Outcome::Hang);
    let report = backup_interrupted_at_hang(&target, &options(parent.path()), &context()).await;

    assert!(!report.complete);
    let world = target.world();
    assert_layers(&world.script_calls(ScriptName::PreBackupLock), LOCK_LAYERS);
    // The scripts had all succeeded: the unlocks (once each) said so, before the drain.
    let unlocks = world.script_calls(ScriptName::PostBackupUnlock);
    assert_layers(&unlocks, UNLOCK_LAYERS);
    for call in &unlocks {
        assert_eq!(call.env(SUCCESSFUL), Some("true"), "{}", call.command);
    }
    let transfers = world.ops_matching(|op| matches!(op, Op::TarCreate(_)));
    assert!(transfers
        .iter()
        .any(|c| c.host == "app/0" && c.result.contains("cancelled")));
    assert_before(&unlocks, &transfers);
    assert_roots_removed_where_created(&target, &["db/0", "app/0"]);
    assert_eq!(report.errors.errors().len(), 1, "{}", report.errors);
    assert_eq!(interrupted(report.errors.errors(), "Backup"), 1);
    assert_empty_backup(parent.path());
    assert_eq!(target.released(), 1);
}

#[tokio::test]
async fn a_failing_instance_stops_the_restore_of_the_next_instances() {
    let parent = tempfile::tempdir().unwrap();
    let backup = backed_up(parent.path()).await;
    let target = layered();
    target.on(
        "db/0",
        "postgres",
        ScriptName::Restore,
        Outcome::Fail(5, "restore broke".into()),
    );
    let errors = within(restore(
        &target,
        &BbrDirectorySource::new(backup),
        &context(),
    ))
    .await
    .errors;

    assert_eq!(errors.errors().len(), 1, "{errors}");
    let world = target.world();
    // bbr's orchestrator/instance.go: the first failing instance stops the loop.
    assert_layers(&world.script_calls(ScriptName::Restore), &[&[PG]]);
    assert_layers(
        &world.script_calls(ScriptName::PostRestoreUnlock),
        &[&[PG], &[API], &[PROXY], &[WORKER]],
    );
}

#[tokio::test]
async fn failing_restore_script_stops_after_its_instance_and_every_job_is_unlocked() {
    let parent = tempfile::tempdir().unwrap();
    let backup = backed_up(parent.path()).await;

    let target = layered();
    target.on(
        "app/0",
        "api",
        ScriptName::Restore,
        Outcome::Fail(5, "restore broke".into()),
    );
    let errors = within(restore(
        &target,
        &BbrDirectorySource::new(backup),
        &context(),
    ))
    .await
    .errors;

    assert_eq!(errors.errors().len(), 1, "{errors}");
    assert!(matches!(
        &errors.errors()[0],
        Error::ScriptFailed { script: ScriptName::Restore, job, status: 5, .. } if job == "api"
    ));
    assert_eq!(errors.exit_code(), 1);
    let world = target.world();
    // Every artifact arrived (a checksum mismatch would be an error) before any lock.
    let extracted: BTreeSet<String> = world
        .ops_matching(|op| matches!(op, Op::TarExtractChecksum(_)))
        .iter()
        .map(|c| format!("{} {:?}", c.host, c.op))
        .collect();
    assert_eq!(
        extracted,
        set(&[
            "db/0 TarExtractChecksum(\"/var/vcap/store/bbr-backup/postgres/\")",
            "app/0 TarExtractChecksum(\"/var/vcap/store/bbr-backup/api/\")",
            "app/0 TarExtractChecksum(\"/var/vcap/store/bbr-backup/proxy/\")",
        ])
    );
    // The instance's checksums come with the extraction (no second pass).
    assert!(world
        .ops_matching(|op| matches!(op, Op::TarExtract(_) | Op::Checksum(_)))
        .is_empty());
    let checks = world.ops_matching(|op| matches!(op, Op::TarExtractChecksum(_)));
    assert!(checks.iter().all(|c| c.result == "exit 0"));
    let locks = world.script_calls(ScriptName::PreRestoreLock);
    let restores = world.script_calls(ScriptName::Restore);
    let unlocks = world.script_calls(ScriptName::PostRestoreUnlock);
    assert_before(&checks, &locks);
    // The restore locks run one job at a time, as bbr's serial executor.
    assert_layers(&locks, &[&[PG], &[API], &[PROXY], &[WORKER]]);
    // One at a time, in instance order; the failure on api lets the rest of app/0 run (bbr
    // restores every job of an instance), and would stop the next instance.
    assert_layers(&restores, &[&[PG], &[API], &[PROXY]]);
    for call in &restores {
        let Op::Script { job, .. } = &call.op else {
            unreachable!()
        };
        let directory = format!("{REMOTE_ARTIFACT_ROOT}/{job}/");
        assert_eq!(call.env("BBR_ARTIFACT_DIRECTORY"), Some(directory.as_str()));
    }
    assert_before(&locks, &restores);
    assert_before(&restores, &unlocks);
    assert_layers(&unlocks, &[&[PG], &[API], &[PROXY], &[WORKER]]);
    assert!(world.script_calls(ScriptName::PostBackupUnlock).is_empty());
    assert_roots_removed_where_created(&target, &["db/0", "app/0"]);
    assert_eq!(target.released(), 1);
}

#[tokio::test]
async fn backup_first_undoes_what_the_journal_of_a_killed_run_lists() {
    let parent = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let target = layered();
    // A run killed after locking proxy and postgres and creating db/0's artifact directory.
    target.leave_artifact_directory("db/0", "postgres");
    let journal = JournalFile::new(state.path(), "cf");
    let dead_pid = u32::MAX - 1;
    assert!(!cairn::workflow::journal::process_alive(dead_pid));
    journal
        .write(&Journal {
            pid: dead_pid,
            process_start: None,
            locked: vec![
                LockedJob {
                    instance: "app/0".into(),
                    job: "proxy".into(),
                    lock: LockKind::Backup,
                },
                LockedJob {
                    instance: "db/0".into(),
                    job: "postgres".into(),
                    lock: LockKind::Backup,
                },
            ],
            artifact_roots: vec!["db/0".into()],
            ..Journal::new(JournalKind::Backup, "cf")
        })
        .unwrap();
    let mut context = context();
    context.journal = Some(journal.clone());
    let report = within(backup(&target, &options(parent.path()), &context)).await;
    assert!(report.errors.is_empty(), "{}", report.errors);
    assert!(report.complete);

    let calls: Vec<Call> = target
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
        .collect();
    let first_check = calls
        .iter()
        .position(|c| matches!(c.op, Op::Stat(_)))
        .expect("the backup went on to its checks");
    let recovery = &calls[..first_check];
    // Exactly the journaled jobs, in reverse lock order, told the backup failed; then exactly
    // the journaled directory.
    assert_eq!(
        ids(recovery),
        vec![
            format!("db/0 sudo BBR_AFTER_BACKUP_SCRIPTS_SUCCESSFUL=false CAIRN_VERSION={} /var/vcap/jobs/postgres/bin/bbr/post-backup-unlock", cairn::VERSION),
            format!("app/0 sudo BBR_AFTER_BACKUP_SCRIPTS_SUCCESSFUL=false CAIRN_VERSION={} /var/vcap/jobs/proxy/bin/bbr/post-backup-unlock", cairn::VERSION),
            "db/0 sudo rm -rf /var/vcap/store/bbr-backup".to_string(),
        ]
    );
    assert_before(&recovery[..2], &recovery[2..]);
    // Then the backup proceeded as usual.
    let rest = &calls[first_check..];
    let locks: Vec<Call> = rest
        .iter()
        .filter(|c| c.script() == Some(ScriptName::PreBackupLock))
        .cloned()
        .collect();
    assert_layers(&locks, LOCK_LAYERS);
    let unlocks: Vec<Call> = rest
        .iter()
        .filter(|c| c.script() == Some(ScriptName::PostBackupUnlock))
        .cloned()
        .collect();
    assert_layers(&unlocks, UNLOCK_LAYERS);
    assert!(unlocks.iter().all(|c| c.env(SUCCESSFUL) == Some("true")));
    let dir = backup_dir(parent.path());
    let metadata = BackupDirectory::open(&dir).read_metadata().unwrap();
    assert_eq!(
        metadata.checksums_for("db", "0", "postgres"),
        Some(&checksums(&backup_files("db/0", "postgres")))
    );
    assert!(journal.read().is_none(), "the journal is gone once undone");
}

#[tokio::test]
async fn interrupt_during_restore_script_unlocks_every_job_and_removes_artifact_roots() {
    let parent = tempfile::tempdir().unwrap();
    let backup = backed_up(parent.path()).await;
    let target = layered();
    target.on("app/0", "api", ScriptName::Restore, Outcome::Hang);
    let errors =
        restore_interrupted_at_hang(&target, &BbrDirectorySource::new(backup), &context()).await;

    assert_eq!(errors.errors().len(), 1, "{errors}");
    assert_eq!(interrupted(errors.errors(), "Restore"), 1);
    assert_eq!(errors.exit_code(), 1);
    let world = target.world();
    let locks = world.script_calls(ScriptName::PreRestoreLock);
    let restores = world.script_calls(ScriptName::Restore);
    let unlocks = world.script_calls(ScriptName::PostRestoreUnlock);
    assert_layers(&locks, &[&[PG, API, PROXY, WORKER]]);
    assert_layers(&restores, &[&[PG], &[API]]);
    assert!(
        restores[1].result.contains("cancelled"),
        "{}",
        restores[1].result
    );
    assert_before(&restores, &unlocks);
    assert_layers(&unlocks, &[&[PG], &[API], &[PROXY], &[WORKER]]);
    assert_roots_removed_where_created(&target, &["db/0", "app/0"]);
    assert_eq!(target.released(), 1);
}

/// The one script runner maps a lost connection the same way in every workflow: during a
/// restore script it is `ScriptLost` (it was a bare transport error before), the restore
/// stops there and every job is still unlocked.
#[tokio::test]
async fn lost_connection_during_restore_script_is_script_lost_and_every_job_is_unlocked() {
    let parent = tempfile::tempdir().unwrap();
    let backup = backed_up(parent.path()).await;

    let target = layered();
    target.on("db/0", "postgres", ScriptName::Restore, Outcome::Lost);
    let errors = within(restore(
        &target,
        &BbrDirectorySource::new(backup),
        &context(),
    ))
    .await
    .errors;

    assert_eq!(errors.errors().len(), 1, "{errors}");
    assert!(
        matches!(
            &errors.errors()[0],
            Error::ScriptLost { script: ScriptName::Restore, job, .. } if job == "postgres"
        ),
        "{errors}"
    );
    assert_eq!(errors.exit_code(), 1);
    let world = target.world();
    let restores = world.script_calls(ScriptName::Restore);
    assert_layers(&restores, &[&[PG]]);
    let unlocks = world.script_calls(ScriptName::PostRestoreUnlock);
    assert_before(&restores, &unlocks);
    assert_layers(&unlocks, &[&[PG], &[API], &[PROXY], &[WORKER]]);
    assert_roots_removed_where_created(&target, &["db/0", "app/0"]);
}
