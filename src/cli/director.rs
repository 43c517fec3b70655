//! `cairn director ...`: the BOSH Director VM over SSH, then the subcommand
//! ([`super::action`]).

use cairn::target::ssh::SshTarget;

use super::action::Mode;
use super::args::DirectorArgs;
use super::connect::{host_keys, open_proxy, pinned_host_key};

/// Runs `cairn director ...`; returns the exit code.
pub(crate) async fn run(args: DirectorArgs) -> anyhow::Result<i32> {
    if let Some(topic) = args.action.help_topic() {
        return Ok(super::help::mode_help("director", topic));
    }
    args.validate()?;
    let host = args.host.clone().unwrap_or_default();
    let username = args.username.clone().unwrap_or_default();
    let key = args.private_key_path.clone().unwrap_or_default();
    let pinned = args.host_key.as_deref().map(pinned_host_key).transpose()?;
    let dialer = open_proxy(&args.common).await?;
    let target = SshTarget::director(&host, &username, &key, &host_keys(&args.common), pinned)
        .with_dialer(dialer.as_ref());
    super::action::run(&target, args.action, &args.common, Mode::Director, None).await
}
