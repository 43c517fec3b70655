//! The kill -9 matrix (issue 19, item 5): the coordinator is SIGKILLed at each phase boundary
//! of a backup, a restore, a `prune` and a drill, for each store (`file://`, S3 on moto, Azure
//! on Azurite, GCS on fake-gcs-server), inventory and deployment mode. After each kill the
//! same command is run again and must recover without operator action: every kill here is on
//! the machine that holds the run's journal, so a refusal (even one naming the command that
//! clears the state, which bbr's checks do) counts as a failure. Then nothing
//! is locked, no artifact directory and no `bosh_` user is left, every backup listed complete
//! verifies, the listing has exactly the complete backups it should (the killed run's never),
//! and the backup taken before the kill still verifies and restores byte-identically.
//!
//! The kill lands at an exact point, never after a sleep: a trap blocks the run there and
//! says so through a file on the host (or the store's side), then the test sends SIGKILL.
//! - a job script replaced by a wrapper that writes a marker and waits (before running the
//!   original: the boundary after the previous lock layer; after it: during the phase);
//! - `tar` bind-mounted over, in one host's own mount namespace only, by a wrapper that passes
//!   4 KiB of one artifact's stream and then stalls it (mid-drain, mid-restore-copy);
//! - `rm` wrapped the same way, stalling the clean-up of the instances' artifact directories
//!   (after the last artifact was stored, before the manifest is written);
//! - for `prune`, the fault proxy holding the second DELETE (S3, Azure, GCS), or `strace`
//!   delaying every delete by 5 s, killed once the first file is gone (`file://`).
//!
//! The CI subset (one test per case below, every phase at least once) runs by default; the
//! full matrix (every phase × every store) runs with `CAIRN_KILL_MATRIX=full`, as
//! `integration/bench/kill_matrix.sh` does, and prints the summary table of
//! docs/reliability.md ("Kill -9 matrix").

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::*;
use cairn_testbed::director::{DeploymentSpec, Director, DirectorOptions};
use cairn_testbed::{TestBed, TestHost};

/// Where the backups go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Store {
    File,
    S3,
    Azure,
    Gcs,
}

impl Store {
    const ALL: [Store; 4] = [Store::File, Store::S3, Store::Azure, Store::Gcs];

    fn name(self) -> &'static str {
        match self {
            Store::File => "file://",
            Store::S3 => "S3 (moto)",
            Store::Azure => "Azure (Azurite)",
            Store::Gcs => "GCS (fake-gcs-server)",
        }
    }

    fn server(self) -> Option<Server> {
        match self {
            Store::File => None,
            Store::S3 => Some(Server::Moto),
            Store::Azure => Some(Server::Azurite),
            Store::Gcs => Some(Server::FakeGcs),
        }
    }
}

/// Where the coordinator is killed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Backup: `app` (lock layer 1) is locked, `database`'s lock script has started.
    AfterLockLayer1,
    /// Backup: every layer is locked, the first backup script has started.
    AfterLastLockLayer,
    /// Backup: `database`'s backup script has written its artifact and not returned.
    BackupScript,
    /// Backup: unlock layer 1 (`database`) ran, `app` is still locked.
    UnlockLayers,
    /// Backup: the first artifact's stream is half-way (nothing stored yet).
    DrainFirst,
    /// Backup: the third of five artifacts is half-way (two stored).
    DrainMiddle,
    /// Backup: the last artifact is half-way (four stored).
    DrainLast,
    /// Backup: every artifact is stored, the instances' clean-up runs, no manifest yet.
    BeforeManifest,
    /// Restore: an artifact is half-way into `tar -x` on its instance.
    RestoreCopy,
    /// Restore: `app` is pre-restore-locked, `database`'s lock script has started.
    RestoreLockLayer1,
    /// Restore: `database`'s restore script has restored and not returned.
    RestoreScript,
    /// Restore: unlock layer 1 (`database`) ran, `app` is still locked.
    RestoreUnlockLayers,
    /// `backups prune`: one object of the first pruned backup is deleted, the next is held.
    PruneDeletes,
    /// Drill: the restore script in the target deployment has restored and not returned.
    DrillRestore,
    /// Deployment mode (Director stand-in, temporary `bosh_` users): during the backup script.
    DirectorBackupScript,
    /// Deployment mode: during the restore script.
    DirectorRestoreScript,
}

impl Phase {
    const ALL: [Phase; 16] = [
        Phase::AfterLockLayer1,
        Phase::AfterLastLockLayer,
        Phase::BackupScript,
        Phase::UnlockLayers,
        Phase::DrainFirst,
        Phase::DrainMiddle,
        Phase::DrainLast,
        Phase::BeforeManifest,
        Phase::RestoreCopy,
        Phase::RestoreLockLayer1,
        Phase::RestoreScript,
        Phase::RestoreUnlockLayers,
        Phase::PruneDeletes,
        Phase::DrillRestore,
        Phase::DirectorBackupScript,
        Phase::DirectorRestoreScript,
    ];

