//! How connections leave this machine: directly, through a SOCKS5 proxy, or through an SSH
//! tunnel to a jumpbox — bbr's `BOSH_ALL_PROXY`.
//!
//! Operators rarely reach BOSH VMs directly: the Director and the instances sit on a private
//! network behind a jumpbox. One [`Dialer`] is chosen per run and shared by everything that
//! opens a connection (the Director's HTTP client, through a [`LocalSocks`] server, and every
//! instance's SSH connection), so a run through a jumpbox holds one SSH tunnel, not one per
//! instance (bbr issue #21).

use std::fmt::Debug;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A byte stream to a remote endpoint.
pub trait AsyncStream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> AsyncStream for T {}

/// A boxed [`AsyncStream`].
pub type BoxStream = Box<dyn AsyncStream>;

/// Opens TCP-like streams to `host:port`.
#[async_trait]
pub trait Dialer: Send + Sync + Debug {
    /// Connects to `host:port` (a name or an address, resolved where the connection leaves).
    async fn dial(&self, host: &str, port: u16) -> io::Result<BoxStream>;
}

/// Plain TCP from this machine.
#[derive(Debug, Default, Clone, Copy)]
pub struct DirectDialer;

#[async_trait]
impl Dialer for DirectDialer {
    async fn dial(&self, host: &str, port: u16) -> io::Result<BoxStream> {
        let stream = TcpStream::connect((host, port)).await?;
        stream.set_nodelay(true)?;
        Ok(Box::new(stream))
    }
}

/// A user name and password for a SOCKS5 proxy (RFC 1929), from `BOSH_ALL_PROXY`'s
/// `socks5://USER:PASSWORD@HOST:PORT`. Its `Debug` leaves the password out.
#[derive(Clone, PartialEq, Eq)]
pub struct SocksLogin {
    /// The user name (1 to 255 bytes).
    pub user: String,
    /// The password (1 to 255 bytes).
    pub password: String,
}

impl Debug for SocksLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SocksLogin")
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// Through a SOCKS5 proxy (`tokio-socks`), with its login when it asks for one; the host
/// name is resolved by the proxy.
#[derive(Debug, Clone)]
pub struct Socks5Dialer {
    /// `host:port` of the proxy.
    pub proxy: String,
    /// The user name and password it asks for, if any.
    pub login: Option<SocksLogin>,
}

#[async_trait]
impl Dialer for Socks5Dialer {
    async fn dial(&self, host: &str, port: u16) -> io::Result<BoxStream> {
        use tokio_socks::tcp::Socks5Stream;
        let stream = TcpStream::connect(self.proxy.as_str()).await?;
        stream.set_nodelay(true)?;
        let target = (host.trim_start_matches('[').trim_end_matches(']'), port);
        let connected = match &self.login {
            None => Socks5Stream::connect_with_socket(stream, target).await,
            Some(login) => {
                Socks5Stream::connect_with_password_and_socket(
                    stream,
                    target,
                    &login.user,
                    &login.password,
                )
                .await
            }
        };
        connected
            .map(|stream| Box::new(stream) as BoxStream)
            .map_err(|error| socks_error(&error, &self.proxy, self.login.is_some(), host, port))
    }
}

/// What went wrong with the SOCKS5 proxy at `proxy` (`with_login`: given one), for a
/// connection to `host:port`.
fn socks_error(
    error: &tokio_socks::Error,
    proxy: &str,
    with_login: bool,
    host: &str,
    port: u16,
) -> io::Error {
    use tokio_socks::Error as Socks;
    let refused = |what: String| io::Error::new(io::ErrorKind::ConnectionRefused, what);
    match error {
        // Some proxies (pproxy) hang up instead of answering a login they refuse.
        Socks::Io(io) if io.kind() == io::ErrorKind::UnexpectedEof => refused(format!(
            "the SOCKS5 proxy {proxy} hung up during its handshake ({})",
            if with_login {
                "does it accept the user name and password of BOSH_ALL_PROXY?"
            } else {
                "does it ask for a login? give it in BOSH_ALL_PROXY as socks5://USER:PASSWORD@HOST:PORT"
            }
        )),
        Socks::Io(io) => io::Error::new(io.kind(), format!("SOCKS5 proxy {proxy}: {io}")),
        Socks::NoAcceptableAuthMethods | Socks::AuthorizationRequired => refused(format!(
            "the SOCKS5 proxy {proxy} asks for a login: give it in BOSH_ALL_PROXY as socks5://USER:PASSWORD@HOST:PORT"
        )),
        Socks::PasswordAuthFailure(_) => refused(format!(
            "the SOCKS5 proxy {proxy} refused the user name and password of BOSH_ALL_PROXY"
        )),
        Socks::InvalidAuthValues(detail) => io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("BOSH_ALL_PROXY's SOCKS5 login: {detail}"),
        ),
        other => refused(format!(
            "the SOCKS5 proxy {proxy} could not connect to {host}:{port} ({})",
            other.to_string().to_lowercase()
        )),
    }
}

