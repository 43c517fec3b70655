//! The flags of signed backups (`--signing-key`, `--trusted-key`), shared by the commands
//! that write, read, prune or delete backups, and `cairn keys generate`. What they do is in
//! the library: [`cairn::format::signature`] and [`cairn::catalog::trust`].

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};

use cairn::format::signature::{SeenBackups, SigningKey, TrustedKeys};

use super::output::say;

/// `--signing-key`.
#[derive(Debug, Args, Clone, Default)]
pub(crate) struct SigningArgs {
    /// Sign with this Ed25519 key file (`cairn keys generate`): a backup's manifest (or a bbr
    /// directory's metadata), or the record of what prune/delete deleted (docs/stores.md).
    #[arg(long, value_name = "FILE")]
    pub signing_key: Option<PathBuf>,
}

impl SigningArgs {
    /// The key, loaded; `None` without the flag.
    pub(crate) fn load(&self) -> anyhow::Result<Option<SigningKey>> {
        Ok(self
            .signing_key
            .as_deref()
            .map(SigningKey::load)
            .transpose()?)
    }
}

/// `--trusted-key` (repeatable).
#[derive(Debug, Args, Clone, Default)]
pub(crate) struct TrustArgs {
    /// Only accept backups signed by this public key: a `cairn-ed25519:...` key or a file
    /// holding one (repeatable). Unsigned, badly signed or moved backups are refused.
    #[arg(long, value_name = "FILE|KEY")]
    pub trusted_key: Vec<String>,
}

impl TrustArgs {
    /// The keys, loaded; empty without the flag.
    pub(crate) fn load(&self) -> anyhow::Result<TrustedKeys> {
        Ok(TrustedKeys::load(&self.trusted_key)?)
    }
}

/// Where this machine records the newest signed backup it has seen of each deployment
/// (`<state dir>/trust`, next to the run journals).
pub(crate) fn seen_backups() -> SeenBackups {
    SeenBackups::at(cairn::workflow::journal::JournalFile::default_state_dir().join("trust"))
}

/// The one-line warning when a store holds signed backups of `deployment` and no
/// `--trusted-key` was given; `None` otherwise.
pub(crate) async fn unchecked_warning(
    store: &dyn cairn_store::ArtifactStore,
    trusted: &TrustedKeys,
    deployment: Option<&str>,
) -> Option<String> {
    if !trusted.is_empty() {
        return None;
    }
    cairn::catalog::trust::unchecked_signatures_warning(store, deployment).await
}

/// `cairn keys` subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum KeysAction {
    /// Write a new Ed25519 key pair for signed backups: PREFIX.key (secret, mode 0600, for
    /// `backup --signing-key`) and PREFIX.pub (for `--trusted-key`); prints the public key.
    Generate {
        /// Path and name of the two files, without extension.
        #[arg(long, value_name = "PREFIX")]
        out: PathBuf,
    },
}

/// Runs `cairn keys ...`; returns the exit code.
pub(crate) fn run(action: &KeysAction) -> anyhow::Result<i32> {
    match action {
        KeysAction::Generate { out } => generate(out),
    }
}

fn generate(prefix: &Path) -> anyhow::Result<i32> {
    let key = SigningKey::generate();
    let (secret, public) = key.write_pair(prefix)?;
    eprintln!(
        "Wrote the signing key {} (keep it secret) and the public key {}",
        secret.display(),
        public.display()
    );
    say(&key.public().to_string());
    Ok(0)
}
