//! Per-file sha256 of a tar stream, computed while the stream passes through.
//!
//! bbr writes the tar to disk and then reads it again to hash every entry (bbr-facts §4.4).
//! Cairn hashes entries as the bytes arrive from the SSH channel: [`TeeReader`] hands every byte
//! to the destination and to the tar parser at once, so an artifact is read exactly once.
//!
//! Only regular files are hashed, keyed by their tar header name (`./dir/file`), which is what
//! `find . -type f` lists on the instance. A hard-link entry carries no content in the tar; it
//! gets the digest of the file it links to, as `find` would see it.
//!
//! The same parser checks restore safety ([`EntryPolicy::RefuseEscapes`]) before anything is
//! sent to an instance, whose `tar -x` runs as root and keeps owners and modes (as bbr's does:
//! restore scripts of real releases rely on vcap-owned files). Refused: entries with absolute
//! names or `..`, links that point outside the artifact directory or through a symlink of the
//! archive; anything but regular files, directories, symlinks and hard links to an earlier file
//! (device nodes, FIFOs, sparse files, unknown types); setuid, setgid and sticky bits and
//! world-writable modes (the `./` entry, which becomes the artifact directory, included); and
//! whatever GNU tar and this parser could read differently — the same name twice, a name that
//! ends in `/` on a non-directory, contents on an entry that has none, pax records other than
//! names, sizes, owners and times (or malformed), a GNU long name and a pax name that disagree,
//! a ustar name prefix. Owners are not checked: any is allowed, and with no setuid bit an
//! owner gives a file no power. `fuzz/fuzz_targets/tar_extract.rs` extracts what this accepts
//! with GNU tar and compares the tree with [`check_tar_entries`]' view of it.
//!
//! Only regular files' contents have digests (they are what `metadata` records and the
//! instance's `find -type f` lists); directories, modes and symlink targets are covered by the
//! check alone. They cannot change between check and extraction: [`digest_tar_forwarding`]
//! passes on exactly the bytes it parsed, read once, so `tar -x` extracts what was checked. A
//! store's artifact is also covered whole by the manifest's sha256 of its stored bytes; a bbr
//! directory's tar has no such digest (bbr's format has no place for it), so whoever can write
//! the backup can change a symlink target or a mode there — only to something the check
//! accepts.

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::BTreeSet;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use sha2::{Digest, Sha256};
use tar::EntryType;

pub use crate::format::file_name::FileName;

/// File name (`./relative/path`, as bytes) to its sha256 (what `metadata` records).
pub type Checksums = SharedMap<Sha256Sum>;

/// A sha256 as the per-file maps hold it: the 32 bytes themselves, written and read as
/// lowercase hex. A backup of a million files holds several maps of a million digests (the
/// tar's, the instance's, `metadata`'s); as hex `String`s each took 24 bytes and a 64-byte
/// heap block (80 with the allocator's rounding), as bytes they take 40 in place. A value that
/// is not 64 hex digits (a `metadata` written by hand, a test's `"00"`) is kept as its text,
/// and equal only to the same text, as before.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Sha256Sum {
    /// A digest.
    Bytes([u8; 32]),
    /// Any other text found where a digest was expected.
    Text(Box<str>),
}

impl Sha256Sum {
    /// The digest a hasher finished with.
    #[must_use]
    pub fn of(hasher: Sha256) -> Sha256Sum {
        Sha256Sum::Bytes(hasher.finalize().into())
    }

    /// The sha256 of `data`.
    #[must_use]
    pub fn digest(data: &[u8]) -> Sha256Sum {
        Sha256Sum::Bytes(Sha256::digest(data).into())
    }

    /// Reads 64 hex digits (either case) as a digest, anything else as text.
    #[must_use]
    pub fn parse(text: &[u8]) -> Sha256Sum {
        let mut bytes = [0_u8; 32];
        if text.len() == 64 && hex::decode_to_slice(text, &mut bytes).is_ok() {
            Sha256Sum::Bytes(bytes)
        } else {
            Sha256Sum::Text(String::from_utf8_lossy(text).into())
        }
    }

    /// Its lowercase hex (or its text).
    #[must_use]
    pub fn to_hex(&self) -> String {
        match self {
            Sha256Sum::Bytes(bytes) => hex::encode(bytes),
            Sha256Sum::Text(text) => text.to_string(),
        }
    }
}

impl std::fmt::Display for Sha256Sum {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Sha256Sum::Bytes(bytes) => bytes
                .iter()
                .try_for_each(|byte| write!(formatter, "{byte:02x}")),
            Sha256Sum::Text(text) => formatter.write_str(text),
        }
    }
}

impl std::fmt::Debug for Sha256Sum {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "\"{self}\"")
    }
}

impl From<&str> for Sha256Sum {
    fn from(text: &str) -> Sha256Sum {
        Sha256Sum::parse(text.as_bytes())
    }
}

impl From<String> for Sha256Sum {
    fn from(text: String) -> Sha256Sum {
        Sha256Sum::parse(text.as_bytes())
    }
}

impl PartialEq<str> for Sha256Sum {
    fn eq(&self, other: &str) -> bool {
        match self {
            Sha256Sum::Bytes(bytes) => {
                let mut theirs = [0_u8; 32];
                other.len() == 64
                    && hex::decode_to_slice(other, &mut theirs).is_ok()
                    && theirs == *bytes
            }
            Sha256Sum::Text(text) => **text == *other,
        }
    }
}

impl PartialEq<&str> for Sha256Sum {
    fn eq(&self, other: &&str) -> bool {
        *self == **other
    }
}

impl PartialEq<String> for Sha256Sum {
    fn eq(&self, other: &String) -> bool {
        *self == **other
    }
}

impl serde::Serialize for Sha256Sum {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Sha256Sum::Bytes(bytes) => {
                let mut text = [0_u8; 64];
                hex::encode_to_slice(bytes, &mut text).map_err(serde::ser::Error::custom)?;
                let text = std::str::from_utf8(&text).map_err(serde::ser::Error::custom)?;
                serializer.serialize_str(text)
            }
            Sha256Sum::Text(text) => serializer.serialize_str(text),
        }
    }
}

impl<'de> serde::Deserialize<'de> for Sha256Sum {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Sha256Sum, D::Error> {
        let text = std::borrow::Cow::<'de, str>::deserialize(deserializer)?;
        Ok(Sha256Sum::parse(text.as_bytes()))
    }
}

/// Whether to check that entries stay inside the directory they are extracted to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryPolicy {
    /// Hash only (the backup side: the instance's own `tar` produced the stream).
    Trust,
    /// Refuse absolute names, `..`, escaping links and device nodes (the restore side).
    RefuseEscapes,
}

/// Why a tar stream was refused.
#[derive(Debug, thiserror::Error)]
pub enum TarDigestError {
    /// Reading or parsing failed.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// An entry would land outside the extraction directory, or is not safe to extract as root.
    #[error("unsafe tar entry `{name}`: {reason}")]
    UnsafeEntry {
        /// The entry name.
        name: String,
        /// Why it is unsafe.
        reason: String,
    },
}

/// Reads the whole tar stream from `reader` and returns the sha256 of every regular file.
///
/// Everything after the end-of-archive marker is read too, so a [`TeeReader`] passes every
/// byte on.
///
/// # Errors
/// I/O and format errors, and unsafe entries under [`EntryPolicy::RefuseEscapes`].
pub fn digest_tar<R: Read>(reader: R, policy: EntryPolicy) -> Result<Checksums, TarDigestError> {
    let files = digest_tar_files(reader, policy)?;
    Ok(files
        .into_iter()
        .map(|(name, file)| (name, file.sha256))
        .collect())
}

/// Size and sha256 of one file of a tar.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FileDigest {
    /// Size in bytes.
    pub size: u64,
    /// Its sha256.
    pub sha256: Sha256Sum,
}

impl AsRef<Sha256Sum> for Sha256Sum {
    fn as_ref(&self) -> &Sha256Sum {
        self
    }
}

impl AsRef<Sha256Sum> for FileDigest {
    fn as_ref(&self) -> &Sha256Sum {
        &self.sha256
    }
}

/// File name (as bytes) to size and digest: every regular file of a tar.
pub type FileDigests = SharedMap<FileDigest>;

/// A map of file names (as bytes) to their digests, shared, not copied, when cloned: a backup's
/// record and the manifest made from it, a stored backup's manifest and the `metadata` view
/// of it, a restore's plan and its uploads hold the same maps, and a million files' map is
/// ~100 MB. Read it as the `BTreeMap` it derefs to; a change copies it first if it is shared.
#[derive(Clone, PartialEq, Eq)]
pub struct SharedMap<V>(std::sync::Arc<std::collections::BTreeMap<FileName, V>>);

impl<V> SharedMap<V> {
    /// No files.
    #[must_use]
    pub fn new() -> SharedMap<V> {
        SharedMap(std::sync::Arc::new(std::collections::BTreeMap::new()))
    }
}

impl<V> Default for SharedMap<V> {
    fn default() -> Self {
        SharedMap::new()
    }
}

impl<V> std::ops::Deref for SharedMap<V> {
    type Target = std::collections::BTreeMap<FileName, V>;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl<V: Clone> std::ops::DerefMut for SharedMap<V> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        std::sync::Arc::make_mut(&mut self.0)
    }
}

impl<V: std::fmt::Debug> std::fmt::Debug for SharedMap<V> {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(formatter)
    }
}

impl<V> FromIterator<(FileName, V)> for SharedMap<V> {
    fn from_iter<I: IntoIterator<Item = (FileName, V)>>(files: I) -> SharedMap<V> {
        SharedMap(std::sync::Arc::new(files.into_iter().collect()))
    }
}

