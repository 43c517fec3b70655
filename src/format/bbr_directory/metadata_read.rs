//! Reading a `metadata` file of a million files without holding it whole.
//!
//! The YAML reader ([`BackupMetadata::parse`]) holds the document's text and every parse event
//! of it at once (~100 bytes an event, two events a file) before it makes the first map entry:
//! at a million files ~600 MB, most of a restore's peak memory. Nearly all of a `metadata` is
//! its `checksums` blocks, one `./name: digest` line after another, as bbr's yaml.v2 and Cairn
//! write them. [`read_metadata`] reads the file line by line and hands each `checksums:` block
//! to the same YAML reader in pieces of [`PIECE_LINES`] entries (a piece is a mapping of its own
//! once cut at a line that starts an entry), and the rest of the document, with one stand-in
//! entry in place of each block, as one small document. The YAML semantics stay the reader's,
//! entry by entry; held at once are the maps being built and one piece.
//!
//! Anything the cut could read otherwise than the whole document is not cut: a block whose
//! lines are not `key: value` entries at one indentation (a sequence, explicit `?` keys, tab
//! indentation), a piece or the rest that does not read, a stand-in that does not land in a
//! `checksums` map exactly once (a `checksums:` line inside a block scalar, say). The whole
//! file is then read by [`BackupMetadata::parse`], as before, which also gives its errors with
//! their lines.

use std::io::{self, BufRead, Read};
use std::path::Path;

use super::metadata::{BackupMetadata, Checksums, NamedChecksums};
use crate::format::digest::{FileName, Sha256Sum};

/// Entries of a `checksums` block read at once: the parse events of a piece take ~1 MB.
pub const PIECE_LINES: usize = 4096;

/// Why a `metadata` file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The file could not be read (or is not UTF-8 text).
    #[error("{0}")]
    Io(#[from] io::Error),
    /// It is not bbr metadata: the YAML reader's message.
    #[error("{0}")]
    Yaml(String),
}

/// Reads the `metadata` file at `path` ([module docs](self)).
///
/// # Errors
/// [`ReadError::Io`] or [`ReadError::Yaml`].
pub fn read_metadata(path: &Path) -> Result<BackupMetadata, ReadError> {
    let file = std::fs::File::open(path)?;
    if let Some(metadata) = read_in_pieces(io::BufReader::with_capacity(1 << 20, file))? {
        return Ok(metadata);
    }
    let mut text = String::new();
    std::fs::File::open(path)?.read_to_string(&mut text)?;
    BackupMetadata::parse(&text).map_err(ReadError::Yaml)
}

/// [`read_metadata`] of a document already in memory (a signed directory's `metadata`, whose
/// bytes are hashed first): without the YAML reader's events of the whole document.
///
/// # Errors
/// The YAML reader's message.
pub fn parse_metadata(text: &str) -> Result<BackupMetadata, String> {
    match read_in_pieces(text.as_bytes()) {
        Ok(Some(metadata)) => Ok(metadata),
        _ => BackupMetadata::parse(text),
    }
}

/// [`read_metadata`] of a reader: `None` when the document must be read whole (module docs).
///
/// # Errors
/// [`ReadError::Io`] only: a YAML error is left to the whole read.
pub fn read_in_pieces(reader: impl BufRead) -> Result<Option<BackupMetadata>, ReadError> {
    read_in_pieces_of(reader, PIECE_LINES)
}

/// [`read_in_pieces`] with pieces of `piece_lines` entries (tests cut small documents often).
fn read_in_pieces_of(
    mut reader: impl BufRead,
    piece_lines: usize,
) -> Result<Option<BackupMetadata>, ReadError> {
    let marker = format!("cairn-checksums-{:032x}", rand::random::<u128>());
    let mut cut = Cut::new(marker, piece_lines.max(1));
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            break;
        }
        if !cut.line(&line) {
            return Ok(None);
        }
    }
    Ok(cut.finish())
}

/// The document as it is cut: the rest so far, the blocks read, the block being read.
struct Cut {
    /// A key no document holds (random): the stand-in entry of a block is `marker: <index>`.
    marker: String,
    rest: String,
    blocks: Vec<Checksums>,
    block: Option<Block>,
    piece_lines: usize,
}

/// A `checksums:` block being read.
struct Block {
    /// Column of the `checksums` key: the block is the lines indented more.
    key_column: usize,
    /// Indentation of its entries (of its first line).
    indent: Option<usize>,
    /// Its entries so far, made one map at its end (built at once, the map's nodes are full).
    entries_read: Vec<(FileName, Sha256Sum)>,
    piece: String,
    entries: usize,
    piece_lines: usize,
}

