//! moto for the S3 tests, started through `integration/stores/moto.sh`.
//!
//! [`Moto::shared`] starts one server on a fresh port and shares it between the tests of a test
//! binary that run at the same time; the last one to finish stops it (`Drop`). Nothing here can
//! reach AWS: every store gets moto's endpoint, and [`hermetic_environment`] gives the AWS
//! credential chain fixed test keys, no profile files and no instance metadata service.
#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Once, PoisonError, Weak};

use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_s3::types::{BucketVersioningStatus, VersioningConfiguration};
use aws_sdk_s3::Client;
use cairn_store::StoreLocation;
use cairn_store_s3::S3Store;

/// The region every test store uses.
pub const REGION: &str = "us-east-1";

/// Gives the AWS credential chain the test keys and nothing else to find, once per process.
pub fn hermetic_environment() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        for name in [
            "AWS_SESSION_TOKEN",
            "AWS_PROFILE",
            "AWS_DEFAULT_PROFILE",
            "AWS_REGION",
            "AWS_DEFAULT_REGION",
            "AWS_ENDPOINT_URL",
            "AWS_ENDPOINT_URL_S3",
            "AWS_WEB_IDENTITY_TOKEN_FILE",
            "AWS_ROLE_ARN",
            "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
            "AWS_USE_FIPS_ENDPOINT",
            "AWS_USE_DUALSTACK_ENDPOINT",
        ] {
            std::env::remove_var(name);
        }
        std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
        std::env::set_var("AWS_ACCESS_KEY_ID", "testing");
        std::env::set_var("AWS_SECRET_ACCESS_KEY", "testing");
        std::env::set_var("AWS_CONFIG_FILE", "/nonexistent/cairn-tests/aws-config");
        std::env::set_var(
            "AWS_SHARED_CREDENTIALS_FILE",
            "/nonexistent/cairn-tests/aws-credentials",
        );
        std::env::set_var("NO_PROXY", "127.0.0.1,localhost");
    });
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../integration/stores/moto.sh")
}

fn moto_sh(arguments: &[&str], environment: &[(&str, &str)]) -> String {
    let output = Command::new("bash")
        .arg(script())
        .args(arguments)
        .envs(environment.iter().copied())
        .output()
        .expect("run moto.sh");
    assert!(
        output.status.success(),
        "moto.sh {arguments:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

fn install() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        moto_sh(&["install"], &[]);
    });
}

/// A running moto server.
#[derive(Debug)]
pub struct Moto {
    dir: PathBuf,
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
}

/// How a test bucket is set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BucketKind {
    /// Versioning never enabled.
    Unversioned,
    /// Versioning enabled.
    Versioned,
    /// Created with Object Lock (which enables versioning).
    ObjectLock,
}

impl Moto {
    /// The server of this test binary, started if no running test holds it.
    pub fn shared() -> Arc<Moto> {
        static SHARED: Mutex<Weak<Moto>> = Mutex::new(Weak::new());
        let mut shared = SHARED.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(moto) = shared.upgrade() {
            return moto;
        }
        let moto = Arc::new(Moto::start(&[]));
        *shared = Arc::downgrade(&moto);
        moto
    }

    /// A server of one's own, with extra environment for `moto_server`.
    pub fn start(environment: &[(&str, &str)]) -> Moto {
        static COUNT: AtomicUsize = AtomicUsize::new(0);
        hermetic_environment();
        install();
        let dir = std::env::temp_dir().join(format!(
            "cairn-moto-{}-{}",
            std::process::id(),
            COUNT.fetch_add(1, Ordering::Relaxed)
        ));
        let dir_text = dir.to_str().expect("UTF-8 temp dir");
        let endpoint = moto_sh(&["start", dir_text], environment);
        Moto { dir, endpoint }
    }

    /// The store URL of `bucket`/`prefix` on this server.
    pub fn url(&self, bucket: &str, prefix: &str) -> String {
        format!(
            "s3://{bucket}/{prefix}?region={REGION}&endpoint={}&path_style=true",
            self.endpoint
        )
    }

    /// The store of `bucket`/`prefix`, made as Cairn makes it: from its URL.
    pub async fn store(&self, bucket: &str, prefix: &str) -> S3Store {
        let location = StoreLocation::parse(&self.url(bucket, prefix)).expect("valid store URL");
        S3Store::from_location(&location).await.expect("S3 store")
    }

    /// A plain SDK client with the test keys, for setting up and inspecting buckets.
    pub fn client(&self) -> Client {
        let config = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .endpoint_url(&self.endpoint)
            .force_path_style(true)
            .region(Region::new(REGION))
            .credentials_provider(Credentials::new("testing", "testing", None, None, "tests"))
            .build();
        Client::from_conf(config)
    }

    /// Creates `bucket` set up as `kind`.
    pub async fn create_bucket(&self, bucket: &str, kind: BucketKind) {
        let client = self.client();
        client
            .create_bucket()
            .bucket(bucket)
            .object_lock_enabled_for_bucket(kind == BucketKind::ObjectLock)
            .send()
            .await
            .expect("CreateBucket");
        if kind == BucketKind::Versioned {
            let enabled = VersioningConfiguration::builder()
                .status(BucketVersioningStatus::Enabled)
                .build();
            client
                .put_bucket_versioning()
                .bucket(bucket)
                .versioning_configuration(enabled)
                .send()
                .await
                .expect("PutBucketVersioning");
        }
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        // No assertion here: a panic while a failed test unwinds would abort the process.
        let _ = Command::new("bash")
            .arg(script())
            .arg("stop")
            .arg(&self.dir)
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
