//! Lock ordering: bbr's Kahn layering of jobs by `(job name, release)` (bbr-facts §3.2).
//!
//! Each job J that says it "should be locked before" `(name, release)` gets an edge to every
//! job in the deployment with that name and release, on any instance. Layers are taken in
//! input order, each holding every job with no remaining incoming edge. Locks run layer by
//! layer; unlocks run the layers in reverse. A cycle is refused before anything is locked.
//!
//! A job whose release is unknown (director mode, where bbr blanks every release, or a job
//! missing from an inventory's `releases`) is matched by name alone, as bbr does in director
//! mode.

use crate::error::Error;
use crate::model::job::{Job, LockDirection};

/// A job's position in the input list: `(instance index, job index within the instance)`.
pub type JobRef = (usize, usize);

/// Jobs grouped into layers that may be locked in parallel, first layer first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LockLayers(pub Vec<Vec<JobRef>>);

impl LockLayers {
    /// Layers in locking order.
    pub fn lock_order(&self) -> impl Iterator<Item = &Vec<JobRef>> {
        self.0.iter()
    }

    /// Layers in unlocking order (the reverse).
    pub fn unlock_order(&self) -> impl Iterator<Item = &Vec<JobRef>> {
        self.0.iter().rev()
    }
}

/// Orders the jobs of every instance (`jobs[i]` are instance `i`'s jobs).
///
/// # Errors
/// [`Error::CyclicLockGraph`] when the declared order has a cycle.
pub fn order_locks(jobs: &[&[Job]], direction: LockDirection) -> Result<LockLayers, Error> {
    let nodes: Vec<(JobRef, &Job)> = jobs
        .iter()
        .enumerate()
        .flat_map(|(i, instance_jobs)| {
            instance_jobs
                .iter()
                .enumerate()
                .map(move |(j, job)| ((i, j), job))
        })
        .collect();
    let edges = dependency_edges(&nodes, direction);
    let mut incoming = vec![0_usize; nodes.len()];
    for targets in &edges {
        for &target in targets {
            incoming[target] += 1;
        }
    }
    let mut placed = vec![false; nodes.len()];
    let mut layers = Vec::new();
    let mut remaining = nodes.len();
    while remaining > 0 {
        let layer: Vec<usize> = (0..nodes.len())
            .filter(|&n| !placed[n] && incoming[n] == 0)
            .collect();
        if layer.is_empty() {
            return Err(Error::CyclicLockGraph);
        }
        for &node in &layer {
            placed[node] = true;
            for &target in &edges[node] {
                incoming[target] -= 1;
            }
        }
        remaining -= layer.len();
        layers.push(layer.into_iter().map(|n| nodes[n].0).collect());
    }
    Ok(LockLayers(layers))
}

/// For each node, the nodes it must be locked before.
fn dependency_edges(nodes: &[(JobRef, &Job)], direction: LockDirection) -> Vec<Vec<usize>> {
    nodes
        .iter()
        .map(|(_, job)| {
            let specifiers = job.locked_before(direction);
            nodes
                .iter()
                .enumerate()
                .filter(|(_, (_, other))| {
                    specifiers.iter().any(|s| {
                        s.job_name == other.name
                            && (other.release.is_empty() || s.release == other.release)
                    })
                })
                .map(|(index, _)| index)
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::job::{JobMetadata, LockSpecifier};

    fn job(name: &str, release: &str, before: &[(&str, &str)]) -> Job {
        Job {
            name: name.into(),
            release: release.into(),
            scripts: std::collections::BTreeSet::new(),
            metadata: JobMetadata {
                backup_should_be_locked_before: before
                    .iter()
                    .map(|(n, r)| LockSpecifier {
                        job_name: (*n).into(),
                        release: (*r).into(),
                    })
                    .collect(),
                ..JobMetadata::default()
            },
            shared_artifact: None,
        }
    }

    #[test]
    fn independent_jobs_share_one_layer() {
        let a = [job("a", "r", &[]), job("b", "r", &[])];
        let layers = order_locks(&[&a], LockDirection::Backup).unwrap();
        assert_eq!(layers.0, vec![vec![(0, 0), (0, 1)]]);
    }

    #[test]
    fn a_job_locked_before_another_comes_first_on_every_instance() {
        let app0 = [job("app", "app-r", &[("db", "db-r")])];
        let db = [job("db", "db-r", &[])];
        let app1 = [job("app", "app-r", &[("db", "db-r")])];
        let layers = order_locks(&[&db, &app0, &app1], LockDirection::Backup).unwrap();
        assert_eq!(layers.0, vec![vec![(1, 0), (2, 0)], vec![(0, 0)]]);
        let unlock: Vec<_> = layers.unlock_order().cloned().collect();
        assert_eq!(unlock, vec![vec![(0, 0)], vec![(1, 0), (2, 0)]]);
    }

    #[test]
    fn the_release_must_match_too() {
        let jobs = [job("app", "r", &[("db", "other")]), job("db", "r", &[])];
        let layers = order_locks(&[&jobs], LockDirection::Backup).unwrap();
        assert_eq!(layers.0.len(), 1);
    }

    #[test]
    fn jobs_of_unknown_release_match_by_name_as_in_director_mode() {
        let jobs = [
            job("bbr-uaadb", "", &[]),
            job("uaa", "", &[("bbr-uaadb", "backup-and-restore-sdk")]),
        ];
        let layers = order_locks(&[&jobs], LockDirection::Backup).unwrap();
        assert_eq!(layers.0, vec![vec![(0, 1)], vec![(0, 0)]]);
    }

    #[test]
    fn restore_order_uses_its_own_key() {
        let jobs = [job("app", "r", &[("db", "r")]), job("db", "r", &[])];
        let layers = order_locks(&[&jobs], LockDirection::Restore).unwrap();
        assert_eq!(layers.0.len(), 1);
    }

    #[test]
    fn chains_make_one_layer_per_step() {
        let jobs = [
            job("c", "r", &[]),
            job("b", "r", &[("c", "r")]),
            job("a", "r", &[("b", "r")]),
        ];
        let layers = order_locks(&[&jobs], LockDirection::Backup).unwrap();
        assert_eq!(layers.0, vec![vec![(0, 2)], vec![(0, 1)], vec![(0, 0)]]);
    }

    #[test]
    fn cycles_are_refused() {
        let jobs = [job("a", "r", &[("b", "r")]), job("b", "r", &[("a", "r")])];
        assert!(matches!(
            order_locks(&[&jobs], LockDirection::Backup),
            Err(Error::CyclicLockGraph)
        ));
        let selfish = [job("a", "r", &[("a", "r")])];
        assert!(order_locks(&[&selfish], LockDirection::Backup).is_err());
    }
}
