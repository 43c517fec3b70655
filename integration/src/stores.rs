//! The object-store emulators every test uses: moto (S3), Azurite (Azure Blob) and
//! fake-gcs-server (GCS), started and stopped through the scripts of `integration/stores/`
//! (`<script> install | start DIR | stop DIR`; see their headers).
//!
//! [`Emulator::start`] installs the emulator once per process (the scripts do nothing when the
//! pinned version is there), starts one server on a free loopback port and waits until it
//! answers (the script does); dropping the [`Emulator`] stops it and removes its directory.
//! [`Emulator::shared`] shares one server between the tests of a binary that run at the same
//! time; the last of them to drop it stops it.
//!
//! Nothing here can reach a cloud: every server listens on 127.0.0.1 and the credentials are
//! the emulators' fixed test ones ([`AWS_ENV`], [`AZURITE_KEY`]); [`CLIENT_ENV`] is what a
//! client process needs to reach any of them, with no way to a metadata address.
//!
//! ```no_run
//! use cairn_testbed::stores::{Emulator, Server};
//!
//! let moto = Emulator::start(Server::Moto);
//! moto.fixture(&["create-bucket", "cairn-backups", "versioned"]);
//! let url = format!("s3://cairn-backups/nightly?region=us-east-1&endpoint={}", moto.endpoint);
//! // ... run cairn with .envs(cairn_testbed::stores::CLIENT_ENV) ...
//! ```
//!
//! These are test helpers: they panic, with the script's stderr, when an emulator cannot be
//! installed or started.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Once, PoisonError, Weak};

/// moto's credentials (it accepts any unless started with `INITIAL_NO_AUTH_ACTION_COUNT`),
/// and no instance metadata service for the AWS credential chain to try.
pub const AWS_ENV: [(&str, &str); 3] = [
    ("AWS_ACCESS_KEY_ID", "testing"),
    ("AWS_SECRET_ACCESS_KEY", "testing"),
    ("AWS_EC2_METADATA_DISABLED", "true"),
];

/// Azurite's well-known development account.
pub const AZURITE_ACCOUNT: &str = "devstoreaccount1";

/// Azurite's published development key (not a secret).
pub const AZURITE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// The environment of a client (e.g. a `cairn` process) that talks to any of the emulators:
/// [`AWS_ENV`] and `AZURE_STORAGE_KEY` = [`AZURITE_KEY`] (fake-gcs-server needs none).
pub const CLIENT_ENV: [(&str, &str); 4] = [
    AWS_ENV[0],
    AWS_ENV[1],
    AWS_ENV[2],
    ("AZURE_STORAGE_KEY", AZURITE_KEY),
];

/// Which emulator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Server {
    /// moto (S3), `integration/stores/moto.sh`; endpoint `http://127.0.0.1:PORT`.
    Moto,
    /// Azurite (Azure Blob), `integration/stores/azurite.sh`; endpoint
    /// `http://127.0.0.1:PORT/devstoreaccount1`.
    Azurite,
    /// fake-gcs-server (GCS), `integration/stores/fake-gcs.sh`; endpoint `http://127.0.0.1:PORT`.
    FakeGcs,
}

impl Server {
    /// The script's file name in `integration/stores/`.
    #[must_use]
    pub fn script_name(self) -> &'static str {
        match self {
            Server::Moto => "moto.sh",
            Server::Azurite => "azurite.sh",
            Server::FakeGcs => "fake-gcs.sh",
        }
    }

    /// The script's path.
    #[must_use]
    pub fn script(self) -> PathBuf {
        dir().join(self.script_name())
    }

    /// The first argument of `integration/stores/fixture.py` for this emulator.
    #[must_use]
    pub fn fixture_kind(self) -> &'static str {
        match self {
            Server::Moto => "s3",
            Server::Azurite => "azure",
            Server::FakeGcs => "gcs",
        }
    }

    /// Its slot in the per-emulator statics below.
    fn index(self) -> usize {
        self as usize
    }

    /// Runs `<script> ARGS` with extra environment; panics with its stderr if it fails.
    fn run(self, args: &[&std::ffi::OsStr], environment: &[(String, String)]) -> Output {
        let output = Command::new("bash")
            .arg(self.script())
            .args(args)
            .envs(environment.iter().map(|(k, v)| (k, v)))
            .output()
            .unwrap_or_else(|error| panic!("cannot run {}: {error}", self.script_name()));
        assert!(
            output.status.success(),
            "{} {args:?} failed: {}",
            self.script_name(),
            String::from_utf8_lossy(&output.stderr).trim()
        );
        output
    }
}

/// `integration/stores/`: the emulator scripts, `fixture.py` and `fault_proxy.py`.
#[must_use]
pub fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("stores")
}

/// Where the emulators are installed: `$CAIRN_TOOLS`, by default `/opt/cairn-test-tools`.
#[must_use]
pub fn tools_dir() -> PathBuf {
    std::env::var_os("CAIRN_TOOLS").map_or_else(|| "/opt/cairn-test-tools".into(), PathBuf::from)
}

