//! The streaming round trip of `cairn contract check` (scripts-contract §12), for a job whose
//! `metadata` declares `cairn: {stream: [...]}`: `backup` with `CAIRN_STREAM=1` traced with
//! strace (it may write nothing to disk but its logs, and must write something to stdout),
//! its stdout kept in a file on this machine, then `restore` with `CAIRN_STREAM=1` reading
//! that stream from stdin. Locks are always followed by their unlocks.

use std::io::{Read, Write};
use std::path::PathBuf;

use bytes::Bytes;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use crate::model::job::{ScriptName, StreamedScript, REMOTE_ARTIFACT_ROOT};
use crate::remote::script::ScriptIo;
use crate::remote::{commands, shell_quote, RemoteHostExt, StdoutMode};

use super::checker::Checker;
use super::{ContractError, ContractReport, Verdict};

/// Chunks in flight between the script and the stream file.
const QUEUE: usize = 16;
/// Chunks of the stream sent to `restore`.
const CHUNK: usize = 1 << 20;

/// The stream of the backup, kept on this machine for the restore; removed when dropped.
struct StreamFile {
    path: PathBuf,
}

impl Drop for StreamFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Checker<'_> {
    /// The streaming round trip; see the module documentation.
    pub(super) async fn stream_round_trip(
        &self,
        report: &mut ContractReport,
        streams: &[StreamedScript],
        trace: Option<(&str, &str)>,
    ) -> Result<(), ContractError> {
        if !streams.contains(&StreamedScript::Backup) {
            return Ok(());
        }
        // The classic round trip's artifact directory goes: a streaming job gets none.
        self.root(
            "removing the artifact root",
            &format!("rm -rf {REMOTE_ARTIFACT_ROOT}"),
        )
        .await?;
        let file = StreamFile {
            path: std::env::temp_dir().join(format!(
                "cairn-contract-stream-{}-{}",
                self.folder.job,
                std::process::id()
            )),
        };
        let streamed = self.stream_backup_phase(report, trace, &file).await?;
        if !streamed || self.cancel.is_cancelled() {
            return Ok(());
        }
        if !streams.contains(&StreamedScript::Restore) {
            report.add(
                Verdict::Note,
                "stream-restore",
                "metadata streams backup only: the stream is restored classically (as `cairn-stream` in BBR_ARTIFACT_DIRECTORY), which the classic round trip does not exercise",
            );
            return Ok(());
        }
        let locked = self.lock(ScriptName::PreRestoreLock, report).await?;
        if locked && !self.cancel.is_cancelled() {
            self.stream_restore(report, &file).await?;
        }
        self.unlock_twice(ScriptName::PostRestoreUnlock, &[], report)
            .await
    }

    /// Lock, streamed and traced backup, unlock twice. True when a stream was kept.
    async fn stream_backup_phase(
        &self,
        report: &mut ContractReport,
        trace: Option<(&str, &str)>,
        file: &StreamFile,
    ) -> Result<bool, ContractError> {
        let locked = self.lock(ScriptName::PreBackupLock, report).await?;
        let mut streamed = false;
        if locked && !self.cancel.is_cancelled() {
            streamed = self.stream_backup(report, trace, file).await?;
        }
        if self.listing.has(ScriptName::PreBackupLock)
            || self.listing.has(ScriptName::PostBackupUnlock)
        {
            let success = (locked && streamed).to_string();
            self.unlock_twice(
                ScriptName::PostBackupUnlock,
                &[("BBR_AFTER_BACKUP_SCRIPTS_SUCCESSFUL", success)],
                report,
            )
            .await?;
        }
        Ok(locked && streamed)
    }

    async fn stream_backup(
        &self,
        report: &mut ContractReport,
        trace: Option<(&str, &str)>,
        file: &StreamFile,
    ) -> Result<bool, ContractError> {
        if let Some((dir, _)) = trace {
            self.root(
                "creating the trace directory",
                &format!("rm -rf {0} && mkdir -m 0700 {0}", shell_quote(dir)),
            )
            .await?;
        }
        let prefix = trace.map(|(dir, _)| format!("{dir}/trace"));
        let (sender, receiver) = mpsc::channel(QUEUE);
        let path = file.path.clone();
        let saving = tokio::task::spawn_blocking(move || save_stream(receiver, &path));
        let mut environment = self.artifact_environment();
        environment.push(("CAIRN_STREAM", "1".to_string()));
        let outcome = self
            .run_script_io(
                ScriptName::Backup,
                &environment,
                true,
                prefix.as_deref(),
                ScriptIo {
                    stdin: None,
                    stdout: StdoutMode::Stream(sender),
                },
            )
            .await?;
        let (size, sha256) =
            saving
                .await
                .expect("stream file thread")
                .map_err(|error| ContractError::Command {
                    path: self.folder.path.clone(),
                    host: self.host.to_string(),
                    detail: format!(
                        "keeping the stream in {} failed: {error}",
                        file.path.display()
                    ),
                })?;
        if !outcome.succeeded() {
            report.add(
                Verdict::Fail,
                "stream-backup",
                format!("with CAIRN_STREAM=1: {}", outcome.describe()),
            );
            return Ok(false);
        }
        let artifact = self.folder.artifact_directory();
        let wrote_directory = self
            .host
            .run(&commands::path_exists(&artifact))
            .await?
            .success();
        let verdict = if size == 0 || wrote_directory {
            Verdict::Fail
        } else {
            Verdict::Pass
        };
        let what = if wrote_directory {
            format!("it wrote into {artifact} instead of stdout (Cairn does not create it for a streaming job)")
        } else if size == 0 {
            "it wrote nothing to stdout: with CAIRN_STREAM=1 the artifact goes to stdout".into()
        } else {
            format!("{size} bytes to stdout, sha256 {sha256}")
        };
        report.add(
            verdict,
            "stream-backup",
            format!("with CAIRN_STREAM=1: {}; {what}", outcome.describe()),
        );
        if let Some((dir, cwd)) = trace {
            self.check_write_scope(report, dir, cwd, true).await?;
        }
        // A directory the script made is not left for the next run.
        self.root(
            "removing the artifact root",
            &format!("rm -rf {REMOTE_ARTIFACT_ROOT}"),
        )
        .await?;
        Ok(verdict == Verdict::Pass)
    }

    /// `restore` with `CAIRN_STREAM=1`, the kept stream on its stdin.
    async fn stream_restore(
        &self,
        report: &mut ContractReport,
        file: &StreamFile,
    ) -> Result<(), ContractError> {
        let (sender, receiver) = mpsc::channel(QUEUE);
        let path = file.path.clone();
        let sending = tokio::task::spawn_blocking(move || send_stream(&path, &sender));
        let mut environment = self.artifact_environment();
        environment.push(("CAIRN_STREAM", "1".to_string()));
        let outcome = self
            .run_script_io(
                ScriptName::Restore,
                &environment,
                true,
                None,
                ScriptIo {
                    stdin: Some(receiver),
                    stdout: StdoutMode::Capture(1 << 20),
                },
            )
            .await?;
        let sent = sending.await.expect("stream file thread");
        let (verdict, detail) = match (&sent, outcome.succeeded()) {
            (Ok(bytes), true) => (
                Verdict::Pass,
                format!(
                    "{} ({bytes} bytes of the stream just taken on stdin)",
                    outcome.describe()
                ),
            ),
            (Err(error), _) => (
                Verdict::Fail,
                format!("reading the kept stream failed: {error}"),
            ),
            (Ok(_), false) => (Verdict::Fail, outcome.describe()),
        };
        report.add(
            verdict,
            "stream-restore",
            format!("with CAIRN_STREAM=1: {detail}"),
        );
        Ok(())
    }
}

/// Writes the chunks to `path`; returns the stream's size and sha256.
fn save_stream(
    mut receiver: mpsc::Receiver<Bytes>,
    path: &std::path::Path,
) -> std::io::Result<(u64, String)> {
    let mut file = std::fs::File::create(path)?;
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    while let Some(chunk) = receiver.blocking_recv() {
        hasher.update(&chunk);
        size += chunk.len() as u64;
        file.write_all(&chunk)?;
    }
    file.sync_all()?;
    Ok((size, hex::encode(hasher.finalize())))
}

/// Sends the file at `path` in chunks, then ends (EOF); returns the bytes sent.
fn send_stream(path: &std::path::Path, sender: &mpsc::Sender<Bytes>) -> std::io::Result<u64> {
    let mut file = std::fs::File::open(path)?;
    let mut sent = 0u64;
    loop {
        let mut chunk = vec![0; CHUNK];
        let count = file.read(&mut chunk)?;
        if count == 0 {
            return Ok(sent);
        }
        chunk.truncate(count);
        sent += count as u64;
        if sender.blocking_send(Bytes::from(chunk)).is_err() {
            // The script stopped reading: its exit status says why.
            return Ok(sent);
        }
    }
}
