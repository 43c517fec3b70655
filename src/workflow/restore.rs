//! The restore workflow (bbr-facts §3.7).
//!
//! ```text
//! check backup → discover → restorable? → copy + verify → lock → restore → unlock → clean up
//!  |fail: stop    |fail: stop   |fail: clean up  |fail: clean up |fail: unlock ─────┘
//! ```
//! Before Cairn connects to anything it checks what needs no reading of the artifacts: the
//! metadata (and for a store the manifest, every object's recorded version and size, and that
//! an encrypted backup can be decrypted with `--identity`). Each artifact is then read **once**:
//! downloaded, decrypted, decompressed, every tar entry checked and every file hashed while the
//! stream goes into `tar -x` in the instance's artifact directory (an unsafe entry is refused
//! before its header is sent). Only when every artifact arrived complete, with every checksum
//! matching (here and on the instance), do the restore scripts run; otherwise the artifact
//! directories are removed and no script runs, so a damaged or hostile artifact never reaches
//! a script. bbr reads every tar twice for the same guarantee (verify, then copy).
//! Once connected, and before any lock or copy, [`plan_restore`] runs every check and
//! collects every reason to refuse, not only the first: bbr's (restore scripts, instances,
//! leftover artifact directories, lock cycles), the backup's compatibility with the target
//! ([`compatibility`]: missing groups, instances or jobs refuse, other differences warn) and
//! the free space for the artifacts ([`space`]). `restore --plan` ([`plan_only`]) stops there.
//! Restore scripts run instance by instance (as bbr): every job of an instance runs, one
//! after another, and the first instance with a failure stops the loop. By default one
//! instance at a time, bbr's order; `--restore-parallelism N` lets up to N instances run
//! theirs at once (a failure then starts no further instance, and those running finish). The
//! restore lock scripts run one job at a time whatever N is (bbr's serial executor); unlock
//! always follows once a lock was attempted.

pub mod compatibility;
pub mod space;

use std::sync::atomic::{AtomicBool, Ordering};

use futures::StreamExt;

use super::recovery::{recover_interrupted_runs, Recovery};
use super::scripts::run_job_script;
use super::{
    begin_journal, check_artifact_root_absent, cleanup_error, discover_or_interrupt,
    finish_journal, lock, release_target, remove_artifact_roots, transfer, unlock, CreatedRoots,
    RunContext,
};
use crate::error::{Error, RunErrors};
use crate::format::bbr_directory::{BackupMetadata, Checksums};
use crate::format::sink::{BackupSource, CheckedBackup};
use crate::model::deployment::{Deployment, Instance, Target};
use crate::model::job::{LockDirection, ScriptName, ScriptRecord};
use crate::model::lock_order::{JobRef, LockLayers};
use crate::report::plan_view::{job_label, lock_edges};
use crate::report::restore_plan_view::{ArtifactView, RestorePlanView, SpaceView};
use crate::report::verification::Verification;
pub use space::InstanceSpace;

/// One artifact to send: a job on an instance, from a tar of the backup.
#[derive(Debug, Clone)]
pub struct Upload {
    /// The job.
    pub job: JobRef,
    /// Tar name without `.tar`.
    pub artifact_name: String,
    /// Checksums recorded in `metadata`.
    pub checksums: Checksums,
    /// A streamed artifact going to a job that restores from stdin (`cairn: {stream:
    /// [restore]}`): checked in full first, then streamed into the script; no artifact
    /// directory. Any other pairing is a classic copy (a stream is a one-file tar).
    pub stream: bool,
}

/// What a restore will do, computed before anything is changed.
#[derive(Debug, Clone, Default)]
pub struct RestorePlan {
    /// Lock layers (restore order); empty when the lock graph has a cycle.
    pub layers: LockLayers,
    /// Artifacts to copy, instance by instance.
    pub uploads: Vec<Upload>,
    /// Bytes of each upload once extracted, when the backup records it (as `uploads`).
    pub sizes: Vec<Option<u64>>,
    /// Free space of every instance that receives artifacts.
    pub space: Vec<InstanceSpace>,
    /// Differences that do not refuse the restore (releases, groups or jobs without
    /// artifacts, unmeasured free space), each named.
    pub warnings: Vec<String>,
}

