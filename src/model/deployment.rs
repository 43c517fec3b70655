//! A connected deployment: its instances, the jobs found on each, and where they come from.
//!
//! A [`Target`] knows how to reach instances (an inventory file or a director VM,
//! [`crate::target::ssh`]; a deployment through the BOSH Director's API,
//! [`crate::target::bosh`]) and which release each job belongs to. [`discover`] connects to every instance in
//! parallel, lists the bbr scripts and runs the `metadata` scripts, producing a [`Deployment`]
//! that the backup and restore workflows act on.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
use futures::stream::{self, StreamExt};
use tokio_util::sync::CancellationToken;

use crate::error::{Error, RunErrors};
use crate::model::job::{
    parse_script_path, InstanceName, Job, JobMetadata, LockDirection, ScriptName, IGNORED_JOBS,
    REMOTE_ARTIFACT_ROOT,
};
use crate::model::layout::DeploymentLayout;
use crate::model::lock_order::{order_locks, JobRef, LockLayers};
use crate::model::timeouts::ScriptTimeouts;
use crate::remote::commands;
use crate::remote::script::{
    run_script_io, ScriptCommand, ScriptIo, ScriptOutcome, METADATA_STDOUT_LIMIT,
};
use crate::remote::{RemoteError, RemoteHost, RemoteHostExt, StdoutMode};

/// An instance as a target describes it, before connecting.
#[derive(Debug, Clone)]
pub struct InstanceAddress {
    /// Group and id.
    pub name: InstanceName,
    /// BOSH index, as written in artifact names.
    pub index: String,
    /// The instance group's bootstrap instance (it alone backs up shared artifacts).
    pub bootstrap: bool,
}

/// A temporary SSH user a Director is asked to create on a deployment's instances (deployment
/// mode), as the run journal records it before the request, so that the next run can have it
/// removed if this one is killed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TemporaryUser {
    /// `bosh_` and 15 hex digits.
    pub user: String,
    /// The Director's URL.
    pub director: String,
    /// The deployment.
    pub deployment: String,
    /// Instance groups, each with the ids of its instances.
    pub groups: Vec<(String, Vec<String>)>,
}

impl TemporaryUser {
    /// `db/<id>, app/<id>`.
    #[must_use]
    pub fn instance_list(&self) -> String {
        let names: Vec<String> = self
            .groups
            .iter()
            .flat_map(|(group, ids)| ids.iter().map(move |id| format!("{group}/{id}")))
            .collect();
        names.join(", ")
    }
}

/// Where a target records temporary access before creating it: the run journal.
#[async_trait]
pub trait AccessJournal: Send + Sync + Debug {
    /// Records `user` before the Director is asked to create it.
    ///
    /// # Errors
    /// The journal cannot be written: the user must not be created.
    async fn record_user(&self, user: &TemporaryUser) -> Result<(), Error>;

    /// Notes that `user` was removed.
    async fn user_removed(&self, user: &str);
}

/// Where a deployment's instances are and how to reach them.
///
/// # Contract
/// `connect` returns one connected host per instance, in a stable order; `release_of` answers
/// for any job name (empty when unknown); `release_access` undoes whatever `connect` set up
/// (temporary users) and is called once at the end of every run, whatever happened.
#[async_trait]
pub trait Target: Send + Sync + Debug {
    /// Deployment name used in messages and artifact directory names.
    fn name(&self) -> &str;

    /// Connects to every instance.
    async fn connect(
        &self,
        parallelism: usize,
    ) -> Result<Vec<(InstanceAddress, Arc<dyn RemoteHost>)>, RunErrors>;

    /// The release of a job in an instance group, or `""`.
    fn release_of(&self, group: &str, job: &str) -> String;

    /// True when the deployment manifest sets `bbr.backup_one_restore_all` for this job of
    /// this group (bbr-facts §2.5): the bootstrap instance backs it up once, under a shared
    /// name, and every instance restores from that one artifact.
    fn backup_one_restore_all(&self, _group: &str, _job: &str) -> bool {
        false
    }

    /// The layout the deployment manifest describes (every instance group, job and release
    /// version), when the target has one (a Director's); read after `connect`. `None` for an
    /// inventory, which names releases without versions.
    fn manifest_layout(&self) -> Option<DeploymentLayout> {
        None
    }

