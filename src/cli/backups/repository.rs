//! `cairn backups` on a repository (`--store repo+…`): list, show, verify, delete, prune and
//! report.
//!
//! Prune applies the same plan as on a plain store ([`cairn::catalog::retention`]: the GFS
//! rules, the newest verified backup always kept, incomplete backups removed once they cannot
//! be running), with verify meaning rustic's check of the backup's snapshots, every pack they
//! use read. What it deletes are snapshots; the data they alone used is freed by rustic_core's
//! prune that follows (marked now, deleted by a prune `--keep-marked` later).

use cairn::catalog::retention::{self, RetentionPolicy, Verdict, Verification};
use cairn::format::repository::catalog::{self, DataPruned, DEFAULT_KEEP_MARKED};
use cairn::format::repository::{lease, read, stream, RepositoryPassword};
use cairn::format::store::BackupSummary;
use cairn::report::size_text;

use super::prune::{PruneAction, PruneLine, PruneOutput, Tally};
use crate::cli::args::{BackupsAction, StoreArgs, UsageError};
use crate::cli::output::say;
use crate::cli::store::split_backup_id;

/// Runs a `backups` subcommand on the repository at `url`; returns the exit code.
pub(super) async fn run(
    action: BackupsAction,
    url: &str,
    store: &StoreArgs,
    json: bool,
) -> anyhow::Result<i32> {
    refuse_plain_store_flags(&action, url)?;
    let password = crate::cli::store::repository_password(store)?;
    match action {
        BackupsAction::List { deployment, .. } => list(url, &password, deployment.as_deref()).await,
        BackupsAction::Show { id, .. } => show(url, &password, &id).await,
        BackupsAction::Verify { id, .. } => verify(url, &password, &id.unwrap_or_default()).await,
        BackupsAction::Delete { id, trust, signing } => {
            ignored_keys(!trust.trusted_key.is_empty(), signing.signing_key.is_some());
            delete(url, &password, &id).await
        }
        BackupsAction::Prune {
            deployment,
            keep_last,
            keep_daily,
            keep_weekly,
            keep_monthly,
            dry_run,
            keep_marked,
            identity,
            trust,
            signing,
            ..
        } => {
            ignored_keys(
                !trust.trusted_key.is_empty() || !identity.is_empty(),
                signing.signing_key.is_some(),
            );
            let policy = RetentionPolicy {
                keep_last,
                keep_daily,
                keep_weekly,
                keep_monthly,
            };
            let prune = Prune {
                url,
                password: &password,
                deployment: &deployment,
                output: PruneOutput { dry_run, json },
                keep_marked: keep_marked.unwrap_or(DEFAULT_KEEP_MARKED),
            };
            prune.run(policy).await
        }
        BackupsAction::Report {
            deployment,
            html,
            verify,
            trust,
        } => {
            ignored_keys(!trust.trusted_key.is_empty(), false);
            if html.is_none() && !json {
                return Err(
                    UsageError("backups report needs --html FILE, --json or both.".into()).into(),
                );
            }
            let options = cairn::report::history::HistoryOptions {
                trusted: cairn::format::signature::TrustedKeys::default(),
                verify: verify.then_some(1),
            };
            let output = super::report::Output { html, json };
            let source = super::report::Source::Repository {
                url,
                password: &password,
            };
            super::report::run(source, deployment.as_deref(), &options, &output).await
        }
    }
}

/// Flags of plain stores that repositories do not have yet: refused, naming what to use,
/// rather than ignored.
fn refuse_plain_store_flags(action: &BackupsAction, url: &str) -> Result<(), UsageError> {
    let refused = match action {
        BackupsAction::List {
            max_age: Some(_), ..
        } => Some("`backups list --max-age` (the overdue check)"),
        BackupsAction::Show { manifest: true, .. } => Some(
            "`backups show --manifest` (the deployment manifest is in the backup's record snapshot, `cairn.json`)",
        ),
        BackupsAction::Verify {
            sample: Some(_), ..
        } => Some("`backups verify --sample` (verify one backup: every pack it uses is read)"),
        _ => None,
    };
    match refused {
        Some(what) => Err(UsageError(format!(
            "{what} does not support repositories yet (--store {url}); `backups list|show|verify|delete|prune|report` do without it."
        ))),
        None => Ok(()),
    }
}

