//! Streaming puts as GCS resumable uploads.
//!
//! A `POST …/upload/…?uploadType=resumable` opens a session and answers with its URI in
//! `Location`; bytes are then `PUT` there in order, each request saying where its bytes go
//! with `Content-Range: bytes FIRST-LAST/*`. Every chunk but the last must be a multiple of
//! 256 KiB, so chunks are 8 MiB; the last names the total size, and its answer is the finished
//! object with its generation. Nothing is visible before that, and a `DELETE` of the session
//! URI cancels it. The session URI alone authorises the upload, so it never appears in errors.
//!
//! Chunks must arrive in order, so at most one is in flight while the next one fills: memory
//! is bounded by two chunks. GCS may keep only part of a chunk (it says how much in `Range`);
//! the rest is sent again. After a temporary failure the session is asked how much it holds
//! and the upload resumes from there, a few times, before the error is returned.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use reqwest::header::{CONTENT_RANGE, LOCATION, RANGE};
use reqwest::{Response, StatusCode};
use tokio::task::JoinHandle;
use url::Url;

use cairn_store::{PutResult, StoreError, Upload};

use crate::client::Client;
use crate::error::{protocol_error, Missing};
use crate::resources::{ObjectResource, UploadMetadata};

/// Bytes per chunk: a multiple of 256 KiB, as GCS requires of all chunks but the last.
pub(crate) const CHUNK_SIZE: usize = 8 * 1024 * 1024;
/// Temporary failures or rounds without progress tolerated per chunk: as many as the retries
/// of any other request ([`crate::retry`]).
const MAX_SETBACKS: u32 = crate::retry::ATTEMPTS - 1;
/// Status of an unfinished resumable upload (GCS says "Resume Incomplete").
const RESUME_INCOMPLETE: u16 = 308;

/// Where a session stands after a request.
#[derive(Debug)]
enum Progress {
    /// The session holds this many bytes and waits for more.
    Incomplete(u64),
    /// The object exists.
    Finished(ObjectResource),
    /// The session is gone: cancelled, expired, or (with some servers) finished.
    Gone,
}

/// One resumable-upload session.
struct Session {
    client: Arc<Client>,
    url: Url,
    /// Credentials go only to the endpoint's own origin.
    authorize: bool,
    /// The object's name in the bucket.
    name: String,
    key: String,
}

