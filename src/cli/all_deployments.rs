//! `--all-deployments` (bbr-facts §1.3): every deployment the client can see, at most
//! `--deployment-parallelism` (default 10) at once, each in its own `cairn` process with its
//! own log file, and bbr's summary and exit code (1 on any failure, never the bitmask).
//!
//! A child process per deployment keeps each run exactly what `--deployment D` would do —
//! its own SSH user, journal, signals and error report — and gives each its own log without
//! untangling interleaved output. Secrets reach the children through the environment, never
//! their command line.
//!
//! The console is bbr's, line for line, since wrappers grep it: `Starting backup...` (or
//! `Starting cleanup...`), `[HH:MM:SS] Pending: a, b` and a dash line (times in UTC), one
//! `Starting`/`Finished`/`ERROR` line per deployment (pre-backup-check instead prints each
//! deployment's verdict and writes no log file), then the dash, `Successfully ...` and
//! `FAILED: ...`; the summary error and the advice to run `backup-cleanup` go to stderr.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;

use anyhow::Context;
use cairn::target::bosh::DirectorClient;
use futures::stream::{self, StreamExt};

use super::args::{Action, DeploymentArgs};
use super::exit::ALL_DEPLOYMENTS_BACKUP_CLEANUP_ADVICE;

/// bbr's default and Cairn's default for `--deployment-parallelism`.
pub(crate) const DEFAULT_DEPLOYMENT_PARALLELISM: usize = 10;

/// bbr's words for one subcommand (`cli/command/deployment_backup.go`,
/// `deployment_backup_cleanup.go`, `deployment_pre_backup_check.go`).
struct Words {
    /// `Starting <verb> of D`, `Finished <verb> of D`, `ERROR: failed to <verb> D`.
    verb: &'static str,
    /// `Successfully <done>: a, b`.
    done: &'static str,
    /// `<n> out of <m> deployments <failed>:`.
    failed: &'static str,
    /// Each deployment logs into `<dir>/<deployment>_<time>.log` (not pre-backup-check,
    /// which prints each deployment's verdict instead).
    log_files: bool,
}

fn words(action: &Action) -> Words {
    match action {
        Action::PreBackupCheck(_) => Words {
            verb: "pre-backup-check",
            done: "can be backed up",
            failed: "cannot be backed up",
            log_files: false,
        },
        Action::BackupCleanup => Words {
            verb: "cleanup",
            done: "cleaned up",
            failed: "could not be cleaned up",
            log_files: true,
        },
        _ => Words {
            verb: "backup",
            done: "backed up",
            failed: "cannot be backed up",
            log_files: true,
        },
    }
}

/// bbr's `printlnWithTimestamp`: `[15:04:05] line`, in UTC.
fn say(line: &str) {
    println!("[{}] {line}", chrono::Utc::now().format("%H:%M:%S"));
}

/// bbr's first line of `backup --all-deployments`, printed before the Director is reached.
pub(crate) fn before_connecting(action: &Action) {
    if matches!(action, Action::Backup(_)) {
        println!("Starting backup...");
    }
}

/// How one deployment's run ended.
struct DeploymentRun {
    /// The deployment.
    name: String,
    /// True when it exited 0.
    succeeded: bool,
    /// Its error report (`1 error occurred:` and what follows), advice excluded.
    report: Vec<String>,
    /// True when its report ended with the advice to run `backup-cleanup`.
    advised: bool,
}

/// Runs the subcommand for every deployment; returns the exit code.
pub(crate) async fn run(
    args: &DeploymentArgs,
    client: &Arc<DirectorClient>,
) -> anyhow::Result<i32> {
    if matches!(args.action, Action::BackupCleanup) {
        println!("Starting cleanup...");
    }
    let deployments = client.deployments().await?;
    if deployments.is_empty() {
        anyhow::bail!("Failed to find any deployments");
    }
    let words = words(&args.action);
    let log_dir = log_dir(&args.action)?;
    say(&format!("Pending: {}", deployments.join(", ")));
    say("-------------------------");
    let parallelism = args
        .deployment_parallelism
        .unwrap_or(DEFAULT_DEPLOYMENT_PARALLELISM);
    let runs = deployments
        .iter()
        .map(|deployment| run_reported(args, deployment, &log_dir, &words));
    // In the order they finish, as bbr lists its failures.
    let results: Vec<DeploymentRun> = stream::iter(runs)
        .buffer_unordered(parallelism)
        .collect()
        .await;
    Ok(summarize(&deployments, &results, &words))
}

