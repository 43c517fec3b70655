//! From object_store's errors to [`StoreError`].
//!
//! object_store classifies 404, 412, 401 and 403 itself for reads and writes, but hands back
//! listing and deleting failures, 5xx responses (after its own retries) and transport failures
//! as `Generic`, with the HTTP status only in the message text: its `RetryError` is private. So
//! [`classify`] first looks at the variant, then walks the error's sources for an
//! [`HttpError`] (connect, timeout, reset: retryable), and last reads the status and Azure's
//! error `<Code>` out of the text that object_store renders as
//! `Server returned non-2xx status code: 503 Service Unavailable: <?xml ...<Code>...`. The unit
//! tests pin that format, so an object_store upgrade that changes it fails here first.
//!
//! Messages are ours and one line: a status, Azure's error code and the first line of its
//! message. Never the response body as a whole (Azure's `AuthenticationErrorDetail` quotes the
//! string it signed), never a URL query (a SAS token travels there).

use object_store::client::{HttpError, HttpErrorKind};

/// What a failure means to Cairn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Failure {
    /// The blob (or the version asked for) is not there.
    NotFound,
    /// An `If-Match` precondition failed: the blob is no longer that version.
    VersionGone,
    /// The container does not exist.
    ContainerMissing,
    /// The credential was refused.
    Credentials(String),
    /// An immutability policy protects the blob (`BlobImmutableDueToPolicy`).
    Protected(String),
    /// Worth retrying.
    Transient(String),
    /// Anything else.
    Other(String),
}

/// Classifies an object_store error.
pub(crate) fn classify(error: &object_store::Error) -> Failure {
    let text = error.to_string();
    let response = Response::parse(&text);
    if response.code.as_deref() == Some("ContainerNotFound") {
        return Failure::ContainerMissing;
    }
    if response.code.as_deref() == Some("BlobImmutableDueToPolicy") {
        return Failure::Protected(response.describe());
    }
    match error {
        object_store::Error::NotFound { .. } => return Failure::NotFound,
        object_store::Error::Precondition { .. } => return Failure::VersionGone,
        object_store::Error::Unauthenticated { .. }
        | object_store::Error::PermissionDenied { .. } => {
            return Failure::Credentials(response.describe());
        }
        _ => {}
    }
    // object_store's "Generic MicrosoftAzure error: " prefix says nothing to an operator.
    let plain = match error {
        object_store::Error::Generic { source, .. } => one_line(&source.to_string()),
        other => one_line(&other.to_string()),
    };
    if let Some(kind) = http_error_kind(error) {
        let what = match kind {
            HttpErrorKind::Connect => "cannot connect",
            HttpErrorKind::Request => "the connection failed during the request",
            HttpErrorKind::Timeout => "the request timed out",
            HttpErrorKind::Interrupted => "the connection was interrupted",
            _ => return Failure::Other(plain),
        };
        return Failure::Transient(what.to_string());
    }
    match response.status {
        Some(404) => Failure::NotFound,
        Some(412) => Failure::VersionGone,
        Some(401 | 403) => Failure::Credentials(response.describe()),
        Some(408 | 429 | 500..=599) => Failure::Transient(response.describe()),
        Some(_) => Failure::Other(response.describe()),
        None => Failure::Other(plain),
    }
}

/// True when a request failed because its token could not be fetched: object_store's Azure
/// credential errors (private to it) say so in their text, whatever the endpoint answered.
pub(crate) fn is_token_failure(error: &object_store::Error) -> bool {
    let text = error.to_string();
    [
        "Error performing token request",
        "Error getting token response body",
        "Error reading federated token file",
    ]
    .iter()
    .any(|marker| text.contains(marker))
}

/// The [`HttpErrorKind`] of the first [`HttpError`] among the error's sources.
fn http_error_kind(error: &object_store::Error) -> Option<HttpErrorKind> {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(error) = current {
        if let Some(http) = error.downcast_ref::<HttpError>() {
            return Some(http.kind());
        }
        current = error.source();
    }
    None
}

/// The parts of an HTTP error response found in object_store's message.
#[derive(Debug, Default, PartialEq, Eq)]
struct Response {
    status: Option<u16>,
    code: Option<String>,
    message: Option<String>,
}

impl Response {
    fn parse(text: &str) -> Response {
        let status = text
            .split_once("status code: ")
            .and_then(|(_, rest)| rest.get(..3))
            .and_then(|digits| digits.parse().ok());
        let between = |open: &str, close: &str| {
            let start = text.find(open)? + open.len();
            let end = text[start..].find(close)? + start;
            Some(text[start..end].trim().to_string())
        };
        let message = between("<Message>", "</Message>")
            .and_then(|m| {
                m.lines()
                    .next()
                    .map(|line| line.trim_end_matches('.').to_string())
            })
            .filter(|m| !m.is_empty());
        Response {
            status,
            code: between("<Code>", "</Code>").filter(|c| !c.is_empty()),
            message,
        }
    }