impl std::fmt::Debug for Session {
    // By hand: the session URI authorises the upload, so it is left out.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("store", &self.client.store())
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl Session {
    /// Opens a session for the object `name` (`key` relative to the prefix, for errors).
    async fn open(
        client: Arc<Client>,
        name: &str,
        key: &str,
        metadata: &UploadMetadata,
    ) -> Result<Session, StoreError> {
        let request = client
            .http()
            .post(client.upload_url())
            .query(&[("uploadType", "resumable"), ("name", name)])
            .json(metadata);
        let response = client
            .send(request, Missing::Bucket(client.bucket()))
            .await?;
        let location = response
            .headers()
            .get(LOCATION)
            .and_then(|value| value.to_str().ok())
            .ok_or_else(|| {
                protocol_error(client.store(), "upload started without a session URI")
            })?;
        let url = client.session_url(location)?;
        Ok(Session {
            authorize: client.same_origin(&url),
            client,
            url,
            name: name.to_string(),
            key: key.to_string(),
        })
    }

    /// Sends `chunk`, which starts at byte `offset` of the object, until the session holds
    /// all of it; `total` is the object's size when this is the last chunk.
    async fn upload(
        &self,
        chunk: Bytes,
        offset: u64,
        total: Option<u64>,
    ) -> Result<Option<ObjectResource>, StoreError> {
        let end = offset + chunk.len() as u64;
        let mut persisted = offset;
        let mut ask_status = false;
        let mut setbacks = 0;
        loop {
            let attempt = if ask_status {
                self.send(persisted, Bytes::new(), None).await
            } else {
                self.send(persisted, tail(&chunk, persisted - offset), total)
                    .await
            };
            match attempt {
                // Only the last chunk may finish the object, and only with all its bytes: a
                // server that finishes it on a status query (fake-gcs-server does) would
                // otherwise leave a truncated object behind a successful upload.
                Ok(Progress::Finished(object)) => {
                    let size = object.size().ok();
                    if total.is_none() || size != total {
                        return Err(self.finished_early(size, total));
                    }
                    return Ok(Some(object));
                }
                Ok(Progress::Gone) => {
                    // The answer to the last chunk was lost and the session is gone: the
                    // object may have been finished by that chunk. GCS answers the status
                    // query of a finished session with the object; an emulator may forget it.
                    if ask_status && total.is_some() {
                        if let Some(object) = self.finished_object(total).await? {
                            return Ok(Some(object));
                        }
                    }
                    return Err(self.gone());
                }
                Ok(Progress::Incomplete(held)) => {
                    if held < offset || held > end {
                        return Err(self.lost(held, offset, end));
                    }
                    if held == end && total.is_none() {
                        return Ok(None);
                    }
                    if held == persisted && !ask_status {
                        setbacks += 1;
                    }
                    persisted = held;
                    ask_status = false;
                }
                Err(error) if error.is_retryable() && setbacks < MAX_SETBACKS => {
                    setbacks += 1;
                    ask_status = true;
                    let pause = crate::retry::pause(setbacks, rand::random::<f64>());
                    tracing::debug!(
                        "{}: chunk of `{}` at byte {persisted}: {error}; asking the session where it stands in {pause:?}",
                        self.client.store(),
                        self.key
                    );
                    tokio::time::sleep(pause).await;
                    continue;
                }
                Err(error) => return Err(error),
            }
            if setbacks > MAX_SETBACKS {
                return Err(self.stalled(persisted));
            }
        }
    }

    /// One `PUT` of `part`, starting at byte `offset`. An empty part with no total asks
    /// where the session stands; with a total it finishes the upload.
    async fn send(
        &self,
        offset: u64,
        part: Bytes,
        total: Option<u64>,
    ) -> Result<Progress, StoreError> {
        let range = content_range(offset, part.len() as u64, total);
        let request = self
            .client
            .http()
            .put(self.url.clone())
            .header(CONTENT_RANGE, range)
            .body(part);
        let response = self.client.execute(request, self.authorize).await?;
        self.progress(response).await
    }

    async fn progress(&self, response: Response) -> Result<Progress, StoreError> {
        let status = response.status();
        if status.as_u16() == RESUME_INCOMPLETE {
            let held = response
                .headers()
                .get(RANGE)
                .and_then(|value| value.to_str().ok())
                .map_or(Some(0), bytes_held)
                .ok_or_else(|| protocol_error(self.client.store(), "malformed Range in answer"))?;
            return Ok(Progress::Incomplete(held));
        }
        if matches!(status, StatusCode::NOT_FOUND | StatusCode::GONE) {
            return Ok(Progress::Gone);
        }
        let response = self
            .client
            .check(response, Missing::Object(&self.key))
            .await?;
        let object = response
            .json()
            .await
            .map_err(|e| crate::error::transport_error(self.client.store(), &e))?;
        Ok(Progress::Finished(object))
    }

    /// Cancels the session; one that is already gone counts as cancelled.
    async fn cancel(&self) -> Result<(), StoreError> {
        let request = self.client.http().delete(self.url.clone());
        let response = self.client.execute(request, self.authorize).await?;
        let status = response.status();
        // GCS answers a cancelled session with 499 (client closed request).
        if status.is_success() || matches!(status.as_u16(), 404 | 410 | 499) {
            return Ok(());
        }
        Err(self
            .client
            .failure(status, response, Missing::Object(&self.key))
            .await)
    }

    fn finished_early(&self, size: Option<u64>, total: Option<u64>) -> StoreError {
        protocol_error(
            self.client.store(),
            &format!(
                "The upload session of `{}` finished the object at {} bytes, before all {} were sent",
                self.key,
                size.map_or_else(|| "?".to_string(), |s| s.to_string()),
                total.map_or_else(|| "of its".to_string(), |t| t.to_string()),
            ),
        )
    }

    fn gone(&self) -> StoreError {
        protocol_error(
            self.client.store(),
            &format!(
                "The upload session of `{}` expired or was cancelled",
                self.key
            ),
        )
    }

    /// The object this session was writing, when it exists with the upload's `total` size
    /// (its name is unique to one backup, so an object of that size is this upload's).
    async fn finished_object(
        &self,
        total: Option<u64>,
    ) -> Result<Option<ObjectResource>, StoreError> {
        let request = self.client.http().get(self.client.object_url(&self.name));
        match self
            .client
            .json::<ObjectResource>(request, Missing::Object(&self.key))
            .await
        {
            Ok(object) if object.size().ok() == total => Ok(Some(object)),
            Ok(_) | Err(StoreError::NotFound { .. }) => Ok(None),
            Err(other) => Err(other),
        }
    }

    fn lost(&self, held: u64, offset: u64, end: u64) -> StoreError {
        protocol_error(
            self.client.store(),
            &format!(
                "The upload session of `{}` holds {held} bytes where {offset} to {end} were expected",
                self.key
            ),
        )
    }

    fn stalled(&self, persisted: u64) -> StoreError {
        StoreError::Transient {
            store: self.client.store().to_string(),
            detail: format!(
                "The upload of `{}` made no progress past byte {persisted}",
                self.key
            ),
        }
    }
}

/// An upload in progress: one chunk filling, at most one in flight.
#[derive(Debug)]
pub(crate) struct GcsUpload {
    session: Arc<Session>,
    buffer: BytesMut,
    /// Bytes handed to chunk uploads so far (including the one in flight).
    sent: u64,
    in_flight: Option<JoinHandle<Result<(), StoreError>>>,
}

impl GcsUpload {
    /// Opens a resumable upload of the object `name`.
    pub(crate) async fn start(
        client: Arc<Client>,
        name: &str,
        key: &str,
        metadata: &UploadMetadata,
    ) -> Result<GcsUpload, StoreError> {
        let session = Session::open(client, name, key, metadata).await?;
        Ok(GcsUpload {
            session: Arc::new(session),
            buffer: BytesMut::new(),
            sent: 0,
            in_flight: None,
        })
    }

