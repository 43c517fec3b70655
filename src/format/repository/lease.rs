//! The prune lease: at most one `cairn backups prune` per repository at a time.
//!
//! Why: rustic_core takes no locks (it has no `locks/` file type). Its prune is two-phase, so
//! a prune racing a *backup* is safe — a pack is only marked unused at first, a backup never
//! deduplicates against a marked pack (its index leaves them out), a pack a running backup
//! wrote before its index is marked and then found indexed by the next prune and kept, and
//! marked packs are deleted only `--keep-marked` (23h) later. Two *prunes* at once are not:
//! each rewrites the index from the view it read and deletes the index files it read, so one
//! may delete or repack what the other is recording. restic answers this with lock files, and
//! a Cairn repository must stay one the restic CLI can use, so the lease *is* a restic lock:
//! an exclusive lock object `locks/<id>`, encrypted with the repository key as restic writes
//! it (AES-256-CTR and Poly1305-AES of the JSON `{"time", "exclusive", "hostname", "username",
//! "pid", "uid", "gid"}`, named by the sha256 of the stored bytes), with one field of its own,
//! `"cairn": "prune"`, which restic ignores.
//!
//! The rules are restic's: an exclusive lock conflicts with every other lock that is not
//! stale; a lock is stale when its time is more than 30 minutes old (a holder refreshes it
//! every 5 minutes, writing a new one and deleting the old), or when it was written on this
//! host by a process that is gone. So a prune is refused while a restic `backup`, `check` or
//! `prune` holds a lock, and restic refuses to prune (or `check` without `--no-lock`) while a
//! Cairn prune holds its lease. Stale locks are removed when found. After writing its lock, a
//! prune looks again: two prunes that wrote theirs at the same moment both back off.
//! Cairn's backups take no lock (the two-phase prune makes them safe, above).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use aes256ctr_poly1305aes::aead::{self, AeadInPlace};
use aes256ctr_poly1305aes::Aes256CtrPoly1305Aes;
use bytes::Bytes;
use cairn_repository::rustic_core::repofile::MasterKey;
use cairn_repository::{RepositoryError, RepositoryPassword};
use cairn_store::{ArtifactStore, ArtifactStoreExt, ObjectKey, PutOptions};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::Error;

/// restic's: a lock not refreshed for this long is stale.
pub const STALE_AFTER: Duration = Duration::from_secs(30 * 60);
/// How often a held lease is refreshed (restic's interval).
const REFRESH_EVERY: Duration = Duration::from_secs(5 * 60);
/// The folder of lock objects under the repository's root.
const LOCKS: &str = "locks/";

/// A lock object's content (restic's `Lock`, plus Cairn's own field).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockFile {
    /// When it was written (refreshed).
    pub time: DateTime<Utc>,
    /// An exclusive lock (restic's prune, Cairn's lease).
    pub exclusive: bool,
    /// The holder's host.
    #[serde(default)]
    pub hostname: String,
    /// The holder's user.
    #[serde(default)]
    pub username: String,
    /// The holder's process id.
    #[serde(default)]
    pub pid: u32,
    /// The holder's uid.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub uid: u32,
    /// The holder's gid.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub gid: u32,
    /// `prune` for Cairn's lease; absent in restic's locks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cairn: Option<String>,
}

#[allow(clippy::trivially_copy_pass_by_ref)]
fn is_zero(value: &u32) -> bool {
    *value == 0
}

impl LockFile {
    /// Stale by restic's rules, seen from `host` at `now` (`alive` tells whether a pid of
    /// this host runs).
    #[must_use]
    pub fn is_stale(&self, host: &str, now: DateTime<Utc>, alive: &dyn Fn(u32) -> bool) -> bool {
        let age = now.signed_duration_since(self.time);
        if age.to_std().is_ok_and(|age| age > STALE_AFTER) {
            return true;
        }
        self.hostname == host && !alive(self.pid)
    }

