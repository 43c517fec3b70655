//! End-to-end: Cairn on a cloud machine with no secret in its environment, as the clouds' own
//! CLIs work there: an EC2 instance profile (IMDSv2), an Azure managed identity, a GCE service
//! account. The identity endpoint is `integration/stores/metadata_standin.py`
//! ([`cairn_testbed::metadata`]) on loopback, selected only through the overrides the libraries
//! read (`AWS_EC2_METADATA_SERVICE_ENDPOINT`, `IDENTITY_ENDPOINT`, `GCE_METADATA_HOST`); every
//! child process gets them explicitly, so nothing can reach 169.254.169.254 or a cloud host.
//!
//! Each test runs a real `backup` into a real emulator (moto, Azurite with OAuth over TLS,
//! fake-gcs-server) behind the fault proxy, which logs every request's `Authorization` header:
//! the test proves the credential the stand-in issued is the one the store received, then
//! lists and verifies the backup with the same identity. Before that, the bad case: the
//! identity endpoint answers 500, and the backup fails with one line naming the sources tried,
//! exit code 1, before any lock script runs.

use std::path::Path;
use std::process::Output;
use std::time::Instant;

use cairn_testbed::metadata::{Counts, MetadataStandin, StandinOptions};
use cairn_testbed::TestBed;

use crate::common::*;

/// Every variable through which a credential (or another identity endpoint) could reach
/// cairn: removed from every child, which then gets only the stand-in's.
const CREDENTIAL_VARIABLES: [&str; 26] = [
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
    "AWS_CONFIG_FILE",
    "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_ROLE_ARN",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_EC2_METADATA_SERVICE_ENDPOINT",
    "AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE",
    "AZURE_STORAGE_CONNECTION_STRING",
    "AZURE_STORAGE_KEY",
    "AZURE_STORAGE_SAS_TOKEN",
    "AZURE_CLIENT_ID",
    "AZURE_TENANT_ID",
    "AZURE_CLIENT_SECRET",
    "AZURE_FEDERATED_TOKEN_FILE",
    "AZURE_MSI_ENDPOINT",
    "IDENTITY_ENDPOINT",
    "IDENTITY_HEADER",
    "MSI_ENDPOINT",
    "GOOGLE_APPLICATION_CREDENTIALS",
    "GCE_METADATA_HOST",
    "CLOUDSDK_CONFIG",
];

/// Which cloud's identity a child gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cloud {
    Aws,
    Azure,
    Gce,
}

/// The App Service identity header the Azure tests demand (not a secret: a test value).
const IDENTITY_HEADER: &str = "cairn-test-identity-header";

