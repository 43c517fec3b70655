//! `backups delete`: every object and recorded version of one backup.

use cairn::catalog::delete_backup;
use cairn::RunErrors;
use cairn_store::ArtifactStore;

use crate::cli::exit::report_errors;
use crate::cli::output::say;
use crate::cli::store::split_backup_id;

/// Deletes `DEPLOYMENT/ID`; returns the exit code.
pub(super) async fn run(store: &dyn ArtifactStore, id: &str) -> anyhow::Result<i32> {
    let (deployment, id) = split_backup_id(id, None)?;
    match delete_backup(store, &deployment, &id).await {
        Ok(count) => {
            say(&format!(
                "Deleted backup {deployment}/{id} ({count} objects)"
            ));
            Ok(0)
        }
        Err(error) => Ok(report_errors(&RunErrors::from(error), false)),
    }
}
