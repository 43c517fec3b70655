//! `BOSH_ALL_PROXY=socks5://USER:PASSWORD@HOST:PORT`: a SOCKS5 proxy that asks for a login
//! (RFC 1929), here pproxy (integration/socks/pproxy.sh), a real SOCKS5 server independent of
//! the `tokio-socks` client Cairn uses. Every SSH connection of the run goes through it; a
//! wrong or missing login fails the run with one line naming the proxy, never the password.

use std::fs;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;
use cairn_testbed::TestBed;

// pproxy's `#USER:PASSWORD` cannot hold `@` or a second `:` (it then asks for no login at
// all); the percent-decoding of such logins is unit-tested in `remote::all_proxy`.
const USER: &str = "alice";
const PASSWORD: &str = "s3cret";

/// pproxy listening on a free loopback port, asking for [`USER`] and [`PASSWORD`]; its log
/// (one `socks5 CLIENT -> DESTINATION` line per connection it carried) in `log`.
struct Pproxy {
    child: Child,
    port: u16,
}

impl Pproxy {
    fn start(log: &Path) -> Pproxy {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("integration/socks/pproxy.sh");
        let installed = Command::new("bash")
            .arg(&script)
            .arg("install")
            .status()
            .unwrap();
        assert!(installed.success(), "{} install failed", script.display());
        let binary = cairn_testbed::stores::tools_dir().join("pproxy-venv/bin/pproxy");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let output = fs::File::create(log).unwrap();
        let child = Command::new(binary)
            .args([
                "-l",
                &format!("socks5://127.0.0.1:{port}#{USER}:{PASSWORD}"),
                "-v",
            ])
            .stdin(Stdio::null())
            .stdout(output.try_clone().unwrap())
            .stderr(output)
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "pproxy never listened");
            std::thread::sleep(Duration::from_millis(50));
        }
        Pproxy { child, port }
    }

    /// `BOSH_ALL_PROXY` for it with this login.
    fn url(&self, login: Option<(&str, &str)>) -> String {
        match login {
            Some((user, password)) => format!("socks5://{user}:{password}@127.0.0.1:{}", self.port),
            None => format!("socks5://127.0.0.1:{}", self.port),
        }
    }
}

impl Drop for Pproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn cairn_through(bed: &TestBed, work: &Path, proxy: &str, args: &[&str]) -> Output {
    let inventory = bed.inventory();
    let output = cairn_command_in(work)
        .args(["deployment", "--inventory", inventory.to_str().unwrap()])
        .args(args)
        .env("BOSH_ALL_PROXY", proxy)
        .env_remove("no_proxy")
        .env_remove("NO_PROXY")
        .output()
        .expect("cairn runs");
    eprintln!(
        "cairn {args:?} via {proxy} -> {:?}\n--- stdout\n{}--- stderr\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

#[test]
fn a_socks5_proxy_that_asks_for_a_login_carries_the_run_with_it_and_refuses_it_without() {
    cairn_testbed::require_root!();
    let bed = TestBed::start(&[]).expect("test bed");
    let work = workdir();
    let log = work.root().join("pproxy.log");
    let proxy = Pproxy::start(&log);

    // First (pproxy trusts an address that logged in once, for a month by default): a wrong
    // password, and no login at all, are refused by the proxy (pproxy hangs up rather than
    // answer), and said in one line.
    for (login, expected) in [
        (
            Some((USER, "guess")),
            "does it accept the user name and password of BOSH_ALL_PROXY?",
        ),
        (
            None,
            "give it in BOSH_ALL_PROXY as socks5://USER:PASSWORD@HOST:PORT",
        ),
    ] {
        let output = cairn_through(&bed, work.path(), &proxy.url(login), &["pre-backup-check"]);
        let all = text(&output);
        assert_eq!(output.status.code(), Some(1), "{all}");
        assert!(all.contains(expected), "{all}");
        assert!(!all.contains("guess") && !all.contains("s3cret"), "{all}");
    }
    let output = cairn_through(
        &bed,
        work.path(),
        &proxy.url(Some((USER, PASSWORD))),
        &["backup", "--artifact-path", work.path().to_str().unwrap()],
    );
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert!(!tars(&backup_dir(work.path())).is_empty());
    // Every instance was reached through the proxy.
    let carried = fs::read_to_string(&log).unwrap();
    for host in bed.hosts() {
        assert!(
            carried.contains(&format!("-> {}:22", host.address)),
            "{} not reached through the proxy:\n{carried}",
            host.name()
        );
    }

    assert_nothing_left(&bed);
}
