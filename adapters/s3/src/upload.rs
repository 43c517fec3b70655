//! Streaming uploads: one `PutObject` for small objects, a multipart upload with a bounded number
//! of parts in flight for the rest. See the crate docs for why the numbers are what they are.

use std::sync::Arc;

use async_trait::async_trait;
use aws_sdk_s3::primitives::{ByteStream, DateTime};
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, ObjectLockMode};
use bytes::{Bytes, BytesMut};
use cairn_store::{ObjectKey, PutOptions, PutResult, Retention, RetentionMode, StoreError, Upload};
use tokio::task::{JoinError, JoinSet};

use crate::{pinned_version, S3Store};

/// Size of every part of a multipart upload but the last (S3 wants at least 5 MiB).
pub const PART_SIZE: usize = 8 * 1024 * 1024;
/// Parts uploading at once; `write` waits when this many are in flight and a new part is full.
pub const PARTS_IN_FLIGHT: usize = 4;

/// Parts held at once across every upload of the process, whether being filled or in flight:
/// parallel artifact streams share this budget, so memory does not grow with the number of
/// streams (8 x 8 MiB). An upload takes a permit when it starts filling a part and gives it
/// back when that part was sent (or the object was stored whole).
pub const PARTS_IN_FLIGHT_PER_PROCESS: usize = 8;

static PROCESS_PART_BUDGET: tokio::sync::Semaphore =
    tokio::sync::Semaphore::const_new(PARTS_IN_FLIGHT_PER_PROCESS);
/// Part buffers kept for reuse once their upload finished (at most one per budget permit):
/// allocating 8 MiB per part leaves the allocator's arenas holding freed parts of several
/// threads, which showed as ~100 MiB of RSS above the live parts with 8 streams.
static PART_POOL: std::sync::Mutex<Vec<BytesMut>> = std::sync::Mutex::new(Vec::new());

/// An empty buffer with room for one part: from the pool, or new.
fn pooled_part() -> BytesMut {
    let reused = PART_POOL.lock().map(|mut pool| pool.pop()).ok().flatten();
    reused.unwrap_or_else(|| BytesMut::with_capacity(PART_SIZE))
}

/// Gives a part's buffer back to the pool once nothing else holds it (the SDK has dropped its
/// request by the time `send` returned; if it still held a reference, the buffer is dropped).
fn recycle(part: Bytes) {
    let Ok(mut buffer) = part.try_into_mut() else {
        return;
    };
    if buffer.capacity() < PART_SIZE {
        return;
    }
    buffer.clear();
    if let Ok(mut pool) = PART_POOL.lock() {
        if pool.len() < PARTS_IN_FLIGHT_PER_PROCESS {
            pool.push(buffer);
        }
    }
}

/// Parts held right now by all uploads of the process (filling or in flight), at most
/// [`PARTS_IN_FLIGHT_PER_PROCESS`].
#[must_use]
pub fn parts_held_by_process() -> usize {
    PARTS_IN_FLIGHT_PER_PROCESS - PROCESS_PART_BUDGET.available_permits()
}

/// S3's limit on the parts of one upload.
const MAX_PARTS: i32 = 10_000;
/// The largest object one upload of [`MAX_PARTS`] parts of [`PART_SIZE`] can make.
#[allow(clippy::cast_sign_loss)]
pub(crate) const MAX_OBJECT_SIZE: u64 = MAX_PARTS as u64 * PART_SIZE as u64;

/// What an upload has held and sent so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UploadStats {
    /// Parts handed to `UploadPart` (0 while the object still fits in one part).
    pub parts: u32,
    /// Most parts that were uploading at the same time.
    pub max_parts_in_flight: usize,
    /// Most object bytes held at once: the part being filled plus the parts in flight.
    pub peak_buffered_bytes: usize,
}