/// Keys that mean nothing for a repository: its snapshots are authenticated by the
/// repository's own key, not signed, and not age-encrypted.
fn ignored_keys(trust_or_identity: bool, signing: bool) {
    if trust_or_identity {
        eprintln!("warning: --trusted-key and --identity do not apply to a repository (its snapshots are encrypted and authenticated with the repository key); ignored");
    }
    if signing {
        eprintln!("warning: --signing-key does not apply to a repository (no signed deletion record is written there); ignored");
    }
}

/// What killed runs of `deployment` left (this machine's journals), on stderr with the
/// command that clears it, as for a plain store: a killed backup's snapshots are never listed.
async fn warn_left_behind(url: &str, deployment: &str) {
    if let Ok(store) = cairn::format::repository::open_store(url).await {
        super::warn_left_behind(store.as_ref(), deployment).await;
    }
}

/// One line per complete backup (a killed or failed backup, which has no record snapshot,
/// is not listed).
async fn list(
    url: &str,
    password: &RepositoryPassword,
    deployment: Option<&str>,
) -> anyhow::Result<i32> {
    let backups = read::list_backups(url, password, deployment).await?;
    let mut deployments: Vec<&str> = backups.iter().map(|b| b.deployment.as_str()).collect();
    deployments.extend(deployment);
    deployments.sort_unstable();
    deployments.dedup();
    for deployment in deployments {
        warn_left_behind(url, deployment).await;
    }
    for backup in &backups {
        say(&format!(
            "{}/{}  record {}",
            backup.deployment,
            backup.backup_id,
            &backup.record[..8]
        ));
    }
    if backups.is_empty() {
        say(&format!("No complete backups in {url}"));
    }
    Ok(0)
}

/// One line per artifact of one backup, with its snapshot (for `restic restore`, or `restic
/// dump SNAPSHOT /cairn-stream` of a streamed artifact).
async fn show(url: &str, password: &RepositoryPassword, id: &str) -> anyhow::Result<i32> {
    let (deployment, id) = split_backup_id(id, None)?;
    warn_left_behind(url, &deployment).await;
    let record = read::read_record(url, password, &deployment, Some(&id)).await?;
    say(&format!(
        "{}/{}: {} artifacts",
        record.deployment,
        record.backup_id,
        record.artifacts.len()
    ));
    for artifact in &record.artifacts {
        let streamed = if artifact.stream {
            format!("  streamed: one file, /{}", stream::STREAM_NAME)
        } else {
            String::new()
        };
        say(&format!(
            "{}  snapshot {}  {} bytes{streamed}",
            artifact.name, artifact.snapshot, artifact.file_bytes
        ));
    }
    Ok(0)
}

/// rustic's check of one backup's snapshots, every pack they use read.
async fn verify(url: &str, password: &RepositoryPassword, id: &str) -> anyhow::Result<i32> {
    let (deployment, id) = split_backup_id(id, None)?;
    warn_left_behind(url, &deployment).await;
    let (record, findings) = read::verify_backup(url, password, &deployment, &id).await?;
    for finding in &findings {
        let level = if finding.error { "error" } else { "warning" };
        say(&format!("{level}: {}", finding.text));
    }
    let errors = findings.iter().filter(|f| f.error).count();
    if errors == 0 {
        say(&format!(
            "Backup {deployment}/{id} in {url}: verified ({} artifacts, every pack they use read)",
            record.artifacts.len()
        ));
        Ok(0)
    } else {
        say(&format!(
            "Backup {deployment}/{id} in {url}: {errors} errors"
        ));
        Ok(1)
    }
}

/// Deletes one backup's snapshots.
async fn delete(url: &str, password: &RepositoryPassword, id: &str) -> anyhow::Result<i32> {
    let (deployment, id) = split_backup_id(id, None)?;
    let deleted =
        catalog::delete_backups(url, password, &deployment, std::slice::from_ref(&id)).await?;
    let snapshots = deleted.get(&id).copied().unwrap_or(0);
    say(&format!(
        "Deleted backup {deployment}/{id} ({snapshots} snapshots); the data only it used is freed by the next `cairn backups prune`"
    ));
    Ok(0)
}

