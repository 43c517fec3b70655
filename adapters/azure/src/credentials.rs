//! Where the adapter's credentials and endpoint come from: the environment only, never the URL.
//!
//! The order is fixed and documented (first match wins) so that an operator can tell which
//! secret is in use from the environment alone:
//!
//! 1. `AZURE_STORAGE_CONNECTION_STRING`: the portal's connection string. We parse it ourselves
//!    (object_store takes no connection string) for `AccountName`, `AccountKey`,
//!    `SharedAccessSignature`, `BlobEndpoint`, `EndpointSuffix` and `UseDevelopmentStorage`.
//! 2. `AZURE_STORAGE_KEY`: the storage account key (shared key).
//! 3. `AZURE_STORAGE_SAS_TOKEN`: a shared access signature, with or without the leading `?`.
//! 4. Microsoft Entra ID: `AZURE_CLIENT_ID` and `AZURE_TENANT_ID` with `AZURE_CLIENT_SECRET`
//!    (a service principal) or `AZURE_FEDERATED_TOKEN_FILE` (workload identity), plus
//!    `AZURE_AUTHORITY_HOST` for sovereign clouds.
//! 5. Only when none of these is set: the machine's managed identity, as the Azure CLI uses it
//!    on a VM. Its token endpoint is `IDENTITY_ENDPOINT` (App Service, Container Apps, Arc;
//!    object_store then sends `IDENTITY_HEADER` with it), else `AZURE_MSI_ENDPOINT`, else the
//!    instance metadata service at 169.254.169.254. `AZURE_CLIENT_ID` alone picks a
//!    user-assigned identity. Off Azure that address does not answer, so the adapter probes it
//!    once, with a short timeout, before the first request (`AzureStore`'s `check_identity`)
//!    and fails with one line naming every source tried instead of hanging in retries.
//!
//! No Azure CLI. Every credential is handed to object_store with an explicit credential type,
//! so object_store never falls back to a chain of its own either.

use std::fmt;

use cairn_store::StoreError;

/// Every variable the adapter reads, for error hints.
pub(crate) const CREDENTIAL_HINT: &str =
    "set AZURE_STORAGE_CONNECTION_STRING, AZURE_STORAGE_KEY or \
     AZURE_STORAGE_SAS_TOKEN, or AZURE_CLIENT_ID and AZURE_TENANT_ID with AZURE_CLIENT_SECRET or \
     AZURE_FEDERATED_TOKEN_FILE";

/// Every source tried when the last one, the managed identity, failed: the hint of that error.
pub(crate) const TRIED_HINT: &str =
    "tried AZURE_STORAGE_CONNECTION_STRING, AZURE_STORAGE_KEY, AZURE_STORAGE_SAS_TOKEN, \
     AZURE_CLIENT_ID+AZURE_TENANT_ID with AZURE_CLIENT_SECRET or AZURE_FEDERATED_TOKEN_FILE (none \
     set), then the managed identity; set one of these, or give this machine a managed identity \
     with access to the container (IDENTITY_ENDPOINT or AZURE_MSI_ENDPOINT name its token \
     endpoint when it is not the instance metadata service)";

/// What to do when a token source stopped giving tokens during a run (tokens live an hour or a
/// day and are fetched again in their last 5 minutes).
pub(crate) const RENEWAL_HINT: &str =
    "tokens expire and are fetched again during a run, so the token endpoint (or Entra ID, for \
     a service principal or workload identity) must keep answering for as long as the run \
     lasts: check that it is reachable and the identity still assigned, then run again";

/// The token endpoint of the instance metadata service (object_store's default too).
pub(crate) const IMDS_TOKEN_ENDPOINT: &str =
    "http://169.254.169.254/metadata/identity/oauth2/token";

/// The account key of Azurite's well-known development account (published by Microsoft), used
/// only for `UseDevelopmentStorage=true`.
const DEVELOPMENT_ACCOUNT: &str = "devstoreaccount1";
const DEVELOPMENT_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
const DEVELOPMENT_ENDPOINT: &str = "http://127.0.0.1:10000/devstoreaccount1";