/// An upload to S3, as returned by [`S3Store::upload`] (and, boxed, by `put`).
///
/// Dropping it without [`Upload::complete`] or [`Upload::abort`] aborts its multipart upload
/// in the background when a Tokio runtime is still there to do it.
pub struct S3Upload {
    store: S3Store,
    key: ObjectKey,
    retention: Option<Retention>,
    buffer: BytesMut,
    /// The budget permit of the part in `buffer`, taken when its first byte arrived.
    filling: Option<tokio::sync::SemaphorePermit<'static>>,
    size: u64,
    multipart: Option<Multipart>,
    stats: UploadStats,
    /// Set when a part failed and the upload was aborted: later writes must not start over.
    failed: bool,
}

/// Where the parts of one multipart upload go.
struct PartTarget {
    store: S3Store,
    key: ObjectKey,
    upload_id: String,
}

type PartOutcome = Result<(CompletedPart, usize), StoreError>;

/// A multipart upload that has been created and not yet completed or aborted.
struct Multipart {
    target: Arc<PartTarget>,
    next_part: i32,
    in_flight: JoinSet<PartOutcome>,
    in_flight_bytes: usize,
    completed: Vec<CompletedPart>,
}

impl std::fmt::Debug for S3Upload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Upload")
            .field("store", &self.store.to_string())
            .field("key", &self.key)
            .field("size", &self.size)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl S3Upload {
    pub(crate) fn new(store: S3Store, key: ObjectKey, options: &PutOptions) -> S3Upload {
        S3Upload {
            store,
            key,
            retention: options.retention,
            buffer: BytesMut::new(),
            filling: None,
            size: 0,
            multipart: None,
            stats: UploadStats::default(),
            failed: false,
        }
    }

    /// What the upload has held and sent so far.
    #[must_use]
    pub fn stats(&self) -> UploadStats {
        self.stats
    }

    async fn append(&mut self, mut data: Bytes) -> Result<(), StoreError> {
        self.check_not_failed()?;
        self.size += data.len() as u64;
        while !data.is_empty() {
            if self.filling.is_none() {
                self.filling = Some(
                    PROCESS_PART_BUDGET
                        .acquire()
                        .await
                        .expect("the part budget is never closed"),
                );
                // Room for the whole part at once (growing by doubling would copy it again),
                // from the pool when a finished part left its buffer there.
                self.buffer = pooled_part();
            }
            let take = (PART_SIZE - self.buffer.len()).min(data.len());
            self.buffer.extend_from_slice(&data.split_to(take));
            let in_flight = self.multipart.as_ref().map_or(0, |m| m.in_flight_bytes);
            self.stats.peak_buffered_bytes =
                (self.buffer.len() + in_flight).max(self.stats.peak_buffered_bytes);
            if self.buffer.len() == PART_SIZE {
                self.send_buffer().await?;
            }
        }
        Ok(())
    }

    fn check_not_failed(&self) -> Result<(), StoreError> {
        if self.failed {
            return Err(StoreError::Other {
                store: self.store.to_string(),
                detail: format!(
                    "The upload of `{}` failed and was aborted; start it again",
                    self.key
                ),
            });
        }
        Ok(())
    }

    /// Sends the buffer as the next part; on failure aborts the whole multipart upload.
    async fn send_buffer(&mut self) -> Result<(), StoreError> {
        let part = std::mem::take(&mut self.buffer).freeze();
        let result = self.send_part(part).await;
        if result.is_err() {
            self.abort_after_failure().await;
        }
        result
    }

    async fn send_part(&mut self, part: Bytes) -> Result<(), StoreError> {
        if self.multipart.is_none() {
            self.multipart = Some(self.create_multipart().await?);
        }
        let multipart = self.multipart.as_mut().expect("created above");
        multipart.wait_for_capacity(PARTS_IN_FLIGHT - 1).await?;
        let permit = match self.filling.take() {
            Some(permit) => permit,
            // `finish` of an object whose last part got no byte cannot get here; stay safe.
            None => PROCESS_PART_BUDGET
                .acquire()
                .await
                .expect("the part budget is never closed"),
        };
        multipart.spawn(part, permit)?;
        self.stats.parts += 1;
        self.stats.max_parts_in_flight = self
            .stats
            .max_parts_in_flight
            .max(multipart.in_flight.len());
        Ok(())
    }

    async fn create_multipart(&self) -> Result<Multipart, StoreError> {
        let output = self
            .store
            .client
            .create_multipart_upload()
            .bucket(&self.store.bucket)
            .key(self.store.object(self.key.as_str()))
            .set_object_lock_mode(self.retention.map(lock_mode))
            .set_object_lock_retain_until_date(self.retention.map(|r| DateTime::from(r.until)))
            .send()
            .await
            .map_err(|e| {
                self.store
                    .error("CreateMultipartUpload", Some(self.key.as_str()), &e)
            })?;
        let upload_id = output.upload_id.ok_or_else(|| StoreError::Other {
            store: self.store.to_string(),
            detail: format!(
                "CreateMultipartUpload `{}`: the answer has no upload id",
                self.key
            ),
        })?;
        Ok(Multipart {
            target: Arc::new(PartTarget {
                store: self.store.clone(),
                key: self.key.clone(),
                upload_id,
            }),
            next_part: 1,
            in_flight: JoinSet::new(),
            in_flight_bytes: 0,
            completed: Vec::new(),
        })
    }

    async fn finish(mut self) -> Result<PutResult, StoreError> {
        self.check_not_failed()?;
        if self.multipart.is_none() {
            return self.put_whole().await;
        }
        if !self.buffer.is_empty() {
            self.send_buffer().await?;
        }
        let result = self.complete_multipart().await;
        if result.is_err() {
            self.abort_after_failure().await;
        }
        result
    }

    /// Stores an object smaller than one part with a single `PutObject`.
    async fn put_whole(&mut self) -> Result<PutResult, StoreError> {
        let body = std::mem::take(&mut self.buffer).freeze();
        let kept = body.clone();
        let output = self
            .store
            .client
            .put_object()
            .bucket(&self.store.bucket)
            .key(self.store.object(self.key.as_str()))
            .body(ByteStream::from(body))
            .set_object_lock_mode(self.retention.map(lock_mode))
            .set_object_lock_retain_until_date(self.retention.map(|r| DateTime::from(r.until)))
            .customize()
            .disable_payload_signing()
            .send()
            .await
            .map_err(|e| self.store.error("PutObject", Some(self.key.as_str()), &e))?;
        recycle(kept);
        self.filling = None;
        Ok(PutResult {
            size: self.size,
            version: pinned_version(output.version_id()),
        })
    }

    async fn complete_multipart(&mut self) -> Result<PutResult, StoreError> {
        let multipart = self.multipart.as_mut().expect("a multipart upload is open");
        multipart.wait_for_capacity(0).await?;
        let mut parts = std::mem::take(&mut multipart.completed);
        parts.sort_by_key(CompletedPart::part_number);
        let target = &multipart.target;
        let output = target
            .store
            .client
            .complete_multipart_upload()
            .bucket(&target.store.bucket)
            .key(target.store.object(target.key.as_str()))
            .upload_id(&target.upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| {
                target
                    .store
                    .error("CompleteMultipartUpload", Some(target.key.as_str()), &e)
            })?;
        self.multipart = None;
        tracing::debug!(key = %self.key, size = self.size, stats = ?self.stats, "multipart upload complete");
        Ok(PutResult {
            size: self.size,
            version: pinned_version(output.version_id()),
        })
    }

    /// Stops the parts in flight and aborts the multipart upload, if one is open.
    async fn abort_multipart(&mut self) -> Result<(), StoreError> {
        match self.multipart.take() {
            Some(multipart) => multipart.abort().await,
            None => Ok(()),
        }
    }

    /// After a failure: abort, and only log if that fails too (the first error is what matters).
    async fn abort_after_failure(&mut self) {
        self.failed = true;
        if let Err(error) = self.abort_multipart().await {
            tracing::warn!(%error, "could not abort the multipart upload after a failure; a lifecycle rule will remove its parts");
        }
    }
}

