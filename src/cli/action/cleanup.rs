//! `backup-cleanup` and `restore-cleanup`: unlock and remove what an interrupted run left.

use cairn::model::deployment::Target;
use cairn::workflow::cleanup::{cleanup, CleanupKind};
use cairn::workflow::RunContext;
use cairn::RunErrors;

use crate::cli::output::Human;

/// `backup-cleanup`; returns the errors.
pub(super) async fn backup(
    target: &dyn Target,
    context: &mut RunContext,
    human: &Human,
) -> anyhow::Result<RunErrors> {
    // Journals kept in the store (CAIRN_STORE) are reported and cleared too.
    if let Some(url) = std::env::var("CAIRN_STORE").ok().filter(|u| !u.is_empty()) {
        context.journal_store = Some(cairn::format::store::open_store(&url).await?);
    }
    let errors = cleanup(target, CleanupKind::Backup, context).await;
    if errors.is_empty() {
        human.say(&format!("'{}' cleaned up", target.name()));
    }
    Ok(errors)
}

/// `restore-cleanup`; returns the errors.
pub(super) async fn restore(target: &dyn Target, context: &RunContext, human: &Human) -> RunErrors {
    let errors = cleanup(target, CleanupKind::Restore, context).await;
    if errors.is_empty() {
        human.say(&format!("'{}' cleaned up", target.name()));
    }
    errors
}
