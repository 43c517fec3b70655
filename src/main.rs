//! `cairn` (or `bbr`, through a symlink): parse, run, exit with bbr's exit codes.
//!
//! As thin as ripgrep's: the flags (and the config file), the logger, the runtime, then
//! [`cli::run`] does the work and hands back the exit code.
#![allow(clippy::print_stdout, clippy::print_stderr)] // the binary is where printing belongs

mod cli;

fn main() {
    std::process::exit(real_main());
}

/// Parses, sets up logging and the runtime, runs the command; returns the exit code.
fn real_main() -> i32 {
    let invocation = match cli::flags::parse() {
        Ok(invocation) => invocation,
        Err(exit_code) => return exit_code,
    };
    cli::logging::init_for(&invocation.command);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(cli::run(invocation))
}