impl Cut {
    fn new(marker: String, piece_lines: usize) -> Cut {
        Cut {
            marker,
            rest: String::new(),
            blocks: Vec::new(),
            block: None,
            piece_lines,
        }
    }

    /// Takes one line (with its line break); false when the document must be read whole.
    fn line(&mut self, line: &str) -> bool {
        if let Some(block) = &mut self.block {
            match block.line(line) {
                Some(true) => return true,
                Some(false) => {
                    if !self.end_block() {
                        return false;
                    }
                }
                None => return false,
            }
        }
        if let Some(key_column) = checksums_key(line) {
            self.block = Some(Block {
                key_column,
                indent: None,
                entries_read: Vec::new(),
                piece: String::new(),
                entries: 0,
                piece_lines: self.piece_lines,
            });
        }
        self.rest.push_str(line);
        true
    }

    /// Reads the last piece of the block and puts its stand-in into the rest; false when a
    /// piece does not read.
    fn end_block(&mut self) -> bool {
        let Some(mut block) = self.block.take() else {
            return true;
        };
        if !block.read_piece() {
            return false;
        }
        // A block without lines is `checksums:` with nothing: the YAML reader's empty map.
        if let Some(indent) = block.indent {
            self.rest.push_str(&format!(
                "{:indent$}{}: \"{}\"\n",
                "",
                self.marker,
                self.blocks.len()
            ));
            self.blocks
                .push(Checksums::from_entries(block.entries_read));
        }
        true
    }

    /// The metadata, when the rest reads and every stand-in is found in one `checksums` map.
    fn finish(mut self) -> Option<BackupMetadata> {
        if !self.end_block() {
            return None;
        }
        let mut metadata = BackupMetadata::parse(&self.rest).ok()?;
        let mut used = vec![false; self.blocks.len()];
        let named = metadata
            .instances
            .iter_mut()
            .flat_map(|instance| instance.artifacts.iter_mut())
            .chain(metadata.custom_artifacts.iter_mut());
        for NamedChecksums { checksums, .. } in named {
            let Some(index) = self.stand_in(checksums) else {
                continue;
            };
            if std::mem::replace(used.get_mut(index)?, true) {
                return None;
            }
            *checksums = std::mem::take(&mut self.blocks[index]);
        }
        used.iter().all(|used| *used).then_some(metadata)
    }

    /// The block a map stands in for, when it is a stand-in; any other map holding the marker
    /// ends the cut read (`Some(usize::MAX)`, which no block has).
    fn stand_in(&self, checksums: &Checksums) -> Option<usize> {
        let digest = checksums.get(self.marker.as_bytes())?;
        if checksums.len() != 1 {
            return Some(usize::MAX);
        }
        match digest {
            Sha256Sum::Text(index) => Some(index.parse().unwrap_or(usize::MAX)),
            Sha256Sum::Bytes(_) => Some(usize::MAX),
        }
    }
}

impl Block {
    /// Takes one line: `Some(true)` when it belongs to the block, `Some(false)` when it ends
    /// it (it belongs to the rest), `None` when the block is not one to cut.
    fn line(&mut self, line: &str) -> Option<bool> {
        let content = line.trim_start_matches(' ');
        let indent = line.len() - content.len();
        let blank = content.trim_end_matches(['\r', '\n']).is_empty();
        if blank || content.starts_with('#') {
            self.piece.push_str(line);
            return Some(true);
        }
        if content.starts_with('\t') {
            return None;
        }
        if indent <= self.key_column {
            return Some(false);
        }
        let entry_indent = *self.indent.get_or_insert(indent);
        if indent < entry_indent {
            return None;
        }
        if indent == entry_indent {
            // An entry starts here: a plain, quoted or tagged key; not a sequence, not an
            // explicit key or value.
            let first = content.split([' ', '\r', '\n']).next().unwrap_or("");
            if matches!(first, "-" | "?" | ":") {
                return None;
            }
            if self.entries >= self.piece_lines && !self.read_piece() {
                return None;
            }
            self.entries += 1;
        }
        self.piece.push_str(line);
        Some(true)
    }