impl<V, const N: usize> From<[(FileName, V); N]> for SharedMap<V> {
    fn from(files: [(FileName, V); N]) -> SharedMap<V> {
        files.into_iter().collect()
    }
}

impl<V: Clone> IntoIterator for SharedMap<V> {
    type Item = (FileName, V);
    type IntoIter = std::collections::btree_map::IntoIter<FileName, V>;

    fn into_iter(self) -> Self::IntoIter {
        std::sync::Arc::unwrap_or_clone(self.0).into_iter()
    }
}

impl<'a, V> IntoIterator for &'a SharedMap<V> {
    type Item = (&'a FileName, &'a V);
    type IntoIter = std::collections::btree_map::Iter<'a, FileName, V>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl<V: serde::Serialize> serde::Serialize for SharedMap<V> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

/// Read as a list, then built at once: a `BTreeMap` filled one insert at a time in order (as a
/// manifest lists its files) leaves its nodes half full, ~120 bytes a file of a manifest; built
/// from the sorted list its nodes are full, ~65. A name listed twice keeps its last value, as
/// inserting would.
impl<'de, V: serde::Deserialize<'de>> serde::Deserialize<'de> for SharedMap<V> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<SharedMap<V>, D::Error> {
        struct Entries<V>(std::marker::PhantomData<V>);
        impl<'de, V: serde::Deserialize<'de>> serde::de::Visitor<'de> for Entries<V> {
            type Value = Vec<(FileName, V)>;

            fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                formatter.write_str("a map of file names")
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Self::Value, A::Error> {
                let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(0).min(4096));
                while let Some(entry) = map.next_entry()? {
                    entries.push(entry);
                }
                Ok(entries)
            }
        }
        let entries = deserializer.deserialize_map(Entries(std::marker::PhantomData))?;
        Ok(SharedMap::from_entries(entries))
    }
}

impl<V> SharedMap<V> {
    /// The map of `entries` (in any order; a name listed twice keeps its last value), built at
    /// once with full nodes (see the `Deserialize` impl).
    #[must_use]
    pub fn from_entries(entries: Vec<(FileName, V)>) -> SharedMap<V> {
        entries.into_iter().collect()
    }
}

/// Like [`digest_tar`], keeping each file's size too.
///
/// # Errors
/// As [`digest_tar`].
pub fn digest_tar_files<R: Read>(
    reader: R,
    policy: EntryPolicy,
) -> Result<FileDigests, TarDigestError> {
    digest_entries(reader, policy, None)
}

/// Checks and digests a tar stream like [`digest_tar_files`] with
/// [`EntryPolicy::RefuseEscapes`] while passing it on to `writer` (the restore side: the
/// instance's `tar -x`), one entry at a time and **only after the entry was checked**: the
/// header blocks of an entry (with any long-name or pax blocks before it) are held back until
/// the entry has passed, so an unsafe entry never reaches `writer`; its contents then go
/// straight through. Every byte of the stream, the end-of-archive blocks included, is
/// written, in order, unless an entry was refused.
///
/// A symlink that only turns out to point outside once the whole archive is known (see
/// [`Symlinks::finish`]) is refused at the end, after it was passed on: extracting a symlink
/// writes nothing through it, and the caller must not use what was extracted when this
/// returns an error (restore removes it and runs no script).
///
/// # Errors
/// As [`digest_tar`], and errors of `writer`.
pub fn digest_tar_forwarding<R: Read>(
    reader: R,
    writer: &mut dyn Write,
) -> Result<FileDigests, TarDigestError> {
    let gate = RefCell::new(Gate {
        writer,
        held: Vec::new(),
        holding: true,
    });
    let gated = GatedReader {
        reader,
        gate: &gate,
    };
    digest_entries(gated, EntryPolicy::RefuseEscapes, Some(&gate))
}

/// What a file of a restored tar is compared with: a `metadata` digest ([`Sha256Sum`]: the
/// digest alone) or a manifest's ([`FileDigest`]: size and digest).
pub trait ExpectedFile {
    /// True when `actual` is this file.
    fn matches(&self, actual: &FileDigest) -> bool;
    /// The file as [`digest_tar_files`] would have recorded it, for a hard link to it; a
    /// `metadata` digest has no size, and [`ExpectedFile::matches`] of a [`Sha256Sum`] does
    /// not compare one.
    fn as_file(&self) -> FileDigest;
}

impl ExpectedFile for Sha256Sum {
    fn matches(&self, actual: &FileDigest) -> bool {
        *self == actual.sha256
    }

    fn as_file(&self) -> FileDigest {
        FileDigest {
            size: 0,
            sha256: self.clone(),
        }
    }
}

impl ExpectedFile for FileDigest {
    fn matches(&self, actual: &FileDigest) -> bool {
        self == actual
    }

    fn as_file(&self) -> FileDigest {
        self.clone()
    }
}

/// Checks a tar stream like [`digest_tar_files`] with [`EntryPolicy::RefuseEscapes`] (and with
/// `forward`, passes it on as [`digest_tar_forwarding`] does) and compares every file with
/// `expected` as it is read, instead of collecting a second map of every file: what a restore
/// and a verify need. Returns the names that differ (changed, missing or not expected), sorted
/// and shown as [`crate::format::bbr_directory::metadata::mismatched_files`] gives them;
/// empty when every file is the expected one.
///
/// # Errors
/// As [`digest_tar_forwarding`].
pub fn compare_tar<R: Read, V: ExpectedFile>(
    reader: R,
    forward: Option<&mut dyn Write>,
    expected: &SharedMap<V>,
) -> Result<Vec<String>, TarDigestError> {
    let comparison = FileComparison::new(expected);
    let compared = match forward {
        Some(writer) => {
            let gate = RefCell::new(Gate {
                writer,
                held: Vec::new(),
                holding: true,
            });
            let gated = GatedReader {
                reader,
                gate: &gate,
            };
            digest_entries_into(
                gated,
                EntryPolicy::RefuseEscapes,
                Some(&gate),
                None,
                comparison,
            )
        }
        None => digest_entries_into(reader, EntryPolicy::RefuseEscapes, None, None, comparison),
    }?;
    Ok(compared.finish())
}

/// Where [`digest_entries_into`] puts every file's digest, and where a hard link finds the
/// digest of the file it names.
trait FileSink {
    /// One regular file (or hard link) of the archive.
    fn add(&mut self, name: FileName, digest: FileDigest);
    /// The digest recorded for `name`, if any.
    fn digest(&self, name: &[u8]) -> Option<FileDigest>;
}

impl FileSink for FileDigests {
    fn add(&mut self, name: FileName, digest: FileDigest) {
        self.insert(name, digest);
    }

    fn digest(&self, name: &[u8]) -> Option<FileDigest> {
        self.get(name).cloned()
    }
}

/// The files of an archive compared with the expected ones as they come ([`compare_tar`]):
/// one reference per expected name seen, and the digest of every file that differs, instead
/// of a map of every file (a million files' map is ~130 MB).
struct FileComparison<'e, V> {
    expected: &'e SharedMap<V>,
    seen: std::collections::HashSet<&'e FileName>,
    /// Files with another digest than expected, listed twice, or not expected.
    differing: std::collections::BTreeMap<FileName, FileDigest>,
}

impl<'e, V: ExpectedFile> FileComparison<'e, V> {
    fn new(expected: &'e SharedMap<V>) -> Self {
        FileComparison {
            expected,
            seen: std::collections::HashSet::with_capacity(expected.len()),
            differing: std::collections::BTreeMap::new(),
        }
    }

    /// The names that differ, in the order of their bytes, shown as people read them (as
    /// `mismatched_files` gives them).
    fn finish(mut self) -> Vec<String> {
        if self.seen.len() < self.expected.len() {
            for name in self.expected.keys() {
                if !self.seen.contains(name) && !self.differing.contains_key(name) {
                    self.differing
                        .insert(name.clone(), self.expected[name].as_file());
                }
            }
        }
        self.differing.keys().map(ToString::to_string).collect()
    }
}

impl<V: ExpectedFile> FileSink for FileComparison<'_, V> {
    fn add(&mut self, name: FileName, digest: FileDigest) {
        match self.expected.get_key_value(&name) {
            Some((key, wanted)) if wanted.matches(&digest) && !self.seen.contains(key) => {
                self.seen.insert(key);
            }
            _ => {
                self.differing.insert(name, digest);
            }
        }
    }

    fn digest(&self, name: &[u8]) -> Option<FileDigest> {
        if let Some(digest) = self.differing.get(name) {
            return Some(digest.clone());
        }
        let (key, wanted) = self.expected.get_key_value(name)?;
        self.seen.contains(key).then(|| wanted.as_file())
    }
}

/// One entry as the restore check accepted it, which is what `tar -x` makes of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedEntry {
    /// The name as written in the archive (`./dir/file`).
    pub name: Vec<u8>,
    /// Permission bits from the header (`mode & 0o7777`); a symlink's are meaningless.
    pub mode: u32,
    /// What the entry is.
    pub kind: CheckedKind,
}

/// The kinds of entry the restore check accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckedKind {
    /// A regular file with these contents.
    File(FileDigest),
    /// A directory.
    Directory,
    /// A symlink to this target.
    Symlink(Vec<u8>),
    /// A hard link to this earlier file of the archive.
    HardLink(Vec<u8>),
}

/// Checks a tar stream like [`digest_tar_files`] with [`EntryPolicy::RefuseEscapes`] and
/// returns every entry as the check saw it, in order (the differential fuzz target compares
/// this with what GNU tar extracts).
///
/// # Errors
/// As [`digest_tar`].
pub fn check_tar_entries<R: Read>(reader: R) -> Result<Vec<CheckedEntry>, TarDigestError> {
    let mut view = Vec::new();
    digest_entries_viewed(reader, EntryPolicy::RefuseEscapes, None, Some(&mut view))?;
    Ok(view)
}

