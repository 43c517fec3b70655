//! Cairn: backup and restore for BOSH-deployed platforms, compatible with bbr.
//!
//! The library does the work; the `cairn` binary only parses flags and prints. A run is:
//! a [`deployment::Target`] (an inventory of SSH hosts, or a director VM) is connected and its
//! jobs discovered ([`deployment::discover`]); a plan is computed and checked before anything
//! changes ([`orchestrator::backup::plan_backup`], [`orchestrator::restore::plan_restore`]);
//! then the workflow runs the job scripts in lock order and streams artifacts
//! ([`orchestrator`]). See `docs/architecture.md` for the data path.

#![warn(missing_docs, missing_debug_implementations)]

pub mod artifact;
pub mod bosh;
pub mod commands;
pub mod contract;
pub mod deployment;
pub mod drill;
pub mod encryption;
pub mod error;
pub mod events;
pub mod inventory;
pub mod job;
pub mod journal;
pub mod lock_order;
pub mod manifest;
pub mod metrics;
pub mod orchestrator;
pub mod remote;
pub mod retention;
pub mod ssh_target;
pub mod store;

pub use error::{Error, RunErrors};

/// Cairn's version, also given to `metadata` scripts as `BBR_VERSION`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
