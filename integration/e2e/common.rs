//! Helpers shared by the end-to-end tests: run the real `cairn` binary against a test bed.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use cairn_testbed::{TestBed, TestHost};
use sha2::{Digest, Sha256};

/// Runs `cairn deployment --inventory <bed> <args...>` in `workdir`.
pub(crate) fn cairn(bed: &TestBed, workdir: &Path, args: &[&str]) -> Output {
    let inventory = bed.inventory();
    let mut all = vec!["deployment", "--inventory", inventory.to_str().unwrap()];
    all.extend_from_slice(args);
    run(workdir, &all)
}

/// Credentials of the local emulators (moto accepts any key; Azurite's is public), and no
/// way for a cloud client to reach a metadata address.
pub(crate) const STORE_ENV: [(&str, &str); 4] = cairn_testbed::stores::CLIENT_ENV;

/// The `cairn` command with the emulators' environment, run in `workdir` (where it writes its
/// `bbr-<time>.err.log`), with a run-journal directory of its own (tests run in parallel, and
/// all their deployments are called `testbed`): [`state_dir`], removed with the test's
/// directory.
pub(crate) fn cairn_command_in(workdir: &Path) -> Command {
    let mut command = cairn_command();
    command
        .current_dir(workdir)
        .env("CAIRN_STATE_DIR", state_dir(workdir));
    command
}

/// The run-journal directory (`CAIRN_STATE_DIR`) of cairn run in `workdir`: the `state`
/// directory next to a [`workdir`]'s `work` directory, else `.cairn-state` inside `workdir`
/// (a test bed's directory). Either way inside what the test removes when it ends: nothing is
/// left in the system's temp folder.
pub(crate) fn state_dir(workdir: &Path) -> PathBuf {
    if workdir.file_name() == Some(WORK.as_ref()) {
        if let Some(root) = workdir.parent() {
            let state = root.join(STATE);
            if state.is_dir() {
                return state;
            }
        }
    }
    workdir.join(".cairn-state")
}

/// Names inside a [`Workdir`]'s temporary directory.
const WORK: &str = "work";
const STATE: &str = "state";

/// The `cairn` command with the emulators' environment.
pub(crate) fn cairn_command() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_cairn"));
    command
        .envs(STORE_ENV)
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_SESSION_TOKEN");
    command
}

/// Runs the binary with exactly these arguments.
/// `deployment --target URL --username admin --password SECRET --ca-cert CA`: the Director
/// stand-in's login, to which a test adds its flags and subcommand.
pub(crate) fn director_login(director: &cairn_testbed::director::Director) -> Vec<String> {
    vec![
        "deployment".into(),
        "--target".into(),
        director.url(),
        "--username".into(),
        cairn_testbed::director::DEFAULT_CLIENT_ID.into(),
        "--password".into(),
        cairn_testbed::director::DEFAULT_CLIENT_SECRET.into(),
        "--ca-cert".into(),
        director.ca_cert_path().to_string_lossy().into_owned(),
    ]
}

