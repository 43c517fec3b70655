//! An SSH host that comes back: a lost connection is re-established before the next command.
//!
//! Networks drop connections and sshd sessions get killed. A command that was running when
//! the connection died has failed — Cairn never re-runs it on its own, since a backup or
//! lock script may not be safe to repeat — but the run still has to unlock what it locked and
//! remove what it created. So every new command first checks the connection and, if it is
//! gone, connects again (same destination). A connection Cairn dropped itself (a stalled
//! transfer, [`RemoteHost::sever_connection`]) counts as gone.
//!
//! A jumpbox (`BOSH_ALL_PROXY=ssh+socks5://...`) is such a host too: its tunnel carries every
//! connection of the run, so a lost tunnel is connected again when the next connection is
//! dialled (the unlock after a network blip must still reach the instances).
//!
//! The host key seen on the first connection is pinned for every reconnect of the run
//! ([`SshHost::reconnect`]), whatever known_hosts says or `--insecure-skip-host-key-check`
//! allows: a connection lost in the middle of a run is exactly the moment a man in the middle
//! would take over (he cuts the connection, the client comes back to him), and a host does
//! not change its key between two commands of one run.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use russh::keys::PublicKey;

use super::dial::{BoxStream, Dialer};
use super::ssh::{SshDestination, SshHost};
use super::{CommandOutput, RemoteError, RemoteHost, StdoutMode};

/// An [`SshHost`] that reconnects when its connection was lost.
#[derive(Debug)]
pub struct ReconnectingHost {
    destination: SshDestination,
    /// The key the host presented on the first connection: every reconnect must see it again.
    first_key: PublicKey,
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
            first_key: host.host_key().clone(),
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
        let fresh = Arc::new(SshHost::reconnect(&self.destination, &self.first_key).await?);
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

/// A jumpbox that comes back: each dial goes through the live tunnel, reconnected first if it
/// was lost (with the host key of the first connection pinned).
#[async_trait]
impl Dialer for ReconnectingHost {
    async fn dial(&self, host: &str, port: u16) -> std::io::Result<BoxStream> {
        let jumpbox = self.live().await.map_err(|error| {
            std::io::Error::new(std::io::ErrorKind::ConnectionRefused, error.to_string())
        })?;
        jumpbox.dial(host, port).await
    }
}
