//! Does a backup fit its restore target? The instance groups, jobs and releases recorded at
//! backup time against the target's, every difference named.
//!
//! What the backup says about its deployment comes, best first, from the deployment manifest
//! saved with it (`--with-manifest`: every group, job and release version), from the layout a
//! store's `manifest.json` records (the Director's manifest in deployment mode, the discovered
//! groups and jobs with bbr scripts in inventory mode), and always from bbr's `metadata`
//! (which instances and jobs have artifacts). The target's side is its Director manifest, or
//! what discovery found.
//!
//! An artifact that has nowhere to go refuses the restore: its instance, its instance group
//! or its job is missing from the target (bbr's "does not match the structure" error; bbr
//! checks the instances and silently skips the jobs). Everything else — a group or job
//! without artifacts on one side only, another release or release version — is a warning:
//! drills restore into other deployments by design. A layout with release versions is taken
//! to come from a manifest (listing every job); when only one side does, jobs without
//! artifacts are not compared, as the other side lists only jobs with bbr scripts.

use std::collections::{BTreeMap, BTreeSet};

use crate::error::Error;
use crate::format::bbr_directory::BackupMetadata;
use crate::model::deployment::Deployment;
use crate::model::job::ScriptName;
use crate::model::layout::DeploymentLayout;

/// What the check found: reasons to refuse, and differences to warn about.
#[derive(Debug, Default)]
pub struct Compatibility {
    /// Each refuses the restore.
    pub refusals: Vec<Error>,
    /// Each is named, and the restore goes on.
    pub warnings: Vec<String>,
}

/// The layout recorded in a backup, and where it came from (for messages).
#[derive(Debug, Clone)]
pub struct RecordedLayout {
    /// The layout.
    pub layout: DeploymentLayout,
    /// `the saved deployment manifest`, `the backup's manifest.json`.
    pub source: &'static str,
}

/// Compares the backup with the target deployment.
#[must_use]
pub fn check(
    deployment: &Deployment,
    metadata: &BackupMetadata,
    recorded: Option<&RecordedLayout>,
) -> Compatibility {
    let mut found = Compatibility::default();
    check_artifacts(deployment, metadata, &mut found);
    if let Some(recorded) = recorded {
        let target = deployment.layout();
        let with_artifacts = artifact_jobs(metadata);
        compare_layouts(&recorded.layout, &target, &with_artifacts, &mut found);
    }
    found
}

/// Every artifact of `metadata` needs its instance and its job in the target.
fn check_artifacts(deployment: &Deployment, metadata: &BackupMetadata, found: &mut Compatibility) {
    let mismatch = |detail: String| Error::StructureMismatch {
        deployment: deployment.name.clone(),
        detail,
    };
    let mut missing_groups: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for recorded in &metadata.instances {
        let group = recorded.name.as_str();
        if !deployment.instances.iter().any(|i| i.name.group == group) {
            missing_groups
                .entry(group)
                .or_default()
                .push(&recorded.index);
            continue;
        }
        let Some(instance) = deployment.instance(group, &recorded.index) else {
            found.refusals.push(mismatch(format!(
                "instance {group}/{} is not in the deployment",
                recorded.index
            )));
            continue;
        };
        for artifact in &recorded.artifacts {
            let name = format!("{group}-{}-{}", recorded.index, artifact.name);
            match instance.jobs.iter().find(|j| j.name == artifact.name) {
                None => found.refusals.push(mismatch(format!(
                    "job {} is not on instance {group}/{}: its artifact {name} could not be restored",
                    artifact.name, recorded.index
                ))),
                Some(job) if !job.has(ScriptName::Restore) => found.warnings.push(format!(
                    "Job {} on instance {group}/{} has no restore script: its artifact {name} will not be restored",
                    artifact.name, recorded.index
                )),
                Some(_) => {}
            }
        }
    }
    for (group, indices) in missing_groups {
        let instances: Vec<String> = indices.iter().map(|i| format!("{group}/{i}")).collect();
        found.refusals.push(mismatch(format!(
            "instance group {group} is not in the deployment (the backup has artifacts of {})",
            instances.join(", ")
        )));
    }
}

/// `(group, job)` of every artifact in `metadata`.
fn artifact_jobs(metadata: &BackupMetadata) -> BTreeSet<(String, String)> {
    metadata
        .instances
        .iter()
        .flat_map(|i| i.artifacts.iter().map(|a| (i.name.clone(), a.name.clone())))
        .collect()
}

