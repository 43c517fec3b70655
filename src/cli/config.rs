//! The config file (`--config FILE` or `CAIRN_CONFIG`, TOML): defaults for the flags an
//! operator would otherwise repeat in every nightly job.
//!
//! Precedence, highest first: command-line flags, environment variables (`CAIRN_STORE`), the
//! config file, built-in defaults. The file holds no secrets — credentials stay in each cloud's
//! own environment variables, and a secret's *file* may be named (`password_file`, mode 0600) —
//! and `cairn config show` prints the effective settings with every
//! credential variable masked.
//!
//! ```toml
//! store = "s3://backups/cf?region=eu-west-1"
//! compression = "zstd:3"
//! segment_size = "1GiB"      # --segment-size, for backups into a store
//! resumable = false          # --resumable, for backups into a store
//! instance_checksums = false # --instance-checksums (backup, drill)
//! full_read = false          # --full-read, for backups into a repository (repo+...)
//! parallelism = 10
//! restore_parallelism = 1    # --restore-parallelism (restore, drill)
//! inventory = "/etc/cairn/inventory.yml"
//! known_hosts = "/etc/cairn/known_hosts"
//! metrics_file = "/var/lib/node_exporter/textfile/cairn.prom"
//! script_timeout = "2h"      # --script-timeout
//! stall_timeout = "5m"       # --stall-timeout
//! keepalive_interval = "30s" # --keepalive-interval
//! signing_key = "/etc/cairn/backup.key"          # --signing-key (backup, drill, prune, delete)
//! trusted_keys = ["/etc/cairn/backup.pub"]       # --trusted-key (restore, drill, verify, prune, delete)
//! password_file = "/etc/cairn/director.secret"   # --password-file (deployment mode; below BOSH_CLIENT_SECRET)
//! private_key_passphrase_file = "/etc/cairn/ssh.passphrase"  # --private-key-passphrase-file
//! repository_password_file = "/etc/cairn/repo.secret"  # --repository-password-file (repo+ stores)
//! encrypt_to = ["age1..."]                       # --encrypt-to, for backups into a store
//! require_encryption = true                      # --require-encryption
//! allow_unencrypted = false                      # --allow-unencrypted
//! notify_url = ["https://hooks.example.com/cairn"] # --notify-url (a string or a list)
//! notify_format = "json"                         # --notify-format (a string or a list)
//! notify_secret_file = "/etc/cairn/notify.secret"  # --notify-secret-file
//! notify_timeout = "10s"                         # --notify-timeout
//!
//! [timeouts]                 # a limit per script name (beats --script-timeout)
//! metadata = "1m"
//! pre-backup-lock = "5m"
//!
//! [timeouts.jobs.postgres]   # a job's own limits (beat everything else)
//! backup = "8h"
//! stall = "30m"              # its streams' own --stall-timeout
//!
//! [director]
//! retry_attempts = 5
//! retry_total = "2m"
//!
//! [retention]
//! keep_last = 7
//! keep_daily = 14
//! keep_weekly = 8
//! keep_monthly = 12
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use cairn::model::job::ScriptName;
use cairn::model::timeouts::ScriptTimeouts;
use serde::{Deserialize, Serialize};

use super::args::{Action, BackupsAction, Cli, Command, CommonArgs, DrillArgs, StoreArgs};

/// Default `--parallelism`.
pub(crate) const DEFAULT_PARALLELISM: usize = 10;
/// Default `--compression`.
pub(crate) const DEFAULT_COMPRESSION: &str = "zstd";

/// The config file.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ConfigFile {
    /// Default `--store`.
    pub store: Option<String>,
    /// Default `--compression`.
    pub compression: Option<String>,
    /// Default `--segment-size` of backups into a store (`512MiB`, `4GiB`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segment_size: Option<String>,
    /// `--resumable` for every backup into a store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resumable: Option<bool>,
    /// `--instance-checksums` for every backup (and a drill's backup).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_checksums: Option<bool>,
    /// `--full-read` for every backup into a repository.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub full_read: Option<bool>,
    /// Default `--parallelism`.
    pub parallelism: Option<usize>,
    /// Default `--restore-parallelism` (restore, drill).
    pub restore_parallelism: Option<usize>,
    /// Default `--inventory` (deployment mode).
    pub inventory: Option<PathBuf>,
    /// Default `--known-hosts`.
    pub known_hosts: Option<PathBuf>,
    /// Default `--metrics-file`.
    pub metrics_file: Option<PathBuf>,
    /// Default `--artifact-path` when no store is set.
    pub artifact_path: Option<PathBuf>,
    /// Default `--encrypt-to` recipients (public keys) of `backup` into a store.
    pub encrypt_to: Option<Vec<String>>,
    /// `backup --require-encryption`.
    pub require_encryption: Option<bool>,
    /// `--allow-unencrypted` of restore, drill, `backups verify` and `backups prune`.
    pub allow_unencrypted: Option<bool>,
    /// Default retention for `backups prune`.
    pub retention: Option<RetentionConfig>,
    /// Retries of Director requests (deployment mode).
    pub director: Option<DirectorSection>,
    /// Default `--script-timeout`.
    pub script_timeout: Option<DurationSetting>,
    /// Default `--stall-timeout`.
    pub stall_timeout: Option<DurationSetting>,
    /// Default `--keepalive-interval`.
    pub keepalive_interval: Option<DurationSetting>,
    /// Default `--signing-key` (backup, `backups prune` and `delete`).
    pub signing_key: Option<PathBuf>,
    /// Default `--trusted-key` values (restore, drill, `backups verify`, `prune`, `delete`).
    pub trusted_keys: Option<Vec<String>>,
    /// Default `--password-file` (deployment mode), used when neither `--password`,
    /// `--password-file` nor `BOSH_CLIENT_SECRET` gives the Director password.
    pub password_file: Option<PathBuf>,
    /// Default `--private-key-passphrase-file`.
    pub private_key_passphrase_file: Option<PathBuf>,
    /// Default `--repository-password-file` (a `repo+` store's password), when neither the
    /// flag nor `CAIRN_REPOSITORY_PASSWORD_FILE` names one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository_password_file: Option<PathBuf>,
    /// Default `--notify-url` values.
    pub notify_url: Option<OneOrMany>,
    /// Default `--notify-format` values.
    pub notify_format: Option<OneOrMany>,
    /// Default `--notify-secret-file`.
    pub notify_secret_file: Option<PathBuf>,
    /// Default `--notify-timeout`.
    pub notify_timeout: Option<DurationSetting>,
    /// `[timeouts]`: a limit per script name, and `[timeouts.jobs.<job>]` per job
    /// ([`cairn::model::timeouts`] has the precedence).
    pub timeouts: Option<toml::Table>,
    /// What `load` made of the settings above.
    #[serde(skip)]
    pub limits: Limits,
}

