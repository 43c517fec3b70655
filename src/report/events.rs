//! Machine-readable events (`--json`): one JSON object per line on stdout, for wrappers and
//! schedulers that want more than an exit code.
//!
//! Every line has `schema` (`cairn.events/1`), `time` (RFC 3339) and `event` (its kind), plus the
//! kind's own fields. The schema is documented in `docs/events.md` and written as JSON Schema in
//! `docs/events.schema.json`; a test checks every kind against it. New fields may be added
//! within a schema version; removing or changing one bumps the version.

use std::fmt::Debug;
use std::io::Write;
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use serde::Serialize;

/// The schema identifier written on every line.
pub const EVENTS_SCHEMA: &str = "cairn.events/1";

/// One event.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// The command started.
    RunStarted {
        /// `backup`, `restore`, `pre-backup-check`, `backup-cleanup`, `restore-cleanup`.
        operation: String,
        /// Deployment or director host.
        deployment: String,
        /// Cairn's version.
        cairn_version: String,
    },
    /// A backup-capable job was found on an instance.
    JobDiscovered {
        /// `<group>/<id>`.
        instance: String,
        /// Job name.
        job: String,
        /// Release name (empty when unknown).
        release: String,
        /// Its bbr scripts.
        scripts: Vec<String>,
    },
    /// A job script finished (lock and unlock scripts included).
    ScriptFinished {
        /// `<group>/<id>`.
        instance: String,
        /// Job name.
        job: String,
        /// Script name, e.g. `pre-backup-lock`.
        script: String,
        /// When it started.
        started_at: DateTime<Utc>,
        /// When it finished.
        finished_at: DateTime<Utc>,
        /// Its exit status.
        exit_status: u32,
    },
    /// Progress of one artifact transfer: its first bytes, then every 5 % once its size is
    /// known.
    TransferProgress {
        /// `<group>/<id>`.
        instance: String,
        /// Job name.
        job: String,
        /// Bytes moved so far.
        bytes: u64,
        /// Expected bytes (from `du`), 0 when unknown.
        total_bytes: u64,
        /// Percentage of `total_bytes`.
        percent: u64,
    },
    /// An artifact was stored and verified.
    ArtifactStored {
        /// `<group>/<id>`.
        instance: String,
        /// Job name.
        job: String,
        /// bbr artifact name, `<group>-<index>-<job>`.
        artifact: String,
        /// Bytes stored.
        size: u64,
        /// sha256 of the stored bytes (stores only; `null` for a bbr directory).
        sha256: Option<String>,
        /// Store version id, if any.
        version: Option<String>,
        /// Number of files in it.
        files: usize,
    },
    /// What a backup would do (`pre-backup-check --plan --json`).
    Plan {
        /// The plan.
        plan: Box<crate::report::plan_view::PlanView>,
    },
    /// What a restore would do, and every reason it would be refused (`restore --plan --json`).
    RestorePlan {
        /// The plan.
        plan: Box<crate::report::restore_plan_view::RestorePlanView>,
    },
    /// The command finished.
    RunFinished {
        /// As in `run_started`.
        operation: String,
        /// As in `run_started`.
        deployment: String,
        /// bbr's exit-code bitmask.
        exit_code: i32,
        /// Wall time.
        duration_seconds: f64,
        /// Where the backup is, for a backup that produced one.
        artifact: Option<String>,
        /// Every error message.
        errors: Vec<String>,
    },
}

/// One line of output: the event with its envelope.
#[derive(Debug, Serialize)]
struct Line<'a> {
    schema: &'static str,
    time: DateTime<Utc>,
    #[serde(flatten)]
    event: &'a Event,
}

/// Renders an event as one JSON line (without the newline).
#[must_use]
pub fn to_json_line(event: &Event, time: DateTime<Utc>) -> String {
    serde_json::to_string(&Line {
        schema: EVENTS_SCHEMA,
        time,
        event,
    })
    .expect("events serialize")
}

/// Where events go.
pub trait EventSink: Send + Sync + Debug {
    /// Records one event.
    fn emit(&self, event: Event);
}