/// Names every difference between the recorded layout and the target's as a warning; what
/// holds artifacts was refused by [`check_artifacts`] already.
fn compare_layouts(
    recorded: &DeploymentLayout,
    target: &DeploymentLayout,
    with_artifacts: &BTreeSet<(String, String)>,
    found: &mut Compatibility,
) {
    let has_artifacts = |group: &str| with_artifacts.iter().any(|(g, _)| g == group);
    for group in recorded.instance_groups.keys() {
        if !target.instance_groups.contains_key(group) && !has_artifacts(group) {
            found.warnings.push(format!(
                "Instance group {group} of the backup's deployment is not in the deployment (the backup has no artifact of it)"
            ));
        }
    }
    for group in target.instance_groups.keys() {
        if !recorded.instance_groups.contains_key(group) {
            found.warnings.push(format!(
                "Instance group {group} is not in the backup's deployment"
            ));
        }
    }
    let same_kind = recorded.releases.is_empty() == target.releases.is_empty();
    for (group, recorded_jobs) in &recorded.instance_groups {
        if let Some(target_jobs) = target.instance_groups.get(group) {
            compare_jobs(
                group,
                recorded_jobs,
                target_jobs,
                same_kind,
                with_artifacts,
                found,
            );
        }
    }
    compare_releases(&recorded.releases, &target.releases, found);
}

/// The jobs of one instance group on both sides: missing ones (without artifacts) and other
/// releases.
fn compare_jobs(
    group: &str,
    recorded: &BTreeMap<String, String>,
    target: &BTreeMap<String, String>,
    same_kind: bool,
    with_artifacts: &BTreeSet<(String, String)>,
    found: &mut Compatibility,
) {
    for (job, release) in recorded {
        match target.get(job) {
            None if same_kind && !with_artifacts.contains(&(group.into(), job.clone())) => {
                found.warnings.push(format!(
                    "Job {job} of instance group {group} in the backup's deployment is not in the deployment"
                ));
            }
            Some(other) if !release.is_empty() && !other.is_empty() && other != release => {
                found.warnings.push(format!(
                    "Job {job} of instance group {group} comes from release {release} in the backup's deployment, from {other} in the deployment"
                ));
            }
            _ => {}
        }
    }
    if same_kind {
        for job in target.keys().filter(|job| !recorded.contains_key(*job)) {
            found.warnings.push(format!(
                "Job {job} of instance group {group} is not in the backup's deployment"
            ));
        }
    }
}

/// Release versions, when both sides know them.
fn compare_releases(
    recorded: &BTreeMap<String, String>,
    target: &BTreeMap<String, String>,
    found: &mut Compatibility,
) {
    if recorded.is_empty() || target.is_empty() {
        return;
    }
    for (release, version) in recorded {
        match target.get(release) {
            None => found.warnings.push(format!(
                "Release {release} {version} of the backup's deployment is not in the deployment"
            )),
            Some(other) if other != version => found.warnings.push(format!(
                "Release {release} is version {version} in the backup's deployment, {other} in the deployment"
            )),
            Some(_) => {}
        }
    }
    for (release, version) in target {
        if !recorded.contains_key(release) {
            found.warnings.push(format!(
                "Release {release} {version} is not in the backup's deployment"
            ));
        }
    }
}

