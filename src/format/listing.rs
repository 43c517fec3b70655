//! The instance's listing of a staged artifact ([`crate::remote::commands::list_tree`]), for
//! destinations that send only what changed (a repository, docs/design/repository.md §5
//! phase 2).
//!
//! Why a listing and not the tar's own headers: the destination must decide which files to
//! ask for *before* anything is sent, by comparing each file's size and mtime with what it
//! already holds. The listing is one `find -printf` of NUL-terminated fields, so any file name
//! (newlines, backslashes, bytes that are not UTF-8) survives; its entries are sorted here the
//! way rustic_core wants a tree (depth first, each directory's children by name as bytes),
//! which is also the order the changed files are then asked of `tar`.

use std::cmp::Ordering;

/// Fields of one record: `%y %s %T@ %m %U %G %u %g %i %l %P`.
pub const FIELDS: usize = 11;

/// What kind of entry a listed path is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListedKind {
    /// A regular file.
    File,
    /// A directory.
    Directory,
    /// A symbolic link.
    Symlink,
}

/// One entry of the staged artifact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedEntry {
    /// Relative to the artifact directory, without `./` (`a`, `sub/b`).
    pub path: Vec<u8>,
    /// File, directory or symbolic link.
    pub kind: ListedKind,
    /// Bytes (of a regular file; what `find` says for the others).
    pub size: u64,
    /// Modification time, seconds since the epoch.
    pub mtime_seconds: i64,
    /// Its nanoseconds.
    pub mtime_nanos: u32,
    /// Permission bits (`st_mode & 07777`).
    pub mode: u32,
    /// Owner's user id.
    pub uid: u32,
    /// Owner's group id.
    pub gid: u32,
    /// Owner's user name (its id when it has none).
    pub user: String,
    /// Owner's group name (its id when it has none).
    pub group: String,
    /// Inode number (recorded; never compared: the staging directory is new every night).
    pub inode: u64,
    /// A symbolic link's target.
    pub link: Vec<u8>,
}

impl ListedEntry {
    /// The name `tar -c` of the artifact directory gives it, and `metadata` records: `./path`.
    #[must_use]
    pub fn tar_name(&self) -> Vec<u8> {
        let mut name = b"./".to_vec();
        name.extend_from_slice(&self.path);
        name
    }
}

/// Every entry of a staged artifact, depth first, each directory's children sorted by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ArtifactListing {
    /// The entries.
    pub entries: Vec<ListedEntry>,
}

impl ArtifactListing {
    /// Regular files and their bytes.
    #[must_use]
    pub fn files(&self) -> (u64, u64) {
        self.entries
            .iter()
            .filter(|e| e.kind == ListedKind::File)
            .fold((0, 0), |(count, bytes), e| (count + 1, bytes + e.size))
    }
}

/// Depth-first order: by path components, each compared as bytes (`a` < `a/b` < `a.b`).
#[must_use]
pub fn tree_order(a: &[u8], b: &[u8]) -> Ordering {
    a.split(|c| *c == b'/').cmp(b.split(|c| *c == b'/'))
}

/// Parses `find -printf` output of [`FIELDS`] NUL-terminated fields per entry, sorted with
/// [`tree_order`].
///
/// # Errors
/// A description of the first malformed record (naming its path when it has one), of a
/// listing cut short, or of an entry a repository does not keep (device, FIFO, socket).
pub fn parse(output: &[u8]) -> Result<ArtifactListing, String> {
    if output.is_empty() {
        return Ok(ArtifactListing::default());
    }
    let Some(body) = output.strip_suffix(&[0]) else {
        return Err("the artifact listing ends without its last NUL: it was cut short".into());
    };
    let fields: Vec<&[u8]> = body.split(|c| *c == 0).collect();
    if !fields.len().is_multiple_of(FIELDS) {
        return Err(format!(
            "the artifact listing has {} fields, not a multiple of {FIELDS}: it was cut short or is not a listing",
            fields.len()
        ));
    }
    let mut entries = fields
        .chunks_exact(FIELDS)
        .map(record)
        .collect::<Result<Vec<_>, _>>()?;
    entries.sort_by(|a, b| tree_order(&a.path, &b.path));
    Ok(ArtifactListing { entries })
}

