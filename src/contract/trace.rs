//! Which files a traced script wrote: a reader of `strace -ff -y` output.
//!
//! `cairn contract check` runs a job's `backup` under
//! `strace -ff -qq -y -s 4096 -e status=successful -e trace=<WRITE_SYSCALLS>`, one trace file
//! per process. With `-y` strace prints the path behind every file descriptor argument
//! (`AT_FDCWD</var/vcap/...>`, `3</tmp/x>`) and behind the descriptor an `open` returned, so
//! most paths arrive absolute. The rest (`mkdir("sub")`, `rename("a", "b")`) are relative to
//! the process's working directory, which this module follows through `chdir`, `fchdir` and
//! the working directory a child inherits at `fork`/`vfork`/`clone`.
//!
//! Only successful calls are traced, so a failed attempt to write somewhere is not a write.

use std::collections::{BTreeMap, HashMap, VecDeque};

/// The system calls traced: everything that creates, changes or removes a name or opens a
/// file for writing, plus what is needed to follow working directories.
pub const TRACED_SYSCALLS: &str = "open,openat,openat2,creat,mkdir,mkdirat,mknod,mknodat,rmdir,\
unlink,unlinkat,rename,renameat,renameat2,link,linkat,symlink,symlinkat,truncate,chmod,\
fchmodat,chown,lchown,fchownat,chdir,fchdir,fork,vfork,clone,clone3";

/// One path a traced process wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrittenPath {
    /// Absolute, lexically normalised path.
    pub path: String,
    /// The system call, e.g. `openat`.
    pub syscall: String,
    /// The process that made it.
    pub pid: u32,
}

/// The paths written by the processes of one traced run. `traces` maps a pid to the content
/// of its trace file; `initial_cwd` is the working directory the traced command started in.
/// Each path is reported once (its first write), in pid order.
#[must_use]
pub fn written_paths(traces: &BTreeMap<u32, String>, initial_cwd: &str) -> Vec<WrittenPath> {
    let calls: BTreeMap<u32, Vec<Call>> = traces
        .iter()
        .map(|(pid, text)| (*pid, text.lines().filter_map(parse_line).collect()))
        .collect();
    let children: std::collections::HashSet<u32> = calls
        .values()
        .flatten()
        .filter_map(Call::child_pid)
        .collect();
    let mut queue: VecDeque<(u32, String)> = calls
        .keys()
        .filter(|pid| !children.contains(pid))
        .map(|pid| (*pid, initial_cwd.to_string()))
        .collect();
    let mut seen = HashMap::new();
    let mut written = Vec::new();
    while let Some((pid, mut cwd)) = queue.pop_front() {
        if seen.insert(pid, ()).is_some() {
            continue;
        }
        for call in calls.get(&pid).into_iter().flatten() {
            if let Some(dir) = call.args.iter().find_map(Arg::fdcwd) {
                cwd = dir.to_string();
            }
            if let Some(child) = call.child_pid() {
                queue.push_back((child, cwd.clone()));
                continue;
            }
            match call.name.as_str() {
                "chdir" => {
                    if let Some(path) = call.string(0) {
                        cwd = resolve(&cwd, path);
                    }
                }
                "fchdir" => {
                    if let Some(path) = call.args.first().and_then(Arg::fd_path) {
                        cwd = path.to_string();
                    }
                }
                _ => {
                    for path in call.written(&cwd) {
                        written.push(WrittenPath {
                            path,
                            syscall: call.name.clone(),
                            pid,
                        });
                    }
                }
            }
        }
    }
    let mut first = std::collections::HashSet::new();
    written.retain(|w| first.insert(w.path.clone()));
    written
}

/// One traced system call.
#[derive(Debug, Clone, PartialEq)]
struct Call {
    name: String,
    args: Vec<Arg>,
    /// The return value, e.g. `0`, `1234` or `3`.
    ret: String,
    /// With `-y`, the path behind a returned descriptor.
    ret_path: Option<String>,
}

