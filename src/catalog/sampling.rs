//! `backups verify --sample PERCENT`: verify part of a backup each run and still read every
//! byte within a known number of runs (kopia's `--verify-files-percent`, made complete).
//!
//! Picking purely at random leaves some artifact unread for a long time (with 5 % a run, an
//! artifact is still unread after 20 runs with a probability of 0.95^20 ≈ 36 %). So a run
//! takes the artifacts **least recently verified first** — never-verified ones first, ties in
//! random order — and takes `ceil(P % of the artifacts)` of them. Counting artifacts rather
//! than bytes is what makes the guarantee simple: with `n` artifacts and `k = ceil(P·n/100)`
//! a run, the oldest ones are always taken next, so every artifact is verified within
//! `ceil(n/k) ≤ ceil(100/P)` runs, whatever their sizes (the bytes read per run vary with the
//! sizes picked). An artifact that fails is not recorded as verified, so it stays first in
//! line and is read again by the next run.
//!
//! What was verified when is kept in a small JSON state file per backup ([`StateFile`]),
//! written atomically (temporary file, rename). A missing file starts over; a damaged one, or
//! one about another backup, starts over with a warning — the worst case is reading again
//! what was read recently, never skipping what was not.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// One artifact of a backup that a run may verify.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// Its name (`<group>-<index>-<job>`, or a shared artifact's).
    pub name: String,
    /// Bytes a verification reads (the stored object, the tar file).
    pub bytes: u64,
}

/// A sampling percentage, `0 < P ≤ 100`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Percent(f64);

impl Percent {
    /// Parses `5`, `5%` or `2.5`.
    ///
    /// # Errors
    /// Not a number, or not above 0 and at most 100.
    pub fn parse(text: &str) -> Result<Percent, String> {
        let number = text.trim().trim_end_matches('%').trim();
        match number.parse::<f64>() {
            Ok(value) if value > 0.0 && value <= 100.0 => Ok(Percent(value)),
            _ => Err(format!(
                "`{text}` is not a percentage above 0 and at most 100 (e.g. 5)"
            )),
        }
    }

    /// The number.
    #[must_use]
    pub fn value(self) -> f64 {
        self.0
    }

    /// Artifacts one run verifies out of `total`: `ceil(P % of total)`, at least one.
    #[must_use]
    pub fn quota(self, total: usize) -> usize {
        #[allow(clippy::cast_precision_loss)]
        let exact = self.0 * total as f64 / 100.0;
        ceil_tolerant(exact).clamp(1, total.max(1)).min(total)
    }

    /// Runs within which every artifact is verified: `ceil(100 / P)`.
    #[must_use]
    pub fn runs_for_full_coverage(self) -> u64 {
        ceil_tolerant(100.0 / self.0) as u64
    }
}

/// `ceil`, forgiving the last bits of a floating-point product (7 % of 100 is 7, not 8).
#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
fn ceil_tolerant(value: f64) -> usize {
    (value - 1e-9).ceil().max(0.0) as usize
}

/// When an artifact was last verified intact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastVerified {
    /// The run that verified it (1 for the first run).
    pub run: u64,
    /// When.
    pub at: DateTime<Utc>,
}

/// What the runs on one backup have verified so far.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SampleState {
    /// What the state is about: the store and backup, or the directory.
    pub subject: String,
    /// Runs so far.
    pub runs: u64,
    /// The artifacts verified intact at least once, by name.
    pub verified: BTreeMap<String, LastVerified>,
}

impl SampleState {
    /// A fresh state for `subject`.
    #[must_use]
    pub fn new(subject: &str) -> SampleState {
        SampleState {
            subject: subject.to_string(),
            ..SampleState::default()
        }
    }

    /// The artifacts the next run verifies: the `percent.quota(n)` least recently verified,
    /// never-verified first, ties in random order.
    #[must_use]
    pub fn choose(&self, candidates: &[Candidate], percent: Percent) -> BTreeSet<String> {
        self.choose_with(candidates, percent, |_| rand::random::<u64>())
    }

    /// [`Self::choose`] with the tie-breaking numbers given by `tiebreak` (tests).
    pub fn choose_with(
        &self,
        candidates: &[Candidate],
        percent: Percent,
        mut tiebreak: impl FnMut(&str) -> u64,
    ) -> BTreeSet<String> {
        let mut order: Vec<(u64, u64, &str)> = candidates
            .iter()
            .map(|c| {
                let last = self.verified.get(&c.name).map_or(0, |v| v.run);
                (last, tiebreak(&c.name), c.name.as_str())
            })
            .collect();
        order.sort_unstable();
        order
            .into_iter()
            .take(percent.quota(candidates.len()))
            .map(|(_, _, name)| name.to_string())
            .collect()
    }

