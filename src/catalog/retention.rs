//! Retention: which backups of a deployment `cairn backups prune` keeps, and why.
//!
//! The rules are restic's and rustic's. Backups are walked newest first and:
//!
//! - `keep_last` keeps the N newest;
//! - `keep_daily` keeps the newest backup of each of the last N days that have backups, and
//!   `keep_weekly` (ISO weeks) and `keep_monthly` do the same for weeks and months. Days,
//!   weeks and months are UTC, like the backup ids they are read from;
//! - a backup kept by any rule is kept, and the plan says by which ones.
//!
//! Only complete backups that are still restore points count: an incomplete backup (no
//! manifest) fills no slot and is deleted, and a backup that failed `verify` fills none either
//! (so `keep_last: 3` still keeps three restorable backups).
//!
//! On top of the rules, safety rules that always win:
//!
//! - A policy that keeps nothing is refused ([`EmptyPolicy`]): prune never deletes everything.
//! - The newest complete backup that passed `verify` is kept. The caller verifies complete
//!   backups newest first ([`verification_order`]) until one passes and hands the outcome over
//!   as [`Verification`]. Backups that failed are kept too, and reported: an operator has to
//!   look at them, and a damaged object may be one the store's versioning can still bring back.
//! - An incomplete backup newer than every complete one and younger than
//!   [`IN_PROGRESS_WINDOW`] is kept: it may be a backup still streaming, and deleting its first
//!   objects would let it finish as a "complete" backup that cannot be restored. Once a newer
//!   backup completed, or the window passed, it is removed like any incomplete backup.
//!
//! - A backup whose id is more than 10 minutes in the future
//!   ([`crate::format::store::placement::is_future`]) is kept and fills no slot, is never
//!   "newest verified" and does not make an incomplete backup look older than it: no clock is
//!   that wrong, so it is a copy put there to take the newest slots (and make prune delete
//!   the real backups) or the mark of a broken clock, for an operator to look at.
//!
//! Object Lock is not a rule here: the plan does not know what the store protects. A delete the
//! store refuses is the executor's business ([`crate::catalog::delete_unless_protected`]).
//!
//! Everything in this module is pure: backups, a policy, the verification outcome and "now"
//! in, a [`PrunePlan`] out.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Datelike, Duration, NaiveDate, Utc};

use crate::format::store::BackupSummary;

/// How long an incomplete backup newer than every complete one may still be running.
pub const IN_PROGRESS_WINDOW: Duration = Duration::hours(24);

/// How many backups each rule keeps; 0 turns a rule off.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// The N newest backups.
    pub keep_last: u32,
    /// The newest backup of each of the last N days that have backups.
    pub keep_daily: u32,
    /// The newest backup of each of the last N ISO weeks that have backups.
    pub keep_weekly: u32,
    /// The newest backup of each of the last N months that have backups.
    pub keep_monthly: u32,
}

/// A policy with every rule off: it would delete every backup, so it is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Nothing to keep: pass at least one of --keep-last, --keep-daily, --keep-weekly, --keep-monthly with N > 0 (prune never deletes every backup)")]
pub struct EmptyPolicy;

impl RetentionPolicy {
    /// The policy, when at least one rule keeps something.
    ///
    /// # Errors
    /// [`EmptyPolicy`] when every count is 0.
    pub fn check(self) -> Result<RetentionPolicy, EmptyPolicy> {
        if self == RetentionPolicy::default() {
            Err(EmptyPolicy)
        } else {
            Ok(self)
        }
    }
}

/// What verifying complete backups newest first found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Verification {
    /// Id of the newest complete backup that passed, if any did.
    pub passed: Option<String>,
    /// Backups that failed (all newer than `passed`): id → what was wrong.
    pub failed: BTreeMap<String, String>,
}

/// Why a backup is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeepReason {
    /// Among the `keep_last` newest.
    Last,
    /// The newest of this day.
    Daily(NaiveDate),
    /// The newest of this ISO week (year, week).
    Weekly(i32, u32),
    /// The newest of this month (year, month).
    Monthly(i32, u32),
    /// The newest complete backup that passed `verify`.
    NewestVerified,
    /// Incomplete, but it may be a backup still running.
    MayBeRunning,
    /// Its id is not a time: prune does not delete what it cannot place.
    UnknownTime,
    /// Its id is more than 10 minutes in the future: it fills no slot, and prune does not
    /// delete it either.
    FutureId,
}

