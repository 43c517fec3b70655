//! Cairn's [`ArtifactStore`] on Azure Blob Storage: `az://ACCOUNT/CONTAINER/PREFIX`, with
//! `?endpoint=URL` for Azurite or a sovereign cloud.
//!
//! A thin layer over the `object_store` crate's Azure backend (see `docs/azure-adapter.md` for
//! why that crate and not an Azure SDK crate): keys are blob names under the prefix, uploads
//! are block blobs staged in 8 MiB blocks (the `upload` module explains the memory bound and
//! what an abort leaves behind), reads stream.
//!
//! ```no_run
//! # async fn example() -> Result<(), cairn_store::StoreError> {
//! use cairn_store::{ArtifactStore, ArtifactStoreExt, ObjectKey, PutOptions, StoreLocation};
//! use cairn_store_azure::AzureStore;
//!
//! // Credentials come from the environment, e.g. AZURE_STORAGE_KEY.
//! let location = StoreLocation::parse("az://acct/backups/cf").expect("valid URL");
//! let store = AzureStore::from_location(&location)?;
//! store.capabilities().await?; // reachable, container exists
//! let key = ObjectKey::parse("nightly/manifest.json").expect("valid key");
//! let put = store.put_bytes(&key, "{}".into(), &PutOptions::default()).await?;
//! let read = store.get_bytes(&key, put.version.as_deref()).await?;
//! assert_eq!(read, b"{}");
//! # Ok(())
//! # }
//! ```
//!
//! # Versions
//! `PutResult::version` is the blob's version id (`x-ms-version-id`) when the account has blob
//! versioning on, and otherwise its ETag (a quoted string such as `"0x8DC5..."`). Either way a
//! manifest that records it reads back exactly what was written: a version id is read with
//! `?versionid=`, an ETag with `If-Match`, so an overwritten blob reads as
//! [`StoreError::NotFound`] instead of as different bytes. [`Capabilities::versioning`] is only
//! true when a version id has actually been seen, because only then does an old version
//! survive an overwrite. Blob versioning is a setting of the storage account, which a
//! container's credential cannot read; so `capabilities` (read-only, run by every command)
//! reports it only once seen, and `capabilities_for_writing` (run once when a backup starts)
//! writes a 22-byte probe blob under `.cairn-probe/`, looks for its `x-ms-version-id` and
//! deletes it again ([`AzureStore::probe_versioning`]). A listing carries ETags only, so `list`
//! reports no version once version ids have been seen.
//!
//! # What object_store cannot do, and how it is covered
//! - Deleting one version (`delete(key, Some(v))`) has no object_store call, and its plain
//!   delete is a Blob Batch request: the adapter signs each single Delete Blob request itself
//!   with object_store's [`AzureAuthorizer`] (`If-Match` for an ETag, `?versionid=` for a
//!   version id).
//! - Retention (immutability policies) is not offered: [`Capabilities::retention`] is false and
//!   a put that asks for retention is refused rather than written unprotected. Use a
//!   container-level time-based retention policy instead.
//!
//! # Errors and retries
//! object_store retries each request itself, with the policy set here explicitly rather than
//! left to its defaults: 5xx, 429, timeouts and lost connections are retried up to
//! [`MAX_RETRIES`] times, with exponential backoff and decorrelated jitter (0.2 s first, at most
//! 10 s), and no retry starts [`RETRY_TIMEOUT`] after the first attempt; a download cut
//! mid-body is resumed from where it stopped, pinned to the blob's ETag. A
//! [`StoreError::Transient`] means that was not enough. Requests have no overall timeout (a
//! large artifact may stream for hours) but fail when a connection stalls for a minute, or
//! cannot be made in 10 seconds. The values are fixed, as the S3 adapter's are: a store URL
//! has no place for them, and they ride out a store's bad minute. The `errors` module tells
//! how failures are told apart.

#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]

mod credentials;
mod errors;
mod upload;

use std::fmt;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use cairn_store::{
    ArtifactStore, ByteStream, Capabilities, ObjectKey, ObjectMeta, PutOptions, StoreError,
    StoreLocation, Upload,
};
use futures::StreamExt;
use object_store::azure::{AzureAuthorizer, AzureConfigKey, MicrosoftAzure, MicrosoftAzureBuilder};
use object_store::client::{HttpClient, HttpConnector, HttpRequestBody, ReqwestConnector};
use object_store::list::{PaginatedListOptions, PaginatedListStore};
use object_store::path::Path;
use object_store::{BackoffConfig, ClientOptions, GetOptions, ObjectStore, RetryConfig};
use url::Url;

use crate::credentials::{Access, Credential, CREDENTIAL_HINT};
use crate::errors::{classify, one_line, Failure};

