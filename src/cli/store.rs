//! Opening where backups go and come from: a bbr directory (`--artifact-path`) or an object
//! store (`--store`/`CAIRN_STORE`), and `DEPLOYMENT/ID` backup names.

use std::sync::Arc;

use anyhow::Context;
use cairn::format::bbr_directory::signed::DIRECTORY_SIGNATURE_NAME;
use cairn::format::bbr_directory::sink::{BbrDirectorySink, BbrDirectorySource};
use cairn::format::manifest::Compression;
use cairn::format::signature::TrustedKeys;
use cairn::format::sink::{BackupSink, BackupSource};
use cairn::format::store::segment::SegmentSize;
use cairn::format::store::write::Signing;
use cairn::format::store::{StoreSink, StoreSource};
use cairn_store::{ArtifactStore, Retention, RetentionMode};

use super::args::{BackupArgs, RestoreArgs, RetentionModeArg, UsageError};

/// `pre-backup-check --store`: the store opens, has versioning as `backup` requires it
/// (unless `allow_unversioned`), and takes writes for `deployment`; a repository (`repo+`)
/// exists and opens with its password.
pub(crate) async fn check_store(
    store_args: &super::args::StoreArgs,
    url: &str,
    deployment: &str,
    allow_unversioned: bool,
) -> Result<(), cairn::Error> {
    if url.starts_with("repo+") {
        let password = repository_password(store_args)
            .map_err(|e| cairn::error::StoredBackupError::InvalidName(e.to_string()))?;
        cairn::format::repository::open(url, &password).await?;
        return Ok(());
    }
    let store = cairn::format::store::open_store(url).await?;
    let required = if allow_unversioned {
        None
    } else {
        cairn::format::store::versioning_command(url)
    };
    cairn::format::store::check_versioning(store.as_ref(), required.as_deref()).await?;
    cairn::catalog::check_writable(store.as_ref(), deployment).await
}

/// Where `backup` writes, and the store that also keeps the run journal (backups into a store).
pub(crate) async fn backup_sink(
    args: &BackupArgs,
) -> anyhow::Result<(Arc<dyn BackupSink>, Option<Arc<dyn ArtifactStore>>)> {
    let signing_key = args.signing.load()?;
    let Some(url) = args.store.url(args.artifact_path.is_none()) else {
        let parent = match &args.artifact_path {
            Some(path) => path.clone(),
            None => std::env::current_dir().context("Cannot read the current directory")?,
        };
        let sink = BbrDirectorySink::new(parent).with_signing(signing_key);
        return Ok((Arc::new(sink), None));
    };
    if url.starts_with("repo+") {
        let sink = cairn::format::repository::write::RepositorySink {
            url,
            password: Arc::new(repository_password(&args.store)?),
            full_read: args.full_read,
        };
        return Ok((Arc::new(sink), None));
    }
    let retention = args.retain_days.map(|days| Retention {
        mode: match args.retention_mode {
            RetentionModeArg::Governance => RetentionMode::Governance,
            RetentionModeArg::Compliance => RetentionMode::Compliance,
        },
        until: std::time::SystemTime::now()
            + std::time::Duration::from_secs(u64::from(days) * 86_400),
    });
    let encryption =
        cairn::format::encryption::Recipients::parse(&args.encrypt_to).map_err(UsageError)?;
    let mut sink = store_sink(
        &url,
        args.compression.as_deref(),
        args.segment_size.as_deref(),
        args.allow_unversioned,
        retention,
        encryption,
    )
    .await?;
    sink.resuming = args.resume;
    sink.signing = signing_key.map(|key| Signing {
        key,
        seen: Some(super::trust::seen_backups()),
    });
    let store = Arc::clone(&sink.store);
    Ok((Arc::new(sink), Some(store)))
}

/// A backup into the store at `url` (shared by `backup` and `cairn drill`).
pub(crate) async fn store_sink(
    url: &str,
    compression: Option<&str>,
    segment_size: Option<&str>,
    allow_unversioned: bool,
    retention: Option<Retention>,
    encryption: Option<cairn::format::encryption::Recipients>,
) -> anyhow::Result<StoreSink> {
    let compression = Compression::parse(compression.unwrap_or(super::config::DEFAULT_COMPRESSION))
        .map_err(UsageError)?;
    let segment_size = segment_size
        .map(SegmentSize::parse)
        .transpose()
        .map_err(UsageError)?
        .unwrap_or_default();
    let store = cairn::format::store::open_store(url).await?;
    Ok(StoreSink {
        segment_size,
        retention,
        require_versioning: if allow_unversioned {
            None
        } else {
            cairn::format::store::versioning_command(url)
        },
        encryption,
        ..StoreSink::new(store, compression)
    })
}

