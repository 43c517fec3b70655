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
//! Restore scripts run one at a time, instance by instance (as bbr), and the first failing
//! instance stops them; unlock always follows once a lock was attempted.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use cairn_store::ArtifactStore;

use futures::stream::{self, StreamExt};

use super::{
    check_artifact_root_absent, cleanup_error, discover_or_interrupt, lock, release_target,
    remove_artifact_roots, transfer, unlock, CreatedRoots, RunContext,
};
use crate::format::bbr_directory::{ArtifactError, BackupDirectory, BackupMetadata, Checksums};
use crate::model::deployment::{Deployment, Target};
use crate::format::encryption::Identities;
use crate::error::{Error, RunErrors};
use crate::model::job::{LockDirection, ScriptName};
use crate::model::lock_order::{JobRef, LockLayers};
use crate::format::manifest::{Manifest, ManifestArtifact};
use crate::remote::RemoteError;

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

/// Checks a backup directory without reading its tars: the metadata, and that every tar it
/// lists is there (the tars are verified as they are sent).
///
/// # Errors
/// A missing directory or tar, unreadable metadata, an incomplete backup.
pub fn check_backup_directory(path: &Path) -> Result<BackupMetadata, RunErrors> {
    let not_found = |action, path: &Path| {
        Error::from(ArtifactError::Io {
            action,
            path: path.to_path_buf(),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        })
    };
    if !path.is_dir() {
        return Err(not_found("failed opening the directory", path).into());
    }
    let directory = BackupDirectory::open(path);
    let metadata = directory.read_metadata().map_err(Error::from)?;
    if metadata.instances.is_empty() && metadata.custom_artifacts.is_empty() {
        return Err(Error::from(ArtifactError::Incomplete(path.to_path_buf())).into());
    }
    let missing: Vec<Error> = BackupDirectory::listed_artifacts(&metadata)
        .into_iter()
        .map(|(name, _)| directory.tar_path(&name))
        .filter(|tar| !tar.is_file())
        .map(|tar| not_found("Error reading artifact file", &tar))
        .collect();
    RunErrors(missing).into_result()?;
    Ok(metadata)
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

/// Where a restore reads the backup from.
#[derive(Debug, Clone)]
pub enum RestoreSource {
    /// A bbr backup directory.
    Directory(PathBuf),
    /// A backup in an object store.
    Store {
        /// The store.
        store: Arc<dyn ArtifactStore>,
        /// Deployment the backup was taken of.
        deployment: String,
        /// Backup id.
        backup_id: String,
        /// Age identities for an encrypted backup (`--identity`); may be empty.
        identities: Identities,
    },
}

/// A backup whose metadata (and manifest) were checked, ready to be read artifact by artifact.
enum CheckedBackup {
    Directory(PathBuf),
    Store(Arc<dyn ArtifactStore>, Box<Manifest>, Identities),
}

/// One artifact opened for a restore: read, checked and passed on by [`ArtifactStream::forward`].
pub(super) enum ArtifactStream {
    Directory {
        backup: PathBuf,
        name: String,
        expected: Checksums,
    },
    Store {
        reader: crate::format::store::StoreReader,
        artifact: Box<ManifestArtifact>,
        compression: crate::format::manifest::Compression,
        identities: Identities,
    },
}

impl ArtifactStream {
    /// Reads the whole artifact (blocking), passing its tar stream on to `writer` while every
    /// entry and file is checked; fails when anything differs from what was recorded.
    pub(super) fn forward(self, writer: &mut dyn std::io::Write) -> Result<(), Error> {
        match self {
            ArtifactStream::Directory {
                backup,
                name,
                expected,
            } => Ok(BackupDirectory::open(&backup).check_tar(&name, &expected, Some(writer))?),
            ArtifactStream::Store {
                reader,
                artifact,
                compression,
                identities,
            } => crate::format::store::check_artifact_stream(
                reader,
                &artifact,
                compression,
                &identities,
                Some(writer),
            )
            .map(|_| ()),
        }
    }
}

impl CheckedBackup {
    /// Opens one artifact for reading.
    async fn open(
        &self,
        artifact_name: &str,
        expected: &Checksums,
    ) -> Result<ArtifactStream, Error> {
        match self {
            CheckedBackup::Directory(path) => Ok(ArtifactStream::Directory {
                backup: path.clone(),
                name: artifact_name.to_string(),
                expected: expected.clone(),
            }),
            CheckedBackup::Store(store, manifest, identities) => {
                let artifact = manifest
                    .artifacts
                    .iter()
                    .find(|a| a.name == artifact_name)
                    .ok_or_else(|| {
                        Error::StoredBackup(format!(
                            "The manifest has no artifact `{artifact_name}`"
                        ))
                    })?;
                Ok(ArtifactStream::Store {
                    reader: crate::format::store::open_artifact(store, artifact).await?,
                    artifact: Box::new(artifact.clone()),
                    compression: manifest.compression,
                    identities: identities.clone(),
                })
            }
        }
    }
}

/// Checks the backup as far as possible without reading its artifacts, before connecting to
/// anything.
async fn check_source(
    source: &RestoreSource,
    parallelism: usize,
) -> Result<(CheckedBackup, BackupMetadata), RunErrors> {
    match source {
        RestoreSource::Directory(path) => {
            tracing::info!("Checking backup {}...", path.display());
            let metadata = check_backup_directory(path)?;
            Ok((CheckedBackup::Directory(path.clone()), metadata))
        }
        RestoreSource::Store {
            store,
            deployment,
            backup_id,
            identities,
        } => {
            tracing::info!("Checking backup {deployment}/{backup_id} in {store}...");
            let manifest = crate::format::store::check_backup_objects(
                store,
                deployment,
                backup_id,
                parallelism,
                identities,
            )
            .await?;
            let metadata = metadata_of(&manifest);
            Ok((
                CheckedBackup::Store(Arc::clone(store), Box::new(manifest), identities.clone()),
                metadata,
            ))
        }
    }
}

/// bbr's view of a stored backup: the checksums of every artifact.
fn metadata_of(manifest: &Manifest) -> BackupMetadata {
    let mut metadata = BackupMetadata::default();
    for artifact in &manifest.artifacts {
        metadata.add_files(
            artifact.is_shared().then_some(artifact.name.as_str()),
            (&artifact.group, &artifact.index, &artifact.job),
            &artifact.files,
        );
    }
    metadata
}

/// Restores a backup into `target`; no script runs unless every artifact arrived verified.
pub async fn restore(
    target: &dyn Target,
    source: &RestoreSource,
    context: &RunContext,
) -> RunErrors {
    let (backup, metadata) = match check_source(source, context.parallelism).await {
        Ok(checked) => checked,
        Err(errors) => return errors,
    };
    let mut errors = RunErrors::new();
    match discover_or_interrupt(target, context, "Restore").await {
        Ok(deployment) => {
            restore_deployment(&deployment, &backup, &metadata, context, &mut errors).await
        }
        Err(e) => errors.extend(e),
    }
    release_target(target, &mut errors).await;
    errors
}

async fn restore_deployment(
    deployment: &Deployment,
    backup: &CheckedBackup,
    metadata: &BackupMetadata,
    context: &RunContext,
    errors: &mut RunErrors,
) {
    let plan = match plan_restore(deployment, metadata).await {
        Ok(plan) => plan,
        Err(e) => return errors.extend(e),
    };
    tracing::info!("Starting restore of {}...", deployment.name);
    let created = CreatedRoots::new(deployment.instances.len());
    let copy_errors = copy_to_instances(deployment, &plan, backup, &created, context).await;
    let copied = copy_errors.is_empty();
    errors.extend(copy_errors);
    if copied && !context.cancel.is_cancelled() {
        errors.extend(lock_restore_unlock(deployment, &plan, context).await);
        // Verification reads the artifact directories, so it runs before they are removed,
        // and only on a restore that fully succeeded.
        if context.verify_restore && errors.is_empty() && !context.cancel.is_cancelled() {
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
    backup: &CheckedBackup,
    created: &CreatedRoots,
    context: &RunContext,
) -> RunErrors {
    let copies = plan.uploads.iter().map(|upload| async move {
        let (instance, job) = deployment.job(upload.job);
        created.mark(upload.job.0);
        tracing::info!("Copying backup to {} on {}...", job.name, instance.name);
        let artifact = backup
            .open(&upload.artifact_name, &upload.checksums)
            .await?;
        transfer::upload(instance, job, artifact, &upload.checksums, &context.cancel).await
    });
    let errors: Vec<Error> = stream::iter(copies)
        .buffer_unordered(context.parallelism)
        .filter_map(|r| async move {
            match r {
                Err(Error::Remote(RemoteError::Cancelled { .. })) | Ok(()) => None,
                Err(e) => Some(e),
            }
        })
        .collect()
        .await;
    RunErrors(errors)
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

/// Restore scripts one at a time; the first failing instance stops the loop.
async fn run_restore_scripts(
    deployment: &Deployment,
    plan: &RestorePlan,
    context: &RunContext,
) -> RunErrors {
    let mut errors = RunErrors::new();
    for upload in &plan.uploads {
        if !errors.is_empty() || context.cancel.is_cancelled() {
            break;
        }
        let (instance, job) = deployment.job(upload.job);
        tracing::info!("Restoring {} on {}...", job.name, instance.name);
        let environment = [
            ("BBR_ARTIFACT_DIRECTORY", instance.restore_directory(job)),
            ("ARTIFACT_DIRECTORY", instance.restore_directory(job)),
        ];
        let started_at = chrono::Utc::now();
        let output = super::run_job_script(
            instance.remote.as_ref(),
            job,
            ScriptName::Restore,
            &environment,
            &context.cancel,
            context.script_timeout,
        )
        .await;
        if let Ok(output) = &output {
            context.record_script(
                &instance.name,
                &job.name,
                ScriptName::Restore,
                started_at,
                output.status,
            );
        }
        match output {
            Ok(output) if output.success() => {
                tracing::info!("Finished restoring {} on {}.", job.name, instance.name);
            }
            Ok(output) => errors.push(Error::ScriptFailed {
                instance: instance.name.clone(),
                job: job.name.clone(),
                script: ScriptName::Restore,
                status: output.status,
                stderr: output.stderr.trim().to_string(),
            }),
            Err(super::ScriptRun::Cancelled) => {}
            Err(super::ScriptRun::TimedOut(seconds)) => errors.push(Error::ScriptTimedOut {
                instance: instance.name.clone(),
                job: job.name.clone(),
                script: ScriptName::Restore,
                seconds,
            }),
            Err(super::ScriptRun::Remote(error)) => errors.push(error.into()),
        }
    }
    errors
}
