//! Readers and writers that count and hash the bytes passing through them: the stored bytes
//! of a store artifact are hashed once, on their way to the store (writing) or from it
//! (reading). The per-file digests of tar streams are in [`crate::format::digest`].

use std::io::{self, Read, Write};

use sha2::{Digest, Sha256};

use crate::format::sink::StoredBytes;

/// Counts and hashes bytes as they are read.
pub struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    size: u64,
}

impl<R> std::fmt::Debug for HashingReader<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HashingReader")
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

impl<R: Read> HashingReader<R> {
    /// Wraps a reader.
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            size: 0,
        }
    }

    /// `(size, sha256 hex)` of everything read so far.
    pub fn summary(&self) -> (u64, String) {
        (self.size, hex::encode(self.hasher.clone().finalize()))
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let count = self.inner.read(buf)?;
        self.hasher.update(&buf[..count]);
        self.size += count as u64;
        Ok(count)
    }
}

/// Counts and hashes bytes on their way to `inner`.
pub struct HashingWriter<W> {
    /// Where the bytes go.
    pub inner: W,
    hasher: Sha256,
    size: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let count = self.inner.write(buf)?;
        self.hasher.update(&buf[..count]);
        self.size += count as u64;
        Ok(count)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<W> HashingWriter<W> {
    /// Wraps a writer.
    pub fn new(inner: W) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            size: 0,
        }
    }

    /// Size and sha256 of everything written so far.
    pub fn summary(&self) -> StoredBytes {
        StoredBytes {
            size: self.size,
            sha256: Some(hex::encode(self.hasher.clone().finalize())),
            plain_size: self.size,
        }
    }
}

impl<W> std::fmt::Debug for HashingWriter<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HashingWriter")
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}
