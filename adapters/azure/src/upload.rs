//! Streaming uploads as block blobs.
//!
//! Bytes are gathered until a full 8 MiB part exists; an object that ends before that is
//! written with one Put Blob request (small manifests and empty objects cost one round trip).
//! From the first full part on, object_store's [`WriteMultipart`] stages each part as an
//! uncommitted block (Put Block) and `complete` commits the list (Put Block List): only then
//! does the blob appear, atomically, with every byte.
//!
//! Memory stays bounded: at most [`MAX_PARTS_IN_FLIGHT`] blocks are being sent, and `write`
//! waits for one of them to finish before it hands over the next part, so at most five parts
//! (four in flight, one filling) are held, about 40 MiB.
//!
//! Aborting stops the blocks in flight and commits nothing, so no blob appears and an existing
//! blob of the same name is untouched. Azure has no call to delete uncommitted blocks: they
//! stay, invisible and billed, until Azure discards them 7 days later (or until a blob of that
//! name is next committed). That is Azure's design, not a leak of ours.
//!
//! Azure commits at most 50,000 blocks per blob, so with 8 MiB parts one object holds at most
//! 400,000 MiB (about 390 GiB); `write` refuses more instead of failing at the commit.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use cairn_store::{ObjectKey, PutResult, StoreError, Upload};
use object_store::path::Path;
use object_store::{ObjectStore, PutPayload, WriteMultipart};

use crate::{Operation, Shared};

/// Bytes per block.
pub(crate) const PART_SIZE: usize = 8 * 1024 * 1024;
/// Blocks being sent at once.
pub(crate) const MAX_PARTS_IN_FLIGHT: usize = 4;
/// Azure's limit of committed blocks per blob.
const MAX_BLOCKS: u64 = 50_000;
/// The largest object these blocks can make.
pub(crate) const MAX_OBJECT_SIZE: u64 = MAX_BLOCKS * PART_SIZE as u64;

/// An upload to one blob.
pub(crate) struct AzureUpload {
    shared: Arc<Shared>,
    key: ObjectKey,
    path: Path,
    size: u64,
    state: State,
}

enum State {
    /// Less than one part so far: nothing sent yet.
    Buffering(Vec<Bytes>),
    /// Blocks are being staged.
    Staging(WriteMultipart),
}

impl AzureUpload {
    pub(crate) fn new(shared: Arc<Shared>, key: ObjectKey, path: Path) -> AzureUpload {
        AzureUpload {
            shared,
            key,
            path,
            size: 0,
            state: State::Buffering(Vec::new()),
        }
    }

    fn error(&self, operation: Operation, error: &object_store::Error) -> StoreError {
        self.shared.error(operation, Some(self.key.as_str()), error)
    }

    /// Switches from buffering to staging blocks, handing over what was buffered.
    async fn start_staging(&mut self) -> Result<(), StoreError> {
        let upload = self
            .shared
            .azure
            .put_multipart_opts(&self.path, object_store::PutMultipartOptions::default())
            .await
            .map_err(|e| self.error(Operation::Put, &e))?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
        if let State::Buffering(chunks) =
            std::mem::replace(&mut self.state, State::Buffering(Vec::new()))
        {
            for chunk in chunks {
                writer.put(chunk);
            }
        }
        self.state = State::Staging(writer);
        Ok(())
    }
}

#[async_trait]
impl Upload for AzureUpload {
    async fn write(&mut self, data: Bytes) -> Result<(), StoreError> {
        self.size += data.len() as u64;
        if self.size > MAX_OBJECT_SIZE {
            return Err(StoreError::Other {
                store: self.shared.name.clone(),
                detail: format!(
                    "object `{}` is over {} GiB, the most Azure holds in one blob of {} MiB \
                     blocks (50,000 blocks)",
                    self.key,
                    MAX_OBJECT_SIZE >> 30,
                    PART_SIZE >> 20
                ),
            });
        }
        if let State::Buffering(chunks) = &mut self.state {
            let buffered = chunks.iter().map(Bytes::len).sum::<usize>();
            if buffered + data.len() < PART_SIZE {
                chunks.push(data);
                return Ok(());
            }
            self.start_staging().await?;
        }
        let State::Staging(writer) = &mut self.state else {
            unreachable!("staging has started")
        };
        // One part at a time, so `put` starts at most one block and the bound holds.
        let mut rest = data;
        while !rest.is_empty() {
            let piece = rest.split_to(rest.len().min(PART_SIZE));
            if let Err(error) = writer.wait_for_capacity(MAX_PARTS_IN_FLIGHT).await {
                return Err(self
                    .shared
                    .error(Operation::Put, Some(self.key.as_str()), &error));
            }
            writer.put(piece);
        }
        Ok(())
    }

    async fn complete(self: Box<Self>) -> Result<PutResult, StoreError> {
        let AzureUpload {
            shared,
            key,
            path,
            size,
            state,
        } = *self;
        let result = match state {
            State::Buffering(chunks) => {
                let payload: PutPayload = chunks.into_iter().collect();
                shared
                    .azure
                    .put_opts(&path, payload, object_store::PutOptions::default())
                    .await
            }
            State::Staging(writer) => writer.finish().await,
        }
        .map_err(|e| shared.error(Operation::Put, Some(key.as_str()), &e))?;
        Ok(PutResult {
            size,
            version: shared.version_of(result.version, result.e_tag),
        })
    }

    async fn abort(self: Box<Self>) -> Result<(), StoreError> {
        match self.state {
            State::Buffering(_) => Ok(()),
            State::Staging(writer) => writer.abort().await.map_err(|e| {
                self.shared
                    .error(Operation::Put, Some(self.key.as_str()), &e)
            }),
        }
    }
}
