//! `manifest.json`: Cairn's record of a backup in an object store, written last.
//!
//! The manifest is the proof that a backup is complete: it exists only when every artifact
//! was stored and verified against the instance's own checksums. It pins each artifact to the
//! exact object version the store returned, so a later overwrite cannot change what is
//! restored, and it holds the sha256 of the stored bytes and of every file inside, so
//! `backups verify` can prove every byte is intact without restoring anything.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::format::digest::FileDigests;
use crate::model::layout::DeploymentLayout;

/// Name of the manifest object inside a backup.
pub const MANIFEST_NAME: &str = "manifest.json";
/// Name of the bbr `metadata` object inside a backup.
pub const METADATA_NAME: &str = "metadata";
/// Name of the deployment manifest object (`--with-manifest`), as in a bbr directory;
/// `manifest.yml.age` when the backup is encrypted.
pub const DEPLOYMENT_MANIFEST_NAME: &str = "manifest.yml";
/// Version of the manifest schema: 2 since artifacts are stored as segments
/// ([`ManifestArtifact::segments`]); schema 1 manifests (one object per artifact) still read.
pub const MANIFEST_SCHEMA: u32 = 2;
/// The most of one record Cairn reads whole into memory (256 MiB): a `manifest.json`, a
/// backup's `metadata` object, a run journal in a store (a journal file has its own limit).
/// Anything larger is refused as it arrives, so a store written by someone else cannot exhaust
/// the jumpbox's memory; a backup whose manifest or `metadata` would pass it is not completed
/// (so no backup looks restorable that restore would refuse). A manifest takes ~190 bytes per
/// file listed (`metadata` ~110): 256 MiB is about 1.4 million files in one backup (more
/// files: a bbr directory, `--artifact-path`), and what a store written by someone else can
/// make Cairn allocate stays bounded (docs/reliability.md, threat model). The crate's own unit
/// tests run with 64 MiB, so that they pass the limit cheaply.
pub const RECORD_LIMIT: u64 = if cfg!(test) { 64 << 20 } else { 256 << 20 };

/// How artifacts are compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "algorithm", rename_all = "lowercase")]
pub enum Compression {
    /// Plain tar.
    None,
    /// zstd at a level.
    Zstd {
        /// Compression level (1–19).
        level: i32,
    },
}

impl Compression {
    /// Parses `none`, `zstd` or `zstd:LEVEL`.
    ///
    /// # Errors
    /// A one-line message naming the value.
    pub fn parse(text: &str) -> Result<Compression, String> {
        match text.split_once(':') {
            None if text == "none" => Ok(Compression::None),
            None if text == "zstd" => Ok(Compression::Zstd { level: 3 }),
            Some(("zstd", level)) => match level.parse::<i32>() {
                Ok(level) if (1..=19).contains(&level) => Ok(Compression::Zstd { level }),
                _ => Err(format!(
                    "--compression `{text}`: the zstd level must be 1 to 19"
                )),
            },
            _ => Err(format!(
                "--compression `{text}` is not one of none, zstd, zstd:LEVEL"
            )),
        }
    }

    /// File-name extension of an artifact object.
    #[must_use]
    pub fn extension(self) -> &'static str {
        match self {
            Compression::None => "tar",
            Compression::Zstd { .. } => "tar.zst",
        }
    }
}

/// One stored artifact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestArtifact {
    /// bbr artifact name, `<group>-<index>-<job>`.
    pub name: String,
    /// Instance group.
    pub group: String,
    /// BOSH index.
    pub index: String,
    /// Job name.
    pub job: String,
    /// Object key, relative to the store's prefix.
    pub key: String,
    /// Bytes stored.
    pub size: u64,
    /// sha256 of the stored bytes.
    pub sha256: String,
    /// Store version id (S3 version id, Azure version id or ETag, GCS generation).
    pub version: Option<String>,
    /// Every regular file in the tar: size and sha256.
    pub files: FileDigests,
    /// Bytes of the tar (of the stream, for a streamed artifact) before compression and
    /// encryption: a restore or verify stops as soon as the decompressed bytes pass it (a
    /// decompression bomb cannot fill an instance's disk). Absent in manifests of earlier
    /// versions: [`ManifestArtifact::plain_limit`] then bounds it from `files`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plain_size: Option<u64>,
    /// How the stored bytes are encrypted (after compression); absent: not encrypted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<ArtifactEncryption>,
    /// A streamed artifact ([`crate::format::stream`]): the object holds the stream itself
    /// (compressed, encrypted), not a tar; `files` is its one `./cairn-stream`. Absent: false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stream: bool,
    /// The objects the stored bytes are split into, in order (schema 2,
    /// [`crate::format::store::segment`]): segment `i` is `<key>.<i as 6 digits>`, its own
    /// zstd frame and age file. `key` then names no object, `size` is the sum of the segments'
    /// sizes, `sha256` the digest of the segment list ([`crate::format::store::segment::list_digest`])
    /// and `version` is absent. Empty (absent) in schema 1: the artifact is the one object `key`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub segments: Vec<ManifestSegment>,
}

