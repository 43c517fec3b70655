//! Deduplicating repositories: `--store repo+s3://…|repo+az://…|repo+gs://…|repo+file:///…`, a
//! repository in restic's format kept in one of Cairn's stores (issue 16, docs/design/repository.md).
//!
//! Why a module of its own: the repository is a third backup format beside the bbr directory
//! and the plain store, with its own password and its own catalog. The storage bridge to
//! rustic_core and the password rules are the `cairn-repository` crate's (tested alone against
//! every emulator); this module turns a `repo+` URL into a checked store and an open
//! repository, so the CLI never touches rustic_core. What exists now: creating a repository
//! and opening (and checking) it; backups into it ([`write::RepositorySink`], each artifact a
//! snapshot fed by the demux of [`source`], the record snapshot last, [`record`]) and restores
//! from it ([`read::RepositorySource`], each artifact's tar rebuilt from its snapshot; a
//! streaming job's stream is one file of its snapshot, [`stream`]), the catalog's list, show
//! and verify of backups in a repository ([`read`]), and what `backups report` reads of every
//! backup ([`history`]).

pub mod catalog;
pub mod history;
pub mod lease;
mod mode;
pub mod parent;
pub mod read;
pub mod record;
pub mod source;
pub mod stream;
pub mod write;

use std::path::Path;
use std::sync::Arc;

use cairn_store::{ArtifactStore, StoreUrl};

pub use cairn_repository::{
    Finding, Repository, RepositoryError, RepositoryInfo, RepositoryPassword,
};

use crate::error::Error;
use crate::format::store::{check_store, check_versioning, connect_location, invalid_name};

/// The store a `repo+` URL names, opened and checked like any store (its bucket, container or
/// folder must exist). A plain store URL is refused, naming the `repo+` form.
///
/// # Errors
/// A URL that is not a repository URL, or the store's failure.
pub async fn open_store(url: &str) -> Result<Arc<dyn ArtifactStore>, Error> {
    let location = match StoreUrl::parse(url).map_err(invalid_name)? {
        StoreUrl::Repository(location) => location,
        StoreUrl::Objects(_) => {
            return Err(invalid_name(format!(
                "store URL `{url}` names a plain store, not a repository; write `repo+{url}` for a repository kept there"
            )))
        }
    };
    let store = connect_location(location).await?;
    check_store(store.as_ref()).await?;
    Ok(store)
}

/// Reads the repository password from `file` (the rules of [`RepositoryPassword::read`]).
///
/// # Errors
/// A file that is missing, exposed to other users, or not one clean line.
pub fn read_password(file: &Path) -> Result<RepositoryPassword, Error> {
    RepositoryPassword::read(file).map_err(|e| Error::Repository(e.into()))
}

/// Creates a repository at `url`. A cloud store must keep old versions (`versioning`, the
/// command that turns it on, or `None` to accept a store without), as for plain backups.
///
/// # Errors
/// A bad URL, an unversioned store, a repository already there, or the store's failure.
pub async fn init(
    url: &str,
    password: &RepositoryPassword,
    versioning: Option<&str>,
) -> Result<RepositoryInfo, Error> {
    let store = open_store(url).await?;
    check_versioning(store.as_ref(), versioning).await?;
    Ok(cairn_repository::init(store, password).await?)
}

/// Opens the repository at `url` with `password`.
///
/// # Errors
/// A bad URL, no repository there (naming `cairn repo init`), a wrong password, or the
/// store's failure.
pub async fn open(url: &str, password: &RepositoryPassword) -> Result<Repository, Error> {
    let store = open_store(url).await?;
    Ok(cairn_repository::open(store, password).await?)
}

/// How to turn on versioning for the store of a `repo+` URL (as
/// [`crate::format::store::versioning_command`] for plain stores).
#[must_use]
pub fn versioning_command(url: &str) -> Option<String> {
    crate::format::store::versioning_command(url.strip_prefix("repo+")?)
}
