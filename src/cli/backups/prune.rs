//! `backups prune`: verify until a backup passes, plan with the retention rules, delete what
//! no rule keeps (or only say so with `--dry-run`), one line per backup and a summary.

use std::collections::BTreeMap;
use std::sync::Arc;

use cairn::catalog::retention::{self, Decision, RetentionPolicy, Verdict};
use cairn::catalog::trust::{record_deletions, untrusted_backups};
use cairn::catalog::{
    delete_unless_protected, find_newest_verified, list_backups, placement, placement_of,
    BackupSummary, DeleteOutcome, Placement,
};
use cairn::format::encryption::Identities;
use cairn::format::signature::{SigningKey, TrustedKeys};
use cairn::RunErrors;
use cairn_store::ArtifactStore;

use crate::cli::args::UsageError;
use crate::cli::exit::report_errors;
use crate::cli::output::say;

/// How `backups prune` reports.
#[derive(Debug, Clone, Copy)]
pub(super) struct PruneOutput {
    /// `--dry-run`.
    pub(super) dry_run: bool,
    /// `--json`.
    pub(super) json: bool,
}

/// `--identity`, `--trusted-key` and `--signing-key`.
pub(super) struct Keys {
    pub(super) identities: Identities,
    pub(super) trusted: TrustedKeys,
    pub(super) signing: Option<SigningKey>,
}

/// `backups prune`: verify until a backup passes, plan, delete, one line per backup and a
/// summary. Exit code 1 when a delete failed for another reason than the store refusing it,
/// or a backup to delete is misplaced (kept: its manifest does not belong where it is stored).
/// Backups whose ids are more than 10 minutes in the future are kept and fill no slot.
///
/// With `--trusted-key`, a complete backup whose signature (or place) is refused is never
/// counted as verified and never deleted (`failed-verify`: it takes no retention slot, so
/// forged backups cannot push genuine ones out); with `--signing-key`, the backups about to be
/// deleted are listed in a signed deletion record first.
pub(super) async fn run(
    store: &Arc<dyn ArtifactStore>,
    deployment: &str,
    policy: RetentionPolicy,
    output: PruneOutput,
    parallelism: usize,
    keys: &Keys,
) -> anyhow::Result<i32> {
    let policy = policy.check().map_err(|e| UsageError(e.to_string()))?;
    let backups = list_backups(store.as_ref(), Some(deployment)).await?;
    if let Some(line) =
        crate::cli::trust::unchecked_warning(store.as_ref(), &keys.trusted, Some(deployment)).await
    {
        eprintln!("warning: {line}");
    }
    let now = chrono::Utc::now();
    for backup in backups.iter().filter(|b| b.is_future(now)) {
        eprintln!(
            "warning: {}",
            placement::future_warning(&backup.deployment, &backup.id)
        );
    }
    let untrusted = if keys.trusted.is_empty() {
        BTreeMap::new()
    } else {
        untrusted_backups(store.as_ref(), deployment, &backups, &keys.trusted).await
    };
    let candidates: Vec<BackupSummary> = backups
        .iter()
        .filter(|b| !untrusted.contains_key(&b.id))
        .cloned()
        .collect();
    let mut verification = find_newest_verified(
        store,
        deployment,
        &candidates,
        parallelism.max(1),
        &keys.identities,
        now,
    )
    .await;
    verification.failed.extend(untrusted);
    let plan = retention::plan(deployment, &backups, &policy, &verification, now)?;
    if let (Some(key), false) = (&keys.signing, output.dry_run) {
        let doomed: Vec<String> = plan
            .decisions
            .iter()
            .filter(|d| matches!(d.verdict, Verdict::Delete(_)) && d.backup.complete)
            .map(|d| d.backup.id.clone())
            .collect();
        if !doomed.is_empty() {
            let record = record_deletions(
                store.as_ref(),
                deployment,
                &doomed,
                "prune",
                key,
                &keys.trusted,
            )
            .await?;
            eprintln!(
                "Recorded the deletion of {} backups in {record}",
                doomed.len()
            );
        }
    }
    let mut tally = Tally::default();
    let mut errors = RunErrors::new();
    for decision in &plan.decisions {
        let line = execute(
            store.as_ref(),
            decision,
            output.dry_run,
            &keys.trusted,
            &mut errors,
        )
        .await;
        tally.count(line.action);
        say(&line.render(output.json));
    }
    tally.verified = verification.passed;
    say(&tally.render(deployment, output));
    Ok(report_errors(&errors, false))
}

