//! Targets: where a deployment's instances are and how to reach them. An inventory file
//! ([`inventory`]) or a director VM over plain SSH ([`ssh`]), or a deployment found through
//! the BOSH Director's API ([`bosh`]). Each implements [`crate::model::deployment::Target`].

pub mod bosh;
pub mod inventory;
pub mod ssh;
