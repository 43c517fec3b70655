//! `backups list`: one line per backup (tab-separated, or JSON lines with `--json`). A
//! complete backup's manifest is read to check that it belongs where it is stored
//! ([`cairn::catalog::placement`]): one that does not is listed as `misplaced`, never as
//! `complete`, with a warning saying how. The last column says whether a backup is signed
//! (`signed`, `unsigned`; with `--trusted-key`, `verified` or `rejected`, with a warning
//! saying why). With `--deployment D --max-age DURATION` the list is followed by the "backup
//! overdue" verdict ([`cairn::catalog::freshness`]): exit 1 when the newest complete, verified
//! backup is older, or there is none.

use cairn::catalog::freshness::check_freshness;
use cairn::catalog::{list_backups, placement, placement_of, BackupSummary, Placement};
use cairn::format::signature::TrustedKeys;
use cairn::format::store::signed::signed_backup_ids;
use cairn::report::history::{signature_state, SignatureState};
use cairn_store::ArtifactStore;
use futures::StreamExt;

use crate::cli::output::{printable, say, Lines};

/// The header row of the text output, one name per tab-separated column.
const HEADER: &str = "BACKUP\tTIME\tSIZE\tSTATE\tSIGNED";

/// Manifests read at once.
const MANIFEST_READS: usize = 8;

/// Lists the backups (of `deployment`, or all); returns the exit code.
pub(super) async fn run(
    store: &dyn ArtifactStore,
    deployment: Option<&str>,
    json: bool,
    trusted: &TrustedKeys,
) -> anyhow::Result<i32> {
    let backups = list_backups(store, deployment).await?;
    let mut deployments: Vec<&str> = backups.iter().map(|b| b.deployment.as_str()).collect();
    deployments.extend(deployment);
    deployments.sort_unstable();
    deployments.dedup();
    for deployment in deployments {
        super::warn_left_behind(store, deployment).await;
    }
    let mut resumable = Vec::new();
    for deployment in backups.iter().map(|b| b.deployment.as_str()) {
        if !resumable.iter().any(|(d, _)| *d == deployment) {
            let ids = cairn::workflow::pending_resumable_ids(store, deployment).await;
            resumable.push((deployment, ids));
        }
    }
    let is_resumable = |backup: &BackupSummary| {
        resumable
            .iter()
            .any(|(d, ids)| *d == backup.deployment && ids.contains(&backup.id))
    };
    let states = states(store, &backups).await;
    let states: Vec<&str> = backups
        .iter()
        .zip(states)
        .map(|(backup, state)| {
            if state == "incomplete" && is_resumable(backup) {
                "resumable"
            } else {
                state
            }
        })
        .collect();
    let signatures = signatures(store, &backups, trusted).await?;
    if !json && !backups.is_empty() {
        // A header above the data columns, which stay as they were (tab-separated).
        say(HEADER);
    }
    for ((backup, state), signature) in backups.iter().zip(states).zip(signatures) {
        let time = backup.time.map(|t| t.to_rfc3339()).unwrap_or_default();
        let signed = signature_word(&signature);
        if let SignatureState::Rejected(why) = &signature {
            eprintln!(
                "warning: the signature of {}/{} is rejected: {why}",
                backup.deployment, backup.id
            );
        }
        if json {
            let line = serde_json::json!({
                "deployment": backup.deployment, "id": backup.id, "time": time,
                "size": backup.size, "complete": backup.complete, "state": state,
                "signed": signed,
            });
            say(&line.to_string());
        } else {
            say(&format!(
                "{}/{}\t{time}\t{}\t{state}\t{signed}",
                backup.deployment, backup.id, backup.size
            ));
        }
    }
    Ok(0)
}

/// `--max-age`: one line on stderr saying how old the newest complete, verified backup of
/// `deployment` is ([`check_freshness`]), and each newer one passed over; returns 1 when it is
/// overdue (older than `max_age`, or none), else 0.
pub(super) async fn overdue_check(
    store: &dyn ArtifactStore,
    deployment: &str,
    max_age: std::time::Duration,
) -> anyhow::Result<i32> {
    let freshness = check_freshness(store, deployment, max_age, chrono::Utc::now()).await?;
    for (id, why) in &freshness.passed_over {
        eprintln!(
            "{}",
            printable(
                &format!("warning: backup {deployment}/{id} does not count: {why}"),
                Lines::One
            )
        );
    }
    eprintln!("{}", printable(&freshness.line(), Lines::One));
    Ok(i32::from(freshness.overdue()))
}

/// The `SIGNED` column: one word.
fn signature_word(signature: &SignatureState) -> &'static str {
    match signature {
        SignatureState::Unsigned => "unsigned",
        SignatureState::Signed => "signed",
        SignatureState::Verified => "verified",
        SignatureState::Rejected(_) => "rejected",
    }
}

/// Each backup's signature state, in order: one listing per deployment for which backups have
/// a `signature.json`; with `trusted` keys, each signed complete backup's signature checked.
async fn signatures(
    store: &dyn ArtifactStore,
    backups: &[BackupSummary],
    trusted: &TrustedKeys,
) -> anyhow::Result<Vec<SignatureState>> {
    let mut signed_ids = std::collections::BTreeMap::new();
    for backup in backups {
        if !signed_ids.contains_key(&backup.deployment) {
            let ids = signed_backup_ids(store, &backup.deployment).await?;
            signed_ids.insert(backup.deployment.clone(), ids);
        }
    }
    let reads = backups.iter().map(|backup| {
        let signed = signed_ids[&backup.deployment].contains(&backup.id);
        // An incomplete backup has no manifest to check a signature against.
        let keys = if backup.complete {
            trusted.clone()
        } else {
            TrustedKeys::default()
        };
        async move { signature_state(store, &backup.deployment, &backup.id, signed, &keys).await }
    });
    Ok(futures::stream::iter(reads)
        .buffered(MANIFEST_READS)
        .collect()
        .await)
}

/// Each backup's state, in order: `incomplete` (no manifest; `run` makes it `resumable` when a
/// resumable backup's journal in the store names it), `complete`, `misplaced` or
/// `unreadable` (its manifest); a warning on stderr for each of the last two and for each id
/// in the future.
async fn states(store: &dyn ArtifactStore, backups: &[BackupSummary]) -> Vec<&'static str> {
    let now = chrono::Utc::now();
    let reads = backups.iter().map(|backup| async move {
        if backup.complete {
            placement_of(store, &backup.deployment, &backup.id).await
        } else {
            Placement::NoManifest
        }
    });
    let placements: Vec<Placement> = futures::stream::iter(reads)
        .buffered(MANIFEST_READS)
        .collect()
        .await;
    backups
        .iter()
        .zip(placements)
        .map(|(backup, placement)| {
            let name = format!("{}/{}", backup.deployment, backup.id);
            if backup.is_future(now) {
                eprintln!(
                    "warning: {}",
                    placement::future_warning(&backup.deployment, &backup.id)
                );
            }
            match placement {
                Placement::Placed => "complete",
                Placement::NoManifest => "incomplete",
                Placement::Misplaced(detail) => {
                    eprintln!("warning: backup {name} is misplaced: {detail}; restore, verify and prune refuse it");
                    "misplaced"
                }
                Placement::Unreadable(detail) => {
                    eprintln!("warning: {detail}");
                    "unreadable"
                }
            }
        })
        .collect()
}