/// Connecting gives up after this long (then object_store retries).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection that delivers nothing for this long is dropped (then object_store retries).
const STALL_TIMEOUT: Duration = Duration::from_secs(60);
/// Retries of a request after its first attempt (object_store's `max_retries`).
pub const MAX_RETRIES: usize = 5;
/// No retry starts this long after a request's first attempt.
pub const RETRY_TIMEOUT: Duration = Duration::from_mins(2);
/// The backoff between attempts: from 0.2 s, doubling, at most 10 s, with jitter.
const BACKOFF: BackoffConfig = BackoffConfig {
    init_backoff: Duration::from_millis(200),
    max_backoff: Duration::from_secs(10),
    base: 2.0,
};
/// Retries of a Delete Blob the adapter sends itself, as object_store retries its requests.
const DELETE_RETRIES: usize = MAX_RETRIES;

/// An Azure Blob Storage container (and blob name prefix) used as a store.
#[derive(Clone)]
pub struct AzureStore {
    shared: Arc<Shared>,
}

/// What the store and its uploads share.
pub(crate) struct Shared {
    azure: MicrosoftAzure,
    /// For the one request object_store has no call for (deleting one version).
    http: HttpClient,
    name: String,
    account: String,
    container: String,
    prefix: String,
    endpoint: Url,
    credential: Credential,
    credential_source: &'static str,
    /// A blob version id has been seen: the account keeps versions.
    versions_seen: AtomicBool,
    /// For a managed identity: what `check_identity` needs, and whether it has passed.
    identity: Option<(Access, tokio::sync::OnceCell<()>)>,
}

/// What a request was doing, for messages.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Operation {
    Put,
    Get,
    Head,
    List,
    Delete,
    Probe,
}

impl Operation {
    fn verb(self) -> &'static str {
        match self {
            Operation::Put => "writing",
            Operation::Get => "reading",
            Operation::Head => "describing",
            Operation::List => "listing",
            Operation::Delete => "deleting",
            Operation::Probe => "probing",
        }
    }
}

