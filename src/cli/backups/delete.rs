//! `backups delete`: every object and recorded version of one backup — and nothing outside
//! its own `<deployment>/<id>/`, whatever its manifest lists ([`cairn::catalog::placement`]).

use cairn::catalog::{delete_backup, IfMisplaced};
use cairn::RunErrors;
use cairn_store::ArtifactStore;

use crate::cli::exit::report_errors;
use crate::cli::output::say;
use crate::cli::store::split_backup_id;

/// Deletes `DEPLOYMENT/ID`; returns the exit code.
pub(super) async fn run(store: &dyn ArtifactStore, id: &str) -> anyhow::Result<i32> {
    let (deployment, id) = split_backup_id(id, None)?;
    match delete_backup(store, &deployment, &id, IfMisplaced::DeleteOwnObjects).await {
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
