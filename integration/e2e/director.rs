//! End-to-end: deployment mode through a BOSH Director (the stand-in of
//! integration/director/, serving test-bed hosts), with UAA and basic auth, temporary SSH
//! users, `--all-deployments`, `BOSH_ALL_PROXY` through a jumpbox, token renewal, bad inputs
//! and `bbr.backup_one_restore_all`.

use std::fs;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use crate::common::*;
use cairn_testbed::director::{
    Auth, DeploymentSpec, Director, DirectorClient, DirectorOptions, DEFAULT_CLIENT_ID,
    DEFAULT_CLIENT_SECRET,
};
use cairn_testbed::TestBed;

/// `cairn deployment -t URL -u admin -p SECRET --ca-cert CA <args>` in `work`.
fn bosh(director: &Director, work: &Path, args: &[&str]) -> Output {
    bosh_with(director, work, &[], args)
}

fn bosh_with(director: &Director, work: &Path, env: &[(&str, &str)], args: &[&str]) -> Output {
    let login = director_login(director);
    let all = with_director_login(&login, args);
    let mut command = cairn_command_in(work);
    command.args(&all).envs(env.iter().copied());
    let output = command.output().expect("cairn runs");
    eprintln!(
        "cairn {all:?} -> {:?}\n--- stdout\n{}--- stderr\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// No temporary user is left on any host of the Director, nor in /etc/passwd.
fn assert_no_bosh_user_left(director: &Director, beds: &[&TestBed]) {
    for bed in beds {
        for host in bed.hosts() {
            assert!(
                director.bosh_users_on(host).is_empty(),
                "bosh users left on {}: {:?}",
                host.name(),
                director.bosh_users_on(host)
            );
        }
    }
    let existing = cairn_testbed::director::bosh_accounts();
    let created = director.created_accounts();
    for user in created {
        assert!(
            !existing.contains(&user),
            "account {user} was left in /etc/passwd"
        );
    }
}

fn ssh_cleanups(director: &Director) -> usize {
    director
        .requests()
        .iter()
        .filter(|r| {
            r.note
                .as_deref()
                .is_some_and(|n| n.starts_with("ssh cleanup"))
        })
        .count()
}

#[test]
fn deployments_behind_uaa_and_basic_auth_are_backed_up_and_restored() {
    cairn_testbed::require_root!();
    let (cf_bed, redis_bed) = std::thread::scope(|s| {
        let a = s.spawn(|| TestBed::start(&[]).expect("test bed"));
        let b = s.spawn(|| {
            TestBed::start(&[("redis", 0, &["files"]), ("redis", 1, &["files"])]).expect("test bed")
        });
        (a.join().unwrap(), b.join().unwrap())
    });
    let mut uaa = DirectorOptions::new(&cf_bed);
    uaa.deployments.push(DeploymentSpec::new("cf", &cf_bed));
    let uaa_director = Director::start(&uaa).expect("director");
    let mut basic = DirectorOptions::new(&redis_bed);
    basic.auth = Auth::Basic;
    basic
        .deployments
        .push(DeploymentSpec::new("redis", &redis_bed));
    let basic_director = Director::start(&basic).expect("director");

    for (director, bed, name) in [
        (&uaa_director, &cf_bed, "cf"),
        (&basic_director, &redis_bed, "redis"),
    ] {
        let work = workdir();
        let output = bosh(
            director,
            work.path(),
            &[
                "--deployment",
                name,
                "backup",
                "--artifact-path",
                work.path().to_str().unwrap(),
                "--with-manifest",
            ],
        );
        assert_eq!(output.status.code(), Some(0), "{}", text(&output));
        assert!(
            !director.created_accounts().is_empty(),
            "the run used a temporary user"
        );
        let backup = backup_dir(work.path());
        assert!(backup
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with(&format!("{name}_")));
        assert!(fs::read_to_string(backup.join("manifest.yml"))
            .unwrap()
            .contains("instance_groups"));
        let expected: Vec<String> = bed
            .hosts()
            .iter()
            .flat_map(|h| {
                let jobs = fs::read_dir(h.vcap_dir.join("jobs")).unwrap();
                jobs.flatten()
                    .map(|j| {
                        format!(
                            "{}-{}-{}.tar",
                            h.group,
                            h.index,
                            j.file_name().to_string_lossy()
                        )
                    })
                    .collect::<Vec<_>>()
            })
            .collect();
        let mut expected = expected;
        expected.sort();
        assert_eq!(tars(&backup), expected);
        assert_no_bosh_user_left(director, &[bed]);
        assert_nothing_left(bed);

        // Damage the data, restore, and it is back.
        let host = &bed.hosts()[bed.hosts().len() - 1];
        let files = host.vcap_dir.join("store/files");
        let before = tree_digest(&files);
        fs::remove_dir_all(&files).unwrap();
        let output = bosh(
            director,
            work.path(),
            &[
                "-d",
                name,
                "restore",
                "--artifact-path",
                backup.to_str().unwrap(),
            ],
        );
        assert_eq!(output.status.code(), Some(0), "{}", text(&output));
        assert_eq!(tree_digest(&files), before);
        assert_no_bosh_user_left(director, &[bed]);
    }
    // Releases come from the manifest: app is locked before database (database-release).
    let timeline = cf_bed.timeline();
    let lock = |job: &str| {
        timeline
            .iter()
            .filter(|e| e.job == job && e.script == "pre-backup-lock")
            .map(|e| e.time)
            .fold(f64::NAN, f64::max)
    };
    let database_lock = timeline
        .iter()
        .find(|e| e.job == "database" && e.script == "pre-backup-lock")
        .unwrap()
        .time;
    assert!(
        lock("app") < database_lock,
        "app must be locked before database"
    );
    // UAA was used by one, basic auth by the other.
    assert!(uaa_director.requests().iter().any(|r| r.listener == "uaa"));
    assert!(basic_director
        .requests()
        .iter()
        .all(|r| r.listener != "uaa"));
}

#[test]
fn all_deployments_back_up_in_parallel_and_one_failure_exits_1() {
    cairn_testbed::require_root!();
    let (good, bad) = std::thread::scope(|s| {
        let a = s.spawn(|| TestBed::start(&[("app", 0, &["files"])]).expect("test bed"));
        let b = s.spawn(|| TestBed::start(&[("db", 0, &["database"])]).expect("test bed"));
        (a.join().unwrap(), b.join().unwrap())
    });
    let failing = bad.host("db", 0);
    bad.install_script(
        failing,
        "database",
        "backup",
        "#!/bin/sh\necho 'disk on fire' >&2\nexit 3\n",
    )
    .unwrap();
    let mut options = DirectorOptions::new(&good);
    options.deployments.push(DeploymentSpec::new("good", &good));
    options.deployments.push(DeploymentSpec::new("bad", &bad));
    // The bad bed's hosts reach the Director only from this machine; the Director listens
    // on the good bed's bridge, which is fine for a client on this machine.
    let director = Director::start(&options).expect("director");
    let work = workdir();
    let output = bosh(
        &director,
        work.path(),
        &[
            "--all-deployments",
            "backup",
            "--artifact-path",
            work.path().to_str().unwrap(),
        ],
    );
    let all = text(&output);
    assert_eq!(output.status.code(), Some(1), "{all}");
    assert!(all.contains("Pending: "), "{all}");
    assert!(all.contains("Successfully backed up: good"), "{all}");
    assert!(all.contains("FAILED: bad"), "{all}");
    assert!(
        all.contains("1 out of 2 deployments cannot be backed up:"),
        "{all}"
    );
    assert!(
        all.contains("disk on fire"),
        "the failed deployment's error is shown: {all}"
    );
    let dirs: Vec<String> = fs::read_dir(work.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let good_dir = dirs
        .iter()
        .find(|d| d.starts_with("good_") && !d.ends_with(".log"))
        .expect("good's backup");
    assert!(work.path().join(good_dir).join("app-0-files.tar").exists());
    assert!(
        dirs.iter()
            .any(|d| d.starts_with("good_") && d.ends_with(".log")),
        "{dirs:?}"
    );
    assert!(
        dirs.iter()
            .any(|d| d.starts_with("bad_") && d.ends_with(".log")),
        "{dirs:?}"
    );
    assert!(!bad.is_locked(failing, "database"));
    assert_no_bosh_user_left(&director, &[&good, &bad]);
    // pre-backup-check and backup-cleanup work on every deployment too.
    for (action, summary) in [
        (
            "pre-backup-check",
            "Successfully can be backed up: bad, good",
        ),
        ("backup-cleanup", "Successfully cleaned up: bad, good"),
    ] {
        let output = bosh(&director, work.path(), &["--all-deployments", action]);
        assert_eq!(output.status.code(), Some(0), "{}", text(&output));
        assert!(text(&output).contains(summary), "{}", text(&output));
    }
    assert_no_bosh_user_left(&director, &[&good, &bad]);
    // The secret never reaches a child's command line (visible in ps); it came through env.
    assert!(!fs::read_to_string(
        work.path().join(
            dirs.iter()
                .find(|d| d.starts_with("bad_") && d.ends_with(".log"))
                .unwrap()
        )
    )
    .unwrap()
    .contains(DEFAULT_CLIENT_SECRET));
}

#[test]
fn bad_director_inputs_give_one_line_errors_and_exit_1() {
    cairn_testbed::require_root!();
    let bed = TestBed::start(&[("app", 0, &["files"])]).expect("test bed");
    let other_bed = TestBed::start(&[("x", 0, &[])]).expect("test bed");
    let mut options = DirectorOptions::new(&bed);
    options.deployments.push(DeploymentSpec::new("cf", &bed));
    options
        .clients
        .push(DirectorClient::restricted("team-a", "team-secret", &[]));
    let director = Director::start(&options).expect("director");
    // A second Director: its CA did not sign the first one's certificate.
    let mut other = DirectorOptions::new(&other_bed);
    other.deployments.push(DeploymentSpec::new("x", &other_bed));
    let other_director = Director::start(&other).expect("director");
    let work = workdir();
    let check = |output: &Output, needle: &str| {
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains(needle), "expected `{needle}` in: {stderr}");
        assert!(
            !text(output).contains(DEFAULT_CLIENT_SECRET),
            "no secret in the output"
        );
    };
    let url = director.url();
    let ca = director.ca_cert_path();
    let run_with = |user: &str, secret: &str, target: &str, ca: &Path, deployment: &str| {
        run(
            work.path(),
            &[
                "deployment",
                "-t",
                target,
                "-u",
                user,
                "-p",
                secret,
                "--ca-cert",
                ca.to_str().unwrap(),
                "-d",
                deployment,
                "pre-backup-check",
            ],
        )
    };
    check(
        &run_with(DEFAULT_CLIENT_ID, "wrong-secret", &url, &ca, "cf"),
        "refused client `admin`",
    );
    check(
        &run_with(
            DEFAULT_CLIENT_ID,
            DEFAULT_CLIENT_SECRET,
            &url,
            &other_director.ca_cert_path(),
            "cf",
        ),
        "is --ca-cert the CA that signed the Director's certificate?",
    );
    let unreachable = format!("{}:1", director.address());
    check(
        &run_with(
            DEFAULT_CLIENT_ID,
            DEFAULT_CLIENT_SECRET,
            &unreachable,
            &ca,
            "cf",
        ),
        "bosh director unreachable or unhealthy",
    );
    check(
        &run_with(DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, &url, &ca, "nosuch"),
        "status code 404 to GET /deployments/nosuch/vms?format=full: Deployment 'nosuch' doesn't exist",
    );
    check(
        &run_with("team-a", "team-secret", &url, &ca, "cf"),
        "Require one of the scopes",
    );
    check(
        &run_with(
            DEFAULT_CLIENT_ID,
            DEFAULT_CLIENT_SECRET,
            // bosh-cli accepts any scheme (`http://x` is reached over HTTPS) but not a
            // port that is no number.
            "https://x:port",
            &ca,
            "cf",
        ),
        "invalid bosh URL - ",
    );
    // The CA as PEM text in CA_CERT, which wins over BOSH_CA_CERT.
    let pem = director.ca_cert_pem();
    let wrong_ca = other_director.ca_cert_path();
    let output = cairn_command_in(work.path())
        .env("CA_CERT", &pem)
        .env("BOSH_CA_CERT", wrong_ca.to_str().unwrap())
        .args([
            "deployment",
            "-t",
            &url,
            "-u",
            DEFAULT_CLIENT_ID,
            "-p",
            DEFAULT_CLIENT_SECRET,
            "-d",
            "cf",
            "pre-backup-check",
        ])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let bad_ca = work.path().join("bad-ca.pem");
    fs::write(&bad_ca, "not a certificate").unwrap();
    check(
        &run_with(
            DEFAULT_CLIENT_ID,
            DEFAULT_CLIENT_SECRET,
            &url,
            &bad_ca,
            "cf",
        ),
        "Missing PEM block",
    );
    assert_no_bosh_user_left(&director, &[&bed]);
}

#[test]
fn an_expiring_token_is_renewed_during_a_long_backup() {
    cairn_testbed::require_root!();
    let bed = TestBed::start(&[("app", 0, &["files"])]).expect("test bed");
    let host = bed.host("app", 0);
    // The backup outlives the token several times over.
    bed.install_script(
        host,
        "files",
        "backup",
        "#!/bin/sh\nset -eu\nsleep 5\necho x > \"${BBR_ARTIFACT_DIRECTORY}x\"\n",
    )
    .unwrap();
    let mut options = DirectorOptions::new(&bed);
    options.token_lifetime = Duration::from_millis(1500);
    options.deployments.push(DeploymentSpec::new("cf", &bed));
    let director = Director::start(&options).expect("director");
    let work = workdir();
    let output = bosh(
        &director,
        work.path(),
        &["-d", "cf", "backup", "-a", work.path().to_str().unwrap()],
    );
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let requests = director.requests();
    let tokens = requests
        .iter()
        .filter(|r| r.listener == "uaa" && r.status == 200)
        .count();
    assert!(
        tokens >= 2,
        "the token must have been renewed: {requests:?}"
    );
    let cleanup = requests
        .iter()
        .find(|r| {
            r.note
                .as_deref()
                .is_some_and(|n| n.starts_with("ssh cleanup"))
        })
        .expect("cleanup was asked for");
    assert_eq!(cleanup.status, 302, "{cleanup:?}");
    assert_no_bosh_user_left(&director, &[&bed]);
}

#[test]
fn a_run_through_a_jumpbox_uses_one_tunnel_for_the_api_and_the_instances() {
    cairn_testbed::require_root!();
    let bed = TestBed::start(&[
        ("app", 0, &["files"]),
        ("app", 1, &["files"]),
        ("jumpbox", 0, &[]),
    ])
    .expect("test bed");
    let jumpbox = bed.host("jumpbox", 0);
    let mut options = DirectorOptions::new(&bed);
    options
        .deployments
        .push(DeploymentSpec::new("cf", &bed).groups(&["app"]));
    let director = Director::start(&options).expect("director");
    let work = workdir();
    let proxy = format!(
        "ssh+socks5://vcap@{}:22?private-key={}",
        jumpbox.address,
        bed.private_key().display()
    );
    let known_hosts = bed.known_hosts();
    let output = bosh_with(
        &director,
        work.path(),
        &[("BOSH_ALL_PROXY", &proxy)],
        &[
            "--known-hosts",
            known_hosts.to_str().unwrap(),
            "-d",
            "cf",
            "backup",
            "-a",
            work.path().to_str().unwrap(),
        ],
    );
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert!(backup_dir(work.path()).join("app-1-files.tar").exists());
    // Every Director and UAA request came from the jumpbox's address, not this machine's.
    let requests = director.requests();
    assert!(!requests.is_empty());
    for request in &requests {
        assert_eq!(request.client_ip, jumpbox.address, "{request:?}");
    }
    // And the instances saw the temporary user arrive from the jumpbox.
    for index in [0, 1] {
        let log = fs::read_to_string(bed.host("app", index).dir.join("sshd.log")).unwrap();
        assert!(
            log.lines()
                .any(|l| l.contains("Accepted publickey for bosh_")
                    && l.contains(&format!("from {} ", jumpbox.address))),
            "app/{index} sshd log: {log}"
        );
    }
    assert_no_bosh_user_left(&director, &[&bed]);

    // socks5://: an existing SOCKS proxy (OpenSSH's dynamic forward through the jumpbox).
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let mut forward = bed
        .ssh_command(jumpbox)
        .args(["-N", "-D", &format!("127.0.0.1:{port}")])
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "ssh -D never listened"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let before = director.requests().len();
    let socks = format!("socks5://127.0.0.1:{port}");
    let output = bosh_with(
        &director,
        work.path(),
        &[("BOSH_ALL_PROXY", &socks)],
        &["-d", "cf", "pre-backup-check"],
    );
    let _ = forward.kill();
    let _ = forward.wait();
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    for request in &director.requests()[before..] {
        assert_eq!(request.client_ip, jumpbox.address, "{request:?}");
    }
    assert_no_bosh_user_left(&director, &[&bed]);

    // A jumpbox whose key is not the one on record is refused, with one clear line.
    let wrong = work.path().join("wrong_known_hosts");
    fs::write(
        &wrong,
        format!(
            "{} ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl\n",
            jumpbox.address
        ),
    )
    .unwrap();
    let output = bosh_with(
        &director,
        work.path(),
        &[("BOSH_ALL_PROXY", &proxy)],
        &[
            "--known-hosts",
            wrong.to_str().unwrap(),
            "-d",
            "cf",
            "pre-backup-check",
        ],
    );
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert!(
        text(&output).contains("Host key of jumpbox"),
        "{}",
        text(&output)
    );
    assert!(
        text(&output).contains("does not match"),
        "{}",
        text(&output)
    );
    // And a malformed proxy setting is named.
    let output = bosh_with(
        &director,
        work.path(),
        &[("BOSH_ALL_PROXY", "ssh+socks5://nobody")],
        &["-d", "cf", "pre-backup-check"],
    );
    assert_eq!(output.status.code(), Some(1));
    assert!(
        text(&output).contains("BOSH_ALL_PROXY `ssh+socks5://nobody`"),
        "{}",
        text(&output)
    );
}

#[test]
fn temporary_users_are_removed_after_a_failed_script_and_after_sigterm() {
    cairn_testbed::require_root!();
    let bed = TestBed::start(&[("db", 0, &["database"]), ("app", 0, &["app"])]).expect("test bed");
    let db = bed.host("db", 0);
    let mut options = DirectorOptions::new(&bed);
    options.deployments.push(DeploymentSpec::new("cf", &bed));
    let director = Director::start(&options).expect("director");
    let work = workdir();

    bed.install_script(
        db,
        "database",
        "backup",
        "#!/bin/sh\necho 'no space left' >&2\nexit 1\n",
    )
    .unwrap();
    let output = bosh(
        &director,
        work.path(),
        &["-d", "cf", "backup", "-a", work.path().to_str().unwrap()],
    );
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert!(text(&output).contains("no space left"));
    assert_nothing_left(&bed);
    assert_no_bosh_user_left(&director, &[&bed]);
    let cleanups = ssh_cleanups(&director);
    assert_eq!(cleanups, 2, "one cleanup per instance");

    // SIGTERM while the backup script runs.
    bed.install_script(
        db,
        "database",
        "backup",
        "#!/bin/sh\ntouch /var/vcap/sys/run/database/backing-up\nsleep 60\n",
    )
    .unwrap();
    let mut child = {
        let url = director.url();
        let ca = director.ca_cert_path();
        let mut command: Command = cairn_command_in(work.path());
        command.args([
            "deployment",
            "-t",
            &url,
            "-u",
            DEFAULT_CLIENT_ID,
            "-p",
            DEFAULT_CLIENT_SECRET,
            "--ca-cert",
            ca.to_str().unwrap(),
            "-d",
            "cf",
            "backup",
            "-a",
            work.path().to_str().unwrap(),
        ]);
        command.spawn().unwrap()
    };
    let marker = db.vcap_dir.join("sys/run/database/backing-up");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !marker.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the backup script never started"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        !director.bosh_users_on(db).is_empty(),
        "the user exists while the backup runs"
    );
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(1));
    assert_nothing_left(&bed);
    assert_no_bosh_user_left(&director, &[&bed]);
    assert_eq!(ssh_cleanups(&director), cleanups + 2);
}