/// The layout recorded in a backup: the saved deployment manifest's when there is one, else
/// the one a store's manifest records.
#[must_use]
pub fn recorded_layout(
    deployment_manifest: Option<&str>,
    layout: Option<&DeploymentLayout>,
) -> Option<RecordedLayout> {
    if let Some(layout) = deployment_manifest.and_then(DeploymentLayout::from_bosh_manifest) {
        return Some(RecordedLayout {
            layout,
            source: "the deployment manifest saved with the backup",
        });
    }
    layout.map(|layout| RecordedLayout {
        layout: layout.clone(),
        source: "the layout recorded in the backup",
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::format::bbr_directory::metadata::{InstanceArtifacts, NamedChecksums};
    use crate::model::deployment::Instance;
    use crate::model::job::{InstanceName, Job, JobMetadata};

    fn instance(group: &str, index: &str, jobs: &[(&str, bool)]) -> Instance {
        Instance {
            name: InstanceName {
                group: group.into(),
                id: index.into(),
            },
            index: index.into(),
            bootstrap: index == "0",
            remote: Arc::new(crate::remote::local::LocalHost),
            jobs: jobs
                .iter()
                .map(|(name, restores)| Job {
                    name: (*name).into(),
                    release: format!("{name}-release"),
                    scripts: if *restores {
                        [ScriptName::Backup, ScriptName::Restore].into()
                    } else {
                        [ScriptName::Backup].into()
                    },
                    metadata: JobMetadata::default(),
                    shared_artifact: None,
                })
                .collect(),
        }
    }

    fn metadata(artifacts: &[(&str, &str, &str)]) -> BackupMetadata {
        let mut metadata = BackupMetadata::default();
        for (group, index, job) in artifacts {
            let artifact = NamedChecksums {
                name: (*job).into(),
                checksums: crate::format::bbr_directory::Checksums::new(),
            };
            match metadata
                .instances
                .iter_mut()
                .find(|i| i.name == *group && i.index == *index)
            {
                Some(found) => found.artifacts.push(artifact),
                None => metadata.instances.push(InstanceArtifacts {
                    name: (*group).into(),
                    index: (*index).into(),
                    artifacts: vec![artifact],
                }),
            }
        }
        metadata
    }

    fn messages(found: &Compatibility) -> Vec<String> {
        found.refusals.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn every_missing_group_instance_and_job_with_an_artifact_refuses() {
        let target = Deployment {
            name: "drill".into(),
            instances: vec![
                instance("app", "0", &[("files", true), ("app", false)]),
                instance("web", "0", &[("nginx", true)]),
            ],
            manifest_layout: None,
        };
        let backup = metadata(&[
            ("app", "0", "files"),
            ("app", "0", "app"),
            ("app", "0", "gone"),
            ("app", "1", "files"),
            ("database", "0", "database"),
        ]);
        let found = check(&target, &backup, None);
        let refusals = messages(&found);
        assert_eq!(refusals.len(), 3, "{refusals:?}");
        assert!(refusals.iter().all(|r| r.starts_with(
            "Deployment 'drill' does not match the structure of the provided backup: "
        )));
        assert!(refusals[0].ends_with(
            "job gone is not on instance app/0: its artifact app-0-gone could not be restored"
        ));
        assert!(refusals[1].ends_with("instance app/1 is not in the deployment"));
        assert!(refusals[2].ends_with(
            "instance group database is not in the deployment (the backup has artifacts of database/0)"
        ));
        assert_eq!(
            found.warnings,
            ["Job app on instance app/0 has no restore script: its artifact app-0-app will not be restored"]
        );
    }

    #[test]
    fn layout_and_release_differences_warn_and_name_each() {
        let mut target_layout = DeploymentLayout::default();
        target_layout.instance_groups.insert(
            "app".into(),
            [
                ("files".into(), "files-release".into()),
                ("bpm".into(), "bpm".into()),
            ]
            .into(),
        );
        target_layout
            .instance_groups
            .insert("router".into(), BTreeMap::new());
        target_layout.releases = [
            ("files-release".into(), "2".into()),
            ("bpm".into(), "1".into()),
        ]
        .into();
        let target = Deployment {
            name: "cf".into(),
            instances: vec![instance("app", "0", &[("files", true)])],
            manifest_layout: Some(target_layout),
        };
        let mut recorded = DeploymentLayout::default();
        recorded.instance_groups.insert(
            "app".into(),
            [
                ("files".into(), "other-release".into()),
                ("syslog".into(), "syslog".into()),
            ]
            .into(),
        );
        recorded
            .instance_groups
            .insert("errand".into(), BTreeMap::new());
        recorded.releases = [
            ("files-release".into(), "1".into()),
            ("syslog".into(), "9".into()),
        ]
        .into();
        let recorded = RecordedLayout {
            layout: recorded,
            source: "test",
        };
        let found = check(
            &target,
            &metadata(&[("app", "0", "files")]),
            Some(&recorded),
        );
        assert!(found.refusals.is_empty(), "{:?}", messages(&found));
        assert_eq!(
            found.warnings,
            [
                "Instance group errand of the backup's deployment is not in the deployment (the backup has no artifact of it)",
                "Instance group router is not in the backup's deployment",
                "Job files of instance group app comes from release other-release in the backup's deployment, from files-release in the deployment",
                "Job syslog of instance group app in the backup's deployment is not in the deployment",
                "Job bpm of instance group app is not in the backup's deployment",
                "Release files-release is version 1 in the backup's deployment, 2 in the deployment",
                "Release syslog 9 of the backup's deployment is not in the deployment",
                "Release bpm 1 is not in the backup's deployment",
            ]
        );
    }

    #[test]
    fn a_saved_manifest_wins_over_the_recorded_layout() {
        let layout = DeploymentLayout::default();
        let manifest = "instance_groups:\n- name: db\n  jobs: [{name: pg, release: pg}]\nreleases: [{name: pg, version: '1'}]\n";
        let recorded = recorded_layout(Some(manifest), Some(&layout)).unwrap();
        assert!(recorded.layout.instance_groups.contains_key("db"));
        assert_eq!(recorded_layout(None, Some(&layout)).unwrap().layout, layout);
        assert!(recorded_layout(None, None).is_none());
    }
}
