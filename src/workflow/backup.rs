//! The backup workflow and pre-backup-check (bbr-facts §3.4, §3.5).
//!
//! ```text
//! discover → backupable? → create artifact dir → lock → backup → unlock(true) → drain → clean up → finish
//!                 |fail: clean up          |fail: unlock(false) ──────────────┘ (no drain)
//! ```
//! A lock or backup failure (or an interrupt) unlocks every job with
//! `BBR_AFTER_BACKUP_SCRIPTS_SUCCESSFUL=false`. The artifact is complete only when every job's
//! tar was drained and verified; otherwise its tars are removed and `metadata` lists no
//! instances, which restore refuses.
//!
//! A resumable backup (`--resumable`, store backups) differs only once the drain has begun:
//! the run journal gets a `resumable_backup` entry, each stored segment is written into it,
//! and a drain that fails (or a run that is killed) leaves the staged artifacts on the
//! instances and the stored segments in the store. `backup --resume` ([`resume_backup`])
//! runs no script: it drains the staged artifacts again under the original id, reading the
//! stored segments' bytes again from the instances and sending only what was not stored.

use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};

use super::journal::ResumableBackup;
use super::recovery::{
    drop_pending, pending_resumables, recover_interrupted_runs, JournalSegments, PendingResume,
    Recovery,
};
use super::{
    begin_journal, check_artifact_root_absent, cleanup_error, discover_or_interrupt,
    finish_journal, lock, release_target, remove_artifact_roots, run_scripts, transfer, unlock,
    CreatedRoots, RunContext,
};
use crate::error::{Error, RunErrors};
use crate::format::bbr_directory::metadata::{format_activity_time, format_backup_timestamp};
use crate::format::bbr_directory::BackupMetadata;
use crate::format::sink::{
    BackupRecord, BackupSink, BackupSource, NewBackup, OpenBackup, ResumeSetup, StoredArtifact,
    StoredSegments,
};
use crate::model::deployment::{Deployment, Instance, Target};
use crate::model::job::{Job, LockDirection, ScriptName, ScriptRecord};
use crate::model::layout::DeploymentLayout;
use crate::model::lock_order::{JobRef, LockLayers};
use crate::remote::commands;
use crate::remote::RemoteHostExt;
use crate::report::events::Event;
use crate::report::plan_view::PlanView;

/// What `backup` is asked to do.
#[derive(Debug, Clone)]
pub struct BackupOptions {
    /// Where the backup goes.
    pub sink: Arc<dyn BackupSink>,
    /// Skip the lock and unlock scripts.
    pub unsafe_lock_free: bool,
    /// Save the deployment manifest as `manifest.yml` when the target has one.
    pub manifest: Option<String>,
    /// Time the command started; names the backup (`YYYYMMDDTHHMMSSZ`).
    pub started_at: DateTime<Utc>,
    /// `--resumable`: a drain that fails keeps what it staged and stored, for `--resume`.
    pub resumable: bool,
    /// `--resume`: finish the pending resumable backup instead of starting one.
    pub resume: bool,
}

/// What a backup produced.
#[derive(Debug)]
pub struct BackupReport {
    /// Where the backup is (directory path or store key), when one was started.
    pub artifact: Option<String>,
    /// True when every artifact was stored and verified.
    pub complete: bool,
    /// Bytes stored (after compression) for the verified artifacts.
    pub stored_bytes: u64,
    /// Everything that went wrong.
    pub errors: RunErrors,
    /// Where the finished backup can be read back, when it is complete.
    pub source: Option<Arc<dyn BackupSource>>,
    /// Every script that finished.
    pub scripts: Vec<ScriptRecord>,
    /// A resumable drain that did not complete kept what it staged and stored, for
    /// `backup --resume` (or `backup-cleanup` to discard it).
    pub kept_for_resume: bool,
}

/// What a backup will do, computed before anything is changed.
#[derive(Debug, Clone)]
pub struct BackupPlan {
    /// Lock layers (backup order).
    pub layers: LockLayers,
    /// Jobs with a `backup` script.
    pub backup_jobs: Vec<JobRef>,
    /// Instances with at least one backup script.
    pub backupable_instances: Vec<usize>,
}

