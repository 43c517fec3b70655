//! The command line, shaped exactly like bbr's: `cairn deployment|director [global flags]
//! <subcommand> [subcommand flags]` (bbr-facts §1), plus Cairn's own flags.
//!
//! Flags people type on either side of the subcommand are clap globals: `--config` anywhere, a
//! mode's shared flags (`--debug`, `--json`, `--metrics-file`, ...: [`CommonArgs`]) before or
//! after `backup`, and `--store`, `--debug`, `--parallelism` before or after `backups list`.
//! bbr's own forms (its flags between the mode and the subcommand) parse as before.
//!
//! Required flags are checked by hand, not by clap, so the messages and the exit code (1) are
//! bbr's: `--target flag is required.`

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

// `super::trust` in `backups` (moved from here) names the same module as in this file.
use super::trust;

mod backups;
mod repo;

pub(crate) use backups::{BackupsAction, BackupsArgs};
pub(crate) use repo::{RepoAction, RepoArgs};

/// Backup and restore for BOSH deployments (bbr-compatible).
// The first line of the help says what Cairn is; invoked as `bbr` it keeps bbr's
// `BOSH Backup and Restore` (`help::command`).
#[derive(Debug, Parser)]
#[command(
    name = "cairn",
    about = "Cairn: backup and restore for BOSH-deployed platforms, a drop-in successor of bbr",
    disable_help_subcommand = true,
    disable_version_flag = true
)]
pub(crate) struct Cli {
    /// TOML config file with defaults for flags (docs/config.md).
    #[arg(long, global = true, env = "CAIRN_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// What to back up or restore.
    #[command(subcommand)]
    pub command: Command,
}

/// Top-level commands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Back up or restore a deployment (instances from --inventory FILE).
    Deployment(DeploymentArgs),
    /// Back up or restore a BOSH director VM over SSH.
    Director(DirectorArgs),
    /// List, show, verify and delete backups in an object store.
    Backups(BackupsArgs),
    /// Deduplicating repositories in restic's format (--store repo+URL): init, check.
    Repo(RepoArgs),
    /// Check that a job's bin/bbr scripts keep the job-script contract (scripts-contract/CONTRACT.md).
    Contract {
        /// What to do.
        #[command(subcommand)]
        action: ContractAction,
    },
    /// Restore drill: back up a deployment (or take a stored backup), restore it into another
    /// one, run each job's post-restore-verify and write a report with the recovery point and time.
    Drill(DrillArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff), generated from this command line.
    ///
    /// With --dir, write one page per command into DIR instead (cairn.1,
    /// cairn-deployment-backup.1, ...).
    Man {
        /// Write every command's page into this directory (created if missing) instead of
        /// printing the top-level page.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// Key pairs for signed backups (`keys generate`; docs/stores.md, "Signed backups").
    Keys {
        /// What to do.
        #[command(subcommand)]
        action: super::trust::KeysAction,
    },
    /// Show the effective configuration (config file and environment), secrets masked.
    Config {
        /// What to do.
        #[command(subcommand)]
        action: ConfigAction,
    },
    /// Shows help.
    #[command(visible_alias = "h")]
    Help,
    /// Shows the version.
    #[command(visible_alias = "v")]
    Version,
}

/// Flags every mode shares (Cairn's additions).
#[derive(Debug, Args)]
pub(crate) struct CommonArgs {
    /// Debug logs: every remote command and script output.
    #[arg(long, global = true)]
    pub debug: bool,
    /// known_hosts file to check host keys against; a jumpbox or director VM seen for the
    /// first time is recorded in it [default: ~/.ssh/known_hosts].
    #[arg(long, value_name = "FILE", global = true)]
    pub known_hosts: Option<PathBuf>,
    /// Do not check SSH host keys at all (unsafe: man-in-the-middle possible; a key seen once
    /// is still required again on every reconnect of the run).
    #[arg(long, global = true)]
    pub insecure_skip_host_key_check: bool,
    /// File whose first line is the passphrase of passphrase-protected SSH private keys
    /// (mode 0600; one passphrase for every key of the run).
    #[arg(long, value_name = "FILE", global = true)]
    pub private_key_passphrase_file: Option<PathBuf>,
    /// At most this many scripts or transfers at once [default: 10].
    #[arg(long, value_name = "N", global = true)]
    pub parallelism: Option<usize>,
    /// End any job script that runs longer than this (e.g. 90s, 30m, 2h) and fail the run
    /// cleanly: unlock scripts still run.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, global = true)]
    pub script_timeout: Option<std::time::Duration>,
    /// Stop an artifact copy that moved no byte for this long, drop the instance's SSH
    /// connection and fail the copy [default: 5m].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, global = true)]
    pub stall_timeout: Option<std::time::Duration>,
    /// Send an SSH keepalive after this long without data from a host; after 4 unanswered
    /// ones its connection counts as lost [default: 30s].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, global = true)]
    pub keepalive_interval: Option<std::time::Duration>,
    /// The config file's `[timeouts]`: limits per script name and per job (filled from the
    /// file by `config::apply`; no flag).
    #[arg(skip)]
    pub timeouts: cairn::model::timeouts::ScriptTimeouts,
    /// JSON-lines events on stdout (schema: docs/events.md); logs go to stderr.
    #[arg(long, global = true)]
    pub json: bool,
    /// Write a Prometheus textfile about this run here (node_exporter's textfile collector).
    #[arg(long, value_name = "PATH", global = true)]
    pub metrics_file: Option<PathBuf>,
    /// POST the run's final event to this webhook when the run ends (repeatable; never
    /// changes the run's result). Signed: see --notify-secret-file.
    #[arg(long, value_name = "URL", global = true)]
    pub notify_url: Vec<String>,
    /// What --notify-url receives: json (the run's final event) or slack (a Slack-compatible
    /// {"text": ...} summary). Once for every URL, or once per URL in the same order
    /// [default: json].
    #[arg(long, value_name = "FORMAT", global = true)]
    pub notify_format: Vec<String>,
    /// File whose first line is the secret notifications are signed with (HMAC-SHA256 of the
    /// body in the X-Cairn-Signature header; mode 0600). Needed for json notifications.
    #[arg(long, value_name = "FILE", global = true)]
    pub notify_secret_file: Option<PathBuf>,
    /// Time limit of one try of a notification (3 tries, 1 s then 2 s apart) [default: 10s].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, global = true)]
    pub notify_timeout: Option<std::time::Duration>,
}

