//! How long each job script may run: one answer per job and script, from the operator's
//! settings in a fixed order of precedence.
//!
//! A hung script must never hold a run (and its locks) for ever, but a backup script of a big
//! database may rightly take hours while a lock should take seconds, so one limit for every
//! script is not enough. The most specific setting wins:
//!
//! 1. the config file's override for the job (`[timeouts.jobs.<job>]`, by script name);
//! 2. the config file's default for the script (`[timeouts]`, by script name);
//! 3. `--script-timeout` (every script);
//! 4. for `metadata` alone, a built-in [`METADATA_DEFAULT`]: it only prints YAML and runs
//!    during discovery, before anything is locked, so it must be quick.
//!
//! Every other script without a setting runs without a limit, as in bbr.
//!
//! A job's artifact streams may also have their own stall limit (`stall` under
//! `[timeouts.jobs.<job>]`), beating `--stall-timeout`: a streaming `pg_dump` that waits on a
//! database lock sends nothing for as long as it waits, and only that job should be allowed to.

use std::collections::BTreeMap;
use std::time::Duration;

use super::job::ScriptName;

/// The limit of a `metadata` script when nothing else is set.
pub const METADATA_DEFAULT: Duration = Duration::from_secs(5 * 60);

/// The operator's time limits for job scripts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScriptTimeouts {
    /// `--script-timeout`: every script without a more specific limit.
    pub every_script: Option<Duration>,
    /// `[timeouts]`: a default per script name.
    pub per_script: BTreeMap<ScriptName, Duration>,
    /// `[timeouts.jobs.<job>]`: overrides per job name, by script name.
    pub per_job: BTreeMap<String, BTreeMap<ScriptName, Duration>>,
    /// `stall` under `[timeouts.jobs.<job>]`: the job's own `--stall-timeout`.
    pub per_job_stall: BTreeMap<String, Duration>,
}

/// Where a limit came from, for the message of a script that ran out of time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LimitSource {
    /// `[timeouts.jobs.<job>]` in the config file.
    Job(String),
    /// `[timeouts]` in the config file.
    Script,
    /// `--script-timeout`.
    Flag,
    /// [`METADATA_DEFAULT`].
    BuiltIn,
}

/// One script's limit and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptLimit {
    /// How long the script may run.
    pub duration: Duration,
    /// Which setting gave it.
    pub source: LimitSource,
}

impl ScriptTimeouts {
    /// Only `--script-timeout` (what a run without a config file has).
    #[must_use]
    pub fn every_script(limit: Option<Duration>) -> ScriptTimeouts {
        ScriptTimeouts {
            every_script: limit,
            ..ScriptTimeouts::default()
        }
    }

    /// The limit of `script` of the job named `job`, by the precedence of the module
    /// documentation; `None` when the script may run for ever.
    #[must_use]
    pub fn limit(&self, job: &str, script: ScriptName) -> Option<ScriptLimit> {
        let found = |duration: Duration, source: LimitSource| ScriptLimit { duration, source };
        if let Some(duration) = self.per_job.get(job).and_then(|s| s.get(&script)) {
            return Some(found(*duration, LimitSource::Job(job.to_string())));
        }
        if let Some(duration) = self.per_script.get(&script) {
            return Some(found(*duration, LimitSource::Script));
        }
        if let Some(duration) = self.every_script {
            return Some(found(duration, LimitSource::Flag));
        }
        (script == ScriptName::Metadata).then(|| found(METADATA_DEFAULT, LimitSource::BuiltIn))
    }
}

impl ScriptTimeouts {
    /// How long the artifact streams of the job named `job` may move no byte: its own `stall`
    /// setting, else `default` (`--stall-timeout`).
    #[must_use]
    pub fn stall_limit(&self, job: &str, default: Duration) -> Duration {
        self.per_job_stall.get(job).copied().unwrap_or(default)
    }
}

