//! Errors and exit codes: bbr's error report on stderr, its `bbr-<time>.err.log`, the exit
//! code bitmask, and the red message of a fatal error.

use std::io::{IsTerminal, Write};

use cairn::RunErrors;

use super::args::{Action, UsageError};
use super::output::{printable, Lines};

/// bbr's advice after a backup that may have left temp files or locked jobs
/// (`cli/command/messages.go` `backupCleanupAdvisedNotice`).
pub(crate) const BACKUP_CLEANUP_ADVICE: &str = "It is recommended that you run `bbr backup-cleanup` to ensure that any temp files are cleaned up and all jobs are unlocked.";

/// The same advice after `--all-deployments` (`backupCleanupAllDeploymentsAdvisedNotice`).
pub(crate) const ALL_DEPLOYMENTS_BACKUP_CLEANUP_ADVICE: &str = "It is recommended that you run `bbr deployment --all-deployments backup-cleanup` to ensure that any temp files are cleaned up and all jobs are unlocked.";

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
        format!("1 error occurred:\nerror 1:\n{error:#}")
    };
    let message = printable(&message, Lines::Many);
    if red {
        eprintln!("\x1b[31m{message}\x1b[0m");
    } else {
        eprintln!("{message}");
    }
}

/// When a subcommand's error report ends with [`BACKUP_CLEANUP_ADVICE`], as bbr decides it
/// (`cli/command/deployment_backup.go`, `director_backup.go`, `deployment_pre_backup_check.go`,
/// `director_pre_backup_check.go`): never after a restore or a clean-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CleanupAdvice {
    /// `backup`: after an unlock, clean-up, artifact-directory or drain error.
    Backup,
    /// `pre-backup-check`: when the first error is a leftover artifact directory.
    PreBackupCheck,
    /// `restore`, `backup-cleanup`, `restore-cleanup`.
    Never,
}

impl CleanupAdvice {
    /// The rule of `action`.
    pub(crate) fn of(action: &Action) -> CleanupAdvice {
        match action {
            Action::Backup(_) => CleanupAdvice::Backup,
            Action::PreBackupCheck(_) => CleanupAdvice::PreBackupCheck,
            _ => CleanupAdvice::Never,
        }
    }

    /// True when the advice follows a report of `errors`.
    pub(crate) fn applies(self, errors: &RunErrors) -> bool {
        match self {
            CleanupAdvice::Backup => errors.advise_backup_cleanup(),
            CleanupAdvice::PreBackupCheck => errors.first_is_artifact_dir(),
            CleanupAdvice::Never => false,
        }
    }
}

/// Prints bbr's error report to stderr, writes `bbr-<time>.err.log`, returns the exit code.
pub(crate) fn report_errors(errors: &RunErrors, advise_cleanup: bool) -> i32 {
    let footer = if advise_cleanup {
        BACKUP_CLEANUP_ADVICE
    } else {
        ""
    };
    report_errors_with_footer(errors, footer)
}

/// [`report_errors`] with the line that ends the report (bbr's footer, often empty).
pub(crate) fn report_errors_with_footer(errors: &RunErrors, footer: &str) -> i32 {
    if errors.is_empty() {
        return 0;
    }
    // bbr (`cli/command/utils.go` processErrorWithFooter, then urfave's `Fprintln`): the
    // report, a newline, the footer (often empty), a newline.
    let report = errors.to_string();
    let _ = write!(
        std::io::stderr().lock(),
        "{}\n{footer}\n",
        printable(&report, Lines::Many)
    );
    write_error_log(errors);
    errors.exit_code()
}

/// `bbr-<time>.err.log` in the current directory (on stderr when it cannot be written).
fn write_error_log(errors: &RunErrors) {
    let name = format!(
        "bbr-{}.err.log",
        chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    );
    let report = errors.to_string();
    let detail = format!("{}\n{errors:#?}\n", printable(&report, Lines::Many));
    let written = super::logging::private_log_file(std::path::Path::new(&name), false)
        .and_then(|mut file| std::io::Write::write_all(&mut file, detail.as_bytes()));
    if written.is_err() {
        eprintln!("{detail}");
    }
}