/// The backupable checks: backup scripts exist, no instance has a leftover artifact directory,
/// and the lock order has no cycle.
///
/// # Errors
/// Every check that failed.
pub async fn plan_backup(deployment: &Deployment) -> Result<BackupPlan, RunErrors> {
    let backup_jobs = deployment.jobs_with(ScriptName::Backup);
    if backup_jobs.is_empty() {
        return Err(Error::NoBackupScripts {
            deployment: deployment.name.clone(),
        }
        .into());
    }
    let all: Vec<usize> = (0..deployment.instances.len()).collect();
    check_artifact_root_absent(deployment, &all)
        .await
        .into_result()?;
    let layers = deployment.lock_layers(LockDirection::Backup)?;
    let backupable_instances = all
        .into_iter()
        .filter(|&i| deployment.instances[i].can_backup())
        .collect();
    Ok(BackupPlan {
        layers,
        backup_jobs,
        backupable_instances,
    })
}

/// `pre-backup-check`: discovery and the backupable checks, changing nothing; what a killed
/// run left is reported with the command that clears it. Also returns the plan's description
/// when the checks passed.
pub async fn pre_backup_check(
    target: &dyn Target,
    context: &RunContext,
) -> (RunErrors, Option<PlanView>) {
    let mut errors = RunErrors::new();
    let mut view = None;
    match discover_or_interrupt(target, context, "Pre-backup check").await {
        Ok(deployment) => {
            recover_interrupted_runs(target, &deployment, context, Recovery::Report).await;
            if let Err(error) = refuse_while_pending(&deployment, context).await {
                errors.push(error);
            }
            tracing::info!("Running pre-checks for backup of {}...", deployment.name);
            match plan_backup(&deployment).await {
                Ok(plan) => {
                    view = Some(PlanView::new(&deployment, &plan.layers, &plan.backup_jobs));
                }
                Err(e) => errors.extend(e),
            }
        }
        Err(e) => errors.extend(e),
    }
    release_target(target, &mut errors).await;
    finish_journal(context, &errors).await;
    (errors, view)
}

/// A backup is refused while a resumable one of the deployment is pending (only `--resume`
/// goes on): `pre-backup-check` says so before the nightly run does.
async fn refuse_while_pending(deployment: &Deployment, context: &RunContext) -> Result<(), Error> {
    let pending = pending_resumables(deployment, context).await?;
    match pending.first() {
        Some(resume) => {
            let entry = resume.entry();
            Err(Error::ResumablePending {
                deployment: deployment.name.clone(),
                backup_id: entry.backup_id.clone(),
                location: entry.location.clone(),
            })
        }
        None => Ok(()),
    }
}

/// Runs a backup of `target` into a new bbr-format directory.
pub async fn backup(
    target: &dyn Target,
    options: &BackupOptions,
    context: &RunContext,
) -> BackupReport {
    let mut report = BackupReport {
        artifact: None,
        complete: false,
        stored_bytes: 0,
        errors: RunErrors::new(),
        source: None,
        scripts: Vec::new(),
        kept_for_resume: false,
    };
    if let Err(errors) = begin_journal(target, context).await {
        report.errors.extend(errors);
        return report;
    }
    match discover_or_interrupt(target, context, "Backup").await {
        Ok(deployment) => {
            backup_deployment(target, &deployment, options, context, &mut report).await;
        }
        Err(errors) => report.errors.extend(errors),
    }
    release_target(target, &mut report.errors).await;
    finish_journal(context, &report.errors).await;
    report.scripts = context.scripts();
    report
}

