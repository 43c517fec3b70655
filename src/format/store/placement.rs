//! Where a stored backup may point: its manifest is bound to the place it is stored at.
//!
//! A manifest is a list of sha256 digests; nothing in it says where it belongs. Someone who
//! can write to the store could otherwise copy an old genuine `manifest.json` to
//! `cf/20991231T235959Z/` and have `restore --latest` restore stale data with every check
//! passing (a rollback), or write into an old, prunable backup a manifest that lists the newest
//! backups' objects, so that `backups prune` — a job with delete rights — destroys them (a
//! confused deputy). So, for a backup stored under `<deployment>/<id>/`:
//!
//! - its manifest must name that deployment and that id ([`check_placement`]);
//! - every object key it lists (artifacts, `metadata`, the deployment manifest) must lie under
//!   `<deployment>/<id>/`. Keys are relative to the store's prefix (the adapter adds it), so
//!   this is `<prefix>/<deployment>/<id>/` in the bucket;
//! - deleting a backup never deletes a key outside `<deployment>/<id>/`
//!   ([`super::delete_objects`]), whatever its manifest lists;
//! - a backup id more than [`FUTURE_TOLERANCE`] ahead of this machine's clock fills no slot:
//!   `--latest`, prune's rules and "newest verified" ignore it ([`is_future`]), with a warning.
//!
//! Restore, drills and `backups verify` refuse a misplaced backup before anything is connected
//! ([`super::read_placed_manifest`]); `backups list` and `show` mark it; prune keeps it and
//! reports it. Signatures (a separate check) say who wrote a manifest; this module says it is
//! where it claims to be — both are needed, since a genuine signed manifest can be copied.

use chrono::{DateTime, Duration, Utc};

use crate::format::manifest::{DeploymentManifestObject, Manifest, ManifestObject};

/// How far ahead of this machine's clock a backup id may be and still count (clocks of
/// jumpboxes differ by seconds, not minutes).
pub const FUTURE_TOLERANCE: Duration = Duration::minutes(10);

/// How a manifest does not match the place it is stored at.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlacementError {
    /// The manifest names another deployment.
    #[error("its manifest names deployment `{named}`, but it is stored under `{stored}/`")]
    Deployment {
        /// The deployment it is stored under.
        stored: String,
        /// The deployment the manifest names.
        named: String,
    },
    /// The manifest names another backup id.
    #[error("its manifest names backup id `{named}`, but it is stored as `{stored}`")]
    BackupId {
        /// The id it is stored as.
        stored: String,
        /// The id the manifest names.
        named: String,
    },
    /// The manifest lists an object outside the backup's own prefix.
    #[error("its manifest lists {what} `{key}`, outside the backup's own `{prefix}`")]
    OutsideKey {
        /// What the object is (`artifact app-0-files`, `metadata`, ...).
        what: String,
        /// The object's key.
        key: String,
        /// `<deployment>/<id>/`.
        prefix: String,
    },
}

/// `<deployment>/<id>/`: where every object of a backup lies (relative to the store's prefix).
#[must_use]
pub fn backup_prefix(deployment: &str, id: &str) -> String {
    format!("{deployment}/{id}/")
}

/// True when `key` names an object under `prefix` (`<deployment>/<id>/`): it starts with it,
/// has a name after it, and is a valid key (no empty, `.` or `..` segment that could lead
/// elsewhere).
#[must_use]
pub fn lies_under(key: &str, prefix: &str) -> bool {
    key.len() > prefix.len()
        && key.starts_with(prefix)
        && cairn_store::ObjectKey::parse(key).is_ok()
}

/// Every object key a manifest lists, with what it is. The destructuring names every field,
/// so a field added to [`Manifest`] does not compile until it is considered here.
#[must_use]
pub fn listed_keys(manifest: &Manifest) -> Vec<(String, &str)> {
    let Manifest {
        schema: _,
        cairn_version: _,
        deployment: _,
        backup_id: _,
        started_at: _,
        finished_at: _,
        compression: _,
        artifacts,
        jobs: _,
        metadata: ManifestObject { key: metadata, .. },
        deployment_manifest,
        layout: _,
    } = manifest;
    let mut keys: Vec<(String, &str)> = Vec::new();
    for artifact in artifacts {
        keys.push((format!("artifact {}", artifact.name), artifact.key.as_str()));
        keys.extend(
            artifact
                .segments
                .iter()
                .enumerate()
                .map(|(index, segment)| {
                    (
                        format!("segment {index} of artifact {}", artifact.name),
                        segment.key.as_str(),
                    )
                }),
        );
    }
    keys.push(("metadata".into(), metadata.as_str()));
    if let Some(DeploymentManifestObject { key, .. }) = deployment_manifest {
        keys.push(("the deployment manifest".into(), key.as_str()));
    }
    keys
}