/// A credential found in the environment. Its `Debug` never shows the secret.
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum Credential {
    /// A storage account key.
    AccountKey(String),
    /// A shared access signature (query string).
    Sas(String),
    /// A service principal's secret.
    ClientSecret {
        client_id: String,
        tenant_id: String,
        secret: String,
        authority_host: Option<String>,
    },
    /// Workload identity: a federated token in a file.
    FederatedToken {
        client_id: String,
        tenant_id: String,
        token_file: String,
        authority_host: Option<String>,
    },
    /// The machine's managed identity, from this token endpoint (no secret here at all).
    ManagedIdentity {
        endpoint: String,
        /// A user-assigned identity's client id (`AZURE_CLIENT_ID`); none: the system one.
        client_id: Option<String>,
    },
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Credential::AccountKey(_) => "AccountKey(..)",
            Credential::Sas(_) => "Sas(..)",
            Credential::ClientSecret { .. } => "ClientSecret(..)",
            Credential::FederatedToken { .. } => "FederatedToken(..)",
            Credential::ManagedIdentity { .. } => "ManagedIdentity(..)",
        })
    }
}

/// What the environment says about how to reach the account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Access {
    pub(crate) credential: Credential,
    /// Which variable it came from, for messages ("the account key from AZURE_STORAGE_KEY").
    pub(crate) source: &'static str,
    /// An endpoint given by the connection string (`BlobEndpoint`, development storage).
    pub(crate) endpoint: Option<String>,
    /// The endpoint suffix of a sovereign cloud (`EndpointSuffix`).
    pub(crate) endpoint_suffix: Option<String>,
}

