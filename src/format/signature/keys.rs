//! Ed25519 key files: the signing key a backup is signed with (`--signing-key FILE`, secret,
//! mode 0600) and the public keys a reader trusts (`--trusted-key FILE|KEY`).
//!
//! A public key is one line of text, `cairn-ed25519:` and 64 hex digits, so it can be given
//! inline on the command line, in the config file, or in a file (one key a line, `#` comments).
//! The secret key file holds the 32-byte seed as `CAIRN-ED25519-SECRET-KEY:` and 64 hex digits,
//! with its public key in a comment; `cairn keys generate` writes both files.

use std::fmt;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use ed25519_dalek::{Signature, Signer, VerifyingKey};
use sha2::{Digest, Sha256};

use super::SignatureError;

/// Prefix of a public key's text.
pub const PUBLIC_KEY_PREFIX: &str = "cairn-ed25519:";
/// Prefix of the secret line of a signing key file.
pub const SECRET_KEY_PREFIX: &str = "CAIRN-ED25519-SECRET-KEY:";

/// A public key that signatures are checked against.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PublicKey(VerifyingKey);

impl PublicKey {
    /// Parses `cairn-ed25519:<64 hex digits>`.
    ///
    /// # Errors
    /// A one-line reason.
    pub fn parse(text: &str) -> Result<PublicKey, String> {
        let hex_text = text.trim().strip_prefix(PUBLIC_KEY_PREFIX).ok_or_else(|| {
            format!("a public key is `{PUBLIC_KEY_PREFIX}` and 64 hex digits (`cairn keys generate` writes one)")
        })?;
        let bytes: [u8; 32] = hex::decode(hex_text)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| format!("`{PUBLIC_KEY_PREFIX}` must be followed by 64 hex digits"))?;
        let key = VerifyingKey::from_bytes(&bytes)
            .map_err(|_| "it is not a valid Ed25519 public key".to_string())?;
        if key.is_weak() {
            return Err("it is a weak (small-order) Ed25519 key".into());
        }
        Ok(PublicKey(key))
    }

    /// Checks `signature` (hex) of `message`, strictly (no malleable signatures).
    #[must_use]
    pub fn verifies(&self, message: &[u8], signature_hex: &str) -> bool {
        let Some(bytes) = hex::decode(signature_hex)
            .ok()
            .and_then(|b| <[u8; 64]>::try_from(b).ok())
        else {
            return false;
        };
        self.0
            .verify_strict(message, &Signature::from_bytes(&bytes))
            .is_ok()
    }

    /// The first 16 hex digits of the key's sha256, to name it in messages.
    #[must_use]
    pub fn fingerprint(&self) -> String {
        hex::encode(Sha256::digest(self.0.as_bytes()))[..16].to_string()
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{PUBLIC_KEY_PREFIX}{}", hex::encode(self.0.as_bytes()))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({self})")
    }
}

/// The secret key that signs backups (`--signing-key`). Never printed.
#[derive(Clone)]
pub struct SigningKey(ed25519_dalek::SigningKey);

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningKey({})", self.public())
    }
}

impl SigningKey {
    /// A new random key.
    #[must_use]
    pub fn generate() -> SigningKey {
        SigningKey(ed25519_dalek::SigningKey::from_bytes(&rand::random::<
            [u8; 32],
        >()))
    }

    /// Reads a key file; refuses one that other users may read.
    ///
    /// # Errors
    /// [`SignatureError::SigningKey`] naming the file and what to do.
    pub fn load(path: &Path) -> Result<SigningKey, SignatureError> {
        let error = |detail: String| SignatureError::SigningKey {
            path: path.to_path_buf(),
            detail,
        };
        let metadata = std::fs::metadata(path).map_err(|e| error(e.to_string()))?;
        let mode = metadata.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(error(format!(
                "other users may read it (mode {mode:04o}); run `chmod 600 {}`",
                path.display()
            )));
        }
        let text = std::fs::read_to_string(path).map_err(|e| error(e.to_string()))?;
        let secret = text
            .lines()
            .find_map(|line| line.trim().strip_prefix(SECRET_KEY_PREFIX))
            .ok_or_else(|| {
                error(format!(
                    "no `{SECRET_KEY_PREFIX}` line; give the .key file `cairn keys generate` wrote, not the .pub"
                ))
            })?;
        let seed: [u8; 32] = hex::decode(secret)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| {
                error(format!(
                    "`{SECRET_KEY_PREFIX}` must be followed by 64 hex digits"
                ))
            })?;
        Ok(SigningKey(ed25519_dalek::SigningKey::from_bytes(&seed)))
    }

    /// Its public key.
    #[must_use]
    pub fn public(&self) -> PublicKey {
        PublicKey(self.0.verifying_key())
    }

    /// The signature of `message`, hex.
    #[must_use]
    pub fn sign(&self, message: &[u8]) -> String {
        hex::encode(self.0.sign(message).to_bytes())
    }

    /// The key file's text.
    fn file_text(&self) -> String {
        format!(
            "# Cairn backup signing key (Ed25519). Keep it secret: mode 0600, readable by the backup job only.\n# public key: {}\n{SECRET_KEY_PREFIX}{}\n",
            self.public(),
            hex::encode(self.0.to_bytes())
        )
    }

    /// Writes `PREFIX.key` (mode 0600) and `PREFIX.pub`, refusing to overwrite either; returns
    /// their paths.
    ///
    /// # Errors
    /// An existing file or an I/O error, naming the file.
    pub fn write_pair(&self, prefix: &Path) -> Result<(PathBuf, PathBuf), SignatureError> {
        let with = |suffix: &str| {
            let mut name = prefix.as_os_str().to_owned();
            name.push(suffix);
            PathBuf::from(name)
        };
        let (secret, public) = (with(".key"), with(".pub"));
        for path in [&secret, &public] {
            if path.exists() {
                return Err(SignatureError::SigningKey {
                    path: path.clone(),
                    detail: "it exists already; choose another --out, or remove it first".into(),
                });
            }
        }
        write_new(&secret, 0o600, &self.file_text())?;
        write_new(&public, 0o644, &format!("{}\n", self.public()))?;
        Ok((secret, public))
    }
}

