//! Tar entry validation on restore: `digest_tar_files(reader, EntryPolicy::RefuseEscapes)` over
//! arbitrary bytes as a tar stream.
//!
//! It must return errors, never panic, and never accept an archive that escapes the directory
//! it is extracted into. Every input is tried twice: as it is, and with each header's checksum
//! recomputed (random bytes almost never carry a valid header checksum, and the tar parser
//! refuses those before looking at names, so without the fix-up the fuzzer would rarely get
//! past the first header).
//!
//! The oracle for an accepted archive:
//! - no listed file name is absolute or has a `..` component;
//! - no device node is in the archive;
//! - an extraction model finds no escape: entries are applied in order to a model directory
//!   tree, names and link targets read as an extracting `tar` reads them (C strings, so cut at
//!   the first NUL byte), every symlink already extracted is followed in the parent directories
//!   of an entry, a hard-link target must stay inside, and at the end every symlink must
//!   resolve inside the directory.
//!
//! The restore stream (`digest_tar_forwarding`, which passes the archive on to `tar -x` while
//! checking it) must agree with `digest_tar_files`, pass on every byte of an accepted archive,
//! and of a refused one only a prefix in which the model finds no escape (completed with zero
//! blocks, as `tar -x` would see a stream cut there): no header of a refused entry is ever
//! passed on. The one exception is a symlink found to escape only once the whole archive is
//! known, which is refused after everything was passed on (restore then removes it all).
#![no_main]

use std::collections::BTreeMap;
use std::path::{Component, Path};

use cairn::format::digest::{digest_tar_files, digest_tar_forwarding, EntryPolicy};
use libfuzzer_sys::fuzz_target;
use tar::EntryType;

fuzz_target!(|data: &[u8]| {
    check(data);
    let fixed = fix_checksums(data);
    if fixed != data {
        check(&fixed);
    }
    // The backup side (no checks) must not panic either.
    let _ = digest_tar_files(&fixed[..], EntryPolicy::Trust);
});

fn check(data: &[u8]) {
    let checked = digest_tar_files(data, EntryPolicy::RefuseEscapes);
    check_forwarding(data, checked.as_ref().ok());
    let Ok(files) = checked else {
        return;
    };
    for name in files.keys() {
        let path = Path::new(name);
        assert!(!path.is_absolute(), "accepted an absolute name: {name:?}");
        assert!(
            !path.components().any(|c| c == Component::ParentDir),
            "accepted a name with `..`: {name:?}"
        );
    }
    if let Err(escape) = model_extraction(data) {
        panic!("accepted an archive that escapes: {escape}");
    }
}

/// The restore stream against `digest_tar_files`'s verdict (`accepted`).
fn check_forwarding(data: &[u8], accepted: Option<&cairn::format::digest::FileDigests>) {
    let mut forwarded = Vec::new();
    let result = digest_tar_forwarding(data, &mut forwarded);
    assert!(
        data.starts_with(&forwarded),
        "forwarded bytes that are not the archive's"
    );
    match (accepted, result) {
        (Some(files), Ok(forwarded_files)) => {
            assert_eq!(files, &forwarded_files, "the two readers disagree");
            assert_eq!(forwarded.len(), data.len(), "an accepted archive was cut");
        }
        (None, Err(_)) if forwarded.len() == data.len() => {} // refused at the end
        (None, Err(_)) => {
            let mut cut = forwarded.clone();
            cut.resize(
                cut.len().div_ceil(512) * 512 + data.len().div_ceil(512) * 512 + 1024,
                0,
            );
            // What must never be passed on is an entry that lands (or hard-links) outside or a
            // device; a symlink that resolves outside only matters if something is written
            // through it, and restore removes the refused archive's files before any script.
            if let Err(escape) = model_extraction(&cut) {
                let written_outside = !escape.starts_with("the oracle could not read")
                    && !escape.starts_with("symlink ");
                assert!(
                    !written_outside,
                    "passed on part of a refused archive that escapes: {escape}"
                );
            }
        }
        (accepted, result) => panic!(
            "the two readers disagree: digest_tar_files {}, digest_tar_forwarding {}",
            if accepted.is_some() {
                "accepted"
            } else {
                "refused"
            },
            if result.is_ok() {
                "accepted"
            } else {
                "refused"
            }
        ),
    }
}

/// Recomputes the checksum of every header, walking the archive by the sizes in the headers.
fn fix_checksums(data: &[u8]) -> Vec<u8> {
    let mut out = data.to_vec();
    let mut offset = 0_usize;
    while offset + 512 <= out.len() {
        let header = &mut out[offset..offset + 512];
        if header.iter().all(|&b| b == 0) {
            offset += 512;
            continue;
        }
        header[148..156].fill(b' ');
        let sum: u32 = header.iter().map(|&b| u32::from(b)).sum();
        let text = format!("{sum:06o}\0 ");
        header[148..156].copy_from_slice(&text.as_bytes()[..8]);
        let size = octal(&header[124..136]).unwrap_or(0);
        let blocks = size.div_ceil(512).min(out.len() as u64 / 512 + 1) as usize;
        offset = offset.saturating_add(512 + blocks * 512);
    }
    out
}

