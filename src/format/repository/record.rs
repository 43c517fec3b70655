//! Cairn's record of a backup in a repository: the record snapshot's `cairn.json` (beside
//! bbr's `metadata`), and the tags that find snapshots (docs/design/repository.md §9).
//!
//! Why a snapshot and not a plain object: the record is written last, as a store's
//! `manifest.json` is, so a backup without one is not complete; being a snapshot it is
//! encrypted with the repository's key and listed by restic beside the artifacts.

use serde::{Deserialize, Serialize};

use crate::format::digest::FileDigests;
use crate::model::layout::DeploymentLayout;

/// The record file's name in the record snapshot.
pub const RECORD_FILE: &str = "cairn.json";
/// bbr's metadata file's name in the record snapshot.
pub const METADATA_FILE: &str = "metadata";
/// The version of [`Record`] this Cairn writes.
pub const RECORD_FORMAT: u32 = 1;

/// Tag `cairn-kind=` of an artifact's snapshot.
pub const KIND_ARTIFACT: &str = "artifact";
/// Tag `cairn-kind=` of a record snapshot.
pub const KIND_RECORD: &str = "record";

/// `cairn.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// [`RECORD_FORMAT`].
    pub format: u32,
    /// Deployment name.
    pub deployment: String,
    /// Backup id (`YYYYMMDDTHHMMSSZ`).
    pub backup_id: String,
    /// The artifacts and their snapshots.
    pub artifacts: Vec<RecordArtifact>,
    /// Instance groups, jobs and releases at backup time.
    pub layout: DeploymentLayout,
    /// The deployment manifest (`--with-manifest`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment_manifest: Option<String>,
    /// Each job's lock and unlock times, as a store's manifest has them (`backups report`'s
    /// lock windows; absent in records written before).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub jobs: Vec<crate::format::manifest::JobTimes>,
}

/// One artifact in [`Record`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordArtifact {
    /// `<group>-<index>-<job>` or a shared artifact's name.
    pub name: String,
    /// Instance group.
    pub group: String,
    /// Instance index.
    pub index: String,
    /// Job.
    pub job: String,
    /// A backup-one-restore-all artifact.
    pub shared: bool,
    /// Its snapshot's id (64 hex digits).
    pub snapshot: String,
    /// Its snapshot's root tree id: the artifact's files.
    pub tree: String,
    /// Bytes of the tar it was sent as (of the stream, for a streamed artifact).
    pub plain_bytes: u64,
    /// Bytes of its files.
    pub file_bytes: u64,
    /// A streamed artifact ([`crate::format::stream`]): its snapshot holds the stream as the
    /// one file `cairn-stream` ([`super::stream`]). Absent: false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stream: bool,
    /// A streamed artifact's one file `./cairn-stream`: its size and sha256, as a store's
    /// manifest records them (the snapshot's node cannot say the size: [`super::stream`]).
    /// Absent for other artifacts, whose sizes are their snapshot's and sha256 bbr's
    /// `metadata`'s.
    #[serde(default, skip_serializing_if = "no_files")]
    pub files: FileDigests,
}

/// For serde: no `files` to write.
fn no_files(files: &FileDigests) -> bool {
    files.is_empty()
}

/// `key=value` as a tag: `,` and `%` percent-encoded, since rustic's and restic's tag lists
/// are split on commas.
#[must_use]
pub fn tag(key: &str, value: &str) -> String {
    let mut text = format!("{key}=");
    for c in value.chars() {
        match c {
            '%' => text.push_str("%25"),
            ',' => text.push_str("%2C"),
            c => text.push(c),
        }
    }
    text
}

/// The tags of a snapshot of `kind` of backup `backup_id` of `deployment`.
#[must_use]
pub fn tags(kind: &str, deployment: &str, backup_id: &str) -> Vec<String> {
    vec![
        tag("cairn-kind", kind),
        tag("deployment", deployment),
        tag("cairn-backup", backup_id),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_cannot_be_split_by_a_comma_in_a_name() {
        assert_eq!(tag("deployment", "a,b%c"), "deployment=a%2Cb%25c");
        assert_eq!(
            tags(KIND_RECORD, "redis", "20240102T030405Z"),
            [
                "cairn-kind=record",
                "deployment=redis",
                "cairn-backup=20240102T030405Z"
            ]
        );
    }
}
