//! [`ArtifactStore`] on a local directory (`file:///dir`): for backups to an attached disk or
//! NFS mount, and the reference the conformance suite runs against on every build. It has no
//! versions; uploads are written to a temporary file and renamed into place on completion.
//!
//! Backups hold databases' dumps, so whatever the process umask, objects are created mode
//! 0600 and the folders Cairn creates 0700 (existing folders keep their mode). A temporary
//! file has a random name in `.uploads/` and is created exclusively (`O_CREAT|O_EXCL`, which
//! never follows a link at that name), and no symbolic link inside the store is followed when
//! writing, renaming or deleting: every folder under the root is opened with `O_NOFOLLOW`,
//! one after the other from the root, and the file is created, renamed and unlinked relative
//! to those handles (`openat`, `renameat`, `unlinkat`), so a link planted in the store by
//! another local user cannot send a backup, or a deletion, elsewhere. The root itself may
//! be a link (an operator's `/backups -> /mnt/disk`).

use std::fmt;
use std::ops::Range;
use std::os::fd::OwnedFd;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use rustix::fs::{AtFlags, Mode, OFlags};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{
    ArtifactStore, ByteStream, Capabilities, ObjectKey, ObjectMeta, PutOptions, PutResult,
    StoreError, Upload,
};

const UPLOADS: &str = ".uploads";

/// The mode of the folders Cairn creates in a store: only their owner may list them.
const FOLDER_MODE: u32 = 0o700;

/// The mode of objects: only their owner may read them.
const OBJECT_MODE: u32 = 0o600;

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

impl LocalStore {
    /// Opens the folder `relative` (a path under the root), following no symbolic link below
    /// the root and, with `create`, creating missing folders (mode [`FOLDER_MODE`]).
    fn open_folder(&self, relative: &Path, create: bool) -> Result<OwnedFd, StoreError> {
        let flags = OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC;
        let mut folder = rustix::fs::open(&self.root, flags, Mode::empty())
            .map_err(|e| self.error(&self.root, &e.into()))?;
        let mut path = self.root.clone();
        for component in relative.components() {
            let Component::Normal(name) = component else {
                continue;
            };
            path.push(name);
            let mut opened =
                rustix::fs::openat(&folder, name, flags | OFlags::NOFOLLOW, Mode::empty());
            if create && matches!(opened, Err(rustix::io::Errno::NOENT)) {
                match rustix::fs::mkdirat(&folder, name, Mode::from_raw_mode(FOLDER_MODE)) {
                    Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                    Err(e) => return Err(self.error(&path, &e.into())),
                }
                opened = rustix::fs::openat(&folder, name, flags | OFlags::NOFOLLOW, Mode::empty());
            }
            folder = opened.map_err(|e| match e {
                rustix::io::Errno::LOOP | rustix::io::Errno::NOTDIR => StoreError::Other {
                    store: self.to_string(),
                    detail: format!(
                        "{}: a symbolic link or not a folder; Cairn follows no link inside a store. Remove it (another user may have planted it) and check the store folder's permissions",
                        path.display()
                    ),
                },
                other => self.error(&path, &other.into()),
            })?;
        }
        Ok(folder)
    }

    /// The folder of `key` and its file name.
    fn split_key(key: &ObjectKey) -> (PathBuf, std::ffi::OsString) {
        let path = Path::new(key.as_str());
        (
            path.parent().map(Path::to_path_buf).unwrap_or_default(),
            path.file_name().map(ToOwned::to_owned).unwrap_or_default(),
        )
    }
}

/// Creates `name` in `folder` for writing, mode [`OBJECT_MODE`]: exclusively (a file or a link
/// already at that name is an error, never opened or followed).
fn create_exclusive(folder: &OwnedFd, name: &str) -> std::io::Result<std::fs::File> {
    let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let fd = rustix::fs::openat(folder, name, flags, Mode::from_raw_mode(OBJECT_MODE))?;
    Ok(std::fs::File::from(fd))
}

/// An unpredictable temporary name for an upload of `key` (its key first, which
/// [`ArtifactStore::abort_unfinished_uploads`] matches on).
fn temporary_name(key: &ObjectKey) -> String {
    format!(
        "{}.{:032x}",
        key.as_str().replace('/', "_"),
        rand::random::<u128>()
    )
}

/// Runs blocking file-system work off the async threads.
async fn blocking<T: Send + 'static>(
    store: &LocalStore,
    work: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| StoreError::Other {
            store: store.to_string(),
            detail: format!("a file-system task failed: {e}"),
        })?
}

impl fmt::Display for LocalStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "file://{}", self.root.display())
    }
}