fn digest_entries<R: Read>(
    reader: R,
    policy: EntryPolicy,
    gate: Option<&RefCell<Gate<'_>>>,
) -> Result<FileDigests, TarDigestError> {
    digest_entries_viewed(reader, policy, gate, None)
}

fn digest_entries_viewed<R: Read>(
    reader: R,
    policy: EntryPolicy,
    gate: Option<&RefCell<Gate<'_>>>,
    view: Option<&mut Vec<CheckedEntry>>,
) -> Result<FileDigests, TarDigestError> {
    digest_entries_into(reader, policy, gate, view, FileDigests::new())
}

fn digest_entries_into<R: Read, F: FileSink>(
    reader: R,
    policy: EntryPolicy,
    gate: Option<&RefCell<Gate<'_>>>,
    mut view: Option<&mut Vec<CheckedEntry>>,
    mut checksums: F,
) -> Result<F, TarDigestError> {
    let open_gate = || gate.map_or(Ok(()), |g| g.borrow_mut().open());
    // The blocks between two entries (padding, long names, pax headers, the header), for
    // the long-name check ([`long_names_end_with_nul`]).
    let between = RefCell::new((Vec::new(), true));
    let reader = RecordingReader {
        reader,
        between: &between,
    };
    let mut archive = tar::Archive::new(reader);
    // Regular files by their name without `.` components (what a hard link names), for the
    // names that are not `./` and that (GNU tar writes every name so): the others are found
    // in `checksums` itself, not held twice.
    let mut odd_names = std::collections::BTreeMap::<Vec<u8>, FileDigest>::new();
    let mut buffer = vec![0_u8; HASH_BUFFER];
    let mut checker = Checker::default();
    for entry in archive.entries()? {
        let mut entry = entry?;
        let raw_name = entry.path_bytes().into_owned();
        let name = FileName::new(raw_name.clone()).to_string();
        let kind = entry.header().entry_type();
        if policy == EntryPolicy::RefuseEscapes {
            let (blocks, _) = &mut *between.borrow_mut();
            if !long_names_end_with_nul(blocks) {
                return Err(TarDigestError::UnsafeEntry {
                    name,
                    reason: "a GNU long name or link without its terminating NUL".into(),
                });
            }
            checker.check(&mut entry, &name)?;
        }
        between.borrow_mut().1 = false;
        open_gate()?;
        let link = entry.link_name_bytes().map(Cow::into_owned);
        let mode = entry.header().mode().unwrap_or(0) & 0o7777;
        let checked_kind = match kind {
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                let mut hasher = Sha256::new();
                let size = hash_entry(&mut entry, &mut hasher, &mut buffer)?;
                let sha256 = Sha256Sum::of(hasher);
                let digest = FileDigest { size, sha256 };
                let path = normalized(&raw_name);
                if raw_name.strip_prefix(b"./") != Some(&path[..]) {
                    odd_names.insert(path, digest.clone());
                }
                checksums.add(FileName::new(raw_name.clone()), digest.clone());
                Some(CheckedKind::File(digest))
            }
            EntryType::Link => {
                let target = link.unwrap_or_default();
                let path = normalized(&target);
                let dotted = [&b"./"[..], &path].concat();
                let digest = odd_names
                    .get(&path)
                    .cloned()
                    .or_else(|| checksums.digest(&dotted[..]))
                    .unwrap_or_else(|| FileDigest {
                        size: 0,
                        sha256: Sha256Sum::digest(b""),
                    });
                checksums.add(FileName::new(raw_name.clone()), digest);
                Some(CheckedKind::HardLink(target))
            }
            EntryType::Directory => Some(CheckedKind::Directory),
            EntryType::Symlink => Some(CheckedKind::Symlink(link.unwrap_or_default())),
            _ => None,
        };
        if let (Some(view), Some(kind)) = (view.as_deref_mut(), checked_kind) {
            view.push(CheckedEntry {
                name: raw_name,
                mode,
                kind,
            });
        }
        // The next entry's header (read by the iterator) is held until it is checked.
        if let Some(gate) = gate {
            gate.borrow_mut().holding = true;
        }
        let mut recording = between.borrow_mut();
        recording.0.clear();
        recording.1 = true;
    }
    checker.symlinks.finish()?;
    // GNU tar refuses an empty stream ("does not look like a tar archive"); `tar -c .` always
    // writes at least `./`. Found by fuzz/fuzz_targets/tar_extract.rs.
    if policy == EntryPolicy::RefuseEscapes && checker.names.is_empty() {
        return Err(TarDigestError::Io(io::Error::new(
            io::ErrorKind::InvalidData,
            "the archive holds no entry, not even `./`",
        )));
    }
    open_gate()?;
    let mut rest = archive.into_inner();
    if policy == EntryPolicy::RefuseEscapes {
        // After the first zero block GNU tar reads one more block as a header and fails on
        // one that is not zeros and not a valid header; `tar -c` writes only zeros there.
        // Found by fuzz/fuzz_targets/tar_extract.rs.
        loop {
            let count = match rest.read(&mut buffer) {
                Ok(0) => break,
                Ok(count) => count,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => return Err(error.into()),
            };
            if buffer[..count].iter().any(|&b| b != 0) {
                return Err(TarDigestError::Io(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "bytes other than zeros after the end of the archive",
                )));
            }
        }
    } else {
        io::copy(&mut rest, &mut io::sink())?;
    }
    Ok(checksums)
}

/// Where [`digest_tar_forwarding`] sends the stream: straight on, or held while an entry's
/// header is read and checked.
struct Gate<'w> {
    writer: &'w mut dyn Write,
    held: Vec<u8>,
    holding: bool,
}

impl Gate<'_> {
    fn pass(&mut self, bytes: &[u8]) -> io::Result<()> {
        if self.holding {
            self.held.extend_from_slice(bytes);
            Ok(())
        } else {
            self.writer.write_all(bytes)
        }
    }

    /// Lets the held bytes and everything after them through.
    fn open(&mut self) -> io::Result<()> {
        self.holding = false;
        self.writer.write_all(&self.held)?;
        self.held.clear();
        Ok(())
    }
}

/// Records what the parser reads between two entries' contents (while `.1` is set).
struct RecordingReader<'b, R> {
    reader: R,
    between: &'b RefCell<(Vec<u8>, bool)>,
}

impl<R: Read> Read for RecordingReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let count = self.reader.read(buf)?;
        let (blocks, recording) = &mut *self.between.borrow_mut();
        if *recording {
            blocks.extend_from_slice(&buf[..count]);
        }
        Ok(count)
    }
}

/// `blocks`: what was read from the end of an entry's contents to the end of the next
/// header. GNU tar reads a long name (`L`) or link (`K`) as a C string from its blocks, so past
/// its size when the data has no NUL at its end; the `tar` crate takes exactly its size. GNU
/// tar always writes the NUL. Found by fuzz/fuzz_targets/tar_extract.rs.
fn long_names_end_with_nul(blocks: &[u8]) -> bool {
    // The previous entry's padding comes first: headers are where the length leaves a
    // multiple of 512 to the end.
    let mut offset = blocks.len() % 512;
    while offset + 512 < blocks.len() {
        let header = &blocks[offset..offset + 512];
        let size = tar::Header::from_byte_slice(header)
            .entry_size()
            .ok()
            .and_then(|size| usize::try_from(size).ok());
        let Some(size) = size else { return true };
        if matches!(header[156], b'L' | b'K') {
            let data = blocks.get(offset + 512..offset + 512 + size);
            if data.is_some_and(|data| data.last() != Some(&0)) {
                return false;
            }
        }
        offset += 512 + size.div_ceil(512) * 512;
    }
    true
}

/// The stream as the tar parser reads it, every byte also given to the [`Gate`].
struct GatedReader<'g, 'w, R> {
    reader: R,
    gate: &'g RefCell<Gate<'w>>,
}

impl<R: Read> Read for GatedReader<'_, '_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let count = self.reader.read(buf)?;
        self.gate.borrow_mut().pass(&buf[..count])?;
        Ok(count)
    }
}

/// Read size while hashing an entry: large reads keep per-call overhead (channel hand-off,
/// tee, hasher setup) small next to the hashing itself.
const HASH_BUFFER: usize = 256 * 1024;

fn hash_entry(entry: &mut impl Read, hasher: &mut Sha256, buffer: &mut [u8]) -> io::Result<u64> {
    let mut size = 0;
    loop {
        let count = match entry.read(buffer) {
            Ok(0) => return Ok(size),
            Ok(count) => count,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(error),
        };
        hasher.update(&buffer[..count]);
        size += count as u64;
    }
}

/// Mode bits that give an extracted file more than its owner's rights: setuid, setgid, sticky.
const SPECIAL_BITS: u32 = 0o7000;
/// Write permission for everyone.
const WORLD_WRITABLE: u32 = 0o002;
/// Pax records both parsers read the same way; anything else (GNU sparse maps, xattrs, charset
/// records, vendor keys) is refused rather than left to GNU tar alone to interpret.
const PAX_KEYS: [&[u8]; 10] = [
    b"path",
    b"linkpath",
    b"size",
    b"uid",
    b"gid",
    b"uname",
    b"gname",
    b"mtime",
    b"atime",
    b"ctime",
];

