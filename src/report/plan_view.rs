//! `pre-backup-check --plan`: what a backup would do, shown without changing anything —
//! instances, jobs and their scripts, lock layers, and the artifacts to expect — as text, as
//! JSON, or as a Graphviz graph of the lock order.

use std::fmt::Write as _;

use serde::Serialize;

use crate::model::deployment::Deployment;
use crate::model::job::LockDirection;
use crate::model::lock_order::{JobRef, LockLayers};

/// A serializable description of a backup plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlanView {
    /// Deployment name.
    pub deployment: String,
    /// Every instance with its jobs.
    pub instances: Vec<InstanceView>,
    /// Lock layers in locking order; each entry is `<group>/<id>:<job>`. Unlock runs them in
    /// reverse.
    pub lock_layers: Vec<Vec<String>>,
    /// "`<group>/<id>:<job>` is locked before `<group>/<id>:<job>`" pairs.
    pub lock_edges: Vec<(String, String)>,
    /// Artifact names the backup will produce.
    pub artifacts: Vec<String>,
}

/// One instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InstanceView {
    /// `<group>/<id>`.
    pub name: String,
    /// BOSH index.
    pub index: String,
    /// Its jobs.
    pub jobs: Vec<JobView>,
}

/// One job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JobView {
    /// Job name.
    pub name: String,
    /// Release (empty when unknown).
    pub release: String,
    /// Its bbr scripts.
    pub scripts: Vec<String>,
}

/// `<group>/<id>:<job>`, how plans name a job.
#[must_use]
pub fn job_label(deployment: &Deployment, job: JobRef) -> String {
    let (instance, job) = deployment.job(job);
    format!("{}:{}", instance.name, job.name)
}

/// "`<group>/<id>:<job>` is locked before `<group>/<id>:<job>`" pairs, as the lock order
/// of `direction` sees them.
#[must_use]
pub fn lock_edges(deployment: &Deployment, direction: LockDirection) -> Vec<(String, String)> {
    let all = deployment.all_jobs();
    let mut edges = Vec::new();
    for from in &all {
        let (_, job) = deployment.job(*from);
        for specifier in job.locked_before(direction) {
            for to in &all {
                let (_, other) = deployment.job(*to);
                if other.name == specifier.job_name && other.release == specifier.release {
                    edges.push((job_label(deployment, *from), job_label(deployment, *to)));
                }
            }
        }
    }
    edges
}

/// The lock order as a Graphviz digraph: one rank per layer, an edge to what is locked after.
#[must_use]
pub fn lock_order_dot(name: &str, layers: &[Vec<String>], edges: &[(String, String)]) -> String {
    let mut dot = format!("digraph \"{}\" {{\n  rankdir=LR;\n", name.replace('"', "'"));
    for layer in layers {
        let nodes: Vec<String> = layer.iter().map(|n| format!("\"{n}\"")).collect();
        let _ = writeln!(dot, "  {{ rank=same; {}; }}", nodes.join("; "));
    }
    for (from, to) in edges {
        let _ = writeln!(dot, "  \"{from}\" -> \"{to}\";");
    }
    dot.push_str("}\n");
    dot
}

impl PlanView {
    /// Describes a computed backup plan: its lock layers and the jobs it backs up.
    #[must_use]
    pub fn new(deployment: &Deployment, layers: &LockLayers, backup_jobs: &[JobRef]) -> PlanView {
        let label = |r: &(usize, usize)| {
            let (instance, job) = deployment.job(*r);
            format!("{}:{}", instance.name, job.name)
        };
        let instances = deployment
            .instances
            .iter()
            .map(|instance| InstanceView {
                name: instance.name.to_string(),
                index: instance.index.clone(),
                jobs: instance
                    .jobs
                    .iter()
                    .map(|job| JobView {
                        name: job.name.clone(),
                        release: job.release.clone(),
                        scripts: job.scripts.iter().map(ToString::to_string).collect(),
                    })
                    .collect(),
            })
            .collect();
        let lock_edges = lock_edges(deployment, LockDirection::Backup);
        PlanView {
            deployment: deployment.name.clone(),
            instances,
            lock_layers: layers
                .lock_order()
                .map(|layer| layer.iter().map(label).collect())
                .collect(),
            lock_edges,
            artifacts: backup_jobs
                .iter()
                .map(|r| {
                    let (instance, job) = deployment.job(*r);
                    instance.backup_artifact_name(job)
                })
                .collect(),
        }
    }

    /// Human-readable text.
    #[must_use]
    pub fn to_text(&self) -> String {
        let mut text = format!("Backup plan for deployment '{}':\n", self.deployment);
        for instance in &self.instances {
            let _ = writeln!(text, "  {} (index {})", instance.name, instance.index);
            for job in &instance.jobs {
                let release = if job.release.is_empty() {
                    "?"
                } else {
                    &job.release
                };
                let _ = writeln!(
                    text,
                    "    {} ({release}): {}",
                    job.name,
                    job.scripts.join(", ")
                );
            }
        }
        let _ = writeln!(text, "Lock layers (unlocked in reverse):");
        for (number, layer) in self.lock_layers.iter().enumerate() {
            let _ = writeln!(text, "  {}. {}", number + 1, layer.join(", "));
        }
        let _ = writeln!(text, "Artifacts: {}", self.artifacts.join(", "));
        text
    }

    /// The lock order as a Graphviz digraph (an edge points to what is locked after).
    #[must_use]
    pub fn to_dot(&self) -> String {
        lock_order_dot(&self.deployment, &self.lock_layers, &self.lock_edges)
    }
}
