//! The private key files Cairn logs in with (inventory `private_key`, `--private-key-path`,
//! `BOSH_ALL_PROXY`'s `private-key`): their permissions and their passphrase.
//!
//! A private key that its group or other users can read is as good as published on the
//! jumpbox; OpenSSH refuses such a file ("UNPROTECTED PRIVATE KEY FILE") and so does Cairn,
//! naming the file and the `chmod 600` that fixes it. The same holds for the passphrase file.
//!
//! A passphrase-protected key is decrypted with the passphrase of
//! `--private-key-passphrase-file FILE` (its first line; one passphrase for every key file of
//! the run). A file rather than a flag or an environment variable: a flag's value is visible
//! in `ps` to every local user, an environment variable to the same user's processes and in
//! `/proc/<pid>/environ`, and a cron job or CI secret is most easily a file. ssh-agent is not
//! used: Cairn runs unattended, where an agent is one more daemon to keep alive.
//!
//! Like [`super::ssh::set_keepalive_interval`], the passphrase is one setting for the process,
//! set once by the CLI before it connects anything, so that it need not be threaded through
//! every target, the Director's SSH users and the jumpbox.

use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::OnceLock;

use russh::keys;
use zeroize::Zeroizing;

use super::RemoteError;

/// The passphrase of encrypted key files, once `--private-key-passphrase-file` was read.
static PASSPHRASE: OnceLock<Zeroizing<String>> = OnceLock::new();

/// A secret file (a passphrase, the Director's password) that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("Cannot use {flag} `{path}`: {detail}")]
pub struct SecretFileError {
    flag: String,
    path: String,
    detail: String,
}

/// Reads `--private-key-passphrase-file` and keeps its passphrase for every key file loaded
/// afterwards. Call once, before connecting.
///
/// # Errors
/// [`SecretFileError`] when the file cannot be read, is empty, or others may read it.
pub fn set_passphrase_file(path: &Path) -> Result<(), SecretFileError> {
    let passphrase = read_secret_file(path, "--private-key-passphrase-file")?;
    // A second call (never made by the CLI) keeps the first passphrase.
    let _ = PASSPHRASE.set(passphrase);
    Ok(())
}

/// The first line of a secret file given with `flag` (without its line end), refused when
/// the file is open to group or others or its first line is empty. Also for the Director's
/// `--password-file`.
///
/// # Errors
/// [`SecretFileError`].
pub fn read_secret_file(path: &Path, flag: &str) -> Result<Zeroizing<String>, SecretFileError> {
    let error = |detail: String| SecretFileError {
        flag: flag.to_string(),
        path: path.display().to_string(),
        detail,
    };
    let mut file = std::fs::File::open(path).map_err(|e| {
        error(if e.kind() == std::io::ErrorKind::NotFound {
            format!("no such file; fix {flag}")
        } else {
            e.to_string()
        })
    })?;
    let metadata = file.metadata().map_err(|e| error(e.to_string()))?;
    if let Some(problem) = exposed(metadata.mode(), path) {
        return Err(error(problem));
    }
    let mut text = Zeroizing::new(String::new());
    file.read_to_string(&mut text)
        .map_err(|e| error(format!("{e} (it must hold one line of text)")))?;
    let line = text.lines().next().unwrap_or_default();
    if line.is_empty() {
        return Err(error(
            "its first line is empty; it must be the secret itself".into(),
        ));
    }
    Ok(Zeroizing::new(line.to_string()))
}

/// Loads a private key file with the run's passphrase (if any): refused when group or others
/// may read or write it, or when it is encrypted and no passphrase (or a wrong one) was given.
///
/// # Errors
/// [`RemoteError::PrivateKey`] naming the file and what to do.
pub fn load(path: &Path) -> Result<keys::PrivateKey, RemoteError> {
    load_with(path, PASSPHRASE.get().map(|p| p.as_str()))
}