    /// Records a run that verified `passed` intact at `at`; forgets artifacts that are no
    /// longer in the backup.
    pub fn record(&mut self, candidates: &[Candidate], passed: &[String], at: DateTime<Utc>) {
        self.runs += 1;
        let run = self.runs;
        for name in passed {
            self.verified.insert(name.clone(), LastVerified { run, at });
        }
        let names: BTreeSet<&str> = candidates.iter().map(|c| c.name.as_str()).collect();
        self.verified
            .retain(|name, _| names.contains(name.as_str()));
    }

    /// How much of the backup the last `window` runs (this one included) verified.
    #[must_use]
    pub fn coverage(&self, candidates: &[Candidate], window: u64) -> Coverage {
        let first_run = self.runs.saturating_sub(window) + 1;
        let recorded: Vec<&LastVerified> = candidates
            .iter()
            .filter_map(|c| self.verified.get(&c.name))
            .collect();
        Coverage {
            total: candidates.len(),
            covered: recorded.iter().filter(|v| v.run >= first_run).count(),
            never: candidates.len() - recorded.len(),
            window: window.min(self.runs),
            oldest: recorded.iter().map(|v| v.at).min(),
        }
    }
}

/// How much of a backup recent runs verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Coverage {
    /// Artifacts in the backup.
    pub total: usize,
    /// Artifacts verified intact within the window.
    pub covered: usize,
    /// Artifacts never verified intact.
    pub never: usize,
    /// Runs counted (the window, or fewer when fewer runs were made).
    pub window: u64,
    /// The oldest last verification of any artifact that was ever verified.
    pub oldest: Option<DateTime<Utc>>,
}

/// A problem with the state file that is not fatal: the run starts over.
#[derive(Debug, thiserror::Error)]
pub enum StateFileWarning {
    /// The file cannot be read or parsed.
    #[error("Sample state `{path}` is unreadable ({detail}); starting over: every artifact counts as never verified")]
    Damaged {
        /// The file.
        path: PathBuf,
        /// Why.
        detail: String,
    },
    /// The file is about another backup.
    #[error("Sample state `{path}` is about `{found}`, not `{expected}`; starting over")]
    OtherSubject {
        /// The file.
        path: PathBuf,
        /// Its subject.
        found: String,
        /// This run's subject.
        expected: String,
    },
}

/// Where a backup's [`SampleState`] is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateFile {
    path: PathBuf,
}

impl StateFile {
    /// The file at `path` (`--state-file`).
    #[must_use]
    pub fn at(path: impl Into<PathBuf>) -> StateFile {
        StateFile { path: path.into() }
    }

    /// The default file of `subject` under `state_dir` (Cairn's state directory):
    /// `verify/<readable part of the subject>-<16 hex of its sha256>.json`.
    #[must_use]
    pub fn default_for(state_dir: &Path, subject: &str) -> StateFile {
        let readable: String = subject
            .chars()
            .rev()
            .take(48)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let digest = hex::encode(Sha256::digest(subject.as_bytes()));
        StateFile::at(state_dir.join("verify").join(format!(
            "{}-{}.json",
            readable.trim_matches('_'),
            &digest[..16]
        )))
    }

