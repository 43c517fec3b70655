//! End-to-end: what hostile input can no longer do to the jumpbox or an instance (issue 17,
//! findings 9, 10 and the log half of 12). Each test runs the real `cairn` binary against the
//! test bed, the Director stand-in or a `file://` store that a test tampers with:
//!
//! - a `metadata` script printing 2 MiB is refused with one line before anything is locked;
//! - a lock script printing 40 MiB: the run goes on, 16 MiB are kept (the peak memory of the
//!   process says so), the dropped bytes are counted in the log;
//! - a Director answering with a 70 MiB body is refused with one line, and a UAA token whose
//!   `expires_in` is `u64::MAX` is used without a panic;
//! - a store artifact replaced by a zstd bomb (manifest digest and size updated to match)
//!   stops the restore at the manifest's size, long before the instance's disk fills;
//! - a job name with an escape sequence and a lock-order name with a newline are escaped in
//!   every log line, and a store backup of such a job fails with an error, not a panic.

use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::{Output, Stdio};
use std::time::Duration;

use crate::common::*;
use cairn_testbed::director::{
    DeploymentSpec, Director, DirectorFault, DirectorOptions, FaultAnswer,
};
use cairn_testbed::{TestBed, TestHost};
use sha2::{Digest, Sha256};

/// Runs `cairn deployment --inventory <bed> <args>` in `work` and returns its output and the
/// peak resident memory of the process (`VmHWM`, KiB), read from `/proc` until it exits (the
/// value only grows, so the last reading is the peak up to then).
fn cairn_measuring_memory(bed: &TestBed, work: &Path, args: &[&str]) -> (Output, u64) {
    let inventory = bed.inventory();
    let stdout_path = work.join("cairn.stdout");
    let stderr_path = work.join("cairn.stderr");
    let mut child = cairn_command_in(work)
        .args(["deployment", "--inventory", inventory.to_str().unwrap()])
        .args(args)
        .stdin(Stdio::null())
        .stdout(fs::File::create(&stdout_path).unwrap())
        .stderr(fs::File::create(&stderr_path).unwrap())
        .spawn()
        .expect("cairn runs");
    let status_file = format!("/proc/{}/status", child.id());
    let mut peak_kib = 0;
    let status = loop {
        if let Some(kib) = fs::read_to_string(&status_file).ok().and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        }) {
            peak_kib = peak_kib.max(kib);
        }
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let output = Output {
        status,
        stdout: fs::read(&stdout_path).unwrap(),
        stderr: fs::read(&stderr_path).unwrap(),
    };
    fs::remove_file(stdout_path).unwrap();
    fs::remove_file(stderr_path).unwrap();
    eprintln!(
        "cairn {args:?} -> {:?}, peak {peak_kib} KiB\n--- stdout\n{}--- stderr\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output, peak_kib)
}

#[test]
fn a_metadata_script_printing_2_mib_is_refused_before_anything_is_locked() {
    cairn_testbed::require_root!();
    let bed = TestBed::start(&[]).expect("test bed");
    let host = bed.host("app", 0);
    bed.install_script(
        host,
        "app",
        "metadata",
        "#!/bin/sh\nhead -c 2097152 /dev/zero | tr '\\0' a\n",
    )
    .unwrap();
    let work = workdir();
    let output = backup_into(&bed, work.path(), &[]);
    let message = text(&output);
    assert_eq!(output.status.code(), Some(1), "{message}");
    assert!(
        message.contains("The metadata script of job app on app/")
            && message.contains("printed more than 1048576 bytes to stdout"),
        "{message}"
    );
    assert!(
        message.contains("fix the job's bin/bbr/metadata script"),
        "{message}"
    );
    // Discovery comes first: nothing was locked, so nothing is left locked.
    assert_no_script_ran(&bed);
    assert_nothing_left(&bed);
}

