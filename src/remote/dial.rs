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
use std::sync::Arc;

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

/// Through a SOCKS5 proxy (no authentication), the host name resolved by the proxy.
#[derive(Debug, Clone)]
pub struct Socks5Dialer {
    /// `host:port` of the proxy.
    pub proxy: String,
}

#[async_trait]
impl Dialer for Socks5Dialer {
    async fn dial(&self, host: &str, port: u16) -> io::Result<BoxStream> {
        let mut stream = TcpStream::connect(self.proxy.as_str()).await?;
        stream.set_nodelay(true)?;
        socks5_connect(&mut stream, host, port).await?;
        Ok(Box::new(stream))
    }
}

/// The SOCKS5 client handshake: no authentication, CONNECT to a domain name.
async fn socks5_connect<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    host: &str,
    port: u16,
) -> io::Result<()> {
    let refused = |what: String| io::Error::new(io::ErrorKind::ConnectionRefused, what);
    stream.write_all(&[5, 1, 0]).await?;
    let mut choice = [0u8; 2];
    stream.read_exact(&mut choice).await?;
    if choice != [5, 0] {
        return Err(refused(
            "the SOCKS5 proxy requires an authentication Cairn does not speak".into(),
        ));
    }
    let name = host.trim_start_matches('[').trim_end_matches(']');
    let length = u8::try_from(name.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "host name too long"))?;
    let mut request = vec![5, 1, 0, 3, length];
    request.extend_from_slice(name.as_bytes());
    request.extend_from_slice(&port.to_be_bytes());
    stream.write_all(&request).await?;
    let mut reply = [0u8; 4];
    stream.read_exact(&mut reply).await?;
    if reply[1] != 0 {
        return Err(refused(format!(
            "the SOCKS5 proxy could not connect to {host}:{port} ({})",
            socks5_reply(reply[1])
        )));
    }
    let skip = match reply[3] {
        1 => 4,
        4 => 16,
        3 => {
            let mut len = [0u8; 1];
            stream.read_exact(&mut len).await?;
            usize::from(len[0])
        }
        _ => return Err(refused("malformed SOCKS5 reply".into())),
    };
    let mut rest = vec![0u8; skip + 2];
    stream.read_exact(&mut rest).await?;
    Ok(())
}

fn socks5_reply(code: u8) -> &'static str {
    match code {
        1 => "general failure",
        2 => "not allowed by the proxy's rules",
        3 => "network unreachable",
        4 => "host unreachable",
        5 => "connection refused",
        6 => "TTL expired",
        _ => "error",
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

/// A SOCKS5 server on 127.0.0.1 that sends every connection through a [`Dialer`]: how an HTTP
/// client that only knows SOCKS proxies (the Director client) uses an SSH tunnel. It lives
/// until dropped.
#[derive(Debug)]
pub struct LocalSocks {
    address: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl LocalSocks {
    /// Starts the server on an ephemeral loopback port.
    ///
    /// # Errors
    /// If no loopback port can be bound.
    pub async fn start(dialer: Arc<dyn Dialer>) -> io::Result<LocalSocks> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let address = listener.local_addr()?;
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let dialer = Arc::clone(&dialer);
                tokio::spawn(async move {
                    if let Err(error) = serve_socks_client(client, dialer.as_ref()).await {
                        tracing::debug!("local SOCKS5 connection failed: {error}");
                    }
                });
            }
        });
        Ok(LocalSocks { address, task })
    }

    /// `socks5h://127.0.0.1:PORT`, for an HTTP client's proxy setting.
    #[must_use]
    pub fn url(&self) -> String {
        format!("socks5h://{}", self.address)
    }
}

impl Drop for LocalSocks {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve_socks_client(mut client: TcpStream, dialer: &dyn Dialer) -> io::Result<()> {
    let mut greeting = [0u8; 2];
    client.read_exact(&mut greeting).await?;
    let mut methods = vec![0u8; usize::from(greeting[1])];
    client.read_exact(&mut methods).await?;
    client.write_all(&[5, 0]).await?;
    let mut request = [0u8; 4];
    client.read_exact(&mut request).await?;
    if request[1] != 1 {
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
    match dialer.dial(&host, port).await {
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

    #[tokio::test]
    async fn the_local_socks_server_and_the_socks_dialer_carry_bytes_both_ways() {
        // An echo server, reached through LocalSocks (backed by a direct dialer) with the
        // SOCKS5 client dialer: both halves of the protocol talk to each other.
        let echo = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
        let echo_port = echo.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (mut socket, _) = echo.accept().await.unwrap();
            let mut buffer = [0u8; 5];
            socket.read_exact(&mut buffer).await.unwrap();
            socket.write_all(&buffer).await.unwrap();
        });
        let socks = LocalSocks::start(Arc::new(DirectDialer)).await.unwrap();
        let dialer = Socks5Dialer {
            proxy: socks.address.to_string(),
        };
        let mut stream = dialer.dial("127.0.0.1", echo_port).await.unwrap();
        stream.write_all(b"hello").await.unwrap();
        let mut back = [0u8; 5];
        stream.read_exact(&mut back).await.unwrap();
        assert_eq!(&back, b"hello");
        let Err(error) = dialer.dial("127.0.0.1", 1).await else {
            panic!("port 1 must be refused")
        };
        assert!(error.to_string().contains("connection refused"), "{error}");
    }
}
