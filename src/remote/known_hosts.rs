//! An OpenSSH known_hosts file that Cairn reads and, for hosts seen for the first time, writes:
//! OpenSSH's `StrictHostKeyChecking=accept-new`.
//!
//! bbr never checks a jumpbox's key (its proxy library key-scans the jumpbox and trusts what it
//! gets) nor a director VM's, so a fresh CI container just works with bbr. Refusing every
//! unknown host would break exactly that first run; accepting every key forever would make the
//! check useless. Trust on first use is the middle OpenSSH chose: the first key seen is
//! recorded, and from then on only that key is accepted. A changed key is refused with the
//! `ssh-keygen -R` command that forgets the old one, for when the host was really rebuilt.
//!
//! Several Cairn processes may record keys in one file at once (`--all-deployments` runs up to
//! ten children, each opening its own jumpbox tunnel). Writers take an exclusive `flock` on the
//! file itself and look the host up again once they hold it, so two processes adding the same
//! host write it once and two adding different hosts both keep their line. Readers take no
//! lock: a line is appended with one `write`, which `O_APPEND` keeps whole.
//!
//! Lookups (hashed `|1|` entries included) are russh's; new entries are written in clear, in
//! OpenSSH's format: `host key-type base64`, with `[host]:port` for a port other than 22.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use russh::keys::{self, PublicKey};

/// What a known_hosts file says about a host's key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// The key is on record for the host.
    Known,
    /// The host has no key of this type on record.
    Unknown,
    /// The host has another key of this type on record.
    Changed,
    /// The host was unknown and its key has just been appended (by this call).
    Recorded,
}

/// A known_hosts file that cannot be read or written.
#[derive(Debug, thiserror::Error)]
#[error("Cannot {} known_hosts file `{path}`: {detail}", if *.writing { "write to" } else { "read" })]
pub struct KnownHostsError {
    path: PathBuf,
    detail: String,
    writing: bool,
}

impl KnownHostsError {
    /// True when the file was read but a new key could not be written to it (OpenSSH then
    /// warns and connects anyway).
    #[must_use]
    pub fn while_writing(&self) -> bool {
        self.writing
    }
}

/// One known_hosts file.
#[derive(Debug, Clone)]
pub struct KnownHosts {
    path: PathBuf,
}

impl KnownHosts {
    /// The file at `path` (which need not exist yet).
    #[must_use]
    pub fn new(path: impl Into<PathBuf>) -> KnownHosts {
        KnownHosts { path: path.into() }
    }

    /// The file's path.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Looks `host` up without changing anything; a missing file knows no host.
    ///
    /// # Errors
    /// [`KnownHostsError`] when an entry for the host cannot be parsed.
    pub fn lookup(
        &self,
        host: &str,
        port: u16,
        key: &PublicKey,
    ) -> Result<Lookup, KnownHostsError> {
        match keys::check_known_hosts_path(host, port, key, &self.path) {
            Ok(true) => Ok(Lookup::Known),
            Ok(false) => Ok(Lookup::Unknown),
            Err(keys::Error::KeyChanged { .. }) => Ok(Lookup::Changed),
            Err(other) => Err(self.error(other.to_string())),
        }
    }

    /// Looks `host` up and, if it is unknown, appends its key under an exclusive lock (creating
    /// the file, mode 0600, and its directory, mode 0700, when missing). Returns
    /// [`Lookup::Recorded`] when this call wrote the line; a key that another process recorded
    /// meanwhile is [`Lookup::Known`] (or [`Lookup::Changed`]).
    ///
    /// # Errors
    /// [`KnownHostsError`] when the file cannot be read, locked or written.
    pub fn lookup_or_record(
        &self,
        host: &str,
        port: u16,
        key: &PublicKey,
    ) -> Result<Lookup, KnownHostsError> {
        let found = self.lookup(host, port, key)?;
        if found != Lookup::Unknown {
            return Ok(found);
        }
        let mut file = self.open_locked()?;
        // Another process may have recorded it between our look and our lock.
        let found = self.lookup(host, port, key)?;
        if found != Lookup::Unknown {
            return Ok(found);
        }
        let line = entry(host, port, key).map_err(|e| self.write_error(e))?;
        append_line(&mut file, &line).map_err(|e| self.write_error(e.to_string()))?;
        Ok(Lookup::Recorded)
    }

