//! A local, BOSH-like test bed for Cairn's end-to-end tests.
//!
//! [`TestBed::start`] runs `integration/testbed.sh up`, which starts one real OpenSSH server per
//! "VM". Every host has its own network namespace (its own IP address, port 22), its own mount
//! namespace (its own `/var/vcap`, backed by `DIR/hosts/<group>-<index>/vcap` on this machine)
//! and the example bbr jobs of `scripts-contract/examples` installed under
//! `/var/vcap/jobs/<job>/`. The login user is `vcap` with passwordless sudo, as on a stemcell.
//! Dropping the [`TestBed`] tears everything down again.
//!
//! The test bed writes `DIR/inventory.yml` (the hosts, their addresses, host keys and the
//! client key) and `DIR/known_hosts`; a Cairn run pointed at them talks to the hosts exactly
//! as bbr talks to BOSH VMs. Tests then look at the hosts' files directly through
//! [`TestHost::vcap_dir`], at the job scripts' event logs with [`TestBed::events`] and
//! [`TestBed::timeline`], and run commands inside a host with [`TestBed::exec`].
//!
//! Starting a test bed needs root (namespaces, bridges, sshd on port 22) and takes about half
//! a second for three hosts. Several test beds can run at once (one /24 subnet each), so tests
//! using them may run in parallel. A test that needs one starts with [`require_root!`], which
//! returns at once when the process is not root and prints one line per process saying so.
//!
//! ```no_run
//! use cairn_testbed::TestBed;
//!
//! # fn main() -> std::io::Result<()> {
//! // The default layout: database/0 (database), app/0 and app/1 (app, files).
//! let bed = TestBed::start(&[])?;
//! let database = bed.host("database", 0);
//!
//! // ... run `cairn` against bed.inventory() here ...
//!
//! let scripts: Vec<String> = bed.events(database, "database").into_iter().map(|e| e.1).collect();
//! assert_eq!(scripts, ["pre-backup-lock", "backup", "post-backup-unlock"]);
//! assert!(!bed.is_locked(database, "database"));
//! # Ok(())
//! # }
//! ```
#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]

use std::fs;
use std::io::{self, ErrorKind, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Once;
use std::time::{SystemTime, UNIX_EPOCH};

pub mod director;
pub mod metadata;
pub mod schema;
pub mod stores;

/// Environment variable: when set, a dropped [`TestBed`] keeps its directory (logs, host
/// files, keys) for inspection. The hosts are stopped either way.
pub const KEEP_ENV: &str = "CAIRN_KEEP_TESTBED";

/// Whether this process runs as root (effective uid 0, from `/proc/self/status`), as a test
/// bed needs.
#[must_use]
pub fn is_root() -> bool {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let ids = status.lines().find_map(|line| line.strip_prefix("Uid:"))?;
            ids.split_whitespace()
                .nth(1)
                .map(|effective| effective == "0")
        })
        .unwrap_or(false)
}

/// For a test that needs a test bed: `true` when it must be skipped because this process is
/// not root. The first call that skips prints one line for the whole process, e.g.
/// `e2e: skipped, needs root (the test bed creates network namespaces); run sudo
/// integration/test.sh`, straight to stderr (the test harness would hide it otherwise).
/// [`require_root!`] is the usual way to call it.
#[must_use]
pub fn skip_without_root() -> bool {
    static SAID: Once = Once::new();
    if is_root() {
        return false;
    }
    SAID.call_once(|| {
        let binary = test_binary_name();
        let _ = writeln!(
            io::stderr(),
            "{binary}: skipped, needs root (the test bed creates network namespaces); \
             run sudo integration/test.sh"
        );
    });
    true
}

/// The running test binary's name without cargo's `-<hash>`: `e2e`, `testbed_smoke`, ...
fn test_binary_name() -> String {
    let Some(stem) = std::env::current_exe()
        .ok()
        .and_then(|path| Some(path.file_stem()?.to_string_lossy().into_owned()))
    else {
        return "tests".to_owned();
    };
    match stem.rsplit_once('-') {
        Some((name, hash)) if !hash.is_empty() && hash.chars().all(|c| c.is_ascii_hexdigit()) => {
            name.to_owned()
        }
        _ => stem.clone(),
    }
}

