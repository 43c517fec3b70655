//! `cairn contract check PATH`: builds the host (this machine or an SSH host), runs the
//! library's check and prints the report. Exit codes: 0 the contract is kept (warnings
//! allowed), 1 a rule is violated, 2 the check could not be carried out.

use std::path::PathBuf;
use std::sync::Arc;

use cairn::contract::{check_job, CheckOptions};
use cairn::remote::local::LocalHost;
use cairn::remote::ssh::{HostKeyPolicy, SshDestination, SshHost, UnknownHost};
use cairn::remote::RemoteHost;
use cairn::workflow::RunContext;

use super::args::{ContractAction, ContractCheckArgs, UsageError};

/// Exit code when the check could not run at all.
pub(crate) const CANNOT_CHECK: i32 = 2;

/// Runs `cairn contract ...`; returns the exit code.
pub(crate) async fn run(action: ContractAction) -> anyhow::Result<i32> {
    let ContractAction::Check(args) = action;
    let host: Arc<dyn RemoteHost> = match connect(&args).await {
        Ok(host) => host,
        Err(error) => {
            eprintln!("{error:#}");
            return Ok(CANNOT_CHECK);
        }
    };
    let options = CheckOptions {
        round_trip: !args.skip_round_trip,
        script_timeout: args
            .script_timeout
            .unwrap_or(std::time::Duration::from_secs(30 * 60)),
        allowed_writes: args.allow_write.clone(),
        bbr_version: cairn::BBR_COMPATIBLE_VERSION.to_string(),
    };
    // Ctrl-C and SIGTERM stop the script in flight; the check still unlocks and cleans up.
    let context = RunContext::new(1, cairn::VERSION);
    let signals = super::signals::watch(context.clone());
    let result = check_job(host.as_ref(), &args.path, &options, &context.cancel).await;
    signals.abort();
    match result {
        Ok(report) => {
            if args.json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", report.to_text());
            }
            Ok(i32::from(report.failed()))
        }
        Err(error) => {
            eprintln!("{error}");
            Ok(CANNOT_CHECK)
        }
    }
}

async fn connect(args: &ContractCheckArgs) -> anyhow::Result<Arc<dyn RemoteHost>> {
    let Some(ssh) = &args.ssh else {
        if args.private_key_path.is_some() || args.host_key.is_some() {
            anyhow::bail!(UsageError(
                "--private-key-path and --host-key need --ssh USER@HOST".into()
            ));
        }
        return Ok(Arc::new(LocalHost));
    };
    let (username, host) = ssh.split_once('@').ok_or_else(|| {
        UsageError(format!(
            "--ssh `{ssh}`: write it as USER@HOST or USER@HOST:PORT"
        ))
    })?;
    if username.is_empty() || host.is_empty() {
        anyhow::bail!(UsageError(format!(
            "--ssh `{ssh}`: write it as USER@HOST or USER@HOST:PORT"
        )));
    }
    let Some(private_key) = args.private_key_path.clone() else {
        anyhow::bail!(UsageError(
            "--private-key-path flag is required with --ssh.".into()
        ));
    };
    let (address, port) = cairn::target::ssh::split_host_port(host);
    let host_key = if args.insecure_skip_host_key_check {
        HostKeyPolicy::AcceptAny
    } else if let Some(value) = &args.host_key {
        HostKeyPolicy::Pinned(super::connect::pinned_host_key(value)?)
    } else {
        HostKeyPolicy::KnownHosts {
            path: args.known_hosts.clone().unwrap_or_else(|| {
                std::env::home_dir()
                    .unwrap_or_else(|| PathBuf::from("/"))
                    .join(".ssh/known_hosts")
            }),
            on_unknown: UnknownHost::Refuse,
        }
    };
    let destination = SshDestination {
        name: host.to_string(),
        address,
        port,
        username: username.to_string(),
        private_key: private_key.into(),
        host_key,
        dialer: None,
    };
    Ok(Arc::new(SshHost::connect(&destination).await?))
}
