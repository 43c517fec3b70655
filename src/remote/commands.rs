//! The exact commands Cairn runs on instances, in one place.
//!
//! They follow bbr's (bbr-facts §4.5) with two deliberate differences: every path and value is
//! shell-quoted (bbr's are not), and checksums are computed with `find -print0 | xargs -0
//! sha256sum -z`, which survives any file name, where bbr's `find | xargs shasum` breaks on
//! names with spaces.

use crate::model::job::REMOTE_ARTIFACT_ROOT;
use crate::remote::shell_quote;

/// Lists every file under the jobs' `bin/bbr` folders.
pub const FIND_SCRIPTS: &str = "sudo sh -c 'find /var/vcap/jobs/*/bin/bbr/* -type f'";

/// Exits 0 when the artifact root exists.
#[must_use]
pub fn artifact_root_exists() -> String {
    format!("sudo stat {REMOTE_ARTIFACT_ROOT}")
}

/// Exits 0 when a path exists.
#[must_use]
pub fn path_exists(path: &str) -> String {
    format!("sudo test -e {}", shell_quote(path))
}

/// Creates a directory as root.
#[must_use]
pub fn make_directory(path: &str) -> String {
    format!("sudo mkdir -p {}", shell_quote(path))
}

/// Removes a path as root.
#[must_use]
pub fn remove(path: &str) -> String {
    format!("sudo rm -rf {}", shell_quote(path))
}

/// Creates a job's artifact directory for a restore. The artifact root
/// ([`REMOTE_ARTIFACT_ROOT`]) is made root-owned and 0700 first, so that between `tar -x` and
/// the restore script no other user of the instance can reach what was checked and extracted
/// (`tar -x` keeps the artifact's owners and modes); directories made on the way under it are
/// 0700 too. `/var/vcap/store` itself, when missing, is made as before (mode 0755).
#[must_use]
pub fn make_restore_directory(path: &str) -> String {
    let root = shell_quote(REMOTE_ARTIFACT_ROOT);
    let inner = format!(
        "mkdir -p {store} && umask 077 && mkdir -p {root} && chown root:root {root} && \
         chmod 0700 {root} && mkdir -p {path}",
        store = shell_quote(STORE_DIRECTORY),
        path = shell_quote(path),
    );
    format!("sudo sh -c {}", shell_quote(&inner))
}

/// Streams a directory as an uncompressed tar with `./`-prefixed names on stdout, in name
/// order (`--sort=name`, GNU tar 1.28+), so that the same staged files give the same bytes:
/// a resumed drain (`backup --resume`) compares the segments it stored with them.
#[must_use]
pub fn tar_create(directory: &str) -> String {
    tar_create_with(directory, &[])
}

/// [`tar_create`] with extra GNU tar flags (`--hard-dereference`…, plain words, not quoted);
/// the name order is always there.
#[must_use]
pub fn tar_create_with(directory: &str, flags: &[&str]) -> String {
    let mut command = format!("sudo tar -C {} --sort=name -c", shell_quote(directory));
    for flag in flags.iter().filter(|flag| **flag != "--sort=name") {
        command.push(' ');
        command.push_str(flag);
    }
    command.push_str(" .");
    command
}

/// Lists every entry under a staged artifact directory for a destination that sends only
/// what changed ([`crate::format::listing`]): per entry, NUL-terminated, its type, size,
/// modification time (`%T@`, nanoseconds), mode, uid, gid, user, group, inode, link target and
/// path relative to the directory. Survives any file name.
#[must_use]
pub fn list_tree(directory: &str) -> String {
    let inner = format!(
        "cd {} && find . -mindepth 1 -printf '%y\\0%s\\0%T@\\0%m\\0%U\\0%G\\0%u\\0%g\\0%i\\0%l\\0%P\\0'",
        shell_quote(directory)
    );
    format!("sudo sh -c {}", shell_quote(&inner))
}

/// Streams the files of a directory named on stdin (NUL-terminated `./`-prefixed names, in
/// the order they are wanted) as one uncompressed tar on stdout, with extra GNU tar flags: the
/// changed files of a listed artifact ([`list_tree`]). Directories named are not descended.
#[must_use]
pub fn tar_create_list(directory: &str, flags: &[&str]) -> String {
    let mut command = format!(
        "sudo tar -C {} --null --no-recursion --verbatim-files-from -c",
        shell_quote(directory)
    );
    for flag in flags.iter().filter(|flag| **flag != "--sort=name") {
        command.push(' ');
        command.push_str(flag);
    }
    command.push_str(" -T -");
    command
}