impl CommonArgs {
    /// Every script's time limit: `[timeouts]` of the config file, then `--script-timeout`.
    pub(crate) fn script_timeouts(&self) -> cairn::model::timeouts::ScriptTimeouts {
        cairn::model::timeouts::ScriptTimeouts {
            every_script: self.script_timeout,
            ..self.timeouts.clone()
        }
    }

    /// `--stall-timeout`, else its default.
    pub(crate) fn stall_timeout(&self) -> std::time::Duration {
        self.stall_timeout
            .unwrap_or(cairn::workflow::DEFAULT_STALL_TIMEOUT)
    }
}

impl Command {
    /// The shared flags of the commands that reach instances.
    pub(crate) fn common(&self) -> Option<&CommonArgs> {
        match self {
            Command::Deployment(args) => Some(&args.common),
            Command::Director(args) => Some(&args.common),
            Command::Drill(args) => Some(&args.common),
            _ => None,
        }
    }
}

/// `cairn deployment` flags.
#[derive(Debug, Args)]
pub(crate) struct DeploymentArgs {
    /// BOSH Director URL.
    #[arg(short = 't', long, env = "BOSH_ENVIRONMENT", hide_env_values = true)]
    pub target: Option<String>,
    /// BOSH Director username (UAA client).
    #[arg(short = 'u', long, env = "BOSH_CLIENT", hide_env_values = true)]
    pub username: Option<String>,
    /// BOSH Director password (UAA client secret). On the command line it is visible in `ps`
    /// to every local user: prefer --password-file or the environment variable.
    #[arg(short = 'p', long, env = "BOSH_CLIENT_SECRET", hide_env_values = true)]
    pub password: Option<String>,
    /// File whose first line is the BOSH Director password (mode 0600); wins over
    /// BOSH_CLIENT_SECRET.
    #[arg(long, value_name = "FILE")]
    pub password_file: Option<PathBuf>,
    /// True when `--password` was given on the command line (not from the environment): it
    /// is then warned about (filled by `flags::parse`).
    #[arg(skip)]
    pub password_on_command_line: bool,
    /// Name of the BOSH deployment.
    #[arg(short = 'd', long, env = "BOSH_DEPLOYMENT", hide_env_values = true)]
    pub deployment: Option<String>,
    /// BOSH Director CA certificate: a path or the PEM itself [env: CA_CERT, BOSH_CA_CERT].
    #[arg(long)]
    pub ca_cert: Option<String>,
    /// Run for every deployment (pre-backup-check, backup, backup-cleanup).
    #[arg(long)]
    pub all_deployments: bool,
    /// YAML file listing the instances to reach over SSH, instead of the Director API.
    #[arg(long, value_name = "FILE")]
    pub inventory: Option<PathBuf>,
    /// With --all-deployments: at most this many deployments at once [default: 10].
    #[arg(long, value_name = "N")]
    pub deployment_parallelism: Option<usize>,
    /// Attempts per Director read (GETs, task polls) that meets a 5xx, a lost connection or a
    /// timeout, the first included; 1: no retry [default: 5].
    #[arg(long, value_name = "N")]
    pub director_retry_attempts: Option<u32>,
    /// No Director retry starts later than this after a request's first attempt (e.g. 90s,
    /// 5m) [default: 2m].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub director_retry_total: Option<std::time::Duration>,
    /// Shared flags.
    #[command(flatten)]
    pub common: CommonArgs,
    /// What to do.
    #[command(subcommand)]
    pub action: Action,
}

