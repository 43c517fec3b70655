//! `cairn drill`: turns flags into a [`cairn::workflow::drill`] run, writes the report files and
//! prints the summary (or the JSON report with `--json`).

use anyhow::Context;
use cairn::format::bbr_directory::sink::BbrDirectorySink;
use cairn::format::encryption::{Identities, Recipients};
use cairn::format::repository::read::RepositorySource;
use cairn::format::repository::write::RepositorySink;
use cairn::format::store::write::Signing;
use cairn::format::store::{StoreSink, StoreSource};
use cairn::model::deployment::Target;
use cairn::remote::dial::Dialer;
use cairn::target::inventory::Inventory;
use cairn::target::ssh::{HostKeyOptions, SshTarget};
use cairn::workflow::drill::{drill, DrillReport, DrillSource};
use cairn::workflow::RunContext;
use cairn::RunErrors;
use std::sync::Arc;

use super::args::{DrillArgs, UsageError};
use super::connect::{host_keys, open_proxy, DirectorLogin};

fn load_target(
    path: &std::path::Path,
    host_keys: &HostKeyOptions,
    dialer: Option<&Arc<dyn Dialer>>,
) -> anyhow::Result<Box<dyn Target>> {
    let inventory = Inventory::load(path)?;
    Ok(Box::new(
        SshTarget::from_inventory(&inventory, path, None, host_keys)?.with_dialer(dialer),
    ))
}

/// The Director of the BOSH_* environment, connected once for both sides of a drill.
struct Directors {
    dialer: Option<Arc<dyn Dialer>>,
    client: Option<Arc<cairn::target::bosh::DirectorClient>>,
}

impl Directors {
    async fn deployment(&mut self, name: &str) -> anyhow::Result<Box<dyn Target>> {
        if self.client.is_none() {
            let login = DirectorLogin::from_env()?;
            self.client = Some(Arc::new(login.connect(self.dialer.clone()).await?));
        }
        let client = Arc::clone(self.client.as_ref().expect("connected"));
        Ok(Box::new(cairn::target::bosh::BoshTarget::new(
            client,
            name,
            self.dialer.clone(),
        )))
    }
}

/// Runs `cairn drill ...`; returns the exit code.
pub(crate) async fn run(args: DrillArgs) -> anyhow::Result<i32> {
    let host_keys = host_keys(&args.common);
    let dialer = open_proxy(&args.common).await?;
    let mut directors = Directors {
        dialer: dialer.clone(),
        client: None,
    };
    let target = match (&args.target_inventory, &args.target_deployment) {
        (Some(path), _) => load_target(path, &host_keys, dialer.as_ref())?,
        (None, Some(name)) => directors.deployment(name).await?,
        (None, None) => unreachable!("clap requires one"),
    };
    let store_url = args.store.url(args.artifact_path.is_none());
    let existing = args.backup.is_some() || args.latest.is_some();
    check_flags(&args, store_url.is_some(), existing)?;
    let recipients = Recipients::parse(&args.encrypt_to).map_err(UsageError)?;
    let identities = Identities::load(&args.identity)
        .map_err(UsageError)?
        .allowing_unencrypted(args.allow_unencrypted);
    let source_target = source_target(&args, existing, &host_keys, &dialer, &mut directors).await?;
    // A new backup of a BOSH deployment keeps its manifest, as `backup --with-manifest`, so
    // that the restore compares releases and instance groups with the drill deployment.
    let manifest = match (&args.source_deployment, &directors.client, existing) {
        (Some(name), Some(client), false) => Some(client.manifest(name).await?),
        _ => None,
    };
    let source = drill_source(
        &args,
        manifest,
        source_target.as_deref(),
        store_url.as_deref(),
        recipients,
        identities,
    )
    .await?;
    let context = context(&args, source_target.as_deref(), target.name());
    let signals = super::signals::watch(context.clone());
    let (report, errors) = drill(source, target.as_ref(), &context).await;
    signals.abort();
    let exit_code = write_report(&args, &report, &errors)?;
    super::notify::send(notification(&report, exit_code)).await;
    Ok(exit_code)
}

/// What the webhooks of `--notify-url` hear of a drill: a `run_finished` event of operation
/// `drill` on the deployment restored into, naming the backup restored.
fn notification(
    report: &DrillReport,
    exit_code: i32,
) -> Option<cairn::report::notify::Notification> {
    let event = cairn::report::events::Event::RunFinished {
        operation: "drill".into(),
        deployment: report.target_deployment.clone(),
        exit_code,
        duration_seconds: (chrono::Utc::now() - report.started_at).num_milliseconds() as f64
            / 1000.0,
        artifact: report.backup.as_ref().map(|b| b.location.clone()),
        errors: report.errors.clone(),
    };
    let stored_bytes = report.backup.as_ref().map(|b| b.stored_bytes);
    super::notify::notification(&event, stored_bytes)
}

