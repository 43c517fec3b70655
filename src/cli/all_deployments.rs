//! `--all-deployments` (bbr-facts §1.3): every deployment the client can see, at most
//! `--deployment-parallelism` (default 10) at once, each in its own `cairn` process with its
//! own log file, and bbr's summary and exit code (1 on any failure, never the bitmask).
//!
//! A child process per deployment keeps each run exactly what `--deployment D` would do —
//! its own SSH user, journal, signals and error report — and gives each its own log without
//! untangling interleaved output. Secrets reach the children through the environment, never
//! their command line.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use cairn::target::bosh::DirectorClient;
use futures::stream::{self, StreamExt};

use super::args::{Action, DeploymentArgs};

/// bbr's default and Cairn's default for `--deployment-parallelism`.
pub(crate) const DEFAULT_DEPLOYMENT_PARALLELISM: usize = 10;

/// Words of the summary lines for each subcommand.
fn verbs(action: &Action) -> (&'static str, &'static str) {
    match action {
        Action::PreBackupCheck(_) => ("pre-backup-check", "checked"),
        Action::BackupCleanup => ("cleanup", "cleaned up"),
        _ => ("backup", "backed up"),
    }
}

fn now() -> String {
    chrono::Local::now().format("%H:%M:%S").to_string()
}

/// Runs the subcommand for every deployment; returns the exit code.
pub(crate) async fn run(
    args: &DeploymentArgs,
    client: &Arc<DirectorClient>,
) -> anyhow::Result<i32> {
    let deployments = client.deployments().await?;
    if deployments.is_empty() {
        anyhow::bail!("Failed to find any deployments");
    }
    let (verb, done) = verbs(&args.action);
    let log_dir = log_dir(&args.action)?;
    let timestamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ").to_string();
    println!("[{}] Pending: {}", now(), deployments.join(", "));
    println!("-------------------------");
    let parallelism = args
        .deployment_parallelism
        .unwrap_or(DEFAULT_DEPLOYMENT_PARALLELISM);
    let runs = deployments.iter().map(|deployment| {
        let log = log_dir.join(format!("{deployment}_{timestamp}.log"));
        run_logged(args, deployment, log, verb)
    });
    let results: Vec<(String, bool, PathBuf)> = stream::iter(runs)
        .buffer_unordered(parallelism)
        .collect()
        .await;
    Ok(summarize(args, &results, done))
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

/// Runs one deployment with its start and end lines (and its log when it failed); returns
/// its name, whether it succeeded, and its log file.
async fn run_logged(
    args: &DeploymentArgs,
    deployment: &str,
    log: PathBuf,
    verb: &str,
) -> (String, bool, PathBuf) {
    println!(
        "[{}] Starting {verb} of {deployment}, log file: {}",
        now(),
        log.display()
    );
    let result = run_one(args, deployment, &log).await;
    let succeeded = matches!(result, Ok(0));
    if succeeded {
        println!("[{}] Finished {verb} of {deployment}", now());
    } else {
        println!("[{}] ERROR: failed to {verb} {deployment}", now());
        if let Err(error) = &result {
            println!("{error:#}");
        }
        if let Ok(text) = std::fs::read_to_string(&log) {
            print!("{text}");
        }
    }
    (deployment.to_string(), succeeded, log)
}

/// bbr's summary: who succeeded, who failed and why; returns the exit code.
fn summarize(args: &DeploymentArgs, results: &[(String, bool, PathBuf)], done: &str) -> i32 {
    let mut succeeded: Vec<&str> = results
        .iter()
        .filter(|r| r.1)
        .map(|r| r.0.as_str())
        .collect();
    let mut failed: Vec<&(String, bool, PathBuf)> = results.iter().filter(|r| !r.1).collect();
    succeeded.sort_unstable();
    failed.sort_by(|a, b| a.0.cmp(&b.0));
    println!("-------------------------");
    println!("Successfully {done}: {}", succeeded.join(", "));
    if failed.is_empty() {
        return 0;
    }
    let names: Vec<&str> = failed.iter().map(|r| r.0.as_str()).collect();
    println!("FAILED: {}", names.join(", "));
    eprintln!(
        "{} out of {} deployments cannot be {done}:",
        failed.len(),
        results.len()
    );
    for name in &names {
        eprintln!("  {name}");
    }
    for (name, _, log) in failed {
        eprintln!("Deployment '{name}':");
        for line in error_report(log) {
            eprintln!("  {line}");
        }
    }
    if matches!(args.action, Action::Backup(_)) {
        eprintln!("It is recommended that you run `bbr deployment --all-deployments backup-cleanup` to ensure that any temp files are cleaned up and all jobs are unlocked.");
    }
    1
}

/// Runs `cairn deployment --deployment D ...` (this process's own arguments, with
/// `--all-deployments` replaced) with its output in `log`; returns its exit code.
async fn run_one(args: &DeploymentArgs, deployment: &str, log: &Path) -> anyhow::Result<i32> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("Cannot create the log file {}", log.display()))?;
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
        .stdin(std::process::Stdio::null())
        .stdout(file.try_clone()?)
        .stderr(file)
        .env("CAIRN_NO_PROGRESS", "1")
        .kill_on_drop(false);
    if let Some(password) = &args.password {
        command.env("BOSH_CLIENT_SECRET", password);
    }
    let mut child = command.spawn().context("Cannot start cairn")?;
    let pid = child.id();
    // SIGINT reaches the children from the terminal; forward SIGTERM so that each child
    // unlocks and cleans up its own deployment.
    let forward = tokio::spawn(async move {
        let Ok(mut terminate) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        else {
            return;
        };
        if terminate.recv().await.is_some() {
            if let Some(pid) = pid {
                let _ = std::process::Command::new("kill")
                    .args(["-TERM", &pid.to_string()])
                    .status();
            }
        }
    });
    let status = child.wait().await?;
    forward.abort();
    Ok(status.code().unwrap_or(1))
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

/// The `N error(s) occurred` report at the end of a deployment's log, or its last lines.
fn error_report(log: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let start = lines
        .iter()
        .rposition(|l| l.ends_with("error(s) occurred:"))
        .unwrap_or(lines.len().saturating_sub(5));
    lines[start..]
        .iter()
        .filter(|l| !l.starts_with("It is recommended"))
        .map(|l| (*l).to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::strip_flag;

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
