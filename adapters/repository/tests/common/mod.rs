//! What the repository tests share: a password file, and a round trip of real data through
//! rustic_core (backup of a folder, dump of a file, check with `--read-data`) over any store.
#![allow(dead_code, unreachable_pub)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cairn_repository::{RepositoryPassword, StoreBackend};
use cairn_store::ArtifactStore;
use rustic_core::repofile::SnapshotFile;
use rustic_core::{
    BackupOptions, CheckOptions, Credentials, PathList, RepositoryBackends, RepositoryOptions,
};

/// A password file (mode 0600) holding `password`.
pub fn password_file(dir: &Path, password: &str) -> PathBuf {
    let path = dir.join(format!("password-{}", password.len()));
    std::fs::write(&path, format!("{password}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

/// The password in a fresh file.
pub fn password(dir: &Path, password: &str) -> RepositoryPassword {
    RepositoryPassword::read(&password_file(dir, password)).unwrap()
}

/// Bytes that do not repeat (so they do not deduplicate within a file).
pub fn pattern(len: usize, seed: u32) -> Vec<u8> {
    (0..len)
        .map(|i| {
            ((u32::try_from(i).unwrap().wrapping_add(seed)).wrapping_mul(2_654_435_761) >> 24) as u8
        })
        .collect()
}

/// rustic_core's repository over `store`, unopened (for what the crate's API does not offer yet).
fn rustic(
    store: &Arc<dyn ArtifactStore>,
    handle: tokio::runtime::Handle,
) -> rustic_core::Repository<()> {
    let backend = StoreBackend::new(Arc::clone(store), "", handle);
    let backends = RepositoryBackends::new(Arc::new(backend), None);
    rustic_core::Repository::new(&RepositoryOptions::default().no_cache(true), &backends).unwrap()
}

/// What [`round_trip`] saw.
#[derive(Debug)]
pub struct RoundTrip {
    /// The dumped file equals the one backed up.
    pub identical: bool,
    /// Bytes of data packs after the first and the second backup.
    pub packs_after_first: u64,
    pub packs_after_second: u64,
    /// `check --read-data` found no error.
    pub check_ok: bool,
}

/// Backs up a folder with a 3 MiB and a small file into the repository (initialised with
/// `secret`), backs it up again unchanged, dumps the big file back and checks every pack.
pub async fn round_trip(store: Arc<dyn ArtifactStore>, secret: &str) -> RoundTrip {
    let source = tempfile::tempdir().unwrap();
    let big = pattern(3 * 1024 * 1024 + 17, 7);
    std::fs::write(source.path().join("big.bin"), &big).unwrap();
    std::fs::write(source.path().join("small.txt"), b"hello repository\n").unwrap();
    let handle = tokio::runtime::Handle::current();
    let secret = secret.to_string();
    let root = source.path().to_path_buf();
    let backup = {
        let store = Arc::clone(&store);
        let handle = handle.clone();
        let secret = secret.clone();
        let root = root.clone();
        move || {
            let (store, handle, secret, root) = (
                Arc::clone(&store),
                handle.clone(),
                secret.clone(),
                root.clone(),
            );
            tokio::task::spawn_blocking(move || {
                let repository = rustic(&store, handle)
                    .open(&Credentials::password(&secret))
                    .unwrap()
                    .to_indexed_ids()
                    .unwrap();
                let paths = PathList::from_iter([root]);
                repository
                    .backup(&BackupOptions::default(), &paths, SnapshotFile::default())
                    .unwrap()
            })
        }
    };
    let first = backup().await.unwrap();
    let packs_after_first = pack_bytes(store.as_ref()).await;
    let second = backup().await.unwrap();
    assert_ne!(first.id, second.id);
    let packs_after_second = pack_bytes(store.as_ref()).await;
    let (dumped, check_ok) = tokio::task::spawn_blocking(move || {
        let repository = rustic(&store, handle)
            .open(&Credentials::password(&secret))
            .unwrap()
            .to_indexed()
            .unwrap();
        let path = root.join("big.bin");
        let relative = path.to_string_lossy().trim_start_matches('/').to_string();
        let node = repository
            .node_from_snapshot_and_path(&second, &relative)
            .unwrap();
        let mut dumped = Vec::new();
        repository.dump(&node, &mut dumped).unwrap();
        let results = repository
            .check(CheckOptions::default().read_data(true))
            .unwrap();
        (dumped, results.is_ok().is_ok())
    })
    .await
    .unwrap();
    RoundTrip {
        identical: dumped == big,
        packs_after_first,
        packs_after_second,
        check_ok,
    }
}

/// Bytes of the repository's data packs.
pub async fn pack_bytes(store: &dyn ArtifactStore) -> u64 {
    store
        .list("data/")
        .await
        .unwrap()
        .iter()
        .map(|m| m.size)
        .sum()
}