struct LocalUpload {
    store: LocalStore,
    /// `.uploads`, opened when the upload started.
    uploads: Arc<OwnedFd>,
    /// The temporary file's name in it.
    name: String,
    /// For messages.
    temporary: PathBuf,
    key: ObjectKey,
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
        let store = self.store.clone();
        let uploads = Arc::clone(&self.uploads);
        let name = self.name.clone();
        let key = self.key.clone();
        blocking(&self.store, move || {
            let (folder, file_name) = LocalStore::split_key(&key);
            let parent = store.open_folder(&folder, true)?;
            rustix::fs::renameat(&*uploads, name.as_str(), &parent, file_name.as_os_str())
                .map_err(|e| store.error(&store.path(&key), &e.into()))?;
            // The new name is durable once its folder is.
            rustix::fs::fsync(&parent).map_err(|e| store.error(&store.path(&key), &e.into()))
        })
        .await?;
        Ok(PutResult {
            size: self.size,
            version: None,
        })
    }

    async fn abort(self: Box<Self>) -> Result<(), StoreError> {
        let LocalUpload {
            store,
            uploads,
            name,
            temporary,
            file,
            ..
        } = *self;
        drop(file);
        let owner = store.clone();
        blocking(&owner, move || {
            rustix::fs::unlinkat(&*uploads, name.as_str(), AtFlags::empty())
                .map_err(|e| store.error(&temporary, &e.into()))
        })
        .await
    }
}

