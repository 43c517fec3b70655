//! Turns parsed flags into a library call, and its result into output and an exit code.

use std::io::Write;

use anyhow::Context;
use cairn::format::bbr_directory::sink::{BbrDirectorySink, BbrDirectorySource};
use cairn::format::manifest::Compression;
use cairn::format::sink::{BackupSink, BackupSource};
use cairn::format::store::{StoreSink, StoreSource};
use cairn::model::deployment::Target;
use cairn::remote::all_proxy::AllProxy;
use cairn::remote::dial::NoProxy;
use cairn::remote::ssh::UnknownHost;
use cairn::report::events::{Event, JsonLines};
use cairn::report::metrics::RunSummary;
use cairn::target::bosh::{BoshTarget, DirectorClient, DirectorConfig};
use cairn::target::inventory::Inventory;
use cairn::target::ssh::{HostKeyOptions, SshTarget};
use cairn::workflow::backup::{backup, pre_backup_check, BackupOptions};
use cairn::workflow::cleanup::{cleanup, CleanupKind};
use cairn::workflow::restore::restore;
use cairn::workflow::RunContext;
use cairn::RunErrors;
use cairn_store::{ArtifactStore, Retention, RetentionMode};
use std::sync::{Arc, Mutex};

use super::args::{
    Action, BackupArgs, CommonArgs, DeploymentArgs, DirectorArgs, RestoreArgs, RetentionModeArg,
    UsageError,
};

/// Which mode the subcommand runs in, for messages.
enum Mode {
    Deployment,
    Director,
}

/// Runs `cairn deployment ...`; returns the exit code.
pub async fn deployment(args: DeploymentArgs) -> anyhow::Result<i32> {
    args.validate()?;
    let dialer = open_proxy(&args.common).await?;
    if let Some(inventory_path) = &args.inventory {
        let inventory = Inventory::load(inventory_path)?;
        let target = SshTarget::from_inventory(
            &inventory,
            inventory_path,
            args.deployment.clone(),
            &host_keys(&args.common),
        )?
        .with_dialer(dialer);
        return run_action(&target, args.action, &args.common, Mode::Deployment, None).await;
    }
    let client = Arc::new(connect_director(&args, dialer.clone()).await?);
    if args.all_deployments {
        return super::all_deployments::run(&args, &client).await;
    }
    let name = args.deployment.clone().unwrap_or_default();
    let manifest = match &args.action {
        Action::Backup(backup) if backup.with_manifest => Some(client.manifest(&name).await?),
        _ => None,
    };
    let target = BoshTarget::new(client, &name, dialer);
    run_action(
        &target,
        args.action,
        &args.common,
        Mode::Deployment,
        manifest,
    )
    .await
}

/// `BOSH_ALL_PROXY`, opened (for `ssh+socks5://`, connected to the jumpbox).
pub async fn open_proxy(
    common: &CommonArgs,
) -> anyhow::Result<Option<Arc<dyn cairn::remote::dial::Dialer>>> {
    let Some(proxy) = AllProxy::from_env()? else {
        return Ok(None);
    };
    let policy = host_keys(common).policy(UnknownHost::Refuse);
    Ok(Some(proxy.open(policy, NoProxy::from_env()).await?))
}

/// The Director of `--target`, logged in with `--username`/`--password` and `--ca-cert`
/// (or `CA_CERT`, which wins over `BOSH_CA_CERT`).
async fn connect_director(
    args: &DeploymentArgs,
    dialer: Option<Arc<dyn cairn::remote::dial::Dialer>>,
) -> anyhow::Result<DirectorClient> {
    let login = DirectorLogin {
        target: args.target.clone().unwrap_or_default(),
        client: args.username.clone().unwrap_or_default(),
        secret: args.password.clone().unwrap_or_default(),
        ca_cert: args.ca_cert.clone(),
    };
    login.connect(dialer).await
}

/// Where a Director is and how to log in to it.
pub struct DirectorLogin {
    /// `--target`.
    pub target: String,
    /// `--username`.
    pub client: String,
    /// `--password`.
    pub secret: String,
    /// `--ca-cert` (else `CA_CERT`, else `BOSH_CA_CERT`).
    pub ca_cert: Option<String>,
}