/// The restore check's memory of the archive so far.
#[derive(Default)]
struct Checker {
    symlinks: Symlinks,
    /// Every name so far, without `.` components ([`normalized`]), and what it is: one map,
    /// not a set per kind (a million names are held once).
    names: std::collections::BTreeMap<Vec<u8>, Seen>,
    /// Every parent directory of an entry so far, listed or not.
    parents: BTreeSet<Vec<u8>>,
}

/// What a name of the archive is, as far as the check needs to know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seen {
    Directory,
    /// A regular file: what a hard link may name.
    File,
    /// A hard link or a symlink.
    OtherNotDirectory,
}

impl Checker {
    /// Refuses an entry `tar -x` must not extract as root, or might read otherwise than this
    /// parser does; remembers it.
    fn check<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        name: &str,
    ) -> Result<(), TarDigestError> {
        let unsafe_entry = |reason: String| TarDigestError::UnsafeEntry {
            name: name.to_string(),
            reason,
        };
        let raw_name = entry.path_bytes().into_owned();
        let kind = entry.header().entry_type();
        let link = entry.link_name_bytes().map(Cow::into_owned);
        check_entry(&raw_name, kind, link.as_deref()).map_err(unsafe_entry)?;
        check_header(entry).map_err(unsafe_entry)?;
        let path = normalized(&raw_name);
        if path.is_empty() && kind != EntryType::Directory {
            return Err(unsafe_entry(
                "the top directory as something else than a directory".into(),
            ));
        }
        if self.names.contains_key(&path) {
            return Err(unsafe_entry("listed twice in the archive".into()));
        }
        // `tar -x` cannot put a file where a directory is, nor anything under a file.
        if kind != EntryType::Directory && self.parents.contains(&path) {
            return Err(unsafe_entry(
                "not a directory, but earlier entries are under it".into(),
            ));
        }
        let mut parent = path.clone();
        while let Some(slash) = parent.iter().rposition(|&b| b == b'/') {
            parent.truncate(slash);
            // A known parent's own parents were checked and recorded with it, and none of
            // them can have become a file since (refused just above).
            if self.parents.contains(&parent) {
                break;
            }
            if self
                .names
                .get(&parent)
                .is_some_and(|seen| *seen != Seen::Directory)
            {
                return Err(unsafe_entry(
                    "under an entry that is not a directory".into(),
                ));
            }
            self.parents.insert(parent.clone());
        }
        if kind == EntryType::Link {
            let target = normalized(link.as_deref().unwrap_or_default());
            if self.names.get(&target) != Some(&Seen::File) {
                return Err(unsafe_entry(
                    "hard link to something that is not a file earlier in the archive".into(),
                ));
            }
        }
        let seen = match kind {
            EntryType::Directory => Seen::Directory,
            EntryType::Regular => Seen::File,
            _ => Seen::OtherNotDirectory,
        };
        self.names.insert(path, seen);
        self.symlinks.check(&raw_name, name, kind, link.as_deref())
    }
}

/// A name as the file system resolves it: without empty and `.` components.
fn normalized(name: &[u8]) -> Vec<u8> {
    name.split(|&b| b == b'/')
        .filter(|part| !part.is_empty() && *part != b".")
        .collect::<Vec<_>>()
        .join(&b'/')
}

/// The checks of one entry by itself: its name, kind, mode and link target.
fn check_entry(name: &[u8], kind: EntryType, link: Option<&[u8]>) -> Result<(), String> {
    // `tar -x` reads names as C strings: with a NUL byte the entry checked here is not the one
    // extracted (`./a\0/b/link -> ../x` lands as `./a/link`, pointing outside).
    if name.contains(&0) || link.is_some_and(|link| link.contains(&0)) {
        return Err("NUL byte in the name".into());
    }
    if name.is_empty() {
        return Err("empty name".into());
    }
    let path = Path::new(std::ffi::OsStr::from_bytes(name));
    if path.is_absolute() {
        return Err("absolute path".into());
    }
    if path.components().any(|c| c == Component::ParentDir) {
        return Err("contains `..`".into());
    }
    match kind {
        EntryType::Regular | EntryType::Directory => Ok(()),
        EntryType::Symlink | EntryType::Link => {
            let target = Path::new(std::ffi::OsStr::from_bytes(link.unwrap_or_default()));
            let base = if kind == EntryType::Symlink {
                path.parent().unwrap_or(Path::new("")).to_path_buf()
            } else {
                PathBuf::new()
            };
            if target.is_absolute() || escapes(&base.join(target)) {
                Err("link pointing outside the artifact directory".into())
            } else {
                Ok(())
            }
        }
        EntryType::Char | EntryType::Block => Err("device node".into()),
        EntryType::Fifo => Err("FIFO (named pipe)".into()),
        EntryType::GNUSparse => Err("sparse file (GNU tar only writes them with --sparse)".into()),
        other => Err(format!(
            "entry type `{}` (only files, directories, symlinks and hard links are restored)",
            char::from(other.as_byte()).escape_default()
        )),
    }
}

/// Whether GNU tar reads a numeric field that is in base-256 (binary) form, and within
/// `min..=max` (its `time_t` or `uid_t` range); octal fields are not judged here.
///
/// The tar crate decodes any field with the high bit set as binary and drops the bits that do
/// not fit 64; GNU tar takes only `0x80` (positive) and `0xff` (negative, two's complement) as
/// markers and refuses values out of range (found by tar_extract: "Archive value … is out of
/// time_t range").
fn gnu_reads_binary(field: &[u8], min: i128, max: i128) -> bool {
    let value = match field.first() {
        Some(0x80) => field[1..]
            .iter()
            .fold(0_i128, |value, &b| (value << 8) | i128::from(b)),
        Some(0xff) => field
            .iter()
            .fold(-1_i128, |value, &b| (value << 8) | i128::from(b)),
        Some(b) if b & 0x80 != 0 => return false,
        _ => return true,
    };
    (min..=max).contains(&value)
}

/// The checks of an entry's header fields: mode, size, and what GNU tar could read otherwise.
fn check_header<R: Read>(entry: &mut tar::Entry<'_, R>) -> Result<(), String> {
    let header = entry.header();
    let kind = header.entry_type();
    let name = entry.path_bytes();
    if name.ends_with(b"/") && kind != EntryType::Directory {
        // GNU tar extracts a "file" whose name ends in `/` as a directory.
        return Err("name ends with `/` but the entry is not a directory".into());
    }
    drop(name);
    if kind == EntryType::Symlink {
        // A symlink's mode is never applied, but GNU tar still reads the field and fails on
        // one it cannot read (found by tar_extract).
        let field = &header.as_old().mode;
        if header.mode().is_err() && field.iter().any(|&b| b != 0) {
            return Err("unreadable mode field".into());
        }
    } else {
        let mode = header
            .mode()
            .map_err(|_| "unreadable mode field".to_string())?;
        if mode & SPECIAL_BITS != 0 {
            return Err(format!(
                "mode {:04o} has a setuid, setgid or sticky bit",
                mode & 0o7777
            ));
        }
        if mode & WORLD_WRITABLE != 0 {
            return Err(format!("mode {:04o} is world-writable", mode & 0o7777));
        }
    }
    // GNU tar fails on a time or owner it cannot read (found by tar_extract; it reads an
    // all-NUL field as 0); this parser never looks at them unless asked.
    let old = header.as_old();
    let unreadable = |field: &[u8], read: bool| !read && field.iter().any(|&b| b != 0);
    if unreadable(&old.mtime, header.mtime().is_ok())
        || unreadable(&old.uid, header.uid().is_ok())
        || unreadable(&old.gid, header.gid().is_ok())
    {
        return Err("unreadable time or owner field".into());
    }
    if !gnu_reads_binary(&old.mtime, i128::from(i64::MIN), i128::from(i64::MAX))
        || !gnu_reads_binary(&old.uid, 0, i128::from(u32::MAX))
        || !gnu_reads_binary(&old.gid, 0, i128::from(u32::MAX))
    {
        return Err("time or owner field out of range".into());
    }
    if kind != EntryType::Regular && entry.size() != 0 {
        return Err("contents on an entry that has none".into());
    }
    // In a POSIX (ustar) header GNU tar prepends the prefix field to the name whatever the
    // version field says; tar-rs only when it is `00`. GNU tar itself writes long names as
    // separate entries, never with a prefix.
    let bytes = header.as_bytes();
    if &bytes[257..263] == b"ustar\0" && bytes[345..500].iter().any(|&b| b != 0) {
        return Err("name prefix field in a ustar header".into());
    }
    let name = entry.path_bytes().into_owned();
    let link = entry.link_name_bytes().map(Cow::into_owned);
    let Some(records) = entry.pax_extensions().map_err(|e| e.to_string())? else {
        return Ok(());
    };
    let mut keys = BTreeSet::new();
    let (mut pax_path, mut pax_link) = (None, None);
    for record in records {
        let record = record.map_err(|_| "malformed pax record".to_string())?;
        let key = record.key_bytes();
        if !PAX_KEYS.contains(&key) {
            return Err(format!(
                "pax record `{}`",
                String::from_utf8_lossy(key).escape_default()
            ));
        }
        if !keys.insert(key.to_vec()) {
            return Err(format!(
                "pax record `{}` twice",
                String::from_utf8_lossy(key)
            ));
        }
        match key {
            b"path" => pax_path = Some(record.value_bytes().to_vec()),
            b"linkpath" => pax_link = Some(record.value_bytes().to_vec()),
            b"size" if !pax_number_within(record.value_bytes(), i64::MAX.unsigned_abs()) => {
                return Err("pax number that is not one".into());
            }
            b"uid" | b"gid" if !pax_number_within(record.value_bytes(), u32::MAX.into()) => {
                return Err("pax number that is not one".into());
            }
            b"mtime" | b"atime" | b"ctime" if !is_pax_time(record.value_bytes()) => {
                return Err("pax time that is not one".into());
            }
            _ => {}
        }
    }
    // tar-rs takes a GNU long name (or link) over a pax one, GNU tar the pax one.
    let disagree =
        |pax: Option<Vec<u8>>, read: Option<&[u8]>| pax.is_some_and(|pax| read != Some(&pax[..]));
    if disagree(pax_path, Some(&name)) || disagree(pax_link, link.as_deref()) {
        return Err("a GNU long name and a pax name that disagree".into());
    }
    Ok(())
}