/// Recovery of a killed run, the plan, then the backup proper: start the sink, run the scripts
/// and drain the artifacts ([`run_backup`]), and finish the sink with what was stored.
async fn backup_deployment(
    target: &dyn Target,
    deployment: &Deployment,
    options: &BackupOptions,
    context: &RunContext,
    report: &mut BackupReport,
) {
    let recovered = recover_interrupted_runs(target, deployment, context, Recovery::Undo).await;
    if !recovered.is_empty() {
        return report.errors.extend(recovered);
    }
    let mut pending = match pending_resumables(deployment, context).await {
        Ok(pending) => pending,
        Err(error) => return report.errors.push(error),
    };
    if options.resume {
        let Some(resume) = pending.pop() else {
            return report.errors.push(Error::NothingToResume {
                deployment: deployment.name.clone(),
            });
        };
        return resume_backup(deployment, &resume, options, context, report).await;
    }
    if let Some(resume) = pending.first() {
        let entry = resume.entry();
        return report.errors.push(Error::ResumablePending {
            deployment: deployment.name.clone(),
            backup_id: entry.backup_id.clone(),
            location: entry.location.clone(),
        });
    }
    if options.resumable {
        if let Err(error) = refuse_streaming(deployment) {
            return report.errors.push(error);
        }
    }
    tracing::info!("Running pre-checks for backup of {}...", deployment.name);
    let plan = match plan_backup(deployment).await {
        Ok(plan) => plan,
        Err(errors) => return report.errors.extend(errors),
    };
    let backup_id = format_backup_timestamp(options.started_at);
    let new_backup = NewBackup {
        deployment: &deployment.name,
        backup_id: &backup_id,
        started_at: options.started_at,
        concurrent_streams: plan.backup_jobs.len().min(context.options.parallelism),
        deployment_manifest: options.manifest.as_deref(),
    };
    let destination = match options.sink.start(&new_backup).await {
        Ok(destination) => destination,
        Err(error) => return report.errors.push(error),
    };
    if let Some(entry) = destination.journal_entry() {
        // Before anything is locked or stored (the sink has written nothing yet).
        if let Err(error) = context
            .journal_repository_backup(&deployment.name, Some(entry))
            .await
        {
            return report.errors.push(error);
        }
    }
    report.artifact = Some(destination.location());
    let (complete, artifacts) = run_backup(
        deployment,
        &plan,
        destination.as_ref(),
        options,
        context,
        report,
    )
    .await;
    report.complete = complete && !context.cancel.is_cancelled();
    let layout = deployment.layout();
    finish_backup(
        &deployment.name,
        destination,
        artifacts,
        layout,
        options,
        context,
        report,
    )
    .await;
}

/// `--resumable` needs every artifact staged: a job that streams its backup is refused.
fn refuse_streaming(deployment: &Deployment) -> Result<(), Error> {
    for job_ref in deployment.jobs_with(ScriptName::Backup) {
        let (instance, job) = deployment.job(job_ref);
        if job.streams_backup() {
            return Err(Error::ResumableStreaming {
                deployment: deployment.name.clone(),
                instance: instance.name.to_string(),
                job: job.name.clone(),
            });
        }
    }
    Ok(())
}

/// Makes the backup resumable once its drain begins: the journal entry first (with the
/// segments `stored` by the run being resumed), then the sink, which from now on reports
/// each segment to the journal and keeps what it stored when it fails.
async fn begin_resumable(
    deployment: &Deployment,
    destination: &dyn OpenBackup,
    entry: ResumableBackup,
    context: &RunContext,
) -> Result<(), Error> {
    let stored: StoredSegments = entry.segments.clone();
    let written_as = entry.written_as.clone();
    context.journal_resumable(&deployment.name, entry).await?;
    destination.make_resumable(ResumeSetup {
        observer: Arc::new(JournalSegments {
            context: context.clone(),
            deployment: deployment.name.clone(),
        }),
        stored,
        written_as,
    })
}