#[test]
fn sigterm_to_an_all_deployments_run_reaches_each_deployments_process() {
    cairn_testbed::require_root!();
    let bed = TestBed::start(&[("db", 0, &["database"])]).expect("test bed");
    let db = bed.host("db", 0);
    let mut options = DirectorOptions::new(&bed);
    options.deployments.push(DeploymentSpec::new("cf", &bed));
    let director = Director::start(&options).expect("director");
    let work = workdir();
    // A backup script that would finish (and the backup succeed) unless it is stopped.
    bed.install_script(
        db,
        "database",
        "backup",
        "#!/bin/sh
touch /var/vcap/sys/run/database/backing-up
sleep 20
mkdir -p \"$BBR_ARTIFACT_DIRECTORY\"\n",
    )
    .unwrap();
    let url = director.url();
    let ca = director.ca_cert_path();
    let parent = cairn_command_in(work.path())
        .args([
            "deployment",
            "-t",
            &url,
            "-u",
            DEFAULT_CLIENT_ID,
            "-p",
            DEFAULT_CLIENT_SECRET,
            "--ca-cert",
            ca.to_str().unwrap(),
            "--all-deployments",
            "backup",
            "-a",
            work.path().to_str().unwrap(),
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let marker = db.vcap_dir.join("sys/run/database/backing-up");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !marker.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the backup script never started"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Only the parent is signalled, as a service manager or CI runner would.
    Command::new("kill")
        .args(["-TERM", &parent.id().to_string()])
        .status()
        .unwrap();
    let output = parent.wait_with_output().unwrap();
    let all = text(&output);
    assert_eq!(output.status.code(), Some(1), "{all}");
    assert!(all.contains("FAILED: cf"), "{all}");
    let log = fs::read_dir(work.path())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name().is_some_and(|n| {
                n.to_string_lossy().starts_with("cf_") && n.to_string_lossy().ends_with(".log")
            })
        })
        .expect("cf's log file");
    let log = fs::read_to_string(log).unwrap();
    assert!(
        log.contains("Received SIGTERM: stopping"),
        "the deployment's own process got the signal: {log}"
    );
    assert!(!bed.is_locked(db, "database"));
    assert_nothing_left(&bed);
    assert_no_bosh_user_left(&director, &[&bed]);
}