/// Checks that a manifest read from `<stored_deployment>/<stored_id>/manifest.json` names that
/// deployment and id, and lists no object outside `<stored_deployment>/<stored_id>/`.
///
/// # Errors
/// The first mismatch found (deployment, then id, then keys in the manifest's order).
pub fn check_placement(
    manifest: &Manifest,
    stored_deployment: &str,
    stored_id: &str,
) -> Result<(), PlacementError> {
    if manifest.deployment != stored_deployment {
        return Err(PlacementError::Deployment {
            stored: stored_deployment.to_string(),
            named: manifest.deployment.clone(),
        });
    }
    if manifest.backup_id != stored_id {
        return Err(PlacementError::BackupId {
            stored: stored_id.to_string(),
            named: manifest.backup_id.clone(),
        });
    }
    let prefix = backup_prefix(stored_deployment, stored_id);
    match listed_keys(manifest)
        .into_iter()
        .find(|(_, key)| !lies_under(key, &prefix))
    {
        Some((what, key)) => Err(PlacementError::OutsideKey {
            what,
            key: key.to_string(),
            prefix,
        }),
        None => Ok(()),
    }
}

/// True when a backup taken at `time` (its id) lies more than [`FUTURE_TOLERANCE`] after
/// `now`: no clock error explains it, so it fills no slot of `--latest`, prune or "newest
/// verified".
#[must_use]
pub fn is_future(time: DateTime<Utc>, now: DateTime<Utc>) -> bool {
    time > now + FUTURE_TOLERANCE
}