/// `backup --resume`: finishes the pending resumable backup under its original id. No script
/// runs (the artifacts are staged already); every staged artifact is drained again, the
/// segments stored before are compared and not sent, and the rest is stored.
async fn resume_backup(
    deployment: &Deployment,
    pending: &PendingResume,
    options: &BackupOptions,
    context: &RunContext,
    report: &mut BackupReport,
) {
    let entry = pending.entry().clone();
    if let Err(error) = refuse_streaming(deployment) {
        return report.errors.push(error);
    }
    let plan = match resume_plan(deployment) {
        Ok(plan) => plan,
        Err(error) => return report.errors.push(error),
    };
    let options = BackupOptions {
        started_at: entry.started_at,
        ..options.clone()
    };
    let new_backup = NewBackup {
        deployment: &deployment.name,
        backup_id: &entry.backup_id,
        started_at: entry.started_at,
        concurrent_streams: plan.backup_jobs.len().min(context.options.parallelism),
        deployment_manifest: options.manifest.as_deref(),
    };
    let destination = match options.sink.start(&new_backup).await {
        Ok(destination) => destination,
        Err(error) => return report.errors.push(error),
    };
    if destination.location() != entry.location {
        return report.errors.push(Error::ResumeElsewhere {
            deployment: deployment.name.clone(),
            recorded: entry.location.clone(),
            given: destination.location(),
        });
    }
    report.artifact = Some(destination.location());
    let stored: usize = entry.segments.values().map(Vec::len).sum();
    if let Err(error) =
        begin_resumable(deployment, destination.as_ref(), entry.clone(), context).await
    {
        return report.errors.push(error);
    }
    drop_pending(pending, context).await;
    if pending.journal.host != crate::workflow::journal::this_host() {
        tracing::warn!(
            "Resuming backup {} left by a run on {} (pid {}, started {}); that run must be over",
            entry.backup_id,
            pending.journal.host,
            pending.journal.pid,
            pending.journal.started_at.to_rfc3339()
        );
    }
    tracing::info!(
        "Resuming backup {} of {}: the {stored} segment(s) the interrupted run stored are read again from the instances and compared, not sent again",
        entry.backup_id,
        deployment.name
    );
    let created = CreatedRoots::new(deployment.instances.len());
    for &instance in &plan.backupable_instances {
        created.mark(instance);
    }
    let drained = Mutex::new(Vec::new());
    let work = Work {
        deployment,
        plan: &plan,
        context,
        created: &created,
        destination: destination.as_ref(),
        drained: &drained,
    };
    let drain_errors = drain(&work).await;
    let complete = drain_errors.is_empty() && !context.cancel.is_cancelled();
    report.errors.extend(drain_errors.in_drain());
    finish_drain(&work, complete, true, &mut report.errors).await;
    report.complete = complete;
    let artifacts = drained.into_inner().expect("drained lock");
    finish_backup(
        &deployment.name,
        destination,
        artifacts,
        deployment.layout(),
        &options,
        context,
        report,
    )
    .await;
}

/// The plan of a resume: the backup jobs, without the check for staged directories (they are
/// what is resumed).
fn resume_plan(deployment: &Deployment) -> Result<BackupPlan, Error> {
    Ok(BackupPlan {
        layers: deployment.lock_layers(LockDirection::Backup)?,
        backup_jobs: deployment.jobs_with(ScriptName::Backup),
        backupable_instances: (0..deployment.instances.len())
            .filter(|&i| deployment.instances[i].can_backup())
            .collect(),
    })
}

/// After the drain: the staged artifacts are removed, unless a resumable drain did not
/// complete — then they stay for `backup --resume`, and so does the journal entry.
async fn finish_drain(work: &Work<'_>, complete: bool, resumable: bool, errors: &mut RunErrors) {
    let (deployment, context) = (work.deployment, work.context);
    if resumable && !complete {
        tracing::info!(
            "Kept the staged artifacts in /var/vcap/store/bbr-backup for `backup --resume` (or `backup-cleanup` to discard the backup)"
        );
    } else {
        tracing::info!("Cleaning up...");
        let created = work.created.created();
        errors.extend(remove_artifact_roots(deployment, &created, cleanup_error).await);
        if resumable {
            context.journal_resumable_done(&deployment.name).await;
        }
    }
    if context.cancel.is_cancelled() {
        errors.push(match context.interrupted("Backup") {
            Error::Interrupted { signal, .. } if resumable && !complete => {
                Error::InterruptedResumable { signal }
            }
            other => other,
        });
    }
}

