//! Reaching hosts: the `BOSH_ALL_PROXY` dialer, the host-key options of the SSH flags, and
//! the Director login shared by `deployment` and `drill`.

use std::sync::Arc;

use cairn::remote::all_proxy::AllProxy;
use cairn::remote::dial::NoProxy;
use cairn::remote::ssh::UnknownHost;
use cairn::target::bosh::{DirectorClient, DirectorConfig};
use cairn::target::ssh::HostKeyOptions;
use russh::keys::PublicKey;

use super::args::{CommonArgs, UsageError};

/// `BOSH_ALL_PROXY`, opened (for `ssh+socks5://`, connected to the jumpbox).
pub(crate) async fn open_proxy(
    common: &CommonArgs,
) -> anyhow::Result<Option<Arc<dyn cairn::remote::dial::Dialer>>> {
    let Some(proxy) = AllProxy::from_env()? else {
        return Ok(None);
    };
    // bbr trusts any jumpbox key; Cairn records an unknown one (trust on first use) and
    // refuses only a changed one.
    let policy = host_keys(common).policy(UnknownHost::Record);
    Ok(Some(proxy.open(policy, NoProxy::from_env()).await?))
}

/// `--known-hosts` and `--insecure-skip-host-key-check`.
pub(crate) fn host_keys(common: &CommonArgs) -> HostKeyOptions {
    HostKeyOptions {
        known_hosts: common.known_hosts.clone(),
        skip_check: common.insecure_skip_host_key_check,
    }
}

/// A `--host-key` value: an OpenSSH public key line, or the path of a file whose first
/// non-comment line is one (a `.pub` file).
pub(crate) fn pinned_host_key(value: &str) -> Result<PublicKey, UsageError> {
    let value = value.trim();
    let looks_like_a_key = value.contains(char::is_whitespace);
    let line = if looks_like_a_key {
        value.to_string()
    } else {
        let text = std::fs::read_to_string(value).map_err(|e| {
            UsageError(format!(
                "--host-key {value}: not an OpenSSH public key, and not a readable file ({e}); give \"ssh-ed25519 AAAA...\" or the path of a .pub file."
            ))
        })?;
        text.lines()
            .map(str::trim)
            .find(|l| !l.is_empty() && !l.starts_with('#'))
            .unwrap_or_default()
            .to_string()
    };
    PublicKey::from_openssh(&line).map_err(|e| {
        UsageError(format!(
            "--host-key {value}: not an OpenSSH public key ({e}); give \"ssh-ed25519 AAAA...\" or the path of a .pub file."
        ))
    })
}

/// Where a Director is and how to log in to it.
pub(crate) struct DirectorLogin {
    /// `--target`.
    pub target: String,
    /// `--username`.
    pub client: String,
    /// `--password`.
    pub secret: String,
    /// `--ca-cert` (else `CA_CERT`, else `BOSH_CA_CERT`).
    pub ca_cert: Option<String>,
    /// `--director-retry-attempts`, `--director-retry-total` (or `[director]`).
    pub retry: cairn::target::bosh::RetryPolicy,
}

impl DirectorLogin {
    /// From `BOSH_ENVIRONMENT`, `BOSH_CLIENT`, `BOSH_CLIENT_SECRET` (and the CA variables).
    pub(crate) fn from_env() -> anyhow::Result<DirectorLogin> {
        let var = |name: &str| {
            std::env::var(name)
                .ok()
                .filter(|v| !v.is_empty())
                .ok_or_else(|| {
                    UsageError(format!("{name} is required to reach the BOSH Director."))
                })
        };
        Ok(DirectorLogin {
            target: var("BOSH_ENVIRONMENT")?,
            client: var("BOSH_CLIENT")?,
            secret: var("BOSH_CLIENT_SECRET")?,
            ca_cert: None,
            retry: cairn::target::bosh::RetryPolicy::default(),
        })
    }

    /// Reads `/info` and logs in.
    pub(crate) async fn connect(
        self,
        dialer: Option<Arc<dyn cairn::remote::dial::Dialer>>,
    ) -> anyhow::Result<DirectorClient> {
        let url = cairn::target::bosh::director_url(&self.target)?;
        let ca = self
            .ca_cert
            .or_else(|| std::env::var("CA_CERT").ok())
            .or_else(|| std::env::var("BOSH_CA_CERT").ok());
        let ca_cert_pem = ca
            .as_deref()
            .map(cairn::target::bosh::read_ca_cert)
            .transpose()?;
        let config = DirectorConfig {
            url,
            client: self.client,
            secret: self.secret,
            ca_cert_pem,
            dialer,
            retry: self.retry,
        };
        Ok(DirectorClient::connect(&config).await?)
    }
}
