//! Running a job script on an instance: the command line ([`ScriptCommand`]) and the one
//! place where a script's run becomes an [`ScriptOutcome`] ([`run_script`]).
//!
//! Every script Cairn runs — the workflows' lock, backup, unlock, restore and verify scripts,
//! `metadata` during discovery, and the contract check's — goes through here, so the
//! time limit means the same everywhere: GNU `timeout` on the instance ends the script and its
//! children (exit 124, or 137 after the KILL 30 s later), and a local timer 60 s after the
//! limit covers an instance that stops answering altogether.

use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{shell_quote, CommandOutput, RemoteError, RemoteHost, StdoutMode};

/// Where a script's stdin comes from and its stdout goes: nothing in and stdout captured,
/// or (a streaming job, scripts-contract "Streaming") the artifact in or out.
#[derive(Debug)]
pub struct ScriptIo {
    /// Chunks for the script's stdin, then EOF; `None`: EOF at once.
    pub stdin: Option<mpsc::Receiver<Bytes>>,
    /// Where its stdout goes.
    pub stdout: StdoutMode,
}

impl Default for ScriptIo {
    /// No input; the first [`STDOUT_KEPT`] bytes of stdout kept, the rest counted and dropped.
    fn default() -> Self {
        Self {
            stdin: None,
            stdout: StdoutMode::KeepHead(STDOUT_KEPT),
        }
    }
}

/// How much of a job script's stdout is kept in memory (16 MiB): bbr only logs it at
/// `--debug` (the evidence line of `post-restore-verify` aside), so the rest is counted, said
/// in the log and dropped, and a script that prints gigabytes cannot exhaust the jumpbox's
/// memory at `--parallelism` 10.
pub const STDOUT_KEPT: usize = 16 << 20;

/// The most a `metadata` script may print (1 MiB): its stdout is a short YAML document that
/// is parsed, so more is refused (`Error::MetadataTooLarge`) rather than kept.
pub const METADATA_STDOUT_LIMIT: usize = 1 << 20;

/// Exit status of a script that GNU `timeout` ended (124; 137 after KILL).
pub const TIMED_OUT_STATUSES: [u32; 2] = [124, 137];

/// How long after the limit the local timer gives up on an instance that stopped answering.
const LOCAL_GRACE: Duration = Duration::from_secs(60);

/// The command line of one script run: `sudo K=V ... [timeout ...] [strace ...] PATH`.
#[derive(Debug, Clone)]
pub struct ScriptCommand {
    path: String,
    environment: Vec<(String, String)>,
    timeout_seconds: Option<u64>,
    trace: Option<(String, String)>,
}

impl ScriptCommand {
    /// The script at `path`, run as root with no extra environment.
    #[must_use]
    pub fn new(path: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            environment: Vec::new(),
            timeout_seconds: None,
            trace: None,
        }
    }

    /// Adds environment variables (given to the script through `sudo`).
    #[must_use]
    pub fn envs<'a>(mut self, variables: impl IntoIterator<Item = &'a (&'a str, String)>) -> Self {
        self.environment.extend(
            variables
                .into_iter()
                .map(|(name, value)| ((*name).to_string(), value.clone())),
        );
        self
    }

    /// Ends the script (and its children) after `limit` with GNU `timeout` (whole seconds,
    /// at least 1).
    #[must_use]
    pub fn time_limit(mut self, limit: Option<Duration>) -> Self {
        self.timeout_seconds = limit.map(|limit| limit.as_secs().max(1));
        self
    }

    /// Runs the script under `strace -ff`, tracing `syscalls` into files starting with
    /// `prefix` (the contract check's proof of where a backup wrote).
    #[must_use]
    pub fn traced(mut self, prefix: &str, syscalls: &str) -> Self {
        self.trace = Some((prefix.to_string(), syscalls.to_string()));
        self
    }

    /// The limit in seconds, when there is one.
    #[must_use]
    pub fn timeout_seconds(&self) -> Option<u64> {
        self.timeout_seconds
    }

    /// The shell command line.
    #[must_use]
    pub fn render(&self) -> String {
        let mut command = String::from("sudo");
        for (name, value) in &self.environment {
            command.push(' ');
            command.push_str(&shell_quote(&format!("{name}={value}")));
        }
        if let Some(seconds) = self.timeout_seconds {
            command.push_str(&format!(" timeout --kill-after=30s {seconds}s"));
        }
        if let Some((prefix, syscalls)) = &self.trace {
            command.push_str(&format!(
                " strace -ff -qq -y -s 4096 -e status=successful -e trace={syscalls} -o {} --",
                shell_quote(prefix)
            ));
        }
        command.push(' ');
        command.push_str(&shell_quote(&self.path));
        command
    }
}

