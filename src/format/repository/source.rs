//! A tar stream as rustic_core's [`ReadSource`]: the demux that lets a job's artifact, as it
//! arrives over SSH, be archived into a repository without touching the instance again.
//!
//! Why a thread and a buffer per file: rustic's `TreeIterator` takes entry *i + 1* from the
//! source before it hands entry *i* on (rustic_core 0.13 `src/archiver/tree.rs:117-118`), and
//! in a tar stream entry *i + 1*'s header comes only after file *i*'s content. So a file's
//! content must be read out of the stream before its entry is archived: the demux thread reads
//! each member whole into a [`Content`] (memory up to [`IN_MEMORY_LIMIT`], above that an
//! unnamed temporary file, `O_TMPFILE`, gone when closed) and passes it on through a channel
//! of one. What is held at once is bounded by the entries rustic has in flight (about twice
//! its threads), not by the artifact's size. The design's per-file slots (docs/design/
//! repository.md §5) would need the entry before its content; this is the spool it rejected,
//! bounded to the files in flight instead of the whole artifact.
//!
//! The archiver swallows entry and read errors (it logs them and leaves the file out, rustic
//! `src/archiver.rs:156,200`), so the demux counts the regular files it fed and keeps its own
//! error: the caller compares both with the snapshot's summary ([`Demux::outcome`]).

use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Cursor, Read, Seek, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use cairn_repository::rustic_core::jiff::Timestamp;
use cairn_repository::rustic_core::repofile::{Metadata, Node, NodeType};
use cairn_repository::rustic_core::{
    ErrorKind, ReadSource, ReadSourceEntry, RusticError, RusticResult,
};

use super::mode;
use crate::format::listing::{ArtifactListing, ListedEntry, ListedKind};

/// A file up to this size is held in memory until archived; a bigger one in a temporary file.
pub const IN_MEMORY_LIMIT: u64 = 8 << 20;

/// Chunks of the tar stream in flight between the writer and the demux.
const CHUNKS_IN_FLIGHT: usize = 16;

/// The writing end of the pipe into the demux (an [`crate::format::sink::ArtifactWriter`]'s).
#[derive(Debug)]
pub struct PipeWriter {
    sender: Option<SyncSender<Bytes>>,
}

impl PipeWriter {
    /// Ends the stream: the demux sees a clean end (a writer dropped without it is a stream
    /// cut short).
    pub fn close(&mut self) {
        if let Some(sender) = self.sender.take() {
            // The empty chunk is the end marker; a gone demux has its own error.
            let _ = sender.send(Bytes::new());
        }
    }
}

impl Write for PipeWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let sender = self
            .sender
            .as_ref()
            .ok_or_else(|| io::Error::other("the repository stream was already closed"))?;
        sender.send(Bytes::copy_from_slice(buf)).map_err(|_| {
            io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the repository archiver stopped reading",
            )
        })?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The reading end of the pipe: a stream that ends only at the end marker.
#[derive(Debug)]
pub struct PipeReader {
    receiver: Receiver<Bytes>,
    current: Bytes,
    ended: bool,
}

impl Read for PipeReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            if self.ended {
                return Ok(0);
            }
            match self.receiver.recv() {
                Ok(chunk) if chunk.is_empty() => self.ended = true,
                Ok(chunk) => self.current = chunk,
                Err(_) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the artifact stream was cut short",
                    ));
                }
            }
        }
        let count = buf.len().min(self.current.len());
        buf[..count].copy_from_slice(&self.current.split_to(count));
        Ok(count)
    }
}

/// A byte pipe between two threads, bounded to [`CHUNKS_IN_FLIGHT`] chunks.
#[must_use]
pub fn pipe() -> (PipeWriter, PipeReader) {
    let (sender, receiver) = sync_channel(CHUNKS_IN_FLIGHT);
    (
        PipeWriter {
            sender: Some(sender),
        },
        PipeReader {
            receiver,
            current: Bytes::new(),
            ended: false,
        },
    )
}

/// One file's content, read out of the stream.
#[derive(Debug)]
pub enum Content {
    /// Up to [`IN_MEMORY_LIMIT`] bytes.
    Memory(Cursor<Vec<u8>>),
    /// A bigger file, in an unnamed temporary file.
    Spooled(File),
    /// A file not sent (unchanged since the parent snapshot, listed artifacts): reading it
    /// is the demux's error, since rustic was to take its content from the parent.
    Unsent(PathBuf, Arc<Shared>),
}