/// Returns from the calling test when this process is not root (see
/// [`skip_without_root`]): the first statement of every test that starts a [`TestBed`].
///
/// ```no_run
/// #[test]
/// fn backs_up_the_default_layout() {
///     cairn_testbed::require_root!();
///     let bed = cairn_testbed::TestBed::start(&[]).expect("test bed");
///     // ...
/// }
/// ```
#[macro_export]
macro_rules! require_root {
    () => {
        if $crate::skip_without_root() {
            return;
        }
    };
}

/// One host to start: instance group, index and the jobs installed on it.
///
/// Jobs named after a directory of `scripts-contract/examples` (`database`, `app`, `files`)
/// get its scripts; any other job name gets an empty `bin/bbr/` directory to fill with
/// [`TestBed::install_script`].
pub type HostSpec<'a> = (&'a str, u32, &'a [&'a str]);

/// Options of [`TestBed::start_with`].
#[derive(Debug, Clone, Default)]
pub struct TestBedOptions {
    /// Leave the jobs' store directories empty instead of putting sample data in them.
    pub no_seed: bool,
}

/// A running test bed. Dropping it stops the hosts and removes its directory (unless
/// [`KEEP_ENV`] is set).
#[derive(Debug)]
pub struct TestBed {
    dir: PathBuf,
    hosts: Vec<TestHost>,
}

/// One host ("VM") of a [`TestBed`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestHost {
    /// Instance group, e.g. `app`.
    pub group: String,
    /// BOSH instance index.
    pub index: u32,
    /// IPv4 address; its sshd listens on port 22.
    pub address: String,
    /// This machine's view of the host's `/var/vcap`: `DIR/hosts/<group>-<index>/vcap`.
    pub vcap_dir: PathBuf,
    /// The host's own directory, `DIR/hosts/<group>-<index>`: `sshd_config`, `sshd.log`,
    /// host key.
    pub dir: PathBuf,
    /// Pid of the host's sshd; its namespaces are the host's.
    pub sshd_pid: u32,
}

impl TestHost {
    /// `group/index`, as bbr names instances in its logs.
    #[must_use]
    pub fn name(&self) -> String {
        format!("{}/{}", self.group, self.index)
    }
}

/// One line of a job's event log, with the host and job it came from (see
/// [`TestBed::timeline`]).
#[derive(Debug, Clone, PartialEq)]
pub struct TimelineEvent {
    /// Unix time in seconds (nanoseconds in the log, about microsecond precision here).
    pub time: f64,
    /// `group/index` of the host.
    pub host: String,
    /// Job name.
    pub job: String,
    /// Script name, e.g. `pre-backup-lock`.
    pub script: String,
    /// The rest of the line, e.g. `success=true` (may be empty).
    pub extra: String,
}