/// Hands the sink its record: restorable when complete, removed or unlisted otherwise.
async fn finish_backup(
    deployment: &str,
    destination: Box<dyn OpenBackup>,
    artifacts: Vec<StoredArtifact>,
    layout: DeploymentLayout,
    options: &BackupOptions,
    context: &RunContext,
    report: &mut BackupReport,
) {
    report.stored_bytes = artifacts.iter().map(|a| a.stored.size).sum();
    let record = BackupRecord {
        complete: report.complete,
        metadata: bbr_metadata(options.started_at, &artifacts, report.complete),
        artifacts,
        scripts: context.scripts(),
        layout,
        failure: report
            .errors
            .errors()
            .iter()
            .map(ToString::to_string)
            .collect(),
    };
    let journaled = destination.journal_entry().is_some();
    match destination.finish(&record).await {
        Ok(source) => {
            report.source = source;
            // Complete, or its snapshots deleted: nothing of it is left for the next run.
            if journaled {
                if let Err(error) = context.journal_repository_backup(deployment, None).await {
                    tracing::warn!("{error}");
                }
            }
        }
        Err(error) => {
            report.complete = false;
            report.errors.push(error);
        }
    }
}

/// Lock, back up, unlock, drain, then clean up the instances. Returns whether every artifact was drained and verified, and
/// the artifacts stored.
async fn run_backup(
    deployment: &Deployment,
    plan: &BackupPlan,
    destination: &dyn OpenBackup,
    options: &BackupOptions,
    context: &RunContext,
    report: &mut BackupReport,
) -> (bool, Vec<StoredArtifact>) {
    tracing::info!("Starting backup of {}...", deployment.name);
    let created = CreatedRoots::new(deployment.instances.len());
    let drained = Mutex::new(Vec::new());
    let work = Work {
        deployment,
        plan,
        context,
        created: &created,
        destination,
        drained: &drained,
    };
    let (all_drained, resumable) =
        lock_backup_unlock_drain(&work, options, &mut report.errors).await;
    // A drain stopped by a signal may report no error: it is not complete all the same.
    let complete = all_drained && !context.cancel.is_cancelled();
    finish_drain(&work, complete, resumable, &mut report.errors).await;
    report.kept_for_resume = resumable && !complete;
    (complete, drained.into_inner().expect("drained lock"))
}

/// What the steps of one backup share.
struct Work<'a> {
    deployment: &'a Deployment,
    plan: &'a BackupPlan,
    context: &'a RunContext,
    created: &'a CreatedRoots,
    destination: &'a dyn OpenBackup,
    drained: &'a Mutex<Vec<StoredArtifact>>,
}

/// bbr's `metadata` at the end of a backup: the start and finish times, and every artifact's
/// checksums when the backup is complete (a failed backup lists none, which restore refuses).
fn bbr_metadata(
    started_at: DateTime<Utc>,
    artifacts: &[StoredArtifact],
    complete: bool,
) -> BackupMetadata {
    let mut metadata = BackupMetadata::started(started_at);
    if let Some(activity) = metadata.backup_activity.as_mut() {
        activity.finish_time = Some(format_activity_time(Utc::now()));
    }
    if complete {
        for artifact in artifacts {
            metadata.add_files(
                artifact.shared.then_some(artifact.name.as_str()),
                (&artifact.group, &artifact.index, &artifact.job),
                &artifact.files,
            );
        }
    }
    metadata
}