/// A version as recorded by [`PutResult::version`](cairn_store::PutResult::version).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Version<'a> {
    /// A blob version id (a timestamp such as `2026-11-22T03:51:14.1234567Z`).
    Id(&'a str),
    /// An ETag (quoted, such as `"0x8DC5..."`): the blob while it is unchanged.
    ETag(&'a str),
}

impl<'a> Version<'a> {
    fn parse(text: &'a str) -> Version<'a> {
        if text.starts_with('"') || text.starts_with("W/") || text.starts_with("0x") {
            Version::ETag(text)
        } else {
            Version::Id(text)
        }
    }
}

impl AzureStore {
    /// A store for an `az://` location, with credentials from the environment (see
    /// `AZURE_STORAGE_CONNECTION_STRING`, `AZURE_STORAGE_KEY`, `AZURE_STORAGE_SAS_TOKEN`, then
    /// Entra ID's `AZURE_CLIENT_ID`/`AZURE_TENANT_ID`/`AZURE_CLIENT_SECRET` or
    /// `AZURE_FEDERATED_TOKEN_FILE`, in that order, and only when none is set the machine's
    /// managed identity). Nothing is sent until the first request.
    ///
    /// # Errors
    /// [`StoreError::Credentials`] when a credential in the environment is malformed (a missing
    /// one is found out by [`AzureStore::check_identity`]);
    /// [`StoreError::Configuration`] for a location that is not `az://`, a bad prefix or
    /// endpoint, or plain HTTP without an explicit endpoint.
    pub fn from_location(location: &StoreLocation) -> Result<AzureStore, StoreError> {
        AzureStore::from_location_with_env(location, &|name| std::env::var(name).ok())
    }

    /// [`AzureStore::from_location`] with the environment given as a lookup function, for tests
    /// and for callers that hold the environment as a map.
    ///
    /// # Errors
    /// As [`AzureStore::from_location`].
    pub fn from_location_with_env(
        location: &StoreLocation,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<AzureStore, StoreError> {
        let StoreLocation::Azure {
            account,
            container,
            prefix,
            endpoint,
        } = location
        else {
            return Err(StoreError::Configuration {
                store: format!("{location:?}"),
                detail: "the Azure adapter serves az:// locations only".into(),
            });
        };
        let name = display_name(account, container, prefix);
        let configuration = |detail: String| StoreError::Configuration {
            store: name.clone(),
            detail,
        };
        if !prefix.is_empty() {
            Path::parse(prefix).map_err(|e| {
                configuration(format!(
                    "prefix `{prefix}` is not a valid blob name prefix: {e}"
                ))
            })?;
        }
        let access = credentials::from_env(&name, account, env)?;
        let (endpoint, explicit) =
            resolve_endpoint(account, endpoint.as_deref(), &access).map_err(&configuration)?;
        let client_options = ClientOptions::new()
            .with_allow_http(explicit && endpoint.scheme() == "http")
            .with_connect_timeout(CONNECT_TIMEOUT)
            .with_timeout_disabled()
            .with_read_timeout(STALL_TIMEOUT);
        let retry = RetryConfig {
            max_retries: MAX_RETRIES,
            retry_timeout: RETRY_TIMEOUT,
            backoff: BACKOFF,
        };
        let builder = MicrosoftAzureBuilder::new()
            .with_account(account)
            .with_container_name(container)
            .with_endpoint(endpoint.as_str().trim_end_matches('/').to_string())
            .with_client_options(client_options.clone())
            .with_retry(retry);
        let azure = with_credential(builder, &access, &name)?
            .build()
            .map_err(|e| configuration(one_line(&e.to_string())))?;
        let http = ReqwestConnector::default()
            .connect(&client_options)
            .map_err(|e| configuration(one_line(&e.to_string())))?;
        Ok(AzureStore {
            shared: Arc::new(Shared {
                azure,
                http,
                name,
                account: account.clone(),
                container: container.clone(),
                prefix: prefix.clone(),
                endpoint,
                identity: matches!(access.credential, Credential::ManagedIdentity { .. })
                    .then(|| (access.clone(), tokio::sync::OnceCell::new())),
                credential: access.credential,
                credential_source: access.source,
                versions_seen: AtomicBool::new(false),
            }),
        })
    }

    fn path(&self, key: &ObjectKey) -> Result<Path, StoreError> {
        let name = self.shared.blob_name(key.as_str());
        Path::parse(&name).map_err(|e| StoreError::Other {
            store: self.shared.name.clone(),
            detail: format!("key `{key}` is not a valid blob name: {e}"),
        })
    }

    fn meta(&self, key: &ObjectKey, meta: object_store::ObjectMeta) -> ObjectMeta {
        ObjectMeta {
            key: key.clone(),
            size: meta.size,
            version: self.shared.version_of(meta.version, meta.e_tag),
            last_modified: Some(SystemTime::from(meta.last_modified)),
        }
    }

    fn read_options(version: Option<&str>) -> GetOptions {
        match version.map(Version::parse) {
            None => GetOptions::default(),
            Some(Version::Id(id)) => GetOptions::default().with_version(Some(id)),
            Some(Version::ETag(etag)) => GetOptions::default().with_if_match(Some(etag)),
        }
    }

    /// Delete Blob, retried as object_store retries its own requests (a transient failure up
    /// to [`DELETE_RETRIES`] more times, with a doubling pause).
    async fn delete_blob(&self, key: &ObjectKey, version: Option<&str>) -> Result<(), StoreError> {
        let mut pause = Duration::from_millis(100);
        for _ in 0..DELETE_RETRIES {
            match self.delete_blob_once(key, version).await {
                Err(error) if error.is_retryable() => {
                    tracing::debug!("Retrying a delete in {:?}: {error}", pause);
                    tokio::time::sleep(pause).await;
                    pause *= 2;
                }
                result => return result,
            }
        }
        self.delete_blob_once(key, version).await
    }

    /// One Delete Blob request: of the current blob, or of one version (`If-Match` for an
    /// ETag, `?versionid=` for a version id). Signed here rather than sent through
    /// object_store, whose delete has no version and goes through a Blob Batch request.
    async fn delete_blob_once(
        &self,
        key: &ObjectKey,
        version: Option<&str>,
    ) -> Result<(), StoreError> {
        let shared = &self.shared;
        let fail = |e: &object_store::Error| shared.error(Operation::Delete, Some(key.as_str()), e);
        let credential = shared
            .azure
            .credentials()
            .get_credential()
            .await
            .map_err(|e| fail(&e))?;
        let mut url = shared.blob_url(&self.path(key)?);
        let mut request = http::Request::builder().method(http::Method::DELETE);
        match version.map(Version::parse) {
            None => {}
            Some(Version::Id(id)) => {
                url.query_pairs_mut().append_pair("versionid", id);
            }
            Some(Version::ETag(etag)) => request = request.header(http::header::IF_MATCH, etag),
        }
        let mut request = request
            .uri(url.as_str())
            .body(HttpRequestBody::empty())
            .map_err(|e| fail(&generic(e)))?;
        AzureAuthorizer::new(&credential, &shared.account)
            .try_authorize(&mut request)
            .map_err(|e| fail(&e))?;
        let response = shared
            .http
            .execute(request)
            .await
            .map_err(|e| fail(&generic(e)))?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let body = response.into_body().bytes().await.unwrap_or_default();
        let text = format!(
            "Server returned non-2xx status code: {status}: {}",
            String::from_utf8_lossy(&body)
        );
        Err(fail(&generic(text)))
    }
}

fn generic(error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> object_store::Error {
    object_store::Error::Generic {
        store: "MicrosoftAzure",
        source: error.into(),
    }
}

fn non_empty(text: &str) -> Option<&str> {
    (!text.is_empty()).then_some(text)
}

fn display_name(account: &str, container: &str, prefix: &str) -> String {
    if prefix.is_empty() {
        format!("az://{account}/{container}")
    } else {
        format!("az://{account}/{container}/{prefix}")
    }
}

/// The blob service endpoint, and whether it was given explicitly (only then may it be HTTP).
fn resolve_endpoint(
    account: &str,
    from_url: Option<&str>,
    access: &Access,
) -> Result<(Url, bool), String> {
    let (text, explicit) = match (from_url, &access.endpoint, &access.endpoint_suffix) {
        (Some(endpoint), _, _) => (endpoint.to_string(), true),
        (None, Some(endpoint), _) => (endpoint.clone(), true),
        (None, None, Some(suffix)) => (format!("https://{account}.blob.{suffix}"), false),
        (None, None, None) => (format!("https://{account}.blob.core.windows.net"), false),
    };
    let endpoint =
        Url::parse(&text).map_err(|e| format!("endpoint `{text}` is not a URL ({e})"))?;
    match endpoint.scheme() {
        "https" => {}
        "http" if explicit => {}
        scheme => {
            return Err(format!(
                "endpoint `{text}` uses `{scheme}`; use https (http only with an explicit endpoint)"
            ))
        }
    }
    if endpoint.host_str().is_none() || endpoint.query().is_some() || endpoint.fragment().is_some()
    {
        return Err(format!(
            "endpoint `{text}` must be scheme://host[:port][/path], without query or fragment"
        ));
    }
    Ok((endpoint, explicit))
}

/// Hands the credential to object_store with an explicit credential type, so that it never
/// tries a chain of its own: the managed identity is used only when the environment holds no
/// secret at all (see the `credentials` module), and then probed first ([`probe_identity`]).
fn with_credential(
    builder: MicrosoftAzureBuilder,
    access: &Access,
    store: &str,
) -> Result<MicrosoftAzureBuilder, StoreError> {
    let refuse = |what: &str| StoreError::Credentials {
        store: store.to_string(),
        detail: format!("{what} from {} is malformed", access.source),
        hint: CREDENTIAL_HINT.into(),
    };
    Ok(match &access.credential {
        Credential::AccountKey(key) => {
            object_store::azure::AzureAccessKey::try_new(key)
                .map_err(|_| refuse("the account key (base64 expected)"))?;
            builder
                .with_access_key(key)
                .with_credential_type("access_key")
        }
        Credential::Sas(token) => {
            object_store::azure::split_sas(token).map_err(|_| refuse("the SAS token"))?;
            builder
                .with_config(AzureConfigKey::SasKey, token)
                .with_credential_type("sas_token")
        }
        Credential::ClientSecret {
            client_id,
            tenant_id,
            secret,
            authority_host,
        } => {
            let builder = builder
                .with_client_id(client_id)
                .with_tenant_id(tenant_id)
                .with_client_secret(secret)
                .with_credential_type("client_secret");
            match authority_host {
                Some(host) => builder.with_authority_host(host),
                None => builder,
            }
        }
        Credential::FederatedToken {
            client_id,
            tenant_id,
            token_file,
            authority_host,
        } => {
            let builder = builder
                .with_client_id(client_id)
                .with_tenant_id(tenant_id)
                .with_federated_token_file(token_file)
                .with_credential_type("workload_identity");
            match authority_host {
                Some(host) => builder.with_authority_host(host),
                None => builder,
            }
        }
        Credential::ManagedIdentity {
            endpoint,
            client_id,
        } => {
            let builder = builder
                .with_msi_endpoint(endpoint)
                .with_credential_type("managed_identity");
            match client_id {
                Some(id) => builder.with_client_id(id),
                None => builder,
            }
        }
    })
}

/// How long the managed identity's token endpoint has to answer the probe before the first
/// request. IMDS answers in milliseconds on Azure; off Azure its address does not answer at all.
pub const IDENTITY_PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// Asks the managed identity's token endpoint for a token once, without retries and within
/// [`IDENTITY_PROBE_TIMEOUT`], through object_store's own managed-identity client (a store
/// built only for this, so the real store's retry policy stays as it is). The real store then
/// fetches (and refreshes) its own token.
async fn probe_identity(account: &str, access: &Access, store: &str) -> Result<(), StoreError> {
    let Credential::ManagedIdentity { endpoint, .. } = &access.credential else {
        return Ok(());
    };
    let fail = |why: String| StoreError::Credentials {
        store: store.to_string(),
        detail: format!(
            "no secret in the environment, and {} ({endpoint}) {why}",
            access.source
        ),
        hint: credentials::TRIED_HINT.into(),
    };
    let options = ClientOptions::new()
        .with_connect_timeout(IDENTITY_PROBE_TIMEOUT)
        .with_timeout(IDENTITY_PROBE_TIMEOUT);
    let retry = RetryConfig {
        max_retries: 0,
        retry_timeout: IDENTITY_PROBE_TIMEOUT,
        backoff: BACKOFF,
    };
    let builder = MicrosoftAzureBuilder::new()
        .with_account(account)
        .with_container_name("probe")
        .with_client_options(options)
        .with_retry(retry);
    let probe = with_credential(builder, access, store)?
        .build()
        .map_err(|e| fail(format!("cannot be used: {}", one_line(&e.to_string()))))?;
    match tokio::time::timeout(IDENTITY_PROBE_TIMEOUT, probe.credentials().get_credential()).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(error)) => Err(fail(format!("gave no token: {}", identity_failure(&error)))),
        Err(_) => Err(fail(format!(
            "did not answer within {} s",
            IDENTITY_PROBE_TIMEOUT.as_secs()
        ))),
    }
}

/// The useful end of a token request's error chain, on one line ("connection refused", "HTTP
/// status 400 ...").
fn identity_failure(error: &object_store::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        let part = cause.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = cause.source();
    }
    // object_store says "Error performing token request: Error performing GET <url> in 12ms -
    // Server returned non-2xx status code: 500 ...": what the endpoint answered is the end.
    let answer = ["Server returned ", "HTTP error"]
        .iter()
        .find_map(|marker| text.find(marker))
        .map_or(text.as_str(), |at| &text[at..]);
    one_line(answer.trim_start_matches("Generic MicrosoftAzure error: "))
}

impl Shared {
    fn blob_name(&self, relative: &str) -> String {
        if self.prefix.is_empty() {
            relative.to_string()
        } else {
            format!("{}/{relative}", self.prefix)
        }
    }

    /// The blob's URL, built as object_store builds it.
    fn blob_url(&self, path: &Path) -> Url {
        let mut url = self.endpoint.clone();
        if let Ok(mut segments) = url.path_segments_mut() {
            segments
                .pop_if_empty()
                .push(&self.container)
                .extend(path.parts());
        }
        url
    }

    /// The version to record: the version id when there is one, else the ETag.
    fn version_of(&self, version: Option<String>, e_tag: Option<String>) -> Option<String> {
        if version.is_some() {
            self.versions_seen.store(true, Ordering::Relaxed);
        }
        version.or(e_tag)
    }

    fn describe_credential(&self) -> String {
        let what = match self.credential {
            Credential::AccountKey(_) => "the account key",
            Credential::Sas(_) => "the SAS token",
            Credential::ClientSecret { .. } => "the service principal secret",
            Credential::FederatedToken { .. } => "the federated token",
            Credential::ManagedIdentity { .. } => {
                return format!("a token from {}", self.credential_source)
            }
        };
        format!("{what} from {}", self.credential_source)
    }

    pub(crate) fn error(
        &self,
        operation: Operation,
        key: Option<&str>,
        error: &object_store::Error,
    ) -> StoreError {
        let store = self.name.clone();
        let subject = key.map(|k| format!(" `{k}`")).unwrap_or_default();
        if errors::is_token_failure(error) {
            // A token (managed identity, workload identity, service principal) is fetched
            // again near its expiry, during the run: the endpoint that gave it stopped.
            return StoreError::Credentials {
                store,
                detail: format!(
                    "no token from {} ({}{subject}: {})",
                    self.credential_source,
                    operation.verb(),
                    identity_failure(error)
                ),
                hint: credentials::RENEWAL_HINT.into(),
            };
        }
        match classify(error) {
            Failure::NotFound | Failure::VersionGone => StoreError::NotFound {
                store,
                key: key.unwrap_or("").to_string(),
            },
            Failure::ContainerMissing => StoreError::Configuration {
                store,
                detail: format!(
                    "container `{container}` does not exist in storage account `{account}`: \
                     create it (for example `az storage container create --account-name \
                     {account} --name {container}`)",
                    container = self.container,
                    account = self.account,
                ),
            },
            Failure::Credentials(detail) => StoreError::Credentials {
                store,
                detail: format!(
                    "{} ({}{subject}: {detail})",
                    self.describe_credential(),
                    operation.verb()
                ),
                hint: CREDENTIAL_HINT.into(),
            },
            Failure::Protected(detail) => StoreError::Protected {
                store,
                detail: format!("{}{subject}: {detail}", operation.verb()),
            },
            Failure::Transient(detail) => StoreError::Transient {
                store,
                detail: format!("{}{subject}: {detail}", operation.verb()),
            },
            Failure::Other(detail) => StoreError::Other {
                store,
                detail: format!("{}{subject}: {detail}", operation.verb()),
            },
        }
    }
}

impl fmt::Display for AzureStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shared.name)
    }
}