/// `cairn director` flags.
#[derive(Debug, Args)]
pub(crate) struct DirectorArgs {
    /// Director host, with an optional SSH port (default 22).
    #[arg(long)]
    pub host: Option<String>,
    /// SSH user on the director VM (needs passwordless sudo).
    #[arg(short = 'u', long)]
    pub username: Option<String>,
    /// SSH private key of that user.
    #[arg(long = "private-key-path", visible_alias = "key", value_name = "FILE")]
    pub private_key_path: Option<PathBuf>,
    /// The director VM's SSH host key, pinned: an OpenSSH public key ("ssh-ed25519 AAAA...")
    /// or a file holding one (e.g. a copy of /etc/ssh/ssh_host_ed25519_key.pub). Without it
    /// the key is trusted on first use and recorded in --known-hosts.
    #[arg(long, value_name = "KEY|FILE")]
    pub host_key: Option<String>,
    /// Shared flags.
    #[command(flatten)]
    pub common: CommonArgs,
    /// What to do.
    #[command(subcommand)]
    pub action: Action,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum Action {
    /// Check that a backup can be taken, changing nothing.
    #[command(name = "pre-backup-check", visible_alias = "c")]
    PreBackupCheck(CheckArgs),
    /// Back up.
    #[command(visible_alias = "b")]
    Backup(BackupArgs),
    /// Restore a backup.
    #[command(visible_alias = "r")]
    Restore(RestoreArgs),
    /// Unlock every job and remove leftovers of a failed backup.
    #[command(name = "backup-cleanup")]
    BackupCleanup,
    /// Unlock every job and remove leftovers of a failed restore.
    #[command(name = "restore-cleanup")]
    RestoreCleanup,
    /// Shows a list of commands or help for one command.
    #[command(visible_alias = "h")]
    Help {
        /// The subcommand whose help to show.
        #[arg(value_name = "COMMAND")]
        command: Option<String>,
    },
}

/// `--store`, shared by the subcommands that can use an object store.
///
/// Global: `cairn backups --store URL list` and `cairn backups list --store URL` are the same
/// (the subcommands of `backups` see it wherever it is typed); on a subcommand without
/// subcommands of its own (`backup`, `restore`, `drill`) it changes nothing.
#[derive(Debug, Args, Clone, Default)]
pub(crate) struct StoreArgs {
    /// Object store: s3://bucket/prefix?region=R&endpoint=URL&path_style=true,
    /// az://account/container/prefix, gs://bucket/prefix or file:///dir [env: CAIRN_STORE]
    #[arg(long, value_name = "URL", global = true)]
    pub store: Option<String>,
    /// File holding the password of a repository store (repo+URL), on one line (mode 0600,
    /// or 0640 for a group that only reads). Never give the password itself.
    /// [env: CAIRN_REPOSITORY_PASSWORD_FILE]
    #[arg(long, value_name = "FILE", global = true)]
    pub repository_password_file: Option<PathBuf>,
}

impl StoreArgs {
    /// The flag, else `CAIRN_STORE` when `fallback_to_env`.
    pub(crate) fn url(&self, fallback_to_env: bool) -> Option<String> {
        self.store
            .clone()
            .or_else(|| {
                fallback_to_env
                    .then(|| std::env::var("CAIRN_STORE").ok())
                    .flatten()
            })
            .filter(|s| !s.is_empty())
    }

    /// The repository password file: the flag, else `CAIRN_REPOSITORY_PASSWORD_FILE` (the
    /// config file's `repository_password_file` fills the flag when neither is set).
    pub(crate) fn repository_password_file(&self) -> Option<PathBuf> {
        self.repository_password_file.clone().or_else(|| {
            std::env::var_os(REPOSITORY_PASSWORD_FILE_ENV)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        })
    }
}

/// The variable naming the repository password file when the flag is not given.
pub(crate) const REPOSITORY_PASSWORD_FILE_ENV: &str = "CAIRN_REPOSITORY_PASSWORD_FILE";

/// `pre-backup-check` flags.
#[derive(Debug, Args)]
pub(crate) struct CheckArgs {
    /// Also check that this store is reachable and writable, with versioning as a backup
    /// needs it.
    #[command(flatten)]
    pub store: StoreArgs,
    /// Accept a store without versioning (as `backup --allow-unversioned`).
    #[arg(long)]
    pub allow_unversioned: bool,
    /// Print what a backup would do: instances, jobs, scripts, lock layers, artifacts
    /// (as a `plan` event with --json).
    #[arg(long)]
    pub plan: bool,
    /// With --plan: print the lock order as a Graphviz graph instead.
    #[arg(long, requires = "plan")]
    pub dot: bool,
}

/// `backup` flags.
#[derive(Debug, Args)]
pub(crate) struct BackupArgs {
    /// Existing directory the backup is written into [default: the current directory].
    #[arg(short = 'a', long, value_name = "DIR")]
    pub artifact_path: Option<PathBuf>,
    /// Stream the backup into an object store instead of a directory.
    #[command(flatten)]
    pub store: StoreArgs,
    /// Compression of artifacts in a store: none, zstd or zstd:LEVEL [default: zstd].
    #[arg(long, value_name = "ALGORITHM")]
    pub compression: Option<String>,
    /// Plain bytes per segment object of an artifact in a store, such as 512MiB or 4GiB
    /// (at least 1MiB) [default: 1GiB].
    #[arg(long, value_name = "SIZE")]
    pub segment_size: Option<String>,
    /// Keep what a failed or killed drain staged and stored (artifacts on the instances,
    /// segments in the store) so that `backup --resume` can finish it. Needs --store.
    #[arg(long)]
    pub resumable: bool,
    /// Finish the pending resumable backup of the deployment under its original id, sending
    /// only the segments not stored yet. Same target and store as the interrupted run.
    #[arg(long)]
    pub resume: bool,
    /// Also hash every staged file on the instance in a second read, as bbr does, and compare
    /// with the digests Cairn takes from the stream (costs the instances a second read and
    /// hash of every byte; see docs/reliability.md).
    #[arg(long)]
    pub instance_checksums: bool,
    /// Encrypt every artifact in the store to this age X25519 recipient (age1...; repeatable:
    /// any one of the identities can restore). Needs --store.
    #[arg(long, value_name = "RECIPIENT")]
    pub encrypt_to: Vec<String>,
    /// Refuse to start unless the backup is encrypted (--encrypt-to, or `encrypt_to` in the
    /// config file): a nightly job whose recipients went missing fails instead of writing
    /// plaintext.
    #[arg(long)]
    pub require_encryption: bool,
    /// Accept a store without versioning (an S3 or GCS bucket, or an Azure account without blob
    /// versioning): an object overwritten later is then lost, and restore refuses it.
    #[arg(long)]
    pub allow_unversioned: bool,
    /// Lock every object of the backup for this many days (needs Object Lock on the bucket).
    #[arg(long, value_name = "N")]
    pub retain_days: Option<u32>,
    /// Retention mode for --retain-days.
    #[arg(long, value_enum, default_value_t = RetentionModeArg::Governance)]
    pub retention_mode: RetentionModeArg,
    /// Save the deployment manifest in the backup (deployment mode only).
    #[arg(long)]
    pub with_manifest: bool,
    /// Do not run lock and unlock scripts (the backup may be inconsistent).
    #[arg(long)]
    pub unsafe_lock_free: bool,
    /// Into a repository: send and read every file, not only those whose size or mtime
    /// changed since the last backup (weekly, or after a suspicion). Needs --store repo+...
    #[arg(long)]
    pub full_read: bool,
    /// `--signing-key`.
    #[command(flatten)]
    pub signing: super::trust::SigningArgs,
}

/// Object-lock retention mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum RetentionModeArg {
    /// Privileged users may shorten it.
    Governance,
    /// Nobody may shorten it.
    Compliance,
}

