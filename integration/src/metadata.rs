//! The cloud metadata / identity endpoint stand-in (`integration/stores/metadata_standin.py`):
//! AWS IMDSv2, the AWS container-credentials endpoint (ECS, EKS Pod Identity), the Azure
//! managed-identity token endpoint and the GCE metadata server, on one free loopback port,
//! counting every request and every credential it issues.
//!
//! A client is pointed at it only through the overrides the cloud libraries read
//! ([`MetadataStandin::aws_env`], [`MetadataStandin::aws_container_env`],
//! [`MetadataStandin::azure_env`], [`MetadataStandin::gce_env`]), never at the real link-local
//! address. Credentials expire
//! after [`StandinOptions::expires_in`] and can be made to fail while a client runs
//! ([`MetadataStandin::set_failure`]), so a test can watch refreshes and failures in
//! [`MetadataStandin::counts`].
//!
//! ```no_run
//! use cairn_testbed::metadata::{MetadataStandin, StandinOptions};
//!
//! let standin = MetadataStandin::start(&StandinOptions::default());
//! // ... run a client with .envs(standin.gce_env()) ...
//! let counts = standin.counts();
//! assert!(counts.issued("gce") > 0, "the stand-in was never asked");
//! ```

use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// How to start the stand-in.
#[derive(Debug, Clone)]
pub struct StandinOptions {
    /// Lifetime of every credential issued, in seconds.
    pub expires_in: u64,
    /// When set, the Azure token endpoint demands this `X-IDENTITY-HEADER` (App Service form).
    pub identity_header: Option<String>,
    /// When set, every credential request is answered with this HTTP status.
    pub fail: Option<u16>,
    /// When set, the container endpoint demands this `Authorization` header
    /// (`AWS_CONTAINER_AUTHORIZATION_TOKEN`).
    pub container_token: Option<String>,
}

impl Default for StandinOptions {
    fn default() -> StandinOptions {
        StandinOptions {
            expires_in: 3600,
            identity_header: None,
            fail: None,
            container_token: None,
        }
    }
}

/// A running stand-in, killed when dropped.
#[derive(Debug)]
pub struct MetadataStandin {
    child: Child,
    dir: PathBuf,
    /// `127.0.0.1:PORT`.
    pub address: String,
}

/// What the stand-in has seen so far (see the script's header).
#[derive(Debug, Clone)]
pub struct Counts(serde_json::Value);

impl Counts {
    /// Requests by `METHOD /path` (query left out).
    #[must_use]
    pub fn requests(&self, method_and_path: &str) -> u64 {
        self.0["requests"][method_and_path].as_u64().unwrap_or(0)
    }

    /// Requests of all kinds.
    #[must_use]
    pub fn total_requests(&self) -> u64 {
        self.0["requests"].as_object().map_or(0, |all| {
            all.values().filter_map(serde_json::Value::as_u64).sum()
        })
    }

    /// Credentials issued by `source`: `aws` (IMDS), `ecs` (the container endpoint), `azure`,
    /// `gce`.
    #[must_use]
    pub fn issued(&self, cloud: &str) -> u64 {
        self.0["issued"][cloud].as_u64().unwrap_or(0)
    }

    /// Requests answered with an error.
    #[must_use]
    pub fn refused(&self) -> u64 {
        self.0["refused"].as_u64().unwrap_or(0)
    }

