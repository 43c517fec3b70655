//! A scripted fake of what a workflow talks to: [`FakeHost`], a [`RemoteHost`] that answers
//! the exact commands of `src/commands.rs` by pattern, and [`FakeTarget`], a [`Target`] whose
//! instances are fake hosts.
//!
//! Every host keeps a small in-memory file system (the directories under
//! `/var/vcap/store/bbr-backup` and the files the `backup` scripts "write" or `tar -x`
//! extracts), so a whole backup into a real bbr directory, and a restore from it, can run.
//! Every command is recorded in a shared [`World`] with when it started and ended (a global
//! tick), parsed into an [`Op`] (job scripts with the environment they were given), so tests
//! can assert orders and sets. Each job script (and each job's `tar -c`) has a configurable
//! [`Outcome`].

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use cairn::error::{Error, RunErrors};
use cairn::model::deployment::{InstanceAddress, Target};
use cairn::model::job::{parse_script_path, InstanceName, ScriptName, REMOTE_ARTIFACT_ROOT};
use cairn::remote::{CommandOutput, RemoteError, RemoteHost, StdoutMode};
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;

/// How a job script (or a job's `tar -c`) ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Exit 0, doing what the script does (a `backup` writes the job's files).
    Succeed,
    /// Exit with this status and standard error, doing nothing.
    Fail(u32, String),
    /// The connection drops: a [`RemoteError`] that is not `Cancelled`.
    Lost,
    /// Runs until the command's cancellation token fires (then `RemoteError::Cancelled`).
    /// Reaching it wakes [`World::hang_reached`].
    Hang,
    /// Succeeds after yielding to the scheduler this many times: a script that takes longer
    /// than the others (in polls, not in time).
    Slow(usize),
}

/// What a command was, parsed back from the string `src/commands.rs` built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Op {
    /// The discovery `find`.
    Find,
    /// `stat` of a path.
    Stat(String),
    /// `mkdir -p`.
    Mkdir(String),
    /// `rm -rf`.
    Remove(String),
    /// `du -sk`.
    DiskUsage(String),
    /// `tar -c` of a directory to stdout.
    TarCreate(String),
    /// `tar -x` from stdin into a directory.
    TarExtract(String),
    /// `tar -x` from stdin into a directory, printing the checksums of the files it extracted.
    TarExtractChecksum(String),
    /// The checksum script over a directory.
    Checksum(String),
    /// `df -Pk` of `/var/vcap/store` (a restore's free-space check).
    FreeSpace,
    /// A job script with its environment (and `timeout` seconds, if wrapped).
    Script {
        /// Job name.
        job: String,
        /// Which script.
        script: ScriptName,
        /// `NAME=value` pairs before the script path.
        env: BTreeMap<String, String>,
        /// The `timeout` wrapper's limit, e.g. `90s`.
        timeout: Option<String>,
    },
}

/// One command a host received.
#[derive(Debug, Clone)]
pub(crate) struct Call {
    /// `<group>/<id>`.
    pub host: String,
    /// The command as received.
    pub command: String,
    /// The command parsed.
    pub op: Op,
    /// Tick when it started.
    pub started: usize,
    /// Tick when it returned (`None` while running, or when its future was dropped).
    pub ended: Option<usize>,
    /// `exit N` or the transport error.
    pub result: String,
}

impl Call {
    /// `<host>/<job>` for a script call.
    pub(crate) fn job_id(&self) -> Option<String> {
        match &self.op {
            Op::Script { job, .. } => Some(format!("{}/{job}", self.host)),
            _ => None,
        }
    }

    /// The script, for a script call.
    pub(crate) fn script(&self) -> Option<ScriptName> {
        match &self.op {
            Op::Script { script, .. } => Some(*script),
            _ => None,
        }
    }