    /// Removes temporary access created by `connect`.
    async fn release_access(&self) -> Result<(), Error>;

    /// Has `connect` record the temporary access it creates in `journal` first (deployment
    /// mode's users); targets that create none ignore it.
    fn journal_access(&self, _journal: Arc<dyn AccessJournal>) {}

    /// Removes a temporary user that a killed run left, as its journal recorded it.
    ///
    /// # Errors
    /// The removal failed, or this target cannot remove it (not the Director that created it).
    async fn remove_leftover_user(&self, user: &TemporaryUser) -> Result<(), Error> {
        Err(Error::LeftoverUser {
            user: user.user.clone(),
            director: user.director.clone(),
            deployment: user.deployment.clone(),
            detail: "this command does not reach that Director".into(),
        })
    }
}

/// A connected instance and its backup-capable jobs.
#[derive(Debug, Clone)]
pub struct Instance {
    /// Group and id.
    pub name: InstanceName,
    /// BOSH index.
    pub index: String,
    /// The group's bootstrap instance.
    pub bootstrap: bool,
    /// The connection.
    pub remote: Arc<dyn RemoteHost>,
    /// Jobs with at least one bbr script, minus skipped and ignored ones.
    pub jobs: Vec<Job>,
}

impl Instance {
    /// True when any job has a `backup` script.
    #[must_use]
    pub fn can_backup(&self) -> bool {
        self.jobs.iter().any(|j| j.has(ScriptName::Backup))
    }

    /// True when any job has a `restore` script.
    #[must_use]
    pub fn can_restore(&self) -> bool {
        self.jobs.iter().any(|j| j.has(ScriptName::Restore))
    }

    /// `<group>-<index>-<job>`, the artifact (tar) name of one of its jobs.
    #[must_use]
    pub fn artifact_name(&self, job: &Job) -> String {
        format!("{}-{}-{}", self.name.group, self.index, job.name)
    }

    /// True when this instance's backup of `job` is the job's shared artifact.
    #[must_use]
    pub fn backs_up_shared(&self, job: &Job) -> bool {
        self.bootstrap && job.shared_artifact.is_some()
    }

    /// The artifact a backup of `job` on this instance produces: the shared one on the
    /// bootstrap instance of a backup-one-restore-all job, else `<group>-<index>-<job>`.
    #[must_use]
    pub fn backup_artifact_name(&self, job: &Job) -> String {
        match &job.shared_artifact {
            Some(shared) if self.bootstrap => shared.clone(),
            _ => self.artifact_name(job),
        }
    }

    /// The artifact `job` on this instance is restored from.
    #[must_use]
    pub fn restore_artifact_name(&self, job: &Job) -> String {
        job.shared_artifact
            .clone()
            .unwrap_or_else(|| self.artifact_name(job))
    }

    /// The remote artifact directory of `job` during a backup, with bbr's trailing slash.
    #[must_use]
    pub fn backup_directory(&self, job: &Job) -> String {
        match &job.shared_artifact {
            Some(shared) if self.bootstrap => format!("{REMOTE_ARTIFACT_ROOT}/{shared}/"),
            _ => job.artifact_directory(),
        }
    }

    /// The remote artifact directory of `job` during a restore.
    #[must_use]
    pub fn restore_directory(&self, job: &Job) -> String {
        match &job.shared_artifact {
            Some(shared) => format!("{REMOTE_ARTIFACT_ROOT}/{shared}/"),
            None => job.artifact_directory(),
        }
    }
}

/// Every instance of a deployment with its jobs.
#[derive(Debug, Clone)]
pub struct Deployment {
    /// Deployment name.
    pub name: String,
    /// Instances in target order.
    pub instances: Vec<Instance>,
    /// The target's manifest layout, when it has one ([`Target::manifest_layout`]).
    pub manifest_layout: Option<DeploymentLayout>,
}

impl Deployment {
    /// The job a [`JobRef`] points at, with its instance.
    #[must_use]
    pub fn job(&self, (instance, job): JobRef) -> (&Instance, &Job) {
        let instance = &self.instances[instance];
        (instance, &instance.jobs[job])
    }

    /// Every job, in instance order.
    #[must_use]
    pub fn all_jobs(&self) -> Vec<JobRef> {
        self.instances
            .iter()
            .enumerate()
            .flat_map(|(i, instance)| (0..instance.jobs.len()).map(move |j| (i, j)))
            .collect()
    }