/// One segment of a segmented artifact: an object holding a stretch of the artifact's plain
/// bytes (tar or stream), compressed and encrypted on its own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestSegment {
    /// Object key, relative to the store's prefix (`<artifact key>.<NNNNNN>`).
    pub key: String,
    /// Store version id.
    pub version: Option<String>,
    /// Bytes stored.
    pub size: u64,
    /// sha256 of the stored bytes.
    pub sha256: String,
    /// Plain bytes (of the artifact's tar or stream) this segment holds, before compression
    /// and encryption.
    pub plain_size: u64,
    /// sha256 of those plain bytes.
    pub plain_sha256: String,
}

/// How one artifact is encrypted. Never a key, never a recipient: only the scheme and how
/// many recipients the file key was wrapped for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactEncryption {
    /// `age-x25519` ([`crate::format::encryption::AGE_X25519`]).
    pub scheme: String,
    /// Number of recipients.
    pub recipients: usize,
}

impl ManifestArtifact {
    /// The most the stored bytes may decompress to: [`ManifestArtifact::plain_size`], else
    /// (an earlier manifest) the stream's size for a streamed artifact, or for a tar every
    /// file's header and blocks, a name header for long names, and a margin for what `files`
    /// does not list (directories, links: 64 MiB, or an eighth of the rest when that is more).
    #[must_use]
    pub fn plain_limit(&self) -> u64 {
        const BLOCK: u64 = 512;
        if let Some(size) = self.plain_size {
            return size;
        }
        if self.stream {
            return self.files_bytes();
        }
        let blocks = |bytes: u64| bytes.div_ceil(BLOCK).saturating_mul(BLOCK);
        let listed = self.files.iter().fold(0_u64, |total, (name, file)| {
            let long_name = if name.as_bytes().len() >= 100 {
                BLOCK.saturating_add(blocks(name.as_bytes().len() as u64 + 1))
            } else {
                0
            };
            total
                .saturating_add(BLOCK)
                .saturating_add(long_name)
                .saturating_add(blocks(file.size))
        });
        listed.saturating_add((listed / 8).max(64 << 20))
    }

    /// The bytes of every file listed (what the artifact takes once extracted), saturating.
    #[must_use]
    pub fn files_bytes(&self) -> u64 {
        self.files
            .values()
            .fold(0_u64, |total, file| total.saturating_add(file.size))
    }

    /// True for a backup-one-restore-all artifact (named `<job>-<release>-backup-one-restore-all`
    /// instead of `<group>-<index>-<job>`).
    #[must_use]
    pub fn is_shared(&self) -> bool {
        self.name != format!("{}-{}-{}", self.group, self.index, self.job)
            && self.name.ends_with("-backup-one-restore-all")
    }
}

/// Lock and unlock times of one job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobTimes {
    /// `<group>/<id>`.
    pub instance: String,
    /// Job name.
    pub job: String,
    /// When `pre-backup-lock` finished.
    pub locked_at: Option<DateTime<Utc>>,
    /// When `post-backup-unlock` finished.
    pub unlocked_at: Option<DateTime<Utc>>,
}

/// The whole manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Schema version.
    pub schema: u32,
    /// Cairn version that wrote it.
    pub cairn_version: String,
    /// Deployment name.
    pub deployment: String,
    /// Backup id, `YYYYMMDDTHHMMSSZ`.
    pub backup_id: String,
    /// Start of the run.
    pub started_at: DateTime<Utc>,
    /// When the last artifact was verified.
    pub finished_at: DateTime<Utc>,
    /// Compression of every artifact.
    pub compression: Compression,
    /// The artifacts.
    pub artifacts: Vec<ManifestArtifact>,
    /// Per job lock and unlock times.
    pub jobs: Vec<JobTimes>,
    /// Key and version of the bbr `metadata` object.
    pub metadata: ManifestObject,
    /// The deployment manifest saved with `--with-manifest`; absent without it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment_manifest: Option<DeploymentManifestObject>,
    /// Instance groups, jobs and releases of the deployment at backup time, which a restore
    /// compares with its target; absent in manifests of earlier versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layout: Option<DeploymentLayout>,
}

/// The deployment manifest object of a backup: it holds the deployment's secrets, so it is
/// encrypted like the artifacts when the backup is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeploymentManifestObject {
    /// Object key (`.../manifest.yml`, `.../manifest.yml.age` when encrypted).
    pub key: String,
    /// Store version id.
    pub version: Option<String>,
    /// Bytes stored.
    pub size: u64,
    /// sha256 of the stored bytes.
    pub sha256: String,
    /// How the stored bytes are encrypted; absent: not encrypted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<ArtifactEncryption>,
}

/// A small object referenced by the manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestObject {
    /// Object key.
    pub key: String,
    /// Store version id.
    pub version: Option<String>,
    /// sha256 of its bytes.
    pub sha256: String,
}

