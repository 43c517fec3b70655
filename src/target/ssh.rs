//! Targets reached directly over SSH: a static inventory of instances (`cairn deployment
//! --inventory FILE`) or a single BOSH director VM (`cairn director --host H`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use futures::stream::{self, StreamExt};
use russh::keys::PublicKey;

use crate::error::{Error, RunErrors};
use crate::model::deployment::{InstanceAddress, Target};
use crate::model::job::InstanceName;
use crate::remote::dial::Dialer;
use crate::remote::reconnect::ReconnectingHost;
use crate::remote::ssh::{HostKeyPolicy, SshDestination, UnknownHost};
use crate::remote::RemoteHost;
use crate::target::inventory::{Inventory, InventoryError};

/// How host keys without a pinned key are checked.
#[derive(Debug, Clone, Default)]
pub struct HostKeyOptions {
    /// known_hosts file; `~/.ssh/known_hosts` when `None`.
    pub known_hosts: Option<PathBuf>,
    /// `--insecure-skip-host-key-check`.
    pub skip_check: bool,
}

impl HostKeyOptions {
    /// The policy for hosts without a pinned key.
    #[must_use]
    pub fn policy(&self, on_unknown: UnknownHost) -> HostKeyPolicy {
        if self.skip_check {
            return HostKeyPolicy::AcceptAny;
        }
        let path = self.known_hosts.clone().unwrap_or_else(|| {
            std::env::home_dir()
                .unwrap_or_else(|| PathBuf::from("/"))
                .join(".ssh/known_hosts")
        });
        HostKeyPolicy::KnownHosts { path, on_unknown }
    }
}

/// A fixed list of SSH hosts.
#[derive(Debug)]
pub struct SshTarget {
    name: String,
    releases: BTreeMap<String, String>,
    /// Jobs backed up once and restored everywhere (the inventory's `backup_one_restore_all`).
    shared_jobs: BTreeSet<String>,
    hosts: Vec<(InstanceAddress, SshDestination)>,
    connected: Mutex<Vec<Arc<ReconnectingHost>>>,
}

impl SshTarget {
    /// The instances of an inventory file. `name` overrides the inventory's deployment name.
    ///
    /// # Errors
    /// [`InventoryError::Invalid`] for a `host_key` that does not parse.
    pub fn from_inventory(
        inventory: &Inventory,
        inventory_path: &Path,
        name: Option<String>,
        host_keys: &HostKeyOptions,
    ) -> Result<SshTarget, InventoryError> {
        let mut hosts = Vec::new();
        for instance in &inventory.instances {
            let name = InstanceName::new(&instance.group, instance.id());
            let host_key = match &instance.host_key {
                Some(_) if host_keys.skip_check => HostKeyPolicy::AcceptAny,
                Some(line) => HostKeyPolicy::Pinned(PublicKey::from_openssh(line.trim()).map_err(
                    |error| InventoryError::Invalid {
                        path: inventory_path.to_path_buf(),
                        detail: format!("{name}: host_key is not an OpenSSH public key: {error}"),
                    },
                )?),
                // An inventory is written by hand: its hosts are pinned there or known
                // already, and one missing from both is a mistake to report, not to record.
                None => host_keys.policy(UnknownHost::Refuse),
            };
            let destination = SshDestination {
                name: name.to_string(),
                address: instance.address.clone(),
                port: instance.port,
                username: instance.username.clone(),
                private_key: instance.private_key.clone().into(),
                host_key,
                dialer: None,
            };
            let address = InstanceAddress {
                name,
                index: instance.index.to_string(),
                bootstrap: inventory.is_bootstrap(instance),
            };
            hosts.push((address, destination));
        }
        Ok(SshTarget {
            name: name.unwrap_or_else(|| inventory.deployment.clone()),
            releases: inventory.releases.clone(),
            shared_jobs: inventory.backup_one_restore_all.clone(),
            hosts,
            connected: Mutex::new(Vec::new()),
        })
    }