    /// Every credential issued, in order: AWS access key ids, Azure JWTs, GCE access tokens.
    #[must_use]
    pub fn tokens(&self) -> Vec<String> {
        self.0["tokens"]
            .as_array()
            .map(|all| {
                all.iter()
                    .filter_map(|t| t.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl MetadataStandin {
    /// Starts it on a free loopback port and waits until it listens.
    ///
    /// # Panics
    /// If python3 cannot run it or it does not start within a minute.
    #[must_use]
    pub fn start(options: &StandinOptions) -> MetadataStandin {
        static COUNT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "cairn-metadata-{}-{}",
            std::process::id(),
            COUNT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("stand-in directory");
        let mut command = Command::new("python3");
        command
            .arg(crate::stores::dir().join("metadata_standin.py"))
            .arg("--ready")
            .arg(dir.join("ready"))
            .arg("--control")
            .arg(dir.join("control.json"))
            .arg("--expires-in")
            .arg(options.expires_in.to_string());
        if let Some(header) = &options.identity_header {
            command.args(["--identity-header", header]);
        }
        if let Some(token) = &options.container_token {
            command.args(["--container-token", token]);
        }
        let child = command.spawn().expect("python3 runs metadata_standin.py");
        let mut standin = MetadataStandin {
            child,
            dir,
            address: String::new(),
        };
        standin.set_failure(options.fail);
        let ready = standin.dir.join("ready");
        let deadline = Instant::now() + Duration::from_secs(60);
        while !ready.exists() {
            assert!(
                Instant::now() < deadline,
                "the metadata stand-in never started"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let text = std::fs::read_to_string(&ready).expect("ready file");
        let port = text.trim().strip_prefix("port=").expect("port=N");
        standin.address = format!("127.0.0.1:{port}");
        standin
    }

    /// From now on, answer every credential request with `status` (or serve again with `None`).
    ///
    /// # Panics
    /// If the control file cannot be written.
    pub fn set_failure(&self, status: Option<u16>) {
        let path = self.dir.join("control.json");
        let control = serde_json::json!({ "fail": status.unwrap_or(0) });
        std::fs::write(path.with_extension("tmp"), control.to_string()).expect("control file");
        std::fs::rename(path.with_extension("tmp"), path).expect("control file");
    }

    /// What it has seen so far (read from the file it rewrites on every request).
    ///
    /// # Panics
    /// If the file is missing or not JSON.
    #[must_use]
    pub fn counts(&self) -> Counts {
        let text = std::fs::read_to_string(self.dir.join("ready.counts")).expect("counts file");
        Counts(serde_json::from_str(&text).expect("counts JSON"))
    }

    /// `http://127.0.0.1:PORT`.
    #[must_use]
    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// The environment that makes the AWS SDK's chain use the stand-in as IMDS. Remove
    /// `AWS_EC2_METADATA_DISABLED` (and `AWS_ACCESS_KEY_ID` etc., the rest of the chain) from
    /// that child yourself, and from that child only.
    #[must_use]
    pub fn aws_env(&self) -> Vec<(String, String)> {
        vec![
            ("AWS_EC2_METADATA_SERVICE_ENDPOINT".into(), self.url()),
            (
                "AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE".into(),
                "IPv4".into(),
            ),
        ]
    }

    /// The environment that makes the AWS SDK's chain take the stand-in's container endpoint
    /// (`AWS_CONTAINER_CREDENTIALS_FULL_URI` on loopback, as the EKS Pod Identity agent is;
    /// plus `AWS_CONTAINER_AUTHORIZATION_TOKEN` when it demands one). The chain asks it before
    /// IMDS, so `AWS_EC2_METADATA_DISABLED` may stay set.
    #[must_use]
    pub fn aws_container_env(&self, token: Option<&str>) -> Vec<(String, String)> {
        let mut env = vec![(
            "AWS_CONTAINER_CREDENTIALS_FULL_URI".to_string(),
            format!("{}/v2/credentials/cairn", self.url()),
        )];
        if let Some(token) = token {
            env.push(("AWS_CONTAINER_AUTHORIZATION_TOKEN".into(), token.into()));
        }
        env
    }

    /// The environment that points Azure managed identity at the stand-in (the App Service
    /// form: `IDENTITY_ENDPOINT`, plus `IDENTITY_HEADER` when it demands one).
    #[must_use]
    pub fn azure_env(&self, identity_header: Option<&str>) -> Vec<(String, String)> {
        let mut env = vec![(
            "IDENTITY_ENDPOINT".to_string(),
            format!("{}/metadata/identity/oauth2/token", self.url()),
        )];
        if let Some(header) = identity_header {
            env.push(("IDENTITY_HEADER".into(), header.into()));
        }
        env
    }

    /// The environment that points the GCE metadata server at the stand-in.
    #[must_use]
    pub fn gce_env(&self) -> Vec<(String, String)> {
        vec![("GCE_METADATA_HOST".into(), self.address.clone())]
    }
}

impl Drop for MetadataStandin {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
