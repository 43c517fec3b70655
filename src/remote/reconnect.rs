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
    current: tokio::sync::Mutex<Arc<SshHost>>,
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
            current: tokio::sync::Mutex::new(Arc::new(host)),
        })
    }

    /// The live connection, reconnecting first if the last one is closed.
    async fn live(&self) -> Result<Arc<SshHost>, RemoteError> {
        let mut current = self.current.lock().await;
        if current.is_closed() {
            tracing::warn!(
                "The SSH connection to {} was lost; reconnecting",
                self.destination.name
            );
            *current = Arc::new(SshHost::connect(&self.destination).await?);
        }
        Ok(Arc::clone(&current))
    }

    /// Closes the connection politely.
    pub async fn disconnect(&self) {
        self.current.lock().await.disconnect().await;
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
        // Held only while a command connects anew: then the old connection is gone already.
        if let Ok(current) = self.current.try_lock() {
            current.sever();
        }
    }
}
