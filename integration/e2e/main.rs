//! Cairn's end-to-end tests: the real `cairn` binary against a test bed of real sshd hosts
//! (crate `cairn-testbed`), real object-store emulators and real databases.
//!
//! One test binary; each file of `integration/e2e/` is a module, `common` the harness they
//! share. Run one area with a filter on its module, e.g.
//! `cargo test --test e2e backup_restore::` or `cargo test --test e2e -- stores:: faults::`.
//!
//! The test bed needs root (network and mount namespaces, sshd on port 22): run as another
//! user, every test that needs it returns at once and the binary prints one line saying so
//! (see [`cairn_testbed::require_root`]). `sudo integration/test.sh` runs them all.

mod common;

mod backup_restore;
mod cloud_identities;
mod contract;
mod databases;
mod director;
mod encryption;
mod failures;
mod faults;
mod fidelity_cli;
mod fidelity_ssh;
mod fidelity_workflow;
mod history_report;
mod host_key_pinning;
mod host_keys_and_cli;
mod hostile_inputs;
mod instance_checksums;
mod journal_recovery;
mod kill_matrix;
mod limits;
mod local_secrets;
mod many_files;
mod modes;
mod notifications;
mod proofs;
mod prune;
mod repository;
mod repository_incremental;
mod repository_journal;
mod repository_lease;
mod repository_ops;
mod repository_restic;
mod repository_streaming;
mod restore_parallelism;
mod restore_plan;
mod resume;
mod retries;
mod segments;
mod socks_login;
mod stalls;
mod store_versioning;
mod stores;
mod streaming;
mod trust_placement;
mod trust_signatures;
mod verify_and_sample;