    /// Opens the file for appending and holds an exclusive lock on it (released when the file
    /// is closed). Retries when the path was replaced while we waited (`ssh-keygen -R` writes
    /// a new file and renames it), so the lock is always on the file the path names.
    fn open_locked(&self) -> Result<File, KnownHostsError> {
        if let Some(parent) = self.path.parent().filter(|p| !p.as_os_str().is_empty()) {
            DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)
                .map_err(|e| self.write_error(format!("cannot create its directory: {e}")))?;
        }
        for _ in 0..10 {
            let file = OpenOptions::new()
                .read(true)
                .append(true)
                .create(true)
                .mode(0o600)
                .open(&self.path)
                .map_err(|e| self.write_error(e.to_string()))?;
            file.lock()
                .map_err(|e| self.write_error(format!("cannot lock it: {e}")))?;
            let held = file
                .metadata()
                .map_err(|e| self.write_error(e.to_string()))?;
            match std::fs::metadata(&self.path) {
                Ok(named) if named.ino() == held.ino() && named.dev() == held.dev() => {
                    return Ok(file)
                }
                _ => {}
            }
        }
        Err(self.write_error("it keeps being replaced while Cairn waits for its lock".into()))
    }

    fn error(&self, detail: String) -> KnownHostsError {
        KnownHostsError {
            path: self.path.clone(),
            detail,
            writing: false,
        }
    }

    fn write_error(&self, detail: String) -> KnownHostsError {
        KnownHostsError {
            writing: true,
            ..self.error(detail)
        }
    }

    /// The command that forgets `host`'s recorded keys, as OpenSSH prints it:
    /// `ssh-keygen -f FILE -R HOST` (`'[HOST]:PORT'` for a port other than 22).
    #[must_use]
    pub fn remove_command(&self, host: &str, port: u16) -> String {
        format!(
            "ssh-keygen -f {} -R {}",
            shell_quote(&self.path.to_string_lossy()),
            shell_quote(&host_pattern(host, port))
        )
    }
}

/// How OpenSSH names a host in known_hosts: `host`, or `[host]:port` for a port other than 22.
#[must_use]
pub fn host_pattern(host: &str, port: u16) -> String {
    if port == 22 {
        host.to_string()
    } else {
        format!("[{host}]:{port}")
    }
}

/// One known_hosts line: `host key-type base64`.
fn entry(host: &str, port: u16, key: &PublicKey) -> Result<String, String> {
    let mut key = key.clone();
    key.set_comment("");
    let encoded = key.to_openssh().map_err(|e| e.to_string())?;
    Ok(format!("{} {encoded}\n", host_pattern(host, port)))
}

/// Appends `line` with one write, after a newline if the file does not end with one.
fn append_line(file: &mut File, line: &str) -> std::io::Result<()> {
    let mut text = String::new();
    if file.seek(SeekFrom::End(-1)).is_ok() {
        let mut last = [0u8; 1];
        file.read_exact(&mut last)?;
        if last[0] != b'\n' {
            text.push('\n');
        }
    }
    text.push_str(line);
    file.write_all(text.as_bytes())?;
    file.sync_data()
}