#[test]
fn a_lock_script_printing_40_mib_is_kept_to_16_mib_and_the_backup_completes() {
    cairn_testbed::require_root!();
    let bed = TestBed::start(&[]).expect("test bed");
    let work = workdir();
    let (plain, plain_peak) = cairn_measuring_memory(
        &bed,
        work.path(),
        &["backup", "--artifact-path", work.path().to_str().unwrap()],
    );
    assert_eq!(plain.status.code(), Some(0), "{}", text(&plain));
    for backup in fs::read_dir(work.path()).unwrap().flatten() {
        if backup.path().is_dir() {
            fs::remove_dir_all(backup.path()).unwrap();
        }
    }
    let host = bed.host("app", 0);
    let lock = fs::read_to_string(host.vcap_dir.join("jobs/app/bin/bbr/pre-backup-lock")).unwrap();
    let chatty = format!("{lock}\nhead -c 41943040 /dev/zero | tr '\\0' x\n");
    bed.install_script(host, "app", "pre-backup-lock", &chatty)
        .unwrap();
    let (output, peak) = cairn_measuring_memory(
        &bed,
        work.path(),
        &["backup", "--artifact-path", work.path().to_str().unwrap()],
    );
    let message = text(&output);
    assert_eq!(output.status.code(), Some(0), "{message}");
    // Kept: 16 MiB on top of an ordinary run's peak (with room for allocator slack), where
    // capturing all of it would add 40 MiB or more.
    eprintln!("peak memory: {plain_peak} KiB plain, {peak} KiB with 40 MiB of lock output");
    assert!(
        peak < plain_peak + (16 << 10) + (12 << 10),
        "peak {peak} KiB, an ordinary run {plain_peak} KiB"
    );
    let dropped = (40 << 20) - (16 << 20);
    assert!(
        message.contains(&format!(
            "printed more than 16 MiB to stdout: the first 16 MiB were kept and the remaining {dropped} bytes dropped"
        )),
        "{message}"
    );
    assert_eq!(tars(&backup_dir(work.path())).len(), 5, "a complete backup");
    assert_nothing_left(&bed);
}

/// `cairn deployment -t URL ... <args>` against the Director stand-in, in `work`.
fn through_director(director: &Director, work: &Path, args: &[&str]) -> Output {
    let login = director_login(director);
    run(work, &with_director_login(&login, args))
}

#[test]
fn a_director_answer_of_70_mib_is_refused_with_one_line() {
    cairn_testbed::require_root!();
    let bed = TestBed::start(&[("database", 0, &["database"])]).expect("test bed");
    let mut options = DirectorOptions::new(&bed);
    options
        .deployments
        .push(DeploymentSpec::new("limits", &bed));
    options.faults.push(DirectorFault::always(
        "GET /deployments/limits",
        FaultAnswer::Oversized(70 << 20),
    ));
    let director = Director::start(&options).expect("director");
    let work = workdir();
    let output = through_director(
        &director,
        work.path(),
        &[
            "--deployment",
            "limits",
            "backup",
            "--artifact-path",
            work.path().to_str().unwrap(),
        ],
    );
    let message = text(&output);
    assert_eq!(output.status.code(), Some(1), "{message}");
    assert!(
        message.contains(&format!(
            "The answer to GET {}/deployments/limits",
            director.url()
        )) && message.contains("is larger than 67108864 bytes, the most Cairn reads"),
        "{message}"
    );
    assert!(!message.contains("panicked"), "{message}");
    assert_no_script_ran(&bed);
    assert_nothing_left(&bed);
    for host in bed.hosts() {
        assert!(director.bosh_users_on(host).is_empty());
    }
}

