//! A BOSH Director stand-in for end-to-end tests: `integration/director/director.py` (Python
//! standard library only), started and stopped by [`Director`].
//!
//! It serves, over HTTPS with a CA generated per run, the Director API that bbr uses
//! (`/info`, `/deployments`, `/deployments/<d>`, `/deployments/<d>/vms?format=full` and its
//! tasks, `POST /deployments/<d>/ssh`), a UAA token endpoint (client-credentials grant) when
//! the authentication is [`Auth::Uaa`], and it really creates the temporary `bosh_<hex>` SSH
//! users on the [`TestBed`] hosts of the deployments (and removes them on `ssh cleanup`).
//! Every request is logged ([`Director::requests`]), with the client's address, so tests can
//! tell whether a client came through a jumpbox.
//!
//! It listens on a test bed's bridge address (`10.199.K.1`, see [`TestBed::bridge_address`]),
//! which the machine and that test bed's hosts can reach, on port 25555 if free (the port
//! clients assume by default).
//!
//! ```no_run
//! use cairn_testbed::TestBed;
//! use cairn_testbed::director::{DeploymentSpec, Director, DirectorOptions};
//!
//! # fn main() -> std::io::Result<()> {
//! let bed = TestBed::start(&[])?;
//! let mut options = DirectorOptions::new(&bed);
//! options.deployments.push(DeploymentSpec::new("shop", &bed).backup_one_restore_all("files"));
//! let director = Director::start(&options)?;
//! // cairn/bbr: --target director.url() --ca-cert director.ca_cert_path()
//! //            --username admin --password admin-secret --deployment shop
//! assert!(director.requests().iter().any(|r| r.path == "/info"));
//! # Ok(())
//! # }
//! ```
//!
//! See `integration/README.md` ("BOSH Director stand-in") for the behaviour in detail.

use std::fmt::Write as _;
use std::fs::{self, File};
use std::io::{self, ErrorKind, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::{create_unique_dir, TestBed, TestHost, KEEP_ENV};

/// The Director's default port, which bbr and Cairn assume when the target has none.
pub const DEFAULT_PORT: u16 = 25555;
/// The UAA port used when it is free on the address.
pub const DEFAULT_UAA_PORT: u16 = 8443;
/// Id of the client that [`DirectorOptions::new`] configures (access to all deployments).
pub const DEFAULT_CLIENT_ID: &str = "admin";
/// Secret of [`DEFAULT_CLIENT_ID`].
pub const DEFAULT_CLIENT_SECRET: &str = "admin-secret";

/// How long [`Director::start`] waits for the server to listen.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// The test bed's machine-wide lock for `/etc/passwd` changes.
const PASSWD_LOCK: &str = "/run/cairn-testbed/setup.lock";

/// How clients authenticate, as announced by `GET /info` (`user_authentication.type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    /// UAA: a second HTTPS listener serves `POST /oauth/token` (client-credentials grant);
    /// Director requests need `Authorization: bearer <token>`.
    Uaa,
    /// HTTP basic authentication with the client id and secret as user and password.
    Basic,
}

/// Which deployments a client may see and use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// All of them (a BOSH admin, scope `bosh.admin`).
    All,
    /// Only these (a team admin, scope `bosh.teams.<client id>.admin`; the deployments belong
    /// to that team). Others answer like BOSH: 401 with code 600000.
    Only(Vec<String>),
}

/// A UAA client (or, with [`Auth::Basic`], a user).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectorClient {
    /// Client id (`--username`, `BOSH_CLIENT`).
    pub id: String,
    /// Client secret (`--password`, `BOSH_CLIENT_SECRET`).
    pub secret: String,
    /// Deployments it may access.
    pub access: Access,
}

impl DirectorClient {
    /// A client with access to every deployment.
    #[must_use]
    pub fn admin(id: &str, secret: &str) -> DirectorClient {
        DirectorClient {
            id: id.to_owned(),
            secret: secret.to_owned(),
            access: Access::All,
        }
    }

    /// A client with access to the given deployments only.
    #[must_use]
    pub fn restricted(id: &str, secret: &str, deployments: &[&str]) -> DirectorClient {
        DirectorClient {
            id: id.to_owned(),
            secret: secret.to_owned(),
            access: Access::Only(deployments.iter().map(|d| (*d).to_owned()).collect()),
        }
    }
}

