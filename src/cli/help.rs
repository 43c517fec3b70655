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

/// Prints the help.
pub(crate) fn help() -> i32 {
    let _ = Cli::command().print_help();
    0
}

/// Prints `NAME version X.Y.Z`, as bbr does.
pub(crate) fn version() -> i32 {
    println!("{} version {}", program_name(), cairn::VERSION);
    0
}