#[test]
fn a_uaa_token_that_says_it_never_expires_is_used_without_a_panic() {
    cairn_testbed::require_root!();
    let bed = TestBed::start(&[("database", 0, &["database"])]).expect("test bed");
    let mut options = DirectorOptions::new(&bed);
    options
        .deployments
        .push(DeploymentSpec::new("limits", &bed));
    options.reported_expires_in = Some(u64::MAX);
    let director = Director::start(&options).expect("director");
    let work = workdir();
    let output = through_director(
        &director,
        work.path(),
        &[
            "--deployment",
            "limits",
            "backup",
            "--artifact-path",
            work.path().to_str().unwrap(),
        ],
    );
    let message = text(&output);
    assert_eq!(output.status.code(), Some(0), "{message}");
    assert!(!message.contains("panicked"), "{message}");
    assert_eq!(tars(&backup_dir(work.path())).len(), 1);
    assert_nothing_left(&bed);
}

/// A tar holding `./bomb`, `size` zero bytes, compressed as it is made (a few KiB stored).
fn zstd_bomb(size: u64) -> Vec<u8> {
    let mut encoder = zstd::Encoder::new(Vec::new(), 3).unwrap();
    let mut header = tar::Header::new_gnu();
    header.set_path("./bomb").unwrap();
    header.set_size(size);
    header.set_mode(0o644);
    header.set_entry_type(tar::EntryType::Regular);
    header.set_cksum();
    encoder.write_all(header.as_bytes()).unwrap();
    let zeros = vec![0_u8; 1 << 20];
    let mut left = size + 1024;
    while left > 0 {
        let part = left.min(zeros.len() as u64);
        encoder
            .write_all(&zeros[..usize::try_from(part).unwrap()])
            .unwrap();
        left -= part;
    }
    encoder.finish().unwrap()
}

/// Bytes used on the file system of `/var/vcap/store` inside `host` (seen through its sshd's
/// root, so no process has to start inside it).
fn store_bytes_used(host: &TestHost) -> u64 {
    let path = format!("/proc/{}/root/var/vcap/store", host.sshd_pid);
    // statfs(2) itself: blocks, free blocks, block size.
    let stat = std::process::Command::new("stat")
        .args(["-f", "-c", "%b %f %S", &path])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&stat.stdout).to_string();
    let numbers: Vec<u64> = text
        .split_whitespace()
        .map(|n| n.parse().unwrap())
        .collect();
    let [blocks, free, size] = numbers[..] else {
        panic!("stat -f {path}: {text:?} {:?}", stat.stderr);
    };
    (blocks - free) * size
}

/// The most [`store_bytes_used`] showed while `run` ran, looked at every few milliseconds.
fn peak_store_bytes<T>(host: &TestHost, run: impl FnOnce() -> T) -> (T, u64) {
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| {
        let watcher = scope.spawn(|| {
            let mut peak = 0;
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                peak = peak.max(store_bytes_used(host));
                std::thread::sleep(Duration::from_millis(2));
            }
            peak
        });
        let result = run();
        done.store(true, std::sync::atomic::Ordering::SeqCst);
        (result, watcher.join().unwrap())
    })
}

