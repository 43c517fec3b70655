//! Segmented artifacts: an artifact in a store is a sequence of objects, each holding at most
//! `--segment-size` bytes of the artifact's plain stream (its tar, or a streaming job's
//! stream), each its own zstd frame and, when encrypted, its own age file.
//!
//! Why: one object of a store has a limit (S3: 10,000 parts of 8 MiB, about 78 GiB; Azure:
//! 50,000 blocks), and a drain of hours that fails late should be able to keep what it stored
//! (the resumable drain builds on the segments being completed as they fill). Segments keep
//! the artifact's byte stream unchanged: concatenated, their plain bytes are the tar.
//!
//! Names are deterministic and sort: segment `i` of the artifact whose key is `K`
//! (`<deployment>/<id>/<group>-<index>-<job>.tar.zst[.age]`) is `K.<i, 6 digits>`
//! ([`segment_key`]). The manifest lists every segment in order ([`ManifestSegment`]); before
//! anything is read, a reader checks that list ([`check_segment_list`]): the names follow the
//! rule in order (a segment reordered, repeated or left out is refused), the sizes add up to
//! the artifact's, and the artifact's `sha256` is the digest of the list ([`list_digest`]).
//! Each segment is then read at its recorded version and checked against its stored size and
//! sha256, and its plain bytes against their size and sha256, as the stream passes.

use std::fmt;

use cairn_store::ArtifactStore;
use sha2::{Digest, Sha256};

use crate::error::Error;
use crate::format::manifest::{ManifestArtifact, ManifestSegment};

/// Default `--segment-size`: 1 GiB of plain bytes per segment.
pub const DEFAULT_SEGMENT_SIZE: u64 = 1 << 30;
/// The smallest `--segment-size`: below it, requests and manifest entries outweigh the data.
pub const MIN_SEGMENT_SIZE: u64 = 1 << 20;
/// The most segments one artifact may have: their manifest entries (~400 bytes each) must stay
/// well inside the manifest's record limit ([`crate::format::manifest::RECORD_LIMIT`]), and
/// six digits keep the names sorting.
pub const MAX_SEGMENTS: usize = 100_000;

/// Plain bytes per segment (`--segment-size`, `segment_size` in the config file).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentSize(u64);

impl Default for SegmentSize {
    fn default() -> Self {
        SegmentSize(DEFAULT_SEGMENT_SIZE)
    }
}

impl fmt::Display for SegmentSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (unit, shift) in [("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)] {
            if self.0 >= 1 << shift && self.0.is_multiple_of(1 << shift) {
                return write!(f, "{}{unit}", self.0 >> shift);
            }
        }
        write!(f, "{} bytes", self.0)
    }
}

impl SegmentSize {
    /// Parses `512MiB`, `4GiB`, `1TiB`, `2048KiB` or a number of bytes.
    ///
    /// # Errors
    /// A one-line message naming the value and what to give instead.
    pub fn parse(text: &str) -> Result<SegmentSize, String> {
        let trimmed = text.trim();
        let digits = trimmed
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(trimmed.len());
        let (number, unit) = trimmed.split_at(digits);
        let shift = match unit.trim() {
            "" | "B" => 0,
            "KiB" => 10,
            "MiB" => 20,
            "GiB" => 30,
            "TiB" => 40,
            _ => return Err(format!(
                "--segment-size `{text}` is not a size; give a number with KiB, MiB, GiB or TiB, such as 512MiB or 4GiB"
            )),
        };
        let bytes = number
            .parse::<u64>()
            .ok()
            .and_then(|n| n.checked_mul(1 << shift))
            .ok_or_else(|| {
                format!("--segment-size `{text}` is not a size; give a number with KiB, MiB, GiB or TiB, such as 512MiB or 4GiB")
            })?;
        if bytes < MIN_SEGMENT_SIZE {
            return Err(format!(
                "--segment-size `{text}` is below the smallest segment size, 1MiB; give 1MiB or more (default 1GiB)"
            ));
        }
        Ok(SegmentSize(bytes))
    }