/// `backups prune` of one deployment in a repository.
struct Prune<'a> {
    url: &'a str,
    password: &'a RepositoryPassword,
    deployment: &'a str,
    output: PruneOutput,
    keep_marked: std::time::Duration,
}

impl Prune<'_> {
    /// Under the repository's prune lease (none for a dry run, which changes nothing):
    /// another prune holding it refuses this one, naming it.
    async fn run(&self, policy: RetentionPolicy) -> anyhow::Result<i32> {
        let policy = policy.check().map_err(|e| UsageError(e.to_string()))?;
        let lease = if self.output.dry_run {
            None
        } else {
            Some(lease::acquire(self.url, self.password).await?)
        };
        let result = self.run_leased(policy).await;
        if let Some(lease) = lease {
            lease.release().await;
        }
        result
    }

    async fn run_leased(&self, policy: RetentionPolicy) -> anyhow::Result<i32> {
        let backups = catalog::backup_summaries(self.url, self.password, self.deployment).await?;
        let now = chrono::Utc::now();
        for backup in backups.iter().filter(|b| b.is_future(now)) {
            eprintln!(
                "warning: {}",
                cairn::catalog::placement::future_warning(&backup.deployment, &backup.id)
            );
        }
        let verification = self.newest_verified(&backups, now).await;
        let plan = retention::plan(self.deployment, &backups, &policy, &verification, now)?;
        let doomed: Vec<String> = plan.deletions().map(|b| b.id.clone()).collect();
        let (deleted, failure) = if self.output.dry_run || doomed.is_empty() {
            (None, None)
        } else {
            match catalog::delete_backups(self.url, self.password, self.deployment, &doomed).await {
                Ok(deleted) => (Some(deleted), None),
                Err(error) => (None, Some(error.to_string())),
            }
        };
        let mut tally = Tally::default();
        for decision in &plan.decisions {
            let mut line = PruneLine {
                action: PruneAction::Keep,
                backup: &decision.backup,
                reasons: Vec::new(),
                detail: None,
                objects: None,
                unit: "snapshots",
            };
            match &decision.verdict {
                Verdict::Keep(reasons) => {
                    line.reasons = reasons.iter().map(ToString::to_string).collect();
                }
                Verdict::FailedVerify(detail) => {
                    line.action = PruneAction::FailedVerify;
                    line.detail = Some(detail.clone());
                }
                Verdict::Delete(reason) => {
                    line.reasons = vec![reason.to_string()];
                    line.action = PruneAction::WouldDelete;
                    if let Some(detail) = &failure {
                        line.action = PruneAction::DeleteFailed;
                        line.detail = Some(detail.clone());
                    } else if let Some(deleted) = &deleted {
                        line.action = PruneAction::Delete;
                        line.objects = deleted.get(&decision.backup.id).copied();
                    }
                }
            }
            tally.count(line.action);
            say(&line.render(self.output.json));
        }
        tally.verified = verification.passed;
        let mut code = 0;
        if let Some(detail) = &failure {
            eprintln!("Cannot delete the pruned backups' snapshots: {detail}");
            code = 1;
        } else {
            let ignoring = self
                .output
                .dry_run
                .then_some((self.deployment, &doomed[..]));
            match catalog::prune_data(self.url, self.password, self.keep_marked, ignoring).await {
                Ok(data) => say(&self.data_line(&data)),
                Err(error) => {
                    eprintln!("Cannot prune the repository's data: {error}");
                    code = 1;
                }
            }
        }
        say(&tally.render(self.deployment, self.output));
        Ok(code)
    }

    /// Verifies complete backups newest first until one passes (rustic's check of its
    /// snapshots, every pack read), as prune does on a plain store.
    async fn newest_verified(
        &self,
        backups: &[BackupSummary],
        now: chrono::DateTime<chrono::Utc>,
    ) -> Verification {
        let mut verification = Verification::default();
        for backup in retention::verification_order(self.deployment, backups, now) {
            let checked =
                read::verify_backup(self.url, self.password, self.deployment, &backup.id).await;
            let detail = match checked {
                Ok((_, findings)) => {
                    let errors: Vec<String> = findings
                        .into_iter()
                        .filter(|f| f.error)
                        .map(|f| f.text)
                        .collect();
                    if errors.is_empty() {
                        verification.passed = Some(backup.id.clone());
                        break;
                    }
                    errors.join("; ")
                }
                Err(error) => error.to_string(),
            };
            verification.failed.insert(backup.id.clone(), detail);
        }
        verification
    }

    /// What rustic_core's prune did with the packs, on one line.
    fn data_line(&self, data: &DataPruned) -> String {
        let keep = humantime::format_duration(self.keep_marked);
        if self.output.json {
            return serde_json::json!({
                "type": "repository", "store": self.url, "dry_run": self.output.dry_run,
                "packs_marked": data.packs_marked, "bytes_marked": data.bytes_marked,
                "packs_deleted": data.packs_deleted, "bytes_deleted": data.bytes_deleted,
                "packs_waiting": data.packs_waiting, "packs_repacked": data.packs_repacked,
                "bytes_repacked": data.bytes_repacked, "packs_unindexed": data.packs_unindexed,
                "packs_kept": data.packs_kept, "keep_marked_seconds": self.keep_marked.as_secs(),
            })
            .to_string();
        }
        let (mark, delete, repack) = if self.output.dry_run {
            ("would be marked", "would be deleted", "would be repacked")
        } else {
            ("marked", "deleted", "repacked")
        };
        let mut text = format!(
            "repository {}: {} packs no longer used ({}) {mark} for deletion; {} packs marked by an earlier prune at least {keep} ago {delete} ({})",
            self.url,
            data.packs_marked,
            size_text(data.bytes_marked),
            data.packs_deleted,
            size_text(data.bytes_deleted),
        );
        if data.packs_waiting > 0 {
            text.push_str(&format!(
                ", {} marked packs wait for a later prune",
                data.packs_waiting
            ));
        }
        if data.packs_repacked > 0 {
            text.push_str(&format!(
                "; {} partly used packs {repack} ({} unused dropped)",
                data.packs_repacked,
                size_text(data.bytes_repacked)
            ));
        }
        if data.packs_unindexed > 0 {
            text.push_str(&format!(
                "; {} packs no index lists (left by a killed backup) {mark} for deletion",
                data.packs_unindexed
            ));
        }
        text.push_str(&format!("; {} packs kept", data.packs_kept));
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_data_line_says_what_was_marked_deleted_and_repacked() {
        let password = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(password.path(), "pw\n").unwrap();
        let password = RepositoryPassword::read(password.path()).unwrap();
        let mut prune = Prune {
            url: "repo+file:///srv/repo",
            password: &password,
            deployment: "cf",
            output: PruneOutput {
                dry_run: false,
                json: false,
            },
            keep_marked: DEFAULT_KEEP_MARKED,
        };
        let data = DataPruned {
            packs_marked: 4,
            bytes_marked: 3 << 20,
            packs_deleted: 2,
            bytes_deleted: 1 << 20,
            packs_waiting: 1,
            packs_repacked: 2,
            bytes_repacked: 2048,
            packs_unindexed: 0,
            packs_kept: 9,
        };
        assert_eq!(
            prune.data_line(&data),
            "repository repo+file:///srv/repo: 4 packs no longer used (3.0 MiB) marked for deletion; 2 packs marked by an earlier prune at least 23h ago deleted (1.0 MiB), 1 marked packs wait for a later prune; 2 partly used packs repacked (2.0 KiB unused dropped); 9 packs kept"
        );
        prune.output.dry_run = true;
        let quiet = DataPruned {
            packs_kept: 3,
            ..DataPruned::default()
        };
        assert_eq!(
            prune.data_line(&quiet),
            "repository repo+file:///srv/repo: 0 packs no longer used (0 B) would be marked for deletion; 0 packs marked by an earlier prune at least 23h ago would be deleted (0 B); 3 packs kept"
        );
        prune.output.json = true;
        let json: serde_json::Value = serde_json::from_str(&prune.data_line(&data)).unwrap();
        assert_eq!(json["type"], "repository");
        assert_eq!(json["packs_deleted"], 2);
        assert_eq!(json["keep_marked_seconds"], 82_800);
    }
}
