//! What a run is given and what it gathers: [`RunOptions`] (the operator's flags, the same for
//! every step), the services a workflow uses besides its target (cancellation, `--json`
//! events, the run journal), and the records it keeps as it goes (every script that
//! finished, every verification), which each workflow hands back in its report.

use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;

use super::journal::{Journal, JournalFile};
use crate::error::Error;
use crate::model::job::{InstanceName, ScriptName, ScriptRecord};
use crate::model::timeouts::ScriptTimeouts;
use crate::report::events::{Event, EventSink};
use crate::report::verification::Verification;

/// The default `--stall-timeout`: an artifact's stream that moved no byte for this long is
/// stopped.
pub const DEFAULT_STALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5 * 60);

/// What the operator asked for.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// At most this many scripts or transfers at once.
    pub parallelism: usize,
    /// Cairn's version, given to every script as `CAIRN_VERSION` (`metadata` scripts get
    /// `BBR_VERSION`, the bbr release Cairn implements, [`crate::BBR_COMPATIBLE_VERSION`]).
    pub version: String,
    /// How long each job script may run (`--script-timeout`, the config file's `[timeouts]`).
    pub script_timeouts: ScriptTimeouts,
    /// How long an artifact's stream may move no byte before it is stopped and its
    /// connection dropped (`--stall-timeout`).
    pub stall_timeout: std::time::Duration,
    /// Run each restored job's `post-restore-verify` after the restore (Cairn extension).
    pub verify_restore: bool,
    /// At most this many instances run their `restore` scripts at once
    /// (`--restore-parallelism`; 1, the default, is bbr's serial order).
    pub restore_parallelism: usize,
    /// Backups also hash every staged file on the instance in a second read and compare
    /// those digests with the ones taken from the stream (`--instance-checksums`, bbr's
    /// check; off by default: the instance then reads each byte once).
    pub instance_checksums: bool,
}

/// Options, services and records of one run; cloned contexts share their services and
/// records (a drill gives its restore a fresh one with [`RunContext::for_step`]).
#[derive(Debug, Clone)]
pub struct RunContext {
    /// What the operator asked for.
    pub options: RunOptions,
    /// Fired on SIGINT/SIGTERM.
    pub cancel: CancellationToken,
    /// The signal that fired the token, for the message.
    signal_name: Arc<Mutex<Option<String>>>,
    /// Where `--json` events go.
    pub events: Option<Arc<dyn EventSink>>,
    /// Where this run's journal is kept (every command of the CLI; `None`: not journaled).
    pub journal: Option<JournalFile>,
    /// The command line up to the subcommand (`cairn deployment --target ... --deployment D`),
    /// secrets masked, to name the exact clean-up command in messages.
    pub command_prefix: Option<String>,
    /// The store that also keeps the journal (backups into a store, and backup-cleanup with
    /// `CAIRN_STORE`), so that another jumpbox finds what a killed run left.
    pub journal_store: Option<Arc<dyn cairn_store::ArtifactStore>>,
    /// The repository password file this run may use (its `--repository-password-file`, or
    /// `CAIRN_REPOSITORY_PASSWORD_FILE`): read only when a killed run's journal lists a
    /// repository backup whose snapshots must be deleted.
    pub repository_password_file: Option<std::path::PathBuf>,
    pub(super) journal_state: Arc<Mutex<Option<Journal>>>,
    records: Arc<Mutex<RunRecords>>,
}

/// What a run records as it goes.
#[derive(Debug, Default)]
struct RunRecords {
    scripts: Vec<ScriptRecord>,
    verifications: Vec<Verification>,
}

impl RunContext {
    /// A context with no cancellation wired.
    #[must_use]
    pub fn new(parallelism: usize, version: &str) -> RunContext {
        RunContext {
            options: RunOptions {
                parallelism: parallelism.max(1),
                version: version.to_string(),
                script_timeouts: ScriptTimeouts::default(),
                stall_timeout: DEFAULT_STALL_TIMEOUT,
                verify_restore: false,
                restore_parallelism: 1,
                instance_checksums: false,
            },
            cancel: CancellationToken::new(),
            signal_name: Arc::default(),
            events: None,
            journal: None,
            command_prefix: None,
            journal_store: None,
            repository_password_file: None,
            journal_state: Arc::default(),
            records: Arc::default(),
        }
    }

    /// A context for one step of a larger run (a drill's restore): the same cancellation and
    /// events, its own options, its own `journal` and records of its own.
    #[must_use]
    pub fn for_step(&self, options: RunOptions, journal: Option<JournalFile>) -> RunContext {
        RunContext {
            options,
            journal,
            journal_store: None,
            journal_state: Arc::default(),
            records: Arc::default(),
            ..self.clone()
        }
    }

    /// Sends an event to the `--json` sink, if any.
    pub fn emit(&self, event: Event) {
        if let Some(events) = &self.events {
            events.emit(event);
        }
    }

    /// Records a finished script for the manifest and the metrics, and emits its event.
    pub(crate) fn record_script(
        &self,
        instance: &InstanceName,
        job: &str,
        script: ScriptName,
        started_at: chrono::DateTime<chrono::Utc>,
        exit_status: u32,
    ) {
        let finished_at = chrono::Utc::now();
        self.records
            .lock()
            .expect("records")
            .scripts
            .push(ScriptRecord {
                instance: instance.to_string(),
                job: job.to_string(),
                script,
                finished_at,
                success: exit_status == 0,
            });
        self.emit(Event::ScriptFinished {
            instance: instance.to_string(),
            job: job.to_string(),
            script: script.to_string(),
            started_at,
            finished_at,
            exit_status,
        });
    }

    /// Records what a `post-restore-verify` found (or that a job has none).
    pub(crate) fn record_verification(&self, verification: Verification) {
        self.records
            .lock()
            .expect("records")
            .verifications
            .push(verification);
    }

    /// Every script that finished so far, in order.
    #[must_use]
    pub fn scripts(&self) -> Vec<ScriptRecord> {
        self.records.lock().expect("records").scripts.clone()
    }

    /// Every verification so far, in the order they finished.
    #[must_use]
    pub fn verifications(&self) -> Vec<Verification> {
        self.records.lock().expect("records").verifications.clone()
    }

    /// Marks the run as interrupted by `signal`.
    pub fn interrupt(&self, signal: &str) {
        *self.signal_name.lock().expect("lock") = Some(signal.to_string());
        self.cancel.cancel();
    }

    pub(super) fn interrupted(&self, operation: &'static str) -> Error {
        Error::Interrupted {
            operation,
            signal: self
                .signal_name
                .lock()
                .expect("lock")
                .clone()
                .unwrap_or_else(|| "a signal".into()),
        }
    }
}