impl Multipart {
    /// Collects finished parts, then waits until at most `max` are still uploading.
    async fn wait_for_capacity(&mut self, max: usize) -> Result<(), StoreError> {
        while let Some(joined) = self.in_flight.try_join_next() {
            self.collect(joined)?;
        }
        while self.in_flight.len() > max {
            let joined = self
                .in_flight
                .join_next()
                .await
                .expect("parts are in flight");
            self.collect(joined)?;
        }
        Ok(())
    }

    fn collect(&mut self, joined: Result<PartOutcome, JoinError>) -> Result<(), StoreError> {
        let (part, size) = joined.map_err(|e| StoreError::Other {
            store: self.target.store.to_string(),
            detail: format!(
                "UploadPart `{}`: the upload task failed: {e}",
                self.target.key
            ),
        })??;
        self.in_flight_bytes -= size;
        self.completed.push(part);
        Ok(())
    }

    fn spawn(
        &mut self,
        body: Bytes,
        permit: tokio::sync::SemaphorePermit<'static>,
    ) -> Result<(), StoreError> {
        if self.next_part > MAX_PARTS {
            return Err(StoreError::Other {
                store: self.target.store.to_string(),
                detail: format!(
                    "`{}` is larger than one S3 upload of {MAX_PARTS} parts of {} MiB can hold",
                    self.target.key,
                    PART_SIZE >> 20
                ),
            });
        }
        let number = self.next_part;
        self.next_part += 1;
        self.in_flight_bytes += body.len();
        let target = Arc::clone(&self.target);
        self.in_flight.spawn(async move {
            let outcome = target.upload_part(number, body).await;
            drop(permit);
            outcome
        });
        Ok(())
    }

