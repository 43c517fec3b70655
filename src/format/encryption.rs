//! Client-side encryption of artifacts in a store, with [age](https://age-encryption.org)
//! X25519 keys.
//!
//! `backup --encrypt-to age1...` (repeatable) encrypts every artifact as it streams, after
//! zstd and before the upload: the store only ever sees the age file (`age-encryption.org/v1`
//! header, then ChaCha20-Poly1305 chunks of 64 KiB), and the manifest's sha256 is of those
//! stored bytes. The manifest records, per artifact, the scheme and how many recipients the
//! file key was wrapped for — never a key, never a recipient string.
//!
//! Restore, `backups verify` and `drill` take `--identity FILE`: an age identity file
//! (`AGE-SECRET-KEY-1...` lines, `#` comments and blank lines allowed). The identities are
//! kept in memory only; their [`fmt::Debug`] shows how many there are, and no error message
//! quotes a line of the file, so a secret key never reaches a log, even with `--debug`.
//!
//! Memory stays bounded: age encrypts and decrypts in 64 KiB chunks, streaming.

use std::fmt;
use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use zeroize::Zeroize;

use crate::format::manifest::ArtifactEncryption;

/// The scheme recorded in the manifest for age with X25519 recipients.
pub const AGE_X25519: &str = "age-x25519";

/// Extension added to the key of an encrypted artifact (`<artifact>.tar.zst.age`).
pub const EXTENSION: &str = "age";

/// The first line of every age file (what the store holds instead of a tar or zstd frame).
pub const AGE_HEADER: &[u8] = b"age-encryption.org/v1\n";

/// The recipients (public keys) a backup's artifacts are encrypted to.
#[derive(Clone)]
pub struct Recipients(Arc<Vec<age::x25519::Recipient>>);

impl fmt::Debug for Recipients {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Recipients({})", self.0.len())
    }
}

impl Recipients {
    /// Parses `--encrypt-to` values; `None` when there are none. Duplicates count once.
    ///
    /// # Errors
    /// A one-line message naming the first value that is not an `age1...` X25519 recipient
    /// (a secret key given by mistake is not quoted back).
    pub fn parse<S: AsRef<str>>(values: &[S]) -> Result<Option<Recipients>, String> {
        let mut recipients: Vec<age::x25519::Recipient> = Vec::new();
        let mut seen: Vec<String> = Vec::new();
        for value in values {
            let value = value.as_ref().trim();
            if value.to_ascii_uppercase().starts_with("AGE-SECRET-KEY-") {
                return Err("--encrypt-to was given an age identity (a secret key), not a recipient: give its public key (`age-keygen -y FILE` prints it), and keep the identity for --identity".into());
            }
            let recipient = age::x25519::Recipient::from_str(value).map_err(|detail| {
                format!("--encrypt-to `{value}` is not an age X25519 recipient (age1...): {detail}")
            })?;
            let canonical = recipient.to_string();
            if !seen.contains(&canonical) {
                seen.push(canonical);
                recipients.push(recipient);
            }
        }
        Ok((!recipients.is_empty()).then(|| Recipients(Arc::new(recipients))))
    }

    /// The recipients as `--encrypt-to` takes them (`age1…`), sorted, comma-separated: the
    /// same set always reads the same.
    #[must_use]
    pub fn describe(&self) -> String {
        let mut all: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        all.sort();
        all.join(",")
    }

    /// How many recipients.
    #[must_use]
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Never true (a `Recipients` always has at least one).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The recipients as `age1...` text (a signed statement lists them; the manifest does not).
    #[must_use]
    pub fn public_keys(&self) -> Vec<String> {
        self.0.iter().map(ToString::to_string).collect()
    }

    /// What the manifest records for an artifact encrypted to these recipients.
    #[must_use]
    pub fn record(&self) -> ArtifactEncryption {
        ArtifactEncryption {
            scheme: AGE_X25519.to_string(),
            recipients: self.len(),
        }
    }

