//! Cairn's deduplicating repository: restic's repository format (content-defined chunks,
//! encrypted and authenticated, deduplicated across nights, instances and deployments),
//! written and read through the `rustic_core` crate, kept in any of Cairn's stores.
//!
//! One narrow seam: [`backend::StoreBackend`] implements rustic_core's storage traits over an
//! [`ArtifactStore`], so a repository gets the adapters' versioning checks, Object Lock,
//! retries and fault handling unchanged, and nothing else in Cairn talks to rustic_core's
//! storage layer. It is a crate of its own, like each store adapter, so the bridge can be
//! tested alone against every emulator; the backup format on top (snapshots per artifact,
//! Cairn's records) belongs to the main crate (docs/design/repository.md).
//!
//! rustic_core is synchronous and the adapters are async: every call into rustic_core made
//! here runs on tokio's blocking pool ([`blocking`]), where the backend may block on the
//! adapters' futures. Callers must be on a multi-threaded runtime.

pub mod backend;
mod layout;
pub mod password;

use std::sync::Arc;

use cairn_store::{ArtifactStore, StoreError};
use rustic_core::{
    CheckOptions, ConfigOptions, Credentials, KeyOptions, OpenStatus, RepositoryBackends,
    RepositoryOptions, RusticError,
};

pub use backend::StoreBackend;
pub use password::{PasswordError, RepositoryPassword};
/// rustic_core itself, for the backup format built on top (the main crate's `format::repository`).
pub use rustic_core;

/// What went wrong with a repository.
#[derive(Debug, thiserror::Error)]
pub enum RepositoryError {
    /// The password file cannot be used.
    #[error(transparent)]
    Password(#[from] PasswordError),
    /// No repository at that place.
    #[error("There is no repository at repo+{store} (it has no `config` object); create one with `cairn repo init --store repo+{store}`, or fix the store URL")]
    Missing {
        /// The store.
        store: String,
    },
    /// `init` where a repository already is.
    #[error("A repository already exists at repo+{store}; Cairn does not overwrite it (use it as it is, or choose another prefix)")]
    Exists {
        /// The store.
        store: String,
    },
    /// No key of the repository opens with the password.
    #[error("The repository password does not open the repository at repo+{store}: no key of the repository accepts it; check --repository-password-file (or CAIRN_REPOSITORY_PASSWORD_FILE)")]
    WrongPassword {
        /// The store.
        store: String,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// rustic_core reported a failure, on one line.
    #[error("Repository at repo+{store}: {detail}")]
    Rustic {
        /// The store.
        store: String,
        /// rustic_core's message and its causes.
        detail: String,
    },
}

impl RepositoryError {
    /// rustic_core's error about the repository in `store`, on one line (a wrong password is
    /// [`RepositoryError::WrongPassword`]).
    #[must_use]
    pub fn rustic(store: &dyn ArtifactStore, error: &RusticError) -> RepositoryError {
        if error.is_incorrect_password() {
            return RepositoryError::WrongPassword {
                store: store.to_string(),
            };
        }
        let detail = error
            .display_log()
            .trim_start_matches("Error: ")
            .replace('\n', " ");
        RepositoryError::Rustic {
            store: store.to_string(),
            detail,
        }
    }
}

/// What identifies an open repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepositoryInfo {
    /// The repository id (its `config`'s `id`, as restic prints it).
    pub id: String,
    /// The format version (2: compressed blobs, restic ≥ 0.14).
    pub version: u32,
}

/// A repository opened with its password.
pub struct Repository {
    inner: Arc<rustic_core::Repository<OpenStatus>>,
    store: Arc<dyn ArtifactStore>,
}

impl std::fmt::Debug for Repository {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Repository")
            .field("store", &self.store.to_string())
            .finish_non_exhaustive()
    }
}

/// Runs rustic_core work on tokio's blocking pool, where [`StoreBackend`] may block.
///
/// # Errors
/// The work's error, or a task that panicked.
pub async fn blocking<T: Send + 'static>(
    store: &Arc<dyn ArtifactStore>,
    work: impl FnOnce() -> Result<T, RepositoryError> + Send + 'static,
) -> Result<T, RepositoryError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| RepositoryError::Rustic {
            store: store.to_string(),
            detail: format!("a repository task failed: {e}"),
        })?
}

/// rustic_core's view of the repository at the root of `store`, not yet opened.
fn unopened(
    store: &Arc<dyn ArtifactStore>,
    handle: tokio::runtime::Handle,
) -> Result<rustic_core::Repository<()>, RepositoryError> {
    let backend = StoreBackend::new(Arc::clone(store), "", handle);
    let backends = RepositoryBackends::new(Arc::new(backend), None);
    // No local cache yet: the files it would hold are small and read once per command.
    let options = RepositoryOptions::default().no_cache(true);
    rustic_core::Repository::new(&options, &backends)
        .map_err(|e| RepositoryError::rustic(store.as_ref(), &e))
}