#[test]
fn a_zstd_bomb_in_the_store_stops_the_restore_before_the_instance_disk_fills() {
    cairn_testbed::require_root!();
    let bed = TestBed::start(&[("database", 0, &["database"])]).expect("test bed");
    let host = bed.host("database", 0);
    let store_dir = workdir();
    let store = format!("file://{}", store_dir.path().display());
    let work = workdir();
    let output = cairn(&bed, work.path(), &["backup", "--store", &store]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let backup = fs::read_dir(store_dir.path().join("testbed"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.join("manifest.json").exists())
        .expect("a complete backup");
    let id = format!("testbed/{}", backup.file_name().unwrap().to_string_lossy());
    // The artifact replaced by 256 MiB of zeros in a few KiB, the manifest's size and sha256
    // made to match: only the decompressed size gives it away. It is stored as one object, as
    // manifests of schema 1 list artifacts (its segments dropped), which must stay protected.
    let manifest_path = backup.join("manifest.json");
    let mut manifest: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(&manifest_path).unwrap()).unwrap();
    let artifact = &mut manifest["artifacts"][0];
    let plain_size = artifact["plain_size"]
        .as_u64()
        .expect("plain_size recorded");
    let bomb = zstd_bomb(256 << 20);
    fs::write(
        store_dir.path().join(artifact["key"].as_str().unwrap()),
        &bomb,
    )
    .unwrap();
    artifact["size"] = bomb.len().into();
    artifact["sha256"] = hex::encode(Sha256::digest(&bomb)).into();
    artifact.as_object_mut().unwrap().remove("segments");
    fs::write(
        &manifest_path,
        serde_json::to_string_pretty(&manifest).unwrap(),
    )
    .unwrap();
    // The instance's store is a 16 MiB file system of its own: a bomb let through would
    // fill it (tar's "No space left on device") instead of being stopped by Cairn.
    let mounted = bed
        .exec(
            host,
            "mount -t tmpfs -o size=16m cairn-bomb-test /var/vcap/store",
        )
        .unwrap();
    assert!(mounted.status.success(), "{mounted:?}");
    let events_before = script_counts(&bed);
    let (output, peak_used) = peak_store_bytes(host, || {
        cairn(
            &bed,
            work.path(),
            &["restore", "--store", &store, "--backup", &id],
        )
    });
    let used_after = store_bytes_used(host);
    let _ = bed.exec(host, "umount /var/vcap/store");
    // What reached the instance's disk stayed within the manifest's size (and its blocks).
    eprintln!("instance store: {peak_used} bytes at most during the restore, {used_after} after");
    assert!(
        peak_used < plain_size + (1 << 20),
        "{peak_used} bytes written on the instance"
    );
    let message = text(&output);
    assert_eq!(output.status.code(), Some(1), "{message}");
    assert!(
        message.contains(&format!(
            "decompresses to more than the {plain_size} bytes its manifest records"
        )),
        "{message}"
    );
    assert!(!message.contains("No space left"), "{message}");
    assert!(
        used_after < 1 << 20,
        "{used_after} bytes left on the instance"
    );
    assert_eq!(script_counts(&bed), events_before, "no script ran");
    assert_nothing_left(&bed);
}

/// A job whose name holds an escape sequence (the name rule, `cairn::model::name`, refuses it
/// before anything is locked).
const EVIL_JOB: &str = "ev\u{1b}[31mil";

/// Installs job `job` whose metadata names, in its lock order, a job whose name holds a
/// newline and a forged log line (a lock-order reference, not a file name: it reaches the log).
/// Its lock and unlock scripts log events under `sys/log/evil`.
fn install_evil_job(bed: &TestBed, host: &TestHost, job: &str) {
    let event = |script: &str| {
        format!(
            "#!/bin/sh\nset -eu\nmkdir -p /var/vcap/sys/log/evil\necho \"$(date +%s.%N) {script}\" >> /var/vcap/sys/log/evil/bbr-events.log\n"
        )
    };
    for script in ["pre-backup-lock", "post-backup-unlock"] {
        bed.install_script(host, job, script, &event(script))
            .unwrap();
    }
    bed.install_script(
        host,
        job,
        "backup",
        "#!/bin/sh\nset -eu\necho data > \"$BBR_ARTIFACT_DIRECTORY/data\"\n",
    )
    .unwrap();
    bed.install_script(
        host,
        job,
        "metadata",
        "#!/bin/sh\ncat <<'YAML'\nbackup_should_be_locked_before:\n- job_name: \"x\\n[bbr] 2099/01/01 00:00:00 INFO - forged\"\n  release: r\nYAML\n",
    )
    .unwrap();
}

#[test]
fn names_with_control_characters_are_escaped_in_logs_and_cannot_panic_a_store_backup() {
    cairn_testbed::require_root!();
    // A job name with an escape sequence: refused before anything is locked, in a bbr
    // directory and in a store alike (exit 1, not a panic's 101), the name escaped.
    let bed = TestBed::start(&[("app", 0, &["files"])]).expect("test bed");
    let host = bed.host("app", 0);
    install_evil_job(&bed, host, EVIL_JOB);
    let work = workdir();
    let store_dir = workdir();
    let store = format!("file://{}", store_dir.path().display());
    for destination in [
        [
            "--artifact-path",
            &work.path().join("out").display().to_string(),
        ],
        ["--store", &store],
    ] {
        let output = cairn(
            &bed,
            work.path(),
            &["backup", destination[0], destination[1]],
        );
        let message = text(&output);
        assert_eq!(output.status.code(), Some(1), "{message}");
        assert!(
            message
                .contains(r"job `ev\u{1b}[31mil` on instance app/0 contains a control character"),
            "{message}"
        );
        assert!(!message.contains('\u{1b}'), "{message:?}");
        assert!(!message.contains("panicked"), "{message}");
        assert!(bed.events(host, "evil").is_empty(), "nothing locked");
    }
    assert!(!host.vcap_dir.join("store/bbr-backup").exists());
    assert!(!fs::read_dir(store_dir.path().join("testbed"))
        .map(|entries| entries
            .flatten()
            .any(|e| e.path().join("manifest.json").exists()))
        .unwrap_or(false));

    // A name that reaches the log (a lock-order reference) with a newline and a forged log
    // line: the backup completes, and every line of its log is one of Cairn's, escaped.
    let bed = TestBed::start(&[("app", 0, &["files"])]).expect("test bed");
    let host = bed.host("app", 0);
    install_evil_job(&bed, host, "evil");
    let work = workdir();
    let output = backup_into(&bed, work.path(), &[]);
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    for line in stdout.lines() {
        assert!(line.starts_with("[bbr] "), "a line not Cairn's: {line:?}");
        assert!(
            !line.contains("INFO - forged") || line.contains("\\n[bbr]"),
            "{line:?}"
        );
    }
    assert!(
        stdout.contains(r"should be locked before r/x\n[bbr] 2099/01/01 00:00:00 INFO - forged"),
        "{stdout}"
    );
    assert_eq!(
        bed.events(host, "evil")
            .iter()
            .map(|(_, script, _)| script.as_str())
            .collect::<Vec<_>>(),
        ["pre-backup-lock", "post-backup-unlock"]
    );
}

/// An instance whose checksum listing (`--instance-checksums`) does not end (its `openssl`
/// prints records of new names past 256 MiB) fails the backup with one line: the listing is read as it arrives and a
/// backup keeps a map of it, so without the limit the jumpbox's memory would grow with it.
#[test]
fn an_instance_listing_checksums_without_end_is_stopped_at_256_mib() {
    cairn_testbed::require_root!();
    let bed = TestBed::start(&[("app", 0, &["files"])]).expect("test bed");
    let host = bed.host("app", 0);
    // 300 MiB of records, each with a name of its own (finite, so that a missing limit fails
    // the test instead of hanging it).
    let fake = host.vcap_dir.join("fake-openssl");
    fs::write(
        &fake,
        "#!/bin/sh\nawk 'BEGIN { for (n = 0; n < 3700000; n++) printf \"%064d *./f%d\\n\", 0, n }'\n",
    )
    .unwrap();
    fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let mounted = bed
        .exec(
            host,
            "mount --bind /var/vcap/fake-openssl \"$(command -v openssl)\"",
        )
        .unwrap();
    assert!(mounted.status.success(), "{mounted:?}");
    let work = workdir();
    let (output, peak_kib) = cairn_measuring_memory(
        &bed,
        work.path(),
        &[
            "backup",
            "--instance-checksums",
            "--artifact-path",
            work.path().to_str().unwrap(),
        ],
    );
    let message = text(&output);
    assert_eq!(output.status.code(), Some(1), "{message}");
    assert!(
        message
            .contains("the checksum listing is larger than 268435456 bytes, the most Cairn reads"),
        "{message}"
    );
    assert!(!message.contains("panicked"), "{message}");
    eprintln!("peak RSS {peak_kib} KiB");
    assert_nothing_left(&bed);
}
