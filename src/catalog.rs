//! The catalog: what an operator does with backups that exist — list, show, verify, delete
//! and prune ([`retention`] is the pure policy; the store calls it plans).

pub mod retention;