/// Where the log files go: `--artifact-path` of a backup, else the current directory.
fn log_dir(action: &Action) -> anyhow::Result<PathBuf> {
    let log_dir = match action {
        Action::Backup(backup) => backup.artifact_path.clone(),
        _ => None,
    };
    match log_dir {
        Some(dir) => Ok(dir),
        None => std::env::current_dir().context("Cannot read the current directory"),
    }
}

/// Runs one deployment with bbr's lines around it.
async fn run_reported(
    args: &DeploymentArgs,
    deployment: &str,
    log_dir: &Path,
    words: &Words,
) -> DeploymentRun {
    // The name becomes the log file's name (and the backup's directory): refused, as a failed
    // deployment, before its run starts.
    let origin = "from the Director's list of deployments";
    if let Err(unsafe_name) = cairn::model::name::check_name("deployment", deployment, origin) {
        say(&format!(
            "ERROR: failed to {} {}",
            words.verb,
            deployment.escape_debug()
        ));
        return deployment_run(deployment, Err(&anyhow::Error::new(unsafe_name)), "");
    }
    if words.log_files {
        run_logged(args, deployment, log_dir, words).await
    } else {
        run_checked(args, deployment).await
    }
}

/// Backup and cleanup: `Starting <verb> of D, log file: F`, then `Finished <verb> of D`, or
/// `ERROR: failed to <verb> D` and the deployment's log.
async fn run_logged(
    args: &DeploymentArgs,
    deployment: &str,
    log_dir: &Path,
    words: &Words,
) -> DeploymentRun {
    let verb = words.verb;
    let timestamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ");
    let log = log_dir.join(format!("{deployment}_{timestamp}.log"));
    say(&format!(
        "Starting {verb} of {deployment}, log file: {}",
        log.display()
    ));
    let result = run_into_log(args, deployment, &log).await;
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let run = deployment_run(deployment, result.as_ref().copied(), &text);
    if run.succeeded {
        say(&format!("Finished {verb} of {deployment}"));
    } else {
        if verb == "cleanup" {
            println!("Failed to cleanup deployment '{deployment}'");
        }
        say(&format!("ERROR: failed to {verb} {deployment}"));
        println!("{text}");
    }
    run
}

/// pre-backup-check: no log file; the deployment's verdict as it printed it,
/// `[15:04:05] Deployment 'D' can be backed up.` or `cannot be backed up.` with its report.
async fn run_checked(args: &DeploymentArgs, deployment: &str) -> DeploymentRun {
    let result = run_captured(args, deployment).await;
    let (stdout, stderr) = match &result {
        Ok((_, stdout, stderr)) => (stdout.as_str(), stderr.as_str()),
        Err(_) => ("", ""),
    };
    let run = deployment_run(deployment, result.as_ref().map(|r| r.0), stderr);
    let lines: Vec<&str> = stdout.lines().collect();
    let verdict_line = format!("] Deployment '{deployment}' ");
    if let Some(at) = lines.iter().position(|l| l.contains(&verdict_line)) {
        lines[at..].iter().for_each(|l| println!("{l}"));
    } else {
        // It stopped before its verdict (e.g. the Director refused it): bbr's words for it.
        let verdict = if run.succeeded { "can" } else { "cannot" };
        say(&format!(
            "Deployment '{deployment}' {verdict} be backed up."
        ));
        run.report.iter().for_each(|l| println!("  {l}"));
    }
    run
}