    /// Wraps `output` in an age encryptor (a fresh file key per call). The caller must call
    /// `finish` on the result.
    ///
    /// # Errors
    /// Writing the header failed.
    pub fn encrypt<W: Write>(&self, output: W) -> io::Result<age::stream::StreamWriter<W>> {
        let encryptor =
            age::Encryptor::with_recipients(self.0.iter().map(|r| r as &dyn age::Recipient))
                .map_err(|e| io::Error::other(format!("age encryption: {e}")))?;
        encryptor.wrap_output(output)
    }
}

/// Age identities (secret keys), loaded from `--identity` files, and whether a backup that
/// is not encrypted is accepted although identities were given (`--allow-unencrypted`).
///
/// Giving identities says the backups are expected to be encrypted: age authenticates data
/// against its file key, not against who wrote it, so anyone holding a public recipient — or
/// anyone who can write to the store, by leaving encryption out — can produce a backup that
/// passes every check; only the expectation tells a replaced backup from the real one.
///
/// Cheap to clone (shared). Debug output shows only counts.
#[derive(Clone, Default)]
pub struct Identities {
    keys: Arc<Vec<age::x25519::Identity>>,
    files: usize,
    allow_unencrypted: bool,
}

impl fmt::Debug for Identities {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Identities({} from {} file(s))",
            self.keys.len(),
            self.files
        )
    }
}

/// Why an encrypted artifact could not be opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecryptFailure {
    /// None of the identities was one of the artifact's recipients.
    NoMatchingIdentity,
    /// The age file is damaged (or not an age file).
    Damaged(String),
}

impl fmt::Display for DecryptFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecryptFailure::NoMatchingIdentity => {
                f.write_str("no identity given with --identity matches its recipients")
            }
            DecryptFailure::Damaged(detail) => write!(f, "cannot decrypt it: {detail}"),
        }
    }
}

impl std::error::Error for DecryptFailure {}

fn describe(error: &age::DecryptError) -> String {
    match error {
        age::DecryptError::NoMatchingKeys => "no identity matches".into(),
        age::DecryptError::DecryptionFailed => {
            "an encrypted chunk failed authentication (damaged or tampered)".into()
        }
        age::DecryptError::InvalidHeader => "its age header is invalid".into(),
        age::DecryptError::InvalidMac => {
            "its age header's MAC is wrong (damaged or tampered)".into()
        }
        age::DecryptError::KeyDecryptionFailed => "its file key cannot be unwrapped".into(),
        age::DecryptError::UnknownFormat => "it is not an age v1 file".into(),
        age::DecryptError::Io(error) => error.to_string(),
        age::DecryptError::ExcessiveWork { .. } => {
            "it is passphrase-encrypted, which Cairn does not use".into()
        }
        #[allow(unreachable_patterns)]
        _ => "age could not decrypt it".into(),
    }
}

impl Identities {
    /// Loads every identity of every file; an empty list gives no identities. Warns (through
    /// `tracing`) about a file that group or others may read.
    ///
    /// # Errors
    /// A one-line message naming the file (and line) that cannot be used; never its content.
    pub fn load(paths: &[PathBuf]) -> Result<Identities, String> {
        let mut keys = Vec::new();
        for path in paths {
            warn_if_readable_by_others(path);
            let mut text = std::fs::read_to_string(path)
                .map_err(|e| format!("--identity `{}`: cannot read it: {e}", path.display()))?;
            let parsed = parse_identity_file(&text, path);
            text.zeroize();
            keys.extend(parsed?);
        }
        Ok(Identities {
            keys: Arc::new(keys),
            files: paths.len(),
            allow_unencrypted: false,
        })
    }

    /// The same identities, accepting (`--allow-unencrypted`) or refusing a backup that is not
    /// encrypted.
    #[must_use]
    pub fn allowing_unencrypted(mut self, allow: bool) -> Identities {
        self.allow_unencrypted = allow;
        self
    }

