//! A file name inside an artifact, kept as the bytes it is.
//!
//! Tar headers and the instance's file system hold names as bytes, not text: `./a\xff` and
//! `./a\xfe` are two files. Every checksum map (a tar's digests, the instance's, `metadata`'s,
//! a manifest's) is keyed by [`FileName`], so two names never share one entry.
//!
//! In `metadata` (YAML) and `manifest.json` a name is written as text: the name itself when it
//! is UTF-8 (every existing backup), else the standard base64 of its bytes, which is what bbr
//! writes and reads too: Go's yaml.v2 writes a string that is not UTF-8 as a `!!binary` base64
//! scalar and reads it back to the bytes. Cairn's `metadata` carries the same `!!binary` tag
//! ([`with_yaml_binary_tags`]), so bbr can restore such a backup. Reading, a text that is
//! canonical base64 of bytes that are not UTF-8 is those bytes, whether tagged or not (the YAML
//! reader drops the tag); anything else is the name itself. That reading is unambiguous for
//! every name a backup holds: names start with `./` (`tar -C dir -c .`, `find .`), and `.` is not
//! a base64 character.

use std::borrow::{Borrow, Cow};
use std::cell::Cell;
use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A file name of an artifact (`./dir/file`), as bytes. Shared, not copied, when cloned: a
/// backup of a million files holds each name in several maps at once (the tar's digests,
/// `metadata`'s checksums, the manifest's files), and the name is most of an entry.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct FileName(std::sync::Arc<[u8]>);

impl FileName {
    /// The name with these bytes.
    #[must_use]
    pub fn new(bytes: impl Into<Vec<u8>>) -> FileName {
        FileName(std::sync::Arc::from(bytes.into()))
    }

    /// Its bytes.
    #[must_use]
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The name itself when it is UTF-8.
    #[must_use]
    pub fn as_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.0).ok()
    }

    /// Its text form in `metadata` and `manifest.json` (module docs).
    #[must_use]
    pub fn to_text(&self) -> Cow<'_, str> {
        match self.as_str() {
            Some(text) => Cow::Borrowed(text),
            None => Cow::Owned(STANDARD.encode(&self.0)),
        }
    }

    /// The name a text form stands for (module docs).
    #[must_use]
    pub fn from_text(text: &str) -> FileName {
        match STANDARD.decode(text) {
            Ok(bytes) if !text.is_empty() && std::str::from_utf8(&bytes).is_err() => {
                FileName::new(bytes)
            }
            _ => FileName::new(text.as_bytes()),
        }
    }
}

impl From<&str> for FileName {
    fn from(name: &str) -> FileName {
        FileName::new(name.as_bytes())
    }
}

impl From<String> for FileName {
    fn from(name: String) -> FileName {
        FileName::new(name.into_bytes())
    }
}

impl Borrow<[u8]> for FileName {
    fn borrow(&self) -> &[u8] {
        &self.0
    }
}

/// The name for people: UTF-8 as it is, any other byte as `\xNN`, and control characters
/// escaped, so a name cannot forge a log line.
impl fmt::Display for FileName {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        for chunk in self.0.utf8_chunks() {
            write!(formatter, "{}", chunk.valid().escape_debug())?;
            for byte in chunk.invalid() {
                write!(formatter, "\\x{byte:02x}")?;
            }
        }
        Ok(())
    }
}

impl fmt::Debug for FileName {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "\"{self}\"")
    }
}

thread_local! {
    /// While set ([`with_yaml_binary_tags`]): the local YAML tag that marks a name written in
    /// base64, replaced by `!!binary` once the document is written.
    static BINARY_TAG: Cell<Option<&'static str>> = const { Cell::new(None) };
}

/// A random tag name, made once per process: no file name can contain it by chance or design.
fn marker_tag() -> &'static str {
    static TAG: std::sync::OnceLock<&'static str> = std::sync::OnceLock::new();
    TAG.get_or_init(|| {
        let nonce: u128 = rand::random();
        Box::leak(format!("cairn-binary-{nonce:032x}").into_boxed_str())
    })
}

/// Runs `write`, a YAML serialization, so that names that are not UTF-8 come out as
/// `!!binary <base64>`, as Go's yaml.v2 writes them (`yaml_serde` writes only local tags, so a
/// random local tag is written and then replaced).
pub(crate) fn with_yaml_binary_tags(write: impl FnOnce() -> String) -> String {
    let tag = marker_tag();
    BINARY_TAG.with(|cell| cell.set(Some(tag)));
    let text = write();
    BINARY_TAG.with(|cell| cell.set(None));
    let marker = format!("!{tag}");
    if text.contains(&marker) {
        text.replace(&marker, "!!binary")
    } else {
        text
    }
}

impl Serialize for FileName {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match (self.as_str(), BINARY_TAG.with(Cell::get)) {
            (Some(text), _) => serializer.serialize_str(text),
            (None, Some(tag)) => {
                serializer.serialize_newtype_variant("FileName", 0, tag, &self.to_text())
            }
            (None, None) => serializer.serialize_str(&self.to_text()),
        }
    }
}

impl<'de> Deserialize<'de> for FileName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<FileName, D::Error> {
        let text = String::deserialize(deserializer)?;
        Ok(FileName::from_text(&text))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_names_are_their_own_text_and_others_are_base64() {
        for name in [
            "./a",
            "./with space",
            "./Zürich",
            "./new\nline",
            "./Li9h/w==",
        ] {
            let file = FileName::from(name);
            assert_eq!(file.to_text(), name);
            assert_eq!(FileName::from_text(name), file);
        }
        let ff = FileName::new(b"./a\xff".to_vec());
        let fe = FileName::new(b"./a\xfe".to_vec());
        assert_ne!(ff.to_text(), fe.to_text());
        assert_eq!(ff.to_text(), "Li9h/w==");
        assert_eq!(FileName::from_text(&ff.to_text()), ff);
        assert_eq!(FileName::from_text(&fe.to_text()), fe);
        // base64 of UTF-8 bytes, or not canonical, is a name like any other.
        assert_eq!(FileName::from_text("Li9h"), FileName::from("Li9h"));
        assert_eq!(FileName::from_text("Li9h/x=="), FileName::from("Li9h/x=="));
    }

    #[test]
    fn names_are_shown_escaped() {
        assert_eq!(
            FileName::new(b"./a\xff\n".to_vec()).to_string(),
            "./a\\xff\\n"
        );
        assert_eq!(FileName::from("./ü b").to_string(), "./ü b");
    }

    #[test]
    fn yaml_gets_binary_tags_that_read_back() {
        let map: std::collections::BTreeMap<FileName, String> = [
            (FileName::new(b"./a\xff".to_vec()), "1".to_string()),
            (FileName::from("./b"), "2".to_string()),
        ]
        .into();
        let yaml = with_yaml_binary_tags(|| yaml_serde::to_string(&map).unwrap());
        assert_eq!(yaml, "!!binary Li9h/w==: '1'\n./b: '2'\n");
        let back: std::collections::BTreeMap<FileName, String> =
            yaml_serde::from_str(&yaml).unwrap();
        assert_eq!(back, map);
        // Outside YAML writing, the text form is a plain string (JSON keys).
        let json = serde_json::to_string(&map).unwrap();
        assert_eq!(json, r#"{"Li9h/w==":"1","./b":"2"}"#);
    }
}