    /// `HTTP 403 AuthenticationFailed: Server failed to authenticate the request...`
    fn describe(&self) -> String {
        let mut text = match self.status {
            Some(status) => format!("HTTP {status}"),
            None => "the request was refused".to_string(),
        };
        if let Some(code) = &self.code {
            text.push(' ');
            text.push_str(code);
        }
        if let Some(message) = &self.message {
            text.push_str(": ");
            text.push_str(message);
        }
        one_line(&text)
    }
}

/// Newlines folded and length capped, so every message stays one readable line.
pub(crate) fn one_line(text: &str) -> String {
    const LIMIT: usize = 300;
    let folded = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if folded.chars().count() <= LIMIT {
        folded
    } else {
        let cut: String = folded.chars().take(LIMIT).collect();
        format!("{cut}...")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn generic(text: &str) -> object_store::Error {
        object_store::Error::Generic {
            store: "MicrosoftAzure",
            source: text.to_string().into(),
        }
    }

    // The shape object_store 0.14 renders for a failed list request.
    const CONTAINER_MISSING: &str = "Error performing list request: Error performing GET \
        http://127.0.0.1:1/devstoreaccount1/backups?restype=container&comp=list in 2ms - Server \
        returned non-2xx status code: 404 Not Found: <?xml version=\"1.0\" encoding=\"utf-8\"?>\
        <Error><Code>ContainerNotFound</Code><Message>The specified container does not exist.\n\
        RequestId:1\nTime:2026-11-22T03:51:14.000Z</Message></Error>";

    #[test]
    fn reads_status_and_code_from_the_message() {
        assert_eq!(
            classify(&generic(CONTAINER_MISSING)),
            Failure::ContainerMissing
        );
        let busy = "Error performing GET http://h/c in 3s, after 4 retries - Server returned \
            non-2xx status code: 503 Service Unavailable: <Error><Code>ServerBusy</Code>\
            <Message>Ingress is over the account limit.\nRequestId:2</Message></Error>";
        assert_eq!(
            classify(&generic(busy)),
            Failure::Transient("HTTP 503 ServerBusy: Ingress is over the account limit".into())
        );
        let refused = "Server returned non-2xx status code: 403 Forbidden: <Error>\
            <Code>AuthenticationFailed</Code><Message>Server failed to authenticate the request.\n\
            </Message><AuthenticationErrorDetail>string to sign</AuthenticationErrorDetail></Error>";
        let Failure::Credentials(detail) = classify(&generic(refused)) else {
            panic!("403 is a credentials failure")
        };
        assert_eq!(
            detail,
            "HTTP 403 AuthenticationFailed: Server failed to authenticate the request"
        );
        assert_eq!(
            classify(&generic(
                "Server returned non-2xx status code: 409 Conflict: "
            )),
            Failure::Other("HTTP 409".into())
        );
        let immutable = "Server returned non-2xx status code: 409 Conflict: <Error>\
            <Code>BlobImmutableDueToPolicy</Code><Message>This operation is not permitted as the \
            blob is immutable due to a policy.\n</Message></Error>";
        assert_eq!(
            classify(&generic(immutable)),
            Failure::Protected(
                "HTTP 409 BlobImmutableDueToPolicy: This operation is not permitted as the blob is immutable due to a policy"
                    .into()
            )
        );
    }

    #[test]
    fn failed_token_fetches_are_told_from_failed_requests() {
        let token = "Error performing token request: Error performing GET \
            http://127.0.0.1:1/metadata/identity/oauth2/token in 1s, after 5 retries - Server \
            returned non-2xx status code: 500 Internal Server Error: ";
        assert!(is_token_failure(&generic(token)));
        assert!(is_token_failure(&generic(
            "Error reading federated token file "
        )));
        let busy = "Error performing PUT http://h/c/b in 3s - Server returned non-2xx status \
            code: 500 Internal Server Error: ";
        assert!(!is_token_failure(&generic(busy)));
    }

    #[test]
    fn transport_failures_are_transient() {
        let error = object_store::Error::Generic {
            store: "MicrosoftAzure",
            source: Box::new(HttpError::new(
                HttpErrorKind::Connect,
                std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
            )),
        };
        assert_eq!(
            classify(&error),
            Failure::Transient("cannot connect".into())
        );
    }

    #[test]
    fn typed_variants_win() {
        let not_found = object_store::Error::NotFound {
            path: "p".into(),
            source: "Server returned non-2xx status code: 404 Not Found: ".into(),
        };
        assert_eq!(classify(&not_found), Failure::NotFound);
        let precondition = object_store::Error::Precondition {
            path: "p".into(),
            source: "x".into(),
        };
        assert_eq!(classify(&precondition), Failure::VersionGone);
        assert_eq!(
            classify(&generic("something odd\nhappened")),
            Failure::Other("something odd happened".into())
        );
    }

    #[test]
    fn one_line_caps_length() {
        let long = "x".repeat(1000);
        assert_eq!(one_line(&long).chars().count(), 303);
    }
}
