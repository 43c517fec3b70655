//! The write-scope rule: a traced `backup` may write only inside `BBR_ARTIFACT_DIRECTORY`,
//! the job's own log and run folders, devices and `--allow-write` prefixes; temporary files
//! must be gone when it exits. The policy is plain data so it is tested without a host; the
//! `Checker` method here only fetches the traces and probes leftover temporary files.

use std::collections::{BTreeMap, BTreeSet};

use crate::remote::shell_quote;

use super::checker::Checker;
use super::trace::{self, WrittenPath};
use super::{ContractError, ContractReport, ScriptsFolder, Verdict};

impl Checker<'_> {
    /// Compares what the traced backup wrote with what the contract allows.
    pub(super) async fn check_write_scope(
        &self,
        report: &mut ContractReport,
        trace_dir: &str,
        cwd: &str,
        streaming: bool,
    ) -> Result<(), ContractError> {
        let dump = self
            .root(
                "reading the strace output",
                &format!(
                    "cd {} && for f in trace.*; do [ -f \"$f\" ] || continue; printf '\\n==> %s\\n' \"${{f#trace.}}\"; cat \"$f\"; done",
                    shell_quote(trace_dir)
                ),
            )
            .await?;
        let traces = split_trace_dump(&dump.stdout_text());
        let written = trace::written_paths(&traces, cwd);
        let policy = WritePolicy::new(self.folder, &self.options.allowed_writes, streaming);
        let (mut outside, temporary) = policy.partition(&written);
        outside.extend(self.leftover_temporary(temporary).await?);
        if streaming {
            report_stream_write_scope(report, &self.folder.job, written.len(), &outside);
        } else {
            report_write_scope(report, &self.folder.job, written.len(), &outside);
        }
        Ok(())
    }

    /// Temporary files are fine only if the script removed them: the ones still there.
    async fn leftover_temporary<'w>(
        &self,
        mut temporary: Vec<&'w WrittenPath>,
    ) -> Result<Vec<&'w WrittenPath>, ContractError> {
        temporary.truncate(500);
        if temporary.is_empty() {
            return Ok(Vec::new());
        }
        let tests: Vec<String> = temporary
            .iter()
            .map(|w| {
                format!(
                    "if [ -e {0} ] || [ -L {0} ]; then printf '%s\\n' {0}; fi",
                    shell_quote(&w.path)
                )
            })
            .collect();
        let left = self
            .root("looking for leftover temporary files", &tests.join("\n"))
            .await?;
        let left: BTreeSet<String> = left.stdout_text().lines().map(str::to_string).collect();
        Ok(temporary
            .into_iter()
            .filter(|w| left.contains(&w.path))
            .collect())
    }
}

/// The `write-scope` finding: PASS, or FAIL naming the first five paths written outside.
fn report_write_scope(
    report: &mut ContractReport,
    job: &str,
    written: usize,
    outside: &[&WrittenPath],
) {
    if outside.is_empty() {
        report.add(
            Verdict::Pass,
            "write-scope",
            format!(
                "backup wrote only inside BBR_ARTIFACT_DIRECTORY ({written} paths written, traced with strace)"
            ),
        );
    } else {
        report.add(
            Verdict::Fail,
            "write-scope",
            format!(
                "backup wrote outside BBR_ARTIFACT_DIRECTORY: {}; only the artifact directory, /var/vcap/sys/log/{job}/ and /var/vcap/sys/run/{job}/ may be written, and temporary files must be removed before the script exits",
                first_paths(outside),
            ),
        );
    }
}

/// The `stream-write-scope` finding of a streaming backup: nothing may be written on the
/// host but its logs and run files (no artifact directory, no temporary files).
fn report_stream_write_scope(
    report: &mut ContractReport,
    job: &str,
    written: usize,
    outside: &[&WrittenPath],
) {
    if outside.is_empty() {
        report.add(
            Verdict::Pass,
            "stream-write-scope",
            format!(
                "streaming backup wrote nothing to disk but its logs ({written} paths written, traced with strace)"
            ),
        );
    } else {
        report.add(
            Verdict::Fail,
            "stream-write-scope",
            format!(
                "streaming backup (CAIRN_STREAM=1) wrote to disk: {}; with CAIRN_STREAM=1 the artifact goes to stdout and only /var/vcap/sys/log/{job}/ and /var/vcap/sys/run/{job}/ may be written",
                first_paths(outside),
            ),
        );
    }
}

/// The first five paths written outside (`path (syscall)`), then how many more.
fn first_paths(outside: &[&WrittenPath]) -> String {
    let shown: Vec<String> = outside
        .iter()
        .take(5)
        .map(|w| format!("{} ({})", w.path, w.syscall))
        .collect();
    let more = if outside.len() > 5 {
        format!(" and {} more", outside.len() - 5)
    } else {
        String::new()
    };
    format!("{}{more}", shown.join(", "))
}

/// Splits `\n==> PID\n<trace>` sections.
fn split_trace_dump(text: &str) -> BTreeMap<u32, String> {
    let mut traces = BTreeMap::new();
    for section in text.split("\n==> ").skip(1) {
        let (pid, body) = section.split_once('\n').unwrap_or((section, ""));
        if let Ok(pid) = pid.trim().parse() {
            traces.insert(pid, body.to_string());
        }
    }
    traces
}