    /// A variable of a script's environment.
    pub(crate) fn env(&self, name: &str) -> Option<&str> {
        match &self.op {
            Op::Script { env, .. } => env.get(name).map(String::as_str),
            _ => None,
        }
    }
}

/// What every host of one target shares: the call log and the "a hang was reached" signal.
#[derive(Debug, Default)]
pub(crate) struct World {
    calls: Mutex<Vec<Call>>,
    tick: AtomicUsize,
    hung: Notify,
}

impl World {
    fn next_tick(&self) -> usize {
        self.tick.fetch_add(1, Ordering::SeqCst)
    }

    fn start(&self, host: &str, command: &str, op: Op) -> usize {
        let started = self.next_tick();
        let mut calls = self.calls.lock().unwrap();
        calls.push(Call {
            host: host.to_string(),
            command: command.to_string(),
            op,
            started,
            ended: None,
            result: "running".into(),
        });
        calls.len() - 1
    }

    fn end(&self, index: usize, result: &Result<CommandOutput, RemoteError>) {
        let ended = self.next_tick();
        let mut calls = self.calls.lock().unwrap();
        calls[index].ended = Some(ended);
        calls[index].result = match result {
            Ok(output) => format!("exit {}", output.status),
            Err(error) => error.to_string(),
        };
    }

    /// Every call so far, in the order they started.
    pub(crate) fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    /// The calls of one script, in the order they started.
    pub(crate) fn script_calls(&self, script: ScriptName) -> Vec<Call> {
        self.calls()
            .into_iter()
            .filter(|c| c.script() == Some(script))
            .collect()
    }

    /// The calls whose op matches.
    pub(crate) fn ops_matching(&self, matches: impl Fn(&Op) -> bool) -> Vec<Call> {
        self.calls()
            .into_iter()
            .filter(|c| matches(&c.op))
            .collect()
    }

    /// Resolves once some command reached [`Outcome::Hang`].
    pub(crate) async fn hang_reached(&self) {
        self.hung.notified().await;
    }
}

/// A job as an instance has it.
#[derive(Debug, Clone)]
pub(crate) struct FakeJob {
    /// Job name.
    pub name: String,
    /// Its release (what the target answers for `release_of`).
    pub release: String,
    /// The bbr scripts it ships.
    pub scripts: BTreeSet<ScriptName>,
    /// `(job, release)` pairs of `backup_should_be_locked_before`.
    pub backup_locked_before: Vec<(String, String)>,
}

impl FakeJob {
    /// A job with every script of bbr's contract (not Cairn's `post-restore-verify`).
    pub(crate) fn new(name: &str, release: &str) -> FakeJob {
        FakeJob {
            name: name.into(),
            release: release.into(),
            scripts: ScriptName::ALL
                .into_iter()
                .filter(|s| *s != ScriptName::PostRestoreVerify)
                .collect(),
            backup_locked_before: Vec::new(),
        }
    }

    /// Adds a `backup_should_be_locked_before` entry to its metadata.
    pub(crate) fn locked_before(mut self, job: &str, release: &str) -> FakeJob {
        self.backup_locked_before.push((job.into(), release.into()));
        self
    }

    /// Removes one of its scripts.
    pub(crate) fn without(mut self, script: ScriptName) -> FakeJob {
        self.scripts.remove(&script);
        self
    }

    /// What its `metadata` script prints.
    fn metadata_yaml(&self) -> String {
        if self.backup_locked_before.is_empty() {
            return String::new();
        }
        let mut yaml = String::from("---\nbackup_should_be_locked_before:\n");
        for (job, release) in &self.backup_locked_before {
            yaml.push_str(&format!("- job_name: {job}\n  release: {release}\n"));
        }
        yaml
    }
}

/// The files a successful `backup` of `job` on `host` writes: two files, one in a
/// subdirectory with a space in its name.
pub(crate) fn backup_files(host: &str, job: &str) -> BTreeMap<String, Vec<u8>> {
    BTreeMap::from([
        (
            "./dump.sql".to_string(),
            format!("-- {job} on {host}\n").into_bytes(),
        ),
        (
            "./sub dir/blob.bin".to_string(),
            (0..=255u8).cycle().take(3000).collect(),
        ),
    ])
}

