//! `cairn backups list|show|verify|delete|prune`: the catalog of backups in an object store.

use std::sync::Arc;

use cairn::catalog::retention::{self, Decision, RetentionPolicy, Verdict};
use cairn::catalog::{
    delete_backup, delete_unless_protected, find_newest_verified, list_backups, verify_backup,
    BackupSummary, DeleteOutcome, Verified,
};
use cairn::format::encryption::Identities;
use cairn::format::store::read::describe_encryption;
use cairn::format::store::read_manifest;
use cairn::RunErrors;
use cairn_store::ArtifactStore;

use super::args::{BackupsAction, BackupsArgs, UsageError};
use super::run::{report_errors, split_backup_id};

/// Prints a line; a closed stdout (`| head`) is not an error.
fn say(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stdout().lock(), "{line}");
}

/// Runs a `backups` subcommand; returns the exit code.
pub async fn run(args: BackupsArgs) -> anyhow::Result<i32> {
    let url = args
        .store
        .url(true)
        .ok_or_else(|| UsageError("--store flag is required (or set CAIRN_STORE).".into()))?;
    let store = cairn::format::store::open_store(&url).await?;
    match args.action {
        BackupsAction::List { deployment, json } => {
            let backups = list_backups(store.as_ref(), deployment.as_deref()).await?;
            for backup in backups {
                let time = backup.time.map(|t| t.to_rfc3339()).unwrap_or_default();
                let state = if backup.complete {
                    "complete"
                } else {
                    "incomplete"
                };
                if json {
                    let line = serde_json::json!({
                        "deployment": backup.deployment, "id": backup.id, "time": time,
                        "size": backup.size, "complete": backup.complete,
                    });
                    say(&line.to_string());
                } else {
                    say(&format!(
                        "{}/{}\t{time}\t{}\t{state}",
                        backup.deployment, backup.id, backup.size
                    ));
                }
            }
            Ok(0)
        }
        BackupsAction::Show { id, json } => {
            let (deployment, id) = split_backup_id(&id, None)?;
            let manifest = read_manifest(store.as_ref(), &deployment, &id).await?;
            if json {
                say(&manifest.to_json());
            } else {
                let encryption = manifest
                    .encryption()
                    .map(|e| format!(", encrypted: {}", describe_encryption(e)))
                    .unwrap_or_default();
                say(&format!(
                    "backup {deployment}/{id} ({} artifacts, {} bytes, {:?}{encryption})",
                    manifest.artifacts.len(),
                    manifest.stored_bytes(),
                    manifest.compression
                ));
                say(&format!(
                    "started {}  finished {}  by cairn {}",
                    manifest.started_at, manifest.finished_at, manifest.cairn_version
                ));
                for artifact in &manifest.artifacts {
                    let version = artifact.version.as_deref().unwrap_or("-");
                    let encrypted = artifact
                        .encryption
                        .as_ref()
                        .map(|e| format!("\tencrypted {}", describe_encryption(e)))
                        .unwrap_or_default();
                    say(&format!(
                        "  {}\t{} bytes\t{} files\tversion {version}\tsha256 {}{encrypted}",
                        artifact.key,
                        artifact.size,
                        artifact.files.len(),
                        artifact.sha256
                    ));
                }
                for job in &manifest.jobs {
                    say(&format!(
                        "  {}/{}\tlocked {:?}\tunlocked {:?}",
                        job.instance, job.job, job.locked_at, job.unlocked_at
                    ));
                }
            }
            Ok(0)
        }
        BackupsAction::Verify { id, identity } => {
            let (deployment, id) = split_backup_id(&id, None)?;
            let identities = Identities::load(&identity).map_err(UsageError)?;
            let parallelism = args.parallelism.max(1);
            match verify_backup(&store, &deployment, &id, parallelism, &identities, false).await {
                Ok(verified) => {
                    say(&verified_line(&deployment, &id, &verified));
                    Ok(0)
                }
                Err(errors) => Ok(report_errors(&errors, false)),
            }
        }
        BackupsAction::Delete { id } => {
            let (deployment, id) = split_backup_id(&id, None)?;
            match delete_backup(store.as_ref(), &deployment, &id).await {
                Ok(count) => {
                    say(&format!(
                        "Deleted backup {deployment}/{id} ({count} objects)"
                    ));
                    Ok(0)
                }
                Err(error) => Ok(report_errors(&RunErrors::from(error), false)),
            }
        }
        BackupsAction::Prune {
            deployment,
            keep_last,
            keep_daily,
            keep_weekly,
            keep_monthly,
            dry_run,
            json,
            identity,
        } => {
            let identities = Identities::load(&identity).map_err(UsageError)?;
            let policy = RetentionPolicy {
                keep_last,
                keep_daily,
                keep_weekly,
                keep_monthly,
            };
            let output = PruneOutput { dry_run, json };
            prune(
                &store,
                &deployment,
                policy,
                output,
                args.parallelism,
                &identities,
            )
            .await
        }
    }
}