/// The restorable checks, producing the plan and every reason to refuse it (all of them,
/// not only the first): discontinued `restore_name`, no restore script, the backup's
/// compatibility with the target ([`compatibility`]), an artifact for every restore job, no
/// leftover artifact directory, free space ([`space`]), a lock order without cycle.
pub async fn plan_restore(
    deployment: &Deployment,
    backup: &dyn CheckedBackup,
) -> (RestorePlan, RunErrors) {
    let mut refusals = RunErrors::new();
    let mut plan = RestorePlan::default();
    check_restore_names(deployment, &mut refusals);
    if !deployment.instances.iter().any(Instance::can_restore) {
        refusals.push(Error::NoRestoreScripts {
            deployment: deployment.name.clone(),
        });
    }
    let recorded = compatibility::recorded_layout(backup.deployment_manifest(), backup.layout());
    if let Some(recorded) = &recorded {
        tracing::info!("Comparing the deployment with {}...", recorded.source);
    }
    let found = compatibility::check(deployment, backup.metadata(), recorded.as_ref());
    refusals.extend(RunErrors(found.refusals));
    plan.warnings = found.warnings;
    plan.uploads = plan_uploads(deployment, backup.metadata(), &mut refusals);
    plan.sizes = plan
        .uploads
        .iter()
        .map(|u| backup.artifact_bytes(&u.artifact_name))
        .collect();
    let all: Vec<usize> = (0..deployment.instances.len()).collect();
    refusals.extend(check_artifact_root_absent(deployment, &all).await);
    let space = space::check_space(deployment, &plan.uploads, &plan.sizes).await;
    refusals.extend(RunErrors(space.refusals));
    plan.warnings.extend(space.warnings);
    plan.space = space.instances;
    match deployment.lock_layers(LockDirection::Restore) {
        Ok(layers) => plan.layers = layers,
        Err(error) => refusals.push(error),
    }
    (plan, refusals)
}

/// bbr refuses a restorable instance with a discontinued `restore_name`.
fn check_restore_names(deployment: &Deployment, refusals: &mut RunErrors) {
    for instance in deployment.instances.iter().filter(|i| i.can_restore()) {
        if instance.jobs.iter().any(|j| {
            j.metadata
                .restore_name
                .as_deref()
                .is_some_and(|n| !n.is_empty())
        }) {
            refusals.push(Error::DiscontinuedRestoreName {
                group: instance.name.group.clone(),
            });
        }
    }
}

/// One upload per job with a restore script; a job whose artifact the backup lacks is a
/// refusal (bbr would fail at its upload).
fn plan_uploads(
    deployment: &Deployment,
    metadata: &BackupMetadata,
    refusals: &mut RunErrors,
) -> Vec<Upload> {
    let mut uploads = Vec::new();
    for job_ref in deployment.jobs_with(ScriptName::Restore) {
        let (instance, job) = deployment.job(job_ref);
        let recorded = match &job.shared_artifact {
            Some(shared) => metadata
                .custom_artifacts
                .iter()
                .find(|a| a.name == *shared)
                .map(|a| &a.checksums),
            None => metadata.checksums_for(&instance.name.group, &instance.index, &job.name),
        };
        let Some(checksums) = recorded else {
            refusals.push(Error::StructureMismatch {
                deployment: deployment.name.clone(),
                detail: format!(
                    "the backup has no artifact for job {} on {}/{}",
                    job.name, instance.name.group, instance.index
                ),
            });
            continue;
        };
        uploads.push(Upload {
            job: job_ref,
            artifact_name: instance.restore_artifact_name(job),
            checksums: checksums.clone(),
            stream: job.streams_restore() && crate::format::stream::is_stream(checksums),
        });
    }
    uploads
}