    /// Every job that has `script`.
    #[must_use]
    pub fn jobs_with(&self, script: ScriptName) -> Vec<JobRef> {
        self.all_jobs()
            .into_iter()
            .filter(|r| self.job(*r).1.has(script))
            .collect()
    }

    /// Kahn layers of every job for backup or restore locking.
    ///
    /// # Errors
    /// [`Error::CyclicLockGraph`].
    pub fn lock_layers(&self, direction: LockDirection) -> Result<LockLayers, Error> {
        let jobs: Vec<&[Job]> = self.instances.iter().map(|i| i.jobs.as_slice()).collect();
        order_locks(&jobs, direction)
    }

    /// The deployment's layout: its manifest's, when the target has one (every group, job
    /// and release version), else the discovered instance groups with their jobs that have
    /// bbr scripts and their releases.
    #[must_use]
    pub fn layout(&self) -> DeploymentLayout {
        if let Some(layout) = &self.manifest_layout {
            return layout.clone();
        }
        let mut instance_groups: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        for instance in &self.instances {
            let jobs = instance_groups
                .entry(instance.name.group.clone())
                .or_default();
            for job in &instance.jobs {
                jobs.insert(job.name.clone(), job.release.clone());
            }
        }
        DeploymentLayout {
            instance_groups,
            releases: BTreeMap::new(),
        }
    }

    /// Finds an instance by group and BOSH index.
    #[must_use]
    pub fn instance(&self, group: &str, index: &str) -> Option<&Instance> {
        self.instances
            .iter()
            .find(|i| i.name.group == group && i.index == index)
    }
}

/// Connects to every instance of the target and discovers its jobs. `metadata` scripts get
/// `BBR_VERSION` (the bbr release whose behaviour Cairn implements, [`crate::BBR_COMPATIBLE_VERSION`],
/// so scripts that compare it keep working) and `CAIRN_VERSION` (`cairn_version`), and run
/// under their limit in `timeouts` (5 minutes when nothing is set).
///
/// # Errors
/// Every connection, `find` and `metadata` failure.
pub async fn discover(
    target: &dyn Target,
    parallelism: usize,
    cairn_version: &str,
    timeouts: &ScriptTimeouts,
) -> Result<Deployment, RunErrors> {
    let connected = target.connect(parallelism).await?;
    let found: Vec<Result<Instance, RunErrors>> = stream::iter(connected)
        .map(|(address, remote)| async move {
            let jobs =
                discover_jobs(target, &address, remote.as_ref(), cairn_version, timeouts).await?;
            Ok(Instance {
                name: address.name,
                index: address.index,
                bootstrap: address.bootstrap,
                remote,
                jobs,
            })
        })
        .buffered(parallelism.max(1))
        .collect()
        .await;
    let mut errors = RunErrors::new();
    let mut instances = Vec::new();
    for result in found {
        match result {
            Ok(instance) => instances.push(instance),
            Err(e) => errors.extend(e),
        }
    }
    errors.into_result()?;
    Ok(Deployment {
        name: target.name().to_string(),
        instances,
        manifest_layout: target.manifest_layout(),
    })
}

async fn discover_jobs(
    target: &dyn Target,
    address: &InstanceAddress,
    remote: &dyn RemoteHost,
    cairn_version: &str,
    timeouts: &ScriptTimeouts,
) -> Result<Vec<Job>, RunErrors> {
    let name = &address.name;
    let scripts = find_scripts(name, remote).await?;
    let mut jobs = Vec::new();
    for (job_name, scripts) in scripts {
        if IGNORED_JOBS.contains(&job_name.as_str()) {
            continue;
        }
        let release = target.release_of(&name.group, &job_name);
        let shared_artifact = target
            .backup_one_restore_all(&name.group, &job_name)
            .then(|| format!("{job_name}-{release}-backup-one-restore-all"));
        if let Some(shared) = &shared_artifact {
            // The release comes from the Director's manifest; the name becomes a file name.
            let origin = format!("(job {job_name}'s release) from the manifest of instance {name}");
            crate::model::name::check_name("artifact", shared, &origin).map_err(Error::from)?;
        }
        let mut job = Job {
            release,
            name: job_name,
            scripts,
            metadata: JobMetadata::default(),
            shared_artifact,
        };
        if job.has(ScriptName::Metadata) {
            job.metadata = run_metadata(name, remote, &job, cairn_version, timeouts).await?;
        }
        if job.metadata.skip_bbr_scripts {
            tracing::debug!("Found disabled jobs on instance {name} jobs: {}", job.name);
            continue;
        }
        if job
            .metadata
            .backup_name
            .as_deref()
            .is_some_and(|n| !n.is_empty())
        {
            tracing::warn!("discontinued metadata keys backup_name/restore_name found in job {}. bbr will not be able to restore this backup artifact.", job.name);
        }
        for direction in [LockDirection::Backup, LockDirection::Restore] {
            for specifier in job.locked_before(direction) {
                tracing::info!(
                    "Detected order: {} should be locked before {}/{} during {direction}",
                    job.name,
                    specifier.release,
                    specifier.job_name
                );
            }
        }
        jobs.push(job);
    }
    Ok(jobs)
}

