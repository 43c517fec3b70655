//! The artifact-store seam of Cairn: where backups are kept when they are not a bbr directory.
//!
//! [`ArtifactStore`] is deliberately small — a streaming put that ends in `complete` or
//! `abort`, get (optionally of one version, or a byte range of it, which a deduplicating
//! repository reads its blobs with), head, list, delete, and a capability probe — so
//! that S3, Azure Blob, GCS and a local directory can each implement it as a thin layer over
//! their SDK, and one conformance suite ([`conformance`]) proves they all behave the same.
//!
//! Versions matter: a backup's manifest records the version id of every object it wrote, and
//! restore reads exactly that version, so an object overwritten later cannot change what is
//! restored. Stores without versioning return `None` and are read by key.
//!
//! Abandoned multipart uploads cost money on every cloud: adapters abort on failure, and
//! operators should still add a lifecycle rule that removes incomplete uploads after a day.

#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
pub mod key;
pub mod local;
pub mod location;

use std::fmt::{Debug, Display};
use std::ops::Range;
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;

pub use key::ObjectKey;
pub use location::{StoreLocation, StoreUrl};

/// What went wrong talking to a store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The object (or version) does not exist.
    #[error("Object `{key}` not found in {store}")]
    NotFound {
        /// The store.
        store: String,
        /// The key.
        key: String,
    },
    /// Credentials are missing or rejected.
    #[error("{store} refused the credentials: {detail}; {hint}")]
    Credentials {
        /// The store.
        store: String,
        /// What the store said.
        detail: String,
        /// What to set.
        hint: String,
    },
    /// The store is not set up the way Cairn needs (versioning, bucket missing...).
    #[error("{store}: {detail}")]
    Configuration {
        /// The store.
        store: String,
        /// What is wrong and how to fix it.
        detail: String,
    },
    /// The store refused to change or delete an object that a retention or immutability
    /// policy protects (Azure's `BlobImmutableDueToPolicy`).
    #[error("{store}: {detail}")]
    Protected {
        /// The store.
        store: String,
        /// What the store said.
        detail: String,
    },
    /// A failure worth retrying (5xx, connection reset, timeout).
    #[error("{store}: temporary failure: {detail}")]
    Transient {
        /// The store.
        store: String,
        /// What happened.
        detail: String,
    },
    /// Any other failure.
    #[error("{store}: {detail}")]
    Other {
        /// The store.
        store: String,
        /// What happened.
        detail: String,
    },
}

impl StoreError {
    /// True when the same request may succeed if retried.
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        matches!(self, StoreError::Transient { .. })
    }
}

/// A stored object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    /// Its key.
    pub key: ObjectKey,
    /// Size in bytes.
    pub size: u64,
    /// Version id (S3 version id, Azure version id or ETag, GCS generation), when the store has one.
    pub version: Option<String>,
    /// Last modification time, when known.
    pub last_modified: Option<SystemTime>,
}

/// What a finished upload produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutResult {
    /// Bytes stored.
    pub size: u64,
    /// Version id of the new object, when the store has one.
    pub version: Option<String>,
}

/// Retention to apply to an object as it is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Governance or compliance.
    pub mode: RetentionMode,
    /// Protected until.
    pub until: SystemTime,
}

/// Object-lock mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetentionMode {
    /// Privileged users may shorten or remove it.
    Governance,
    /// Nobody may shorten or remove it.
    Compliance,
}

/// What a store supports, probed once before a backup.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// Writes keep old versions, and `get` by version works.
    pub versioning: bool,
    /// Objects can carry retention.
    pub retention: bool,
}

/// Options of a put.
#[derive(Debug, Clone, Default)]
pub struct PutOptions {
    /// Retention for the object, when asked and supported.
    pub retention: Option<Retention>,
}

/// A stream of an object's bytes.
pub type ByteStream = BoxStream<'static, Result<Bytes, StoreError>>;

/// An upload in progress.
///
/// # Contract
/// Call [`Upload::write`] any number of times with chunks of any size, then exactly one of
/// [`Upload::complete`] (the object appears, atomically, with all the bytes) or
/// [`Upload::abort`] (nothing appears and no partial upload is left). Memory is bounded: an
/// implementation holds at most a fixed number of parts, and `write` waits when they are full.
#[async_trait]
pub trait Upload: Send {
    /// Appends bytes.
    async fn write(&mut self, data: Bytes) -> Result<(), StoreError>;
    /// Finishes the upload; the object becomes visible.
    async fn complete(self: Box<Self>) -> Result<PutResult, StoreError>;
    /// Abandons the upload, removing every uploaded part.
    async fn abort(self: Box<Self>) -> Result<(), StoreError>;
}