    fn name(self) -> &'static str {
        match self {
            Phase::AfterLockLayer1 => "backup: after lock layer 1",
            Phase::AfterLastLockLayer => "backup: after the last lock layer",
            Phase::BackupScript => "backup: during a backup script",
            Phase::UnlockLayers => "backup: between the unlock layers",
            Phase::DrainFirst => "backup: drain of the first artifact",
            Phase::DrainMiddle => "backup: drain of the middle artifact",
            Phase::DrainLast => "backup: drain of the last artifact",
            Phase::BeforeManifest => "backup: after the last artifact, before the manifest",
            Phase::RestoreCopy => "restore: copy",
            Phase::RestoreLockLayer1 => "restore: after lock layer 1",
            Phase::RestoreScript => "restore: during a restore script",
            Phase::RestoreUnlockLayers => "restore: between the unlock layers",
            Phase::PruneDeletes => "prune: during the deletes",
            Phase::DrillRestore => "drill: during the restore script",
            Phase::DirectorBackupScript => "deployment mode backup: during a backup script",
            Phase::DirectorRestoreScript => "deployment mode restore: during a restore script",
        }
    }

    fn operation(self) -> Operation {
        match self {
            Phase::AfterLockLayer1
            | Phase::AfterLastLockLayer
            | Phase::BackupScript
            | Phase::UnlockLayers
            | Phase::DrainFirst
            | Phase::DrainMiddle
            | Phase::DrainLast
            | Phase::BeforeManifest
            | Phase::DirectorBackupScript => Operation::Backup,
            Phase::RestoreCopy
            | Phase::RestoreLockLayer1
            | Phase::RestoreScript
            | Phase::RestoreUnlockLayers
            | Phase::DirectorRestoreScript => Operation::Restore,
            Phase::PruneDeletes => Operation::Prune,
            Phase::DrillRestore => Operation::Drill,
        }
    }

    fn director(self) -> bool {
        matches!(
            self,
            Phase::DirectorBackupScript | Phase::DirectorRestoreScript
        )
    }

    /// Artifacts stored (`artifact_stored` events) when the kill lands, where that proves the
    /// point: the drain order is the plan's (database/0, app/0 app, app/0 files, app/1 ...).
    fn artifacts_stored_at_kill(self) -> Option<usize> {
        match self {
            Phase::DrainFirst => Some(0),
            Phase::DrainMiddle => Some(2),
            Phase::DrainLast => Some(4),
            Phase::BeforeManifest => Some(5),
            _ => None,
        }
    }

    fn trap(self) -> Trap {
        let script = |script, before| Trap::Script {
            host: ("database", 0),
            job: "database",
            script,
            before,
        };
        match self {
            Phase::AfterLockLayer1 => script("pre-backup-lock", true),
            Phase::AfterLastLockLayer => script("backup", true),
            Phase::BackupScript | Phase::DirectorBackupScript => script("backup", false),
            Phase::UnlockLayers => script("post-backup-unlock", false),
            Phase::DrainFirst | Phase::RestoreCopy => Trap::Tar {
                host: ("database", 0),
                job: "database",
            },
            Phase::DrainMiddle => Trap::Tar {
                host: ("app", 0),
                job: "files",
            },
            Phase::DrainLast => Trap::Tar {
                host: ("app", 1),
                job: "files",
            },
            Phase::BeforeManifest => Trap::Rm {
                host: ("database", 0),
            },
            Phase::RestoreLockLayer1 => script("pre-restore-lock", true),
            Phase::RestoreScript | Phase::DirectorRestoreScript | Phase::DrillRestore => {
                script("restore", false)
            }
            Phase::RestoreUnlockLayers => script("post-restore-unlock", false),
            Phase::PruneDeletes => Trap::Prune,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Operation {
    Backup,
    Restore,
    Prune,
    Drill,
}

/// How the run is stopped at the phase.
#[derive(Clone, Copy, Debug)]
enum Trap {
    /// A job script that blocks before (`before`) or after running the original.
    Script {
        host: (&'static str, u32),
        job: &'static str,
        script: &'static str,
        before: bool,
    },
    /// `tar` on one host stalls the stream of one job's artifact after 4 KiB.
    Tar {
        host: (&'static str, u32),
        job: &'static str,
    },
    /// `rm` of the whole artifact root on one host blocks (the clean-up before the manifest;
    /// each job's directory, removed once its artifact is stored, passes).
    Rm { host: (&'static str, u32) },
    /// Fault-proxy hold (HTTP stores) or strace (file://) of the second delete.
    Prune,
}

/// Phases whose recovery is still missing (on main before item 1 of issue 19, the journal
/// for restore, drills and `bosh_` users, these were the restore, drill and deployment-mode
/// phases): their CI tests accept the failure but fail as soon as the case passes, so that
/// the list is kept true. Empty since i-journal was merged.
const EXPECTED_TO_FAIL_UNTIL_I_JOURNAL: &[Phase] = &[];

/// One measured case.
#[derive(Debug, Clone)]
struct CaseResult {
    store: Store,
    phase: Phase,
    /// `Ok(how it recovered)` or `Err(what was wrong)`.
    outcome: Result<String, String>,
    seconds: f64,
}

// ---------------------------------------------------------------------------------------
// The CI subset: every phase at least once, the stores in turn.

macro_rules! ci_cases {
    ($($name:ident: $phase:ident, $store:ident;)*) => {
        $(
            #[test]
            fn $name() {
                cairn_testbed::require_root!();
                check_ci_case(Phase::$phase, Store::$store);
            }
        )*
    };
}

ci_cases! {
    after_lock_layer_1_s3: AfterLockLayer1, S3;
    after_last_lock_layer_azure: AfterLastLockLayer, Azure;
    during_backup_script_file: BackupScript, File;
    between_unlock_layers_gcs: UnlockLayers, Gcs;
    drain_of_first_artifact_gcs: DrainFirst, Gcs;
    drain_of_middle_artifact_file: DrainMiddle, File;
    drain_of_last_artifact_s3: DrainLast, S3;
    before_manifest_azure: BeforeManifest, Azure;
    restore_copy_s3: RestoreCopy, S3;
    restore_after_lock_layer_1_gcs: RestoreLockLayer1, Gcs;
    during_restore_script_file: RestoreScript, File;
    restore_between_unlock_layers_azure: RestoreUnlockLayers, Azure;
    prune_deletes_s3: PruneDeletes, S3;
    prune_deletes_file: PruneDeletes, File;
    drill_restore_file: DrillRestore, File;
    deployment_mode_backup_script_file: DirectorBackupScript, File;
}

fn check_ci_case(phase: Phase, store: Store) {
    let result = run_case(phase, store);
    eprintln!("{}", table(std::slice::from_ref(&result)));
    let expected_to_fail = EXPECTED_TO_FAIL_UNTIL_I_JOURNAL.contains(&phase);
    match (&result.outcome, expected_to_fail) {
        (Ok(_), false) | (Err(_), true) => {}
        (Ok(_), true) => panic!(
            "{} now recovers: remove it from EXPECTED_TO_FAIL_UNTIL_I_JOURNAL",
            phase.name()
        ),
        (Err(reason), false) => panic!("{} / {}: {reason}", phase.name(), store.name()),
    }
}

// ---------------------------------------------------------------------------------------
// The full matrix.

/// Every phase × every store, on `CAIRN_KILL_MATRIX_THREADS` (default 2) workers; writes the
/// table to `CAIRN_KILL_MATRIX_REPORT` when set; fails if a case failed that is not expected
/// to.
#[test]
fn full_matrix() {
    if std::env::var("CAIRN_KILL_MATRIX").as_deref() != Ok("full") {
        eprintln!("kill_matrix::full_matrix: set CAIRN_KILL_MATRIX=full (integration/bench/kill_matrix.sh)");
        return;
    }
    cairn_testbed::require_root!();
    let cases: Vec<(Phase, Store)> = Phase::ALL
        .iter()
        .flat_map(|&phase| Store::ALL.iter().map(move |&store| (phase, store)))
        .collect();
    let threads: usize = std::env::var("CAIRN_KILL_MATRIX_THREADS")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(2);
    // Keep one emulator of each kind for the whole matrix.
    let _emulators: Vec<Arc<Emulator>> = [Server::Moto, Server::Azurite, Server::FakeGcs]
        .into_iter()
        .map(Emulator::shared)
        .collect();
    let next = AtomicUsize::new(0);
    let results = Mutex::new(Vec::new());
    let started = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| loop {
                let index = next.fetch_add(1, Ordering::SeqCst);
                let Some(&(phase, store)) = cases.get(index) else {
                    break;
                };
                let result = run_case(phase, store);
                eprintln!(
                    "kill matrix case {}/{}: {} / {}: {:?}",
                    index + 1,
                    cases.len(),
                    phase.name(),
                    store.name(),
                    result.outcome
                );
                results.lock().unwrap().push((index, result));
            });
        }
    });
    let mut results = results.into_inner().unwrap();
    results.sort_by_key(|(index, _)| *index);
    let results: Vec<CaseResult> = results.into_iter().map(|(_, r)| r).collect();
    let mut report = table(&results);
    let failed: Vec<&CaseResult> = results.iter().filter(|r| r.outcome.is_err()).collect();
    let unexpected: Vec<&&CaseResult> = failed
        .iter()
        .filter(|r| !EXPECTED_TO_FAIL_UNTIL_I_JOURNAL.contains(&r.phase))
        .collect();
    let _ = writeln!(
        report,
        "\n{} cases, {} recovered, {} failed ({} expected until i-journal is merged); {:.0} s on {threads} workers",
        results.len(),
        results.len() - failed.len(),
        failed.len(),
        failed.len() - unexpected.len(),
        started.elapsed().as_secs_f64()
    );
    eprintln!("{report}");
    if let Ok(path) = std::env::var("CAIRN_KILL_MATRIX_REPORT") {
        fs::write(path, &report).unwrap();
    }
    assert!(
        unexpected.is_empty(),
        "{} case(s) failed:\n{}",
        unexpected.len(),
        unexpected
            .iter()
            .map(|r| format!("{} / {}", r.phase.name(), r.store.name()))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// The summary table (markdown): case, store, phase, outcome, recovery, seconds.
fn table(results: &[CaseResult]) -> String {
    let mut out =
        String::from("| # | store | phase | outcome | recovery | s |\n|---|---|---|---|---|---|\n");
    for (index, result) in results.iter().enumerate() {
        let (outcome, recovery) = match &result.outcome {
            Ok(recovery) => ("recovered".to_string(), recovery.clone()),
            Err(reason) => {
                let label = if EXPECTED_TO_FAIL_UNTIL_I_JOURNAL.contains(&result.phase) {
                    "FAILS (expected until i-journal)"
                } else {
                    "FAILS"
                };
                (
                    label.to_string(),
                    reason.replace('|', "\\|").replace('\n', " "),
                )
            }
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {outcome} | {recovery} | {:.1} |",
            index + 1,
            result.store.name(),
            result.phase.name(),
            result.seconds
        );
    }
    out
}

// ---------------------------------------------------------------------------------------
// One case.

fn run_case(phase: Phase, store: Store) -> CaseResult {
    let started = Instant::now();
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        Case::set_up(phase, store).and_then(|mut case| case.run())
    }))
    .unwrap_or_else(|panic| {
        Err(panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(ToString::to_string))
            .unwrap_or_else(|| "panicked".into()))
    });
    CaseResult {
        store,
        phase,
        outcome,
        seconds: started.elapsed().as_secs_f64(),
    }
}