/// Creates a repository at the root of `store` (format version 2, a new random chunker
/// polynomial, one key sealed with `password` by scrypt).
///
/// # Errors
/// A repository already there, or the store's or rustic_core's failure.
pub async fn init(
    store: Arc<dyn ArtifactStore>,
    password: &RepositoryPassword,
) -> Result<RepositoryInfo, RepositoryError> {
    let handle = tokio::runtime::Handle::current();
    let credentials = Credentials::password(password.expose());
    let owner = Arc::clone(&store);
    blocking(&owner, move || {
        let repository = unopened(&store, handle)?;
        let exists = repository
            .config_id()
            .map_err(|e| RepositoryError::rustic(store.as_ref(), &e))?
            .is_some();
        if exists {
            return Err(RepositoryError::Exists {
                store: store.to_string(),
            });
        }
        let opened = repository
            .init(
                &credentials,
                &KeyOptions::default(),
                &ConfigOptions::default(),
            )
            .map_err(|e| RepositoryError::rustic(store.as_ref(), &e))?;
        Ok(info(&opened))
    })
    .await
}

/// Opens the repository at the root of `store` with `password`.
///
/// # Errors
/// [`RepositoryError::Missing`] when there is none (naming `cairn repo init`),
/// [`RepositoryError::WrongPassword`], or the store's or rustic_core's failure.
pub async fn open(
    store: Arc<dyn ArtifactStore>,
    password: &RepositoryPassword,
) -> Result<Repository, RepositoryError> {
    let handle = tokio::runtime::Handle::current();
    let credentials = Credentials::password(password.expose());
    let owner = Arc::clone(&store);
    let inner = blocking(&owner, move || {
        let repository = unopened(&store, handle)?;
        let exists = repository
            .config_id()
            .map_err(|e| RepositoryError::rustic(store.as_ref(), &e))?
            .is_some();
        if !exists {
            return Err(RepositoryError::Missing {
                store: store.to_string(),
            });
        }
        repository
            .open(&credentials)
            .map_err(|e| RepositoryError::rustic(store.as_ref(), &e))
    })
    .await?;
    Ok(Repository {
        inner: Arc::new(inner),
        store: owner,
    })
}

fn info(repository: &rustic_core::Repository<OpenStatus>) -> RepositoryInfo {
    let config = repository.config();
    RepositoryInfo {
        id: config.id.to_hex().as_str().to_string(),
        version: config.version,
    }
}

/// One finding of [`Repository::check`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// An error (the repository is damaged), not a warning.
    pub error: bool,
    /// What rustic_core found, on one line.
    pub text: String,
}

impl Repository {
    /// rustic_core's open repository, for work this crate does not wrap (run it through
    /// [`blocking`]).
    #[must_use]
    pub fn rustic(&self) -> Arc<rustic_core::Repository<OpenStatus>> {
        Arc::clone(&self.inner)
    }

    /// The repository with its index of blob ids read, for backups (rustic_core's
    /// `to_indexed_ids`), or with its full index for reading files back (`to_indexed`:
    /// the whole index in memory).
    ///
    /// # Errors
    /// The index cannot be read; the repository is shared (opened for one use only).
    pub async fn indexed<T: Send + 'static>(
        self,
        full: impl FnOnce(rustic_core::Repository<OpenStatus>) -> rustic_core::RusticResult<T>
            + Send
            + 'static,
    ) -> Result<T, RepositoryError> {
        let store = Arc::clone(&self.store);
        let inner = Arc::try_unwrap(self.inner).map_err(|_| RepositoryError::Rustic {
            store: store.to_string(),
            detail: "the repository is in use elsewhere and cannot be indexed".into(),
        })?;
        let owner = Arc::clone(&store);
        blocking(&owner, move || {
            full(inner).map_err(|e| RepositoryError::rustic(store.as_ref(), &e))
        })
        .await
    }

    /// The store the repository is kept in.
    #[must_use]
    pub fn store(&self) -> Arc<dyn ArtifactStore> {
        Arc::clone(&self.store)
    }

    /// Its id and format version.
    #[must_use]
    pub fn info(&self) -> RepositoryInfo {
        info(&self.inner)
    }

    /// The number of snapshots in it.
    ///
    /// # Errors
    /// The store's or rustic_core's failure.
    pub async fn snapshot_count(&self) -> Result<usize, RepositoryError> {
        let inner = Arc::clone(&self.inner);
        let store = Arc::clone(&self.store);
        blocking(&self.store, move || {
            inner
                .get_all_snapshots()
                .map(|snapshots| snapshots.len())
                .map_err(|e| RepositoryError::rustic(store.as_ref(), &e))
        })
        .await
    }

    /// rustic_core's check of the repository's structure (keys, indexes, packs listed,
    /// snapshots' trees), or with `read_data` also every pack's content.
    ///
    /// # Errors
    /// A failure that kept the check from running (findings are returned, not errors).
    pub async fn check(&self, read_data: bool) -> Result<Vec<Finding>, RepositoryError> {
        let inner = Arc::clone(&self.inner);
        let store = Arc::clone(&self.store);
        blocking(&self.store, move || {
            let results = inner
                .check(CheckOptions::default().read_data(read_data))
                .map_err(|e| RepositoryError::rustic(store.as_ref(), &e))?;
            Ok(results
                .0
                .into_iter()
                .map(|(level, finding)| Finding {
                    // rustic_core 0.13 does not export `CheckErrorLevel` (it is public in a
                    // private module), so its variant is told by its `Debug` name.
                    error: format!("{level:?}") == "Error",
                    text: finding.to_string().replace('\n', " "),
                })
                .collect())
        })
        .await
    }
}