/// `restore` flags.
#[derive(Debug, Args)]
pub(crate) struct RestoreArgs {
    /// The backup directory to restore.
    #[arg(short = 'a', long, value_name = "DIR")]
    pub artifact_path: Option<PathBuf>,
    /// Restore from this object store.
    #[command(flatten)]
    pub store: StoreArgs,
    /// Backup id in the store, `ID` or `DEPLOYMENT/ID` (default deployment: the target's).
    #[arg(long, value_name = "ID", conflicts_with = "latest")]
    pub backup: Option<String>,
    /// Restore the newest complete backup of the deployment in the store.
    #[arg(long)]
    pub latest: bool,
    /// age identity file (AGE-SECRET-KEY-1... lines) for an encrypted backup (repeatable).
    /// With it, a backup that is not encrypted is refused (it may have been put in place of
    /// the encrypted one) unless --allow-unencrypted.
    #[arg(long, value_name = "FILE")]
    pub identity: Vec<PathBuf>,
    /// With --identity: accept a backup that is not encrypted.
    #[arg(long)]
    pub allow_unencrypted: bool,
    /// After the restore, run each restored job's `post-restore-verify` script (a Cairn
    /// extension) and fail if any of them reports wrong data.
    #[arg(long)]
    pub verify: bool,
    /// Print what the restore would do, changing nothing: artifacts and their instances,
    /// sizes, free space, lock order, every difference from the backup's deployment and
    /// every reason to refuse (a `restore_plan` event with --json); exit 1 if refused.
    #[arg(long, conflicts_with = "verify")]
    pub plan: bool,
    /// With --plan: print the restore lock order as a Graphviz graph instead.
    #[arg(long, requires = "plan")]
    pub dot: bool,
    /// Run the `restore` scripts of up to N instances at once (the lock and unlock scripts
    /// stay one at a time); after a failing instance no further one starts [default: 1,
    /// bbr's order: one instance after another].
    #[arg(long, value_name = "N", value_parser = parse_restore_parallelism)]
    pub restore_parallelism: Option<usize>,
    /// `--trusted-key`.
    #[command(flatten)]
    pub trust: super::trust::TrustArgs,
}

/// `cairn contract` subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum ContractAction {
    /// Check one job's scripts folder, here or over SSH, with a real backup/restore round trip.
    Check(ContractCheckArgs),
}

/// `cairn contract check` flags.
#[derive(Debug, Args)]
pub(crate) struct ContractCheckArgs {
    /// The job's scripts folder, e.g. /var/vcap/jobs/postgres/bin/bbr.
    pub path: String,
    /// Check on this host over SSH instead of on this machine: USER@HOST[:PORT].
    #[arg(long, value_name = "USER@HOST[:PORT]")]
    pub ssh: Option<String>,
    /// SSH private key for --ssh.
    #[arg(long = "private-key-path", visible_alias = "key", value_name = "FILE")]
    pub private_key_path: Option<PathBuf>,
    /// File whose first line is the passphrase of that key, if it has one (mode 0600).
    #[arg(long, value_name = "FILE")]
    pub private_key_passphrase_file: Option<PathBuf>,
    /// known_hosts file to check the host key against [default: ~/.ssh/known_hosts].
    #[arg(long, value_name = "FILE")]
    pub known_hosts: Option<PathBuf>,
    /// The host's public key, e.g. "ssh-ed25519 AAAA...", or a .pub file holding it
    /// (instead of known_hosts).
    #[arg(long, value_name = "KEY|FILE")]
    pub host_key: Option<String>,
    /// Do not check the SSH host key (unsafe).
    #[arg(long)]
    pub insecure_skip_host_key_check: bool,
    /// Only the static checks and metadata: run no backup, restore or unlock script
    /// (for production VMs; the round trip really restores the data it just backed up).
    #[arg(long)]
    pub skip_round_trip: bool,
    /// Another path prefix the backup script may write to (repeatable).
    #[arg(long, value_name = "PREFIX")]
    pub allow_write: Vec<String>,
    /// End any script that runs longer than this [default: 30m].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub script_timeout: Option<std::time::Duration>,
    /// The report as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// Debug logs: every command and its output.
    #[arg(long)]
    pub debug: bool,
}

