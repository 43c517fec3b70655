//! `--restore-parallelism N` (issue 21, lever 4): the `restore` scripts of up to N instances
//! at once, the restore lock and unlock scripts still one at a time, no new instance after a
//! failure while those running finish, and every job unlocked whatever happened.
//!
//! The deployment ([`wide`]) is `node/0` … `node/K-1`, one job `store` each, no lock order.
//! How many scripts ran at once is read from the fake's ticks: a call runs from its start tick
//! to its end tick, and two calls overlap when each started before the other ended.

use std::path::{Path, PathBuf};

use cairn::format::bbr_directory::sink::BbrDirectorySource;
use cairn::model::job::ScriptName;
use cairn::workflow::backup::backup;
use cairn::workflow::restore::restore;
use cairn::workflow::RunContext;

use super::fake::{Call, FakeJob, FakeTarget, Outcome};
use super::{assert_before, assert_roots_removed_where_created, backup_dir, options, within};

/// `count` instances `node/I` with one job `store` each.
fn wide(count: usize) -> FakeTarget {
    (0..count).fold(FakeTarget::new("cf"), |target, index| {
        target.instance("node", &index.to_string(), vec![FakeJob::new("store", "r")])
    })
}

fn node(index: usize) -> String {
    format!("node/{index}")
}

/// A context with `--restore-parallelism` at `n` (and `--parallelism` 10, so the copies and
/// everything else are not what limits the scripts).
fn context_with(n: usize) -> RunContext {
    let mut context = RunContext::new(10, cairn::VERSION);
    context.options.restore_parallelism = n;
    context
}

/// A complete backup of [`wide`]`(count)` under `parent`.
async fn backed_up_wide(parent: &Path, count: usize) -> PathBuf {
    let report = within(backup(&wide(count), &options(parent), &context_with(1))).await;
    assert!(report.complete, "{}", report.errors);
    backup_dir(parent)
}

/// The most calls that were running at the same tick.
fn most_at_once(calls: &[Call]) -> usize {
    calls
        .iter()
        .map(|call| {
            calls
                .iter()
                .filter(|other| {
                    other.started <= call.started && other.ended.expect("returned") > call.started
                })
                .count()
        })
        .max()
        .unwrap_or(0)
}

fn hosts(calls: &[Call]) -> Vec<String> {
    calls.iter().map(|c| c.host.clone()).collect()
}

/// Restores a backup of [`wide`]`(count)` into a fresh one with `--restore-parallelism n`,
/// after `prepare` set outcomes on it; returns the target and the run's errors.
async fn restore_wide(
    count: usize,
    n: usize,
    prepare: impl FnOnce(&FakeTarget),
) -> (FakeTarget, cairn::error::RunErrors) {
    let parent = tempfile::tempdir().unwrap();
    let backup = backed_up_wide(parent.path(), count).await;
    let target = wide(count);
    prepare(&target);
    let errors = within(restore(
        &target,
        &BbrDirectorySource::new(backup),
        &context_with(n),
    ))
    .await
    .errors;
    (target, errors)
}

#[tokio::test]
async fn by_default_restore_scripts_run_one_instance_after_another_in_order() {
    let (target, errors) = restore_wide(4, 1, |_| {}).await;

    assert!(errors.is_empty(), "{errors}");
    let restores = target.world().script_calls(ScriptName::Restore);
    assert_eq!(hosts(&restores), (0..4).map(node).collect::<Vec<_>>());
    assert_eq!(most_at_once(&restores), 1);
}