    /// A size in bytes (at least [`MIN_SEGMENT_SIZE`]).
    ///
    /// # Errors
    /// As [`SegmentSize::parse`].
    pub fn from_bytes(bytes: u64) -> Result<SegmentSize, String> {
        SegmentSize::parse(&bytes.to_string())
    }

    /// Plain bytes per segment.
    #[must_use]
    pub fn bytes(self) -> u64 {
        self.0
    }

    /// The most a segment of this size may take once stored: incompressible data grows a
    /// little in zstd (its `compressBound`: 1/256 plus a block header per 128 KiB) and in age
    /// (16 bytes per 64 KiB chunk and a header); twice those margins, and 1 MiB for headers.
    #[must_use]
    pub fn stored_bound(self) -> u64 {
        self.0
            .saturating_add(self.0 / 128)
            .saturating_add(self.0 / 2048)
            .saturating_add(1 << 20)
    }

    /// Checks that one object of `store` can hold a segment of this size.
    ///
    /// # Errors
    /// A configuration error naming the store, its limit and the largest size that fits.
    pub fn check_store(self, store: &dyn ArtifactStore) -> Result<(), Error> {
        let Some(limit) = store.max_object_size() else {
            return Ok(());
        };
        if self.stored_bound() <= limit {
            return Ok(());
        }
        let largest = largest_fitting(limit);
        Err(cairn_store::StoreError::Configuration {
            store: store.to_string(),
            detail: format!(
                "--segment-size {self} does not fit: one object there holds at most {limit} bytes, and a segment may store a little more than its size; give --segment-size {largest} or less"
            ),
        }
        .into())
    }
}

/// The largest segment size whose [`SegmentSize::stored_bound`] fits `limit`: in whole GiB
/// from 1 GiB on, else in whole MiB (at least 1 MiB).
fn largest_fitting(limit: u64) -> SegmentSize {
    let fits = |mib: u64| SegmentSize(mib << 20).stored_bound() <= limit;
    let (mut low, mut high) = (1_u64, (limit >> 20).max(1));
    while low < high {
        let middle = low + (high - low).div_ceil(2);
        if fits(middle) {
            low = middle;
        } else {
            high = middle - 1;
        }
    }
    if low >= 1024 {
        low = low / 1024 * 1024;
    }
    SegmentSize(low << 20)
}

/// Key of segment `index` of the artifact whose key is `artifact_key`.
#[must_use]
pub fn segment_key(artifact_key: &str, index: usize) -> String {
    format!("{artifact_key}.{index:06}")
}

/// The digest a segmented artifact records as its `sha256`: sha256 over one line per segment,
/// in order, `<sha256 of the stored bytes> <stored size> <plain sha256> <plain size>\n`.
#[must_use]
pub fn list_digest<'a>(segments: impl IntoIterator<Item = &'a SegmentDigest>) -> String {
    let mut hasher = Sha256::new();
    for segment in segments {
        hasher.update(
            format!(
                "{} {} {} {}\n",
                segment.sha256, segment.size, segment.plain_sha256, segment.plain_size
            )
            .as_bytes(),
        );
    }
    hex::encode(hasher.finalize())
}

/// What a segment holds, as its writer knows it once the segment is full.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentDigest {
    /// Bytes stored.
    pub size: u64,
    /// sha256 of the stored bytes.
    pub sha256: String,
    /// Plain bytes it covers.
    pub plain_size: u64,
    /// sha256 of those plain bytes.
    pub plain_sha256: String,
}

impl SegmentDigest {
    /// The digest a manifest entry records.
    #[must_use]
    pub fn of(segment: &ManifestSegment) -> SegmentDigest {
        SegmentDigest {
            size: segment.size,
            sha256: segment.sha256.clone(),
            plain_size: segment.plain_size,
            plain_sha256: segment.plain_sha256.clone(),
        }
    }
}