impl TestBed {
    /// Starts a test bed with the given hosts, or the default layout for an empty slice:
    /// `database/0` (job `database`), `app/0` and `app/1` (jobs `app`, `files`), with sample
    /// data in the jobs' store directories.
    ///
    /// ```no_run
    /// # use cairn_testbed::TestBed;
    /// let bed = TestBed::start(&[("redis", 0, &["redis-server"]), ("redis", 1, &["redis-server"])]);
    /// ```
    ///
    /// # Errors
    /// Fails when not run as root ([`ErrorKind::PermissionDenied`]) or if `testbed.sh up`
    /// fails (its stderr is in the error).
    pub fn start(hosts: &[HostSpec<'_>]) -> io::Result<TestBed> {
        Self::start_with(hosts, &TestBedOptions::default())
    }

    /// Like [`TestBed::start`], with options.
    ///
    /// # Errors
    /// Fails when not run as root ([`ErrorKind::PermissionDenied`]) or if `testbed.sh up`
    /// fails (its stderr is in the error).
    pub fn start_with(hosts: &[HostSpec<'_>], options: &TestBedOptions) -> io::Result<TestBed> {
        if !is_root() {
            return Err(io::Error::new(
                ErrorKind::PermissionDenied,
                "a test bed needs root (it creates network namespaces); run as root, e.g. \
                 sudo integration/test.sh",
            ));
        }
        let dir = create_unique_dir("cairn-testbed")?;
        let mut up = Command::new(Self::script());
        up.arg("up").arg(&dir);
        for (group, index, jobs) in hosts {
            up.arg("--host")
                .arg(format!("{group}/{index}:{}", jobs.join(",")));
        }
        if options.no_seed {
            up.arg("--no-seed");
        }
        // From here on, dropping `bed` cleans up whatever `up` left behind.
        let mut bed = TestBed {
            dir,
            hosts: Vec::new(),
        };
        let output = up.output()?;
        if !output.status.success() {
            return Err(io::Error::other(format!(
                "`testbed.sh up {}` failed ({}): {}",
                bed.dir.display(),
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            )));
        }
        bed.hosts = read_hosts_tsv(&bed.dir.join("hosts.tsv"))?;
        Ok(bed)
    }

    /// Path of `integration/testbed.sh`.
    #[must_use]
    pub fn script() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("testbed.sh")
    }

    /// The test bed's directory (see `integration/README.md` for its layout).
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `DIR/inventory.yml`: deployment name, releases and one entry per host.
    #[must_use]
    pub fn inventory(&self) -> PathBuf {
        self.dir.join("inventory.yml")
    }

    /// The root-namespace address of the test bed's bridge, `10.199.K.1` (from
    /// `DIR/testbed.env`): the only address of this machine that the hosts can reach, e.g. for a
    /// [`director::Director`] that a host acting as a jumpbox must talk to.
    ///
    /// # Errors
    /// If `DIR/testbed.env` cannot be read or has no `SLOT=K` line.
    pub fn bridge_address(&self) -> io::Result<String> {
        let path = self.dir.join("testbed.env");
        let text = fs::read_to_string(&path)?;
        text.lines()
            .find_map(|line| line.strip_prefix("SLOT="))
            .and_then(|slot| slot.trim().parse::<u8>().ok())
            .map(|slot| format!("10.199.{slot}.1"))
            .ok_or_else(|| {
                io::Error::new(
                    ErrorKind::InvalidData,
                    format!("no SLOT=K line in {}", path.display()),
                )
            })
    }

    /// `DIR/known_hosts`: one `ADDRESS ssh-ed25519 AAAA...` line per host.
    #[must_use]
    pub fn known_hosts(&self) -> PathBuf {
        self.dir.join("known_hosts")
    }

    /// `DIR/id_ed25519`: the private key that logs in as `vcap` on every host.
    #[must_use]
    pub fn private_key(&self) -> PathBuf {
        self.dir.join("id_ed25519")
    }

    /// All hosts, in the order they were given (or the default layout's order).
    #[must_use]
    pub fn hosts(&self) -> &[TestHost] {
        &self.hosts
    }

    /// The host `group/index`.
    ///
    /// # Panics
    /// If the test bed has no such host.
    #[must_use]
    pub fn host(&self, group: &str, index: u32) -> &TestHost {
        self.hosts
            .iter()
            .find(|host| host.group == group && host.index == index)
            .unwrap_or_else(|| panic!("test bed has no host {group}/{index}"))
    }

    /// Runs `sh -c command` as root inside the host's network, mount and UTS namespaces (so
    /// `/var/vcap` is the host's), without SSH.
    ///
    /// # Errors
    /// Only if the command cannot be spawned; check the output's status yourself.
    pub fn exec(&self, host: &TestHost, command: &str) -> io::Result<Output> {
        Command::new(Self::script())
            .arg("exec")
            .arg(&self.dir)
            .arg(host.name())
            .args(["--", "sh", "-c", command])
            .output()
    }

    /// An `ssh` command that logs in to the host as `vcap` with the test bed's key and
    /// `known_hosts` only (no user configuration, no agent); add the remote command and run it.
    #[must_use]
    pub fn ssh_command(&self, host: &TestHost) -> Command {
        let mut ssh = Command::new("ssh");
        ssh.args(["-F", "/dev/null", "-i"])
            .arg(self.private_key())
            .args(["-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes"])
            .arg("-o")
            .arg(format!(
                "UserKnownHostsFile={}",
                self.known_hosts().display()
            ))
            .args(["-o", "StrictHostKeyChecking=yes", "-o", "ConnectTimeout=5"])
            .args(["-o", "LogLevel=ERROR"])
            .arg(format!("vcap@{}", host.address));
        ssh
    }

    /// Runs `command` on the host over SSH as `vcap` (prefix it with `sudo` for root).
    ///
    /// # Errors
    /// Only if `ssh` cannot be spawned; check the output's status yourself.
    pub fn ssh(&self, host: &TestHost, command: &str) -> io::Result<Output> {
        self.ssh_command(host).arg(command).output()
    }

    /// Writes `/var/vcap/jobs/<job>/bin/bbr/<script>` on the host with mode 0755, replacing
    /// any existing one atomically (so a script that is running is never rewritten in place).
    ///
    /// # Errors
    /// If the file cannot be written.
    pub fn install_script(
        &self,
        host: &TestHost,
        job: &str,
        script: &str,
        body: &str,
    ) -> io::Result<()> {
        let job_dir = host.vcap_dir.join("jobs").join(job);
        let bin_dir = job_dir.join("bin").join("bbr");
        fs::create_dir_all(&bin_dir)?;
        // The temporary file lives outside bin/bbr so that script discovery never sees it.
        let temporary = job_dir.join(format!(".{script}.installing"));
        fs::write(&temporary, body)?;
        fs::set_permissions(&temporary, fs::Permissions::from_mode(0o755))?;
        fs::rename(&temporary, bin_dir.join(script))
    }

    /// Deletes `/var/vcap/jobs/<job>/bin/bbr/<script>` on the host (no error if it is absent).
    ///
    /// # Errors
    /// If the file exists and cannot be removed.
    pub fn remove_script(&self, host: &TestHost, job: &str, script: &str) -> io::Result<()> {
        let path = host
            .vcap_dir
            .join("jobs")
            .join(job)
            .join("bin/bbr")
            .join(script);
        match fs::remove_file(path) {
            Err(error) if error.kind() != ErrorKind::NotFound => Err(error),
            _ => Ok(()),
        }
    }

    /// The job's event log on the host, `/var/vcap/sys/log/<job>/bbr-events.log`, as
    /// `(time, script, extra)` tuples in file order. Empty if the log does not exist.
    ///
    /// # Panics
    /// If the log cannot be read or has a line that is not `<unix time> <script> [extra]`.
    #[must_use]
    pub fn events(&self, host: &TestHost, job: &str) -> Vec<(f64, String, String)> {
        let path = host
            .vcap_dir
            .join("sys/log")
            .join(job)
            .join("bbr-events.log");
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(error) if error.kind() == ErrorKind::NotFound => return Vec::new(),
            Err(error) => panic!("cannot read {}: {error}", path.display()),
        };
        text.lines()
            .filter(|line| !line.trim().is_empty())
            .map(|line| {
                parse_event(line)
                    .unwrap_or_else(|| panic!("bad event line in {}: {line:?}", path.display()))
            })
            .collect()
    }

