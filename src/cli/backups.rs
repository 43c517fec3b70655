//! `cairn backups list|show|verify|delete|prune|report`: the catalog of backups in an object store.
//! Each subcommand is in a module below; this one opens the store and picks it.

mod delete;
mod list;
mod prune;
mod report;
mod repository;
mod show;
mod verify;

use cairn::catalog::retention::RetentionPolicy;
use cairn::format::encryption::Identities;

use super::args::{BackupsAction, BackupsArgs, UsageError};

/// Runs a `backups` subcommand; returns the exit code.
pub(crate) async fn run(args: BackupsArgs) -> anyhow::Result<i32> {
    if let BackupsAction::Verify {
        artifact_path: Some(path),
        identity,
        sample,
        state_file,
        trust,
        ..
    } = &args.action
    {
        let sampling = verify::Sampling::new(*sample, state_file.clone());
        let trusted = trust.load()?;
        return verify::run_directory(path, identity, args.parallelism, sampling, &trusted).await;
    }
    let url = args
        .store
        .url(true)
        .ok_or_else(|| UsageError("--store flag is required (or set CAIRN_STORE).".into()))?;
    if url.starts_with("repo+") {
        return repository::run(args.action, &url, &args.store, args.json).await;
    }
    let store = cairn::format::store::open_store(&url).await?;
    let json = args.json;
    match args.action {
        BackupsAction::List {
            deployment,
            max_age,
            trust,
        } => {
            let code =
                list::run(store.as_ref(), deployment.as_deref(), json, &trust.load()?).await?;
            match (max_age, deployment) {
                (Some(max_age), Some(deployment)) => {
                    Ok(code | list::overdue_check(store.as_ref(), &deployment, max_age).await?)
                }
                _ => Ok(code),
            }
        }
        BackupsAction::Show {
            id,
            manifest: false,
            trust,
            ..
        } => show::run(store.as_ref(), &id, json, &trust.load()?).await,
        BackupsAction::Show { id, identity, .. } => {
            let identities = Identities::load(&identity).map_err(UsageError)?;
            show::deployment_manifest(store.as_ref(), &id, &identities).await
        }
        BackupsAction::Verify {
            id,
            identity,
            allow_unencrypted,
            sample,
            state_file,
            trust,
            ..
        } => {
            let sampling = verify::Sampling::new(sample, state_file);
            let id = id.unwrap_or_default();
            let identities = Identities::load(&identity)
                .map_err(UsageError)?
                .allowing_unencrypted(allow_unencrypted);
            let trusted = trust.load()?;
            let keys = verify::Keys {
                identities: &identities,
                trusted: &trusted,
            };
            verify::run(&store, &id, keys, args.parallelism, sampling).await
        }
        BackupsAction::Delete { id, trust, signing } => {
            let keys = delete::Keys {
                trusted: trust.load()?,
                signing: signing.load()?,
            };
            delete::run(store.as_ref(), &id, &keys).await
        }
        BackupsAction::Prune {
            deployment,
            keep_last,
            keep_daily,
            keep_weekly,
            keep_monthly,
            dry_run,
            identity,
            allow_unencrypted,
            trust,
            signing,
            keep_marked,
        } => {
            if keep_marked.is_some() {
                return Err(UsageError(
                    "--keep-marked applies to repositories (repo+ stores) only: a plain store's prune deletes a backup's objects at once.".into(),
                )
                .into());
            }
            let identities = Identities::load(&identity)
                .map_err(UsageError)?
                .allowing_unencrypted(allow_unencrypted);
            let keys = prune::Keys {
                identities,
                trusted: trust.load()?,
                signing: signing.load()?,
            };
            let policy = RetentionPolicy {
                keep_last,
                keep_daily,
                keep_weekly,
                keep_monthly,
            };
            let output = prune::PruneOutput { dry_run, json };
            prune::run(&store, &deployment, policy, output, args.parallelism, &keys).await
        }
        BackupsAction::Report {
            deployment,
            html,
            verify,
            trust,
        } => {
            let options = cairn::report::history::HistoryOptions {
                trusted: trust.load()?,
                verify: verify.then_some(args.parallelism),
            };
            if html.is_none() && !json {
                return Err(
                    UsageError("backups report needs --html FILE, --json or both.".into()).into(),
                );
            }
            let output = report::Output { html, json };
            report::run(
                report::Source::Store(&store),
                deployment.as_deref(),
                &options,
                &output,
            )
            .await
        }
    }
}

/// Warns on stderr about what runs of `deployment` that are over left behind (locks,
/// directories, temporary users), with the command that clears it: the catalog commands have
/// no target to undo it on, but the operator looking at backups should know.
async fn warn_left_behind(store: &dyn cairn_store::ArtifactStore, deployment: &str) {
    for line in cairn::workflow::left_behind_report(store, deployment).await {
        eprintln!("warning: {line}");
    }
}