/// Checks a segmented artifact's list before any of it is read: the segments are named
/// `<key>.000000`, `<key>.000001`, ... in order (a reordered, repeated or missing entry is
/// refused), at most [`MAX_SEGMENTS`], every one but the last holds the same number of plain
/// bytes, the sizes add up to the artifact's, and the artifact's `sha256` is the list's digest.
/// An artifact without segments (schema 1) passes.
///
/// # Errors
/// What is wrong, as a detail for "damaged or missing".
pub fn check_segment_list(artifact: &ManifestArtifact) -> Result<(), String> {
    let segments = &artifact.segments;
    if segments.is_empty() {
        return Ok(());
    }
    if segments.len() > MAX_SEGMENTS {
        return Err(format!(
            "it lists {} segments, more than the {MAX_SEGMENTS} Cairn writes",
            segments.len()
        ));
    }
    for (index, segment) in segments.iter().enumerate() {
        let expected = segment_key(&artifact.key, index);
        if segment.key != expected {
            return Err(format!(
                "its segment {index} is listed as `{}`, but must be `{expected}`: the segment list was reordered, repeated or cut",
                segment.key
            ));
        }
    }
    let full = segments[0].plain_size;
    if let Some((index, _)) = segments[..segments.len() - 1]
        .iter()
        .enumerate()
        .find(|(_, s)| s.plain_size != full || s.plain_size == 0)
    {
        return Err(format!(
            "its segment {index} holds a different number of plain bytes than the segments before the last"
        ));
    }
    let sum = |f: fn(&ManifestSegment) -> u64| {
        segments
            .iter()
            .fold(0_u64, |total, s| total.saturating_add(f(s)))
    };
    if sum(|s| s.size) != artifact.size {
        return Err("its segments' sizes do not add up to the artifact's size".into());
    }
    if artifact.plain_size != Some(sum(|s| s.plain_size)) {
        return Err("its segments' plain sizes do not add up to the artifact's plain size".into());
    }
    let digests: Vec<SegmentDigest> = segments.iter().map(SegmentDigest::of).collect();
    if list_digest(&digests) != artifact.sha256 {
        return Err("its segment list does not match the artifact's sha256".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::digest::FileDigests;

    #[test]
    fn sizes_parse_with_binary_units_and_bad_ones_are_refused_in_one_line() {
        assert_eq!(SegmentSize::parse("512MiB").unwrap().bytes(), 512 << 20);
        assert_eq!(SegmentSize::parse("4GiB").unwrap().bytes(), 4 << 30);
        assert_eq!(SegmentSize::parse("8MiB").unwrap().bytes(), 8 << 20);
        assert_eq!(SegmentSize::parse("1TiB").unwrap().bytes(), 1 << 40);
        assert_eq!(SegmentSize::parse("2048KiB").unwrap().bytes(), 2 << 20);
        assert_eq!(SegmentSize::parse("1048576").unwrap().bytes(), 1 << 20);
        assert_eq!(SegmentSize::default().bytes(), 1 << 30);
        assert_eq!(SegmentSize::parse("4GiB").unwrap().to_string(), "4GiB");
        assert_eq!(
            SegmentSize::parse("1536MiB").unwrap().to_string(),
            "1536MiB"
        );
        for bad in [
            "lots",
            "",
            "MiB",
            "4 GB",
            "4GB",
            "-1MiB",
            "1.5GiB",
            "99999999999TiB",
        ] {
            let error = SegmentSize::parse(bad).unwrap_err();
            assert!(error.contains("is not a size"), "{bad}: {error}");
            assert!(!error.contains('\n'));
        }
        for small in ["0", "1", "1023KiB", "0MiB"] {
            let error = SegmentSize::parse(small).unwrap_err();
            assert!(
                error.contains("below the smallest segment size, 1MiB"),
                "{error}"
            );
        }
    }

    #[test]
    fn the_largest_size_a_store_holds_is_below_its_object_limit() {
        // S3: 10,000 parts of 8 MiB.
        let s3 = 10_000 * (8 << 20);
        let largest = largest_fitting(s3);
        assert!(largest.stored_bound() <= s3, "{largest}");
        assert_eq!(largest.to_string(), "77GiB");
        // Azure: 50,000 blocks of 8 MiB.
        assert_eq!(largest_fitting(50_000 * (8 << 20)).to_string(), "387GiB");
        assert_eq!(largest_fitting(3 << 20).to_string(), "1MiB");
        let just_over = SegmentSize(largest.bytes() + (1 << 30));
        assert!(just_over.stored_bound() > s3);
    }

    fn digest(n: u8, plain_size: u64) -> SegmentDigest {
        SegmentDigest {
            size: 10,
            sha256: format!("{n:02x}"),
            plain_size,
            plain_sha256: format!("p{n:02x}"),
        }
    }

    fn segmented(digests: &[SegmentDigest]) -> ManifestArtifact {
        let key = "cf/20240102T030405Z/app-0-files.tar.zst".to_string();
        ManifestArtifact {
            name: "app-0-files".into(),
            group: "app".into(),
            index: "0".into(),
            job: "files".into(),
            segments: digests
                .iter()
                .enumerate()
                .map(|(i, d)| ManifestSegment {
                    key: segment_key(&key, i),
                    version: Some(format!("v{i}")),
                    size: d.size,
                    sha256: d.sha256.clone(),
                    plain_size: d.plain_size,
                    plain_sha256: d.plain_sha256.clone(),
                })
                .collect(),
            key,
            size: digests.iter().map(|d| d.size).sum(),
            sha256: list_digest(digests),
            version: None,
            files: FileDigests::new(),
            plain_size: Some(digests.iter().map(|d| d.plain_size).sum()),
            encryption: None,
            stream: false,
        }
    }

    #[test]
    fn a_segment_list_in_order_passes_and_any_edit_is_refused() {
        let genuine = segmented(&[digest(0, 100), digest(1, 100), digest(2, 7)]);
        assert_eq!(genuine.segments[2].key, format!("{}.000002", genuine.key));
        check_segment_list(&genuine).unwrap();
        let refused = |edit: &dyn Fn(&mut ManifestArtifact), expected: &str| {
            let mut artifact = genuine.clone();
            edit(&mut artifact);
            let error = check_segment_list(&artifact).unwrap_err();
            assert!(error.contains(expected), "{error}");
        };
        refused(&|a| a.segments.swap(0, 1), "reordered, repeated or cut");
        refused(
            &|a| {
                let copy = a.segments[1].clone();
                a.segments.insert(1, copy);
            },
            "reordered, repeated or cut",
        );
        refused(
            &|a| drop(a.segments.remove(1)),
            "reordered, repeated or cut",
        );
        // The same edits with the names rewritten to follow the rule: the list digest.
        refused(
            &|a| {
                a.segments.swap(0, 1);
                for (i, s) in a.segments.iter_mut().enumerate() {
                    s.key = segment_key("cf/20240102T030405Z/app-0-files.tar.zst", i);
                }
            },
            "does not match the artifact's sha256",
        );
        refused(&|a| a.segments[0].size += 1, "sizes do not add up");
        refused(&|a| a.segments[0].plain_size += 1, "different number");
        refused(
            &|a| a.segments[2].plain_size += 1,
            "plain sizes do not add up",
        );
        refused(
            &|a| a.segments[2].plain_sha256 = "other".into(),
            "does not match the artifact's sha256",
        );
        // Dropping the last segment with every total rewritten still changes the list digest.
        refused(
            &|a| {
                a.segments.pop();
                a.size -= 10;
                a.plain_size = Some(200);
            },
            "does not match the artifact's sha256",
        );
    }
}
