//! Names that become parts of file names: one rule for every name Cairn joins into a local
//! path, an object key or a remote directory, whoever gave it — an inventory, the Director
//! (deployments, instance groups, instance ids), an instance (job names), a backup's
//! `metadata`.
//!
//! A name is joined into paths such as `<artifact-path>/<deployment>_<time>/<group>-<index>-<job>.tar`,
//! `<deployment>_<time>.log` and `/var/vcap/store/bbr-backup/<job>/` (which restore and
//! clean-up remove with `rm -rf`), so a name with `/`, or `.`/`..`, would land elsewhere, and
//! control characters would forge log lines. Such a name is refused before anything is locked
//! or written, with [`UnsafeName`] (exit code 1). BOSH itself never makes such names; a
//! Director or instance that gives one is broken or hostile.

use std::fmt;

/// What is wrong with `name` as a part of a file name, or `None` when it is fine: it must be
/// non-empty, not `.` or `..`, and without `/` or control characters (NUL, newline, escape,
/// DEL, the C1 range).
#[must_use]
pub fn path_component_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        Some("is empty")
    } else if name == "." || name == ".." {
        Some("is `.` or `..`")
    } else if name.contains('/') {
        Some("contains `/`")
    } else if name.chars().any(char::is_control) {
        Some("contains a control character")
    } else {
        None
    }
}

/// A name that cannot become part of a file name, and where it came from.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind} {shown} {origin} {problem}: Cairn joins it into file names and refuses it; a name must be non-empty, not `.` or `..`, without `/` and control characters", shown = Shown(name))]
pub struct UnsafeName {
    /// What the name names (`instance group`, `deployment`, `job`, `instance id`).
    pub kind: &'static str,
    /// The name.
    pub name: String,
    /// Where it came from (`from the Director (deployment cf)`).
    pub origin: String,
    /// What is wrong with it.
    pub problem: &'static str,
}

/// A name quoted with its control characters escaped, so it cannot forge a log line.
struct Shown<'a>(&'a str);

impl fmt::Display for Shown<'_> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "`{}`", self.0.escape_debug())
    }
}

/// Refuses `name` unless it can be part of a file name.
///
/// # Errors
/// [`UnsafeName`] naming the name, what it is and `origin`.
pub fn check_name(kind: &'static str, name: &str, origin: &str) -> Result<(), UnsafeName> {
    match path_component_problem(name) {
        None => Ok(()),
        Some(problem) => Err(UnsafeName {
            kind,
            name: name.to_string(),
            origin: origin.to_string(),
            problem,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_would_leave_their_directory_or_forge_lines_are_refused() {
        for name in [
            "",
            ".",
            "..",
            "../x",
            "a/b",
            "/",
            "a\nb",
            "a\0",
            "\u{1b}[31m",
            "\u{9b}",
        ] {
            assert!(path_component_problem(name).is_some(), "{name:?}");
        }
        for name in [
            "cf",
            "cf-mysql_2",
            "...",
            "a..b",
            ".hidden",
            "Zürich db",
            "x y",
        ] {
            assert_eq!(path_component_problem(name), None, "{name:?}");
        }
    }

    #[test]
    fn the_error_names_the_name_its_kind_and_origin_on_one_line() {
        let error = check_name(
            "instance group",
            "../x\n",
            "from the Director (deployment cf)",
        )
        .unwrap_err()
        .to_string();
        assert!(
            error.starts_with(
                "instance group `../x\\n` from the Director (deployment cf) contains `/`: "
            ),
            "{error}"
        );
        assert!(!error.contains('\n'), "{error}");
    }
}
