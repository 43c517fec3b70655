//! The static inventory: a YAML file listing the instances of a deployment and how to reach
//! them, used instead of the BOSH Director API.
//!
//! It is parsed once, here, and every mistake is reported with the file and the entry so an
//! operator can fix it without guessing. Relative key paths are relative to the file, so an
//! inventory and its keys can travel together.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::model::name::path_component_problem;

/// A mistake in the inventory file.
#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    /// The file cannot be read. (The OS error is in the message and not a `source`, so a
    /// report that prints the error chain says it once.)
    #[error("Cannot read inventory `{path}`: {error}; check the --inventory path")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// The YAML does not match the schema.
    #[error("Invalid inventory `{path}`: {detail}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong, with the entry.
        detail: String,
    },
}

/// One instance of the inventory, as written in the file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InventoryInstance {
    /// Instance group name.
    pub group: String,
    /// BOSH index.
    pub index: u32,
    /// Instance id; defaults to the index.
    #[serde(default)]
    pub id: Option<String>,
    /// Host name or IP address (IPv6 allowed, with or without brackets).
    pub address: String,
    /// SSH port.
    #[serde(default = "default_port")]
    pub port: u16,
    /// SSH user with passwordless sudo.
    pub username: String,
    /// OpenSSH private key, resolved relative to the inventory file.
    pub private_key: PathBuf,
    /// Pinned host key in `authorized_keys` format.
    #[serde(default)]
    pub host_key: Option<String>,
    /// The group's bootstrap instance (BOSH's `bootstrap: true`): the one that backs up the
    /// group's `backup_one_restore_all` jobs. At most one per group; when none says so, the
    /// group's instance with the lowest index is.
    #[serde(default)]
    pub bootstrap: bool,
}

fn default_port() -> u16 {
    22
}

impl InventoryInstance {
    /// The instance id, or the index when the file gives none.
    #[must_use]
    pub fn id(&self) -> String {
        self.id.clone().unwrap_or_else(|| self.index.to_string())
    }
}

/// A parsed inventory file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Inventory {
    /// Deployment name, used in artifact directory names.
    pub deployment: String,
    /// Job name to release name, for lock-order matching.
    #[serde(default)]
    pub releases: BTreeMap<String, String>,
    /// Jobs backed up once and restored everywhere, as BOSH's job property
    /// `bbr.backup_one_restore_all: true` (bbr-facts §2.5): in every group that runs the job,
    /// the bootstrap instance backs it up as `<job>-<release>-backup-one-restore-all`, and
    /// every instance restores from that artifact. The job's release must be in `releases`.
    #[serde(default)]
    pub backup_one_restore_all: BTreeSet<String>,
    /// The instances.
    pub instances: Vec<InventoryInstance>,
}

impl Inventory {
    /// Reads and validates an inventory file; relative `private_key`s become absolute.
    ///
    /// # Errors
    /// [`InventoryError`] naming the file and the faulty entry.
    pub fn load(path: &Path) -> Result<Inventory, InventoryError> {
        let text = std::fs::read_to_string(path).map_err(|error| InventoryError::Read {
            path: path.to_path_buf(),
            error,
        })?;
        let invalid = |detail: String| InventoryError::Invalid {
            path: path.to_path_buf(),
            detail,
        };
        let mut inventory: Inventory =
            yaml_serde::from_str(&text).map_err(|error| invalid(error.to_string()))?;
        inventory.validate().map_err(invalid)?;
        // The inventory's folder, absolute, so a message about a key names the file itself
        // (`inv.yml` given from its own folder has the parent "").
        let file = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        let base = file.parent().unwrap_or(Path::new("."));
        for instance in &mut inventory.instances {
            if instance.private_key.is_relative() {
                instance.private_key = base.join(&instance.private_key);
            }
        }
        Ok(inventory)
    }

    fn validate(&self) -> Result<(), String> {
        // The same rule as for names from the Director: they all become parts of file names.
        if let Some(problem) = path_component_problem(&self.deployment) {
            return Err(format!(
                "`deployment` {problem}: it becomes part of file names, so it must be non-empty, not `.` or `..`, without `/` and control characters"
            ));
        }
        if self.instances.is_empty() {
            return Err("`instances` lists no instance; add at least one".into());
        }
        let mut seen = BTreeSet::new();
        for (number, instance) in self.instances.iter().enumerate() {
            let entry = format!(
                "instances[{number}] ({}/{})",
                instance.group.escape_debug(),
                instance.index
            );
            if let Some(problem) = path_component_problem(&instance.group) {
                return Err(format!(
                    "{entry}: `group` {problem}: it becomes part of file names, so it must be non-empty, not `.` or `..`, without `/` and control characters"
                ));
            }
            if instance.address.is_empty() {
                return Err(format!("{entry}: `address` is empty"));
            }
            if instance.username.is_empty() {
                return Err(format!("{entry}: `username` is empty"));
            }
            if !seen.insert((instance.group.clone(), instance.index)) {
                return Err(format!("{entry}: group and index appear twice"));
            }
        }
        self.validate_shared_jobs()
    }

