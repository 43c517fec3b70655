//! Object keys, checked once where they are made.

use std::fmt;

/// A relative object key: `/`-separated segments, none empty, `.` or `..`, no control
/// characters.
///
/// ```
/// use cairn_store::ObjectKey;
/// assert!(ObjectKey::parse("demo/20240102T030405Z/manifest.json").is_ok());
/// assert!(ObjectKey::parse("../escape").is_err());
/// assert!(ObjectKey::parse("/absolute").is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey(String);

impl ObjectKey {
    /// Parses a key.
    ///
    /// # Errors
    /// A description of what is wrong with it.
    pub fn parse(key: &str) -> Result<ObjectKey, String> {
        if key.is_empty() {
            return Err("an object key cannot be empty".into());
        }
        for segment in key.split('/') {
            if segment.is_empty() || segment == "." || segment == ".." {
                return Err(format!(
                    "object key `{key}` has an empty, `.` or `..` segment"
                ));
            }
            if segment.chars().any(char::is_control) {
                return Err(format!("object key `{key}` contains a control character"));
            }
        }
        Ok(ObjectKey(key.to_string()))
    }

    /// Joins a segment (or a relative path) to this key.
    ///
    /// # Errors
    /// When the result is not a valid key.
    pub fn join(&self, rest: &str) -> Result<ObjectKey, String> {
        ObjectKey::parse(&format!("{}/{rest}", self.0))
    }

    /// The key as text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
