//! `restore --plan`: what a restore would do, shown without changing anything — which
//! artifact goes to which instance and how big it is, the lock and unlock order, the free
//! space on every instance that receives artifacts, and every difference between the backup
//! and the target (refusals and warnings) — as text, as JSON (a `restore_plan` event), or as a
//! Graphviz graph of the restore lock order.

use std::fmt::Write as _;

use serde::Serialize;

use super::plan_view::lock_order_dot;
use super::size_text;

/// A serializable description of a restore plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RestorePlanView {
    /// Deployment restored into.
    pub deployment: String,
    /// Where the backup is (a directory, a store key).
    pub backup: String,
    /// True when nothing refuses the restore.
    pub restorable: bool,
    /// Every artifact copied, in copy (and restore-script) order.
    pub artifacts: Vec<ArtifactView>,
    /// Restore lock layers in locking order (`<group>/<id>:<job>`); unlock runs them in
    /// reverse ([`RestorePlanView::unlock_layers`]).
    pub lock_layers: Vec<Vec<String>>,
    /// The same layers in unlocking order.
    pub unlock_layers: Vec<Vec<String>>,
    /// `[from, to]`: from is locked before to.
    pub lock_edges: Vec<(String, String)>,
    /// Free space on every instance that receives artifacts.
    pub free_space: Vec<SpaceView>,
    /// Every reason the restore is refused.
    pub refusals: Vec<String>,
    /// Every difference that does not refuse it.
    pub warnings: Vec<String>,
}

/// One artifact and where it goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ArtifactView {
    /// Artifact name (`<group>-<index>-<job>`, or a shared artifact's).
    pub artifact: String,
    /// `<group>/<id>` it is restored on.
    pub instance: String,
    /// Job whose restore script reads it.
    pub job: String,
    /// Bytes it takes once extracted, when the backup records them.
    pub bytes: Option<u64>,
    /// Streamed into the job's `restore` script (scripts-contract §12) after a full check,
    /// instead of copied into its artifact directory.
    pub streamed: bool,
}

/// Free space of one instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SpaceView {
    /// `<group>/<id>`.
    pub instance: String,
    /// Bytes its artifacts need.
    pub needed_bytes: u64,
    /// Bytes free under `/var/vcap/store`, when measured.
    pub available_bytes: Option<u64>,
    /// Mount point of that file system, when measured.
    pub mount: Option<String>,
    /// False when measured and too small.
    pub fits: bool,
}

impl RestorePlanView {
    /// Human-readable text.
    #[must_use]
    pub fn to_text(&self) -> String {
        let mut text = format!(
            "Restore plan for deployment '{}' from {}:\n",
            self.deployment, self.backup
        );
        let _ = writeln!(text, "Artifacts (copied, then restored in this order):");
        for artifact in &self.artifacts {
            let size = artifact
                .bytes
                .map_or_else(|| "size unknown".into(), size_text);
            let how = if artifact.streamed {
                ", checked in full, then streamed into its restore script"
            } else {
                ""
            };
            let _ = writeln!(
                text,
                "  {} -> {} job {} ({size}{how})",
                artifact.artifact, artifact.instance, artifact.job
            );
        }
        let _ = writeln!(text, "Lock layers (restore order):");
        for (number, layer) in self.lock_layers.iter().enumerate() {
            let _ = writeln!(text, "  {}. {}", number + 1, layer.join(", "));
        }
        let _ = writeln!(text, "Unlock layers:");
        for (number, layer) in self.unlock_layers.iter().enumerate() {
            let _ = writeln!(text, "  {}. {}", number + 1, layer.join(", "));
        }
        let _ = writeln!(text, "Free space under /var/vcap/store:");
        for space in &self.free_space {
            let available = space.available_bytes.map_or_else(
                || "not measured".into(),
                |a| {
                    format!(
                        "{} free on {}",
                        size_text(a),
                        space.mount.as_deref().unwrap_or("?")
                    )
                },
            );
            let verdict = if space.fits { "" } else { " — does not fit" };
            let _ = writeln!(
                text,
                "  {}: needs {}, {available}{verdict}",
                space.instance,
                size_text(space.needed_bytes)
            );
        }
        for warning in &self.warnings {
            let _ = writeln!(text, "Warning: {warning}");
        }
        for refusal in &self.refusals {
            let _ = writeln!(text, "Refused: {refusal}");
        }
        let verdict = if self.restorable {
            "can be restored"
        } else {
            "cannot be restored"
        };
        let _ = writeln!(text, "Deployment '{}' {verdict}.", self.deployment);
        text
    }

    /// The restore lock order as a Graphviz digraph (an edge points to what is locked after).
    #[must_use]
    pub fn to_dot(&self) -> String {
        lock_order_dot(&self.deployment, &self.lock_layers, &self.lock_edges)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_names_every_artifact_refusal_and_warning() {
        let view = RestorePlanView {
            deployment: "cf".into(),
            backup: "/b/cf_20240102T030405Z".into(),
            restorable: false,
            artifacts: vec![
                ArtifactView {
                    artifact: "db-0-pg".into(),
                    instance: "db/0".into(),
                    job: "pg".into(),
                    bytes: Some(3 << 20),
                    streamed: false,
                },
                ArtifactView {
                    artifact: "db-1-pg".into(),
                    instance: "db/1".into(),
                    job: "pg".into(),
                    bytes: Some(3 << 20),
                    streamed: true,
                },
            ],
            lock_layers: vec![vec!["db/0:pg".into()]],
            unlock_layers: vec![vec!["db/0:pg".into()]],
            lock_edges: vec![],
            free_space: vec![SpaceView {
                instance: "db/0".into(),
                needed_bytes: 3 << 20,
                available_bytes: Some(1 << 20),
                mount: Some("/var/vcap/store".into()),
                fits: false,
            }],
            refusals: vec!["too small".into()],
            warnings: vec![
                "Release pg is version 1 in the backup's deployment, 2 in the deployment".into(),
            ],
        };
        let text = view.to_text();
        assert!(
            text.contains("db-0-pg -> db/0 job pg (3.0 MiB)\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "db-1-pg -> db/1 job pg (3.0 MiB, checked in full, then streamed into its restore script)\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("db/0: needs 3.0 MiB, 1.0 MiB free on /var/vcap/store — does not fit"),
            "{text}"
        );
        assert!(text.contains("Refused: too small"), "{text}");
        assert!(text.contains("Warning: Release pg"), "{text}");
        assert!(
            text.ends_with("Deployment 'cf' cannot be restored.\n"),
            "{text}"
        );
        assert!(view.to_dot().contains("rank=same; \"db/0:pg\""));
    }
}
