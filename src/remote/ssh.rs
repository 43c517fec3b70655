//! [`RemoteHost`] over SSH with russh: one connection per instance, one channel per command.
//!
//! bbr dials a new TCP connection and SSH handshake for every command; Cairn connects once per
//! instance and opens a channel per command on it, so scripts, transfers and checksums of one
//! instance share a connection (and several may run at once). Channels get a 2 MiB window
//! (OpenSSH's own) and AES-128-GCM is preferred: both matter for streaming throughput
//! (test-infra.md, docs/performance.md).
//!
//! Host keys are always checked unless the caller explicitly chose [`HostKeyPolicy::AcceptAny`]:
//! against a pinned key, or against a known_hosts file. The host-key algorithms offered to the
//! server are narrowed to the ones on record, so a host that has an RSA key on record and also
//! an Ed25519 key is checked against the recorded one instead of looking unknown. A host missing
//! from known_hosts is refused or, where bbr trusts whatever it meets (a `BOSH_ALL_PROXY`
//! jumpbox, a director VM), recorded on first use ([`UnknownHost::Record`], OpenSSH's
//! `accept-new`, see [`super::known_hosts`]); a changed key is always refused.
//!
//! A dead peer is noticed by keepalives (`--keepalive-interval`, [`set_keepalive_interval`]).
//! A caller that gave up on a connection (a stalled transfer) cuts it with [`SshHost::sever`]:
//! its byte stream fails at once, so the session ends without waiting on a silent network.

use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use russh::client::{self, Handle};
use russh::keys::{self, Algorithm, HashAlg, PrivateKeyWithHashAlg, PublicKey};
use russh::{ChannelMsg, Preferred, Sig};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::mpsc;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use super::dial::{BoxStream, Dialer, DirectDialer};
use super::known_hosts::{host_pattern, KnownHosts, Lookup};
use super::{
    CommandOutput, RemoteError, RemoteHost, StdoutCapture, StdoutMode, TailBuffer, STDERR_LIMIT,
};

/// The SSH channel window Cairn grants (see [`client_config`]).
pub const CHANNEL_WINDOW: u32 = 2 * 1024 * 1024;

/// How a host's key is checked.
#[derive(Debug, Clone)]
pub enum HostKeyPolicy {
    /// The host must present exactly this key.
    Pinned(PublicKey),
    /// The host must be in this known_hosts file; an unknown host is refused or recorded, a
    /// changed key is always refused.
    KnownHosts {
        /// The known_hosts file.
        path: PathBuf,
        /// What to do with a host that is not in the file.
        on_unknown: UnknownHost,
    },
    /// No check at all (`--insecure-skip-host-key-check`).
    AcceptAny,
}

/// What to do with a host missing from known_hosts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnknownHost {
    /// Fail with the fingerprint.
    Refuse,
    /// Trust on first use (OpenSSH's `StrictHostKeyChecking=accept-new`): append the key to
    /// the file, log a warning with its fingerprint and go on.
    Record,
}

/// Everything needed to reach one instance.
#[derive(Debug, Clone)]
pub struct SshDestination {
    /// Name used in messages, `group/id`.
    pub name: String,
    /// Host name or IP address; IPv6 with or without brackets.
    pub address: String,
    /// Port.
    pub port: u16,
    /// Login user (needs passwordless sudo).
    pub username: String,
    /// The private key to log in with.
    pub private_key: KeySource,
    /// Host key check.
    pub host_key: HostKeyPolicy,
    /// How to reach the host (`BOSH_ALL_PROXY`); direct TCP when `None`.
    pub dialer: Option<Arc<dyn Dialer>>,
}

/// Where a login key comes from.
#[derive(Clone)]
pub enum KeySource {
    /// An OpenSSH private key file.
    File(PathBuf),
    /// A key held in memory (the temporary key of a BOSH SSH session), never written to disk.
    Generated(Arc<keys::PrivateKey>),
}

impl fmt::Debug for KeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeySource::File(path) => f.debug_tuple("File").field(path).finish(),
            KeySource::Generated(_) => f.write_str("Generated(<redacted>)"),
        }
    }
}

impl From<PathBuf> for KeySource {
    fn from(path: PathBuf) -> Self {
        KeySource::File(path)
    }
}