/// Creates `path` (never an existing file or a symlink) with `mode` and writes `text`.
fn write_new(path: &Path, mode: u32, text: &str) -> Result<(), SignatureError> {
    let error = |e: std::io::Error| SignatureError::SigningKey {
        path: path.to_path_buf(),
        detail: e.to_string(),
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(error)?;
    file.write_all(text.as_bytes()).map_err(error)?;
    file.sync_all().map_err(error)
}

/// The keys a reader trusts (`--trusted-key`, repeatable); empty: signatures are not checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedKeys(Vec<PublicKey>);

impl TrustedKeys {
    /// Each value is a public key (`cairn-ed25519:...`) or a file holding one or more (one a
    /// line, `#` comments and blank lines ignored).
    ///
    /// # Errors
    /// [`SignatureError::TrustedKey`] naming the value.
    pub fn load<S: AsRef<str>>(values: &[S]) -> Result<TrustedKeys, SignatureError> {
        let mut keys = Vec::new();
        for value in values {
            let value = value.as_ref();
            let error = |detail: String| SignatureError::TrustedKey {
                value: value.to_string(),
                detail,
            };
            if value.trim_start().starts_with(PUBLIC_KEY_PREFIX) {
                keys.push(PublicKey::parse(value).map_err(error)?);
                continue;
            }
            let text = std::fs::read_to_string(value).map_err(|e| {
                error(format!(
                    "{e}; give a file holding a public key or the key itself (`{PUBLIC_KEY_PREFIX}...`)"
                ))
            })?;
            let before = keys.len();
            for line in text.lines().map(str::trim) {
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                if line.starts_with(SECRET_KEY_PREFIX) {
                    return Err(error(
                        "it is a secret signing key; give its .pub file instead".into(),
                    ));
                }
                keys.push(PublicKey::parse(line).map_err(error)?);
            }
            if keys.len() == before {
                return Err(error("the file holds no public key".into()));
            }
        }
        keys.dedup();
        Ok(TrustedKeys(keys))
    }

    /// Trusts exactly these keys.
    #[must_use]
    pub fn of(keys: &[PublicKey]) -> TrustedKeys {
        TrustedKeys(keys.to_vec())
    }

    /// These keys and `key`.
    #[must_use]
    pub fn with(&self, key: PublicKey) -> TrustedKeys {
        let mut keys = self.0.clone();
        if !keys.contains(&key) {
            keys.push(key);
        }
        TrustedKeys(keys)
    }

    /// True when no key was given (signatures are not checked).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The trusted key equal to `key`, if any.
    #[must_use]
    pub fn find(&self, key: &PublicKey) -> Option<&PublicKey> {
        self.0.iter().find(|k| *k == key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_pairs_round_trip_through_their_files() {
        let dir = tempfile::tempdir().unwrap();
        let key = SigningKey::generate();
        let (secret, public) = key.write_pair(&dir.path().join("backup")).unwrap();
        let mode = std::fs::metadata(&secret).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let loaded = SigningKey::load(&secret).unwrap();
        assert_eq!(loaded.public(), key.public());
        let public_text = std::fs::read_to_string(&public).unwrap();
        assert_eq!(public_text.trim(), key.public().to_string());
        let trusted = TrustedKeys::load(&[public.to_str().unwrap()]).unwrap();
        assert!(trusted.find(&key.public()).is_some());
        let inline = TrustedKeys::load(&[key.public().to_string()]).unwrap();
        assert_eq!(inline, trusted);
        // Never overwritten.
        assert!(key.write_pair(&dir.path().join("backup")).is_err());
        // The secret is refused as a trusted key, and a readable secret as a signing key.
        let error = TrustedKeys::load(&[secret.to_str().unwrap()])
            .unwrap_err()
            .to_string();
        assert!(error.contains("secret signing key"), "{error}");
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
        let error = SigningKey::load(&secret).unwrap_err().to_string();
        assert!(error.contains("chmod 600"), "{error}");
    }

    #[test]
    fn signatures_verify_only_with_their_key_and_message() {
        let key = SigningKey::generate();
        let other = SigningKey::generate();
        let signature = key.sign(b"message");
        assert!(key.public().verifies(b"message", &signature));
        assert!(!key.public().verifies(b"messagE", &signature));
        assert!(!other.public().verifies(b"message", &signature));
        assert!(!key.public().verifies(b"message", "00"));
    }

    #[test]
    fn bad_public_keys_are_refused_with_what_to_write() {
        for (text, expected) in [
            ("ssh-ed25519 AAAA", "a public key is `cairn-ed25519:`"),
            ("cairn-ed25519:abcd", "64 hex digits"),
            (
                "cairn-ed25519:0000000000000000000000000000000000000000000000000000000000000000",
                "weak",
            ),
        ] {
            let error = PublicKey::parse(text).unwrap_err();
            assert!(error.contains(expected), "{text}: {error}");
        }
        let error = TrustedKeys::load(&["/nonexistent/key.pub"])
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with("Trusted key `/nonexistent/key.pub`"),
            "{error}"
        );
    }
}