/// `restore --plan`: the checks of a restore and its plan, changing nothing (no lock, no
/// copy, no directory made; what a killed run left is reported with the command that clears
/// it); the errors are every reason the restore would be refused.
pub async fn plan_only(
    target: &dyn Target,
    source: &dyn BackupSource,
    context: &RunContext,
) -> (Option<RestorePlanView>, RunErrors) {
    let backup = match source.check(context.options.parallelism).await {
        Ok(checked) => checked,
        Err(errors) => return (None, errors),
    };
    let mut errors = RunErrors::new();
    let mut view = None;
    match discover_or_interrupt(target, context, "Restore plan").await {
        Ok(deployment) => {
            recover_interrupted_runs(target, &deployment, context, Recovery::Report).await;
            let (plan, refusals) = plan_restore(&deployment, backup.as_ref()).await;
            view = Some(plan_view(&deployment, &source.location(), &plan, &refusals));
            errors.extend(refusals);
        }
        Err(e) => errors.extend(e),
    }
    release_target(target, &mut errors).await;
    finish_journal(context, &errors).await;
    (view, errors)
}

/// What a restore did.
#[derive(Debug, Default)]
pub struct RestoreReport {
    /// Everything that went wrong.
    pub errors: RunErrors,
    /// Every script that finished.
    pub scripts: Vec<ScriptRecord>,
    /// What each restored job's `post-restore-verify` said (with `verify_restore`).
    pub verifications: Vec<Verification>,
}

/// Restores a backup into `target`; no script runs unless every artifact arrived verified.
pub async fn restore(
    target: &dyn Target,
    source: &dyn BackupSource,
    context: &RunContext,
) -> RestoreReport {
    let errors = restore_from(target, source, context).await;
    RestoreReport {
        errors,
        scripts: context.scripts(),
        verifications: context.verifications(),
    }
}

async fn restore_from(
    target: &dyn Target,
    source: &dyn BackupSource,
    context: &RunContext,
) -> RunErrors {
    // bbr's `ValidateArtifactStep` (`orchestrator/validate_artifact_step.go`).
    tracing::info!("Starting restore of {}...", target.name());
    tracing::info!("Validating backup artifact for {}...", target.name());
    let backup = match source.check(context.options.parallelism).await {
        Ok(checked) => checked,
        Err(errors) => return errors,
    };
    if let Err(errors) = begin_journal(target, context).await {
        return errors;
    }
    let mut errors = RunErrors::new();
    match discover_or_interrupt(target, context, "Restore").await {
        Ok(deployment) => {
            restore_deployment(target, &deployment, backup.as_ref(), context, &mut errors).await;
        }
        Err(e) => errors.extend(e),
    }
    release_target(target, &mut errors).await;
    finish_journal(context, &errors).await;
    errors
}

/// Recovery of a killed run (its artifact directories would refuse the plan), the plan, then
/// copy, lock, restore, unlock and clean up.
async fn restore_deployment(
    target: &dyn Target,
    deployment: &Deployment,
    backup: &dyn CheckedBackup,
    context: &RunContext,
    errors: &mut RunErrors,
) {
    let recovered = recover_interrupted_runs(target, deployment, context, Recovery::Undo).await;
    if !recovered.is_empty() {
        return errors.extend(recovered);
    }
    let (plan, refusals) = plan_restore(deployment, backup).await;
    for warning in &plan.warnings {
        tracing::warn!("{warning}");
    }
    if !refusals.is_empty() {
        return errors.extend(refusals);
    }
    let created = CreatedRoots::new(deployment.instances.len());
    let copy_errors = copy_to_instances(deployment, &plan, backup, &created, context).await;
    let copied = copy_errors.is_empty();
    errors.extend(copy_errors);
    if copied && !context.cancel.is_cancelled() {
        errors.extend(lock_restore_unlock(deployment, &plan, backup, context).await);
        // Verification reads the artifact directories, so it runs before they are removed,
        // and only on a restore that fully succeeded.
        if context.options.verify_restore && errors.is_empty() && !context.cancel.is_cancelled() {
            let restored: Vec<JobRef> = plan
                .uploads
                .iter()
                .filter(|u| !u.stream)
                .map(|u| u.job)
                .collect();
            record_streamed_unverified(deployment, &plan, context);
            errors.extend(super::verify::verify_restored(deployment, &restored, context).await);
        }
    }
    tracing::info!("Cleaning up...");
    errors.extend(remove_artifact_roots(deployment, &created.created(), cleanup_error).await);
    if context.cancel.is_cancelled() {
        errors.push(context.interrupted("Restore"));
    }
}

