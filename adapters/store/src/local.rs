//! [`ArtifactStore`] on a local directory (`file:///dir`): for backups to an attached disk or
//! NFS mount, and the reference the conformance suite runs against on every build. It has no
//! versions; uploads are written to a temporary file and renamed into place on completion.

use std::fmt;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{
    ArtifactStore, ByteStream, Capabilities, ObjectKey, ObjectMeta, PutOptions, PutResult,
    StoreError, Upload,
};

const UPLOADS: &str = ".uploads";

/// A directory used as a store.
#[derive(Debug, Clone)]
pub struct LocalStore {
    root: PathBuf,
}

impl LocalStore {
    /// A store rooted at `root`, a directory that must exist ([`ArtifactStore::capabilities`]
    /// refuses a missing one; writes create the folders under it).
    #[must_use]
    pub fn new(root: impl Into<PathBuf>) -> LocalStore {
        LocalStore { root: root.into() }
    }

    fn path(&self, key: &ObjectKey) -> PathBuf {
        self.root.join(key.as_str())
    }

    fn error(&self, path: &Path, error: &std::io::Error) -> StoreError {
        if error.kind() == std::io::ErrorKind::NotFound {
            StoreError::NotFound {
                store: self.to_string(),
                key: path.display().to_string(),
            }
        } else {
            StoreError::Other {
                store: self.to_string(),
                detail: format!("{}: {error}", path.display()),
            }
        }
    }
}

impl fmt::Display for LocalStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "file://{}", self.root.display())
    }
}

struct LocalUpload {
    store: LocalStore,
    temporary: PathBuf,
    target: PathBuf,
    file: tokio::fs::File,
    size: u64,
}

#[async_trait]
impl Upload for LocalUpload {
    async fn write(&mut self, data: Bytes) -> Result<(), StoreError> {
        self.size += data.len() as u64;
        self.file
            .write_all(&data)
            .await
            .map_err(|e| self.store.error(&self.temporary, &e))
    }

    async fn complete(mut self: Box<Self>) -> Result<PutResult, StoreError> {
        self.file
            .flush()
            .await
            .map_err(|e| self.store.error(&self.temporary, &e))?;
        self.file
            .sync_all()
            .await
            .map_err(|e| self.store.error(&self.temporary, &e))?;
        if let Some(parent) = self.target.parent() {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(|e| self.store.error(parent, &e))?;
        }
        tokio::fs::rename(&self.temporary, &self.target)
            .await
            .map_err(|e| self.store.error(&self.target, &e))?;
        Ok(PutResult {
            size: self.size,
            version: None,
        })
    }

    async fn abort(self: Box<Self>) -> Result<(), StoreError> {
        drop(self.file);
        tokio::fs::remove_file(&self.temporary)
            .await
            .map_err(|e| self.store.error(&self.temporary, &e))
    }
}

#[async_trait]
impl ArtifactStore for LocalStore {
    async fn put(
        &self,
        key: &ObjectKey,
        _options: &PutOptions,
    ) -> Result<Box<dyn Upload>, StoreError> {
        let uploads = self.root.join(UPLOADS);
        tokio::fs::create_dir_all(&uploads)
            .await
            .map_err(|e| self.error(&uploads, &e))?;
        let unique = format!(
            "{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos()
        );
        let temporary = uploads.join(format!("{}.{unique}", key.as_str().replace('/', "_")));
        let file = tokio::fs::File::create(&temporary)
            .await
            .map_err(|e| self.error(&temporary, &e))?;
        Ok(Box::new(LocalUpload {
            store: self.clone(),
            temporary,
            target: self.path(key),
            file,
            size: 0,
        }))
    }

    async fn get(&self, key: &ObjectKey, _version: Option<&str>) -> Result<ByteStream, StoreError> {
        let path = self.path(key);
        let file = tokio::fs::File::open(&path)
            .await
            .map_err(|e| self.error(&path, &e))?;
        let store = self.clone();
        let stream = futures::stream::unfold(Some((file, store, path)), |state| async move {
            let (mut file, store, path) = state?;
            let mut buffer = vec![0_u8; 1 << 20];
            match file.read(&mut buffer).await {
                Ok(0) => None,
                Ok(count) => {
                    buffer.truncate(count);
                    Some((Ok(Bytes::from(buffer)), Some((file, store, path))))
                }
                Err(error) => Some((Err(store.error(&path, &error)), None)),
            }
        });
        Ok(stream.boxed())
    }

