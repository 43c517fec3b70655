//! End-to-end: drop-in fidelity of SSH (issue 18): a `BOSH_ALL_PROXY` jumpbox and a director VM
//! seen for the first time are trusted and recorded in known_hosts (OpenSSH's `accept-new`),
//! only a changed key is refused, with the `ssh-keygen -R` command that fixes it; processes
//! recording at once keep every line; an empty jumpbox user is `jumpbox`; the temporary BOSH
//! user has bosh-cli's 20 characters and an RSA key.

use std::fs;
use std::io;
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

use crate::common::*;
use cairn_testbed::director::{
    DeploymentSpec, Director, DirectorOptions, DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET,
};
use cairn_testbed::{TestBed, TestHost};

/// `cairn deployment -t URL -u admin -p SECRET --ca-cert CA <args>` with `BOSH_ALL_PROXY`.
fn deployment_command(director: &Director, work: &Path, proxy: &str, args: &[&str]) -> Command {
    let ca = director.ca_cert_path();
    let mut command = cairn_command_in(work);
    command
        .args(["deployment", "--target", &director.url()])
        .args([
            "--username",
            DEFAULT_CLIENT_ID,
            "--password",
            DEFAULT_CLIENT_SECRET,
        ])
        .arg("--ca-cert")
        .arg(ca)
        .args(args)
        .env("BOSH_ALL_PROXY", proxy);
    command
}

fn show(output: Output) -> Output {
    eprintln!(
        "cairn -> {:?}\n--- stdout\n{}--- stderr\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// A TCP port on 127.0.0.1 that forwards every connection to `target` (changeable later):
/// a jumpbox on a port other than 22, and a way to put another host behind the same address.
struct Forwarder {
    port: u16,
    target: Arc<Mutex<String>>,
}

impl Forwarder {
    fn start(target: &str) -> Forwarder {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let target = Arc::new(Mutex::new(target.to_string()));
        let current = Arc::clone(&target);
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let to = current.lock().unwrap().clone();
                std::thread::spawn(move || pipe(client, &to));
            }
        });
        Forwarder { port, target }
    }

    fn point_to(&self, target: &str) {
        *self.target.lock().unwrap() = target.to_string();
    }
}

fn pipe(client: TcpStream, to: &str) {
    let Ok(server) = TcpStream::connect(to) else {
        return;
    };
    let copy = |mut from: TcpStream, mut into: TcpStream| {
        let _ = io::copy(&mut from, &mut into);
        let _ = into.shutdown(Shutdown::Write);
    };
    let (client_read, server_write) = (client.try_clone().unwrap(), server.try_clone().unwrap());
    let upstream = std::thread::spawn(move || copy(client_read, server_write));
    copy(server, client);
    let _ = upstream.join();
}