/// How one script run ended.
#[derive(Debug)]
pub enum ScriptOutcome {
    /// The script exited, with any status.
    Exited(CommandOutput),
    /// The time limit (in seconds) passed and the script was ended.
    TimedOut(u64),
    /// The run was interrupted (the cancellation token fired).
    Cancelled,
    /// The connection failed: the script's fate is unknown.
    Lost(RemoteError),
}

/// Runs a script on `remote` until it exits, its time limit passes, `cancel` fires or the
/// connection fails.
pub async fn run_script(
    remote: &dyn RemoteHost,
    command: &ScriptCommand,
    cancel: &CancellationToken,
) -> ScriptOutcome {
    run_script_io(remote, command, ScriptIo::default(), cancel).await
}

/// [`run_script`] with the script's stdin and stdout given.
pub async fn run_script_io(
    remote: &dyn RemoteHost,
    command: &ScriptCommand,
    io: ScriptIo,
    cancel: &CancellationToken,
) -> ScriptOutcome {
    let line = command.render();
    let Some(seconds) = command.timeout_seconds() else {
        return outcome(remote.exec(&line, io.stdin, io.stdout, cancel).await, None);
    };
    let own = cancel.child_token();
    let running = remote.exec(&line, io.stdin, io.stdout, &own);
    tokio::pin!(running);
    tokio::select! {
        result = &mut running => outcome(result, Some(seconds)),
        () = tokio::time::sleep(Duration::from_secs(seconds).saturating_add(LOCAL_GRACE)) => {
            own.cancel();
            let _ = running.await;
            ScriptOutcome::TimedOut(seconds)
        }
    }
}

fn outcome(result: Result<CommandOutput, RemoteError>, limit: Option<u64>) -> ScriptOutcome {
    match (result, limit) {
        (Ok(output), Some(seconds)) if TIMED_OUT_STATUSES.contains(&output.status) => {
            ScriptOutcome::TimedOut(seconds)
        }
        (Ok(output), _) => ScriptOutcome::Exited(output),
        (Err(RemoteError::Cancelled { .. }), _) => ScriptOutcome::Cancelled,
        (Err(error), _) => ScriptOutcome::Lost(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_quotes_the_environment_and_wraps_the_script_inside_sudo() {
        let environment = [(
            "BBR_ARTIFACT_DIRECTORY",
            "/var/vcap/store/bbr-backup/db/".to_string(),
        )];
        let plain = ScriptCommand::new("/var/vcap/jobs/db/bin/bbr/backup").envs(&environment);
        assert_eq!(
            plain.render(),
            "sudo BBR_ARTIFACT_DIRECTORY=/var/vcap/store/bbr-backup/db/ /var/vcap/jobs/db/bin/bbr/backup"
        );
        let spaced = [("A", "my job".to_string())];
        let limited = ScriptCommand::new("/var/vcap/jobs/db/bin/bbr/backup")
            .envs(&spaced)
            .time_limit(Some(Duration::from_millis(90_500)));
        assert_eq!(
            limited.render(),
            "sudo 'A=my job' timeout --kill-after=30s 90s /var/vcap/jobs/db/bin/bbr/backup"
        );
        let traced = ScriptCommand::new("/x/it's")
            .time_limit(Some(Duration::from_millis(10)))
            .traced("/tmp/t", "openat");
        assert_eq!(
            traced.render(),
            r"sudo timeout --kill-after=30s 1s strace -ff -qq -y -s 4096 -e status=successful -e trace=openat -o /tmp/t -- '/x/it'\''s'"
        );
    }
}