/// A duration as the file gives it: `"90s"`, `"30m"`, `"2h"`, or a number of seconds.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(untagged)]
pub(crate) enum DurationSetting {
    /// `"90s"`, `"30m"`, `"2h"`.
    Text(String),
    /// Seconds.
    Seconds(u64),
}

/// A setting that takes one word or a list: `"slack"` or `["json", "slack"]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(untagged)]
pub(crate) enum OneOrMany {
    /// One value.
    One(String),
    /// Several.
    Many(Vec<String>),
}

impl OneOrMany {
    /// The values, in order.
    pub(crate) fn to_vec(&self) -> Vec<String> {
        match self {
            OneOrMany::One(value) => vec![value.clone()],
            OneOrMany::Many(values) => values.clone(),
        }
    }
}

/// The file's time limits, checked and parsed by [`load`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Limits {
    /// `script_timeout`.
    pub script_timeout: Option<Duration>,
    /// `stall_timeout`.
    pub stall_timeout: Option<Duration>,
    /// `keepalive_interval`.
    pub keepalive_interval: Option<Duration>,
    /// `notify_timeout`.
    pub notify_timeout: Option<Duration>,
    /// `[timeouts]` (its `every_script` is left to `script_timeout` and the flag).
    pub timeouts: ScriptTimeouts,
}

/// `[director]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DirectorSection {
    /// `--director-retry-attempts`.
    pub retry_attempts: Option<u32>,
    /// `--director-retry-total`, as a duration (`90s`, `2m`).
    pub retry_total: Option<String>,
}

/// `[retention]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RetentionConfig {
    /// `--keep-last`.
    #[serde(default)]
    pub keep_last: u32,
    /// `--keep-daily`.
    #[serde(default)]
    pub keep_daily: u32,
    /// `--keep-weekly`.
    #[serde(default)]
    pub keep_weekly: u32,
    /// `--keep-monthly`.
    #[serde(default)]
    pub keep_monthly: u32,
}

/// A config-file mistake.
#[derive(Debug, thiserror::Error)]
#[error("Config file `{path}`: {detail}")]
pub(crate) struct ConfigError {
    path: PathBuf,
    detail: String,
}

/// Reads the config file named by `--config` or `CAIRN_CONFIG` (already merged by clap), if any.
///
/// # Errors
/// A missing or invalid file.
pub(crate) fn load(path: Option<&Path>) -> Result<ConfigFile, ConfigError> {
    let Some(path) = path else {
        return Ok(ConfigFile::default());
    };
    let error = |detail: String| ConfigError {
        path: path.to_path_buf(),
        detail,
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| error(format!("{e}; check --config or CAIRN_CONFIG")))?;
    let mut config: ConfigFile =
        toml::from_str(&text).map_err(|e| error(e.message().to_string()))?;
    if config.parallelism == Some(0) {
        return Err(error("parallelism must be at least 1".into()));
    }
    if config.restore_parallelism == Some(0) {
        return Err(error(
            "restore_parallelism must be at least 1 (1: bbr's order, one instance after another)"
                .into(),
        ));
    }
    if let Some(director) = &config.director {
        if director.retry_attempts == Some(0) {
            return Err(error(
                "[director] retry_attempts must be at least 1 (1: no retry)".into(),
            ));
        }
        if let Some(total) = &director.retry_total {
            super::args::parse_duration(total)
                .map_err(|e| error(format!("[director] retry_total: {e}")))?;
        }
    }
    config.limits = limits(&config).map_err(error)?;
    Ok(config)
}

/// Checks and parses the file's durations and `[timeouts]`.
fn limits(config: &ConfigFile) -> Result<Limits, String> {
    let setting = |name: &str, value: &Option<DurationSetting>| {
        value
            .as_ref()
            .map(|value| duration(name, value))
            .transpose()
    };
    Ok(Limits {
        script_timeout: setting("script_timeout", &config.script_timeout)?,
        stall_timeout: setting("stall_timeout", &config.stall_timeout)?,
        keepalive_interval: setting("keepalive_interval", &config.keepalive_interval)?,
        notify_timeout: setting("notify_timeout", &config.notify_timeout)?,
        timeouts: config
            .timeouts
            .as_ref()
            .map(script_timeouts)
            .transpose()?
            .unwrap_or_default(),
    })
}

fn duration(name: &str, value: &DurationSetting) -> Result<Duration, String> {
    let text = match value {
        DurationSetting::Text(text) => text.clone(),
        DurationSetting::Seconds(seconds) => seconds.to_string(),
    };
    super::args::parse_duration(&text).map_err(|detail| format!("{name}: {detail}"))
}

/// `[timeouts]`: script names with durations, and `jobs`, a table of job names, each a table
/// of script names with durations.
fn script_timeouts(table: &toml::Table) -> Result<ScriptTimeouts, String> {
    let mut timeouts = ScriptTimeouts::default();
    for (key, value) in table {
        if key == "jobs" {
            let jobs = value.as_table().ok_or(
                "[timeouts] jobs must be a table of job names, e.g. [timeouts.jobs.postgres]",
            )?;
            for (job, scripts) in jobs {
                let scripts = scripts.as_table().ok_or_else(|| {
                    format!("[timeouts.jobs.{job}] must be a table of script names and durations")
                })?;
                let section = format!("[timeouts.jobs.{job}]");
                let mut scripts = scripts.clone();
                if let Some(stall) = scripts.remove("stall") {
                    let setting = stall.try_into::<DurationSetting>().map_err(|_| {
                        format!(
                            "{section} stall must be a duration like \"90s\", \"30m\" or \"2h\""
                        )
                    })?;
                    let stall = duration(&format!("{section} stall"), &setting)?;
                    timeouts.per_job_stall.insert(job.clone(), stall);
                }
                let limits = script_limits(&section, &scripts)?;
                timeouts.per_job.insert(job.clone(), limits);
            }
        } else {
            let (script, limit) = script_limit("[timeouts]", key, value)?;
            timeouts.per_script.insert(script, limit);
        }
    }
    Ok(timeouts)
}