/// Extracts a tar from stdin into a directory, as root, so owners and modes are kept (GNU tar's
/// `--same-owner` and `--same-permissions` are root's defaults), as bbr does. The umask only
/// decides the mode of directories the archive does not list (`./a/b` without `./a/`): 0700.
/// The restore check (`format::digest`) has refused whatever must not be extracted so.
#[must_use]
pub fn tar_extract(directory: &str) -> String {
    let inner = format!("umask 077 && tar -C {} -x", shell_quote(directory));
    format!("sudo sh -c {}", shell_quote(&inner))
}

/// Extracts a tar from stdin into a directory as [`tar_extract`] does and, while it extracts,
/// prints the `<sha256> *./name` record of every regular file it extracted, one per line (the
/// records of [`checksum_files`], which [`ChecksumRecords`] reads as they arrive): the instance's check of a
/// restore overlapped with the extraction instead of a second pass after it.
///
/// GNU tar's `-v` prints a member's name when it starts extracting it, so once the next name
/// (or the end) is printed the file is complete; `sed` holds each name back by one and
/// `xargs` hashes the completed ones in batches of `batch` names (`find -maxdepth 0 -type f`
/// keeps regular files only, as [`checksum_files`] does; directories, symlinks and the rest are
/// dropped). Every record is of a file read from the disk after tar closed it, as before; only
/// the last batch waits for the end of the stream. The exit status is tar's when it failed,
/// else 1 when hashing failed (with a line on stderr).
///
/// Only for names without a newline or a backslash (GNU tar, OpenSSL and coreutils quote
/// those): [`lists_while_extracting`] says when; otherwise extract, then [`checksum_files`].
#[must_use]
pub fn tar_extract_with_checksums(directory: &str, batch: usize) -> String {
    let inner = format!(
        "cd {directory} || exit 1\n\
         umask 077\n\
         if command -v openssl >/dev/null 2>&1; then H='openssl dgst -sha256 -r'; else H=sha256sum; fi\n\
         export H\n\
         exec 3>&1\n\
         t=$( {{ {{ tar -x -v --quoting-style=literal -f - 4>&-; echo $? >&4; }} | \
         sed -u -n -e '/^\\.\\//!s|^|./|' -e '/\\/$/!{{x;/./p;}}' -e '${{x;/./p;}}' | \
         xargs -r -d '\\n' -n {batch} sh -c 'find \"$@\" -maxdepth 0 -type f -print0 | xargs -0 -r $H' sh >&3 4>&-; }} 4>&1 )\n\
         h=$?\n\
         [ \"$t\" = 0 ] || exit \"${{t:-2}}\"\n\
         [ \"$h\" = 0 ] || {{ echo \"computing checksums during the extraction failed (exit $h)\" >&2; exit 1; }}",
        directory = shell_quote(directory),
        batch = batch.max(1),
    );
    format!("sudo sh -c {}", shell_quote(&inner))
}

/// Whether [`tar_extract_with_checksums`] can list every one of `names` (none has a newline
/// or a backslash).
#[must_use]
pub fn lists_while_extracting<'a>(names: impl IntoIterator<Item = &'a [u8]>) -> bool {
    names
        .into_iter()
        .all(|name| !name.contains(&b'\n') && !name.contains(&b'\\'))
}

/// Prints the size of a directory in KiB as the first field.
#[must_use]
pub fn disk_usage_kib(directory: &str) -> String {
    format!("sudo du -sk {}", shell_quote(directory))
}

/// Prints `<sha256>  ./name` records for every regular file of a directory.
///
/// The digests come from `openssl dgst -sha256` when the instance has it (OpenSSL uses the
/// CPU's SHA extensions: a quarter of coreutils' CPU time on this project's machines, and this
/// CPU is the instance's, shared with its jobs), one record per line; names that contain a
/// newline or a backslash (which OpenSSL would escape) make it fall back to `sha256sum -z`,
/// NUL-terminated records that survive any name. [`ChecksumRecords`] reads both as they arrive ([`parse_checksums`] when held whole).
#[must_use]
pub fn checksum_files(directory: &str) -> String {
    let inner = format!(
        "cd {} || exit 1\n\
         nl='\n'\n\
         if command -v openssl >/dev/null 2>&1 && \
         [ -z \"$(find . -type f \\( -path \"*$nl*\" -o -path '*\\\\*' \\) -print -quit)\" ]; then\n\
         find . -type f -print0 | xargs -0 -r openssl dgst -sha256 -r\n\
         else\n\
         find . -type f -print0 | xargs -0 -r sha256sum -z\n\
         fi",
        shell_quote(directory)
    );
    format!("sudo sh -c {}", shell_quote(&inner))
}

