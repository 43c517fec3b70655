//! Signatures of bbr backup directories: `metadata.sig` next to `metadata`, which bbr
//! ignores.
//!
//! `metadata` holds the sha256 of every file of every artifact, so signing its digest (with
//! the directory's name, the artifacts it lists and `manifest.yml`'s digest) covers what a
//! restore checks. It is written just before the final `metadata`, which is what makes a
//! directory complete. A directory has no store to find the backup before it in, so its
//! statement carries no chain link, and the rollback check of `restore --latest` does not
//! apply (a directory is always named explicitly).

use std::path::Path;

use sha2::{Digest, Sha256};

use super::metadata_read::parse_metadata;
use super::{ArtifactError, BackupDirectory, BackupMetadata};
use crate::error::Error;
use crate::format::signature::{
    DirectoryStatement, Envelope, SignatureError, SigningKey, Statement, TrustedKeys,
};

/// Name of the signature file inside a backup directory.
pub const DIRECTORY_SIGNATURE_NAME: &str = "metadata.sig";
/// Name of the deployment manifest a directory may hold (`--with-manifest`).
const DEPLOYMENT_MANIFEST: &str = "manifest.yml";

/// The artifacts `metadata` lists, sorted.
fn artifact_names(metadata: &BackupMetadata) -> Vec<String> {
    let mut names: Vec<String> = BackupDirectory::listed_artifacts(metadata)
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    names.sort();
    names
}

/// Writes `metadata.sig` for the `metadata` about to be written (`metadata_yaml`).
///
/// # Errors
/// The file cannot be written.
pub fn sign_directory(
    directory: &BackupDirectory,
    key: &SigningKey,
    (deployment, backup_id): (&str, &str),
    metadata: &BackupMetadata,
    deployment_manifest: Option<&str>,
) -> Result<(), Error> {
    let statement = Statement::Directory(DirectoryStatement {
        deployment: deployment.to_string(),
        backup_id: backup_id.to_string(),
        metadata_sha256: metadata_sha256(metadata)?,
        artifacts: artifact_names(metadata),
        deployment_manifest_sha256: deployment_manifest
            .map(|text| hex::encode(Sha256::digest(text.as_bytes()))),
        signed_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    });
    let envelope = statement.sign(key);
    directory.write_file(DIRECTORY_SIGNATURE_NAME, envelope.to_json().as_bytes())?;
    Ok(())
}