#[test]
fn backup_one_restore_all_backs_up_the_bootstrap_instance_and_restores_it_everywhere() {
    cairn_testbed::require_root!();
    let bed = TestBed::start(&[("app", 0, &["files"]), ("app", 1, &["files"])]).expect("test bed");
    let mut options = DirectorOptions::new(&bed);
    options
        .deployments
        .push(DeploymentSpec::new("cf", &bed).backup_one_restore_all("files"));
    let director = Director::start(&options).expect("director");
    let work = workdir();
    let output = bosh(
        &director,
        work.path(),
        &["-d", "cf", "backup", "-a", work.path().to_str().unwrap()],
    );
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let backup = backup_dir(work.path());
    assert_eq!(
        tars(&backup),
        [
            "app-1-files.tar",
            "files-files-release-backup-one-restore-all.tar"
        ],
        "the bootstrap instance writes the shared artifact, the others their own"
    );
    let metadata = fs::read_to_string(backup.join("metadata")).unwrap();
    assert!(
        metadata.contains("custom_artifacts:\n- name: files-files-release-backup-one-restore-all"),
        "{metadata}"
    );
    let bootstrap = director
        .instances()
        .iter()
        .find(|i| i.bootstrap)
        .expect("a bootstrap instance");
    let original = tree_digest(&bootstrap.vcap_dir.join("store/files"));
    // Restore: every instance gets the bootstrap instance's data.
    for host in bed.hosts() {
        fs::remove_dir_all(host.vcap_dir.join("store/files")).unwrap();
    }
    let output = bosh(
        &director,
        work.path(),
        &["-d", "cf", "restore", "-a", backup.to_str().unwrap()],
    );
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    for host in bed.hosts() {
        assert_eq!(
            tree_digest(&host.vcap_dir.join("store/files")),
            original,
            "{}",
            host.name()
        );
    }
    assert_no_bosh_user_left(&director, &[&bed]);
}