    /// Who holds it, for the refusal: `` `cairn backups prune` (pid 42 on jumpbox, user root,
    /// since 2026-12-07T21:00:00Z) ``.
    #[must_use]
    pub fn holder(&self) -> String {
        let what = match (&self.cairn, self.exclusive) {
            (Some(command), _) => format!("`cairn backups {command}`"),
            (None, true) => "an exclusive restic lock (restic prune, forget or check)".into(),
            (None, false) => "a restic lock (restic backup, check or another command)".into(),
        };
        format!(
            "{what} (pid {} on {}, user {}, since {})",
            self.pid,
            self.hostname,
            self.username,
            self.time.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        )
    }
}

/// A held lease; [`PruneLease::release`] deletes it (a lease dropped without it stays until it
/// is stale: 30 minutes, or at once for this host once the process is gone).
pub struct PruneLease {
    store: Arc<dyn ArtifactStore>,
    current: Arc<Mutex<ObjectKey>>,
    refresher: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for PruneLease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PruneLease")
            .field("key", &*self.current.lock().expect("lease key"))
            .finish_non_exhaustive()
    }
}

impl PruneLease {
    /// Stops refreshing and deletes the lock.
    pub async fn release(self) {
        self.refresher.abort();
        let key = self.current.lock().expect("lease key").clone();
        if let Err(error) = self.store.delete(&key, None).await {
            tracing::warn!(
                "Cannot remove the prune lease {key} from {}: {error}; it is stale once this process ends",
                self.store
            );
        }
    }
}

/// What it takes to write and read locks: the store and the repository's master key.
#[derive(Clone)]
struct Locks {
    store: Arc<dyn ArtifactStore>,
    key: aes256ctr_poly1305aes::Key,
}

/// Takes the prune lease of the repository at `url`, or refuses naming who holds a lock.
///
/// # Errors
/// [`Error::RepositoryLocked`] when another lock that is not stale is there; the repository's
/// or the store's failure.
pub async fn acquire(url: &str, password: &RepositoryPassword) -> Result<PruneLease, Error> {
    let repository = super::open(url, password).await?;
    let locks = Locks {
        store: repository.store(),
        key: master_key(&repository.rustic().key()),
    };
    let host = this_host();
    locks.refuse_if_held(url, &host, None).await?;
    let mine = LockFile {
        time: Utc::now(),
        exclusive: true,
        hostname: host.clone(),
        username: std::env::var("USER").unwrap_or_default(),
        pid: std::process::id(),
        uid: rustix::process::getuid().as_raw(),
        gid: rustix::process::getgid().as_raw(),
        cairn: Some("prune".into()),
    };
    let key = locks.write(&mine).await?;
    // Two prunes that wrote at the same moment both see the other's now, and both back off.
    if let Err(error) = locks.refuse_if_held(url, &host, Some(&key)).await {
        let _ = locks.store.delete(&key, None).await;
        return Err(error);
    }
    let current = Arc::new(Mutex::new(key));
    let refresher = tokio::spawn(refresh(locks.clone(), mine, Arc::clone(&current)));
    Ok(PruneLease {
        store: locks.store,
        current,
        refresher,
    })
}

/// Every `REFRESH_EVERY`: a new lock with the current time, then the old one deleted.
async fn refresh(locks: Locks, mut lock: LockFile, current: Arc<Mutex<ObjectKey>>) {
    loop {
        tokio::time::sleep(REFRESH_EVERY).await;
        lock.time = Utc::now();
        match locks.write(&lock).await {
            Ok(key) => {
                let old = std::mem::replace(&mut *current.lock().expect("lease key"), key);
                let _ = locks.store.delete(&old, None).await;
            }
            Err(error) => tracing::warn!("Cannot refresh the prune lease: {error}"),
        }
    }
}

impl Locks {
    fn failed(&self, detail: String) -> Error {
        Error::Repository(RepositoryError::Rustic {
            store: self.store.to_string(),
            detail,
        })
    }

