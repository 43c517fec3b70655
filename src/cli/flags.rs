//! Reading the command line: clap's parse with bbr's messages for mistakes, then the config
//! file (`--config` or `CAIRN_CONFIG`) filling the flags left unset.

use std::path::PathBuf;

use clap::Parser;

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
    let mut cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => return Err(parse_failure(&error)),
    };
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

/// Prints clap's message (bbr's for an unknown subcommand); returns the exit code.
fn parse_failure(error: &clap::Error) -> i32 {
    use clap::error::ErrorKind;
    match error.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            let _ = error.print();
            0
        }
        ErrorKind::InvalidSubcommand => {
            let unknown = error
                .get(clap::error::ContextKind::InvalidSubcommand)
                .map(ToString::to_string)
                .unwrap_or_default();
            eprintln!("Error command '{unknown}' not found");
            let _ = <Cli as clap::CommandFactory>::command().print_help();
            1
        }
        _ => {
            let _ = error.print();
            1
        }
    }
}