/// Parses the output of [`checksum_files`] into `./name -> digest`: NUL-terminated records
/// when the output has any NUL byte (`sha256sum -z`), else one record per line (`openssl dgst
/// -r`, used only when no name contains a newline). A record is 64 hex digits, a separator of
/// two characters (`  ` or ` *`) and the name.
///
/// # Errors
/// A description of the first malformed record.
pub fn parse_checksums(output: &[u8]) -> Result<crate::format::bbr_directory::Checksums, String> {
    let separator = if output.contains(&0) { 0 } else { b'\n' };
    let mut checksums = crate::format::bbr_directory::Checksums::new();
    let mut records = ChecksumRecords::with_separator(separator);
    records.push(output, &mut |name, digest| {
        checksums.insert(name, digest);
    })?;
    records.finish(&mut |name, digest| {
        checksums.insert(name, digest);
    })?;
    Ok(checksums)
}

/// The output of [`checksum_files`] read as it arrives, record by record, so that the listing
/// of a million files (~110 MB) is never held whole. Which terminator the records have is told
/// by the first record's separator: `openssl dgst -r` writes ` *` and newline-terminated
/// records, `sha256sum -z` (text mode) `  ` and NUL-terminated ones.
#[derive(Debug, Default)]
pub struct ChecksumRecords {
    /// The terminator, once known.
    separator: Option<u8>,
    /// The bytes of the record not yet terminated.
    partial: Vec<u8>,
}

/// What [`ChecksumRecords`] hands on: each file's name and digest.
pub type ChecksumRecord<'a> =
    dyn FnMut(crate::format::digest::FileName, crate::format::digest::Sha256Sum) + Send + 'a;

impl ChecksumRecords {
    /// Records ended by `separator` (`b'\n'` or `0`), known beforehand: the listing of
    /// [`tar_extract_with_checksums`] is lines whichever tool hashed (`sha256sum` without `-z`
    /// writes the same two-space separator as `sha256sum -z`, so the first record cannot tell).
    #[must_use]
    pub fn with_separator(separator: u8) -> ChecksumRecords {
        ChecksumRecords {
            separator: Some(separator),
            partial: Vec::new(),
        }
    }

    /// Reads the next bytes of the output, handing every complete record to `record`.
    ///
    /// # Errors
    /// A description of the first malformed record.
    pub fn push(&mut self, mut data: &[u8], record: &mut ChecksumRecord<'_>) -> Result<(), String> {
        while !data.is_empty() {
            let Some(separator) = self.separator else {
                let needed = 66_usize.saturating_sub(self.partial.len()).min(data.len());
                self.partial.extend_from_slice(&data[..needed]);
                data = &data[needed..];
                match self.partial.get(64..66) {
                    Some(b" *") => self.separator = Some(b'\n'),
                    Some(_) => self.separator = Some(0),
                    None => return Ok(()),
                }
                continue;
            };
            if let Some(end) = data.iter().position(|&b| b == separator) {
                if self.partial.is_empty() {
                    parse_record(&data[..end], record)?;
                } else {
                    self.partial.extend_from_slice(&data[..end]);
                    let partial = std::mem::take(&mut self.partial);
                    parse_record(&partial, record)?;
                }
                data = &data[end + 1..];
            } else {
                self.partial.extend_from_slice(data);
                data = &[];
            }
        }
        Ok(())
    }

    /// Reads what is left once the output ended (a last record without its terminator).
    ///
    /// # Errors
    /// A malformed last record.
    pub fn finish(self, record: &mut ChecksumRecord<'_>) -> Result<(), String> {
        parse_record(&self.partial, record)
    }
}

/// One record, `<64 hex digits><2 separator characters><name>`; an empty one is skipped.
fn parse_record(bytes: &[u8], record: &mut ChecksumRecord<'_>) -> Result<(), String> {
    if bytes.is_empty() {
        return Ok(());
    }
    if bytes.len() < 67 || !bytes[..64].iter().all(u8::is_ascii_hexdigit) {
        return Err(format!(
            "unexpected checksum output `{}`",
            String::from_utf8_lossy(&bytes[..bytes.len().min(80)])
        ));
    }
    record(
        crate::format::digest::FileName::new(&bytes[66..]),
        crate::format::digest::Sha256Sum::parse(&bytes[..64]),
    );
    Ok(())
}

