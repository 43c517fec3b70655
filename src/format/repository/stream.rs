//! A streaming job's artifact (its `backup` script's stdout, [`crate::format::stream`]) as
//! rustic_core's [`ReadSource`]: one file, [`STREAM_NAME`], at the snapshot's root, the way
//! `restic backup --stdin --stdin-filename cairn-stream` stores a stream, so `restic dump
//! SNAPSHOT /cairn-stream` gives the job's bytes back.
//!
//! Why not rustic's own `StdinSource`: it reads this process's stdin; the stream arrives over
//! SSH through the same bounded [`super::source::pipe`] as a tar does, and is chunked as it
//! comes (nothing is spooled: unlike a tar member, the one file's content needs no read-ahead,
//! since there is no next entry to fetch before it).
//!
//! The stream's size is not known until it ends, and rustic's archiver does not write the
//! bytes it chunked back into the node (its own `backup -` leaves size 0 too), so the node
//! says size 0; `restic dump` and rustic's `dump` do not use it. The size and sha256 are Cairn's
//! record's (`cairn.json`, as a store's manifest records a stream), which a restore checks.
//! As with the demux, rustic only logs a read error and leaves the file out: the reader keeps
//! its error and counts the bytes it gave ([`super::source::Demux::outcome`]).

use std::io::{self, Read};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use cairn_repository::rustic_core::jiff::Timestamp;
use cairn_repository::rustic_core::repofile::{Metadata, Node, NodeType};
use cairn_repository::rustic_core::{ReadSource, ReadSourceEntry, RusticResult};

use super::mode;
use super::source::{Demux, PipeReader, Shared};

/// The one file of a streamed artifact's snapshot: [`crate::format::stream::STREAM_FILE`]
/// without its `./`, so the tar a restore rebuilds names it as `metadata` does.
pub const STREAM_NAME: &str = "cairn-stream";

/// The stream as a source of one file.
#[derive(Debug)]
pub struct StreamSource {
    entry: Mutex<Option<ReadSourceEntry<StreamReader>>>,
}

/// The stream's bytes, counted as rustic reads them.
#[derive(Debug)]
pub struct StreamReader {
    pipe: PipeReader,
    shared: Arc<Shared>,
}

impl Read for StreamReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.pipe.read(buf) {
            Ok(count) => {
                self.shared.count(0, count as u64);
                Ok(count)
            }
            Err(error) => {
                self.shared
                    .fail(format!("the streamed artifact was cut short: {error}"));
                Err(error)
            }
        }
    }
}

impl StreamSource {
    /// The source of the stream `pipe` delivers, its file's mtime `mtime` (the backup's start)
    /// and mode 0600 (a stream's one file in a bbr directory's tar has the same mode); returns
    /// its accounting too.
    #[must_use]
    pub fn start(pipe: PipeReader, mtime: Option<Timestamp>) -> (StreamSource, Demux) {
        let shared = Arc::new(Shared::default());
        shared.count(1, 0);
        let meta = Metadata {
            mode: Some(mode::to_go(0o600 | mode::S_IFREG)),
            mtime,
            atime: mtime,
            uid: Some(0),
            gid: Some(0),
            ..Metadata::default()
        };
        let entry = ReadSourceEntry {
            path: PathBuf::from(STREAM_NAME),
            node: Node::new_node(std::ffi::OsStr::new(STREAM_NAME), NodeType::File, meta),
            open: Some(StreamReader {
                pipe,
                shared: Arc::clone(&shared),
            }),
        };
        (
            StreamSource {
                entry: Mutex::new(Some(entry)),
            },
            Demux::of(shared),
        )
    }
}

impl ReadSource for StreamSource {
    type Open = StreamReader;
    type Iter = std::option::IntoIter<RusticResult<ReadSourceEntry<StreamReader>>>;

    fn size(&self) -> RusticResult<Option<u64>> {
        Ok(None)
    }

    fn entries(&self) -> Self::Iter {
        self.entry
            .lock()
            .expect("stream source")
            .take()
            .map(Ok)
            .into_iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn the_one_entry_reads_the_stream_and_counts_it() {
        let (mut writer, reader) = super::super::source::pipe();
        let (source, demux) = StreamSource::start(reader, None);
        let feeding = std::thread::spawn(move || {
            writer.write_all(&vec![5; 70_000]).unwrap();
            writer.close();
        });
        let mut entries = source.entries();
        let entry = entries.next().unwrap().unwrap();
        assert_eq!(entry.path, PathBuf::from(STREAM_NAME));
        assert!(entries.next().is_none());
        assert!(source.entries().next().is_none(), "taken once");
        let mut data = Vec::new();
        entry.open.unwrap().read_to_end(&mut data).unwrap();
        feeding.join().unwrap();
        assert_eq!(data, vec![5; 70_000]);
        let fed = demux.outcome().unwrap();
        assert_eq!((fed.files, fed.file_bytes), (1, 70_000));
    }

    #[test]
    fn a_stream_cut_short_is_the_sources_error() {
        let (mut writer, reader) = super::super::source::pipe();
        let (source, demux) = StreamSource::start(reader, None);
        writer.write_all(b"half").unwrap();
        drop(writer);
        let entry = source.entries().next().unwrap().unwrap();
        assert!(entry.open.unwrap().read_to_end(&mut Vec::new()).is_err());
        let error = demux.outcome().unwrap_err();
        assert!(
            error.contains("the streamed artifact was cut short"),
            "{error}"
        );
    }
}
