//! `cairn backups` flags and subcommands: the catalog of backups in an object store (moved
//! out of `args.rs`, which keeps the commands that reach instances).

use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::{parse_duration, StoreArgs};

/// `cairn backups` flags.
#[derive(Debug, Args)]
pub(crate) struct BackupsArgs {
    /// The store.
    #[command(flatten)]
    pub store: StoreArgs,
    /// Debug logs.
    #[arg(long, global = true)]
    pub debug: bool,
    /// At most this many objects verified at once.
    #[arg(long, value_name = "N", default_value_t = 4, global = true)]
    pub parallelism: usize,
    /// JSON output, before or after the subcommand: list (JSON lines), show (the manifest),
    /// prune (JSON lines), report (the model the page is made from, on stdout).
    #[arg(long, global = true)]
    pub json: bool,
    /// What to do.
    #[command(subcommand)]
    pub action: BackupsAction,
}

/// `cairn backups` subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum BackupsAction {
    /// List backups: id, deployment, time, size, complete or not, signed or not.
    #[command(mut_arg("trusted_key", |arg| arg.help("Check each signature against this public key: a `cairn-ed25519:...` key or a file holding one (repeatable); SIGNED then says verified or rejected")))]
    List {
        /// Only this deployment.
        #[arg(long, short = 'd')]
        deployment: Option<String>,
        /// Backup overdue check: exit 1 (with a line on stderr) when the newest complete,
        /// verified backup of --deployment is older than this (e.g. 26h), or there is none.
        #[arg(long, value_name = "DURATION", value_parser = parse_duration, requires = "deployment")]
        max_age: Option<std::time::Duration>,
        /// `--trusted-key`: say whether each signature checks out (`SIGNED` column).
        #[command(flatten)]
        trust: super::trust::TrustArgs,
    },
    /// Print a backup's manifest.
    #[command(mut_arg("trusted_key", |arg| arg.help("Check the signature against this public key: a `cairn-ed25519:...` key or a file holding one (repeatable)")))]
    Show {
        /// `DEPLOYMENT/ID`.
        id: String,
        /// Print the deployment manifest saved with the backup (backup --with-manifest).
        #[arg(long, conflicts_with = "json")]
        manifest: bool,
        /// age identity file to decrypt the deployment manifest of an encrypted backup
        /// (repeatable; with --manifest).
        #[arg(long, value_name = "FILE", requires = "manifest")]
        identity: Vec<PathBuf>,
        /// `--trusted-key`: say whether the signature checks out.
        #[command(flatten)]
        trust: super::trust::TrustArgs,
    },
    /// Re-read every object of a backup and check every sha256, without restoring.
    Verify {
        /// `DEPLOYMENT/ID` of a backup in the store.
        #[arg(required_unless_present = "artifact_path")]
        id: Option<String>,
        /// A bbr backup directory (`<deployment>_<timestamp>`) to verify instead of a stored
        /// backup: every tar against `metadata` (no --store needed).
        #[arg(long, short = 'a', value_name = "DIR", conflicts_with = "id")]
        artifact_path: Option<PathBuf>,
        /// age identity file to decrypt an encrypted backup and check every file inside
        /// (repeatable); without it only the stored bytes of encrypted artifacts are checked.
        /// With it, a backup that is not encrypted fails unless --allow-unencrypted.
        #[arg(long, value_name = "FILE")]
        identity: Vec<PathBuf>,
        /// With --identity: accept a backup that is not encrypted.
        #[arg(long)]
        allow_unencrypted: bool,
        /// Verify only PERCENT of the artifacts, least recently verified first, so that
        /// every artifact is verified within ceil(100/PERCENT) runs; reports coverage.
        #[arg(long, value_name = "PERCENT", value_parser = cairn::catalog::sampling::Percent::parse)]
        sample: Option<cairn::catalog::sampling::Percent>,
        /// Where --sample remembers what was verified when [default: a file per backup
        /// under $CAIRN_STATE_DIR, $XDG_STATE_HOME/cairn or ~/.local/state/cairn, in verify/].
        #[arg(long, value_name = "FILE", requires = "sample")]
        state_file: Option<PathBuf>,
        /// `--trusted-key`: also check the signature and walk the deployment's chain.
        #[command(flatten)]
        trust: super::trust::TrustArgs,
    },
    /// Delete a backup (every object and recorded version).
    Delete {
        /// `DEPLOYMENT/ID`.
        id: String,
        /// `--trusted-key`: refuse a backup whose manifest is not signed by one of them.
        #[command(flatten)]
        trust: super::trust::TrustArgs,
        /// `--signing-key`: write a signed record of the deletion first.
        #[command(flatten)]
        signing: super::trust::SigningArgs,
    },
    /// Delete the backups of a deployment that no retention rule keeps (see docs/stores.md).
    Prune {
        /// The deployment whose backups are pruned.
        #[arg(long, short = 'd')]
        deployment: String,
        /// Keep the N newest complete backups.
        #[arg(long, value_name = "N", default_value_t = 0)]
        keep_last: u32,
        /// Keep the newest backup of each of the last N days that have backups (UTC).
        #[arg(long, value_name = "N", default_value_t = 0)]
        keep_daily: u32,
        /// Keep the newest backup of each of the last N ISO weeks that have backups.
        #[arg(long, value_name = "N", default_value_t = 0)]
        keep_weekly: u32,
        /// Keep the newest backup of each of the last N months that have backups.
        #[arg(long, value_name = "N", default_value_t = 0)]
        keep_monthly: u32,
        /// Print what would be deleted; delete nothing.
        #[arg(long)]
        dry_run: bool,
        /// Repositories (repo+ stores) only: delete a pack that an earlier prune marked unused
        /// once it was marked this long ago (a backup running during that prune may still use
        /// it) [default: 23h].
        #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
        keep_marked: Option<std::time::Duration>,
        /// age identity file to verify encrypted backups completely (repeatable); with it, a
        /// backup that is not encrypted fails verify unless --allow-unencrypted.
        #[arg(long, value_name = "FILE")]
        identity: Vec<PathBuf>,
        /// With --identity: accept backups that are not encrypted.
        #[arg(long)]
        allow_unencrypted: bool,
        /// `--trusted-key`: keep (never count as verified) backups not signed by one of them.
        #[command(flatten)]
        trust: super::trust::TrustArgs,
        /// `--signing-key`: write a signed record of what is deleted first.
        #[command(flatten)]
        signing: super::trust::SigningArgs,
    },
    /// A report of the backups' history: a self-contained HTML page with a table and plots
    /// (size, duration, lock windows, throughput, failed runs marked), and/or JSON.
    #[command(mut_arg("trusted_key", |arg| arg.help("Check each signature against this public key: a `cairn-ed25519:...` key or a file holding one (repeatable); the signed column then says verified or REJECTED")))]
    Report {
        /// Only this deployment (default: every deployment in the store).
        #[arg(long, short = 'd')]
        deployment: Option<String>,
        /// Write the HTML page to FILE (this, --json, or both).
        #[arg(long, value_name = "FILE")]
        html: Option<PathBuf>,
        /// Read every complete backup back, as `backups verify` does (the `verified` column).
        #[arg(long)]
        verify: bool,
        /// `--trusted-key`: say whether each signature checks out.
        #[command(flatten)]
        trust: super::trust::TrustArgs,
    },
}