    /// Sends the full buffer as the next chunk, once the previous one is stored.
    async fn send_chunk(&mut self) -> Result<(), StoreError> {
        let chunk = std::mem::replace(&mut self.buffer, BytesMut::with_capacity(CHUNK_SIZE));
        let chunk = chunk.freeze();
        self.finish_in_flight().await?;
        let session = Arc::clone(&self.session);
        let offset = self.sent;
        self.sent += chunk.len() as u64;
        self.in_flight = Some(tokio::spawn(async move {
            session.upload(chunk, offset, None).await.map(drop)
        }));
        Ok(())
    }

    async fn finish_in_flight(&mut self) -> Result<(), StoreError> {
        let Some(task) = self.in_flight.take() else {
            return Ok(());
        };
        task.await.map_err(|e| {
            protocol_error(
                self.session.client.store(),
                &format!("chunk upload stopped: {e}"),
            )
        })?
    }

    /// Sends what is buffered as the last chunk and returns the object.
    async fn finish(&mut self) -> Result<PutResult, StoreError> {
        self.finish_in_flight().await?;
        let last = std::mem::take(&mut self.buffer).freeze();
        let total = self.sent + last.len() as u64;
        let object = self
            .session
            .upload(last, self.sent, Some(total))
            .await?
            .ok_or_else(|| self.unfinished())?;
        let size = object
            .size()
            .map_err(|e| protocol_error(self.session.client.store(), &e))?;
        Ok(PutResult {
            size,
            version: object.generation,
        })
    }

    fn unfinished(&self) -> StoreError {
        protocol_error(
            self.session.client.store(),
            &format!("The upload of `{}` did not finish", self.session.key),
        )
    }
}

#[async_trait]
impl Upload for GcsUpload {
    async fn write(&mut self, mut data: Bytes) -> Result<(), StoreError> {
        while !data.is_empty() {
            let room = CHUNK_SIZE - self.buffer.len();
            let piece = data.split_to(room.min(data.len()));
            self.buffer.extend_from_slice(&piece);
            if self.buffer.len() == CHUNK_SIZE {
                self.send_chunk().await?;
            }
        }
        Ok(())
    }

    async fn complete(mut self: Box<Self>) -> Result<PutResult, StoreError> {
        let result = self.finish().await;
        if result.is_err() {
            // Best effort: the caller cannot abort a consumed upload.
            let _ = self.session.cancel().await;
        }
        result
    }

    async fn abort(mut self: Box<Self>) -> Result<(), StoreError> {
        if let Some(task) = self.in_flight.take() {
            task.abort();
            let _ = task.await;
        }
        self.session.cancel().await
    }
}

/// `chunk` from byte `skip` on.
fn tail(chunk: &Bytes, skip: u64) -> Bytes {
    let skip = usize::try_from(skip).map_or(chunk.len(), |skip| skip.min(chunk.len()));
    chunk.slice(skip..)
}

/// `bytes FIRST-LAST/TOTAL`, `*` for an unknown total; `bytes */TOTAL` when sending nothing.
fn content_range(offset: u64, length: u64, total: Option<u64>) -> String {
    let total = total.map_or_else(|| "*".to_string(), |total| total.to_string());
    if length == 0 {
        format!("bytes */{total}")
    } else {
        format!("bytes {offset}-{}/{total}", offset + length - 1)
    }
}

/// How many bytes a `Range: bytes=0-LAST` header says the session holds.
fn bytes_held(range: &str) -> Option<u64> {
    let range = range.trim();
    let range = range.strip_prefix("bytes=").unwrap_or(range);
    let (first, last) = range.split_once('-')?;
    if first.trim() != "0" {
        return None;
    }
    last.trim().parse::<u64>().ok()?.checked_add(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_are_multiples_of_256_kib() {
        assert_eq!(CHUNK_SIZE % (256 * 1024), 0);
    }

    #[test]
    fn content_ranges() {
        assert_eq!(content_range(0, 10, None), "bytes 0-9/*");
        assert_eq!(content_range(8, 2, Some(10)), "bytes 8-9/10");
        assert_eq!(content_range(10, 0, Some(10)), "bytes */10");
        assert_eq!(content_range(0, 0, Some(0)), "bytes */0");
        assert_eq!(content_range(5, 0, None), "bytes */*");
    }

    #[test]
    fn ranges_held() {
        assert_eq!(bytes_held("bytes=0-262143"), Some(262_144));
        assert_eq!(bytes_held("0-9"), Some(10));
        assert_eq!(bytes_held("bytes=5-9"), None);
        assert_eq!(bytes_held("nonsense"), None);
    }

    #[test]
    fn tails() {
        let chunk = Bytes::from_static(b"abcdef");
        assert_eq!(tail(&chunk, 0), chunk);
        assert_eq!(tail(&chunk, 4), Bytes::from_static(b"ef"));
        assert!(tail(&chunk, 99).is_empty());
    }
}
