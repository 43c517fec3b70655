//! `backups show`: a backup's manifest, as text or as the JSON itself; with `--manifest`, the
//! deployment manifest saved with it (decrypted with `--identity` when encrypted). A manifest
//! that does not belong where it is stored ([`cairn::catalog::placement`]) is shown — it is
//! the evidence — but marked `misplaced`; `--manifest` refuses it.

use anyhow::bail;
use cairn::catalog::placement::check_placement;
use cairn::format::encryption::Identities;
use cairn::format::manifest::{Compression, Manifest};
use cairn::format::store::read::{describe_encryption, read_deployment_manifest};
use cairn::format::store::{read_manifest, read_placed_manifest};
use cairn_store::ArtifactStore;
use chrono::{DateTime, Utc};

use crate::cli::output::say;
use crate::cli::store::split_backup_id;

/// Prints the manifest of `DEPLOYMENT/ID`; returns the exit code.
pub(super) async fn run(store: &dyn ArtifactStore, id: &str, json: bool) -> anyhow::Result<i32> {
    let (deployment, id) = split_backup_id(id, None)?;
    super::warn_left_behind(store, &deployment).await;
    let manifest = read_manifest(store, &deployment, &id).await?;
    let misplaced = check_placement(&manifest, &deployment, &id)
        .err()
        .map(|detail| {
            format!(
                "misplaced: {detail}; restore, verify and prune refuse it (docs/stores.md, \"Bound to its place\")"
            )
        });
    if json {
        if let Some(misplaced) = &misplaced {
            eprintln!("warning: backup {deployment}/{id} is {misplaced}");
        }
        say(&manifest.to_json());
    } else {
        print_text(&deployment, &id, &manifest, misplaced.as_deref());
    }
    Ok(0)
}

/// Prints the deployment manifest saved with `DEPLOYMENT/ID` (`backup --with-manifest`)
/// exactly as it was saved; returns the exit code.
pub(super) async fn deployment_manifest(
    store: &dyn ArtifactStore,
    id: &str,
    identities: &Identities,
) -> anyhow::Result<i32> {
    let (deployment, id) = split_backup_id(id, None)?;
    let manifest = read_placed_manifest(store, &deployment, &id).await?;
    match read_deployment_manifest(store, &manifest, identities).await? {
        Some(text) => print!("{text}"),
        None => bail!(
            "Backup `{deployment}/{id}` in {store} has no deployment manifest: it was taken \
             without --with-manifest (or of an inventory, which has none)"
        ),
    }
    Ok(0)
}

/// The summary (and whether it is misplaced), then one line per artifact and per job.
fn print_text(deployment: &str, id: &str, manifest: &Manifest, misplaced: Option<&str>) {
    let encryption = manifest
        .encryption()
        .map(|e| format!(", encrypted: {}", describe_encryption(e)))
        .unwrap_or_default();
    say(&format!(
        "backup {deployment}/{id} ({} artifacts, {} bytes, {}{encryption})",
        manifest.artifacts.len(),
        manifest.stored_bytes(),
        compression_text(manifest.compression)
    ));
    if let Some(misplaced) = misplaced {
        say(misplaced);
    }
    say(&format!(
        "started {}  finished {}  by cairn {}",
        time_text(Some(manifest.started_at)),
        time_text(Some(manifest.finished_at)),
        manifest.cairn_version
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
    if let Some(object) = &manifest.deployment_manifest {
        let version = object.version.as_deref().unwrap_or("-");
        say(&format!(
            "  {}\t{} bytes\tdeployment manifest (--manifest prints it)\tversion {version}\tsha256 {}",
            object.key, object.size, object.sha256
        ));
    }
    for job in &manifest.jobs {
        say(&format!(
            "  {}/{}\tlocked {}\tunlocked {}",
            job.instance,
            job.job,
            time_text(job.locked_at),
            time_text(job.unlocked_at)
        ));
    }
}

/// `zstd level 3`, or `no compression`.
fn compression_text(compression: Compression) -> String {
    match compression {
        Compression::None => "no compression".into(),
        Compression::Zstd { level } => format!("zstd level {level}"),
    }
}

/// `2026-12-06 21:11:11 UTC`, or `-` for a time that was not recorded (a job with no lock
/// script is never locked).
fn time_text(time: Option<DateTime<Utc>>) -> String {
    time.map_or_else(
        || "-".into(),
        |time| time.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
    )
}