/// Which outcome slot a command uses.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Step {
    Script(ScriptName),
    Transfer,
}

#[derive(Debug, Default)]
struct HostState {
    /// Directory (no trailing slash) to its files (`./name` to contents).
    dirs: BTreeMap<String, BTreeMap<String, Vec<u8>>>,
    /// Outcomes per `(job, step)`; the front is used and popped while more than one is left.
    outcomes: HashMap<(String, Step), VecDeque<Outcome>>,
}

impl HostState {
    fn exists(&self, path: &str) -> bool {
        let path = normalize(path);
        let prefix = format!("{path}/");
        self.dirs
            .keys()
            .any(|d| *d == path || d.starts_with(&prefix))
    }

    fn make_dir(&mut self, path: &str) {
        self.dirs.entry(normalize(path)).or_default();
    }

    fn remove(&mut self, path: &str) {
        let path = normalize(path);
        let prefix = format!("{path}/");
        self.dirs
            .retain(|d, _| *d != path && !d.starts_with(&prefix));
    }

    fn outcome(&mut self, job: &str, step: Step) -> Outcome {
        match self.outcomes.get_mut(&(job.to_string(), step)) {
            Some(queue) if queue.len() > 1 => queue.pop_front().expect("not empty"),
            Some(queue) => queue.front().cloned().unwrap_or(Outcome::Succeed),
            None => Outcome::Succeed,
        }
    }
}

fn normalize(path: &str) -> String {
    path.trim_end_matches('/').to_string()
}

/// One instance: its jobs, its files and the outcomes of its scripts.
#[derive(Debug)]
pub(crate) struct FakeHost {
    name: String,
    jobs: Vec<FakeJob>,
    world: Arc<World>,
    state: Mutex<HostState>,
}

impl fmt::Display for FakeHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

fn exit(status: u32, stdout: Vec<u8>, stderr: &str) -> CommandOutput {
    CommandOutput {
        status,
        stdout,
        stdout_dropped: 0,
        stderr: stderr.to_string(),
    }
}

impl FakeHost {
    /// True when `/var/vcap/store/bbr-backup` exists here.
    pub(crate) fn artifact_root_exists(&self) -> bool {
        self.state.lock().unwrap().exists(REMOTE_ARTIFACT_ROOT)
    }

    fn job(&self, name: &str) -> &FakeJob {
        self.jobs
            .iter()
            .find(|j| j.name == name)
            .unwrap_or_else(|| panic!("{}: no job {name}", self.name))
    }

    fn lost(&self) -> RemoteError {
        RemoteError::SessionEnded {
            host: self.name.clone(),
        }
    }

    fn cancelled(&self) -> RemoteError {
        RemoteError::Cancelled {
            host: self.name.clone(),
        }
    }

    /// Applies a non-success outcome: `None` means go on and do the work.
    async fn apply(
        &self,
        outcome: Outcome,
        cancel: &CancellationToken,
    ) -> Option<Result<CommandOutput, RemoteError>> {
        match outcome {
            Outcome::Succeed => None,
            Outcome::Slow(yields) => {
                for _ in 0..yields {
                    tokio::task::yield_now().await;
                }
                None
            }
            Outcome::Fail(status, stderr) => Some(Ok(exit(status, Vec::new(), &stderr))),
            Outcome::Lost => Some(Err(self.lost())),
            Outcome::Hang => {
                self.world.hung.notify_one();
                cancel.cancelled().await;
                Some(Err(self.cancelled()))
            }
        }
    }

