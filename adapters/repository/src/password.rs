//! The repository password: read from a file, never from the command line or a variable
//! holding the password itself, and never shown (no `Debug` of the text, no error quoting it).
//!
//! The file's rules make restic and rustic read the same password: rustic takes the first line
//! without its `\n`/`\r`, restic 0.14 the whole file with surrounding whitespace trimmed. So the
//! file must be one line of UTF-8 (a final `\n` or `\r\n` allowed), not empty, with no
//! whitespace at either end, at most 4 KiB. And nobody but its owner and group may read it,
//! nor its group write it (`root:cairn 0640` is fine): a password readable by every local user
//! protects nothing.

use std::fmt;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

/// The longest password file accepted.
const MAX_BYTES: u64 = 4096;

/// The repository password, wiped from memory when dropped.
pub struct RepositoryPassword(Zeroizing<String>);

impl fmt::Debug for RepositoryPassword {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RepositoryPassword(…)")
    }
}

/// Why a password file cannot be used; never contains the password.
#[derive(Debug, thiserror::Error)]
#[error("Cannot use repository password file `{}`: {problem}", path.display())]
pub struct PasswordError {
    /// The file.
    pub path: PathBuf,
    /// What is wrong and what to do.
    pub problem: String,
}

impl RepositoryPassword {
    /// Reads and checks the password file `path`.
    ///
    /// # Errors
    /// A missing or unreadable file, one that others may read or its group write, or content
    /// that is not one clean line.
    pub fn read(path: &Path) -> Result<RepositoryPassword, PasswordError> {
        let refuse = |problem: String| PasswordError {
            path: path.to_path_buf(),
            problem,
        };
        let mut file = std::fs::File::open(path).map_err(|e| {
            refuse(if e.kind() == std::io::ErrorKind::NotFound {
                "it does not exist; write the repository's password into it (one line, mode 0600)"
                    .to_string()
            } else {
                format!("{e}")
            })
        })?;
        let metadata = file.metadata().map_err(|e| refuse(e.to_string()))?;
        if !metadata.is_file() {
            return Err(refuse("it is not a regular file".into()));
        }
        let mode = metadata.mode() & 0o7777;
        if mode & 0o027 != 0 {
            return Err(refuse(format!(
                "other users may read it or its group may write it (mode {mode:04o}); run `chmod 600 {}` (or 640 for a group that only reads)",
                path.display()
            )));
        }
        if metadata.len() > MAX_BYTES {
            return Err(refuse(format!(
                "it is longer than {MAX_BYTES} bytes; a password file holds one line"
            )));
        }
        let mut raw = Zeroizing::new(Vec::new());
        file.by_ref()
            .take(MAX_BYTES + 1)
            .read_to_end(&mut raw)
            .map_err(|e| refuse(e.to_string()))?;
        let text = std::str::from_utf8(&raw).map_err(|_| refuse("it is not UTF-8 text".into()))?;
        let line = text
            .strip_suffix("\r\n")
            .or_else(|| text.strip_suffix('\n'))
            .unwrap_or(text);
        let problem = if line.is_empty() {
            Some("it is empty; write the repository's password into it")
        } else if line.contains(['\n', '\r']) {
            Some("it has more than one line; a password file holds the password on one line")
        } else if line.trim() != line {
            Some("the password starts or ends with whitespace, which restic would drop; remove it")
        } else {
            None
        };
        if let Some(problem) = problem {
            return Err(refuse(problem.into()));
        }
        Ok(RepositoryPassword(Zeroizing::new(line.to_string())))
    }

    /// The password, for rustic_core's credentials only.
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn file(dir: &Path, content: &[u8], mode: u32) -> PathBuf {
        let path = dir.join("password");
        std::fs::write(&path, content).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    #[test]
    fn one_clean_line_is_the_password() {
        let dir = tempfile::tempdir().unwrap();
        for content in [&b"s3cret pass"[..], b"s3cret pass\n", b"s3cret pass\r\n"] {
            for mode in [0o600, 0o400, 0o640] {
                let password = RepositoryPassword::read(&file(dir.path(), content, mode)).unwrap();
                assert_eq!(password.expose(), "s3cret pass");
                assert_eq!(format!("{password:?}"), "RepositoryPassword(…)");
            }
        }
    }

    #[test]
    fn exposed_files_are_refused_naming_the_file_and_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        for mode in [0o644, 0o604, 0o620, 0o666] {
            let path = file(dir.path(), b"s3cret\n", mode);
            let error = RepositoryPassword::read(&path).unwrap_err().to_string();
            assert_eq!(
                error,
                format!(
                    "Cannot use repository password file `{0}`: other users may read it or its group may write it (mode {mode:04o}); run `chmod 600 {0}` (or 640 for a group that only reads)",
                    path.display()
                )
            );
            assert!(!error.contains("s3cret"));
        }
    }

    #[test]
    fn a_missing_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nope");
        assert_eq!(
            RepositoryPassword::read(&path).unwrap_err().to_string(),
            format!("Cannot use repository password file `{}`: it does not exist; write the repository's password into it (one line, mode 0600)", path.display())
        );
    }

    #[test]
    fn content_restic_would_read_differently_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let cases: [(&[u8], &str); 6] = [
            (&b""[..], "it is empty"),
            (&b"\n"[..], "it is empty"),
            (&b"s3cret\nsecond\n"[..], "more than one line"),
            (&b"s3cret \n"[..], "whitespace"),
            (&b" s3cret"[..], "whitespace"),
            (&b"s3\xffcret"[..], "not UTF-8"),
        ];
        for (content, problem) in cases {
            let error = RepositoryPassword::read(&file(dir.path(), content, 0o600))
                .unwrap_err()
                .to_string();
            assert!(error.contains(problem), "{content:?}: {error}");
            assert!(
                !error.contains("s3cret") && !error.contains("cret"),
                "{error}"
            );
        }
        let long = vec![b'x'; 5000];
        let error = RepositoryPassword::read(&file(dir.path(), &long, 0o600)).unwrap_err();
        assert!(
            error.to_string().contains("longer than 4096 bytes"),
            "{error}"
        );
    }
}
