//! Streamed artifacts (scripts-contract/CONTRACT.md, "Streaming"): a job that opts in writes
//! its artifact to stdout instead of into `BBR_ARTIFACT_DIRECTORY`, so nothing is staged on
//! the VM. Everywhere else such an artifact is a tar holding one file, [`STREAM_FILE`]: bbr's
//! `metadata` lists that file's sha256, a bbr directory stores the one-file tar (so bbr can
//! restore it), and a store keeps the stream itself, which [`OneFileTar`] presents as that tar
//! again when it is read. So every reader, check and classic restore works unchanged, and a
//! streaming restore takes the file's contents back out with [`TarBodyWriter`].

use std::io::{self, Read, Write};

use crate::format::digest::Checksums;

/// The one file of a streamed artifact's tar, as `metadata` names it (`./` as bbr's tars).
pub const STREAM_FILE: &str = "./cairn-stream";

/// A tar block.
const BLOCK: usize = 512;
/// The end-of-archive marker: two zero blocks.
const TRAILER: [u8; 2 * BLOCK] = [0; 2 * BLOCK];

/// True when an artifact's files are exactly one streamed file.
#[must_use]
pub fn is_stream(files: &Checksums) -> bool {
    files.len() == 1 && files.contains_key(STREAM_FILE.as_bytes())
}

/// The tar header of a stream of `size` bytes (GNU format: sizes beyond 8 GiB are written in
/// base 256, which GNU tar and Go's `archive/tar`, bbr's reader, both read).
#[must_use]
pub fn header(size: u64) -> [u8; BLOCK] {
    let mut header = tar::Header::new_gnu();
    // Written as is: `set_path` would drop the `./` that bbr's tars (and `metadata`) have.
    header.as_mut_bytes()[..STREAM_FILE.len()].copy_from_slice(STREAM_FILE.as_bytes());
    header.set_entry_type(tar::EntryType::Regular);
    header.set_size(size);
    header.set_mode(0o600);
    header.set_mtime(0);
    header.set_cksum();
    let mut block = [0; BLOCK];
    block.copy_from_slice(header.as_bytes());
    block
}

/// The zeros that end a stream of `size` bytes and its tar: padding to the next block, then
/// the end-of-archive marker.
#[must_use]
pub fn tail(size: u64) -> Vec<u8> {
    let padding = (BLOCK - (size % BLOCK as u64) as usize) % BLOCK;
    let mut tail = vec![0; padding];
    tail.extend_from_slice(&TRAILER);
    tail
}

/// A stream of known size read as its one-file tar: the header, the stream, the tail. A
/// stream shorter or longer than `size` is an error at its end.
#[derive(Debug)]
pub struct OneFileTar<R> {
    stream: R,
    size: u64,
    read: u64,
    before: io::Cursor<Vec<u8>>,
    after: Option<io::Cursor<Vec<u8>>>,
}

impl<R: Read> OneFileTar<R> {
    /// The tar of `stream`, which must hold exactly `size` bytes.
    pub fn new(stream: R, size: u64) -> Self {
        Self {
            stream,
            size,
            read: 0,
            before: io::Cursor::new(header(size).to_vec()),
            after: None,
        }
    }
}

impl<R: Read> Read for OneFileTar<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let count = self.before.read(buf)?;
        if count > 0 {
            return Ok(count);
        }
        if let Some(after) = &mut self.after {
            return after.read(buf);
        }
        let count = self.stream.read(buf)?;
        self.read += count as u64;
        if self.read > self.size {
            return Err(io::Error::other(format!(
                "the stream is longer than the {} bytes recorded",
                self.size
            )));
        }
        if count > 0 {
            return Ok(count);
        }
        if self.read < self.size {
            return Err(io::Error::other(format!(
                "the stream has {} bytes, {} were recorded",
                self.read, self.size
            )));
        }
        let mut after = io::Cursor::new(tail(self.size));
        let count = after.read(buf)?;
        self.after = Some(after);
        Ok(count)
    }
}

/// Takes a one-file tar and passes only the contents of its file on (the header, padding
/// and end-of-archive blocks are dropped): what a streaming `restore` reads on stdin.
#[derive(Debug)]
pub struct TarBodyWriter<W> {
    inner: W,
    header: Vec<u8>,
    /// Bytes of the file still to pass on, once the header was read.
    remaining: Option<u64>,
}

impl<W: Write> TarBodyWriter<W> {
    /// Passes the file's contents to `inner`.
    pub fn new(inner: W) -> Self {
        Self {
            inner,
            header: Vec::with_capacity(BLOCK),
            remaining: None,
        }
    }

    /// The inner writer.
    pub fn into_inner(self) -> W {
        self.inner
    }

    fn read_header(&mut self) -> io::Result<u64> {
        let header = tar::Header::from_byte_slice(&self.header);
        let path = header.path_bytes();
        let name = String::from_utf8_lossy(&path);
        if name != STREAM_FILE && format!("./{name}") != STREAM_FILE {
            return Err(io::Error::other(format!(
                "a streamed artifact holds `{name}`, not {STREAM_FILE}"
            )));
        }
        header.entry_size()
    }
}

impl<W: Write> Write for TarBodyWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let Some(remaining) = self.remaining else {
            let count = buf.len().min(BLOCK - self.header.len());
            self.header.extend_from_slice(&buf[..count]);
            if self.header.len() == BLOCK {
                self.remaining = Some(self.read_header()?);
            }
            return Ok(count);
        };
        if remaining == 0 {
            // Padding and the end-of-archive blocks.
            return Ok(buf.len());
        }
        let take = usize::try_from(remaining)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        let written = self.inner.write(&buf[..take])?;
        self.remaining = Some(remaining - written as u64);
        Ok(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::digest::{digest_tar, EntryPolicy};

    fn sha256(data: &[u8]) -> String {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(data))
    }

    #[test]
    fn a_stream_reads_as_a_one_file_tar_that_tar_and_the_digest_accept() {
        for size in [0_usize, 1, 511, 512, 513, 70_000] {
            let stream: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
            let mut tar = Vec::new();
            OneFileTar::new(&stream[..], size as u64)
                .read_to_end(&mut tar)
                .unwrap();
            assert_eq!(tar.len() % BLOCK, 0);
            let sums = digest_tar(&tar[..], EntryPolicy::RefuseEscapes).unwrap();
            assert!(is_stream(&sums), "{sums:?}");
            assert_eq!(sums[STREAM_FILE.as_bytes()], sha256(&stream));
            let mut body = TarBodyWriter::new(Vec::new());
            body.write_all(&tar).unwrap();
            assert_eq!(body.into_inner(), stream, "size {size}");
        }
    }

    #[test]
    fn a_stream_of_another_size_than_recorded_is_an_error() {
        let mut tar = Vec::new();
        let short = OneFileTar::new(&b"abc"[..], 4).read_to_end(&mut tar);
        assert!(short.unwrap_err().to_string().contains("3 bytes, 4"));
        let long = OneFileTar::new(&b"abcde"[..], 4).read_to_end(&mut Vec::new());
        assert!(long.is_err());
    }

    #[test]
    fn a_tar_of_another_file_is_not_taken_for_a_stream() {
        let mut builder = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_size(1);
        header.set_cksum();
        builder
            .append_data(&mut header, "./other", &b"x"[..])
            .unwrap();
        let tar = builder.into_inner().unwrap();
        let mut body = TarBodyWriter::new(Vec::new());
        assert!(body.write_all(&tar).is_err());
    }
}
