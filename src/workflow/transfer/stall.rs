//! Stall detection for artifact streams (`--stall-timeout`).
//!
//! A network cut without a FIN or RST (a link gone silent, a firewall dropping packets) leaves
//! a stream waiting: TCP retransmits for many minutes and SSH keepalives take their interval
//! times their count. A copy that moves no byte for the limit is therefore stopped by a
//! watchdog on the bytes it moved, whatever the cause — the instance, the network, or a
//! destination that takes nothing. The stream counts what it moves ([`Moved`]); the watchdog
//! looks at the count a few times per limit ([`stalled`]) and judges with [`StallClock`],
//! which is pure so its rule is tested without waiting.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

/// Bytes moved on one stream so far: the stream adds, its watchdog reads.
#[derive(Debug, Clone, Default)]
pub(super) struct Moved(Arc<AtomicU64>);

impl Moved {
    /// Counts `bytes` more.
    pub(super) fn add(&self, bytes: usize) {
        self.0.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    fn total(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// The watchdog's rule: a stream is stalled once its count has not changed for the limit.
#[derive(Debug)]
struct StallClock {
    limit: Duration,
    total: u64,
    still_since: Instant,
}

impl StallClock {
    fn new(limit: Duration, total: u64, now: Instant) -> StallClock {
        StallClock {
            limit,
            total,
            still_since: now,
        }
    }

    /// One look at the count: `total` bytes moved so far at `now`. True once nothing moved
    /// for the limit.
    fn look(&mut self, total: u64, now: Instant) -> bool {
        if total != self.total {
            self.total = total;
            self.still_since = now;
            return false;
        }
        now.saturating_duration_since(self.still_since) >= self.limit
    }
}

/// How often the watchdog looks: ten times per limit, at most once a second and at least
/// every 50 ms, so it fires at most a tenth of the limit (or a second) late.
fn look_interval(limit: Duration) -> Duration {
    (limit / 10).clamp(Duration::from_millis(50), Duration::from_secs(1))
}

/// Resolves once nothing moved on `moved` for `limit`; never, while bytes keep moving.
pub(super) async fn stalled(moved: &Moved, limit: Duration) {
    let mut clock = StallClock::new(limit, moved.total(), Instant::now());
    let mut looks = tokio::time::interval(look_interval(limit));
    looks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        looks.tick().await;
        if clock.look(moved.total(), Instant::now()) {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: Duration = Duration::from_secs(5);

    #[test]
    fn a_stream_that_keeps_moving_never_stalls_however_long_it_runs() {
        let start = Instant::now();
        let mut clock = StallClock::new(LIMIT, 0, start);
        for second in 1..=600 {
            let now = start + Duration::from_secs(second);
            assert!(!clock.look(second * 10, now), "stalled at {second} s");
        }
    }

    #[test]
    fn a_stream_still_for_the_limit_is_stalled_and_not_before() {
        let start = Instant::now();
        let mut clock = StallClock::new(LIMIT, 100, start);
        assert!(!clock.look(100, start + Duration::from_millis(4_999)));
        assert!(clock.look(100, start + LIMIT));
        // A byte moved resets the clock: the limit counts from the last movement.
        let mut clock = StallClock::new(LIMIT, 100, start);
        assert!(!clock.look(101, start + Duration::from_secs(4)));
        assert!(!clock.look(101, start + Duration::from_secs(8)));
        assert!(clock.look(101, start + Duration::from_secs(9)));
    }

    #[test]
    fn the_watchdog_looks_often_enough_for_short_and_long_limits() {
        assert_eq!(
            look_interval(Duration::from_secs(300)),
            Duration::from_secs(1)
        );
        assert_eq!(
            look_interval(Duration::from_secs(5)),
            Duration::from_millis(500)
        );
        assert_eq!(
            look_interval(Duration::from_millis(100)),
            Duration::from_millis(50)
        );
    }

    #[tokio::test]
    async fn the_watchdog_fires_on_a_stream_that_stopped() {
        let moved = Moved::default();
        moved.add(10);
        // The generous bound only keeps a broken watchdog from hanging the test; it asserts
        // no timing.
        let fired = tokio::time::timeout(
            Duration::from_secs(30),
            stalled(&moved, Duration::from_millis(100)),
        )
        .await;
        assert!(fired.is_ok(), "a stopped stream was never judged stalled");
    }
}
