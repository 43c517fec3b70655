//! `backups verify`: re-read a backup — in a store, or a bbr directory with `--artifact-path`
//! — and check every sha256 (and, with `--identity`, every file inside encrypted artifacts).
//! With `--sample PERCENT`, only part of it, least recently verified first, remembered in a
//! state file ([`cairn::catalog::sampling`]), and the coverage so far is reported.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use cairn::catalog::sampling::{Coverage, Percent, SampleState, StateFile};
use cairn::catalog::verify::{verify_directory, verify_store_backup, Choose, PartialVerification};
use cairn::catalog::Verified;
use cairn::format::bbr_directory::signed::{read_signed_metadata, DIRECTORY_SIGNATURE_NAME};
use cairn::format::encryption::Identities;
use cairn::format::signature::TrustedKeys;
use cairn::format::store::read::describe_encryption;
use cairn::format::store::read::verify_backup_trusted;
use cairn::format::store::signed::read_signed_manifest;
use cairn::workflow::journal::JournalFile;
use cairn::RunErrors;
use cairn_store::ArtifactStore;

use crate::cli::exit::report_errors;
use crate::cli::output::say;
use crate::cli::store::split_backup_id;

mod chain;

/// `--sample` and `--state-file`.
#[derive(Debug, Clone)]
pub(super) struct Sampling {
    percent: Option<Percent>,
    state_file: Option<PathBuf>,
}

impl Sampling {
    pub(super) fn new(percent: Option<Percent>, state_file: Option<PathBuf>) -> Sampling {
        Sampling {
            percent,
            state_file,
        }
    }
}

/// `--identity` (with `--allow-unencrypted`) and `--trusted-key`.
pub(super) struct Keys<'a> {
    pub(super) identities: &'a Identities,
    pub(super) trusted: &'a TrustedKeys,
}

/// Verifies `DEPLOYMENT/ID` in a store; returns the exit code. With `--trusted-key`, the
/// backup's signature is checked first and the deployment's chain is walked and reported
/// (exit 1 for a missing or replaced link, a refused signature or a rollback).
pub(super) async fn run(
    store: &Arc<dyn ArtifactStore>,
    id: &str,
    keys: Keys<'_>,
    parallelism: usize,
    sampling: Sampling,
) -> anyhow::Result<i32> {
    let (deployment, id) = split_backup_id(id, None)?;
    let Keys {
        identities,
        trusted,
    } = keys;
    super::warn_left_behind(store.as_ref(), &deployment).await;
    if let Some(line) =
        crate::cli::trust::unchecked_warning(store.as_ref(), trusted, Some(&deployment)).await
    {
        eprintln!("warning: {line}");
    }
    let parallelism = parallelism.max(1);
    let chain_code = if trusted.is_empty() {
        0
    } else {
        chain::report(store.as_ref(), &deployment, trusted).await?
    };
    if let Some(percent) = sampling.percent {
        if !trusted.is_empty() {
            if let Err(error) =
                read_signed_manifest(store.as_ref(), &deployment, &id, trusted).await
            {
                return Ok(report_errors(&RunErrors::from(error), false) | chain_code);
            }
        }
        let subject = format!("{store}/{deployment}/{id}");
        let label = format!("{deployment}/{id}");
        let code = run_sampled(&subject, &label, percent, sampling.state_file, |choose| {
            verify_store_backup(store, &deployment, &id, parallelism, identities, choose)
        })
        .await?;
        return Ok(code | chain_code);
    }
    let verified = verify_backup_trusted(
        store,
        &deployment,
        &id,
        parallelism,
        identities,
        false,
        trusted,
    )
    .await;
    match verified {
        Ok(verified) => {
            say(&verified_line(&deployment, &id, &verified));
            Ok(chain_code)
        }
        Err(errors) => Ok(report_errors(&errors, false) | chain_code),
    }
}

