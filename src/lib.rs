//! Cairn: backup and restore for BOSH-deployed platforms, compatible with bbr.
//!
//! The library does the work; the `cairn` binary only parses flags and prints. A run is:
//! a [`model::deployment::Target`] (an inventory of SSH hosts, or a director VM) is connected and its
//! jobs discovered ([`model::deployment::discover`]); a plan is computed and checked before anything
//! changes ([`workflow::backup::plan_backup`], [`workflow::restore::plan_restore`]);
//! then the workflow runs the job scripts in lock order and streams artifacts
//! ([`workflow`]). See `docs/architecture.md` for the data path.

#![warn(missing_docs, missing_debug_implementations)]

pub mod catalog;
pub mod contract;
pub mod error;
pub mod format;
pub mod model;
pub mod remote;
pub mod report;
pub mod target;
pub mod workflow;

pub use error::{Error, RunErrors};

/// Cairn's own version (`CAIRN_VERSION` in job scripts' environment).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The bbr release whose behaviour Cairn implements (bbr-facts.md describes v1.9.81): given to
/// `metadata` scripts as `BBR_VERSION`, so scripts that compare it keep working, and printed by
/// `bbr --version` for wrappers that parse bbr's line.
pub const BBR_COMPATIBLE_VERSION: &str = "1.9.81";
