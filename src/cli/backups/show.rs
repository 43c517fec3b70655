//! `backups show`: a backup's manifest, as text or as the JSON itself; with `--manifest`, the
//! deployment manifest saved with it (decrypted with `--identity` when encrypted). A manifest
//! that does not belong where it is stored ([`cairn::catalog::placement`]) is shown — it is
//! the evidence — but marked `misplaced`; `--manifest` refuses it. The text says whether the
//! backup is signed (with `--trusted-key`, whether the signature checks out); with `--json`
//! that goes to stderr, as stdout is the manifest itself.

use anyhow::bail;
use cairn::catalog::placement::check_placement;
use cairn::format::encryption::Identities;
use cairn::format::manifest::{Compression, Manifest};
use cairn::format::signature::TrustedKeys;
use cairn::format::store::read::{describe_encryption, read_deployment_manifest};
use cairn::format::store::signed::signed_backup_ids;
use cairn::format::store::{read_manifest, read_placed_manifest};
use cairn::report::history::signature_state;
use cairn::report::html::signature_text;
use cairn_store::ArtifactStore;
use chrono::{DateTime, Utc};

use crate::cli::output::say;
use crate::cli::store::split_backup_id;

/// Prints the manifest of `DEPLOYMENT/ID`; returns the exit code.
pub(super) async fn run(
    store: &dyn ArtifactStore,
    id: &str,
    json: bool,
    trusted: &TrustedKeys,
) -> anyhow::Result<i32> {
    let (deployment, id) = split_backup_id(id, None)?;
    super::warn_left_behind(store, &deployment).await;
    let manifest = read_manifest(store, &deployment, &id).await?;
    let signed = signed_backup_ids(store, &deployment).await?.contains(&id);
    let signature =
        signature_text(&signature_state(store, &deployment, &id, signed, trusted).await);
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
        eprintln!("backup {deployment}/{id} is {signature}");
        say(&manifest.to_json());
    } else {
        print_text(
            &deployment,
            &id,
            &manifest,
            misplaced.as_deref(),
            &signature,
        );
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

/// The summary (and whether it is misplaced), its times, its signature, then one line per
/// artifact and per job.
fn print_text(
    deployment: &str,
    id: &str,
    manifest: &Manifest,
    misplaced: Option<&str>,
    signature: &str,
) {
    let encryption = manifest
        .encryption()
        .map(|e| format!(", encrypted: {}", describe_encryption(e)))
        .unwrap_or_default();
    let segments: usize = manifest.artifacts.iter().map(|a| a.segments.len()).sum();
    let segments = if segments > 0 {
        format!(" in {segments} segments")
    } else {
        String::new()
    };
    say(&format!(
        "backup {deployment}/{id} ({} artifacts{segments}, {} bytes, {}{encryption})",
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
    say(&format!("signature: {signature}"));
    for artifact in &manifest.artifacts {
        let version = artifact.version.as_deref().unwrap_or("-");
        let encrypted = artifact
            .encryption
            .as_ref()
            .map(|e| format!("\tencrypted {}", describe_encryption(e)))
            .unwrap_or_default();
        let segments = match artifact.segments.len() {
            0 => String::new(),
            count => format!("\t{count} segments"),
        };
        say(&format!(
            "  {}\t{} bytes\t{} files{segments}\tversion {version}\tsha256 {}{encrypted}",
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
