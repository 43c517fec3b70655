//! moto for the S3 tests, started through `integration/stores/moto.sh` by the emulator helper
//! of the integration crate (`cairn_testbed::stores`).
//!
//! [`Moto::shared`] starts one server on a fresh port and shares it between the tests of a test
//! binary that run at the same time; the last one to finish stops it (`Drop`). Nothing here can
//! reach AWS: every store gets moto's endpoint, and [`hermetic_environment`] gives the AWS
//! credential chain fixed test keys, no profile files and no instance metadata service.
#![allow(dead_code, unreachable_pub)]

use std::ops::Deref;
use std::sync::{Arc, Once};

use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_s3::types::{BucketVersioningStatus, VersioningConfiguration};
use aws_sdk_s3::Client;
use cairn_store::StoreLocation;
use cairn_store_s3::S3Store;
use cairn_testbed::stores::{Emulator, Server, StartOptions, AWS_ENV};

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
        // AWS_EC2_METADATA_DISABLED=true and moto's keys.
        for (name, value) in AWS_ENV {
            std::env::set_var(name, value);
        }
        std::env::set_var("AWS_CONFIG_FILE", "/nonexistent/cairn-tests/aws-config");
        std::env::set_var(
            "AWS_SHARED_CREDENTIALS_FILE",
            "/nonexistent/cairn-tests/aws-credentials",
        );
        std::env::set_var("NO_PROXY", "127.0.0.1,localhost");
    });
}

/// A running moto server; its `endpoint` (`http://127.0.0.1:PORT`) through `Deref`.
#[derive(Debug)]
pub struct Moto(Arc<Emulator>);

impl Deref for Moto {
    type Target = Emulator;

    fn deref(&self) -> &Emulator {
        &self.0
    }
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
    pub fn shared() -> Moto {
        hermetic_environment();
        Moto(Emulator::shared(Server::Moto))
    }

    /// A server of one's own, with extra environment for `moto_server`.
    pub fn start(environment: &[(&str, &str)]) -> Moto {
        hermetic_environment();
        let options = StartOptions {
            env: environment
                .iter()
                .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
                .collect(),
            ..StartOptions::default()
        };
        Moto(Arc::new(Emulator::start_with(Server::Moto, &options)))
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