/// Whether a pax number is decimal digits, at most `max` (GNU tar refuses more).
fn pax_number_within(value: &[u8], max: u64) -> bool {
    !value.is_empty()
        && value.iter().all(u8::is_ascii_digit)
        && std::str::from_utf8(value)
            .ok()
            .and_then(|digits| digits.parse::<u64>().ok())
            .is_some_and(|number| number <= max)
}

/// Whether a pax time reads as GNU tar reads one: an optional `-`, seconds that fit `time_t`,
/// and optionally `.` and digits (found by tar_extract: GNU tar fails on `mtime=empt…`).
fn is_pax_time(value: &[u8]) -> bool {
    let unsigned = value.strip_prefix(b"-").unwrap_or(value);
    let (seconds, fraction) = match unsigned.iter().position(|&b| b == b'.') {
        Some(dot) => (&unsigned[..dot], Some(&unsigned[dot + 1..])),
        None => (unsigned, None),
    };
    pax_number_within(seconds, i64::MAX.unsigned_abs())
        && fraction.is_none_or(|digits| !digits.is_empty() && digits.iter().all(u8::is_ascii_digit))
}

/// The archive's own symlinks. [`check_entry`] judges each path as written, which is where it
/// lands only while no symlink of the archive is on the way: after `./a/b -> ..`, `./a/b/c` is
/// `./c`, and `./c -> a/b/..` points above the directory although `a/b/..` does not climb.
#[derive(Default)]
struct Symlinks {
    /// Names of the symlinks, without `.` components.
    names: BTreeSet<PathBuf>,
    /// Each symlink's name and its target as a path from the top of the archive.
    targets: Vec<(String, PathBuf)>,
}

impl Symlinks {
    /// Refuses an entry, or a hard link's target, under a symlink of the archive seen before;
    /// records symlinks.
    fn check(
        &mut self,
        raw_name: &[u8],
        name: &str,
        kind: EntryType,
        link: Option<&[u8]>,
    ) -> Result<(), TarDigestError> {
        let path_of = |bytes: &[u8]| Path::new(std::ffi::OsStr::from_bytes(bytes)).to_path_buf();
        let under_a_symlink = |path: &Path| {
            if self.names.is_empty() {
                return false;
            }
            let path: PathBuf = path
                .components()
                .filter(|c| *c != Component::CurDir)
                .collect();
            path.ancestors().skip(1).any(|a| self.names.contains(a))
        };
        let link = PathBuf::from(std::ffi::OsStr::from_bytes(link.unwrap_or_default()));
        if under_a_symlink(&path_of(raw_name))
            || (kind == EntryType::Link && under_a_symlink(&link))
        {
            return Err(TarDigestError::UnsafeEntry {
                name: name.to_string(),
                reason: "path through a symlink of the archive".into(),
            });
        }
        if kind == EntryType::Symlink {
            let path: PathBuf = path_of(raw_name)
                .components()
                .filter(|c| *c != Component::CurDir)
                .collect();
            if !path.as_os_str().is_empty() {
                let base = path.parent().unwrap_or(Path::new("")).join(&link);
                self.names.insert(path);
                self.targets.push((name.to_string(), base));
            }
        }
        Ok(())
    }

