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
//!
//! The `*_renewed_during_a_long_backup` tests (second half of the file) give credentials a
//! lifetime of seconds and make one upload outlast it: the credentials are renewed mid-run
//! (S3 from IMDSv2 and from the container-credentials endpoint, Azure's managed identity,
//! GCE's metadata server), and a renewal the endpoint refuses fails the run with one line
//! naming the source.

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
    /// The EC2 instance profile (IMDSv2).
    Aws,
    /// The container-credentials endpoint (ECS task role, EKS Pod Identity).
    AwsContainer,
    Azure,
    Gce,
}

/// The App Service identity header the Azure tests demand (not a secret: a test value).
const IDENTITY_HEADER: &str = "cairn-test-identity-header";

/// The container-credentials authorization token the AWS container tests demand (a test value).
const CONTAINER_TOKEN: &str = "cairn-test-container-token";

/// Runs cairn in `work` with no secret at all, only `cloud`'s identity endpoint: the stand-in.
/// HOME is an empty directory (no `~/.aws`, no gcloud file); IMDS stays disabled except for
/// the AWS child.
fn run_as_machine(work: &Path, standin: &MetadataStandin, cloud: Cloud, args: &[&str]) -> Output {
    let started = Instant::now();
    let output = machine_command(work, standin, cloud, args)
        .output()
        .expect("cairn runs");
    report(args, cloud, started, &output);
    output
}

