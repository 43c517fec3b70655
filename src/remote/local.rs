//! [`RemoteHost`] for this machine: commands run through `sh -c` as local processes.
//!
//! `cairn contract check PATH` without `--ssh` checks a job installed on the machine Cairn
//! runs on (a VM being prepared, a release author's workstation with the job unpacked under
//! `/var/vcap/jobs`). The commands are exactly the ones sent over SSH, `sudo` included, so a
//! local check and a remote one exercise the same contract.

use std::fmt;
use std::process::Stdio;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{
    CommandOutput, RemoteError, RemoteHost, StdoutCapture, StdoutMode, TailBuffer, STDERR_LIMIT,
};

/// This machine, named `localhost` in messages.
#[derive(Debug, Default)]
pub struct LocalHost;

impl fmt::Display for LocalHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("localhost")
    }
}

fn spawn_error(error: &std::io::Error) -> RemoteError {
    RemoteError::Protocol {
        host: "localhost".into(),
        detail: format!("cannot run sh: {error}"),
    }
}

#[async_trait]
impl RemoteHost for LocalHost {
    async fn exec(
        &self,
        command: &str,
        stdin: Option<mpsc::Receiver<Bytes>>,
        stdout: StdoutMode,
        cancel: &CancellationToken,
    ) -> Result<CommandOutput, RemoteError> {
        let mut child = tokio::process::Command::new("sh")
            .arg("-c")
            .arg(command)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| spawn_error(&e))?;
        let feeding = feed_stdin(child.stdin.take(), stdin);
        let reading_out = read_stdout(child.stdout.take(), stdout, command);
        let reading_err = read_stderr(child.stderr.take());
        let work = async {
            let ((), out, err, status) =
                tokio::join!(feeding, reading_out, reading_err, child.wait());
            let status = status.map_err(|e| spawn_error(&e))?;
            let status = status.code().map_or(128 + signal_of(status), |c| c as u32);
            let (stdout, stdout_dropped) = out?;
            Ok(CommandOutput {
                status,
                stdout,
                stdout_dropped,
                stderr: err,
            })
        };
        tokio::select! {
            result = work => result,
            () = cancel.cancelled() => Err(RemoteError::Cancelled { host: "localhost".into() }),
        }
    }
}

fn signal_of(status: std::process::ExitStatus) -> u32 {
    use std::os::unix::process::ExitStatusExt;
    status.signal().map_or(0, |s| s as u32)
}

async fn feed_stdin(
    pipe: Option<tokio::process::ChildStdin>,
    source: Option<mpsc::Receiver<Bytes>>,
) {
    let (Some(mut pipe), Some(mut source)) = (pipe, source) else {
        return;
    };
    while let Some(chunk) = source.recv().await {
        if pipe.write_all(&chunk).await.is_err() {
            return;
        }
    }
    // Dropping the pipe sends EOF.
}

async fn read_stdout(
    pipe: Option<tokio::process::ChildStdout>,
    mode: StdoutMode,
    command: &str,
) -> Result<(Vec<u8>, u64), RemoteError> {
    let mut captured = StdoutCapture::default();
    let Some(mut pipe) = pipe else {
        return Ok(captured.finish());
    };
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let read = pipe.read(&mut buffer).await.unwrap_or(0);
        if read == 0 {
            return Ok(captured.finish());
        }
        match &mode {
            StdoutMode::Stream(sender) => {
                if sender
                    .send(Bytes::copy_from_slice(&buffer[..read]))
                    .await
                    .is_err()
                {
                    return Err(RemoteError::ReaderGone {
                        host: "localhost".into(),
                    });
                }
            }
            kept => {
                captured.push(kept, &buffer[..read]).map_err(|limit| {
                    RemoteError::OutputTooLarge {
                        host: "localhost".into(),
                        command: command.to_string(),
                        limit,
                    }
                })?;
            }
        }
    }
}

async fn read_stderr(pipe: Option<tokio::process::ChildStderr>) -> String {
    let Some(mut pipe) = pipe else {
        return String::new();
    };
    let mut tail = TailBuffer::new(STDERR_LIMIT);
    let mut buffer = vec![0u8; 16 * 1024];
    while let Ok(read) = pipe.read(&mut buffer).await {
        if read == 0 {
            break;
        }
        tail.push(&buffer[..read]);
    }
    tail.into_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remote::RemoteHostExt;

    #[tokio::test]
    async fn runs_commands_and_keeps_status_stdout_and_stderr() {
        let output = LocalHost
            .run("printf out; printf err >&2; exit 3")
            .await
            .unwrap();
        assert_eq!(output.status, 3);
        assert_eq!(output.stdout, b"out");
        assert_eq!(output.stderr, "err");
    }

    #[tokio::test]
    async fn a_chatty_command_keeps_its_head_and_counts_the_rest_and_a_capture_stops() {
        let never = CancellationToken::new();
        // 40 MiB printed, 16 MiB kept: the command still runs to its end (status 3).
        let output = LocalHost
            .exec(
                "head -c 41943040 /dev/zero | tr '\\0' x; exit 3",
                None,
                StdoutMode::KeepHead(16 << 20),
                &never,
            )
            .await
            .unwrap();
        assert_eq!(output.status, 3);
        assert_eq!(output.stdout.len(), 16 << 20);
        assert!(output.stdout.iter().all(|b| *b == b'x'));
        assert_eq!(output.stdout_dropped, 24 << 20);
        // A capture refuses past its limit.
        let error = LocalHost
            .exec(
                "head -c 2097152 /dev/zero",
                None,
                StdoutMode::Capture(1 << 20),
                &never,
            )
            .await
            .unwrap_err();
        assert!(
            matches!(error, RemoteError::OutputTooLarge { limit, .. } if limit == 1 << 20),
            "{error}"
        );
    }

    #[tokio::test]
    async fn feeds_stdin() {
        let (sender, receiver) = mpsc::channel(2);
        sender.send(Bytes::from_static(b"abc")).await.unwrap();
        drop(sender);
        let output = LocalHost
            .exec(
                "wc -c",
                Some(receiver),
                StdoutMode::Capture(1024),
                &CancellationToken::new(),
            )
            .await
            .unwrap();
        assert_eq!(output.stdout_text().trim(), "3");
    }
}