impl DirectorLogin {
    /// From `BOSH_ENVIRONMENT`, `BOSH_CLIENT`, `BOSH_CLIENT_SECRET` (and the CA variables).
    pub fn from_env() -> anyhow::Result<DirectorLogin> {
        let var = |name: &str| {
            std::env::var(name)
                .ok()
                .filter(|v| !v.is_empty())
                .ok_or_else(|| {
                    UsageError(format!("{name} is required to reach the BOSH Director."))
                })
        };
        Ok(DirectorLogin {
            target: var("BOSH_ENVIRONMENT")?,
            client: var("BOSH_CLIENT")?,
            secret: var("BOSH_CLIENT_SECRET")?,
            ca_cert: None,
        })
    }

    /// Reads `/info` and logs in.
    pub async fn connect(
        self,
        dialer: Option<Arc<dyn cairn::remote::dial::Dialer>>,
    ) -> anyhow::Result<DirectorClient> {
        let url = cairn::target::bosh::director_url(&self.target)?;
        let ca = self
            .ca_cert
            .or_else(|| std::env::var("CA_CERT").ok())
            .or_else(|| std::env::var("BOSH_CA_CERT").ok());
        let ca_cert_pem = ca
            .as_deref()
            .map(cairn::target::bosh::read_ca_cert)
            .transpose()?;
        let config = DirectorConfig {
            url,
            client: self.client,
            secret: self.secret,
            ca_cert_pem,
            dialer,
        };
        Ok(DirectorClient::connect(&config).await?)
    }
}

/// Runs `cairn director ...`; returns the exit code.
pub async fn director(args: DirectorArgs) -> anyhow::Result<i32> {
    args.validate()?;
    let host = args.host.clone().unwrap_or_default();
    let username = args.username.clone().unwrap_or_default();
    let key = args.private_key_path.clone().unwrap_or_default();
    let dialer = open_proxy(&args.common).await?;
    let target =
        SshTarget::director(&host, &username, &key, &host_keys(&args.common)).with_dialer(dialer);
    run_action(&target, args.action, &args.common, Mode::Director, None).await
}

fn host_keys(common: &CommonArgs) -> HostKeyOptions {
    HostKeyOptions {
        known_hosts: common.known_hosts.clone(),
        skip_check: common.insecure_skip_host_key_check,
    }
}