    async fn answer(
        &self,
        op: &Op,
        stdin: Option<mpsc::Receiver<Bytes>>,
        stdout: StdoutMode,
        cancel: &CancellationToken,
    ) -> Result<CommandOutput, RemoteError> {
        if cancel.is_cancelled() {
            return Err(self.cancelled());
        }
        match op {
            Op::Find => Ok(exit(0, self.find_output().into_bytes(), "")),
            Op::Stat(path) => Ok(if self.state.lock().unwrap().exists(path) {
                exit(0, Vec::new(), "")
            } else {
                exit(
                    1,
                    Vec::new(),
                    &format!("stat: cannot stat '{path}': No such file or directory"),
                )
            }),
            Op::FreeSpace => Ok(exit(
                0,
                b"Filesystem 1024-blocks Used Available Capacity Mounted on\n\
                  /dev/sdb 104857600 1024 104856576 1% /var/vcap/store\n"
                    .to_vec(),
                "",
            )),
            Op::Mkdir(path) => {
                self.state.lock().unwrap().make_dir(path);
                Ok(exit(0, Vec::new(), ""))
            }
            Op::Remove(path) => {
                self.state.lock().unwrap().remove(path);
                Ok(exit(0, Vec::new(), ""))
            }
            Op::DiskUsage(dir) => {
                let bytes: usize = self
                    .files(dir)
                    .unwrap_or_default()
                    .values()
                    .map(Vec::len)
                    .sum();
                let text = format!("{}\t{dir}\n", bytes.div_ceil(1024));
                Ok(exit(0, text.into_bytes(), ""))
            }
            Op::Checksum(dir) => self.checksums(dir, b"  ", 0, stdout).await,
            Op::TarCreate(dir) => self.tar_create(dir, stdout, cancel).await,
            Op::TarExtract(dir) => self.tar_extract(dir, stdin).await,
            Op::TarExtractChecksum(dir) => {
                let extracted = self.tar_extract(dir, stdin).await?;
                if extracted.status != 0 {
                    return Ok(extracted);
                }
                self.checksums(dir, b" *", b'\n', stdout).await
            }
            Op::Script {
                job, script, env, ..
            } => self.script(job, *script, env, cancel).await,
        }
    }

    /// `<sha256><separator><name><end>` for every file of `dir` (exit 1 without `dir`).
    /// The checksum records of `dir`'s files, sent in pieces when Cairn reads them as they
    /// arrive (a million files' listing would be ~110 MB).
    async fn checksums(
        &self,
        dir: &str,
        separator: &[u8],
        end: u8,
        stdout: StdoutMode,
    ) -> Result<CommandOutput, RemoteError> {
        let Some(files) = self.files(dir) else {
            return Ok(exit(1, Vec::new(), "sh: cd: can't cd"));
        };
        let mut records = Vec::new();
        for (name, contents) in files {
            records.extend(hex::encode(Sha256::digest(&contents)).into_bytes());
            records.extend(separator);
            records.extend(name.into_bytes());
            records.push(end);
        }
        if let StdoutMode::Stream(sender) = stdout {
            for chunk in records.chunks(1000) {
                if sender.send(Bytes::copy_from_slice(chunk)).await.is_err() {
                    return Err(RemoteError::ReaderGone {
                        host: self.name.clone(),
                    });
                }
            }
            return Ok(exit(0, Vec::new(), ""));
        }
        Ok(exit(0, records, ""))
    }

    fn find_output(&self) -> String {
        let mut lines = String::new();
        for job in &self.jobs {
            for script in &job.scripts {
                lines.push_str(&format!(
                    "/var/vcap/jobs/{}/bin/bbr/{}\n",
                    job.name,
                    script.file_name()
                ));
            }
        }
        lines
    }

    fn files(&self, dir: &str) -> Option<BTreeMap<String, Vec<u8>>> {
        self.state
            .lock()
            .unwrap()
            .dirs
            .get(&normalize(dir))
            .cloned()
    }