/// The `Location` of the 302 redirects to `/tasks/<id>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RedirectStyle {
    /// Like a real Director behind its nginx: `https://<Host header without port>/tasks/<id>`
    /// (nginx forwards `Host: $host`). Following it naively goes to port 443; bosh-cli keeps
    /// its own host and port for redirects, and so must a compatible client.
    #[default]
    Bosh,
    /// `https://<Host header>/tasks/<id>`.
    Absolute,
    /// `/tasks/<id>`.
    Relative,
}

/// One deployment served by the Director: the hosts of a test bed as its instances.
#[derive(Debug, Clone)]
pub struct DeploymentSpec<'a> {
    /// Deployment name.
    pub name: String,
    /// The test bed whose hosts are the deployment's VMs (instance group = host group,
    /// index = host index; the jobs are the host's `/var/vcap/jobs/*`).
    pub bed: &'a TestBed,
    /// Only these instance groups of the test bed (all if `None`).
    pub groups: Option<Vec<String>>,
    /// Release of a job, by job name; a job not listed comes from `<job>-release` (as in
    /// the test bed's inventory).
    pub releases: Vec<(String, String)>,
    /// Manifest properties of a job (every instance group that has it), by job name, as a
    /// JSON object, e.g. `{"bbr":{"backup_one_restore_all":true}}`.
    pub properties: Vec<(String, String)>,
    /// Version of a release in the manifest's `releases`, by release name; others are
    /// `1.0.0`.
    pub release_versions: Vec<(String, String)>,
    /// The name the Director gives a host group of the test bed, by host group (default: the
    /// host group's own name): a hostile or broken Director's names, such as `../x`.
    pub group_names: Vec<(String, String)>,
}

impl<'a> DeploymentSpec<'a> {
    /// All of the test bed's hosts, default releases, no properties.
    #[must_use]
    pub fn new(name: &str, bed: &'a TestBed) -> DeploymentSpec<'a> {
        DeploymentSpec {
            name: name.to_owned(),
            bed,
            groups: None,
            releases: Vec::new(),
            properties: Vec::new(),
            release_versions: Vec::new(),
            group_names: Vec::new(),
        }
    }

    /// The Director calls the test bed's host group `group` by `name`.
    #[must_use]
    pub fn served_as(mut self, group: &str, name: &str) -> Self {
        self.group_names.push((group.to_owned(), name.to_owned()));
        self
    }

    /// The manifest lists this release at this version (default `1.0.0`).
    #[must_use]
    pub fn release_version(mut self, release: &str, version: &str) -> Self {
        self.release_versions
            .push((release.to_owned(), version.to_owned()));
        self
    }

    /// Only these instance groups of the test bed.
    #[must_use]
    pub fn groups(mut self, groups: &[&str]) -> Self {
        self.groups = Some(groups.iter().map(|g| (*g).to_owned()).collect());
        self
    }

    /// The job comes from this release.
    #[must_use]
    pub fn release(mut self, job: &str, release: &str) -> Self {
        self.releases.push((job.to_owned(), release.to_owned()));
        self
    }

    /// Manifest properties of the job, a JSON object.
    #[must_use]
    pub fn properties(mut self, job: &str, json_object: &str) -> Self {
        self.properties
            .push((job.to_owned(), json_object.to_owned()));
        self
    }

    /// Sets `bbr.backup_one_restore_all: true` on the job (bbr-facts §2.5).
    #[must_use]
    pub fn backup_one_restore_all(self, job: &str) -> Self {
        self.properties(job, r#"{"bbr":{"backup_one_restore_all":true}}"#)
    }
}

/// Options of [`Director::start`]. Start from [`DirectorOptions::new`] and change fields.
#[derive(Debug, Clone)]
pub struct DirectorOptions<'a> {
    /// The test bed on whose bridge address (`10.199.K.1`) the Director listens.
    pub listen_on: &'a TestBed,
    /// The Director's port; `None`: [`DEFAULT_PORT`] if it is free on that address, else
    /// any free port. An explicit port that is taken is an error.
    pub port: Option<u16>,
    /// UAA or basic authentication.
    pub auth: Auth,
    /// The clients (or basic-auth users). Default: [`DEFAULT_CLIENT_ID`], all deployments.
    pub clients: Vec<DirectorClient>,
    /// Lifetime of UAA access tokens (may be a fraction of a second). Default: 10 minutes.
    pub token_lifetime: Duration,
    /// The deployments.
    pub deployments: Vec<DeploymentSpec<'a>>,
    /// Tasks are `queued` for the first third of this, then `processing`, then `done` (or
    /// `error`), so clients must poll. Default: 300 ms.
    pub task_duration: Duration,
    /// `Location` of task redirects. Default: [`RedirectStyle::Bosh`].
    pub redirect: RedirectStyle,
    /// An ssh setup/cleanup body that differs from bbr's (bbr-facts §5.2) fails its task
    /// (BOSH would accept most differences). Default: `true`.
    pub strict_ssh_bodies: bool,
    /// Failures injected into matching requests, in order of precedence. Default: none.
    pub faults: Vec<DirectorFault>,
    /// What UAA says as a token's `expires_in`, instead of [`DirectorOptions::token_lifetime`]
    /// (tokens still expire after the lifetime). Default: `None`.
    pub reported_expires_in: Option<u64>,
}

/// A failure the stand-in injects into matching Director requests (its `faults` key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectorFault {
    /// `METHOD /path?query` or its start, e.g. `GET /tasks/`.
    pub request: String,
    /// What those requests get.
    pub answer: FaultAnswer,
    /// How many matching requests get it; `None`: all of them.
    pub times: Option<u32>,
}