    /// Reads the piece so far into the block's entries (a later entry of a name wins, as in one
    /// YAML mapping, when they are made a map); false when it does not read.
    fn read_piece(&mut self) -> bool {
        if self.entries == 0 {
            self.piece.clear();
            return true;
        }
        let Ok(piece) = yaml_serde::from_str::<Checksums>(&self.piece) else {
            return false;
        };
        self.entries_read.extend(piece);
        self.piece.clear();
        self.entries = 0;
        true
    }
}

/// The column of the `checksums` key when `line` is `checksums:` with its value on the lines
/// below (`- checksums:` too, the first key of a sequence entry).
fn checksums_key(line: &str) -> Option<usize> {
    let content = line.trim_start_matches(' ');
    let indent = line.len() - content.len();
    let (dash, key) = match content.strip_prefix("- ") {
        Some(after) => {
            let after_spaces = after.trim_start_matches(' ');
            (2 + after.len() - after_spaces.len(), after_spaces)
        }
        None => (0, content),
    };
    let rest = key.strip_prefix("checksums:")?;
    rest.trim_end_matches(['\r', '\n', ' '])
        .is_empty()
        .then_some(indent + dash)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pieces(text: &str) -> Option<BackupMetadata> {
        read_in_pieces(text.as_bytes()).unwrap()
    }

    /// A metadata of `files` files in two jobs and a shared artifact, as Cairn writes it.
    fn written(files: usize) -> (BackupMetadata, String) {
        let digest = |n: usize| Sha256Sum::digest(n.to_string().as_bytes());
        let checksums = |prefix: &str| -> Checksums {
            (0..files)
                .map(|n| (FileName::from(format!("./{prefix}/f{n:07}")), digest(n)))
                .collect()
        };
        let mut metadata = BackupMetadata::started(chrono::Utc::now());
        metadata.add_artifact("web", "0", "nginx", checksums("a"));
        metadata.add_artifact("web", "0", "empty", Checksums::new());
        metadata.add_artifact("db", "1", "pg", checksums("b"));
        metadata.custom_artifacts.push(NamedChecksums {
            name: "shared-backup-one-restore-all".into(),
            checksums: checksums("c"),
        });
        let yaml = metadata.to_yaml();
        (metadata, yaml)
    }

    #[test]
    fn a_large_metadata_reads_in_pieces_as_it_reads_whole() {
        let (metadata, yaml) = written(PIECE_LINES * 2 + 7);
        let read = pieces(&yaml).expect("read in pieces");
        assert_eq!(read, metadata);
        assert_eq!(BackupMetadata::parse(&yaml).unwrap(), metadata);
        // With Windows line breaks too.
        let crlf = yaml.replace('\n', "\r\n");
        assert_eq!(pieces(&crlf), Some(BackupMetadata::parse(&crlf).unwrap()));
    }

    #[test]
    fn bbr_documents_read_in_pieces_as_they_read_whole() {
        let documents = [
            // bbr's yaml.v2: double-quoted indices, `{}` for no files, activity last.
            "instances:\n- name: redis\n  index: \"0\"\n  artifacts:\n  - name: redis-server\n    checksums:\n      ./redis/dump.rdb: 3f1b0f0ec3d58a3a2d1b2f6d7a59ae35e1b2b9a68b8b5b8c1c8b1a2a3a4a5a6a\n      ./redis/other: 00\ncustom_artifacts:\n- name: foo-backup-one-restore-all\n  checksums: {}\nbackup_activity:\n  start_time: 2024/01/02 03:04:05 UTC\n",
            // Names bbr writes as base64, quoted names, comments and blank lines in a block,
            // a name listed twice (the later wins), `checksums:` with nothing.
            "instances:\n- name: a\n  index: '0'\n  artifacts:\n  - checksums:\n      # a comment\n      !!binary Li9h/g==: 1111111111111111111111111111111111111111111111111111111111111111\n\n      \"./b: c\": '22'\n      ./d: 1\n      ./d: 2\n    name: j\n  - name: k\n    checksums:\n",
            // Older files without activity; sequences not indented under their key.
            "instances:\n  - name: r\n    index: \"1\"\n    artifacts:\n      - name: x\n        checksums:\n          ./a: b\n",
        ];
        for document in documents {
            let whole = BackupMetadata::parse(document).unwrap();
            assert_eq!(parse_metadata(document).as_ref(), Ok(&whole));
            assert_eq!(pieces(document), Some(whole), "{document}");
        }
    }

    #[test]
    fn what_the_cut_could_read_otherwise_is_read_whole() {
        let documents = [
            // A sequence where the map should be (an error the whole read reports).
            "instances:\n- name: a\n  index: '0'\n  artifacts:\n  - name: j\n    checksums:\n      - ./a\n",
            // Explicit keys.
            "instances:\n- name: a\n  index: '0'\n  artifacts:\n  - name: j\n    checksums:\n      ? ./a\n      : b\n",
            // A `checksums:` line inside a block scalar is text, not a block.
            "backup_activity:\n  start_time: |\n    checksums:\n      ./a: b\n",
            // A quoted name left open.
            "instances:\n- name: a\n  index: '0'\n  artifacts:\n  - name: j\n    checksums:\n      \"./a: b\n",
            // Tab indentation.
            "instances:\n- name: a\n  index: '0'\n  artifacts:\n  - name: j\n    checksums:\n\t./a: b\n",
        ];
        for document in documents {
            assert_eq!(pieces(document), None, "{document}");
            assert_eq!(parse_metadata(document), BackupMetadata::parse(document));
        }
        // The block scalar, read whole, is the text it is.
        let whole = BackupMetadata::parse(documents[2]).unwrap();
        let activity = whole.backup_activity.unwrap();
        assert_eq!(activity.start_time, "checksums:\n  ./a: b\n");
    }

    /// Documents edited at random, cut into pieces of 1 to 3 entries: whatever the cut reads
    /// is what the whole read gives (the cut may give up; it never reads otherwise).
    #[test]
    fn edited_documents_read_in_pieces_as_they_read_whole_or_are_read_whole() {
        use rand::{RngExt, SeedableRng};
        let base = concat!(
            "instances:\n- name: a\n  index: '0'\n  artifacts:\n  - name: j\n    checksums:\n",
            "      ./a: 1111\n      \"./b c\": '2'\n      ./d: |\n        x\n      ./e: f\n",
            "        g\n      !!binary Li9h/g==: h\n  - checksums:\n      ./x: y\n      ./z: w\n",
            "    name: k\ncustom_artifacts:\n- name: s\n  checksums:\n    ./q: r\n",
        );
        let inserts = [
            "\"",
            "'",
            ":",
            ": ",
            " ",
            "  ",
            "\n",
            "# c",
            "- ",
            "? ",
            "&a ",
            "*a",
            "!!str ",
            "|",
            ">",
            "{",
            "}",
            "[",
            "]",
            "\t",
            ",",
            "checksums:\n",
            "\n      ./n: m",
        ];
        let mut random = rand::rngs::StdRng::seed_from_u64(15);
        let (mut cut, mut whole) = (0, 0);
        for _ in 0..3000 {
            let mut text = base.to_string();
            for _ in 0..random.random_range(1..4) {
                let mut at = random.random_range(0..=text.len());
                while !text.is_char_boundary(at) {
                    at -= 1;
                }
                if random.random_bool(0.3) {
                    let end = (at + random.random_range(1..4)).min(text.len());
                    if text.is_char_boundary(end) {
                        text.replace_range(at..end, "");
                    }
                } else {
                    text.insert_str(at, inserts[random.random_range(0..inserts.len())]);
                }
            }
            let pieces = random.random_range(1..4);
            match read_in_pieces_of(text.as_bytes(), pieces).unwrap() {
                Some(read) => {
                    cut += 1;
                    assert_eq!(BackupMetadata::parse(&text).as_ref(), Ok(&read), "{text}");
                }
                None => whole += 1,
            }
        }
        // Both ways were taken often.
        assert!(cut > 300 && whole > 300, "cut {cut}, whole {whole}");
    }

    #[test]
    fn a_metadata_that_is_not_bbr_metadata_gives_the_yaml_error_with_its_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metadata");
        let (_, yaml) = written(PIECE_LINES + 1);
        // A name left open in the second piece of the first block.
        let broken = yaml.replacen("./a/f0004096:", "\"./a/f0004096:", 1);
        assert_ne!(broken, yaml);
        std::fs::write(&path, &broken).unwrap();
        let Err(ReadError::Yaml(error)) = read_metadata(&path) else {
            panic!("the broken metadata was read");
        };
        assert!(error.contains("line "), "{error}");
        std::fs::write(&path, b"instances:\n- name: \xff\n").unwrap();
        assert!(matches!(read_metadata(&path), Err(ReadError::Io(_))));
        std::fs::write(&path, &yaml).unwrap();
        assert_eq!(
            read_metadata(&path).unwrap(),
            BackupMetadata::parse(&yaml).unwrap()
        );
    }
}