impl fmt::Display for KeepReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeepReason::Last => write!(f, "last"),
            KeepReason::Daily(day) => write!(f, "daily {day}"),
            KeepReason::Weekly(year, week) => write!(f, "weekly {year}-W{week:02}"),
            KeepReason::Monthly(year, month) => write!(f, "monthly {year}-{month:02}"),
            KeepReason::NewestVerified => write!(f, "newest verified"),
            KeepReason::MayBeRunning => write!(f, "incomplete, may still be running"),
            KeepReason::UnknownTime => write!(f, "time unknown"),
            KeepReason::FutureId => write!(f, "id in the future, ignored by every rule"),
        }
    }
}

/// Why a backup is deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeleteReason {
    /// It has no manifest.
    Incomplete,
    /// No rule keeps it.
    Expired,
}

impl fmt::Display for DeleteReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DeleteReason::Incomplete => "incomplete",
            DeleteReason::Expired => "no rule keeps it",
        })
    }
}

/// What prune does with one backup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Kept, for these reasons (never empty).
    Keep(Vec<KeepReason>),
    /// Failed `verify` (what was wrong): kept for an operator to look at.
    FailedVerify(String),
    /// Deleted.
    Delete(DeleteReason),
}

/// One backup and its verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The backup.
    pub backup: BackupSummary,
    /// What to do with it.
    pub verdict: Verdict,
}

/// Every backup of one deployment and what prune does with it, oldest first (as
/// `backups list`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrunePlan {
    /// The deployment.
    pub deployment: String,
    /// One per backup of the deployment.
    pub decisions: Vec<Decision>,
}

impl PrunePlan {
    /// The backups to delete.
    pub fn deletions(&self) -> impl Iterator<Item = &BackupSummary> {
        self.decisions
            .iter()
            .filter(|d| matches!(d.verdict, Verdict::Delete(_)))
            .map(|d| &d.backup)
    }
}

/// The complete backups of `deployment`, newest first: the order in which to verify them
/// until one passes. Backups whose ids are in the future at `now` are left out.
#[must_use]
pub fn verification_order<'a>(
    deployment: &str,
    backups: &'a [BackupSummary],
    now: DateTime<Utc>,
) -> Vec<&'a BackupSummary> {
    let mut complete: Vec<&BackupSummary> = backups
        .iter()
        .filter(|b| b.deployment == deployment && b.complete && !b.is_future(now))
        .collect();
    complete.sort_by(|a, b| newest_first(a, b));
    complete
}

fn newest_first(a: &BackupSummary, b: &BackupSummary) -> std::cmp::Ordering {
    (b.time, &b.id).cmp(&(a.time, &a.id))
}

/// One bucketing rule: how many buckets it may still keep and the last bucket it kept.
struct Rule<K> {
    remaining: u32,
    last: Option<K>,
}

impl<K: PartialEq> Rule<K> {
    fn new(count: u32) -> Self {
        Rule {
            remaining: count,
            last: None,
        }
    }

    /// True when a backup in `bucket` (walking newest first) is kept by this rule.
    fn keeps(&mut self, bucket: K) -> bool {
        if self.remaining == 0 || self.last.as_ref() == Some(&bucket) {
            return false;
        }
        self.remaining -= 1;
        self.last = Some(bucket);
        true
    }
}

/// The rules' state while walking the backups newest first.
struct Rules {
    last: u32,
    daily: Rule<NaiveDate>,
    weekly: Rule<(i32, u32)>,
    monthly: Rule<(i32, u32)>,
}

impl Rules {
    fn new(policy: &RetentionPolicy) -> Self {
        Rules {
            last: policy.keep_last,
            daily: Rule::new(policy.keep_daily),
            weekly: Rule::new(policy.keep_weekly),
            monthly: Rule::new(policy.keep_monthly),
        }
    }

    /// The reasons the rules keep the next (older) countable backup, taken at `time`.
    fn reasons(&mut self, time: DateTime<Utc>) -> Vec<KeepReason> {
        let mut reasons = Vec::new();
        if self.last > 0 {
            self.last -= 1;
            reasons.push(KeepReason::Last);
        }
        let day = time.date_naive();
        if self.daily.keeps(day) {
            reasons.push(KeepReason::Daily(day));
        }
        let week = time.iso_week();
        if self.weekly.keeps((week.year(), week.week())) {
            reasons.push(KeepReason::Weekly(week.year(), week.week()));
        }
        if self.monthly.keeps((time.year(), time.month())) {
            reasons.push(KeepReason::Monthly(time.year(), time.month()));
        }
        reasons
    }
}