    async fn head(
        &self,
        key: &ObjectKey,
        _version: Option<&str>,
    ) -> Result<ObjectMeta, StoreError> {
        let path = self.path(key);
        let metadata = tokio::fs::metadata(&path)
            .await
            .map_err(|e| self.error(&path, &e))?;
        Ok(ObjectMeta {
            key: key.clone(),
            size: metadata.len(),
            version: None,
            last_modified: metadata.modified().ok(),
        })
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        let mut found = Vec::new();
        let mut pending = vec![self.root.clone()];
        while let Some(dir) = pending.pop() {
            let mut entries = match tokio::fs::read_dir(&dir).await {
                Ok(entries) => entries,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(self.error(&dir, &e)),
            };
            while let Some(entry) = entries
                .next_entry()
                .await
                .map_err(|e| self.error(&dir, &e))?
            {
                let path = entry.path();
                let relative = path
                    .strip_prefix(&self.root)
                    .unwrap_or(&path)
                    .to_string_lossy()
                    .into_owned();
                if relative == UPLOADS {
                    continue;
                }
                let metadata = entry.metadata().await.map_err(|e| self.error(&path, &e))?;
                if metadata.is_dir() {
                    pending.push(path);
                } else if relative.starts_with(prefix) {
                    if let Ok(key) = ObjectKey::parse(&relative) {
                        found.push(ObjectMeta {
                            key,
                            size: metadata.len(),
                            version: None,
                            last_modified: metadata.modified().ok(),
                        });
                    }
                }
            }
        }
        found.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(found)
    }

    async fn delete(&self, key: &ObjectKey, _version: Option<&str>) -> Result<(), StoreError> {
        let path = self.path(key);
        tokio::fs::remove_file(&path)
            .await
            .map_err(|e| self.error(&path, &e))
    }

    /// Refuses a root that does not exist, as the cloud stores refuse a missing bucket or
    /// container: a mistyped path must not look like an empty store.
    async fn capabilities(&self) -> Result<Capabilities, StoreError> {
        let root = self.root.display();
        let problem = match tokio::fs::metadata(&self.root).await {
            Ok(metadata) if metadata.is_dir() => return Ok(Capabilities::default()),
            Ok(_) => format!("`{root}` is not a directory; fix the store URL"),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => format!(
                "the directory `{root}` does not exist; create it (mkdir -p {root}) or fix the store URL"
            ),
            Err(e) => return Err(self.error(&self.root, &e)),
        };
        Err(StoreError::Configuration {
            store: self.to_string(),
            detail: problem,
        })
    }

    async fn abort_unfinished_uploads(&self, prefix: &str) -> Result<usize, StoreError> {
        let uploads = self.root.join(UPLOADS);
        let mut entries = match tokio::fs::read_dir(&uploads).await {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(self.error(&uploads, &e)),
        };
        let flattened = prefix.replace('/', "_");
        let mut aborted = 0;
        while let Some(entry) = entries
            .next_entry()
            .await
            .map_err(|e| self.error(&uploads, &e))?
        {
            if entry.file_name().to_string_lossy().starts_with(&flattened) {
                let path = entry.path();
                tokio::fs::remove_file(&path)
                    .await
                    .map_err(|e| self.error(&path, &e))?;
                aborted += 1;
            }
        }
        Ok(aborted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn local_store_passes_the_conformance_suite() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path().join("store"));
        std::fs::create_dir(dir.path().join("store")).unwrap();
        crate::conformance::check_store(&store, "conformance").await;
    }

    #[tokio::test]
    async fn a_missing_root_is_refused_not_listed_as_empty() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("typo");
        let error = LocalStore::new(&missing).capabilities().await.unwrap_err();
        assert!(matches!(error, StoreError::Configuration { .. }));
        assert_eq!(
            error.to_string(),
            format!(
                "file://{0}: the directory `{0}` does not exist; create it (mkdir -p {0}) or fix the store URL",
                missing.display()
            )
        );
        assert!(!missing.exists(), "the check creates nothing");
        let file = dir.path().join("file");
        std::fs::write(&file, b"x").unwrap();
        let error = LocalStore::new(&file).capabilities().await.unwrap_err();
        assert!(error
            .to_string()
            .ends_with("is not a directory; fix the store URL"));
    }
}