    /// The file.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The state of `subject`: a fresh one when the file is missing, and with a warning when
    /// it is damaged or about something else.
    #[must_use]
    pub fn load(&self, subject: &str) -> (SampleState, Option<StateFileWarning>) {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                return (SampleState::new(subject), None)
            }
            Err(error) => return (SampleState::new(subject), Some(self.damaged(&error))),
        };
        match serde_json::from_str::<SampleState>(&text) {
            Ok(state) if state.subject == subject => (state, None),
            Ok(state) => (
                SampleState::new(subject),
                Some(StateFileWarning::OtherSubject {
                    path: self.path.clone(),
                    found: state.subject,
                    expected: subject.to_string(),
                }),
            ),
            Err(error) => (SampleState::new(subject), Some(self.damaged(&error))),
        }
    }

    fn damaged(&self, detail: &dyn std::fmt::Display) -> StateFileWarning {
        StateFileWarning::Damaged {
            path: self.path.clone(),
            detail: detail.to_string(),
        }
    }

    /// Writes the state atomically: a temporary file next to it, fsynced, then renamed.
    ///
    /// # Errors
    /// The I/O error, naming the file.
    pub fn save(&self, state: &SampleState) -> std::io::Result<()> {
        let named = |error: std::io::Error| {
            std::io::Error::new(
                error.kind(),
                format!("Writing `{}` failed: {error}", self.path.display()),
            )
        };
        if let Some(parent) = self.path.parent() {
            std::fs::create_dir_all(parent).map_err(named)?;
        }
        let mut temporary = self.path.clone().into_os_string();
        temporary.push(format!(".{}.tmp", std::process::id()));
        let temporary = PathBuf::from(temporary);
        let text = serde_json::to_string_pretty(state).expect("state serializes");
        let written = std::fs::File::create(&temporary)
            .and_then(|mut file| {
                file.write_all(text.as_bytes())?;
                file.sync_all()
            })
            .and_then(|()| std::fs::rename(&temporary, &self.path));
        if written.is_err() {
            let _ = std::fs::remove_file(&temporary);
        }
        written.map_err(named)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn candidates(count: usize) -> Vec<Candidate> {
        (0..count)
            .map(|n| Candidate {
                name: format!("g-{n}-job"),
                bytes: 100 + n as u64,
            })
            .collect()
    }

    #[test]
    fn percentages_parse_and_give_the_quota_and_the_runs() {
        let five = Percent::parse("5%").unwrap();
        assert_eq!(five.quota(60), 3);
        assert_eq!(five.quota(61), 4);
        assert_eq!(five.quota(3), 1);
        assert_eq!(five.quota(0), 0);
        assert_eq!(five.runs_for_full_coverage(), 20);
        assert_eq!(Percent::parse("7").unwrap().quota(100), 7);
        assert_eq!(Percent::parse("30").unwrap().runs_for_full_coverage(), 4);
        assert_eq!(Percent::parse("100").unwrap().quota(9), 9);
        for bad in ["0", "-1", "101", "five", ""] {
            assert!(Percent::parse(bad).is_err(), "{bad}");
        }
    }

    /// The guarantee the module promises, for several sizes and percentages: every artifact
    /// is verified within `ceil(100/P)` runs, and each run verifies the quota.
    #[test]
    fn every_artifact_is_verified_within_the_promised_runs() {
        for (count, percent) in [
            (20, "5"),
            (60, "5"),
            (61, "5"),
            (7, "30"),
            (100, "7"),
            (1, "1"),
        ] {
            let percent = Percent::parse(percent).unwrap();
            let all = candidates(count);
            let mut state = SampleState::new("s");
            let mut seen = BTreeSet::new();
            for _ in 0..percent.runs_for_full_coverage() {
                let chosen = state.choose(&all, percent);
                assert_eq!(chosen.len(), percent.quota(count));
                let passed: Vec<String> = chosen.into_iter().collect();
                seen.extend(passed.iter().cloned());
                state.record(&all, &passed, Utc::now());
            }
            assert_eq!(seen.len(), count, "{count} at {percent:?}");
            let coverage = state.coverage(&all, percent.runs_for_full_coverage());
            assert_eq!((coverage.covered, coverage.never), (count, 0));
        }
    }

    #[test]
    fn never_verified_come_first_then_the_oldest_and_failures_are_retried() {
        let all = candidates(4);
        let mut state = SampleState::new("s");
        let half = Percent::parse("50").unwrap();
        let first = state.choose_with(&all, half, |name| u64::from(name.as_bytes()[2]));
        assert_eq!(first, ["g-0-job".to_string(), "g-1-job".into()].into());
        // g-1 failed: only g-0 is recorded.
        state.record(&all, &["g-0-job".into()], Utc::now());
        let second = state.choose_with(&all, half, |name| u64::from(name.as_bytes()[2]));
        assert_eq!(second, ["g-1-job".to_string(), "g-2-job".into()].into());
        state.record(&all, &["g-1-job".into(), "g-2-job".into()], Utc::now());
        let third = state.choose_with(&all, half, |name| u64::from(name.as_bytes()[2]));
        assert_eq!(third, ["g-3-job".to_string(), "g-0-job".into()].into());
        let coverage = state.coverage(&all, 2);
        assert_eq!(
            (coverage.total, coverage.covered, coverage.never),
            (4, 3, 1)
        );
    }

    #[test]
    fn artifacts_gone_from_the_backup_are_forgotten() {
        let mut state = SampleState::new("s");
        state.record(&candidates(3), &["g-2-job".into()], Utc::now());
        state.record(&candidates(2), &[], Utc::now());
        assert!(state.verified.is_empty());
        assert_eq!(state.runs, 2);
    }

    #[test]
    fn the_state_file_round_trips_and_a_damaged_or_foreign_one_starts_over() {
        let dir = tempfile::tempdir().unwrap();
        let file = StateFile::default_for(dir.path(), "s3://bucket/p cf/20261201T000000Z");
        assert!(file.path().starts_with(dir.path().join("verify")));
        let (mut state, warning) = file.load("subject");
        assert!(warning.is_none());
        state.record(&candidates(2), &["g-1-job".into()], Utc::now());
        file.save(&state).unwrap();
        let (loaded, warning) = file.load("subject");
        assert_eq!(loaded, state);
        assert!(warning.is_none());
        let (other, warning) = file.load("another");
        assert_eq!(other, SampleState::new("another"));
        assert!(matches!(
            warning,
            Some(StateFileWarning::OtherSubject { .. })
        ));
        std::fs::write(file.path(), "{not json").unwrap();
        let (fresh, warning) = file.load("subject");
        assert_eq!(fresh, SampleState::new("subject"));
        assert!(
            warning.unwrap().to_string().contains("starting over"),
            "a damaged file is reported"
        );
    }
}
