//! What a deployment is made of, as a restore compares it: instance groups, the jobs in each
//! and their releases, and release versions when known.
//!
//! A backup records the layout of the deployment it was taken of (a store's `manifest.json`
//! holds it; the deployment manifest saved with `--with-manifest` gives it too), and a restore
//! compares it with the layout of its target before anything is locked
//! (`workflow::restore::compatibility`); `Deployment::layout` gives a connected deployment's. Only jobs with bbr scripts are discovered on
//! instances, so a layout made from a deployment lists those; one parsed from a BOSH
//! manifest lists every job. Versions come only from a BOSH manifest (a Director's, or the
//! saved one): an inventory names releases without versions.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Instance groups, their jobs and releases.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeploymentLayout {
    /// Instance group → job → release name (`""` when unknown).
    pub instance_groups: BTreeMap<String, BTreeMap<String, String>>,
    /// Release name → version, when known (deployment mode through the Director).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub releases: BTreeMap<String, String>,
}

impl DeploymentLayout {
    /// The layout a BOSH deployment manifest describes: v2 (`instance_groups[].jobs[]`) or
    /// v1 (`jobs[].templates[]`), and `releases[]` with their versions. `None` when the text
    /// is not a YAML mapping.
    #[must_use]
    pub fn from_bosh_manifest(manifest: &str) -> Option<DeploymentLayout> {
        use yaml_serde::Value;
        let parsed: Value = yaml_serde::from_str(manifest).ok()?;
        parsed.as_mapping()?;
        let text = |value: &Value, key: &str| match value.get(key) {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            _ => String::new(),
        };
        let mut layout = DeploymentLayout::default();
        for (groups_key, jobs_key) in [("instance_groups", "jobs"), ("jobs", "templates")] {
            let groups = parsed.get(groups_key).and_then(Value::as_sequence);
            for group in groups.into_iter().flatten() {
                let jobs = layout
                    .instance_groups
                    .entry(text(group, "name"))
                    .or_default();
                let group_jobs = group.get(jobs_key).and_then(Value::as_sequence);
                for job in group_jobs.into_iter().flatten() {
                    jobs.entry(text(job, "name"))
                        .or_insert_with(|| text(job, "release"));
                }
            }
        }
        let releases = parsed.get("releases").and_then(Value::as_sequence);
        for release in releases.into_iter().flatten() {
            layout
                .releases
                .insert(text(release, "name"), text(release, "version"));
        }
        Some(layout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v2_and_v1_manifests_give_groups_jobs_and_release_versions() {
        let v2 = "name: cf\nreleases:\n- {name: uaa, version: '77.1'}\n- {name: pg, version: 43}\n\
                  instance_groups:\n- name: uaa\n  jobs:\n  - {name: uaa, release: uaa}\n\
                  - name: db\n  jobs:\n  - {name: postgres, release: pg}\n  - {name: bpm, release: bpm}\n";
        let layout = DeploymentLayout::from_bosh_manifest(v2).unwrap();
        assert_eq!(layout.instance_groups["db"]["postgres"], "pg");
        assert_eq!(layout.instance_groups["db"].len(), 2);
        assert_eq!(layout.releases["uaa"], "77.1");
        assert_eq!(layout.releases["pg"], "43");
        let v1 = "name: redis\njobs:\n- name: redis\n  templates:\n  - {name: redis-server, release: redis}\n";
        let layout = DeploymentLayout::from_bosh_manifest(v1).unwrap();
        assert_eq!(layout.instance_groups["redis"]["redis-server"], "redis");
        assert!(layout.releases.is_empty());
        assert_eq!(DeploymentLayout::from_bosh_manifest("- a list"), None);
        assert_eq!(DeploymentLayout::from_bosh_manifest("not: [valid"), None);
    }

    #[test]
    fn layouts_round_trip_through_json_without_empty_versions() {
        let mut layout = DeploymentLayout::default();
        layout
            .instance_groups
            .entry("app".into())
            .or_default()
            .insert("files".into(), "files-release".into());
        let json = serde_json::to_string(&layout).unwrap();
        assert_eq!(
            json,
            r#"{"instance_groups":{"app":{"files":"files-release"}}}"#
        );
        assert_eq!(
            serde_json::from_str::<DeploymentLayout>(&json).unwrap(),
            layout
        );
    }
}