/// Hosts that bypass the proxy (`no_proxy`/`NO_PROXY`): exact names or addresses, `.suffix`
/// or `suffix` domain matches, and `*` for everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NoProxy(Vec<String>);

impl NoProxy {
    /// Parses a comma-separated list.
    #[must_use]
    pub fn parse(list: &str) -> NoProxy {
        NoProxy(
            list.split(',')
                .map(|entry| entry.trim().trim_start_matches('.').to_lowercase())
                .filter(|entry| !entry.is_empty())
                .collect(),
        )
    }

    /// From `no_proxy`, else `NO_PROXY`.
    #[must_use]
    pub fn from_env() -> NoProxy {
        std::env::var("no_proxy")
            .or_else(|_| std::env::var("NO_PROXY"))
            .map(|list| NoProxy::parse(&list))
            .unwrap_or_default()
    }

    /// True when `host` must be reached directly.
    #[must_use]
    pub fn matches(&self, host: &str) -> bool {
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_lowercase();
        self.0.iter().any(|entry| {
            entry == "*"
                || *entry == host
                || host
                    .strip_suffix(entry.as_str())
                    .is_some_and(|rest| rest.ends_with('.'))
        })
    }
}

/// A proxy for everything except the `no_proxy` hosts.
#[derive(Debug)]
pub struct ProxiedDialer {
    /// Where proxied connections go.
    pub proxy: Arc<dyn Dialer>,
    /// Hosts reached directly.
    pub no_proxy: NoProxy,
}

#[async_trait]
impl Dialer for ProxiedDialer {
    async fn dial(&self, host: &str, port: u16) -> io::Result<BoxStream> {
        if self.no_proxy.matches(host) {
            DirectDialer.dial(host, port).await
        } else {
            self.proxy.dial(host, port).await
        }
    }
}

/// A SOCKS5 server on 127.0.0.1 that sends connections through a [`Dialer`]: how an HTTP
/// client that only knows SOCKS proxies (the Director client) uses an SSH tunnel. It lives
/// until dropped.
///
/// Any local user can connect to a loopback port, and what this relay reaches is the
/// private network behind the jumpbox, with the jumpbox's identity. So it serves only its
/// own run: a client must log in with a random user name and password made for this relay
/// (RFC 1929; only Cairn's own HTTP client has them, they appear in no command line, file or
/// environment), and it connects only to the destinations allowed ([`LocalSocks::allow`]:
/// the Director, then the UAA that the Director names). Anything else is refused.
pub struct LocalSocks {
    address: SocketAddr,
    credential: Arc<Credential>,
    allowed: Arc<Mutex<Vec<Destination>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Debug for LocalSocks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalSocks")
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

/// The relay's user name and password (RFC 1929), random per relay.
struct Credential {
    user: String,
    password: String,
}

impl Credential {
    fn random() -> Credential {
        Credential {
            user: format!("cairn-{:016x}", rand::random::<u64>()),
            password: format!("{:032x}", rand::random::<u128>()),
        }
    }

    /// Compares without stopping at the first differing byte.
    fn matches(&self, user: &[u8], password: &[u8]) -> bool {
        let same = |a: &[u8], b: &[u8]| {
            a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
        };
        same(self.user.as_bytes(), user) & same(self.password.as_bytes(), password)
    }
}

/// A host and port the relay may connect to.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Destination {
    Address(std::net::IpAddr, u16),
    Name(String, u16),
}

