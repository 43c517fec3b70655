//! An SSH host that comes back: a lost connection is re-established before the next command.
//!
//! Networks drop connections and sshd sessions get killed. A command that was running when
//! the connection died has failed — Cairn never re-runs it on its own, since a backup or
//! lock script may not be safe to repeat — but the run still has to unlock what it locked and
//! remove what it created. So every new command first checks the connection and, if it is
//! gone, connects again (same destination, same host-key check). A connection Cairn dropped
//! itself (a stalled transfer, [`RemoteHost::sever_connection`]) counts as gone.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::ssh::{SshDestination, SshHost};
use super::{CommandOutput, RemoteError, RemoteHost, StdoutMode};

/// An [`SshHost`] that reconnects when its connection was lost.
#[derive(Debug)]
pub struct ReconnectingHost {
    destination: SshDestination,
    /// The connection in use (read without waiting, also while a reconnect is under way).
    current: std::sync::Mutex<Arc<SshHost>>,
    /// Held while connecting anew, so that one reconnect serves every command waiting.
    reconnecting: tokio::sync::Mutex<()>,
}

impl ReconnectingHost {
    /// Connects for the first time.
    ///
    /// # Errors
    /// As [`SshHost::connect`].
    pub async fn connect(destination: SshDestination) -> Result<ReconnectingHost, RemoteError> {
        let host = SshHost::connect(&destination).await?;
        Ok(ReconnectingHost {
            destination,
            current: std::sync::Mutex::new(Arc::new(host)),
            reconnecting: tokio::sync::Mutex::new(()),
        })
    }

    fn current(&self) -> Arc<SshHost> {
        Arc::clone(&self.current.lock().expect("connection lock"))
    }

    /// The live connection, reconnecting first if the last one is closed.
    async fn live(&self) -> Result<Arc<SshHost>, RemoteError> {
        let host = self.current();
        if !host.is_closed() {
            return Ok(host);
        }
        let _reconnecting = self.reconnecting.lock().await;
        // Another command may have reconnected while this one waited.
        let host = self.current();
        if !host.is_closed() {
            return Ok(host);
        }
        tracing::warn!(
            "The SSH connection to {} was lost; reconnecting",
            self.destination.name
        );
        let fresh = Arc::new(SshHost::connect(&self.destination).await?);
        *self.current.lock().expect("connection lock") = Arc::clone(&fresh);
        Ok(fresh)
    }

    /// Closes the connection politely.
    pub async fn disconnect(&self) {
        self.current().disconnect().await;
    }
}

impl fmt::Display for ReconnectingHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.destination.name)
    }
}

#[async_trait]
impl RemoteHost for ReconnectingHost {
    async fn exec(
        &self,
        command: &str,
        stdin: Option<mpsc::Receiver<Bytes>>,
        stdout: StdoutMode,
        cancel: &CancellationToken,
    ) -> Result<CommandOutput, RemoteError> {
        let host = self.live().await?;
        host.exec(command, stdin, stdout, cancel).await
    }

    async fn sever_connection(&self) {
        self.current().sever();
    }
}
