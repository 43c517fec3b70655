//! `backups verify`: re-read a backup and check every sha256 (and, with `--identity`, every
//! file inside encrypted artifacts).

use std::path::PathBuf;
use std::sync::Arc;

use cairn::catalog::{verify_backup, Verified};
use cairn::format::encryption::Identities;
use cairn::format::store::read::describe_encryption;
use cairn_store::ArtifactStore;

use crate::cli::args::UsageError;
use crate::cli::exit::report_errors;
use crate::cli::output::say;
use crate::cli::store::split_backup_id;

/// Verifies `DEPLOYMENT/ID`; returns the exit code.
pub(super) async fn run(
    store: &Arc<dyn ArtifactStore>,
    id: &str,
    identity: &[PathBuf],
    parallelism: usize,
) -> anyhow::Result<i32> {
    let (deployment, id) = split_backup_id(id, None)?;
    let identities = Identities::load(identity).map_err(UsageError)?;
    let parallelism = parallelism.max(1);
    match verify_backup(store, &deployment, &id, parallelism, &identities, false).await {
        Ok(verified) => {
            say(&verified_line(&deployment, &id, &verified));
            Ok(0)
        }
        Err(errors) => Ok(report_errors(&errors, false)),
    }
}

/// What `backups verify` says of a backup that passed.
fn verified_line(deployment: &str, id: &str, verified: &Verified) -> String {
    let manifest = &verified.manifest;
    let mut line = format!(
        "Backup {deployment}/{id} is intact: {} artifacts, {} bytes verified",
        manifest.artifacts.len(),
        manifest.stored_bytes()
    );
    match manifest.encryption() {
        Some(_) if verified.contents_unchecked > 0 => line.push_str(&format!(
            "; {} encrypted artifacts: only their stored bytes (size, sha256) were checked, not the files inside; give --identity FILE to decrypt and check every file",
            verified.contents_unchecked
        )),
        Some(encryption) => line.push_str(&format!(
            " (encrypted, {}: decrypted, every file checked)",
            describe_encryption(encryption)
        )),
        None => {}
    }
    line
}
