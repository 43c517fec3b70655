//! "Backup overdue" (`backups list --deployment D --max-age 26h`): is the newest good backup
//! of a deployment recent enough? For a cron job or a monitoring check that pages when the
//! nightly backup silently stopped happening, or kept failing.
//!
//! A backup counts when it is **complete and verified**, as far as the store can tell without
//! reading the artifacts back:
//! - complete: its manifest exists — Cairn writes it last, only once every artifact's files
//!   matched the instance's own sha256 checksums and the stored bytes' sha256 was recorded;
//! - it belongs where it is stored (its manifest names this deployment and id,
//!   [`super::placement`]);
//! - every object its manifest lists is still there at its recorded version and size, and the
//!   `metadata` object matches its sha256 ([`check_stored_objects`]) — what a restore checks
//!   before it connects to anything.
//!
//! Re-reading every byte is `backups verify` (all of a backup, or `--sample`d), which costs a
//! full download and belongs in its own schedule; an overdue check runs every few minutes.
//! A backup that fails the check is passed over (and named), so a damaged newest backup makes
//! the previous one the newest good one. Backups whose ids lie in the future
//! ([`crate::format::store::placement::is_future`]) are passed over too. The age is the time
//! since the backup's id (when it started).

use std::time::Duration;

use cairn_store::ArtifactStore;
use chrono::{DateTime, Utc};

use crate::error::Error;
use crate::format::store::read::check_stored_objects;
use crate::format::store::{list_backups, read_placed_manifest};

/// Objects checked at once.
const PARALLELISM: usize = 8;

/// The newest good backup of a deployment, measured against a maximum age.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Freshness {
    /// The deployment.
    pub deployment: String,
    /// The newest good backup's id and age, if there is one.
    pub newest: Option<(String, Duration)>,
    /// The maximum age.
    pub max_age: Duration,
    /// Newer complete backups passed over, each with why.
    pub passed_over: Vec<(String, String)>,
}

impl Freshness {
    /// True when there is no good backup, or the newest is older than the maximum age.
    #[must_use]
    pub fn overdue(&self) -> bool {
        self.newest
            .as_ref()
            .is_none_or(|(_, age)| *age > self.max_age)
    }

    /// The verdict as one line.
    #[must_use]
    pub fn line(&self) -> String {
        let max = age_text(self.max_age);
        match &self.newest {
            None => format!(
                "backup overdue: deployment {} has no complete, verified backup in the store (--max-age {max})",
                self.deployment
            ),
            Some((id, age)) if self.overdue() => format!(
                "backup overdue: the newest complete, verified backup of {} is {id}, {} old, more than --max-age {max}",
                self.deployment,
                age_text(*age)
            ),
            Some((id, age)) => format!(
                "the newest complete, verified backup of {} is {id}, {} old, within --max-age {max}",
                self.deployment,
                age_text(*age)
            ),
        }
    }
}

/// `1d 2h 3m 4s`, leaving out the units that are zero (`1d 2h`, `3m 4s`, `0s`).
#[must_use]
pub fn age_text(age: Duration) -> String {
    let seconds = age.as_secs();
    let parts: Vec<String> = [
        (seconds / 86_400, "d"),
        (seconds % 86_400 / 3600, "h"),
        (seconds % 3600 / 60, "m"),
        (seconds % 60, "s"),
    ]
    .iter()
    .filter(|(n, _)| *n > 0)
    .map(|(n, unit)| format!("{n}{unit}"))
    .collect();
    if parts.is_empty() {
        "0s".into()
    } else {
        parts.join(" ")
    }
}

/// Finds the newest good backup of `deployment` (newest first, stopping at the first that
/// passes) and measures its age at `now`.
///
/// # Errors
/// The store cannot be listed.
pub async fn check_freshness(
    store: &dyn ArtifactStore,
    deployment: &str,
    max_age: Duration,
    now: DateTime<Utc>,
) -> Result<Freshness, Error> {
    let backups = list_backups(store, Some(deployment)).await?;
    let mut freshness = Freshness {
        deployment: deployment.to_string(),
        newest: None,
        max_age,
        passed_over: Vec::new(),
    };
    for backup in backups.iter().rev().filter(|b| b.complete) {
        let Some(time) = backup.time else {
            continue;
        };
        if backup.is_future(now) {
            freshness
                .passed_over
                .push((backup.id.clone(), "its id lies in the future".into()));
            continue;
        }
        match good(store, deployment, &backup.id).await {
            Ok(()) => {
                let age = (now - time).to_std().unwrap_or_default();
                freshness.newest = Some((backup.id.clone(), age));
                break;
            }
            Err(why) => freshness.passed_over.push((backup.id.clone(), why)),
        }
    }
    Ok(freshness)
}

/// Whether a complete backup is good (module docs); `Err` says why not.
async fn good(store: &dyn ArtifactStore, deployment: &str, id: &str) -> Result<(), String> {
    let manifest = read_placed_manifest(store, deployment, id)
        .await
        .map_err(|e| e.to_string())?;
    check_stored_objects(store, &manifest, PARALLELISM)
        .await
        .map_err(|errors| {
            errors
                .errors()
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn freshness(newest: Option<u64>) -> Freshness {
        Freshness {
            deployment: "cf".into(),
            newest: newest.map(|s| ("20240102T030405Z".to_string(), Duration::from_secs(s))),
            max_age: Duration::from_secs(26 * 3600),
            passed_over: vec![],
        }
    }

    #[test]
    fn older_than_the_maximum_or_none_is_overdue() {
        assert!(!freshness(Some(3600)).overdue());
        assert!(!freshness(Some(26 * 3600)).overdue());
        assert!(freshness(Some(26 * 3600 + 1)).overdue());
        assert!(freshness(None).overdue());
        assert_eq!(
            freshness(Some(27 * 3600 + 61)).line(),
            "backup overdue: the newest complete, verified backup of cf is 20240102T030405Z, 1d 3h 1m 1s old, more than --max-age 1d 2h"
        );
        assert!(freshness(None)
            .line()
            .starts_with("backup overdue: deployment cf has no complete, verified backup"));
        assert!(freshness(Some(5)).line().contains("5s old, within"));
    }

    #[test]
    fn ages_read_as_days_hours_minutes_seconds() {
        assert_eq!(age_text(Duration::ZERO), "0s");
        assert_eq!(age_text(Duration::from_secs(61)), "1m 1s");
        assert_eq!(age_text(Duration::from_secs(3600)), "1h");
        assert_eq!(age_text(Duration::from_secs(90_061)), "1d 1h 1m 1s");
    }
}
