//! Downloads that survive a connection lost mid-body: the stream asks again for the bytes it
//! has not yet delivered (`Range: bytes=N-`) of the same generation, so a resumed download can
//! never splice two versions of an object. Without a known generation (GCS names it in
//! `x-goog-generation`) a cut download fails instead. Resumes follow the retry policy.

use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt};
use reqwest::header::RANGE;
use reqwest::{RequestBuilder, Response, StatusCode};

use cairn_store::{ByteStream, StoreError};

use crate::client::Client;
use crate::error::{protocol_error, transport_error, Missing};
use crate::retry::{Attempts, ATTEMPTS};
use std::sync::Arc;

/// A download in progress.
struct Download {
    client: Arc<Client>,
    /// The object's media request without a range, pinned to `generation` when known.
    request: RequestBuilder,
    generation: Option<String>,
    key: String,
    /// Bytes delivered so far.
    delivered: u64,
    body: BoxStream<'static, Result<Bytes, reqwest::Error>>,
    attempts: Attempts,
}

/// The bytes of `response` (the answer to `request`, a media `GET`), resumed after a cut.
pub(crate) fn resuming(
    client: Arc<Client>,
    request: RequestBuilder,
    version: Option<&str>,
    key: &str,
    response: Response,
) -> ByteStream {
    let generation = version.map(str::to_string).or_else(|| {
        response
            .headers()
            .get("x-goog-generation")
            .and_then(|value| value.to_str().ok())
            .map(str::to_string)
    });
    let download = Download {
        client,
        request,
        generation,
        key: key.to_string(),
        delivered: 0,
        body: response.bytes_stream().boxed(),
        attempts: Attempts::start(),
    };
    futures::stream::unfold(Some(download), |state| async move {
        let mut download = state?;
        loop {
            match download.body.next().await {
                None => return None,
                Some(Ok(chunk)) => {
                    download.delivered += chunk.len() as u64;
                    return Some((Ok(chunk), Some(download)));
                }
                Some(Err(error)) => {
                    let error = transport_error(download.client.store(), &error);
                    match download.resume(error).await {
                        Ok(()) => {}
                        Err(error) => return Some((Err(error), None)),
                    }
                }
            }
        }
    })
    .boxed()
}

impl Download {
    /// After `error` cut the body: asks for the rest, or returns why it cannot.
    async fn resume(&mut self, error: StoreError) -> Result<(), StoreError> {
        let (Some(generation), true) = (&self.generation, error.is_retryable()) else {
            return Err(error);
        };
        loop {
            let Some(pause) = self.attempts.next_pause() else {
                return Err(error);
            };
            tracing::debug!(
                "{}: download of `{}` cut at byte {} ({error}); resuming, attempt {} of {ATTEMPTS} in {pause:?}",
                self.client.store(),
                self.key,
                self.delivered,
                self.attempts.made()
            );
            tokio::time::sleep(pause).await;
            let Some(request) = self.request.try_clone() else {
                return Err(error);
            };
            let request = request
                .query(&[("generation", generation.as_str())])
                .header(RANGE, format!("bytes={}-", self.delivered));
            let response = match self.client.execute(request, true).await {
                Ok(response) => response,
                Err(again) if again.is_retryable() => continue,
                Err(other) => return Err(other),
            };
            let status = response.status();
            if status != StatusCode::PARTIAL_CONTENT {
                let failure = self
                    .client
                    .failure(status, response, Missing::Object(&self.key))
                    .await;
                if failure.is_retryable() {
                    continue;
                }
                return Err(if status.is_success() {
                    protocol_error(
                        self.client.store(),
                        &format!(
                            "a resumed download of `{}` answered {status}, not 206",
                            self.key
                        ),
                    )
                } else {
                    failure
                });
            }
            self.body = response.bytes_stream().boxed();
            return Ok(());
        }
    }
}
