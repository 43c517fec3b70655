//! The five subcommands of `deployment` and `director` (pre-backup-check, backup, restore,
//! backup-cleanup, restore-cleanup) on a target: the run's context, its start and finish
//! events, bbr's error report, the exit code and the metrics file. Each subcommand's own work
//! is in a module below.

mod backup;
mod cleanup;
mod pre_backup_check;
mod restore;

use std::sync::{Arc, Mutex};

use cairn::model::deployment::Target;
use cairn::report::events::{Event, JsonLines};
use cairn::report::metrics::RunSummary;
use cairn::report::notify::Notification;
use cairn::workflow::journal::{JournalFile, JournalKind};
use cairn::workflow::RunContext;
use cairn::RunErrors;

use super::args::{Action, CommonArgs};
use super::exit::{report_errors_with_footer, CleanupAdvice, BACKUP_CLEANUP_ADVICE};
use super::output::Human;

/// Which mode the subcommand runs in, for messages.
pub(crate) enum Mode {
    /// `cairn deployment`.
    Deployment,
    /// `cairn director`.
    Director,
}

/// What a subcommand hands back for the end of the run.
#[derive(Default)]
struct Outcome {
    /// Everything that went wrong.
    errors: RunErrors,
    /// Bytes a backup stored.
    stored_bytes: Option<u64>,
    /// Where a complete backup is.
    artifact: Option<String>,
    /// A resumable backup kept what it staged and stored (its report ends with how to resume
    /// it, not with bbr's advice to clean up).
    kept_for_resume: bool,
}

impl From<RunErrors> for Outcome {
    fn from(errors: RunErrors) -> Outcome {
        Outcome {
            errors,
            ..Outcome::default()
        }
    }
}

/// Runs `action` on `target`; returns the exit code.
pub(crate) async fn run(
    target: &dyn Target,
    action: Action,
    common: &CommonArgs,
    mode: Mode,
    manifest: Option<String>,
) -> anyhow::Result<i32> {
    let mut context = context(target, &action, common);
    let signals = super::signals::watch(context.clone());
    let started_at = chrono::Utc::now();
    let operation = action.name();
    let advice = CleanupAdvice::of(&action);
    context.emit(Event::RunStarted {
        operation: operation.to_string(),
        deployment: target.name().to_string(),
        cairn_version: cairn::VERSION.to_string(),
    });
    let human = Human {
        to_stderr: common.json || action.prints_plan(),
    };
    let outcome = match action {
        Action::PreBackupCheck(check) => {
            context.journal_store = pre_backup_check::journal_store(&check).await;
            pre_backup_check::run(target, &check, common.json, &mode, &context, &human)
                .await
                .into()
        }
        Action::Backup(args) => backup::run(target, &args, manifest, &mut context).await?,
        Action::Restore(args) => restore::run(target, &args, common.json, &context, &human)
            .await?
            .into(),
        Action::BackupCleanup => cleanup::backup(target, &mut context).await?.into(),
        Action::RestoreCleanup => cleanup::restore(target, &context).await.into(),
        // Answered before any target is reached (`deployment::run`, `director::run`).
        Action::Help { .. } => Outcome::default(),
    };
    signals.abort();
    let finished = Finished {
        operation,
        started_at,
        advice,
    };
    let (exit_code, notification) = finish(target, &finished, outcome, common, &context);
    super::notify::send(notification).await;
    Ok(exit_code)
}

/// The run's context: parallelism, time limits, the journal and where events go.
fn context(target: &dyn Target, action: &Action, common: &CommonArgs) -> RunContext {
    let parallelism = common
        .parallelism
        .unwrap_or(super::config::DEFAULT_PARALLELISM);
    let mut context = RunContext::new(parallelism, cairn::VERSION);
    context.options.script_timeouts = common.script_timeouts();
    context.options.stall_timeout = common.stall_timeout();
    if let Action::Backup(backup_args) = action {
        context.options.instance_checksums = backup_args.instance_checksums;
    }
    if let Action::Restore(restore_args) = action {
        context.options.verify_restore = restore_args.verify;
        context.options.restore_parallelism = restore_args.restore_parallelism.unwrap_or(1);
    }
    context.repository_password_file = match action {
        Action::Backup(args) => args.store.repository_password_file(),
        Action::Restore(args) => args.store.repository_password_file(),
        Action::PreBackupCheck(args) => args.store.repository_password_file(),
        // The clean-ups take no flags: the variable, as CAIRN_STORE for the store's journals.
        _ => std::env::var_os(super::args::REPOSITORY_PASSWORD_FILE_ENV)
            .filter(|v| !v.is_empty())
            .map(std::path::PathBuf::from),
    };
    if let Some(kind) = journal_kind(action) {
        let state_dir = JournalFile::default_state_dir();
        context.journal = Some(JournalFile::new(&state_dir, target.name()).with_kind(kind));
    }
    let argv: Vec<String> = std::env::args().collect();
    context.command_prefix = command_prefix(&argv);
    if common.json {
        context.events = Some(Arc::new(JsonLines(Mutex::new(std::io::stdout()))));
    } else if std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("CAIRN_NO_PROGRESS").is_none()
    {
        context.events = Some(Arc::new(super::progress::TerminalProgress::new()));
    }
    context
}

