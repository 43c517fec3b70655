//! Differential: the restore check against real GNU tar.
//!
//! For every archive the restore check accepts (`cairn::format::digest::check_tar_entries`,
//! the same check `digest_tar_forwarding` runs before a byte reaches an instance), the archive
//! is extracted with the `tar` on this machine exactly as an instance extracts it — the command
//! `cairn::remote::commands::tar_extract` builds, without its `sudo`, run as root (the fuzzer
//! must run as root) into a fresh 0700 directory — and the resulting tree is compared with the
//! tree the check's view describes: every path, its type, its permission bits (not a
//! symlink's), a symlink's target, a file's size and sha256, and hard links as the file they
//! link to. Directories the archive does not list are expected 0700 (the extraction's umask).
//! Any difference is a finding: the checker and the extractor read the archive differently.
//! A tree that differs stops the run (a crash); a failure of `tar -x` on an accepted archive
//! is a safe difference (the restore fails there, before any script), printed, counted and
//! its first 20 inputs kept as `fuzz/artifacts/tar_extract/gnu-tar-failed-<n>` for review.
//!
//! Owners are not compared: the check allows any owner (GNU tar maps `uname`/`gname` to this
//! machine's users, so a differential there would say nothing about the check).
//!
//! As in `tar_entries`, every input is tried as it is and with its header checksums fixed up.
#![no_main]

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use cairn::format::digest::{check_tar_entries, CheckedKind};
use cairn::remote::commands::tar_extract;
use libfuzzer_sys::fuzz_target;
use sha2::{Digest, Sha256};

fuzz_target!(|data: &[u8]| {
    check(data);
    let fixed = fix_checksums(data);
    if fixed != data {
        check(&fixed);
    }
});

/// One node of a tree, as compared.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Node {
    Directory { mode: u32 },
    File { mode: u32, size: u64, sha256: String },
    Symlink { target: Vec<u8> },
}

type Tree = BTreeMap<Vec<u8>, Node>;

static GNU_TAR_FAILURES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

fn check(data: &[u8]) {
    let Ok(view) = check_tar_entries(data) else {
        return;
    };
    let expected = expected_tree(&view);
    let Some(actual) = extracted_tree(data) else {
        return;
    };
    if expected != actual {
        let mut differences = String::new();
        for path in expected.keys().chain(actual.keys()).collect::<std::collections::BTreeSet<_>>() {
            let (want, got) = (expected.get(path), actual.get(path));
            if want != got {
                differences.push_str(&format!(
                    "\n  {:?}: check {want:?}, GNU tar {got:?}",
                    String::from_utf8_lossy(path)
                ));
            }
        }
        panic!("the check and GNU tar disagree:{differences}\nview: {view:?}");
    }
}

/// `./a//b/.` → `a/b`; the top directory is the empty path.
fn normalized(name: &[u8]) -> Vec<u8> {
    name.split(|&b| b == b'/')
        .filter(|part| !part.is_empty() && *part != b".")
        .collect::<Vec<_>>()
        .join(&b'/')
}

/// The tree the check's view describes, built as `tar -x` into a 0700 directory would.
fn expected_tree(view: &[cairn::format::digest::CheckedEntry]) -> Tree {
    let mut tree = Tree::new();
    tree.insert(Vec::new(), Node::Directory { mode: 0o700 });
    for entry in view {
        let path = normalized(&entry.name);
        let mut parent = path.clone();
        while let Some(slash) = parent.iter().rposition(|&b| b == b'/') {
            parent.truncate(slash);
            tree.entry(parent.clone())
                .or_insert(Node::Directory { mode: 0o700 });
        }
        let node = match &entry.kind {
            CheckedKind::Directory => Node::Directory { mode: entry.mode },
            CheckedKind::File(digest) => Node::File {
                mode: entry.mode,
                size: digest.size,
                sha256: digest.sha256.clone(),
            },
            CheckedKind::Symlink(target) => Node::Symlink {
                target: target.clone(),
            },
            CheckedKind::HardLink(target) => tree
                .get(&normalized(target))
                .cloned()
                .unwrap_or_else(|| panic!("the check accepted a hard link to nothing: {entry:?}")),
        };
        tree.insert(path, node);
    }
    tree
}

/// Extracts `data` with GNU tar as an instance would and reads the tree back; `None` when
/// GNU tar failed.
fn extracted_tree(data: &[u8]) -> Option<Tree> {
    let base = std::env::temp_dir().join(format!("cairn-fuzz-extract-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    std::fs::create_dir_all(&base).unwrap();
    let directory = base.join("artifact");
    std::fs::create_dir(&directory).unwrap();
    std::fs::set_permissions(&directory, std::fs::Permissions::from_mode(0o700)).unwrap();
    let command = tar_extract(&directory.display().to_string());
    let inner = command
        .strip_prefix("sudo ")
        .expect("the extraction runs under sudo");
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(&inner[..])
        .env("LC_ALL", "C")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("sh");
    let mut stdin = child.stdin.take().unwrap();
    let input = data.to_vec();
    let writer = std::thread::spawn(move || {
        // tar may stop reading early (it then fails, which is reported below).
        let _ = stdin.write_all(&input);
    });
    let output = child.wait_with_output().unwrap();
    writer.join().unwrap();
    if !output.status.success() {
        // A difference too, but a safe one: the restore fails at `tar -x` and runs no script.
        // Kept for review (fuzz/artifacts/tar_extract/gnu-tar-failed-<n>) rather than stopping
        // the run, so that the run goes on looking for trees that differ.
        let count = GNU_TAR_FAILURES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        eprintln!(
            "GNU tar failed on an archive the check accepted ({}): {}",
            count + 1,
            String::from_utf8_lossy(&output.stderr).replace('\n', " | ")
        );
        if count < 20 {
            let _ = std::fs::create_dir_all("fuzz/artifacts/tar_extract");
            let _ = std::fs::write(format!("fuzz/artifacts/tar_extract/gnu-tar-failed-{count}"), data);
        }
    }
    let failed = !output.status.success();
    let mut tree = Tree::new();
    if !failed {
        read_tree(&directory, &directory, &mut tree);
    }
    std::fs::remove_dir_all(&base).unwrap();
    (!failed).then_some(tree)
}

fn read_tree(top: &Path, path: &Path, tree: &mut Tree) {
    let metadata = std::fs::symlink_metadata(path).unwrap();
    let relative: PathBuf = path.strip_prefix(top).unwrap().to_path_buf();
    let key = relative.as_os_str().as_bytes().to_vec();
    let mode = metadata.mode() & 0o7777;
    let file_type = metadata.file_type();
    let node = if file_type.is_dir() {
        let mut children: Vec<_> = std::fs::read_dir(path)
            .unwrap()
            .map(|child| child.unwrap().path())
            .collect();
        children.sort();
        for child in children {
            read_tree(top, &child, tree);
        }
        Node::Directory { mode }
    } else if file_type.is_symlink() {
        Node::Symlink {
            target: std::fs::read_link(path)
                .unwrap()
                .as_os_str()
                .as_bytes()
                .to_vec(),
        }
    } else if file_type.is_file() {
        let contents = std::fs::read(path).unwrap();
        Node::File {
            mode,
            size: contents.len() as u64,
            sha256: hex(&Sha256::digest(&contents)),
        }
    } else {
        panic!(
            "GNU tar made {:?} ({:?}) from an archive the check accepted",
            relative, file_type
        );
    };
    tree.insert(key, node);
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Recomputes the checksum of every header, walking the archive by the sizes in the headers
/// (as `tar_entries` does).
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
