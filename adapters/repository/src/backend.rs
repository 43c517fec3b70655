//! rustic_core's storage backend over a Cairn [`ArtifactStore`]: the bridge between
//! rustic_core's synchronous `ReadBackend`/`WriteBackend` traits and the async adapters.
//!
//! Each trait method runs the adapter's future with [`Handle::block_on`] on the runtime the
//! repository was opened from. That is only allowed on a thread that is not driving async
//! code, so every rustic_core call is made inside `tokio::task::spawn_blocking` (see
//! [`crate::blocking`]); rustic's own worker threads are plain threads too. The adapters'
//! futures (S3 part uploads, retries) run on the runtime's workers, which rustic never blocks.
//!
//! Retries stay the adapters' (S3 SDK, GCS, object_store), so a repository gets the same
//! fault handling, versioning and credentials as plain backups; ranged reads
//! ([`ArtifactStore::get_range`]) are what makes reading a blob out of a pack cheap.

use std::sync::Arc;

use bytes::Bytes;
use cairn_store::{ArtifactStore, ArtifactStoreExt, ObjectKey, PutOptions, StoreError};
use rustic_core::{
    BytesList, ErrorKind, FileType, Id, ReadBackend, RusticError, RusticResult, WriteBackend,
};
use tokio::runtime::Handle;

use crate::layout::Layout;

/// A repository's files in an [`ArtifactStore`], under a key prefix.
#[derive(Debug, Clone)]
pub struct StoreBackend {
    store: Arc<dyn ArtifactStore>,
    layout: Layout,
    handle: Handle,
    put_options: PutOptions,
}

impl StoreBackend {
    /// The repository under key prefix `root` of `store` (empty: the store's root), run on
    /// the runtime of `handle`.
    ///
    /// # Panics
    /// Later, on the first file named, if `root` holds a control character.
    #[must_use]
    pub fn new(store: Arc<dyn ArtifactStore>, root: &str, handle: Handle) -> StoreBackend {
        StoreBackend {
            store,
            layout: Layout::new(root),
            handle,
            put_options: PutOptions::default(),
        }
    }

    /// Writes files with these options (retention, for `--retain-days`).
    #[must_use]
    pub fn with_put_options(mut self, options: PutOptions) -> StoreBackend {
        self.put_options = options;
        self
    }

    fn error(&self, what: &str, key: &ObjectKey, error: StoreError) -> Box<RusticError> {
        RusticError::with_source(
            ErrorKind::Backend,
            format!("cannot {what} `{{key}}` in {}", self.store),
            error,
        )
        .attach_context("key", key.as_str())
    }

    async fn write(&self, key: &ObjectKey, content: BytesList) -> Result<(), StoreError> {
        let mut upload = self.store.put(key, &self.put_options).await?;
        for part in content.into_vec() {
            if let Err(error) = upload.write(part).await {
                let _ = upload.abort().await;
                return Err(error);
            }
        }
        upload.complete().await.map(|_| ())
    }
}

impl ReadBackend for StoreBackend {
    fn location(&self) -> String {
        format!("repo+{}", self.store)
    }

    fn list_with_size(&self, tpe: FileType) -> RusticResult<Vec<(Id, u32)>> {
        if tpe == FileType::Config {
            let key = self.layout.key(tpe, &Id::default());
            return match self.handle.block_on(self.store.head(&key, None)) {
                Ok(meta) => Ok(vec![(Id::default(), size(&key, meta.size)?)]),
                Err(StoreError::NotFound { .. }) => Ok(Vec::new()),
                Err(error) => Err(self.error("read", &key, error)),
            };
        }
        let directory = self.layout.directory(tpe);
        let listed = self
            .handle
            .block_on(self.store.list(&directory))
            .map_err(|e| {
                RusticError::with_source(
                    ErrorKind::Backend,
                    format!("cannot list `{{directory}}` in {}", self.store),
                    e,
                )
                .attach_context("directory", directory.as_str())
            })?;
        listed
            .into_iter()
            .filter_map(|meta| Layout::id_of(&meta.key).map(|id| (id, meta)))
            .map(|(id, meta)| Ok((id, size(&meta.key, meta.size)?)))
            .collect()
    }

    fn read_full(&self, tpe: FileType, id: &Id) -> RusticResult<Bytes> {
        let key = self.layout.key(tpe, id);
        self.handle
            .block_on(self.store.get_bytes(&key, None))
            .map(Bytes::from)
            .map_err(|e| self.error("read", &key, e))
    }

    fn read_partial(
        &self,
        tpe: FileType,
        id: &Id,
        _cacheable: bool,
        offset: u32,
        length: u32,
    ) -> RusticResult<Bytes> {
        let key = self.layout.key(tpe, id);
        let range = u64::from(offset)..u64::from(offset) + u64::from(length);
        self.handle
            .block_on(self.store.get_range(&key, None, range))
            .map_err(|e| self.error("read", &key, e))
    }

    fn warmup_path(&self, tpe: FileType, id: &Id) -> String {
        self.layout.key(tpe, id).to_string()
    }
}

impl WriteBackend for StoreBackend {
    /// Object stores have no folders, and the file store makes them as it writes.
    fn create(&self) -> RusticResult<()> {
        Ok(())
    }

    fn write_bytes(
        &self,
        tpe: FileType,
        id: &Id,
        _cacheable: bool,
        content: BytesList,
    ) -> RusticResult<()> {
        let key = self.layout.key(tpe, id);
        self.handle
            .block_on(self.write(&key, content))
            .map_err(|e| self.error("write", &key, e))
    }

    /// On a versioned store, a delete marker: the old version stays until the bucket's
    /// lifecycle rule expires it.
    fn remove(&self, tpe: FileType, id: &Id, _cacheable: bool) -> RusticResult<()> {
        let key = self.layout.key(tpe, id);
        self.handle
            .block_on(self.store.delete(&key, None))
            .map_err(|e| self.error("delete", &key, e))
    }
}

/// A file's size as rustic counts it (`u32`: packs are at most 4 GiB).
fn size(key: &ObjectKey, size: u64) -> RusticResult<u32> {
    u32::try_from(size).map_err(|_| {
        RusticError::new(
            ErrorKind::Backend,
            "`{key}` has {size} bytes, more than a repository file may have (4 GiB); it was not written by restic or rustic",
        )
        .attach_context("key", key.as_str())
        .attach_context("size", size.to_string())
    })
}