impl SshDestination {
    /// The address without IPv6 brackets.
    fn bare_address(&self) -> &str {
        self.address
            .strip_prefix('[')
            .and_then(|a| a.strip_suffix(']'))
            .unwrap_or(&self.address)
    }

    /// `address:port`, bracketed for IPv6.
    #[must_use]
    pub fn socket_label(&self) -> String {
        let host = self.bare_address();
        if host.contains(':') {
            format!("[{host}]:{}", self.port)
        } else {
            format!("{host}:{}", self.port)
        }
    }
}

/// A connected instance.
pub struct SshHost {
    name: String,
    handle: Handle<HostKeyChecker>,
    /// The host key this connection accepted (what a reconnect must see again).
    host_key: PublicKey,
    /// Fired by [`SshHost::sever`]: cuts the connection's byte stream.
    severed: CancellationToken,
}

impl fmt::Debug for SshHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SshHost").field("name", &self.name).finish()
    }
}

impl fmt::Display for SshHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

impl SshHost {
    /// Connects, checks the host key and authenticates with the private key.
    ///
    /// # Errors
    /// [`RemoteError`] saying which of those steps failed and what to do.
    pub async fn connect(destination: &SshDestination) -> Result<SshHost, RemoteError> {
        SshHost::open(destination, None).await
    }

    /// Connects again to a host this run already reached, which must present `seen`, the
    /// key it presented then — whatever the destination's policy would allow (a key trusted
    /// on first use but not recorded, `--insecure-skip-host-key-check`): a key that changes in
    /// the middle of a run is a man in the middle, not a rebuilt host.
    ///
    /// # Errors
    /// [`RemoteError::HostKeyChangedDuringRun`] for another key; otherwise as
    /// [`SshHost::connect`].
    pub async fn reconnect(
        destination: &SshDestination,
        seen: &PublicKey,
    ) -> Result<SshHost, RemoteError> {
        SshHost::open(destination, Some(seen.clone())).await
    }

    async fn open(
        destination: &SshDestination,
        seen: Option<PublicKey>,
    ) -> Result<SshHost, RemoteError> {
        let key = match &destination.private_key {
            KeySource::File(path) => super::login_key::load(path)?,
            KeySource::Generated(key) => keys::PrivateKey::clone(key),
        };
        let verdict = Arc::new(Mutex::new(None));
        let accepted = Arc::new(Mutex::new(None));
        let config = Arc::new(match &seen {
            // Offer only the algorithm of the key seen before, so the host shows that key.
            Some(key) => client_config(&HostKeyPolicy::Pinned(key.clone())),
            None => client_config_for(destination),
        });
        let checker = HostKeyChecker {
            destination: destination.clone(),
            seen_this_run: seen,
            verdict: Arc::clone(&verdict),
            accepted: Arc::clone(&accepted),
        };
        let severed = CancellationToken::new();
        let connecting = async {
            let stream = match &destination.dialer {
                None => DirectDialer.dial(destination.bare_address(), destination.port),
                Some(dialer) => dialer.dial(destination.bare_address(), destination.port),
            }
            .await
            .map_err(russh::Error::from)?;
            client::connect_stream(config, Severable::new(stream, &severed), checker).await
        };
        let result = tokio::time::timeout(Duration::from_secs(30), connecting).await;
        let mut handle = match result {
            Ok(Ok(handle)) => handle,
            Ok(Err(error)) => {
                let rejection = verdict.lock().expect("verdict lock").take();
                return Err(rejection.unwrap_or_else(|| connect_error(destination, &error)));
            }
            Err(_) => {
                return Err(RemoteError::Connect {
                    host: destination.name.clone(),
                    address: destination.socket_label(),
                    detail: "timed out after 30 s".into(),
                })
            }
        };
        authenticate(&mut handle, destination, key).await?;
        let host_key = accepted
            .lock()
            .expect("accepted key lock")
            .take()
            .ok_or_else(|| RemoteError::Protocol {
                host: destination.name.clone(),
                detail: "the connection was set up without a host-key check".into(),
            })?;
        Ok(SshHost {
            name: destination.name.clone(),
            handle,
            host_key,
            severed,
        })
    }

    /// The host key this connection accepted.
    #[must_use]
    pub fn host_key(&self) -> &PublicKey {
        &self.host_key
    }

    /// True once the connection is gone (closed by either side, lost, or severed).
    #[must_use]
    pub fn is_closed(&self) -> bool {
        self.severed.is_cancelled() || self.handle.is_closed()
    }

