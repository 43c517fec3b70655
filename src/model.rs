//! The deployment model: what a BOSH deployment is to a backup, independent of how Cairn
//! reaches it. Jobs and their scripts ([`job`]), the order in which jobs are locked
//! ([`lock_order`]), a discovered deployment with its instances ([`deployment`]), and the layout a restore
//! compares (instance groups, jobs, releases: [`layout`]), how long each job script may run
//! ([`timeouts`]), and which names can become parts of file names ([`name`]).

pub mod deployment;
pub mod job;
pub mod layout;
pub mod lock_order;
pub mod name;
pub mod timeouts;
