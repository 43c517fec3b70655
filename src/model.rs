//! The deployment model: what a BOSH deployment is to a backup, independent of how Cairn
//! reaches it. Jobs and their scripts ([`job`]), the order in which jobs are locked
//! ([`lock_order`]), and a discovered deployment with its instances ([`deployment`]).

pub mod deployment;
pub mod job;
pub mod lock_order;