    /// The events of every job on every host, sorted by time: the order in which Cairn ran
    /// the scripts across the deployment.
    ///
    /// # Panics
    /// Like [`TestBed::events`].
    #[must_use]
    pub fn timeline(&self) -> Vec<TimelineEvent> {
        let mut timeline = Vec::new();
        for host in &self.hosts {
            let Ok(entries) = fs::read_dir(host.vcap_dir.join("sys/log")) else {
                continue;
            };
            let mut jobs: Vec<String> = entries
                .filter_map(Result::ok)
                .map(|entry| entry.file_name().to_string_lossy().into_owned())
                .collect();
            jobs.sort();
            for job in jobs {
                for (time, script, extra) in self.events(host, &job) {
                    let (host, job) = (host.name(), job.clone());
                    timeline.push(TimelineEvent {
                        time,
                        host,
                        job,
                        script,
                        extra,
                    });
                }
            }
        }
        timeline.sort_by(|a, b| a.time.total_cmp(&b.time));
        timeline
    }

    /// Whether the job is locked on the host: its lock scripts create
    /// `/var/vcap/sys/run/<job>/locked` and its unlock scripts remove it.
    #[must_use]
    pub fn is_locked(&self, host: &TestHost, job: &str) -> bool {
        host.vcap_dir
            .join("sys/run")
            .join(job)
            .join("locked")
            .exists()
    }
}