    /// Cancels the parts in flight, waits until they are gone, then aborts the upload (so no
    /// part can land after the abort).
    async fn abort(mut self) -> Result<(), StoreError> {
        self.in_flight.abort_all();
        while self.in_flight.join_next().await.is_some() {}
        self.target.abort().await
    }
}

impl PartTarget {
    async fn upload_part(&self, number: i32, body: Bytes) -> PartOutcome {
        let size = body.len();
        let kept = body.clone();
        let output = self
            .store
            .client
            .upload_part()
            .bucket(&self.store.bucket)
            .key(self.store.object(self.key.as_str()))
            .upload_id(&self.upload_id)
            .part_number(number)
            .body(ByteStream::from(body))
            .customize()
            .disable_payload_signing()
            .send()
            .await
            .map_err(|e| {
                self.store.error(
                    &format!("UploadPart {number} of"),
                    Some(self.key.as_str()),
                    &e,
                )
            })?;
        recycle(kept);
        let part = CompletedPart::builder()
            .part_number(number)
            .set_e_tag(output.e_tag)
            .build();
        Ok((part, size))
    }

    async fn abort(&self) -> Result<(), StoreError> {
        self.store
            .client
            .abort_multipart_upload()
            .bucket(&self.store.bucket)
            .key(self.store.object(self.key.as_str()))
            .upload_id(&self.upload_id)
            .send()
            .await
            .map_err(|e| {
                self.store
                    .error("AbortMultipartUpload", Some(self.key.as_str()), &e)
            })?;
        Ok(())
    }
}

fn lock_mode(retention: Retention) -> ObjectLockMode {
    match retention.mode {
        RetentionMode::Governance => ObjectLockMode::Governance,
        RetentionMode::Compliance => ObjectLockMode::Compliance,
    }
}

#[async_trait]
impl Upload for S3Upload {
    async fn write(&mut self, data: Bytes) -> Result<(), StoreError> {
        self.append(data).await
    }

    async fn complete(self: Box<Self>) -> Result<PutResult, StoreError> {
        (*self).finish().await
    }

    async fn abort(mut self: Box<Self>) -> Result<(), StoreError> {
        self.abort_multipart().await
    }
}

impl Drop for S3Upload {
    fn drop(&mut self) {
        let Some(multipart) = self.multipart.take() else {
            return;
        };
        tracing::warn!(key = %self.key, "upload dropped without complete or abort; aborting its multipart upload");
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Err(error) = multipart.abort().await {
                    tracing::warn!(%error, "could not abort a dropped multipart upload");
                }
            });
        }
    }
}