/// The directory whose free space a restore needs: artifacts are extracted under it.
pub const STORE_DIRECTORY: &str = "/var/vcap/store";

/// Prints `df -Pk` of [`STORE_DIRECTORY`], or of its nearest existing parent on a VM where
/// it does not exist yet; [`parse_free_space`] reads it.
#[must_use]
pub fn free_space() -> String {
    let inner = format!(
        "d={STORE_DIRECTORY}; while [ ! -d \"$d\" ]; do d=$(dirname \"$d\"); done; df -Pk \"$d\""
    );
    format!("sudo sh -c {}", shell_quote(&inner))
}

/// Free bytes and mount point from the output of [`free_space`]: POSIX `df -P`, a header
/// and one line `filesystem blocks used available capacity% mount point` in KiB.
///
/// # Errors
/// Output that is not such a line.
pub fn parse_free_space(output: &[u8]) -> Result<(u64, String), String> {
    let text = String::from_utf8_lossy(output);
    let line = text
        .lines()
        .rfind(|line| !line.trim().is_empty())
        .ok_or("df printed nothing")?;
    let fields: Vec<&str> = line.split_whitespace().collect();
    let capacity = fields
        .iter()
        .rposition(|f| f.ends_with('%'))
        .filter(|&i| i >= 1)
        .ok_or_else(|| format!("unexpected df output: {line}"))?;
    let available: u64 = fields[capacity - 1]
        .parse()
        .map_err(|_| format!("unexpected df output: {line}"))?;
    Ok((
        available.saturating_mul(1024),
        fields[capacity + 1..].join(" "),
    ))
}

#[cfg(test)]
mod tests {
    #[test]
    fn free_space_is_read_from_posix_df() {
        let output = b"Filesystem     1024-blocks  Used Available Capacity Mounted on\n\
                       tmpfs                 1024     4      1020       1% /var/vcap/store\n";
        assert_eq!(
            super::parse_free_space(output).unwrap(),
            (1020 * 1024, "/var/vcap/store".to_string())
        );
        assert!(super::parse_free_space(b"").is_err());
        assert!(super::parse_free_space(b"df: /x: No such file\n").is_err());
        assert!(super::free_space().contains("df -Pk"));
        // An instance claiming more KiB than bytes can count gets the most, not a panic (or,
        // in a release build, a small number that wrapped around).
        let huge = format!("F 1 1 {} 1% /var/vcap/store\n", u64::MAX);
        assert_eq!(
            super::parse_free_space(huge.as_bytes()).unwrap().0,
            u64::MAX
        );
    }

    use super::*;
    use crate::format::digest::{FileName, Sha256Sum};

    #[test]
    fn extraction_is_quoted_twice() {
        assert_eq!(
            tar_extract("/var/vcap/store/bbr-backup/my job"),
            r#"sudo sh -c 'umask 077 && tar -C '\''/var/vcap/store/bbr-backup/my job'\'' -x'"#
        );
    }

    #[test]
    fn checksum_records_keep_any_file_name() {
        let digest = "a".repeat(64);
        let output = format!("{digest}  ./with space\0{digest}  ./new\nline\0{digest} *./bin\0");
        let sums = parse_checksums(output.as_bytes()).unwrap();
        assert_eq!(sums.len(), 3);
        assert!(sums.contains_key("./with space".as_bytes()));
        assert!(sums.contains_key("./new\nline".as_bytes()));
        assert!(sums.contains_key("./bin".as_bytes()));
        assert!(parse_checksums(b"garbage\0").is_err());
    }

    /// The records as they arrive, cut anywhere, in both forms.
    #[test]
    fn checksum_records_are_read_in_pieces() {
        let (a, b) = ("a".repeat(64), "b".repeat(64));
        let nul = format!("{a}  ./new\nline\0{b}  ./x\0");
        let lines = format!("{a} *./one\n{b} *./two");
        for (output, names) in [(nul, ["./new\nline", "./x"]), (lines, ["./one", "./two"])] {
            for piece in [1, 7, 65, 66, 67, 1000] {
                let mut found = Vec::new();
                let mut records = ChecksumRecords::default();
                let mut record = |name: FileName, digest: Sha256Sum| found.push((name, digest));
                for chunk in output.as_bytes().chunks(piece) {
                    records.push(chunk, &mut record).unwrap();
                }
                records.finish(&mut record).unwrap();
                let expected: Vec<(FileName, Sha256Sum)> = names
                    .iter()
                    .zip([&a, &b])
                    .map(|(name, digest)| (FileName::from(*name), Sha256Sum::from(digest.as_str())))
                    .collect();
                assert_eq!(found, expected, "pieces of {piece}");
            }
        }
        let mut records = ChecksumRecords::default();
        assert!(records.push(&[b'x'; 200], &mut |_, _| {}).is_ok());
        assert!(records.finish(&mut |_, _| {}).is_err());
    }

