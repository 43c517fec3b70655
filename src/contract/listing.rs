//! The scripts folder as found on the host, and the rules that need no script to run.
//!
//! One command lists the folder (scripts with their type, executable bit and `#!`, other
//! entries, sibling jobs); the static rules are judged from that listing alone, so they hold
//! apart from the checks that run scripts.

use std::collections::{BTreeMap, BTreeSet};

use crate::model::job::ScriptName;
use crate::remote::{shell_quote, RemoteHost, RemoteHostExt};

use super::{ContractError, ContractReport, ScriptsFolder, Verdict};

/// A script file as found on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ScriptFile {
    regular: bool,
    executable: bool,
    shebang: bool,
}

/// What the scripts folder holds.
#[derive(Debug, Clone, Default)]
pub(super) struct Listing {
    pub(super) scripts: BTreeMap<ScriptName, ScriptFile>,
    /// Every entry of the folder, scripts included.
    pub(super) entries: Vec<String>,
    /// Jobs with a `bin/bbr` folder under the same jobs root.
    pub(super) sibling_jobs: BTreeSet<String>,
}

impl Listing {
    pub(super) fn runnable(&self, script: ScriptName) -> bool {
        self.scripts
            .get(&script)
            .is_some_and(|f| f.regular && f.executable && f.shebang)
    }

    pub(super) fn has(&self, script: ScriptName) -> bool {
        self.scripts.contains_key(&script)
    }
}

/// Lists the folder's scripts (type, executable bit, `#!`), its other entries and the jobs
/// next to it, in one command.
pub(super) async fn list_folder(
    host: &dyn RemoteHost,
    folder: &ScriptsFolder,
) -> Result<Listing, ContractError> {
    let names: Vec<&str> = ScriptName::ALL.iter().map(|s| s.file_name()).collect();
    let inner = format!(
        "cd {dir} || exit 3\n\
         for s in {names}; do\n\
           if [ -e \"$s\" ] || [ -L \"$s\" ]; then\n\
             t=other; [ -f \"$s\" ] && t=file\n\
             x=no; [ -x \"$s\" ] && x=yes\n\
             b=no; [ -f \"$s\" ] && [ \"$(head -c 2 \"$s\")\" = '#!' ] && b=yes\n\
             printf 'script %s %s %s %s\\n' \"$s\" \"$t\" \"$x\" \"$b\"\n\
           fi\n\
         done\n\
         for e in * .[!.]*; do if [ -e \"$e\" ] || [ -L \"$e\" ]; then printf 'entry %s\\n' \"$e\"; fi; done\n\
         for j in {root}/*/bin/bbr; do if [ -d \"$j\" ]; then j=${{j%/bin/bbr}}; printf 'job %s\\n' \"${{j##*/}}\"; fi; done\n\
         exit 0",
        dir = shell_quote(&folder.path),
        names = names.join(" "),
        root = shell_quote(&folder.jobs_root),
    );
    let output = host
        .run(&format!("sudo sh -c {}", shell_quote(&inner)))
        .await?;
    match output.status {
        0 => Ok(parse_listing(&output.stdout_text())),
        3 => Err(ContractError::Missing {
            path: folder.path.clone(),
            host: host.to_string(),
        }),
        _ => Err(ContractError::Command {
            path: folder.path.clone(),
            host: host.to_string(),
            detail: format!("listing the folder failed: {}", output.failure_detail()),
        }),
    }
}

/// Reads the `script`, `entry` and `job` lines that `list_folder` prints.
fn parse_listing(text: &str) -> Listing {
    let mut listing = Listing::default();
    for line in text.lines() {
        let mut words = line.splitn(2, ' ');
        match (words.next(), words.next()) {
            (Some("script"), Some(rest)) => {
                let fields: Vec<&str> = rest.split(' ').collect();
                if let [name, kind, executable, shebang] = fields[..] {
                    if let Some(script) = ScriptName::from_file_name(name) {
                        listing.scripts.insert(
                            script,
                            ScriptFile {
                                regular: kind == "file",
                                executable: executable == "yes",
                                shebang: shebang == "yes",
                            },
                        );
                    }
                }
            }
            (Some("entry"), Some(name)) => listing.entries.push(name.to_string()),
            (Some("job"), Some(name)) => {
                listing.sibling_jobs.insert(name.to_string());
            }
            _ => {}
        }
    }
    listing
}

/// The rules that need no script to run, in the order the report lists them.
pub(super) fn check_files(listing: &Listing, report: &mut ContractReport) {
    check_presence(listing, report);
    check_executable(listing, report);
    check_restorable(listing, report);
    check_lock_pairs(listing, report);
    check_names(listing, report);
}

/// A job needs a backup or a restore script to take part at all.
fn check_presence(listing: &Listing, report: &mut ContractReport) {
    if !listing.has(ScriptName::Backup) && !listing.has(ScriptName::Restore) {
        report.add(
            Verdict::Fail,
            "scripts",
            "no backup and no restore script: this is not a backup-capable job",
        );
    } else {
        let present: Vec<&str> = listing.scripts.keys().map(|s| s.file_name()).collect();
        report.add(
            Verdict::Pass,
            "scripts",
            format!("found {}", present.join(", ")),
        );
    }
}