    /// A BOSH director VM: one instance `bosh/0`, named after the host, releases unknown. bbr
    /// accepts any key here; Cairn trusts an unknown host on first use and records its key in
    /// known_hosts ([`UnknownHost::Record`]), so a director rebuilt by `create-env` with a
    /// new key is refused with the `ssh-keygen -R` command that forgets the old one. With
    /// `pinned` (`--host-key`) the VM must present exactly that key.
    #[must_use]
    pub fn director(
        host: &str,
        username: &str,
        private_key: &Path,
        host_keys: &HostKeyOptions,
        pinned: Option<PublicKey>,
    ) -> SshTarget {
        let (address, port) = split_host_port(host);
        // A pinned key (`--host-key`) is checked as an inventory's `host_key` is; without one
        // the VM is trusted on first use (`cairn director` after `create-env`).
        let host_key = match pinned {
            Some(_) if host_keys.skip_check => HostKeyPolicy::AcceptAny,
            Some(key) => HostKeyPolicy::Pinned(key),
            None => host_keys.policy(UnknownHost::Record),
        };
        let destination = SshDestination {
            name: "bosh/0".into(),
            address: address.clone(),
            port,
            username: username.to_string(),
            private_key: private_key.to_path_buf().into(),
            host_key,
            dialer: None,
        };
        let instance = InstanceAddress {
            name: InstanceName::new("bosh", "0"),
            index: "0".into(),
            bootstrap: true,
        };
        SshTarget {
            name: address
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string(),
            releases: BTreeMap::new(),
            shared_jobs: BTreeSet::new(),
            hosts: vec![(instance, destination)],
            connected: Mutex::new(Vec::new()),
        }
    }
}

impl SshTarget {
    /// Reaches every host through `dialer` (`BOSH_ALL_PROXY`) instead of direct TCP.
    #[must_use]
    pub fn with_dialer(mut self, dialer: Option<&Arc<dyn Dialer>>) -> SshTarget {
        for (_, destination) in &mut self.hosts {
            destination.dialer = dialer.cloned();
        }
        self
    }
}

/// Splits `host[:port]` (IPv6 as `[addr]:port` or a bare address); port 22 by default.
#[must_use]
pub fn split_host_port(host: &str) -> (String, u16) {
    if let Some(rest) = host.strip_prefix('[') {
        if let Some((address, tail)) = rest.split_once(']') {
            let port = tail.strip_prefix(':').and_then(|p| p.parse().ok());
            return (address.to_string(), port.unwrap_or(22));
        }
    }
    match host.rsplit_once(':') {
        Some((address, port)) if !address.contains(':') => match port.parse() {
            Ok(port) => (address.to_string(), port),
            Err(_) => (host.to_string(), 22),
        },
        _ => (host.to_string(), 22),
    }
}

#[async_trait]
impl Target for SshTarget {
    fn name(&self) -> &str {
        &self.name
    }

    async fn connect(
        &self,
        parallelism: usize,
    ) -> Result<Vec<(InstanceAddress, Arc<dyn RemoteHost>)>, RunErrors> {
        let attempts = self
            .hosts
            .iter()
            .cloned()
            .map(|(address, destination)| async move {
                ReconnectingHost::connect(destination)
                    .await
                    .map(|host| (address, Arc::new(host)))
            });
        let results: Vec<_> = stream::iter(attempts)
            .buffered(parallelism.max(1))
            .collect()
            .await;
        let mut errors = RunErrors::new();
        let mut connected = Vec::new();
        for result in results {
            match result {
                Ok((address, host)) => {
                    self.connected.lock().expect("lock").push(Arc::clone(&host));
                    connected.push((address, host as Arc<dyn RemoteHost>));
                }
                Err(error) => errors.push(Error::Remote(error)),
            }
        }
        errors.into_result()?;
        Ok(connected)
    }

    fn release_of(&self, _group: &str, job: &str) -> String {
        self.releases.get(job).cloned().unwrap_or_default()
    }

    fn backup_one_restore_all(&self, _group: &str, job: &str) -> bool {
        self.shared_jobs.contains(job)
    }

    async fn release_access(&self) -> Result<(), Error> {
        let hosts: Vec<_> = self.connected.lock().expect("lock").drain(..).collect();
        for host in hosts {
            host.disconnect().await;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_and_port_split_like_bbr_with_ipv6() {
        assert_eq!(split_host_port("10.0.0.6"), ("10.0.0.6".into(), 22));
        assert_eq!(split_host_port("10.0.0.6:2222"), ("10.0.0.6".into(), 2222));
        assert_eq!(split_host_port("[fd00::6]:2222"), ("fd00::6".into(), 2222));
        assert_eq!(split_host_port("fd00::6"), ("fd00::6".into(), 22));
        assert_eq!(
            split_host_port("director.example"),
            ("director.example".into(), 22)
        );
    }
}