/// [`load`] with an explicit passphrase.
///
/// # Errors
/// As [`load`].
pub fn load_with(path: &Path, passphrase: Option<&str>) -> Result<keys::PrivateKey, RemoteError> {
    let error = |detail: String| RemoteError::PrivateKey {
        path: path.display().to_string(),
        detail,
    };
    let mut file = std::fs::File::open(path).map_err(|e| error(io_detail(&e)))?;
    let metadata = file.metadata().map_err(|e| error(e.to_string()))?;
    if let Some(problem) = exposed(metadata.mode(), path) {
        return Err(error(problem));
    }
    let mut text = Zeroizing::new(String::new());
    file.read_to_string(&mut text)
        .map_err(|e| error(format!("{e}; give an OpenSSH or PEM private key file")))?;
    match (keys::decode_secret_key(&text, None), passphrase) {
        (Err(keys::Error::KeyIsEncrypted), Some(passphrase)) => {
            keys::decode_secret_key(&text, Some(passphrase)).map_err(|e| {
                error(format!(
                    "the passphrase of --private-key-passphrase-file does not decrypt it ({e}); check that file"
                ))
            })
        }
        (Err(keys::Error::KeyIsEncrypted), None) => Err(error(
            "it is passphrase-protected; give its passphrase in a file (mode 0600) with --private-key-passphrase-file FILE, or remove the passphrase with `ssh-keygen -p`".into(),
        )),
        (Err(other), _) => Err(error(format!(
            "{other}; give an OpenSSH or PEM private key file"
        ))),
        (Ok(key), _) => Ok(key),
    }
}

/// Why a file with `mode` is too open, or `None` when only its owner may use it.
fn exposed(mode: u32, path: &Path) -> Option<String> {
    (mode & 0o077 != 0).then(|| {
        format!(
            "its group or other users may access it (mode {:04o}); run `chmod 600 {}`",
            mode & 0o7777,
            super::shell_quote(&path.display().to_string())
        )
    })
}

/// Why a key file cannot be opened.
fn io_detail(error: &std::io::Error) -> String {
    if error.kind() == std::io::ErrorKind::NotFound {
        "no such file; fix the key's path (`private_key` in the inventory, or --private-key-path)"
            .into()
    } else {
        error.to_string()
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn keygen(dir: &Path, name: &str, passphrase: &str) -> std::path::PathBuf {
        let path = dir.join(name);
        let status = std::process::Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", passphrase, "-f"])
            .arg(&path)
            .status()
            .expect("ssh-keygen runs");
        assert!(status.success());
        path
    }

    #[test]
    fn keys_open_to_group_or_others_are_refused_with_the_chmod_that_fixes_them() {
        let dir = tempfile::tempdir().unwrap();
        let key = keygen(dir.path(), "id", "");
        assert!(load_with(&key, None).is_ok());
        for mode in [0o640, 0o604, 0o644, 0o660] {
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(mode)).unwrap();
            let message = load_with(&key, None).unwrap_err().to_string();
            assert_eq!(
                message,
                format!(
                    "Cannot use private key `{0}`: its group or other users may access it (mode {mode:04o}); run `chmod 600 {0}`",
                    key.display()
                )
            );
        }
    }

    #[test]
    fn passphrase_protected_keys_need_the_right_passphrase() {
        let dir = tempfile::tempdir().unwrap();
        let key = keygen(dir.path(), "id", "correct horse");
        let message = load_with(&key, None).unwrap_err().to_string();
        assert!(
            message.contains("passphrase-protected")
                && message.contains("--private-key-passphrase-file"),
            "{message}"
        );
        let message = load_with(&key, Some("wrong")).unwrap_err().to_string();
        assert!(message.contains("does not decrypt it"), "{message}");
        assert!(load_with(&key, Some("correct horse")).is_ok());
    }

    #[test]
    fn secret_files_give_their_first_line_and_must_be_private() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("passphrase");
        let read = |path: &Path| read_secret_file(path, "--x-file");
        std::fs::write(&file, "correct horse\r\nsecond line\n").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(read(&file).unwrap().as_str(), "correct horse");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert_eq!(
            read(&file).unwrap_err().to_string(),
            format!(
                "Cannot use --x-file `{0}`: its group or other users may access it (mode 0640); run `chmod 600 {0}`",
                file.display()
            )
        );
        std::fs::write(&file, "\n").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let message = read(&file).unwrap_err().to_string();
        assert!(message.contains("its first line is empty"), "{message}");
        let message = read(&dir.path().join("missing")).unwrap_err().to_string();
        assert!(message.ends_with("no such file; fix --x-file"), "{message}");
    }
}
