//! Live progress on a terminal: one bar per artifact transfer (bytes, rate, ETA) and the
//! phase of each job (locked, backed up, unlocked), driven by the same events `--json`
//! prints. When stdout is not a terminal, the bbr-style log lines (with a percentage every 5 %
//! of each transfer) are all there is, so wrappers that grep them keep working.
//!
//! Log lines (stdout) and bars (stderr) share the terminal: a line printed while a bar is
//! drawn would land at the end of the bar's line and be cut by its next redraw. So every line
//! Cairn prints goes through [`without_bars`], which hides the bars while it is written and
//! draws them again below it (indicatif's `MultiProgress::suspend`).

use std::collections::HashMap;
use std::sync::Mutex;

use cairn::report::events::{Event, EventSink};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// The bars on the terminal now, if any ([`TerminalProgress`] puts its own here).
static SHOWN: Mutex<Option<MultiProgress>> = Mutex::new(None);

/// Runs `write` (which prints a line) with the progress bars hidden, when bars are shown, and
/// draws them again after it; without bars it just runs it.
pub(crate) fn without_bars<R>(write: impl FnOnce() -> R) -> R {
    let shown = SHOWN.lock().ok().and_then(|bars| bars.clone());
    match shown {
        Some(bars) => bars.suspend(write),
        None => write(),
    }
}

/// Draws bars on stderr.
#[derive(Debug)]
pub(crate) struct TerminalProgress {
    bars: MultiProgress,
    transfers: Mutex<HashMap<(String, String), ProgressBar>>,
}

impl TerminalProgress {
    /// A progress display on stderr.
    pub(crate) fn new() -> TerminalProgress {
        TerminalProgress::drawn_on(ProgressDrawTarget::stderr())
    }

    /// A progress display on `target`; lines printed from now on hide its bars while they
    /// are written ([`without_bars`]).
    fn drawn_on(target: ProgressDrawTarget) -> TerminalProgress {
        let bars = MultiProgress::with_draw_target(target);
        if let Ok(mut shown) = SHOWN.lock() {
            *shown = Some(bars.clone());
        }
        TerminalProgress {
            bars,
            transfers: Mutex::new(HashMap::new()),
        }
    }

    fn bar(&self, instance: &str, job: &str, total: u64) -> ProgressBar {
        let mut transfers = self.transfers.lock().expect("progress lock");
        transfers
            .entry((instance.to_string(), job.to_string()))
            .or_insert_with(|| {
                let bar = self.bars.add(ProgressBar::new(total));
                bar.set_style(
                    ProgressStyle::with_template("{prefix:30} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta} {msg}")
                        .expect("progress template")
                        .progress_chars("=> "),
                );
                bar.set_prefix(format!("{instance} {job}"));
                bar
            })
            .clone()
    }
}

impl Drop for TerminalProgress {
    fn drop(&mut self) {
        if let Ok(mut shown) = SHOWN.lock() {
            *shown = None;
        }
    }
}

impl EventSink for TerminalProgress {
    fn emit(&self, event: Event) {
        match event {
            Event::TransferProgress {
                instance,
                job,
                bytes,
                total_bytes,
                ..
            } => {
                let bar = self.bar(&instance, &job, total_bytes);
                bar.set_length(total_bytes.max(bytes));
                bar.set_position(bytes);
            }
            Event::ArtifactStored {
                instance,
                job,
                size,
                ..
            } => {
                let bar = self.bar(&instance, &job, size);
                bar.finish_with_message(format!("stored ({size} bytes)"));
            }
            Event::ScriptFinished {
                instance,
                job,
                script,
                exit_status,
                ..
            } => {
                let outcome = if exit_status == 0 { "done" } else { "FAILED" };
                let _ = self
                    .bars
                    .println(format!("{instance} {job}: {script} {outcome}"));
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// A terminal's screen: rows of text and the cursor's row, written by indicatif (as a
    /// `TermLike`) and by the log lines of the test, as a real terminal would show them.
    #[derive(Debug, Default)]
    struct Screen {
        rows: Vec<String>,
        row: usize,
    }

    impl Screen {
        fn at_cursor(&mut self) -> &mut String {
            while self.rows.len() <= self.row {
                self.rows.push(String::new());
            }
            &mut self.rows[self.row]
        }

        /// Text as a program writes it to the terminal: at the cursor, `\n` starts a new row.
        fn print(&mut self, text: &str) {
            let mut lines = text.split('\n').peekable();
            while let Some(line) = lines.next() {
                self.at_cursor().push_str(line);
                if lines.peek().is_some() {
                    self.row += 1;
                    self.at_cursor();
                }
            }
        }
    }

    #[derive(Debug, Clone, Default)]
    struct Terminal(Arc<Mutex<Screen>>);

    impl indicatif::TermLike for Terminal {
        fn width(&self) -> u16 {
            200
        }
        fn move_cursor_up(&self, n: usize) -> std::io::Result<()> {
            let mut screen = self.0.lock().unwrap();
            screen.row = screen.row.saturating_sub(n);
            Ok(())
        }
        fn move_cursor_down(&self, n: usize) -> std::io::Result<()> {
            self.0.lock().unwrap().row += n;
            Ok(())
        }
        fn move_cursor_right(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn move_cursor_left(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn write_line(&self, text: &str) -> std::io::Result<()> {
            self.0.lock().unwrap().print(&format!("{text}\n"));
            Ok(())
        }
        fn write_str(&self, text: &str) -> std::io::Result<()> {
            self.0.lock().unwrap().print(text);
            Ok(())
        }
        fn clear_line(&self) -> std::io::Result<()> {
            self.0.lock().unwrap().at_cursor().clear();
            Ok(())
        }
        fn flush(&self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn log_lines_printed_while_bars_are_shown_are_whole_rows_above_the_bars() {
        let terminal = Terminal::default();
        let progress =
            TerminalProgress::drawn_on(ProgressDrawTarget::term_like(Box::new(terminal.clone())));
        let transfer = |bytes| Event::TransferProgress {
            instance: "db/0".into(),
            job: "pg".into(),
            bytes,
            total_bytes: 1000,
            percent: 0,
        };
        progress.emit(transfer(100));
        progress.bar("db/0", "pg", 1000).tick();
        let lines = [
            "[bbr] 2026/12/07 10:00:00 INFO - Copying backup -- 10% complete",
            "[bbr] 2026/12/07 10:00:01 INFO - Copying backup -- 15% complete",
        ];
        for line in lines {
            without_bars(|| terminal.0.lock().unwrap().print(&format!("{line}\n")));
            progress.emit(transfer(150));
            progress.bar("db/0", "pg", 1000).tick();
        }
        let screen = terminal.0.lock().unwrap();
        let rows: Vec<&str> = screen
            .rows
            .iter()
            .map(String::as_str)
            .filter(|row| !row.is_empty())
            .collect();
        assert_eq!(rows.len(), 3, "{rows:#?}");
        assert_eq!(rows[..2], lines, "{rows:#?}");
        assert!(
            rows[2].starts_with("db/0 pg"),
            "the bar is below them: {rows:#?}"
        );
        drop(screen);
        drop(progress);
        assert!(
            SHOWN.lock().unwrap().is_none(),
            "no bars once the display is gone"
        );
    }
}