/// Verifies the bbr backup directory `path`; returns the exit code.
pub(super) async fn run_directory(
    path: &Path,
    identity: &[PathBuf],
    parallelism: usize,
    sampling: Sampling,
    trusted: &TrustedKeys,
) -> anyhow::Result<i32> {
    if !identity.is_empty() {
        eprintln!("warning: --identity is ignored: a bbr directory backup is never encrypted");
    }
    if !trusted.is_empty() {
        match read_signed_metadata(path, trusted) {
            Ok(_) => say(&format!(
                "Signature of {}: good ({DIRECTORY_SIGNATURE_NAME})",
                path.display()
            )),
            Err(error) => return Ok(report_errors(&RunErrors::from(error), false)),
        }
    } else if path.join(DIRECTORY_SIGNATURE_NAME).exists() {
        eprintln!(
            "warning: {} is signed ({DIRECTORY_SIGNATURE_NAME}), but no --trusted-key was given: its signature is not checked",
            path.display()
        );
    }
    let parallelism = parallelism.max(1);
    let label = path.display().to_string();
    if let Some(percent) = sampling.percent {
        let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        let subject = format!("directory {}", absolute.display());
        return run_sampled(&subject, &label, percent, sampling.state_file, |choose| {
            verify_directory(path, parallelism, choose)
        })
        .await;
    }
    let verification = match verify_directory(path, parallelism, Box::new(|_| None)).await {
        Ok(verification) => verification,
        Err(errors) => return Ok(report_errors(&errors, false)),
    };
    if !verification.errors.is_empty() {
        return Ok(report_errors(&verification.errors, false));
    }
    say(&format!(
        "Backup {label} is intact: {} artifacts, {} bytes verified",
        verification.candidates.len(),
        verification.checked_bytes()
    ));
    Ok(0)
}

/// One `--sample` run: load the state, let `verify` read the artifacts it chooses, record
/// what passed, save the state, report the run and the coverage.
async fn run_sampled<'a, F, Fut>(
    subject: &str,
    label: &str,
    percent: Percent,
    state_file: Option<PathBuf>,
    verify: F,
) -> anyhow::Result<i32>
where
    F: FnOnce(Choose<'a>) -> Fut,
    Fut: std::future::Future<Output = Result<PartialVerification, RunErrors>>,
{
    let file = state_file.map_or_else(
        || StateFile::default_for(&JournalFile::default_state_dir(), subject),
        StateFile::at,
    );
    let (mut state, warning) = file.load(subject);
    if let Some(warning) = warning {
        eprintln!("warning: {warning}");
    }
    let chooser = state.clone();
    let choose: Choose<'a> = Box::new(move |candidates| Some(chooser.choose(candidates, percent)));
    let verification = match verify(choose).await {
        Ok(verification) => verification,
        Err(errors) => return Ok(report_errors(&errors, false)),
    };
    state.record(
        &verification.candidates,
        &verification.passed,
        chrono::Utc::now(),
    );
    file.save(&state)
        .context("Cannot remember what --sample verified; the next run would verify the same artifacts again")?;
    say(&sample_line(label, percent, &verification));
    let window = percent.runs_for_full_coverage();
    say(&coverage_line(
        &state.coverage(&verification.candidates, window),
        window,
        &state,
        file.path(),
    ));
    Ok(report_errors(&verification.errors, false))
}

/// `Backup cf/ID: verified 3 of 60 artifacts (5%, 1234 bytes), all intact`.
fn sample_line(label: &str, percent: Percent, verification: &PartialVerification) -> String {
    let damaged = verification.checked.len() - verification.passed.len();
    let outcome = if damaged == 0 {
        "all intact".to_string()
    } else {
        format!("{damaged} damaged")
    };
    let mut line = format!(
        "Backup {label}: verified {} of {} artifacts (sample {}%, {} bytes), {outcome}",
        verification.checked.len(),
        verification.candidates.len(),
        percent.value(),
        verification.checked_bytes()
    );
    if verification.contents_unchecked > 0 {
        line.push_str(&format!(
            "; {} encrypted artifacts: only their stored bytes (size, sha256) were checked, not the files inside; give --identity FILE to decrypt and check every file",
            verification.contents_unchecked
        ));
    }
    line
}

/// `Coverage: 60 of 60 artifacts verified at least once in the last 20 runs, oldest
/// verification 2026-12-01T02:00:00Z (run 20; state FILE)`.
fn coverage_line(coverage: &Coverage, window: u64, state: &SampleState, file: &Path) -> String {
    let mut line = format!(
        "Coverage: {} of {} artifacts verified at least once in the last {} runs",
        coverage.covered,
        coverage.total,
        window.min(state.runs)
    );
    if coverage.never > 0 {
        line.push_str(&format!(", {} never verified", coverage.never));
    }
    if let Some(oldest) = coverage.oldest {
        line.push_str(&format!(
            ", oldest verification {}",
            oldest.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        ));
    }
    line.push_str(&format!(
        " (run {}; every artifact is verified within {window} runs; state {})",
        state.runs,
        file.display()
    ));
    line
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
