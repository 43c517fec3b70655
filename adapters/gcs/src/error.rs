//! How GCS answers become [`StoreError`]s.
//!
//! Every message is one line, made from the status and the `error.message` GCS puts in its JSON
//! body. URLs are left out on purpose: a resumable-upload session URI is itself a credential,
//! and a bearer token never leaves the request headers.

use reqwest::StatusCode;
use serde::Deserialize;

use cairn_store::StoreError;

/// What to do when credentials are missing or refused.
pub(crate) const CREDENTIALS_HINT: &str = "set GOOGLE_APPLICATION_CREDENTIALS to a \
    service-account key file allowed to use the bucket, or run `gcloud auth application-default login`";

/// The longest part of a server message kept in an error.
const MAX_DETAIL: usize = 300;

/// What a 404 means for the request that received it.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Missing<'a> {
    /// The object (or generation) named by this key is absent.
    Object(&'a str),
    /// The request only names the bucket, so the bucket is absent.
    Bucket(&'a str),
}

/// The error for an unsuccessful HTTP status.
pub(crate) fn status_error(
    store: &str,
    status: StatusCode,
    body: &str,
    missing: Missing<'_>,
) -> StoreError {
    let store = store.to_string();
    let detail = format!("HTTP {}: {}", status.as_u16(), server_message(body));
    match status.as_u16() {
        404 => match missing {
            Missing::Object(key) => StoreError::NotFound {
                store,
                key: key.to_string(),
            },
            Missing::Bucket(bucket) => StoreError::Configuration {
                store,
                detail: format!(
                    "Bucket `{bucket}` does not exist; create it, with versioning: \
                     `gcloud storage buckets create gs://{bucket}` then \
                     `gcloud storage buckets update gs://{bucket} --versioning`"
                ),
            },
        },
        401 | 403 => StoreError::Credentials {
            store,
            detail,
            hint: CREDENTIALS_HINT.to_string(),
        },
        408 | 429 | 500..=599 => StoreError::Transient { store, detail },
        _ => StoreError::Other { store, detail },
    }
}

/// The error for a request that got no (complete) answer.
pub(crate) fn transport_error(store: &str, error: &reqwest::Error) -> StoreError {
    let store = store.to_string();
    let detail = one_line_chain(error);
    // reqwest reports a body cut short as a decode error too: only a body that arrived
    // whole and does not parse is not worth another try.
    if error.is_builder() || (error.is_decode() && !cut_short(error)) {
        StoreError::Other { store, detail }
    } else {
        StoreError::Transient { store, detail }
    }
}

/// True when the error's causes show a lost connection or an unfinished body.
fn cut_short(error: &reqwest::Error) -> bool {
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        if cause.is::<std::io::Error>()
            || cause
                .downcast_ref::<reqwest::Error>()
                .is_some_and(reqwest::Error::is_body)
        {
            return true;
        }
        source = cause.source();
    }
    false
}

/// The error for credentials that could not be found or turned into a token.
pub(crate) fn credentials_error(store: &str, detail: &impl std::fmt::Display) -> StoreError {
    StoreError::Credentials {
        store: store.to_string(),
        detail: single_line(&detail.to_string()),
        hint: CREDENTIALS_HINT.to_string(),
    }
}

/// The error for an answer Cairn cannot make sense of.
pub(crate) fn protocol_error(store: &str, detail: &str) -> StoreError {
    StoreError::Other {
        store: store.to_string(),
        detail: single_line(detail),
    }
}

/// `error.message` of a GCS JSON error body, else the body itself, shortened to one line.
fn server_message(body: &str) -> String {
    #[derive(Deserialize)]
    struct Envelope {
        error: Inner,
    }
    #[derive(Deserialize)]
    struct Inner {
        message: String,
    }
    let message = serde_json::from_str::<Envelope>(body)
        .map_or_else(|_| body.to_string(), |envelope| envelope.error.message);
    let message = single_line(&message);
    if message.is_empty() {
        "no message".to_string()
    } else {
        message
    }
}

/// A reqwest error and its causes, without the URL, joined with `: `.
fn one_line_chain(error: &reqwest::Error) -> String {
    let mut parts = Vec::new();
    let mut source: Option<&dyn std::error::Error> = Some(error);
    while let Some(current) = source {
        let text = current.to_string();
        if !parts.iter().any(|part: &String| part.contains(&text)) {
            parts.push(text);
        }
        source = current.source();
    }
    single_line(&parts.join(": "))
}

fn single_line(text: &str) -> String {
    let joined = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match joined.char_indices().nth(MAX_DETAIL) {
        Some((end, _)) => format!("{}...", &joined[..end]),
        None => joined,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn classify(status: u16, missing: Missing<'_>) -> StoreError {
        status_error(
            "gs://b/p",
            StatusCode::from_u16(status).unwrap(),
            r#"{"error":{"code":1,"message":"why\nit failed"}}"#,
            missing,
        )
    }

    #[test]
    fn statuses_map_to_kinds() {
        let object = Missing::Object("k");
        assert!(matches!(classify(404, object), StoreError::NotFound { key, .. } if key == "k"));
        assert!(matches!(
            classify(404, Missing::Bucket("b")),
            StoreError::Configuration { .. }
        ));
        for status in [401, 403] {
            assert!(matches!(
                classify(status, object),
                StoreError::Credentials { .. }
            ));
        }
        for status in [408, 429, 500, 502, 503, 504] {
            assert!(classify(status, object).is_retryable(), "{status}");
        }
        for status in [400, 409, 412] {
            assert!(matches!(classify(status, object), StoreError::Other { .. }));
        }
    }

    #[test]
    fn messages_are_one_line_and_short() {
        let error = classify(400, Missing::Object("k"));
        assert_eq!(error.to_string(), "gs://b/p: HTTP 400: why it failed");
        let long = status_error(
            "gs://b",
            StatusCode::BAD_REQUEST,
            &"x".repeat(5000),
            Missing::Object("k"),
        );
        assert!(long.to_string().len() < 400);
        let empty = status_error("gs://b", StatusCode::CONFLICT, "", Missing::Object("k"));
        assert_eq!(empty.to_string(), "gs://b: HTTP 409: no message");
    }

    #[test]
    fn credential_errors_name_the_variable() {
        let error = classify(401, Missing::Object("k"));
        assert!(error.to_string().contains("GOOGLE_APPLICATION_CREDENTIALS"));
    }
}
