//! Running commands on instances: the [`RemoteHost`] seam and its SSH implementation.
//!
//! Everything Cairn does on an instance is one command on an exec channel: job scripts, `find`,
//! `tar`, checksums. The trait is deliberately narrow — one `exec` with optional streamed stdin
//! and stdout — so the orchestrator can be tested against anything that runs commands, and so
//! wrappers (retries, fault injection) can be layered on later without touching callers.
//!
//! Standard error is always kept, bounded to its last [`STDERR_LIMIT`] bytes, because the end
//! of a failing script's stderr is what an operator needs in the error message.

pub mod all_proxy;
pub mod commands;
pub mod dial;
pub mod known_hosts;
pub mod local;
pub mod login_key;
pub mod reconnect;
pub mod script;
pub mod ssh;

use std::fmt::{Debug, Display};

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// How much of a command's standard error is kept (the end of it).
pub const STDERR_LIMIT: usize = 64 * 1024;

/// Where a command's standard output goes.
#[derive(Debug)]
pub enum StdoutMode {
    /// Kept in memory up to this many bytes; more is an error.
    Capture(usize),
    /// The first this many bytes kept in memory; the rest is counted
    /// ([`CommandOutput::stdout_dropped`]) and dropped, so a chatty script cannot fill the
    /// jumpbox's memory and still runs to its end.
    KeepHead(usize),
    /// Sent chunk by chunk; a full channel slows the remote side down (SSH flow control).
    Stream(mpsc::Sender<Bytes>),
}

/// A command that ran to completion.
#[derive(Debug, Clone, Default)]
pub struct CommandOutput {
    /// Exit status.
    pub status: u32,
    /// Captured standard output (empty when streamed).
    pub stdout: Vec<u8>,
    /// Bytes of standard output dropped beyond a [`StdoutMode::KeepHead`] limit.
    pub stdout_dropped: u64,
    /// The end of standard error.
    pub stderr: String,
}

impl CommandOutput {
    /// True for exit status 0.
    #[must_use]
    pub fn success(&self) -> bool {
        self.status == 0
    }

    /// Standard output as text.
    #[must_use]
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// A one-line summary for error messages: trimmed stderr and the exit status.
    #[must_use]
    pub fn failure_detail(&self) -> String {
        format!("{} - exit code {}", self.stderr.trim(), self.status)
    }
}