async fn run_action(
    target: &dyn Target,
    action: Action,
    common: &CommonArgs,
    mode: Mode,
    manifest: Option<String>,
) -> anyhow::Result<i32> {
    let parallelism = common
        .parallelism
        .unwrap_or(super::config::DEFAULT_PARALLELISM);
    let mut context = RunContext::new(parallelism, cairn::VERSION);
    context.options.script_timeout = common.script_timeout;
    if let Action::Restore(restore_args) = &action {
        context.options.verify_restore = restore_args.verify;
    }
    if matches!(action, Action::Backup(_) | Action::BackupCleanup) {
        let state_dir = cairn::workflow::journal::JournalFile::default_state_dir();
        context.journal = Some(cairn::workflow::journal::JournalFile::new(
            &state_dir,
            target.name(),
        ));
    }
    if common.json {
        context.events = Some(Arc::new(JsonLines(Mutex::new(std::io::stdout()))));
    } else if std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("CAIRN_NO_PROGRESS").is_none()
    {
        context.events = Some(Arc::new(super::progress::TerminalProgress::new()));
    }
    let signals = super::signals::watch(context.clone());
    let started_at = chrono::Utc::now();
    let operation = action.name();
    context.emit(Event::RunStarted {
        operation: operation.to_string(),
        deployment: target.name().to_string(),
        cairn_version: cairn::VERSION.to_string(),
    });
    let mut stored_bytes = None;
    let mut artifact = None;
    let human = Human {
        to_stderr: common.json || action.prints_plan(),
    };
    let errors = match action {
        Action::PreBackupCheck(check) => {
            let (mut errors, plan) = pre_backup_check(target, &context).await;
            if let Some(url) = check.store.url(true) {
                if let Err(error) = check_store(&url, target.name()).await {
                    errors.push(error);
                }
            }
            match (check.plan, plan) {
                (true, Some(plan)) if common.json => context.emit(Event::Plan {
                    plan: Box::new(plan),
                }),
                (true, Some(plan)) if check.dot => print!("{}", plan.to_dot()),
                (true, Some(plan)) => print!("{}", plan.to_text()),
                _ => {}
            }
            print_check_result(target.name(), &mode, &errors, &human);
            errors
        }
        Action::Backup(backup_args) => {
            if backup_args.with_manifest && manifest.is_none() {
                tracing::warn!(
                    "--with-manifest: an inventory has no deployment manifest; none is saved"
                );
            }
            let (sink, journal_store) = backup_sink(&backup_args).await?;
            let options = BackupOptions {
                sink,
                unsafe_lock_free: backup_args.unsafe_lock_free,
                manifest,
                started_at: chrono::Utc::now(),
            };
            context.journal_store = journal_store;
            let report = backup(target, &options, &context).await;
            if let (Some(location), true) = (&report.artifact, report.complete) {
                tracing::info!("Backup written to {location}");
            }
            stored_bytes = Some(report.stored_bytes);
            artifact = report.artifact.clone().filter(|_| report.complete);
            report.errors
        }
        Action::Restore(restore_args) => {
            let source = restore_source(&restore_args, target.name()).await?;
            let report = restore(target, source.as_ref(), &context).await;
            for check in &report.verifications {
                human.say(&cairn::workflow::drill::verification_line(check));
            }
            report.errors
        }
        Action::BackupCleanup => {
            // Journals kept in the store (CAIRN_STORE) are reported and cleared too.
            if let Some(url) = std::env::var("CAIRN_STORE").ok().filter(|u| !u.is_empty()) {
                context.journal_store = Some(cairn::format::store::open_store(&url).await?);
            }
            let errors = cleanup(target, CleanupKind::Backup, &context).await;
            if errors.is_empty() {
                human.say(&format!("'{}' cleaned up", target.name()));
            }
            errors
        }
        Action::RestoreCleanup => {
            let errors = cleanup(target, CleanupKind::Restore, &context).await;
            if errors.is_empty() {
                human.say(&format!("'{}' cleaned up", target.name()));
            }
            errors
        }
    };
    signals.abort();
    let exit_code = report_errors(&errors, cleanup_advice_subcommand(&errors));
    context.emit(Event::RunFinished {
        operation: operation.to_string(),
        deployment: target.name().to_string(),
        exit_code,
        duration_seconds: (chrono::Utc::now() - started_at).num_milliseconds() as f64 / 1000.0,
        artifact,
        errors: errors.errors().iter().map(ToString::to_string).collect(),
    });
    if let Some(path) = &common.metrics_file {
        let summary = RunSummary {
            deployment: target.name().to_string(),
            operation: operation.to_string(),
            started_at,
            finished_at: chrono::Utc::now(),
            exit_code,
            // A failed backup stored nothing worth graphing; leave the size out.
            stored_bytes: stored_bytes.filter(|_| exit_code == 0),
            scripts: context.scripts(),
        };
        if let Err(error) = cairn::report::metrics::write(path, &summary) {
            eprintln!("{error}");
            return Ok(exit_code | 1);
        }
    }
    Ok(exit_code)
}

async fn check_store(url: &str, deployment: &str) -> Result<(), cairn::Error> {
    let store = cairn::format::store::open_store(url).await?;
    cairn::catalog::check_writable(store.as_ref(), deployment).await
}

/// Where `backup` writes, and the store that also keeps the run journal (backups into a store).
async fn backup_sink(
    args: &BackupArgs,
) -> anyhow::Result<(Arc<dyn BackupSink>, Option<Arc<dyn ArtifactStore>>)> {
    let Some(url) = args.store.url(args.artifact_path.is_none()) else {
        let parent = match &args.artifact_path {
            Some(path) => path.clone(),
            None => std::env::current_dir().context("Cannot read the current directory")?,
        };
        return Ok((Arc::new(BbrDirectorySink::new(parent)), None));
    };
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
    let sink = store_sink(
        &url,
        args.compression.as_deref(),
        args.allow_unversioned,
        retention,
        encryption,
    )
    .await?;
    let store = Arc::clone(&sink.store);
    Ok((Arc::new(sink), Some(store)))
}