/// A job script that logs `<time> <script>` like the example jobs (for the timeline).
fn logging_script(job: &str, script: &str, body: &str) -> String {
    format!(
        "#!/bin/sh\nset -eu\n{body}\nmkdir -p /var/vcap/sys/log/{job}\necho \"$(date +%s.%N) {script}\" >> /var/vcap/sys/log/{job}/bbr-events.log\n"
    )
}

#[test]
fn director_mode_backs_up_a_director_vm_with_its_own_jobs_in_lock_order() {
    cairn_testbed::require_root!();
    let jobs = [
        "director",
        "blobstore",
        "uaa",
        "bbr-uaadb",
        "credhub",
        "bbr-credhubdb",
    ];
    let bed = TestBed::start(&[("bosh", 0, &jobs)]).expect("test bed");
    let vm = bed.host("bosh", 0);
    for job in jobs {
        let store = format!("/var/vcap/store/{job}");
        fs::create_dir_all(vm.vcap_dir.join(format!("store/{job}"))).unwrap();
        fs::write(
            vm.vcap_dir.join(format!("store/{job}/data")),
            format!("{job} data\n"),
        )
        .unwrap();
        let backup = format!("cp -a {store}/. \"$BBR_ARTIFACT_DIRECTORY\"");
        let restore = format!("cp -a \"$BBR_ARTIFACT_DIRECTORY\". {store}/");
        for (script, body) in [
            ("backup", backup.as_str()),
            ("restore", restore.as_str()),
            ("pre-backup-lock", "true"),
            ("post-backup-unlock", "true"),
        ] {
            bed.install_script(vm, job, script, &logging_script(job, script, body))
                .unwrap();
        }
    }
    // As in the director's releases: the API jobs are locked before their databases' bbr
    // jobs, by job name and release (release names are unknown in director mode).
    for (job, database, release) in [
        ("uaa", "bbr-uaadb", "uaa"),
        ("credhub", "bbr-credhubdb", "credhub"),
    ] {
        let metadata = format!(
            "#!/bin/sh\necho 'backup_should_be_locked_before:\n- job_name: {database}\n  release: {release}'\n"
        );
        bed.install_script(vm, job, "metadata", &metadata).unwrap();
    }
    let work = workdir();
    let key = bed.private_key();
    let known_hosts = bed.known_hosts();
    let output = run(
        work.path(),
        &[
            "director",
            "--host",
            &vm.address,
            "--username",
            "vcap",
            "--private-key-path",
            key.to_str().unwrap(),
            "--known-hosts",
            known_hosts.to_str().unwrap(),
            "backup",
            "-a",
            work.path().to_str().unwrap(),
        ],
    );
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let backup = backup_dir(work.path());
    assert!(backup
        .file_name()
        .unwrap()
        .to_string_lossy()
        .starts_with(&format!("{}_", vm.address)));
    let mut expected: Vec<String> = jobs.iter().map(|j| format!("bosh-0-{j}.tar")).collect();
    expected.sort();
    assert_eq!(tars(&backup), expected);
    let metadata = fs::read_to_string(backup.join("metadata")).unwrap();
    assert!(
        metadata.contains("- name: bosh\n  index: '0'"),
        "{metadata}"
    );
    let timeline = bed.timeline();
    let first = |job: &str, script: &str| {
        timeline
            .iter()
            .find(|e| e.job == job && e.script == script)
            .map(|e| e.time)
            .unwrap()
    };
    assert!(first("uaa", "pre-backup-lock") < first("bbr-uaadb", "pre-backup-lock"));
    assert!(first("credhub", "pre-backup-lock") < first("bbr-credhubdb", "pre-backup-lock"));
    assert!(first("bbr-uaadb", "post-backup-unlock") < first("uaa", "post-backup-unlock"));
}