    /// Cuts the connection at once: its byte stream fails, so the session and every channel
    /// on it end without waiting for the other side (which, after a silent network cut, would
    /// never answer a polite disconnect).
    pub fn sever(&self) {
        tracing::debug!("{}: dropping the connection", self.name);
        self.severed.cancel();
    }

    /// Closes the connection politely.
    pub async fn disconnect(&self) {
        let _ = self
            .handle
            .disconnect(russh::Disconnect::ByApplication, "", "en")
            .await;
    }

    fn protocol_error(&self, error: &russh::Error) -> RemoteError {
        RemoteError::Protocol {
            host: self.name.clone(),
            detail: error.to_string(),
        }
    }
}

fn connect_error(destination: &SshDestination, error: &russh::Error) -> RemoteError {
    RemoteError::Connect {
        host: destination.name.clone(),
        address: destination.socket_label(),
        detail: error.to_string(),
    }
}

async fn authenticate(
    handle: &mut Handle<HostKeyChecker>,
    destination: &SshDestination,
    key: keys::PrivateKey,
) -> Result<(), RemoteError> {
    let protocol = |error: russh::Error| RemoteError::Protocol {
        host: destination.name.clone(),
        detail: error.to_string(),
    };
    let hash = if key.algorithm().is_rsa() {
        handle
            .best_supported_rsa_hash()
            .await
            .map_err(protocol)?
            .flatten()
            .or(Some(HashAlg::Sha256))
    } else {
        None
    };
    let result = handle
        .authenticate_publickey(
            destination.username.clone(),
            PrivateKeyWithHashAlg::new(Arc::new(key), hash),
        )
        .await
        .map_err(protocol)?;
    if result.success() {
        Ok(())
    } else {
        Err(RemoteError::Authentication {
            host: destination.name.clone(),
            user: destination.username.clone(),
        })
    }
}

fn client_config(policy: &HostKeyPolicy) -> client::Config {
    let mut ciphers = vec![russh::cipher::AES_128_GCM];
    ciphers.extend(
        Preferred::DEFAULT
            .cipher
            .iter()
            .filter(|c| **c != russh::cipher::AES_128_GCM),
    );
    let preferred = Preferred {
        cipher: Cow::Owned(ciphers),
        key: Cow::Owned(host_key_algorithms(policy)),
        ..Preferred::DEFAULT
    };
    client::Config {
        preferred,
        // 2 MiB, like OpenSSH's client: a bigger window only makes sshd buffer what Cairn's
        // hashing and compression cannot take yet (4-5x more sshd CPU and 30 % slower in the
        // A/B of docs/performance.md); 2 MiB per round trip still carries 2 GB/s at 1 ms.
        window_size: CHANNEL_WINDOW,
        keepalive_interval: Some(keepalive_interval()),
        keepalive_max: KEEPALIVE_MAX,
        nodelay: true,
        ..client::Config::default()
    }
}

/// The default `--keepalive-interval`: OpenSSH's `ServerAliveInterval` as BOSH operators set it.
pub const DEFAULT_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);

/// Unanswered keepalives after which a connection counts as lost (OpenSSH's
/// `ServerAliveCountMax` is 3; russh closes after this many plus one interval).
pub const KEEPALIVE_MAX: usize = 4;

/// `--keepalive-interval` in milliseconds; 0 until set ([`DEFAULT_KEEPALIVE_INTERVAL`]).
static KEEPALIVE_INTERVAL_MS: AtomicU64 = AtomicU64::new(0);

/// Sets how long a connection may be silent before a keepalive is sent
/// (`--keepalive-interval`), for every connection opened afterwards. One setting for the
/// process, like a socket option: the CLI sets it once, before it connects anything, so it
/// need not be threaded through every target, the Director's SSH users and the jumpbox.
pub fn set_keepalive_interval(interval: Duration) {
    let millis = u64::try_from(interval.as_millis())
        .unwrap_or(u64::MAX)
        .max(1);
    KEEPALIVE_INTERVAL_MS.store(millis, Ordering::Relaxed);
}

/// The keepalive interval of new connections.
#[must_use]
pub fn keepalive_interval() -> Duration {
    match KEEPALIVE_INTERVAL_MS.load(Ordering::Relaxed) {
        0 => DEFAULT_KEEPALIVE_INTERVAL,
        millis => Duration::from_millis(millis),
    }
}