impl Read for Content {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Content::Memory(cursor) => cursor.read(buf),
            Content::Spooled(file) => file.read(buf),
            Content::Unsent(path, shared) => {
                let text = format!(
                    "file `{}` was not sent (its size and mtime match the parent snapshot) but the archiver read it again (its data is not in the repository's index); back up with --full-read",
                    path.display()
                );
                shared
                    .error
                    .lock()
                    .expect("demux error")
                    .get_or_insert_with(|| text.clone());
                Err(io::Error::other(text))
            }
        }
    }
}

/// What the demux saw, for the caller's own accounting.
#[derive(Debug, Default)]
pub struct Shared {
    files: AtomicU64,
    file_bytes: AtomicU64,
    error: Mutex<Option<String>>,
}

impl Shared {
    /// Counts one regular file of `bytes` fed to rustic (a source other than the demux:
    /// [`super::stream`]); `bytes` may come as the file is read.
    pub(super) fn count(&self, files: u64, bytes: u64) {
        self.files.fetch_add(files, Ordering::SeqCst);
        self.file_bytes.fetch_add(bytes, Ordering::SeqCst);
    }

    /// Keeps the first error of the source (rustic only logs it and leaves the file out).
    pub(super) fn fail(&self, text: String) {
        self.error.lock().expect("demux error").get_or_insert(text);
    }
}

/// The demux: a [`ReadSource`] whose entries are a tar stream's members.
#[derive(Debug)]
pub struct TarSource {
    entries: Mutex<Option<Receiver<Entry>>>,
}

type Entry = RusticResult<ReadSourceEntry<Content>>;

/// Counts and the error of a finished demux.
#[derive(Debug, Clone)]
pub struct Demux {
    shared: Arc<Shared>,
}

/// What the demux fed rustic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fed {
    /// Regular files.
    pub files: u64,
    /// Their bytes.
    pub file_bytes: u64,
}

impl Demux {
    /// The accounting `shared` keeps (a source other than the demux: [`super::stream`]).
    pub(super) fn of(shared: Arc<Shared>) -> Demux {
        Demux { shared }
    }

    /// The files fed, or the demux's own error (a bad or cut-short stream, an entry type a
    /// repository does not keep).
    ///
    /// # Errors
    /// The error's text.
    pub fn outcome(&self) -> Result<Fed, String> {
        if let Some(error) = self.shared.error.lock().expect("demux error").clone() {
            return Err(error);
        }
        Ok(Fed {
            files: self.shared.files.load(Ordering::SeqCst),
            file_bytes: self.shared.file_bytes.load(Ordering::SeqCst),
        })
    }
}

impl TarSource {
    /// Starts the demux thread reading `tar`; returns the source and its accounting.
    ///
    /// # Errors
    /// The thread cannot be started.
    pub fn start(tar: impl Read + Send + 'static) -> io::Result<(TarSource, Demux)> {
        Self::start_with(move |sender, shared| demux(tar, sender, shared))
    }

    /// Starts the demux of a listed artifact: every entry of `listing` is yielded in its
    /// order, its node from the listing; the regular files marked in `sent` have their
    /// content read from `tar` (the tar of those files alone, in the same order), the others
    /// are left to rustic's parent snapshot ([`Content::Unsent`]).
    ///
    /// # Errors
    /// The thread cannot be started.
    pub fn start_listed(
        tar: impl Read + Send + 'static,
        listing: Arc<ArtifactListing>,
        sent: Vec<bool>,
    ) -> io::Result<(TarSource, Demux)> {
        Self::start_with(move |sender, shared| demux_listed(tar, &listing, &sent, sender, shared))
    }

    fn start_with(
        work: impl FnOnce(&SyncSender<Entry>, &Arc<Shared>) -> io::Result<()> + Send + 'static,
    ) -> io::Result<(TarSource, Demux)> {
        let shared = Arc::new(Shared::default());
        let (sender, receiver) = sync_channel(1);
        let thread_shared = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("cairn-repo-demux".into())
            .spawn(move || {
                if let Err(error) = work(&sender, &thread_shared) {
                    let text = error.to_string();
                    *thread_shared.error.lock().expect("demux error") = Some(text.clone());
                    let _ = sender.send(Err(RusticError::new(
                        ErrorKind::InputOutput,
                        "the artifact's tar stream: {detail}",
                    )
                    .attach_context("detail", text)));
                }
            })?;
        Ok((
            TarSource {
                entries: Mutex::new(Some(receiver)),
            },
            Demux { shared },
        ))
    }
}

