//! `cairn repo` flags and subcommands: deduplicating repositories (`--store repo+URL`).

use clap::{Args, Subcommand};

use super::StoreArgs;

/// `cairn repo` flags.
#[derive(Debug, Args)]
pub(crate) struct RepoArgs {
    /// The repository: repo+s3://bucket/prefix, repo+az://account/container/prefix,
    /// repo+gs://bucket/prefix or repo+file:///dir (query parameters as for plain stores).
    #[command(flatten)]
    pub store: StoreArgs,
    /// Debug logs.
    #[arg(long, global = true)]
    pub debug: bool,
    /// What to do.
    #[command(subcommand)]
    pub action: RepoAction,
}

/// `cairn repo` subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum RepoAction {
    /// Create a repository (restic's format, version 2) at --store repo+URL, its key sealed with
    /// the password of --repository-password-file.
    Init {
        /// Accept a cloud store without versioning (as `backup --allow-unversioned`).
        #[arg(long)]
        allow_unversioned: bool,
    },
    /// Open the repository with its password and check its structure (keys, indexes, packs,
    /// snapshots); exit 1 when it finds an error.
    Check {
        /// Also read every pack and check every blob's hash.
        #[arg(long)]
        read_data: bool,
    },
}