    /// True when a backup must be encrypted to be trusted: identities were given, and
    /// `--allow-unencrypted` was not.
    #[must_use]
    pub fn expect_encryption(&self) -> bool {
        !self.keys.is_empty() && !self.allow_unencrypted
    }

    /// True when no identity was given.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// How many identities.
    #[must_use]
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    #[cfg(test)]
    pub(crate) fn from_keys(keys: Vec<age::x25519::Identity>) -> Identities {
        Identities {
            keys: Arc::new(keys),
            files: 1,
            allow_unencrypted: false,
        }
    }

    /// Reads the age header of `stored` and opens its plaintext (blocking reads).
    ///
    /// # Errors
    /// No identity matches, or the header is damaged.
    pub fn decrypt<R: Read>(&self, stored: R) -> Result<Plaintext<R>, DecryptFailure> {
        let decryptor = age::Decryptor::new_buffered(BufReader::with_capacity(64 * 1024, stored))
            .map_err(|e| DecryptFailure::Damaged(describe(&e)))?;
        decryptor
            .decrypt(self.keys.iter().map(|k| k as &dyn age::Identity))
            .map(Plaintext)
            .map_err(|e| match e {
                age::DecryptError::NoMatchingKeys => DecryptFailure::NoMatchingIdentity,
                other => DecryptFailure::Damaged(describe(&other)),
            })
    }

    /// Like [`Identities::decrypt`], but the header is read on the first `read` (so the
    /// reader can be made on an async thread and read on a blocking one). A failure is an
    /// [`io::Error`] wrapping the [`DecryptFailure`].
    #[must_use]
    pub fn decrypt_lazily<R: Read>(&self, stored: R) -> DecryptingReader<R> {
        DecryptingReader {
            state: Lazy::Pending(stored, self.clone()),
        }
    }
}

/// The plaintext of an age file. A chunk that fails authentication (or a truncated file) is
/// an [`io::ErrorKind::InvalidData`] error saying so.
pub struct Plaintext<R>(age::stream::StreamReader<BufReader<R>>);

impl<R> fmt::Debug for Plaintext<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Plaintext")
    }
}

impl<R: Read> Read for Plaintext<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf).map_err(|error| {
            if error.kind() == io::ErrorKind::InvalidData {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "age: {error}: the encrypted data is damaged, truncated or tampered with"
                    ),
                )
            } else {
                error
            }
        })
    }
}

/// The plaintext of an age file, opened on the first read.
pub struct DecryptingReader<R> {
    state: Lazy<R>,
}

enum Lazy<R> {
    Pending(R, Identities),
    Open(Plaintext<R>),
    Failed,
}

impl<R> fmt::Debug for DecryptingReader<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DecryptingReader")
    }
}

impl<R: Read> Read for DecryptingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Lazy::Pending(..) = self.state {
            let Lazy::Pending(stored, identities) =
                std::mem::replace(&mut self.state, Lazy::Failed)
            else {
                unreachable!("checked above");
            };
            self.state = Lazy::Open(identities.decrypt(stored).map_err(io::Error::other)?);
        }
        match &mut self.state {
            Lazy::Open(reader) => reader.read(buf),
            _ => Err(io::Error::other("the age file could not be opened")),
        }
    }
}