    async fn script(
        &self,
        job: &str,
        script: ScriptName,
        env: &BTreeMap<String, String>,
        cancel: &CancellationToken,
    ) -> Result<CommandOutput, RemoteError> {
        let fake_job = self.job(job);
        assert!(
            fake_job.scripts.contains(&script),
            "{}: {job} has no {script} script but it was run",
            self.name
        );
        let outcome = self
            .state
            .lock()
            .unwrap()
            .outcome(job, Step::Script(script));
        // Let whatever runs concurrently make progress, so a missing barrier shows in the log.
        for _ in 0..3 {
            tokio::task::yield_now().await;
        }
        if let Some(result) = self.apply(outcome, cancel).await {
            return result;
        }
        match script {
            ScriptName::Metadata => Ok(exit(0, fake_job.metadata_yaml().into_bytes(), "")),
            ScriptName::Backup => {
                let dir = env
                    .get("BBR_ARTIFACT_DIRECTORY")
                    .expect("backup without BBR_ARTIFACT_DIRECTORY");
                let mut state = self.state.lock().unwrap();
                match state.dirs.get_mut(&normalize(dir)) {
                    Some(files) => {
                        files.extend(backup_files(&self.name, job));
                        Ok(exit(0, Vec::new(), ""))
                    }
                    None => Ok(exit(1, Vec::new(), &format!("{dir}: no such directory"))),
                }
            }
            _ => Ok(exit(0, Vec::new(), "")),
        }
    }

    async fn tar_create(
        &self,
        dir: &str,
        stdout: StdoutMode,
        cancel: &CancellationToken,
    ) -> Result<CommandOutput, RemoteError> {
        let job = normalize(dir)
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_string();
        let outcome = self.state.lock().unwrap().outcome(&job, Step::Transfer);
        if let Some(result) = self.apply(outcome, cancel).await {
            return result;
        }
        let Some(files) = self.files(dir) else {
            return Ok(exit(2, Vec::new(), &format!("tar: {dir}: Cannot open")));
        };
        let bytes = build_tar(&files);
        match stdout {
            StdoutMode::Stream(sender) => {
                for chunk in bytes.chunks(1000) {
                    if sender.send(Bytes::copy_from_slice(chunk)).await.is_err() {
                        return Err(RemoteError::ReaderGone {
                            host: self.name.clone(),
                        });
                    }
                }
                Ok(exit(0, Vec::new(), ""))
            }
            StdoutMode::Capture(_) | StdoutMode::KeepHead(_) => Ok(exit(0, bytes, "")),
        }
    }

    async fn tar_extract(
        &self,
        dir: &str,
        stdin: Option<mpsc::Receiver<Bytes>>,
    ) -> Result<CommandOutput, RemoteError> {
        let mut input = Vec::new();
        if let Some(mut stdin) = stdin {
            while let Some(chunk) = stdin.recv().await {
                input.extend_from_slice(&chunk);
            }
        }
        if !self
            .state
            .lock()
            .unwrap()
            .dirs
            .contains_key(&normalize(dir))
        {
            return Ok(exit(2, Vec::new(), "tar: Cannot change directory"));
        }
        let mut extracted = BTreeMap::new();
        let mut archive = tar::Archive::new(input.as_slice());
        let entries = match archive.entries() {
            Ok(entries) => entries,
            Err(error) => return Ok(exit(2, Vec::new(), &format!("tar: {error}"))),
        };
        for entry in entries {
            let mut entry = match entry {
                Ok(entry) => entry,
                Err(error) => return Ok(exit(2, Vec::new(), &format!("tar: {error}"))),
            };
            if entry.header().entry_type().is_file() {
                let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
                let mut contents = Vec::new();
                std::io::Read::read_to_end(&mut entry, &mut contents).expect("tar entry");
                extracted.insert(name, contents);
            }
        }
        self.state
            .lock()
            .unwrap()
            .dirs
            .entry(normalize(dir))
            .or_default()
            .extend(extracted);
        Ok(exit(0, Vec::new(), ""))
    }
}

