//! Writing results on stdout (or stderr when stdout carries `--json` events or a plan).
//!
//! `print_bytes` and `say` treat a closed stdout (`| head`) as no error; [`Human`] prints the
//! human-readable lines of `deployment` and `director`.

use std::io::Write;

/// Writes to stdout; a reader that went away (`| head`) is not an error.
pub(crate) fn print_bytes(bytes: &[u8]) -> i32 {
    match std::io::stdout().lock().write_all(bytes) {
        Ok(()) => 0,
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => 0,
        Err(_) => 1,
    }
}

/// Prints a line; a closed stdout (`| head`) is not an error.
pub(crate) fn say(line: &str) {
    let _ = writeln!(std::io::stdout().lock(), "{line}");
}

/// Human-readable output: stdout, or stderr when stdout carries `--json` events.
pub(crate) struct Human {
    /// True with `--json` or a printed plan.
    pub to_stderr: bool,
}

impl Human {
    /// Prints one line.
    pub(crate) fn say(&self, line: &str) {
        if self.to_stderr {
            eprintln!("{line}");
        } else {
            println!("{line}");
        }
    }
}