/// Script names with durations, in the table named `section`.
fn script_limits(
    section: &str,
    table: &toml::Table,
) -> Result<BTreeMap<ScriptName, Duration>, String> {
    table
        .iter()
        .map(|(key, value)| script_limit(section, key, value))
        .collect()
}

/// One `script = duration` line of the table named `section`.
fn script_limit(
    section: &str,
    key: &str,
    value: &toml::Value,
) -> Result<(ScriptName, Duration), String> {
    let script = ScriptName::from_file_name(key).ok_or_else(|| {
        let names: Vec<&str> = ScriptName::ALL.iter().map(|s| s.file_name()).collect();
        format!(
            "{section} `{key}` is not a script name; use one of {}",
            names.join(", ")
        )
    })?;
    let setting = value.clone().try_into::<DurationSetting>().map_err(|_| {
        format!("{section} {key} must be a duration like \"90s\", \"30m\" or \"2h\"")
    })?;
    Ok((script, duration(&format!("{section} {key}"), &setting)?))
}

/// Fills every flag the command line left unset from the config file, then the defaults.
pub(crate) fn apply(cli: &mut Cli, config: &ConfigFile) {
    match &mut cli.command {
        Command::Deployment(args) => {
            if args.inventory.is_none() {
                args.inventory.clone_from(&config.inventory);
            }
            if args.password_file.is_none() && args.password.is_none() {
                args.password_file.clone_from(&config.password_file);
            }
            if let Some(director) = &config.director {
                args.director_retry_attempts =
                    args.director_retry_attempts.or(director.retry_attempts);
                if args.director_retry_total.is_none() {
                    args.director_retry_total = director
                        .retry_total
                        .as_deref()
                        .and_then(|total| super::args::parse_duration(total).ok());
                }
            }
            apply_common(&mut args.common, config);
            apply_action(&mut args.action, config);
        }
        Command::Director(args) => {
            apply_common(&mut args.common, config);
            apply_action(&mut args.action, config);
        }
        Command::Drill(args) => {
            args.allow_unencrypted |= config.allow_unencrypted.unwrap_or(false);
            args.restore_parallelism = args.restore_parallelism.or(config.restore_parallelism);
            apply_common(&mut args.common, config);
            apply_trust(&mut args.trust, config);
            apply_repository_password(&mut args.store, config);
            if args.backup.is_none() && args.latest.is_none() {
                apply_signing(&mut args.signing, config);
                apply_drill_backup(args, config);
            }
        }
        Command::Repo(args) => apply_store(&mut args.store, config),
        Command::Backups(args) => {
            apply_store(&mut args.store, config);
            apply_backups_keys(&mut args.action, config);
            if let BackupsAction::Prune {
                keep_last,
                keep_daily,
                keep_weekly,
                keep_monthly,
                ..
            } = &mut args.action
            {
                let none_given = [*keep_last, *keep_daily, *keep_weekly, *keep_monthly]
                    .iter()
                    .all(|k| *k == 0);
                if let (true, Some(retention)) = (none_given, &config.retention) {
                    *keep_last = retention.keep_last;
                    *keep_daily = retention.keep_daily;
                    *keep_weekly = retention.keep_weekly;
                    *keep_monthly = retention.keep_monthly;
                }
            }
        }
        _ => {}
    }
}

fn apply_common(common: &mut CommonArgs, config: &ConfigFile) {
    if common.known_hosts.is_none() {
        common.known_hosts.clone_from(&config.known_hosts);
    }
    if common.metrics_file.is_none() {
        common.metrics_file.clone_from(&config.metrics_file);
    }
    if common.private_key_passphrase_file.is_none() {
        common
            .private_key_passphrase_file
            .clone_from(&config.private_key_passphrase_file);
    }
    common.parallelism = common
        .parallelism
        .or(config.parallelism)
        .or(Some(DEFAULT_PARALLELISM));
    let limits = &config.limits;
    common.script_timeout = common.script_timeout.or(limits.script_timeout);
    common.stall_timeout = common.stall_timeout.or(limits.stall_timeout);
    common.keepalive_interval = common.keepalive_interval.or(limits.keepalive_interval);
    common.notify_timeout = common.notify_timeout.or(limits.notify_timeout);
    // The file's webhooks count only when no --notify-url was given; so do its formats.
    if common.notify_url.is_empty() {
        common.notify_url = config
            .notify_url
            .as_ref()
            .map(OneOrMany::to_vec)
            .unwrap_or_default();
    }
    if common.notify_format.is_empty() {
        common.notify_format = config
            .notify_format
            .as_ref()
            .map(OneOrMany::to_vec)
            .unwrap_or_default();
    }
    if common.notify_secret_file.is_none() {
        common
            .notify_secret_file
            .clone_from(&config.notify_secret_file);
    }
    common.timeouts = limits.timeouts.clone();
}

/// `trusted_keys` from the file, when no `--trusted-key` was given.
fn apply_trust(trust: &mut super::trust::TrustArgs, config: &ConfigFile) {
    if trust.trusted_key.is_empty() {
        trust.trusted_key = config.trusted_keys.clone().unwrap_or_default();
    }
}

/// `signing_key` from the file, when no `--signing-key` was given.
fn apply_signing(signing: &mut super::trust::SigningArgs, config: &ConfigFile) {
    if signing.signing_key.is_none() {
        signing.signing_key.clone_from(&config.signing_key);
    }
}

