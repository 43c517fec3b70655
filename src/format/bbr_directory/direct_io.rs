//! Reading and writing a backup directory's tars around the page cache (`O_DIRECT`).
//!
//! Why: a tar of a backup is written once and read once, days later; keeping it in the page
//! cache helps nobody, and filling the cache is what a directory backup spent most of its CPU
//! on. On this project's VMs, `dd bs=1M conv=fsync` of 2 GiB took 4.5 CPU-s (2.3 per GiB,
//! `copy_folio_from_iter_atomic`: the kernel's copy into freshly allocated pages) and ran at
//! 202 MB/s; with `oflag=direct` 0.38 CPU-s at 1.1 GB/s (the device's DMA does the copy). A
//! profile of a 1 GiB directory backup had 63 % of the coordinator's CPU in that one copy
//! (docs/performance.md, "Coordinator work per byte").
//!
//! `O_DIRECT` needs buffers, offsets and lengths aligned to the device's block: the helpers
//! here copy through one aligned buffer and fall back to ordinary I/O — silently, it is only
//! slower — wherever the file system refuses (`EINVAL`: tmpfs before Linux 6.6, some network
//! file systems) or a length is not aligned (the last piece of a file).

use std::fs::File;
use std::io::{self, Read, Write};

use rustix::fs::OFlags;

/// The alignment used for buffers, offsets and lengths (covers 512-byte and 4 KiB devices).
pub(super) const ALIGNMENT: usize = 4096;

/// A buffer of `len` bytes whose start is aligned to [`ALIGNMENT`] (a `Vec` with room to
/// spare, so that no unsafe allocation is needed).
pub(super) struct AlignedBuffer {
    storage: Vec<u8>,
    offset: usize,
    len: usize,
}

impl AlignedBuffer {
    pub(super) fn new(len: usize) -> AlignedBuffer {
        let storage = vec![0_u8; len + ALIGNMENT];
        let offset = storage.as_ptr().align_offset(ALIGNMENT);
        AlignedBuffer {
            storage,
            offset,
            len,
        }
    }

    pub(super) fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.storage[self.offset..self.offset + self.len]
    }

    pub(super) fn as_slice(&self) -> &[u8] {
        &self.storage[self.offset..self.offset + self.len]
    }
}

/// Turns `O_DIRECT` on for `file`; false when the file system does not take it.
fn enable(file: &File) -> bool {
    let Ok(flags) = rustix::fs::fcntl_getfl(file) else {
        return false;
    };
    rustix::fs::fcntl_setfl(file, flags | OFlags::DIRECT).is_ok()
}

/// Turns `O_DIRECT` off again (for the unaligned rest and whatever the caller does next).
fn disable(file: &File) -> io::Result<()> {
    let flags = rustix::fs::fcntl_getfl(file)?;
    rustix::fs::fcntl_setfl(file, flags - OFlags::DIRECT)?;
    Ok(())
}

/// Writes a file from its current offset (aligned), aligned pieces around the page cache while
/// it can, the rest through it.
pub(super) struct DirectWriter {
    file: File,
    direct: bool,
    aligned: AlignedBuffer,
}

impl DirectWriter {
    /// A writer over `file`, positioned at 0, for pieces of at most `piece` bytes.
    pub(super) fn new(file: File, piece: usize) -> DirectWriter {
        let direct = enable(&file);
        DirectWriter {
            file,
            direct,
            aligned: AlignedBuffer::new(piece),
        }
    }

    /// Writes all of `piece`. Once a piece's length is not a multiple of [`ALIGNMENT`] the
    /// offset is no longer aligned, so that piece and every later one go through the page cache.
    pub(super) fn write_piece(&mut self, piece: &[u8]) -> io::Result<()> {
        if self.direct && piece.len().is_multiple_of(ALIGNMENT) && piece.len() <= self.aligned.len {
            self.aligned.as_mut_slice()[..piece.len()].copy_from_slice(piece);
            match self.file.write_all(&self.aligned.as_slice()[..piece.len()]) {
                Ok(()) => return Ok(()),
                // Refused before anything was written (the file system's answer to O_DIRECT).
                Err(error)
                    if error.raw_os_error() == Some(rustix::io::Errno::INVAL.raw_os_error()) => {}
                Err(error) => return Err(error),
            }
        }
        self.buffered()?;
        self.file.write_all(piece)
    }

    /// Whether the writes so far went around the page cache.
    #[cfg(test)]
    pub(super) fn is_direct(&self) -> bool {
        self.direct
    }

