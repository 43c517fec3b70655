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
//! The same parser checks restore safety ([`EntryPolicy::RefuseEscapes`]): entries with absolute
//! names or `..`, links that point outside the artifact directory, and device nodes are refused
//! before anything is sent to an instance.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::io::{self, Read, Write};
use std::path::{Component, Path, PathBuf};

use sha2::{Digest, Sha256};
use tar::EntryType;

/// File name (`./relative/path`) to lowercase hex sha256.
pub type Checksums = std::collections::BTreeMap<String, String>;

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
    /// An entry would land outside the extraction directory.
    #[error("unsafe tar entry `{name}`: {reason}")]
    UnsafeEntry {
        /// The entry name.
        name: String,
        /// Why it is unsafe.
        reason: &'static str,
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
    /// Lowercase hex sha256.
    pub sha256: String,
}

/// File name to size and digest.
pub type FileDigests = std::collections::BTreeMap<String, FileDigest>;

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

fn digest_entries<R: Read>(
    reader: R,
    policy: EntryPolicy,
    gate: Option<&RefCell<Gate<'_>>>,
) -> Result<FileDigests, TarDigestError> {
    let open_gate = || gate.map_or(Ok(()), |g| g.borrow_mut().open());
    let mut archive = tar::Archive::new(reader);
    let mut checksums = FileDigests::new();
    let mut buffer = vec![0_u8; HASH_BUFFER];
    let mut symlinks = Symlinks::default();
    for entry in archive.entries()? {
        let mut entry = entry?;
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let kind = entry.header().entry_type();
        if policy == EntryPolicy::RefuseEscapes {
            let link = entry.link_name_bytes();
            check_entry(&name, kind, link.as_deref())?;
            symlinks.check(&name, kind, link.as_deref())?;
        }
        open_gate()?;
        match kind {
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                let mut hasher = Sha256::new();
                let size = hash_entry(&mut entry, &mut hasher, &mut buffer)?;
                let sha256 = hex::encode(hasher.finalize());
                checksums.insert(name, FileDigest { size, sha256 });
            }
            EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .map(|t| String::from_utf8_lossy(&t).into_owned())
                    .unwrap_or_default();
                let digest = checksums
                    .get(&target)
                    .cloned()
                    .unwrap_or_else(|| FileDigest {
                        size: 0,
                        sha256: hex::encode(Sha256::digest(b"")),
                    });
                checksums.insert(name, digest);
            }
            _ => {}
        }
        // The next entry's header (read by the iterator) is held until it is checked.
        if let Some(gate) = gate {
            gate.borrow_mut().holding = true;
        }
    }
    symlinks.finish()?;
    open_gate()?;
    io::copy(&mut archive.into_inner(), &mut io::sink())?;
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

fn check_entry(name: &str, kind: EntryType, link: Option<&[u8]>) -> Result<(), TarDigestError> {
    let unsafe_entry = |reason| TarDigestError::UnsafeEntry {
        name: name.to_string(),
        reason,
    };
    // `tar -x` reads names as C strings: with a NUL byte the entry checked here is not the one
    // extracted (`./a\0/b/link -> ../x` lands as `./a/link`, pointing outside).
    if name.contains('\0') || link.is_some_and(|link| link.contains(&0)) {
        return Err(unsafe_entry("NUL byte in the name"));
    }
    let path = Path::new(name);
    if path.is_absolute() {
        return Err(unsafe_entry("absolute path"));
    }
    if path.components().any(|c| c == Component::ParentDir) {
        return Err(unsafe_entry("contains `..`"));
    }
    match kind {
        EntryType::Char | EntryType::Block => Err(unsafe_entry("device node")),
        EntryType::Symlink | EntryType::Link => {
            let target = PathBuf::from(String::from_utf8_lossy(link.unwrap_or_default()).as_ref());
            let base = if kind == EntryType::Symlink {
                path.parent().unwrap_or(Path::new("")).to_path_buf()
            } else {
                PathBuf::new()
            };
            if target.is_absolute() || escapes(&base.join(&target)) {
                Err(unsafe_entry("link pointing outside the artifact directory"))
            } else {
                Ok(())
            }
        }
        _ => Ok(()),
    }
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
        name: &str,
        kind: EntryType,
        link: Option<&[u8]>,
    ) -> Result<(), TarDigestError> {
        let under_a_symlink = |path: &Path| {
            let path: PathBuf = path
                .components()
                .filter(|c| *c != Component::CurDir)
                .collect();
            path.ancestors().skip(1).any(|a| self.names.contains(a))
        };
        let link = PathBuf::from(String::from_utf8_lossy(link.unwrap_or_default()).as_ref());
        if under_a_symlink(Path::new(name)) || (kind == EntryType::Link && under_a_symlink(&link)) {
            return Err(TarDigestError::UnsafeEntry {
                name: name.to_string(),
                reason: "path through a symlink of the archive",
            });
        }
        if kind == EntryType::Symlink {
            let path: PathBuf = Path::new(name)
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
                            reason: "link pointing outside the artifact directory",
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
        // Builder refuses `..` in names, so write the name bytes directly.
        let mut header = tar::Header::new_gnu();
        header.set_size(0);
        header.set_entry_type(kind);
        header.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        if !link.is_empty() {
            header.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
        }
        header.set_cksum();
        builder.append(&header, io::empty()).unwrap();
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
        assert_eq!(sums["./a file"], sha(b"hello"));
        assert_eq!(sums["./sub/hard"], sha(b"hello"));
        assert_eq!(sums["./sub/empty"], sha(b""));
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
                    result,
                    Err(TarDigestError::UnsafeEntry {
                        reason: "NUL byte in the name",
                        ..
                    })
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
            "./long/".repeat(40).as_bytes(),
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
            assert_eq!(files["./hard"].sha256, sha(b"hello"));
            assert_eq!(files[&"./long/".repeat(40)].size, 70_000);
        }
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
}
