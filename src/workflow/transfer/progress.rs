//! bbr's `Copying backup for job J on G/ID -- N% complete` lines and the matching
//! `transfer_progress` events for one copy.
//!
//! The counters are shared: the blocking thread that reads the stream advances them, and the
//! drain's async side may learn the expected size only while the stream already runs (a
//! backup's `du` of a million small files takes seconds, so it runs beside the stream). When
//! the size comes late, [`Progress::catch_up`] reports what was moved meanwhile, so an
//! artifact that finished before its size was known still gets its progress line.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::stall;
use super::RunContext;
use crate::model::deployment::Instance;
use crate::model::job::Job;
use crate::report::events::{Event, EventSink};

/// Percentage points between two progress lines. As bbr (`readwriter/log_percentage.go`), the
/// first line comes at 5 % and each next one 5 points after the last; 100 % is logged once
/// (bbr logs it again on every write past its estimate).
const PROGRESS_STEP: u64 = 5;

/// One copy's progress. Clones share the counters.
#[derive(Clone)]
pub(super) struct Progress {
    /// `for job J on G/ID`.
    pub(super) label: String,
    instance: String,
    job: String,
    counters: Arc<Counters>,
    events: Option<Arc<dyn EventSink>>,
    /// What the stall watchdog reads.
    pub(super) moved: stall::Moved,
}

/// The numbers behind the lines.
#[derive(Default)]
struct Counters {
    /// The expected bytes, 0 while unknown.
    total: AtomicU64,
    done: AtomicU64,
    /// The percentage the next line waits for.
    next_percent: AtomicU64,
}

impl Progress {
    /// A copy of `total` expected bytes; 0 while the size is not known yet.
    pub(super) fn new(
        label: String,
        instance: &Instance,
        job: &Job,
        total: u64,
        context: &RunContext,
    ) -> Self {
        Progress::named(
            label,
            instance.name.to_string(),
            job.name.clone(),
            total,
            context.events.clone(),
        )
    }

    fn named(
        label: String,
        instance: String,
        job: String,
        total: u64,
        events: Option<Arc<dyn EventSink>>,
    ) -> Self {
        let counters = Counters {
            total: AtomicU64::new(total),
            next_percent: AtomicU64::new(PROGRESS_STEP),
            ..Counters::default()
        };
        Progress {
            label,
            instance,
            job,
            counters: Arc::new(counters),
            events,
            moved: stall::Moved::default(),
        }
    }

    /// The expected bytes, 0 while unknown.
    pub(super) fn total(&self) -> u64 {
        self.counters.total.load(Ordering::Relaxed)
    }

    /// Sets the expected bytes once they are known.
    pub(super) fn set_total(&self, total: u64) {
        self.counters.total.store(total, Ordering::Relaxed);
    }

    /// Counts `bytes` more and reports each 5 % step passed. The first bytes always give an
    /// event (without a log line: bbr has none), so a `--json` consumer sees each transfer
    /// start even before its size is known.
    pub(super) fn advance(&mut self, bytes: usize) {
        self.moved.add(bytes);
        let before = self
            .counters
            .done
            .fetch_add(bytes as u64, Ordering::Relaxed);
        let reported = self.report();
        if before == 0 && bytes > 0 && !reported {
            let total = self.total();
            self.emit(bytes as u64, total, percent_of(bytes as u64, total));
        }
    }

    /// Reports what was moved before the size was known (call it once the stream has ended
    /// and [`Progress::set_total`] was called, so that no other clone reports at the same time).
    pub(super) fn catch_up(&self) {
        self.report();
    }

    /// Logs bbr's line and emits the event when a 5 % step was passed; true if it did.
    fn report(&self) -> bool {
        let total = self.total();
        if total == 0 {
            return false;
        }
        let done = self.counters.done.load(Ordering::Relaxed);
        let percent = percent_of(done, total);
        if percent < self.counters.next_percent.load(Ordering::Relaxed) {
            return false;
        }
        tracing::info!("Copying backup {} -- {percent}% complete", self.label);
        self.counters
            .next_percent
            .store(percent + PROGRESS_STEP, Ordering::Relaxed);
        self.emit(done, total, percent);
        true
    }

    fn emit(&self, done: u64, total: u64, percent: u64) {
        if let Some(events) = &self.events {
            events.emit(Event::TransferProgress {
                instance: self.instance.clone(),
                job: self.job.clone(),
                bytes: done,
                total_bytes: total,
                percent,
            });
        }
    }
}

/// `done` as a percentage of `total` (at most 100; 0 while the total is unknown).
fn percent_of(done: u64, total: u64) -> u64 {
    if total == 0 {
        return 0;
    }
    (u128::from(done) * 100 / u128::from(total)).min(100) as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// The percentages and totals of the events emitted.
    #[derive(Debug, Default)]
    struct Recorded(Mutex<Vec<(u64, u64, u64)>>);

    impl EventSink for Recorded {
        fn emit(&self, event: Event) {
            if let Event::TransferProgress {
                bytes,
                total_bytes,
                percent,
                ..
            } = event
            {
                self.0.lock().unwrap().push((bytes, total_bytes, percent));
            }
        }
    }

    fn progress(total: u64) -> (Progress, Arc<Recorded>) {
        let recorded = Arc::new(Recorded::default());
        let events: Arc<dyn EventSink> = recorded.clone();
        let progress = Progress::named(
            "for job j on g/0".into(),
            "g/0".into(),
            "j".into(),
            total,
            Some(events),
        );
        (progress, recorded)
    }

    fn events(recorded: &Recorded) -> Vec<(u64, u64, u64)> {
        recorded.0.lock().unwrap().clone()
    }

    #[test]
    fn the_first_bytes_give_an_event_then_every_five_percent() {
        let (mut progress, recorded) = progress(1000);
        progress.advance(10);
        progress.advance(30);
        progress.advance(20);
        progress.advance(940);
        assert_eq!(
            events(&recorded),
            [(10, 1000, 1), (60, 1000, 6), (1000, 1000, 100)]
        );
    }

    #[test]
    fn a_size_known_late_is_caught_up_once() {
        let (mut progress, recorded) = progress(0);
        let late = progress.clone();
        progress.advance(500);
        progress.advance(500);
        assert_eq!(events(&recorded), [(500, 0, 0)]);
        late.set_total(1000);
        late.catch_up();
        late.catch_up();
        assert_eq!(events(&recorded), [(500, 0, 0), (1000, 1000, 100)]);
    }

    #[test]
    fn a_size_known_midway_reports_from_the_next_bytes_on() {
        let (mut progress, recorded) = progress(0);
        progress.advance(100);
        progress.set_total(1000);
        progress.advance(300);
        progress.advance(10);
        progress.clone().catch_up();
        assert_eq!(events(&recorded), [(100, 0, 0), (400, 1000, 40)]);
    }
}
