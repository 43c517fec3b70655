//! `backups show`: a backup's manifest, as text or as the JSON itself.

use cairn::format::manifest::Manifest;
use cairn::format::store::read::describe_encryption;
use cairn::format::store::read_manifest;
use cairn_store::ArtifactStore;

use crate::cli::output::say;
use crate::cli::store::split_backup_id;

/// Prints the manifest of `DEPLOYMENT/ID`; returns the exit code.
pub(super) async fn run(store: &dyn ArtifactStore, id: &str, json: bool) -> anyhow::Result<i32> {
    let (deployment, id) = split_backup_id(id, None)?;
    let manifest = read_manifest(store, &deployment, &id).await?;
    if json {
        say(&manifest.to_json());
    } else {
        print_text(&deployment, &id, &manifest);
    }
    Ok(0)
}

/// The summary, then one line per artifact and per job.
fn print_text(deployment: &str, id: &str, manifest: &Manifest) {
    let encryption = manifest
        .encryption()
        .map(|e| format!(", encrypted: {}", describe_encryption(e)))
        .unwrap_or_default();
    say(&format!(
        "backup {deployment}/{id} ({} artifacts, {} bytes, {:?}{encryption})",
        manifest.artifacts.len(),
        manifest.stored_bytes(),
        manifest.compression
    ));
    say(&format!(
        "started {}  finished {}  by cairn {}",
        manifest.started_at, manifest.finished_at, manifest.cairn_version
    ));
    for artifact in &manifest.artifacts {
        let version = artifact.version.as_deref().unwrap_or("-");
        let encrypted = artifact
            .encryption
            .as_ref()
            .map(|e| format!("\tencrypted {}", describe_encryption(e)))
            .unwrap_or_default();
        say(&format!(
            "  {}\t{} bytes\t{} files\tversion {version}\tsha256 {}{encrypted}",
            artifact.key,
            artifact.size,
            artifact.files.len(),
            artifact.sha256
        ));
    }
    for job in &manifest.jobs {
        say(&format!(
            "  {}/{}\tlocked {:?}\tunlocked {:?}",
            job.instance, job.job, job.locked_at, job.unlocked_at
        ));
    }
}
