//! A connected deployment: its instances, the jobs found on each, and where they come from.
//!
//! A [`Target`] knows how to reach instances (a static inventory here; the BOSH Director API
//! later) and which release each job belongs to. [`discover`] connects to every instance in
//! parallel, lists the bbr scripts and runs the `metadata` scripts, producing a [`Deployment`]
//! that the backup and restore workflows act on.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
use futures::stream::{self, StreamExt};

use crate::commands;
use crate::error::{Error, RunErrors};
use crate::job::{
    parse_script_path, InstanceName, Job, JobMetadata, LockDirection, ScriptName, IGNORED_JOBS,
};
use crate::lock_order::{order_locks, JobRef, LockLayers};
use crate::remote::{RemoteHost, RemoteHostExt};

/// An instance as a target describes it, before connecting.
#[derive(Debug, Clone)]
pub struct InstanceAddress {
    /// Group and id.
    pub name: InstanceName,
    /// BOSH index, as written in artifact names.
    pub index: String,
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

    /// Removes temporary access created by `connect`.
    async fn release_access(&self) -> Result<(), Error>;
}

/// A connected instance and its backup-capable jobs.
#[derive(Debug, Clone)]
pub struct Instance {
    /// Group and id.
    pub name: InstanceName,
    /// BOSH index.
    pub index: String,
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
}

/// Every instance of a deployment with its jobs.
#[derive(Debug, Clone)]
pub struct Deployment {
    /// Deployment name.
    pub name: String,
    /// Instances in target order.
    pub instances: Vec<Instance>,
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

    /// Finds an instance by group and BOSH index.
    #[must_use]
    pub fn instance(&self, group: &str, index: &str) -> Option<&Instance> {
        self.instances
            .iter()
            .find(|i| i.name.group == group && i.index == index)
    }
}

/// Connects to every instance of the target and discovers its jobs.
///
/// # Errors
/// Every connection, `find` and `metadata` failure.
pub async fn discover(
    target: &dyn Target,
    parallelism: usize,
    version: &str,
) -> Result<Deployment, RunErrors> {
    let connected = target.connect(parallelism).await?;
    let found: Vec<Result<Instance, RunErrors>> = stream::iter(connected)
        .map(|(address, remote)| async move {
            let jobs = discover_jobs(target, &address, remote.as_ref(), version).await?;
            Ok(Instance {
                name: address.name,
                index: address.index,
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
    })
}

async fn discover_jobs(
    target: &dyn Target,
    address: &InstanceAddress,
    remote: &dyn RemoteHost,
    version: &str,
) -> Result<Vec<Job>, RunErrors> {
    let name = &address.name;
    let scripts = find_scripts(name, remote).await?;
    let mut jobs = Vec::new();
    for (job_name, scripts) in scripts {
        if IGNORED_JOBS.contains(&job_name.as_str()) {
            continue;
        }
        let mut job = Job {
            release: target.release_of(&name.group, &job_name),
            name: job_name,
            scripts,
            metadata: JobMetadata::default(),
        };
        if job.has(ScriptName::Metadata) {
            job.metadata = run_metadata(name, remote, &job, version).await?;
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
    version: &str,
) -> Result<JobMetadata, RunErrors> {
    let command = commands::run_script(
        job,
        ScriptName::Metadata,
        &[("BBR_VERSION", version.into())],
    );
    let output = remote.run(&command).await.map_err(Error::from)?;
    if !output.success() {
        return Err(Error::ScriptFailed {
            instance: name.clone(),
            job: job.name.clone(),
            script: ScriptName::Metadata,
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
