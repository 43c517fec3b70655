//! `cairn backups list|show|verify|delete`: the catalog of backups in an object store.

use cairn::store::{delete_backup, list_backups, read_manifest, verify_backup};
use cairn::RunErrors;

use super::args::{BackupsAction, BackupsArgs, UsageError};
use super::run::{report_errors, split_backup_id};

/// Prints a line; a closed stdout (`| head`) is not an error.
fn say(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stdout().lock(), "{line}");
}

/// Runs a `backups` subcommand; returns the exit code.
pub async fn run(args: BackupsArgs) -> anyhow::Result<i32> {
    let url = args
        .store
        .url(true)
        .ok_or_else(|| UsageError("--store flag is required (or set CAIRN_STORE).".into()))?;
    let store = cairn::store::open_store(&url).await?;
    match args.action {
        BackupsAction::List { deployment, json } => {
            let backups = list_backups(store.as_ref(), deployment.as_deref()).await?;
            for backup in backups {
                let time = backup.time.map(|t| t.to_rfc3339()).unwrap_or_default();
                let state = if backup.complete {
                    "complete"
                } else {
                    "incomplete"
                };
                if json {
                    let line = serde_json::json!({
                        "deployment": backup.deployment, "id": backup.id, "time": time,
                        "size": backup.size, "complete": backup.complete,
                    });
                    say(&line.to_string());
                } else {
                    say(&format!(
                        "{}/{}\t{time}\t{}\t{state}",
                        backup.deployment, backup.id, backup.size
                    ));
                }
            }
            Ok(0)
        }
        BackupsAction::Show { id, json } => {
            let (deployment, id) = split_backup_id(&id, None)?;
            let manifest = read_manifest(store.as_ref(), &deployment, &id).await?;
            if json {
                say(&manifest.to_json());
            } else {
                say(&format!(
                    "backup {deployment}/{id} ({} artifacts, {} bytes, {:?})",
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
                    say(&format!(
                        "  {}\t{} bytes\t{} files\tversion {version}\tsha256 {}",
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
            Ok(0)
        }
        BackupsAction::Verify { id } => {
            let (deployment, id) = split_backup_id(&id, None)?;
            match verify_backup(&store, &deployment, &id, args.parallelism.max(1)).await {
                Ok(manifest) => {
                    say(&format!(
                        "Backup {deployment}/{id} is intact: {} artifacts, {} bytes verified",
                        manifest.artifacts.len(),
                        manifest.stored_bytes()
                    ));
                    Ok(0)
                }
                Err(errors) => Ok(report_errors(&errors, false)),
            }
        }
        BackupsAction::Delete { id } => {
            let (deployment, id) = split_backup_id(&id, None)?;
            match delete_backup(store.as_ref(), &deployment, &id).await {
                Ok(count) => {
                    say(&format!(
                        "Deleted backup {deployment}/{id} ({count} objects)"
                    ));
                    Ok(0)
                }
                Err(error) => Ok(report_errors(&RunErrors::from(error), false)),
            }
        }
    }
}