async fn find_scripts(
    name: &InstanceName,
    remote: &dyn RemoteHost,
) -> Result<BTreeMap<String, std::collections::BTreeSet<ScriptName>>, RunErrors> {
    let output = remote
        .run(commands::FIND_SCRIPTS)
        .await
        .map_err(Error::from)?;
    let mut jobs: BTreeMap<String, std::collections::BTreeSet<ScriptName>> = BTreeMap::new();
    if !output.success() {
        if output.stderr.contains("No such file or directory") {
            return Ok(jobs);
        }
        return Err(Error::RemoteCommand {
            instance: name.clone(),
            action: "finding scripts".into(),
            detail: output.failure_detail(),
        }
        .into());
    }
    for line in output.stdout_text().lines() {
        if let Some((job, script)) = parse_script_path(line) {
            crate::model::name::check_name("job", &job, &format!("on instance {name}"))
                .map_err(Error::from)?;
            tracing::info!("{name}/{job}/{script}");
            jobs.entry(job).or_default().insert(script);
        }
    }
    Ok(jobs)
}

async fn run_metadata(
    name: &InstanceName,
    remote: &dyn RemoteHost,
    job: &Job,
    cairn_version: &str,
    timeouts: &ScriptTimeouts,
) -> Result<JobMetadata, RunErrors> {
    let limit = timeouts.limit(&job.name, ScriptName::Metadata);
    let command = ScriptCommand::new(job.script_path(ScriptName::Metadata))
        .envs(&[
            ("BBR_VERSION", crate::BBR_COMPATIBLE_VERSION.to_string()),
            ("CAIRN_VERSION", cairn_version.to_string()),
        ])
        .time_limit(limit.as_ref().map(|l| l.duration));
    // Discovery is not cancelled from here: the caller stops waiting on an interrupt.
    let io = ScriptIo {
        stdin: None,
        stdout: StdoutMode::Capture(METADATA_STDOUT_LIMIT),
    };
    let output = match run_script_io(remote, &command, io, &CancellationToken::new()).await {
        ScriptOutcome::Exited(output) => output,
        ScriptOutcome::TimedOut(seconds) => {
            return Err(Error::ScriptTimedOut {
                instance: name.clone(),
                job: job.name.clone(),
                script: ScriptName::Metadata,
                seconds,
                setting: limit
                    .map(|l| l.setting(ScriptName::Metadata))
                    .unwrap_or_default(),
            }
            .into())
        }
        ScriptOutcome::Lost(RemoteError::OutputTooLarge { limit, .. }) => {
            return Err(Error::MetadataTooLarge {
                instance: name.clone(),
                job: job.name.clone(),
                limit,
            }
            .into())
        }
        ScriptOutcome::Lost(error) => return Err(Error::from(error).into()),
        ScriptOutcome::Cancelled => {
            return Err(Error::from(RemoteError::Cancelled {
                host: name.to_string(),
            })
            .into())
        }
    };
    if !output.success() {
        return Err(Error::MetadataFailed {
            instance: name.clone(),
            job: job.name.clone(),
            status: output.status,
            stderr: output.stderr.trim().to_string(),
        }
        .into());
    }
    JobMetadata::parse(&output.stdout_text()).map_err(|detail| {
        Error::BadJobMetadata {
            instance: name.clone(),
            job: job.name.clone(),
            detail,
        }
        .into()
    })
}