    /// Writes `lock` as restic does; returns its key.
    async fn write(&self, lock: &LockFile) -> Result<ObjectKey, Error> {
        let json = serde_json::to_vec(lock).expect("a lock serializes");
        let sealed = self.seal(&json)?;
        let id = hex::encode(Sha256::digest(&sealed));
        let key = ObjectKey::parse(&format!("{LOCKS}{id}"))
            .map_err(|e| self.failed(format!("lock key: {e}")))?;
        self.store
            .put_bytes(&key, Bytes::from(sealed), &PutOptions::default())
            .await?;
        Ok(key)
    }

    /// Refuses when a lock other than `mine` is there and not stale; removes stale ones.
    async fn refuse_if_held(
        &self,
        url: &str,
        host: &str,
        mine: Option<&ObjectKey>,
    ) -> Result<(), Error> {
        let now = Utc::now();
        let alive = process_running;
        for object in self.store.list(LOCKS).await? {
            if Some(&object.key) == mine {
                continue;
            }
            let lock = match self.read(&object.key).await {
                Ok(lock) => lock,
                // Gone meanwhile (its holder ended): no conflict.
                Err(None) => continue,
                Err(Some(detail)) => {
                    return Err(Error::RepositoryLocked {
                        store: url.to_string(),
                        holder: format!(
                            "a lock object {} that cannot be read ({detail})",
                            object.key
                        ),
                    })
                }
            };
            if lock.is_stale(host, now, &alive) {
                tracing::info!(
                    "Removing the stale lock {} of {} from {url}",
                    object.key,
                    lock.holder()
                );
                let _ = self.store.delete(&object.key, None).await;
                continue;
            }
            return Err(Error::RepositoryLocked {
                store: url.to_string(),
                holder: lock.holder(),
            });
        }
        Ok(())
    }

    /// A lock object's content; `Err(None)` when it is gone.
    async fn read(&self, key: &ObjectKey) -> Result<LockFile, Option<String>> {
        let data = match self.store.get_bytes(key, None).await {
            Ok(data) => data,
            Err(cairn_store::StoreError::NotFound { .. }) => return Err(None),
            Err(error) => return Err(Some(error.to_string())),
        };
        let plain = self.open(&data).map_err(Some)?;
        let json = match plain.first() {
            // restic ≥ 0.14 may compress: a version byte 2, then zstd.
            Some(2) => zstd::decode_all(&plain[1..]).map_err(|e| Some(e.to_string()))?,
            _ => plain,
        };
        serde_json::from_slice(&json).map_err(|e| Some(format!("not a lock: {e}")))
    }

    /// restic's encryption: a random 16-byte nonce, AES-256-CTR, the Poly1305-AES tag last.
    fn seal(&self, plain: &[u8]) -> Result<Vec<u8>, Error> {
        let nonce: [u8; 16] = rand::random();
        let mut sealed = Vec::with_capacity(plain.len() + 32);
        sealed.extend_from_slice(&nonce);
        sealed.extend_from_slice(plain);
        let tag = Aes256CtrPoly1305Aes::new(&self.key)
            .encrypt_in_place_detached(
                aead::Nonce::<Aes256CtrPoly1305Aes>::from_slice(&nonce),
                &[],
                &mut sealed[16..],
            )
            .map_err(|e| self.failed(format!("cannot encrypt the lock: {e}")))?;
        sealed.extend_from_slice(&tag);
        Ok(sealed)
    }

    fn open(&self, sealed: &[u8]) -> Result<Vec<u8>, String> {
        if sealed.len() < 32 {
            return Err("too short".into());
        }
        let (nonce, rest) = sealed.split_at(16);
        let (body, tag) = rest.split_at(rest.len() - 16);
        let mut plain = body.to_vec();
        Aes256CtrPoly1305Aes::new(&self.key)
            .decrypt_in_place_detached(
                aead::Nonce::<Aes256CtrPoly1305Aes>::from_slice(nonce),
                &[],
                &mut plain,
                aead::Tag::<Aes256CtrPoly1305Aes>::from_slice(tag),
            )
            .map_err(|_| "its MAC does not match the repository key".to_string())?;
        Ok(plain)
    }
}