impl Manifest {
    /// Pretty JSON.
    #[must_use]
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("manifest serializes")
    }

    /// Parses a manifest.
    ///
    /// # Errors
    /// The JSON error.
    pub fn parse(data: &[u8]) -> Result<Manifest, String> {
        serde_json::from_slice(data).map_err(|e| e.to_string())
    }

    /// Total stored bytes.
    #[must_use]
    pub fn stored_bytes(&self) -> u64 {
        self.artifacts
            .iter()
            .fold(0_u64, |total, a| total.saturating_add(a.size))
    }

    /// The encryption of the first encrypted artifact, if any is encrypted.
    #[must_use]
    pub fn encryption(&self) -> Option<&ArtifactEncryption> {
        self.artifacts.iter().find_map(|a| a.encryption.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::file_name::FileName;

    #[test]
    fn compression_flags_parse() {
        assert_eq!(Compression::parse("none").unwrap(), Compression::None);
        assert_eq!(
            Compression::parse("zstd").unwrap(),
            Compression::Zstd { level: 3 }
        );
        assert_eq!(
            Compression::parse("zstd:9").unwrap(),
            Compression::Zstd { level: 9 }
        );
        assert!(Compression::parse("zstd:0").is_err());
        assert!(Compression::parse("gzip").is_err());
        assert_eq!(Compression::Zstd { level: 1 }.extension(), "tar.zst");
    }

    #[test]
    fn manifests_round_trip_through_json() {
        let manifest = Manifest {
            schema: MANIFEST_SCHEMA,
            cairn_version: "0.1.0".into(),
            deployment: "cf".into(),
            backup_id: "20240102T030405Z".into(),
            started_at: Utc::now(),
            finished_at: Utc::now(),
            compression: Compression::Zstd { level: 3 },
            artifacts: vec![],
            jobs: vec![],
            metadata: ManifestObject {
                key: "cf/20240102T030405Z/metadata".into(),
                version: None,
                sha256: "00".into(),
            },
            deployment_manifest: None,
            layout: None,
        };
        let json = manifest.to_json();
        assert!(json.contains("\"algorithm\": \"zstd\""), "{json}");
        // Manifests without a deployment manifest or a layout (earlier versions) say nothing.
        assert!(!json.contains("deployment_manifest") && !json.contains("layout"));
        assert_eq!(Manifest::parse(json.as_bytes()).unwrap(), manifest);
        assert_eq!(manifest.encryption(), None);
    }

    #[test]
    fn the_plain_limit_is_the_recorded_size_or_a_bound_from_the_files() {
        use crate::format::digest::FileDigest;
        let file = |size| FileDigest {
            size,
            sha256: "00".into(),
        };
        let mut artifact = ManifestArtifact {
            name: "app-0-files".into(),
            group: "app".into(),
            index: "0".into(),
            job: "files".into(),
            key: "cf/20240102T030405Z/app-0-files.tar.zst".into(),
            size: 1,
            sha256: "00".into(),
            version: None,
            files: FileDigests::from([
                (FileName::from_text("./a"), file(1)),
                (
                    FileName::from_text(&format!("./{}", "n".repeat(200))),
                    file(513),
                ),
            ]),
            plain_size: Some(10_240),
            encryption: None,
            stream: false,
            segments: Vec::new(),
        };
        assert_eq!(artifact.plain_limit(), 10_240);
        artifact.plain_size = None;
        // Header and one block; header, a long-name header and its block, and two blocks;
        // then the margin for what `files` does not list.
        let listed = (512 + 512) + (512 + 512 + 512 + 1024);
        assert_eq!(artifact.plain_limit(), listed + (64 << 20));
        artifact.stream = true;
        assert_eq!(artifact.plain_limit(), 514);
        // Sizes no sum can hold saturate instead of wrapping past the check.
        artifact.stream = false;
        artifact.files.insert("./huge".into(), file(u64::MAX));
        assert_eq!(artifact.plain_limit(), u64::MAX);
        assert_eq!(artifact.files_bytes(), u64::MAX);
    }

    #[test]
    fn encryption_is_recorded_per_artifact_and_absent_when_not_encrypted() {
        let artifact = |encryption| ManifestArtifact {
            name: "app-0-files".into(),
            group: "app".into(),
            index: "0".into(),
            job: "files".into(),
            key: "cf/20240102T030405Z/app-0-files.tar.zst.age".into(),
            size: 1,
            sha256: "00".into(),
            version: None,
            files: FileDigests::new(),
            plain_size: None,
            encryption,
            stream: false,
            segments: Vec::new(),
        };
        let encrypted = artifact(Some(ArtifactEncryption {
            scheme: "age-x25519".into(),
            recipients: 2,
        }));
        let json = serde_json::to_string(&encrypted).unwrap();
        assert!(
            json.contains(r#""encryption":{"scheme":"age-x25519","recipients":2}"#),
            "{json}"
        );
        let plain = serde_json::to_string(&artifact(None)).unwrap();
        assert!(!plain.contains("encryption"), "{plain}");
        // Manifests written before encryption existed still parse.
        let old: ManifestArtifact = serde_json::from_str(&plain).unwrap();
        assert_eq!(old.encryption, None);
        let back: ManifestArtifact = serde_json::from_str(&json).unwrap();
        assert_eq!(back, encrypted);
    }
}
