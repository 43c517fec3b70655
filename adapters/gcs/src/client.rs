//! The HTTP side: one `reqwest` client, the bucket's URLs, credentials and status checks.

use std::fmt;
use std::time::Duration;

use google_cloud_auth::credentials::{CacheableResource, Credentials};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use reqwest::{RequestBuilder, Response, StatusCode};
use serde::de::DeserializeOwned;
use url::Url;

use cairn_store::StoreError;

use crate::error::{protocol_error, status_error, transport_error, Missing};
use crate::retry::{Attempts, ATTEMPTS};

/// Google's endpoint, used when the location names none.
pub(crate) const DEFAULT_ENDPOINT: &str = "https://storage.googleapis.com";

/// Everything but RFC 3986 unreserved characters is escaped in a path segment, `/` included:
/// an object name is a single segment of the JSON API's URLs.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Connecting gives up after this long (then the request is retried).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A request that receives nothing for this long fails (then it is retried). There is no
/// overall timeout: an 8 MiB chunk or a large download may take long on a slow link.
const READ_TIMEOUT: Duration = Duration::from_mins(2);
/// How much of an error body is read to explain it.
const MAX_ERROR_BODY: usize = 16 * 1024;

/// Talks to one bucket.
pub(crate) struct Client {
    http: reqwest::Client,
    endpoint: Url,
    /// True when the location named the endpoint (an emulator or a private endpoint).
    explicit_endpoint: bool,
    credentials: Option<Credentials>,
    /// Where the credentials come from, for the error when no token can be had.
    credential_source: String,
    bucket: String,
    /// How errors name the store: `gs://bucket/prefix`.
    store: String,
}

