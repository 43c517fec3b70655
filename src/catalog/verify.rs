//! `backups verify` of part or all of a backup: a bbr directory (`--artifact-path`) or a
//! backup in a store, with the artifacts to read chosen by the caller (`--sample`, see
//! [`super::sampling`]).
//!
//! A directory is read through the [`BackupSource`] seam, exactly as a restore reads it:
//! [`BackupSource::check`] (metadata, every listed tar present), then each chosen tar through
//! [`CheckedBackup::open_artifact`], whose reader checks every entry and every file against
//! `metadata` — the restore's own verification, forwarding into nothing. What only a verify
//! looks for is added here: tars that `metadata` does not list, and a `manifest.yml` that is
//! not YAML. A store backup is read as `backups verify` always has
//! ([`crate::format::store::read`]): an encrypted one without an identity is checked as far
//! as its stored bytes, where the seam (which restores) would refuse it.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use cairn_store::ArtifactStore;
use futures::StreamExt;

use super::sampling::Candidate;
use crate::error::{Error, RunErrors};
use crate::format::bbr_directory::sink::BbrDirectorySource;
use crate::format::bbr_directory::{ArtifactError, BackupDirectory, Checksums};
use crate::format::encryption::Identities;
use crate::format::manifest::Manifest;
use crate::format::sink::{BackupSource, CheckedBackup};
use crate::format::store::read::{check_identities, verify_artifacts, verify_metadata, Checked};
use crate::format::store::read_placed_manifest;

/// Which artifacts to verify, given all of them: `None` for every one.
pub type Choose<'a> = Box<dyn FnOnce(&[Candidate]) -> Option<BTreeSet<String>> + Send + 'a>;

/// What a verification of (part of) a backup found.
#[derive(Debug)]
pub struct PartialVerification {
    /// Every artifact of the backup.
    pub candidates: Vec<Candidate>,
    /// The artifacts this run read and found intact.
    pub passed: Vec<String>,
    /// The artifacts this run read (intact or not).
    pub checked: Vec<String>,
    /// Encrypted artifacts of which only the stored bytes were checked (no identity).
    pub contents_unchecked: usize,
    /// Everything found wrong; empty when the backup passed.
    pub errors: RunErrors,
    /// A store backup's manifest.
    pub manifest: Option<Manifest>,
}

impl PartialVerification {
    /// Bytes of the artifacts this run read.
    #[must_use]
    pub fn checked_bytes(&self) -> u64 {
        let checked: BTreeSet<&str> = self.checked.iter().map(String::as_str).collect();
        self.candidates
            .iter()
            .filter(|c| checked.contains(c.name.as_str()))
            .fold(0_u64, |total, c| total.saturating_add(c.bytes))
    }
}

/// Verifies the chosen artifacts of a bbr backup directory against its `metadata`, at most
/// `parallelism` at once; also reports tars `metadata` does not list and a `manifest.yml`
/// that is not YAML.
///
/// # Errors
/// What stops any artifact from being read: no directory, unreadable or incomplete
/// `metadata`, listed tars that are missing.
pub async fn verify_directory(
    path: &Path,
    parallelism: usize,
    choose: Choose<'_>,
) -> Result<PartialVerification, RunErrors> {
    let checked = BbrDirectorySource::new(path).check(parallelism).await?;
    let directory = BackupDirectory::open(path);
    let listed = BackupDirectory::listed_artifacts(checked.metadata());
    let candidates: Vec<Candidate> = listed
        .iter()
        .map(|(name, _)| Candidate {
            name: name.clone(),
            bytes: std::fs::metadata(directory.tar_path(name)).map_or(0, |m| m.len()),
        })
        .collect();
    let chosen = choose(&candidates);
    let reads = listed
        .iter()
        .filter(|(name, _)| chosen.as_ref().is_none_or(|names| names.contains(name)))
        .map(|(name, checksums)| read_artifact(checked.as_ref(), name, checksums));
    let results: Vec<(String, Result<(), Error>)> = futures::stream::iter(reads)
        .buffer_unordered(parallelism.max(1))
        .collect()
        .await;
    let mut errors: Vec<Error> = directory
        .unlisted_tars(checked.metadata())
        .into_iter()
        .map(|tar| ArtifactError::Unlisted(tar).into())
        .collect();
    if let Err(error) = directory.check_deployment_manifest() {
        errors.push(error.into());
    }
    Ok(summarize(candidates, results, 0, errors, None))
}

/// Reads one artifact through the seam, checking everything, forwarding nothing.
async fn read_artifact(
    checked: &dyn CheckedBackup,
    name: &str,
    checksums: &Checksums,
) -> (String, Result<(), Error>) {
    let result = match checked.open_artifact(name, checksums).await {
        Ok(reader) => tokio::task::spawn_blocking(move || reader.forward(&mut std::io::sink()))
            .await
            .expect("verify thread"),
        Err(error) => Err(error),
    };
    (name.to_string(), result)
}

/// Verifies the chosen artifacts of a stored backup and its `metadata` object, as
/// [`crate::catalog::verify_backup`] verifies all of them.
///
/// # Errors
/// What stops any artifact from being read: no manifest, an identity that matches nothing.
pub async fn verify_store_backup(
    store: &Arc<dyn ArtifactStore>,
    deployment: &str,
    id: &str,
    parallelism: usize,
    identities: &Identities,
    choose: Choose<'_>,
) -> Result<PartialVerification, RunErrors> {
    let manifest = read_placed_manifest(store.as_ref(), deployment, id).await?;
    check_identities(store, &manifest, identities, false).await?;
    let candidates: Vec<Candidate> = manifest
        .artifacts
        .iter()
        .map(|a| Candidate {
            name: a.name.clone(),
            bytes: a.size,
        })
        .collect();
    let chosen = choose(&candidates);
    let results =
        verify_artifacts(store, &manifest, chosen.as_ref(), parallelism, identities).await;
    let contents_unchecked = results
        .iter()
        .filter(|(_, r)| matches!(r, Ok(Checked::StoredBytes)))
        .count();
    let results = results
        .into_iter()
        .map(|(name, result)| (name, result.map(|_| ())))
        .collect();
    let errors = verify_metadata(store.as_ref(), &manifest)
        .await
        .err()
        .into_iter()
        .collect();
    Ok(summarize(
        candidates,
        results,
        contents_unchecked,
        errors,
        Some(manifest),
    ))
}

fn summarize(
    candidates: Vec<Candidate>,
    results: Vec<(String, Result<(), Error>)>,
    contents_unchecked: usize,
    mut errors: Vec<Error>,
    manifest: Option<Manifest>,
) -> PartialVerification {
    let mut checked: Vec<String> = results.iter().map(|(name, _)| name.clone()).collect();
    checked.sort();
    let mut passed = Vec::new();
    for (name, result) in results {
        match result {
            Ok(()) => passed.push(name),
            Err(error) => errors.push(error),
        }
    }
    passed.sort();
    PartialVerification {
        candidates,
        passed,
        checked,
        contents_unchecked,
        errors: RunErrors(errors),
        manifest,
    }
}