impl Drop for TestBed {
    fn drop(&mut self) {
        let down = Command::new(Self::script())
            .arg("down")
            .arg(&self.dir)
            .output();
        match down {
            Ok(output) if output.status.success() => {}
            Ok(output) => eprintln!(
                "cairn-testbed: `testbed.sh down {}` failed ({}): {}",
                self.dir.display(),
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            ),
            Err(error) => eprintln!("cairn-testbed: cannot run testbed.sh down: {error}"),
        }
        if std::env::var_os(KEEP_ENV).is_some() {
            eprintln!(
                "cairn-testbed: keeping {} ({KEEP_ENV} is set)",
                self.dir.display()
            );
        } else if let Err(error) = fs::remove_dir_all(&self.dir) {
            eprintln!(
                "cairn-testbed: cannot remove {}: {error}",
                self.dir.display()
            );
        }
    }
}

/// Creates a fresh `<prefix>-<pid>-<n>-<nanos>` directory under the temporary directory.
fn create_unique_dir(prefix: &str) -> io::Result<PathBuf> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    loop {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("{prefix}-{}-{n}-{nanos}", std::process::id()));
        match fs::create_dir(&dir) {
            Err(error) if error.kind() == ErrorKind::AlreadyExists => {}
            Err(error) => return Err(error),
            Ok(()) => return Ok(dir),
        }
    }
}

/// Parses `DIR/hosts.tsv`: `group<TAB>index<TAB>address<TAB>hostdir<TAB>sshd_pid` per line.
fn read_hosts_tsv(path: &Path) -> io::Result<Vec<TestHost>> {
    let invalid = |line: &str| {
        io::Error::new(
            ErrorKind::InvalidData,
            format!("bad line in {}: {line:?}", path.display()),
        )
    };
    fs::read_to_string(path)?
        .lines()
        .filter(|line| !line.is_empty())
        .map(|line| {
            let fields: Vec<&str> = line.split('\t').collect();
            let [group, index, address, dir, pid] = fields[..] else {
                return Err(invalid(line));
            };
            let dir = PathBuf::from(dir);
            Ok(TestHost {
                group: group.to_owned(),
                index: index.parse().map_err(|_| invalid(line))?,
                address: address.to_owned(),
                vcap_dir: dir.join("vcap"),
                dir,
                sshd_pid: pid.parse().map_err(|_| invalid(line))?,
            })
        })
        .collect()
}

/// Parses `<unix time> <script> [extra]`.
fn parse_event(line: &str) -> Option<(f64, String, String)> {
    let (time, rest) = line.split_once(' ')?;
    let (script, extra) = rest.split_once(' ').unwrap_or((rest, ""));
    if script.is_empty() {
        return None;
    }
    Some((time.parse().ok()?, script.to_owned(), extra.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::parse_event;

    #[test]
    fn parses_event_lines() {
        assert_eq!(
            parse_event("1795317856.328086937 post-backup-unlock success=true"),
            Some((
                1_795_317_856.328_086_9,
                "post-backup-unlock".into(),
                "success=true".into()
            ))
        );
        assert_eq!(
            parse_event("1795317856.5 backup dir=/var/vcap/store/bbr-backup/my job/"),
            Some((
                1_795_317_856.5,
                "backup".into(),
                "dir=/var/vcap/store/bbr-backup/my job/".into()
            ))
        );
        assert_eq!(
            parse_event("1795317854.547560429 pre-backup-lock"),
            Some((
                1_795_317_854.547_560_4,
                "pre-backup-lock".into(),
                String::new()
            ))
        );
        assert_eq!(parse_event("not-a-time backup"), None);
        assert_eq!(parse_event("1795317854"), None);
    }
}