/// Lock, back up, unlock, drain. Returns true when every artifact was drained and verified,
/// and whether the drain began as a resumable one.
async fn lock_backup_unlock_drain(
    work: &Work<'_>,
    options: &BackupOptions,
    errors: &mut RunErrors,
) -> (bool, bool) {
    let (deployment, plan, context) = (work.deployment, work.plan, work.context);
    let locking = !options.unsafe_lock_free;
    let mut scripts_ok = true;
    if locking {
        let lock_errors = lock(deployment, &plan.layers, ScriptName::PreBackupLock, context).await;
        scripts_ok = lock_errors.is_empty() && !context.cancel.is_cancelled();
        errors.extend(lock_errors);
    } else {
        // bbr's skip steps (`orchestrator/skip_step.go`, named in `backuper.go`).
        tracing::info!("Skipping lock for deployment");
    }
    if scripts_ok {
        let backup_errors = run_backup_scripts(work).await;
        scripts_ok = backup_errors.is_empty() && !context.cancel.is_cancelled();
        errors.extend(backup_errors);
    }
    if !locking {
        let which = if scripts_ok {
            "successful"
        } else {
            "unsuccessful"
        };
        tracing::info!("Skipping unlock after {which} backup for deployment");
    }
    let mut unlocked = true;
    if locking {
        let success = scripts_ok.to_string();
        let environment = move |_: &crate::model::deployment::Instance, _: &Job| {
            vec![("BBR_AFTER_BACKUP_SCRIPTS_SUCCESSFUL", success.clone())]
        };
        let unlock_errors = unlock(
            deployment,
            &plan.layers,
            ScriptName::PostBackupUnlock,
            &environment,
            context,
        )
        .await;
        unlocked = unlock_errors.is_empty();
        errors.extend(unlock_errors);
    }
    if !scripts_ok || context.cancel.is_cancelled() {
        return (false, false);
    }
    if options.resumable && unlocked {
        let entry = ResumableBackup {
            backup_id: format_backup_timestamp(options.started_at),
            started_at: options.started_at,
            location: work.destination.location(),
            segments: StoredSegments::new(),
            written_as: Some(work.destination.written_as()),
        };
        if let Err(error) = begin_resumable(deployment, work.destination, entry, context).await {
            errors.push(error);
            return (false, false);
        }
    }
    let resumable = options.resumable && unlocked;
    let drain_errors = drain(work).await;
    let drained = drain_errors.is_empty();
    // bbr's drain step (`orchestrator/drain_step.go`), with Go's `%v` of the local time.
    if drained {
        tracing::info!("Backup created of {} on {}", deployment.name, go_time_now());
    } else {
        tracing::info!(
            "Failed to create backup of {} on {}, failed during drain step",
            deployment.name,
            go_time_now()
        );
    }
    errors.extend(drain_errors.in_drain());
    (drained, resumable)
}

/// The local time now as Go's `%v` prints a `time.Time`: `2006-01-02 15:04:05.999999999 -0700 MST`
/// (fraction without trailing zeros, none when zero). Go also appends its monotonic clock
/// reading (` m=+12.345678901`, seconds since the process started); Cairn leaves it out: it is
/// a Go runtime detail, no wall-clock time, and a pattern that reads the time stops before it.
fn go_time_now() -> String {
    let now = jiff::Zoned::now();
    let nanos = now.subsec_nanosecond();
    let fraction = if nanos == 0 {
        String::new()
    } else {
        format!(".{nanos:09}").trim_end_matches('0').to_string()
    };
    format!(
        "{}{fraction} {}",
        now.strftime("%Y-%m-%d %H:%M:%S"),
        now.strftime("%z %Z")
    )
}

/// The backup scripts, logged between bbr's `Running backup scripts...` and `Finished running
/// backup scripts.` (`orchestrator/deployment.go`). Streaming jobs' artifacts are stored while
/// their scripts run.
async fn run_backup_scripts(work: &Work<'_>) -> RunErrors {
    tracing::info!("Running backup scripts...");
    let (streaming, classic): (Vec<JobRef>, Vec<JobRef>) = work
        .plan
        .backup_jobs
        .iter()
        .partition(|&&job_ref| work.deployment.job(job_ref).1.streams_backup());
    let (mut errors, streamed) = tokio::join!(
        make_directories_and_back_up(work, &classic),
        stream_backups(work, &streaming)
    );
    errors.extend(streamed);
    tracing::info!("Finished running backup scripts.");
    errors
}

