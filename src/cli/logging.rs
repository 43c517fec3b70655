//! bbr's log format on stdout: `[bbr] 2006/01/02 15:04:05 INFO - message`.
//!
//! Wrappers and pipelines grep these lines, so the prefix stays `[bbr]` whatever the binary
//! is called. `--debug` adds DEBUG lines (every remote command and script stdout).

use std::fmt;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

use super::args::{Command, ContractAction};

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
        write!(writer, "[bbr] {now} {level} - ")?;
        context
            .field_format()
            .format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

/// Installs the logger for `command`: its `--debug`, and stderr when stdout carries its output.
pub(crate) fn init_for(command: &Command) {
    init(debug(command), logs_to_stderr(command));
}

/// The command's `--debug`.
fn debug(command: &Command) -> bool {
    match command {
        Command::Deployment(d) => d.common.debug,
        Command::Director(d) => d.common.debug,
        Command::Backups(b) => b.debug,
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
        Command::Backups(_) | Command::Contract { .. } | Command::Drill(_) => true,
        _ => false,
    }
}

/// Installs the logger; `debug` lowers the level to DEBUG for Cairn's own messages.
///
/// With `to_stderr` (for `--json`, whose events own stdout) the lines go to stderr.
fn init(debug: bool, to_stderr: bool) {
    let level = if debug { "debug" } else { "info" };
    let filter = EnvFilter::new(format!("warn,cairn={level}"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .event_format(BbrFormat);
    let _ = if to_stderr {
        builder.with_writer(std::io::stderr).try_init()
    } else {
        builder.with_writer(std::io::stdout).try_init()
    };
}
