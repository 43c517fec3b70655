//! `backups list`: one line per backup (tab-separated, or JSON lines with `--json`).

use cairn::catalog::list_backups;
use cairn_store::ArtifactStore;

use crate::cli::output::say;

/// The header row of the text output, one name per tab-separated column.
const HEADER: &str = "BACKUP\tTIME\tSIZE\tSTATE";

/// Lists the backups (of `deployment`, or all); returns the exit code.
pub(super) async fn run(
    store: &dyn ArtifactStore,
    deployment: Option<&str>,
    json: bool,
) -> anyhow::Result<i32> {
    let backups = list_backups(store, deployment).await?;
    let mut deployments: Vec<&str> = backups.iter().map(|b| b.deployment.as_str()).collect();
    deployments.extend(deployment);
    deployments.sort_unstable();
    deployments.dedup();
    for deployment in deployments {
        super::warn_left_behind(store, deployment).await;
    }
    if !json && !backups.is_empty() {
        // A header above the data columns, which stay as they were (tab-separated).
        say(HEADER);
    }
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
