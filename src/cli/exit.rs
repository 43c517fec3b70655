//! Errors and exit codes: bbr's error report on stderr, its `bbr-<time>.err.log`, the exit
//! code bitmask, and the red message of a fatal error.

use std::io::{IsTerminal, Write};

use cairn::RunErrors;

use super::args::UsageError;

/// The exit code of a subcommand's result; a fatal error is printed first (exit code 1).
pub(crate) fn code(result: anyhow::Result<i32>) -> i32 {
    match result {
        Ok(code) => code,
        Err(error) => {
            print_fatal(&error);
            1
        }
    }
}

/// A usage mistake as it is, anything else as bbr's one-error report; red on a terminal.
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

/// True when one of the errors may have left temp files or locked jobs behind.
pub(crate) fn cleanup_advice_subcommand(errors: &RunErrors) -> bool {
    errors
        .errors()
        .iter()
        .any(cairn::Error::needs_cleanup_advice)
}

/// Prints bbr's error report to stderr, writes `bbr-<time>.err.log`, returns the exit code.
pub(crate) fn report_errors(errors: &RunErrors, advise_cleanup: bool) -> i32 {
    if errors.is_empty() {
        return 0;
    }
    let mut stderr = std::io::stderr().lock();
    let _ = write!(stderr, "{errors}");
    if advise_cleanup {
        let _ = writeln!(stderr, "It is recommended that you run `bbr backup-cleanup` to ensure that any temp files are cleaned up and all jobs are unlocked.");
    }
    write_error_log(errors);
    errors.exit_code()
}

/// `bbr-<time>.err.log` in the current directory (on stderr when it cannot be written).
fn write_error_log(errors: &RunErrors) {
    let name = format!(
        "bbr-{}.err.log",
        chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    );
    let detail = format!("{errors}\n{errors:#?}\n");
    if std::fs::write(&name, &detail).is_err() {
        eprintln!("{detail}");
    }
}