/// A connection's byte stream that can be cut from outside ([`SshHost::sever`]): once its
/// token fires, every read and write fails at once, which ends russh's session task even
/// while it waits on a peer that no longer answers.
struct Severable {
    inner: BoxStream,
    reading: Pin<Box<WaitForCancellationFutureOwned>>,
    writing: Pin<Box<WaitForCancellationFutureOwned>>,
}

impl Severable {
    fn new(inner: BoxStream, token: &CancellationToken) -> Severable {
        Severable {
            inner,
            reading: Box::pin(token.clone().cancelled_owned()),
            writing: Box::pin(token.clone().cancelled_owned()),
        }
    }
}

fn severed() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::ConnectionAborted,
        "the connection was dropped by Cairn",
    )
}

impl AsyncRead for Severable {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.reading.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(severed()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Severable {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if self.writing.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(severed()));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        if self.writing.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(severed()));
        }
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The host-key algorithms to offer: those of the keys on record first.
fn host_key_algorithms(policy: &HostKeyPolicy) -> Vec<Algorithm> {
    let all = Preferred::DEFAULT.key.to_vec();
    let recorded: Vec<Algorithm> = match policy {
        HostKeyPolicy::Pinned(key) => vec![key.algorithm()],
        HostKeyPolicy::KnownHosts { .. } | HostKeyPolicy::AcceptAny => return all,
    };
    let matches = |candidate: &Algorithm| recorded.iter().any(|r| same_family(r, candidate));
    all.into_iter().filter(|a| matches(a)).collect()
}

/// Equal algorithms, or both RSA (whatever the signature hash).
fn same_family(a: &Algorithm, b: &Algorithm) -> bool {
    a == b || (a.clone().is_rsa() && b.clone().is_rsa())
}

/// The host-key algorithms recorded for a host in a known_hosts file, first the recorded ones.
fn known_hosts_algorithms(path: &Path, host: &str, port: u16) -> Vec<Algorithm> {
    let recorded: Vec<Algorithm> = keys::known_hosts::known_host_keys_path(host, port, path)
        .map(|keys| keys.into_iter().map(|(_, key)| key.algorithm()).collect())
        .unwrap_or_default();
    let mut all = Preferred::DEFAULT.key.to_vec();
    all.sort_by_key(|a| !recorded.iter().any(|r| same_family(r, a)));
    all
}

/// Opens a connection config whose host-key preference follows the known_hosts file.
fn client_config_for(destination: &SshDestination) -> client::Config {
    let mut config = client_config(&destination.host_key);
    if let HostKeyPolicy::KnownHosts { path, .. } = &destination.host_key {
        let algorithms = known_hosts_algorithms(path, destination.bare_address(), destination.port);
        config.preferred.key = Cow::Owned(algorithms);
    }
    config
}

/// The russh handler: checks the server key, records why it refused one and which one it
/// accepted.
struct HostKeyChecker {
    destination: SshDestination,
    /// On a reconnect: the key the host presented earlier in this run, the only one accepted.
    seen_this_run: Option<PublicKey>,
    verdict: Arc<Mutex<Option<RemoteError>>>,
    accepted: Arc<Mutex<Option<PublicKey>>>,
}

impl HostKeyChecker {
    fn refuse(&self, error: RemoteError) -> bool {
        *self.verdict.lock().expect("verdict lock") = Some(error);
        false
    }
}

/// Checks `key`: on a reconnect against the key seen earlier in the run, else against the
/// destination's policy; for known_hosts this reads and may write a file, so it runs on a
/// blocking thread.
fn verify_host_key(
    destination: &SshDestination,
    seen_this_run: Option<&PublicKey>,
    key: &PublicKey,
) -> Result<(), RemoteError> {
    let fingerprint = key.fingerprint(HashAlg::Sha256).to_string();
    if let Some(seen) = seen_this_run {
        return if seen.key_data() == key.key_data() {
            Ok(())
        } else {
            Err(RemoteError::HostKeyChangedDuringRun {
                host: destination.name.clone(),
                address: destination.socket_label(),
                fingerprint,
                first: seen.fingerprint(HashAlg::Sha256).to_string(),
            })
        };
    }
    match &destination.host_key {
        HostKeyPolicy::AcceptAny => Ok(()),
        HostKeyPolicy::Pinned(pinned) if pinned.key_data() == key.key_data() => Ok(()),
        HostKeyPolicy::Pinned(_) => Err(RemoteError::HostKeyMismatch {
            host: destination.name.clone(),
            address: destination.socket_label(),
            fingerprint,
            expected_from: "the pinned host_key".into(),
        }),
        HostKeyPolicy::KnownHosts { path, on_unknown } => {
            verify_known_host(destination, key, &KnownHosts::new(path), *on_unknown)
        }
    }
}