#[test]
fn director_secrets_and_tokens_never_appear_even_with_debug() {
    cairn_testbed::require_root!();
    let bed = TestBed::start(&[("app", 0, &["files"])]).expect("test bed");
    let jumpbox_bed = &bed;
    let mut options = DirectorOptions::new(jumpbox_bed);
    options.deployments.push(DeploymentSpec::new("cf", &bed));
    let director = Director::start(&options).expect("director");
    let work = workdir();
    let output = bosh(
        &director,
        work.path(),
        &[
            "--debug",
            "-d",
            "cf",
            "backup",
            "-a",
            work.path().to_str().unwrap(),
        ],
    );
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let all = text(&output);
    assert!(all.contains("DEBUG"), "debug logs are on");
    for secret in [
        DEFAULT_CLIENT_SECRET,
        "bearer ",
        "Bearer ",
        "eyJ",
        "PRIVATE KEY",
        "Authorization",
    ] {
        assert!(!all.contains(secret), "`{secret}` appeared in the output");
    }
    for entry in fs::read_dir(work.path()).unwrap().flatten() {
        if entry.file_name().to_string_lossy().ends_with(".err.log") {
            let log = fs::read_to_string(entry.path()).unwrap();
            assert!(!log.contains(DEFAULT_CLIENT_SECRET));
        }
    }
}