/// The keys of `backups verify`, `delete`, `prune`, `list`, `show` and `report`, and
/// `allow_unencrypted` of `verify` and `prune`.
fn apply_backups_keys(action: &mut BackupsAction, config: &ConfigFile) {
    let allow_unencrypted = config.allow_unencrypted.unwrap_or(false);
    match action {
        BackupsAction::Verify {
            trust,
            allow_unencrypted: allow,
            ..
        } => {
            apply_trust(trust, config);
            *allow |= allow_unencrypted;
        }
        BackupsAction::Prune {
            trust,
            signing,
            allow_unencrypted: allow,
            ..
        } => {
            apply_trust(trust, config);
            apply_signing(signing, config);
            *allow |= allow_unencrypted;
        }
        BackupsAction::Delete { trust, signing, .. } => {
            apply_trust(trust, config);
            apply_signing(signing, config);
        }
        BackupsAction::List { trust, .. }
        | BackupsAction::Show { trust, .. }
        | BackupsAction::Report { trust, .. } => apply_trust(trust, config),
    }
}

/// A drill that takes a new backup into a store writes it as a nightly backup would: the
/// file's `compression` and `segment_size` apply (the drill's store itself comes only from
/// its flags: a config `store` must not turn a directory drill into a store drill).
fn apply_drill_backup(args: &mut DrillArgs, config: &ConfigFile) {
    args.instance_checksums |= config.instance_checksums.unwrap_or(false);
    if args.store.url(args.artifact_path.is_none()).is_none() {
        return;
    }
    if args.compression.is_none() {
        args.compression.clone_from(&config.compression);
    }
    if args.segment_size.is_none() {
        args.segment_size.clone_from(&config.segment_size);
    }
}

/// The store from the file counts only when neither `--store` nor `CAIRN_STORE` is set; so
/// does its repository password file.
fn apply_store(store: &mut StoreArgs, config: &ConfigFile) {
    let env_set = std::env::var("CAIRN_STORE").is_ok_and(|v| !v.is_empty());
    if store.store.is_none() && !env_set {
        store.store.clone_from(&config.store);
    }
    apply_repository_password(store, config);
}

/// `repository_password_file` from the file, when neither `--repository-password-file` nor
/// `CAIRN_REPOSITORY_PASSWORD_FILE` names one.
fn apply_repository_password(store: &mut StoreArgs, config: &ConfigFile) {
    if store.repository_password_file().is_none() {
        store
            .repository_password_file
            .clone_from(&config.repository_password_file);
    }
}

fn apply_action(action: &mut Action, config: &ConfigFile) {
    match action {
        Action::Backup(backup) => {
            if backup.artifact_path.is_none() {
                apply_store(&mut backup.store, config);
                if backup.store.url(true).is_none() {
                    backup.artifact_path.clone_from(&config.artifact_path);
                }
            }
            apply_signing(&mut backup.signing, config);
            backup.require_encryption |= config.require_encryption.unwrap_or(false);
            let into_store = backup.store.url(backup.artifact_path.is_none()).is_some();
            if backup.encrypt_to.is_empty() && into_store {
                backup.encrypt_to = config.encrypt_to.clone().unwrap_or_default();
            }
            if backup.segment_size.is_none() && into_store {
                backup.segment_size.clone_from(&config.segment_size);
            }
            backup.resumable |= into_store && config.resumable.unwrap_or(false);
            backup.instance_checksums |= config.instance_checksums.unwrap_or(false);
            let into_repository = backup
                .store
                .url(backup.artifact_path.is_none())
                .is_some_and(|url| url.starts_with("repo+"));
            backup.full_read |= into_repository && config.full_read.unwrap_or(false);
            if backup.compression.is_none() {
                backup.compression = Some(
                    config
                        .compression
                        .clone()
                        .unwrap_or_else(|| DEFAULT_COMPRESSION.into()),
                );
            }
        }
        Action::Restore(restore) => {
            restore.allow_unencrypted |= config.allow_unencrypted.unwrap_or(false);
            restore.restore_parallelism =
                restore.restore_parallelism.or(config.restore_parallelism);
            if restore.artifact_path.is_none() {
                apply_store(&mut restore.store, config);
            }
            apply_trust(&mut restore.trust, config);
        }
        Action::PreBackupCheck(check) => apply_store(&mut check.store, config),
        _ => {}
    }
}

/// Credential variables `config show` reports (masked) when set.
const CREDENTIAL_VARIABLES: [&str; 11] = [
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
    "AZURE_STORAGE_CONNECTION_STRING",
    "AZURE_STORAGE_KEY",
    "AZURE_STORAGE_SAS_TOKEN",
    "AZURE_CLIENT_SECRET",
    "GOOGLE_APPLICATION_CREDENTIALS",
    "BOSH_CLIENT_SECRET",
    "CAIRN_STORE",
];

/// Runs `cairn config show`; returns the exit code.
pub(crate) fn show_command(path: Option<&Path>, config: &ConfigFile) -> i32 {
    super::output::print_bytes(show(path, config).as_bytes())
}

