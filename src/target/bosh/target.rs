//! A BOSH deployment as a [`Target`]: its VMs from the Director, reached as a temporary SSH
//! user that the Director creates for this run and removes at its end.
//!
//! One key pair and one `bosh_<15 hex>` user serve the whole run (bbr-facts §3.1): 20
//! characters, Windows' limit on user names, as bosh-cli's `NewSSHOpts` makes them. The key is
//! RSA, as bbr's, because sshd in FIPS mode may refuse Ed25519 (docs/architecture.md, "SSH: host
//! keys and the temporary BOSH user"), and lives only in memory. Each instance's host key
//! comes from the Director's `ssh setup` answer and is pinned: a host presenting another key
//! is refused. Whatever happens after `setup` was asked for — a failed connection, a failed
//! script, an interrupt — the workflows call [`Target::release_access`], which asks the
//! Director to remove the user from every instance group it was set up on. Against SIGKILL,
//! the user (name, Director, instance groups and ids) is written to the run journal
//! ([`Target::journal_access`]) before `setup` is asked for, and a journal that cannot be
//! written stops the run there; the next command removes a killed run's user with
//! [`Target::remove_leftover_user`].

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use futures::stream::{self, StreamExt};
use russh::keys::ssh_key::private::{KeypairData, RsaKeypair};
use russh::keys::{PrivateKey, PublicKey};
use serde_json::json;

use super::client::{DirectorClient, SshHostInfo, VmInfo};
use super::retry::Attempts;
use super::BoshError;
use crate::error::{Error, RunErrors};
use crate::model::deployment::{AccessJournal, InstanceAddress, Target, TemporaryUser};
use crate::model::job::InstanceName;
use crate::model::name::check_name;
use crate::remote::dial::Dialer;
use crate::remote::reconnect::ReconnectingHost;
use crate::remote::ssh::{HostKeyPolicy, KeySource, SshDestination};
use crate::remote::{RemoteHost, RemoteHostExt};

/// A deployment of a BOSH Director.
#[derive(Debug)]
pub struct BoshTarget {
    client: Arc<DirectorClient>,
    deployment: String,
    dialer: Option<Arc<dyn Dialer>>,
    state: Mutex<State>,
    /// Where the temporary user is recorded before it is created.
    journal: Mutex<Option<Arc<dyn AccessJournal>>>,
}

#[derive(Debug, Default)]
struct State {
    /// `(instance group, job)` → release and flags, from the manifest.
    jobs: BTreeMap<(String, String), ManifestJob>,
    /// Instance groups, jobs and release versions, from the manifest.
    layout: Option<crate::model::layout::DeploymentLayout>,
    /// The SSH user and the groups (with their instance ids) it was set up on.
    session: Option<Session>,
    connected: Vec<Arc<ReconnectingHost>>,
}

#[derive(Debug, Clone)]
struct Session {
    user: String,
    groups: Vec<(String, Vec<String>)>,
}

impl BoshTarget {
    /// A deployment reached through `client`; instance connections use `dialer`
    /// (`BOSH_ALL_PROXY`) when given.
    #[must_use]
    pub fn new(
        client: Arc<DirectorClient>,
        deployment: &str,
        dialer: Option<Arc<dyn Dialer>>,
    ) -> BoshTarget {
        BoshTarget {
            client,
            deployment: deployment.to_string(),
            dialer,
            state: Mutex::new(State::default()),
            journal: Mutex::new(None),
        }
    }

    /// The temporary user of this run, once set up.
    #[must_use]
    pub fn ssh_user(&self) -> Option<String> {
        self.state
            .lock()
            .expect("state")
            .session
            .as_ref()
            .map(|s| s.user.clone())
    }