/// A streamed restore leaves no artifact directory for `post-restore-verify` to compare the
/// data with, so it is not run for those jobs; the report says so.
fn record_streamed_unverified(deployment: &Deployment, plan: &RestorePlan, context: &RunContext) {
    for upload in plan.uploads.iter().filter(|u| u.stream) {
        let (instance, job) = deployment.job(upload.job);
        tracing::warn!(
            "{} on {} was restored from a stream: post-restore-verify does not run (there is no artifact directory to compare with)",
            job.name,
            instance.name
        );
        context.record_verification(Verification {
            instance: instance.name.to_string(),
            job: job.name.clone(),
            result: crate::report::verification::VerifyResult::NoScript,
            evidence: String::new(),
            detail: "restored from a stream: no artifact directory to verify against".into(),
            seconds: 0.0,
        });
    }
}

async fn copy_to_instances(
    deployment: &Deployment,
    plan: &RestorePlan,
    backup: &dyn CheckedBackup,
    created: &CreatedRoots,
    context: &RunContext,
) -> RunErrors {
    let copies = plan.uploads.iter().map(|upload| async move {
        let (instance, job) = deployment.job(upload.job);
        let artifact = backup
            .open_artifact(&upload.artifact_name, &upload.checksums)
            .await?;
        if upload.stream {
            tracing::info!(
                "Verifying streamed artifact for job {} on {}...",
                job.name,
                instance.name
            );
            return transfer::verify_stream(artifact).await;
        }
        context
            .journal_artifact_root(deployment, upload.job.0)
            .await?;
        created.mark(upload.job.0);
        transfer::upload(instance, job, artifact, &upload.checksums, context).await
    });
    super::gather_errors(copies, context.options.parallelism).await
}

async fn lock_restore_unlock(
    deployment: &Deployment,
    plan: &RestorePlan,
    backup: &dyn CheckedBackup,
    context: &RunContext,
) -> RunErrors {
    let mut errors = lock(
        deployment,
        &plan.layers,
        ScriptName::PreRestoreLock,
        context,
    )
    .await;
    if errors.is_empty() && !context.cancel.is_cancelled() {
        errors.extend(run_restore_scripts(deployment, plan, backup, context).await);
    }
    errors.extend(
        unlock(
            deployment,
            &plan.layers,
            ScriptName::PostRestoreUnlock,
            &|_, _| Vec::new(),
            context,
        )
        .await,
    );
    errors
}

