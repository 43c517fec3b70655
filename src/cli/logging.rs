//! bbr's log format on stdout: `[bbr] 2006/01/02 15:04:05 INFO - message`.
//!
//! Wrappers and pipelines grep these lines, so the prefix stays `[bbr]` whatever the binary
//! is called. `--debug` adds DEBUG lines (every remote command and script stdout).
//!
//! Log files (`bbr-<time>.err.log`, `--all-deployments`' per-deployment logs) name hosts,
//! users and paths and may hold scripts' output: [`private_log_file`] creates them 0600
//! whatever the umask, and does not follow a link planted at their name.

use std::fmt;
use std::fs::File;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

use super::args::{Command, ContractAction};
use super::output::{printable, Lines};

struct BbrFormat;

impl<S, N> FormatEvent<S, N> for BbrFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        context: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let level = match *event.metadata().level() {
            Level::ERROR => "ERROR",
            Level::WARN => "WARN",
            Level::INFO => "INFO",
            Level::DEBUG | Level::TRACE => "DEBUG",
        };
        let now = chrono::Local::now().format("%Y/%m/%d %H:%M:%S");
        let mut message = String::new();
        context
            .field_format()
            .format_fields(Writer::new(&mut message), event)?;
        // One line per event, whatever the names in it hold (`output::printable`).
        writeln!(
            writer,
            "[bbr] {now} {level} - {}",
            printable(&message, Lines::One)
        )
    }
}

/// Opens the log file `path` for writing, only its owner may read it (mode 0600, also for a
/// file an earlier run left), and a symbolic link at `path` is refused, not followed. With
/// `append` new lines go at its end, else it is emptied first.
///
/// # Errors
/// When it cannot be opened (a link at `path` included) or its mode set.
pub(crate) fn private_log_file(path: &Path, append: bool) -> std::io::Result<File> {
    use rustix::fs::{Mode, OFlags};
    let mut flags = OFlags::WRONLY | OFlags::CREATE | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    flags |= if append {
        OFlags::APPEND
    } else {
        OFlags::TRUNC
    };
    let file = File::from(rustix::fs::open(path, flags, Mode::from_raw_mode(0o600))?);
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    Ok(file)
}

/// Installs the logger for `command`: its `--debug`, and stderr when stdout carries its output.
///
/// The parent of an `--all-deployments` run logs only warnings (and `--debug` lines), on
/// stderr: its stdout is bbr's summary, and bbr discards the parent's log
/// (`cli/command/deployment_backup.go` `BuildBoshLoggerWithCustomBuffer`). Each deployment's
/// own run logs as usual, into its log file.
pub(crate) fn init_for(command: &Command) {
    let level = match (debug(command), all_deployments(command)) {
        (true, _) => "debug",
        (false, true) => "warn",
        (false, false) => "info",
    };
    init(level, logs_to_stderr(command) || all_deployments(command));
}

fn all_deployments(command: &Command) -> bool {
    matches!(command, Command::Deployment(d) if d.all_deployments)
}

/// The command's `--debug`.
fn debug(command: &Command) -> bool {
    match command {
        Command::Deployment(d) => d.common.debug,
        Command::Director(d) => d.common.debug,
        Command::Backups(b) => b.debug,
        Command::Repo(r) => r.debug,
        Command::Contract {
            action: ContractAction::Check(c),
        } => c.debug,
        Command::Drill(d) => d.common.debug,
        _ => false,
    }
}

/// Logs leave stdout when it carries machine-readable output (events or a plan).
fn logs_to_stderr(command: &Command) -> bool {
    match command {
        Command::Deployment(d) => d.common.json || d.action.prints_plan(),
        Command::Director(d) => d.common.json || d.action.prints_plan(),
        // `backups` prints its results (tables, JSON lines) on stdout; contract checks and
        // drills print their reports there.
        Command::Backups(_) | Command::Repo(_) | Command::Contract { .. } | Command::Drill(_) => {
            true
        }
        _ => false,
    }
}

/// Installs the logger at `level` (`debug`, `info` or `warn`) for Cairn's own messages.
///
/// With `to_stderr` (for `--json`, whose events own stdout) the lines go to stderr.
fn init(level: &str, to_stderr: bool) {
    // The AWS credential chain warns once per source that failed; the store error that follows
    // names them all in one line, so those warnings are only noise. rustic_core's warnings
    // become Cairn's own errors (docs/design/repository.md §9).
    let filter = EnvFilter::new(format!(
        "warn,cairn={level},aws_config::meta::credentials::chain=error,rustic_core=error"
    ));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .event_format(BbrFormat);
    let _ = builder.with_writer(Console { to_stderr }).try_init();
}

/// Where log lines go (stdout, or stderr with `to_stderr`), each written whole with the
/// progress bars hidden ([`super::progress::without_bars`]): the formatter hands over one
/// event's line in one write.
struct Console {
    to_stderr: bool,
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Console {
    type Writer = Console;

    fn make_writer(&'a self) -> Console {
        Console {
            to_stderr: self.to_stderr,
        }
    }
}

impl std::io::Write for Console {
    fn write(&mut self, line: &[u8]) -> std::io::Result<usize> {
        super::progress::without_bars(|| {
            if self.to_stderr {
                std::io::stderr().lock().write_all(line)
            } else {
                std::io::stdout().lock().write_all(line)
            }
        })?;
        Ok(line.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.to_stderr {
            std::io::stderr().flush()
        } else {
            std::io::stdout().flush()
        }
    }
}
