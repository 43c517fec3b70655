//! `cairn completions SHELL` and `cairn man`: text generated from the clap command line, so
//! they never drift from the flags.

use clap::CommandFactory;

use super::args::Cli;
use super::output::print_bytes;

/// Prints the completion script for `shell`, for the name this binary was called by.
pub(crate) fn completions(shell: clap_complete::Shell) -> i32 {
    let name = super::help::program_name();
    let mut command = Cli::command();
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut command, name, &mut script);
    print_bytes(&script)
}

/// Prints the man page (roff).
pub(crate) fn man() -> anyhow::Result<i32> {
    let mut page = Vec::new();
    clap_mangen::Man::new(Cli::command()).render(&mut page)?;
    Ok(print_bytes(&page))
}