#[async_trait]
impl ArtifactStore for LocalStore {
    async fn put(
        &self,
        key: &ObjectKey,
        _options: &PutOptions,
    ) -> Result<Box<dyn Upload>, StoreError> {
        let store = self.clone();
        let name = temporary_name(key);
        let temporary = self.root.join(UPLOADS).join(&name);
        let (uploads, file) = {
            let name = name.clone();
            let temporary = temporary.clone();
            blocking(self, move || {
                let uploads = store.open_folder(Path::new(UPLOADS), true)?;
                let file =
                    create_exclusive(&uploads, &name).map_err(|e| store.error(&temporary, &e))?;
                Ok((uploads, file))
            })
            .await?
        };
        Ok(Box::new(LocalUpload {
            store: self.clone(),
            uploads: Arc::new(uploads),
            name,
            temporary,
            key: key.clone(),
            file: tokio::fs::File::from_std(file),
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

    /// One positioned read (`pread`) of exactly the range, after checking the file's size.
    async fn get_range(
        &self,
        key: &ObjectKey,
        _version: Option<&str>,
        range: Range<u64>,
    ) -> Result<Bytes, StoreError> {
        if range.is_empty() {
            return Ok(Bytes::new());
        }
        let store = self.clone();
        let key = key.clone();
        blocking(self, move || {
            use std::os::unix::fs::FileExt;
            let path = store.path(&key);
            let file = std::fs::File::open(&path).map_err(|e| store.error(&path, &e))?;
            let size = file.metadata().map_err(|e| store.error(&path, &e))?.len();
            if range.end > size {
                return Err(crate::range_error(&store.to_string(), &key, &range, size));
            }
            let length = usize::try_from(range.end - range.start)
                .map_err(|_| crate::range_error(&store.to_string(), &key, &range, size))?;
            let mut buffer = vec![0_u8; length];
            file.read_exact_at(&mut buffer, range.start)
                .map_err(|e| store.error(&path, &e))?;
            Ok(Bytes::from(buffer))
        })
        .await
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

    /// Deletes through the same link-free walk as writes, so a link planted in the store
    /// cannot turn a prune into the deletion of a file outside it.
    async fn delete(&self, key: &ObjectKey, _version: Option<&str>) -> Result<(), StoreError> {
        let store = self.clone();
        let key = key.clone();
        blocking(self, move || {
            let (folder, file_name) = LocalStore::split_key(&key);
            let parent = store.open_folder(&folder, false)?;
            rustix::fs::unlinkat(&parent, file_name.as_os_str(), AtFlags::empty())
                .map_err(|e| store.error(&store.path(&key), &e.into()))
        })
        .await
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
        let store = self.clone();
        let flattened = prefix.replace('/', "_");
        blocking(self, move || {
            let uploads_path = store.root.join(UPLOADS);
            let uploads = match store.open_folder(Path::new(UPLOADS), false) {
                Ok(uploads) => uploads,
                Err(StoreError::NotFound { .. }) => return Ok(0),
                Err(other) => return Err(other),
            };
            let entries = rustix::fs::Dir::read_from(&uploads)
                .map_err(|e| store.error(&uploads_path, &e.into()))?;
            let mut aborted = 0;
            for entry in entries {
                let entry = entry.map_err(|e| store.error(&uploads_path, &e.into()))?;
                let name = entry.file_name();
                let special = matches!(name.to_bytes(), b"." | b"..");
                if !special && name.to_string_lossy().starts_with(&flattened) {
                    rustix::fs::unlinkat(&uploads, name, AtFlags::empty()).map_err(|e| {
                        store.error(
                            &uploads_path.join(name.to_string_lossy().as_ref()),
                            &e.into(),
                        )
                    })?;
                    aborted += 1;
                }
            }
            Ok(aborted)
        })
        .await
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

    use std::os::unix::fs::PermissionsExt;

    fn mode(path: &Path) -> u32 {
        std::fs::symlink_metadata(path)
            .unwrap()
            .permissions()
            .mode()
            & 0o7777
    }

    async fn put_bytes(
        store: &LocalStore,
        key: &str,
        data: &'static [u8],
    ) -> Result<(), StoreError> {
        let key = ObjectKey::parse(key).unwrap();
        let mut upload = store.put(&key, &PutOptions::default()).await?;
        upload.write(Bytes::from_static(data)).await?;
        upload.complete().await.map(|_| ())
    }

    #[tokio::test]
    async fn objects_are_0600_and_new_folders_0700_whatever_the_umask() {
        // The usual umask, under which plain `File::create` makes world-readable dumps.
        rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o022));
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("store");
        std::fs::create_dir(&root).unwrap();
        let store = LocalStore::new(&root);
        put_bytes(&store, "cf/20250101T000000Z/db-0-pg.tar.zst", b"dump")
            .await
            .unwrap();
        put_bytes(&store, "cf/20250101T000000Z/manifest.json", b"{}")
            .await
            .unwrap();
        for object in ["db-0-pg.tar.zst", "manifest.json"] {
            assert_eq!(mode(&root.join("cf/20250101T000000Z").join(object)), 0o600);
        }
        for folder in [".uploads", "cf", "cf/20250101T000000Z"] {
            assert_eq!(mode(&root.join(folder)), 0o700, "{folder}");
        }
    }

    #[tokio::test]
    async fn links_planted_in_the_store_are_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("store");
        let elsewhere = dir.path().join("elsewhere");
        std::fs::create_dir(&root).unwrap();
        std::fs::create_dir(&elsewhere).unwrap();
        let store = LocalStore::new(&root);
        // A deployment folder that is a link to another folder: the backup is refused.
        std::os::unix::fs::symlink(&elsewhere, root.join("cf")).unwrap();
        let error = put_bytes(&store, "cf/20250101T000000Z/manifest.json", b"{}")
            .await
            .unwrap_err();
        assert!(
            error
                .to_string()
                .contains("a symbolic link or not a folder"),
            "{error}"
        );
        assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0);
        // Nor is a deletion through it carried out.
        std::fs::write(elsewhere.join("manifest.json"), b"keep").unwrap();
        let key = ObjectKey::parse("cf/manifest.json").unwrap();
        assert!(store.delete(&key, None).await.is_err());
        assert!(elsewhere.join("manifest.json").exists());
        // `.uploads` replaced by a link: no temporary file goes there.
        std::fs::remove_file(root.join("cf")).unwrap();
        std::fs::remove_dir_all(root.join(UPLOADS)).unwrap();
        std::os::unix::fs::symlink(&elsewhere, root.join(UPLOADS)).unwrap();
        let error = put_bytes(&store, "cf/20250101T000000Z/manifest.json", b"{}")
            .await
            .unwrap_err();
        assert!(
            error
                .to_string()
                .contains("a symbolic link or not a folder"),
            "{error}"
        );
        assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 1);
    }

    #[test]
    fn a_link_at_the_temporary_name_is_neither_opened_nor_followed() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"precious").unwrap();
        std::os::unix::fs::symlink(&victim, dir.path().join("planted")).unwrap();
        let folder = rustix::fs::open(
            dir.path(),
            OFlags::DIRECTORY | OFlags::RDONLY,
            Mode::empty(),
        )
        .unwrap();
        let error = create_exclusive(&folder, "planted").unwrap_err();
        assert_eq!(error.kind(), std::io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        // And the names are not predictable: two uploads of one key get different ones.
        let key = ObjectKey::parse("cf/1/manifest.json").unwrap();
        let (first, second) = (temporary_name(&key), temporary_name(&key));
        assert_ne!(first, second);
        assert!(
            first.starts_with("cf_1_manifest.json.") && first.len() == 19 + 32,
            "{first}"
        );
    }
}
