//! The exact commands Cairn runs on instances, in one place.
//!
//! They follow bbr's (bbr-facts §4.5) with two deliberate differences: every path and value is
//! shell-quoted (bbr's are not), and checksums are computed with `find -print0 | xargs -0
//! sha256sum -z`, which survives any file name, where bbr's `find | xargs shasum` breaks on
//! names with spaces.

use crate::job::{Job, ScriptName, REMOTE_ARTIFACT_ROOT};
use crate::remote::shell_quote;

/// Lists every file under the jobs' `bin/bbr` folders.
pub const FIND_SCRIPTS: &str = "sudo sh -c 'find /var/vcap/jobs/*/bin/bbr/* -type f'";

/// Exits 0 when the artifact root exists.
#[must_use]
pub fn artifact_root_exists() -> String {
    format!("sudo stat {REMOTE_ARTIFACT_ROOT}")
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

/// Streams a directory as an uncompressed tar with `./`-prefixed names on stdout.
#[must_use]
pub fn tar_create(directory: &str) -> String {
    format!("sudo tar -C {} -c .", shell_quote(directory))
}

/// Extracts a tar from stdin into a directory.
#[must_use]
pub fn tar_extract(directory: &str) -> String {
    let inner = format!("tar -C {} -x", shell_quote(directory));
    format!("sudo sh -c {}", shell_quote(&inner))
}

/// Prints the size of a directory in KiB as the first field.
#[must_use]
pub fn disk_usage_kib(directory: &str) -> String {
    format!("sudo du -sk {}", shell_quote(directory))
}

/// Prints `<sha256>  ./name` records, NUL-terminated, for every regular file of a directory.
#[must_use]
pub fn checksum_files(directory: &str) -> String {
    let inner = format!(
        "cd {} && find . -type f -print0 | xargs -0 -r sha256sum -z",
        shell_quote(directory)
    );
    format!("sudo sh -c {}", shell_quote(&inner))
}

/// Runs a job script as root with the given environment.
#[must_use]
pub fn run_script(job: &Job, script: ScriptName, environment: &[(&str, String)]) -> String {
    let mut command = String::from("sudo");
    for (name, value) in environment {
        command.push(' ');
        command.push_str(&shell_quote(&format!("{name}={value}")));
    }
    command.push(' ');
    command.push_str(&shell_quote(&job.script_path(script)));
    command
}

/// Exit status of a script that [`with_timeout`] ended (GNU timeout's 124; 137 after KILL).
pub const TIMED_OUT_STATUSES: [u32; 2] = [124, 137];

/// Like [`run_script`], with the script run under GNU `timeout`, which puts it in its own
/// process group and signals the whole group (TERM, then KILL 30 s later): the script's
/// children end too, and the limit holds on the instance even if the connection is lost.
#[must_use]
pub fn run_script_with_timeout(
    job: &Job,
    script: ScriptName,
    environment: &[(&str, String)],
    seconds: u64,
) -> String {
    let plain = run_script(job, script, environment);
    let path = shell_quote(&job.script_path(script));
    let environment_part = plain.strip_suffix(&path).unwrap_or(&plain);
    format!("{environment_part}timeout --kill-after=30s {seconds}s {path}")
}

/// Parses the output of [`checksum_files`] into `./name -> digest`.
///
/// # Errors
/// A description of the first malformed record.
pub fn parse_checksums(output: &[u8]) -> Result<crate::artifact::Checksums, String> {
    let mut checksums = crate::artifact::Checksums::new();
    for record in output.split(|b| *b == 0).filter(|r| !r.is_empty()) {
        if record.len() < 67 || !record[..64].iter().all(u8::is_ascii_hexdigit) {
            return Err(format!(
                "unexpected sha256sum output `{}`",
                String::from_utf8_lossy(&record[..record.len().min(80)])
            ));
        }
        let name = String::from_utf8_lossy(&record[66..]).into_owned();
        let digest = String::from_utf8_lossy(&record[..64]).to_ascii_lowercase();
        checksums.insert(name, digest);
    }
    Ok(checksums)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::JobMetadata;

    #[test]
    fn script_commands_quote_the_environment() {
        let job = Job {
            name: "db".into(),
            release: "r".into(),
            scripts: std::collections::BTreeSet::new(),
            metadata: JobMetadata::default(),
            shared_artifact: None,
        };
        let command = run_script(
            &job,
            ScriptName::Backup,
            &[(
                "BBR_ARTIFACT_DIRECTORY",
                "/var/vcap/store/bbr-backup/db/".into(),
            )],
        );
        assert_eq!(
            command,
            "sudo BBR_ARTIFACT_DIRECTORY=/var/vcap/store/bbr-backup/db/ /var/vcap/jobs/db/bin/bbr/backup"
        );
    }

    #[test]
    fn timeouts_wrap_the_script_inside_sudo() {
        let job = Job {
            name: "db".into(),
            release: "r".into(),
            scripts: std::collections::BTreeSet::new(),
            metadata: JobMetadata::default(),
            shared_artifact: None,
        };
        assert_eq!(
            run_script_with_timeout(&job, ScriptName::Backup, &[("A", "1".into())], 90),
            "sudo A=1 timeout --kill-after=30s 90s /var/vcap/jobs/db/bin/bbr/backup"
        );
    }

    #[test]
    fn extraction_is_quoted_twice() {
        assert_eq!(
            tar_extract("/var/vcap/store/bbr-backup/my job"),
            r#"sudo sh -c 'tar -C '\''/var/vcap/store/bbr-backup/my job'\'' -x'"#
        );
    }

    #[test]
    fn checksum_records_keep_any_file_name() {
        let digest = "a".repeat(64);
        let output = format!("{digest}  ./with space\0{digest}  ./new\nline\0{digest} *./bin\0");
        let sums = parse_checksums(output.as_bytes()).unwrap();
        assert_eq!(sums.len(), 3);
        assert!(sums.contains_key("./with space"));
        assert!(sums.contains_key("./new\nline"));
        assert!(sums.contains_key("./bin"));
        assert!(parse_checksums(b"garbage\0").is_err());
    }
}
