//! Backup formats: how a backup is written and read back. bbr's directory format
//! ([`bbr_directory`]), backups in an object store ([`store`], with [`manifest`] and
//! [`encryption`]), and the streaming per-file digests of tar streams both share
//! ([`digest`]) with file names kept as bytes ([`file_name`]), streamed artifacts, which both
//! store as a one-file tar ([`stream`]), and the signed statements that bind a backup to its
//! key, its place and its predecessor ([`signature`]). Deduplicating repositories in restic's
//! format (`repo+` store URLs) are [`repository`]'s.

pub mod bbr_directory;
pub mod digest;
pub mod encryption;
pub mod file_name;
pub mod hashing;
pub mod listing;
pub mod manifest;
pub mod repository;
pub mod signature;
pub mod sink;
pub mod store;
pub mod stream;
