//! `backup-cleanup` and `restore-cleanup`: unlock and remove what an interrupted run left (the
//! workflow logs bbr's `'<deployment>' cleaned up`).

use cairn::model::deployment::Target;
use cairn::workflow::cleanup::{cleanup, CleanupKind};
use cairn::workflow::RunContext;
use cairn::RunErrors;

/// `backup-cleanup`; returns the errors.
pub(super) async fn backup(
    target: &dyn Target,
    context: &mut RunContext,
) -> anyhow::Result<RunErrors> {
    // Journals kept in the store (CAIRN_STORE) are reported and cleared too. A repository
    // keeps none (a repository backup's journal is this machine's only; its snapshots are
    // deleted with CAIRN_REPOSITORY_PASSWORD_FILE, `workflow::recovery`).
    if let Some(url) = std::env::var("CAIRN_STORE")
        .ok()
        .filter(|u| !u.is_empty() && !u.starts_with("repo+"))
    {
        context.journal_store = Some(cairn::format::store::open_store(&url).await?);
    }
    Ok(cleanup(target, CleanupKind::Backup, context).await)
}

/// `restore-cleanup`; returns the errors.
pub(super) async fn restore(target: &dyn Target, context: &RunContext) -> RunErrors {
    cleanup(target, CleanupKind::Restore, context).await
}