/// What a [`DirectorFault`] answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultAnswer {
    /// This status, with an nginx-like HTML body (e.g. 502, 503).
    Status(u16),
    /// The connection is closed without an answer.
    Drop,
    /// The connection is reset (TCP RST) without an answer.
    Reset,
    /// The request is handled (a task started, an SSH user set up), then the connection is
    /// closed without the answer.
    DropAfter,
    /// A 200 whose JSON body has this many bytes, with no `Content-Length` (it ends when the
    /// connection closes); the stand-in stops early when the client hangs up.
    Oversized(u64),
}

impl DirectorFault {
    /// The next `times` requests starting with `request` get `answer`.
    #[must_use]
    pub fn next(request: &str, answer: FaultAnswer, times: u32) -> DirectorFault {
        DirectorFault {
            request: request.to_string(),
            answer,
            times: Some(times),
        }
    }

    /// Every request starting with `request` gets `answer`.
    #[must_use]
    pub fn always(request: &str, answer: FaultAnswer) -> DirectorFault {
        DirectorFault {
            request: request.to_string(),
            answer,
            times: None,
        }
    }

    fn json(&self) -> String {
        let answer = match self.answer {
            FaultAnswer::Status(status) => status.to_string(),
            FaultAnswer::Drop => json_string("drop"),
            FaultAnswer::Reset => json_string("reset"),
            FaultAnswer::DropAfter => json_string("drop-after"),
            FaultAnswer::Oversized(bytes) => format!(r#""oversized","bytes":{bytes}"#),
        };
        let times = self.times.map_or(-1, i64::from);
        format!(
            r#"{{"request":{},"answer":{answer},"times":{times}}}"#,
            json_string(&self.request)
        )
    }
}

impl<'a> DirectorOptions<'a> {
    /// UAA, one admin client ([`DEFAULT_CLIENT_ID`] / [`DEFAULT_CLIENT_SECRET`]), no
    /// deployments, 10-minute tokens, 300 ms tasks, BOSH-like redirects, strict ssh bodies.
    #[must_use]
    pub fn new(listen_on: &'a TestBed) -> DirectorOptions<'a> {
        DirectorOptions {
            listen_on,
            port: None,
            auth: Auth::Uaa,
            clients: vec![DirectorClient::admin(
                DEFAULT_CLIENT_ID,
                DEFAULT_CLIENT_SECRET,
            )],
            token_lifetime: Duration::from_mins(10),
            deployments: Vec::new(),
            task_duration: Duration::from_millis(300),
            redirect: RedirectStyle::Bosh,
            strict_ssh_bodies: true,
            faults: Vec::new(),
            reported_expires_in: None,
        }
    }
}

/// One instance (VM) as the Director reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectorInstance {
    /// Deployment name.
    pub deployment: String,
    /// Instance group.
    pub group: String,
    /// BOSH index.
    pub index: u32,
    /// Instance id (a UUID, stable for the Director's lifetime).
    pub id: String,
    /// Agent id (a UUID).
    pub agent_id: String,
    /// VM CID.
    pub vm_cid: String,
    /// IP address (the test-bed host's).
    pub address: String,
    /// Whether it is the group's bootstrap instance (the lowest index).
    pub bootstrap: bool,
    /// The host's `/var/vcap` on this machine.
    pub vcap_dir: PathBuf,
}

/// One line of the request log.
#[derive(Debug, Clone, PartialEq)]
pub struct DirectorRequest {
    /// Unix time in seconds when the response was sent.
    pub time: f64,
    /// `director` or `uaa`.
    pub listener: String,
    /// The client's IP address as the server saw it.
    pub client_ip: String,
    /// HTTP method, or `TLS` for a failed handshake.
    pub method: String,
    /// Path with query string (`-` for a failed handshake).
    pub path: String,
    /// Response status (0 for a failed handshake).
    pub status: u16,
    /// The authenticated client id, if any.
    pub client: Option<String>,
    /// What happened, e.g. `token-expired`, `forbidden`, `ssh cleanup user_regex=^bosh_...`.
    pub note: Option<String>,
}

/// A running Director stand-in. Dropping it stops the server, removes the SSH users it
/// created (on the hosts and in `/etc/passwd`) and its directory (kept if
/// [`KEEP_ENV`] is set).
#[derive(Debug)]
pub struct Director {
    dir: PathBuf,
    child: Option<Child>,
    address: String,
    port: u16,
    uaa_port: Option<u16>,
    uuid: String,
    instances: Vec<DirectorInstance>,
}

impl Director {
    /// Generates a CA and a server certificate (SAN = the bridge address) with `openssl`,
    /// writes the config and starts `python3 integration/director/director.py`, then waits
    /// (up to 10 s) until it listens.
    ///
    /// # Errors
    /// If the test bed has no bridge address, a deployment names a group the test bed does
    /// not have, `openssl` fails, or the server does not come up (the error has its log's
    /// tail).
    pub fn start(options: &DirectorOptions<'_>) -> io::Result<Director> {
        let address = options.listen_on.bridge_address()?;
        let dir = create_unique_dir("cairn-director")?;
        let mut director = Director {
            dir,
            child: None,
            address,
            port: 0,
            uaa_port: None,
            uuid: random_uuid()?,
            instances: Vec::new(),
        };
        director.instances = instances_of(options)?;
        generate_certificates(&director.dir, &director.address)?;
        let config = director.config_json(options);
        fs::write(director.config_path(), config)?;

        let log = File::create(director.log_path())?;
        let child = Command::new("python3")
            .arg(Self::script())
            .arg("--config")
            .arg(director.config_path())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        director.child = Some(child);
        director.wait_until_ready()?;
        Ok(director)
    }