    async fn set_up_and_connect(
        &self,
        parallelism: usize,
    ) -> Result<Vec<(InstanceAddress, Arc<dyn RemoteHost>)>, Error> {
        let vms = self.client.vms(&self.deployment).await?;
        check_vm_names(&self.deployment, &vms)?;
        let manifest = self.client.manifest(&self.deployment).await?;
        {
            let mut state = self.state.lock().expect("state");
            state.jobs = manifest_jobs(&manifest);
            state.layout = crate::model::layout::DeploymentLayout::from_bosh_manifest(&manifest);
        }
        let user = temporary_user();
        // Generating an RSA key takes a moment of CPU: off the async workers.
        let (key, public_key) =
            tokio::task::spawn_blocking(ssh_key)
                .await
                .map_err(|e| BoshError::Protocol {
                    detail: format!("cannot generate an SSH key: {e}"),
                })??;
        let groups = groups_in_order(&vms);
        // Journaled before asking (a SIGKILL from here on leaves the user to the next run);
        // a journal that cannot be written stops the run before any user exists.
        let journal = self.journal.lock().expect("journal").clone();
        if let Some(journal) = journal {
            journal
                .record_user(&TemporaryUser {
                    user: user.clone(),
                    director: self.client.url().to_string(),
                    deployment: self.deployment.clone(),
                    groups: groups.clone(),
                })
                .await?;
        }
        // Recorded before asking, so that a setup that half worked is still cleaned up.
        self.state.lock().expect("state").session = Some(Session {
            user: user.clone(),
            groups: groups.clone(),
        });
        let hosts = self
            .set_up_users(&groups, &user, &public_key, parallelism)
            .await?;
        let origin = format!(
            "from the Director's SSH setup of deployment {}",
            self.deployment
        );
        for host in &hosts {
            check_name("instance group", &host.job, &origin)?;
            check_name("instance id", &host.id, &origin)?;
        }
        let key = Arc::new(key);
        let connections = hosts.into_iter().map(|host| {
            let key = Arc::clone(&key);
            let user = user.clone();
            let vms = &vms;
            async move { self.connect_one(host, key, user, vms).await }
        });
        let connected: Vec<Result<Option<_>, BoshError>> = stream::iter(connections)
            .buffered(parallelism.max(1))
            .collect()
            .await;
        let mut instances = Vec::new();
        for result in connected {
            if let Some((address, host)) = result? {
                self.state
                    .lock()
                    .expect("state")
                    .connected
                    .push(Arc::clone(&host));
                instances.push((address, host as Arc<dyn RemoteHost>));
            }
        }
        Ok(instances)
    }

    /// Asks the Director to add the temporary user with `public_key` to every instance group.
    async fn set_up_users(
        &self,
        groups: &[(String, Vec<String>)],
        user: &str,
        public_key: &str,
        parallelism: usize,
    ) -> Result<Vec<SshHostInfo>, BoshError> {
        let setups = groups.iter().cloned().map(|(group, ids)| async move {
            self.set_up_group(&group, &ids, user, public_key).await
        });
        let answers: Vec<Result<Vec<SshHostInfo>, BoshError>> = stream::iter(setups)
            .buffered(parallelism.clamp(1, 4))
            .collect()
            .await;
        let mut hosts = Vec::new();
        for answer in answers {
            hosts.extend(answer?);
        }
        Ok(hosts)
    }

