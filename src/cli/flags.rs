//! Reading the command line: clap's parse with bbr's messages for mistakes, then the config
//! file (`--config` or `CAIRN_CONFIG`) filling the flags left unset.

use std::path::PathBuf;

use clap::parser::ValueSource;
use clap::FromArgMatches;

use super::args::{Cli, Command};
use super::config::ConfigFile;

/// What to run, with every default from the config file applied.
pub(crate) struct Invocation {
    /// The subcommand and its flags.
    pub command: Command,
    /// `--config` (or `CAIRN_CONFIG`), for `config show`.
    pub config_path: Option<PathBuf>,
    /// The config file's contents (empty without one).
    pub config: ConfigFile,
}

/// Parses the flags and loads the config file; `Err` is the exit code, the message printed.
pub(crate) fn parse() -> Result<Invocation, i32> {
    let parsed = super::help::command()
        .try_get_matches()
        .and_then(|matches| Ok((Cli::from_arg_matches(&matches)?, matches)));
    let (mut cli, matches) = match parsed {
        Ok(parsed) => parsed,
        Err(error) => return Err(parse_failure(&error)),
    };
    if let Command::Deployment(args) = &mut cli.command {
        args.password_on_command_line = matches
            .subcommand_matches("deployment")
            .and_then(|deployment| deployment.value_source("password"))
            == Some(ValueSource::CommandLine);
    }
    let config = match super::config::load(cli.config.as_deref()) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("{error}");
            return Err(1);
        }
    };
    super::config::apply(&mut cli, &config);
    Ok(Invocation {
        command: cli.command,
        config_path: cli.config,
        config,
    })
}

/// Prints clap's message (bbr's for an unknown subcommand or `--version`); returns the exit
/// code.
///
/// The rule, the same for every command and command group: asking for help (`--help`) or the
/// version exits 0, and so does an unknown command, as in bbr ([`super::help::command_not_found`]);
/// any other usage mistake exits 1, as bbr's do. A command group without its subcommand
/// (`cairn`, `cairn deployment`, `cairn backups`, `cairn contract`, `cairn config`, ...) is a
/// usage mistake: clap prints the group's help on stderr and the exit code is 1.
fn parse_failure(error: &clap::Error) -> i32 {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    match error.kind() {
        ErrorKind::DisplayHelp => {
            let _ = error.print();
            0
        }
        ErrorKind::DisplayVersion => super::help::version(),
        ErrorKind::InvalidSubcommand => {
            let unknown = error
                .get(ContextKind::InvalidSubcommand)
                .map(ToString::to_string)
                .unwrap_or_default();
            // Cairn's addition, on stderr so that stdout stays bbr's: the command meant.
            if let Some(ContextValue::Strings(suggestions)) =
                error.get(ContextKind::SuggestedSubcommand)
            {
                if let Some(suggestion) = suggestions.first() {
                    eprintln!("did you mean `{suggestion}`?");
                }
            }
            super::help::command_not_found(&unknown)
        }
        // Every other kind is a usage mistake, a missing subcommand
        // (`DisplayHelpOnMissingArgumentOrSubcommand`) included.
        _ => {
            let _ = error.print();
            1
        }
    }
}
