//! The `cairn` command line: bbr's flags and messages on top of the library.

pub mod all_deployments;
pub mod args;
pub mod backups;
pub mod config;
pub mod contract;
pub mod drill;
pub mod logging;
pub mod progress;
pub mod run;
pub mod signals;