/// Runs cairn in `work` with no secret at all, only `cloud`'s identity endpoint: the stand-in.
/// HOME is an empty directory (no `~/.aws`, no gcloud file); IMDS stays disabled except for
/// the AWS child.
fn run_as_machine(work: &Path, standin: &MetadataStandin, cloud: Cloud, args: &[&str]) -> Output {
    let home = work.join("home");
    std::fs::create_dir_all(&home).unwrap();
    let mut command = cairn_command_in(work);
    for name in CREDENTIAL_VARIABLES {
        command.env_remove(name);
    }
    command
        .env("HOME", &home)
        .env("AWS_EC2_METADATA_DISABLED", "true");
    let identity = match cloud {
        Cloud::Aws => {
            command.env_remove("AWS_EC2_METADATA_DISABLED");
            standin.aws_env()
        }
        Cloud::Azure => standin.azure_env(Some(IDENTITY_HEADER)),
        Cloud::Gce => standin.gce_env(),
    };
    command.envs(identity).args(args);
    let started = Instant::now();
    let output = command.output().expect("cairn runs");
    eprintln!(
        "cairn {args:?} as a {cloud:?} machine -> {:?} in {:.1} s\n--- stdout\n{}--- stderr\n{}",
        output.status.code(),
        started.elapsed().as_secs_f64(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// `deployment --inventory BED backup --store STORE FLAGS` as a machine of `cloud`.
fn backup(
    bed: &TestBed,
    work: &Path,
    standin: &MetadataStandin,
    cloud: Cloud,
    store: &str,
    flags: &[&str],
) -> Output {
    let inventory = bed.inventory();
    let mut args = vec![
        "deployment",
        "--inventory",
        inventory.to_str().unwrap(),
        "backup",
        "--store",
        store,
    ];
    args.extend_from_slice(flags);
    run_as_machine(work, standin, cloud, &args)
}

/// The bad case: the identity endpoint answers 500. The backup fails with exit code 1 and one
/// line naming the store and every source tried (`tried` fragments), before any lock script
/// ran; the stand-in was asked (so the failure is its answer, not some other address).
fn refused_without_identity(
    bed: &TestBed,
    standin: &MetadataStandin,
    cloud: Cloud,
    store: &str,
    flags: &[&str],
    tried: &[&str],
) {
    standin.set_failure(Some(500));
    let work = workdir();
    let output = backup(bed, work.path(), standin, cloud, store, flags);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    let line = stderr
        .lines()
        .find(|line| line.contains("refused the credentials"))
        .unwrap_or_else(|| panic!("no credentials line in: {stderr}"));
    for fragment in tried {
        assert!(line.contains(fragment), "`{fragment}` missing in: {line}");
    }
    assert!(
        standin.counts().refused() > 0,
        "the stand-in was never asked: {:?}",
        standin.counts()
    );
    assert_no_script_ran(bed);
    assert_nothing_left(bed);
    standin.set_failure(None);
}

/// The good case: backup, then list and verify with the same identity; returns the stand-in's
/// counts after the backup.
fn backup_list_verify(
    bed: &TestBed,
    standin: &MetadataStandin,
    cloud: Cloud,
    store: &str,
    flags: &[&str],
) -> Counts {
    let work = workdir();
    let output = backup(bed, work.path(), standin, cloud, store, flags);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert_nothing_left(bed);
    let counts = standin.counts();
    let list = run_as_machine(
        work.path(),
        standin,
        cloud,
        &["backups", "--store", store, "list"],
    );
    assert_eq!(list.status.code(), Some(0), "{}", text(&list));
    let rows: Vec<String> = String::from_utf8_lossy(&list.stdout)
        .lines()
        .skip(1)
        .map(str::to_string)
        .collect();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].split('\t').nth(3), Some("complete"), "{rows:?}");
    let id = rows[0].split('\t').next().unwrap();
    let verify = run_as_machine(
        work.path(),
        standin,
        cloud,
        &["backups", "--store", store, "verify", id],
    );
    assert_eq!(verify.status.code(), Some(0), "{}", text(&verify));
    counts
}

/// Every request the proxy forwarded carried `expected(authorization)`, and there were some.
fn every_request_used(proxy: &FaultProxy, skip: usize, issued: &[String], describe: &str) {
    let seen = proxy.authorizations();
    let seen = &seen[skip.min(seen.len())..];
    assert!(!seen.is_empty(), "no request reached the store");
    for authorization in seen {
        assert!(
            issued
                .iter()
                .any(|token| authorization.contains(token.as_str())),
            "a request carried no credential of the stand-in ({describe}): {authorization:.120}"
        );
    }
}

#[test]
fn aws_instance_profile_through_imdsv2() {
    cairn_testbed::require_root!();
    let moto = Emulator::start(Server::Moto);
    moto.fixture(&["create-bucket", "cairn-backups", "versioned"]);
    let proxy = FaultProxy::start_logging_authorization(&moto.endpoint, "{}");
    let store = format!(
        "s3://cairn-backups/imds?region=us-east-1&endpoint={}",
        proxy.endpoint
    );
    let standin = MetadataStandin::start(&StandinOptions::default());
    let bed = TestBed::start(&[]).expect("test bed");

    refused_without_identity(
        &bed,
        &standin,
        Cloud::Aws,
        &store,
        &[],
        &[
            "AWS_ACCESS_KEY_ID",
            "AWS_PROFILE",
            "instance metadata service",
        ],
    );
    assert_eq!(standin.counts().issued("aws"), 0);

    let skip = proxy.authorizations().len();
    let counts = backup_list_verify(&bed, &standin, Cloud::Aws, &store, &[]);
    assert!(counts.requests("PUT /latest/api/token") > 0, "{counts:?}");
    assert!(counts.issued("aws") > 0, "{counts:?}");
    // SigV4 names the access key id: `Credential=ASIASTANDIN00002/<date>/...`.
    let key_ids: Vec<String> = standin
        .counts()
        .tokens()
        .iter()
        .map(|key| format!("Credential={key}/"))
        .collect();
    every_request_used(&proxy, skip, &key_ids, "SigV4 access key id");
}

/// Azurite with `--oauth basic` over TLS, behind the proxy (cairn speaks http to the proxy, the
/// proxy https to Azurite, which takes bearer tokens only over https).
fn azurite_with_oauth() -> Emulator {
    Emulator::start_with(
        Server::Azurite,
        &cairn_testbed::stores::StartOptions {
            env: vec![("AZURITE_OAUTH".into(), "basic".into())],
            external_url: None,
        },
    )
}

#[test]
fn azure_managed_identity_through_the_identity_endpoint() {
    cairn_testbed::require_root!();
    let azurite = azurite_with_oauth();
    let origin = azurite.endpoint.trim_end_matches("/devstoreaccount1");
    let proxy = FaultProxy::start_logging_authorization(origin, "{}");
    let account = format!("{}/devstoreaccount1", proxy.endpoint);
    // Created with the account key, through the proxy (Azurite's certificate is self-signed).
    let fixture = std::process::Command::new("python3")
        .arg(stores_dir().join("fixture.py"))
        .args(["azure", &account, "create-container", "cairn-backups"])
        .output()
        .unwrap();
    assert!(fixture.status.success(), "{}", text(&fixture));
    let store = format!("az://devstoreaccount1/cairn-backups/mi?endpoint={account}");
    let standin = MetadataStandin::start(&StandinOptions {
        identity_header: Some(IDENTITY_HEADER.into()),
        ..StandinOptions::default()
    });
    let bed = TestBed::start(&[]).expect("test bed");

    refused_without_identity(
        &bed,
        &standin,
        Cloud::Azure,
        &store,
        &["--allow-unversioned"],
        &[
            "IDENTITY_ENDPOINT",
            "AZURE_STORAGE_KEY",
            "AZURE_CLIENT_SECRET",
            "managed identity",
            "500",
        ],
    );
    assert_eq!(standin.counts().issued("azure"), 0);

    let skip = proxy.authorizations().len();
    let counts = backup_list_verify(
        &bed,
        &standin,
        Cloud::Azure,
        &store,
        &["--allow-unversioned"],
    );
    assert!(counts.issued("azure") > 0, "{counts:?}");
    let bearers: Vec<String> = standin
        .counts()
        .tokens()
        .iter()
        .map(|token| format!("Bearer {token}"))
        .collect();
    every_request_used(&proxy, skip, &bearers, "bearer token");
}

#[test]
fn gce_service_account_through_the_metadata_server() {
    cairn_testbed::require_root!();
    let gcs = Emulator::start(Server::FakeGcs);
    gcs.fixture(&["create-bucket", "cairn-backups", "versioned"]);
    let proxy = FaultProxy::start_logging_authorization(&gcs.endpoint, "{}");
    let store = format!("gs://cairn-backups/mds?endpoint={}", proxy.endpoint);
    let standin = MetadataStandin::start(&StandinOptions::default());
    let bed = TestBed::start(&[]).expect("test bed");

    refused_without_identity(
        &bed,
        &standin,
        Cloud::Gce,
        &store,
        &[],
        &[
            "GOOGLE_APPLICATION_CREDENTIALS",
            "gcloud",
            "metadata server",
            &standin.address,
        ],
    );
    assert_eq!(standin.counts().issued("gce"), 0);

    let skip = proxy.authorizations().len();
    let counts = backup_list_verify(&bed, &standin, Cloud::Gce, &store, &[]);
    assert!(counts.issued("gce") > 0, "{counts:?}");
    let bearers: Vec<String> = standin
        .counts()
        .tokens()
        .iter()
        .map(|token| format!("Bearer {token}"))
        .collect();
    every_request_used(&proxy, skip, &bearers, "bearer token");
}