/// The one-line warning about a backup whose id is in the future.
#[must_use]
pub fn future_warning(deployment: &str, id: &str) -> String {
    format!(
        "Ignoring backup {deployment}/{id}: its id is more than {} minutes in the future, so \
         --latest, prune's rules and \"newest verified\" do not count it (a wrong clock, or a \
         copy put there to be restored instead of the newest backup); look at it with \
         `cairn backups show {deployment}/{id}`",
        FUTURE_TOLERANCE.num_minutes()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::digest::FileDigests;
    use crate::format::manifest::{Compression, ManifestArtifact, MANIFEST_SCHEMA};
    use chrono::TimeZone;

    const ID: &str = "20240102T030405Z";

    fn artifact(name: &str, key: &str) -> ManifestArtifact {
        ManifestArtifact {
            name: name.into(),
            group: "app".into(),
            index: "0".into(),
            job: "files".into(),
            key: key.into(),
            size: 1,
            sha256: "00".into(),
            version: Some("v1".into()),
            files: FileDigests::new(),
            encryption: None,
            stream: false,
            segments: Vec::new(),
            plain_size: None,
        }
    }

    /// A manifest of `cf/ID` as Cairn writes it: every key under `cf/ID/`.
    fn genuine() -> Manifest {
        Manifest {
            schema: MANIFEST_SCHEMA,
            cairn_version: "0.1.0".into(),
            deployment: "cf".into(),
            backup_id: ID.into(),
            started_at: Utc::now(),
            finished_at: Utc::now(),
            compression: Compression::Zstd { level: 3 },
            artifacts: vec![
                artifact("app-0-files", &format!("cf/{ID}/app-0-files.tar.zst")),
                artifact("db-0-pg", &format!("cf/{ID}/db-0-pg.stream.zst.age")),
            ],
            jobs: vec![],
            metadata: ManifestObject {
                key: format!("cf/{ID}/metadata"),
                version: None,
                sha256: "00".into(),
            },
            deployment_manifest: Some(DeploymentManifestObject {
                key: format!("cf/{ID}/manifest.yml.age"),
                version: None,
                size: 1,
                sha256: "00".into(),
                encryption: None,
            }),
            layout: None,
        }
    }

    #[test]
    fn a_manifest_where_cairn_wrote_it_is_placed() {
        assert_eq!(check_placement(&genuine(), "cf", ID), Ok(()));
        let keys: Vec<String> = listed_keys(&genuine())
            .into_iter()
            .map(|(what, key)| format!("{what}={key}"))
            .collect();
        assert_eq!(
            keys,
            [
                format!("artifact app-0-files=cf/{ID}/app-0-files.tar.zst"),
                format!("artifact db-0-pg=cf/{ID}/db-0-pg.stream.zst.age"),
                format!("metadata=cf/{ID}/metadata"),
                format!("the deployment manifest=cf/{ID}/manifest.yml.age"),
            ]
        );
    }

    #[test]
    fn a_genuine_manifest_copied_elsewhere_is_misplaced() {
        // The rollback: an old genuine manifest copied to a newer id.
        assert_eq!(
            check_placement(&genuine(), "cf", "20991231T235959Z"),
            Err(PlacementError::BackupId {
                stored: "20991231T235959Z".into(),
                named: ID.into()
            })
        );
        // ... with its id rewritten, its keys still point into the old backup.
        let mut copied = genuine();
        copied.backup_id = "20991231T235959Z".into();
        let error = check_placement(&copied, "cf", "20991231T235959Z").unwrap_err();
        assert_eq!(
            error.to_string(),
            format!("its manifest lists artifact app-0-files `cf/{ID}/app-0-files.tar.zst`, outside the backup's own `cf/20991231T235959Z/`")
        );
        // Into another deployment.
        assert_eq!(
            check_placement(&genuine(), "other", ID),
            Err(PlacementError::Deployment {
                stored: "other".into(),
                named: "cf".into()
            })
        );
    }

    #[test]
    fn every_listed_key_must_lie_under_the_backups_own_prefix() {
        let outside = |edit: &dyn Fn(&mut Manifest)| {
            let mut manifest = genuine();
            edit(&mut manifest);
            match check_placement(&manifest, "cf", ID) {
                Err(PlacementError::OutsideKey { what, key, .. }) => format!("{what}: {key}"),
                other => panic!("{other:?}"),
            }
        };
        // An artifact of another (the newest) backup: the confused deputy's key.
        assert_eq!(
            outside(&|m| m.artifacts[1].key = "cf/20991231T000000Z/db-0-pg.tar.zst".into()),
            "artifact db-0-pg: cf/20991231T000000Z/db-0-pg.tar.zst"
        );
        assert_eq!(
            outside(&|m| m.metadata.key = "other/20240102T030405Z/metadata".into()),
            "metadata: other/20240102T030405Z/metadata"
        );
        assert_eq!(
            outside(&|m| {
                m.deployment_manifest.as_mut().unwrap().key = "cf/manifest.yml".into();
            }),
            "the deployment manifest: cf/manifest.yml"
        );
        // A prefix that only looks like ours, a way out, the prefix itself, a sibling id.
        for key in [
            format!("cf/{ID}/../20991231T000000Z/x"),
            format!("cf/{ID}//x"),
            format!("cf/{ID}/"),
            format!("cf/{ID}"),
            format!("cf/{ID}x/app-0-files.tar.zst"),
            format!("/cf/{ID}/x"),
            format!("xcf/{ID}/x"),
        ] {
            assert_eq!(
                outside(&|m| m.artifacts[0].key.clone_from(&key)),
                format!("artifact app-0-files: {key}")
            );
        }
    }

    #[test]
    fn ids_more_than_ten_minutes_ahead_are_in_the_future() {
        let now = Utc.with_ymd_and_hms(2026, 4, 3, 12, 0, 0).unwrap();
        assert!(!is_future(now, now));
        assert!(!is_future(now - Duration::days(400), now));
        assert!(!is_future(now + Duration::minutes(10), now));
        assert!(is_future(
            now + Duration::minutes(10) + Duration::seconds(1),
            now
        ));
        assert!(is_future(
            Utc.with_ymd_and_hms(2099, 12, 31, 23, 59, 59).unwrap(),
            now
        ));
        let warning = future_warning("cf", "20991231T235959Z");
        assert!(
            warning.starts_with(
                "Ignoring backup cf/20991231T235959Z: its id is more than 10 minutes in the future"
            ),
            "{warning}"
        );
    }
}
