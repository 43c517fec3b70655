//! Signed backups: Ed25519 signatures that bind a backup to the key that wrote it, to the
//! place it was written to and to the signed backup before it.
//!
//! Why: a manifest's sha256 list catches damage, not an adversary. Anyone who may write to
//! the store can write a manifest and artifacts of their own, copy an old genuine manifest
//! under a newer id (so `restore --latest` restores stale data with every check passing), or
//! delete the newest backups. A signature made with a key the store never sees
//! (`backup --signing-key`) and checked against keys the reader was given
//! (`--trusted-key`) makes the first two impossible; the hash chain of statements and the
//! newest backup this machine has seen ([`seen`]) make deletion and rollback visible.
//!
//! - [`keys`]: the key files (`cairn keys generate`), public keys as one line of text.
//! - [`statement`]: what is signed (a backup in a store, a bbr directory, a deletion record),
//!   its canonical bytes and the envelope stored next to the backup.
//! - [`seen`]: the local state `restore --latest` checks for rollback.
//!
//! Reading and writing signatures in a store is [`crate::format::store::signed`]; the chain
//! walk of `backups verify` and the rollback check are [`crate::catalog::trust`].

pub mod keys;
pub mod seen;
pub mod statement;

use std::path::PathBuf;

pub use keys::{PublicKey, SigningKey, TrustedKeys};
pub use seen::{SeenBackup, SeenBackups};
pub use statement::{
    BackupStatement, ChainLink, DeletedBackup, DeletionRecord, DirectoryStatement, Envelope,
    Opened, Rejection, SignedObject, Statement,
};

/// Why a signature, a key or the trust state was refused. `backup` names the backup and
/// where it is (`cf/20240102T030405Z in s3://bucket/prefix`, or a directory).
#[derive(Debug, thiserror::Error)]
pub enum SignatureError {
    /// `--signing-key` cannot be used.
    #[error("Signing key `{path}`: {detail}")]
    SigningKey {
        /// The file.
        path: PathBuf,
        /// What is wrong and what to do.
        detail: String,
    },
    /// A `--trusted-key` value cannot be used.
    #[error("Trusted key `{value}`: {detail}")]
    TrustedKey {
        /// The flag's value.
        value: String,
        /// What is wrong and what to do.
        detail: String,
    },
    /// The local record of seen backups cannot be read or written.
    #[error("Trust state file `{path}`: {detail}")]
    SeenState {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// No signature next to the backup.
    #[error("Backup {backup} is not signed (no {object}); with --trusted-key only backups signed by a trusted key are used: sign backups with `backup --signing-key FILE`, or leave out --trusted-key for this one")]
    Unsigned {
        /// The backup and where it is.
        backup: String,
        /// The signature object's name.
        object: &'static str,
    },
    /// The signature object is not a Cairn signature of this kind of backup.
    #[error("Backup {backup}: {object} is not a valid Cairn signature ({detail}); the backup is refused")]
    Malformed {
        /// The backup and where it is.
        backup: String,
        /// The signature object's name.
        object: &'static str,
        /// What is wrong.
        detail: String,
    },
    /// Signed by a key that was not given with `--trusted-key`.
    #[error("Backup {backup} is signed by key {key}, which is not one of the --trusted-key keys; the backup is refused (add that key with --trusted-key if you trust it)")]
    UntrustedKey {
        /// The backup and where it is.
        backup: String,
        /// The key that signed it.
        key: String,
    },
    /// The signature does not match the statement.
    #[error("Backup {backup}: the signature in {object} does not match what it signs (changed after signing, or forged); the backup is refused")]
    BadSignature {
        /// The backup and where it is.
        backup: String,
        /// The signature object's name.
        object: &'static str,
    },
    /// Genuinely signed, but for another place: copied or moved.
    #[error("Backup {backup} was signed as {signed_as}: it was copied or moved from where it was written, so it is refused")]
    Misplaced {
        /// The backup and where it is.
        backup: String,
        /// `<deployment>/<id>` it was signed as.
        signed_as: String,
    },
    /// The signed object list names a key outside the backup's own prefix.
    #[error("Backup {backup}: its signed statement names object `{key}`, outside the backup's own prefix; the backup is refused")]
    KeyOutsideBackup {
        /// The backup and where it is.
        backup: String,
        /// The key.
        key: String,
    },
    /// The manifest (or `metadata`) is not the one that was signed.
    #[error("Backup {backup}: {object} is not the one that was signed ({detail}); the backup is refused")]
    ContentChanged {
        /// The backup and where it is.
        backup: String,
        /// `manifest.json` or `metadata`.
        object: &'static str,
        /// What differs.
        detail: String,
    },
    /// The store's newest signed backup is older than one this machine has already seen.
    #[error(transparent)]
    Rollback(Box<Rollback>),
}

/// What a rollback refusal names (boxed: errors stay small).
#[derive(Debug, thiserror::Error)]
#[error("Rollback refused: the newest backup of {deployment} in {store} is {found}, but this machine already saw {seen} (first seen {seen_at}; state {path}), which is gone with no signed record of its deletion. Find out what happened (`cairn backups --store URL verify {deployment}/{found} --trusted-key KEY` walks the chain), or restore a backup you choose with --backup ID")]
pub struct Rollback {
    /// Deployment name.
    pub deployment: String,
    /// The store.
    pub store: String,
    /// The newest backup in the store.
    pub found: String,
    /// The newest backup seen here.
    pub seen: String,
    /// When it was seen.
    pub seen_at: String,
    /// The state file.
    pub path: PathBuf,
}

impl SignatureError {
    /// The error for an envelope that `Envelope::open` rejected.
    #[must_use]
    pub fn rejected(backup: String, object: &'static str, rejection: Rejection) -> SignatureError {
        match rejection {
            Rejection::Malformed(detail) => SignatureError::Malformed {
                backup,
                object,
                detail,
            },
            Rejection::UntrustedKey(key) => SignatureError::UntrustedKey { backup, key },
            Rejection::BadSignature => SignatureError::BadSignature { backup, object },
        }
    }
}