    #[test]
    fn checksum_lines_from_openssl_are_read_too() {
        let digest = "b".repeat(64);
        let output = format!("{digest} *./a file\n{digest} *./dir/c\rr\n");
        let sums = parse_checksums(output.as_bytes()).unwrap();
        assert_eq!(sums.len(), 2);
        assert!(sums.contains_key("./a file".as_bytes()));
        assert!(sums.contains_key("./dir/c\rr".as_bytes()));
        assert!(parse_checksums(b"garbage\n").is_err());
    }

    /// The listing and the tar of a list, run by a real `sh`, GNU find and GNU tar: names
    /// with a newline, a backslash, a space and a byte that is not UTF-8 come back intact, in
    /// tree order, and the tar holds exactly the files asked for, in the order asked.
    #[test]
    fn the_listing_and_the_tar_of_a_list_survive_any_name() {
        use std::os::unix::ffi::OsStrExt;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let odd = std::ffi::OsStr::from_bytes(b"odd\nname \\ \xff");
        std::fs::create_dir_all(root.join("a")).unwrap();
        std::fs::write(root.join("a").join(odd), b"odd").unwrap();
        std::fs::write(root.join("a.b"), b"dot").unwrap();
        std::fs::write(root.join("a/z"), b"zed").unwrap();
        std::os::unix::fs::symlink("a.b", root.join("link")).unwrap();
        let listed = run_in_shell(&list_tree(root.to_str().unwrap()), b"");
        assert!(listed.status.success(), "{listed:?}");
        let listing = crate::format::listing::parse(&listed.stdout).unwrap();
        let paths: Vec<&[u8]> = listing.entries.iter().map(|e| &e.path[..]).collect();
        assert_eq!(
            paths,
            [
                &b"a"[..],
                &b"a/odd\nname \\ \xff"[..],
                &b"a/z"[..],
                &b"a.b"[..],
                &b"link"[..]
            ]
        );
        assert_eq!(listing.entries[4].link, b"a.b");
        assert_eq!(listing.entries[1].size, 3);
        let mut names = Vec::new();
        for index in [1, 3] {
            names.extend_from_slice(&listing.entries[index].tar_name());
            names.push(0);
        }
        let flags = ["--hard-dereference", "--format=posix"];
        let tar = run_in_shell(&tar_create_list(root.to_str().unwrap(), &flags), &names);
        assert!(tar.status.success(), "{tar:?}");
        let mut archive = tar::Archive::new(&tar.stdout[..]);
        let members: Vec<Vec<u8>> = archive
            .entries()
            .unwrap()
            .map(|m| m.unwrap().path_bytes().into_owned())
            .collect();
        assert_eq!(
            members,
            [b"./a/odd\nname \\ \xff".to_vec(), b"./a.b".to_vec()]
        );
    }

    /// Runs `command` (without its `sudo`) in a real `sh` with `stdin` on its standard input.
    fn run_in_shell(command: &str, stdin: &[u8]) -> std::process::Output {
        use std::io::Write as _;
        let inner = command.strip_prefix("sudo ").unwrap();
        let mut child = std::process::Command::new("sh")
            .arg("-c")
            .arg(inner)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // A failing tar may stop reading early: a broken pipe is part of the test.
        let _ = child.stdin.take().unwrap().write_all(stdin);
        child.wait_with_output().unwrap()
    }