fn verify_known_host(
    destination: &SshDestination,
    key: &PublicKey,
    file: &KnownHosts,
    on_unknown: UnknownHost,
) -> Result<(), RemoteError> {
    let host = destination.bare_address();
    let port = destination.port;
    let fingerprint = key.fingerprint(HashAlg::Sha256).to_string();
    let found = match on_unknown {
        UnknownHost::Refuse => file.lookup(host, port, key),
        UnknownHost::Record => file.lookup_or_record(host, port, key),
    };
    let trusted = |outcome: String| {
        tracing::warn!(
            "Host key of {} at {} was unknown; trusting it on first use and {outcome}: {} {fingerprint}",
            destination.name,
            destination.socket_label(),
            key.algorithm(),
        );
    };
    match found {
        Ok(Lookup::Known) => Ok(()),
        Ok(Lookup::Recorded) => {
            let pattern = host_pattern(host, port);
            let path = file.path().display();
            trusted(format!("recording it in {path} as '{pattern}'"));
            Ok(())
        }
        // As OpenSSH: a key that cannot be recorded is still trusted for this connection.
        Err(error) if error.while_writing() => {
            trusted(format!("not recording it: {error}"));
            Ok(())
        }
        Err(error) => Err(RemoteError::Protocol {
            host: destination.name.clone(),
            detail: error.to_string(),
        }),
        Ok(Lookup::Unknown) => Err(RemoteError::UnknownHostKey {
            host: destination.name.clone(),
            address: destination.socket_label(),
            fingerprint,
        }),
        Ok(Lookup::Changed) => Err(RemoteError::HostKeyChanged {
            host: destination.name.clone(),
            address: destination.socket_label(),
            fingerprint,
            path: file.path().display().to_string(),
            fix: file.remove_command(host, port),
        }),
    }
}

impl client::Handler for HostKeyChecker {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        server_public_key: &keys::PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        match server_public_key {
            keys::PublicKeyOrCertificate::PublicKey { key, .. } => {
                let destination = self.destination.clone();
                let seen = self.seen_this_run.clone();
                let presented = key.clone();
                let verdict = tokio::task::spawn_blocking(move || {
                    verify_host_key(&destination, seen.as_ref(), &presented)
                })
                .await
                .unwrap_or_else(|error| {
                    Err(RemoteError::Protocol {
                        host: self.destination.name.clone(),
                        detail: format!("the host-key check failed: {error}"),
                    })
                });
                match verdict {
                    Ok(()) => {
                        *self.accepted.lock().expect("accepted key lock") = Some(key.clone());
                        Ok(true)
                    }
                    Err(error) => Ok(self.refuse(error)),
                }
            }
            keys::PublicKeyOrCertificate::Certificate(_) => {
                Ok(self.refuse(RemoteError::Protocol {
                    host: self.destination.name.clone(),
                    detail: "the host presented a certificate; Cairn checks plain host keys only"
                        .into(),
                }))
            }
        }
    }
}

/// An SSH connection to a jumpbox is a dialer: each connection is a `direct-tcpip` channel
/// (what `ssh -W` and bbr's `ssh+socks5://` proxy do), all of them over the one connection.
#[async_trait]
impl Dialer for SshHost {
    async fn dial(&self, host: &str, port: u16) -> std::io::Result<BoxStream> {
        let channel = self
            .handle
            .channel_open_direct_tcpip(host, u32::from(port), "127.0.0.1", 0)
            .await
            .map_err(|error| {
                std::io::Error::new(
                    std::io::ErrorKind::ConnectionRefused,
                    format!(
                        "the jumpbox {} could not connect to {host}:{port}: {error}",
                        self.name
                    ),
                )
            })?;
        Ok(Box::new(channel.into_stream()))
    }
}