    /// The `setup` of one instance group. A setup is a POST, so it is not simply sent again:
    /// when it fails in a way a retry may cure (a 5xx, a lost connection, a task that could
    /// not be followed), the Director may have set the user up anyway, so the same user is
    /// first removed from the group's instances (`cleanup`), and only once that succeeded is
    /// the setup tried again, within the Director retry policy. A failed cleanup ends the
    /// retries: the run fails and [`Target::release_access`] removes the user once more.
    async fn set_up_group(
        &self,
        group: &str,
        ids: &[String],
        user: &str,
        public_key: &str,
    ) -> Result<Vec<SshHostInfo>, BoshError> {
        let body = json!({
            "command": "setup",
            "deployment_name": self.deployment,
            "target": {"job": group, "indexes": [], "ids": []},
            "params": {"user": user, "password": "p", "public_key": format!("{public_key}\n")},
        });
        let mut attempts = Attempts::start(self.client.retry_policy());
        loop {
            tracing::info!("Setting up SSH access to instance group {group}...");
            let error = match self.client.ssh(&self.deployment, &body).await {
                Ok(result) => return parse_setup(&result),
                Err(error) => error,
            };
            if !error.is_transient() {
                return Err(error);
            }
            let Some(pause) = attempts.next_pause() else {
                return Err(error);
            };
            tracing::warn!(
                "Setting up SSH access to instance group {group} failed ({error}); removing user {user} from it, then trying again (attempt {} of {})",
                attempts.made(),
                self.client.retry_policy().attempts
            );
            tokio::time::sleep(pause).await;
            let removed = self
                .remove_user_from_group(&self.deployment, group, ids, user)
                .await;
            if !removed.is_empty() {
                return Err(BoshError::SshSetup {
                    instance: group.to_string(),
                    detail: format!(
                        "{error}; not tried again, because removing the user it may have set up failed: {}",
                        removed.join("; ")
                    ),
                });
            }
        }
    }

    /// Removes `user` from each of the group's instances (one cleanup per instance, as bbr
    /// sends them); returns the failures.
    async fn remove_user_from_group(
        &self,
        deployment: &str,
        group: &str,
        ids: &[String],
        user: &str,
    ) -> Vec<String> {
        stream::iter(ids.to_vec())
            .map(|id| async move {
                tracing::info!("Removing SSH user {user} from {group}/{id}...");
                let body = cleanup_body(deployment, group, &id, user);
                match self.client.ssh(deployment, &body).await {
                    Ok(_) => None,
                    Err(error) => Some(format!("{group}/{id}: {error}")),
                }
            })
            .buffer_unordered(8)
            .filter_map(|failure| async move { failure })
            .collect()
            .await
    }

    /// Connects to one set-up host; `None` for a Windows VM (skipped, as bbr does).
    async fn connect_one(
        &self,
        host: SshHostInfo,
        key: Arc<PrivateKey>,
        user: String,
        vms: &[VmInfo],
    ) -> Result<Option<(InstanceAddress, Arc<ReconnectingHost>)>, BoshError> {
        let name = InstanceName::new(&host.job, &host.id);
        let host_key = PublicKey::from_openssh(host.host_public_key.trim()).map_err(|e| {
            BoshError::SshSetup {
                instance: name.to_string(),
                detail: format!("the Director gave a host key that does not parse: {e}"),
            }
        })?;
        let index = host
            .index
            .or_else(|| vms.iter().find(|v| v.id == host.id).and_then(|v| v.index))
            .ok_or_else(|| BoshError::SshSetup {
                instance: name.to_string(),
                detail: "the Director gives no index for it".into(),
            })?;
        let destination = SshDestination {
            name: name.to_string(),
            address: host.ip.clone(),
            port: 22,
            username: user,
            private_key: KeySource::Generated(key),
            host_key: HostKeyPolicy::Pinned(host_key),
            dialer: self.dialer.clone(),
        };
        let connected =
            ReconnectingHost::connect(destination)
                .await
                .map_err(|e| BoshError::SshSetup {
                    instance: name.to_string(),
                    detail: e.to_string(),
                })?;
        if is_windows(&connected).await {
            tracing::warn!("skipping Windows instance {name}");
            connected.disconnect().await;
            return Ok(None);
        }
        Ok(Some((
            InstanceAddress {
                name,
                index: index.to_string(),
                bootstrap: vms.iter().any(|v| v.id == host.id && v.bootstrap),
            },
            Arc::new(connected),
        )))
    }
}