    /// Once every symlink is known: refuses a symlink whose target goes up (`..`) after passing
    /// through another symlink of the archive, where `..` is not the parent it seems to be.
    fn finish(&self) -> Result<(), TarDigestError> {
        for (name, target) in &self.targets {
            let components: Vec<Component> = target.components().collect();
            let mut current = PathBuf::new();
            let mut through_a_symlink = false;
            for (number, component) in components.iter().enumerate() {
                match component {
                    Component::ParentDir if through_a_symlink => {
                        return Err(TarDigestError::UnsafeEntry {
                            name: name.clone(),
                            reason: "link pointing outside the artifact directory".into(),
                        });
                    }
                    Component::ParentDir => {
                        current.pop();
                    }
                    Component::Normal(part) => {
                        current.push(part);
                        let last = number + 1 == components.len();
                        through_a_symlink |= !last && self.names.contains(&current);
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    }
}

/// True when a relative path climbs above its starting directory.
fn escapes(path: &Path) -> bool {
    let mut depth: i64 = 0;
    for component in path.components() {
        match component {
            Component::ParentDir => depth -= 1,
            Component::Normal(_) => depth += 1,
            Component::RootDir | Component::Prefix(_) => return true,
            Component::CurDir => {}
        }
        if depth < 0 {
            return true;
        }
    }
    false
}

/// A reader that copies everything it reads into a writer.
#[derive(Debug)]
pub struct TeeReader<R, W> {
    reader: R,
    writer: W,
    bytes: u64,
}

impl<R: Read, W: Write> TeeReader<R, W> {
    /// Wraps `reader`, copying into `writer`.
    pub fn new(reader: R, writer: W) -> Self {
        Self {
            reader,
            writer,
            bytes: 0,
        }
    }

    /// Bytes passed through so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Returns the writer.
    pub fn into_writer(self) -> W {
        self.writer
    }
}

impl<R: Read, W: Write> Read for TeeReader<R, W> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let count = self.reader.read(buf)?;
        self.writer.write_all(&buf[..count])?;
        self.bytes += count as u64;
        Ok(count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha(data: &[u8]) -> String {
        hex::encode(Sha256::digest(data))
    }

    fn append_file(builder: &mut tar::Builder<Vec<u8>>, name: &str, data: &[u8]) {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_entry_type(EntryType::Regular);
        // Keep the `./` prefix GNU tar writes (append_data would strip it).
        header.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        header.set_cksum();
        builder.append(&header, data).unwrap();
    }

    fn append_raw(builder: &mut tar::Builder<Vec<u8>>, name: &str, kind: EntryType, link: &str) {
        let mode = if kind == EntryType::Symlink {
            0o777
        } else {
            0o755
        };
        append_mode(builder, name.as_bytes(), kind, link, mode, b"");
    }

    /// An entry with any name bytes, mode and contents (as GNU tar writes it: symlinks 0777).
    fn append_mode(
        builder: &mut tar::Builder<Vec<u8>>,
        name: &[u8],
        kind: EntryType,
        link: &str,
        mode: u32,
        data: &[u8],
    ) {
        // Builder refuses `..` in names, so write the name bytes directly.
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(mode);
        header.set_entry_type(kind);
        header.as_old_mut().name[..name.len()].copy_from_slice(name);
        if !link.is_empty() {
            header.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
        }
        header.set_cksum();
        builder.append(&header, data).unwrap();
    }

    #[test]
    fn hashes_regular_files_by_header_name_and_follows_hard_links() {
        let mut builder = tar::Builder::new(Vec::new());
        append_file(&mut builder, "./a file", b"hello");
        append_file(&mut builder, "./sub/empty", b"");
        append_raw(&mut builder, "./sub/hard", EntryType::Link, "./a file");
        append_raw(&mut builder, "./sub/soft", EntryType::Symlink, "../a file");
        let bytes = builder.into_inner().unwrap();
        let mut copy = Vec::new();
        let sums = digest_tar(TeeReader::new(&bytes[..], &mut copy), EntryPolicy::Trust).unwrap();
        assert_eq!(copy, bytes, "the tee passes every byte, trailer included");
        assert_eq!(sums.len(), 3);
        assert_eq!(sums[&FileName::from("./a file")], sha(b"hello"));
        assert_eq!(sums[&FileName::from("./sub/hard")], sha(b"hello"));
        assert_eq!(sums[&FileName::from("./sub/empty")], sha(b""));
    }

    #[test]
    fn restore_policy_refuses_escaping_entries() {
        let cases = [
            ("../evil", EntryType::Regular, ""),
            ("./a/../../evil", EntryType::Regular, ""),
            ("/etc/passwd", EntryType::Regular, ""),
            ("./link", EntryType::Symlink, "/etc/shadow"),
            ("./sub/link", EntryType::Symlink, "../../outside"),
            ("./hard", EntryType::Link, "../outside"),
            ("./dev", EntryType::Char, ""),
        ];
        for (name, kind, link) in cases {
            let mut builder = tar::Builder::new(Vec::new());
            append_raw(&mut builder, name, kind, link);
            let bytes = builder.into_inner().unwrap();
            let result = digest_tar(&bytes[..], EntryPolicy::RefuseEscapes);
            assert!(
                matches!(result, Err(TarDigestError::UnsafeEntry { .. })),
                "{name} -> {link} should be refused, got {result:?}"
            );
        }
    }

    /// A GNU long-name (`L`) or long-link (`K`) entry: unlike the header fields, they can carry
    /// NUL bytes.
    fn append_long(builder: &mut tar::Builder<Vec<u8>>, kind: EntryType, value: &[u8]) {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(kind);
        header.set_size(value.len() as u64 + 1);
        header.as_old_mut().name[..13].copy_from_slice(b"././@LongLink");
        header.set_cksum();
        builder
            .append(&header, &[value, b"\0"].concat()[..])
            .unwrap();
    }

    #[test]
    fn restore_policy_refuses_nul_bytes_in_names_and_links() {
        // Found by fuzzing (fuzz/fuzz_targets/tar_entries.rs): `tar -x` cuts names at the NUL,
        // so these were checked as links inside but extracted as links pointing outside.
        let long_name = {
            let mut builder = tar::Builder::new(Vec::new());
            append_long(&mut builder, EntryType::GNULongName, b"./a\0/b/link");
            append_raw(&mut builder, "./placeholder", EntryType::Symlink, "../x");
            builder.into_inner().unwrap()
        };
        let long_link = {
            let mut builder = tar::Builder::new(Vec::new());
            append_long(&mut builder, EntryType::GNULongLink, b"..\0/x");
            append_raw(&mut builder, "./link", EntryType::Symlink, "placeholder");
            builder.into_inner().unwrap()
        };
        for bytes in [long_name, long_link] {
            let result = digest_tar(&bytes[..], EntryPolicy::RefuseEscapes);
            assert!(
                matches!(
                    &result,
                    Err(TarDigestError::UnsafeEntry { reason, .. }) if reason == "NUL byte in the name"
                ),
                "{result:?}"
            );
        }
    }

    #[test]
    fn restore_policy_refuses_paths_through_symlinks_of_the_archive() {
        // Found by fuzzing (fuzz/fuzz_targets/tar_entries.rs). Each name and target is fine as
        // written, but `./a/b -> ..` makes `./a/b` the top directory, so the last entry points
        // one level above it. GNU tar 1.34 extracts the third case so (`c -> a/b/..`).
        let cases: [&[(&str, EntryType, &str)]; 4] = [
            &[
                ("./a/b", EntryType::Symlink, ".."),
                ("./a/b/c", EntryType::Symlink, ".."),
            ],
            &[
                ("./a/b", EntryType::Symlink, ".."),
                ("./h", EntryType::Link, "a/b/../x"),
            ],
            &[
                ("./a/b", EntryType::Symlink, ".."),
                ("./c", EntryType::Symlink, "a/b/.."),
            ],
            &[
                ("./c", EntryType::Symlink, "a/b/.."),
                ("./a/b", EntryType::Symlink, ".."),
            ],
        ];
        for entries in cases {
            let mut builder = tar::Builder::new(Vec::new());
            for (name, kind, link) in entries {
                append_raw(&mut builder, name, *kind, link);
            }
            let bytes = builder.into_inner().unwrap();
            let result = digest_tar(&bytes[..], EntryPolicy::RefuseEscapes);
            assert!(
                matches!(result, Err(TarDigestError::UnsafeEntry { .. })),
                "{entries:?} should be refused, got {result:?}"
            );
        }
        // Symlinks to symlinks that do not climb back stay inside.
        let mut builder = tar::Builder::new(Vec::new());
        append_file(&mut builder, "./releases/v2/bin", b"x");
        append_raw(&mut builder, "./current", EntryType::Symlink, "releases/v2");
        append_raw(&mut builder, "./link", EntryType::Symlink, "current/bin");
        append_raw(
            &mut builder,
            "./releases/up",
            EntryType::Symlink,
            "../current",
        );
        let bytes = builder.into_inner().unwrap();
        assert!(digest_tar(&bytes[..], EntryPolicy::RefuseEscapes).is_ok());
        assert!(digest_tar(&bytes[..], EntryPolicy::Trust).is_ok());
    }

    #[test]
    fn restore_policy_accepts_links_that_stay_inside() {
        let mut builder = tar::Builder::new(Vec::new());
        append_file(&mut builder, "./data", b"x");
        append_raw(&mut builder, "./sub/link", EntryType::Symlink, "../data");
        let bytes = builder.into_inner().unwrap();
        assert!(digest_tar(&bytes[..], EntryPolicy::RefuseEscapes).is_ok());
    }

    #[test]
    fn restore_policy_refuses_an_archive_without_entries() {
        // Found by fuzz/fuzz_targets/tar_extract.rs: GNU tar fails on an empty stream.
        for bytes in [&[][..], &[0_u8; 1024][..]] {
            assert!(digest_tar(bytes, EntryPolicy::RefuseEscapes).is_err());
            assert!(digest_tar(bytes, EntryPolicy::Trust).unwrap().is_empty());
        }
    }

    #[test]
    fn restore_policy_refuses_bytes_after_the_end_of_the_archive() {
        // Found by fuzz/fuzz_targets/tar_extract.rs: GNU tar reads the block after the first
        // zero block, and fails on a bad one.
        let mut builder = tar::Builder::new(Vec::new());
        append_file(&mut builder, "./a", b"x");
        let mut bytes = builder.into_inner().unwrap();
        bytes.extend_from_slice(&[0_u8; 8192]);
        assert!(digest_tar(&bytes[..], EntryPolicy::RefuseEscapes).is_ok());
        let at = bytes.len() - 512;
        bytes[at] = 0xff;
        assert!(digest_tar(&bytes[..], EntryPolicy::RefuseEscapes).is_err());
        assert!(digest_tar(&bytes[..], EntryPolicy::Trust).is_ok());
    }

    #[test]
    fn restore_policy_refuses_binary_times_and_owners_gnu_tar_cannot_read() {
        // Found by fuzz/fuzz_targets/tar_extract.rs: GNU tar failed on these at `tar -x`.
        let with = |edit: &dyn Fn(&mut tar::Header)| {
            let bytes = edit_header(one_entry(b"./a", EntryType::Regular, "", 0o644, b"x"), edit);
            digest_tar(&bytes[..], EntryPolicy::RefuseEscapes)
        };
        let mtime = |raw: [u8; 12]| move |h: &mut tar::Header| h.as_old_mut().mtime = raw;
        let mut far = [0_u8; 12];
        far[0] = 0x80;
        far[4] = 0x01; // 2^56 seconds: fits time_t
        assert!(with(&mtime(far)).is_ok());
        far[3] = 0x80; // 2^63 + 2^56: beyond time_t
        assert!(with(&mtime(far)).is_err());
        let mut before_1970 = [0xff_u8; 12];
        before_1970[11] = 0x00; // -256 s
        assert!(with(&mtime(before_1970)).is_ok());
        let mut bad_marker = [0_u8; 12];
        bad_marker[0] = 0x81;
        assert!(with(&mtime(bad_marker)).is_err());
        let mut uid = [0_u8; 8];
        uid[0] = 0x80;
        uid[3] = 0x01; // 2^32: beyond uid_t
        assert!(with(&move |h: &mut tar::Header| h.as_old_mut().uid = uid).is_err());
        uid[3] = 0x00;
        uid[7] = 0x07;
        assert!(with(&move |h: &mut tar::Header| h.as_old_mut().uid = uid).is_ok());
    }

    #[test]
    fn restore_policy_refuses_a_symlink_with_an_unreadable_mode() {
        let bytes = edit_header(
            one_entry(b"./l", EntryType::Symlink, "a", 0o777, b""),
            &|h: &mut tar::Header| h.as_old_mut().mode = *b"0x7777\0\0",
        );
        assert!(digest_tar(&bytes[..], EntryPolicy::RefuseEscapes).is_err());
        assert!(digest_tar(&bytes[..], EntryPolicy::Trust).is_ok());
    }

    #[test]
    fn restore_policy_refuses_a_long_name_without_its_nul() {
        // Found by fuzz/fuzz_targets/tar_extract.rs: GNU tar read the name on into the
        // padding (`./a/bc`), the tar crate stopped at the size (`./a/b`).
        let directory = |name: &[u8]| {
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(EntryType::Directory);
            header.set_mode(0o755);
            header.set_size(0);
            header.as_old_mut().name[..name.len()].copy_from_slice(name);
            header.set_cksum();
            header.as_bytes().to_vec()
        };
        let with_padding = |long: &[u8], padding: &[u8]| {
            let mut bytes = [directory(b"./"), directory(b"./a")].concat();
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(EntryType::GNULongName);
            header.set_size(long.len() as u64);
            header.as_old_mut().name[..13].copy_from_slice(b"././@LongLink");
            header.set_cksum();
            bytes.extend_from_slice(header.as_bytes());
            let mut data = [long, padding].concat();
            data.resize(512, 0);
            bytes.extend_from_slice(&data);
            bytes.extend_from_slice(&directory(b"./placeholder"));
            bytes.extend_from_slice(&[0_u8; 1024]);
            bytes
        };
        let refused = with_padding(b"./a/b", b"c");
        assert!(refusal(&refused).contains("without its terminating NUL"));
        let accepted = with_padding(b"./a/b\0", b"");
        let files = check_tar_entries(&accepted[..]).unwrap();
        assert_eq!(files.last().unwrap().name, b"./a/b");
    }

    #[test]
    fn truncated_streams_are_errors() {
        let mut builder = tar::Builder::new(Vec::new());
        append_file(&mut builder, "./big", &[7_u8; 4096]);
        let bytes = builder.into_inner().unwrap();
        assert!(digest_tar(&bytes[..1024], EntryPolicy::Trust).is_err());
    }

    /// A reader that hands out at most 7 bytes per read, so headers arrive in pieces.
    struct Trickle<'a>(&'a [u8]);

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let count = buf.len().min(7).min(self.0.len());
            buf[..count].copy_from_slice(&self.0[..count]);
            self.0 = &self.0[count..];
            Ok(count)
        }
    }

    #[test]
    fn forwarding_passes_every_byte_of_a_safe_archive_in_order() {
        let mut builder = tar::Builder::new(Vec::new());
        append_file(&mut builder, "./a", b"hello");
        append_long(
            &mut builder,
            EntryType::GNULongName,
            format!("{}file", "./long/".repeat(40)).as_bytes(),
        );
        append_file(&mut builder, "./placeholder", &vec![3_u8; 70_000]);
        append_raw(&mut builder, "./sub/soft", EntryType::Symlink, "../a");
        append_raw(&mut builder, "./hard", EntryType::Link, "./a");
        let mut bytes = builder.into_inner().unwrap();
        bytes.extend_from_slice(&[0_u8; 8192]); // record padding, as GNU tar writes
        for reader in [
            Box::new(&bytes[..]) as Box<dyn Read>,
            Box::new(Trickle(&bytes)),
        ] {
            let mut forwarded = Vec::new();
            let files = digest_tar_forwarding(reader, &mut forwarded).unwrap();
            assert_eq!(forwarded, bytes);
            assert_eq!(files.len(), 3);
            assert_eq!(files[&FileName::from("./hard")].sha256, sha(b"hello"));
            assert_eq!(
                files[&FileName::from(format!("{}file", "./long/".repeat(40)))].size,
                70_000
            );
        }
    }

    /// A map read from JSON or YAML is the one inserting its entries in order makes (the
    /// last of a name listed twice wins), built at once.
    #[test]
    fn maps_read_in_one_build_keep_the_last_entry_of_a_name() {
        let json = r#"{"./b": "2", "./a": "1", "./b": "3"}"#;
        let read: Checksums = serde_json::from_str(json).unwrap();
        let inserted: std::collections::BTreeMap<FileName, Sha256Sum> =
            serde_json::from_str(json).unwrap();
        assert_eq!(*read, inserted);
        assert_eq!(read[&b"./b"[..]], "3");
        let yaml: Checksums = yaml_serde::from_str("./b: '2'\n./a: '1'\n./b: '3'\n").unwrap();
        assert_eq!(yaml, read);
        let empty: Checksums = yaml_serde::from_str("{}").unwrap();
        assert!(empty.is_empty());
        assert!(serde_json::from_str::<Checksums>("[1]").is_err());
    }

    /// `compare_tar` gives what `mismatched_files` of the collected map gives, forwarding or
    /// not, against `metadata`'s digests and a manifest's sizes and digests; hard links get
    /// the digest of the file they name.
    #[test]
    fn comparing_as_the_files_come_finds_what_comparing_the_maps_finds() {
        use crate::format::bbr_directory::metadata::mismatched_files;
        let mut builder = tar::Builder::new(Vec::new());
        append_raw(&mut builder, "./", EntryType::Directory, "");
        append_file(&mut builder, "./a", b"hello");
        append_file(&mut builder, "./b", b"world");
        append_raw(&mut builder, "./hard", EntryType::Link, "./a");
        append_raw(&mut builder, "./hard-b", EntryType::Link, "./b");
        let bytes = builder.into_inner().unwrap();
        let actual = digest_tar_files(&bytes[..], EntryPolicy::RefuseEscapes).unwrap();
        let edits: [&dyn Fn(&mut FileDigests); 6] = [
            &|_| {},
            &|files| files.get_mut(&b"./b"[..]).unwrap().sha256 = Sha256Sum::digest(b"other"),
            &|files| files.get_mut(&b"./a"[..]).unwrap().size = 4,
            &|files| {
                files.remove(&b"./hard"[..]);
            },
            &|files| {
                let a = files[&b"./a"[..]].clone();
                files.insert(FileName::from("./missing"), a);
            },
            &|files| files.get_mut(&b"./hard-b"[..]).unwrap().sha256 = Sha256Sum::digest(b""),
        ];
        for (number, edit) in edits.iter().enumerate() {
            let mut expected = actual.clone();
            edit(&mut expected);
            let digests: Checksums = expected
                .iter()
                .map(|(name, file)| (name.clone(), file.sha256.clone()))
                .collect();
            let by_digest = mismatched_files(&digests, &actual);
            let by_file: Vec<String> = if expected == actual {
                Vec::new()
            } else {
                let mut names: Vec<&FileName> = expected
                    .iter()
                    .filter(|(name, file)| actual.get(*name) != Some(*file))
                    .map(|(name, _)| name)
                    .chain(actual.keys().filter(|name| !expected.contains_key(*name)))
                    .collect();
                names.sort();
                names.iter().map(ToString::to_string).collect()
            };
            assert_eq!(compare_tar(&bytes[..], None, &digests).unwrap(), by_digest);
            assert_eq!(compare_tar(&bytes[..], None, &expected).unwrap(), by_file);
            let mut forwarded = Vec::new();
            let compared = compare_tar(Trickle(&bytes), Some(&mut forwarded), &expected).unwrap();
            assert_eq!(compared, by_file, "edit {number}");
            assert_eq!(forwarded, bytes);
            assert_eq!(
                number == 0,
                by_file.is_empty(),
                "edit {number}: {by_file:?}"
            );
        }
        // Names that are not UTF-8 come in the order of their bytes, as `mismatched_files`
        // lists them (`./a~` before `./a\xff`, which reads `./a\\xff`).
        let mut odd = tar::Builder::new(Vec::new());
        append_mode(&mut odd, b"./a\xff", EntryType::Regular, "", 0o644, b"1");
        append_mode(&mut odd, b"./a~", EntryType::Regular, "", 0o644, b"2");
        let odd_bytes = odd.into_inner().unwrap();
        let nothing = Checksums::new();
        let odd_actual = digest_tar(&odd_bytes[..], EntryPolicy::RefuseEscapes).unwrap();
        assert_eq!(
            compare_tar(&odd_bytes[..], None, &nothing).unwrap(),
            mismatched_files(&nothing, &odd_actual)
        );
        assert_eq!(
            compare_tar(&odd_bytes[..], None, &nothing).unwrap(),
            vec!["./a~", "./a\\xff"]
        );
        // A size only a manifest records is not compared with `metadata`'s digests.
        let mut sized = actual.clone();
        sized.get_mut(&b"./a"[..]).unwrap().size = 4;
        assert_eq!(compare_tar(&bytes[..], None, &sized).unwrap(), vec!["./a"]);
        // Unsafe entries are refused as by the collecting reader.
        let mut unsafe_tar = tar::Builder::new(Vec::new());
        append_raw(&mut unsafe_tar, "./escape", EntryType::Symlink, "../../etc");
        let unsafe_bytes = unsafe_tar.into_inner().unwrap();
        assert!(matches!(
            compare_tar(&unsafe_bytes[..], None, &actual),
            Err(TarDigestError::UnsafeEntry { .. })
        ));
    }

    #[test]
    fn forwarding_stops_before_the_header_of_an_unsafe_entry() {
        let cases = [
            ("./escape", EntryType::Symlink, "../../../etc"),
            ("./../evil", EntryType::Regular, ""),
            ("./dev", EntryType::Block, ""),
        ];
        for (name, kind, link) in cases {
            let mut safe = tar::Builder::new(Vec::new());
            append_file(&mut safe, "./ok", b"fine");
            let safe_bytes = safe.into_inner().unwrap();
            // The safe entry's header and contents; its padding is read with the next header.
            let safe_part = &safe_bytes[..512 + 4];
            let mut builder = tar::Builder::new(Vec::new());
            append_file(&mut builder, "./ok", b"fine");
            append_long(&mut builder, EntryType::GNULongLink, link.as_bytes());
            append_raw(&mut builder, name, kind, link);
            append_file(&mut builder, "./after", b"never");
            let bytes = builder.into_inner().unwrap();
            let mut forwarded = Vec::new();
            let result = digest_tar_forwarding(Trickle(&bytes), &mut forwarded);
            assert!(
                matches!(result, Err(TarDigestError::UnsafeEntry { .. })),
                "{name}: {result:?}"
            );
            assert_eq!(forwarded, safe_part, "{name}: only the safe entry went on");
        }
    }

    #[test]
    fn forwarding_reports_writer_errors() {
        struct Broken;
        impl Write for Broken {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::Error::new(io::ErrorKind::BrokenPipe, "gone"))
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let mut builder = tar::Builder::new(Vec::new());
        append_file(&mut builder, "./a", b"hello");
        let bytes = builder.into_inner().unwrap();
        let result = digest_tar_forwarding(&bytes[..], &mut Broken);
        assert!(
            matches!(result, Err(TarDigestError::Io(e)) if e.kind() == io::ErrorKind::BrokenPipe)
        );
    }

    fn refusal(bytes: &[u8]) -> String {
        match digest_tar(bytes, EntryPolicy::RefuseEscapes) {
            Err(TarDigestError::UnsafeEntry { name, reason }) => format!("{name}: {reason}"),
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    /// `archive` with the header of its second entry (after `./`) edited, checksum renewed.
    fn edit_header(mut archive: Vec<u8>, edit: &dyn Fn(&mut tar::Header)) -> Vec<u8> {
        let mut header = tar::Header::from_byte_slice(&archive[512..1024]).clone();
        edit(&mut header);
        header.set_cksum();
        archive[512..1024].copy_from_slice(header.as_bytes());
        archive
    }

    fn one_entry(name: &[u8], kind: EntryType, link: &str, mode: u32, data: &[u8]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        append_mode(&mut builder, b"./", EntryType::Directory, "", 0o755, b"");
        append_mode(&mut builder, name, kind, link, mode, data);
        builder.into_inner().unwrap()
    }

    #[test]
    fn restore_policy_refuses_what_root_must_not_extract() {
        let cases: [(&[u8], EntryType, u32, &str); 9] = [
            (
                b"./suid",
                EntryType::Regular,
                0o4755,
                "mode 4755 has a setuid",
            ),
            (
                b"./sgid",
                EntryType::Regular,
                0o2755,
                "mode 2755 has a setuid, setgid",
            ),
            (
                b"./tmp",
                EntryType::Directory,
                0o1777,
                "mode 1777 has a setuid, setgid or sticky",
            ),
            (
                b"./open",
                EntryType::Regular,
                0o666,
                "mode 0666 is world-writable",
            ),
            (
                b"./dir/",
                EntryType::Directory,
                0o777,
                "mode 0777 is world-writable",
            ),
            (b"./fifo", EntryType::Fifo, 0o644, "FIFO"),
            (b"./tty", EntryType::Char, 0o600, "device node"),
            (b"./disk", EntryType::Block, 0o600, "device node"),
            (b"./label", EntryType::new(b'V'), 0o644, "entry type `V`"),
        ];
        for (name, kind, mode, reason) in cases {
            let refused = refusal(&one_entry(name, kind, "", mode, b""));
            assert!(
                refused.starts_with(std::str::from_utf8(name).unwrap()) && refused.contains(reason),
                "{refused}"
            );
        }
        // A sparse entry (here without its sparse map, which the parser refuses first).
        let sparse = one_entry(b"./holes", EntryType::GNUSparse, "", 0o644, b"");
        assert!(digest_tar(&sparse[..], EntryPolicy::RefuseEscapes).is_err());
        // The top directory itself: `tar -x` gives the artifact directory its mode.
        let mut builder = tar::Builder::new(Vec::new());
        append_mode(&mut builder, b"./", EntryType::Directory, "", 0o777, b"");
        append_file(&mut builder, "./a", b"x");
        let refused = refusal(&builder.into_inner().unwrap());
        assert_eq!(refused, "./: mode 0777 is world-writable");
        // The backup side hashes whatever the instance's own tar wrote.
        let suid = one_entry(b"./suid", EntryType::Regular, "", 0o4755, b"x");
        assert_eq!(digest_tar(&suid[..], EntryPolicy::Trust).unwrap().len(), 1);
    }

    #[test]
    fn restore_policy_refuses_what_gnu_tar_could_read_otherwise() {
        let archive = |entries: &[(&str, EntryType, &str, &[u8])]| {
            let mut builder = tar::Builder::new(Vec::new());
            for (name, kind, link, data) in entries {
                append_mode(&mut builder, name.as_bytes(), *kind, link, 0o644, data);
            }
            builder.into_inner().unwrap()
        };
        let file = EntryType::Regular;
        let cases: [(Vec<u8>, &str); 8] = [
            (
                archive(&[("./f/", file, "", b"x")]),
                "./f/: name ends with `/`",
            ),
            (
                archive(&[("./d", EntryType::Directory, "", b"x")]),
                "./d: contents on an entry",
            ),
            (
                archive(&[("./s", EntryType::Symlink, "x", b"x")]),
                "./s: contents on an entry",
            ),
            (
                archive(&[("./h", EntryType::Link, "./missing", b"")]),
                "./h: hard link to something that is not a file earlier",
            ),
            (
                archive(&[(".", file, "", b"")]),
                ".: the top directory as something else",
            ),
            (
                archive(&[
                    ("./twice", file, "", b"1"),
                    ("dir/.//../twice", file, "", b"2"),
                ]),
                "dir/.//../twice: contains `..`",
            ),
            (
                archive(&[("./a/b", file, "", b"1"), ("./a", file, "", b"2")]),
                "./a: not a directory, but earlier entries are under it",
            ),
            (
                archive(&[("./a", file, "", b"1"), ("./a/b", file, "", b"2")]),
                "./a/b: under an entry that is not a directory",
            ),
        ];
        for (bytes, expected) in &cases {
            assert!(refusal(bytes).starts_with(expected), "{}", refusal(bytes));
        }
        let twice = archive(&[
            ("./twice", file, "", b"1"),
            ("./dir/", EntryType::Directory, "", b""),
            ("dir/.//twice", file, "", b"2"),
            ("dir/twice", file, "", b"3"),
        ]);
        assert_eq!(refusal(&twice), "dir/twice: listed twice in the archive");
    }

    /// A pax extended header (`x`) with these records before a file `./f`.
    fn pax_then_file(records: &[(&str, &[u8])], long_name: Option<&[u8]>) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        if let Some(long) = long_name {
            append_long(&mut builder, EntryType::GNULongName, long);
        }
        let mut data = Vec::new();
        for (key, value) in records {
            let body = [b" ", key.as_bytes(), b"=", value, b"\n"].concat();
            // The length counts its own digits.
            let mut length = body.len() + 1;
            while length != body.len() + length.to_string().len() {
                length = body.len() + length.to_string().len();
            }
            data.extend_from_slice(length.to_string().as_bytes());
            data.extend_from_slice(&body);
        }
        let mut header = tar::Header::new_ustar();
        header.set_entry_type(EntryType::XHeader);
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_path("PaxHeaders/f").unwrap();
        header.set_cksum();
        builder.append(&header, &data[..]).unwrap();
        let mut header = tar::Header::new_ustar();
        header.set_entry_type(EntryType::Regular);
        header.set_size(1);
        header.set_mode(0o644);
        header.set_path("f").unwrap();
        header.set_cksum();
        builder.append(&header, &b"x"[..]).unwrap();
        builder.into_inner().unwrap()
    }

    #[test]
    fn restore_policy_reads_pax_records_only_where_both_parsers_agree() {
        let accepted = pax_then_file(&[("path", b"./pax-name"), ("mtime", b"1.5")], None);
        let files = digest_tar(&accepted[..], EntryPolicy::RefuseEscapes).unwrap();
        assert!(
            files.contains_key(&FileName::from("./pax-name")),
            "{files:?}"
        );
        let before_1970 = pax_then_file(&[("mtime", b"-86400"), ("uid", b"4294967295")], None);
        assert!(digest_tar(&before_1970[..], EntryPolicy::RefuseEscapes).is_ok());
        // tar-rs applies a pax uid to the header, whose own check refuses it first.
        let too_big = pax_then_file(&[("uid", b"4294967296")], None);
        assert!(digest_tar(&too_big[..], EntryPolicy::RefuseEscapes).is_err());
        let cases = [
            (
                pax_then_file(&[("SCHILY.xattr.security.capability", b"x")], None),
                "pax record `SCHILY.xattr",
            ),
            (
                pax_then_file(&[("GNU.sparse.map", b"0,1")], None),
                "pax record `GNU.sparse.map`",
            ),
            (
                pax_then_file(&[("mtime", b"1"), ("mtime", b"2")], None),
                "pax record `mtime` twice",
            ),
            (pax_then_file(&[("uid", b"-1")], None), "pax number"),
            (
                pax_then_file(&[("mtime", b"empt286361.841720828")], None),
                "pax time",
            ),
            (pax_then_file(&[("mtime", b"1.")], None), "pax time"),
            (
                pax_then_file(&[("mtime", b"99999999999999999999")], None),
                "pax time",
            ),
            (
                pax_then_file(&[("path", b"./pax")], Some(b"./long")),
                "disagree",
            ),
        ];
        for (bytes, reason) in &cases {
            assert!(
                refusal(bytes).contains(reason),
                "{reason}: {}",
                refusal(bytes)
            );
        }
        // A ustar name prefix: GNU tar reads it whatever the version field says.
        let mut bytes = one_entry(b"./f", EntryType::Regular, "", 0o644, b"");
        let header = &mut bytes[512..1024];
        header[257..265].copy_from_slice(b"ustar\0xx");
        header[345..348].copy_from_slice(b"pre");
        header[148..156].fill(b' ');
        let sum: u32 = header.iter().map(|&b| u32::from(b)).sum();
        header[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        assert!(
            refusal(&bytes).contains("name prefix"),
            "{}",
            refusal(&bytes)
        );
    }

    #[test]
    fn names_that_are_not_utf8_are_two_files_with_two_digests() {
        let mut builder = tar::Builder::new(Vec::new());
        append_mode(
            &mut builder,
            b"./a\xff",
            EntryType::Regular,
            "",
            0o644,
            b"one",
        );
        append_mode(
            &mut builder,
            b"./a\xfe",
            EntryType::Regular,
            "",
            0o644,
            b"two",
        );
        let bytes = builder.into_inner().unwrap();
        for policy in [EntryPolicy::Trust, EntryPolicy::RefuseEscapes] {
            let sums = digest_tar(&bytes[..], policy).unwrap();
            assert_eq!(sums.len(), 2, "{sums:?}");
            assert_eq!(sums[b"./a\xff".as_slice()], sha(b"one"));
            assert_eq!(sums[b"./a\xfe".as_slice()], sha(b"two"));
        }
    }

    #[test]
    fn the_checked_view_lists_every_entry_as_extracted() {
        let mut builder = tar::Builder::new(Vec::new());
        append_mode(&mut builder, b"./", EntryType::Directory, "", 0o750, b"");
        append_mode(&mut builder, b"./f", EntryType::Regular, "", 0o640, b"data");
        append_mode(&mut builder, b"./h", EntryType::Link, "./f", 0o640, b"");
        append_mode(&mut builder, b"./s", EntryType::Symlink, "f", 0o777, b"");
        let view = check_tar_entries(&builder.into_inner().unwrap()[..]).unwrap();
        let kinds: Vec<_> = view
            .iter()
            .map(|e| (e.name.clone(), e.mode, e.kind.clone()))
            .collect();
        assert_eq!(
            kinds,
            vec![
                (b"./".to_vec(), 0o750, CheckedKind::Directory),
                (
                    b"./f".to_vec(),
                    0o640,
                    CheckedKind::File(FileDigest {
                        size: 4,
                        sha256: sha(b"data").into()
                    })
                ),
                (
                    b"./h".to_vec(),
                    0o640,
                    CheckedKind::HardLink(b"./f".to_vec())
                ),
                (b"./s".to_vec(), 0o777, CheckedKind::Symlink(b"f".to_vec())),
            ]
        );
    }
}