/// Restore scripts instance by instance, in the order of the uploads (as bbr's
/// `orchestrator/instance.go` and `instance/deployed_instance.go`): the jobs of an instance one
/// after another, every one of them even after a failure; up to `--restore-parallelism`
/// instances at once (1, the default: bbr's serial loop). Once an instance had a failure no
/// further instance starts; those already running finish. Logged between bbr's `Running
/// restore scripts...` and `Finished running restore scripts.`, then `Completed restore of D`
/// on success (`orchestrator/restore_step.go`, before the unlock).
async fn run_restore_scripts(
    deployment: &Deployment,
    plan: &RestorePlan,
    backup: &dyn CheckedBackup,
    context: &RunContext,
) -> RunErrors {
    tracing::info!("Running restore scripts...");
    let failed = AtomicBool::new(false);
    let failed = &failed;
    let instances =
        plan.uploads
            .chunk_by(|a, b| a.job.0 == b.job.0)
            .map(|instance_uploads| async move {
                // Checked when a slot frees, not when the loop was planned.
                if failed.load(Ordering::SeqCst) || context.cancel.is_cancelled() {
                    return Vec::new();
                }
                let mut errors = Vec::new();
                for upload in instance_uploads {
                    if context.cancel.is_cancelled() {
                        break;
                    }
                    if let Some(error) = restore_job(deployment, upload, backup, context).await {
                        failed.store(true, Ordering::SeqCst);
                        errors.push(error);
                    }
                }
                errors
            });
    let errors: Vec<Vec<Error>> = futures::stream::iter(instances)
        .buffer_unordered(context.options.restore_parallelism.max(1))
        .collect()
        .await;
    let errors = RunErrors(errors.into_iter().flatten().collect());
    tracing::info!("Finished running restore scripts.");
    if errors.is_empty() && !context.cancel.is_cancelled() {
        tracing::info!("Completed restore of {}", deployment.name);
    }
    errors
}

async fn restore_job(
    deployment: &Deployment,
    upload: &Upload,
    backup: &dyn CheckedBackup,
    context: &RunContext,
) -> Option<Error> {
    let (instance, job) = deployment.job(upload.job);
    let mut environment = vec![
        ("BBR_ARTIFACT_DIRECTORY", instance.restore_directory(job)),
        ("ARTIFACT_DIRECTORY", instance.restore_directory(job)),
    ];
    if upload.stream {
        environment.push(("CAIRN_STREAM", "1".to_string()));
        // The second read: verified in full before any lock, checked again on the way.
        let artifact = match backup
            .open_artifact(&upload.artifact_name, &upload.checksums)
            .await
        {
            Ok(artifact) => artifact,
            Err(error) => return Some(error),
        };
        return transfer::stream_restore(instance, job, artifact, &environment, context).await;
    }
    run_job_script(
        instance,
        job,
        ScriptName::Restore,
        &environment,
        context,
        &context.cancel,
    )
    .await
    .error
}

/// The plan as the outside world sees it ([`RestorePlanView`]).
fn plan_view(
    deployment: &Deployment,
    backup: &str,
    plan: &RestorePlan,
    refusals: &RunErrors,
) -> RestorePlanView {
    let label = |job: &JobRef| job_label(deployment, *job);
    let layers = |order: &mut dyn Iterator<Item = &Vec<JobRef>>| -> Vec<Vec<String>> {
        order
            .map(|layer| layer.iter().map(label).collect())
            .collect()
    };
    RestorePlanView {
        deployment: deployment.name.clone(),
        backup: backup.to_string(),
        restorable: refusals.is_empty(),
        artifacts: plan
            .uploads
            .iter()
            .zip(&plan.sizes)
            .map(|(upload, bytes)| {
                let (instance, job) = deployment.job(upload.job);
                ArtifactView {
                    artifact: upload.artifact_name.clone(),
                    instance: instance.name.to_string(),
                    job: job.name.clone(),
                    bytes: *bytes,
                    streamed: upload.stream,
                }
            })
            .collect(),
        lock_layers: layers(&mut plan.layers.lock_order()),
        unlock_layers: layers(&mut plan.layers.unlock_order()),
        lock_edges: lock_edges(deployment, LockDirection::Restore),
        free_space: plan
            .space
            .iter()
            .map(|space| SpaceView {
                instance: deployment.instances[space.instance].name.to_string(),
                needed_bytes: space.needed,
                available_bytes: space.available,
                mount: space.mount.clone(),
                fits: space.fits(),
            })
            .collect(),
        refusals: refusals.errors().iter().map(ToString::to_string).collect(),
        warnings: plan.warnings.clone(),
    }
}