/// A backup into the store at `url` (shared by `backup` and `cairn drill`).
pub async fn store_sink(
    url: &str,
    compression: Option<&str>,
    allow_unversioned: bool,
    retention: Option<Retention>,
    encryption: Option<cairn::format::encryption::Recipients>,
) -> anyhow::Result<StoreSink> {
    let store = cairn::format::store::open_store(url).await?;
    Ok(StoreSink {
        store,
        compression: Compression::parse(compression.unwrap_or(super::config::DEFAULT_COMPRESSION))
            .map_err(UsageError)?,
        retention,
        require_versioning: if allow_unversioned {
            None
        } else {
            cairn::format::store::versioning_command(url)
        },
        encryption,
        identities: cairn::format::encryption::Identities::default(),
    })
}

async fn restore_source(
    args: &RestoreArgs,
    target_name: &str,
) -> anyhow::Result<Arc<dyn BackupSource>> {
    let Some(url) = args.store.url(args.artifact_path.is_none()) else {
        if !args.identity.is_empty() {
            tracing::warn!("--identity is ignored: a bbr directory backup is never encrypted");
        }
        return Ok(Arc::new(BbrDirectorySource::new(
            args.artifact_path.clone().unwrap_or_default(),
        )));
    };
    let identities =
        cairn::format::encryption::Identities::load(&args.identity).map_err(UsageError)?;
    let store = cairn::format::store::open_store(&url).await?;
    let (deployment, backup_id) = match &args.backup {
        Some(id) => split_backup_id(id, Some(target_name))?,
        None => {
            let latest = cairn::format::store::latest_backup(store.as_ref(), target_name).await?;
            (target_name.to_string(), latest)
        }
    };
    Ok(Arc::new(StoreSource {
        store,
        deployment,
        backup_id,
        identities,
    }))
}

/// Splits `DEPLOYMENT/ID` (or `ID` with a default deployment).
pub fn split_backup_id(
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

/// Human-readable output: stdout, or stderr when stdout carries `--json` events.
struct Human {
    to_stderr: bool,
}

impl Human {
    fn say(&self, line: &str) {
        if self.to_stderr {
            eprintln!("{line}");
        } else {
            println!("{line}");
        }
    }
}

fn print_check_result(name: &str, mode: &Mode, errors: &RunErrors, human: &Human) {
    let time = chrono::Local::now().format("%H:%M:%S");
    let subject = match mode {
        Mode::Deployment => format!("Deployment '{name}'"),
        Mode::Director => "Director".to_string(),
    };
    if errors.is_empty() {
        human.say(&format!("[{time}] {subject} can be backed up."));
    } else {
        human.say(&format!("[{time}] {subject} cannot be backed up."));
        for line in errors.to_string().lines() {
            human.say(&format!("  {line}"));
        }
    }
}

fn cleanup_advice_subcommand(errors: &RunErrors) -> bool {
    errors
        .errors()
        .iter()
        .any(cairn::Error::needs_cleanup_advice)
}

/// Prints bbr's error report to stderr, writes `bbr-<time>.err.log`, returns the exit code.
pub fn report_errors(errors: &RunErrors, advise_cleanup: bool) -> i32 {
    if errors.is_empty() {
        return 0;
    }
    let mut stderr = std::io::stderr().lock();
    let _ = write!(stderr, "{errors}");
    if advise_cleanup {
        let _ = writeln!(stderr, "It is recommended that you run `bbr backup-cleanup` to ensure that any temp files are cleaned up and all jobs are unlocked.");
    }
    write_error_log(errors);
    errors.exit_code()
}

fn write_error_log(errors: &RunErrors) {
    let name = format!(
        "bbr-{}.err.log",
        chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    );
    let detail = format!("{errors}\n{errors:#?}\n");
    if std::fs::write(&name, &detail).is_err() {
        eprintln!("{detail}");
    }
}