/// One record's fields.
fn record(fields: &[&[u8]]) -> Result<ListedEntry, String> {
    let path = fields[10].to_vec();
    let shown = String::from_utf8_lossy(&path).into_owned();
    if path.is_empty() || path.starts_with(b"/") {
        return Err(format!(
            "the artifact listing has an entry with the path `{shown}`, which is not a relative name"
        ));
    }
    let bad = |what: &str, value: &[u8]| {
        format!(
            "the artifact listing's entry `{shown}` has {what} `{}`, which is not one",
            String::from_utf8_lossy(value)
        )
    };
    let kind = match fields[0] {
        b"f" => ListedKind::File,
        b"d" => ListedKind::Directory,
        b"l" => ListedKind::Symlink,
        other => {
            let what = match other {
                b"b" => "block device",
                b"c" => "character device",
                b"p" => "FIFO",
                b"s" => "socket",
                _ => "file of an unknown type",
            };
            return Err(format!(
                "`{shown}` in the artifact is a {what}, which a repository does not keep (only files, directories and symbolic links); change the job's backup script to leave it out"
            ));
        }
    };
    let number = |what: &str, value: &[u8]| -> Result<u64, String> {
        std::str::from_utf8(value)
            .ok()
            .and_then(|text| text.parse().ok())
            .ok_or_else(|| bad(what, value))
    };
    let id = |what: &str, value: &[u8]| -> Result<u32, String> {
        u32::try_from(number(what, value)?).map_err(|_| bad(what, value))
    };
    let (mtime_seconds, mtime_nanos) =
        find_time(fields[2]).ok_or_else(|| bad("the modification time", fields[2]))?;
    let mode = std::str::from_utf8(fields[3])
        .ok()
        .and_then(|text| u32::from_str_radix(text, 8).ok())
        .filter(|mode| *mode <= 0o7777)
        .ok_or_else(|| bad("the mode", fields[3]))?;
    let text = |value: &[u8]| String::from_utf8_lossy(value).into_owned();
    Ok(ListedEntry {
        kind,
        size: number("the size", fields[1])?,
        mtime_seconds,
        mtime_nanos,
        mode,
        uid: id("the user id", fields[4])?,
        gid: id("the group id", fields[5])?,
        user: text(fields[6]),
        group: text(fields[7]),
        inode: number("the inode", fields[8])?,
        link: fields[9].to_vec(),
        path,
    })
}

/// `find`'s `%T@` (`1700000000.1234567890`, ten decimals) as seconds and nanoseconds.
fn find_time(value: &[u8]) -> Option<(i64, u32)> {
    let text = std::str::from_utf8(value).ok()?;
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    let seconds: i64 = whole.parse().ok()?;
    if !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let digits: String = fraction.chars().take(9).collect();
    let nanos = if digits.is_empty() {
        0
    } else {
        format!("{digits:0<9}").parse().ok()?
    };
    Some((seconds, nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(kind: &str, size: &str, time: &str, path: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        for field in [
            kind.as_bytes(),
            size.as_bytes(),
            time.as_bytes(),
            b"644",
            b"1000",
            b"1000",
            b"vcap",
            b"vcap",
            b"42",
            b"",
        ] {
            out.extend_from_slice(field);
            out.push(0);
        }
        out.extend_from_slice(path);
        out.push(0);
        out
    }

    #[test]
    fn odd_names_survive_and_entries_come_depth_first() {
        let mut output = Vec::new();
        output.extend(line("f", "3", "1700000000.1234567890", b"a.b"));
        output.extend(line("f", "5", "1700000000.0000000000", b"a/b\nnew line"));
        output.extend(line("d", "4096", "1700000000.5", b"a"));
        output.extend(line("f", "0", "1700000000", b"back\\slash \xff"));
        let listing = parse(&output).unwrap();
        let paths: Vec<&[u8]> = listing.entries.iter().map(|e| &e.path[..]).collect();
        assert_eq!(
            paths,
            [
                &b"a"[..],
                &b"a/b\nnew line"[..],
                &b"a.b"[..],
                &b"back\\slash \xff"[..]
            ]
        );
        let file = &listing.entries[2];
        assert_eq!(file.kind, ListedKind::File);
        assert_eq!(
            (file.mtime_seconds, file.mtime_nanos),
            (1_700_000_000, 123_456_789)
        );
        assert_eq!((file.mode, file.uid, file.inode), (0o644, 1000, 42));
        assert_eq!(file.tar_name(), b"./a.b");
        assert_eq!(listing.entries[0].mtime_nanos, 500_000_000);
        assert_eq!(listing.files(), (3, 8));
        assert_eq!(parse(b"").unwrap(), ArtifactListing::default());
    }

    #[test]
    fn malformed_records_are_refused_naming_them() {
        let mut cut = line("f", "3", "1700000000.1", b"a");
        cut.pop();
        assert!(parse(&cut).unwrap_err().contains("cut short"), "{cut:?}");
        let short = b"f\x003\x00a\x00";
        assert!(parse(short).unwrap_err().contains("not a multiple of 11"));
        let size = parse(&line("f", "3x", "1700000000", b"data/x")).unwrap_err();
        assert_eq!(
            size,
            "the artifact listing's entry `data/x` has the size `3x`, which is not one"
        );
        let time = parse(&line("f", "3", "soon", b"t")).unwrap_err();
        assert!(
            time.contains("entry `t` has the modification time `soon`"),
            "{time}"
        );
        let fifo = parse(&line("p", "0", "1700000000", b"pipe")).unwrap_err();
        assert!(
            fifo.starts_with("`pipe` in the artifact is a FIFO"),
            "{fifo}"
        );
        let absolute = parse(&line("f", "0", "1700000000", b"/etc/passwd")).unwrap_err();
        assert!(absolute.contains("not a relative name"), "{absolute}");
    }
}