/// Refuses instance group names and instance ids from the Director that cannot become parts
/// of file names (`crate::model::name`), before any user is set up or anything locked.
fn check_vm_names(deployment: &str, vms: &[VmInfo]) -> Result<(), Error> {
    let origin = format!("from the Director's VMs of deployment {deployment}");
    for vm in vms {
        check_name("instance group", &vm.job_name, &origin)?;
        check_name("instance id", &vm.id, &origin)?;
    }
    Ok(())
}

/// bbr's Windows probe: `echo %OS%` prints `Windows_NT` only in cmd.exe.
async fn is_windows(host: &ReconnectingHost) -> bool {
    host.run("echo %OS%")
        .await
        .is_ok_and(|output| output.stdout_text().trim() == "Windows_NT")
}

/// Instance groups in first-seen order, each with its instance ids.
fn groups_in_order(vms: &[VmInfo]) -> Vec<(String, Vec<String>)> {
    let mut groups: Vec<(String, Vec<String>)> = Vec::new();
    for vm in vms {
        match groups.iter_mut().find(|(g, _)| *g == vm.job_name) {
            Some((_, ids)) => ids.push(vm.id.clone()),
            None => groups.push((vm.job_name.clone(), vec![vm.id.clone()])),
        }
    }
    groups
}

fn parse_setup(result: &str) -> Result<Vec<SshHostInfo>, BoshError> {
    let hosts: Vec<SshHostInfo> =
        serde_json::from_str(result.trim()).map_err(|e| BoshError::Protocol {
            detail: format!("ssh setup result: {e}"),
        })?;
    for host in &hosts {
        if host.status != "success" {
            return Err(BoshError::SshSetup {
                instance: format!("{}/{}", host.job, host.id),
                detail: host
                    .error
                    .clone()
                    .unwrap_or_else(|| format!("status {}", host.status)),
            });
        }
    }
    Ok(hosts)
}

/// What the manifest says about one job of one instance group.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct ManifestJob {
    release: String,
    /// `bbr.backup_one_restore_all: true` in the job's properties (v1: the group's).
    backup_one_restore_all: bool,
}