/// The entries, as the demux thread passes them on.
#[derive(Debug)]
pub struct Entries {
    receiver: Option<Receiver<Entry>>,
}

impl Iterator for Entries {
    type Item = Entry;

    fn next(&mut self) -> Option<Entry> {
        self.receiver.as_ref()?.recv().ok()
    }
}

impl ReadSource for TarSource {
    type Open = Content;
    type Iter = Entries;

    fn size(&self) -> RusticResult<Option<u64>> {
        Ok(None)
    }

    fn entries(&self) -> Entries {
        Entries {
            receiver: self.entries.lock().expect("tar source").take(),
        }
    }
}

/// Reads the tar, sending one entry per member (the root `./` left out: it is the
/// snapshot's root).
fn demux(tar: impl Read, sender: &SyncSender<Entry>, shared: &Shared) -> io::Result<()> {
    let mut archive = tar::Archive::new(tar);
    for member in archive.entries()? {
        let mut member = member?;
        let raw = member.path_bytes().into_owned();
        let path = relative(&raw);
        if path.as_os_str().is_empty() {
            continue;
        }
        let meta = metadata(&mut member)?;
        let name = path.file_name().unwrap_or(OsStr::new("")).to_owned();
        let entry_type = member.header().entry_type();
        let (node_type, open) = match entry_type {
            tar::EntryType::Directory => (NodeType::Dir, None),
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let content = read_content(&mut member, meta.size)?;
                shared.files.fetch_add(1, Ordering::SeqCst);
                shared.file_bytes.fetch_add(meta.size, Ordering::SeqCst);
                (NodeType::File, Some(content))
            }
            tar::EntryType::Symlink => {
                let target = member.link_name_bytes().unwrap_or_default().into_owned();
                (
                    NodeType::from_link(Path::new(OsStr::from_bytes(&target))),
                    None,
                )
            }
            other => {
                return Err(io::Error::other(format!(
                    "member `{}` is a {other:?} entry, which a repository does not keep (only files, directories and symbolic links; hard links are sent as copies)",
                    String::from_utf8_lossy(&raw)
                )));
            }
        };
        let node = Node::new_node(&name, node_type, meta);
        let entry = ReadSourceEntry { path, node, open };
        if sender.send(Ok(entry)).is_err() {
            // rustic stopped reading (its own error ends the archive).
            return Err(io::Error::other("the archiver stopped taking entries"));
        }
    }
    // GNU tar pads the archive after its end marker (to its 10 KiB records): read it all, so
    // the writer never meets a closed pipe.
    let mut rest = archive.into_inner();
    io::copy(&mut rest, &mut io::sink())?;
    Ok(())
}

/// Yields the listing's entries, reading the sent files' content from `tar` (see
/// [`TarSource::start_listed`]). A member that is not the next sent file of the listing, by
/// name, type and size, fails the artifact: the staging tree changed during the drain.
fn demux_listed(
    tar: impl Read,
    listing: &ArtifactListing,
    sent: &[bool],
    sender: &SyncSender<Entry>,
    shared: &Arc<Shared>,
) -> io::Result<()> {
    let mut archive = tar::Archive::new(tar);
    let mut members = archive.entries()?;
    for (index, listed) in listing.entries.iter().enumerate() {
        let path = PathBuf::from(OsStr::from_bytes(&listed.path));
        let (node_type, open) = match listed.kind {
            ListedKind::Directory => (NodeType::Dir, None),
            ListedKind::Symlink => (
                NodeType::from_link(Path::new(OsStr::from_bytes(&listed.link))),
                None,
            ),
            ListedKind::File => {
                shared.files.fetch_add(1, Ordering::SeqCst);
                shared.file_bytes.fetch_add(listed.size, Ordering::SeqCst);
                let content = if sent.get(index).copied().unwrap_or(false) {
                    let mut member = members.next().ok_or_else(|| {
                        io::Error::other(format!(
                            "the tar of the changed files ended before `{}`",
                            path.display()
                        ))
                    })??;
                    check_member(&member, listed)?;
                    read_content(&mut member, listed.size)?
                } else {
                    Content::Unsent(path.clone(), Arc::clone(shared))
                };
                (NodeType::File, Some(content))
            }
        };
        let name = path.file_name().unwrap_or(OsStr::new("")).to_owned();
        let node = Node::new_node(&name, node_type, listed_metadata(listed));
        if sender
            .send(Ok(ReadSourceEntry { path, node, open }))
            .is_err()
        {
            return Err(io::Error::other("the archiver stopped taking entries"));
        }
    }
    if let Some(extra) = members.next() {
        let extra = extra?;
        return Err(io::Error::other(format!(
            "the tar of the changed files has a member `{}` that was not asked for",
            String::from_utf8_lossy(&extra.path_bytes())
        )));
    }
    let mut rest = archive.into_inner();
    io::copy(&mut rest, &mut io::sink())?;
    Ok(())
}