/// The flag combinations clap cannot refuse by itself.
fn check_flags(args: &DrillArgs, has_store: bool, existing: bool) -> anyhow::Result<()> {
    if existing && !has_store {
        anyhow::bail!(UsageError(
            "--backup and --latest read a backup from a store: give --store URL (or CAIRN_STORE)."
                .into()
        ));
    }
    if args.artifact_path.is_some() && args.store.store.is_some() {
        anyhow::bail!(UsageError(
            "Give either --artifact-path or --store, not both.".into()
        ));
    }
    let repository = args
        .store
        .url(args.artifact_path.is_none())
        .is_some_and(|url| url.starts_with("repo+"));
    if repository && !args.encrypt_to.is_empty() {
        anyhow::bail!(UsageError(
            "--encrypt-to encrypts a backup in a plain store; a repository (repo+) encrypts everything with its password already.".into()
        ));
    }
    if !args.encrypt_to.is_empty() {
        if !has_store {
            anyhow::bail!(super::args::encrypt_needs_store());
        }
        if existing {
            anyhow::bail!(UsageError(
                "--encrypt-to encrypts the drill's new backup; with --backup or --latest no backup is taken.".into()
            ));
        }
    }
    if existing && args.signing.signing_key.is_some() {
        anyhow::bail!(UsageError(
            "--signing-key signs the drill's new backup; with --backup or --latest no backup is taken.".into()
        ));
    }
    Ok(())
}

/// The deployment to back up first (none when the drill restores a stored backup).
async fn source_target(
    args: &DrillArgs,
    existing: bool,
    host_keys: &HostKeyOptions,
    dialer: &Option<Arc<dyn Dialer>>,
    directors: &mut Directors,
) -> anyhow::Result<Option<Box<dyn Target>>> {
    Ok(
        match (&args.source_inventory, &args.source_deployment, existing) {
            (Some(path), None, false) => Some(load_target(path, host_keys, dialer.as_ref())?),
            (None, Some(name), false) => Some(directors.deployment(name).await?),
            (None, None, false) => anyhow::bail!(UsageError(
                "--source-inventory or --source-deployment is required (or restore a stored backup with --backup ID or --latest DEPLOYMENT).".into()
            )),
            (_, _, true) => {
                if args.source_inventory.is_some() || args.source_deployment.is_some() {
                    anyhow::bail!(UsageError(
                        "--source-inventory and --source-deployment take a new backup; they cannot be combined with --backup or --latest.".into()
                    ));
                }
                None
            }
            (Some(_), Some(_), false) => unreachable!("clap refuses both"),
        },
    )
}

/// What the drill restores: a new backup of `source_target` (into the store or a bbr
/// directory), or the stored backup of `--backup`/`--latest`.
async fn drill_source<'a>(
    args: &DrillArgs,
    manifest: Option<String>,
    source_target: Option<&'a dyn Target>,
    store_url: Option<&str>,
    recipients: Option<Recipients>,
    identities: Identities,
) -> anyhow::Result<DrillSource<'a>> {
    let signing_key = match source_target {
        Some(_) => args.signing.load()?,
        None => None,
    };
    Ok(match (source_target, store_url) {
        (Some(source), Some(url)) if url.starts_with("repo+") => {
            if signing_key.is_some() {
                tracing::warn!("--signing-key does not apply to a repository (its snapshots are authenticated with the repository key); ignored");
            }
            DrillSource::NewBackup {
                target: source,
                sink: Arc::new(RepositorySink {
                    url: url.to_string(),
                    password: Arc::new(super::store::repository_password(&args.store)?),
                    // As a nightly backup: only the files changed since the parent are sent.
                    full_read: false,
                }),
                manifest,
            }
        }
        (Some(source), Some(url)) => {
            let mut sink = store_sink(url, args, recipients).await?;
            sink.identities = identities;
            sink.signing = signing_key.map(|key| Signing {
                key,
                seen: Some(super::trust::seen_backups()),
            });
            DrillSource::NewBackup {
                target: source,
                sink: Arc::new(sink),
                manifest,
            }
        }
        (Some(source), None) => DrillSource::NewBackup {
            target: source,
            sink: Arc::new(
                BbrDirectorySink::new(match &args.artifact_path {
                    Some(path) => path.clone(),
                    None => std::env::current_dir().context("Cannot read the current directory")?,
                })
                .with_signing(signing_key),
            ),
            manifest,
        },
        (None, Some(url)) => stored_source(args, url, identities).await?,
        (None, None) => unreachable!("checked above"),
    })
}

/// The backup of `--backup DEPLOYMENT/ID`, or the latest of `--latest DEPLOYMENT`.
async fn stored_source<'a>(
    args: &DrillArgs,
    url: &str,
    identities: Identities,
) -> anyhow::Result<DrillSource<'a>> {
    if url.starts_with("repo+") {
        return repository_source(args, url).await;
    }
    let store = cairn::format::store::open_store(url).await?;
    let trusted = args.trust.load()?;
    let (deployment, backup_id) = super::store::stored_backup_id(
        store.as_ref(),
        args.backup.as_deref(),
        args.latest.as_deref(),
        &trusted,
    )
    .await?;
    Ok(DrillSource::Stored {
        source: Arc::new(StoreSource {
            store,
            deployment: deployment.clone(),
            backup_id: backup_id.clone(),
            identities,
            trusted,
        }),
        deployment,
        backup_id,
    })
}

