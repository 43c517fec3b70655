//! `pre-backup-check`: the library's check, the store's (`--store`), the plan (`--plan`,
//! `--dot`) and bbr's verdict line.

use cairn::model::deployment::Target;
use cairn::report::events::Event;
use cairn::workflow::backup::pre_backup_check;
use cairn::workflow::RunContext;
use cairn::RunErrors;

use crate::cli::args::CheckArgs;
use crate::cli::output::Human;
use crate::cli::store::check_store;

use super::Mode;

/// The store of `--store` (not a repository), whose journals may hold a pending resumable
/// backup of another jumpbox; `None` when it does not open ([`check_store`] reports why).
pub(super) async fn journal_store(
    check: &CheckArgs,
) -> Option<std::sync::Arc<dyn cairn_store::ArtifactStore>> {
    let url = check
        .store
        .url(true)
        .filter(|url| !url.starts_with("repo+"))?;
    cairn::format::store::open_store(&url).await.ok()
}

/// Checks `target` (and the store); prints the plan and the verdict; returns the errors.
pub(super) async fn run(
    target: &dyn Target,
    check: &CheckArgs,
    json: bool,
    mode: &Mode,
    context: &RunContext,
    human: &Human,
) -> RunErrors {
    let (mut errors, plan) = pre_backup_check(target, context).await;
    if let Some(url) = check.store.url(true) {
        if let Err(error) =
            check_store(&check.store, &url, target.name(), check.allow_unversioned).await
        {
            errors.push(error);
        }
    }
    match (check.plan, plan) {
        (true, Some(plan)) if json => context.emit(Event::Plan {
            plan: Box::new(plan),
        }),
        (true, Some(plan)) if check.dot => print!("{}", plan.to_dot()),
        (true, Some(plan)) => print!("{}", plan.to_text()),
        _ => {}
    }
    print_check_result(target.name(), mode, &errors, human);
    errors
}

/// bbr's verdict: `[15:04:05] Deployment 'NAME' can be backed up.` (UTC), or `cannot be
/// backed up.` followed by the error report indented two spaces
/// (`cli/command/deployment_pre_backup_check.go`); in director mode `Director can be backed
/// up.` or `Director cannot be backed up.`, with no time and no report on stdout
/// (`director_pre_backup_check.go`).
fn print_check_result(name: &str, mode: &Mode, errors: &RunErrors, human: &Human) {
    let verdict = if errors.is_empty() { "can" } else { "cannot" };
    match mode {
        Mode::Director => human.say(&format!("Director {verdict} be backed up.")),
        Mode::Deployment => {
            let time = chrono::Utc::now().format("%H:%M:%S");
            human.say(&format!(
                "[{time}] Deployment '{name}' {verdict} be backed up."
            ));
            if !errors.is_empty() {
                for line in errors.to_string().lines() {
                    human.say(&format!("  {line}"));
                }
            }
        }
    }
}