/// How a deployment's run ended, from its exit code (or why it could not run) and the text
/// holding its error report.
fn deployment_run(
    deployment: &str,
    result: Result<i32, &anyhow::Error>,
    text: &str,
) -> DeploymentRun {
    let (report, advised) = match result {
        Err(error) => (
            vec![
                "1 error occurred:".to_string(),
                "error 1:".to_string(),
                format!("{error:#}"),
            ],
            false,
        ),
        Ok(_) => error_report(text),
    };
    DeploymentRun {
        name: deployment.to_string(),
        succeeded: matches!(result, Ok(0)),
        report,
        advised,
    }
}

/// bbr's summary (`cli/command/all_deployments.go`, `executor/deployment/error.go`): on
/// stdout who succeeded and who failed, on stderr why; returns the exit code, 1 on any
/// failure (never the bitmask).
fn summarize(deployments: &[String], results: &[DeploymentRun], words: &Words) -> i32 {
    let failed: Vec<&DeploymentRun> = results.iter().filter(|r| !r.succeeded).collect();
    let succeeded: Vec<&str> = deployments
        .iter()
        .map(String::as_str)
        .filter(|name| !failed.iter().any(|r| r.name == *name))
        .collect();
    say("-------------------------");
    say(&format!(
        "Successfully {}: {}",
        words.done,
        succeeded.join(", ")
    ));
    if failed.is_empty() {
        return 0;
    }
    let names: Vec<&str> = failed.iter().map(|r| r.name.as_str()).collect();
    say(&format!("FAILED: {}", names.join(", ")));
    eprintln!(
        "{} out of {} deployments {}:",
        failed.len(),
        deployments.len(),
        words.failed
    );
    for name in &names {
        eprintln!("  {name}");
    }
    eprintln!();
    for run in &failed {
        eprintln!("Deployment '{}':", run.name);
        for line in &run.report {
            eprintln!("  {line}");
        }
    }
    // bbr advises the clean-up after a backup or a check, never after a clean-up; the
    // deployments' own reports tell when (`exit::CleanupAdvice`).
    if words.verb != "cleanup" && failed.iter().any(|r| r.advised) {
        eprintln!();
        eprintln!("{ALL_DEPLOYMENTS_BACKUP_CLEANUP_ADVICE}");
    }
    1
}

/// Runs the deployment's own run with its output in `log`; returns its exit code.
async fn run_into_log(args: &DeploymentArgs, deployment: &str, log: &Path) -> anyhow::Result<i32> {
    let file = super::logging::private_log_file(log, true)
        .with_context(|| format!("Cannot create the log file {}", log.display()))?;
    let mut command = child_command(args, deployment)?;
    command.stdout(file.try_clone()?).stderr(file);
    wait_forwarding_sigterm(command.spawn().context("Cannot start cairn")?).await
}

/// Runs the deployment's own run; returns its exit code, stdout and stderr.
async fn run_captured(
    args: &DeploymentArgs,
    deployment: &str,
) -> anyhow::Result<(i32, String, String)> {
    let mut command = child_command(args, deployment)?;
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = command.spawn().context("Cannot start cairn")?;
    let forward = forward_sigterm(child.id());
    let output = child.wait_with_output().await;
    forward.abort();
    let output = output?;
    Ok((
        output.status.code().unwrap_or(1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    ))
}

/// `cairn deployment --deployment D ...`: this process's own arguments, with
/// `--all-deployments` replaced and the password moved into the environment.
fn child_command(
    args: &DeploymentArgs,
    deployment: &str,
) -> anyhow::Result<tokio::process::Command> {
    let mut argv: Vec<String> = std::env::args().skip(1).collect();
    argv.retain(|a| a != "--all-deployments");
    let at = argv
        .iter()
        .position(|a| a == "deployment")
        .context("no `deployment` argument")?;
    argv.insert(at + 1, "--deployment".into());
    argv.insert(at + 2, deployment.into());
    // Secrets given as flags travel to the child in its environment instead.
    strip_flag(&mut argv, &["--password", "-p"]);
    let exe = std::env::current_exe().context("Cannot find the cairn binary")?;
    let mut command = tokio::process::Command::new(exe);
    command
        .args(&argv)
        .stdin(Stdio::null())
        .env("CAIRN_NO_PROGRESS", "1")
        .kill_on_drop(false);
    if let Some(password) = &args.password {
        command.env("BOSH_CLIENT_SECRET", password);
    }
    Ok(command)
}

/// Waits for the child; returns its exit code.
async fn wait_forwarding_sigterm(mut child: tokio::process::Child) -> anyhow::Result<i32> {
    let forward = forward_sigterm(child.id());
    let status = child.wait().await;
    forward.abort();
    Ok(status?.code().unwrap_or(1))
}

/// Forwards SIGTERM to the child `pid` until aborted, so that it unlocks and cleans up its
/// own deployment (SIGINT reaches it from the terminal).
fn forward_sigterm(pid: Option<u32>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let Ok(mut terminate) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        else {
            return;
        };
        if terminate.recv().await.is_some() {
            let child = pid
                .and_then(|pid| i32::try_from(pid).ok())
                .and_then(rustix::process::Pid::from_raw);
            if let Some(child) = child {
                // ESRCH: the child has just exited, so there is nothing left to stop.
                if let Err(error) =
                    rustix::process::kill_process(child, rustix::process::Signal::TERM)
                {
                    tracing::debug!("SIGTERM to the deployment's process {child:?}: {error}");
                }
            }
        }
    })
}

