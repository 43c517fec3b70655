//! `cairn repo init|check`: deduplicating repositories (`--store repo+…`). The password comes
//! from a file only (`--repository-password-file` or `CAIRN_REPOSITORY_PASSWORD_FILE`), never
//! from the command line, and is never printed.

use std::path::PathBuf;

use cairn::format::repository;

use super::args::{RepoAction, RepoArgs, UsageError};
use super::output::say;

/// The variable naming the password file when the flag is not given.
pub(crate) const PASSWORD_FILE_ENV: &str = "CAIRN_REPOSITORY_PASSWORD_FILE";

/// Runs a `repo` subcommand; returns the exit code.
pub(crate) async fn run(args: RepoArgs) -> anyhow::Result<i32> {
    let url = args.store.url(true).ok_or_else(|| {
        UsageError("--store flag is required (or set CAIRN_STORE): the repository, e.g. repo+s3://BUCKET/PREFIX or repo+file:///DIR.".into())
    })?;
    let password_file = password_file(args.repository_password_file)?;
    let password = repository::read_password(&password_file)?;
    match args.action {
        RepoAction::Init { allow_unversioned } => {
            let versioning = if allow_unversioned {
                None
            } else {
                repository::versioning_command(&url)
            };
            let created = repository::init(&url, &password, versioning.as_deref()).await?;
            say(&format!(
                "Created repository {} (restic format version {}) at {url}",
                created.id, created.version
            ));
            Ok(0)
        }
        RepoAction::Check { read_data } => {
            let opened = repository::open(&url, &password).await?;
            let info = opened.info();
            let findings = opened.check(read_data).await?;
            let snapshots = opened.snapshot_count().await?;
            for finding in &findings {
                let level = if finding.error { "error" } else { "warning" };
                say(&format!("{level}: {}", finding.text));
            }
            let errors = findings.iter().filter(|f| f.error).count();
            let what = if read_data {
                "structure and data"
            } else {
                "structure"
            };
            if errors == 0 {
                say(&format!(
                    "Repository {} at {url}: {what} checked, no errors ({snapshots} snapshots)",
                    info.id
                ));
                Ok(0)
            } else {
                say(&format!(
                    "Repository {} at {url}: {what} checked, {errors} errors",
                    info.id
                ));
                Ok(1)
            }
        }
    }
}

/// The flag, else the variable; neither is a usage error naming both.
fn password_file(flag: Option<PathBuf>) -> Result<PathBuf, UsageError> {
    flag.or_else(|| {
        std::env::var_os(PASSWORD_FILE_ENV)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    })
    .ok_or_else(|| {
        UsageError(format!(
            "--repository-password-file flag is required (or set {PASSWORD_FILE_ENV}): a file holding the repository password on one line, mode 0600."
        ))
    })
}
