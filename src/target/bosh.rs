//! Deployment mode through the BOSH Director: find a deployment's instances with the
//! Director API, reach them as a temporary `bosh_<15 hex>` user the Director sets up, and
//! remove that user at the end of every run (bbr-facts §3.1, §5).
//!
//! [`client`] speaks the HTTP API (TLS with the operator's CA, UAA client credentials or basic
//! auth, tasks); [`target`] turns a deployment into a [`crate::model::deployment::Target`], so every
//! workflow (backup, restore, checks, clean-ups) works on a Director deployment exactly as it
//! does on an inventory.

pub mod client;
pub mod retry;
pub mod target;

pub use client::{director_url, DirectorClient, DirectorConfig};
pub use retry::RetryPolicy;
pub use target::BoshTarget;

/// What went wrong talking to the Director.
#[derive(Debug, thiserror::Error)]
pub enum BoshError {
    /// `--target` is not a Director address.
    #[error("invalid bosh URL - {target}: {detail}")]
    InvalidUrl {
        /// What was given.
        target: String,
        /// Why it is not a URL.
        detail: String,
    },
    /// `--ca-cert` cannot be used.
    #[error("--ca-cert: {detail}; give the Director's CA certificate as a PEM file path or the PEM text (CA_CERT, BOSH_CA_CERT)")]
    CaCert {
        /// Why.
        detail: String,
    },
    /// The Director cannot be reached over trusted TLS.
    #[error("bosh director unreachable or unhealthy: {url}: {detail}")]
    Unreachable {
        /// The URL tried.
        url: String,
        /// The connection or TLS error.
        detail: String,
        /// A retry might have cured it (a timeout, a lost connection, a 5xx), as opposed to,
        /// say, a certificate not signed by `--ca-cert`.
        transient: bool,
    },
    /// UAA refused the client.
    #[error("UAA at {url} refused client `{client}` ({detail}); check --username and --password (BOSH_CLIENT, BOSH_CLIENT_SECRET)")]
    Uaa {
        /// The token URL.
        url: String,
        /// The client id.
        client: String,
        /// Status and UAA's message.
        detail: String,
    },
    /// The Director names a UAA that would be reached without TLS.
    #[error("The Director's /info names its UAA at {url}, which is not https://: the client secret would travel in clear, so Cairn refuses it; fix the Director's UAA URL (plain http is accepted only to a loopback address, for a local stand-in)")]
    InsecureUaa {
        /// The UAA URL from `/info`.
        url: String,
    },
    /// The Director answered with an error status.
    #[error(
        "Director responded with non-successful status code {status} to {request}: {description}"
    )]
    Status {
        /// `METHOD /path`.
        request: String,
        /// The HTTP status.
        status: u16,
        /// The Director's message.
        description: String,
    },
    /// A Director task did not succeed.
    #[error("Director task {id} {state}: {description}")]
    Task {
        /// Task id.
        id: String,
        /// Its final state.
        state: String,
        /// Its result or description.
        description: String,
    },
    /// An SSH session could not be set up on an instance.
    #[error("Setting up SSH access to {instance} failed: {detail}")]
    SshSetup {
        /// `group/id`.
        instance: String,
        /// Why.
        detail: String,
    },
    /// The Director or its UAA answered with a body larger than Cairn reads
    /// ([`client::RESPONSE_LIMIT`]); it was not read further.
    #[error("The answer to {request} is larger than {limit} bytes, the most Cairn reads of a Director or UAA answer (no real one comes close); check that --target is a BOSH Director and its UAA is the one it names")]
    ResponseTooLarge {
        /// `METHOD URL`.
        request: String,
        /// The limit in bytes.
        limit: u64,
    },
    /// The Director's answer was not what its API promises.
    #[error("Unexpected answer from the Director: {detail}")]
    Protocol {
        /// What was wrong.
        detail: String,
    },
}

impl BoshError {
    /// True for a failure that a later attempt may not meet: a 5xx answer or an unreachable
    /// Director (timeout, lost connection). The SSH setup is tried again on these, after a
    /// cleanup of its user.
    #[must_use]
    pub fn is_transient(&self) -> bool {
        match self {
            BoshError::Status { status, .. } => retry::transient_status(*status).is_some(),
            BoshError::Unreachable { transient, .. } => *transient,
            _ => false,
        }
    }
}

/// Reads `--ca-cert`: the PEM itself when it contains `BEGIN`, else a file path, where a
/// leading `~` is the home directory (bosh-cli `CACertArg` and bosh-utils `ExpandPath`).
///
/// # Errors
/// [`BoshError::CaCert`] for an empty value, an unreadable file or no PEM block.
pub fn read_ca_cert(value: &str) -> Result<String, BoshError> {
    if value.trim().is_empty() {
        return Err(BoshError::CaCert {
            detail: "Expected CA cert to be non-empty".into(),
        });
    }
    let pem = if value.contains("BEGIN") {
        value.to_string()
    } else {
        std::fs::read_to_string(expand_home(value)).map_err(|e| BoshError::CaCert {
            detail: format!("cannot read `{value}`: {e}"),
        })?
    };
    if !pem.contains("-----BEGIN CERTIFICATE-----") {
        return Err(BoshError::CaCert {
            detail: "Missing PEM block".into(),
        });
    }
    Ok(pem)
}

/// `~` and `~/...` with `$HOME` in place of the `~` (a shell does it for `--ca-cert ~/ca.pem`,
/// but not for `--ca-cert=~/ca.pem` or `CA_CERT=~/ca.pem`).
fn expand_home(path: &str) -> std::path::PathBuf {
    let home = std::env::var_os("HOME").filter(|h| !h.is_empty());
    match (path.strip_prefix('~'), home) {
        (Some(rest), Some(home)) if rest.is_empty() || rest.starts_with('/') => {
            std::path::PathBuf::from(home).join(rest.trim_start_matches('/'))
        }
        _ => std::path::PathBuf::from(path),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_leading_tilde_is_the_home_directory() {
        assert_eq!(
            expand_home("/etc/ca.pem"),
            std::path::Path::new("/etc/ca.pem")
        );
        assert_eq!(
            expand_home("~user/ca.pem"),
            std::path::Path::new("~user/ca.pem")
        );
        if let Some(home) = std::env::var_os("HOME").filter(|h| !h.is_empty()) {
            let home = std::path::PathBuf::from(home);
            assert_eq!(expand_home("~/ca.pem"), home.join("ca.pem"));
            assert_eq!(expand_home("~"), home);
        }
    }

    #[test]
    fn ca_certs_are_pem_text_or_a_path() {
        assert!(read_ca_cert("")
            .unwrap_err()
            .to_string()
            .contains("Expected CA cert to be non-empty"));
        assert!(
            read_ca_cert("-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n").is_ok()
        );
        assert!(read_ca_cert("/nonexistent/ca.pem")
            .unwrap_err()
            .to_string()
            .contains("cannot read"));
        let file = std::env::temp_dir().join(format!("cairn-ca-test-{}", std::process::id()));
        std::fs::write(&file, "not a cert").unwrap();
        assert!(read_ca_cert(file.to_str().unwrap())
            .unwrap_err()
            .to_string()
            .contains("Missing PEM block"));
        std::fs::remove_file(file).unwrap();
    }
}