/// Removes `--flag VALUE` and `--flag=VALUE` for each of `names`.
fn strip_flag(argv: &mut Vec<String>, names: &[&str]) {
    let mut i = 0;
    while i < argv.len() {
        let arg = &argv[i];
        if names.contains(&arg.as_str()) {
            argv.drain(i..(i + 2).min(argv.len()));
        } else if names.iter().any(|n| arg.starts_with(&format!("{n}="))) {
            argv.remove(i);
        } else {
            i += 1;
        }
    }
}

/// The error report at the end of a deployment's output (from its last `N errors
/// occurred:` line; else its last lines), and whether it advised `backup-cleanup`.
fn error_report(text: &str) -> (Vec<String>, bool) {
    let lines: Vec<&str> = text.lines().collect();
    let start = lines
        .iter()
        .rposition(|l| is_report_header(l))
        .unwrap_or(lines.len().saturating_sub(5));
    let advice = super::exit::BACKUP_CLEANUP_ADVICE;
    let advised = lines[start..].contains(&advice);
    let report = lines[start..]
        .iter()
        .filter(|l| **l != advice)
        .map(|l| (*l).to_string())
        .collect();
    (report, advised)
}

/// `1 error occurred:` or `N errors occurred:` (`orchestrator/error.go` `PrettyError`).
fn is_report_header(line: &str) -> bool {
    let Some((count, rest)) = line.split_once(' ') else {
        return false;
    };
    !count.is_empty()
        && count.bytes().all(|b| b.is_ascii_digit())
        && (rest == "error occurred:" || rest == "errors occurred:")
}

#[cfg(test)]
mod tests {
    use super::{error_report, is_report_header, strip_flag};

    #[test]
    fn the_report_is_found_by_bbrs_header_and_the_advice_noted() {
        assert!(is_report_header("1 error occurred:"));
        assert!(is_report_header("12 errors occurred:"));
        assert!(!is_report_header("x errors occurred:"));
        assert!(!is_report_header("  1 error occurred:"));
        let text = "[bbr] log\n2 errors occurred:\nerror 1:\na\nerror 2:\nb\nIt is recommended that you run `bbr backup-cleanup` to ensure that any temp files are cleaned up and all jobs are unlocked.\n";
        let (report, advised) = error_report(text);
        assert_eq!(
            report,
            ["2 errors occurred:", "error 1:", "a", "error 2:", "b"]
        );
        assert!(advised);
        let (_, advised) = error_report("1 error occurred:\nerror 1:\nx\n");
        assert!(!advised);
    }

    #[test]
    fn secrets_are_removed_from_the_child_arguments() {
        let mut argv: Vec<String> = [
            "deployment",
            "-t",
            "d",
            "-p",
            "s3cret",
            "--password=x",
            "backup",
        ]
        .iter()
        .map(ToString::to_string)
        .collect();
        strip_flag(&mut argv, &["--password", "-p"]);
        assert_eq!(argv, ["deployment", "-t", "d", "backup"]);
    }
}
