//! `cairn` (or `bbr`, through a symlink): parse, run, exit with bbr's exit codes.
#![allow(clippy::print_stdout, clippy::print_stderr)] // the binary is where printing belongs

mod cli;

use std::io::IsTerminal;

use clap::Parser;
use cli::args::{Cli, Command, UsageError};

fn main() {
    std::process::exit(real_main());
}

fn program_name() -> String {
    std::env::args()
        .next()
        .as_deref()
        .map(std::path::Path::new)
        .and_then(|p| p.file_name())
        .map_or_else(|| "cairn".into(), |n| n.to_string_lossy().into_owned())
}

fn real_main() -> i32 {
    let name = program_name();
    let mut cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => return parse_failure(&error),
    };
    let config = match cli::config::load(cli.config.as_deref()) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("{error}");
            return 1;
        }
    };
    cli::config::apply(&mut cli, &config);
    let debug = match &cli.command {
        Command::Deployment(d) => d.common.debug,
        Command::Director(d) => d.common.debug,
        Command::Backups(b) => b.debug,
        Command::Contract {
            action: cli::args::ContractAction::Check(c),
        } => c.debug,
        Command::Drill(d) => d.common.debug,
        _ => false,
    };
    // Logs leave stdout when it carries machine-readable output (events or a plan).
    let logs_to_stderr = match &cli.command {
        Command::Deployment(d) => d.common.json || d.action.prints_plan(),
        Command::Director(d) => d.common.json || d.action.prints_plan(),
        // `backups` prints its results (tables, JSON lines) on stdout.
        Command::Backups(_) => true,
        // Reports go to stdout.
        Command::Contract { .. } | Command::Drill(_) => true,
        _ => false,
    };
    cli::logging::init(debug, logs_to_stderr);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let result = runtime.block_on(async {
        match cli.command {
            Command::Deployment(args) => cli::run::deployment(args).await,
            Command::Director(args) => cli::run::director(args).await,
            Command::Backups(args) => cli::backups::run(args).await,
            Command::Contract { action } => cli::contract::run(action).await,
            Command::Drill(args) => cli::drill::run(args).await,
            Command::Completions { shell } => {
                let mut command = <Cli as clap::CommandFactory>::command();
                let mut script = Vec::new();
                clap_complete::generate(shell, &mut command, name.clone(), &mut script);
                Ok(print_bytes(&script))
            }
            Command::Config {
                action: cli::args::ConfigAction::Show,
            } => Ok(print_bytes(
                cli::config::show(cli.config.as_deref(), &config).as_bytes(),
            )),
            Command::Man => {
                let mut page = Vec::new();
                clap_mangen::Man::new(<Cli as clap::CommandFactory>::command())
                    .render(&mut page)?;
                Ok(print_bytes(&page))
            }
            Command::Help => {
                let _ = <Cli as clap::CommandFactory>::command().print_help();
                Ok(0)
            }
            Command::Version => {
                println!("{name} version {}", cairn::VERSION);
                Ok(0)
            }
        }
    });
    match result {
        Ok(code) => code,
        Err(error) => {
            print_fatal(&error);
            1
        }
    }
}

/// Writes to stdout; a reader that went away (`| head`) is not an error.
fn print_bytes(bytes: &[u8]) -> i32 {
    use std::io::Write;
    match std::io::stdout().lock().write_all(bytes) {
        Ok(()) => 0,
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => 0,
        Err(_) => 1,
    }
}

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

fn print_fatal(error: &anyhow::Error) {
    let red = std::io::stderr().is_terminal();
    let message = if error.downcast_ref::<UsageError>().is_some() {
        error.to_string()
    } else {
        format!("1 error(s) occurred:\nerror 1:\n{error:#}")
    };
    if red {
        eprintln!("\x1b[31m{message}\x1b[0m");
    } else {
        eprintln!("{message}");
    }
}
