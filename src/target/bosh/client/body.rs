//! The Director's and UAA's answers read whole, at most [`RESPONSE_LIMIT`] bytes of body: a
//! larger one is refused as it arrives, so a hostile or broken endpoint cannot exhaust the
//! jumpbox's memory.

use reqwest::StatusCode;

use super::super::retry::{transient_error, Transient};
use super::super::BoshError;
use super::{unreachable, RESPONSE_LIMIT};

/// A whole answer: read inside the retry loop, so that a connection lost mid-body is retried
/// like one lost before the headers.
pub(super) struct Fetched {
    pub(super) status: StatusCode,
    /// `Location` (a task redirect).
    pub(super) location: Option<String>,
    pub(super) body: bytes::Bytes,
    /// How the retries ended, for messages (empty when the first attempt answered).
    pub(super) retries: String,
}

impl Fetched {
    /// Sends the request and reads the answer, at most [`RESPONSE_LIMIT`] bytes of body.
    pub(super) async fn read(request: reqwest::RequestBuilder) -> Result<Fetched, ReadFailure> {
        let response = request.send().await.map_err(ReadFailure::Http)?;
        let status = response.status();
        let location = response
            .headers()
            .get("location")
            .and_then(|l| l.to_str().ok())
            .map(str::to_string);
        let body = read_body(response, RESPONSE_LIMIT).await?;
        Ok(Fetched {
            status,
            location,
            body,
            retries: String::new(),
        })
    }
}

/// Why an answer could not be read.
#[derive(Debug)]
pub(super) enum ReadFailure {
    /// The connection, TLS or HTTP failed.
    Http(reqwest::Error),
    /// The body is larger than the limit (in bytes); the rest was not read.
    TooLarge(u64),
}

impl ReadFailure {
    /// Why a retry might help, when it might.
    pub(super) fn transient(&self) -> Option<Transient> {
        match self {
            ReadFailure::Http(error) => transient_error(error),
            ReadFailure::TooLarge(_) => None,
        }
    }

    /// The error of `request` (`METHOD URL`) to `url`.
    pub(super) fn into_error(self, request: &str, url: &str) -> BoshError {
        match self {
            ReadFailure::Http(error) => unreachable(url, &error),
            ReadFailure::TooLarge(limit) => BoshError::ResponseTooLarge {
                request: request.to_string(),
                limit,
            },
        }
    }
}

/// Reads a body of at most `limit` bytes: a larger announced length is refused before any of
/// it is read, a longer body as soon as it passes the limit.
async fn read_body(
    mut response: reqwest::Response,
    limit: u64,
) -> Result<bytes::Bytes, ReadFailure> {
    if response
        .content_length()
        .is_some_and(|length| length > limit)
    {
        return Err(ReadFailure::TooLarge(limit));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(ReadFailure::Http)? {
        if (body.len() as u64).saturating_add(chunk.len() as u64) > limit {
            return Err(ReadFailure::TooLarge(limit));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(bytes::Bytes::from(body))
}