/// `cairn drill` flags.
#[derive(Debug, Args)]
pub(crate) struct DrillArgs {
    /// Inventory of the deployment to back up (not needed with --backup or --latest).
    #[arg(long, value_name = "FILE")]
    pub source_inventory: Option<PathBuf>,
    /// Inventory of the deployment to restore into (same instance groups and indexes).
    #[arg(
        long,
        value_name = "FILE",
        required_unless_present = "target_deployment"
    )]
    pub target_inventory: Option<PathBuf>,
    /// BOSH deployment to back up instead of an inventory, through the Director named by
    /// BOSH_ENVIRONMENT, BOSH_CLIENT, BOSH_CLIENT_SECRET and CA_CERT/BOSH_CA_CERT.
    #[arg(long, value_name = "NAME", conflicts_with = "source_inventory")]
    pub source_deployment: Option<String>,
    /// BOSH deployment to restore into instead of an inventory (same Director settings).
    #[arg(long, value_name = "NAME", conflicts_with = "target_inventory")]
    pub target_deployment: Option<String>,
    /// Store the drill backup goes to, or the existing backup is read from [env: CAIRN_STORE].
    #[command(flatten)]
    pub store: StoreArgs,
    /// Without a store: the directory the drill backup is written into.
    #[arg(short = 'a', long, value_name = "DIR")]
    pub artifact_path: Option<PathBuf>,
    /// Restore this existing backup from the store (`DEPLOYMENT/ID`) instead of taking one.
    #[arg(long, value_name = "ID", conflicts_with = "latest")]
    pub backup: Option<String>,
    /// Restore the newest complete backup of this deployment in the store instead of taking one.
    #[arg(long, value_name = "DEPLOYMENT")]
    pub latest: Option<String>,
    /// Compression of a drill backup into a store: none, zstd or zstd:LEVEL [default: zstd].
    #[arg(long, value_name = "ALGORITHM")]
    pub compression: Option<String>,
    /// Plain bytes per segment object of a drill backup's artifacts in a store, such as
    /// 512MiB or 4GiB (at least 1MiB) [default: 1GiB].
    #[arg(long, value_name = "SIZE")]
    pub segment_size: Option<String>,
    /// Also hash every staged file on the instances in a second read, as bbr does, and
    /// compare with the digests taken from the stream (a new drill backup only).
    #[arg(long)]
    pub instance_checksums: bool,
    /// Encrypt the drill backup in the store to this age X25519 recipient (repeatable).
    #[arg(long, value_name = "RECIPIENT")]
    pub encrypt_to: Vec<String>,
    /// age identity file to restore an encrypted backup with (repeatable); with it, a backup
    /// that is not encrypted is refused unless --allow-unencrypted.
    #[arg(long, value_name = "FILE")]
    pub identity: Vec<PathBuf>,
    /// With --identity: accept a backup that is not encrypted.
    #[arg(long)]
    pub allow_unencrypted: bool,
    /// Accept a store without versioning (S3, Azure or GCS) for the drill backup.
    #[arg(long)]
    pub allow_unversioned: bool,
    /// Directory the report files (drill-<target>-<time>.json and .txt) are written to
    /// [default: the current directory].
    #[arg(long, value_name = "DIR")]
    pub report_dir: Option<PathBuf>,
    /// Run the `restore` scripts of up to N instances of the drill deployment at once
    /// [default: 1, bbr's order].
    #[arg(long, value_name = "N", value_parser = parse_restore_parallelism)]
    pub restore_parallelism: Option<usize>,
    /// `--trusted-key`, for a stored backup (--backup, --latest).
    #[command(flatten)]
    pub trust: super::trust::TrustArgs,
    /// `--signing-key`, for the drill's new backup (not with --backup or --latest).
    #[command(flatten)]
    pub signing: super::trust::SigningArgs,
    /// Shared flags.
    #[command(flatten)]
    pub common: CommonArgs,
}

/// `cairn config` subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum ConfigAction {
    /// Print the effective settings.
    Show,
}

impl Action {
    /// For `help [COMMAND]`: `Some` with the subcommand asked about, if any.
    pub(crate) fn help_topic(&self) -> Option<Option<&str>> {
        match self {
            Action::Help { command } => Some(command.as_deref()),
            _ => None,
        }
    }

    /// True for `pre-backup-check --plan` and `restore --plan`, whose stdout is the plan.
    pub(crate) fn prints_plan(&self) -> bool {
        matches!(
            self,
            Action::PreBackupCheck(CheckArgs { plan: true, .. })
                | Action::Restore(RestoreArgs { plan: true, .. })
        )
    }

    /// bbr's name of the subcommand.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Action::PreBackupCheck(_) => "pre-backup-check",
            Action::Backup(_) => "backup",
            Action::Restore(_) => "restore",
            Action::BackupCleanup => "backup-cleanup",
            Action::RestoreCleanup => "restore-cleanup",
            Action::Help { .. } => "help",
        }
    }
}

/// A usage mistake: bbr prints the message in red with the subcommand help and exits 1.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct UsageError(pub String);

/// The line after bbr's `--target flag is required.`: without a Director, an inventory.
const TARGET_OR_INVENTORY: &str =
    "Or list the instances in an inventory file with --inventory FILE (see README).";

fn required(flag: &str) -> UsageError {
    UsageError(format!("--{flag} flag is required."))
}

impl DeploymentArgs {
    /// How Director reads are retried: the flags (filled from `[director]`), else the defaults.
    pub(crate) fn director_retry(&self) -> cairn::target::bosh::RetryPolicy {
        let default = cairn::target::bosh::RetryPolicy::default();
        cairn::target::bosh::RetryPolicy {
            attempts: self.director_retry_attempts.unwrap_or(default.attempts),
            total: self.director_retry_total.unwrap_or(default.total),
            ..default
        }
    }