/// Every script must be a regular, executable file with a `#!` line.
fn check_executable(listing: &Listing, report: &mut ContractReport) {
    for (script, file) in &listing.scripts {
        let problem = if !file.regular {
            Some("is not a regular file")
        } else if !file.executable {
            Some("is not executable (chmod 755 it in the job spec's templates)")
        } else if !file.shebang {
            Some("has no #! line: sudo cannot run it")
        } else {
            None
        };
        if let Some(problem) = problem {
            report.add(Verdict::Fail, "executable", format!("{script} {problem}"));
        }
    }
    if listing
        .scripts
        .iter()
        .all(|(_, f)| f.regular && f.executable && f.shebang)
    {
        report.add(
            Verdict::Pass,
            "executable",
            "every script is an executable file with a #! line",
        );
    }
}

/// A backup without a restore produces artifacts nothing can put back.
fn check_restorable(listing: &Listing, report: &mut ContractReport) {
    if listing.has(ScriptName::Backup) && !listing.has(ScriptName::Restore) {
        report.add(
            Verdict::Fail,
            "restorable",
            "backup without restore: the artifacts this job produces can never be restored",
        );
    }
}

/// A lock without its unlock leaves the job locked; an unlock alone is allowed.
fn check_lock_pairs(listing: &Listing, report: &mut ContractReport) {
    for (lock, unlock) in [
        (ScriptName::PreBackupLock, ScriptName::PostBackupUnlock),
        (ScriptName::PreRestoreLock, ScriptName::PostRestoreUnlock),
    ] {
        match (listing.has(lock), listing.has(unlock)) {
            (true, false) => report.add(
                Verdict::Fail,
                "lock-pairs",
                format!("{lock} without {unlock}: the job would stay locked after every run"),
            ),
            (false, true) => report.add(
                Verdict::Note,
                "lock-pairs",
                format!(
                    "{unlock} without {lock} (allowed: it runs after every {})",
                    lock_phase(lock)
                ),
            ),
            _ => {}
        }
    }
}

/// Files that are not script names are ignored; misnamed scripts are probably mistakes.
fn check_names(listing: &Listing, report: &mut ContractReport) {
    for entry in &listing.entries {
        if ScriptName::from_file_name(entry).is_some() {
            continue;
        }
        match looks_like_script(entry) {
            Some(script) => report.add(
                Verdict::Warn,
                "names",
                format!("`{entry}` looks like the {script} script, but only a file named exactly `{script}` is run"),
            ),
            None => report.add(Verdict::Note, "names", format!("`{entry}` is not a script name: bbr and Cairn ignore it")),
        }
    }
}

fn lock_phase(lock: ScriptName) -> &'static str {
    if lock == ScriptName::PreBackupLock {
        "backup"
    } else {
        "restore"
    }
}

/// `backup.sh`, `pre_backup_lock`, `Restore` → the script they were probably meant to be.
fn looks_like_script(name: &str) -> Option<ScriptName> {
    let stem = name.split('.').next().unwrap_or(name);
    let normalised = stem.replace('_', "-").to_lowercase();
    ScriptName::from_file_name(&normalised).filter(|s| s.file_name() != name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::Verdict;

    #[test]
    fn misnamed_scripts_are_recognised() {
        assert_eq!(looks_like_script("backup.sh"), Some(ScriptName::Backup));
        assert_eq!(
            looks_like_script("pre_backup_lock"),
            Some(ScriptName::PreBackupLock)
        );
        assert_eq!(looks_like_script("bbr.conf"), None);
        assert_eq!(looks_like_script("backup"), None);
    }

    #[test]
    fn listing_output_is_parsed() {
        let listing = parse_listing(
            "script backup file yes yes\nscript restore file no yes\nscript metadata other no no\nentry backup\nentry bbr.conf\njob postgres\njob app\n",
        );
        assert!(listing.runnable(ScriptName::Backup));
        assert!(!listing.runnable(ScriptName::Restore));
        assert!(listing.has(ScriptName::Metadata));
        assert_eq!(listing.entries, ["backup", "bbr.conf"]);
        assert!(listing.sibling_jobs.contains("app"));
    }

    fn report_of(listing: &Listing) -> ContractReport {
        let mut report = ContractReport {
            job: "j".into(),
            path: "/var/vcap/jobs/j/bin/bbr".into(),
            host: "h".into(),
            findings: Vec::new(),
        };
        check_files(listing, &mut report);
        report
    }

    #[test]
    fn static_rules_flag_broken_jobs() {
        let listing = parse_listing(
            "script pre-backup-lock file yes yes\nscript backup file no yes\nentry restore.sh\n",
        );
        let report = report_of(&listing);
        let failed: Vec<&str> = report
            .findings
            .iter()
            .filter(|f| f.verdict == Verdict::Fail)
            .map(|f| f.check.as_str())
            .collect();
        assert_eq!(failed, ["executable", "restorable", "lock-pairs"]);
        assert!(report
            .findings
            .iter()
            .any(|f| f.verdict == Verdict::Warn && f.message.contains("restore.sh")));
    }

    #[test]
    fn a_complete_job_passes_the_static_rules() {
        let listing = parse_listing(
            "script backup file yes yes\nscript restore file yes yes\nscript pre-backup-lock file yes yes\nscript post-backup-unlock file yes yes\nentry bbr.conf\n",
        );
        let report = report_of(&listing);
        assert!(!report.failed(), "{}", report.to_text());
    }
}