/// `cairn config show`: the effective settings (file, then environment) as TOML, secrets masked.
#[must_use]
pub(crate) fn show(path: Option<&Path>, config: &ConfigFile) -> String {
    let mut effective = config.clone();
    if let Ok(store) = std::env::var("CAIRN_STORE") {
        effective.store = Some(store);
    }
    effective.parallelism = effective.parallelism.or(Some(DEFAULT_PARALLELISM));
    // A webhook's path or query may be its credential (Slack's is): scheme and host only.
    effective.notify_url = effective.notify_url.map(|urls| {
        OneOrMany::Many(
            urls.to_vec()
                .iter()
                .map(|url| {
                    reqwest::Url::parse(url).map_or_else(
                        |_| "(not a URL)".to_string(),
                        |url| cairn::report::notify::redacted(&url),
                    )
                })
                .collect(),
        )
    });
    effective.compression = effective
        .compression
        .or_else(|| Some(DEFAULT_COMPRESSION.into()));
    let source = path.map_or_else(|| "none".to_string(), |p| p.display().to_string());
    let mut text = format!(
        "# config file: {source}\n# flags override these settings; CAIRN_STORE overrides `store`\n"
    );
    text.push_str(&toml::to_string(&effective).expect("config serializes"));
    text.push_str("\n# credentials in the environment (values never shown)\n");
    for variable in CREDENTIAL_VARIABLES {
        let state = if std::env::var_os(variable).is_some() {
            "set (masked)"
        } else {
            "not set"
        };
        text.push_str(&format!("# {variable}: {state}\n"));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::args::{DeploymentArgs, RestoreArgs};
    use clap::Parser;

    fn parse(args: &[&str]) -> Cli {
        let mut argv = vec!["cairn"];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv).unwrap()
    }

    fn file() -> ConfigFile {
        toml::from_str(
            "store = \"file:///from-config\"\ncompression = \"zstd:9\"\nparallelism = 4\ninventory = \"/etc/inv.yml\"\n[retention]\nkeep_last = 3\n",
        )
        .unwrap()
    }

    #[test]
    fn the_file_fills_what_flags_leave_unset() {
        let mut cli = parse(&["deployment", "backup"]);
        apply(&mut cli, &file());
        let Command::Deployment(args) = cli.command else {
            panic!()
        };
        assert_eq!(args.inventory.as_deref(), Some(Path::new("/etc/inv.yml")));
        assert_eq!(args.common.parallelism, Some(4));
        let Action::Backup(backup) = args.action else {
            panic!()
        };
        assert_eq!(backup.compression.as_deref(), Some("zstd:9"));
        if std::env::var("CAIRN_STORE").is_err() {
            assert_eq!(backup.store.store.as_deref(), Some("file:///from-config"));
        }
    }

    #[test]
    fn the_repository_password_file_comes_from_the_flag_then_the_file() {
        if std::env::var_os("CAIRN_REPOSITORY_PASSWORD_FILE").is_some() {
            return;
        }
        let config: ConfigFile =
            toml::from_str("repository_password_file = \"/etc/cairn/repo.secret\"\n").unwrap();
        let password_file = |args: &[&str]| {
            let mut cli = parse(args);
            apply(&mut cli, &config);
            match cli.command {
                Command::Backups(backups) => backups.store.repository_password_file,
                Command::Repo(repo) => repo.store.repository_password_file,
                Command::Drill(drill) => drill.store.repository_password_file,
                Command::Deployment(args) => match args.action {
                    Action::Backup(backup) => backup.store.repository_password_file,
                    Action::Restore(restore) => restore.store.repository_password_file,
                    _ => panic!(),
                },
                _ => panic!(),
            }
        };
        let from_file = Some(PathBuf::from("/etc/cairn/repo.secret"));
        for args in [
            &["backups", "list"][..],
            &["repo", "check"],
            &["deployment", "backup"],
            &["deployment", "restore", "--latest"],
            &["drill", "--target-inventory", "t.yml", "--latest", "d"],
        ] {
            assert_eq!(password_file(args), from_file, "{args:?}");
        }
        assert_eq!(
            password_file(&["backups", "--repository-password-file", "/mine", "list"]),
            Some(PathBuf::from("/mine"))
        );
        assert_eq!(
            password_file(&["repo", "check", "--repository-password-file", "/mine"]),
            Some(PathBuf::from("/mine"))
        );
    }

    #[test]
    fn flags_override_the_file_and_defaults_come_last() {
        let mut cli = parse(&[
            "deployment",
            "--inventory",
            "/mine.yml",
            "--parallelism",
            "2",
            "backup",
            "--compression",
            "none",
            "-a",
            "/tmp",
        ]);
        apply(&mut cli, &file());
        let Command::Deployment(args) = cli.command else {
            panic!()
        };
        assert_eq!(args.inventory.as_deref(), Some(Path::new("/mine.yml")));
        assert_eq!(args.common.parallelism, Some(2));
        let Action::Backup(backup) = args.action else {
            panic!()
        };
        assert_eq!(backup.compression.as_deref(), Some("none"));
        assert!(
            backup.store.store.is_none(),
            "an explicit --artifact-path wins over the file's store"
        );

        let mut bare = parse(&["deployment", "backup"]);
        apply(&mut bare, &ConfigFile::default());
        let Command::Deployment(args) = bare.command else {
            panic!()
        };
        assert_eq!(args.common.parallelism, Some(DEFAULT_PARALLELISM));
        let Action::Backup(backup) = args.action else {
            panic!()
        };
        assert_eq!(backup.compression.as_deref(), Some(DEFAULT_COMPRESSION));
    }

    #[test]
    fn restore_parallelism_comes_from_the_flag_then_the_file_and_zero_is_refused() {
        let config: ConfigFile = toml::from_str("restore_parallelism = 3\n").unwrap();
        let restore_parallelism = |args: &[&str]| {
            let mut cli = parse(args);
            apply(&mut cli, &config);
            match cli.command {
                Command::Deployment(DeploymentArgs {
                    action: Action::Restore(restore),
                    ..
                }) => restore.restore_parallelism,
                Command::Drill(drill) => drill.restore_parallelism,
                _ => panic!(),
            }
        };
        assert_eq!(
            restore_parallelism(&["deployment", "restore", "-a", "/b"]),
            Some(3)
        );
        assert_eq!(
            restore_parallelism(&[
                "deployment",
                "restore",
                "-a",
                "/b",
                "--restore-parallelism",
                "2"
            ]),
            Some(2)
        );
        assert_eq!(
            restore_parallelism(&["drill", "--target-inventory", "t.yml", "-a", "/b"]),
            Some(3)
        );
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("cairn.toml");
        std::fs::write(&path, "restore_parallelism = 0\n").unwrap();
        let error = load(Some(&path)).unwrap_err().to_string();
        assert!(
            error.contains("restore_parallelism must be at least 1"),
            "{error}"
        );
    }

    #[test]
    fn retention_comes_from_the_file_only_when_no_keep_flag_is_given() {
        let mut cli = parse(&["backups", "--store", "file:///s", "prune", "-d", "cf"]);
        apply(&mut cli, &file());
        let Command::Backups(args) = cli.command else {
            panic!()
        };
        let BackupsAction::Prune { keep_last, .. } = args.action else {
            panic!()
        };
        assert_eq!(keep_last, 3);
        let mut cli = parse(&[
            "backups",
            "--store",
            "file:///s",
            "prune",
            "-d",
            "cf",
            "--keep-daily",
            "2",
        ]);
        apply(&mut cli, &file());
        let Command::Backups(args) = cli.command else {
            panic!()
        };
        let BackupsAction::Prune {
            keep_last,
            keep_daily,
            ..
        } = args.action
        else {
            panic!()
        };
        assert_eq!((keep_last, keep_daily), (0, 2));
    }

    #[test]
    fn full_read_from_the_file_applies_to_repositories_only() {
        let backup = |file: &str, args: &[&str]| {
            let config: ConfigFile = toml::from_str(file).unwrap();
            let mut cli = parse(args);
            apply(&mut cli, &config);
            match cli.command {
                Command::Deployment(DeploymentArgs {
                    action: Action::Backup(backup),
                    ..
                }) => backup,
                other => panic!("{other:?}"),
            }
        };
        let into_repository = backup(
            "store = \"repo+file:///r\"\nfull_read = true\n",
            &["deployment", "backup"],
        );
        assert!(into_repository.full_read);
        let into_store = backup(
            "store = \"file:///s\"\nfull_read = true\n",
            &["deployment", "backup"],
        );
        assert!(!into_store.full_read);
        let unset = backup("store = \"repo+file:///r\"\n", &["deployment", "backup"]);
        assert!(!unset.full_read);
    }

    #[test]
    fn encryption_settings_come_from_the_file() {
        let config: ConfigFile = toml::from_str(
            "store = \"file:///s\"\nencrypt_to = [\"age1from-config\"]\nrequire_encryption = true\nallow_unencrypted = true\n",
        )
        .unwrap();
        let backup = |args: &[&str]| {
            let mut cli = parse(args);
            apply(&mut cli, &config);
            match cli.command {
                Command::Deployment(DeploymentArgs {
                    action: Action::Backup(backup),
                    ..
                }) => backup,
                other => panic!("{other:?}"),
            }
        };
        let from_file = backup(&["deployment", "backup"]);
        assert!(from_file.require_encryption);
        assert_eq!(from_file.encrypt_to, ["age1from-config"]);
        let flag = backup(&["deployment", "backup", "--encrypt-to", "age1flag"]);
        assert_eq!(flag.encrypt_to, ["age1flag"], "the flag wins");
        // A directory backup is never encrypted: the file's recipients are not used for it.
        let directory = backup(&["deployment", "backup", "--artifact-path", "/tmp"]);
        assert!(directory.encrypt_to.is_empty() && directory.require_encryption);

        let mut cli = parse(&["deployment", "restore", "--latest"]);
        apply(&mut cli, &config);
        let Command::Deployment(DeploymentArgs {
            action: Action::Restore(restore),
            ..
        }) = cli.command
        else {
            panic!()
        };
        assert!(restore.allow_unencrypted);
        for args in [
            &["backups", "verify", "cf/20240102T030405Z"][..],
            &["backups", "prune", "-d", "cf", "--keep-last", "1"][..],
        ] {
            let mut cli = parse(args);
            apply(&mut cli, &config);
            let Command::Backups(backups) = cli.command else {
                panic!()
            };
            assert!(
                matches!(
                    backups.action,
                    BackupsAction::Verify {
                        allow_unencrypted: true,
                        ..
                    } | BackupsAction::Prune {
                        allow_unencrypted: true,
                        ..
                    }
                ),
                "{args:?}"
            );
        }
        let mut cli = parse(&["drill", "--target-inventory", "t.yml", "--latest", "cf"]);
        apply(&mut cli, &config);
        let Command::Drill(drill) = cli.command else {
            panic!()
        };
        assert!(drill.allow_unencrypted);
        // Unset in the file: nothing is required or allowed.
        let mut cli = parse(&["deployment", "restore", "--latest"]);
        apply(&mut cli, &file());
        assert!(matches!(
            cli.command,
            Command::Deployment(DeploymentArgs {
                action: Action::Restore(RestoreArgs {
                    allow_unencrypted: false,
                    ..
                }),
                ..
            })
        ));
    }

    #[test]
    fn bad_files_are_refused_with_their_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cairn.toml");
        std::fs::write(&path, "stor = \"typo\"\n").unwrap();
        let error = load(Some(&path)).unwrap_err().to_string();
        assert!(
            error.contains("cairn.toml") && error.contains("stor"),
            "{error}"
        );
        assert!(load(Some(Path::new("/nonexistent/cairn.toml"))).is_err());
    }

    fn load_text(text: &str) -> Result<ConfigFile, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cairn.toml");
        std::fs::write(&path, text).unwrap();
        load(Some(&path))
    }

    #[test]
    fn time_limits_come_from_the_file_and_flags_override_them() {
        let config = load_text(
            "script_timeout = \"2h\"\nstall_timeout = 30\nkeepalive_interval = \"10s\"\n\
             [timeouts]\npre-backup-lock = \"5m\"\n\
             [timeouts.jobs.database]\npre-backup-lock = \"3s\"\nbackup = \"8h\"\nstall = \"30m\"\n",
        )
        .unwrap();
        let mut cli = parse(&["deployment", "--stall-timeout", "9s", "backup"]);
        apply(&mut cli, &config);
        let Command::Deployment(args) = cli.command else {
            panic!()
        };
        let common = &args.common;
        assert_eq!(
            common.stall_timeout(),
            Duration::from_secs(9),
            "the flag wins"
        );
        assert_eq!(common.keepalive_interval, Some(Duration::from_secs(10)));
        let timeouts = common.script_timeouts();
        assert_eq!(timeouts.every_script, Some(Duration::from_secs(7200)));
        let limit = |job, script| timeouts.limit(job, script).unwrap().duration;
        assert_eq!(
            limit("database", ScriptName::PreBackupLock),
            Duration::from_secs(3)
        );
        assert_eq!(
            limit("database", ScriptName::Backup),
            Duration::from_secs(8 * 3600)
        );
        assert_eq!(
            limit("app", ScriptName::PreBackupLock),
            Duration::from_secs(300)
        );
        assert_eq!(limit("app", ScriptName::Backup), Duration::from_secs(7200));
        assert_eq!(
            timeouts.stall_limit("database", common.stall_timeout()),
            Duration::from_secs(1800),
            "the job's own stall limit beats the flag for that job"
        );
        assert_eq!(
            timeouts.stall_limit("app", common.stall_timeout()),
            Duration::from_secs(9)
        );
        // Without the file: the defaults.
        let mut bare = parse(&["drill", "--target-inventory", "/t.yml"]);
        apply(&mut bare, &ConfigFile::default());
        let common = bare.command.common().unwrap();
        assert_eq!(
            common.stall_timeout(),
            cairn::workflow::DEFAULT_STALL_TIMEOUT
        );
        assert_eq!(common.script_timeouts(), ScriptTimeouts::default());
    }

    #[test]
    fn bad_time_limits_are_refused_with_what_to_write() {
        for (text, expected) in [
            (
                "[timeouts]\nbakup = \"1h\"\n",
                "[timeouts] `bakup` is not a script name; use one of metadata, pre-backup-lock",
            ),
            (
                "[timeouts.jobs.db]\nbackup = \"soon\"\n",
                "[timeouts.jobs.db] backup: `soon` is not a duration like 90s",
            ),
            (
                "[timeouts.jobs.db]\nbackup = true\n",
                "[timeouts.jobs.db] backup must be a duration like \"90s\"",
            ),
            (
                "[timeouts]\njobs = 3\n",
                "[timeouts] jobs must be a table of job names",
            ),
            (
                "stall_timeout = \"0s\"\n",
                "stall_timeout: the timeout must be at least 1 second",
            ),
        ] {
            let error = load_text(text).unwrap_err().to_string();
            assert!(error.contains(expected), "{text}: {error}");
        }
    }

    #[test]
    fn director_retries_come_from_the_file_unless_flags_give_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cairn.toml");
        std::fs::write(
            &path,
            "[director]\nretry_attempts = 3\nretry_total = \"90s\"\n",
        )
        .unwrap();
        let config = load(Some(&path)).unwrap();
        let deployment = |args: &[&str]| {
            let mut cli = parse(args);
            apply(&mut cli, &config);
            match cli.command {
                Command::Deployment(args) => args.director_retry(),
                _ => unreachable!(),
            }
        };
        let from_file = deployment(&["deployment", "-d", "x", "backup"]);
        assert_eq!(from_file.attempts, 3);
        assert_eq!(from_file.total, std::time::Duration::from_secs(90));
        let from_flags = deployment(&[
            "deployment",
            "-d",
            "x",
            "--director-retry-attempts",
            "7",
            "--director-retry-total",
            "5m",
            "backup",
        ]);
        assert_eq!(from_flags.attempts, 7);
        assert_eq!(from_flags.total, std::time::Duration::from_secs(300));
        let mut cli = parse(&["deployment", "-d", "x", "backup"]);
        apply(&mut cli, &ConfigFile::default());
        let Command::Deployment(args) = cli.command else {
            unreachable!()
        };
        assert_eq!(
            args.director_retry(),
            cairn::target::bosh::RetryPolicy::default()
        );
        for bad in [
            "retry_attempts = 0",
            "retry_total = \"soon\"",
            "retries = 3",
        ] {
            std::fs::write(&path, format!("[director]\n{bad}\n")).unwrap();
            let error = load(Some(&path)).unwrap_err().to_string();
            assert!(error.contains("cairn.toml"), "{bad}: {error}");
        }
    }

    #[test]
    fn secret_files_come_from_the_file_below_flags_and_the_environment() {
        let config: ConfigFile = toml::from_str(
            "password_file = \"/etc/cairn/director.secret\"\nprivate_key_passphrase_file = \"/etc/cairn/ssh.passphrase\"\n",
        )
        .unwrap();
        let deployment = |args: &[&str]| {
            let mut cli = parse(args);
            apply(&mut cli, &config);
            match cli.command {
                Command::Deployment(args) => args,
                _ => unreachable!(),
            }
        };
        if std::env::var("BOSH_CLIENT_SECRET").is_err() {
            let from_file = deployment(&["deployment", "-d", "x", "backup"]);
            assert_eq!(
                from_file.password_file.as_deref(),
                Some(Path::new("/etc/cairn/director.secret"))
            );
            assert_eq!(
                from_file.common.private_key_passphrase_file.as_deref(),
                Some(Path::new("/etc/cairn/ssh.passphrase"))
            );
        }
        let given = deployment(&["deployment", "-d", "x", "-p", "secret", "backup"]);
        assert_eq!(
            given.password_file, None,
            "a password given wins over the file's"
        );
        let flag = deployment(&[
            "deployment",
            "--password-file",
            "/mine",
            "--private-key-passphrase-file",
            "/my.passphrase",
            "backup",
        ]);
        assert_eq!(flag.password_file.as_deref(), Some(Path::new("/mine")));
        assert_eq!(
            flag.common.private_key_passphrase_file.as_deref(),
            Some(Path::new("/my.passphrase"))
        );
    }

    #[test]
    fn keys_of_signed_backups_come_from_the_file_unless_flags_give_them() {
        let config: ConfigFile = toml::from_str(
            "signing_key = \"/etc/cairn/backup.key\"\ntrusted_keys = [\"/etc/cairn/backup.pub\"]\n",
        )
        .unwrap();
        let mut cli = parse(&["deployment", "backup"]);
        apply(&mut cli, &config);
        let Command::Deployment(args) = cli.command else {
            panic!()
        };
        let Action::Backup(backup) = args.action else {
            panic!()
        };
        assert_eq!(
            backup.signing.signing_key.as_deref(),
            Some(Path::new("/etc/cairn/backup.key"))
        );
        let mut cli = parse(&["deployment", "restore", "--trusted-key", "cairn-ed25519:00"]);
        apply(&mut cli, &config);
        let Command::Deployment(args) = cli.command else {
            panic!()
        };
        let Action::Restore(restore) = args.action else {
            panic!()
        };
        assert_eq!(
            restore.trust.trusted_key,
            vec!["cairn-ed25519:00"],
            "the flag wins"
        );
        let mut cli = parse(&["backups", "prune", "-d", "cf"]);
        apply(&mut cli, &config);
        let Command::Backups(args) = cli.command else {
            panic!()
        };
        let BackupsAction::Prune { trust, signing, .. } = args.action else {
            panic!()
        };
        assert_eq!(trust.trusted_key, vec!["/etc/cairn/backup.pub"]);
        assert!(signing.signing_key.is_some());
        let mut cli = parse(&["drill", "--target-inventory", "/t.yml"]);
        apply(&mut cli, &config);
        let Command::Drill(args) = cli.command else {
            panic!()
        };
        assert_eq!(args.trust.trusted_key, vec!["/etc/cairn/backup.pub"]);
        assert!(
            args.signing.signing_key.is_some(),
            "a drill signs its new backup"
        );
        let mut cli = parse(&["drill", "--target-inventory", "/t.yml", "--latest", "cf"]);
        apply(&mut cli, &config);
        let Command::Drill(args) = cli.command else {
            panic!()
        };
        assert!(
            args.signing.signing_key.is_none(),
            "a drill of a stored backup takes none"
        );
    }

    #[test]
    fn instance_checksums_in_the_file_applies_to_backups_and_drills() {
        let backup_asks = |config: &ConfigFile, argv: &[&str]| {
            let mut cli = parse(argv);
            apply(&mut cli, config);
            let Command::Deployment(args) = cli.command else {
                panic!()
            };
            let Action::Backup(backup) = args.action else {
                panic!()
            };
            backup.instance_checksums
        };
        let on = load_text("instance_checksums = true\n").unwrap();
        let off = load_text("instance_checksums = false\n").unwrap();
        let backup = ["deployment", "backup", "-a", "/b"];
        assert!(backup_asks(&on, &backup));
        assert!(!backup_asks(&off, &backup));
        assert!(
            !backup_asks(&ConfigFile::default(), &backup),
            "off by default"
        );
        let mut flagged = backup.to_vec();
        flagged.push("--instance-checksums");
        assert!(backup_asks(&off, &flagged), "the flag asks for it");
        let mut cli = parse(&["drill", "--target-inventory", "/t.yml", "-a", "/b"]);
        apply(&mut cli, &on);
        let Command::Drill(drill) = cli.command else {
            panic!()
        };
        assert!(drill.instance_checksums, "a drill's backup too");
    }

    #[test]
    fn a_drill_into_a_store_writes_its_backup_with_the_files_segment_size_and_compression() {
        let config = load_text("segment_size = \"4GiB\"\ncompression = \"zstd:9\"\n").unwrap();
        let drill = |argv: &[&str]| {
            let mut cli = parse(argv);
            apply(&mut cli, &config);
            let Command::Drill(args) = cli.command else {
                panic!()
            };
            (args.segment_size, args.compression)
        };
        let into_store = [
            "drill",
            "--target-inventory",
            "/t.yml",
            "--store",
            "file:///s",
        ];
        assert_eq!(
            drill(&into_store),
            (Some("4GiB".into()), Some("zstd:9".into()))
        );
        let mut flags = into_store.to_vec();
        flags.extend(["--segment-size", "8MiB"]);
        assert_eq!(drill(&flags).0.as_deref(), Some("8MiB"), "the flag wins");
        assert_eq!(
            drill(&["drill", "--target-inventory", "/t.yml", "-a", "/b"]),
            (None, None),
            "a directory drill keeps one .tar per artifact"
        );
        let stored = [
            "drill",
            "--target-inventory",
            "/t.yml",
            "--store",
            "file:///s",
            "--latest",
            "cf",
        ];
        assert_eq!(
            drill(&stored),
            (None, None),
            "a drill of a stored backup writes none"
        );
    }

    #[test]
    fn webhooks_come_from_the_file_unless_flags_give_them() {
        let config = load_text(
            "notify_url = [\"https://a.example/x\", \"https://hooks.slack.com/services/T/B/T0K3N\"]\n\
             notify_format = \"slack\"\nnotify_secret_file = \"/etc/cairn/notify.secret\"\n\
             notify_timeout = \"3s\"\n",
        )
        .unwrap();
        let common = |args: &[&str]| {
            let mut cli = parse(args);
            apply(&mut cli, &config);
            match cli.command {
                Command::Deployment(args) => args.common,
                other => panic!("{other:?}"),
            }
        };
        let from_file = common(&["deployment", "backup"]);
        assert_eq!(from_file.notify_url.len(), 2);
        assert_eq!(from_file.notify_format, ["slack"]);
        assert_eq!(
            from_file.notify_secret_file.as_deref(),
            Some(Path::new("/etc/cairn/notify.secret"))
        );
        assert_eq!(from_file.notify_timeout, Some(Duration::from_secs(3)));
        let flags = common(&[
            "deployment",
            "--notify-url",
            "https://mine.example/",
            "--notify-timeout",
            "9s",
            "backup",
        ]);
        assert_eq!(flags.notify_url, ["https://mine.example/"], "the flag wins");
        assert_eq!(flags.notify_timeout, Some(Duration::from_secs(9)));
        let shown = show(None, &config);
        assert!(!shown.contains("T0K3N"), "{shown}");
        assert!(shown.contains("https://hooks.slack.com/…"), "{shown}");
        let error = load_text("notify_timeout = \"soon\"\n")
            .unwrap_err()
            .to_string();
        assert!(error.contains("notify_timeout"), "{error}");
    }

    #[test]
    fn show_masks_credentials() {
        let text = show(None, &file());
        assert!(text.contains("parallelism = 4"));
        assert!(!text.contains("testing"), "no credential value is printed");
        assert!(text.contains("# AWS_SECRET_ACCESS_KEY: "));
    }
}