    fn buffered(&mut self) -> io::Result<()> {
        if self.direct {
            disable(&self.file)?;
            self.direct = false;
        }
        Ok(())
    }

    /// The file, with `O_DIRECT` off.
    pub(super) fn into_file(mut self) -> io::Result<File> {
        self.buffered()?;
        Ok(self.file)
    }
}

/// Reads a file from offset 0 in aligned pieces around the page cache (through it when the
/// file system refuses), for one sequential pass.
pub(super) struct DirectReader {
    file: File,
    direct: bool,
    buffer: AlignedBuffer,
    start: usize,
    end: usize,
}

impl DirectReader {
    /// A reader of `file` (at offset 0) with a buffer of `buffer` bytes (a multiple of
    /// [`ALIGNMENT`]).
    pub(super) fn new(file: File, buffer: usize) -> DirectReader {
        let direct = enable(&file);
        DirectReader {
            file,
            direct,
            buffer: AlignedBuffer::new(buffer),
            start: 0,
            end: 0,
        }
    }

    /// Refills the buffer; the number of bytes read (0 at the end).
    fn fill(&mut self) -> io::Result<usize> {
        loop {
            match self.file.read(self.buffer.as_mut_slice()) {
                Ok(count) => {
                    (self.start, self.end) = (0, count);
                    // A short read ends an O_DIRECT pass only at the end of the file; the next
                    // read (0 bytes) confirms it. An unaligned count means the end was reached.
                    return Ok(count);
                }
                Err(error)
                    if self.direct
                        && error.raw_os_error()
                            == Some(rustix::io::Errno::INVAL.raw_os_error()) =>
                {
                    disable(&self.file)?;
                    self.direct = false;
                }
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => return Err(error),
            }
        }
    }
}

impl Read for DirectReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.start == self.end && self.fill()? == 0 {
            return Ok(0);
        }
        let count = out.len().min(self.end - self.start);
        out[..count].copy_from_slice(&self.buffer.as_slice()[self.start..self.start + count]);
        self.start += count;
        Ok(count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// ext4 (this project's machines) takes O_DIRECT; tmpfs may not.
    fn on_ext4(path: &std::path::Path) -> bool {
        const EXT4_SUPER_MAGIC: u64 = 0xEF53;
        rustix::fs::statfs(path)
            .is_ok_and(|fs| u64::try_from(fs.f_type).ok() == Some(EXT4_SUPER_MAGIC))
    }

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i % 251) as u8).collect()
    }

    /// Aligned pieces, then an unaligned last one, then more: everything lands in order,
    /// whatever the file system under the temporary directory does with O_DIRECT.
    #[test]
    fn pieces_of_any_length_are_written_in_order() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("t.tar");
        let data = pattern(3 * 65536 + 700 + 8192);
        let mut writer = DirectWriter::new(File::create(&path).unwrap(), 65536);
        let pieces = [65536, 65536, 65536, 700, 8192];
        let mut at = 0;
        for len in pieces {
            writer.write_piece(&data[at..at + len]).unwrap();
            at += len;
            if at == 3 * 65536 && on_ext4(directory.path()) {
                assert!(writer.is_direct(), "ext4 takes O_DIRECT");
            }
        }
        assert!(!writer.is_direct(), "an unaligned piece ends direct writes");
        let mut file = writer.into_file().unwrap();
        file.flush().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), data);
    }

    #[test]
    fn a_file_is_read_whole_in_small_and_large_reads() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("t.tar");
        let data = pattern(5 * ALIGNMENT + 123);
        std::fs::write(&path, &data).unwrap();
        for out in [1, 511, 4096, 100_000] {
            let mut reader = DirectReader::new(File::open(&path).unwrap(), 2 * ALIGNMENT);
            let mut read = Vec::new();
            let mut piece = vec![0; out];
            loop {
                let count = reader.read(&mut piece).unwrap();
                if count == 0 {
                    break;
                }
                read.extend_from_slice(&piece[..count]);
            }
            assert_eq!(read, data, "reads of {out} bytes");
        }
    }

    #[test]
    fn an_empty_file_reads_as_empty() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("t.tar");
        std::fs::write(&path, b"").unwrap();
        let mut reader = DirectReader::new(File::open(&path).unwrap(), ALIGNMENT);
        assert_eq!(reader.read(&mut [0; 16]).unwrap(), 0);
    }
}