static BUCKETS: AtomicUsize = AtomicUsize::new(0);

/// Everything one case runs against.
struct Case {
    phase: Phase,
    store: Store,
    bed: TestBed,
    /// The drill's target deployment.
    target: Option<TestBed>,
    director: Option<Director>,
    emulator: Option<Arc<Emulator>>,
    work: Workdir,
    /// The store URL (through nothing).
    url: String,
    /// The backups taken before the kill, oldest first.
    earlier: Vec<String>,
    /// The data the earlier backups hold.
    data: BTreeMap<String, String>,
}

type Checked<T> = Result<T, String>;

/// `(id, complete)` of each backup listed.
type Listing = Vec<(String, bool)>;

fn ensure(condition: bool, what: impl FnOnce() -> String) -> Checked<()> {
    if condition {
        Ok(())
    } else {
        Err(what())
    }
}

impl Case {
    fn set_up(phase: Phase, store: Store) -> Checked<Case> {
        let bed = TestBed::start(&[]).map_err(|e| format!("test bed: {e}"))?;
        let target = (phase == Phase::DrillRestore)
            .then(|| TestBed::start(&[]).map_err(|e| format!("target test bed: {e}")))
            .transpose()?;
        let director = if phase.director() {
            let mut options = DirectorOptions::new(&bed);
            options
                .deployments
                .push(DeploymentSpec::new("testbed", &bed));
            Some(Director::start(&options).map_err(|e| format!("director: {e}"))?)
        } else {
            None
        };
        let work = workdir();
        let emulator = store.server().map(Emulator::shared);
        let bucket = format!(
            "km-{}-{}",
            std::process::id(),
            BUCKETS.fetch_add(1, Ordering::SeqCst)
        );
        let url = match (store, &emulator) {
            (Store::File, _) => {
                let dir = work.root().join("store");
                fs::create_dir(&dir).unwrap();
                format!("file://{}", dir.display())
            }
            (Store::S3, Some(moto)) => {
                moto.fixture(&["create-bucket", &bucket, "versioned"]);
                format!(
                    "s3://{bucket}/km?endpoint={}&path_style=true&region=us-east-1",
                    moto.endpoint
                )
            }
            (Store::Azure, Some(azurite)) => {
                azurite.fixture(&["create-container", &bucket]);
                format!(
                    "az://devstoreaccount1/{bucket}/km?endpoint={}",
                    azurite.endpoint
                )
            }
            (Store::Gcs, Some(gcs)) => {
                gcs.fixture(&["create-bucket", &bucket, "versioned"]);
                format!("gs://{bucket}/km?endpoint={}", gcs.endpoint)
            }
            _ => unreachable!("every cloud store has an emulator"),
        };
        let mut case = Case {
            phase,
            store,
            bed,
            target,
            director,
            emulator,
            work,
            url,
            earlier: Vec::new(),
            data: BTreeMap::new(),
        };
        case.data = data_digest(&case.bed);
        // A prune needs backups to delete; the others one backup taken before the kill.
        let backups = if phase == Phase::PruneDeletes { 3 } else { 1 };
        for _ in 0..backups {
            case.new_second();
            let output = case.cairn(&case.backup_args());
            ensure(output.status.success(), || {
                format!("the backup before the kill failed: {}", text(&output))
            })?;
        }
        case.earlier = case.listed()?.into_iter().map(|(id, _)| id).collect();
        ensure(case.earlier.len() == backups, || {
            format!("{} backups listed before the kill", case.earlier.len())
        })?;
        Ok(case)
    }