#[test]
fn a_drill_restores_one_director_deployment_into_another() {
    cairn_testbed::require_root!();
    let (prod, dr) = std::thread::scope(|s| {
        let a = s.spawn(|| TestBed::start(&[("app", 0, &["files"])]).expect("test bed"));
        let b = s.spawn(|| TestBed::start(&[("app", 0, &["files"])]).expect("test bed"));
        (a.join().unwrap(), b.join().unwrap())
    });
    let mut options = DirectorOptions::new(&prod);
    options.deployments.push(DeploymentSpec::new("prod", &prod));
    options.deployments.push(DeploymentSpec::new("dr", &dr));
    let director = Director::start(&options).expect("director");
    let blob = |bed: &TestBed| {
        fs::read(
            bed.host("app", 0)
                .vcap_dir
                .join("store/files/nested/blob.bin"),
        )
        .unwrap()
    };
    assert_ne!(blob(&prod), blob(&dr));
    let work = workdir();
    let url = director.url();
    let ca = director.ca_cert_path();
    let output = cairn_command_in(work.path())
        .env("BOSH_ENVIRONMENT", &url)
        .env("BOSH_CLIENT", DEFAULT_CLIENT_ID)
        .env("BOSH_CLIENT_SECRET", DEFAULT_CLIENT_SECRET)
        .env("BOSH_CA_CERT", ca.to_str().unwrap())
        .args([
            "drill",
            "--source-deployment",
            "prod",
            "--target-deployment",
            "dr",
            "--artifact-path",
            work.path().to_str().unwrap(),
            "--report-dir",
            work.path().to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert!(
        text(&output).contains("Restore drill into dr: PASSED"),
        "{}",
        text(&output)
    );
    assert_eq!(blob(&prod), blob(&dr), "dr holds prod's data");
    // The drill's backup keeps prod's manifest, and the restore compared it with dr's.
    let backup = fs::read_dir(work.path())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.is_dir()
                && p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with("prod_")
        })
        .expect("the drill's backup directory");
    assert!(fs::read_to_string(backup.join("manifest.yml"))
        .unwrap()
        .contains("name: prod"));
    assert!(
        text(&output).contains(
            "Comparing the deployment with the deployment manifest saved with the backup"
        ),
        "{}",
        text(&output)
    );
    assert_no_bosh_user_left(&director, &[&prod, &dr]);
}