impl fmt::Debug for AzureStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AzureStore")
            .field("location", &self.shared.name)
            .field("endpoint", &self.shared.endpoint.as_str())
            .field("credential", &self.shared.credential_source)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl ArtifactStore for AzureStore {
    async fn put(
        &self,
        key: &ObjectKey,
        options: &PutOptions,
    ) -> Result<Box<dyn Upload>, StoreError> {
        if options.retention.is_some() {
            return Err(StoreError::Configuration {
                store: self.shared.name.clone(),
                detail: format!(
                    "cannot set retention on `{key}`: the Azure adapter does not apply per-blob \
                     immutability policies; protect the container with a time-based retention \
                     policy instead"
                ),
            });
        }
        self.check_identity().await?;
        let path = self.path(key)?;
        Ok(Box::new(upload::AzureUpload::new(
            Arc::clone(&self.shared),
            key.clone(),
            path,
        )))
    }

    async fn get(&self, key: &ObjectKey, version: Option<&str>) -> Result<ByteStream, StoreError> {
        self.check_identity().await?;
        let path = self.path(key)?;
        let result = self
            .shared
            .azure
            .get_opts(&path, AzureStore::read_options(version))
            .await
            .map_err(|e| self.shared.error(Operation::Get, Some(key.as_str()), &e))?;
        let shared = Arc::clone(&self.shared);
        let key = key.clone();
        Ok(result
            .into_stream()
            .map(move |chunk| {
                chunk.map_err(|e| shared.error(Operation::Get, Some(key.as_str()), &e))
            })
            .boxed())
    }

    /// Get Blob with `x-ms-range` (object_store's `GetOptions::range`), of the version asked
    /// for. object_store checks the `Content-Range` answered; a range ending past the blob
    /// comes back short, and a short answer is refused here.
    async fn get_range(
        &self,
        key: &ObjectKey,
        version: Option<&str>,
        range: Range<u64>,
    ) -> Result<Bytes, StoreError> {
        if range.is_empty() {
            return Ok(Bytes::new());
        }
        self.check_identity().await?;
        let path = self.path(key)?;
        let mut options = AzureStore::read_options(version);
        options.range = Some(range.clone().into());
        let result = self
            .shared
            .azure
            .get_opts(&path, options)
            .await
            .map_err(|e| self.shared.error(Operation::Get, Some(key.as_str()), &e))?;
        let size = result.meta.size;
        let data = result
            .bytes()
            .await
            .map_err(|e| self.shared.error(Operation::Get, Some(key.as_str()), &e))?;
        if data.len() as u64 != range.end - range.start {
            return Err(cairn_store::range_error(
                &self.shared.name,
                key,
                &range,
                size,
            ));
        }
        Ok(data)
    }

    async fn head(&self, key: &ObjectKey, version: Option<&str>) -> Result<ObjectMeta, StoreError> {
        self.check_identity().await?;
        let path = self.path(key)?;
        let result = self
            .shared
            .azure
            .get_opts(&path, AzureStore::read_options(version).with_head(true))
            .await
            .map_err(|e| self.shared.error(Operation::Head, Some(key.as_str()), &e))?;
        Ok(self.meta(key, result.meta))
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        self.check_identity().await?;
        let full_prefix = self.shared.blob_name(prefix);
        let strip = if self.shared.prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", self.shared.prefix)
        };
        let mut found = Vec::new();
        let mut page_token = None;
        loop {
            let options = PaginatedListOptions {
                page_token,
                ..PaginatedListOptions::default()
            };
            let page = self
                .shared
                .azure
                .list_paginated(non_empty(&full_prefix), options)
                .await
                .map_err(|e| self.shared.error(Operation::List, Some(prefix), &e))?;
            for object in page.result.objects {
                let relative = object.location.as_ref().strip_prefix(strip.as_str());
                // Blobs whose names are not Cairn keys (written by other tools) are skipped.
                if let Some(key) = relative.and_then(|r| ObjectKey::parse(r).ok()) {
                    let mut meta = self.meta(&key, object);
                    // A listing carries ETags, not version ids: on a versioned account an ETag
                    // would be the wrong kind of version, so none is reported.
                    if self.shared.versions_seen.load(Ordering::Relaxed) {
                        meta.version = None;
                    }
                    found.push(meta);
                }
            }
            page_token = page.page_token;
            if page_token.is_none() {
                break;
            }
        }
        found.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(found)
    }

    async fn delete(&self, key: &ObjectKey, version: Option<&str>) -> Result<(), StoreError> {
        self.check_identity().await?;
        self.delete_blob(key, version).await
    }

    /// Azure has no call that lists or deletes uncommitted blocks; Azure discards them after 7 days.
    async fn abort_unfinished_uploads(&self, _prefix: &str) -> Result<usize, StoreError> {
        Ok(0)
    }

    /// Lists one blob under the prefix: a missing container is a configuration error, refused
    /// credentials show here. Reads only, so versioning is reported only once a version id has
    /// been seen (on that blob, or on an earlier write); an empty container on a versioned
    /// account reads as unversioned here. [`ArtifactStore::capabilities_for_writing`] finds out.
    /// 50,000 blocks of 8 MiB (about 390 GiB).
    fn max_object_size(&self) -> Option<u64> {
        Some(upload::MAX_OBJECT_SIZE)
    }

    async fn capabilities(&self) -> Result<Capabilities, StoreError> {
        self.check_identity().await?;
        let prefix = self.shared.blob_name("");
        let options = PaginatedListOptions {
            max_keys: Some(1),
            ..PaginatedListOptions::default()
        };
        let page = self
            .shared
            .azure
            .list_paginated(non_empty(&prefix), options)
            .await
            .map_err(|e| self.shared.error(Operation::Probe, None, &e))?;
        if let Some(object) = page.result.objects.first() {
            if let Ok(result) = self
                .shared
                .azure
                .get_opts(&object.location, GetOptions::default().with_head(true))
                .await
            {
                self.shared.version_of(result.meta.version, None);
            }
        }
        Ok(Capabilities {
            versioning: self.shared.versions_seen.load(Ordering::Relaxed),
            retention: false,
        })
    }

    /// [`ArtifactStore::capabilities`], then the versioning probe: blob versioning is a setting
    /// of the storage account, which the data plane cannot read, so a probe blob is written and
    /// deleted (see [`AzureStore::probe_versioning`]).
    async fn capabilities_for_writing(&self) -> Result<Capabilities, StoreError> {
        let mut capabilities = self.capabilities().await?;
        capabilities.versioning = self.probe_versioning().await?;
        Ok(capabilities)
    }
}