/// Decides, for every backup of `deployment` in `backups`, whether prune keeps or deletes it.
/// Backups of other deployments are ignored.
///
/// # Errors
/// [`EmptyPolicy`] when the policy keeps nothing.
pub fn plan(
    deployment: &str,
    backups: &[BackupSummary],
    policy: &RetentionPolicy,
    verification: &Verification,
    now: DateTime<Utc>,
) -> Result<PrunePlan, EmptyPolicy> {
    policy.check()?;
    let mut ours: Vec<&BackupSummary> = backups
        .iter()
        .filter(|b| b.deployment == deployment)
        .collect();
    ours.sort_by(|a, b| newest_first(a, b));
    let newest_complete = ours
        .iter()
        .find(|b| b.complete && !b.is_future(now))
        .and_then(|b| b.time);
    let mut rules = Rules::new(policy);
    let mut decisions: Vec<Decision> = ours
        .into_iter()
        .map(|backup| {
            let verdict = match backup.time {
                None => Verdict::Keep(vec![KeepReason::UnknownTime]),
                Some(_) if backup.is_future(now) => Verdict::Keep(vec![KeepReason::FutureId]),
                Some(time) if !backup.complete => {
                    let newest = newest_complete.is_none_or(|complete| time > complete);
                    if newest && now - time < IN_PROGRESS_WINDOW {
                        Verdict::Keep(vec![KeepReason::MayBeRunning])
                    } else {
                        Verdict::Delete(DeleteReason::Incomplete)
                    }
                }
                Some(_) if verification.failed.contains_key(&backup.id) => {
                    Verdict::FailedVerify(verification.failed[&backup.id].clone())
                }
                Some(time) => {
                    let mut reasons = rules.reasons(time);
                    if verification.passed.as_deref() == Some(backup.id.as_str()) {
                        reasons.push(KeepReason::NewestVerified);
                    }
                    if reasons.is_empty() {
                        Verdict::Delete(DeleteReason::Expired)
                    } else {
                        Verdict::Keep(reasons)
                    }
                }
            };
            Decision {
                backup: backup.clone(),
                verdict,
            }
        })
        .collect();
    decisions.reverse();
    Ok(PrunePlan {
        deployment: deployment.to_string(),
        decisions,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, 0).unwrap()
    }

    fn backup(time: DateTime<Utc>, complete: bool) -> BackupSummary {
        BackupSummary {
            deployment: "cf".into(),
            id: time.format("%Y%m%dT%H%M%SZ").to_string(),
            time: Some(time),
            size: 100,
            complete,
        }
    }

    fn id(time: DateTime<Utc>) -> String {
        time.format("%Y%m%dT%H%M%SZ").to_string()
    }

    /// "Now" of every test: Friday 2026-04-03 12:00 UTC.
    fn now() -> DateTime<Utc> {
        at(2026, 4, 3, 12, 0)
    }

    /// 90 nights of backups at 02:00 (2026-01-04 .. 2026-04-03), hourly backups at 08..11 on
    /// the last two days, a few incomplete ones (a failed night on 2026-03-15 at 03:00, one
    /// mid-February, and one still running at 11:30 today), and one backup of another
    /// deployment.
    fn history() -> Vec<BackupSummary> {
        let mut backups = Vec::new();
        let first = at(2026, 1, 4, 2, 0);
        for day in 0..90 {
            backups.push(backup(first + Duration::days(day), true));
        }
        for hour in 8..12 {
            backups.push(backup(at(2026, 4, 2, hour, 0), true));
            backups.push(backup(at(2026, 4, 3, hour, 0), true));
        }
        backups.push(backup(at(2026, 3, 15, 3, 0), false));
        backups.push(backup(at(2026, 2, 14, 2, 30), false));
        backups.push(backup(at(2026, 4, 3, 11, 30), false));
        backups.push(BackupSummary {
            deployment: "other".into(),
            ..backup(at(2026, 1, 1, 0, 0), true)
        });
        backups.sort_by_key(|b| b.time);
        backups
    }

    fn policy(last: u32, daily: u32, weekly: u32, monthly: u32) -> RetentionPolicy {
        RetentionPolicy {
            keep_last: last,
            keep_daily: daily,
            keep_weekly: weekly,
            keep_monthly: monthly,
        }
    }

    /// The newest complete backup passed verify.
    fn newest_passed(backups: &[BackupSummary]) -> Verification {
        Verification {
            passed: Some(verification_order("cf", backups, now())[0].id.clone()),
            failed: BTreeMap::new(),
        }
    }

    fn kept(plan: &PrunePlan) -> Vec<String> {
        plan.decisions
            .iter()
            .filter(|d| !matches!(d.verdict, Verdict::Delete(_)))
            .map(|d| d.backup.id.clone())
            .collect()
    }

    fn ids(times: &[DateTime<Utc>]) -> Vec<String> {
        let mut ids: Vec<String> = times.iter().map(|t| id(*t)).collect();
        ids.sort();
        ids
    }

    fn run(policy: RetentionPolicy) -> PrunePlan {
        let backups = history();
        plan("cf", &backups, &policy, &newest_passed(&backups), now()).unwrap()
    }

    #[test]
    fn keep_last_keeps_the_newest_complete_backups_and_what_may_be_running() {
        let plan = run(policy(3, 0, 0, 0));
        assert_eq!(
            kept(&plan),
            ids(&[
                at(2026, 4, 3, 9, 0),
                at(2026, 4, 3, 10, 0),
                at(2026, 4, 3, 11, 0),
                at(2026, 4, 3, 11, 30), // incomplete, newer than every complete one, 30 min old
            ])
        );
        assert_eq!(plan.deployment, "cf");
        assert_eq!(
            plan.decisions.len(),
            90 + 8 + 3,
            "one decision per backup of cf"
        );
        assert!(plan.decisions.iter().all(|d| d.backup.deployment == "cf"));
        assert!(
            plan.decisions
                .windows(2)
                .all(|w| w[0].backup.time <= w[1].backup.time),
            "oldest first"
        );
    }

    #[test]
    fn keep_daily_keeps_the_newest_of_each_day() {
        let plan = run(policy(0, 5, 0, 0));
        assert_eq!(
            kept(&plan),
            ids(&[
                at(2026, 3, 30, 2, 0),
                at(2026, 3, 31, 2, 0),
                at(2026, 4, 1, 2, 0),
                at(2026, 4, 2, 11, 0),
                at(2026, 4, 3, 11, 0),
                at(2026, 4, 3, 11, 30),
            ])
        );
        let newest = plan
            .decisions
            .iter()
            .find(|d| d.backup.id == "20260403T110000Z")
            .unwrap();
        assert_eq!(
            newest.verdict,
            Verdict::Keep(vec![
                KeepReason::Daily(NaiveDate::from_ymd_opt(2026, 4, 3).unwrap()),
                KeepReason::NewestVerified
            ])
        );
    }

    #[test]
    fn days_without_backups_do_not_use_up_daily_slots() {
        let mut backups = history();
        // No backup on 2026-04-01 and 2026-03-31: the five days are the last five that have one.
        backups.retain(|b| !b.id.starts_with("20260401") && !b.id.starts_with("20260331"));
        let plan = plan(
            "cf",
            &backups,
            &policy(0, 5, 0, 0),
            &newest_passed(&backups),
            now(),
        )
        .unwrap();
        assert_eq!(
            kept(&plan),
            ids(&[
                at(2026, 3, 28, 2, 0),
                at(2026, 3, 29, 2, 0),
                at(2026, 3, 30, 2, 0),
                at(2026, 4, 2, 11, 0),
                at(2026, 4, 3, 11, 0),
                at(2026, 4, 3, 11, 30),
            ])
        );
    }

    #[test]
    fn keep_weekly_uses_iso_weeks() {
        // 2026-04-03 is a Friday of ISO week 14; weeks start on Monday, so the newest backup of
        // each earlier week is Sunday's.
        let plan = run(policy(0, 0, 4, 0));
        assert_eq!(
            kept(&plan),
            ids(&[
                at(2026, 3, 15, 2, 0), // W11
                at(2026, 3, 22, 2, 0), // W12
                at(2026, 3, 29, 2, 0), // W13
                at(2026, 4, 3, 11, 0), // W14
                at(2026, 4, 3, 11, 30),
            ])
        );
        let reason = |id: &str| {
            plan.decisions
                .iter()
                .find(|d| d.backup.id == id)
                .map(|d| d.verdict.clone())
                .unwrap()
        };
        assert_eq!(
            reason("20260315T020000Z"),
            Verdict::Keep(vec![KeepReason::Weekly(2026, 11)])
        );
        // The failed night of 2026-03-15 at 03:00 is newer, but incomplete: it is not the week's.
        assert_eq!(
            reason("20260315T030000Z"),
            Verdict::Delete(DeleteReason::Incomplete)
        );
    }

    #[test]
    fn iso_week_one_can_start_in_the_previous_year() {
        // 2024-12-30 (Monday) .. 2025-01-05 are ISO week 2025-W01.
        let backups: Vec<BackupSummary> = [
            at(2024, 12, 29, 2, 0), // Sunday, 2024-W52
            at(2024, 12, 30, 2, 0), // 2025-W01
            at(2025, 1, 2, 2, 0),   // 2025-W01
        ]
        .into_iter()
        .map(|t| backup(t, true))
        .collect();
        let plan = plan(
            "cf",
            &backups,
            &policy(0, 0, 2, 0),
            &Verification::default(),
            now(),
        )
        .unwrap();
        assert_eq!(
            plan.decisions
                .iter()
                .map(|d| d.verdict.clone())
                .collect::<Vec<_>>(),
            vec![
                Verdict::Keep(vec![KeepReason::Weekly(2024, 52)]),
                Verdict::Delete(DeleteReason::Expired),
                Verdict::Keep(vec![KeepReason::Weekly(2025, 1)]),
            ]
        );
        assert_eq!(KeepReason::Weekly(2025, 1).to_string(), "weekly 2025-W01");
    }

    #[test]
    fn keep_monthly_keeps_the_newest_of_each_month() {
        let plan = run(policy(0, 0, 0, 6));
        // Only four months have backups: 6 slots keep four.
        assert_eq!(
            kept(&plan),
            ids(&[
                at(2026, 1, 31, 2, 0),
                at(2026, 2, 28, 2, 0),
                at(2026, 3, 31, 2, 0),
                at(2026, 4, 3, 11, 0),
                at(2026, 4, 3, 11, 30),
            ])
        );
    }

    #[test]
    fn a_backup_kept_by_several_rules_says_so_and_the_rules_add_up() {
        let plan = run(policy(2, 3, 2, 2));
        assert_eq!(
            kept(&plan),
            ids(&[
                at(2026, 3, 29, 2, 0),  // weekly W13
                at(2026, 3, 31, 2, 0),  // monthly 2026-03
                at(2026, 4, 2, 11, 0),  // daily
                at(2026, 4, 3, 10, 0),  // last
                at(2026, 4, 3, 11, 0),  // last, daily, weekly, monthly
                at(2026, 4, 3, 11, 30), // may be running
                at(2026, 4, 1, 2, 0),   // daily
            ])
        );
        let newest = plan
            .decisions
            .iter()
            .find(|d| d.backup.id == "20260403T110000Z")
            .unwrap();
        let Verdict::Keep(reasons) = &newest.verdict else {
            panic!("{newest:?}")
        };
        let text: Vec<String> = reasons.iter().map(ToString::to_string).collect();
        assert_eq!(
            text,
            [
                "last",
                "daily 2026-04-03",
                "weekly 2026-W14",
                "monthly 2026-04",
                "newest verified"
            ]
        );
        assert_eq!(
            plan.deletions().count(),
            plan.decisions.len() - 7,
            "everything else is deleted"
        );
    }

    #[test]
    fn incomplete_backups_are_deleted_and_fill_no_slot() {
        let plan = run(policy(0, 100, 0, 0));
        let verdict = |id: &str| {
            plan.decisions
                .iter()
                .find(|d| d.backup.id == id)
                .map(|d| d.verdict.clone())
                .unwrap()
        };
        assert_eq!(
            verdict("20260315T030000Z"),
            Verdict::Delete(DeleteReason::Incomplete)
        );
        assert_eq!(
            verdict("20260214T023000Z"),
            Verdict::Delete(DeleteReason::Incomplete)
        );
        assert_eq!(
            verdict("20260315T020000Z"),
            Verdict::Keep(vec![KeepReason::Daily(
                NaiveDate::from_ymd_opt(2026, 3, 15).unwrap()
            )])
        );
        // 90 days of backups, 100 daily slots: every day's newest is kept, only the hourly
        // backups of older hours and the two old incomplete ones go.
        assert_eq!(
            plan.deletions().map(|b| b.id.clone()).collect::<Vec<_>>(),
            ids(&[
                at(2026, 2, 14, 2, 30),
                at(2026, 3, 15, 3, 0),
                at(2026, 4, 2, 2, 0),
                at(2026, 4, 2, 8, 0),
                at(2026, 4, 2, 9, 0),
                at(2026, 4, 2, 10, 0),
                at(2026, 4, 3, 2, 0),
                at(2026, 4, 3, 8, 0),
                at(2026, 4, 3, 9, 0),
                at(2026, 4, 3, 10, 0),
            ])
        );
    }

    #[test]
    fn an_incomplete_backup_may_be_running_only_when_newest_and_recent() {
        let backups = history();
        let verification = newest_passed(&backups);
        let running = "20260403T113000Z";
        let verdict_at = |now: DateTime<Utc>| {
            plan("cf", &backups, &policy(1, 0, 0, 0), &verification, now)
                .unwrap()
                .decisions
                .into_iter()
                .find(|d| d.backup.id == running)
                .unwrap()
                .verdict
        };
        assert_eq!(
            verdict_at(at(2026, 4, 4, 11, 29)),
            Verdict::Keep(vec![KeepReason::MayBeRunning])
        );
        assert_eq!(
            verdict_at(at(2026, 4, 4, 11, 30)),
            Verdict::Delete(DeleteReason::Incomplete),
            "24 hours later it is not running any more"
        );
        // Once a newer backup completed, it cannot be running.
        let mut with_newer = backups.clone();
        with_newer.push(backup(at(2026, 4, 3, 11, 45), true));
        let plan = plan(
            "cf",
            &with_newer,
            &policy(1, 0, 0, 0),
            &newest_passed(&with_newer),
            now(),
        )
        .unwrap();
        let decision = plan
            .decisions
            .iter()
            .find(|d| d.backup.id == running)
            .unwrap();
        assert_eq!(decision.verdict, Verdict::Delete(DeleteReason::Incomplete));
        assert_eq!(kept(&plan), ids(&[at(2026, 4, 3, 11, 45)]));
    }

    #[test]
    fn the_newest_verified_backup_is_kept_when_newer_ones_failed_verify() {
        let backups = history();
        let order = verification_order("cf", &backups, now());
        assert_eq!(order[0].id, "20260403T110000Z");
        assert_eq!(order[1].id, "20260403T100000Z");
        assert!(order.iter().all(|b| b.complete && b.deployment == "cf"));
        assert_eq!(order.len(), 98);
        // The two newest fail verify, the third passes.
        let verification = Verification {
            passed: Some("20260403T090000Z".into()),
            failed: BTreeMap::from([
                ("20260403T110000Z".into(), "sha256 mismatch".into()),
                ("20260403T100000Z".into(), "object missing".into()),
            ]),
        };
        let plan = plan("cf", &backups, &policy(1, 0, 0, 0), &verification, now()).unwrap();
        let verdicts: Vec<(&str, &Verdict)> = plan
            .decisions
            .iter()
            .filter(|d| !matches!(d.verdict, Verdict::Delete(_)))
            .map(|d| (d.backup.id.as_str(), &d.verdict))
            .collect();
        assert_eq!(
            verdicts,
            vec![
                (
                    "20260403T090000Z",
                    &Verdict::Keep(vec![KeepReason::Last, KeepReason::NewestVerified])
                ),
                (
                    "20260403T100000Z",
                    &Verdict::FailedVerify("object missing".into())
                ),
                (
                    "20260403T110000Z",
                    &Verdict::FailedVerify("sha256 mismatch".into())
                ),
                (
                    "20260403T113000Z",
                    &Verdict::Keep(vec![KeepReason::MayBeRunning])
                ),
            ]
        );
        // Monthly only: the failed backups fill no slot, so April's is the verified one.
        let plan = super::plan(
            "cf",
            &backups,
            &policy(0, 0, 0, 1),
            &verification,
            at(2026, 4, 10, 0, 0),
        )
        .unwrap();
        assert_eq!(
            kept(&plan),
            ids(&[
                at(2026, 4, 3, 9, 0),
                at(2026, 4, 3, 10, 0),
                at(2026, 4, 3, 11, 0)
            ])
        );
    }

    #[test]
    fn the_newest_verified_backup_is_kept_even_when_no_rule_would_keep_it() {
        // Verification is what the caller found; were it handed a verified backup the rules
        // pass over, that backup is still kept.
        let backups = history();
        let verification = Verification {
            passed: Some("20260403T020000Z".into()),
            failed: BTreeMap::new(),
        };
        let plan = plan("cf", &backups, &policy(1, 0, 0, 0), &verification, now()).unwrap();
        assert_eq!(
            kept(&plan),
            ids(&[
                at(2026, 4, 3, 2, 0),
                at(2026, 4, 3, 11, 0),
                at(2026, 4, 3, 11, 30)
            ])
        );
        let decision = plan
            .decisions
            .iter()
            .find(|d| d.backup.id == "20260403T020000Z")
            .unwrap();
        assert_eq!(
            decision.verdict,
            Verdict::Keep(vec![KeepReason::NewestVerified])
        );
    }

    #[test]
    fn backups_with_ids_in_the_future_fill_no_slot_and_are_never_deleted() {
        // An old genuine backup copied to 2099 (a rollback that would take every "newest"
        // slot), and one 11 minutes ahead; one 9 minutes ahead is a clock a little fast.
        let mut backups = history();
        let far = backup(at(2099, 12, 31, 23, 59), true);
        let ahead = backup(now() + Duration::minutes(11), true);
        let slightly = backup(now() + Duration::minutes(9), true);
        let future_incomplete = backup(at(2099, 1, 1, 0, 0), false);
        backups.extend([
            far.clone(),
            ahead.clone(),
            slightly.clone(),
            future_incomplete.clone(),
        ]);
        let order = verification_order("cf", &backups, now());
        assert_eq!(
            order[0].id, slightly.id,
            "the newest candidate is not in the future"
        );
        assert!(order.iter().all(|b| b.id != far.id && b.id != ahead.id));

        let verification = Verification {
            passed: Some(slightly.id.clone()),
            failed: BTreeMap::new(),
        };
        let plan = plan("cf", &backups, &policy(2, 0, 0, 0), &verification, now()).unwrap();
        let verdict = |id: &str| {
            plan.decisions
                .iter()
                .find(|d| d.backup.id == id)
                .map(|d| d.verdict.clone())
                .unwrap()
        };
        for future in [&far, &ahead, &future_incomplete] {
            assert_eq!(
                verdict(&future.id),
                Verdict::Keep(vec![KeepReason::FutureId]),
                "{}",
                future.id
            );
        }
        assert_eq!(
            KeepReason::FutureId.to_string(),
            "id in the future, ignored by every rule"
        );
        // keep_last 2 keeps the two newest that are not in the future.
        assert_eq!(
            verdict(&slightly.id),
            Verdict::Keep(vec![KeepReason::Last, KeepReason::NewestVerified])
        );
        assert_eq!(
            verdict("20260403T110000Z"),
            Verdict::Keep(vec![KeepReason::Last])
        );
        assert_eq!(
            verdict("20260403T100000Z"),
            Verdict::Delete(DeleteReason::Expired)
        );
        // 12:09 completed after the incomplete backup of 11:30 started: that one is not running.
        assert_eq!(
            verdict("20260403T113000Z"),
            Verdict::Delete(DeleteReason::Incomplete)
        );
        // Without it, the future ones do not make 11:30 look older than a completed backup.
        let without_slightly: Vec<BackupSummary> = backups
            .iter()
            .filter(|b| b.id != slightly.id)
            .cloned()
            .collect();
        let plan = super::plan(
            "cf",
            &without_slightly,
            &policy(1, 0, 0, 0),
            &newest_passed(&without_slightly),
            now(),
        )
        .unwrap();
        assert!(plan
            .decisions
            .iter()
            .any(|d| d.backup.id == "20260403T113000Z"
                && d.verdict == Verdict::Keep(vec![KeepReason::MayBeRunning])));
    }

    #[test]
    fn when_nothing_passes_verify_every_complete_backup_that_was_checked_is_kept() {
        let backups: Vec<BackupSummary> = (1..=3)
            .map(|day| backup(at(2026, 3, day, 2, 0), true))
            .collect();
        let verification = Verification {
            passed: None,
            failed: backups
                .iter()
                .map(|b| (b.id.clone(), "damaged".to_string()))
                .collect(),
        };
        let plan = plan("cf", &backups, &policy(1, 0, 0, 0), &verification, now()).unwrap();
        assert_eq!(plan.deletions().count(), 0);
        assert!(plan
            .decisions
            .iter()
            .all(|d| d.verdict == Verdict::FailedVerify("damaged".into())));
    }

    #[test]
    fn a_policy_that_keeps_nothing_is_refused() {
        let backups = history();
        let refused = plan(
            "cf",
            &backups,
            &RetentionPolicy::default(),
            &newest_passed(&backups),
            now(),
        );
        assert_eq!(refused, Err(EmptyPolicy));
        assert_eq!(RetentionPolicy::default().check(), Err(EmptyPolicy));
        assert!(!EmptyPolicy.to_string().contains('\n'), "one line");
        assert!(EmptyPolicy.to_string().contains("--keep-last"));
        for one in [
            policy(1, 0, 0, 0),
            policy(0, 1, 0, 0),
            policy(0, 0, 1, 0),
            policy(0, 0, 0, 1),
        ] {
            assert_eq!(one.check(), Ok(one));
        }
    }

    #[test]
    fn every_single_rule_of_one_keeps_exactly_the_newest_complete_backup() {
        for one in [
            policy(1, 0, 0, 0),
            policy(0, 1, 0, 0),
            policy(0, 0, 1, 0),
            policy(0, 0, 0, 1),
        ] {
            assert_eq!(
                kept(&run(one)),
                ids(&[at(2026, 4, 3, 11, 0), at(2026, 4, 3, 11, 30)]),
                "{one:?}"
            );
        }
    }

    /// The rules restated as sets rather than a walk: the N newest countable backups, and for
    /// each of the N most recent days (weeks, months) that have a countable backup, its newest.
    fn reference(backups: &[BackupSummary], policy: &RetentionPolicy) -> Vec<String> {
        use std::collections::BTreeSet;
        type Bucket = fn(DateTime<Utc>) -> (i32, u32, u32);
        let mut countable: Vec<&BackupSummary> = backups
            .iter()
            .filter(|b| b.deployment == "cf" && b.complete)
            .collect();
        countable.sort_by_key(|b| std::cmp::Reverse(b.time));
        let mut kept: BTreeSet<String> = countable
            .iter()
            .take(policy.keep_last as usize)
            .map(|b| b.id.clone())
            .collect();
        let keys: [(u32, Bucket); 3] = [
            (policy.keep_daily, |t| (t.year(), t.month(), t.day())),
            (policy.keep_weekly, |t| {
                (t.iso_week().year(), t.iso_week().week(), 0)
            }),
            (policy.keep_monthly, |t| (t.year(), t.month(), 0)),
        ];
        for (count, key) in keys {
            let mut buckets: Vec<(i32, u32, u32)> =
                countable.iter().map(|b| key(b.time.unwrap())).collect();
            buckets.dedup();
            for bucket in buckets.into_iter().take(count as usize) {
                let newest = countable
                    .iter()
                    .filter(|b| key(b.time.unwrap()) == bucket)
                    .max_by_key(|b| b.time)
                    .unwrap();
                kept.insert(newest.id.clone());
            }
        }
        kept.insert("20260403T113000Z".into()); // may still be running
        kept.into_iter().collect()
    }

    #[test]
    fn the_walk_agrees_with_the_rules_restated_for_every_small_policy() {
        let backups = history();
        let verification = newest_passed(&backups);
        let counts = [0, 1, 2, 3, 5, 13, 200];
        let mut checked = 0;
        for last in counts {
            for daily in counts {
                for weekly in counts {
                    for monthly in counts {
                        let policy = policy(last, daily, weekly, monthly);
                        let Ok(plan) = plan("cf", &backups, &policy, &verification, now()) else {
                            assert_eq!(policy, RetentionPolicy::default());
                            continue;
                        };
                        assert_eq!(kept(&plan), reference(&backups, &policy), "{policy:?}");
                        checked += 1;
                    }
                }
            }
        }
        assert_eq!(checked, 7 * 7 * 7 * 7 - 1);
    }

    #[test]
    fn large_counts_keep_everything_complete() {
        let plan = run(policy(1000, 1000, 1000, 1000));
        assert_eq!(
            plan.deletions().map(|b| b.id.clone()).collect::<Vec<_>>(),
            ids(&[at(2026, 2, 14, 2, 30), at(2026, 3, 15, 3, 0)]),
            "only the old incomplete backups go"
        );
    }

    #[test]
    fn a_backup_without_a_time_is_kept_and_other_deployments_are_untouched() {
        let mut backups = history();
        backups.push(BackupSummary {
            id: "latest".into(),
            time: None,
            ..backup(at(2026, 1, 1, 0, 0), true)
        });
        let plan = plan(
            "cf",
            &backups,
            &policy(1, 0, 0, 0),
            &newest_passed(&backups),
            now(),
        )
        .unwrap();
        let unknown = plan
            .decisions
            .iter()
            .find(|d| d.backup.id == "latest")
            .unwrap();
        assert_eq!(
            unknown.verdict,
            Verdict::Keep(vec![KeepReason::UnknownTime])
        );
        assert!(plan.decisions.iter().all(|d| d.backup.deployment == "cf"));
        let other = super::plan(
            "other",
            &backups,
            &policy(1, 0, 0, 0),
            &Verification::default(),
            now(),
        )
        .unwrap();
        assert_eq!(other.decisions.len(), 1);
        assert!(matches!(other.decisions[0].verdict, Verdict::Keep(_)));
    }
}
