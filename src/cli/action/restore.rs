//! `restore`: from a bbr directory or a store, with `--verify`'s lines; `--plan` (`--dot`)
//! prints the plan and changes nothing.

use cairn::model::deployment::Target;
use cairn::report::events::Event;
use cairn::workflow::restore::{plan_only, restore};
use cairn::workflow::RunContext;
use cairn::RunErrors;

use crate::cli::args::RestoreArgs;
use crate::cli::output::Human;
use crate::cli::store::restore_source;

/// Restores into `target`; returns the errors.
pub(super) async fn run(
    target: &dyn Target,
    args: &RestoreArgs,
    json: bool,
    context: &RunContext,
    human: &Human,
) -> anyhow::Result<RunErrors> {
    let source = restore_source(args, target.name()).await?;
    if args.plan {
        let (view, errors) = plan_only(target, source.as_ref(), context).await;
        match view {
            Some(view) if json => context.emit(Event::RestorePlan {
                plan: Box::new(view),
            }),
            Some(view) if args.dot => print!("{}", view.to_dot()),
            Some(view) => print!("{}", view.to_text()),
            None => {}
        }
        return Ok(errors);
    }
    let report = restore(target, source.as_ref(), context).await;
    for check in &report.verifications {
        human.say(&cairn::workflow::drill::verification_line(check));
    }
    Ok(report.errors)
}