/// A place to keep backup objects.
///
/// # Contract
/// - Keys are relative to the store's prefix (the URL's path).
/// - `put` returns an [`Upload`]; nothing is visible until it completes.
/// - `get` and `head` of a missing key or version fail with [`StoreError::NotFound`].
/// - `get(key, Some(version))` returns exactly that version even after the key was
///   overwritten, when [`Capabilities::versioning`] is true; so does `get_range`.
/// - `list` returns the current objects under a key prefix, in key order.
/// - `delete(key, None)` removes the current object; `delete(key, Some(v))` removes that version.
#[async_trait]
pub trait ArtifactStore: Send + Sync + Debug + Display + 'static {
    /// Starts an upload.
    async fn put(
        &self,
        key: &ObjectKey,
        options: &PutOptions,
    ) -> Result<Box<dyn Upload>, StoreError>;
    /// Reads an object, or one version of it.
    async fn get(&self, key: &ObjectKey, version: Option<&str>) -> Result<ByteStream, StoreError>;
    /// Reads bytes `range` (end exclusive) of an object, or of one version of it: exactly
    /// `range.end - range.start` bytes, or an error. A range reaching past the end of the
    /// object is [`StoreError::Other`]; a missing key or version is [`StoreError::NotFound`];
    /// an empty range returns empty bytes without a request. No default: streaming the whole
    /// object to cut a range out of it would silently multiply what a repository reads.
    async fn get_range(
        &self,
        key: &ObjectKey,
        version: Option<&str>,
        range: Range<u64>,
    ) -> Result<Bytes, StoreError>;
    /// Describes an object, or one version of it.
    async fn head(&self, key: &ObjectKey, version: Option<&str>) -> Result<ObjectMeta, StoreError>;
    /// Lists current objects whose key starts with `prefix`.
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError>;
    /// Deletes an object or one version of it.
    async fn delete(&self, key: &ObjectKey, version: Option<&str>) -> Result<(), StoreError>;
    /// Probes what the store supports (and that it is reachable, and that its bucket,
    /// container or directory exists). Never writes: every command, read-only ones included,
    /// calls it first.
    async fn capabilities(&self) -> Result<Capabilities, StoreError>;
    /// What the store supports, as a backup about to write needs to know it: as
    /// [`ArtifactStore::capabilities`], except that a store whose data plane cannot read a
    /// setting finds it out by writing. Azure's blob versioning is a storage-account setting
    /// that a container credential cannot read, so the Azure adapter writes a small probe
    /// object under the prefix (`.cairn-probe/…`), looks for a version id, and deletes it.
    /// Called once when a backup starts, never by read-only commands. Stores that can read
    /// their settings keep this default.
    async fn capabilities_for_writing(&self) -> Result<Capabilities, StoreError> {
        self.capabilities().await
    }
    /// Aborts uploads under `prefix` that were started and never completed or aborted (a
    /// coordinator killed mid-upload); returns how many. Stores that cannot list them (their
    /// leftovers expire on their own) return 0.
    async fn abort_unfinished_uploads(&self, prefix: &str) -> Result<usize, StoreError>;
    /// The most bytes one object written through [`ArtifactStore::put`] can hold (S3: its
    /// 10,000 parts; Azure: its 50,000 blocks); `None`: no limit that a backup could reach.
    /// A segmented artifact's `--segment-size` is checked against it before a backup starts.
    fn max_object_size(&self) -> Option<u64> {
        None
    }
}

/// Conveniences over [`ArtifactStore`].
#[async_trait]
pub trait ArtifactStoreExt: ArtifactStore {
    /// Stores a small object in one go.
    async fn put_bytes(
        &self,
        key: &ObjectKey,
        data: Bytes,
        options: &PutOptions,
    ) -> Result<PutResult, StoreError> {
        let mut upload = self.put(key, options).await?;
        if let Err(error) = upload.write(data).await {
            let _ = upload.abort().await;
            return Err(error);
        }
        upload.complete().await
    }

    /// Reads a whole (small) object.
    async fn get_bytes(
        &self,
        key: &ObjectKey,
        version: Option<&str>,
    ) -> Result<Vec<u8>, StoreError> {
        use futures::StreamExt;
        let mut stream = self.get(key, version).await?;
        let mut data = Vec::new();
        while let Some(chunk) = stream.next().await {
            data.extend_from_slice(&chunk?);
        }
        Ok(data)
    }
}

impl<T: ArtifactStore + ?Sized> ArtifactStoreExt for T {}

/// The error of a range whose end is before its start or past `size`, naming the object.
#[must_use]
pub fn range_error(store: &str, key: &ObjectKey, range: &Range<u64>, size: u64) -> StoreError {
    StoreError::Other {
        store: store.to_string(),
        detail: format!(
            "cannot read bytes {}..{} of `{key}`: the object has {size} bytes",
            range.start, range.end
        ),
    }
}