/// `SHA256:...` of a test-bed host's key, as `ssh-keygen -l` prints it.
fn fingerprint(host: &TestHost) -> String {
    let output = Command::new("ssh-keygen")
        .arg("-l")
        .arg("-f")
        .arg(host.dir.join("ssh_host_ed25519_key.pub"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.split_whitespace().nth(1).unwrap().to_string()
}

/// The host's public key, `ssh-ed25519 AAAA...` (without its comment).
fn public_key(host: &TestHost) -> String {
    let text = fs::read_to_string(host.dir.join("ssh_host_ed25519_key.pub")).unwrap();
    let mut fields = text.split_whitespace();
    format!("{} {}", fields.next().unwrap(), fields.next().unwrap())
}

/// `cairn director --host VM -u vcap --private-key-path KEY --known-hosts FILE <extra>
/// pre-backup-check` in `work`.
fn director_check(
    work: &Path,
    bed: &TestBed,
    vm: &TestHost,
    known_hosts: &Path,
    extra: &[&str],
) -> Output {
    let key = bed.private_key();
    let mut args = vec![
        "director",
        "--host",
        &vm.address,
        "--username",
        "vcap",
        "--private-key-path",
        key.to_str().unwrap(),
        "--known-hosts",
        known_hosts.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    args.push("pre-backup-check");
    run(work, &args)
}

/// The `ssh-keygen -f ... -R ...` command quoted in backticks in Cairn's error.
fn fix_command(all: &str) -> String {
    let start = all.find("`ssh-keygen -f ").expect("a fix command") + 1;
    let length = all[start..].find('`').unwrap();
    all[start..start + length].to_string()
}

fn run_fix(command: &str) {
    let status = Command::new("sh").args(["-c", command]).output().unwrap();
    assert!(status.status.success(), "{command}: {status:?}");
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// Issue 18 item 1. bbr never refuses a jumpbox: its proxy library key-scans the jumpbox and
/// pins whatever it gets (socks5-proxy `host_key.go` `HostKey.Get`, used by `socks5_proxy.go`
/// `Socks5Proxy.Dialer`), so bbr prints nothing about the key and a fresh CI container works.
/// Cairn does the same on first use and records the key (OpenSSH's accept-new); only a changed
/// key is refused, with OpenSSH's fix command (`ssh-keygen -f FILE -R '[HOST]:PORT'`).
#[test]
fn a_jumpbox_seen_first_is_recorded_and_only_a_changed_key_is_refused() {
    cairn_testbed::require_root!();
    let bed = TestBed::start(&[("app", 0, &["files"]), ("jumpbox", 0, &[])]).expect("test bed");
    let (jumpbox, app) = (bed.host("jumpbox", 0), bed.host("app", 0));
    let mut options = DirectorOptions::new(&bed);
    options
        .deployments
        .push(DeploymentSpec::new("cf", &bed).groups(&["app"]));
    let director = Director::start(&options).expect("director");
    let work = workdir();
    // A fresh container: no ~/.ssh at all.
    let known_hosts = work.root().join("home/.ssh/known_hosts");
    let forwarder = Forwarder::start(&format!("{}:22", jumpbox.address));
    let proxy = format!(
        "ssh+socks5://vcap@127.0.0.1:{}?private-key={}",
        forwarder.port,
        bed.private_key().display()
    );
    let check = || {
        show(
            deployment_command(
                &director,
                work.path(),
                &proxy,
                &["-d", "cf", "pre-backup-check"],
            )
            .arg("--known-hosts")
            .arg(&known_hosts)
            .output()
            .unwrap(),
        )
    };
    let pattern = format!("[127.0.0.1]:{}", forwarder.port);

    let output = check();
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    // bbr's own line (cli/command/deployment_pre_backup_check.go).
    assert!(
        text(&output).contains("Deployment 'cf' can be backed up."),
        "{}",
        text(&output)
    );
    let recorded = format!(
        "WARN - Host key of jumpbox 127.0.0.1 at 127.0.0.1:{} was unknown; trusting it on first use and recording it in {} as '{pattern}': ssh-ed25519 {}",
        forwarder.port,
        known_hosts.display(),
        fingerprint(jumpbox)
    );
    assert!(text(&output).contains(&recorded), "{}", text(&output));
    assert_eq!(
        fs::read_to_string(&known_hosts).unwrap(),
        format!("{pattern} {}\n", public_key(jumpbox))
    );
    assert_eq!(mode(&known_hosts), 0o600);
    assert_eq!(mode(known_hosts.parent().unwrap()), 0o700);

    // Known now: no warning, nothing written.
    let output = check();
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert!(
        !text(&output).contains("trusting it on first use"),
        "{}",
        text(&output)
    );
    assert_eq!(fs::read_to_string(&known_hosts).unwrap().lines().count(), 1);

    // Another machine behind the same address and port: refused, with the exact fix.
    forwarder.point_to(&format!("{}:22", app.address));
    let output = check();
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    let all = text(&output);
    assert!(
        all.contains(&format!(
            "Host key of jumpbox 127.0.0.1 at 127.0.0.1:{} does not match the one recorded in {} (it presented {})",
            forwarder.port,
            known_hosts.display(),
            fingerprint(app)
        )),
        "{all}"
    );
    let fix = fix_command(&all);
    assert_eq!(
        fix,
        format!("ssh-keygen -f {} -R '{pattern}'", known_hosts.display())
    );
    assert!(!all.contains("trusting it on first use"), "{all}");
    assert_eq!(
        fs::read_to_string(&known_hosts).unwrap(),
        format!("{pattern} {}\n", public_key(jumpbox)),
        "a refused key is not recorded"
    );

    // The operator knows the jumpbox was rebuilt: the printed command, then a run that
    // records the new key.
    run_fix(&fix);
    let output = check();
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert!(
        text(&output).contains("trusting it on first use"),
        "{}",
        text(&output)
    );
    assert!(fs::read_to_string(&known_hosts)
        .unwrap()
        .contains(&format!("{pattern} {}\n", public_key(app))));
}

/// Issue 18 item 1, the lock: `--all-deployments` runs up to 10 children at once, each opening
/// its own tunnel and maybe recording the jumpbox. Ten real processes record into one file at
/// once — five the same jumpbox, five a jumpbox each — and every line is there exactly once.
#[test]
fn ten_processes_recording_at_once_keep_every_line_exactly_once() {
    cairn_testbed::require_root!();
    let bed = TestBed::start(&[("jumpbox", 0, &[])]).expect("test bed");
    let jumpbox = bed.host("jumpbox", 0);
    let director = Director::start(&DirectorOptions::new(&bed)).expect("director");
    let work = workdir();
    let known_hosts = work.root().join("known_hosts");
    // An existing file, last line without its newline: kept as it is.
    fs::write(&known_hosts, "# mine\nother.example ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl").unwrap();
    let forwarders: Vec<Forwarder> = (0..5)
        .map(|_| Forwarder::start(&format!("{}:22", jumpbox.address)))
        .collect();
    let key = bed.private_key();
    let mut proxies: Vec<String> = forwarders
        .iter()
        .map(|f| {
            format!(
                "ssh+socks5://vcap@127.0.0.1:{}?private-key={}",
                f.port,
                key.display()
            )
        })
        .collect();
    proxies.extend((0..5).map(|_| {
        format!(
            "ssh+socks5://vcap@{}:22?private-key={}",
            jumpbox.address,
            key.display()
        )
    }));
    let children: Vec<_> = proxies
        .iter()
        .map(|proxy| {
            // No such deployment: each run opens the tunnel (recording the key), reaches the
            // Director through it and stops there.
            deployment_command(
                &director,
                work.path(),
                proxy,
                &["-d", "nosuch", "pre-backup-check"],
            )
            .arg("--known-hosts")
            .arg(&known_hosts)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
        })
        .collect();
    let outputs: Vec<Output> = children
        .into_iter()
        .map(|c| show(c.wait_with_output().unwrap()))
        .collect();
    for output in &outputs {
        assert!(
            !text(output).contains("Cannot use known_hosts"),
            "{}",
            text(output)
        );
        assert!(!text(output).contains("does not match"), "{}", text(output));
        assert!(text(output).contains("nosuch"), "{}", text(output));
    }
    let recorded = outputs
        .iter()
        .filter(|o| text(o).contains("trusting it on first use"))
        .count();
    assert_eq!(
        recorded, 6,
        "one line per distinct host, written by exactly one process"
    );
    let file = fs::read_to_string(&known_hosts).unwrap();
    let key_line = public_key(jumpbox);
    let mut expected = vec![
        "# mine".to_string(),
        "other.example ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl".to_string(),
        format!("{} {key_line}", jumpbox.address),
    ];
    expected.extend(
        forwarders
            .iter()
            .map(|f| format!("[127.0.0.1]:{} {key_line}", f.port)),
    );
    let mut lines: Vec<String> = file.lines().map(str::to_string).collect();
    lines.sort();
    expected.sort();
    assert_eq!(lines, expected, "{file}");
    assert!(file.ends_with('\n'));
}

/// Issue 18 item 6: `cairn director` after `create-env`. bbr's director mode checks no host
/// key (bbr `ssh/connection.go` with `ssh.InsecureIgnoreHostKey()`); Cairn records the
/// director's key on first use and refuses only a changed one, printing the exact fix
/// (`ssh-keygen -f FILE -R HOST`, port 22). `Director can be backed up.` is bbr's line
/// (cli/command/director_pre_backup_check.go).
#[test]
fn a_director_vm_is_recorded_on_first_use_and_a_rebuilt_one_gets_the_fix_command() {
    cairn_testbed::require_root!();
    let bed = TestBed::start(&[("bosh", 0, &["database"]), ("other", 0, &[])]).expect("test bed");
    let (vm, other) = (bed.host("bosh", 0), bed.host("other", 0));
    let work = workdir();
    let known_hosts = work.root().join("ssh/known_hosts");
    let check = || director_check(work.path(), &bed, vm, &known_hosts, &[]);
    let output = check();
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("Director can be backed up.\n"),
        "{}",
        text(&output)
    );
    assert!(
        text(&output).contains(&format!(
            "WARN - Host key of bosh/0 at {}:22 was unknown; trusting it on first use and recording it in {} as '{}': ssh-ed25519 {}",
            vm.address,
            known_hosts.display(),
            vm.address,
            fingerprint(vm)
        )),
        "{}",
        text(&output)
    );
    assert_eq!(
        fs::read_to_string(&known_hosts).unwrap(),
        format!("{} {}\n", vm.address, public_key(vm))
    );

    // create-env rebuilt the VM: another key at the same address.
    fs::write(
        &known_hosts,
        format!("{} {}\n", vm.address, public_key(other)),
    )
    .unwrap();
    let output = check();
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    let all = text(&output);
    assert!(
        all.contains(&format!("(it presented {})", fingerprint(vm))),
        "{all}"
    );
    let fix = fix_command(&all);
    assert_eq!(
        fix,
        format!("ssh-keygen -f {} -R {}", known_hosts.display(), vm.address)
    );
    run_fix(&fix);
    let output = check();
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert_eq!(
        fs::read_to_string(&known_hosts).unwrap(),
        format!("{} {}\n", vm.address, public_key(vm))
    );

    // A file that cannot be written (say, mounted read-only): trusted for this run anyway, as
    // OpenSSH's accept-new does ("Failed to add the host to the list of known hosts").
    let unwritable = known_hosts.join("known_hosts");
    let output = director_check(work.path(), &bed, vm, &unwritable, &[]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert!(
        text(&output).contains(&format!(
            "trusting it on first use and not recording it: Cannot write to known_hosts file `{}`",
            unwritable.display()
        )),
        "{}",
        text(&output)
    );
}

/// Issue 18, "an empty proxy user defaults to `jumpbox`": bosh-utils
/// `httpclient/socksify.go` passes the URL's user ("" when absent) to socks5-proxy, whose
/// `Socks5Proxy.Dialer` (`socks5_proxy.go`) and `HostKey.Get` (`host_key.go`) log in as
/// `"jumpbox"` when it is empty. The test bed has no `jumpbox` account, so the jumpbox's sshd
/// log shows which user was tried.
#[test]
fn a_proxy_url_without_a_user_logs_in_as_jumpbox() {
    cairn_testbed::require_root!();
    let bed = TestBed::start(&[("jumpbox", 0, &[])]).expect("test bed");
    let jumpbox = bed.host("jumpbox", 0);
    let director = Director::start(&DirectorOptions::new(&bed)).expect("director");
    let work = workdir();
    let proxy = format!(
        "ssh+socks5://{}:22?private-key={}",
        jumpbox.address,
        bed.private_key().display()
    );
    let output = show(
        deployment_command(
            &director,
            work.path(),
            &proxy,
            &["-d", "cf", "pre-backup-check"],
        )
        .arg("--known-hosts")
        .arg(bed.known_hosts())
        .output()
        .unwrap(),
    );
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert!(
        text(&output).contains(&format!(
            "SSH authentication as `jumpbox` failed on jumpbox {}",
            jumpbox.address
        )),
        "{}",
        text(&output)
    );
    let log = fs::read_to_string(jumpbox.dir.join("sshd.log")).unwrap();
    assert!(
        log.lines()
            .any(|l| l.contains("Invalid user jumpbox ") || l.contains("User jumpbox ")),
        "{log}"
    );
}

/// Issue 18 item 3: the temporary user is `bosh_` and 15 hex digits, 20 characters (bosh-cli
/// `director/ssh_opts.go` `NewSSHOpts`: "username must be <= 20 for Windows"), and its key is
/// RSA as bbr's (`rsa.GenerateKey(rand.Reader, 2048)` there; Cairn 3072 bits, see
/// docs/architecture.md): the fake Director refuses any other name, and the instance's sshd
/// logs the key type it accepted.
#[test]
fn the_temporary_user_has_bosh_cli_s_20_characters_and_an_rsa_key() {
    cairn_testbed::require_root!();
    let bed = TestBed::start(&[("app", 0, &["files"])]).expect("test bed");
    let mut options = DirectorOptions::new(&bed);
    options.deployments.push(DeploymentSpec::new("cf", &bed));
    let director = Director::start(&options).expect("director");
    let work = workdir();
    let ca = director.ca_cert_path();
    let output = run(
        work.path(),
        &[
            "deployment",
            "--target",
            &director.url(),
            "--username",
            DEFAULT_CLIENT_ID,
            "--password",
            DEFAULT_CLIENT_SECRET,
            "--ca-cert",
            ca.to_str().unwrap(),
            "-d",
            "cf",
            "pre-backup-check",
        ],
    );
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let users = director.created_accounts();
    assert_eq!(users.len(), 1, "{users:?}");
    let user = &users[0];
    assert_eq!(user.len(), 20, "{user}");
    assert!(user.starts_with("bosh_"), "{user}");
    assert!(
        user[5..]
            .chars()
            .all(|c| matches!(c, '0'..='9' | 'a'..='f')),
        "{user}"
    );
    let notes: Vec<String> = director
        .requests()
        .into_iter()
        .filter_map(|r| r.note)
        .collect();
    assert!(
        notes
            .iter()
            .any(|n| n.starts_with(&format!("ssh setup user={user}"))),
        "{notes:?}"
    );
    assert!(
        notes
            .iter()
            .any(|n| n.starts_with(&format!("ssh cleanup user_regex=^{user}"))),
        "{notes:?}"
    );
    let log = fs::read_to_string(bed.host("app", 0).dir.join("sshd.log")).unwrap();
    assert!(
        log.lines()
            .any(|l| l.contains(&format!("Accepted publickey for {user} "))
                && l.contains(": RSA SHA256:")),
        "{log}"
    );
}

/// `cairn director --host-key` pins the VM's key (as an inventory's `host_key` does): given as
/// the key itself or as a `.pub` file; the right key passes without touching known_hosts, any
/// other key is refused, a bad value is a one-line usage error (issue 24, item 6).
#[test]
fn a_director_vm_key_can_be_pinned_with_host_key() {
    cairn_testbed::require_root!();
    let bed = TestBed::start(&[("bosh", 0, &["database"]), ("other", 0, &[])]).expect("test bed");
    let (vm, other) = (bed.host("bosh", 0), bed.host("other", 0));
    let work = workdir();
    let known_hosts = work.root().join("ssh/known_hosts");
    let check = |host_key: &str| {
        director_check(
            work.path(),
            &bed,
            vm,
            &known_hosts,
            &["--host-key", host_key],
        )
    };
    // The key itself, and the VM's own .pub file (with its comment).
    for pinned in [
        public_key(vm),
        vm.dir
            .join("ssh_host_ed25519_key.pub")
            .to_string_lossy()
            .into_owned(),
    ] {
        let output = check(&pinned);
        assert_eq!(output.status.code(), Some(0), "{}", text(&output));
        assert!(
            String::from_utf8_lossy(&output.stdout).contains("Director can be backed up.\n"),
            "{}",
            text(&output)
        );
    }
    assert!(
        !known_hosts.exists(),
        "a pinned key records nothing in known_hosts"
    );

    // Another host's key: refused, naming the VM and the key it presented.
    let output = check(&public_key(other));
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    let all = text(&output);
    assert!(all.contains(&fingerprint(vm)), "{all}");
    assert!(!all.contains("Director can be backed up."), "{all}");

    // Neither a key nor a readable file: one line naming the flag, exit 1, nothing reached.
    let output = check("/nonexistent/key.pub");
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(
            "--host-key /nonexistent/key.pub: not an OpenSSH public key, and not a readable file"
        ),
        "{stderr}"
    );
    let output = check("ssh-ed25519 not-base64");
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert!(
        String::from_utf8_lossy(&output.stderr)
            .contains("--host-key ssh-ed25519 not-base64: not an OpenSSH public key"),
        "{}",
        text(&output)
    );
}
