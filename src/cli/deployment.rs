//! `cairn deployment ...`: the deployment's instances from `--inventory` or the Director, then
//! the subcommand ([`super::action`]); `--all-deployments` goes to [`super::all_deployments`].

use std::sync::Arc;

use cairn::model::name::check_name;
use cairn::target::bosh::{BoshTarget, DirectorClient};
use cairn::target::inventory::Inventory;
use cairn::target::ssh::SshTarget;

use super::action::Mode;
use super::args::{Action, DeploymentArgs, UsageError};
use super::connect::{host_keys, open_proxy, DirectorLogin};

/// Runs `cairn deployment ...`; returns the exit code.
pub(crate) async fn run(mut args: DeploymentArgs) -> anyhow::Result<i32> {
    if let Some(topic) = args.action.help_topic() {
        return Ok(super::help::mode_help("deployment", topic));
    }
    director_password(&mut args)?;
    args.validate()?;
    if let Some(deployment) = &args.deployment {
        check_name("deployment", deployment, "given with --deployment")?;
    }
    let dialer = open_proxy(&args.common).await?;
    if let Some(inventory_path) = &args.inventory {
        let inventory = Inventory::load(inventory_path)?;
        let target = SshTarget::from_inventory(
            &inventory,
            inventory_path,
            args.deployment.clone(),
            &host_keys(&args.common),
        )?
        .with_dialer(dialer.as_ref());
        return super::action::run(&target, args.action, &args.common, Mode::Deployment, None)
            .await;
    }
    if args.all_deployments {
        super::all_deployments::before_connecting(&args.action);
    }
    let client = Arc::new(connect_director(&args, dialer.clone()).await?);
    if args.all_deployments {
        return super::all_deployments::run(&args, &client).await;
    }
    let name = args.deployment.clone().unwrap_or_default();
    let manifest = match &args.action {
        Action::Backup(backup) if backup.with_manifest => Some(client.manifest(&name).await?),
        _ => None,
    };
    let target = BoshTarget::new(client, &name, dialer);
    super::action::run(
        &target,
        args.action,
        &args.common,
        Mode::Deployment,
        manifest,
    )
    .await
}

/// `--password-file` read into `--password` (it wins over `BOSH_CLIENT_SECRET`); a password
/// given on the command line is warned about, since `ps` shows it to every local user.
fn director_password(args: &mut DeploymentArgs) -> anyhow::Result<()> {
    match &args.password_file {
        Some(_) if args.password_on_command_line => {
            Err(UsageError("Give either --password or --password-file, not both.".into()).into())
        }
        Some(path) => {
            let secret = cairn::remote::login_key::read_secret_file(path, "--password-file")?;
            args.password = Some(secret.as_str().to_string());
            Ok(())
        }
        None => {
            if args.password_on_command_line {
                tracing::warn!(
                    "--password on the command line is visible to every local user (ps, /proc); give it with --password-file FILE or BOSH_CLIENT_SECRET instead"
                );
            }
            Ok(())
        }
    }
}

/// The Director of `--target`, logged in with `--username`/`--password` and `--ca-cert`
/// (or `CA_CERT`, which wins over `BOSH_CA_CERT`).
async fn connect_director(
    args: &DeploymentArgs,
    dialer: Option<Arc<dyn cairn::remote::dial::Dialer>>,
) -> anyhow::Result<DirectorClient> {
    let login = DirectorLogin {
        target: args.target.clone().unwrap_or_default(),
        client: args.username.clone().unwrap_or_default(),
        secret: args.password.clone().unwrap_or_default(),
        ca_cert: args.ca_cert.clone(),
        retry: args.director_retry(),
    };
    login.connect(dialer).await
}
