//! Writing results on stdout (or stderr when stdout carries `--json` events or a plan).
//!
//! `print_bytes` and `say` treat a closed stdout (`| head`) as no error; [`Human`] prints the
//! human-readable lines of `deployment` and `director`. All of them print with the progress
//! bars hidden (`progress::without_bars`), so a bar never cuts a line.
//!
//! Names in Cairn's text come from instances (job names, script output), the Director
//! (deployments, instance groups) and stores, none of which BOSH checks: a newline in one
//! would forge a log line that wrappers grep, an escape sequence would drive the operator's
//! terminal. [`printable`] escapes them where text leaves the process: every log line
//! (`logging`), the error report and `bbr-<time>.err.log` (`exit`), and the lines here.
//! `--json` events need nothing more: JSON escapes every control character.

use std::borrow::Cow;
use std::io::Write;

/// Which line breaks [`printable`] keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lines {
    /// One log line: a newline is escaped too.
    One,
    /// A report of several lines (the error report, with scripts' stderr): newlines kept.
    Many,
}

/// `text` with its control characters escaped: `\n`, `\r`, `\x1b` for the other C0 controls and
/// DEL, `\u{9b}` for C1 controls (the forms `tracing-subscriber` already gives the escape
/// sequences it escapes itself); a tab is kept, and with [`Lines::Many`] a newline. Borrowed
/// when there is nothing to escape.
pub(crate) fn printable(text: &str, lines: Lines) -> Cow<'_, str> {
    let kept = |c: char| c == '\t' || (c == '\n' && lines == Lines::Many);
    if !text.chars().any(|c| c.is_control() && !kept(c)) {
        return Cow::Borrowed(text);
    }
    let mut escaped = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            c if !c.is_control() || kept(c) => escaped.push(c),
            '\n' => escaped.push_str("\\n"),
            '\r' => escaped.push_str("\\r"),
            c if u32::from(c) < 0x80 => escaped.push_str(&format!("\\x{:02x}", u32::from(c))),
            c => escaped.push_str(&format!("\\u{{{:x}}}", u32::from(c))),
        }
    }
    Cow::Owned(escaped)
}

/// Writes to stdout; a reader that went away (`| head`) is not an error.
pub(crate) fn print_bytes(bytes: &[u8]) -> i32 {
    match super::progress::without_bars(|| std::io::stdout().lock().write_all(bytes)) {
        Ok(()) => 0,
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => 0,
        Err(_) => 1,
    }
}

/// Prints a line; a closed stdout (`| head`) is not an error.
pub(crate) fn say(line: &str) {
    let line = printable(line, Lines::Many);
    let _ = super::progress::without_bars(|| writeln!(std::io::stdout().lock(), "{line}"));
}

/// Human-readable output: stdout, or stderr when stdout carries `--json` events.
pub(crate) struct Human {
    /// True with `--json` or a printed plan.
    pub to_stderr: bool,
}

impl Human {
    /// Prints one line.
    pub(crate) fn say(&self, line: &str) {
        let line = printable(line, Lines::Many);
        super::progress::without_bars(|| {
            if self.to_stderr {
                eprintln!("{line}");
            } else {
                println!("{line}");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_and_plain_text_is_borrowed() {
        let hostile =
            "job\n[bbr] 2024/01/01 00:00:00 INFO - Backup created\u{1b}[31mred\r\u{9b}2J\u{7f}";
        let one = printable(hostile, Lines::One);
        assert_eq!(
            one,
            r"job\n[bbr] 2024/01/01 00:00:00 INFO - Backup created\x1b[31mred\r\u{9b}2J\x7f"
        );
        assert!(!one.chars().any(char::is_control), "{one}");
        let many = printable("stderr line 1\nline\t2\u{1b}[0m", Lines::Many);
        assert_eq!(many, "stderr line 1\nline\t2\\x1b[0m");
        assert_eq!(printable("a\u{1}b", Lines::One), r"a\x01b");
        assert!(matches!(
            printable("db/0 \t postgres", Lines::One),
            Cow::Borrowed(_)
        ));
    }
}