    /// Path of `integration/director/director.py`.
    #[must_use]
    pub fn script() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("director/director.py")
    }

    /// `https://10.199.K.1:PORT`.
    #[must_use]
    pub fn url(&self) -> String {
        format!("https://{}:{}", self.address, self.port)
    }

    /// The address it listens on (the test bed's bridge address).
    #[must_use]
    pub fn address(&self) -> &str {
        &self.address
    }

    /// The Director's port ([`DEFAULT_PORT`] unless it was taken or chosen).
    #[must_use]
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `https://10.199.K.1:UAAPORT` with [`Auth::Uaa`], as announced by `/info`.
    #[must_use]
    pub fn uaa_url(&self) -> Option<String> {
        self.uaa_port
            .map(|port| format!("https://{}:{port}", self.address))
    }

    /// The Director's uuid (as in `/info` and in BOSH's scope names).
    #[must_use]
    pub fn uuid(&self) -> &str {
        &self.uuid
    }

    /// The CA certificate that signed the server certificate (for `--ca-cert`).
    #[must_use]
    pub fn ca_cert_path(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// The CA certificate as PEM text (`--ca-cert` also accepts the PEM itself).
    ///
    /// # Panics
    /// If the file cannot be read.
    #[must_use]
    pub fn ca_cert_pem(&self) -> String {
        fs::read_to_string(self.ca_cert_path()).expect("reading the Director's CA certificate")
    }

    /// The Director's directory: `config.json`, certificates, `director.log`,
    /// `requests.tsv`, `accounts.tsv`.
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The generated config file.
    #[must_use]
    pub fn config_path(&self) -> PathBuf {
        self.dir.join("config.json")
    }

    /// The server's stdout and stderr (one line per request, task and error).
    #[must_use]
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("director.log")
    }

