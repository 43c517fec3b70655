//! Reporting: what a run tells the outside world besides its log — `--json` events
//! ([`events`]), the Prometheus textfile ([`metrics`]) and the plan of `pre-backup-check
//! --plan` ([`plan_view`]) and `restore --plan` ([`restore_plan_view`]) and what
//! `post-restore-verify` scripts said ([`verification`]).

pub mod events;
pub mod metrics;
pub mod plan_view;
pub mod restore_plan_view;
pub mod verification;