impl Destination {
    /// A host as in a URL or a SOCKS request (an IPv6 address with or without brackets, a name
    /// in any case, with or without its final dot).
    fn new(host: &str, port: u16) -> Destination {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        match bare.parse() {
            Ok(address) => Destination::Address(address, port),
            Err(_) => Destination::Name(bare.trim_end_matches('.').to_lowercase(), port),
        }
    }
}

impl LocalSocks {
    /// Starts the server on an ephemeral loopback port, allowing connections to `allowed`
    /// (`host`, `port`) only.
    ///
    /// # Errors
    /// If no loopback port can be bound.
    pub async fn start(dialer: Arc<dyn Dialer>, allowed: &[(&str, u16)]) -> io::Result<LocalSocks> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let address = listener.local_addr()?;
        let credential = Arc::new(Credential::random());
        let allowed = Arc::new(Mutex::new(
            allowed
                .iter()
                .map(|(host, port)| Destination::new(host, *port))
                .collect(),
        ));
        let relay = Relay {
            dialer,
            credential: Arc::clone(&credential),
            allowed: Arc::clone(&allowed),
        };
        let task = tokio::spawn(async move {
            let relay = Arc::new(relay);
            while let Ok((client, _)) = listener.accept().await {
                let relay = Arc::clone(&relay);
                tokio::spawn(async move {
                    if let Err(error) = relay.serve(client).await {
                        tracing::debug!("local SOCKS5 connection failed: {error}");
                    }
                });
            }
        });
        Ok(LocalSocks {
            address,
            credential,
            allowed,
            task,
        })
    }

    /// Allows connections to `host:port` from now on (the UAA, once the Director named it).
    pub fn allow(&self, host: &str, port: u16) {
        let destination = Destination::new(host, port);
        let mut allowed = self.allowed.lock().expect("allowed destinations lock");
        if !allowed.contains(&destination) {
            allowed.push(destination);
        }
    }

    /// `socks5h://USER:PASSWORD@127.0.0.1:PORT`, for an HTTP client's proxy setting.
    #[must_use]
    pub fn url(&self) -> String {
        format!(
            "socks5h://{}:{}@{}",
            self.credential.user, self.credential.password, self.address
        )
    }
}

impl Drop for LocalSocks {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What every connection to a [`LocalSocks`] is served with.
struct Relay {
    dialer: Arc<dyn Dialer>,
    credential: Arc<Credential>,
    allowed: Arc<Mutex<Vec<Destination>>>,
}

/// SOCKS5 method: username/password (RFC 1929).
const USER_PASSWORD: u8 = 2;

impl Relay {
    async fn serve(&self, mut client: TcpStream) -> io::Result<()> {
        if !self.authenticate(&mut client).await? {
            return Ok(());
        }
        let mut request = [0u8; 4];
        client.read_exact(&mut request).await?;
        if request[1] != 1 {
            // Only CONNECT.
            client.write_all(&[5, 7, 0, 1, 0, 0, 0, 0, 0, 0]).await?;
            return Ok(());
        }
        let host = match request[3] {
            1 => {
                let mut octets = [0u8; 4];
                client.read_exact(&mut octets).await?;
                std::net::Ipv4Addr::from(octets).to_string()
            }
            4 => {
                let mut octets = [0u8; 16];
                client.read_exact(&mut octets).await?;
                std::net::Ipv6Addr::from(octets).to_string()
            }
            3 => {
                let mut len = [0u8; 1];
                client.read_exact(&mut len).await?;
                let mut name = vec![0u8; usize::from(len[0])];
                client.read_exact(&mut name).await?;
                String::from_utf8_lossy(&name).into_owned()
            }
            _ => return Ok(()),
        };
        let mut port = [0u8; 2];
        client.read_exact(&mut port).await?;
        let port = u16::from_be_bytes(port);
        let wanted = Destination::new(&host, port);
        let allowed = self
            .allowed
            .lock()
            .expect("allowed destinations lock")
            .contains(&wanted);
        if !allowed {
            tracing::warn!(
                "The local SOCKS5 relay refused a connection to {}:{port}: it reaches only the Director and its UAA",
                host.escape_debug()
            );
            // 2: connection not allowed by ruleset.
            client.write_all(&[5, 2, 0, 1, 0, 0, 0, 0, 0, 0]).await?;
            return Ok(());
        }
        match self.dialer.dial(&host, port).await {
            Ok(mut upstream) => {
                client.write_all(&[5, 0, 0, 1, 0, 0, 0, 0, 0, 0]).await?;
                tokio::io::copy_bidirectional(&mut client, &mut upstream).await?;
            }
            Err(error) => {
                tracing::debug!("proxy dial to {host}:{port} failed: {error}");
                client.write_all(&[5, 5, 0, 1, 0, 0, 0, 0, 0, 0]).await?;
            }
        }
        Ok(())
    }

