//! The signed statements and their envelope.
//!
//! A statement is what a signature vouches for; the envelope holds one statement, the public
//! key that signed it and the signature. The signed bytes are [`Statement::canonical_bytes`]:
//! a fixed domain line, then the statement as compact JSON, its fields in the order declared
//! here, no map and no optional field left out (`null` instead). A reader parses the
//! statement (unknown fields refused), serializes it again the same way and checks the
//! signature over those bytes, so whatever the stored JSON looks like, only the values that
//! were signed are ever trusted. The `type` tag keeps one kind of statement from being
//! replayed as another.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::keys::{PublicKey, SigningKey, TrustedKeys};

/// The line that starts the signed bytes (domain separation from any other Ed25519 use of the
/// same key).
const DOMAIN: &[u8] = b"cairn signed statement v1\n";

/// One stored object a statement covers: its key, the store's version id and the sha256 of
/// its bytes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedObject {
    /// Object key, relative to the store's prefix.
    pub key: String,
    /// Store version id (none on stores without versioning).
    pub version: Option<String>,
    /// sha256 of the stored bytes.
    pub sha256: String,
}

/// A link of the hash chain: a backup id and the digest of its statement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChainLink {
    /// Backup id.
    pub backup_id: String,
    /// sha256 of its statement's canonical bytes ([`Statement::digest`]).
    pub statement_sha256: String,
}

/// What a backup in an object store is: where it lies, every object it consists of, who can
/// decrypt it, and the signed backup of the same deployment before it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupStatement {
    /// Deployment name; the backup lies under `<deployment>/<backup_id>/`.
    pub deployment: String,
    /// Backup id.
    pub backup_id: String,
    /// `manifest.json`: its key and the sha256 of its exact bytes (its version is unknown when
    /// signing, since the manifest is written after the signature).
    pub manifest: SignedObject,
    /// Every other object: artifacts, `metadata`, the deployment manifest; sorted by key.
    pub objects: Vec<SignedObject>,
    /// The age recipients (public keys) the backup is encrypted to, sorted; empty: plaintext.
    pub recipients: Vec<String>,
    /// The newest signed backup of the deployment in the store when this one was written.
    pub previous: Option<ChainLink>,
    /// When it was signed (RFC 3339).
    pub signed_at: String,
}

/// What a bbr backup directory is: its name and the digest of its `metadata`, which holds the
/// sha256 of every file of every artifact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirectoryStatement {
    /// Deployment name.
    pub deployment: String,
    /// Backup id (the timestamp of `<deployment>_<id>`).
    pub backup_id: String,
    /// sha256 of the `metadata` file's bytes.
    pub metadata_sha256: String,
    /// The artifacts `metadata` lists (tar names without `.tar`), sorted.
    pub artifacts: Vec<String>,
    /// sha256 of `manifest.yml` (`--with-manifest`), if saved.
    pub deployment_manifest_sha256: Option<String>,
    /// When it was signed (RFC 3339).
    pub signed_at: String,
}

/// One backup a deletion record lists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeletedBackup {
    /// Backup id.
    pub backup_id: String,
    /// Digest of its statement; none when it was not signed (by a key the deleter trusts).
    pub statement_sha256: Option<String>,
    /// Its statement's link to the backup before it, so the chain can be followed through it.
    pub previous: Option<ChainLink>,
}

/// What a `prune` or `delete` given `--signing-key` deleted: the gaps it leaves in the chain
/// are then told from backups deleted by anyone else.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeletionRecord {
    /// Deployment name.
    pub deployment: String,
    /// `prune` or `delete`.
    pub command: String,
    /// When (RFC 3339); written before the deletes.
    pub deleted_at: String,
    /// The backups.
    pub deleted: Vec<DeletedBackup>,
}

/// Every kind of signed statement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum Statement {
    /// A backup in an object store (`<deployment>/<id>/signature.json`).
    #[serde(rename = "cairn.store-backup/1")]
    StoreBackup(BackupStatement),
    /// A bbr backup directory (`metadata.sig`).
    #[serde(rename = "cairn.bbr-directory/1")]
    Directory(DirectoryStatement),
    /// A deletion record (`<deployment>/deletions/...`).
    #[serde(rename = "cairn.deletion/1")]
    Deletion(DeletionRecord),
}

