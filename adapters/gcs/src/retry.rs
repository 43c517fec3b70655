//! The adapter's retry policy, set explicitly rather than left to chance: the JSON API client
//! is the adapter's own (`reqwest`), which retries nothing by itself.
//!
//! A transient failure (408, 429, 5xx, a reset or dropped connection, a timeout, a body cut
//! short) is retried up to [`ATTEMPTS`] attempts in all, with exponential backoff and jitter
//! (0.1–0.2 s, 0.2–0.4 s, ... at most 10 s), and no retry starts [`TOTAL`] after the first
//! attempt. What is retried: every request except the chunk `PUT`s of an upload, which resume
//! from what the session holds (`upload`), and a download cut short resumes with a `Range`
//! request of the same generation (`download`). The values are fixed, as the S3 adapter's
//! are: a store URL has no place for them that would not leak into every backup's identity,
//! and they ride out a store's bad minute, which is what a nightly run needs.

use std::time::{Duration, Instant};

/// Attempts per request, the first included.
pub(crate) const ATTEMPTS: u32 = 6;
/// No retry starts this long after the first attempt.
pub(crate) const TOTAL: Duration = Duration::from_mins(2);
/// The pause step before the first retry; it doubles for each further one.
const FIRST_PAUSE: Duration = Duration::from_millis(200);
/// The longest pause step.
const MAX_PAUSE: Duration = Duration::from_secs(10);

/// The pause before retry number `retry` (1 for the first): half the doubling step plus up to
/// as much again, from `jitter` in `[0, 1)`.
pub(crate) fn pause(retry: u32, jitter: f64) -> Duration {
    let step = FIRST_PAUSE
        .saturating_mul(1 << retry.saturating_sub(1).min(20))
        .min(MAX_PAUSE);
    let half = step / 2;
    half + half.mul_f64(jitter.clamp(0.0, 1.0))
}

/// The attempts at one request.
#[derive(Debug)]
pub(crate) struct Attempts {
    started: Instant,
    made: u32,
}

impl Attempts {
    /// The first attempt is about to be made.
    pub(crate) fn start() -> Attempts {
        Attempts {
            started: Instant::now(),
            made: 1,
        }
    }

    /// Attempts made so far.
    pub(crate) fn made(&self) -> u32 {
        self.made
    }

    /// After a transient failure: the pause before the next attempt, or `None` when the
    /// attempts or the total time are used up.
    pub(crate) fn next_pause(&mut self) -> Option<Duration> {
        self.next_with(rand::random::<f64>(), self.started.elapsed())
    }

    fn next_with(&mut self, jitter: f64, elapsed: Duration) -> Option<Duration> {
        if self.made >= ATTEMPTS {
            return None;
        }
        let pause = pause(self.made, jitter);
        if elapsed + pause > TOTAL {
            return None;
        }
        self.made += 1;
        Some(pause)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_double_with_jitter_up_to_the_cap() {
        assert_eq!(pause(1, 0.0), Duration::from_millis(100));
        assert_eq!(pause(1, 1.0), Duration::from_millis(200));
        assert_eq!(pause(2, 0.0), Duration::from_millis(200));
        assert_eq!(
            pause(6, 1.0),
            Duration::from_secs(6) + Duration::from_millis(400)
        );
        assert_eq!(pause(30, 1.0), MAX_PAUSE);
        assert_eq!(pause(30, 0.0), MAX_PAUSE / 2);
    }

    #[test]
    fn attempts_stop_at_the_limit_and_the_total_time() {
        let mut attempts = Attempts::start();
        for _ in 1..ATTEMPTS {
            assert!(attempts.next_with(0.5, Duration::ZERO).is_some());
        }
        assert_eq!(attempts.made(), ATTEMPTS);
        assert_eq!(attempts.next_with(0.5, Duration::ZERO), None);
        let mut late = Attempts::start();
        assert_eq!(late.next_with(0.5, TOTAL), None);
        assert_eq!(late.made(), 1);
    }
}
