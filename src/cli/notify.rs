//! `--notify-url`, `--notify-format`, `--notify-secret-file` and `--notify-timeout` (or their
//! config-file keys): checked and the secret read before anything is connected or locked, kept
//! for the process (one run per process), and used once the run is over
//! ([`cairn::report::notify`]). A webhook that fails costs one warning line, never the exit
//! code. A run that stops on a fatal error before it has a final event of its own (an
//! inventory that cannot be read, a Director that cannot be reached) is notified too, with a
//! `run_finished` of exit code 1 ([`send_fatal`]): a nightly backup that never started is the
//! one a webhook must hear of.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

use cairn::report::events::{to_json_line, Event};
use cairn::report::notify::{Format, Notification, Notifier, Policy, Summary, Webhook};
use zeroize::Zeroizing;

use super::args::{CommonArgs, UsageError};

/// The run's notifier, once [`setup`] found webhooks.
static NOTIFIER: OnceLock<Notifier> = OnceLock::new();

/// True once the run's notification was sent.
static SENT: AtomicBool = AtomicBool::new(false);

/// Checks the notification flags and reads the secret; keeps the notifier for [`send`].
/// Nothing to do without `--notify-url`.
///
/// # Errors
/// One line naming the flag and what to do: a URL that is not http(s), formats that do not
/// pair with the URLs, JSON notifications without a secret file, a secret file that is
/// missing, empty or open to group or others.
pub(crate) fn setup(common: &CommonArgs) -> Result<(), UsageError> {
    if let Some(notifier) = notifier(common)? {
        let _ = NOTIFIER.set(notifier);
    }
    Ok(())
}

/// The notifier the flags describe; `None` without `--notify-url`.
fn notifier(common: &CommonArgs) -> Result<Option<Notifier>, UsageError> {
    if common.notify_url.is_empty() {
        return Ok(None);
    }
    let formats = formats(&common.notify_format, common.notify_url.len())?;
    let webhooks = common
        .notify_url
        .iter()
        .zip(formats)
        .enumerate()
        .map(|(index, (url, format))| {
            Ok(Webhook {
                url: parse_url(url, index)?,
                format,
            })
        })
        .collect::<Result<Vec<_>, UsageError>>()?;
    let secret = match &common.notify_secret_file {
        Some(path) => Some(
            cairn::remote::login_key::read_secret_file(path, "--notify-secret-file")
                .map(|line| Zeroizing::new(line.as_bytes().to_vec()))
                .map_err(|error| UsageError(format!("{error}. Nothing was locked.")))?,
        ),
        None if webhooks.iter().any(|w| w.format == Format::Json) => {
            return Err(UsageError(
                "--notify-url: JSON notifications are signed: give --notify-secret-file FILE (mode 0600, the shared secret on its first line; `notify_secret_file` in the config file), or --notify-format slack. Nothing was locked.".into(),
            ))
        }
        None => None,
    };
    let policy = Policy {
        timeout: common.notify_timeout.unwrap_or(Policy::default().timeout),
        ..Policy::default()
    };
    Notifier::new(webhooks, secret, policy)
        .map(Some)
        .map_err(|error| UsageError(error.to_string()))
}

/// One format per URL: none (all JSON), one (for all), or one per URL in the same order.
fn formats(given: &[String], urls: usize) -> Result<Vec<Format>, UsageError> {
    let parsed = given
        .iter()
        .map(|f| Format::parse(f).map_err(|e| UsageError(format!("--notify-format: {e}."))))
        .collect::<Result<Vec<_>, _>>()?;
    match parsed.len() {
        0 => Ok(vec![Format::Json; urls]),
        1 => Ok(vec![parsed[0]; urls]),
        n if n == urls => Ok(parsed),
        n => Err(UsageError(format!(
            "--notify-format was given {n} times for {urls} --notify-url: give it once (for every URL) or once per URL, in the same order."
        ))),
    }
}

/// An http(s) URL; the message numbers it rather than printing it (it may hold a token).
fn parse_url(text: &str, index: usize) -> Result<reqwest::Url, UsageError> {
    reqwest::Url::parse(text)
        .ok()
        .filter(|url| matches!(url.scheme(), "http" | "https") && url.host_str().is_some())
        .ok_or_else(|| {
            UsageError(format!(
                "--notify-url number {} is not an http:// or https:// URL; fix it (or `notify_url` in the config file).",
                index + 1
            ))
        })
}