    /// bbr's `validateDeploymentFlags`, relaxed for `--inventory`.
    pub(crate) fn validate(&self) -> Result<(), UsageError> {
        if self.inventory.is_none() {
            for (flag, value) in [
                ("target", &self.target),
                ("username", &self.username),
                ("password", &self.password),
            ] {
                if value.as_deref().unwrap_or("").is_empty() {
                    if flag == "target" {
                        // bbr's line, then Cairn's other way to find the instances.
                        return Err(UsageError(format!(
                            "{}\n{TARGET_OR_INVENTORY}",
                            required(flag).0
                        )));
                    }
                    return Err(required(flag));
                }
            }
            if self.deployment.is_some() == self.all_deployments {
                return Err(UsageError(
                    "provide one of '--deployment' or '--all-deployments' flags.".into(),
                ));
            }
        } else if self.all_deployments {
            return Err(UsageError("--all-deployments needs the BOSH Director; it cannot be combined with --inventory.".into()));
        }
        if self.deployment_parallelism == Some(0) {
            return Err(UsageError(
                "--deployment-parallelism must be at least 1.".into(),
            ));
        }
        if self.director_retry_attempts == Some(0) {
            return Err(UsageError(
                "--director-retry-attempts must be at least 1 (1: no retry).".into(),
            ));
        }
        if self.all_deployments {
            if matches!(
                self.action,
                Action::Backup(BackupArgs {
                    unsafe_lock_free: true,
                    ..
                })
            ) {
                return Err(UsageError("Cannot use the --unsafe-lock-free flag in conjunction with the --all-deployments flag".into()));
            }
            if matches!(self.action, Action::Restore(_) | Action::RestoreCleanup) {
                return Err(UsageError(format!(
                    "{} is not supported with --all-deployments.",
                    self.action.name()
                )));
            }
        }
        validate_action(&self.action)?;
        validate_common(&self.common)
    }
}

impl DirectorArgs {
    /// bbr's `validateDirectorFlags`.
    pub(crate) fn validate(&self) -> Result<(), UsageError> {
        if self.host.as_deref().unwrap_or("").is_empty() {
            return Err(required("host"));
        }
        if self.username.as_deref().unwrap_or("").is_empty() {
            return Err(required("username"));
        }
        if self.private_key_path.is_none() {
            return Err(required("private-key-path"));
        }
        if self.host_key.is_some() && self.common.insecure_skip_host_key_check {
            return Err(UsageError(
                "Give either --host-key or --insecure-skip-host-key-check, not both.".into(),
            ));
        }
        if let Action::Backup(backup) = &self.action {
            if backup.with_manifest || backup.unsafe_lock_free {
                return Err(UsageError(
                    "--with-manifest and --unsafe-lock-free are deployment-mode flags.".into(),
                ));
            }
        }
        validate_action(&self.action)?;
        validate_common(&self.common)
    }
}

fn validate_action(action: &Action) -> Result<(), UsageError> {
    match action {
        Action::Restore(restore) => {
            if restore.artifact_path.is_some() && restore.store.store.is_some() {
                return Err(UsageError(
                    "Give either --artifact-path or --store, not both.".into(),
                ));
            }
            let from_store = restore.store.url(restore.artifact_path.is_none()).is_some();
            if !from_store && restore.artifact_path.is_none() {
                return Err(required("artifact-path"));
            }
            if from_store && restore.backup.is_none() && !restore.latest {
                return Err(UsageError(
                    "Restoring from a store needs --backup ID or --latest.".into(),
                ));
            }
        }
        Action::Backup(backup) => {
            if backup.artifact_path.is_some() && backup.store.store.is_some() {
                return Err(UsageError(
                    "Give either --artifact-path or --store, not both.".into(),
                ));
            }
            if let Some(compression) = &backup.compression {
                cairn::format::manifest::Compression::parse(compression).map_err(UsageError)?;
            }
            if let Some(size) = &backup.segment_size {
                cairn::format::store::segment::SegmentSize::parse(size).map_err(UsageError)?;
                if backup.store.url(backup.artifact_path.is_none()).is_none() {
                    return Err(UsageError(
                        "--segment-size applies to backups into a store (--store); a bbr directory keeps one .tar per artifact".into(),
                    ));
                }
            }
            if (backup.resumable || backup.resume)
                && backup.store.url(backup.artifact_path.is_none()).is_none()
            {
                return Err(UsageError(format!(
                    "--{} applies to backups into a store (--store); a bbr directory (--artifact-path) is cleaned up on failure as bbr does",
                    if backup.resume { "resume" } else { "resumable" }
                )));
            }
            if backup.full_read
                && !backup
                    .store
                    .url(backup.artifact_path.is_none())
                    .is_some_and(|url| url.starts_with("repo+"))
            {
                return Err(UsageError(
                    "--full-read applies to backups into a repository (--store repo+...); a directory or a plain store always receives every file".into(),
                ));
            }
            if !backup.encrypt_to.is_empty()
                && backup.store.url(backup.artifact_path.is_none()).is_none()
            {
                return Err(encrypt_needs_store());
            }
            cairn::format::encryption::Recipients::parse(&backup.encrypt_to).map_err(UsageError)?;
            if backup.require_encryption && backup.encrypt_to.is_empty() {
                return Err(encryption_required());
            }
            if backup.retain_days == Some(0) {
                return Err(UsageError("--retain-days must be at least 1.".into()));
            }
        }
        _ => {}
    }
    Ok(())
}

/// `--encrypt-to` without a store: bbr's directory format stays readable by bbr.
pub(crate) fn encrypt_needs_store() -> UsageError {
    UsageError("--encrypt-to needs --store: a bbr directory backup (--artifact-path) is never encrypted, since bbr could not read it.".into())
}

/// `--require-encryption` (or `require_encryption` in the config file) without a recipient.
pub(crate) fn encryption_required() -> UsageError {
    UsageError("--require-encryption: no recipient to encrypt to; give --encrypt-to age1... (or `encrypt_to` in the config file), or leave out --require-encryption (`require_encryption` in the config file). Nothing was locked.".into())
}