/// A sent member must be the listed file: same name, a regular file, same size.
fn check_member<R: Read>(member: &tar::Entry<'_, R>, listed: &ListedEntry) -> io::Result<()> {
    let name = member.path_bytes();
    let regular = matches!(
        member.header().entry_type(),
        tar::EntryType::Regular | tar::EntryType::Continuous
    );
    if relative(&name).as_os_str().as_bytes() == listed.path.as_slice()
        && regular
        && member.size() == listed.size
    {
        return Ok(());
    }
    Err(io::Error::other(format!(
        "the staged file `{}` changed while it was sent (listed as a file of {} bytes, sent as `{}` of {} bytes); run the backup again",
        String::from_utf8_lossy(&listed.path),
        listed.size,
        String::from_utf8_lossy(&name),
        member.size()
    )))
}

/// A listed entry's metadata as a node's, the same as [`metadata`] makes from a tar member
/// (so a snapshot of either kind is the other's parent): Go's mode, owners, mtime with
/// nanoseconds and `atime = mtime`, size 0 for directories and links, no inode or ctime.
#[must_use]
pub fn listed_metadata(listed: &ListedEntry) -> Metadata {
    let kind = match listed.kind {
        ListedKind::Directory => mode::S_IFDIR,
        ListedKind::Symlink => mode::S_IFLNK,
        ListedKind::File => mode::S_IFREG,
    };
    let mtime = listed_mtime(listed);
    Metadata {
        mode: Some(mode::to_go(listed.mode | kind)),
        mtime,
        atime: mtime,
        uid: Some(listed.uid),
        gid: Some(listed.gid),
        user: Some(listed.user.clone()),
        group: Some(listed.group.clone()),
        size: if listed.kind == ListedKind::File {
            listed.size
        } else {
            0
        },
        ..Metadata::default()
    }
}

/// A listed entry's mtime as a node's.
#[must_use]
pub fn listed_mtime(listed: &ListedEntry) -> Option<Timestamp> {
    Timestamp::new(
        listed.mtime_seconds,
        i32::try_from(listed.mtime_nanos).unwrap_or(0),
    )
    .ok()
}

/// A member's name without `./` and trailing `/`.
fn relative(raw: &[u8]) -> PathBuf {
    let mut name = raw;
    while let Some(rest) = name.strip_prefix(b"./") {
        name = rest;
    }
    if name == b"." {
        name = b"";
    }
    while let Some(rest) = name.strip_suffix(b"/") {
        name = rest;
    }
    PathBuf::from(OsStr::from_bytes(name))
}

/// A member's metadata as a node's: Go's mode, owners, times with nanoseconds from pax
/// (`atime = mtime`, restic restores atimes); no inode or ctime (so nothing is matched by them).
fn metadata<R: Read>(member: &mut tar::Entry<'_, R>) -> io::Result<Metadata> {
    let header = member.header();
    let unix_mode = header.mode()?;
    let kind = match header.entry_type() {
        tar::EntryType::Directory => mode::S_IFDIR,
        tar::EntryType::Symlink => mode::S_IFLNK,
        _ => mode::S_IFREG,
    };
    let mut seconds = header
        .mtime()
        .ok()
        .and_then(|t| i64::try_from(t).ok())
        .unwrap_or(0);
    let mut nanos = 0;
    let uid = header.uid().ok().and_then(|id| u32::try_from(id).ok());
    let gid = header.gid().ok().and_then(|id| u32::try_from(id).ok());
    let user = header.username().ok().flatten().map(str::to_string);
    let group = header.groupname().ok().flatten().map(str::to_string);
    let size = member.size();
    if let Some(extensions) = member.pax_extensions()? {
        for extension in extensions {
            let extension = extension?;
            if extension.key_bytes() == b"mtime" {
                if let Some((s, n)) = pax_time(extension.value_bytes()) {
                    (seconds, nanos) = (s, n);
                }
            }
        }
    }
    let mtime = Timestamp::new(seconds, nanos).ok();
    Ok(Metadata {
        mode: Some(mode::to_go(unix_mode | kind)),
        mtime,
        atime: mtime,
        uid,
        gid,
        user,
        group,
        size,
        ..Metadata::default()
    })
}