    /// The greeting and the RFC 1929 login; false (the client told) when the client offers no
    /// username/password method or gives another credential.
    async fn authenticate(&self, client: &mut TcpStream) -> io::Result<bool> {
        let mut greeting = [0u8; 2];
        client.read_exact(&mut greeting).await?;
        let mut methods = vec![0u8; usize::from(greeting[1])];
        client.read_exact(&mut methods).await?;
        if greeting[0] != 5 || !methods.contains(&USER_PASSWORD) {
            tracing::debug!("local SOCKS5 relay: a client without the relay's credential");
            client.write_all(&[5, 0xFF]).await?;
            return Ok(false);
        }
        client.write_all(&[5, USER_PASSWORD]).await?;
        let mut version_and_length = [0u8; 2];
        client.read_exact(&mut version_and_length).await?;
        let mut user = vec![0u8; usize::from(version_and_length[1])];
        client.read_exact(&mut user).await?;
        let mut length = [0u8; 1];
        client.read_exact(&mut length).await?;
        let mut password = vec![0u8; usize::from(length[0])];
        client.read_exact(&mut password).await?;
        if version_and_length[0] != 1 || !self.credential.matches(&user, &password) {
            tracing::debug!("local SOCKS5 relay: a client with a wrong credential");
            client.write_all(&[1, 1]).await?;
            return Ok(false);
        }
        client.write_all(&[1, 0]).await?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_proxy_matches_names_suffixes_and_star() {
        let list = NoProxy::parse("10.0.0.6, .internal,example.com");
        assert!(list.matches("10.0.0.6"));
        assert!(list.matches("director.internal"));
        assert!(list.matches("a.example.com"));
        assert!(list.matches("EXAMPLE.com"));
        assert!(!list.matches("badexample.com"));
        assert!(!list.matches("10.0.0.7"));
        assert!(NoProxy::parse("*").matches("anything"));
        assert!(!NoProxy::default().matches("x"));
    }

    /// An echo server for one connection; the listener is returned so a test can check that
    /// nothing connected to it.
    async fn echo_server() -> (u16, Arc<TcpListener>) {
        let listener = Arc::new(TcpListener::bind(("127.0.0.1", 0)).await.unwrap());
        let port = listener.local_addr().unwrap().port();
        (port, listener)
    }

    async fn echo_once(listener: Arc<TcpListener>) {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut buffer = [0u8; 5];
        socket.read_exact(&mut buffer).await.unwrap();
        socket.write_all(&buffer).await.unwrap();
    }

    /// A SOCKS5 client that offers `methods` and, when the server picks username/password,
    /// logs in with `credential`; returns the server's method choice, the login status and
    /// the CONNECT reply code (what got that far).
    async fn socks_client(
        relay: &LocalSocks,
        methods: &[u8],
        credential: (&str, &str),
        port: u16,
    ) -> (TcpStream, Vec<u8>) {
        let mut stream = TcpStream::connect(relay.address).await.unwrap();
        let mut greeting = vec![5, u8::try_from(methods.len()).unwrap()];
        greeting.extend_from_slice(methods);
        stream.write_all(&greeting).await.unwrap();
        let mut answers = Vec::new();
        let mut choice = [0u8; 2];
        stream.read_exact(&mut choice).await.unwrap();
        answers.push(choice[1]);
        if choice[1] != USER_PASSWORD {
            return (stream, answers);
        }
        let (user, password) = credential;
        let mut login = vec![1, u8::try_from(user.len()).unwrap()];
        login.extend_from_slice(user.as_bytes());
        login.push(u8::try_from(password.len()).unwrap());
        login.extend_from_slice(password.as_bytes());
        stream.write_all(&login).await.unwrap();
        let mut status = [0u8; 2];
        stream.read_exact(&mut status).await.unwrap();
        answers.push(status[1]);
        if status[1] != 0 {
            return (stream, answers);
        }
        let mut request = vec![5, 1, 0, 1, 127, 0, 0, 1];
        request.extend_from_slice(&port.to_be_bytes());
        stream.write_all(&request).await.unwrap();
        let mut reply = [0u8; 10];
        stream.read_exact(&mut reply).await.unwrap();
        answers.push(reply[1]);
        (stream, answers)
    }

    /// True when nothing is waiting to be accepted on `listener`.
    fn nobody_connected(listener: &TcpListener) -> bool {
        let mut context = std::task::Context::from_waker(std::task::Waker::noop());
        listener.poll_accept(&mut context).is_pending()
    }

    #[tokio::test]
    async fn the_relay_carries_bytes_for_its_own_credential_to_allowed_destinations() {
        let (port, echo) = echo_server().await;
        let relay = LocalSocks::start(Arc::new(DirectDialer), &[("127.0.0.1", port)])
            .await
            .unwrap();
        let server = tokio::spawn(echo_once(echo));
        let credential = (
            relay.credential.user.clone(),
            relay.credential.password.clone(),
        );
        let (mut stream, answers) = socks_client(
            &relay,
            &[0, USER_PASSWORD],
            (&credential.0, &credential.1),
            port,
        )
        .await;
        assert_eq!(answers, vec![USER_PASSWORD, 0, 0]);
        stream.write_all(b"hello").await.unwrap();
        let mut back = [0u8; 5];
        stream.read_exact(&mut back).await.unwrap();
        assert_eq!(&back, b"hello");
        server.await.unwrap();
        // The URL the HTTP client gets carries the credential.
        assert_eq!(
            relay.url(),
            format!(
                "socks5h://{}:{}@{}",
                credential.0, credential.1, relay.address
            )
        );
    }

    #[tokio::test]
    async fn the_relay_refuses_other_clients_and_other_destinations() {
        let (port, echo) = echo_server().await;
        let (other_port, other) = echo_server().await;
        let relay = LocalSocks::start(Arc::new(DirectDialer), &[("127.0.0.1", port)])
            .await
            .unwrap();
        let user = relay.credential.user.clone();
        let password = relay.credential.password.clone();
        // No authentication offered: no acceptable method (0xFF).
        let (_, answers) = socks_client(&relay, &[0], ("", ""), port).await;
        assert_eq!(answers, vec![0xFF]);
        // A wrong password, a wrong user, an empty login: refused (status 1).
        for (u, p) in [
            (user.as_str(), "guess"),
            ("cairn", password.as_str()),
            ("", ""),
        ] {
            let (_, answers) = socks_client(&relay, &[USER_PASSWORD], (u, p), port).await;
            assert_eq!(answers, vec![USER_PASSWORD, 1], "{u}:{p}");
        }
        // The right credential, another host:port: not allowed by the ruleset (2).
        let (_, answers) =
            socks_client(&relay, &[USER_PASSWORD], (&user, &password), other_port).await;
        assert_eq!(answers, vec![USER_PASSWORD, 0, 2]);
        assert!(nobody_connected(&echo) && nobody_connected(&other));
        // Allowed later (the UAA, once the Director named it): carried.
        relay.allow("127.0.0.1", other_port);
        let server = tokio::spawn(echo_once(other));
        let (mut stream, answers) =
            socks_client(&relay, &[USER_PASSWORD], (&user, &password), other_port).await;
        assert_eq!(answers, vec![USER_PASSWORD, 0, 0]);
        stream.write_all(b"again").await.unwrap();
        let mut back = [0u8; 5];
        stream.read_exact(&mut back).await.unwrap();
        server.await.unwrap();
    }

    #[test]
    fn destinations_compare_addresses_and_names_as_urls_write_them() {
        assert_eq!(
            Destination::new("[fd00::6]", 25555),
            Destination::new("fd00:0::6", 25555)
        );
        assert_eq!(
            Destination::new("Director.Example.", 443),
            Destination::new("director.example", 443)
        );
        assert_ne!(
            Destination::new("10.0.0.6", 25555),
            Destination::new("10.0.0.6", 8443)
        );
        assert_ne!(
            Destination::new("10.0.0.6", 25555),
            Destination::new("10.0.0.7", 25555)
        );
    }
}