/// Parses a duration of whole seconds, at least one: a number of seconds (`90`), or
/// humantime's form (`90s`, `30m`, `2h`, `26h`, `7d`, `1h 30m`, `2weeks`; see
/// [`humantime::parse_duration`]).
pub(crate) fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let not_a_duration = || format!("`{text}` is not a duration like 90s, 30m or 2h");
    let duration = if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        std::time::Duration::from_secs(text.parse().map_err(|_| not_a_duration())?)
    } else {
        humantime::parse_duration(text).map_err(|_| not_a_duration())?
    };
    if duration.as_secs() == 0 {
        return Err("the timeout must be at least 1 second".into());
    }
    if duration.subsec_nanos() != 0 {
        return Err(format!(
            "`{text}` is not a whole number of seconds; durations are counted in seconds"
        ));
    }
    Ok(duration)
}

/// `--restore-parallelism`: a whole number of instances, at least 1.
pub(crate) fn parse_restore_parallelism(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(0) => Err("restore scripts need at least 1 instance at a time; give 1 (bbr's order, one instance after another) or more".into()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!(
            "`{text}` is not a whole number of instances; give 1 (bbr's order) or more"
        )),
    }
}

#[cfg(test)]
mod duration_tests {
    use super::parse_duration;
    use std::time::Duration;

    #[test]
    fn durations_take_seconds_and_humantime_forms() {
        let seconds = |text| parse_duration(text).map(|d: Duration| d.as_secs());
        // The forms documented before humantime (docs/config.md, --help): still the same.
        assert_eq!(seconds("90"), Ok(90));
        assert_eq!(seconds("90s"), Ok(90));
        assert_eq!(seconds("30m"), Ok(1800));
        assert_eq!(seconds("2h"), Ok(7200));
        assert_eq!(seconds("26h"), Ok(93_600));
        // What humantime adds: days, weeks, combinations, long unit names.
        assert_eq!(seconds("7d"), Ok(604_800));
        assert_eq!(seconds("1w"), Ok(604_800));
        assert_eq!(seconds("1h 30m"), Ok(5400));
        assert_eq!(seconds("1h30m"), Ok(5400));
        assert_eq!(seconds("2hours"), Ok(7200));
        assert_eq!(
            seconds("1500ms").unwrap_err(),
            "`1500ms` is not a whole number of seconds; durations are counted in seconds"
        );
        assert_eq!(seconds("2000ms"), Ok(2));
    }

    #[test]
    fn bad_durations_say_what_is_expected() {
        for bad in [
            "",
            "soon",
            "90x",
            "-5s",
            "1.5.2h",
            "99999999999999999999",
            "s",
        ] {
            assert_eq!(
                parse_duration(bad).unwrap_err(),
                format!("`{bad}` is not a duration like 90s, 30m or 2h"),
                "{bad}"
            );
        }
        for zero in ["0", "0s", "500ms"] {
            assert_eq!(
                parse_duration(zero).unwrap_err(),
                "the timeout must be at least 1 second",
                "{zero}"
            );
        }
    }
}