/// True when process `pid` of this host runs: `/proc/<pid>/stat` is there and its state is
/// not a zombie's (a killed holder nobody has reaped yet is gone).
fn process_running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let (_, rest) = stat.rsplit_once(") ")?;
            rest.split_whitespace()
                .next()
                .map(|state| state != "Z" && state != "X")
        })
        .unwrap_or(false)
}

/// This machine's host name, as restic records it in a lock (`os.Hostname()`).
fn this_host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default()
}

/// The 64 bytes of restic's master key: AES key, then Poly1305's k and r.
fn master_key(key: &MasterKey) -> aes256ctr_poly1305aes::Key {
    let mut bytes = aes256ctr_poly1305aes::Key::default();
    bytes[0..32].copy_from_slice(&key.encrypt);
    bytes[32..48].copy_from_slice(&key.mac.k);
    bytes[48..64].copy_from_slice(&key.mac.r);
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lock(host: &str, pid: u32, minutes_ago: i64) -> LockFile {
        LockFile {
            time: Utc::now() - chrono::Duration::minutes(minutes_ago),
            exclusive: false,
            hostname: host.into(),
            username: "root".into(),
            pid,
            uid: 0,
            gid: 0,
            cairn: None,
        }
    }

    #[test]
    fn a_lock_is_stale_after_30_minutes_or_when_its_process_on_this_host_is_gone() {
        let now = Utc::now();
        let alive = |pid: u32| pid == 7;
        assert!(!lock("here", 7, 29).is_stale("here", now, &alive));
        assert!(lock("here", 7, 31).is_stale("here", now, &alive));
        assert!(lock("here", 8, 0).is_stale("here", now, &alive));
        // Another host's process cannot be looked up: only its age counts.
        assert!(!lock("there", 8, 0).is_stale("here", now, &alive));
    }

    #[test]
    fn a_killed_holder_is_gone_even_before_it_is_reaped() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        assert!(process_running(child.id()));
        child.kill().unwrap();
        // Not reaped yet: a zombie, whose /proc entry is still there.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while process_running(child.id()) {
            assert!(std::time::Instant::now() < deadline, "still running");
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(std::path::Path::new(&format!("/proc/{}", child.id())).exists());
        child.wait().unwrap();
        assert!(!process_running(child.id()));
    }

    #[test]
    fn restic_s_lock_json_reads_and_cairn_s_names_the_prune() {
        // What restic 0.14 writes (`restic.Lock`).
        let restic = r#"{"time":"2026-12-07T21:00:00.123456789+01:00","exclusive":false,"hostname":"jumpbox","username":"vcap","pid":4242,"uid":1000,"gid":1000}"#;
        let read: LockFile = serde_json::from_str(restic).unwrap();
        assert_eq!(
            read.holder(),
            "a restic lock (restic backup, check or another command) (pid 4242 on jumpbox, user vcap, since 2026-12-07T20:00:00Z)"
        );
        let mut mine = read.clone();
        mine.cairn = Some("prune".into());
        mine.exclusive = true;
        let text = serde_json::to_string(&mine).unwrap();
        assert!(text.contains("\"exclusive\":true") && text.contains("\"cairn\":\"prune\""));
        assert!(mine
            .holder()
            .starts_with("`cairn backups prune` (pid 4242 on jumpbox"));
    }

    #[test]
    fn a_sealed_lock_opens_with_the_key_and_not_with_another() {
        let store: Arc<dyn ArtifactStore> =
            Arc::new(cairn_store::local::LocalStore::new(std::env::temp_dir()));
        let key = master_key(&MasterKey::new());
        let locks = Locks {
            store: Arc::clone(&store),
            key,
        };
        let sealed = locks.seal(b"{\"time\":1}").unwrap();
        assert_eq!(sealed.len(), 10 + 32);
        assert_eq!(locks.open(&sealed).unwrap(), b"{\"time\":1}");
        let other = Locks {
            store,
            key: master_key(&MasterKey::new()),
        };
        assert!(other.open(&sealed).is_err());
    }
}