/// The journal of each subcommand: every one keeps one (the read-only ones only for the
/// temporary user of deployment mode, and they never write one otherwise).
fn journal_kind(action: &Action) -> Option<JournalKind> {
    Some(match action {
        Action::PreBackupCheck(_) => JournalKind::PreBackupCheck,
        Action::Backup(_) => JournalKind::Backup,
        Action::Restore(restore) if restore.plan => JournalKind::RestorePlan,
        Action::Restore(_) => JournalKind::Restore,
        Action::BackupCleanup => JournalKind::BackupCleanup,
        Action::RestoreCleanup => JournalKind::RestoreCleanup,
        Action::Help { .. } => return None,
    })
}

/// The subcommands and their aliases, as they appear on a command line.
const SUBCOMMANDS: [&str; 8] = [
    "pre-backup-check",
    "c",
    "backup",
    "b",
    "restore",
    "r",
    "backup-cleanup",
    "restore-cleanup",
];

/// Flags that take no value.
const SWITCHES: [&str; 4] = [
    "--all-deployments",
    "--debug",
    "--insecure-skip-host-key-check",
    "--json",
];

/// The command line up to the subcommand (`cairn deployment --target T --deployment D`), with
/// the program's name as `cairn`, a password's value masked and `--notify-url`s left out, so that a message can name the
/// exact clean-up command to run. `None` when no subcommand is found.
fn command_prefix(argv: &[String]) -> Option<String> {
    let mut words = vec!["cairn".to_string()];
    let mut takes_value = false;
    let mut mask_next = false;
    let mut drop_next = false;
    for word in argv.iter().skip(1) {
        if drop_next {
            drop_next = false;
            continue;
        }
        // A webhook URL may hold its credential, and a clean-up need not notify: left out.
        if !takes_value && word == "--notify-url" {
            drop_next = true;
            continue;
        }
        if !takes_value && word.starts_with("--notify-url=") {
            continue;
        }
        if !takes_value && SUBCOMMANDS.contains(&word.as_str()) {
            return Some(words.join(" "));
        }
        let shown = if mask_next {
            "\"$BOSH_CLIENT_SECRET\"".to_string()
        } else if let Some(flag) = word.strip_prefix("--password=") {
            let _ = flag;
            "--password=\"$BOSH_CLIENT_SECRET\"".to_string()
        } else {
            word.clone()
        };
        mask_next = matches!(word.as_str(), "--password" | "-p") && !takes_value;
        takes_value = word.starts_with('-')
            && !word.contains('=')
            && !SWITCHES.contains(&word.as_str())
            && !takes_value
            && word.len() > 1;
        // `deployment` and `director` are modes, not flags.
        words.push(if shown.contains(' ') {
            format!("'{shown}'")
        } else {
            shown
        });
    }
    None
}

/// The footer of a resumable backup that kept what it staged and stored: the two commands
/// that end it, spelled as this run was invoked.
fn resume_advice(context: &RunContext) -> String {
    let prefix = context
        .command_prefix
        .as_deref()
        .unwrap_or("cairn deployment");
    format!(
        "The staged artifacts and the stored segments were kept: finish the backup with `{prefix} backup --resume` (the same store), or discard it with `{prefix} backup-cleanup`."
    )
}

/// What [`finish`] needs to know of the subcommand.
struct Finished {
    /// bbr's name of the subcommand.
    operation: &'static str,
    /// When it started.
    started_at: chrono::DateTime<chrono::Utc>,
    /// Whether its report may end with the advice to run `backup-cleanup`.
    advice: CleanupAdvice,
}