fn validate_common(common: &CommonArgs) -> Result<(), UsageError> {
    if common.parallelism == Some(0) {
        return Err(UsageError("--parallelism must be at least 1.".into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment(args: &[&str]) -> DeploymentArgs {
        let mut argv = vec!["cairn", "deployment"];
        argv.extend_from_slice(args);
        match Cli::try_parse_from(argv).unwrap().command {
            Command::Deployment(d) => d,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bbr_syntax_parses_with_short_flags_and_aliases() {
        let d = deployment(&[
            "-t", "10.0.0.6", "-u", "admin", "-p", "s", "-d", "cf", "b", "-a", "/tmp",
        ]);
        assert_eq!(d.deployment.as_deref(), Some("cf"));
        assert!(matches!(
            d.action,
            Action::Backup(BackupArgs {
                artifact_path: Some(_),
                ..
            })
        ));
        d.validate().unwrap();
    }

    #[test]
    fn missing_flags_give_bbr_messages() {
        let d = deployment(&["-u", "admin", "-p", "s", "-d", "cf", "c"]);
        assert_eq!(
            d.validate().unwrap_err().to_string(),
            "--target flag is required.\nOr list the instances in an inventory file with --inventory FILE (see README)."
        );
        let d = deployment(&["-t", "x", "-u", "admin", "-p", "s", "c"]);
        assert_eq!(
            d.validate().unwrap_err().to_string(),
            "provide one of '--deployment' or '--all-deployments' flags."
        );
        let d = deployment(&["--inventory", "i.yml", "restore"]);
        assert_eq!(
            d.validate().unwrap_err().to_string(),
            "--artifact-path flag is required."
        );
        let d = deployment(&[
            "-t",
            "x",
            "-u",
            "a",
            "-p",
            "s",
            "--all-deployments",
            "backup",
            "--unsafe-lock-free",
        ]);
        assert!(d
            .validate()
            .unwrap_err()
            .to_string()
            .starts_with("Cannot use the --unsafe-lock-free"));
    }

    #[test]
    fn encryption_needs_a_store_and_valid_recipients() {
        let recipient = "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p";
        let d = deployment(&[
            "--inventory",
            "i.yml",
            "backup",
            "--artifact-path",
            "/tmp",
            "--encrypt-to",
            recipient,
        ]);
        let error = d.validate().unwrap_err().to_string();
        assert!(error.starts_with("--encrypt-to needs --store"), "{error}");
        assert!(!error.contains('\n'));
        let d = deployment(&[
            "--inventory",
            "i.yml",
            "backup",
            "--store",
            "file:///tmp/s",
            "--encrypt-to",
            recipient,
            "--encrypt-to",
            "age1bad",
        ]);
        let error = d.validate().unwrap_err().to_string();
        assert!(
            error.starts_with("--encrypt-to `age1bad` is not an age X25519 recipient"),
            "{error}"
        );
        let d = deployment(&[
            "--inventory",
            "i.yml",
            "backup",
            "--store",
            "file:///tmp/s",
            "--encrypt-to",
            recipient,
        ]);
        d.validate().unwrap();
        let d = deployment(&[
            "--inventory",
            "i.yml",
            "restore",
            "--store",
            "file:///tmp/s",
            "--latest",
            "--identity",
            "a.txt",
            "--identity",
            "b.txt",
        ]);
        let Action::Restore(restore) = &d.action else {
            panic!()
        };
        assert_eq!(restore.identity.len(), 2);
    }

    #[test]
    fn require_encryption_needs_a_recipient() {
        let recipient = "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p";
        let backup = |extra: &[&str]| {
            let mut args = vec![
                "--inventory",
                "i.yml",
                "backup",
                "--store",
                "file:///tmp/s",
                "--require-encryption",
            ];
            args.extend_from_slice(extra);
            deployment(&args).validate()
        };
        let error = backup(&[]).unwrap_err().to_string();
        assert!(
            error.starts_with(
                "--require-encryption: no recipient to encrypt to; give --encrypt-to age1..."
            ),
            "{error}"
        );
        assert!(!error.contains('\n'));
        backup(&["--encrypt-to", recipient]).unwrap();
        let director = match Cli::try_parse_from([
            "cairn",
            "director",
            "--host",
            "h",
            "--username",
            "u",
            "--private-key-path",
            "k",
            "backup",
            "--store",
            "file:///tmp/s",
            "--require-encryption",
        ])
        .unwrap()
        .command
        {
            Command::Director(d) => d,
            other => panic!("{other:?}"),
        };
        assert!(director
            .validate()
            .unwrap_err()
            .to_string()
            .starts_with("--require-encryption"));
    }

    /// The parse of `argv` (after `cairn`), as text: two command lines that parse to the same
    /// text set the same flags to the same values.
    fn parsed(argv: &[&str]) -> String {
        let mut full = vec!["cairn"];
        full.extend_from_slice(argv);
        format!("{:?}", Cli::try_parse_from(full).unwrap())
    }

    /// Every position of a group's flags parses to one result: all before the subcommand
    /// (bbr's place for a mode's flags), all after it, and every other one after it.
    fn same_everywhere(group: &[&str], flags: &[&[&str]], subcommand: &[&str]) {
        let (mut before, mut after) = (group.to_vec(), group.to_vec());
        before.extend(flags.concat());
        before.extend_from_slice(subcommand);
        after.extend_from_slice(subcommand);
        after.extend(flags.concat());
        let mut mixed = group.to_vec();
        mixed.extend(flags.iter().step_by(2).flat_map(|flag| flag.iter()));
        mixed.extend_from_slice(subcommand);
        mixed.extend(flags.iter().skip(1).step_by(2).flat_map(|flag| flag.iter()));
        let expected = parsed(&before);
        assert_eq!(parsed(&after), expected, "{after:?}");
        assert_eq!(parsed(&mixed), expected, "{mixed:?}");
    }

    #[test]
    fn store_debug_and_parallelism_of_backups_go_before_or_after_the_subcommand() {
        let flags: [&[&str]; 4] = [
            &["--store", "file:///srv/store"],
            &["--debug"],
            &["--parallelism", "7"],
            &["--json"],
        ];
        for subcommand in [
            &["list"][..],
            &["report", "--html", "r.html"],
            &["show", "cf/20261206T211111Z"],
            &["verify", "cf/20261206T211111Z"],
            &["delete", "cf/20261206T211111Z"],
            &["prune", "-d", "cf", "--keep-last", "3"],
        ] {
            same_everywhere(&["backups"], &flags, subcommand);
        }
        let list = parsed(&["backups", "list", "--store", "file:///srv/store"]);
        assert!(
            list.contains("store: Some(\"file:///srv/store\")"),
            "{list}"
        );
    }

    #[test]
    fn debug_and_output_flags_of_a_mode_go_before_or_after_the_subcommand() {
        let flags: [&[&str]; 6] = [
            &["--debug"],
            &["--json"],
            &["--metrics-file", "/var/lib/m.prom"],
            &["--known-hosts", "/etc/kh"],
            &["--parallelism", "3"],
            &["--script-timeout", "2h"],
        ];
        for subcommand in [
            "pre-backup-check",
            "backup",
            "backup-cleanup",
            "restore-cleanup",
        ] {
            same_everywhere(
                &["deployment", "--inventory", "i.yml"],
                &flags,
                &[subcommand],
            );
            same_everywhere(
                &["director", "--host", "h", "-u", "u", "--key", "k"],
                &flags,
                &[subcommand],
            );
        }
        let after = parsed(&["deployment", "-d", "cf", "backup", "--json", "--debug"]);
        assert!(
            after.contains("debug: true") && after.contains("json: true"),
            "{after}"
        );
    }

    #[test]
    fn config_goes_anywhere() {
        let at_the_start = parsed(&["--config", "c.toml", "backups", "--store", "s", "list"]);
        for argv in [
            &["backups", "--config", "c.toml", "--store", "s", "list"][..],
            &["backups", "--store", "s", "list", "--config", "c.toml"],
        ] {
            assert_eq!(parsed(argv), at_the_start, "{argv:?}");
        }
        let at_the_start = parsed(&["--config", "c.toml", "deployment", "-d", "cf", "backup"]);
        for argv in [
            &["deployment", "--config", "c.toml", "-d", "cf", "backup"][..],
            &["deployment", "-d", "cf", "backup", "--config", "c.toml"],
        ] {
            assert_eq!(parsed(argv), at_the_start, "{argv:?}");
        }
        assert!(at_the_start.contains("config: Some(\"c.toml\")"));
    }

    #[test]
    fn inventory_mode_needs_no_director_flags() {
        deployment(&["--inventory", "i.yml", "pre-backup-check"])
            .validate()
            .unwrap();
    }
}