/// Prints what a run as a machine of `cloud` did, for the test's log.
fn report(args: &[&str], cloud: Cloud, started: Instant, output: &Output) {
    eprintln!(
        "cairn {args:?} as a {cloud:?} machine -> {:?} in {:.1} s\n--- stdout\n{}--- stderr\n{}",
        output.status.code(),
        started.elapsed().as_secs_f64(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The command of [`run_as_machine`], not started.
fn machine_command(
    work: &Path,
    standin: &MetadataStandin,
    cloud: Cloud,
    args: &[&str],
) -> std::process::Command {
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
        Cloud::AwsContainer => standin.aws_container_env(Some(CONTAINER_TOKEN)),
        Cloud::Azure => standin.azure_env(Some(IDENTITY_HEADER)),
        Cloud::Gce => standin.gce_env(),
    };
    command.envs(identity).args(args);
    command
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
    let args = backup_args(bed, store, flags);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    run_as_machine(work, standin, cloud, &args)
}

/// The arguments of [`backup`].
fn backup_args(bed: &TestBed, store: &str, flags: &[&str]) -> Vec<String> {
    let inventory = bed.inventory();
    let mut args: Vec<String> = [
        "deployment",
        "--inventory",
        inventory.to_str().unwrap(),
        "backup",
        "--store",
        store,
    ]
    .iter()
    .map(|a| (*a).to_string())
    .collect();
    args.extend(flags.iter().map(|f| (*f).to_string()));
    args
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

// ---------------------------------------------------------------------------------------------
// Long runs: credentials that expire while a backup runs are renewed, not captured once.
//
// The stand-in issues credentials that live SHORT_LIFETIME seconds, and the fault proxy answers
// the first upload of a part of the artifact's data LATE_SECONDS late (the store stores it at
// once; the answer waits, as the end of a long upload would). Every request after that answer
// therefore needs a credential issued after the first one expired, whatever the SDK's refresh
// margin (aws-sdk: 10 s before expiry plus up to 5 s of jitter; object_store: 5 minutes before;
// google-cloud-auth: every 10 s when less than 4 minutes are left; docs/stores.md, "Credentials
// that expire"). The emulators do not all check credentials, so the proof is the proxy's log: the
// requests carried more than one credential, each one issued by the stand-in, and the last
// request not the first's. Then the same with the identity endpoint failing from the moment
// the late answer starts: the backup fails with exit code 1 and a line naming the credential
// source, and leaves no job locked and nothing staged.
// ---------------------------------------------------------------------------------------------

/// Lifetime of every credential in the renewal tests (seconds).
const SHORT_LIFETIME: u64 = 12;
/// How late the store's answer to one upload comes (seconds): longer than [`SHORT_LIFETIME`].
const LATE_SECONDS: u64 = 13;
/// The request answered late: the first upload request of the `files` job's artifact (a part
/// for S3, a block for Azure, a chunk for GCS).
const FIRST_UPLOAD: &str = r"^PUT .*files\.tar";
/// The size of the one large file backed up (three 8 MiB parts of random data).
const LARGE_FILE: usize = 20 * 1024 * 1024;

/// One host with the `files` job holding [`LARGE_FILE`] bytes of incompressible data, so its
/// artifact is uploaded in parts.
fn bed_with_a_large_artifact() -> TestBed {
    let bed = TestBed::start(&[("app", 0, &["app", "files"])]).expect("test bed");
    let files = bed.host("app", 0).vcap_dir.join("store/files");
    std::fs::create_dir_all(&files).unwrap();
    write_pseudo_random(&files.join("large.bin"), LARGE_FILE);
    bed
}

/// The stand-in with short-lived credentials.
fn short_lived_standin() -> MetadataStandin {
    MetadataStandin::start(&StandinOptions {
        expires_in: SHORT_LIFETIME,
        identity_header: Some(IDENTITY_HEADER.into()),
        container_token: Some(CONTAINER_TOKEN.into()),
        ..StandinOptions::default()
    })
}

/// Makes the proxy answer the first request matching `upload` (`METHOD path?query` regex)
/// [`LATE_SECONDS`] late, writing its marker when the wait starts.
fn answer_late(proxy: &FaultProxy, upload: &str) {
    // The proxy starts a list of rules afresh only when it differs from the last one.
    static RUN: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let run = RUN.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let faults = serde_json::json!({
        "rules": [{"match": upload, "outcome": "late", "run": run}],
        "late_seconds": LATE_SECONDS,
        "late_marker": proxy.marker("late").to_str().unwrap(),
    });
    let _ = std::fs::remove_file(proxy.marker("late"));
    proxy.set(&faults.to_string());
}

/// The credential an `Authorization` header names: a SigV4 access key id, or a bearer token.
fn credential_of(authorization: &str) -> String {
    if let Some(rest) = authorization.split("Credential=").nth(1) {
        return rest.split('/').next().unwrap_or("").to_string();
    }
    authorization
        .strip_prefix("Bearer ")
        .unwrap_or(authorization)
        .to_string()
}

/// The good case: a backup through the late answer completes, and its requests (from `skip`
/// on) carried several credentials, each one the stand-in issued for `source`, the last one
/// not the first's.
fn renewed_during_a_long_backup(
    bed: &TestBed,
    standin: &MetadataStandin,
    cloud: Cloud,
    source: &str,
    proxy: &FaultProxy,
    store: &str,
    flags: &[&str],
) {
    let skip = proxy.authorized_requests().len();
    let issued_before = standin.counts().issued(source);
    answer_late(proxy, FIRST_UPLOAD);
    let work = workdir();
    let output = backup(bed, work.path(), standin, cloud, store, flags);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert_nothing_left(bed);
    let requests = proxy.authorized_requests();
    let requests = &requests[skip..];
    assert!(
        proxy.outcomes().iter().any(|o| o.starts_with("late ")),
        "no request matched `{FIRST_UPLOAD}`: {requests:#?}"
    );
    let issued = standin.counts().tokens();
    let used: Vec<String> = requests
        .iter()
        .map(|(_, authorization)| credential_of(authorization))
        .collect();
    for (request, credential) in requests.iter().map(|(r, _)| r).zip(&used) {
        assert!(
            issued.contains(credential),
            "{request} carried no credential of the stand-in: {credential:.60}"
        );
    }
    let distinct: std::collections::BTreeSet<&String> = used.iter().collect();
    assert!(
        distinct.len() > 1,
        "every request of a backup longer than the credentials' lifetime carried the same one"
    );
    assert_ne!(
        used.first(),
        used.last(),
        "the last request carried the first credential, {LATE_SECONDS} s after it expired"
    );
    let counts = standin.counts();
    eprintln!(
        "{cloud:?}: {} store requests carried {} distinct credentials; the stand-in issued {} \
         ({source})",
        used.len(),
        distinct.len(),
        counts.issued(source) - issued_before
    );
    assert!(counts.issued(source) > issued_before + 1, "{counts:?}");
}

/// The bad case: the identity endpoint fails from the moment the late answer starts to wait.
/// The backup fails with exit code 1 and one line saying the credentials from `source_named`
/// could not be had, the endpoint was asked again (and refused), nothing is left locked or
/// staged, and the backup is not listed as complete.
fn renewal_refused_during_a_long_backup(
    bed: &TestBed,
    standin: &MetadataStandin,
    cloud: Cloud,
    proxy: &FaultProxy,
    store: &str,
    flags: &[&str],
    source_named: &[&str],
) {
    let work = workdir();
    let complete_before = complete_backups(work.path(), standin, cloud, store);
    answer_late(proxy, FIRST_UPLOAD);
    let refused_before = standin.counts().refused();
    let args = backup_args(bed, store, flags);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let started = Instant::now();
    let mut child = machine_command(work.path(), standin, cloud, &args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("cairn runs");
    let deadline = Instant::now() + std::time::Duration::from_secs(90);
    while !proxy.marker("late").exists() {
        let ended = child.try_wait().expect("cairn runs").is_some();
        if ended || Instant::now() > deadline {
            let output = child.wait_with_output().expect("cairn ends");
            panic!("no upload reached the proxy: {}", text(&output));
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    standin.set_failure(Some(500));
    let output = child.wait_with_output().expect("cairn ends");
    report(&args, cloud, started, &output);
    standin.set_failure(None);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    let line = stderr
        .lines()
        .find(|line| source_named.iter().all(|fragment| line.contains(fragment)))
        .unwrap_or_else(|| panic!("no line naming {source_named:?} in: {stderr}"));
    assert!(line.len() < 1000, "{line}");
    assert!(
        standin.counts().refused() > refused_before,
        "the endpoint was never asked again: {:?}",
        standin.counts()
    );
    assert_nothing_left(bed);
    assert_eq!(
        complete_backups(work.path(), standin, cloud, store),
        complete_before,
        "the failed backup is listed complete"
    );
}

/// The ids of the backups `backups list` shows complete.
fn complete_backups(
    work: &Path,
    standin: &MetadataStandin,
    cloud: Cloud,
    store: &str,
) -> Vec<String> {
    let list = run_as_machine(work, standin, cloud, &["backups", "--store", store, "list"]);
    assert_eq!(list.status.code(), Some(0), "{}", text(&list));
    String::from_utf8_lossy(&list.stdout)
        .lines()
        .skip(1)
        .filter(|row| row.split('\t').nth(3) == Some("complete"))
        .map(|row| row.split('\t').next().unwrap_or("").to_string())
        .collect()
}

#[test]
fn aws_instance_profile_credentials_are_renewed_during_a_long_backup() {
    cairn_testbed::require_root!();
    let moto = Emulator::start(Server::Moto);
    moto.fixture(&["create-bucket", "cairn-backups", "versioned"]);
    let proxy = FaultProxy::start_logging_authorization(&moto.endpoint, "{}");
    let store = format!(
        "s3://cairn-backups/imds-long?region=us-east-1&endpoint={}",
        proxy.endpoint
    );
    let standin = short_lived_standin();
    let bed = bed_with_a_large_artifact();
    renewed_during_a_long_backup(&bed, &standin, Cloud::Aws, "aws", &proxy, &store, &[]);
}

#[test]
fn aws_container_credentials_are_renewed_during_a_long_backup() {
    cairn_testbed::require_root!();
    let moto = Emulator::start(Server::Moto);
    moto.fixture(&["create-bucket", "cairn-backups", "versioned"]);
    let proxy = FaultProxy::start_logging_authorization(&moto.endpoint, "{}");
    let store = format!(
        "s3://cairn-backups/container-long?region=us-east-1&endpoint={}",
        proxy.endpoint
    );
    let standin = short_lived_standin();
    let bed = bed_with_a_large_artifact();
    renewed_during_a_long_backup(
        &bed,
        &standin,
        Cloud::AwsContainer,
        "ecs",
        &proxy,
        &store,
        &[],
    );
    renewal_refused_during_a_long_backup(
        &bed,
        &standin,
        Cloud::AwsContainer,
        &proxy,
        &store,
        &[],
        &["container", "500"],
    );
}

#[test]
fn azure_managed_identity_tokens_are_renewed_during_a_long_backup() {
    cairn_testbed::require_root!();
    let azurite = azurite_with_oauth();
    let origin = azurite.endpoint.trim_end_matches("/devstoreaccount1");
    let proxy = FaultProxy::start_logging_authorization(origin, "{}");
    let account = format!("{}/devstoreaccount1", proxy.endpoint);
    let fixture = std::process::Command::new("python3")
        .arg(stores_dir().join("fixture.py"))
        .args(["azure", &account, "create-container", "cairn-backups"])
        .output()
        .unwrap();
    assert!(fixture.status.success(), "{}", text(&fixture));
    let store = format!("az://devstoreaccount1/cairn-backups/mi-long?endpoint={account}");
    let standin = short_lived_standin();
    let bed = bed_with_a_large_artifact();
    let flags = ["--allow-unversioned"];
    renewed_during_a_long_backup(
        &bed,
        &standin,
        Cloud::Azure,
        "azure",
        &proxy,
        &store,
        &flags,
    );
    renewal_refused_during_a_long_backup(
        &bed,
        &standin,
        Cloud::Azure,
        &proxy,
        &store,
        &flags,
        &["managed identity", "500"],
    );
}

#[test]
fn gce_service_account_tokens_are_renewed_during_a_long_backup() {
    cairn_testbed::require_root!();
    let gcs = Emulator::start(Server::FakeGcs);
    gcs.fixture(&["create-bucket", "cairn-backups", "versioned"]);
    let proxy = FaultProxy::start_logging_authorization(&gcs.endpoint, "{}");
    let store = format!("gs://cairn-backups/mds-long?endpoint={}", proxy.endpoint);
    let standin = short_lived_standin();
    let bed = bed_with_a_large_artifact();
    renewed_during_a_long_backup(&bed, &standin, Cloud::Gce, "gce", &proxy, &store, &[]);
    renewal_refused_during_a_long_backup(
        &bed,
        &standin,
        Cloud::Gce,
        &proxy,
        &store,
        &[],
        &["metadata server", "500"],
    );
}