/// A tar like `tar -C dir -c .`: a `./` entry, then every file as `./name`.
pub(crate) fn build_tar(files: &BTreeMap<String, Vec<u8>>) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    let header_for = |name: &str, kind: tar::EntryType, size: usize| {
        let mut header = tar::Header::new_gnu();
        header.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        header.set_entry_type(kind);
        header.set_size(size as u64);
        header.set_mode(if kind == tar::EntryType::Directory {
            0o755
        } else {
            0o644
        });
        header.set_cksum();
        header
    };
    let root = header_for("./", tar::EntryType::Directory, 0);
    builder.append(&root, std::io::empty()).expect("tar");
    for (name, contents) in files {
        let header = header_for(name, tar::EntryType::Regular, contents.len());
        builder.append(&header, contents.as_slice()).expect("tar");
    }
    builder.into_inner().expect("tar")
}

#[async_trait]
impl RemoteHost for FakeHost {
    async fn exec(
        &self,
        command: &str,
        stdin: Option<mpsc::Receiver<Bytes>>,
        stdout: StdoutMode,
        cancel: &CancellationToken,
    ) -> Result<CommandOutput, RemoteError> {
        let op = parse_command(command);
        let index = self.world.start(&self.name, command, op.clone());
        let result = self.answer(&op, stdin, stdout, cancel).await;
        self.world.end(index, &result);
        result
    }
}

/// Splits a POSIX shell command into words: enough for what `cairn::remote::shell_quote`
/// produces (single quotes, `\'`), and tolerant of the rest.
pub(crate) fn shell_words(text: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' | '"' => {
                in_word = true;
                for inner in chars.by_ref() {
                    if inner == c {
                        break;
                    }
                    word.push(inner);
                }
            }
            '\\' => {
                in_word = true;
                if let Some(next) = chars.next() {
                    word.push(next);
                }
            }
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    words
}

/// Parses a command built by `src/commands.rs`; panics on anything else, so a command the fake
/// does not know fails the test that sent it.
pub(crate) fn parse_command(command: &str) -> Op {
    let words = shell_words(command);
    assert_eq!(words.first().map(String::as_str), Some("sudo"), "{command}");
    let rest: Vec<&str> = words[1..].iter().map(String::as_str).collect();
    match rest.as_slice() {
        ["sh", "-c", inner] => parse_inner(inner, command),
        ["stat", path] => Op::Stat((*path).into()),
        ["mkdir", "-p", path] => Op::Mkdir((*path).into()),
        ["rm", "-rf", path] => Op::Remove((*path).into()),
        ["du", "-sk", path] => Op::DiskUsage((*path).into()),
        ["tar", "-C", dir, "--sort=name", "-c", "."] => Op::TarCreate((*dir).into()),
        _ => parse_script(&rest, command),
    }
}

fn parse_inner(inner: &str, command: &str) -> Op {
    if inner == "find /var/vcap/jobs/*/bin/bbr/* -type f" {
        return Op::Find;
    }
    let words = shell_words(inner);
    let words: Vec<&str> = words.iter().map(String::as_str).collect();
    match words.as_slice() {
        ["umask", "077", "&&", "tar", "-C", dir, "-x"] => Op::TarExtract((*dir).into()),
        // The restore's artifact directory: the 0700 root first, then the job's directory.
        [.., "chmod", "0700", _, "&&", "mkdir", "-p", dir] => Op::Mkdir((*dir).into()),
        ["cd", dir, ..] if inner.contains("tar -x -v") => Op::TarExtractChecksum((*dir).into()),
        ["cd", dir, ..] if inner.contains("sha256sum -z") => Op::Checksum((*dir).into()),
        _ if inner.contains("df -Pk") => Op::FreeSpace,
        _ => panic!("the fake host does not know `{command}`"),
    }
}

