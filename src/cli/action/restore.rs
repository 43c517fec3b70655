//! `restore`: from a bbr directory or a store, with `--verify`'s lines.

use cairn::model::deployment::Target;
use cairn::workflow::restore::restore;
use cairn::workflow::RunContext;
use cairn::RunErrors;

use crate::cli::args::RestoreArgs;
use crate::cli::output::Human;
use crate::cli::store::restore_source;

/// Restores into `target`; returns the errors.
pub(super) async fn run(
    target: &dyn Target,
    args: &RestoreArgs,
    context: &RunContext,
    human: &Human,
) -> anyhow::Result<RunErrors> {
    let source = restore_source(args, target.name()).await?;
    let report = restore(target, source.as_ref(), context).await;
    for check in &report.verifications {
        human.say(&cairn::workflow::drill::verification_line(check));
    }
    Ok(report.errors)
}