fn octal(field: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(field).ok()?;
    let text = text.trim_matches(|c: char| c == ' ' || c == '\0');
    u64::from_str_radix(text, 8).ok()
}

/// A path as `tar -x` would get it: the bytes up to the first NUL.
fn c_string(bytes: &[u8]) -> &[u8] {
    bytes.split(|&b| b == 0).next().unwrap_or_default()
}

type Location = Vec<Vec<u8>>;

enum Walk {
    Inside(Location),
    Escapes,
    /// Too many symlinks (ELOOP on a real file system): an error, not an escape.
    Loop,
}

/// Extraction root relative tree of the symlinks extracted so far.
#[derive(Default)]
struct Model {
    symlinks: BTreeMap<Location, Vec<u8>>,
}

impl Model {
    /// Walks `path` from the directory `start`, following symlinks in every component but the
    /// last, and in the last too when `follow_last`.
    fn walk(&self, start: Location, path: &[u8], follow_last: bool, hops: &mut u32) -> Walk {
        if path.first() == Some(&b'/') {
            return Walk::Escapes;
        }
        let parts: Vec<&[u8]> = path
            .split(|&b| b == b'/')
            .filter(|p| !p.is_empty() && *p != b".")
            .collect();
        let mut current = start;
        for (number, part) in parts.iter().enumerate() {
            if *part == b".." {
                if current.pop().is_none() {
                    return Walk::Escapes;
                }
                continue;
            }
            current.push(part.to_vec());
            let last = number + 1 == parts.len();
            if last && !follow_last {
                continue;
            }
            if let Some(target) = self.symlinks.get(&current) {
                *hops += 1;
                if *hops > 40 {
                    return Walk::Loop;
                }
                current.pop();
                match self.walk(current, target, true, hops) {
                    Walk::Inside(resolved) => current = resolved,
                    other => return other,
                }
            }
        }
        Walk::Inside(current)
    }
}

fn model_extraction(data: &[u8]) -> Result<(), String> {
    let mut archive = tar::Archive::new(data);
    let entries = archive
        .entries()
        .map_err(|e| format!("the oracle could not read an accepted archive: {e}"))?;
    let mut model = Model::default();
    for entry in entries {
        let Ok(entry) = entry else {
            // digest_tar_files read the same stream to the end without error.
            return Err("the oracle could not read an accepted archive".into());
        };
        let raw_name = entry.path_bytes().into_owned();
        let name = c_string(&raw_name);
        let kind = entry.header().entry_type();
        let link = entry.link_name_bytes().map(|l| c_string(&l).to_vec());
        let shown = String::from_utf8_lossy(&raw_name);
        if matches!(kind, EntryType::Char | EntryType::Block) {
            return Err(format!("device node {shown:?}"));
        }
        let location = match model.walk(Vec::new(), name, false, &mut 0) {
            Walk::Inside(location) => location,
            Walk::Escapes => return Err(format!("entry {shown:?} lands outside")),
            Walk::Loop => continue,
        };
        if location.is_empty() {
            continue;
        }
        match kind {
            EntryType::Symlink => {
                // Linux refuses to create a symlink with an empty target (ENOENT).
                match link {
                    Some(target) if !target.is_empty() => {
                        model.symlinks.insert(location, target);
                    }
                    _ => {}
                }
            }
            EntryType::Link => {
                let target = link.unwrap_or_default();
                if let Walk::Escapes = model.walk(Vec::new(), &target, false, &mut 0) {
                    return Err(format!(
                        "hard link {shown:?} -> {:?} points outside",
                        String::from_utf8_lossy(&target)
                    ));
                }
                model.symlinks.remove(&location);
            }
            // Entries that replace whatever was at their location.
            EntryType::Regular
            | EntryType::Continuous
            | EntryType::GNUSparse
            | EntryType::Directory
            | EntryType::Fifo => {
                model.symlinks.remove(&location);
            }
            // Metadata-only and unknown entries leave the tree alone.
            _ => {}
        }
    }
    for (location, target) in &model.symlinks {
        let parent = location[..location.len() - 1].to_vec();
        if let Walk::Escapes = model.walk(parent, target, true, &mut 0) {
            return Err(format!(
                "symlink {:?} -> {:?} resolves outside",
                String::from_utf8_lossy(&location.join(&b'/')),
                String::from_utf8_lossy(target)
            ));
        }
    }
    Ok(())
}