    /// The request log, parsed by [`Director::requests`].
    #[must_use]
    pub fn request_log_path(&self) -> PathBuf {
        self.dir.join("requests.tsv")
    }

    /// Every instance of every deployment.
    #[must_use]
    pub fn instances(&self) -> &[DirectorInstance] {
        &self.instances
    }

    /// The instance `group/index` of a deployment.
    ///
    /// # Panics
    /// If there is no such instance.
    #[must_use]
    pub fn instance(&self, deployment: &str, group: &str, index: u32) -> &DirectorInstance {
        self.instances
            .iter()
            .find(|i| i.deployment == deployment && i.group == group && i.index == index)
            .unwrap_or_else(|| {
                panic!("the Director has no instance {group}/{index} in {deployment}")
            })
    }

    /// The requests so far, in the order they were answered.
    ///
    /// # Panics
    /// If the log cannot be read or has a malformed line.
    #[must_use]
    pub fn requests(&self) -> Vec<DirectorRequest> {
        let text = match fs::read_to_string(self.request_log_path()) {
            Ok(text) => text,
            Err(error) if error.kind() == ErrorKind::NotFound => return Vec::new(),
            Err(error) => panic!("cannot read the Director's request log: {error}"),
        };
        text.lines()
            .filter(|line| !line.is_empty())
            .map(|line| {
                parse_request(line).unwrap_or_else(|| panic!("bad request log line {line:?}"))
            })
            .collect()
    }