/// bbr's error report, the run's last event and the metrics file; returns the exit code and
/// what the webhooks of `--notify-url` are told.
fn finish(
    target: &dyn Target,
    finished: &Finished,
    outcome: Outcome,
    common: &CommonArgs,
    context: &RunContext,
) -> (i32, Option<Notification>) {
    let Finished {
        operation,
        started_at,
        advice,
    } = *finished;
    let errors = &outcome.errors;
    let footer = if outcome.kept_for_resume {
        resume_advice(context)
    } else if advice.applies(errors) {
        BACKUP_CLEANUP_ADVICE.to_string()
    } else {
        String::new()
    };
    let exit_code = report_errors_with_footer(errors, &footer);
    let mut event = Event::RunFinished {
        operation: operation.to_string(),
        deployment: target.name().to_string(),
        exit_code,
        duration_seconds: (chrono::Utc::now() - started_at).num_milliseconds() as f64 / 1000.0,
        artifact: outcome.artifact,
        errors: errors.errors().iter().map(ToString::to_string).collect(),
    };
    context.emit(event.clone());
    // A failed backup stored nothing worth graphing; leave the size out.
    let stored_bytes = outcome.stored_bytes.filter(|_| exit_code == 0);
    let mut exit_code = exit_code;
    if let Some(path) = &common.metrics_file {
        let summary = RunSummary {
            deployment: target.name().to_string(),
            operation: operation.to_string(),
            started_at,
            finished_at: chrono::Utc::now(),
            exit_code,
            stored_bytes,
            scripts: context.scripts(),
            good_backup_at: good_backup_at(operation, exit_code, event_artifact(&event))
                .map(|at| at.unwrap_or(started_at)),
        };
        if let Err(error) = cairn::report::metrics::write(path, &summary) {
            eprintln!("{error}");
            exit_code |= 1;
            // The webhooks hear the exit code the run ends with.
            if let Event::RunFinished {
                exit_code: told,
                errors,
                ..
            } = &mut event
            {
                *told = exit_code;
                errors.push(error.to_string());
            }
        }
    }
    (exit_code, super::notify::notification(&event, stored_bytes))
}

/// The location of the backup a `run_finished` event names.
fn event_artifact(event: &Event) -> Option<&str> {
    match event {
        Event::RunFinished { artifact, .. } => artifact.as_deref(),
        _ => None,
    }
}

/// For a backup run that exited 0 with a complete backup at `artifact`: `Some` with the time
/// of its id (`…/<deployment>/<id>` in a store, `…/<deployment>_<id>` as a directory), `None`
/// inside when the id is not a time. `None` for every other run.
fn good_backup_at(
    operation: &str,
    exit_code: i32,
    artifact: Option<&str>,
) -> Option<Option<chrono::DateTime<chrono::Utc>>> {
    let artifact = artifact.filter(|_| operation == "backup" && exit_code == 0)?;
    let name = artifact.trim_end_matches('/').rsplit('/').next()?;
    let id = name.rsplit('_').next()?;
    Some(cairn::catalog::backup_time(id))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prefix(line: &str) -> Option<String> {
        let argv: Vec<String> = line.split(' ').map(String::from).collect();
        command_prefix(&argv)
    }

    #[test]
    fn a_good_backup_is_timed_by_its_id() {
        let time = |text: &str| {
            chrono::DateTime::parse_from_rfc3339(text)
                .unwrap()
                .with_timezone(&chrono::Utc)
        };
        assert_eq!(
            good_backup_at("backup", 0, Some("file:///s/cf/20240102T030405Z")),
            Some(Some(time("2024-01-02T03:04:05Z")))
        );
        assert_eq!(
            good_backup_at("backup", 0, Some("/backups/my_dep_20240102T030405Z")),
            Some(Some(time("2024-01-02T03:04:05Z")))
        );
        assert_eq!(good_backup_at("backup", 0, Some("/x/odd")), Some(None));
        assert_eq!(
            good_backup_at("backup", 1, Some("/x/cf_20240102T030405Z")),
            None
        );
        assert_eq!(
            good_backup_at("restore", 0, Some("/x/cf_20240102T030405Z")),
            None
        );
        assert_eq!(good_backup_at("backup", 0, None), None);
    }

    #[test]
    fn the_prefix_stops_at_the_subcommand_and_masks_the_password() {
        assert_eq!(
            prefix("/usr/bin/bbr deployment -t 10.0.0.6 -u admin -p s3cret -d b restore --artifact-path b"),
            Some("cairn deployment -t 10.0.0.6 -u admin -p \"$BOSH_CLIENT_SECRET\" -d b".into())
        );
        assert_eq!(
            prefix("cairn deployment --debug --inventory inv.yml pre-backup-check"),
            Some("cairn deployment --debug --inventory inv.yml".into())
        );
        assert_eq!(
            prefix("cairn deployment --password=x --deployment cf c"),
            Some("cairn deployment --password=\"$BOSH_CLIENT_SECRET\" --deployment cf".into())
        );
        assert_eq!(prefix("cairn deployment --deployment cf"), None);
        assert_eq!(
            prefix("cairn deployment --notify-url https://h/SECRET -d cf --notify-url=https://h/S2 --json backup"),
            Some("cairn deployment -d cf --json".into())
        );
    }
}