/// What a run that ended with `event` (a `run_finished`) tells its webhooks.
pub(crate) fn notification(event: &Event, stored_bytes: Option<u64>) -> Option<Notification> {
    let Event::RunFinished {
        operation,
        deployment,
        exit_code,
        duration_seconds,
        artifact,
        ..
    } = event
    else {
        return None;
    };
    Some(Notification {
        event_line: to_json_line(event, chrono::Utc::now()),
        summary: Summary {
            deployment: deployment.clone(),
            operation: operation.clone(),
            exit_code: *exit_code,
            backup: artifact.as_deref().map(backup_name),
            duration_seconds: *duration_seconds,
            stored_bytes,
        },
    })
}

/// The last part of a backup's location: its id in a store, its directory's name.
fn backup_name(location: &str) -> String {
    location
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or(location)
        .to_string()
}

/// Sends `notification` to the run's webhooks, if any: one warning line per webhook that did
/// not take it. Returns within the policy's bound.
pub(crate) async fn send(notification: Option<Notification>) {
    let (Some(notifier), Some(notification)) = (NOTIFIER.get(), notification) else {
        return;
    };
    SENT.store(true, Ordering::SeqCst);
    for failure in notifier.send(&notification).await {
        tracing::warn!("{failure}");
    }
}

/// What a run is, known from its flags before it starts: for the notification of a run that
/// stopped on a fatal error.
pub(crate) struct Subject {
    /// `backup`, `restore`, …, `drill`.
    operation: String,
    /// `--deployment`, the director's `--host`, the drill's target, else the inventory file.
    deployment: String,
    /// When the command started.
    started_at: chrono::DateTime<chrono::Utc>,
}

impl Subject {
    /// The subject of `command`; `None` for commands that never notify.
    pub(crate) fn of(command: &super::args::Command) -> Option<Subject> {
        use super::args::Command;
        let path = |p: &Option<std::path::PathBuf>| p.as_ref().map(|p| p.display().to_string());
        let (operation, deployment) = match command {
            Command::Deployment(args) => (
                args.action.name(),
                args.deployment
                    .clone()
                    .or_else(|| args.all_deployments.then(|| "--all-deployments".into()))
                    .or_else(|| path(&args.inventory)),
            ),
            Command::Director(args) => (args.action.name(), args.host.clone()),
            Command::Drill(args) => (
                "drill",
                args.target_deployment
                    .clone()
                    .or_else(|| path(&args.target_inventory)),
            ),
            _ => return None,
        };
        Some(Subject {
            operation: operation.to_string(),
            deployment: deployment.unwrap_or_default(),
            started_at: chrono::Utc::now(),
        })
    }
}

/// Notifies a run that ended on a fatal `error` (exit code 1) before sending its own
/// notification; nothing when it sent one or has no webhooks.
pub(crate) async fn send_fatal(subject: Subject, error: &anyhow::Error) {
    if SENT.load(Ordering::SeqCst) || NOTIFIER.get().is_none() {
        return;
    }
    let event = Event::RunFinished {
        operation: subject.operation,
        deployment: subject.deployment,
        exit_code: 1,
        duration_seconds: (chrono::Utc::now() - subject.started_at).num_milliseconds() as f64
            / 1000.0,
        artifact: None,
        errors: vec![format!("{error:#}")],
    };
    send(notification(&event, None)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_pair_with_urls() {
        let words = |w: &[&str]| w.iter().map(ToString::to_string).collect::<Vec<_>>();
        assert_eq!(formats(&[], 2).unwrap(), [Format::Json, Format::Json]);
        assert_eq!(
            formats(&words(&["slack"]), 2).unwrap(),
            [Format::Slack, Format::Slack]
        );
        assert_eq!(
            formats(&words(&["json", "slack"]), 2).unwrap(),
            [Format::Json, Format::Slack]
        );
        let error = formats(&words(&["json", "slack"]), 3).unwrap_err().0;
        assert!(error.contains("once per URL"), "{error}");
        assert!(formats(&words(&["xml"]), 1).is_err());
    }

    #[test]
    fn bad_urls_are_refused_without_being_printed() {
        for bad in ["ftp://h/x", "hooks.slack.com/services/SECRET", ""] {
            let error = parse_url(bad, 1).unwrap_err().0;
            assert!(error.starts_with("--notify-url number 2"), "{error}");
            assert!(!error.contains("SECRET"));
        }
        assert!(parse_url("https://hooks.example.com/x", 0).is_ok());
    }

    #[test]
    fn the_backup_is_named_by_the_last_part_of_its_location() {
        assert_eq!(
            backup_name("s3://bucket/prefix/cf/20240102T030405Z"),
            "20240102T030405Z"
        );
        assert_eq!(
            backup_name("/backups/cf_20240102T030405Z/"),
            "cf_20240102T030405Z"
        );
    }
}