/// `(group, job)` → release and flags, from a v2 manifest (`instance_groups[].jobs[]`) or a
/// v1 one (`jobs[].templates[]`).
fn manifest_jobs(manifest: &str) -> BTreeMap<(String, String), ManifestJob> {
    use yaml_serde::Value;
    let mut jobs = BTreeMap::new();
    let Ok(parsed) = yaml_serde::from_str::<Value>(manifest) else {
        return jobs;
    };
    let text = |value: &Value, key: &str| {
        value
            .get(key)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let shared = |value: &Value| {
        value
            .get("properties")
            .and_then(|p| p.get("bbr"))
            .and_then(|b| b.get("backup_one_restore_all"))
            .and_then(Value::as_bool)
            .unwrap_or(false)
    };
    for (groups_key, jobs_key) in [("instance_groups", "jobs"), ("jobs", "templates")] {
        let groups = parsed.get(groups_key).and_then(Value::as_sequence);
        for group in groups.into_iter().flatten() {
            let group_shared = jobs_key == "templates" && shared(group);
            let group_jobs = group.get(jobs_key).and_then(Value::as_sequence);
            for job in group_jobs.into_iter().flatten() {
                jobs.entry((text(group, "name"), text(job, "name")))
                    .or_insert_with(|| ManifestJob {
                        release: text(job, "release"),
                        backup_one_restore_all: group_shared || shared(job),
                    });
            }
        }
    }
    jobs
}

#[async_trait]
impl Target for BoshTarget {
    fn name(&self) -> &str {
        &self.deployment
    }

    async fn connect(
        &self,
        parallelism: usize,
    ) -> Result<Vec<(InstanceAddress, Arc<dyn RemoteHost>)>, RunErrors> {
        self.set_up_and_connect(parallelism)
            .await
            .map_err(RunErrors::from)
    }

    fn journal_access(&self, journal: Arc<dyn AccessJournal>) {
        *self.journal.lock().expect("journal") = Some(journal);
    }

    async fn remove_leftover_user(&self, user: &TemporaryUser) -> Result<(), Error> {
        let leftover = |detail: String| Error::LeftoverUser {
            user: user.user.clone(),
            director: user.director.clone(),
            deployment: user.deployment.clone(),
            detail,
        };
        if user.director.trim_end_matches('/') != self.client.url().trim_end_matches('/') {
            return Err(leftover(format!(
                "this command reaches Director {}",
                self.client.url()
            )));
        }
        self.remove_user(&user.deployment, &user.user, &user.groups)
            .await
            .map_err(|failures| leftover(failures.join("; ")))
    }

    fn release_of(&self, group: &str, job: &str) -> String {
        let state = self.state.lock().expect("state");
        if let Some(found) = state.jobs.get(&(group.to_string(), job.to_string())) {
            found.release.clone()
        } else {
            tracing::warn!(
                "No release found for job {job} of instance group {group} in the manifest"
            );
            String::new()
        }
    }

    fn backup_one_restore_all(&self, group: &str, job: &str) -> bool {
        self.state
            .lock()
            .expect("state")
            .jobs
            .get(&(group.to_string(), job.to_string()))
            .is_some_and(|j| j.backup_one_restore_all)
    }

    fn manifest_layout(&self) -> Option<crate::model::layout::DeploymentLayout> {
        self.state.lock().expect("state").layout.clone()
    }

    async fn release_access(&self) -> Result<(), Error> {
        let (session, hosts) = {
            let mut state = self.state.lock().expect("state");
            (state.session.take(), std::mem::take(&mut state.connected))
        };
        for host in hosts {
            host.disconnect().await;
        }
        let Some(session) = session else {
            return Ok(());
        };
        match self
            .remove_user(&self.deployment, &session.user, &session.groups)
            .await
        {
            Ok(()) => {
                let journal = self.journal.lock().expect("journal").clone();
                if let Some(journal) = journal {
                    journal.user_removed(&session.user).await;
                }
                Ok(())
            }
            Err(failures) => Err(Error::Director(BoshError::Protocol {
                detail: format!(
                    "removing the SSH user {} failed for {}",
                    session.user,
                    failures.join("; ")
                ),
            })),
        }
    }
}

impl BoshTarget {
    /// Asks the Director to remove `user` from every instance of `groups`: one cleanup per
    /// instance, as bbr sends them, several at once for big deployments. Returns the failures.
    async fn remove_user(
        &self,
        deployment: &str,
        user: &str,
        groups: &[(String, Vec<String>)],
    ) -> Result<(), Vec<String>> {
        let failures: Vec<String> = stream::iter(groups.to_vec())
            .map(|(group, ids)| async move {
                self.remove_user_from_group(deployment, &group, &ids, user)
                    .await
            })
            .buffer_unordered(4)
            .flat_map(stream::iter)
            .collect()
            .await;
        if failures.is_empty() {
            Ok(())
        } else {
            Err(failures)
        }
    }
}

/// bbr's `cleanup` body for one instance: removes users matching `^user`.
fn cleanup_body(deployment: &str, group: &str, id: &str, user: &str) -> serde_json::Value {
    json!({
        "command": "cleanup",
        "deployment_name": deployment,
        "target": {"job": group, "indexes": [id], "ids": [id]},
        "params": {"user_regex": format!("^{user}")},
    })
}

/// The temporary user's name: `bosh_` and 15 random hex digits, 20 characters (bosh-cli
/// `director/ssh_opts.go`: "username must be <= 20 for Windows").
fn temporary_user() -> String {
    format!("bosh_{:015x}", rand::random::<u64>() >> 4)
}

/// Bits of the temporary RSA key: bbr asks for 2048; 3072 is OpenSSH's default and what
/// current guidance (NIST SP 800-57) asks of keys used beyond 2030, and FIPS-mode sshd takes it.
const TEMPORARY_KEY_BITS: usize = 3072;

/// A fresh RSA key for this run's temporary user (kept in memory only), and its public half in
/// OpenSSH's format.
fn ssh_key() -> Result<(PrivateKey, String), BoshError> {
    let generate = || {
        let pair = RsaKeypair::random(&mut rand::rng(), TEMPORARY_KEY_BITS)?;
        PrivateKey::try_from(KeypairData::from(pair))
    };
    let key = generate().map_err(|e| BoshError::Protocol {
        detail: format!("cannot generate an SSH key: {e}"),
    })?;
    let public_key = key
        .public_key()
        .to_openssh()
        .map_err(|e| BoshError::Protocol {
            detail: format!("cannot encode the SSH key: {e}"),
        })?;
    Ok((key, public_key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn releases_and_shared_artifacts_come_from_v2_and_v1_manifests() {
        let v2 = "instance_groups:\n- name: database\n  jobs:\n  - name: postgres\n    release: postgres-release\n  - name: bbr-pg\n    release: pg-bbr\n    properties:\n      bbr:\n        backup_one_restore_all: true\n";
        let jobs = manifest_jobs(v2);
        let postgres = &jobs[&("database".into(), "postgres".into())];
        assert_eq!(postgres.release, "postgres-release");
        assert!(!postgres.backup_one_restore_all);
        assert!(jobs[&("database".into(), "bbr-pg".into())].backup_one_restore_all);
        let v1 = "jobs:\n- name: redis\n  properties:\n    bbr:\n      backup_one_restore_all: true\n  templates:\n  - name: redis-server\n    release: redis\n";
        let redis = &manifest_jobs(v1)[&("redis".into(), "redis-server".into())];
        assert_eq!(redis.release, "redis");
        assert!(redis.backup_one_restore_all);
        assert!(manifest_jobs("not: [valid").is_empty());
    }

    #[test]
    fn setup_results_must_all_succeed() {
        let ok = r#"[{"status":"success","ip":"10.0.0.5","host_public_key":"ssh-ed25519 AAAA","id":"abc","index":0,"job":"db"}]"#;
        assert_eq!(parse_setup(ok).unwrap()[0].ip, "10.0.0.5");
        let failed = r#"[{"status":"failure","ip":"","id":"abc","index":0,"job":"db","error":"agent unresponsive"}]"#;
        assert!(parse_setup(failed)
            .unwrap_err()
            .to_string()
            .contains("agent unresponsive"));
    }

    #[test]
    fn the_temporary_user_has_bosh_cli_s_20_characters() {
        for _ in 0..200 {
            let user = temporary_user();
            assert_eq!(user.len(), 20, "{user}");
            assert!(user.starts_with("bosh_"), "{user}");
            assert!(user[5..]
                .chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        }
        assert_ne!(temporary_user(), temporary_user());
    }

    #[test]
    fn the_temporary_key_is_rsa_3072_in_openssh_format() {
        let started = std::time::Instant::now();
        let (key, public_key) = ssh_key().unwrap();
        eprintln!("RSA key generated in {:?}", started.elapsed());
        assert!(key.algorithm().is_rsa());
        assert!(public_key.starts_with("ssh-rsa AAAA"), "{public_key}");
        let parsed = PublicKey::from_openssh(&public_key).unwrap();
        let rsa = parsed.key_data().rsa().unwrap();
        assert_eq!(rsa.key_size(), 3072);
    }

    #[test]
    fn groups_keep_their_first_seen_order() {
        let vm = |group: &str, id: &str| VmInfo {
            job_name: group.into(),
            index: Some(0),
            id: id.into(),
            ips: vec![],
            bootstrap: false,
        };
        let groups = groups_in_order(&[vm("db", "1"), vm("api", "2"), vm("db", "3")]);
        assert_eq!(
            groups,
            vec![
                ("db".to_string(), vec!["1".to_string(), "3".to_string()]),
                ("api".to_string(), vec!["2".to_string()])
            ]
        );
    }
}
