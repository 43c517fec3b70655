//! `BOSH_ALL_PROXY`: bbr's single setting for reaching the Director and the VMs through a
//! jumpbox, `ssh+socks5://USER@HOST:PORT?private-key=PATH`, or through an existing SOCKS5
//! proxy, `socks5://[USER:PASSWORD@]HOST:PORT` (bbr-facts §5.3; the login, RFC 1929, percent-encoded
//! as in any URL). Hosts in `no_proxy` are reached directly.
//!
//! Unlike bbr, the jumpbox's host key is checked (known_hosts, or
//! `--insecure-skip-host-key-check`): a jumpbox is exactly where a man in the middle would sit.
//! bbr trusts whatever key the jumpbox shows, so a fresh CI container works; Cairn keeps that
//! first run working by recording an unknown jumpbox's key on first use, and refuses only a
//! key that changed (`remote::known_hosts`). A lost tunnel is connected again for the next
//! connection, and must then show the key it showed first (`remote::reconnect`).
//!
//! With no user (`ssh+socks5://HOST:PORT?private-key=PATH`, or an empty one before `@`), the
//! jumpbox user is `jumpbox`, as in bbr: bosh-utils `httpclient/socksify.go` passes the URL's
//! user, empty when absent, to socks5-proxy, whose `Socks5Proxy.Dialer` (`socks5_proxy.go`)
//! and `HostKey.Get` (`host_key.go`) replace an empty user with `"jumpbox"`.

use std::path::PathBuf;
use std::sync::Arc;

use super::dial::{Dialer, NoProxy, ProxiedDialer, Socks5Dialer, SocksLogin};
use super::reconnect::ReconnectingHost;
use super::ssh::{HostKeyPolicy, SshDestination};
use super::RemoteError;

/// A parsed `BOSH_ALL_PROXY`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllProxy {
    /// `socks5://[USER:PASSWORD@]HOST:PORT`.
    Socks5 {
        /// `HOST:PORT`.
        address: String,
        /// The proxy's login, when the URL gives one.
        login: Option<SocksLogin>,
    },
    /// `ssh+socks5://USER@HOST:PORT?private-key=PATH`.
    SshTunnel {
        /// Login user on the jumpbox ([`DEFAULT_JUMPBOX_USER`] when the URL has none).
        user: String,
        /// Jumpbox host.
        host: String,
        /// Its SSH port.
        port: u16,
        /// The key file.
        private_key: PathBuf,
    },
}

/// The jumpbox user when `BOSH_ALL_PROXY` names none (socks5-proxy's default).
pub const DEFAULT_JUMPBOX_USER: &str = "jumpbox";

/// A `BOSH_ALL_PROXY` that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("BOSH_ALL_PROXY `{value}` {problem}: use ssh+socks5://[USER@]HOST:PORT?private-key=PATH or socks5://[USER:PASSWORD@]HOST:PORT")]
pub struct ProxyError {
    value: String,
    problem: String,
}

impl AllProxy {
    /// Reads `BOSH_ALL_PROXY`; `None` when unset or empty.
    ///
    /// # Errors
    /// [`ProxyError`] for a value that does not parse.
    pub fn from_env() -> Result<Option<AllProxy>, ProxyError> {
        match std::env::var("BOSH_ALL_PROXY") {
            Ok(value) if !value.trim().is_empty() => AllProxy::parse(value.trim()).map(Some),
            _ => Ok(None),
        }
    }