/// Writes JSON lines to a writer (stdout for `--json`).
#[derive(Debug)]
pub struct JsonLines<W: Write + Send + Debug>(pub Mutex<W>);

impl<W: Write + Send + Debug> EventSink for JsonLines<W> {
    fn emit(&self, event: Event) {
        let line = to_json_line(&event, Utc::now());
        let mut writer = self.0.lock().expect("events lock");
        let _ = writeln!(writer, "{line}");
        let _ = writer.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_testbed::schema::validate;

    /// One of each kind, for the schema test.
    fn every_kind() -> Vec<Event> {
        let time = Utc::now();
        vec![
            Event::RunStarted {
                operation: "backup".into(),
                deployment: "cf".into(),
                cairn_version: "0.1.0".into(),
            },
            Event::JobDiscovered {
                instance: "db/0".into(),
                job: "pg".into(),
                release: "pg-release".into(),
                scripts: vec!["backup".into()],
            },
            Event::ScriptFinished {
                instance: "db/0".into(),
                job: "pg".into(),
                script: "pre-backup-lock".into(),
                started_at: time,
                finished_at: time,
                exit_status: 0,
            },
            Event::TransferProgress {
                instance: "db/0".into(),
                job: "pg".into(),
                bytes: 10,
                total_bytes: 100,
                percent: 10,
            },
            Event::ArtifactStored {
                instance: "db/0".into(),
                job: "pg".into(),
                artifact: "db-0-pg".into(),
                size: 5,
                sha256: Some("00".into()),
                version: None,
                files: 2,
            },
            Event::Plan {
                plan: Box::new(crate::report::plan_view::PlanView {
                    deployment: "cf".into(),
                    instances: vec![],
                    lock_layers: vec![vec!["db/0:pg".into()]],
                    lock_edges: vec![],
                    artifacts: vec!["db-0-pg".into()],
                }),
            },
            Event::RestorePlan {
                plan: Box::new(crate::report::restore_plan_view::RestorePlanView {
                    deployment: "cf".into(),
                    backup: "/backups/cf_20240102T030405Z".into(),
                    restorable: false,
                    artifacts: vec![crate::report::restore_plan_view::ArtifactView {
                        artifact: "db-0-pg".into(),
                        instance: "db/0".into(),
                        job: "pg".into(),
                        bytes: Some(10),
                        streamed: false,
                    }],
                    lock_layers: vec![vec!["db/0:pg".into()]],
                    unlock_layers: vec![vec!["db/0:pg".into()]],
                    lock_edges: vec![],
                    free_space: vec![crate::report::restore_plan_view::SpaceView {
                        instance: "db/0".into(),
                        needed_bytes: 10,
                        available_bytes: None,
                        mount: None,
                        fits: true,
                    }],
                    refusals: vec!["no".into()],
                    warnings: vec![],
                }),
            },
            Event::RunFinished {
                operation: "backup".into(),
                deployment: "cf".into(),
                exit_code: 4,
                duration_seconds: 1.5,
                artifact: Some("x".into()),
                errors: vec!["boom".into()],
            },
        ]
    }

    #[test]
    fn every_kind_matches_the_documented_schema() {
        let schema: serde_json::Value =
            serde_json::from_str(include_str!("../../docs/events.schema.json")).unwrap();
        for event in every_kind() {
            let line: serde_json::Value =
                serde_json::from_str(&to_json_line(&event, Utc::now())).unwrap();
            if let Err(problem) = validate(&schema, &line) {
                panic!("{line} does not match docs/events.schema.json: {problem}");
            }
        }
    }

    #[test]
    fn the_validator_rejects_what_the_schema_forbids() {
        let schema: serde_json::Value =
            serde_json::from_str(include_str!("../../docs/events.schema.json")).unwrap();
        let mut line: serde_json::Value =
            serde_json::from_str(&to_json_line(&every_kind()[0], Utc::now())).unwrap();
        line.as_object_mut().unwrap().remove("deployment");
        assert!(validate(&schema, &line).is_err());
        let unknown = serde_json::json!({"schema": EVENTS_SCHEMA, "time": "x", "event": "mystery"});
        assert!(validate(&schema, &unknown).is_err());
    }
}