fn parse_script(words: &[&str], command: &str) -> Op {
    let mut env = BTreeMap::new();
    let mut rest = words;
    while let [word, tail @ ..] = rest {
        if word.starts_with('/') || *word == "timeout" {
            break;
        }
        let (name, value) = word
            .split_once('=')
            .unwrap_or_else(|| panic!("the fake host does not know `{command}`"));
        env.insert(name.to_string(), value.to_string());
        rest = tail;
    }
    let (timeout, path) = match rest {
        ["timeout", kill_after, limit, path] if kill_after.starts_with("--kill-after=") => {
            (Some((*limit).to_string()), *path)
        }
        [path] => (None, *path),
        _ => panic!("the fake host does not know `{command}`"),
    };
    let (job, script) = parse_script_path(path)
        .unwrap_or_else(|| panic!("the fake host does not know `{command}`"));
    Op::Script {
        job,
        script,
        env,
        timeout,
    }
}

/// A deployment of fake hosts.
#[derive(Debug)]
pub(crate) struct FakeTarget {
    name: String,
    world: Arc<World>,
    hosts: Vec<(InstanceAddress, Arc<FakeHost>)>,
    released: AtomicUsize,
}

impl FakeTarget {
    /// An empty deployment.
    pub(crate) fn new(name: &str) -> FakeTarget {
        FakeTarget {
            name: name.into(),
            world: Arc::default(),
            hosts: Vec::new(),
            released: AtomicUsize::new(0),
        }
    }

    /// Adds an instance `<group>/<index>` (index 0 is the group's bootstrap).
    pub(crate) fn instance(mut self, group: &str, index: &str, jobs: Vec<FakeJob>) -> FakeTarget {
        let name = InstanceName::new(group, index);
        let host = FakeHost {
            name: name.to_string(),
            jobs,
            world: Arc::clone(&self.world),
            state: Mutex::default(),
        };
        let address = InstanceAddress {
            name,
            index: index.into(),
            bootstrap: index == "0",
        };
        self.hosts.push((address, Arc::new(host)));
        self
    }

    /// The shared call log.
    pub(crate) fn world(&self) -> &World {
        &self.world
    }

    /// An instance by `<group>/<id>`.
    pub(crate) fn host(&self, name: &str) -> &FakeHost {
        self.hosts
            .iter()
            .map(|(_, host)| host.as_ref())
            .find(|h| h.name == name)
            .unwrap_or_else(|| panic!("no instance {name}"))
    }

    /// Every instance name, in target order.
    pub(crate) fn host_names(&self) -> Vec<String> {
        self.hosts.iter().map(|(_, h)| h.name.clone()).collect()
    }

    /// Sets how `script` of `job` on `instance` ends, every time.
    pub(crate) fn on(&self, instance: &str, job: &str, script: ScriptName, outcome: Outcome) {
        self.on_each(instance, job, script, vec![outcome]);
    }

    /// Sets how successive runs of `script` of `job` on `instance` end; the last repeats.
    pub(crate) fn on_each(
        &self,
        instance: &str,
        job: &str,
        script: ScriptName,
        outcomes: Vec<Outcome>,
    ) {
        self.set(instance, job, Step::Script(script), outcomes);
    }

    /// Sets how the `tar -c` of `job`'s artifact directory on `instance` ends.
    pub(crate) fn on_transfer(&self, instance: &str, job: &str, outcome: Outcome) {
        self.set(instance, job, Step::Transfer, vec![outcome]);
    }

    fn set(&self, instance: &str, job: &str, step: Step, outcomes: Vec<Outcome>) {
        let host = self.host(instance);
        host.job(job);
        host.state
            .lock()
            .unwrap()
            .outcomes
            .insert((job.to_string(), step), outcomes.into());
    }