/// Where `restore` reads: the bbr directory, or the store's `--backup` (else the latest).
pub(crate) async fn restore_source(
    args: &RestoreArgs,
    target_name: &str,
) -> anyhow::Result<Arc<dyn BackupSource>> {
    let trusted = args.trust.load()?;
    let Some(url) = args.store.url(args.artifact_path.is_none()) else {
        if !args.identity.is_empty() {
            tracing::warn!("--identity is ignored: a bbr directory backup is never encrypted");
        }
        let path = args.artifact_path.clone().unwrap_or_default();
        if trusted.is_empty() && path.join(DIRECTORY_SIGNATURE_NAME).exists() {
            tracing::warn!("{} is signed ({DIRECTORY_SIGNATURE_NAME}), but no --trusted-key was given: its signature is not checked", path.display());
        }
        return Ok(Arc::new(
            BbrDirectorySource::new(path).with_trusted(trusted),
        ));
    };
    if url.starts_with("repo+") {
        let (deployment, backup_id) = match args.backup.as_deref() {
            Some(id) => {
                let (deployment, id) = split_backup_id(id, Some(target_name))?;
                (deployment, Some(id))
            }
            None => (target_name.to_string(), None),
        };
        return Ok(Arc::new(
            cairn::format::repository::read::RepositorySource {
                url,
                password: Arc::new(repository_password(&args.store)?),
                deployment,
                backup_id,
            },
        ));
    }
    let identities = cairn::format::encryption::Identities::load(&args.identity)
        .map_err(UsageError)?
        .allowing_unencrypted(args.allow_unencrypted);
    let store = cairn::format::store::open_store(&url).await?;
    let (deployment, backup_id) = stored_backup_id(
        store.as_ref(),
        args.backup.as_deref(),
        Some(target_name),
        &trusted,
    )
    .await?;
    Ok(Arc::new(StoreSource {
        store,
        deployment,
        backup_id,
        identities,
        trusted,
    }))
}

/// `DEPLOYMENT/ID` of `--backup` (`ID` alone: of `default_deployment`), else the newest
/// backup of `default_deployment` (`--latest`): with `trusted` keys, the newest one checked
/// for its signature and for a rollback ([`cairn::catalog::trust::latest_trusted`]). Without
/// keys, a store holding signed backups gets a warning.
pub(crate) async fn stored_backup_id(
    store: &dyn ArtifactStore,
    backup: Option<&str>,
    default_deployment: Option<&str>,
    trusted: &TrustedKeys,
) -> anyhow::Result<(String, String)> {
    let (deployment, id) = match (backup, default_deployment) {
        (Some(id), default) => split_backup_id(id, default)?,
        (None, Some(deployment)) if trusted.is_empty() => (
            deployment.to_string(),
            cairn::format::store::latest_backup(store, deployment).await?,
        ),
        (None, Some(deployment)) => {
            let seen = super::trust::seen_backups();
            let id = cairn::catalog::trust::latest_trusted(store, deployment, trusted, Some(&seen))
                .await?;
            (deployment.to_string(), id)
        }
        (None, None) => unreachable!("--backup or --latest"),
    };
    if let Some(line) = super::trust::unchecked_warning(store, trusted, Some(&deployment)).await {
        tracing::warn!("{line}");
    }
    Ok((deployment, id))
}

/// Splits `DEPLOYMENT/ID` (or `ID` with a default deployment).
pub(crate) fn split_backup_id(
    text: &str,
    default_deployment: Option<&str>,
) -> Result<(String, String), UsageError> {
    match (text.split_once('/'), default_deployment) {
        (Some((deployment, id)), _) if !deployment.is_empty() && !id.is_empty() => {
            Ok((deployment.to_string(), id.to_string()))
        }
        (None, Some(deployment)) => Ok((deployment.to_string(), text.to_string())),
        _ => Err(UsageError(format!(
            "Backup `{text}`: write it as DEPLOYMENT/ID (see `cairn backups list`)."
        ))),
    }
}

/// The repository password of a `repo+` store: the file of `--repository-password-file`,
/// else of `CAIRN_REPOSITORY_PASSWORD_FILE` (or the config file's `repository_password_file`);
/// neither is a usage error naming both.
pub(crate) fn repository_password(
    store: &super::args::StoreArgs,
) -> anyhow::Result<cairn::format::repository::RepositoryPassword> {
    let Some(file) = store.repository_password_file() else {
        return Err(UsageError(format!(
            "--repository-password-file flag is required (or set {}): a file holding the repository password on one line, mode 0600.",
            super::args::REPOSITORY_PASSWORD_FILE_ENV
        ))
        .into());
    };
    Ok(cairn::format::repository::read_password(&file)?)
}