/// An argument as strace printed it.
#[derive(Debug, Clone, PartialEq)]
enum Arg {
    /// A quoted string, unescaped.
    Str(String),
    /// A descriptor with its path: `3</x>` or `AT_FDCWD</x>`.
    Fd { cwd: bool, path: String },
    /// Anything else, verbatim: flags, numbers, structures.
    Raw(String),
}

impl Arg {
    fn fdcwd(&self) -> Option<&str> {
        match self {
            Arg::Fd { cwd: true, path } => Some(path),
            _ => None,
        }
    }

    fn fd_path(&self) -> Option<&str> {
        match self {
            Arg::Fd { path, .. } => Some(path),
            _ => None,
        }
    }
}

impl Call {
    fn string(&self, index: usize) -> Option<&str> {
        match self.args.get(index)? {
            Arg::Str(s) => Some(s),
            _ => None,
        }
    }

    fn raw(&self, index: usize) -> &str {
        match self.args.get(index) {
            Some(Arg::Raw(s)) => s,
            _ => "",
        }
    }

    /// The pid a successful fork-like call returned.
    fn child_pid(&self) -> Option<u32> {
        matches!(self.name.as_str(), "fork" | "vfork" | "clone" | "clone3")
            .then(|| self.ret.parse().ok())
            .flatten()
            .filter(|pid| *pid > 0)
    }

    /// Path `path_index` resolved against directory argument `dir_index` (or the cwd).
    fn at(&self, cwd: &str, dir_index: Option<usize>, path_index: usize) -> Option<String> {
        let path = self.string(path_index)?;
        let base = dir_index
            .and_then(|i| self.args.get(i))
            .and_then(Arg::fd_path)
            .unwrap_or(cwd);
        Some(resolve(base, path))
    }

    /// The paths this call wrote.
    fn written(&self, cwd: &str) -> Vec<String> {
        let opened_for_writing = |flags: &str| {
            ["O_WRONLY", "O_RDWR", "O_CREAT", "O_TRUNC"]
                .iter()
                .any(|f| flags.contains(f))
        };
        let paths = match self.name.as_str() {
            "open" if opened_for_writing(self.raw(1)) => {
                vec![self.ret_path.clone().or_else(|| self.at(cwd, None, 0))]
            }
            "openat" | "openat2" if opened_for_writing(self.raw(2)) => {
                vec![self.ret_path.clone().or_else(|| self.at(cwd, Some(0), 1))]
            }
            "creat" => vec![self.ret_path.clone().or_else(|| self.at(cwd, None, 0))],
            "mkdir" | "mknod" | "rmdir" | "unlink" | "truncate" | "chmod" | "chown" | "lchown" => {
                vec![self.at(cwd, None, 0)]
            }
            "mkdirat" | "mknodat" | "unlinkat" | "fchmodat" | "fchownat" => {
                vec![self.at(cwd, Some(0), 1)]
            }
            "rename" => vec![self.at(cwd, None, 0), self.at(cwd, None, 1)],
            "renameat" | "renameat2" => vec![self.at(cwd, Some(0), 1), self.at(cwd, Some(2), 3)],
            "link" | "symlink" => vec![self.at(cwd, None, 1)],
            "linkat" => vec![self.at(cwd, Some(2), 3)],
            "symlinkat" => vec![self.at(cwd, Some(1), 2)],
            _ => Vec::new(),
        };
        paths.into_iter().flatten().collect()
    }
}

/// Parses `name(args) = ret[<path>]`; `None` for signals, exits and anything unexpected.
fn parse_line(line: &str) -> Option<Call> {
    let line = line.trim_end();
    let open = line.find('(')?;
    let name = &line[..open];
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return None;
    }
    let (args, rest) = split_args(&line[open + 1..])?;
    let ret = rest.trim_start().strip_prefix('=')?.trim();
    let (ret, ret_path) = match ret.find('<') {
        Some(at) if ret.ends_with('>') => (
            ret[..at].to_string(),
            Some(unescape(&ret[at + 1..ret.len() - 1])),
        ),
        _ => (
            ret.split_whitespace().next().unwrap_or("").to_string(),
            None,
        ),
    };
    Some(Call {
        name: name.to_string(),
        args,
        ret,
        ret_path,
    })
}

