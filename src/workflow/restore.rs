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
//! Restore scripts run one at a time, instance by instance (as bbr): every job of an instance
//! runs, and the first instance with a failure stops the loop. The restore lock scripts run
//! one job at a time too (bbr's serial executor); unlock always follows once a lock was
//! attempted.

use super::scripts::run_job_script;
use super::{
    check_artifact_root_absent, cleanup_error, discover_or_interrupt, lock, release_target,
    remove_artifact_roots, transfer, unlock, CreatedRoots, RunContext,
};
use crate::error::{Error, RunErrors};
use crate::format::bbr_directory::{BackupMetadata, Checksums};
use crate::format::sink::{BackupSource, CheckedBackup};
use crate::model::deployment::{Deployment, Target};
use crate::model::job::{LockDirection, ScriptName, ScriptRecord};
use crate::model::lock_order::{JobRef, LockLayers};
use crate::report::verification::Verification;

/// One artifact to send: a job on an instance, from a tar of the backup.
#[derive(Debug, Clone)]
pub struct Upload {
    /// The job.
    pub job: JobRef,
    /// Tar name without `.tar`.
    pub artifact_name: String,
    /// Checksums recorded in `metadata`.
    pub checksums: Checksums,
}

/// What a restore will do, computed before anything is changed.
#[derive(Debug, Clone)]
pub struct RestorePlan {
    /// Lock layers (restore order).
    pub layers: LockLayers,
    /// Artifacts to copy.
    pub uploads: Vec<Upload>,
}

/// The restorable checks, producing the plan.
///
/// # Errors
/// Every check that failed.
pub async fn plan_restore(
    deployment: &Deployment,
    metadata: &BackupMetadata,
) -> Result<RestorePlan, RunErrors> {
    let restorable: Vec<usize> = (0..deployment.instances.len())
        .filter(|&i| deployment.instances[i].can_restore())
        .collect();
    for &i in &restorable {
        let instance = &deployment.instances[i];
        if instance.jobs.iter().any(|j| {
            j.metadata
                .restore_name
                .as_deref()
                .is_some_and(|n| !n.is_empty())
        }) {
            return Err(Error::DiscontinuedRestoreName {
                group: instance.name.group.clone(),
            }
            .into());
        }
    }
    if restorable.is_empty() {
        return Err(Error::NoRestoreScripts {
            deployment: deployment.name.clone(),
        }
        .into());
    }
    for recorded in &metadata.instances {
        if deployment
            .instance(&recorded.name, &recorded.index)
            .is_none()
        {
            return Err(mismatch(
                deployment,
                format!(
                    "instance {}/{} is not in the deployment",
                    recorded.name, recorded.index
                ),
            )
            .into());
        }
    }
    let uploads = plan_uploads(deployment, metadata)?;
    let all: Vec<usize> = (0..deployment.instances.len()).collect();
    check_artifact_root_absent(deployment, &all)
        .await
        .into_result()?;
    let layers = deployment.lock_layers(LockDirection::Restore)?;
    Ok(RestorePlan { layers, uploads })
}

fn mismatch(deployment: &Deployment, detail: String) -> Error {
    Error::StructureMismatch {
        deployment: deployment.name.clone(),
        detail,
    }
}

fn plan_uploads(
    deployment: &Deployment,
    metadata: &BackupMetadata,
) -> Result<Vec<Upload>, RunErrors> {
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
            return Err(mismatch(
                deployment,
                format!(
                    "the backup has no artifact for job {} on {}/{}",
                    job.name, instance.name.group, instance.index
                ),
            )
            .into());
        };
        uploads.push(Upload {
            job: job_ref,
            artifact_name: instance.restore_artifact_name(job),
            checksums: checksums.clone(),
        });
    }
    Ok(uploads)
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
    let mut errors = RunErrors::new();
    match discover_or_interrupt(target, context, "Restore").await {
        Ok(deployment) => {
            restore_deployment(&deployment, backup.as_ref(), context, &mut errors).await;
        }
        Err(e) => errors.extend(e),
    }
    release_target(target, &mut errors).await;
    errors
}

async fn restore_deployment(
    deployment: &Deployment,
    backup: &dyn CheckedBackup,
    context: &RunContext,
    errors: &mut RunErrors,
) {
    let plan = match plan_restore(deployment, backup.metadata()).await {
        Ok(plan) => plan,
        Err(e) => return errors.extend(e),
    };
    let created = CreatedRoots::new(deployment.instances.len());
    let copy_errors = copy_to_instances(deployment, &plan, backup, &created, context).await;
    let copied = copy_errors.is_empty();
    errors.extend(copy_errors);
    if copied && !context.cancel.is_cancelled() {
        errors.extend(lock_restore_unlock(deployment, &plan, context).await);
        // Verification reads the artifact directories, so it runs before they are removed,
        // and only on a restore that fully succeeded.
        if context.options.verify_restore && errors.is_empty() && !context.cancel.is_cancelled() {
            let restored: Vec<JobRef> = plan.uploads.iter().map(|u| u.job).collect();
            errors.extend(super::verify::verify_restored(deployment, &restored, context).await);
        }
    }
    tracing::info!("Cleaning up...");
    errors.extend(remove_artifact_roots(deployment, &created.created(), cleanup_error).await);
    if context.cancel.is_cancelled() {
        errors.push(context.interrupted("Restore"));
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
        created.mark(upload.job.0);
        let artifact = backup
            .open_artifact(&upload.artifact_name, &upload.checksums)
            .await?;
        transfer::upload(instance, job, artifact, &upload.checksums, context).await
    });
    super::gather_errors(copies, context.options.parallelism).await
}

async fn lock_restore_unlock(
    deployment: &Deployment,
    plan: &RestorePlan,
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
        errors.extend(run_restore_scripts(deployment, plan, context).await);
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

/// Restore scripts one at a time, in the order of the uploads (instance by instance, as bbr's
/// `orchestrator/instance.go` and `instance/deployed_instance.go`): every job of an instance
/// runs, then the first instance with a failure stops the loop. Logged between bbr's `Running
/// restore scripts...` and `Finished running restore scripts.`, then `Completed restore of D`
/// on success (`orchestrator/restore_step.go`, before the unlock).
async fn run_restore_scripts(
    deployment: &Deployment,
    plan: &RestorePlan,
    context: &RunContext,
) -> RunErrors {
    tracing::info!("Running restore scripts...");
    let mut errors = RunErrors::new();
    for instance_uploads in plan.uploads.chunk_by(|a, b| a.job.0 == b.job.0) {
        if !errors.is_empty() || context.cancel.is_cancelled() {
            break;
        }
        for upload in instance_uploads {
            if context.cancel.is_cancelled() {
                break;
            }
            if let Some(error) = restore_job(deployment, upload, context).await {
                errors.push(error);
            }
        }
    }
    tracing::info!("Finished running restore scripts.");
    if errors.is_empty() && !context.cancel.is_cancelled() {
        tracing::info!("Completed restore of {}", deployment.name);
    }
    errors
}

async fn restore_job(
    deployment: &Deployment,
    upload: &Upload,
    context: &RunContext,
) -> Option<Error> {
    let (instance, job) = deployment.job(upload.job);
    let environment = [
        ("BBR_ARTIFACT_DIRECTORY", instance.restore_directory(job)),
        ("ARTIFACT_DIRECTORY", instance.restore_directory(job)),
    ];
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