    /// Leaves a job's artifact directory (and so the artifact root) on an instance, as a
    /// killed run would have.
    pub(crate) fn leave_artifact_directory(&self, instance: &str, job: &str) {
        let host = self.host(instance);
        let mut state = host.state.lock().unwrap();
        state.make_dir(&format!("{REMOTE_ARTIFACT_ROOT}/{job}"));
        state
            .dirs
            .get_mut(&format!("{REMOTE_ARTIFACT_ROOT}/{job}"))
            .expect("just made")
            .insert("./half-written".into(), b"partial".to_vec());
    }

    /// How many times `release_access` was called.
    pub(crate) fn released(&self) -> usize {
        self.released.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl Target for FakeTarget {
    fn name(&self) -> &str {
        &self.name
    }

    async fn connect(
        &self,
        _parallelism: usize,
    ) -> Result<Vec<(InstanceAddress, Arc<dyn RemoteHost>)>, RunErrors> {
        Ok(self
            .hosts
            .iter()
            .map(|(address, host)| (address.clone(), Arc::clone(host) as Arc<dyn RemoteHost>))
            .collect())
    }

    fn release_of(&self, group: &str, job: &str) -> String {
        self.hosts
            .iter()
            .filter(|(address, _)| address.name.group == group)
            .flat_map(|(_, host)| &host.jobs)
            .find(|j| j.name == job)
            .map(|j| j.release.clone())
            .unwrap_or_default()
    }

    async fn release_access(&self) -> Result<(), Error> {
        self.released.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn::remote::commands as c;
    use cairn::remote::script::ScriptCommand;

    #[test]
    fn commands_of_cairn_parse_back() {
        let job = cairn::model::job::Job {
            name: "my job".into(),
            release: "r".into(),
            scripts: BTreeSet::new(),
            metadata: cairn::model::job::JobMetadata::default(),
            shared_artifact: None,
        };
        let env = [("BBR_ARTIFACT_DIRECTORY", "/a b/it's/".to_string())];
        let expected = Op::Script {
            job: "my job".into(),
            script: ScriptName::Backup,
            env: BTreeMap::from([("BBR_ARTIFACT_DIRECTORY".into(), "/a b/it's/".into())]),
            timeout: None,
        };
        let script = ScriptCommand::new(job.script_path(ScriptName::Backup)).envs(&env);
        let plain = script.render();
        assert_eq!(parse_command(&plain), expected);
        let timed = script
            .time_limit(Some(std::time::Duration::from_secs(9)))
            .render();
        let Op::Script { timeout, .. } = parse_command(&timed) else {
            panic!("{timed}")
        };
        assert_eq!(timeout.as_deref(), Some("9s"));
        let dir = "/var/vcap/store/bbr-backup/my job/";
        assert_eq!(parse_command(c::FIND_SCRIPTS), Op::Find);
        assert_eq!(
            parse_command(&c::artifact_root_exists()),
            Op::Stat(REMOTE_ARTIFACT_ROOT.into())
        );
        assert_eq!(
            parse_command(&c::make_directory(dir)),
            Op::Mkdir(dir.into())
        );
        assert_eq!(
            parse_command(&c::make_restore_directory(dir)),
            Op::Mkdir(dir.into())
        );
        assert_eq!(parse_command(&c::remove(dir)), Op::Remove(dir.into()));
        assert_eq!(
            parse_command(&c::disk_usage_kib(dir)),
            Op::DiskUsage(dir.into())
        );
        assert_eq!(
            parse_command(&c::tar_create(dir)),
            Op::TarCreate(dir.into())
        );
        assert_eq!(
            parse_command(&c::tar_extract(dir)),
            Op::TarExtract(dir.into())
        );
        assert_eq!(
            parse_command(&c::checksum_files(dir)),
            Op::Checksum(dir.into())
        );
        assert_eq!(
            parse_command(&c::tar_extract_with_checksums(dir, 3)),
            Op::TarExtractChecksum(dir.into())
        );
    }
}