    /// Kill, recover, check.
    fn run(&mut self) -> Checked<String> {
        self.new_second();
        let killed_at = self.kill_at_phase()?;
        // Before anything else runs: what the store lists as complete is complete.
        self.complete_backups()
            .map_err(|e| format!("right after the kill: {e}"))?;
        self.new_second();
        let recovery = self.recover()?;
        self.check_after(&killed_at)?;
        match killed_at.lines().next() {
            Some(note) if self.phase == Phase::PruneDeletes => {
                Ok(format!("killed with {}; {recovery}", note.trim()))
            }
            _ => Ok(recovery),
        }
    }

    // -- commands --------------------------------------------------------------------

    /// Waits for the next second of the clock: backup ids are per second.
    fn new_second(&self) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap();
        std::thread::sleep(Duration::from_nanos(
            1_000_000_000 - u64::from(now.subsec_nanos()) + 10_000_000,
        ));
    }

    /// The login part of a `deployment` command (inventory or Director).
    fn login(&self) -> Vec<String> {
        match &self.director {
            Some(director) => {
                let mut login = director_login(director);
                login.extend(["-d".into(), "testbed".into()]);
                login
            }
            None => vec![
                "deployment".into(),
                "--inventory".into(),
                self.bed.inventory().to_string_lossy().into_owned(),
            ],
        }
    }

    fn backup_args(&self) -> Vec<String> {
        let mut args = self.login();
        args.extend(["backup".into(), "--store".into(), self.url.clone()]);
        if self.store == Store::Azure {
            args.push("--allow-unversioned".into());
        }
        if self.phase.artifacts_stored_at_kill().is_some() {
            // One transfer at a time: the drain order is the plan's.
            args.extend(["--parallelism".into(), "1".into()]);
        }
        args
    }

    fn restore_args(&self, id: &str) -> Vec<String> {
        let mut args = self.login();
        args.extend([
            "restore".into(),
            "--store".into(),
            self.url.clone(),
            "--backup".into(),
            id.into(),
        ]);
        args
    }

    fn prune_args(&self, url: &str) -> Vec<String> {
        [
            "backups",
            "--store",
            url,
            "prune",
            "--deployment",
            "testbed",
            "--keep-last",
            "1",
        ]
        .map(String::from)
        .to_vec()
    }

    fn drill_args(&self) -> Vec<String> {
        let target = self.target.as_ref().expect("a drill has a target");
        let inventory = fs::read_to_string(target.inventory()).unwrap().replacen(
            "deployment: testbed",
            "deployment: drill-target",
            1,
        );
        let path = target.dir().join("drill-target.yml");
        fs::write(&path, inventory).unwrap();
        [
            "drill",
            "--target-inventory",
            path.to_str().unwrap(),
            "--store",
            &self.url,
            "--latest",
            "testbed",
            "--report-dir",
            self.work.path().to_str().unwrap(),
        ]
        .map(String::from)
        .to_vec()
    }

    /// The command that is killed, and run again after the kill.
    fn command(&self) -> Vec<String> {
        match self.phase.operation() {
            Operation::Backup => self.backup_args(),
            Operation::Restore => self.restore_args(&self.earlier[0]),
            Operation::Prune => self.prune_args(&self.url),
            Operation::Drill => self.drill_args(),
        }
    }

    fn cairn(&self, args: &[String]) -> Output {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run(self.work.path(), &args)
    }

    fn cairn_with_store_env(&self, args: &[String]) -> Output {
        let output = cairn_command_in(self.work.path())
            .env("CAIRN_STORE", &self.url)
            .args(args)
            .output()
            .expect("cairn runs");
        eprintln!(
            "cairn {args:?} -> {:?}\n{}",
            output.status.code(),
            text(&output)
        );
        output
    }

    /// `(id, complete)` of every backup of the deployment in the store.
    fn listed(&self) -> Checked<Vec<(String, bool)>> {
        let output =
            self.cairn(&["backups", "--store", &self.url, "list", "--json"].map(String::from));
        ensure(output.status.success(), || {
            format!("backups list failed: {}", text(&output))
        })?;
        let mut listed = Vec::new();
        for line in String::from_utf8_lossy(&output.stdout).lines() {
            let entry: serde_json::Value =
                serde_json::from_str(line).map_err(|e| format!("list line {line}: {e}"))?;
            if entry["deployment"] == "testbed" {
                listed.push((
                    entry["id"].as_str().unwrap_or_default().to_string(),
                    entry["complete"] == true,
                ));
            }
        }
        listed.sort();
        Ok(listed)
    }

    // -- the kill --------------------------------------------------------------------

    /// Runs the command with the phase's trap set, kills it with SIGKILL once the trap says
    /// the run is there, releases and removes the trap. Returns the run's `--json` events.
    fn kill_at_phase(&self) -> Checked<String> {
        let events = self.work.root().join("killed-run.jsonl");
        let mut args = self.command();
        if matches!(
            self.phase.operation(),
            Operation::Backup | Operation::Restore
        ) {
            args.push("--json".into());
        }
        let trap = self.phase.trap();
        let killed = if matches!(trap, Trap::Prune) {
            self.kill_prune(&args)?
        } else {
            let armed = self.arm(trap);
            let mut child = self.spawn(&args, &events);
            let reached = self.wait_for_trap(&mut child, &armed);
            let _ = child.kill();
            let _ = child.wait();
            self.disarm(trap, &armed);
            reached?;
            String::new()
        };
        let events = fs::read_to_string(&events).unwrap_or_default();
        if let Some(expected) = self.phase.artifacts_stored_at_kill() {
            let stored = events.matches("\"artifact_stored\"").count();
            ensure(stored == expected, || {
                format!("the kill landed after {stored} stored artifact(s), not {expected}")
            })?;
        }
        Ok(killed + &events)
    }

    fn spawn(&self, args: &[String], events: &Path) -> Child {
        let mut command = cairn_command_in(self.work.path());
        command
            .args(args)
            .stdout(fs::File::create(events).unwrap())
            .stderr(fs::File::create(self.work.root().join("killed-run.err")).unwrap());
        command.spawn().expect("cairn starts")
    }

    /// The host a trap is set on (the drill's on the target deployment).
    fn trap_host(&self, host: (&str, u32)) -> (&TestBed, &TestHost) {
        let bed = self.target.as_ref().unwrap_or(&self.bed);
        (bed, bed.host(host.0, host.1))
    }

    /// Sets the trap; returns the host-side marker it writes (its pid inside) when reached.
    fn arm(&self, trap: Trap) -> PathBuf {
        match trap {
            Trap::Script {
                host,
                job,
                script,
                before,
            } => {
                let (bed, host) = self.trap_host(host);
                let original = format!("/var/vcap/data/km-orig-{job}-{script}");
                fs::copy(
                    host.vcap_dir.join(format!("jobs/{job}/bin/bbr/{script}")),
                    host.vcap_dir
                        .join(original.trim_start_matches("/var/vcap/")),
                )
                .unwrap();
                let body = if before {
                    format!("{WAIT}started\nwait_release\nexit 1\n")
                } else {
                    format!("{WAIT}{original} \"$@\" || exit $?\nstarted\nwait_release\nexit 0\n")
                };
                bed.install_script(host, job, script, &body).unwrap();
                host.vcap_dir.join("sys/run/km-started")
            }
            Trap::Tar { host, job } => {
                let body = format!(
                    "{WAIT}real=/var/vcap/data/km-real-tar\n\
                     case \"$*\" in\n\
                     \"-C /var/vcap/store/bbr-backup/{job}\"*\" -c .\") \"$real\" \"$@\" | {{ head -c 4096; started; wait_release; exit 1; }} ;;\n\
                     \"-C /var/vcap/store/bbr-backup/{job}\"*\" -x\") {{ head -c 4096; started; wait_release; exit 1; }} | \"$real\" \"$@\" ;;\n\
                     \"-x -v \"*) case \"$PWD\" in /var/vcap/store/bbr-backup/{job}) {{ head -c 4096; started; wait_release; exit 1; }} | \"$real\" \"$@\" ;; *) exec \"$real\" \"$@\" ;; esac ;;\n\
                     *) exec \"$real\" \"$@\" ;;\n\
                     esac\n"
                );
                self.wrap_binary(host, "tar", &body)
            }
            Trap::Rm { host } => {
                let body = format!(
                    "{WAIT}case \"$*\" in\n\
                     \"-rf /var/vcap/store/bbr-backup\") started; wait_release; exit 1 ;;\n\
                     *) exec /var/vcap/data/km-real-rm \"$@\" ;;\n\
                     esac\n"
                );
                self.wrap_binary(host, "rm", &body)
            }
            Trap::Prune => unreachable!("prune has its own kill"),
        }
    }

    /// Bind-mounts a wrapper over `/usr/bin/<name>` in the host's own mount namespace (the
    /// machine's and other hosts' are untouched); the original stays as km-real-<name>.
    fn wrap_binary(&self, host: (&str, u32), name: &str, body: &str) -> PathBuf {
        let (bed, host) = self.trap_host(host);
        let wrapper = host.vcap_dir.join(format!("data/km-{name}"));
        fs::write(&wrapper, body).unwrap();
        let output = bed
            .exec(
                host,
                &format!(
                    "chmod 755 /var/vcap/data/km-{name} && cp /usr/bin/{name} /var/vcap/data/km-real-{name} \
                     && mount --bind /var/vcap/data/km-{name} /usr/bin/{name}"
                ),
            )
            .unwrap();
        assert!(output.status.success(), "{}", text(&output));
        host.vcap_dir.join("sys/run/km-started")
    }

    /// Waits until the trap is reached (or the run ends first: an error with its output).
    fn wait_for_trap(&self, child: &mut Child, marker: &Path) -> Checked<()> {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if fs::read_to_string(marker).is_ok_and(|pid| !pid.trim().is_empty()) {
                return Ok(());
            }
            if let Ok(Some(status)) = child.try_wait() {
                let log =
                    fs::read_to_string(self.work.root().join("killed-run.err")).unwrap_or_default();
                return Err(format!(
                    "the run ended ({status}) before the phase was reached: {}",
                    tail(&log)
                ));
            }
            if Instant::now() > deadline {
                return Err("the phase was not reached within 120 s".into());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Lets the trapped process end (it exits without doing the rest of its work: the run
    /// that needed it is dead), waits for it, and puts the original back.
    fn disarm(&self, trap: Trap, marker: &Path) {
        let host = match trap {
            Trap::Script { host, .. } | Trap::Tar { host, .. } | Trap::Rm { host } => host,
            Trap::Prune => return,
        };
        let (bed, host) = self.trap_host(host);
        let run_dir = host.vcap_dir.join("sys/run");
        fs::create_dir_all(&run_dir).unwrap();
        fs::write(run_dir.join("km-release"), "").unwrap();
        if let Some(pid) = fs::read_to_string(marker)
            .ok()
            .and_then(|p| p.trim().parse::<u32>().ok())
        {
            let deadline = Instant::now() + Duration::from_secs(30);
            while Path::new(&format!("/proc/{pid}")).exists() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        match trap {
            Trap::Script { job, script, .. } => {
                let original = host.vcap_dir.join(format!("data/km-orig-{job}-{script}"));
                fs::rename(
                    original,
                    host.vcap_dir.join(format!("jobs/{job}/bin/bbr/{script}")),
                )
                .unwrap();
            }
            Trap::Tar { .. } => unmount(bed, host, "tar"),
            Trap::Rm { .. } => unmount(bed, host, "rm"),
            Trap::Prune => {}
        }
        let _ = fs::remove_file(run_dir.join("km-release"));
        let _ = fs::remove_file(marker);
    }

    /// `prune` killed once the first object of the first pruned backup is deleted and the
    /// next delete is held: by the fault proxy in front of the emulator, or (file://) by
    /// strace delaying every `unlink`, `unlinkat` and `rmdir` by 5 s.
    fn kill_prune(&self, args: &[String]) -> Checked<String> {
        if let Some(emulator) = &self.emulator {
            let held = self.work.root().join("held");
            let upstream = emulator
                .endpoint
                .trim_end_matches("/devstoreaccount1")
                .to_string();
            let hold = format!(
                r#"{{"hold": {{"match": "^DELETE ", "after": 1, "marker": "{}"}}}}"#,
                held.display()
            );
            let proxy = FaultProxy::start(&upstream, &hold);
            let url = self.url.replace(&upstream, &proxy.endpoint);
            let mut child = self.spawn(&self.prune_args(&url), &self.work.root().join("prune.out"));
            let reached = self.wait_for_trap(&mut child, &held);
            let _ = child.kill();
            let _ = child.wait();
            proxy.set("{}");
            reached?;
            let held = fs::read_to_string(&held).unwrap_or_default();
            let path = held
                .split('?')
                .next()
                .unwrap_or_default()
                .replace("%2F", "/");
            let object = path.trim().rsplit('/').next().unwrap_or_default();
            Ok(format!("the 2nd delete ({object}) held\n"))
        } else {
            let store = PathBuf::from(self.url.trim_start_matches("file://")).join("testbed");
            let before = files_under(&store);
            let mut child = Command::new("strace")
                .args([
                    "-f",
                    "-qq",
                    "-o",
                    "/dev/null",
                    "-e",
                    "trace=unlink,unlinkat,rmdir",
                ])
                .args(["-e", "inject=unlink,unlinkat,rmdir:delay_enter=5000000"])
                .arg(env!("CARGO_BIN_EXE_cairn"))
                .args(args)
                .envs(STORE_ENV)
                .env("CAIRN_STATE_DIR", state_dir(self.work.path()))
                .current_dir(self.work.path())
                .stdout(Stdio::null())
                .stderr(fs::File::create(self.work.root().join("killed-run.err")).unwrap())
                .spawn()
                .expect("strace starts");
            let deadline = Instant::now() + Duration::from_secs(120);
            let reached = loop {
                let now = files_under(&store);
                if before.iter().any(|k| !now.contains(k)) {
                    break Ok(());
                }
                if let Ok(Some(status)) = child.try_wait() {
                    break Err(format!("prune ended ({status}) before deleting anything"));
                }
                if Instant::now() > deadline {
                    break Err("prune deleted nothing within 120 s".to_string());
                }
                std::thread::sleep(Duration::from_millis(5));
            };
            // SIGKILL the traced cairn itself (strace's child), then strace ends.
            let children = fs::read_to_string(format!("/proc/{0}/task/{0}/children", child.id()))
                .unwrap_or_default();
            for pid in children.split_whitespace() {
                let _ = Command::new("kill").args(["-9", pid]).status();
            }
            let _ = child.wait();
            reached?;
            let gone = before.len() - files_under(&store).len();
            Ok(format!("{gone} store file(s) deleted\n"))
        }
    }

    // -- after the kill --------------------------------------------------------------

    /// Runs the command again: it must recover on its own. When it refuses instead, the
    /// refusal must name the clean-up command, which is run (and then the command again) so
    /// that the failure says whether the state could be cleared at all.
    fn recover(&self) -> Checked<String> {
        let command = self.command();
        let name = command_name(&command);
        let output = self.cairn(&command);
        if output.status.success() {
            return Ok(format!("next `{name}` exit 0"));
        }
        let said = text(&output);
        let cleanup = ["backup-cleanup", "restore-cleanup"]
            .into_iter()
            .find(|c| said.contains(c))
            .ok_or_else(|| {
                format!(
                    "next `{name}` exit {:?} names no command: {}",
                    output.status.code(),
                    tail(&said)
                )
            })?;
        let mut cleanup_args = match self.phase.operation() {
            Operation::Drill => {
                let target = self.target.as_ref().unwrap();
                vec![
                    "deployment".into(),
                    "--inventory".into(),
                    target
                        .dir()
                        .join("drill-target.yml")
                        .to_string_lossy()
                        .into_owned(),
                ]
            }
            _ => self.login(),
        };
        cleanup_args.push(cleanup.into());
        let cleaned = self.cairn_with_store_env(&cleanup_args);
        ensure(cleaned.status.success(), || {
            format!(
                "`{cleanup}` named by the refusal failed: {}",
                tail(&text(&cleaned))
            )
        })?;
        self.new_second();
        let again = self.cairn(&command);
        ensure(again.status.success(), || {
            format!("`{name}` after `{cleanup}` failed: {}", tail(&text(&again)))
        })?;
        // The refusal was right, but every kill of the matrix is on this machine, where the
        // journal lets the next command undo what the dead run left: a refusal is a failure.
        Err(format!(
            "next `{name}` refused (exit {:?}, naming `{cleanup}`; that command did clear it) \
             although the journal of this machine's dead run should have been enough",
            output.status.code()
        ))
    }

    /// The listing, and the ids listed complete, each of which must verify.
    fn complete_backups(&self) -> Checked<(Listing, Vec<String>)> {
        let listed = self.listed()?;
        let complete: Vec<String> = listed
            .iter()
            .filter(|(_, c)| *c)
            .map(|(id, _)| id.clone())
            .collect();
        for id in &complete {
            let output = self.cairn(
                &[
                    "backups",
                    "--store",
                    &self.url,
                    "verify",
                    &format!("testbed/{id}"),
                ]
                .map(String::from),
            );
            ensure(output.status.success(), || {
                format!(
                    "backup {id} is listed complete but does not verify: {}",
                    tail(&text(&output))
                )
            })?;
        }
        Ok((listed, complete))
    }

    fn check_after(&self, killed_run: &str) -> Checked<()> {
        for bed in std::iter::once(&self.bed).chain(self.target.as_ref()) {
            nothing_left(bed)?;
            if let Some(director) = &self.director {
                for host in bed.hosts() {
                    let users = director.bosh_users_on(host);
                    ensure(users.is_empty(), || {
                        format!("bosh users left on {}: {users:?}", host.name())
                    })?;
                }
                let existing = cairn_testbed::director::bosh_accounts();
                for user in director.created_accounts() {
                    ensure(!existing.contains(&user), || {
                        format!("account {user} left in /etc/passwd")
                    })?;
                }
            }
        }
        // Every backup listed complete verifies, and there are exactly the complete ones
        // there should be (the killed run's is never one of them).
        let (listed, complete) = self.complete_backups()?;
        let complete: Vec<&String> = complete.iter().collect();
        let expected = match self.phase.operation() {
            Operation::Backup => self.earlier.len() + 1,
            Operation::Restore | Operation::Drill => self.earlier.len(),
            Operation::Prune => 1,
        };
        ensure(complete.len() == expected, || {
            format!(
                "{} complete backups listed, {expected} expected: {listed:?} (killed run: {})",
                complete.len(),
                tail(killed_run)
            )
        })?;
        // The newest earlier backup (the one prune keeps) restores byte-identically.
        let earlier = self.earlier.last().unwrap();
        ensure(complete.contains(&earlier), || {
            format!("the earlier backup {earlier} is no longer listed complete: {listed:?}")
        })?;
        if let Some(target) = &self.target {
            ensure(data_digest(target) == self.data, || {
                "the drill's target does not hold the backup's data".into()
            })?;
        }
        for host in self.bed.hosts() {
            let output = self
                .bed
                .exec(host, "rm -rf /var/vcap/store/database/* /var/vcap/store/app/* /var/vcap/store/files/*")
                .unwrap();
            assert!(output.status.success());
        }
        ensure(data_digest(&self.bed) != self.data, || {
            "the data was not removed".into()
        })?;
        let output = self.cairn(&self.restore_args(earlier));
        ensure(output.status.success(), || {
            format!(
                "restoring the earlier backup {earlier} failed: {}",
                tail(&text(&output))
            )
        })?;
        ensure(data_digest(&self.bed) == self.data, || {
            format!("the earlier backup {earlier} did not restore byte-identically")
        })?;
        nothing_left(&self.bed)
    }
}

/// The body shared by the trap wrappers: `started` writes the wrapper's pid to the marker,
/// `wait_release` waits (at most 2 minutes) for the test to release it.
const WAIT: &str = "#!/bin/sh\n\
    started() { mkdir -p /var/vcap/sys/run; echo $$ > /var/vcap/sys/run/km-started.tmp; \
    mv /var/vcap/sys/run/km-started.tmp /var/vcap/sys/run/km-started; }\n\
    wait_release() { i=0; while [ ! -e /var/vcap/sys/run/km-release ] && [ $i -lt 2400 ]; do \
    sleep 0.05; i=$((i+1)); done; }\n";

fn unmount(bed: &TestBed, host: &TestHost, name: &str) {
    let output = bed
        .exec(
            host,
            &format!("umount -l /usr/bin/{name} && rm -f /var/vcap/data/km-{name} /var/vcap/data/km-real-{name}"),
        )
        .unwrap();
    assert!(output.status.success(), "{}", text(&output));
}

/// `backup`, `restore`, `prune` or `drill`.
fn command_name(args: &[String]) -> &str {
    ["backup", "restore", "prune", "drill"]
        .into_iter()
        .find(|name| args.iter().any(|a| a == name))
        .unwrap_or("command")
}

/// No job locked, no artifact directory left, on every host of `bed`.
fn nothing_left(bed: &TestBed) -> Checked<()> {
    for (host, job) in locking_jobs(bed) {
        ensure(!bed.is_locked(host, job), || {
            format!("{job} on {} is still locked", host.name())
        })?;
    }
    for host in bed.hosts() {
        let leftover = host.vcap_dir.join("store/bbr-backup");
        ensure(!leftover.exists(), || {
            format!("/var/vcap/store/bbr-backup was left on {}", host.name())
        })?;
    }
    Ok(())
}

/// sha256 of every file of every job's data on every host (not the artifact directories).
fn data_digest(bed: &TestBed) -> BTreeMap<String, String> {
    let mut all = BTreeMap::new();
    for host in bed.hosts() {
        for job in ["database", "app", "files"] {
            let dir = host.vcap_dir.join("store").join(job);
            if dir.is_dir() {
                for (path, digest) in tree_digest(&dir) {
                    all.insert(format!("{}/{job}/{path}", host.name()), digest);
                }
            }
        }
    }
    all
}

/// Every file under `dir` (relative paths), read while something may be deleting them.
fn files_under(dir: &Path) -> std::collections::BTreeSet<String> {
    let mut files = std::collections::BTreeSet::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(next) = pending.pop() {
        for entry in fs::read_dir(&next).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else if let Ok(relative) = path.strip_prefix(dir) {
                files.insert(relative.to_string_lossy().into_owned());
            }
        }
    }
    files
}

/// The last lines of a long output.
fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(6)..].join(" / ")
}