#[tokio::test]
async fn up_to_n_instances_restore_at_once_while_locks_and_unlocks_stay_serial() {
    let (target, errors) = restore_wide(5, 2, |_| {}).await;

    assert!(errors.is_empty(), "{errors}");
    let world = target.world();
    let locks = world.script_calls(ScriptName::PreRestoreLock);
    let restores = world.script_calls(ScriptName::Restore);
    let unlocks = world.script_calls(ScriptName::PostRestoreUnlock);
    let mut restored = hosts(&restores);
    restored.sort();
    assert_eq!(restored, (0..5).map(node).collect::<Vec<_>>());
    // Two at once, never three.
    assert_eq!(most_at_once(&restores), 2, "{restores:?}");
    // bbr's serial executor for the lock scripts, whatever N is.
    assert_eq!(most_at_once(&locks), 1);
    assert_eq!(most_at_once(&unlocks), 1);
    assert_eq!(locks.len(), 5);
    assert_eq!(unlocks.len(), 5);
    assert_before(&locks, &restores);
    assert_before(&restores, &unlocks);
    assert!(restores.iter().all(|c| c.result == "exit 0"));
}

#[tokio::test]
async fn n_as_large_as_the_deployment_restores_every_instance_at_once() {
    let (target, errors) = restore_wide(4, 8, |_| {}).await;

    assert!(errors.is_empty(), "{errors}");
    let restores = target.world().script_calls(ScriptName::Restore);
    assert_eq!(restores.len(), 4);
    assert_eq!(most_at_once(&restores), 4);
}

#[tokio::test]
async fn after_a_failing_instance_no_new_one_starts_those_running_finish_and_all_unlock() {
    let (target, errors) = restore_wide(4, 2, |target| {
        target.on(
            &node(0),
            "store",
            ScriptName::Restore,
            Outcome::Fail(5, "restore broke".into()),
        );
        // Still running when node/0 fails: it must finish, not be cut short.
        target.on(&node(1), "store", ScriptName::Restore, Outcome::Slow(40));
    })
    .await;

    assert_eq!(errors.errors().len(), 1, "{errors}");
    assert!(matches!(
        &errors.errors()[0],
        cairn::error::Error::ScriptFailed {
            script: ScriptName::Restore,
            status: 5,
            ..
        }
    ));
    assert_eq!(errors.exit_code(), 1);
    let world = target.world();
    let restores = world.script_calls(ScriptName::Restore);
    // node/0's slot freed first, yet neither node/2 nor node/3 started.
    assert_eq!(hosts(&restores), vec![node(0), node(1)]);
    assert_eq!(restores[0].result, "exit 5");
    assert_eq!(restores[1].result, "exit 0");
    assert!(restores[1].ended > restores[0].ended, "{restores:?}");
    let unlocks = world.script_calls(ScriptName::PostRestoreUnlock);
    let mut unlocked = hosts(&unlocks);
    unlocked.sort();
    assert_eq!(unlocked, (0..4).map(node).collect::<Vec<_>>());
    assert_eq!(most_at_once(&unlocks), 1);
    assert_before(&restores, &unlocks);
    let every: Vec<String> = (0..4).map(node).collect();
    let every: Vec<&str> = every.iter().map(String::as_str).collect();
    assert_roots_removed_where_created(&target, &every);
}

#[tokio::test]
async fn an_interrupt_stops_every_running_restore_starts_no_other_and_all_unlock() {
    let parent = tempfile::tempdir().unwrap();
    let backup = backed_up_wide(parent.path(), 4).await;
    let target = wide(4);
    target.on(&node(0), "store", ScriptName::Restore, Outcome::Slow(1000));
    target.on(&node(1), "store", ScriptName::Restore, Outcome::Hang);
    let errors = super::restore_interrupted_at_hang(
        &target,
        &BbrDirectorySource::new(backup),
        &context_with(2),
    )
    .await;

    assert_eq!(
        super::interrupted(errors.errors(), "Restore"),
        1,
        "{errors}"
    );
    let world = target.world();
    let restores = world.script_calls(ScriptName::Restore);
    assert_eq!(hosts(&restores), vec![node(0), node(1)]);
    assert!(restores[1].result.contains("cancelled"), "{restores:?}");
    let unlocks = world.script_calls(ScriptName::PostRestoreUnlock);
    assert_eq!(unlocks.len(), 4);
    assert_before(&restores, &unlocks);
}