/// The environment of a backup script: bbr's artifact directory (not created for a
/// streaming job, which writes to stdout instead) and `CAIRN_STREAM=1` for a streaming job.
fn backup_environment(instance: &Instance, job: &Job) -> Vec<(&'static str, String)> {
    let mut environment = vec![
        ("BBR_ARTIFACT_DIRECTORY", instance.backup_directory(job)),
        ("ARTIFACT_DIRECTORY", instance.backup_directory(job)),
    ];
    if job.streams_backup() {
        environment.push(("CAIRN_STREAM", "1".to_string()));
    }
    environment
}

async fn make_directories_and_back_up(work: &Work<'_>, jobs: &[JobRef]) -> RunErrors {
    let (deployment, context) = (work.deployment, work.context);
    let mut errors = RunErrors::new();
    for &job_ref in jobs {
        let (instance, job) = deployment.job(job_ref);
        if let Err(error) = context.journal_artifact_root(deployment, job_ref.0).await {
            errors.push(error);
            return errors;
        }
        work.created.mark(job_ref.0);
        match instance
            .remote
            .run(&commands::make_directory(&instance.backup_directory(job)))
            .await
        {
            Ok(output) if output.success() => {}
            Ok(output) => errors.push(Error::RemoteCommand {
                instance: instance.name.clone(),
                action: "creating the artifact directory".into(),
                detail: output.failure_detail(),
            }),
            Err(error) => errors.push(error.into()),
        }
    }
    if !errors.is_empty() {
        return errors;
    }
    run_scripts(
        deployment,
        jobs,
        ScriptName::Backup,
        &backup_environment,
        context,
        &context.cancel,
    )
    .await
}

/// Streaming jobs: each `backup` script's stdout goes straight into the sink. The artifact
/// root is journalled and removed afterwards like any other, in case a script made one.
async fn stream_backups(work: &Work<'_>, jobs: &[JobRef]) -> RunErrors {
    let (deployment, context) = (work.deployment, work.context);
    for &job_ref in jobs {
        if let Err(error) = context.journal_artifact_root(deployment, job_ref.0).await {
            let mut errors = RunErrors::new();
            errors.push(error);
            return errors;
        }
        work.created.mark(job_ref.0);
    }
    let streams = jobs.iter().map(|&job_ref| async move {
        let (instance, job) = deployment.job(job_ref);
        let environment = backup_environment(instance, job);
        let stored =
            transfer::stream_backup(instance, job, work.destination, &environment, context).await?;
        if let Some(artifact) = stored {
            stored_event(context, instance, job, &artifact);
            work.drained.lock().expect("drained lock").push(artifact);
        }
        Ok::<(), Error>(())
    });
    super::gather_errors(streams, context.options.parallelism).await
}

fn stored_event(context: &RunContext, instance: &Instance, job: &Job, artifact: &StoredArtifact) {
    context.emit(Event::ArtifactStored {
        instance: instance.name.to_string(),
        job: job.name.clone(),
        artifact: artifact.name.clone(),
        size: artifact.stored.size,
        sha256: artifact.stored.sha256.clone(),
        version: artifact.version.clone(),
        files: artifact.files.len(),
    });
}

/// Copies the classic jobs' artifacts (streaming ones were stored while their scripts ran).
async fn drain(work: &Work<'_>) -> RunErrors {
    let (deployment, context) = (work.deployment, work.context);
    let classic = work
        .plan
        .backup_jobs
        .iter()
        .filter(|&&job_ref| !deployment.job(job_ref).1.streams_backup());
    let transfers = classic.map(|&job_ref| async move {
        let (instance, job) = deployment.job(job_ref);
        let artifact = transfer::download(instance, job, work.destination, context).await?;
        stored_event(context, instance, job, &artifact);
        work.drained.lock().expect("drained lock").push(artifact);
        Ok::<(), Error>(())
    });
    super::gather_errors(transfers, context.options.parallelism).await
}