/// A pax time (`1700000000.123456789`) as seconds and nanoseconds.
fn pax_time(value: &[u8]) -> Option<(i64, i32)> {
    let text = std::str::from_utf8(value).ok()?;
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    let seconds = whole.parse().ok()?;
    let digits: String = fraction.chars().take(9).collect();
    let nanos = if digits.is_empty() {
        0
    } else {
        format!("{digits:0<9}").parse().ok()?
    };
    Some((seconds, nanos))
}

/// Reads one member's content whole, in memory or spooled.
fn read_content(member: &mut impl Read, size: u64) -> io::Result<Content> {
    if size <= IN_MEMORY_LIMIT {
        let mut data = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
        member.read_to_end(&mut data)?;
        check_size(data.len() as u64, size)?;
        return Ok(Content::Memory(Cursor::new(data)));
    }
    let mut file = spool_file()?;
    let copied = io::copy(member, &mut file)?;
    check_size(copied, size)?;
    file.rewind()?;
    Ok(Content::Spooled(file))
}

fn check_size(read: u64, size: u64) -> io::Result<()> {
    if read == size {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("a member's content ended after {read} of its {size} bytes"),
        ))
    }
}

/// An unnamed temporary file (`O_TMPFILE` in the temp directory, 0600, gone when closed).
fn spool_file() -> io::Result<File> {
    use rustix::fs::{Mode, OFlags};
    let directory = std::env::temp_dir();
    let fd = rustix::fs::open(
        &directory,
        OFlags::TMPFILE | OFlags::RDWR | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    )
    .map_err(|e| {
        io::Error::other(format!(
            "cannot make a temporary file in {} for a file of the artifact: {e}",
            directory.display()
        ))
    })?;
    Ok(File::from(fd))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_lose_dot_slash_and_the_root_is_empty() {
        assert_eq!(relative(b"./a/b"), PathBuf::from("a/b"));
        assert_eq!(relative(b"./sub/"), PathBuf::from("sub"));
        assert_eq!(relative(b"./"), PathBuf::new());
        assert_eq!(relative(b"."), PathBuf::new());
    }

    #[test]
    fn pax_times_keep_nanoseconds() {
        assert_eq!(
            pax_time(b"1700000000.5"),
            Some((1_700_000_000, 500_000_000))
        );
        assert_eq!(pax_time(b"1700000000"), Some((1_700_000_000, 0)));
        assert_eq!(
            pax_time(b"1700000000.123456789123"),
            Some((1_700_000_000, 123_456_789))
        );
        assert_eq!(pax_time(b"soon"), None);
    }

    #[test]
    fn a_stream_without_its_end_marker_is_cut_short() {
        let (mut writer, mut reader) = pipe();
        writer.write_all(b"abc").unwrap();
        drop(writer);
        let mut read = Vec::new();
        let error = reader.read_to_end(&mut read).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::UnexpectedEof);

        let (mut writer, mut reader) = pipe();
        writer.write_all(b"abc").unwrap();
        writer.close();
        let mut read = Vec::new();
        reader.read_to_end(&mut read).unwrap();
        assert_eq!(read, b"abc");
    }

    #[test]
    fn members_become_entries_with_their_content() {
        let mut builder = tar::Builder::new(Vec::new());
        let mut dir = tar::Header::new_gnu();
        dir.set_entry_type(tar::EntryType::Directory);
        dir.set_mode(0o750);
        dir.set_size(0);
        builder
            .append_data(&mut dir, "./sub/", io::empty())
            .unwrap();
        let mut file = tar::Header::new_gnu();
        file.set_mode(0o640);
        file.set_size(5);
        file.set_mtime(1_700_000_000);
        builder
            .append_data(&mut file, "./sub/f", &b"hello"[..])
            .unwrap();
        let mut tar = builder.into_inner().unwrap();
        // Padding after the end marker, as GNU tar writes it, is read (the writer never
        // meets a closed pipe), more than the pipe holds.
        tar.extend_from_slice(&vec![0; 20 * 1024]);
        let (mut pipe_writer, pipe_reader) = pipe();
        let (source, demux) = TarSource::start(pipe_reader).unwrap();
        let writer = std::thread::spawn(move || {
            for chunk in tar.chunks(512) {
                pipe_writer.write_all(chunk)?;
            }
            pipe_writer.close();
            Ok::<_, io::Error>(())
        });
        let entries: Vec<_> = source.entries().map(Result::unwrap).collect();
        writer.join().unwrap().unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].path, PathBuf::from("sub"));
        assert!(entries[0].node.is_dir());
        assert_eq!(entries[1].path, PathBuf::from("sub/f"));
        assert_eq!(entries[1].node.meta.mode, Some(0o640));
        let mut content = Vec::new();
        let mut open = entries.into_iter().nth(1).unwrap().open.unwrap();
        open.read_to_end(&mut content).unwrap();
        assert_eq!(content, b"hello");
        assert_eq!(
            demux.outcome().unwrap(),
            Fed {
                files: 1,
                file_bytes: 5
            }
        );
    }

    fn listed(path: &str, kind: ListedKind, size: u64) -> ListedEntry {
        ListedEntry {
            path: path.as_bytes().to_vec(),
            kind,
            size,
            mtime_seconds: 1_700_000_000,
            mtime_nanos: 7,
            mode: 0o640,
            uid: 1000,
            gid: 1000,
            user: "vcap".into(),
            group: "vcap".into(),
            inode: 1,
            link: Vec::new(),
        }
    }

    fn tar_of(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (name, data) in files {
            let mut header = tar::Header::new_gnu();
            header.set_mode(0o640);
            header.set_size(data.len() as u64);
            builder.append_data(&mut header, name, *data).unwrap();
        }
        builder.into_inner().unwrap()
    }

    /// Every listed entry is yielded with its node from the listing; a sent file's content
    /// comes from the tar, a file not sent cannot be read; a member that is not the next sent
    /// file fails the demux naming it.
    #[test]
    fn a_listed_artifact_takes_only_the_sent_files_from_the_tar() {
        let listing = Arc::new(ArtifactListing {
            entries: vec![
                listed("d", ListedKind::Directory, 0),
                listed("d/kept", ListedKind::File, 4),
                listed("d/sent", ListedKind::File, 5),
            ],
        });
        let tar = tar_of(&[("./d/sent", b"fresh")]);
        let (source, demux) = TarSource::start_listed(
            Cursor::new(tar),
            Arc::clone(&listing),
            vec![false, false, true],
        )
        .unwrap();
        let entries: Vec<_> = source.entries().map(Result::unwrap).collect();
        let paths: Vec<_> = entries.iter().map(|e| e.path.clone()).collect();
        assert_eq!(paths, ["d", "d/kept", "d/sent"].map(PathBuf::from));
        assert_eq!(entries[1].node.meta.size, 4);
        assert_eq!(
            entries[1].node.meta.mtime,
            Timestamp::new(1_700_000_000, 7).ok()
        );
        let mut entries = entries.into_iter();
        let mut kept = entries.nth(1).unwrap().open.unwrap();
        let mut sent = entries.next().unwrap().open.unwrap();
        let mut content = Vec::new();
        sent.read_to_end(&mut content).unwrap();
        assert_eq!(content, b"fresh");
        assert_eq!(demux.outcome().unwrap().files, 2);
        let error = kept.read_to_end(&mut Vec::new()).unwrap_err().to_string();
        assert!(error.contains("file `d/kept` was not sent"), "{error}");
        assert!(demux.outcome().unwrap_err().contains("--full-read"));

        let changed = tar_of(&[("./d/sent", b"grown!")]);
        let (source, demux) =
            TarSource::start_listed(Cursor::new(changed), listing, vec![false, false, true])
                .unwrap();
        let _: Vec<_> = source.entries().collect();
        let error = demux.outcome().unwrap_err();
        assert!(
            error.contains("the staged file `d/sent` changed while it was sent (listed as a file of 5 bytes, sent as `d/sent` of 6 bytes)"),
            "{error}"
        );
    }

    #[test]
    fn devices_are_refused_by_name() {
        let mut builder = tar::Builder::new(Vec::new());
        let mut fifo = tar::Header::new_gnu();
        fifo.set_entry_type(tar::EntryType::Fifo);
        fifo.set_mode(0o600);
        fifo.set_size(0);
        builder
            .append_data(&mut fifo, "./pipe", io::empty())
            .unwrap();
        let tar = builder.into_inner().unwrap();
        let (source, demux) = TarSource::start(Cursor::new(tar)).unwrap();
        let entries: Vec<_> = source.entries().collect();
        assert!(entries[0].is_err());
        let error = demux.outcome().unwrap_err();
        assert!(error.contains("member `pipe` is a Fifo entry"), "{error}");
    }
}