impl fmt::Debug for Client {
    // By hand: credentials are summarised, never printed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("endpoint", &self.endpoint.as_str())
            .field("bucket", &self.bucket)
            .field("authenticated", &self.credentials.is_some())
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A client of `bucket` at `endpoint` (Google's when `None`).
    pub(crate) fn new(
        bucket: &str,
        endpoint: Option<&str>,
        credentials: Option<Credentials>,
        store: String,
    ) -> Result<Client, StoreError> {
        let explicit_endpoint = endpoint.is_some();
        let text = endpoint.unwrap_or(DEFAULT_ENDPOINT);
        let endpoint = Url::parse(text)
            .ok()
            .filter(|url| matches!(url.scheme(), "http" | "https") && url.has_host())
            .ok_or_else(|| StoreError::Configuration {
                store: store.clone(),
                detail: format!("Endpoint `{text}` is not an http:// or https:// URL"),
            })?;
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(READ_TIMEOUT)
            // GCS answers an unfinished upload chunk with 308 and no Location: never follow it.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| transport_error(&store, &e))?;
        Ok(Client {
            http,
            endpoint,
            explicit_endpoint,
            credentials,
            credential_source: "the credentials".to_string(),
            bucket: bucket.to_string(),
            store,
        })
    }

    /// Names the credentials' source (`the metadata server at HOST`, `the key file PATH`) in
    /// the error when no token can be had.
    #[must_use]
    pub(crate) fn with_credential_source(mut self, source: String) -> Client {
        self.credential_source = source;
        self
    }

    pub(crate) fn store(&self) -> &str {
        &self.store
    }

    pub(crate) fn bucket(&self) -> &str {
        &self.bucket
    }

    pub(crate) fn http(&self) -> &reqwest::Client {
        &self.http
    }

    fn base(&self) -> &str {
        self.endpoint.as_str().trim_end_matches('/')
    }

    /// `…/storage/v1/b/BUCKET`
    pub(crate) fn bucket_url(&self) -> String {
        format!("{}/storage/v1/b/{}", self.base(), encode(&self.bucket))
    }

    /// `…/storage/v1/b/BUCKET/o`
    pub(crate) fn objects_url(&self) -> String {
        format!("{}/o", self.bucket_url())
    }

    /// `…/storage/v1/b/BUCKET/o/NAME`, the name percent-encoded as one segment.
    pub(crate) fn object_url(&self, name: &str) -> String {
        format!("{}/{}", self.objects_url(), encode(name))
    }

    /// `…/upload/storage/v1/b/BUCKET/o`
    pub(crate) fn upload_url(&self) -> String {
        format!(
            "{}/upload/storage/v1/b/{}/o",
            self.base(),
            encode(&self.bucket)
        )
    }

    /// The URL to send an upload's chunks to, from the `Location` of its start.
    ///
    /// GCS hands out session URIs on its own host. An emulator builds them from its
    /// `-external-url`, which may name another host or port than the one Cairn reaches it by
    /// (a container's address, `0.0.0.0`). With an explicit endpoint the session's path and
    /// query are therefore kept and its origin replaced by the endpoint's; with Google's
    /// endpoint the URI is used as given.
    pub(crate) fn session_url(&self, location: &str) -> Result<Url, StoreError> {
        let session = self
            .endpoint
            .join(location)
            .map_err(|_| protocol_error(&self.store, "the upload session URI is not a URL"))?;
        if !self.explicit_endpoint || self.same_origin(&session) {
            return Ok(session);
        }
        let mut rebased = self.endpoint.clone();
        rebased.set_path(session.path());
        rebased.set_query(session.query());
        Ok(rebased)
    }

    /// True when `url` is on the endpoint's scheme, host and port.
    pub(crate) fn same_origin(&self, url: &Url) -> bool {
        url.origin() == self.endpoint.origin()
    }

    /// Adds the credentials' headers (none for an emulator) and sends the request.
    ///
    /// Only transport failures are errors here; the status is left to the caller.
    pub(crate) async fn execute(
        &self,
        request: RequestBuilder,
        authorize: bool,
    ) -> Result<Response, StoreError> {
        let request = match (&self.credentials, authorize) {
            (Some(credentials), true) => request.headers(self.auth_headers(credentials).await?),
            _ => request,
        };
        request
            .send()
            .await
            .map_err(|e| transport_error(&self.store, &e))
    }

    async fn auth_headers(&self, credentials: &Credentials) -> Result<http::HeaderMap, StoreError> {
        match credentials.headers(http::Extensions::new()).await {
            Ok(CacheableResource::New { data, .. }) => Ok(data),
            Ok(CacheableResource::NotModified) => Err(protocol_error(
                &self.store,
                "the credentials returned no headers",
            )),
            // google-cloud-auth has already retried what was worth retrying; what is left,
            // even "metadata server unreachable", means no usable credentials here. It renews
            // tokens during the run, so this may come hours after the first token worked.
            Err(error) => Err(crate::credentials::token_error(
                &self.store,
                &self.credential_source,
                &error,
            )),
        }
    }

    /// Sends an authorised request and turns any unsuccessful status into an error; a
    /// transient failure is retried ([`crate::retry`]).
    pub(crate) async fn send(
        &self,
        request: RequestBuilder,
        missing: Missing<'_>,
    ) -> Result<Response, StoreError> {
        self.retrying(request, |request| async move {
            let response = self.execute(request, true).await?;
            self.check(response, missing).await
        })
        .await
    }

    /// Runs `attempt` on copies of `request` until it succeeds, fails in a way that is not
    /// transient, or the retry policy is used up. A request whose body cannot be copied (a
    /// stream) is sent once.
    async fn retrying<T, F, Fut>(
        &self,
        request: RequestBuilder,
        attempt: F,
    ) -> Result<T, StoreError>
    where
        F: Fn(RequestBuilder) -> Fut,
        Fut: std::future::Future<Output = Result<T, StoreError>>,
    {
        let mut attempts = Attempts::start();
        loop {
            let Some(copy) = request.try_clone() else {
                return attempt(request).await;
            };
            match attempt(copy).await {
                Err(error) if error.is_retryable() => {
                    let Some(pause) = attempts.next_pause() else {
                        return Err(error);
                    };
                    tracing::debug!(
                        "{}: {error}; attempt {} of {ATTEMPTS} in {pause:?}",
                        self.store,
                        attempts.made()
                    );
                    tokio::time::sleep(pause).await;
                }
                result => return result,
            }
        }
    }

    /// `response` when its status is a success, else the error it describes.
    pub(crate) async fn check(
        &self,
        response: Response,
        missing: Missing<'_>,
    ) -> Result<Response, StoreError> {
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        Err(self.failure(status, response, missing).await)
    }

    /// The error for an unsuccessful `response`, explained by (the start of) its body.
    pub(crate) async fn failure(
        &self,
        status: StatusCode,
        response: Response,
        missing: Missing<'_>,
    ) -> StoreError {
        let body = response.bytes().await.unwrap_or_default();
        let body = String::from_utf8_lossy(&body[..body.len().min(MAX_ERROR_BODY)]);
        status_error(&self.store, status, &body, missing)
    }

    /// Sends an authorised request and reads the whole body it answers, with the status; a
    /// body cut mid-way is retried like a failed request (small bodies only: ranged reads).
    pub(crate) async fn bytes(
        &self,
        request: RequestBuilder,
        missing: Missing<'_>,
    ) -> Result<(StatusCode, bytes::Bytes), StoreError> {
        self.retrying(request, |request| async move {
            let response = self
                .check(self.execute(request, true).await?, missing)
                .await?;
            let status = response.status();
            let body = response
                .bytes()
                .await
                .map_err(|e| transport_error(&self.store, &e))?;
            Ok((status, body))
        })
        .await
    }

    /// Sends an authorised request and parses the JSON it answers.
    pub(crate) async fn json<T: DeserializeOwned>(
        &self,
        request: RequestBuilder,
        missing: Missing<'_>,
    ) -> Result<T, StoreError> {
        self.retrying(request, |request| async move {
            let response = self.execute(request, true).await?;
            self.check(response, missing)
                .await?
                .json()
                .await
                .map_err(|e| transport_error(&self.store, &e))
        })
        .await
    }
}

/// Percent-encodes `text` as one URL path segment.
pub(crate) fn encode(text: &str) -> String {
    utf8_percent_encode(text, SEGMENT).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(endpoint: Option<&str>) -> Client {
        Client::new("bucket", endpoint, None, "gs://bucket".into()).unwrap()
    }

    #[test]
    fn object_names_are_one_encoded_segment() {
        let client = client(Some("http://127.0.0.1:4443/"));
        assert_eq!(
            client.object_url("a/b c+d%é?#"),
            "http://127.0.0.1:4443/storage/v1/b/bucket/o/a%2Fb%20c%2Bd%25%C3%A9%3F%23"
        );
        assert_eq!(
            client.upload_url(),
            "http://127.0.0.1:4443/upload/storage/v1/b/bucket/o"
        );
    }

    #[test]
    fn session_urls_are_rebased_onto_an_explicit_endpoint() {
        let client = client(Some("http://127.0.0.1:4443"));
        let elsewhere =
            "http://0.0.0.0:9999/upload/storage/v1/b/bucket/o?uploadType=resumable&upload_id=x";
        assert_eq!(
            client.session_url(elsewhere).unwrap().as_str(),
            "http://127.0.0.1:4443/upload/storage/v1/b/bucket/o?uploadType=resumable&upload_id=x"
        );
        let same = "http://127.0.0.1:4443/upload/x?upload_id=y";
        assert_eq!(client.session_url(same).unwrap().as_str(), same);
        let relative = "/upload/x?upload_id=y";
        assert_eq!(
            client.session_url(relative).unwrap().as_str(),
            "http://127.0.0.1:4443/upload/x?upload_id=y"
        );
    }

    #[test]
    fn session_urls_from_google_are_kept() {
        let client = client(None);
        let other = "https://uploads.example.com/upload/x?upload_id=y";
        let session = client.session_url(other).unwrap();
        assert_eq!(session.as_str(), other);
        assert!(!client.same_origin(&session));
    }

    #[test]
    fn endpoints_must_be_http_urls() {
        let error = Client::new("b", Some("ftp://x"), None, "gs://b".into()).unwrap_err();
        assert!(matches!(error, StoreError::Configuration { .. }));
        assert!(Client::new("b", Some("not a url"), None, "gs://b".into()).is_err());
    }
}