/// Splits the text after `(` into arguments, up to the matching `)`; returns them and the
/// rest of the line.
fn split_args(text: &str) -> Option<(Vec<Arg>, &str)> {
    let bytes = text.as_bytes();
    let mut args = Vec::new();
    let mut start = 0;
    let mut depth = 0usize;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    if bytes[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
            }
            b'<' => {
                // A descriptor's path: up to the `>` that ends it (escaped content inside).
                i += 1;
                while i < bytes.len() && bytes[i] != b'>' {
                    if bytes[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
            }
            b'(' | b'{' | b'[' => depth += 1,
            b')' if depth == 0 => {
                push_arg(&mut args, &text[start..i]);
                return Some((args, &text[i + 1..]));
            }
            b')' | b'}' | b']' => depth = depth.saturating_sub(1),
            b',' if depth == 0 => {
                push_arg(&mut args, &text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    None
}

fn push_arg(args: &mut Vec<Arg>, text: &str) {
    let text = text.trim();
    if text.is_empty() && args.is_empty() {
        return;
    }
    args.push(parse_arg(text));
}

fn parse_arg(text: &str) -> Arg {
    if let Some(quoted) = text.strip_prefix('"') {
        // A truncated string ends with `"...`; take what is between the quotes.
        let end = closing_quote(quoted).unwrap_or(quoted.len());
        return Arg::Str(unescape(&quoted[..end]));
    }
    if let (Some(at), true) = (text.find('<'), text.ends_with('>')) {
        let fd = &text[..at];
        if fd == "AT_FDCWD" || fd.bytes().all(|b| b.is_ascii_digit()) {
            return Arg::Fd {
                cwd: fd == "AT_FDCWD",
                path: unescape(&text[at + 1..text.len() - 1]),
            };
        }
    }
    Arg::Raw(text.to_string())
}

fn closing_quote(text: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b'"' => return Some(i),
            _ => i += 1,
        }
    }
    None
}

/// Undoes strace's C-style escapes (`\"`, `\\`, `\n`, `\t`, octal `\NNN`, hex `\xHH`).
fn unescape(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'\\' || i + 1 == bytes.len() {
            out.push(bytes[i]);
            i += 1;
            continue;
        }
        let next = bytes[i + 1];
        i += 2;
        match next {
            b'n' => out.push(b'\n'),
            b't' => out.push(b'\t'),
            b'r' => out.push(b'\r'),
            b'v' => out.push(0x0b),
            b'f' => out.push(0x0c),
            b'x' => {
                let hex = text
                    .get(i..i + 2)
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(byte) => {
                        out.push(byte);
                        i += 2;
                    }
                    None => out.push(b'x'),
                }
            }
            b'0'..=b'7' => {
                let mut value = u32::from(next - b'0');
                let mut digits = 1;
                while digits < 3 && i < bytes.len() && (b'0'..=b'7').contains(&bytes[i]) {
                    value = value * 8 + u32::from(bytes[i] - b'0');
                    i += 1;
                    digits += 1;
                }
                out.push((value & 0xff) as u8);
            }
            other => out.push(other),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `path` made absolute against `base` and normalised (`.` and `..` removed lexically).
#[must_use]
pub fn resolve(base: &str, path: &str) -> String {
    let joined = if path.starts_with('/') {
        path.to_string()
    } else {
        format!("{base}/{path}")
    };
    let mut parts: Vec<&str> = Vec::new();
    for part in joined.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            other => parts.push(other),
        }
    }
    format!("/{}", parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn traces(files: &[(u32, &str)]) -> BTreeMap<u32, String> {
        files.iter().map(|(p, t)| (*p, (*t).to_string())).collect()
    }

    fn paths(found: &[WrittenPath]) -> Vec<&str> {
        found.iter().map(|w| w.path.as_str()).collect()
    }

    #[test]
    fn opens_for_writing_use_the_returned_path_and_reads_are_ignored() {
        let found = written_paths(
            &traces(&[(
                10,
                "openat(AT_FDCWD</home/vcap>, \"/etc/passwd\", O_RDONLY|O_CLOEXEC) = 3</etc/passwd>\n\
                 openat(AT_FDCWD</tmp/st/art>, \"a b.txt\", O_WRONLY|O_CREAT|O_TRUNC, 0666) = 3</tmp/st/art/a b.txt>\n\
                 creat(\"/tmp/st/art/t.tar\", 0666)        = 3</tmp/st/art/t.tar>\n\
                 --- SIGCHLD {si_signo=SIGCHLD, si_code=CLD_EXITED, si_pid=15003} ---\n",
            )]),
            "/home/vcap",
        );
        assert_eq!(paths(&found), ["/tmp/st/art/a b.txt", "/tmp/st/art/t.tar"]);
        assert_eq!(found[0].syscall, "openat");
    }

    #[test]
    fn relative_names_follow_chdir_and_are_inherited_by_children() {
        let found = written_paths(
            &traces(&[
                (
                    1,
                    "chdir(\"/var/vcap/store/bbr-backup/pg\") = 0\n\
                     vfork()                                 = 2\n\
                     chdir(\"..\") = 0\n\
                     clone(child_stack=NULL, flags=CLONE_CHILD_CLEARTID|SIGCHLD, child_tidptr=0x7f) = 3\n",
                ),
                (2, "mkdir(\"sub\", 0777) = 0\n"),
                (
                    3,
                    "rename(\"pg/x\", \"../elsewhere\") = 0\nunlink(\"q\\\"z\") = 0\n",
                ),
            ]),
            "/home/vcap",
        );
        assert_eq!(
            paths(&found),
            [
                "/var/vcap/store/bbr-backup/pg/sub",
                "/var/vcap/store/bbr-backup/pg/x",
                "/var/vcap/store/elsewhere",
                "/var/vcap/store/bbr-backup/q\"z",
            ]
        );
    }

    #[test]
    fn at_calls_resolve_against_their_directory_descriptor() {
        let found = written_paths(
            &traces(&[(
                7,
                "renameat2(AT_FDCWD</a>, \"x\", 4</b/c>, \"y\", RENAME_NOREPLACE) = 0\n\
                 symlinkat(\"/etc/passwd\", AT_FDCWD</a>, \"lnk\") = 0\n\
                 linkat(AT_FDCWD</a>, \"x\", AT_FDCWD</a>, \"/abs/hard\", 0) = 0\n\
                 unlinkat(5</d>, \"e\", AT_REMOVEDIR) = 0\n\
                 fchdir(6</new/cwd>) = 0\n\
                 mkdir(\"z\", 0700) = 0\n",
            )]),
            "/",
        );
        assert_eq!(
            paths(&found),
            [
                "/a/x",
                "/b/c/y",
                "/a/lnk",
                "/abs/hard",
                "/d/e",
                "/new/cwd/z"
            ]
        );
    }

    #[test]
    fn escapes_are_undone() {
        assert_eq!(unescape(r#"a\"b\\c\nd\303\251\x41"#), "a\"b\\c\ndéA");
        assert_eq!(
            parse_arg(r#""name with, comma""#),
            Arg::Str("name with, comma".into())
        );
        let call =
            parse_line(r#"openat(AT_FDCWD</x>, "a,b\"c", O_WRONLY|O_CREAT, 0666) = 3</x/a,b\"c>"#)
                .unwrap();
        assert_eq!(call.ret_path.as_deref(), Some("/x/a,b\"c"));
        assert_eq!(call.args.len(), 4);
    }

    #[test]
    fn paths_are_normalised_lexically() {
        assert_eq!(resolve("/a/b", "../c/./d"), "/a/c/d");
        assert_eq!(resolve("/a", "/x/../y"), "/y");
        assert_eq!(resolve("/", ".."), "/");
    }

    #[test]
    fn unknown_lines_are_skipped() {
        assert!(parse_line("+++ exited with 0 +++").is_none());
        assert!(parse_line("--- SIGCHLD {si_signo=SIGCHLD} ---").is_none());
        assert!(parse_line("").is_none());
    }
}
