//! Smoke tests of the BOSH Director stand-in (`integration/director/director.py` through
//! `cairn_testbed::director::Director`), with `curl` and `ssh` only. They need root, like the
//! test bed.

use std::fmt::Write as _;
use std::fs;
use std::path::Path;
use std::process::{Command, Output};
use std::thread;
use std::time::{Duration, Instant};

use cairn_testbed::director::{
    Auth, DeploymentSpec, Director, DirectorClient, DirectorOptions, DEFAULT_CLIENT_ID,
    DEFAULT_CLIENT_SECRET,
};
use cairn_testbed::{TestBed, TestHost};
use serde_json::{json, Value};

/// An HTTP response as curl saw it.
#[derive(Debug)]
struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }
}

/// What a request carries besides its method and URL.
#[derive(Default)]
struct Request<'a> {
    bearer: Option<&'a str>,
    basic: Option<(&'a str, &'a str)>,
    json_body: Option<&'a str>,
    form_body: Option<&'a str>,
    range: Option<&'a str>,
}

fn parse_curl_output(output: &Output) -> Response {
    assert!(
        output.status.success(),
        "curl failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("no header block");
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .expect("no status line");
    let headers = lines
        .filter_map(|l| l.split_once(": "))
        .map(|(n, v)| (n.to_owned(), v.trim().to_owned()))
        .collect();
    Response {
        status,
        headers,
        body: body.to_owned(),
    }
}

fn curl_args(ca: &Path, method: &str, url: &str, request: &Request<'_>) -> Vec<String> {
    let mut args: Vec<String> = ["-sS", "-i", "-H", "Expect:", "--max-time", "20", "--cacert"]
        .into_iter()
        .map(str::to_owned)
        .collect();
    args.push(ca.display().to_string());
    args.extend(["-X".to_owned(), method.to_owned()]);
    if let Some(token) = request.bearer {
        args.extend(["-H".to_owned(), format!("Authorization: bearer {token}")]);
    }
    if let Some((user, password)) = request.basic {
        args.extend(["-u".to_owned(), format!("{user}:{password}")]);
    }
    if let Some(body) = request.json_body {
        args.extend([
            "-H".to_owned(),
            "Content-Type: application/json".to_owned(),
            "--data-binary".to_owned(),
            body.to_owned(),
        ]);
    }
    if let Some(body) = request.form_body {
        args.extend(["--data".to_owned(), body.to_owned()]);
    }
    if let Some(range) = request.range {
        args.extend(["-H".to_owned(), format!("Range: {range}")]);
    }
    args.push(url.to_owned());
    args
}

/// A request from this machine (the root namespace).
fn curl(director: &Director, method: &str, url: &str, request: &Request<'_>) -> Response {
    let output = Command::new("curl")
        .args(curl_args(&director.ca_cert_path(), method, url, request))
        .output()
        .unwrap();
    parse_curl_output(&output)
}

/// A request from inside a test-bed host (as from a jumpbox).
fn curl_from(bed: &TestBed, host: &TestHost, director: &Director, url: &str) -> Response {
    let args = curl_args(&director.ca_cert_path(), "GET", url, &Request::default());
    let quoted: Vec<String> = args
        .iter()
        .map(|a| format!("'{}'", a.replace('\'', r"'\''")))
        .collect();
    let output = bed
        .exec(host, &format!("curl {}", quoted.join(" ")))
        .unwrap();
    parse_curl_output(&output)
}

fn token(director: &Director, id: &str, secret: &str) -> Value {
    let response = curl(
        director,
        "POST",
        &format!("{}/oauth/token", director.uaa_url().unwrap()),
        &Request {
            basic: Some((id, secret)),
            form_body: Some("grant_type=client_credentials"),
            ..Request::default()
        },
    );
    assert_eq!(response.status, 200, "{response:?}");
    response.json()
}

fn admin_token(director: &Director) -> String {
    token(director, DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET)["access_token"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// The task id of a 302 to `/tasks/<id>`; the Location has no port, like a real Director's.
fn task_of_redirect(director: &Director, response: &Response) -> u64 {
    assert_eq!(response.status, 302, "{response:?}");
    let location = response.header("Location").expect("no Location");
    let id = location
        .strip_prefix(&format!("https://{}/tasks/", director.address()))
        .unwrap_or_else(|| panic!("unexpected Location {location}"));
    id.parse().unwrap()
}

/// Polls the task until it is done or failed; returns it and the states seen.
fn wait_for_task(director: &Director, token: &str, id: u64) -> (Value, Vec<String>) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut states: Vec<String> = Vec::new();
    loop {
        let response = curl(
            director,
            "GET",
            &format!("{}/tasks/{id}", director.url()),
            &Request {
                bearer: Some(token),
                ..Request::default()
            },
        );
        assert_eq!(response.status, 200, "{response:?}");
        let task = response.json();
        let state = task["state"].as_str().unwrap().to_owned();
        if states.last() != Some(&state) {
            states.push(state.clone());
        }
        if state != "queued" && state != "processing" {
            return (task, states);
        }
        assert!(Instant::now() < deadline, "task {id} still {state}");
        thread::sleep(Duration::from_millis(50));
    }
}

fn task_output(director: &Director, token: &str, id: u64, kind: &str) -> Response {
    curl(
        director,
        "GET",
        &format!("{}/tasks/{id}/output?type={kind}", director.url()),
        &Request {
            bearer: Some(token),
            ..Request::default()
        },
    )
}

fn ssh_request(director: &Director, token: &str, deployment: &str, body: &Value) -> u64 {
    let response = curl(
        director,
        "POST",
        &format!("{}/deployments/{deployment}/ssh", director.url()),
        &Request {
            bearer: Some(token),
            json_body: Some(&body.to_string()),
            ..Request::default()
        },
    );
    task_of_redirect(director, &response)
}

/// `ssh -i key user@address command`, pinning `host_key` (`authorized_keys` format).
fn ssh_as(
    dir: &Path,
    key: &Path,
    user: &str,
    address: &str,
    host_key: &str,
    command: &str,
) -> Output {
    let known_hosts = dir.join(format!("known_hosts-{address}"));
    fs::write(&known_hosts, format!("{address} {host_key}\n")).unwrap();
    Command::new("ssh")
        .args([
            "-F",
            "/dev/null",
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "BatchMode=yes",
        ])
        .arg("-i")
        .arg(key)
        .arg("-o")
        .arg(format!("UserKnownHostsFile={}", known_hosts.display()))
        .args(["-o", "StrictHostKeyChecking=yes", "-o", "ConnectTimeout=5"])
        .args(["-o", "LogLevel=ERROR"])
        .arg(format!("{user}@{address}"))
        .arg(command)
        .output()
        .unwrap()
}

/// A fresh RSA key pair like the one bbr generates, in `dir`; returns the private key path
/// and the public key line.
fn rsa_key(dir: &Path) -> (std::path::PathBuf, String) {
    let key = dir.join("bosh-ssh-key");
    let output = Command::new("ssh-keygen")
        .args(["-q", "-t", "rsa", "-b", "2048", "-N", "", "-C", "", "-f"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let public = fs::read_to_string(key.with_extension("pub")).unwrap();
    (key, public)
}

/// `bosh_` and 15 hex digits (bosh-cli's 20 characters), different for every call.
fn bosh_user() -> String {
    let mut bytes = [0u8; 8];
    std::io::Read::read_exact(&mut fs::File::open("/dev/urandom").unwrap(), &mut bytes).unwrap();
    let hex = bytes.iter().fold(String::new(), |mut hex, b| {
        let _ = write!(hex, "{b:02x}");
        hex
    });
    format!("bosh_{}", &hex[..15])
}

fn setup_body(deployment: &str, group: &str, user: &str, public_key: &str) -> Value {
    json!({
        "command": "setup",
        "deployment_name": deployment,
        "target": {"job": group, "indexes": [], "ids": []},
        "params": {"user": user, "password": "p", "public_key": public_key},
    })
}

fn cleanup_body(deployment: &str, group: &str, id: &str, user: &str) -> Value {
    json!({
        "command": "cleanup",
        "deployment_name": deployment,
        "target": {"job": group, "indexes": [id], "ids": [id]},
        "params": {"user_regex": format!("^{user}")},
    })
}

#[test]
#[allow(clippy::too_many_lines)] // one scenario, in order
fn uaa_director_serves_bbr_and_manages_ssh_users() {
    cairn_testbed::require_root!();
    let bed = TestBed::start(&[]).unwrap();
    let mut options = DirectorOptions::new(&bed);
    options.clients.push(DirectorClient::restricted(
        "team-client",
        "team-secret",
        &["db"],
    ));
    options.deployments.push(
        DeploymentSpec::new("shop", &bed)
            .release("app", "shop-release")
            .backup_one_restore_all("files"),
    );
    options
        .deployments
        .push(DeploymentSpec::new("db", &bed).groups(&["database"]));
    let director = Director::start(&options).unwrap();
    let bridge = bed.bridge_address().unwrap();
    assert_eq!(director.address(), bridge);
    assert!(director.url().starts_with(&format!("https://{bridge}:")));
    assert!(director
        .ca_cert_pem()
        .starts_with("-----BEGIN CERTIFICATE-----"));
    let url = director.url();

    // /info without credentials.
    let info = curl(
        &director,
        "GET",
        &format!("{url}/info"),
        &Request::default(),
    );
    assert_eq!(info.status, 200, "{info:?}");
    let info = info.json();
    assert_eq!(info["user_authentication"]["type"], "uaa");
    assert_eq!(
        info["user_authentication"]["options"]["url"],
        director.uaa_url().unwrap()
    );
    assert_eq!(info["uuid"], director.uuid());
    assert!(info["version"].as_str().unwrap().starts_with("281.0.0"));

    // UAA: wrong secret, then a token.
    let bad = curl(
        &director,
        "POST",
        &format!("{}/oauth/token", director.uaa_url().unwrap()),
        &Request {
            basic: Some((DEFAULT_CLIENT_ID, "wrong")),
            form_body: Some("grant_type=client_credentials"),
            ..Request::default()
        },
    );
    assert_eq!(bad.status, 401);
    assert_eq!(
        bad.json(),
        json!({"error": "unauthorized", "error_description": "Bad credentials"})
    );
    let grant = token(&director, DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET);
    assert_eq!(grant["token_type"], "bearer");
    assert_eq!(grant["expires_in"], 600);
    assert_eq!(grant["scope"], "bosh.admin");
    assert!(grant["jti"].is_string());
    let admin = grant["access_token"].as_str().unwrap().to_owned();
    let as_admin = Request {
        bearer: Some(&admin),
        ..Request::default()
    };

    // Without credentials, and for a deployment that does not exist.
    let anonymous = curl(
        &director,
        "GET",
        &format!("{url}/deployments"),
        &Request::default(),
    );
    assert_eq!(anonymous.status, 401);
    assert_eq!(anonymous.body, "Not authorized: '/deployments'\n");
    let missing = curl(
        &director,
        "GET",
        &format!("{url}/deployments/nope"),
        &as_admin,
    );
    assert_eq!(missing.status, 404);
    assert_eq!(
        missing.json(),
        json!({"code": 70000, "description": "Deployment 'nope' doesn't exist"})
    );

    // Deployments and manifest.
    let deployments = curl(&director, "GET", &format!("{url}/deployments"), &as_admin).json();
    let names: Vec<&str> = deployments
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["db", "shop"]);
    assert_eq!(deployments[1]["cloud_config"], "none");
    let manifest = curl(
        &director,
        "GET",
        &format!("{url}/deployments/shop"),
        &as_admin,
    )
    .json();
    let manifest = manifest["manifest"].as_str().unwrap();
    assert!(manifest.contains("name: shop\n"), "{manifest}");
    assert!(
        manifest.contains("- name: app\n  instances: 2\n"),
        "{manifest}"
    );
    assert!(
        manifest.contains("  - name: app\n    release: shop-release\n"),
        "{manifest}"
    );
    assert!(
        manifest.contains(
            "  - name: files\n    release: files-release\n    properties:\n      bbr:\n        backup_one_restore_all: true\n"
        ),
        "{manifest}"
    );

    // A client restricted to "db" sees only it and is refused "shop" like BOSH does.
    let team = token(&director, "team-client", "team-secret")["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let as_team = Request {
        bearer: Some(&team),
        ..Request::default()
    };
    let visible = curl(&director, "GET", &format!("{url}/deployments"), &as_team).json();
    assert_eq!(visible.as_array().unwrap().len(), 1);
    assert_eq!(visible[0]["name"], "db");
    assert_eq!(visible[0]["teams"], json!(["team-client"]));
    let refused = curl(
        &director,
        "GET",
        &format!("{url}/deployments/shop"),
        &as_team,
    );
    assert_eq!(refused.status, 401);
    let uuid = director.uuid();
    assert_eq!(
        refused.json(),
        json!({"code": 600_000, "description": format!(
            "Require one of the scopes: bosh.admin, bosh.{uuid}.admin, bosh.read, bosh.{uuid}.read"
        )})
    );

    // VMs: a task to poll.
    let vms = curl(
        &director,
        "GET",
        &format!("{url}/deployments/shop/vms?format=full"),
        &as_admin,
    );
    let task = task_of_redirect(&director, &vms);
    let (done, states) = wait_for_task(&director, &admin, task);
    assert_eq!(done["state"], "done");
    assert_eq!(done["description"], "retrieve vm-stats");
    assert_eq!(done["deployment"], "shop");
    assert_eq!(done["user"], DEFAULT_CLIENT_ID);
    // Polled until done through the task's states (how many are seen depends on the load).
    assert_eq!(
        states.last().map(String::as_str),
        Some("done"),
        "{states:?}"
    );
    assert!(
        states[..states.len() - 1]
            .iter()
            .all(|s| s == "queued" || s == "processing"),
        "{states:?}"
    );
    let result = task_output(&director, &admin, task, "result");
    assert_eq!(result.status, 200);
    let vms: Vec<Value> = result
        .body
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(vms.len(), 3);
    for vm in &vms {
        let group = vm["job_name"].as_str().unwrap();
        let index = u32::try_from(vm["index"].as_u64().unwrap()).unwrap();
        let instance = director.instance("shop", group, index);
        assert_eq!(vm["id"], instance.id);
        assert_eq!(vm["ips"], json!([bed.host(group, index).address]));
        assert_eq!(vm["bootstrap"], index == 0);
        assert_eq!(vm["job_state"], "running");
    }
    // No events for a vm-stats task: a ranged read is unsatisfiable, as bosh-cli expects.
    let events = curl(
        &director,
        "GET",
        &format!("{url}/tasks/{task}/output?type=event"),
        &Request {
            bearer: Some(&admin),
            range: Some("bytes=0-"),
            ..Request::default()
        },
    );
    assert_eq!(events.status, 416, "{events:?}");

    // SSH setup for the app group: a real user on app/0 and app/1 only.
    let user = bosh_user();
    let (key, public_key) = rsa_key(bed.dir());
    let setup = ssh_request(
        &director,
        &admin,
        "shop",
        &setup_body("shop", "app", &user, &public_key),
    );
    let (done, _) = wait_for_task(&director, &admin, setup);
    assert_eq!(done["state"], "done", "{done}");
    let hosts: Value =
        serde_json::from_str(&task_output(&director, &admin, setup, "result").body).unwrap();
    let hosts = hosts.as_array().unwrap();
    assert_eq!(hosts.len(), 2);
    for (entry, index) in hosts.iter().zip([0, 1]) {
        let host = bed.host("app", index);
        assert_eq!(entry["status"], "success");
        assert_eq!(entry["command"], "setup");
        assert_eq!(entry["job"], "app");
        assert_eq!(entry["index"], index);
        assert_eq!(entry["id"], director.instance("shop", "app", index).id);
        assert_eq!(entry["ip"], host.address);
        let host_key = entry["host_public_key"].as_str().unwrap();
        assert_eq!(
            host_key,
            fs::read_to_string(host.dir.join("ssh_host_ed25519_key.pub"))
                .unwrap()
                .trim()
        );
        let login = ssh_as(
            bed.dir(),
            &key,
            &user,
            &host.address,
            host_key,
            "sudo -n true && id -un",
        );
        assert!(
            login.status.success(),
            "login as {user} on {}: {login:?}",
            host.name()
        );
        assert_eq!(String::from_utf8_lossy(&login.stdout).trim(), user);
        assert_eq!(director.bosh_users_on(host), std::slice::from_ref(&user));
    }
    assert!(director.bosh_accounts().contains(&user));
    let database = bed.host("database", 0);
    assert!(director.bosh_users_on(database).is_empty());
    let database_key = fs::read_to_string(database.dir.join("ssh_host_ed25519_key.pub")).unwrap();
    let refused = ssh_as(
        bed.dir(),
        &key,
        &user,
        &database.address,
        database_key.trim(),
        "true",
    );
    assert!(!refused.status.success(), "{user} logged in on database/0");

    // Cleanup, one instance at a time as bbr does (without waiting for the task).
    for index in [0, 1] {
        let id = director.instance("shop", "app", index).id.clone();
        let cleanup = ssh_request(
            &director,
            &admin,
            "shop",
            &cleanup_body("shop", "app", &id, &user),
        );
        let (done, _) = wait_for_task(&director, &admin, cleanup);
        assert_eq!(done["state"], "done", "{done}");
        assert!(director.bosh_users_on(bed.host("app", index)).is_empty());
        // The account goes with the last folder.
        assert_eq!(director.bosh_accounts().contains(&user), index == 0);
    }
    let app0 = bed.host("app", 0);
    let gone = ssh_as(
        bed.dir(),
        &key,
        &user,
        &app0.address,
        fs::read_to_string(app0.dir.join("ssh_host_ed25519_key.pub"))
            .unwrap()
            .trim(),
        "true",
    );
    assert!(!gone.status.success(), "{user} can still log in");
    assert_eq!(director.created_accounts(), std::slice::from_ref(&user));

    // The log: who asked what, from where.
    let requests = director.requests();
    assert!(
        requests.iter().all(|r| r.client_ip == bridge),
        "{requests:?}"
    );
    let cleanups: Vec<_> = requests
        .iter()
        .filter(|r| r.method == "POST" && r.path == "/deployments/shop/ssh")
        .filter(|r| {
            r.note
                .as_deref()
                .is_some_and(|n| n.starts_with("ssh cleanup"))
        })
        .collect();
    assert_eq!(cleanups.len(), 2, "{requests:?}");
    assert!(requests.iter().any(|r| r.path == "/deployments/shop"
        && r.status == 401
        && r.note.as_deref() == Some("forbidden")));
    assert!(requests.iter().any(|r| r.listener == "uaa"
        && r.status == 401
        && r.note.as_deref() == Some("bad-credentials")));
}

#[test]
fn expired_tokens_are_refused_and_renewed() {
    cairn_testbed::require_root!();
    let bed = TestBed::start(&[("app", 0, &["app"])]).unwrap();
    let mut options = DirectorOptions::new(&bed);
    options.token_lifetime = Duration::from_millis(1500);
    options.deployments.push(DeploymentSpec::new("shop", &bed));
    let director = Director::start(&options).unwrap();
    let url = format!("{}/deployments", director.url());

    let first = admin_token(&director);
    let ok = curl(
        &director,
        "GET",
        &url,
        &Request {
            bearer: Some(&first),
            ..Request::default()
        },
    );
    assert_eq!(ok.status, 200, "{ok:?}");
    thread::sleep(Duration::from_millis(1700));
    let expired = curl(
        &director,
        "GET",
        &url,
        &Request {
            bearer: Some(&first),
            ..Request::default()
        },
    );
    assert_eq!(expired.status, 401);
    assert_eq!(expired.body, "Not authorized: '/deployments'\n");
    assert_eq!(
        expired.header("WWW-Authenticate"),
        Some("Basic realm=\"BOSH Director\"")
    );
    let renewed = admin_token(&director);
    assert_ne!(renewed, first);
    let ok = curl(
        &director,
        "GET",
        &url,
        &Request {
            bearer: Some(&renewed),
            ..Request::default()
        },
    );
    assert_eq!(ok.status, 200);

    let notes: Vec<(u16, Option<String>)> = director
        .requests()
        .into_iter()
        .filter(|r| r.listener == "director")
        .map(|r| (r.status, r.note))
        .collect();
    assert_eq!(
        notes,
        [
            (200, None),
            (401, Some("token-expired".to_owned())),
            (200, None)
        ]
    );
    // A token the UAA never issued.
    let forged = curl(
        &director,
        "GET",
        &url,
        &Request {
            bearer: Some("a.b.c"),
            ..Request::default()
        },
    );
    assert_eq!(forged.status, 401);
}

#[test]
fn basic_auth_director_and_requests_from_a_host() {
    cairn_testbed::require_root!();
    let bed = TestBed::start(&[("jumpbox", 0, &[]), ("redis", 0, &["redis-server"])]).unwrap();
    let mut options = DirectorOptions::new(&bed);
    options.auth = Auth::Basic;
    options
        .deployments
        .push(DeploymentSpec::new("redis", &bed).groups(&["redis"]));
    let director = Director::start(&options).unwrap();
    assert_eq!(director.uaa_url(), None);
    let url = director.url();

    let info = curl(
        &director,
        "GET",
        &format!("{url}/info"),
        &Request::default(),
    )
    .json();
    assert_eq!(
        info["user_authentication"],
        json!({"type": "basic", "options": {}})
    );
    let good = Request {
        basic: Some((DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET)),
        ..Request::default()
    };
    let listed = curl(&director, "GET", &format!("{url}/deployments"), &good);
    assert_eq!(listed.status, 200, "{listed:?}");
    assert_eq!(listed.json()[0]["name"], "redis");
    let wrong = curl(
        &director,
        "GET",
        &format!("{url}/deployments"),
        &Request {
            basic: Some((DEFAULT_CLIENT_ID, "nope")),
            ..Request::default()
        },
    );
    assert_eq!(wrong.status, 401);

    // The jumpbox reaches the Director on the bridge, and the log shows its address.
    let jumpbox = bed.host("jumpbox", 0);
    let from_jumpbox = curl_from(&bed, jumpbox, &director, &format!("{url}/info"));
    assert_eq!(from_jumpbox.status, 200);
    let last = director.requests().pop().unwrap();
    assert_eq!(
        (last.path.as_str(), last.client_ip.as_str()),
        ("/info", jumpbox.address.as_str())
    );

    // A body that is not bbr's fails its task (strict mode); malformed JSON is a 500 like BOSH.
    let mut body = setup_body("redis", "redis", &bosh_user(), "ssh-rsa AAAA");
    body.as_object_mut().unwrap().remove("deployment_name");
    let response = curl(
        &director,
        "POST",
        &format!("{url}/deployments/redis/ssh"),
        &Request {
            basic: Some((DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET)),
            json_body: Some(&body.to_string()),
            ..Request::default()
        },
    );
    assert_eq!(response.status, 302);
    let location = response.header("Location").unwrap();
    let id: u64 = location.rsplit('/').next().unwrap().parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let task = loop {
        let task = curl(&director, "GET", &format!("{url}/tasks/{id}"), &good).json();
        if task["state"] != "queued" && task["state"] != "processing" {
            break task;
        }
        assert!(Instant::now() < deadline);
        thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(task["state"], "error", "{task}");
    assert!(
        task["result"].as_str().unwrap().contains("deployment_name"),
        "{task}"
    );
    let malformed = curl(
        &director,
        "POST",
        &format!("{url}/deployments/redis/ssh"),
        &Request {
            basic: Some((DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET)),
            json_body: Some("{not json"),
            ..Request::default()
        },
    );
    assert_eq!(malformed.status, 500);
    assert!(director.created_accounts().is_empty());
}

#[test]
fn dropping_the_director_removes_users_it_left_behind() {
    cairn_testbed::require_root!();
    let bed = TestBed::start(&[("app", 0, &["app"])]).unwrap();
    let mut options = DirectorOptions::new(&bed);
    options.deployments.push(DeploymentSpec::new("shop", &bed));
    let director = Director::start(&options).unwrap();
    let admin = admin_token(&director);
    let user = bosh_user();
    let (_key, public_key) = rsa_key(bed.dir());
    let setup = ssh_request(
        &director,
        &admin,
        "shop",
        &setup_body("shop", "app", &user, &public_key),
    );
    let (done, _) = wait_for_task(&director, &admin, setup);
    assert_eq!(done["state"], "done", "{done}");
    let host = bed.host("app", 0);
    assert_eq!(director.bosh_users_on(host), std::slice::from_ref(&user));
    assert!(director.bosh_accounts().contains(&user));

    let dir = director.dir().to_owned();
    drop(director);
    assert!(!cairn_testbed::director::bosh_accounts().contains(&user));
    assert!(!host.vcap_dir.join("bosh_ssh").join(&user).exists());
    assert!(std::env::var_os(cairn_testbed::KEEP_ENV).is_some() || !dir.exists());
}