/// `text` as one shell word: unchanged when it is plain, else in single quotes.
fn shell_quote(text: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "_-./:@%+=,".contains(c);
    if !text.is_empty() && text.chars().all(plain) {
        text.to_string()
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Barrier};

    fn key(seed: u8) -> PublicKey {
        let pair = keys::ssh_key::private::Ed25519Keypair::from_seed(&[seed; 32]);
        PublicKey::from(pair.public)
    }

    #[test]
    fn an_unknown_host_is_recorded_once_in_openssh_format() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("new/.ssh/known_hosts");
        let file = KnownHosts::new(&path);
        assert_eq!(
            file.lookup("10.0.0.5", 22, &key(1)).unwrap(),
            Lookup::Unknown
        );
        assert_eq!(
            file.lookup_or_record("10.0.0.5", 22, &key(1)).unwrap(),
            Lookup::Recorded
        );
        assert_eq!(
            file.lookup_or_record("10.0.0.5", 2222, &key(2)).unwrap(),
            Lookup::Recorded
        );
        assert_eq!(
            file.lookup_or_record("10.0.0.5", 22, &key(1)).unwrap(),
            Lookup::Known
        );
        assert_eq!(
            file.lookup_or_record("10.0.0.5", 22, &key(3)).unwrap(),
            Lookup::Changed
        );
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(lines[0].starts_with("10.0.0.5 ssh-ed25519 AAAA"), "{text}");
        assert!(
            lines[1].starts_with("[10.0.0.5]:2222 ssh-ed25519 AAAA"),
            "{text}"
        );
        let mode = |p: &Path| std::fs::metadata(p).unwrap().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);
    }

    #[test]
    fn hashed_entries_still_match_and_a_missing_newline_is_added() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("known_hosts");
        std::fs::write(
            &path,
            format!("10.0.0.5 {}\n", key(1).to_openssh().unwrap()),
        )
        .unwrap();
        // OpenSSH's own hashing (`HashKnownHosts yes`): `|1|salt|hmac key-type base64`.
        let status = std::process::Command::new("ssh-keygen")
            .arg("-H")
            .arg("-f")
            .arg(&path)
            .output()
            .expect("ssh-keygen runs");
        assert!(status.status.success(), "{status:?}");
        let hashed = std::fs::read_to_string(&path).unwrap();
        assert!(hashed.starts_with("|1|"), "{hashed}");
        std::fs::write(&path, format!("# comment\n{}", hashed.trim_end())).unwrap();
        let file = KnownHosts::new(&path);
        assert_eq!(file.lookup("10.0.0.5", 22, &key(1)).unwrap(), Lookup::Known);
        assert_eq!(
            file.lookup("10.0.0.5", 22, &key(2)).unwrap(),
            Lookup::Changed
        );
        assert_eq!(
            file.lookup_or_record("10.0.0.6", 22, &key(2)).unwrap(),
            Lookup::Recorded
        );
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.contains(&format!("{}\n10.0.0.6 ssh-ed25519 ", hashed.trim_end())),
            "{text}"
        );
    }

    #[test]
    fn a_file_that_cannot_be_written_says_so() {
        // Root ignores permissions: a directory that cannot exist (its parent is a file).
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("file");
        std::fs::write(&blocker, "").unwrap();
        let file = KnownHosts::new(blocker.join("known_hosts"));
        assert_eq!(
            file.lookup("10.0.0.5", 22, &key(1)).unwrap(),
            Lookup::Unknown
        );
        let error = file.lookup_or_record("10.0.0.5", 22, &key(1)).unwrap_err();
        assert!(error.while_writing());
        assert!(
            error
                .to_string()
                .starts_with("Cannot write to known_hosts file `"),
            "{error}"
        );
    }

    #[test]
    fn the_fix_command_is_openssh_s() {
        let file = KnownHosts::new("/root/.ssh/known_hosts");
        assert_eq!(
            file.remove_command("10.0.0.5", 22),
            "ssh-keygen -f /root/.ssh/known_hosts -R 10.0.0.5"
        );
        assert_eq!(
            file.remove_command("10.0.0.5", 2222),
            "ssh-keygen -f /root/.ssh/known_hosts -R '[10.0.0.5]:2222'"
        );
        assert_eq!(
            KnownHosts::new("/tmp/my hosts").remove_command("fd00::5", 22),
            "ssh-keygen -f '/tmp/my hosts' -R fd00::5"
        );
    }

    #[test]
    fn threads_recording_at_once_keep_every_line_exactly_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("known_hosts");
        let threads = 16;
        let barrier = Arc::new(Barrier::new(threads));
        let handles: Vec<_> = (0..threads)
            .map(|i| {
                let barrier = Arc::clone(&barrier);
                let file = KnownHosts::new(&path);
                std::thread::spawn(move || {
                    barrier.wait();
                    // Half the threads add their own host, all of them add the shared one.
                    let own = u8::try_from(i).unwrap();
                    if i % 2 == 0 {
                        file.lookup_or_record(&format!("10.0.1.{i}"), 22, &key(own + 10))
                            .unwrap();
                    }
                    file.lookup_or_record("10.0.0.1", 2222, &key(1)).unwrap()
                })
            })
            .collect();
        let recorded = handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .filter(|l| *l == Lookup::Recorded)
            .count();
        assert_eq!(recorded, 1);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), threads / 2 + 1, "{text}");
        assert_eq!(text.matches("[10.0.0.1]:2222 ").count(), 1, "{text}");
        for i in (0..threads).step_by(2) {
            assert_eq!(text.matches(&format!("10.0.1.{i} ")).count(), 1, "{text}");
        }
    }
}