/// Where a `backup` script may write.
struct WritePolicy {
    /// Anything strictly inside these.
    allowed: Vec<String>,
    /// These directories themselves too (a job creates its own log and run folders).
    own_folders: Vec<String>,
    temporary: Vec<&'static str>,
}

/// Where one written path falls under the policy.
enum WriteClass {
    Allowed,
    /// Under /tmp or /var/tmp: allowed if gone when the script exits.
    Temporary,
    Forbidden,
}

impl WritePolicy {
    /// `streaming`: a `backup` with `CAIRN_STREAM=1`, which may write neither its artifact
    /// directory nor temporary files.
    fn new(folder: &ScriptsFolder, extra: &[String], streaming: bool) -> WritePolicy {
        let own_folders = vec![
            format!("/var/vcap/sys/log/{}", folder.job),
            format!("/var/vcap/sys/run/{}", folder.job),
        ];
        let mut allowed = vec!["/dev".to_string(), "/proc".to_string()];
        if !streaming {
            allowed.push(
                folder
                    .artifact_directory()
                    .trim_end_matches('/')
                    .to_string(),
            );
        }
        allowed.extend(own_folders.iter().cloned());
        allowed.extend(extra.iter().map(|p| p.trim_end_matches('/').to_string()));
        WritePolicy {
            allowed,
            own_folders,
            temporary: if streaming {
                Vec::new()
            } else {
                vec!["/tmp", "/var/tmp"]
            },
        }
    }

    /// Splits the written paths into those outside the allowed places and the temporary
    /// ones, each in the order written.
    fn partition<'w>(
        &self,
        written: &'w [WrittenPath],
    ) -> (Vec<&'w WrittenPath>, Vec<&'w WrittenPath>) {
        let mut outside = Vec::new();
        let mut temporary = Vec::new();
        for write in written {
            match self.classify(&write.path) {
                WriteClass::Allowed => {}
                WriteClass::Temporary => temporary.push(write),
                WriteClass::Forbidden => outside.push(write),
            }
        }
        (outside, temporary)
    }

    fn classify(&self, path: &str) -> WriteClass {
        let inside = |root: &str| {
            path.strip_prefix(root)
                .is_some_and(|rest| rest.starts_with('/'))
        };
        if self.allowed.iter().any(|root| inside(root))
            || self.own_folders.iter().any(|f| f == path)
        {
            WriteClass::Allowed
        } else if self.temporary.iter().any(|root| inside(root)) {
            WriteClass::Temporary
        } else {
            WriteClass::Forbidden
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::ScriptsFolder;

    #[test]
    fn write_policy_allows_the_artifact_logs_and_devices_only() {
        let folder = ScriptsFolder::parse("/var/vcap/jobs/pg/bin/bbr").unwrap();
        let policy = WritePolicy::new(&folder, &["/var/vcap/data/pg-tmp".into()], false);
        let class = |p: &str| match policy.classify(p) {
            WriteClass::Allowed => "allowed",
            WriteClass::Temporary => "temporary",
            WriteClass::Forbidden => "forbidden",
        };
        assert_eq!(class("/var/vcap/store/bbr-backup/pg/db.dump"), "allowed");
        assert_eq!(class("/var/vcap/store/bbr-backup/pg"), "forbidden");
        assert_eq!(class("/var/vcap/store/bbr-backup/other/x"), "forbidden");
        assert_eq!(class("/var/vcap/sys/log/pg/backup.log"), "allowed");
        assert_eq!(class("/var/vcap/sys/log/pg"), "allowed");
        assert_eq!(class("/var/vcap/sys/log"), "forbidden");
        assert_eq!(class("/var/vcap/sys/log/pgx/backup.log"), "forbidden");
        assert_eq!(class("/dev/null"), "allowed");
        assert_eq!(class("/tmp/tmp.abc"), "temporary");
        assert_eq!(class("/var/vcap/data/pg-tmp/x"), "allowed");
        assert_eq!(class("/var/vcap/store/pg/data"), "forbidden");
    }

    #[test]
    fn a_streaming_backup_may_write_only_its_logs_and_run_files() {
        let folder = ScriptsFolder::parse("/var/vcap/jobs/pg/bin/bbr").unwrap();
        let policy = WritePolicy::new(&folder, &[], true);
        let forbidden = |p: &str| matches!(policy.classify(p), WriteClass::Forbidden);
        assert!(forbidden("/var/vcap/store/bbr-backup/pg/dump"));
        assert!(forbidden("/tmp/x"));
        assert!(!forbidden("/var/vcap/sys/log/pg/backup.log"));
        assert!(!forbidden("/dev/null"));
    }

    #[test]
    fn trace_dumps_are_split_by_pid() {
        let traces = split_trace_dump("\n==> 12\nmkdir(\"a\", 0777) = 0\n\n==> 13\n");
        assert_eq!(traces.len(), 2);
        assert!(traces[&12].contains("mkdir"));
    }
}