    /// Parses a proxy URL.
    ///
    /// # Errors
    /// [`ProxyError`] naming what is wrong.
    pub fn parse(value: &str) -> Result<AllProxy, ProxyError> {
        let error = |problem: &str| ProxyError {
            value: without_password(value),
            problem: problem.to_string(),
        };
        let (scheme, rest) = value
            .split_once("://")
            .ok_or_else(|| error("has no scheme"))?;
        let (authority, query) = rest.split_once('?').unwrap_or((rest, ""));
        let authority = authority.trim_end_matches('/');
        match scheme {
            "socks5" | "socks5h" => {
                let (login, host_port) = match authority.rsplit_once('@') {
                    Some((user_info, host_port)) => {
                        let (user, password) = user_info
                            .split_once(':')
                            .map(|(user, password)| (decoded(user), decoded(password)))
                            .filter(|(user, password)| !user.is_empty() && !password.is_empty())
                            .ok_or_else(|| error("needs both USER and PASSWORD before @"))?;
                        if user.len() > 255 || password.len() > 255 {
                            return Err(error("has a USER or PASSWORD longer than 255 bytes"));
                        }
                        (Some(SocksLogin { user, password }), host_port)
                    }
                    None => (None, authority),
                };
                let (host, port) = split_port(host_port).ok_or_else(|| error("needs HOST:PORT"))?;
                Ok(AllProxy::Socks5 {
                    address: format!("{host}:{port}"),
                    login,
                })
            }
            "ssh+socks5" => {
                let (user, host_port) = authority.rsplit_once('@').unwrap_or(("", authority));
                let user = if user.is_empty() {
                    DEFAULT_JUMPBOX_USER
                } else {
                    user
                };
                let (host, port) = split_port(host_port).unwrap_or((host_port.to_string(), 22));
                if host.is_empty() {
                    return Err(error("needs the jumpbox's HOST"));
                }
                let private_key = query
                    .split('&')
                    .find_map(|pair| pair.strip_prefix("private-key="))
                    .filter(|path| !path.is_empty())
                    .ok_or_else(|| error("needs ?private-key=PATH"))?;
                Ok(AllProxy::SshTunnel {
                    user: user.to_string(),
                    host,
                    port,
                    private_key: PathBuf::from(decoded(private_key)),
                })
            }
            _ => Err(error("has an unsupported scheme")),
        }
    }

    /// Opens the proxy (for an SSH tunnel: connects to the jumpbox, checking its key with
    /// `jumpbox_key`) and returns the dialer every connection of the run shares.
    ///
    /// # Errors
    /// [`RemoteError`] when the jumpbox cannot be reached or refuses the key.
    pub async fn open(
        &self,
        jumpbox_key: HostKeyPolicy,
        no_proxy: NoProxy,
    ) -> Result<Arc<dyn Dialer>, RemoteError> {
        let proxy: Arc<dyn Dialer> = match self {
            AllProxy::Socks5 { address, login } => Arc::new(Socks5Dialer {
                proxy: address.clone(),
                login: login.clone(),
            }),
            AllProxy::SshTunnel {
                user,
                host,
                port,
                private_key,
            } => {
                let destination = SshDestination {
                    name: format!("jumpbox {host}"),
                    address: host.clone(),
                    port: *port,
                    username: user.clone(),
                    private_key: private_key.clone().into(),
                    host_key: jumpbox_key,
                    dialer: None,
                };
                tracing::info!("Connecting to the jumpbox {user}@{host}:{port} (BOSH_ALL_PROXY)");
                Arc::new(ReconnectingHost::connect(destination).await?)
            }
        };
        Ok(Arc::new(ProxiedDialer { proxy, no_proxy }))
    }
}

/// `host:port` → (host, port); brackets kept off IPv6 hosts.
fn split_port(text: &str) -> Option<(String, u16)> {
    let (host, port) = text.rsplit_once(':')?;
    let port = port.parse().ok()?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    (!host.is_empty()).then(|| (host.to_string(), port))
}

/// A URL part with its `%XX` escapes decoded.
fn decoded(text: &str) -> String {
    percent_encoding::percent_decode_str(text)
        .decode_utf8_lossy()
        .into_owned()
}