/// What prune did with one backup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PruneAction {
    Keep,
    Delete,
    WouldDelete,
    Protected,
    FailedVerify,
    Misplaced,
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
            PruneAction::Misplaced => "misplaced",
            PruneAction::DeleteFailed => "delete-failed",
        }
    }
}

/// One output line of prune.
pub(super) struct PruneLine<'a> {
    pub(super) action: PruneAction,
    pub(super) backup: &'a BackupSummary,
    /// Why (rules, or why deleted); then what went wrong, if anything.
    pub(super) reasons: Vec<String>,
    pub(super) detail: Option<String>,
    /// What was deleted: this many `unit`s.
    pub(super) objects: Option<usize>,
    /// `objects` in a store, `snapshots` in a repository.
    pub(super) unit: &'static str,
}

impl PruneLine<'_> {
    pub(super) fn render(&self, json: bool) -> String {
        let backup = self.backup;
        if json {
            let time = backup.time.map(|t| t.to_rfc3339());
            return serde_json::json!({
                "type": "backup", "deployment": backup.deployment, "id": backup.id,
                "time": time, "complete": backup.complete,
                "action": self.action.word().replace(' ', "-"),
                "reasons": self.reasons, "detail": self.detail, self.unit: self.objects,
            })
            .to_string();
        }
        let mut why = self.reasons.join(", ");
        if let Some(detail) = &self.detail {
            why = match self.action {
                PruneAction::Protected => {
                    format!("kept: the store refused to delete it: {detail}")
                }
                PruneAction::FailedVerify | PruneAction::Misplaced => {
                    format!("kept, inspect it: {detail}")
                }
                _ => format!("{why}: {detail}"),
            };
        }
        if let Some(objects) = self.objects {
            why.push_str(&format!("; {objects} {}", self.unit));
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
    trusted: &TrustedKeys,
    errors: &mut RunErrors,
) -> PruneLine<'a> {
    let backup = &decision.backup;
    let mut line = PruneLine {
        action: PruneAction::Keep,
        backup,
        reasons: Vec::new(),
        detail: None,
        objects: None,
        unit: "objects",
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
            if dry_run {
                // What the real run would refuse, said now.
                if let Placement::Misplaced(detail) =
                    placement_of(store, &backup.deployment, &backup.id).await
                {
                    line.action = PruneAction::Misplaced;
                    line.detail = Some(format!("{detail}; prune will not delete it"));
                }
            } else {
                match delete_unless_protected(store, &backup.deployment, &backup.id, trusted).await
                {
                    DeleteOutcome::Deleted(count) => {
                        line.action = PruneAction::Delete;
                        line.objects = Some(count);
                    }
                    DeleteOutcome::Protected(detail) => {
                        line.action = PruneAction::Protected;
                        line.detail = Some(detail);
                    }
                    DeleteOutcome::Misplaced(error) => {
                        line.action = PruneAction::Misplaced;
                        line.detail = Some(error.to_string());
                        errors.push(error);
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
pub(super) struct Tally {
    total: usize,
    keep: usize,
    delete: usize,
    would_delete: usize,
    protected: usize,
    failed_verify: usize,
    misplaced: usize,
    delete_failed: usize,
    pub(super) verified: Option<String>,
}

impl Tally {
    pub(super) fn count(&mut self, action: PruneAction) {
        self.total += 1;
        *match action {
            PruneAction::Keep => &mut self.keep,
            PruneAction::Delete => &mut self.delete,
            PruneAction::WouldDelete => &mut self.would_delete,
            PruneAction::Protected => &mut self.protected,
            PruneAction::FailedVerify => &mut self.failed_verify,
            PruneAction::Misplaced => &mut self.misplaced,
            PruneAction::DeleteFailed => &mut self.delete_failed,
        } += 1;
    }

    pub(super) fn render(&self, deployment: &str, output: PruneOutput) -> String {
        if output.json {
            return serde_json::json!({
                "type": "summary", "deployment": deployment, "dry_run": output.dry_run,
                "backups": self.total, "kept": self.keep, "deleted": self.delete,
                "would_delete": self.would_delete, "protected": self.protected,
                "failed_verify": self.failed_verify, "misplaced": self.misplaced,
                "delete_failed": self.delete_failed,
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
        if self.misplaced > 0 {
            text.push_str(&format!(
                ", {} misplaced and kept (a manifest that does not belong where it is stored: look at them with `cairn backups show`)",
                self.misplaced
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
