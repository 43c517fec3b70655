//! `cairn help`, `cairn version` (and `--version`, `-v`), `help` inside a mode, and bbr's
//! answer to an unknown command, under the name the binary was called by (`bbr` through a
//! symlink).
//!
//! bbr is a urfave/cli v1 application: `--version`/`-v` print `bbr version X`, and an unknown
//! command prints `Error command 'X' not found`, a blank line and the help of the command it
//! was given to, all on stdout, then exits 0 (`cmd/bbr/main.go` `commandNotFoundFunc`; urfave's
//! `ShowCommandHelp` returns no error once `CommandNotFound` is set). Cairn does the same, so a
//! wrapper that parses bbr's output reads Cairn's.

use clap::{Arg, ArgAction, CommandFactory};

use super::args::Cli;

/// The file name this binary was called by (`cairn` when there is none).
pub(crate) fn program_name() -> String {
    std::env::args()
        .next()
        .as_deref()
        .map(std::path::Path::new)
        .and_then(|p| p.file_name())
        .map_or_else(|| "cairn".into(), |n| n.to_string_lossy().into_owned())
}

/// bbr's one-line description, the first line of its help.
const BBR_ABOUT: &str = "BOSH Backup and Restore";

/// The command line as clap sees it: Cairn's, or bbr's first help line when invoked as `bbr`;
/// with bbr's top-level `--version, -v` flag.
pub(crate) fn command() -> clap::Command {
    let command = Cli::command().version(cairn::VERSION).arg(
        Arg::new("version")
            .short('v')
            .long("version")
            .action(ArgAction::Version)
            .help("Print the version"),
    );
    if program_name() == "bbr" {
        command.about(BBR_ABOUT)
    } else {
        command
    }
}

/// Prints the help.
pub(crate) fn help() -> i32 {
    let _ = command().print_help();
    0
}

/// The version line: as `bbr`, bbr's own line (`bbr version 1.9.81`, urfave's `ShowVersion`)
/// with Cairn's version after it, so a wrapper that parses bbr's line keeps working; as
/// anything else, Cairn's version first.
pub(crate) fn version_line(program: &str) -> String {
    let bbr = cairn::BBR_COMPATIBLE_VERSION;
    let cairn = cairn::VERSION;
    if program == "bbr" {
        format!("bbr version {bbr} (cairn {cairn})")
    } else {
        format!("cairn version {cairn} (bbr {bbr})")
    }
}

/// Prints the version line ([`version_line`]).
pub(crate) fn version() -> i32 {
    println!("{}", version_line(&program_name()));
    0
}

/// `help [SUBCOMMAND]` inside `deployment` or `director`: the mode's help, or one
/// subcommand's, on stdout; exit code 0 (urfave's `help` command of a command with
/// subcommands).
pub(crate) fn mode_help(mode: &str, subcommand: Option<&str>) -> i32 {
    let mut command = built();
    let Some(mode_command) = command.find_subcommand_mut(mode) else {
        return 1;
    };
    match subcommand {
        None => print_help(mode_command),
        Some(name) => match mode_command.find_subcommand_mut(name) {
            Some(sub) => print_help(sub),
            None => not_found(name, mode_command),
        },
    }
    0
}

/// bbr's answer to an unknown command `unknown`: `Error command 'X' not found`, a blank line
/// and the help of the command it was given to, on stdout. Returns bbr's exit code, 0.
pub(crate) fn command_not_found(unknown: &str) -> i32 {
    let mut command = built();
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let before = argv
        .iter()
        .position(|a| a == unknown)
        .map_or(&argv[..], |at| &argv[..at]);
    let group = before.iter().find_map(|arg| {
        command
            .get_subcommands()
            .find(|sub| sub.has_subcommands() && sub.get_name() == arg)
            .map(|sub| sub.get_name().to_string())
    });
    match group.and_then(|name| command.find_subcommand_mut(&name)) {
        Some(sub) => not_found(unknown, sub),
        None => not_found(unknown, &mut command),
    }
    0
}

fn not_found(unknown: &str, parent: &mut clap::Command) {
    println!("Error command '{unknown}' not found\n");
    print_help(parent);
}

/// The command line with every subcommand's name for its usage line (`cairn deployment`).
fn built() -> clap::Command {
    let mut command = command().bin_name(program_name());
    command.build();
    command
}

fn print_help(command: &mut clap::Command) {
    let _ = command.print_help();
}

#[cfg(test)]
mod tests {
    use super::version_line;

    #[test]
    fn the_version_line_leads_with_the_name_it_was_called_by() {
        let cairn = cairn::VERSION;
        assert_eq!(
            version_line("bbr"),
            format!("bbr version 1.9.81 (cairn {cairn})")
        );
        assert_eq!(
            version_line("cairn"),
            format!("cairn version {cairn} (bbr 1.9.81)")
        );
    }
}