/// A failure to run a command at all (as opposed to a command that exited non-zero).
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// TCP connection failed.
    #[error("Cannot connect to {host} at {address}: {detail}; check the address and that sshd runs there")]
    Connect {
        /// Instance name.
        host: String,
        /// `address:port`.
        address: String,
        /// Why.
        detail: String,
    },
    /// The host presented a key that is in no known_hosts file.
    #[error("Host key of {host} at {address} is unknown ({fingerprint}); add it to known_hosts (or --known-hosts FILE), pin it with `host_key` in the inventory, or pass --insecure-skip-host-key-check")]
    UnknownHostKey {
        /// Instance name.
        host: String,
        /// `address:port`.
        address: String,
        /// `SHA256:...` fingerprint of the presented key.
        fingerprint: String,
    },
    /// The host presented a key different from the one on record.
    #[error("Host key of {host} at {address} does not match {expected_from} (it presented {fingerprint}); this may be a man-in-the-middle attack — verify the host and update the recorded key")]
    HostKeyMismatch {
        /// Instance name.
        host: String,
        /// `address:port`.
        address: String,
        /// `SHA256:...` fingerprint of the presented key.
        fingerprint: String,
        /// Where the expected key came from.
        expected_from: String,
    },
    /// The host presented a key other than the one its known_hosts file holds for it.
    #[error("Host key of {host} at {address} does not match the one recorded in {path} (it presented {fingerprint}); this may be a man-in-the-middle attack. If the host was rebuilt (a new jumpbox, a director after create-env), verify it and forget the old key with `{fix}`, then run again")]
    HostKeyChanged {
        /// Instance name.
        host: String,
        /// `address:port`.
        address: String,
        /// `SHA256:...` fingerprint of the presented key.
        fingerprint: String,
        /// The known_hosts file.
        path: String,
        /// The `ssh-keygen -f FILE -R HOST` command that removes the recorded key.
        fix: String,
    },
    /// On a reconnect, the host presented a key other than the one it presented earlier in
    /// the same run.
    #[error("Host key of {host} at {address} changed during this run: it presented {fingerprint} when Cairn reconnected, {first} before; refused whatever known_hosts or --insecure-skip-host-key-check would allow, as this may be a man-in-the-middle attack. Verify the host; jobs this run locked there may still be locked (`backup-cleanup` or `restore-cleanup` unlocks them)")]
    HostKeyChangedDuringRun {
        /// Instance name.
        host: String,
        /// `address:port`.
        address: String,
        /// `SHA256:...` fingerprint of the key presented on reconnecting.
        fingerprint: String,
        /// `SHA256:...` fingerprint of the key seen first in this run.
        first: String,
    },
    /// The private key file cannot be used.
    #[error("Cannot use private key `{path}`: {detail}")]
    PrivateKey {
        /// The key file.
        path: String,
        /// Why.
        detail: String,
    },
    /// The server refused the key.
    #[error("SSH authentication as `{user}` failed on {host}; check the user and that its authorized_keys holds the key")]
    Authentication {
        /// Instance name.
        host: String,
        /// User name.
        user: String,
    },
    /// The SSH protocol failed.
    #[error("SSH error on {host}: {detail}")]
    Protocol {
        /// Instance name.
        host: String,
        /// The russh error.
        detail: String,
    },
    /// The channel closed without an exit status.
    #[error(
        "ssh session ended before returning an exit code on {host} (did the network just fail?)"
    )]
    SessionEnded {
        /// Instance name.
        host: String,
    },
    /// The command printed more than the capture limit.
    #[error("Output of `{command}` on {host} exceeds {limit} bytes")]
    OutputTooLarge {
        /// Instance name.
        host: String,
        /// The command.
        command: String,
        /// The limit.
        limit: usize,
    },
    /// The run was cancelled while the command ran; the channel was closed.
    #[error("Command on {host} was cancelled")]
    Cancelled {
        /// Instance name.
        host: String,
    },
    /// The receiver of streamed stdout went away.
    #[error("Output of a command on {host} could not be delivered: the reader stopped")]
    ReaderGone {
        /// Instance name.
        host: String,
    },
}

/// A host commands run on.
///
/// # Contract
/// - `exec` runs `command` through the remote user's shell and returns once the command has
///   exited and all its output was delivered, or fails with [`RemoteError`].
/// - A non-zero exit is not an error: it is in [`CommandOutput::status`].
/// - When `stdin` is given, its chunks are the command's standard input, followed by EOF.
/// - When `cancel` fires, the command is sent SIGTERM, the channel is closed and
///   [`RemoteError::Cancelled`] is returned.
/// - Several `exec` calls may run at once.
#[async_trait]
pub trait RemoteHost: Send + Sync + Debug + Display {
    /// Runs one command.
    async fn exec(
        &self,
        command: &str,
        stdin: Option<mpsc::Receiver<Bytes>>,
        stdout: StdoutMode,
        cancel: &CancellationToken,
    ) -> Result<CommandOutput, RemoteError>;

    /// Drops the connection at once, without waiting for the other side (which may be
    /// unreachable): every command running on it fails, and the next command connects anew.
    /// Used when a stream stopped moving (`--stall-timeout`). Hosts without a connection do
    /// nothing.
    async fn sever_connection(&self) {}
}

/// Conveniences on top of [`RemoteHost`].
#[async_trait]
pub trait RemoteHostExt: RemoteHost {
    /// Runs a command, capturing up to 256 MiB of stdout; never cancelled.
    async fn run(&self, command: &str) -> Result<CommandOutput, RemoteError> {
        self.exec(
            command,
            None,
            StdoutMode::Capture(256 * 1024 * 1024),
            &CancellationToken::new(),
        )
        .await
    }

    /// Runs a command that can be cancelled, capturing stdout.
    async fn run_cancellable(
        &self,
        command: &str,
        cancel: &CancellationToken,
    ) -> Result<CommandOutput, RemoteError> {
        self.exec(
            command,
            None,
            StdoutMode::Capture(256 * 1024 * 1024),
            cancel,
        )
        .await
    }
}

impl<T: RemoteHost + ?Sized> RemoteHostExt for T {}

