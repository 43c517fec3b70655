//! End-to-end: `cairn backups prune` (being written).

mod common;
