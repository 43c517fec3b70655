//! `backups delete`: every object and recorded version of one backup — and nothing outside
//! its own `<deployment>/<id>/`, whatever its manifest lists ([`cairn::catalog::placement`]).
//! Without `--trusted-key`, a misplaced backup's own objects are deleted, with a warning; with
//! `--trusted-key`, a backup whose manifest is not signed by one of the keys (or misplaced) is
//! refused (its version list is not acted on); with `--signing-key`, a signed record of the
//! deletion is written first, so the gap it leaves in the chain reads "pruned, recorded".

use cairn::catalog::{delete_backup_trusted, IfMisplaced};
use cairn::format::signature::{SigningKey, TrustedKeys};
use cairn::RunErrors;
use cairn_store::ArtifactStore;

use crate::cli::exit::report_errors;
use crate::cli::output::say;
use crate::cli::store::split_backup_id;

/// `--trusted-key` and `--signing-key`.
pub(super) struct Keys {
    pub(super) trusted: TrustedKeys,
    pub(super) signing: Option<SigningKey>,
}

/// Deletes `DEPLOYMENT/ID`; returns the exit code.
pub(super) async fn run(store: &dyn ArtifactStore, id: &str, keys: &Keys) -> anyhow::Result<i32> {
    let (deployment, id) = split_backup_id(id, None)?;
    if let Some(line) =
        crate::cli::trust::unchecked_warning(store, &keys.trusted, Some(&deployment)).await
    {
        eprintln!("warning: {line}");
    }
    if !keys.trusted.is_empty() {
        // Refused before the record is written: nothing is deleted.
        if let Err(error) = cairn::format::store::signed::read_manifest_trusted(
            store,
            &deployment,
            &id,
            &keys.trusted,
        )
        .await
        {
            if !matches!(
                error,
                cairn::Error::StoredBackup(cairn::error::StoredBackupError::NotFound { .. })
            ) {
                return Ok(report_errors(&RunErrors::from(error), false));
            }
        }
    }
    if let Some(key) = &keys.signing {
        let ids = [id.clone()];
        match cairn::catalog::trust::record_deletions(
            store,
            &deployment,
            &ids,
            "delete",
            key,
            &keys.trusted,
        )
        .await
        {
            Ok(record) => eprintln!("Recorded the deletion in {record}"),
            Err(error) => return Ok(report_errors(&RunErrors::from(error), false)),
        }
    }
    let deleted = delete_backup_trusted(
        store,
        &deployment,
        &id,
        &keys.trusted,
        IfMisplaced::DeleteOwnObjects,
    )
    .await;
    match deleted {
        Ok(deletion) => {
            if let Some(detail) = &deletion.misplaced {
                eprintln!("warning: backup {deployment}/{id} was misplaced: {detail}");
            }
            for key in &deletion.left_outside {
                eprintln!(
                    "warning: not deleted: `{key}`, which its manifest lists outside {deployment}/{id}/ (it belongs to another backup, or to none)"
                );
            }
            say(&format!(
                "Deleted backup {deployment}/{id} ({} objects)",
                deletion.objects
            ));
            Ok(0)
        }
        Err(error) => Ok(report_errors(&RunErrors::from(error), false)),
    }
}