impl ScriptLimit {
    /// What the operator changes to give the script more time, e.g. `--script-timeout` or
    /// `[timeouts.jobs.database] backup in the config file`.
    #[must_use]
    pub fn setting(&self, script: ScriptName) -> String {
        match &self.source {
            LimitSource::Job(job) => {
                format!("`{script}` under [timeouts.jobs.{job}] in the config file")
            }
            LimitSource::Script => format!("`{script}` under [timeouts] in the config file"),
            LimitSource::Flag => "--script-timeout".into(),
            LimitSource::BuiltIn => {
                "the built-in limit of metadata scripts; set --script-timeout or `metadata` under [timeouts] in the config file".into()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seconds(value: u64) -> Duration {
        Duration::from_secs(value)
    }

    #[test]
    fn the_most_specific_setting_wins() {
        let timeouts = ScriptTimeouts {
            every_script: Some(seconds(600)),
            per_script: BTreeMap::from([
                (ScriptName::PreBackupLock, seconds(60)),
                (ScriptName::Metadata, seconds(20)),
            ]),
            per_job: BTreeMap::from([(
                "database".to_string(),
                BTreeMap::from([(ScriptName::PreBackupLock, seconds(3))]),
            )]),
            per_job_stall: BTreeMap::new(),
        };
        let limit = |job, script| timeouts.limit(job, script).unwrap();
        // The job's override beats the script's default and the flag.
        assert_eq!(
            limit("database", ScriptName::PreBackupLock),
            ScriptLimit {
                duration: seconds(3),
                source: LimitSource::Job("database".into())
            }
        );
        // Another job takes the script's default.
        assert_eq!(
            limit("app", ScriptName::PreBackupLock),
            ScriptLimit {
                duration: seconds(60),
                source: LimitSource::Script
            }
        );
        // A script without a default of its own, even of the overridden job, takes the flag.
        assert_eq!(
            limit("database", ScriptName::Backup),
            ScriptLimit {
                duration: seconds(600),
                source: LimitSource::Flag
            }
        );
        assert_eq!(limit("app", ScriptName::Metadata).duration, seconds(20));
    }

    #[test]
    fn only_metadata_has_a_built_in_limit() {
        let none = ScriptTimeouts::default();
        assert_eq!(
            none.limit("db", ScriptName::Metadata),
            Some(ScriptLimit {
                duration: METADATA_DEFAULT,
                source: LimitSource::BuiltIn
            })
        );
        for script in ScriptName::ALL
            .into_iter()
            .filter(|s| *s != ScriptName::Metadata)
        {
            assert_eq!(none.limit("db", script), None, "{script}");
        }
        // The flag also replaces metadata's built-in limit.
        let flag = ScriptTimeouts::every_script(Some(seconds(3)));
        assert_eq!(
            flag.limit("db", ScriptName::Metadata),
            Some(ScriptLimit {
                duration: seconds(3),
                source: LimitSource::Flag
            })
        );
    }

    #[test]
    fn the_setting_to_change_is_named() {
        let limit = |source| ScriptLimit {
            duration: seconds(3),
            source,
        };
        assert_eq!(
            limit(LimitSource::Job("database".into())).setting(ScriptName::PreBackupLock),
            "`pre-backup-lock` under [timeouts.jobs.database] in the config file"
        );
        assert_eq!(
            limit(LimitSource::Flag).setting(ScriptName::Backup),
            "--script-timeout"
        );
        assert!(limit(LimitSource::BuiltIn)
            .setting(ScriptName::Metadata)
            .contains("built-in"));
    }

    #[test]
    fn a_jobs_own_stall_limit_beats_the_flag_for_that_job_only() {
        let mut timeouts = ScriptTimeouts::default();
        timeouts
            .per_job_stall
            .insert("postgres".into(), seconds(1800));
        assert_eq!(
            timeouts.stall_limit("postgres", seconds(300)),
            seconds(1800)
        );
        assert_eq!(timeouts.stall_limit("files", seconds(300)), seconds(300));
    }
}