/// What `backups verify` says of a backup that passed.
fn verified_line(deployment: &str, id: &str, verified: &Verified) -> String {
    let manifest = &verified.manifest;
    let mut line = format!(
        "Backup {deployment}/{id} is intact: {} artifacts, {} bytes verified",
        manifest.artifacts.len(),
        manifest.stored_bytes()
    );
    match manifest.encryption() {
        Some(_) if verified.contents_unchecked > 0 => line.push_str(&format!(
            "; {} encrypted artifacts: only their stored bytes (size, sha256) were checked, not the files inside; give --identity FILE to decrypt and check every file",
            verified.contents_unchecked
        )),
        Some(encryption) => line.push_str(&format!(
            " (encrypted, {}: decrypted, every file checked)",
            describe_encryption(encryption)
        )),
        None => {}
    }
    line
}

/// How `backups prune` reports.
#[derive(Debug, Clone, Copy)]
struct PruneOutput {
    dry_run: bool,
    json: bool,
}

/// `backups prune`: verify until a backup passes, plan, delete, one line per backup and a
/// summary. Exit code 1 when a delete failed for another reason than the store refusing it.
async fn prune(
    store: &Arc<dyn ArtifactStore>,
    deployment: &str,
    policy: RetentionPolicy,
    output: PruneOutput,
    parallelism: usize,
    identities: &Identities,
) -> anyhow::Result<i32> {
    let policy = policy.check().map_err(|e| UsageError(e.to_string()))?;
    let backups = list_backups(store.as_ref(), Some(deployment)).await?;
    let verification =
        find_newest_verified(store, deployment, &backups, parallelism.max(1), identities).await;
    let plan = retention::plan(
        deployment,
        &backups,
        &policy,
        &verification,
        chrono::Utc::now(),
    )?;
    let mut tally = Tally::default();
    let mut errors = RunErrors::new();
    for decision in &plan.decisions {
        let line = execute(store.as_ref(), decision, output.dry_run, &mut errors).await;
        tally.count(line.action);
        say(&line.render(output.json));
    }
    tally.verified = verification.passed;
    say(&tally.render(deployment, output));
    Ok(report_errors(&errors, false))
}

/// What prune did with one backup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PruneAction {
    Keep,
    Delete,
    WouldDelete,
    Protected,
    FailedVerify,
    DeleteFailed,
}

impl PruneAction {
    fn word(self) -> &'static str {
        match self {
            PruneAction::Keep => "keep",
            PruneAction::Delete => "delete",
            PruneAction::WouldDelete => "would delete",
            PruneAction::Protected => "protected",
            PruneAction::FailedVerify => "failed-verify",
            PruneAction::DeleteFailed => "delete-failed",
        }
    }
}

/// One output line of prune.
struct PruneLine<'a> {
    action: PruneAction,
    backup: &'a BackupSummary,
    /// Why (rules, or why deleted); then what went wrong, if anything.
    reasons: Vec<String>,
    detail: Option<String>,
    objects: Option<usize>,
}