#[async_trait]
impl RemoteHost for SshHost {
    async fn exec(
        &self,
        command: &str,
        stdin: Option<mpsc::Receiver<Bytes>>,
        stdout: StdoutMode,
        cancel: &CancellationToken,
    ) -> Result<CommandOutput, RemoteError> {
        tracing::debug!("{}: running `{command}`", self.name);
        let channel = self
            .handle
            .channel_open_session()
            .await
            .map_err(|e| self.protocol_error(&e))?;
        channel
            .exec(true, command)
            .await
            .map_err(|e| self.protocol_error(&e))?;
        let (mut reader, writer) = channel.split();
        let feeder = if let Some(source) = stdin {
            Some(tokio::spawn(feed_stdin(source, writer.make_writer())))
        } else {
            // No input: the command reads EOF at once instead of waiting for data that
            // never comes (OpenSSH's `ssh host cmd </dev/null`, Go's session.Run).
            let _ = writer.eof().await;
            None
        };
        let collected = tokio::select! {
            result = collect_output(&mut reader, stdout, &self.name, command) => result,
            () = cancel.cancelled() => {
                let _ = writer.signal(Sig::TERM).await;
                let _ = writer.close().await;
                Err(RemoteError::Cancelled { host: self.name.clone() })
            }
        };
        if let Some(feeder) = feeder {
            feeder.abort();
        }
        if collected.is_err() {
            let _ = writer.close().await;
        }
        collected
    }

    async fn sever_connection(&self) {
        self.sever();
    }
}

async fn feed_stdin(
    mut source: mpsc::Receiver<Bytes>,
    mut sink: impl tokio::io::AsyncWrite + Unpin,
) -> std::io::Result<()> {
    use tokio::io::AsyncWriteExt;
    while let Some(chunk) = source.recv().await {
        sink.write_all(&chunk).await?;
    }
    sink.shutdown().await
}

async fn collect_output(
    reader: &mut russh::ChannelReadHalf,
    stdout: StdoutMode,
    host: &str,
    command: &str,
) -> Result<CommandOutput, RemoteError> {
    let mut stderr = TailBuffer::new(STDERR_LIMIT);
    let mut captured = StdoutCapture::default();
    let mut status = None;
    while let Some(message) = reader.wait().await {
        match message {
            ChannelMsg::Data { data } => match &stdout {
                StdoutMode::Stream(sender) => {
                    if sender.send(data).await.is_err() {
                        return Err(RemoteError::ReaderGone {
                            host: host.to_string(),
                        });
                    }
                }
                kept => {
                    captured
                        .push(kept, &data)
                        .map_err(|limit| RemoteError::OutputTooLarge {
                            host: host.to_string(),
                            command: command.to_string(),
                            limit,
                        })?;
                }
            },
            ChannelMsg::ExtendedData { data, ext: 1 } => stderr.push(&data),
            ChannelMsg::ExitStatus { exit_status } => status = Some(exit_status),
            ChannelMsg::ExitSignal { signal_name, .. } => {
                stderr.push(format!("killed by signal {signal_name:?}").as_bytes());
                status = Some(128 + 15);
            }
            ChannelMsg::Close => break,
            _ => {}
        }
    }
    let status = status.ok_or_else(|| RemoteError::SessionEnded {
        host: host.to_string(),
    })?;
    let (stdout, stdout_dropped) = captured.finish();
    Ok(CommandOutput {
        status,
        stdout,
        stdout_dropped,
        stderr: stderr.into_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pinned_rsa_keys_offer_every_rsa_signature() {
        let key = PublicKey::from_openssh(
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB2gS1Hc5HdpA3d1NuW7T1VhVYxfGcKTvu9lc4jtBIeR",
        )
        .unwrap();
        assert_eq!(
            host_key_algorithms(&HostKeyPolicy::Pinned(key)),
            vec![Algorithm::Ed25519]
        );
    }

    #[test]
    fn ipv6_addresses_are_bracketed_in_labels() {
        let destination = SshDestination {
            name: "db/0".into(),
            address: "[fd00::5]".into(),
            port: 2222,
            username: "vcap".into(),
            private_key: PathBuf::from("/k").into(),
            host_key: HostKeyPolicy::AcceptAny,
            dialer: None,
        };
        assert_eq!(destination.bare_address(), "fd00::5");
        assert_eq!(destination.socket_label(), "[fd00::5]:2222");
    }
}
