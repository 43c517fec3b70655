//! The `cairn` command line: bbr's flags and messages on top of the library.
//!
//! One module per subcommand (each with a short `run`), and shared modules for what several
//! of them need: reaching hosts ([`connect`]), stores ([`store`]), output ([`output`]),
//! errors and exit codes ([`exit`]), signals, logging and progress.

pub(crate) mod action;
pub(crate) mod all_deployments;
pub(crate) mod args;
pub(crate) mod backups;
pub(crate) mod completions;
pub(crate) mod config;
pub(crate) mod connect;
pub(crate) mod contract;
pub(crate) mod deployment;
pub(crate) mod director;
pub(crate) mod drill;
pub(crate) mod exit;
pub(crate) mod flags;
pub(crate) mod help;
pub(crate) mod logging;
pub(crate) mod notify;
pub(crate) mod output;
pub(crate) mod progress;
pub(crate) mod repo;
pub(crate) mod signals;
pub(crate) mod store;
pub(crate) mod trust;

use args::{Command, ConfigAction};
use flags::Invocation;

/// Runs the parsed command; returns the exit code (a fatal error is printed here).
pub(crate) async fn run(invocation: Invocation) -> i32 {
    let Invocation {
        command,
        config_path,
        config,
    } = invocation;
    if let Some(interval) = command.common().and_then(|c| c.keepalive_interval) {
        cairn::remote::ssh::set_keepalive_interval(interval);
    }
    if let Some(path) = passphrase_file(&command) {
        if let Err(error) = cairn::remote::login_key::set_passphrase_file(path) {
            return exit::code(Err(error.into()));
        }
    }
    if let Some(common) = command.common() {
        if let Err(error) = notify::setup(common) {
            return exit::code(Err(error.into()));
        }
    }
    let subject = notify::Subject::of(&command);
    let result = match command {
        Command::Deployment(args) => deployment::run(args).await,
        Command::Director(args) => director::run(args).await,
        Command::Backups(args) => backups::run(args).await,
        Command::Repo(args) => repo::run(args).await,
        Command::Contract { action } => contract::run(action).await,
        Command::Drill(args) => drill::run(args).await,
        Command::Keys { action } => trust::run(&action),
        Command::Completions { shell } => Ok(completions::completions(shell)),
        Command::Config {
            action: ConfigAction::Show,
        } => Ok(config::show_command(config_path.as_deref(), &config)),
        Command::Man { dir: None } => completions::man(),
        Command::Man { dir: Some(dir) } => completions::man_pages(&dir),
        Command::Help => Ok(help::help()),
        Command::Version => Ok(help::version()),
    };
    if let (Err(error), Some(subject)) = (&result, subject) {
        notify::send_fatal(subject, error).await;
    }
    exit::code(result)
}

/// `--private-key-passphrase-file` of the commands that log in over SSH.
fn passphrase_file(command: &Command) -> Option<&std::path::Path> {
    match command {
        Command::Contract {
            action: args::ContractAction::Check(check),
        } => check.private_key_passphrase_file.as_deref(),
        other => other
            .common()
            .and_then(|common| common.private_key_passphrase_file.as_deref()),
    }
}