/// The backup of `--backup DEPLOYMENT/ID` or `--latest DEPLOYMENT` in a repository.
async fn repository_source<'a>(args: &DrillArgs, url: &str) -> anyhow::Result<DrillSource<'a>> {
    let password = super::store::repository_password(&args.store)?;
    let (deployment, backup_id) = match (args.backup.as_deref(), args.latest.as_deref()) {
        (Some(id), _) => super::store::split_backup_id(id, None)?,
        (None, Some(deployment)) => {
            let backups =
                cairn::format::repository::read::list_backups(url, &password, Some(deployment))
                    .await?;
            let Some(newest) = backups
                .into_iter()
                .max_by(|a, b| a.backup_id.cmp(&b.backup_id))
            else {
                anyhow::bail!(
                    "There is no complete backup of deployment {deployment} in {url}; see `cairn backups list` with the same --store"
                );
            };
            (deployment.to_string(), newest.backup_id)
        }
        (None, None) => unreachable!("--backup or --latest"),
    };
    Ok(DrillSource::Stored {
        source: Arc::new(RepositorySource {
            url: url.to_string(),
            password: Arc::new(password),
            deployment: deployment.clone(),
            backup_id: Some(backup_id.clone()),
        }),
        deployment,
        backup_id,
    })
}

/// The run's context, with the journal of the drill's backup (of the source deployment) and
/// of its restore (into the drill deployment, [`cairn::workflow::drill`]).
fn context(args: &DrillArgs, source_target: Option<&dyn Target>, target_name: &str) -> RunContext {
    let mut context = RunContext::new(
        args.common
            .parallelism
            .unwrap_or(super::config::DEFAULT_PARALLELISM),
        cairn::VERSION,
    );
    context.options.script_timeouts = args.common.script_timeouts();
    context.options.stall_timeout = args.common.stall_timeout();
    context.options.restore_parallelism = args.restore_parallelism.unwrap_or(1);
    context.options.instance_checksums = args.instance_checksums;
    context.repository_password_file = args.store.repository_password_file();
    let state_dir = cairn::workflow::journal::JournalFile::default_state_dir();
    let journaled = source_target.map_or(target_name, |source| source.name());
    context.journal = Some(cairn::workflow::journal::JournalFile::new(
        &state_dir, journaled,
    ));
    context
}

/// Writes the report files, prints the report; returns the exit code.
fn write_report(args: &DrillArgs, report: &DrillReport, errors: &RunErrors) -> anyhow::Result<i32> {
    let report_dir = match &args.report_dir {
        Some(dir) => dir.clone(),
        None => std::env::current_dir().context("Cannot read the current directory")?,
    };
    let stem = unused_stem(&report_dir, &report.file_stem());
    let json = serde_json::to_string_pretty(report)?;
    let written = std::fs::write(with_suffix(&stem, ".json"), format!("{json}\n"))
        .and_then(|()| std::fs::write(with_suffix(&stem, ".txt"), report.to_text()));
    if args.common.json {
        println!("{json}");
    } else {
        print!("{}", report.to_text());
    }
    let mut exit_code = if report.passed {
        0
    } else {
        errors.exit_code() | 1
    };
    match written {
        Ok(()) => eprintln!("Drill report written to {}.json and .txt", stem.display()),
        Err(error) => {
            eprintln!(
                "Cannot write the drill report to {}: {error}",
                report_dir.display()
            );
            exit_code |= 1;
        }
    }
    Ok(exit_code)
}

async fn store_sink(
    url: &str,
    args: &DrillArgs,
    encryption: Option<Recipients>,
) -> anyhow::Result<StoreSink> {
    super::store::store_sink(
        url,
        args.compression.as_deref(),
        args.segment_size.as_deref(),
        args.allow_unversioned,
        None,
        encryption,
    )
    .await
}

/// `DIR/STEM`, or `DIR/STEM-2`, `-3`... when a report of that name exists (two drills into
/// the same target within a second).
fn unused_stem(dir: &std::path::Path, stem: &str) -> std::path::PathBuf {
    let taken = |candidate: &std::path::Path| with_suffix(candidate, ".json").exists();
    let mut candidate = dir.join(stem);
    let mut n = 2;
    while taken(&candidate) {
        candidate = dir.join(format!("{stem}-{n}"));
        n += 1;
    }
    candidate
}

/// `PATH` + `suffix` (deployment names may contain dots, so not `with_extension`).
fn with_suffix(path: &std::path::Path, suffix: &str) -> std::path::PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    name.into()
}