/// integration/stores/fault_proxy.py in front of an emulator.
struct FaultProxy {
    child: Child,
    dir: tempfile::TempDir,
    endpoint: String,
}

impl FaultProxy {
    fn start(upstream: &str, control: &str) -> FaultProxy {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("control.json"), control).unwrap();
        let child = Command::new("python3")
            .arg(stores_dir().join("fault_proxy.py"))
            .args(["--upstream", upstream])
            .arg("--control")
            .arg(dir.path().join("control.json"))
            .arg("--log")
            .arg(dir.path().join("requests.log"))
            .arg("--ready")
            .arg(dir.path().join("ready"))
            .spawn()
            .unwrap();
        let ready = dir.path().join("ready");
        let deadline = Instant::now() + Duration::from_secs(60);
        while !ready.exists() {
            assert!(Instant::now() < deadline, "the fault proxy never started");
            std::thread::sleep(Duration::from_millis(20));
        }
        let port = fs::read_to_string(&ready).unwrap();
        let port = port.trim().strip_prefix("port=").unwrap().to_string();
        FaultProxy {
            child,
            dir,
            endpoint: format!("http://127.0.0.1:{port}"),
        }
    }

    fn set(&self, control: &str) {
        let path = self.dir.path().join("control.json");
        fs::write(path.with_extension("tmp"), control).unwrap();
        fs::rename(path.with_extension("tmp"), path).unwrap();
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
