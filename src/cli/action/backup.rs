//! `backup`: into a bbr directory or a store, with the journal kept in the store too.

use cairn::model::deployment::Target;
use cairn::workflow::backup::{backup, BackupOptions};
use cairn::workflow::RunContext;

use crate::cli::args::BackupArgs;
use crate::cli::store::backup_sink;

use super::Outcome;

/// Backs up `target`; returns its errors and what it stored.
pub(super) async fn run(
    target: &dyn Target,
    args: &BackupArgs,
    manifest: Option<String>,
    context: &mut RunContext,
) -> anyhow::Result<Outcome> {
    if args.with_manifest && manifest.is_none() {
        tracing::warn!("--with-manifest: an inventory has no deployment manifest; none is saved");
    }
    let (sink, journal_store) = backup_sink(args).await?;
    let options = BackupOptions {
        sink,
        unsafe_lock_free: args.unsafe_lock_free,
        manifest,
        started_at: chrono::Utc::now(),
        resumable: args.resumable || args.resume,
        resume: args.resume,
    };
    context.journal_store = journal_store;
    let report = backup(target, &options, context).await;
    if let (Some(location), true) = (&report.artifact, report.complete) {
        tracing::info!("Backup written to {location}");
    }
    Ok(Outcome {
        stored_bytes: Some(report.stored_bytes),
        artifact: report.artifact.clone().filter(|_| report.complete),
        errors: report.errors,
        kept_for_resume: report.kept_for_resume,
    })
}