impl PruneLine<'_> {
    fn render(&self, json: bool) -> String {
        let backup = self.backup;
        if json {
            let time = backup.time.map(|t| t.to_rfc3339());
            return serde_json::json!({
                "type": "backup", "deployment": backup.deployment, "id": backup.id,
                "time": time, "complete": backup.complete,
                "action": self.action.word().replace(' ', "-"),
                "reasons": self.reasons, "detail": self.detail, "objects": self.objects,
            })
            .to_string();
        }
        let mut why = self.reasons.join(", ");
        if let Some(detail) = &self.detail {
            why = match self.action {
                PruneAction::Protected => {
                    format!("kept: the store refused to delete it: {detail}")
                }
                PruneAction::FailedVerify => format!("kept, inspect it: {detail}"),
                _ => format!("{why}: {detail}"),
            };
        }
        if let Some(objects) = self.objects {
            why.push_str(&format!("; {objects} objects"));
        }
        format!(
            "{} {}/{} ({why})",
            self.action.word(),
            backup.deployment,
            backup.id
        )
    }
}

/// Carries out one decision.
async fn execute<'a>(
    store: &dyn ArtifactStore,
    decision: &'a Decision,
    dry_run: bool,
    errors: &mut RunErrors,
) -> PruneLine<'a> {
    let backup = &decision.backup;
    let mut line = PruneLine {
        action: PruneAction::Keep,
        backup,
        reasons: Vec::new(),
        detail: None,
        objects: None,
    };
    match &decision.verdict {
        Verdict::Keep(reasons) => line.reasons = reasons.iter().map(ToString::to_string).collect(),
        Verdict::FailedVerify(detail) => {
            line.action = PruneAction::FailedVerify;
            line.detail = Some(detail.clone());
        }
        Verdict::Delete(reason) => {
            line.reasons = vec![reason.to_string()];
            line.action = PruneAction::WouldDelete;
            if !dry_run {
                match delete_unless_protected(store, &backup.deployment, &backup.id).await {
                    DeleteOutcome::Deleted(count) => {
                        line.action = PruneAction::Delete;
                        line.objects = Some(count);
                    }
                    DeleteOutcome::Protected(detail) => {
                        line.action = PruneAction::Protected;
                        line.detail = Some(detail);
                    }
                    DeleteOutcome::Failed(error) => {
                        line.action = PruneAction::DeleteFailed;
                        line.detail = Some(error.to_string());
                        errors.push(error);
                    }
                }
            }
        }
    }
    line
}

/// Counts of each action, for the summary line.
#[derive(Debug, Default)]
struct Tally {
    total: usize,
    keep: usize,
    delete: usize,
    would_delete: usize,
    protected: usize,
    failed_verify: usize,
    delete_failed: usize,
    verified: Option<String>,
}

impl Tally {
    fn count(&mut self, action: PruneAction) {
        self.total += 1;
        *match action {
            PruneAction::Keep => &mut self.keep,
            PruneAction::Delete => &mut self.delete,
            PruneAction::WouldDelete => &mut self.would_delete,
            PruneAction::Protected => &mut self.protected,
            PruneAction::FailedVerify => &mut self.failed_verify,
            PruneAction::DeleteFailed => &mut self.delete_failed,
        } += 1;
    }

    fn render(&self, deployment: &str, output: PruneOutput) -> String {
        if output.json {
            return serde_json::json!({
                "type": "summary", "deployment": deployment, "dry_run": output.dry_run,
                "backups": self.total, "kept": self.keep, "deleted": self.delete,
                "would_delete": self.would_delete, "protected": self.protected,
                "failed_verify": self.failed_verify, "delete_failed": self.delete_failed,
                "verified": self.verified,
            })
            .to_string();
        }
        let mut text = if output.dry_run {
            format!(
                "summary {deployment} (dry run, nothing deleted): {} backups, {} kept, {} would be deleted",
                self.total, self.keep, self.would_delete
            )
        } else {
            format!(
                "summary {deployment}: {} backups, {} kept, {} deleted",
                self.total, self.keep, self.delete
            )
        };
        if self.protected > 0 {
            text.push_str(&format!(
                ", {} protected by the store (Object Lock) and kept",
                self.protected
            ));
        }
        if self.failed_verify > 0 {
            text.push_str(&format!(
                ", {} failed verify and kept (look at them with `cairn backups verify`)",
                self.failed_verify
            ));
        }
        if self.delete_failed > 0 {
            text.push_str(&format!(", {} could not be deleted", self.delete_failed));
        }
        match &self.verified {
            Some(id) => text.push_str(&format!("; newest verified backup: {deployment}/{id}")),
            None if self.failed_verify > 0 => {
                text.push_str("; no complete backup passed verify");
            }
            None => {}
        }
        text
    }
}