/// [`director_login`] followed by `args`, as `&str`s for [`run`] and friends.
pub(crate) fn with_director_login<'a>(login: &'a [String], args: &[&'a str]) -> Vec<&'a str> {
    login
        .iter()
        .map(String::as_str)
        .chain(args.iter().copied())
        .collect()
}

pub(crate) fn run(workdir: &Path, args: &[&str]) -> Output {
    let output = cairn_command_in(workdir)
        .args(args)
        .output()
        .expect("cairn runs");
    logged(args, output)
}

/// Prints what `cairn ARGS` answered (shown when a test fails) and hands the output back.
pub(crate) fn logged(args: &[&str], output: Output) -> Output {
    eprintln!(
        "cairn {args:?} -> {:?}\n--- stdout\n{}--- stderr\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// `backup --artifact-path <work>` with the bbr directory format.
pub(crate) fn backup_into(bed: &TestBed, work: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["backup", "--artifact-path", work.to_str().unwrap()];
    args.extend_from_slice(extra);
    cairn(bed, work, &args)
}

/// How many script events each locking job has logged (to prove none ran).
pub(crate) fn script_counts(bed: &TestBed) -> Vec<usize> {
    locking_jobs(bed)
        .iter()
        .map(|(host, job)| bed.events(host, job).len())
        .collect()
}

/// Asserts no lock, backup or restore script of a locking job has ever run.
pub(crate) fn assert_no_script_ran(bed: &TestBed) {
    for (host, job) in locking_jobs(bed) {
        assert!(
            bed.events(host, job).is_empty(),
            "a script of {job} ran on {}/{}",
            host.group,
            host.index
        );
    }
}

/// Clears the job scripts' event logs, so [`assert_no_script_ran`] speaks of what follows.
pub(crate) fn forget_script_events(bed: &TestBed) {
    for (host, job) in locking_jobs(bed) {
        let _ = std::fs::remove_file(
            host.vcap_dir
                .join("sys/log")
                .join(job)
                .join("bbr-events.log"),
        );
    }
    assert_no_script_ran(bed);
}

/// Stdout and stderr as one text.
pub(crate) fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// A test's scratch directory: [`Workdir::path`] is where cairn runs and writes artifacts (empty
/// at first), and next to it the run-journal directory ([`state_dir`]); the whole temporary
/// directory is removed when the value is dropped, at the end of the test.
pub(crate) struct Workdir {
    root: tempfile::TempDir,
    work: PathBuf,
}

impl Workdir {
    /// The (initially empty) working directory.
    pub(crate) fn path(&self) -> &Path {
        &self.work
    }

    /// The temporary directory holding [`Workdir::path`] and the run journals.
    pub(crate) fn root(&self) -> &Path {
        self.root.path()
    }
}

impl AsRef<Path> for Workdir {
    fn as_ref(&self) -> &Path {
        &self.work
    }
}

/// A scratch directory for artifacts, removed at the end of the test (see [`Workdir`]).
pub(crate) fn workdir() -> Workdir {
    let root = tempfile::Builder::new()
        .prefix("cairn-e2e-")
        .tempdir()
        .expect("temp dir");
    let work = root.path().join(WORK);
    std::fs::create_dir(&work).expect("work dir");
    std::fs::create_dir(root.path().join(STATE)).expect("state dir");
    Workdir { root, work }
}

/// The only backup directory created in `parent`.
pub(crate) fn backup_dir(parent: &Path) -> PathBuf {
    let dirs: Vec<PathBuf> = std::fs::read_dir(parent)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    assert_eq!(
        dirs.len(),
        1,
        "expected one backup directory in {}: {dirs:?}",
        parent.display()
    );
    dirs[0].clone()
}

/// Tar files in a backup directory.
pub(crate) fn tars(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tar"))
        .collect();
    names.sort();
    names
}

/// sha256 of every file under `root`, keyed by relative path; directories as `dir/`.
pub(crate) fn tree_digest(root: &Path) -> BTreeMap<String, String> {
    let mut digests = BTreeMap::new();
    walk(root, root, &mut digests);
    digests
}

fn walk(root: &Path, dir: &Path, digests: &mut BTreeMap<String, String>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        let relative = path
            .strip_prefix(root)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        if path.is_dir() {
            digests.insert(format!("{relative}/"), String::new());
            walk(root, &path, digests);
        } else {
            let bytes = std::fs::read(&path).unwrap();
            digests.insert(relative, hex::encode(Sha256::digest(&bytes)));
        }
    }
}

/// Writes `size` bytes of deterministic, incompressible data.
pub(crate) fn write_pseudo_random(path: &Path, size: usize) {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut data = Vec::with_capacity(size);
    while data.len() < size {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        data.extend_from_slice(&state.to_le_bytes());
    }
    data.truncate(size);
    std::fs::write(path, data).unwrap();
}

/// Every job on every host with lock scripts: (host label, job).
pub(crate) fn locking_jobs(bed: &TestBed) -> Vec<(&TestHost, &'static str)> {
    let mut jobs = Vec::new();
    for host in bed.hosts() {
        for job in ["app", "database"] {
            if host
                .vcap_dir
                .join("jobs")
                .join(job)
                .join("bin/bbr/pre-backup-lock")
                .exists()
            {
                jobs.push((host, job));
            }
        }
    }
    jobs
}

/// Asserts no job is left locked and no remote artifact directory remains.
pub(crate) fn assert_nothing_left(bed: &TestBed) {
    for (host, job) in locking_jobs(bed) {
        assert!(
            !bed.is_locked(host, job),
            "{job} on {}/{} is still locked",
            host.group,
            host.index
        );
    }
    for host in bed.hosts() {
        let leftover = host.vcap_dir.join("store/bbr-backup");
        assert!(!leftover.exists(), "{} was left behind", leftover.display());
    }
}

/// Times at which `script` ran for `job` on `host`.
pub(crate) fn event_times(bed: &TestBed, host: &TestHost, job: &str, script: &str) -> Vec<f64> {
    bed.events(host, job)
        .into_iter()
        .filter(|(_, name, _)| name == script)
        .map(|(time, _, _)| time)
        .collect()
}

pub(crate) use cairn_testbed::stores::{Emulator, Server};

/// `integration/stores/`: the emulator scripts, `fixture.py`, `fault_proxy.py`.
pub(crate) fn stores_dir() -> PathBuf {
    cairn_testbed::stores::dir()
}

/// `cairn contract check PATH --ssh vcap@HOST` with the test bed's key and `known_hosts`.
pub(crate) fn contract_check_over_ssh(
    bed: &TestBed,
    host: &TestHost,
    path: &str,
    known_hosts: &Path,
    extra: &[&str],
) -> Output {
    let key = bed.private_key();
    let ssh = format!("vcap@{}", host.address);
    let mut args = vec![
        "contract",
        "check",
        path,
        "--ssh",
        &ssh,
        "--private-key-path",
        key.to_str().unwrap(),
        "--known-hosts",
        known_hosts.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    run(bed.dir(), &args)
}

/// integration/stores/fault_proxy.py in front of an emulator.
pub(crate) struct FaultProxy {
    child: std::process::Child,
    dir: tempfile::TempDir,
    /// `http://127.0.0.1:PORT`.
    pub(crate) endpoint: String,
}

impl FaultProxy {
    /// Starts it in front of `upstream` with the faults of `faults` (JSON, see the script).
    pub(crate) fn start(upstream: &str, faults: &str) -> FaultProxy {
        FaultProxy::start_with(upstream, faults, false)
    }

    /// [`FaultProxy::start`] that also logs every request's `Authorization` header
    /// ([`FaultProxy::authorizations`]).
    pub(crate) fn start_logging_authorization(upstream: &str, faults: &str) -> FaultProxy {
        FaultProxy::start_with(upstream, faults, true)
    }

    /// Every request's `Authorization` header so far (empty when it had none), in order; only
    /// for a proxy started with [`FaultProxy::start_logging_authorization`].
    pub(crate) fn authorizations(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.path().join("authorization.log"))
            .unwrap_or_default()
            .lines()
            .map(|l| l.splitn(3, '\t').nth(2).unwrap_or("").to_string())
            .collect()
    }

    /// The request (`METHOD path?query`) and `Authorization` header of every request so far,
    /// in the order the proxy received them; only for a proxy started with
    /// [`FaultProxy::start_logging_authorization`].
    pub(crate) fn authorized_requests(&self) -> Vec<(String, String)> {
        std::fs::read_to_string(self.dir.path().join("authorization.log"))
            .unwrap_or_default()
            .lines()
            .map(|l| {
                let mut fields = l.splitn(3, '\t');
                let method = fields.next().unwrap_or("");
                let path = fields.next().unwrap_or("");
                let value = fields.next().unwrap_or("");
                (format!("{method} {path}"), value.to_string())
            })
            .collect()
    }

    /// A path inside the proxy's own directory (for a `late_marker` or `hold` marker).
    pub(crate) fn marker(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn start_with(upstream: &str, faults: &str, log_authorization: bool) -> FaultProxy {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("control.json"), faults).unwrap();
        let mut command = Command::new("python3");
        command.arg(stores_dir().join("fault_proxy.py"));
        if log_authorization {
            command
                .arg("--auth-log")
                .arg(dir.path().join("authorization.log"));
        }
        let child = command
            .args(["--upstream", upstream])
            .arg("--control")
            .arg(dir.path().join("control.json"))
            .arg("--log")
            .arg(dir.path().join("requests.log"))
            .arg("--ready")
            .arg(dir.path().join("ready"))
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while !dir.path().join("ready").exists() {
            assert!(
                std::time::Instant::now() < deadline,
                "the fault proxy never started"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let ready = std::fs::read_to_string(dir.path().join("ready")).unwrap();
        let port = ready.trim().strip_prefix("port=").unwrap().to_string();
        FaultProxy {
            child,
            dir,
            endpoint: format!("http://127.0.0.1:{port}"),
        }
    }

    /// Changes the faults while it runs.
    pub(crate) fn set(&self, faults: &str) {
        let path = self.dir.path().join("control.json");
        std::fs::write(path.with_extension("tmp"), faults).unwrap();
        std::fs::rename(path.with_extension("tmp"), path).unwrap();
    }

    /// Forgets the requests so far.
    pub(crate) fn clear_log(&self) {
        std::fs::write(self.dir.path().join("requests.log"), "").unwrap();
    }

    /// The outcome of every request so far (`forwarded 200`, `injected-503`, `reset`, ...).
    pub(crate) fn outcomes(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.path().join("requests.log"))
            .unwrap_or_default()
            .lines()
            .map(|l| l.rsplit('\t').next().unwrap().to_string())
            .collect()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