/// The sha256 of the `metadata` file that `metadata` is written as, hashed as it is written.
fn metadata_sha256(metadata: &BackupMetadata) -> Result<String, Error> {
    /// The bytes written, hashed.
    struct Hashing(Sha256);
    impl std::io::Write for Hashing {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.update(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut hashing = Hashing(Sha256::new());
    metadata
        .write_yaml(&mut hashing)
        .map_err(|source| ArtifactError::Io {
            action: "Hashing",
            path: "metadata".into(),
            source,
        })?;
    Ok(hex::encode(hashing.0.finalize()))
}

/// Reads a directory's `metadata` and `metadata.sig` and checks the signature against
/// `trusted`, the directory's name against the signed deployment and id, and `manifest.yml`;
/// returns the metadata parsed from the bytes that were checked.
///
/// # Errors
/// [`SignatureError`], or the metadata cannot be read or parsed.
pub fn read_signed_metadata(path: &Path, trusted: &TrustedKeys) -> Result<BackupMetadata, Error> {
    let backup = format!("directory {}", path.display());
    let read = |name: &str| std::fs::read(path.join(name));
    let metadata_path = path.join("metadata");
    let metadata_bytes = read("metadata").map_err(|source| ArtifactError::Io {
        action: "Reading",
        path: metadata_path.clone(),
        source,
    })?;
    let signature = read(DIRECTORY_SIGNATURE_NAME).map_err(|_| SignatureError::Unsigned {
        backup: backup.clone(),
        object: DIRECTORY_SIGNATURE_NAME,
    })?;
    let opened = Envelope::open(&signature, trusted).map_err(|rejection| {
        SignatureError::rejected(backup.clone(), DIRECTORY_SIGNATURE_NAME, rejection)
    })?;
    let Statement::Directory(statement) = opened.statement else {
        return Err(SignatureError::Malformed {
            backup,
            object: DIRECTORY_SIGNATURE_NAME,
            detail: "it signs something other than a bbr directory".into(),
        }
        .into());
    };
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
    let signed_name = format!("{}_{}", statement.deployment, statement.backup_id);
    if name.as_deref() != Some(signed_name.as_str()) {
        return Err(SignatureError::Misplaced {
            backup,
            signed_as: signed_name,
        }
        .into());
    }
    let changed = |object, detail: &str| SignatureError::ContentChanged {
        backup: backup.clone(),
        object,
        detail: detail.to_string(),
    };
    if hex::encode(Sha256::digest(&metadata_bytes)) != statement.metadata_sha256 {
        return Err(changed("metadata", "its sha256 differs from the signed one").into());
    }
    let text = String::from_utf8(metadata_bytes)
        .map_err(|_| changed("metadata", "it is not UTF-8 text"))?;
    let metadata = parse_metadata(&text).map_err(|detail| ArtifactError::BadMetadata {
        path: metadata_path,
        detail,
    })?;
    if artifact_names(&metadata) != statement.artifacts {
        return Err(changed("metadata", "its artifacts differ from the signed list").into());
    }
    let manifest = read(DEPLOYMENT_MANIFEST)
        .ok()
        .map(|bytes| hex::encode(Sha256::digest(bytes)));
    if manifest != statement.deployment_manifest_sha256 {
        return Err(changed(
            "manifest.yml",
            "it is not the deployment manifest that was signed (or was added or removed)",
        )
        .into());
    }
    Ok(metadata)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::bbr_directory::metadata::{InstanceArtifacts, NamedChecksums};

    fn signature_error(result: Result<BackupMetadata, Error>) -> SignatureError {
        match result {
            Err(Error::Signature(error)) => error,
            other => panic!("not a signature error: {other:?}"),
        }
    }

    #[test]
    fn a_signed_directory_is_refused_when_moved_changed_or_unsigned() {
        let parent = tempfile::tempdir().unwrap();
        let key = SigningKey::generate();
        let trusted = TrustedKeys::of(&[key.public()]);
        let directory = BackupDirectory::create(parent.path(), "cf_20240102T030405Z").unwrap();
        let metadata = BackupMetadata {
            instances: vec![InstanceArtifacts {
                name: "app".into(),
                index: "0".into(),
                artifacts: vec![NamedChecksums {
                    name: "files".into(),
                    checksums: Default::default(),
                }],
            }],
            ..BackupMetadata::default()
        };
        sign_directory(
            &directory,
            &key,
            ("cf", "20240102T030405Z"),
            &metadata,
            None,
        )
        .unwrap();
        directory.write_metadata(&metadata).unwrap();
        let path = directory.path().to_path_buf();
        assert_eq!(read_signed_metadata(&path, &trusted).unwrap(), metadata);
        let stranger = TrustedKeys::of(&[SigningKey::generate().public()]);
        assert!(matches!(
            signature_error(read_signed_metadata(&path, &stranger)),
            SignatureError::UntrustedKey { .. }
        ));
        // A manifest.yml that was not signed.
        std::fs::write(path.join(DEPLOYMENT_MANIFEST), "name: cf\n").unwrap();
        assert!(matches!(
            signature_error(read_signed_metadata(&path, &trusted)),
            SignatureError::ContentChanged {
                object: "manifest.yml",
                ..
            }
        ));
        std::fs::remove_file(path.join(DEPLOYMENT_MANIFEST)).unwrap();
        // Moved to a newer name.
        let moved = parent.path().join("cf_20991231T235959Z");
        std::fs::rename(&path, &moved).unwrap();
        assert!(matches!(
            signature_error(read_signed_metadata(&moved, &trusted)),
            SignatureError::Misplaced { .. }
        ));
        std::fs::rename(&moved, &path).unwrap();
        // metadata changed after signing.
        let text = std::fs::read_to_string(path.join("metadata")).unwrap();
        std::fs::write(path.join("metadata"), text.replace("files", "other")).unwrap();
        assert!(matches!(
            signature_error(read_signed_metadata(&path, &trusted)),
            SignatureError::ContentChanged {
                object: "metadata",
                ..
            }
        ));
        // No signature at all.
        std::fs::remove_file(path.join(DIRECTORY_SIGNATURE_NAME)).unwrap();
        assert!(matches!(
            signature_error(read_signed_metadata(&path, &trusted)),
            SignatureError::Unsigned { .. }
        ));
    }
}