/// Runs `<script> install` once per process and emulator (it does nothing when the pinned
/// version is installed).
///
/// # Panics
/// If the installation fails (with the script's stderr).
pub fn install(server: Server) {
    static INSTALLED: [Once; 3] = [Once::new(), Once::new(), Once::new()];
    INSTALLED[server.index()].call_once(|| {
        server.run(&["install".as_ref()], &[]);
    });
}

/// How to start an emulator (see [`Emulator::start_with`]).
#[derive(Debug, Clone, Default)]
pub struct StartOptions {
    /// Extra environment for the script and the server, e.g. moto's
    /// `INITIAL_NO_AUTH_ACTION_COUNT`.
    pub env: Vec<(String, String)>,
    /// fake-gcs-server only: the URL its resumable-upload session URLs point at (by default its
    /// own endpoint).
    pub external_url: Option<String>,
}

/// A running emulator, stopped (and its directory removed) when dropped.
#[derive(Debug)]
pub struct Emulator {
    server: Server,
    dir: PathBuf,
    /// The server's URL, e.g. `http://127.0.0.1:PORT` (with `/devstoreaccount1` for Azurite).
    pub endpoint: String,
}

impl Emulator {
    /// Installs (once per process) and starts a server of one's own.
    ///
    /// # Panics
    /// If the emulator cannot be installed or started (with the script's stderr).
    #[must_use]
    pub fn start(server: Server) -> Emulator {
        Emulator::start_with(server, &StartOptions::default())
    }

    /// Like [`Emulator::start`], with options.
    ///
    /// # Panics
    /// If the emulator cannot be installed or started, or `external_url` is given for another
    /// emulator than fake-gcs-server.
    #[must_use]
    pub fn start_with(server: Server, options: &StartOptions) -> Emulator {
        static COUNT: AtomicUsize = AtomicUsize::new(0);
        install(server);
        let name = server.script_name().trim_end_matches(".sh");
        let dir = std::env::temp_dir().join(format!(
            "cairn-{name}-{}-{}",
            std::process::id(),
            COUNT.fetch_add(1, Ordering::Relaxed)
        ));
        if options.external_url.is_some() {
            assert_eq!(
                server,
                Server::FakeGcs,
                "only fake-gcs-server has an external URL"
            );
        }
        // From here on, dropping `emulator` stops whatever the script started.
        let mut emulator = Emulator {
            server,
            dir,
            endpoint: String::new(),
        };
        let mut args: Vec<&std::ffi::OsStr> = vec!["start".as_ref(), emulator.dir.as_os_str()];
        if let Some(url) = &options.external_url {
            args.push(url.as_ref());
        }
        let output = server.run(&args, &options.env);
        emulator.endpoint = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        assert!(
            !emulator.endpoint.is_empty(),
            "{} start printed no endpoint",
            server.script_name()
        );
        emulator
    }

    /// The server of this emulator that the running tests of this process share, started
    /// when none of them holds one; stopped when the last holder drops it.
    ///
    /// # Panics
    /// Like [`Emulator::start`].
    #[must_use]
    pub fn shared(server: Server) -> Arc<Emulator> {
        static SHARED: Mutex<[Weak<Emulator>; 3]> =
            Mutex::new([Weak::new(), Weak::new(), Weak::new()]);
        let mut shared = SHARED.lock().unwrap_or_else(PoisonError::into_inner);
        let slot = &mut shared[server.index()];
        if let Some(emulator) = slot.upgrade() {
            return emulator;
        }
        let emulator = Arc::new(Emulator::start(server));
        *slot = Arc::downgrade(&emulator);
        emulator
    }

    /// Which emulator this is.
    #[must_use]
    pub fn server(&self) -> Server {
        self.server
    }

    /// The server's directory: `pid`, `endpoint`, its log (and Azurite's `data/`).
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Runs `integration/stores/fixture.py <kind> <endpoint> ARGS` against this server (create a
    /// bucket, tamper with or list objects behind Cairn's back) and returns its stdout. For S3
    /// it runs with the moto venv's Python (it needs boto3).
    ///
    /// # Panics
    /// If the fixture fails (with its stderr).
    pub fn fixture(&self, args: &[&str]) -> String {
        let python = if self.server == Server::Moto {
            tools_dir().join("moto-venv/bin/python")
        } else {
            PathBuf::from("python3")
        };
        let output = Command::new(python)
            .arg(dir().join("fixture.py"))
            .arg(self.server.fixture_kind())
            .arg(&self.endpoint)
            .args(args)
            .output()
            .unwrap_or_else(|error| panic!("cannot run fixture.py: {error}"));
        assert!(
            output.status.success(),
            "fixture {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        // No assertion here: a panic while a failed test unwinds would abort the process.
        let _ = Command::new("bash")
            .arg(self.server.script())
            .arg("stop")
            .arg(&self.dir)
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