impl AzureStore {
    /// With a managed identity (no secret in the environment), probes its token endpoint once
    /// per store ([`IDENTITY_PROBE_TIMEOUT`]); every request of the [`ArtifactStore`] calls
    /// start with this (a run journal may be written before anything else). Any other
    /// credential: nothing to do. A failed probe is tried again by the next call.
    ///
    /// # Errors
    /// [`StoreError::Credentials`] naming every source tried when the endpoint gives no token.
    pub async fn check_identity(&self) -> Result<(), StoreError> {
        let Some((access, passed)) = &self.shared.identity else {
            return Ok(());
        };
        passed
            .get_or_try_init(|| probe_identity(&self.shared.account, access, &self.shared.name))
            .await?;
        Ok(())
    }
}

/// Where probe blobs go, under the store's prefix: a name no backup has (backups are
/// `<deployment>/<id>/<object>`, and the probe has two segments).
pub const PROBE_PREFIX: &str = ".cairn-probe";

impl AzureStore {
    /// Writes a 22-byte probe blob (`.cairn-probe/<pid>-<nanoseconds>` under the prefix) and
    /// reports whether Azure answered with a version id (`x-ms-version-id`): it does exactly
    /// when the account has blob versioning. The probe is then deleted — the blob, and on a
    /// versioned account the version the delete left behind — so nothing stays; a probe that
    /// cannot be deleted (no delete permission, an immutability policy) is left with a warning.
    ///
    /// # Errors
    /// The put's error (a credential that may not write, a missing container).
    pub async fn probe_versioning(&self) -> Result<bool, StoreError> {
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        let name = format!("{PROBE_PREFIX}/{}-{nanos:x}", std::process::id());
        let key = ObjectKey::parse(&name).map_err(|detail| StoreError::Other {
            store: self.shared.name.clone(),
            detail,
        })?;
        let put = cairn_store::ArtifactStoreExt::put_bytes(
            self,
            &key,
            bytes::Bytes::from_static(b"cairn versioning probe"),
            &PutOptions::default(),
        )
        .await?;
        let version_id = match put.version.as_deref().map(Version::parse) {
            Some(Version::Id(id)) => Some(id.to_string()),
            _ => None,
        };
        let mut removed = self.delete(&key, None).await;
        if let (Ok(()), Some(id)) = (&removed, &version_id) {
            removed = self.delete(&key, Some(id)).await;
        }
        if let Err(error) = removed {
            tracing::warn!("Could not remove the versioning probe `{key}` from {self}: {error}");
        }
        Ok(version_id.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn location(url: &str) -> StoreLocation {
        StoreLocation::parse(url).expect("valid URL")
    }

    fn key_only(name: &str) -> Option<String> {
        (name == "AZURE_STORAGE_KEY").then(|| "a2V5".to_string())
    }

    #[test]
    fn displays_as_its_url() {
        let store = AzureStore::from_location_with_env(
            &location("az://acct/backups/cf/nightly"),
            &key_only,
        )
        .unwrap();
        assert_eq!(store.to_string(), "az://acct/backups/cf/nightly");
        assert_eq!(
            store.shared.endpoint.as_str(),
            "https://acct.blob.core.windows.net/"
        );
        let store =
            AzureStore::from_location_with_env(&location("az://acct/backups"), &key_only).unwrap();
        assert_eq!(store.to_string(), "az://acct/backups");
        assert!(!format!("{store:?}").contains("a2V5"));
    }

    #[test]
    fn plain_http_needs_an_explicit_endpoint() {
        let explicit =
            location("az://devstoreaccount1/c?endpoint=http://127.0.0.1:10000/devstoreaccount1");
        let store = AzureStore::from_location_with_env(&explicit, &key_only).unwrap();
        let path = Path::parse("p/a b").unwrap();
        assert_eq!(
            store.shared.blob_url(&path).as_str(),
            "http://127.0.0.1:10000/devstoreaccount1/c/p/a%20b"
        );
        let suffix = |name: &str| {
            (name == "AZURE_STORAGE_CONNECTION_STRING").then(|| {
                "DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=a2V5;EndpointSuffix=example.test".to_string()
            })
        };
        let store = AzureStore::from_location_with_env(&location("az://acct/c"), &suffix).unwrap();
        assert_eq!(
            store.shared.endpoint.as_str(),
            "https://acct.blob.example.test/"
        );
        let bad = location("az://acct/c?endpoint=ftp://host");
        assert!(matches!(
            AzureStore::from_location_with_env(&bad, &key_only),
            Err(StoreError::Configuration { .. })
        ));
    }

    #[tokio::test]
    async fn without_a_secret_probes_the_managed_identity_and_names_every_source() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoint = format!(
            "http://{}/metadata/identity/oauth2/token",
            closed.local_addr().unwrap()
        );
        drop(closed);
        let env = |name: &str| (name == "IDENTITY_ENDPOINT").then(|| endpoint.clone());
        let store = AzureStore::from_location_with_env(&location("az://acct/c"), &env).unwrap();
        let error = store.capabilities().await.unwrap_err();
        let message = error.to_string();
        assert!(matches!(error, StoreError::Credentials { .. }), "{message}");
        for fragment in [
            "IDENTITY_ENDPOINT",
            endpoint.as_str(),
            "AZURE_STORAGE_KEY",
            "AZURE_FEDERATED_TOKEN_FILE",
            "managed identity",
        ] {
            assert!(message.contains(fragment), "`{fragment}` in {message}");
        }
        assert!(!message.contains('\n'), "{message}");
    }

    #[test]
    fn refuses_malformed_credentials() {
        let bad_key = |name: &str| (name == "AZURE_STORAGE_KEY").then(|| "not base64!".to_string());
        let error =
            AzureStore::from_location_with_env(&location("az://acct/c"), &bad_key).unwrap_err();
        assert!(matches!(error, StoreError::Credentials { .. }));
        assert!(!error.to_string().contains("not base64!"));
    }

    #[test]
    fn tells_version_ids_from_etags() {
        assert_eq!(
            Version::parse("2026-11-22T03:51:14.1234567Z"),
            Version::Id("2026-11-22T03:51:14.1234567Z")
        );
        assert_eq!(
            Version::parse("\"0x8DC5A1B2C3D4E5F\""),
            Version::ETag("\"0x8DC5A1B2C3D4E5F\"")
        );
        assert_eq!(
            Version::parse("0x8DC5A1B2C3D4E5F"),
            Version::ETag("0x8DC5A1B2C3D4E5F")
        );
    }
}
