//! `backups report`: the history of a deployment's (or every deployment's) backups as a
//! self-contained HTML page (`--html FILE`) and/or JSON on stdout (`--json`), of a plain store
//! or a repository (`repo+`: the same model, its sizes the data each backup added). The model and
//! the page are the library's ([`cairn::report::history`], [`cairn::report::html`]); this
//! command opens the output first (an unwritable path fails before the store is read), reads
//! the history and writes it.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cairn::format::repository::RepositoryPassword;
use cairn::report::history::{read_history, read_repository_history, HistoryError, HistoryOptions};
use cairn_store::ArtifactStore;

use crate::cli::args::UsageError;
use crate::cli::output::say;

/// Where the report goes.
#[derive(Debug)]
pub(super) struct Output {
    /// `--html FILE`.
    pub html: Option<PathBuf>,
    /// `--json`: on stdout.
    pub json: bool,
}

/// What the report is of.
pub(super) enum Source<'a> {
    /// A plain store.
    Store(&'a Arc<dyn ArtifactStore>),
    /// A repository (`repo+` URL) and its password.
    Repository {
        /// The `repo+` URL.
        url: &'a str,
        /// Its password.
        password: &'a RepositoryPassword,
    },
}

/// Makes the report; returns the exit code (0; every failure is one line and exit code 1).
pub(super) async fn run(
    source: Source<'_>,
    deployment: Option<&str>,
    options: &HistoryOptions,
    output: &Output,
) -> anyhow::Result<i32> {
    let html = output.html.as_deref().map(open_output).transpose()?;
    let read = match source {
        Source::Store(store) => read_history(store, deployment, options).await,
        Source::Repository { url, password } => {
            read_repository_history(url, password, deployment, options).await
        }
    };
    let history = match read {
        Ok(history) => history,
        Err(error) => {
            if let (Some(path), Some(_)) = (output.html.as_deref(), &html) {
                let _ = std::fs::remove_file(path);
            }
            return Err(match error {
                HistoryError::Store(error) => error.into(),
                other => UsageError(other.to_string()).into(),
            });
        }
    };
    if let (Some(path), Some(mut file)) = (output.html.as_deref(), html) {
        let page = cairn::report::html::render(&history);
        file.write_all(page.as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(|error| cannot_write(path, &error))?;
        let runs: usize = history.deployments.iter().map(|d| d.runs.len()).sum();
        eprintln!(
            "Wrote the report of {runs} run(s) of {} deployment(s) to {}",
            history.deployments.len(),
            path.display()
        );
    }
    if output.json {
        say(&serde_json::to_string_pretty(&history)?);
    }
    Ok(0)
}

/// Creates (or truncates) the HTML file, so that a path that cannot be written fails at once.
fn open_output(path: &Path) -> Result<File, UsageError> {
    File::create(path).map_err(|error| cannot_write(path, &error))
}

fn cannot_write(path: &Path, error: &std::io::Error) -> UsageError {
    UsageError(format!(
        "Cannot write the report to `{}`: {error}; choose a path in a directory you can write to",
        path.display()
    ))
}