/// Quotes a word for a POSIX shell: safe for any byte string without NUL.
#[must_use]
pub fn shell_quote(word: &str) -> String {
    if !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:@%+,".contains(&b))
    {
        return word.to_string();
    }
    format!("'{}'", word.replace('\'', r"'\''"))
}

/// Standard output being collected as a [`StdoutMode`] that keeps it in memory says: the one
/// place the capture limits are applied, for every [`RemoteHost`] implementation.
#[derive(Debug, Default)]
pub struct StdoutCapture {
    kept: Vec<u8>,
    dropped: u64,
}

impl StdoutCapture {
    /// Adds `data` under `mode`'s limit: [`StdoutMode::Capture`] fails once the limit is
    /// passed, [`StdoutMode::KeepHead`] counts what does not fit. [`StdoutMode::Stream`] is not
    /// for this (nothing is kept).
    ///
    /// # Errors
    /// The `Capture` limit was passed: `Err(limit)`.
    pub fn push(&mut self, mode: &StdoutMode, data: &[u8]) -> Result<(), usize> {
        match mode {
            StdoutMode::Capture(limit) => {
                if self.kept.len().saturating_add(data.len()) > *limit {
                    return Err(*limit);
                }
                self.kept.extend_from_slice(data);
            }
            StdoutMode::KeepHead(limit) => {
                let room = limit.saturating_sub(self.kept.len()).min(data.len());
                self.kept.extend_from_slice(&data[..room]);
                self.dropped = self.dropped.saturating_add((data.len() - room) as u64);
            }
            StdoutMode::Stream(_) => {}
        }
        Ok(())
    }

    /// What was kept and how many bytes were dropped.
    #[must_use]
    pub fn finish(self) -> (Vec<u8>, u64) {
        (self.kept, self.dropped)
    }
}

/// Keeps the last `limit` bytes written to it.
#[derive(Debug)]
pub struct TailBuffer {
    limit: usize,
    bytes: std::collections::VecDeque<u8>,
    truncated: bool,
}

impl TailBuffer {
    /// An empty buffer keeping at most `limit` bytes.
    #[must_use]
    pub fn new(limit: usize) -> Self {
        Self {
            limit,
            bytes: std::collections::VecDeque::new(),
            truncated: false,
        }
    }

    /// Appends bytes, dropping the oldest beyond the limit.
    pub fn push(&mut self, data: &[u8]) {
        self.bytes.extend(data);
        if self.bytes.len() > self.limit {
            let excess = self.bytes.len() - self.limit;
            self.bytes.drain(..excess);
            self.truncated = true;
        }
    }

    /// The kept text, prefixed with `...` when the beginning was dropped.
    #[must_use]
    pub fn into_string(self) -> String {
        let (front, back) = self.bytes.as_slices();
        let mut text = String::from_utf8_lossy(&[front, back].concat()).into_owned();
        if self.truncated {
            text.insert_str(0, "...");
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_leaves_plain_words_and_protects_the_rest() {
        assert_eq!(
            shell_quote("/var/vcap/jobs/x/bin/bbr/backup"),
            "/var/vcap/jobs/x/bin/bbr/backup"
        );
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("$(rm -rf /)"), "'$(rm -rf /)'");
    }

    #[test]
    fn capture_fails_past_its_limit_and_keep_head_counts_what_it_drops() {
        let mut capture = StdoutCapture::default();
        let mode = StdoutMode::Capture(4);
        assert_eq!(capture.push(&mode, b"abc"), Ok(()));
        assert_eq!(capture.push(&mode, b"d"), Ok(()));
        assert_eq!(capture.push(&mode, b"e"), Err(4));
        let mut head = StdoutCapture::default();
        let mode = StdoutMode::KeepHead(4);
        for chunk in [&b"abc"[..], b"defg", b"", b"hi"] {
            head.push(&mode, chunk).unwrap();
        }
        assert_eq!(head.finish(), (b"abcd".to_vec(), 5));
    }

    #[test]
    fn tail_buffer_keeps_the_end() {
        let mut buffer = TailBuffer::new(4);
        buffer.push(b"abc");
        buffer.push(b"defg");
        assert_eq!(buffer.into_string(), "...defg");
        let mut short = TailBuffer::new(10);
        short.push(b"hi");
        assert_eq!(short.into_string(), "hi");
    }
}