    /// The overlapped extraction, run by a real `sh` and GNU tar on a real archive: the
    /// records it prints are exactly those of the second pass over the extracted directory
    /// (regular files, hard links included; no directory, symlink or empty line), with any
    /// batch size; a tar that fails gives tar's status.
    #[test]
    fn extraction_with_checksums_lists_what_the_second_pass_lists() {
        let source = tempfile::tempdir().unwrap();
        let root = source.path();
        std::fs::create_dir_all(root.join("sub dir/deeper")).unwrap();
        std::fs::create_dir(root.join("empty dir")).unwrap();
        std::fs::write(root.join("sub dir/a b"), b"one").unwrap();
        std::fs::write(root.join("sub dir/deeper/c"), vec![7u8; 300_000]).unwrap();
        std::fs::write(root.join("empty"), b"").unwrap();
        std::fs::write(root.join("-dash"), b"dash").unwrap();
        std::fs::hard_link(root.join("empty"), root.join("hard")).unwrap();
        std::os::unix::fs::symlink("sub dir/a b", root.join("link")).unwrap();
        let archive = std::process::Command::new("tar")
            .args(["-C", &root.display().to_string(), "-c", "."])
            .output()
            .unwrap();
        assert!(archive.status.success());
        for batch in [1, 2, 100] {
            let target = tempfile::tempdir().unwrap();
            let directory = target.path().display().to_string();
            let output = run_in_shell(
                &tar_extract_with_checksums(&directory, batch),
                &archive.stdout,
            );
            assert!(output.status.success(), "{output:?}");
            assert!(!output.stdout.contains(&0));
            assert!(
                !output.stdout.starts_with(b"\n")
                    && !output.stdout.windows(2).any(|w| w == b"\n\n")
            );
            let during = parse_checksums(&output.stdout).unwrap();
            let after = run_in_shell(&checksum_files(&directory), b"");
            let after = parse_checksums(&after.stdout).unwrap();
            assert_eq!(during, after, "batch {batch}");
            assert_eq!(during.len(), 5, "{during:?}");
            assert!(during.contains_key("./hard".as_bytes()));
            assert!(!during.contains_key("./link".as_bytes()));
        }
        // A damaged archive: tar's own status (2), not the checksums' success.
        let target = tempfile::tempdir().unwrap();
        let mut damaged = archive.stdout.clone();
        damaged.truncate(damaged.len() / 2 + 7);
        let output = run_in_shell(
            &tar_extract_with_checksums(&target.path().display().to_string(), 1),
            &damaged,
        );
        assert_eq!(output.status.code(), Some(2), "{output:?}");
    }

    #[test]
    fn only_names_without_newline_or_backslash_are_listed_while_extracting() {
        assert!(lists_while_extracting([&b"./a b"[..], b"./\xc3\xa9"]));
        assert!(!lists_while_extracting([&b"./a"[..], b"./new\nline"]));
        assert!(!lists_while_extracting([&b"./back\\slash"[..]]));
    }

    /// The command itself, run by a real `sh` over a directory with awkward names, both ways:
    /// with `openssl` when the names allow it, with `sha256sum -z` when one has a newline.
    #[test]
    fn checksum_command_runs_in_a_real_shell() {
        let directory = tempfile::tempdir().unwrap();
        let root = directory.path();
        std::fs::create_dir(root.join("sub dir")).unwrap();
        std::fs::write(root.join("sub dir/a b"), b"one").unwrap();
        std::fs::write(root.join("back\\slash"), b"two").unwrap();
        std::fs::write(root.join("empty"), b"").unwrap();
        let run = |root: &std::path::Path| {
            let command = checksum_files(&root.display().to_string());
            let inner = command.strip_prefix("sudo ").unwrap();
            let output = std::process::Command::new("sh")
                .arg("-c")
                .arg(inner)
                .output()
                .unwrap();
            assert!(output.status.success(), "{output:?}");
            (
                output.stdout.contains(&0),
                parse_checksums(&output.stdout).unwrap(),
            )
        };
        let sha = |data: &[u8]| hex::encode(<sha2::Sha256 as sha2::Digest>::digest(data));
        let (nul_records, sums) = run(root);
        assert_eq!(sums.len(), 3, "{sums:?}");
        assert_eq!(sums["./sub dir/a b".as_bytes()], sha(b"one"));
        assert_eq!(sums["./back\\slash".as_bytes()], sha(b"two"));
        assert_eq!(sums["./empty".as_bytes()], sha(b""));
        // A backslash rules openssl out as much as a newline does.
        assert!(nul_records);
        std::fs::remove_file(root.join("back\\slash")).unwrap();
        let (nul_records, sums) = run(root);
        assert_eq!(sums.len(), 2);
        let has_openssl = std::process::Command::new("sh")
            .args(["-c", "command -v openssl"])
            .output()
            .unwrap()
            .status
            .success();
        assert_eq!(nul_records, !has_openssl);
        std::fs::write(root.join("new\nline"), b"three").unwrap();
        let (nul_records, sums) = run(root);
        assert!(nul_records);
        assert_eq!(sums["./new\nline".as_bytes()], sha(b"three"));
    }
}
