//! `cairn help` and `cairn version`, under the name the binary was called by (`bbr` through
//! a symlink).

use clap::CommandFactory;

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

/// The command line as clap sees it: Cairn's, or bbr's first help line when invoked as `bbr`.
pub(crate) fn command() -> clap::Command {
    let command = Cli::command();
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

/// Prints `NAME version X.Y.Z`, as bbr does.
pub(crate) fn version() -> i32 {
    println!("{} version {}", program_name(), cairn::VERSION);
    0
}