/// Reads the credential for `account` from `env` (a lookup of environment variables).
pub(crate) fn from_env(
    store: &str,
    account: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Access, StoreError> {
    let var = |name: &str| env(name).filter(|value| !value.trim().is_empty());
    if let Some(text) = var("AZURE_STORAGE_CONNECTION_STRING") {
        return from_connection_string(store, account, &text);
    }
    let simple = |credential, source| Access {
        credential,
        source,
        endpoint: None,
        endpoint_suffix: None,
    };
    if let Some(key) = var("AZURE_STORAGE_KEY") {
        return Ok(simple(Credential::AccountKey(key), "AZURE_STORAGE_KEY"));
    }
    if let Some(token) = var("AZURE_STORAGE_SAS_TOKEN") {
        return Ok(simple(Credential::Sas(token), "AZURE_STORAGE_SAS_TOKEN"));
    }
    if let (Some(client_id), Some(tenant_id)) = (var("AZURE_CLIENT_ID"), var("AZURE_TENANT_ID")) {
        let authority_host = var("AZURE_AUTHORITY_HOST");
        if let Some(secret) = var("AZURE_CLIENT_SECRET") {
            let credential = Credential::ClientSecret {
                client_id,
                tenant_id,
                secret,
                authority_host,
            };
            return Ok(simple(credential, "AZURE_CLIENT_SECRET"));
        }
        if let Some(token_file) = var("AZURE_FEDERATED_TOKEN_FILE") {
            let credential = Credential::FederatedToken {
                client_id,
                tenant_id,
                token_file,
                authority_host,
            };
            return Ok(simple(credential, "AZURE_FEDERATED_TOKEN_FILE"));
        }
    }
    Ok(managed_identity(&var))
}

/// The managed identity, the last source: its token endpoint and which variable named it.
fn managed_identity(var: &dyn Fn(&str) -> Option<String>) -> Access {
    let (endpoint, source) = if let Some(endpoint) = var("IDENTITY_ENDPOINT") {
        (endpoint, "the managed identity at IDENTITY_ENDPOINT")
    } else if let Some(endpoint) = var("AZURE_MSI_ENDPOINT") {
        (endpoint, "the managed identity at AZURE_MSI_ENDPOINT")
    } else {
        (
            IMDS_TOKEN_ENDPOINT.to_string(),
            "the managed identity of the instance metadata service",
        )
    };
    Access {
        credential: Credential::ManagedIdentity {
            endpoint,
            client_id: var("AZURE_CLIENT_ID"),
        },
        source,
        endpoint: None,
        endpoint_suffix: None,
    }
}

/// Parses `Key=Value;Key=Value` (keys case-insensitive, values may contain `=`). Messages never
/// quote the string: it holds the account key.
fn from_connection_string(store: &str, account: &str, text: &str) -> Result<Access, StoreError> {
    let refuse = |detail: String| StoreError::Credentials {
        store: store.to_string(),
        detail: format!("AZURE_STORAGE_CONNECTION_STRING {detail}"),
        hint: "use the connection string shown under the storage account's Access keys, or \
               `BlobEndpoint=...;SharedAccessSignature=...`"
            .into(),
    };
    let mut fields = std::collections::HashMap::new();
    for (index, part) in text.split(';').map(str::trim).enumerate() {
        if part.is_empty() {
            continue;
        }
        let (name, value) = part
            .split_once('=')
            .ok_or_else(|| refuse(format!("is malformed: its part {} has no `=`", index + 1)))?;
        fields.insert(name.trim().to_ascii_lowercase(), value.trim().to_string());
    }
    let field = |name: &str| fields.get(name).cloned();
    if field("usedevelopmentstorage").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
        if account != DEVELOPMENT_ACCOUNT {
            return Err(refuse(format!(
                "says UseDevelopmentStorage=true, which is account `{DEVELOPMENT_ACCOUNT}`, \
                 but the store URL names account `{account}`"
            )));
        }
        return Ok(Access {
            credential: Credential::AccountKey(DEVELOPMENT_KEY.into()),
            source: "AZURE_STORAGE_CONNECTION_STRING",
            endpoint: Some(DEVELOPMENT_ENDPOINT.into()),
            endpoint_suffix: None,
        });
    }
    if let Some(name) = field("accountname") {
        if name != account {
            return Err(refuse(format!(
                "is for account `{name}` but the store URL names account `{account}`"
            )));
        }
    }
    let credential = match (field("accountkey"), field("sharedaccesssignature")) {
        (Some(key), _) => Credential::AccountKey(key),
        (None, Some(sas)) => Credential::Sas(sas),
        (None, None) => {
            return Err(refuse(
                "has neither AccountKey nor SharedAccessSignature".into(),
            ))
        }
    };
    if field("defaultendpointsprotocol").is_some_and(|p| p.eq_ignore_ascii_case("http"))
        && field("blobendpoint").is_none()
    {
        return Err(refuse(
            "asks for DefaultEndpointsProtocol=http: plain HTTP is allowed only with an explicit \
             endpoint (BlobEndpoint, or `?endpoint=` in the store URL)"
                .into(),
        ));
    }
    Ok(Access {
        credential,
        source: "AZURE_STORAGE_CONNECTION_STRING",
        endpoint: field("blobendpoint"),
        endpoint_suffix: field("endpointsuffix"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect();
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        }
    }

    fn access(pairs: &[(&str, &str)]) -> Result<Access, StoreError> {
        from_env("az://acct/c", "acct", &env(pairs))
    }

    #[test]
    fn takes_the_first_credential_in_the_documented_order() {
        let all = [
            ("AZURE_STORAGE_KEY", "a2V5"),
            ("AZURE_STORAGE_SAS_TOKEN", "sv=1&sig=x"),
            ("AZURE_CLIENT_ID", "id"),
            ("AZURE_TENANT_ID", "tenant"),
            ("AZURE_CLIENT_SECRET", "secret"),
        ];
        assert_eq!(access(&all).unwrap().source, "AZURE_STORAGE_KEY");
        assert_eq!(access(&all[1..]).unwrap().source, "AZURE_STORAGE_SAS_TOKEN");
        assert_eq!(access(&all[2..]).unwrap().source, "AZURE_CLIENT_SECRET");
        let federated = [
            ("AZURE_CLIENT_ID", "id"),
            ("AZURE_TENANT_ID", "tenant"),
            ("AZURE_FEDERATED_TOKEN_FILE", "/var/run/token"),
        ];
        assert_eq!(
            access(&federated).unwrap().source,
            "AZURE_FEDERATED_TOKEN_FILE"
        );
    }

    #[test]
    fn without_a_secret_the_managed_identity_is_last() {
        let none = access(&[("AZURE_STORAGE_KEY", " ")]).unwrap();
        assert_eq!(
            none.credential,
            Credential::ManagedIdentity {
                endpoint: IMDS_TOKEN_ENDPOINT.into(),
                client_id: None
            }
        );
        // AZURE_CLIENT_ID without a tenant and secret picks a user-assigned identity.
        let user_assigned = access(&[
            ("AZURE_CLIENT_ID", "id"),
            ("AZURE_MSI_ENDPOINT", "http://127.0.0.1:1/msi"),
        ])
        .unwrap();
        assert_eq!(
            user_assigned.credential,
            Credential::ManagedIdentity {
                endpoint: "http://127.0.0.1:1/msi".into(),
                client_id: Some("id".into())
            }
        );
        let app_service = access(&[
            ("AZURE_MSI_ENDPOINT", "http://127.0.0.1:1/msi"),
            ("IDENTITY_ENDPOINT", "http://127.0.0.1:2/token"),
        ])
        .unwrap();
        assert_eq!(
            app_service.source,
            "the managed identity at IDENTITY_ENDPOINT"
        );
        // An explicit secret always wins over an identity endpoint in the environment.
        let key = access(&[
            ("IDENTITY_ENDPOINT", "http://127.0.0.1:2/token"),
            ("AZURE_STORAGE_KEY", "a2V5"),
        ])
        .unwrap();
        assert_eq!(key.source, "AZURE_STORAGE_KEY");
    }

    #[test]
    fn the_tried_hint_lists_every_variable() {
        for name in [
            "AZURE_STORAGE_CONNECTION_STRING",
            "AZURE_STORAGE_KEY",
            "AZURE_STORAGE_SAS_TOKEN",
            "AZURE_CLIENT_ID",
            "AZURE_TENANT_ID",
            "AZURE_CLIENT_SECRET",
            "AZURE_FEDERATED_TOKEN_FILE",
            "managed identity",
            "IDENTITY_ENDPOINT",
        ] {
            assert!(TRIED_HINT.contains(name), "hint names {name}");
            assert!(!TRIED_HINT.contains('\n'));
        }
    }

    #[test]
    fn parses_connection_strings() {
        let key = access(&[(
            "AZURE_STORAGE_CONNECTION_STRING",
            "DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=a2V5==;EndpointSuffix=core.chinacloudapi.cn",
        )])
        .unwrap();
        assert_eq!(key.credential, Credential::AccountKey("a2V5==".into()));
        assert_eq!(
            key.endpoint_suffix.as_deref(),
            Some("core.chinacloudapi.cn")
        );
        let sas = access(&[(
            "AZURE_STORAGE_CONNECTION_STRING",
            "BlobEndpoint=https://acct.blob.core.windows.net/;SharedAccessSignature=sv=2022-11-02&sig=a%3D",
        )])
        .unwrap();
        assert_eq!(
            sas.credential,
            Credential::Sas("sv=2022-11-02&sig=a%3D".into())
        );
        assert_eq!(
            sas.endpoint.as_deref(),
            Some("https://acct.blob.core.windows.net/")
        );
        let development = from_env(
            "s",
            "devstoreaccount1",
            &env(&[(
                "AZURE_STORAGE_CONNECTION_STRING",
                "UseDevelopmentStorage=true",
            )]),
        )
        .unwrap();
        assert_eq!(development.endpoint.as_deref(), Some(DEVELOPMENT_ENDPOINT));
    }

    #[test]
    fn refuses_bad_connection_strings_without_echoing_them() {
        for text in [
            "AccountName=other;AccountKey=c2VjcmV0",
            "AccountName=acct;c2VjcmV0",
            "AccountName=acct",
            "DefaultEndpointsProtocol=http;AccountName=acct;AccountKey=c2VjcmV0",
            "UseDevelopmentStorage=true",
        ] {
            let error = access(&[("AZURE_STORAGE_CONNECTION_STRING", text)]).unwrap_err();
            let message = error.to_string();
            assert!(matches!(error, StoreError::Credentials { .. }), "{message}");
            assert!(!message.contains("c2VjcmV0"), "{message}");
            assert!(!message.contains('\n'), "{message}");
        }
    }

    #[test]
    fn debug_hides_secrets() {
        let credential = Credential::AccountKey("c2VjcmV0".into());
        assert_eq!(format!("{credential:?}"), "AccountKey(..)");
    }
}
