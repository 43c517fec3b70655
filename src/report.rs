//! Reporting: what a run tells the outside world besides its log — `--json` events
//! ([`events`]), the Prometheus textfile ([`metrics`]), the webhooks of `--notify-url`
//! ([`notify`]), the plan of `pre-backup-check --plan` ([`plan_view`]) and `restore --plan`
//! ([`restore_plan_view`]) and what `post-restore-verify` scripts said ([`verification`]); the
//! history of the backups in a store (`backups report`: the model [`history`], its page
//! [`html`]).

pub mod events;
pub mod history;
pub mod html;
pub mod metrics;
pub mod notify;
pub mod plan_view;
pub mod restore_plan_view;
pub mod verification;

/// `1.5 MiB`, or `512 B`.
#[must_use]
pub fn size_text(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}
