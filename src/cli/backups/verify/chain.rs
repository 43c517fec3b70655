//! The chain report of `backups verify --trusted-key`: every signed backup of the deployment,
//! every gap (pruned with a signed record, or missing), every refused signature, and a
//! rollback against what this machine has seen ([`cairn::catalog::trust`]).

use cairn::catalog::trust::{remember, walk_chain, ChainReport, GapKind};
use cairn::format::signature::TrustedKeys;
use cairn_store::ArtifactStore;

use crate::cli::output::say;

/// Walks and prints the chain of `deployment`; returns 1 when something is wrong, else 0.
pub(super) async fn report(
    store: &dyn ArtifactStore,
    deployment: &str,
    trusted: &TrustedKeys,
) -> anyhow::Result<i32> {
    let chain = walk_chain(store, deployment, trusted).await?;
    for line in lines(deployment, &store.to_string(), &chain) {
        say(&line);
    }
    let mut code = i32::from(chain.has_problems());
    let seen = crate::cli::trust::seen_backups();
    let newest_seen = seen.newest(&store.to_string(), deployment)?;
    match (chain.newest(), newest_seen) {
        (Some(newest), Some(before)) if before.is_newer_than(&newest.statement.backup_id) => {
            say(&format!(
                "rollback: this machine saw {deployment}/{} (first seen {}; state {}), newer than the newest signed backup in the store; `restore --latest` refuses this store unless signed deletion records account for it",
                before.backup_id,
                before.seen_at,
                seen.path(&store.to_string(), deployment).display()
            ));
            code = 1;
        }
        (Some(newest), _) => remember(&seen, store, newest),
        (None, _) => {}
    }
    Ok(code)
}

/// The report's lines: a summary, then one line per finding.
fn lines(deployment: &str, store: &str, chain: &ChainReport) -> Vec<String> {
    let recorded = chain
        .gaps
        .iter()
        .filter(|g| matches!(g.kind, GapKind::Recorded(_)))
        .count();
    let mut summary = format!(
        "Chain of {deployment} in {store}: {} signed backups",
        chain.signed.len()
    );
    if let (Some(newest), Some(oldest)) = (chain.signed.first(), chain.signed.last()) {
        summary.push_str(&format!(
            " (newest {}, oldest {})",
            newest.statement.backup_id, oldest.statement.backup_id
        ));
    }
    summary.push_str(&format!(
        ", {recorded} gaps pruned (recorded), {} gaps missing or replaced, {} unsigned, {} refused",
        chain.gaps.len() - recorded,
        chain.unsigned.len(),
        chain.refused.len() + chain.refused_records.len()
    ));
    let mut lines = vec![summary];
    for gap in &chain.gaps {
        let what = match &gap.kind {
            GapKind::Recorded(record) => format!("pruned, recorded in {record}"),
            GapKind::Missing => "missing: deleted with no signed record (a prune or delete without --signing-key, or someone with write access to the store)".into(),
            GapKind::Replaced => "replaced: the backup stored under that id is not the one that was signed".into(),
        };
        lines.push(format!(
            "gap: {deployment}/{} (before {deployment}/{}): {what}",
            gap.missing, gap.after
        ));
    }
    for id in &chain.unsigned {
        lines.push(format!("unsigned: {deployment}/{id}"));
    }
    for (id, why) in &chain.refused {
        lines.push(format!("refused: {deployment}/{id}: {why}"));
    }
    for why in &chain.refused_records {
        lines.push(format!("refused: {why}"));
    }
    lines
}
