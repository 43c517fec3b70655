//! Where restic's files live under a repository's root: `config`, `keys/<id>`,
//! `snapshots/<id>`, `index/<id>` and `data/<first two hex digits>/<id>` (restic's default
//! layout, which its S3 and local backends also use), as [`ObjectKey`]s of the store.

use cairn_store::ObjectKey;
use rustic_core::{FileType, Id};

/// The repository's root inside a store: a key prefix, empty for the store's own root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Layout {
    /// Without leading or trailing `/`.
    root: String,
}

impl Layout {
    /// The layout of a repository at `root` (a key prefix; empty, `.` and `..` segments are
    /// dropped).
    pub(crate) fn new(root: &str) -> Layout {
        let segments: Vec<&str> = root
            .split('/')
            .filter(|s| !s.is_empty() && *s != "." && *s != "..")
            .collect();
        Layout {
            root: segments.join("/"),
        }
    }

    /// The key of file `id` of type `tpe` (the config has one file, whatever the id).
    pub(crate) fn key(&self, tpe: FileType, id: &Id) -> ObjectKey {
        let hex = id.to_hex();
        let hex = hex.as_str();
        let relative = match tpe {
            FileType::Config => "config".to_string(),
            FileType::Pack => format!("data/{}/{hex}", &hex[..2]),
            other => format!("{}/{hex}", other.dirname()),
        };
        self.join(&relative)
    }

    /// The key prefix under which files of type `tpe` are listed (`data/`, `keys/`, ...).
    pub(crate) fn directory(&self, tpe: FileType) -> String {
        self.join_text(&format!("{}/", tpe.dirname()))
    }

    /// The id in a listed key: its last segment, when it is one (other objects, such as
    /// restic's `data/ab/` folder markers or an operator's notes, are skipped).
    pub(crate) fn id_of(key: &ObjectKey) -> Option<Id> {
        let name = key.as_str().rsplit('/').next()?;
        (name.len() == 64).then(|| name.parse().ok()).flatten()
    }

    fn join_text(&self, relative: &str) -> String {
        if self.root.is_empty() {
            relative.to_string()
        } else {
            format!("{}/{relative}", self.root)
        }
    }

    fn join(&self, relative: &str) -> ObjectKey {
        // Every part is hex or a fixed name and the root has no empty, `.` or `..` segment:
        // only a control character in the root could make this fail.
        ObjectKey::parse(&self.join_text(relative))
            .expect("a repository root without control characters")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn files_are_where_restic_puts_them() {
        let id: Id = HEX.parse().unwrap();
        let at_root = Layout::new("");
        assert_eq!(
            at_root.key(FileType::Config, &Id::default()).as_str(),
            "config"
        );
        assert_eq!(
            at_root.key(FileType::Pack, &id).as_str(),
            format!("data/01/{HEX}")
        );
        assert_eq!(
            at_root.key(FileType::Key, &id).as_str(),
            format!("keys/{HEX}")
        );
        assert_eq!(
            at_root.key(FileType::Snapshot, &id).as_str(),
            format!("snapshots/{HEX}")
        );
        assert_eq!(
            at_root.key(FileType::Index, &id).as_str(),
            format!("index/{HEX}")
        );
        assert_eq!(at_root.directory(FileType::Pack), "data/");
        let nested = Layout::new("/repos/cf/");
        assert_eq!(
            nested.key(FileType::Index, &id).as_str(),
            format!("repos/cf/index/{HEX}")
        );
        assert_eq!(nested.directory(FileType::Key), "repos/cf/keys/");
    }

    #[test]
    fn listed_keys_give_back_their_ids_and_nothing_else() {
        let id: Id = HEX.parse().unwrap();
        let layout = Layout::new("r");
        assert_eq!(Layout::id_of(&layout.key(FileType::Pack, &id)), Some(id));
        for other in [
            "r/data/01/README",
            "r/keys/0123",
            "r/data/01/zz23456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        ] {
            assert_eq!(
                Layout::id_of(&ObjectKey::parse(other).unwrap()),
                None,
                "{other}"
            );
        }
    }
}