/// `value` with the password of its `USER:PASSWORD@` (if any) replaced by `***`, for messages.
fn without_password(value: &str) -> String {
    let Some((scheme, rest)) = value.split_once("://") else {
        return value.to_string();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    match rest[..authority_end].rsplit_once('@') {
        Some((user_info, host)) if user_info.contains(':') => {
            let user = user_info
                .split_once(':')
                .map_or(user_info, |(user, _)| user);
            format!("{scheme}://{user}:***@{host}{}", &rest[authority_end..])
        }
        _ => value.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_of_bbrs_forms_parse() {
        assert_eq!(
            AllProxy::parse("ssh+socks5://jumpbox@10.0.0.5:2222?private-key=/tmp/my%20key")
                .unwrap(),
            AllProxy::SshTunnel {
                user: "jumpbox".into(),
                host: "10.0.0.5".into(),
                port: 2222,
                private_key: "/tmp/my key".into(),
            }
        );
        assert_eq!(
            AllProxy::parse("ssh+socks5://jumpbox@jb.example.com?private-key=k").unwrap(),
            AllProxy::SshTunnel {
                user: "jumpbox".into(),
                host: "jb.example.com".into(),
                port: 22,
                private_key: "k".into(),
            }
        );
        assert_eq!(
            AllProxy::parse("socks5://localhost:5000").unwrap(),
            AllProxy::Socks5 {
                address: "localhost:5000".into(),
                login: None,
            }
        );
    }

    #[test]
    fn a_socks5_proxy_may_carry_a_percent_encoded_login() {
        assert_eq!(
            AllProxy::parse("socks5://ops%40corp:p%3Ass@proxy.internal:1080").unwrap(),
            AllProxy::Socks5 {
                address: "proxy.internal:1080".into(),
                login: Some(SocksLogin {
                    user: "ops@corp".into(),
                    password: "p:ss".into(),
                }),
            }
        );
        // The password never reaches a message or a debug print.
        let proxy = AllProxy::parse("socks5h://ops:hunter2@[fd00::1]:1080").unwrap();
        assert!(!format!("{proxy:?}").contains("hunter2"), "{proxy:?}");
        for bad in [
            "socks5://ops:hunter2@proxy",
            "socks5://ops@proxy:1080",
            "socks5://:hunter2@proxy:1080",
        ] {
            let message = AllProxy::parse(bad).unwrap_err().to_string();
            assert!(!message.contains("hunter2"), "{message}");
            assert!(message.contains("BOSH_ALL_PROXY `socks5://"), "{message}");
        }
        assert!(AllProxy::parse("socks5://ops@proxy:1080")
            .unwrap_err()
            .to_string()
            .contains("needs both USER and PASSWORD"));
        assert_eq!(
            without_password("socks5://ops:hunter2@proxy:1080/?x=1"),
            "socks5://ops:***@proxy:1080/?x=1"
        );
    }

    #[test]
    fn without_a_user_the_jumpbox_user_is_jumpbox_as_in_socks5_proxy() {
        for value in [
            "ssh+socks5://10.0.0.5:2222?private-key=/k",
            "ssh+socks5://@10.0.0.5:2222?private-key=/k",
        ] {
            assert_eq!(
                AllProxy::parse(value).unwrap(),
                AllProxy::SshTunnel {
                    user: "jumpbox".into(),
                    host: "10.0.0.5".into(),
                    port: 2222,
                    private_key: "/k".into(),
                },
                "{value}"
            );
        }
    }

    #[test]
    fn bad_values_say_what_is_missing() {
        let message = |v: &str| AllProxy::parse(v).unwrap_err().to_string();
        assert!(message("ssh+socks5://u@?private-key=k").contains("needs the jumpbox's HOST"));
        assert!(message("ssh+socks5://u@10.0.0.5:22").contains("private-key"));
        assert!(message("http://proxy:3128").contains("unsupported scheme"));
        assert!(message("socks5://proxy").contains("HOST:PORT"));
        assert!(message("jumpbox").contains("no scheme"));
    }
}
