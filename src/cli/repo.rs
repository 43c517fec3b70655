//! `cairn repo init|check`: deduplicating repositories (`--store repo+…`). The password comes
//! from a file only (`--repository-password-file` or `CAIRN_REPOSITORY_PASSWORD_FILE`), never
//! from the command line, and is never printed.

use cairn::format::repository;

use super::args::{RepoAction, RepoArgs, UsageError};
use super::output::say;

/// Runs a `repo` subcommand; returns the exit code.
pub(crate) async fn run(args: RepoArgs) -> anyhow::Result<i32> {
    let url = args.store.url(true).ok_or_else(|| {
        UsageError("--store flag is required (or set CAIRN_STORE): the repository, e.g. repo+s3://BUCKET/PREFIX or repo+file:///DIR.".into())
    })?;
    let password = super::store::repository_password(&args.store)?;
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
