//! Live progress on a terminal: one bar per artifact transfer (bytes, rate, ETA) and the
//! phase of each job (locked, backed up, unlocked), driven by the same events `--json`
//! prints. When stdout is not a terminal, the bbr-style log lines (with a percentage every 5 %
//! of each transfer) are all there is, so wrappers that grep them keep working.

use std::collections::HashMap;
use std::sync::Mutex;

use cairn::report::events::{Event, EventSink};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Draws bars on stderr.
#[derive(Debug)]
pub(crate) struct TerminalProgress {
    bars: MultiProgress,
    transfers: Mutex<HashMap<(String, String), ProgressBar>>,
}

impl TerminalProgress {
    /// A progress display on stderr.
    pub(crate) fn new() -> TerminalProgress {
        TerminalProgress {
            bars: MultiProgress::with_draw_target(ProgressDrawTarget::stderr()),
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