    /// The `bosh_*` users whose folder exists in the host's `/var/vcap/bosh_ssh` (the users
    /// that can log in there), sorted.
    #[must_use]
    pub fn bosh_users_on(&self, host: &TestHost) -> Vec<String> {
        let mut users: Vec<String> = fs::read_dir(host.vcap_dir.join("bosh_ssh"))
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|name| name.starts_with("bosh_"))
                    .collect()
            })
            .unwrap_or_default();
        users.sort();
        users
    }

    /// The `bosh_*` accounts in `/etc/passwd`, machine-wide (other tests' Directors running
    /// in parallel add theirs: check for your own user names).
    #[must_use]
    pub fn bosh_accounts(&self) -> Vec<String> {
        bosh_accounts()
    }

    /// The accounts this Director created (whether or not they still exist).
    #[must_use]
    pub fn created_accounts(&self) -> Vec<String> {
        let text = fs::read_to_string(self.dir.join("accounts.tsv")).unwrap_or_default();
        let mut users: Vec<String> = Vec::new();
        for line in text.lines() {
            if let Some(user) = line.strip_prefix("created\t") {
                if !users.iter().any(|u| u == user) {
                    users.push(user.to_owned());
                }
            }
        }
        users
    }

    fn wait_until_ready(&mut self) -> io::Result<()> {
        let ready = self.dir.join("ready");
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Ok(text) = fs::read_to_string(&ready) {
                let field = |name: &str| {
                    text.lines()
                        .find_map(|l| l.strip_prefix(&format!("{name}=")))
                        .and_then(|v| v.trim().parse::<u16>().ok())
                };
                self.port = field("port").ok_or_else(|| self.failure("bad ready file"))?;
                self.uaa_port = field("uaa_port");
                return Ok(());
            }
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    return Err(self.failure(&format!("exited during start-up ({status})")));
                }
            }
            if Instant::now() > deadline {
                return Err(self.failure("did not listen within 10 s"));
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn failure(&self, what: &str) -> io::Error {
        let log = fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        let tail = lines[lines.len().saturating_sub(20)..].join("\n");
        io::Error::other(format!(
            "the Director stand-in {what} (log {}):\n{tail}",
            self.log_path().display()
        ))
    }

    fn config_json(&self, options: &DirectorOptions<'_>) -> String {
        let mut clients = Vec::new();
        for client in &options.clients {
            let access = match &client.access {
                Access::All => json_string("all"),
                Access::Only(list) => json_list(list.iter().map(|d| json_string(d))),
            };
            clients.push(format!(
                r#"{{"id":{},"secret":{},"deployments":{access}}}"#,
                json_string(&client.id),
                json_string(&client.secret)
            ));
        }
        let mut deployments = Vec::new();
        for spec in &options.deployments {
            deployments.push(self.deployment_json(spec));
        }
        let (auth, port_fallback, port) = (
            match options.auth {
                Auth::Uaa => "uaa",
                Auth::Basic => "basic",
            },
            options.port.is_none(),
            options.port.unwrap_or(DEFAULT_PORT),
        );
        let redirect = match options.redirect {
            RedirectStyle::Bosh => "bosh",
            RedirectStyle::Absolute => "absolute",
            RedirectStyle::Relative => "relative",
        };
        let path = |name: &str| json_string(&self.dir.join(name).to_string_lossy());
        let mut json = String::from("{\n");
        let _ = writeln!(json, r#"  "uuid": {},"#, json_string(&self.uuid));
        let _ = writeln!(json, r#"  "address": {},"#, json_string(&self.address));
        let _ = writeln!(json, r#"  "port": {port},"#);
        let _ = writeln!(json, r#"  "port_fallback": {port_fallback},"#);
        let _ = writeln!(json, r#"  "uaa_port": {DEFAULT_UAA_PORT},"#);
        let _ = writeln!(json, r#"  "tls_cert": {},"#, path("server.pem"));
        let _ = writeln!(json, r#"  "tls_key": {},"#, path("server.key"));
        let _ = writeln!(json, r#"  "auth": "{auth}","#);
        let _ = writeln!(
            json,
            r#"  "token_lifetime_seconds": {},"#,
            options.token_lifetime.as_secs_f64()
        );
        let _ = writeln!(
            json,
            r#"  "task_duration_seconds": {},"#,
            options.task_duration.as_secs_f64()
        );
        let _ = writeln!(json, r#"  "redirect_location": "{redirect}","#);
        if let Some(expires_in) = options.reported_expires_in {
            let _ = writeln!(json, r#"  "reported_expires_in": {expires_in},"#);
        }
        let _ = writeln!(
            json,
            r#"  "strict_ssh_bodies": {},"#,
            options.strict_ssh_bodies
        );
        let _ = writeln!(
            json,
            r#"  "faults": {},"#,
            json_list(options.faults.iter().map(DirectorFault::json))
        );
        let _ = writeln!(json, r#"  "ready_file": {},"#, path("ready"));
        let _ = writeln!(json, r#"  "request_log": {},"#, path("requests.tsv"));
        let _ = writeln!(json, r#"  "accounts_log": {},"#, path("accounts.tsv"));
        let _ = writeln!(
            json,
            r#"  "testbed_script": {},"#,
            json_string(&TestBed::script().to_string_lossy())
        );
        let _ = writeln!(json, r#"  "clients": {},"#, json_list(clients));
        let _ = writeln!(json, r#"  "deployments": {}"#, json_list(deployments));
        json.push_str("}\n");
        json
    }

    fn deployment_json(&self, spec: &DeploymentSpec<'_>) -> String {
        let mut groups: Vec<&str> = Vec::new();
        for instance in self.instances.iter().filter(|i| i.deployment == spec.name) {
            if !groups.contains(&instance.group.as_str()) {
                groups.push(&instance.group);
            }
        }
        let mut groups_json = Vec::new();
        let mut release_names: Vec<String> = Vec::new();
        for group in groups {
            let members: Vec<&DirectorInstance> = self
                .instances
                .iter()
                .filter(|i| i.deployment == spec.name && i.group == group)
                .collect();
            let mut jobs: Vec<String> = Vec::new();
            for member in &members {
                if let Ok(entries) = fs::read_dir(member.vcap_dir.join("jobs")) {
                    for entry in entries.filter_map(Result::ok) {
                        let name = entry.file_name().to_string_lossy().into_owned();
                        if !jobs.contains(&name) {
                            jobs.push(name);
                        }
                    }
                }
            }
            jobs.sort();
            let release_of = |job: &String| {
                spec.releases
                    .iter()
                    .find(|(j, _)| j == job)
                    .map_or_else(|| format!("{job}-release"), |(_, r)| r.clone())
            };
            for job in &jobs {
                if !release_names.contains(&release_of(job)) {
                    release_names.push(release_of(job));
                }
            }
            let jobs_json = jobs.iter().map(|job| {
                let release = release_of(job);
                let properties = spec
                    .properties
                    .iter()
                    .find(|(j, _)| j == job)
                    .map(|(_, p)| format!(r#","properties":{p}"#))
                    .unwrap_or_default();
                format!(
                    r#"{{"name":{},"release":{}{properties}}}"#,
                    json_string(job),
                    json_string(&release)
                )
            });
            let instances_json = members.iter().map(|i| {
                let host_dir = i.vcap_dir.parent().unwrap_or(&i.vcap_dir);
                format!(
                    r#"{{"index":{},"id":{},"agent_id":{},"vm_cid":{},"address":{},"az":"z1","testbed_dir":{},"host_dir":{}}}"#,
                    i.index,
                    json_string(&i.id),
                    json_string(&i.agent_id),
                    json_string(&i.vm_cid),
                    json_string(&i.address),
                    json_string(&spec.bed.dir().to_string_lossy()),
                    json_string(&host_dir.to_string_lossy()),
                )
            });
            let served_as = spec
                .group_names
                .iter()
                .find(|(g, _)| g == group)
                .map_or(group, |(_, name)| name.as_str());
            groups_json.push(format!(
                r#"{{"name":{},"jobs":{},"instances":{}}}"#,
                json_string(served_as),
                json_list(jobs_json),
                json_list(instances_json)
            ));
        }
        let releases = release_names.iter().map(|release| {
            let version = spec
                .release_versions
                .iter()
                .find(|(r, _)| r == release)
                .map_or("1.0.0", |(_, v)| v.as_str());
            format!(
                r#"{{"name":{},"version":{}}}"#,
                json_string(release),
                json_string(version)
            )
        });
        format!(
            r#"{{"name":{},"releases":{},"instance_groups":{}}}"#,
            json_string(&spec.name),
            json_list(releases),
            json_list(groups_json)
        )
    }
}

impl Drop for Director {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // Leftovers: users set up and never cleaned up (or cleaned up only partly).
        for user in self.created_accounts() {
            for instance in &self.instances {
                let home = instance.vcap_dir.join("bosh_ssh").join(&user);
                if home.exists() {
                    if let Err(error) = fs::remove_dir_all(&home) {
                        eprintln!("cairn-director: cannot remove {}: {error}", home.display());
                    }
                }
            }
            if bosh_accounts().contains(&user) {
                let removed = Command::new("flock")
                    .args([PASSWD_LOCK, "userdel", "--force", &user])
                    .output();
                match removed {
                    Ok(output) if output.status.success() => {}
                    Ok(output) => eprintln!(
                        "cairn-director: userdel {user} failed: {}",
                        String::from_utf8_lossy(&output.stderr).trim()
                    ),
                    Err(error) => eprintln!("cairn-director: cannot run userdel {user}: {error}"),
                }
            }
        }
        if std::env::var_os(KEEP_ENV).is_some() {
            eprintln!(
                "cairn-director: keeping {} ({KEEP_ENV} is set)",
                self.dir.display()
            );
        } else if let Err(error) = fs::remove_dir_all(&self.dir) {
            eprintln!(
                "cairn-director: cannot remove {}: {error}",
                self.dir.display()
            );
        }
    }
}

/// The `bosh_*` accounts in `/etc/passwd`.
#[must_use]
pub fn bosh_accounts() -> Vec<String> {
    fs::read_to_string("/etc/passwd")
        .unwrap_or_default()
        .lines()
        .filter_map(|line| line.split(':').next())
        .filter(|name| name.starts_with("bosh_"))
        .map(str::to_owned)
        .collect()
}

/// The instances of every deployment, with fresh ids.
fn instances_of(options: &DirectorOptions<'_>) -> io::Result<Vec<DirectorInstance>> {
    let mut instances = Vec::new();
    for spec in &options.deployments {
        let hosts: Vec<&TestHost> = spec
            .bed
            .hosts()
            .iter()
            .filter(|h| spec.groups.as_ref().is_none_or(|g| g.contains(&h.group)))
            .collect();
        if let Some(groups) = &spec.groups {
            if let Some(missing) = groups
                .iter()
                .find(|g| !hosts.iter().any(|h| &h.group == *g))
            {
                return Err(io::Error::new(
                    ErrorKind::InvalidInput,
                    format!(
                        "deployment {}: the test bed has no group {missing}",
                        spec.name
                    ),
                ));
            }
        }
        for host in &hosts {
            let lowest = hosts
                .iter()
                .filter(|h| h.group == host.group)
                .map(|h| h.index)
                .min();
            let agent_id = random_uuid()?;
            instances.push(DirectorInstance {
                deployment: spec.name.clone(),
                group: host.group.clone(),
                index: host.index,
                id: random_uuid()?,
                vm_cid: format!("vm-{}", random_uuid()?),
                agent_id,
                address: host.address.clone(),
                bootstrap: lowest == Some(host.index),
                vcap_dir: host.vcap_dir.clone(),
            });
        }
    }
    Ok(instances)
}

/// CA (`ca.pem`, `ca.key`) and server certificate (`server.pem`, `server.key`, SAN = the IP).
fn generate_certificates(dir: &Path, address: &str) -> io::Result<()> {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let extensions = dir.join("server-extensions.cnf");
    fs::write(
        &extensions,
        format!(
            "subjectAltName=IP:{address}\nbasicConstraints=critical,CA:FALSE\n\
             keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n\
             authorityKeyIdentifier=keyid\nsubjectKeyIdentifier=hash\n"
        ),
    )?;
    let steps: [Vec<String>; 3] = [
        ["req", "-x509"]
            .into_iter()
            .chain(ec)
            .chain([
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "30",
                "-subj",
                "/O=Cairn test bed/CN=Cairn test-bed Director CA",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ])
            .map(str::to_owned)
            .collect(),
        ["req"]
            .into_iter()
            .chain(ec)
            .chain(["-keyout", "server.key", "-out", "server.csr", "-subj"])
            .map(str::to_owned)
            .chain([format!("/O=Cairn test bed/CN={address}")])
            .collect(),
        [
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "30",
            "-extfile",
            "server-extensions.cnf",
        ]
        .into_iter()
        .map(str::to_owned)
        .collect(),
    ];
    for args in steps {
        let output = Command::new("openssl")
            .args(&args)
            .current_dir(dir)
            .stdin(Stdio::null())
            .output()?;
        if !output.status.success() {
            return Err(io::Error::other(format!(
                "`openssl {}` failed ({}): {}",
                args.join(" "),
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            )));
        }
    }
    Ok(())
}

/// A random (version 4) UUID.
fn random_uuid() -> io::Result<String> {
    let mut bytes = [0u8; 16];
    File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex = bytes.iter().fold(String::new(), |mut hex, b| {
        let _ = write!(hex, "{b:02x}");
        hex
    });
    Ok(format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    ))
}

fn json_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn json_list(items: impl IntoIterator<Item = String>) -> String {
    let items: Vec<String> = items.into_iter().collect();
    format!("[{}]", items.join(","))
}

/// Parses `time\tlistener\tip\tmethod\tpath\tstatus\tclient\tnote`.
fn parse_request(line: &str) -> Option<DirectorRequest> {
    let fields: Vec<&str> = line.split('\t').collect();
    let [time, listener, client_ip, method, path, status, client, note] = fields[..] else {
        return None;
    };
    let optional = |value: &str| (value != "-").then(|| value.to_owned());
    Some(DirectorRequest {
        time: time.parse().ok()?,
        listener: listener.to_owned(),
        client_ip: client_ip.to_owned(),
        method: method.to_owned(),
        path: path.to_owned(),
        status: status.parse().ok()?,
        client: optional(client),
        note: optional(note),
    })
}

#[cfg(test)]
mod tests {
    use super::{json_string, parse_request};

    #[test]
    fn escapes_json_strings() {
        assert_eq!(json_string("a\"b\\c\nd\u{1}"), r#""a\"b\\c\nd\u0001""#);
    }

    #[test]
    fn parses_request_lines() {
        let request = parse_request(
            "1796285561.195315\tdirector\t10.199.1.10\tPOST\t/deployments/dep/ssh\t302\tadmin\tssh setup user=bosh_0123456789abcdef task=2",
        )
        .unwrap();
        assert_eq!(request.client_ip, "10.199.1.10");
        assert_eq!(request.status, 302);
        assert_eq!(request.client.as_deref(), Some("admin"));
        assert_eq!(
            request.note.as_deref(),
            Some("ssh setup user=bosh_0123456789abcdef task=2")
        );
        let anonymous = parse_request("1.5\tdirector\t10.0.0.1\tGET\t/info\t200\t-\t-").unwrap();
        assert_eq!((anonymous.client, anonymous.note), (None, None));
        assert!(parse_request("1.5\tdirector\tGET").is_none());
    }
}