impl Statement {
    /// The bytes that are signed.
    ///
    /// # Panics
    /// Never: every field serializes.
    #[must_use]
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let mut bytes = DOMAIN.to_vec();
        bytes.extend(serde_json::to_vec(self).expect("statements serialize"));
        bytes
    }

    /// sha256 of the canonical bytes, hex: what a [`ChainLink`] names.
    #[must_use]
    pub fn digest(&self) -> String {
        hex::encode(Sha256::digest(self.canonical_bytes()))
    }

    /// Signs it.
    #[must_use]
    pub fn sign(self, key: &SigningKey) -> Envelope {
        let signature = key.sign(&self.canonical_bytes());
        Envelope {
            signed: self,
            key: key.public().to_string(),
            signature,
        }
    }
}

/// A statement with its signature, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Envelope {
    /// What is signed.
    pub signed: Statement,
    /// The public key that signed it (`cairn-ed25519:...`).
    pub key: String,
    /// Ed25519 signature of [`Statement::canonical_bytes`], hex.
    pub signature: String,
}

/// Why an envelope was not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    /// Not a Cairn signature (the parse error).
    Malformed(String),
    /// Signed by a key that is not trusted (its text).
    UntrustedKey(String),
    /// The signature does not match the statement.
    BadSignature,
}

/// A statement whose signature was checked against a trusted key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    /// The statement.
    pub statement: Statement,
    /// Its digest ([`Statement::digest`]).
    pub digest: String,
    /// The trusted key that signed it.
    pub key: PublicKey,
}

impl Envelope {
    /// Pretty JSON, as stored.
    ///
    /// # Panics
    /// Never: every field serializes.
    #[must_use]
    pub fn to_json(&self) -> String {
        let mut text = serde_json::to_string_pretty(self).expect("envelopes serialize");
        text.push('\n');
        text
    }

