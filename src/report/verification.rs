//! What one restored job's `post-restore-verify` reported: kept by the run, returned in the
//! restore's report, printed by the CLI and written into drill reports.

use serde::Serialize;

/// The outcome of verifying one restored job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum VerifyResult {
    /// `post-restore-verify` exited 0.
    Passed,
    /// It exited non-zero, timed out, or could not be run.
    Failed,
    /// The job has no `post-restore-verify`: restored, but not proven.
    NoScript,
}

/// What one job's `post-restore-verify` reported.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Verification {
    /// `<group>/<id>`.
    pub instance: String,
    /// Job name.
    pub job: String,
    /// The outcome.
    pub result: VerifyResult,
    /// The last non-empty line of its stdout.
    pub evidence: String,
    /// Why it failed: the end of its stderr, or the transport error (empty when it passed).
    pub detail: String,
    /// How long it ran.
    pub seconds: f64,
}