    /// Every `backup_one_restore_all` job has a release (it is part of the artifact's name,
    /// which bbr reads back), and no group has two bootstrap instances.
    fn validate_shared_jobs(&self) -> Result<(), String> {
        for job in &self.backup_one_restore_all {
            if !self.releases.contains_key(job) {
                return Err(format!(
                    "backup_one_restore_all: job `{job}` has no release in `releases`; add `{job}: <release>` (its artifact is named `{job}-<release>-backup-one-restore-all`)"
                ));
            }
        }
        let mut bootstraps = BTreeSet::new();
        for instance in self.instances.iter().filter(|i| i.bootstrap) {
            if !bootstraps.insert(&instance.group) {
                return Err(format!(
                    "group `{}` has more than one instance with `bootstrap: true`; keep one",
                    instance.group
                ));
            }
        }
        Ok(())
    }

    /// True when `instance` is its group's bootstrap instance: the one marked `bootstrap:
    /// true`, else the group's lowest index.
    #[must_use]
    pub fn is_bootstrap(&self, instance: &InventoryInstance) -> bool {
        let group: Vec<&InventoryInstance> = self
            .instances
            .iter()
            .filter(|i| i.group == instance.group)
            .collect();
        match group.iter().find(|i| i.bootstrap) {
            Some(marked) => marked.index == instance.index,
            None => group.iter().map(|i| i.index).min() == Some(instance.index),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Inventory, InventoryError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("inventory.yml");
        std::fs::write(&path, text).unwrap();
        Inventory::load(&path)
    }

    #[test]
    fn loads_defaults_and_resolves_keys_relative_to_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("inv.yml");
        std::fs::write(
            &path,
            "deployment: demo\nreleases: {db: pg}\ninstances:\n- group: database\n  index: 0\n  address: 10.0.0.5\n  username: vcap\n  private_key: keys/id\n",
        )
        .unwrap();
        let inventory = Inventory::load(&path).unwrap();
        let instance = &inventory.instances[0];
        assert_eq!(instance.port, 22);
        assert_eq!(instance.id(), "0");
        assert_eq!(instance.private_key, dir.path().join("keys/id"));
        assert_eq!(inventory.releases["db"], "pg");
    }

    #[test]
    fn duplicate_instances_and_unknown_keys_are_refused() {
        let duplicate = "deployment: d\ninstances:\n- {group: g, index: 0, address: a, username: u, private_key: /k}\n- {group: g, index: 0, address: b, username: u, private_key: /k}\n";
        let error = load(duplicate).unwrap_err().to_string();
        assert!(
            error.contains("instances[1] (g/0): group and index appear twice"),
            "{error}"
        );
        let unknown = "deployment: d\ninstances:\n- {group: g, index: 0, adress: a, username: u, private_key: /k}\n";
        assert!(load(unknown).unwrap_err().to_string().contains("adress"));
    }

    #[test]
    fn the_bootstrap_instance_is_the_marked_one_else_the_lowest_index() {
        let text = "deployment: d\nreleases: {bbr-pg: pg}\nbackup_one_restore_all: [bbr-pg]\ninstances:\n- {group: db, index: 1, address: a, username: u, private_key: /k}\n- {group: db, index: 0, address: b, username: u, private_key: /k}\n- {group: web, index: 0, address: c, username: u, private_key: /k}\n- {group: web, index: 1, address: d, username: u, private_key: /k, bootstrap: true}\n";
        let inventory = load(text).unwrap();
        let bootstraps: Vec<(String, u32)> = inventory
            .instances
            .iter()
            .filter(|i| inventory.is_bootstrap(i))
            .map(|i| (i.group.clone(), i.index))
            .collect();
        assert_eq!(bootstraps, [("db".into(), 0), ("web".into(), 1)]);
        assert!(inventory.backup_one_restore_all.contains("bbr-pg"));
    }

    #[test]
    fn shared_jobs_need_a_release_and_groups_one_bootstrap() {
        let no_release = "deployment: d\nbackup_one_restore_all: [bbr-pg]\ninstances:\n- {group: g, index: 0, address: a, username: u, private_key: /k}\n";
        let error = load(no_release).unwrap_err().to_string();
        assert!(
            error.contains("job `bbr-pg` has no release in `releases`"),
            "{error}"
        );
        let two = "deployment: d\ninstances:\n- {group: g, index: 0, address: a, username: u, private_key: /k, bootstrap: true}\n- {group: g, index: 1, address: b, username: u, private_key: /k, bootstrap: true}\n";
        let error = load(two).unwrap_err().to_string();
        assert!(
            error.contains("more than one instance with `bootstrap: true`"),
            "{error}"
        );
    }

    #[test]
    fn a_missing_file_names_the_path() {
        let error = Inventory::load(Path::new("/nonexistent/inv.yml")).unwrap_err();
        assert!(error.to_string().contains("/nonexistent/inv.yml"));
    }
}