    /// Parses stored bytes and checks the signature against `trusted`.
    ///
    /// # Errors
    /// What was wrong.
    pub fn open(bytes: &[u8], trusted: &TrustedKeys) -> Result<Opened, Rejection> {
        let envelope: Envelope =
            serde_json::from_slice(bytes).map_err(|e| Rejection::Malformed(e.to_string()))?;
        let key = PublicKey::parse(&envelope.key).map_err(Rejection::Malformed)?;
        let Some(key) = trusted.find(&key).copied() else {
            return Err(Rejection::UntrustedKey(envelope.key));
        };
        let bytes = envelope.signed.canonical_bytes();
        if !key.verifies(&bytes, &envelope.signature) {
            return Err(Rejection::BadSignature);
        }
        Ok(Opened {
            digest: hex::encode(Sha256::digest(&bytes)),
            statement: envelope.signed,
            key,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn statement() -> BackupStatement {
        BackupStatement {
            deployment: "cf".into(),
            backup_id: "20240102T030405Z".into(),
            manifest: SignedObject {
                key: "cf/20240102T030405Z/manifest.json".into(),
                version: None,
                sha256: "aa".into(),
            },
            objects: vec![SignedObject {
                key: "cf/20240102T030405Z/app-0-files.tar.zst".into(),
                version: Some("v1".into()),
                sha256: "bb".into(),
            }],
            recipients: vec!["age1xyz".into()],
            previous: Some(ChainLink {
                backup_id: "20240101T030405Z".into(),
                statement_sha256: "cc".into(),
            }),
            signed_at: "2024-01-02T03:05:00Z".into(),
        }
    }

    #[test]
    fn canonical_bytes_are_fixed() {
        let bytes = Statement::StoreBackup(statement()).canonical_bytes();
        assert_eq!(
            String::from_utf8(bytes).unwrap(),
            "cairn signed statement v1\n{\"type\":\"cairn.store-backup/1\",\"deployment\":\"cf\",\
             \"backup_id\":\"20240102T030405Z\",\"manifest\":{\"key\":\"cf/20240102T030405Z/manifest.json\",\
             \"version\":null,\"sha256\":\"aa\"},\"objects\":[{\"key\":\"cf/20240102T030405Z/app-0-files.tar.zst\",\
             \"version\":\"v1\",\"sha256\":\"bb\"}],\"recipients\":[\"age1xyz\"],\
             \"previous\":{\"backup_id\":\"20240101T030405Z\",\"statement_sha256\":\"cc\"},\
             \"signed_at\":\"2024-01-02T03:05:00Z\"}"
        );
    }

    #[test]
    fn a_signed_statement_opens_with_its_key_only() {
        let key = SigningKey::generate();
        let stored = Statement::StoreBackup(statement()).sign(&key).to_json();
        let opened = Envelope::open(stored.as_bytes(), &TrustedKeys::of(&[key.public()])).unwrap();
        assert_eq!(opened.statement, Statement::StoreBackup(statement()));
        assert_eq!(opened.digest, opened.statement.digest());
        assert_eq!(opened.key, key.public());
        let stranger = SigningKey::generate();
        assert!(matches!(
            Envelope::open(stored.as_bytes(), &TrustedKeys::of(&[stranger.public()])),
            Err(Rejection::UntrustedKey(_))
        ));
        // The same values written differently (whitespace, escapes) still open.
        let value: serde_json::Value = serde_json::from_str(&stored).unwrap();
        let compact = serde_json::to_vec(&value).unwrap();
        assert!(Envelope::open(&compact, &TrustedKeys::of(&[key.public()])).is_ok());
    }

    type Tamper = fn(&mut BackupStatement);

    /// Every field a backup statement covers, changed after signing, breaks the signature.
    #[test]
    fn tampering_with_any_covered_field_is_detected() {
        let key = SigningKey::generate();
        let trusted = TrustedKeys::of(&[key.public()]);
        let tampers: Vec<(&str, Tamper)> = vec![
            ("deployment", |s| s.deployment = "other".into()),
            ("backup id", |s| s.backup_id = "20991231T235959Z".into()),
            ("manifest digest", |s| s.manifest.sha256 = "ab".into()),
            ("manifest key", |s| {
                s.manifest.key = "cf/x/manifest.json".into();
            }),
            ("object key", |s| s.objects[0].key = "cf/other/x".into()),
            ("object version", |s| {
                s.objects[0].version = Some("v2".into());
            }),
            ("object digest", |s| s.objects[0].sha256 = "bc".into()),
            ("object added", |s| s.objects.push(s.objects[0].clone())),
            ("recipients", |s| s.recipients.clear()),
            ("previous", |s| s.previous = None),
            ("previous digest", |s| {
                s.previous.as_mut().unwrap().statement_sha256 = "cd".into();
            }),
            ("signed at", |s| s.signed_at = "2030-01-01T00:00:00Z".into()),
        ];
        for (field, tamper) in tampers {
            let envelope = Statement::StoreBackup(statement()).sign(&key);
            let Statement::StoreBackup(mut changed) = envelope.signed.clone() else {
                unreachable!()
            };
            tamper(&mut changed);
            let forged = Envelope {
                signed: Statement::StoreBackup(changed),
                ..envelope
            };
            assert_eq!(
                Envelope::open(forged.to_json().as_bytes(), &trusted),
                Err(Rejection::BadSignature),
                "{field}"
            );
        }
    }

    #[test]
    fn unknown_fields_and_other_kinds_are_refused() {
        let key = SigningKey::generate();
        let trusted = TrustedKeys::of(&[key.public()]);
        let stored = Statement::StoreBackup(statement()).sign(&key).to_json();
        let mut value: serde_json::Value = serde_json::from_str(&stored).unwrap();
        value["signed"]["unsigned_extra"] = serde_json::json!("x");
        let text = serde_json::to_vec(&value).unwrap();
        assert!(matches!(
            Envelope::open(&text, &trusted),
            Err(Rejection::Malformed(_))
        ));
        // A deletion record's signature does not make a backup statement.
        let record = Statement::Deletion(DeletionRecord {
            deployment: "cf".into(),
            command: "prune".into(),
            deleted_at: "2024-01-02T03:05:00Z".into(),
            deleted: vec![],
        })
        .sign(&key);
        let mut value: serde_json::Value = serde_json::to_value(&record).unwrap();
        value["signed"]["type"] = serde_json::json!("cairn.store-backup/1");
        let text = serde_json::to_vec(&value).unwrap();
        assert!(Envelope::open(&text, &trusted).is_err());
        assert!(matches!(
            Envelope::open(b"not json", &trusted),
            Err(Rejection::Malformed(_))
        ));
    }
}