/// Parses an age identity file: `AGE-SECRET-KEY-1...` lines, `#` comments, blank lines.
fn parse_identity_file(text: &str, path: &Path) -> Result<Vec<age::x25519::Identity>, String> {
    let mut keys = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let at = || format!("--identity `{}` line {}", path.display(), number + 1);
        if line.starts_with("AGE-PLUGIN-") {
            return Err(format!(
                "{}: plugin identities are not supported, only X25519 ones (AGE-SECRET-KEY-1...)",
                at()
            ));
        }
        if line.starts_with("age1") {
            return Err(format!(
                "{}: is a recipient (a public key), not an identity; give the file `age-keygen` wrote (AGE-SECRET-KEY-1...)",
                at()
            ));
        }
        match age::x25519::Identity::from_str(line) {
            Ok(key) => keys.push(key),
            // The line is not quoted: it may be a damaged secret key.
            Err(detail) => {
                return Err(format!(
                    "{}: is not an age X25519 identity (AGE-SECRET-KEY-1...): {detail}",
                    at()
                ))
            }
        }
    }
    if keys.is_empty() {
        return Err(format!(
            "--identity `{}` holds no identity (AGE-SECRET-KEY-1... lines)",
            path.display()
        ));
    }
    Ok(keys)
}

/// Group or other read permission on an identity file: warn (it still works).
fn warn_if_readable_by_others(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(metadata) = std::fs::metadata(path) {
        let mode = metadata.permissions().mode() & 0o777;
        if mode & 0o044 != 0 {
            tracing::warn!(
                "--identity `{}` can be read by group or others (mode {mode:03o}): it holds secret keys; `chmod 600` it",
                path.display()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use age::secrecy::ExposeSecret;

    fn key_pair() -> (age::x25519::Identity, String, String) {
        let identity = age::x25519::Identity::generate();
        let secret = identity.to_string().expose_secret().to_string();
        let public = identity.to_public().to_string();
        (identity, secret, public)
    }

    fn seal(recipients: &Recipients, plaintext: &[u8]) -> Vec<u8> {
        let mut writer = recipients.encrypt(Vec::new()).unwrap();
        // Small writes across many 64 KiB chunks.
        for piece in plaintext.chunks(1000) {
            writer.write_all(piece).unwrap();
        }
        writer.finish().unwrap()
    }

    #[test]
    fn recipients_parse_and_bad_values_are_named() {
        let (_, secret, public) = key_pair();
        assert!(Recipients::parse::<&str>(&[]).unwrap().is_none());
        let parsed = Recipients::parse(&[public.as_str(), public.as_str()])
            .unwrap()
            .unwrap();
        assert_eq!(parsed.len(), 1, "duplicates count once");
        assert_eq!(parsed.record().recipients, 1);
        assert_eq!(parsed.record().scheme, "age-x25519");
        let error = Recipients::parse(&["age1nope"]).unwrap_err();
        assert!(error.starts_with("--encrypt-to `age1nope` is not an age X25519 recipient"));
        assert!(!error.contains('\n'));
        let error = Recipients::parse(&[secret.as_str()]).unwrap_err();
        assert!(!error.contains(&secret), "a secret key is never echoed");
        assert!(error.contains("secret key"), "{error}");
        assert!(!format!("{parsed:?}").contains(&public));
    }

    #[test]
    fn encrypted_bytes_round_trip_and_are_not_plaintext() {
        let (first, _, first_public) = key_pair();
        let (second, _, second_public) = key_pair();
        let recipients = Recipients::parse(&[first_public, second_public])
            .unwrap()
            .unwrap();
        let plaintext: Vec<u8> = (0..300_000u32).flat_map(u32::to_le_bytes).collect();
        let sealed = seal(&recipients, &plaintext);
        assert!(sealed.starts_with(AGE_HEADER));
        assert_eq!(count(&sealed, b"-> X25519 "), 2, "one stanza per recipient");
        for identity in [first, second] {
            let identities = Identities::from_keys(vec![identity]);
            let mut out = Vec::new();
            identities
                .decrypt(sealed.as_slice())
                .unwrap()
                .read_to_end(&mut out)
                .unwrap();
            assert_eq!(out, plaintext);
            let mut lazy = Vec::new();
            identities
                .decrypt_lazily(sealed.as_slice())
                .read_to_end(&mut lazy)
                .unwrap();
            assert_eq!(lazy, plaintext);
        }
    }

    fn count(haystack: &[u8], needle: &[u8]) -> usize {
        haystack
            .windows(needle.len())
            .filter(|w| *w == needle)
            .count()
    }

    #[test]
    fn wrong_identity_damage_and_truncation_are_told_apart() {
        let (_, _, public) = key_pair();
        let (stranger, _, _) = key_pair();
        let (owner_key, owner_secret, owner_public) = key_pair();
        let recipients = Recipients::parse(&[public, owner_public]).unwrap().unwrap();
        let sealed = seal(&recipients, &vec![7u8; 200_000]);
        let wrong = Identities::from_keys(vec![stranger]);
        assert_eq!(
            wrong.decrypt(sealed.as_slice()).err(),
            Some(DecryptFailure::NoMatchingIdentity)
        );
        let none = Identities::default();
        assert_eq!(
            none.decrypt(sealed.as_slice()).err(),
            Some(DecryptFailure::NoMatchingIdentity)
        );
        let owner = Identities::from_keys(vec![owner_key]);
        let mut flipped = sealed.clone();
        let middle = flipped.len() / 2;
        flipped[middle] ^= 1;
        let mut out = Vec::new();
        let error = owner
            .decrypt(flipped.as_slice())
            .unwrap()
            .read_to_end(&mut out)
            .unwrap_err();
        assert!(!error.to_string().contains(&owner_secret));
        let truncated = &sealed[..sealed.len() - 100];
        assert!(owner
            .decrypt(truncated)
            .unwrap()
            .read_to_end(&mut Vec::new())
            .is_err());
        let error = owner
            .decrypt(&b"\x28\xb5\x2f\xfd not age"[..])
            .err()
            .unwrap();
        assert!(matches!(error, DecryptFailure::Damaged(_)), "{error}");
        let error = owner
            .decrypt_lazily(&b"plain tar"[..])
            .read_to_end(&mut Vec::new())
            .unwrap_err();
        assert!(error.to_string().contains("cannot decrypt it"), "{error}");
        assert!(!format!("{owner:?}").contains("AGE-SECRET-KEY"));
    }

    #[test]
    fn identity_files_allow_comments_and_never_quote_a_line() {
        let dir = tempfile::tempdir().unwrap();
        let (_, first_secret, _) = key_pair();
        let (_, second_secret, second_public) = key_pair();
        let good = dir.path().join("keys.txt");
        std::fs::write(
            &good,
            format!("# created: today\n# public key: {second_public}\n{first_secret}\n\n  {second_secret}  \n"),
        )
        .unwrap();
        let loaded = Identities::load(std::slice::from_ref(&good)).unwrap();
        assert_eq!(loaded.len(), 2);
        assert!(!format!("{loaded:?}").contains("AGE-SECRET-KEY"));

        let damaged = dir.path().join("damaged.txt");
        let last = if first_secret.ends_with('X') {
            'Y'
        } else {
            'X'
        };
        let broken = format!("{}{last}", &first_secret[..first_secret.len() - 1]);
        std::fs::write(&damaged, format!("# x\n{broken}\n")).unwrap();
        let error = Identities::load(std::slice::from_ref(&damaged)).unwrap_err();
        assert!(error.contains("line 2"), "{error}");
        assert!(!error.contains(&broken[15..]), "{error}");
        assert!(!error.contains('\n'));

        let public = dir.path().join("public.txt");
        std::fs::write(&public, format!("{second_public}\n")).unwrap();
        assert!(Identities::load(&[public])
            .unwrap_err()
            .contains("is a recipient (a public key)"));
        let empty = dir.path().join("empty.txt");
        std::fs::write(&empty, "# nothing\n").unwrap();
        assert!(Identities::load(&[empty])
            .unwrap_err()
            .contains("holds no identity"));
        let missing = dir.path().join("missing.txt");
        assert!(Identities::load(&[missing])
            .unwrap_err()
            .contains("cannot read it"));
        assert!(Identities::load(&[]).unwrap().is_empty());
    }
}
