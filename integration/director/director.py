#!/usr/bin/env python3
"""A BOSH Director stand-in for Cairn's end-to-end tests (Python 3.11, standard library only).

It serves the part of the BOSH Director API that bbr uses (GET /info, /deployments,
/deployments/<d>, /deployments/<d>/vms?format=full, POST /deployments/<d>/ssh, /tasks/...) over
HTTPS, plus a UAA token endpoint (client_credentials grant), and really creates and removes
the temporary `bosh_<hex>` SSH users on the hosts of a Cairn test bed (integration/testbed.sh).
It is normally started by the Rust wrapper `cairn_testbed::director::Director`; see
integration/README.md ("BOSH Director stand-in") for the behaviour and the request log.

Usage:  python3 integration/director/director.py --config CONFIG.json
Must run as root (useradd/userdel, `testbed.sh exec`).

CONFIG.json (all paths absolute; "?" marks optional keys, with their defaults):
{
  "name": "cairn-testbed-director",             ? director name in /info
  "uuid": "<uuid>",                             ? director uuid (used in scope names)
  "version": "281.0.0 (00000000)",              ? /info version
  "cpi": "testbed_cpi",                         ? /info cpi
  "address": "10.199.K.1",                      IP to listen on (both listeners); never 0.0.0.0
  "port": 25555,                                Director port
  "port_fallback": true,                        ? if `port` is taken, use an ephemeral port
  "tls_cert": "/path/server.pem",               server certificate chain (SAN = address)
  "tls_key": "/path/server.key",
  "auth": "uaa",                                "uaa" or "basic"
  "uaa_port": 8443,                             ? UAA port (uaa only); same fallback rule
  "token_lifetime_seconds": 600,                ? lifetime of UAA access tokens (> 0, may be fractional)
  "reported_expires_in": null,                  ? an integer UAA reports as `expires_in` instead of the
                                                  lifetime (any size: 18446744073709551615 is u64::MAX)
  "clients": [                                  UAA clients, or basic-auth users
    {"id": "admin", "secret": "s", "deployments": "all"},
    {"id": "team", "secret": "t", "deployments": ["redis"]}
  ],
  "task_duration_seconds": 0.3,                 ? a task is queued for the first third, then
                                                  processing, then done (or error)
  "redirect_location": "bosh",                  ? Location of the 302 to /tasks/<id>:
                                                  "bosh": https://<Host header without port>/tasks/<id>
                                                  (what a Director behind its nginx sends; clients
                                                  must keep their own host:port, as bosh-cli does),
                                                  "absolute": https://<Host header>/tasks/<id>,
                                                  "relative": /tasks/<id>
  "strict_ssh_bodies": true,                    ? an ssh body that differs from bbr's makes the task
                                                  fail (real BOSH would tolerate most differences)
  "default_ssh_options": null,                  ? {"gateway_host": h, "gateway_user": u}: added to
                                                  ssh results, like a Director with that option
  "faults": [                                   ? failures injected into matching requests, for retry
    {"request": "GET /tasks/",                    tests: `request` is "METHOD /path?query" or its start;
     "answer": 503,                                 answer: a status (an nginx-like HTML body), "drop"
     "times": 2,                                    (connection closed without an answer), "reset"
     "listener": "director"}                        (closed with a TCP RST), "drop-after" (the request
  ],                                                is handled, e.g. its task started, then the connection
                                                    is closed without the answer) or "oversized" (a 200
                                                    whose JSON body of "bytes" bytes, default 70 MiB, has
                                                    no Content-Length and ends when the connection
                                                    closes; stops early if the client hangs up); times: how many
                                                    matching requests get it (default 1, -1: all);
                                                    listener: "director" (default) or "uaa". The first
                                                    rule with times left that matches is used.
  "ready_file": "/path/ready",                  written once listening: "port=N\\nuaa_port=M\\n"
  "request_log": "/path/requests.tsv",          one line per request (format below)
  "accounts_log": "/path/accounts.tsv",         "created\\t<user>" before useradd, "deleted\\t<user>"
  "testbed_script": "/path/integration/testbed.sh",
  "deployments": [
    {
      "name": "redis",
      "releases": [{"name": "redis-release", "version": "1.0.0"}],   ? default: one per job release
      "stemcells": [{"name": "bosh-warden-boshlite-ubuntu-jammy-go_agent", "version": "1.0"}],  ?
      "instance_groups": [
        {
          "name": "redis",
          "jobs": [{"name": "redis-server", "release": "redis-release",
                    "properties": {"bbr": {"backup_one_restore_all": true}}}],  properties optional
          "instances": [
            {"index": 0, "id": "<uuid>", "agent_id": "<uuid>", "vm_cid": "vm-<uuid>",
             "address": "10.199.K.10", "az": "z1",
             "testbed_dir": "/tmp/cairn-testbed-...",      the test bed's DIR
             "host_dir": "/tmp/cairn-testbed-.../hosts/redis-0"}
          ]
        }
      ]
    }
  ]
}

Request log (request_log): one line per request or failed TLS handshake, tab-separated:
  <unix time>\\t<listener>\\t<client ip>\\t<method>\\t<path?query>\\t<status>\\t<client id or ->\\t<note or ->
listener is "director" or "uaa"; a failed TLS handshake is logged with method "TLS", path "-",
status 0 and the error as note. Notes: "no-credentials", "bad-credentials", "bad-token",
"token-expired", "forbidden", "no-such-deployment", "ssh setup user=...", "ssh cleanup
user_regex=...", "bad-json", "not-bbr-shape: ...", "token issued jti=...", "fault 503",
"fault drop", "fault reset" (status 0 for these two), "fault drop-after <the request's note>".
"""

import argparse
import base64
import fcntl
import hashlib
import hmac
import json
import os
import re
import secrets
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time
import traceback
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

# Machine-wide lock of the test bed for /etc/passwd changes (see testbed.sh ensure_prerequisites).
PASSWD_LOCK = "/run/cairn-testbed/setup.lock"
# Groups of a BOSH ephemeral SSH user (bosh-agent adds vcap, admin and bosh_sudoers; the
# test bed grants passwordless sudo to bosh_sudoers and creates bosh_sshers like a stemcell).
SSH_USER_GROUPS = ["bosh_sshers", "bosh_sudoers", "vcap"]
BOSH_SSH_DIR = "/var/vcap/bosh_ssh"
BBR_USER = re.compile(r"^bosh_[0-9a-f]{15}$")  # 20 characters, as bosh-cli (Windows limit)


def dumps(value):
    """JSON as Ruby's JSON.generate writes it (no spaces)."""
    return json.dumps(value, separators=(",", ":"))


def truncate(text, length=128):
    """BOSH's task result truncation (JobRunner#truncate)."""
    head = text.strip()[: length + 1]
    if len(head) > length:
        return re.sub(r"\s+?(\S+)?$", "", head) + "..."
    return head


def log(message):
    sys.stderr.write(f"director: {time.strftime('%H:%M:%S')} {message}\n")
    sys.stderr.flush()


def ruby_inspect(value):
    """Ruby (< 3.4) inspect of JSON-like values, for messages BOSH builds from hashes."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{ruby_inspect(k)}=>{ruby_inspect(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(ruby_inspect(v) for v in value) + "]"
    if isinstance(value, RubySymbol):
        return ":" + value.name
    if value is None:
        return "nil"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, str):
        return dumps(value)
    return str(value)


class RubySymbol:
    def __init__(self, name):
        self.name = name


# ---------------------------------------------------------------------------------------------
# YAML (manifests only: dicts, lists, strings, numbers, booleans, null)
# ---------------------------------------------------------------------------------------------

YAML_PLAIN = re.compile(r"^[A-Za-z_][A-Za-z0-9_./+-]*$")
YAML_RESERVED = {"true", "false", "yes", "no", "on", "off", "null", "y", "n", "~"}


def yaml_scalar(value):
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, (int, float)):
        return dumps(value)
    text = str(value)
    if YAML_PLAIN.match(text) and text.lower() not in YAML_RESERVED:
        return text
    return dumps(text)  # a JSON string is a valid YAML double-quoted scalar


def yaml_is_block(value):
    return isinstance(value, (dict, list)) and len(value) > 0


def yaml_inline(value):
    if isinstance(value, dict):
        return "{}"
    if isinstance(value, list):
        return "[]"
    return yaml_scalar(value)


def yaml_lines(value, indent):
    pad = " " * indent
    out = []
    if isinstance(value, dict):
        for key, item in value.items():
            if yaml_is_block(item):
                out.append(f"{pad}{yaml_scalar(str(key))}:")
                out.extend(yaml_lines(item, indent if isinstance(item, list) else indent + 2))
            else:
                out.append(f"{pad}{yaml_scalar(str(key))}: {yaml_inline(item)}")
    elif isinstance(value, list):
        for item in value:
            if yaml_is_block(item):
                sub = yaml_lines(item, indent + 2)
                out.append(pad + "- " + sub[0][indent + 2:])
                out.extend(sub[1:])
            else:
                out.append(f"{pad}- {yaml_inline(item)}")
    else:
        out.append(pad + yaml_inline(value))
    return out


def to_yaml(value):
    return "\n".join(yaml_lines(value, 0)) + "\n"


# ---------------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------------


class ConfigError(Exception):
    pass


class Instance:
    def __init__(self, deployment, group, raw):
        self.deployment = deployment
        self.group = group
        self.index = int(raw["index"])
        self.id = raw["id"]
        self.agent_id = raw.get("agent_id") or str(uuid.uuid4())
        self.vm_cid = raw.get("vm_cid") or f"vm-{uuid.uuid4()}"
        self.address = raw["address"]
        self.az = raw.get("az", "z1")
        self.testbed_dir = raw["testbed_dir"]
        self.host_dir = raw["host_dir"]
        self.bootstrap = False
        self.created_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())

    @property
    def vcap_dir(self):
        return os.path.join(self.host_dir, "vcap")

    @property
    def label(self):
        return f"{self.group.name}/{self.index}"

    def host_public_key(self):
        with open(os.path.join(self.host_dir, "ssh_host_ed25519_key.pub")) as handle:
            return handle.read().strip()


class InstanceGroup:
    def __init__(self, deployment, raw):
        self.name = raw["name"]
        self.jobs = raw.get("jobs", [])
        self.instances = [Instance(deployment, self, i) for i in raw.get("instances", [])]
        self.instances.sort(key=lambda i: i.index)
        if self.instances:
            self.instances[0].bootstrap = True


class Deployment:
    def __init__(self, raw):
        self.name = raw["name"]
        self.groups = [InstanceGroup(self, g) for g in raw.get("instance_groups", [])]
        releases = raw.get("releases")
        if releases is None:
            names = []
            for group in self.groups:
                for job in group.jobs:
                    if job.get("release") and job["release"] not in names:
                        names.append(job["release"])
            releases = [{"name": n, "version": "1.0.0"} for n in names]
        self.releases = releases
        self.stemcells = raw.get(
            "stemcells", [{"name": "bosh-warden-boshlite-ubuntu-jammy-go_agent", "version": "1.0"}]
        )
        self.teams = []  # filled from the clients (see Director.__init__)

    def instances(self):
        return [i for g in self.groups for i in g.instances]

    def manifest(self):
        stemcell = self.stemcells[0] if self.stemcells else {"name": "none", "version": "1"}
        groups = []
        for group in self.groups:
            jobs = []
            for job in group.jobs:
                entry = {"name": job["name"], "release": job.get("release", "")}
                if job.get("properties"):
                    entry["properties"] = job["properties"]
                jobs.append(entry)
            azs = sorted({i.az for i in group.instances}) or ["z1"]
            groups.append(
                {
                    "name": group.name,
                    "instances": len(group.instances),
                    "azs": azs,
                    "jobs": jobs,
                    "vm_type": "default",
                    "stemcell": "default",
                    "networks": [{"name": "default"}],
                }
            )
        manifest = {
            "name": self.name,
            "releases": [{"name": r["name"], "version": str(r["version"])} for r in self.releases],
            "stemcells": [
                {"alias": "default", "name": stemcell["name"], "version": str(stemcell["version"])}
            ],
            "update": {
                "canaries": 1,
                "max_in_flight": 1,
                "canary_watch_time": "1000-30000",
                "update_watch_time": "1000-30000",
            },
            "instance_groups": groups,
        }
        return to_yaml(manifest)


class Client:
    def __init__(self, raw):
        self.id = raw["id"]
        self.secret = raw["secret"]
        access = raw.get("deployments", "all")
        if access == "all":
            self.deployments = None
        elif isinstance(access, list) and all(isinstance(d, str) for d in access):
            self.deployments = list(access)
        else:
            raise ConfigError(f"client {self.id}: deployments must be \"all\" or a list of names")

    @property
    def scopes(self):
        # An unrestricted client is a BOSH admin; a restricted one is the admin of a team named
        # after it, and the deployments it may access belong to that team.
        if self.deployments is None:
            return ["bosh.admin"]
        return [f"bosh.teams.{self.id}.admin"]

    def may_access(self, deployment):
        return self.deployments is None or deployment.name in self.deployments


class Task:
    def __init__(self, task_id, description, user, deployment, teams, context_id, kind):
        self.id = task_id
        self.state = "queued"
        self.description = description
        self.timestamp = int(time.time())
        self.started_at = None
        self.result = None
        self.user = user
        self.deployment = deployment
        self.teams = teams
        self.context_id = context_id
        self.kind = kind
        self.output = {"event": "", "result": "", "debug": "", "cpi": ""}

    def to_json(self):
        return {
            "id": self.id,
            "state": self.state,
            "description": self.description,
            "timestamp": self.timestamp,
            "started_at": self.started_at,
            "result": self.result,
            "user": self.user,
            "deployment": self.deployment,
            "context_id": self.context_id,
        }


class TaskError(Exception):
    pass


class HttpError(Exception):
    """A response other than 2xx: status, body, content type, extra headers, log note."""

    def __init__(self, status, body, content_type="text/html;charset=utf-8", headers=None, note=None):
        super().__init__(f"{status}")
        self.status = status
        self.body = body
        self.content_type = content_type
        self.headers = headers or {}
        self.note = note


def director_error(status, code, description, note=None):
    body = dumps({"code": code, "description": description})
    return HttpError(status, body, note=note)


# ---------------------------------------------------------------------------------------------
# The Director
# ---------------------------------------------------------------------------------------------


class Fault:
    """One rule of the "faults" config key."""

    def __init__(self, raw):
        self.request = raw["request"]
        self.answer = raw["answer"]
        if not (isinstance(self.answer, int) and 400 <= self.answer <= 599) and \
                self.answer not in ("drop", "reset", "drop-after", "oversized"):
            raise ConfigError(
                f"fault answer {self.answer!r}: a 4xx/5xx status, drop, reset, drop-after or oversized")
        self.bytes = int(raw.get("bytes", 70 << 20))
        self.left = int(raw.get("times", 1))
        self.listener = raw.get("listener", "director")


class Director:
    def __init__(self, config):
        self.config = config
        self.name = config.get("name", "cairn-testbed-director")
        self.uuid = config.get("uuid") or str(uuid.uuid4())
        self.version = config.get("version", "281.0.0 (00000000)")
        self.cpi = config.get("cpi", "testbed_cpi")
        self.address = config["address"]
        if self.address in ("0.0.0.0", "::", ""):
            raise ConfigError("refusing to listen on all addresses")
        self.auth = config.get("auth", "uaa")
        if self.auth not in ("uaa", "basic"):
            raise ConfigError("auth must be \"uaa\" or \"basic\"")
        self.token_lifetime = float(config.get("token_lifetime_seconds", 600))
        self.reported_expires_in = config.get("reported_expires_in")
        if self.token_lifetime <= 0:
            raise ConfigError("token_lifetime_seconds must be positive")
        self.task_duration = float(config.get("task_duration_seconds", 0.3))
        self.redirect_location = config.get("redirect_location", "bosh")
        if self.redirect_location not in ("bosh", "absolute", "relative"):
            raise ConfigError("redirect_location must be bosh, absolute or relative")
        self.strict = bool(config.get("strict_ssh_bodies", True))
        self.default_ssh_options = config.get("default_ssh_options")
        self.testbed_script = config["testbed_script"]
        self.clients = [Client(c) for c in config.get("clients", [])]
        if not self.clients:
            raise ConfigError("no clients configured")
        self.deployments = [Deployment(d) for d in config.get("deployments", [])]
        names = [d.name for d in self.deployments]
        if len(set(names)) != len(names):
            raise ConfigError("deployment names must be unique")
        for deployment in self.deployments:
            deployment.teams = [
                c.id for c in self.clients if c.deployments is not None and deployment.name in c.deployments
            ]
        self.token_key = secrets.token_bytes(32)
        self.tokens = {}  # jti -> (client, expiry as float unix time)
        self.tasks = {}
        self.next_task_id = 1
        self.lock = threading.Lock()
        self.accounts_lock = threading.Lock()
        self.log_lock = threading.Lock()
        self.request_log = open(config["request_log"], "a", buffering=1)
        self.accounts_log = open(config["accounts_log"], "a", buffering=1)
        self.port = None
        self.uaa_port = None
        self.faults = [Fault(raw) for raw in config.get("faults", [])]

    def take_fault(self, listener, method, path):
        """The answer of the first fault rule with times left matching this request, or None."""
        request = f"{method} {path}"
        with self.lock:
            for fault in self.faults:
                if fault.left != 0 and fault.listener == listener and request.startswith(fault.request):
                    fault.left -= 1
                    return (fault.answer, fault.bytes) if fault.answer == "oversized" else fault.answer
        return None

    # -- logging ------------------------------------------------------------------------------

    def log_request(self, listener, client_ip, method, path, status, client_id, note):
        def clean(text):
            return (str(text) if text not in (None, "") else "-").replace("\t", " ").replace("\n", " ")

        line = "\t".join(
            [
                f"{time.time():.6f}",
                listener,
                clean(client_ip),
                clean(method),
                clean(path),
                str(status),
                clean(client_id),
                clean(note),
            ]
        )
        with self.log_lock:
            self.request_log.write(line + "\n")
        log(f"{listener} {client_ip} {method} {path} -> {status}" + (f" ({note})" if note else ""))

    # -- lookups ------------------------------------------------------------------------------

    def deployment(self, name):
        for deployment in self.deployments:
            if deployment.name == name:
                return deployment
        raise director_error(404, 70000, f"Deployment '{name}' doesn't exist", note="no-such-deployment")

    def expected_scopes(self, teams, permission):
        scopes = ["bosh.admin", f"bosh.{self.uuid}.admin"]
        scopes += [f"bosh.teams.{t}.admin" for t in teams]
        if permission == "read":
            scopes += [f"bosh.teams.{t}.read" for t in teams]
            scopes += ["bosh.read", f"bosh.{self.uuid}.read"]
        return scopes

    def authorize_deployment(self, client, deployment, permission):
        if not client.may_access(deployment):
            scopes = ", ".join(self.expected_scopes(deployment.teams, permission))
            raise director_error(401, 600000, f"Require one of the scopes: {scopes}", note="forbidden")

    def task(self, task_id):
        with self.lock:
            task = self.tasks.get(int(task_id)) if task_id.isdigit() else None
        if task is None:
            raise director_error(404, 10000, f"Task {task_id} not found")
        return task

    def may_read_task(self, client, task):
        if client.deployments is None:
            return True
        return client.id in task.teams

    # -- authentication -----------------------------------------------------------------------

    def authenticate(self, header):
        """The client of an Authorization header value, or raises HttpError(401)."""
        if header is None:
            raise HttpError(401, "", note="no-credentials")
        if self.auth == "basic":
            match = re.match(r"(?i)basic\s+(\S+)\s*$", header)
            if match:
                try:
                    user, _, password = base64.b64decode(match.group(1)).decode().partition(":")
                except (ValueError, UnicodeDecodeError):
                    user, password = None, None
                for client in self.clients:
                    if user is not None and client.id == user and hmac.compare_digest(
                        client.secret.encode(), password.encode()
                    ):
                        return client
            raise HttpError(401, "", note="bad-credentials")
        match = re.match(r"(?i)bearer\s+(\S+)\s*$", header)
        if not match:
            raise HttpError(401, "", note="bad-token")
        claims = self.verify_jwt(match.group(1))
        if claims is None:
            raise HttpError(401, "", note="bad-token")
        with self.lock:
            entry = self.tokens.get(claims.get("jti"))
        if entry is None:
            raise HttpError(401, "", note="bad-token")
        client, expiry = entry
        if time.time() >= expiry:
            raise HttpError(401, "", note="token-expired")
        return client

    # -- UAA tokens (JWT, HS256, also remembered with their exact expiry) ------------------------

    @staticmethod
    def b64url(data):
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    def issue_token(self, client):
        now = time.time()
        jti = secrets.token_hex(16)
        expiry = now + self.token_lifetime
        claims = {
            "jti": jti,
            "sub": client.id,
            "authorities": client.scopes,
            "scope": client.scopes,
            "client_id": client.id,
            "cid": client.id,
            "azp": client.id,
            "grant_type": "client_credentials",
            "rev_sig": secrets.token_hex(4),
            "iat": int(now),
            "exp": int(expiry + 0.999),
            "iss": f"https://{self.address}:{self.uaa_port}/oauth/token",
            "zid": "uaa",
            "aud": [client.id, "bosh"],
        }
        header = {"alg": "HS256", "kid": "cairn-testbed", "typ": "JWT"}
        signing_input = self.b64url(dumps(header).encode()) + "." + self.b64url(dumps(claims).encode())
        signature = hmac.new(self.token_key, signing_input.encode(), hashlib.sha256).digest()
        with self.lock:
            self.tokens[jti] = (client, expiry)
        return signing_input + "." + self.b64url(signature), jti

    def verify_jwt(self, token):
        parts = token.split(".")
        if len(parts) != 3:
            return None
        expected = hmac.new(self.token_key, f"{parts[0]}.{parts[1]}".encode(), hashlib.sha256).digest()
        try:
            signature = base64.urlsafe_b64decode(parts[2] + "=" * (-len(parts[2]) % 4))
            claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
        except (ValueError, json.JSONDecodeError):
            return None
        if not hmac.compare_digest(signature, expected) or not isinstance(claims, dict):
            return None
        return claims

    # -- tasks --------------------------------------------------------------------------------

    def start_task(self, kind, description, client, deployment, context_id, work):
        with self.lock:
            task = Task(
                self.next_task_id, description, client.id, deployment.name, list(deployment.teams), context_id, kind
            )
            self.tasks[task.id] = task
            self.next_task_id += 1
        thread = threading.Thread(target=self.run_task, args=(task, work), daemon=True)
        thread.start()
        return task

    def run_task(self, task, work):
        begin = time.time()
        time.sleep(self.task_duration / 3)
        with self.lock:
            task.state = "processing"
            task.started_at = int(time.time())
            task.output["debug"] += self.debug_line(f"Starting task: {task.id}")
        try:
            result_output = work(task)
            state, result = "done", ""
        except TaskError as error:
            state, result, result_output = "error", str(error), ""
        except Exception as error:  # a bug of the stand-in: fail the task, keep serving
            traceback.print_exc()
            state, result, result_output = "error", f"stand-in failure: {error}", ""
        remaining = begin + self.task_duration - time.time()
        if remaining > 0:
            time.sleep(remaining)
        with self.lock:
            if state == "error":
                event = {"time": int(time.time()), "error": {"code": 100, "message": result}}
                task.output["event"] += dumps(event) + "\n"
                task.output["debug"] += self.debug_line(f"Task {task.id} error: {result}")
            task.output["result"] = result_output
            task.output["debug"] += self.debug_line(f"Task took {time.time() - begin:.3f} seconds to process.")
            task.result = truncate(result)
            task.timestamp = int(time.time())
            task.state = state
        log(f"task {task.id} ({task.description}) {state}" + (f": {result}" if result else ""))

    @staticmethod
    def debug_line(message):
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
        return f"I, [{stamp} #{os.getpid()}]  INFO -- TaskHelper: {message}\n"

    def vm_info(self, instance):
        job_names = [j["name"] for j in instance.group.jobs]
        return {
            "vm_cid": instance.vm_cid,
            "vm_created_at": instance.created_at,
            "cloud_properties": {},
            "disk_cid": None,
            "disk_cids": [],
            "ips": [instance.address],
            "dns": [],
            "agent_id": instance.agent_id,
            "job_name": instance.group.name,
            "index": instance.index,
            "job_state": "running",
            "state": "started",
            "resource_pool": "default",
            "vm_type": "default",
            "vitals": {
                "cpu": {"sys": "0.2", "user": "0.5", "wait": "0.0"},
                "disk": {
                    "ephemeral": {"inode_percent": "1", "percent": "3"},
                    "system": {"inode_percent": "30", "percent": "45"},
                },
                "load": ["0.01", "0.05", "0.04"],
                "mem": {"kb": "262144", "percent": "12"},
                "swap": {"kb": "0", "percent": "0"},
                "uptime": {"secs": 3600},
            },
            "processes": [
                {"name": name, "state": "running", "uptime": {"secs": 3600},
                 "mem": {"kb": 10240, "percent": 0.5}, "cpu": {"total": 0.1}}
                for name in job_names
            ],
            "resurrection_paused": False,
            "az": instance.az,
            "id": instance.id,
            "bootstrap": instance.bootstrap,
            "ignore": False,
            "process_state": "running",
            "active": True,
            "stemcell": {"name": "bosh-warden-boshlite-ubuntu-jammy-go_agent", "version": "1.0", "api_version": 3},
        }

    # -- SSH users ----------------------------------------------------------------------------

    def run_in_host(self, instance, script, *args):
        command = [
            self.testbed_script, "exec", instance.testbed_dir, instance.label, "--",
            "sh", "-c", script, "sh", *args,
        ]
        done = subprocess.run(command, capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            raise TaskError(
                f"Action Failed ssh on {instance.label}: {(done.stderr or done.stdout).strip()[-300:]}"
            )
        return done.stdout

    @staticmethod
    def passwd_locked(*command):
        """Runs a command that edits /etc/passwd under the test bed's machine-wide lock."""
        os.makedirs(os.path.dirname(PASSWD_LOCK), exist_ok=True)
        with open(PASSWD_LOCK, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            return subprocess.run(list(command), capture_output=True, text=True)

    @staticmethod
    def account_exists(user):
        return subprocess.run(["getent", "passwd", user], capture_output=True).returncode == 0

    def ensure_account(self, user):
        if self.account_exists(user):
            return
        for group in SSH_USER_GROUPS:
            if subprocess.run(["getent", "group", group], capture_output=True).returncode != 0:
                self.passwd_locked("groupadd", "-f", group)
        self.accounts_log.write(f"created\t{user}\n")
        done = self.passwd_locked(
            "useradd", "--no-create-home", "--home-dir", f"{BOSH_SSH_DIR}/{user}", "--shell", "/bin/bash",
            "--groups", ",".join(SSH_USER_GROUPS), "--password", "*", user,
        )
        if done.returncode != 0 and not self.account_exists(user):
            raise TaskError(f"Action Failed ssh: Creating user: {done.stderr.strip()}")

    def delete_account_if_unused(self, user):
        for deployment in self.deployments:
            for instance in deployment.instances():
                if os.path.isdir(os.path.join(instance.vcap_dir, "bosh_ssh", user)):
                    return
        if self.account_exists(user):
            done = self.passwd_locked("userdel", "--force", user)
            if done.returncode != 0 and self.account_exists(user):
                raise TaskError(f"Action Failed ssh: SSH Cleanup: Deleting Ephemeral Users: {done.stderr.strip()}")
        self.accounts_log.write(f"deleted\t{user}\n")

    def created_accounts(self):
        created = []
        with open(self.config["accounts_log"]) as handle:
            for line in handle:
                action, _, user = line.rstrip("\n").partition("\t")
                if action == "created" and user not in created:
                    created.append(user)
        return created

    SETUP_SCRIPT = (
        'set -e; home=$1; mkdir -p "$(dirname "$home")"; chmod 0755 "$(dirname "$home")"; '
        'mkdir -p "$home/.ssh"; printf "%s\\n" "$2" > "$home/.ssh/authorized_keys"; '
        'chown -R "$3:" "$home"; chmod 0700 "$home" "$home/.ssh"; chmod 0600 "$home/.ssh/authorized_keys"'
    )
    CLEANUP_SCRIPT = 'rm -rf -- "$1"'

    def ssh_setup(self, instances, params):
        user = params.get("user") if isinstance(params, dict) else None
        key = params.get("public_key") if isinstance(params, dict) else None
        if not isinstance(user, str) or not re.match(r"^[a-z_][a-z0-9_-]*$", user or ""):
            raise TaskError(f"Action Failed ssh: Creating user: invalid user name {user!r}")
        if not isinstance(key, str) or not key.strip():
            raise TaskError("Action Failed ssh: Setting ssh public key: no public key")
        results = []
        for instance in instances:
            with self.accounts_lock:
                self.ensure_account(user)
                self.run_in_host(instance, self.SETUP_SCRIPT, f"{BOSH_SSH_DIR}/{user}", key.strip(), user)
            result = {
                "command": "setup",
                "status": "success",
                "ip": instance.address,
                "host_public_key": instance.host_public_key(),
                "id": instance.id,
                "index": instance.index,
                "job": instance.group.name,
            }
            if self.default_ssh_options:
                result["gateway_host"] = self.default_ssh_options.get("gateway_host")
                result["gateway_user"] = self.default_ssh_options.get("gateway_user")
            results.append(result)
        return results

    def ssh_cleanup(self, instances, params):
        regex = params.get("user_regex") if isinstance(params, dict) else None
        try:
            pattern = re.compile(regex if isinstance(regex, str) else "")
        except re.error as error:
            raise TaskError(f"Action Failed ssh: SSH Cleanup: bad user_regex: {error}")
        if not isinstance(regex, str) or not regex:
            raise TaskError("Action Failed ssh: SSH Cleanup: no user_regex")
        results = []
        with self.accounts_lock:
            matched = set()
            for instance in instances:
                folder = os.path.join(instance.vcap_dir, "bosh_ssh")
                names = sorted(os.listdir(folder)) if os.path.isdir(folder) else []
                users = [n for n in names if n.startswith("bosh_") and pattern.search(n)]
                for user in users:
                    self.run_in_host(instance, self.CLEANUP_SCRIPT, f"{BOSH_SSH_DIR}/{user}")
                matched.update(users)
                result = {"command": "cleanup", "status": "success", "id": instance.id,
                          "index": instance.index, "job": instance.group.name}
                if self.default_ssh_options:
                    result["gateway_host"] = self.default_ssh_options.get("gateway_host")
                    result["gateway_user"] = self.default_ssh_options.get("gateway_user")
                results.append(result)
            matched.update(u for u in self.created_accounts() if pattern.search(u))
            for user in sorted(matched):
                self.delete_account_if_unused(user)
        return results

    @staticmethod
    def ssh_targets(deployment, target):
        """The instances BOSH's Jobs::Ssh would pick for a target (job, ids, indexes)."""
        if not isinstance(target, dict):
            raise TaskError("undefined method `[]' for nil:NilClass")
        job, ids, indexes = target.get("job"), target.get("ids"), target.get("indexes")
        filters = {}
        if job:
            filters["job"] = job
        if not ids and indexes:  # old CLIs: indexes only
            filters["index"] = list(indexes)
        else:
            if not isinstance(ids, list):
                raise TaskError("undefined method `each' for nil:NilClass")
            for value in ids:
                if re.fullmatch(r"\d+", str(value)):
                    filters.setdefault("index", []).append(int(value))
                else:
                    filters.setdefault("uuid", []).append(value)

        def matches(instance):
            if "job" in filters and instance.group.name != filters["job"]:
                return False
            if "index" in filters and instance.index not in [
                int(v) for v in filters["index"] if re.fullmatch(r"\d+", str(v))
            ]:
                return False
            if "uuid" in filters and instance.id not in filters["uuid"]:
                return False
            return True

        instances = [i for i in deployment.instances() if matches(i)]
        if not instances:
            shown = {RubySymbolKey(k): v for k, v in filters.items()}
            raise TaskError(
                f"No instance with a VM in deployment '{deployment.name}' matched filter {ruby_inspect(shown)}"
            )
        return instances

    @staticmethod
    def bbr_shape_problems(deployment, payload):
        """How an ssh body differs from the one bbr sends (bbr-facts §5.2); empty if it does not."""
        problems = []
        if set(payload) != {"command", "deployment_name", "target", "params"}:
            problems.append(f"top-level keys {sorted(payload)}")
        if payload.get("deployment_name") != deployment.name:
            problems.append(f"deployment_name {payload.get('deployment_name')!r}")
        target = payload.get("target")
        command = payload.get("command")
        params = payload.get("params")
        if not isinstance(target, dict) or set(target) != {"job", "indexes", "ids"}:
            problems.append(f"target {target!r}")
        else:
            if not isinstance(target["job"], str) or not target["job"]:
                problems.append(f"target.job {target['job']!r}")
            for key in ("indexes", "ids"):
                value = target[key]
                if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                    problems.append(f"target.{key} {value!r} is not a list of strings")
            if command == "setup" and (target["indexes"] != [] or target["ids"] != []):
                problems.append("setup targets a subset of the group (bbr targets all: indexes/ids [])")
            if command == "cleanup" and (len(target["ids"]) != 1 or target["indexes"] != target["ids"]):
                problems.append("cleanup target must have ids == indexes == [<instance id>]")
        if command == "setup":
            if not isinstance(params, dict) or set(params) != {"user", "password", "public_key"}:
                problems.append(f"setup params keys {sorted(params) if isinstance(params, dict) else params!r}")
            else:
                if not BBR_USER.match(str(params["user"])):
                    problems.append(f"user {params['user']!r} is not bosh_<15 hex>")
                if not isinstance(params["password"], str):
                    problems.append("password is not a string")
                if not isinstance(params["public_key"], str) or not params["public_key"].startswith("ssh-"):
                    problems.append("public_key is not an OpenSSH public key")
        elif command == "cleanup":
            if not isinstance(params, dict) or set(params) != {"user_regex"}:
                problems.append(f"cleanup params {params!r}")
            elif not re.fullmatch(r"\^bosh_[0-9a-f]{15}", str(params["user_regex"])):
                problems.append(f"user_regex {params['user_regex']!r} is not ^bosh_<15 hex>")
        return problems


class RubySymbolKey(RubySymbol):
    def __hash__(self):
        return hash(self.name)

    def __eq__(self, other):
        return isinstance(other, RubySymbol) and other.name == self.name


# ---------------------------------------------------------------------------------------------
# HTTP
# ---------------------------------------------------------------------------------------------


class TLSServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64

    def __init__(self, address, handler, context, director, listener):
        self.context = context
        self.director = director
        self.listener = listener
        super().__init__(address, handler)

    def finish_request(self, request, client_address):
        # The TLS handshake runs here, in the request's own thread, not in the accept loop.
        request.settimeout(60)
        try:
            connection = self.context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError) as error:
            self.director.log_request(self.listener, client_address[0], "TLS", "-", 0, None, str(error))
            return
        try:
            self.RequestHandlerClass(connection, client_address, self)
        finally:
            try:
                connection.close()
            except OSError:
                pass

    def handle_error(self, request, client_address):
        error = sys.exc_info()[1]
        if isinstance(error, (ConnectionError, TimeoutError, ssl.SSLError)):
            return
        super().handle_error(request, client_address)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def version_string(self):
        return "nginx"

    def log_message(self, format, *args):  # noqa: A002 - our own request log replaces it
        pass

    @property
    def director(self):
        return self.server.director

    def do_GET(self):
        self.dispatch("GET")

    def do_POST(self):
        self.dispatch("POST")

    def do_PUT(self):
        self.dispatch("PUT")

    def do_DELETE(self):
        self.dispatch("DELETE")

    def read_body(self):
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def dispatch(self, method):
        self.client_id = None
        self.note = None
        body = self.read_body()
        fault = self.director.take_fault(self.server.listener, method, self.path)
        if fault in ("drop", "reset"):
            self.director.log_request(
                self.server.listener, self.client_address[0], method, self.path, 0, None, f"fault {fault}")
            return self.cut(fault)
        if isinstance(fault, tuple):
            sent = self.oversized(fault[1])
            self.director.log_request(self.server.listener, self.client_address[0], method, self.path, 200,
                                      None, f"fault oversized sent={sent}")
            return None
        if isinstance(fault, int):
            page = f"<html><head><title>{fault}</title></head><body><center><h1>{fault}</h1></center>" \
                   "<hr><center>nginx</center></body></html>\r\n"
            self.respond(fault, page, "text/html", {})
            self.director.log_request(
                self.server.listener, self.client_address[0], method, self.path, fault, None, f"fault {fault}")
            return None
        try:
            if self.server.listener == "uaa":
                status, payload, content_type, headers = self.uaa(method, body)
            else:
                status, payload, content_type, headers = self.route(method, body)
        except HttpError as error:
            status, payload, content_type, headers = error.status, error.body, error.content_type, error.headers
            self.note = error.note or self.note
        except Exception:  # a bug of the stand-in
            traceback.print_exc()
            status, payload, content_type, headers = 500, "", "text/html;charset=utf-8", {}
            self.note = "stand-in failure"
        if fault == "drop-after":
            self.director.log_request(self.server.listener, self.client_address[0], method, self.path, 0,
                                      self.client_id, f"fault drop-after {self.note or ''}".strip())
            return self.cut("drop")
        self.respond(status, payload, content_type, headers)
        self.director.log_request(
            self.server.listener, self.client_address[0], method, self.path, status, self.client_id, self.note
        )

    def oversized(self, size):
        """A 200 whose body of `size` bytes (a JSON string) is delimited by the connection's close,
        not a Content-Length; returns the bytes sent before the client hung up (or all of them)."""
        self.close_connection = True
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Connection", "close")
        self.end_headers()
        chunk = b"x" * (1 << 20)
        sent = 0
        try:
            self.wfile.write(b'"')
            sent = 1
            while sent < size - 1:
                part = chunk[: min(len(chunk), size - 1 - sent)]
                self.wfile.write(part)
                sent += len(part)
            self.wfile.write(b'"')
            sent += 1
        except OSError:
            pass
        return sent

    def cut(self, how):
        """Ends the connection without an answer: a FIN ("drop") or a TCP RST ("reset")."""
        self.close_connection = True
        try:
            if how == "reset":
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            else:
                self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def respond(self, status, payload, content_type, headers):
        data = payload.encode() if isinstance(payload, str) else payload
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    # -- UAA ----------------------------------------------------------------------------------

    def uaa(self, method, body):
        json_type = "application/json;charset=UTF-8"
        no_store = {"Cache-Control": "no-store", "Pragma": "no-cache"}
        path = urlsplit(self.path).path
        if path != "/oauth/token":
            return 404, dumps({"error": "not_found", "error_description": "Not found"}), json_type, {}
        if method != "POST":
            return 405, dumps({"error": "method_not_allowed",
                                    "error_description": f"Request method '{method}' not supported"}), json_type, {}
        form = {k: v[-1] for k, v in parse_qs(body.decode(errors="replace"), keep_blank_values=True).items()}
        client_id, secret = None, None
        header = self.headers.get("Authorization")
        if header:
            match = re.match(r"(?i)basic\s+(\S+)\s*$", header)
            if match:
                try:
                    decoded = base64.b64decode(match.group(1)).decode()
                    client_id, _, secret = decoded.partition(":")
                    client_id, secret = unquote(client_id), unquote(secret)
                except (ValueError, UnicodeDecodeError):
                    client_id = None
        elif "client_id" in form:
            client_id, secret = form.get("client_id"), form.get("client_secret", "")
        if client_id is None:
            self.note = "no-credentials"
            return 401, dumps({"error": "unauthorized",
                                    "error_description": "Full authentication is required to access this resource"}), \
                json_type, {"WWW-Authenticate": 'Basic realm="UAA/client", error="unauthorized", '
                                                'error_description="Full authentication is required to access this resource"',
                            **no_store}
        client = next((c for c in self.director.clients if c.id == client_id), None)
        if client is None or not hmac.compare_digest(client.secret.encode(), (secret or "").encode()):
            self.note = "bad-credentials"
            return 401, dumps({"error": "unauthorized", "error_description": "Bad credentials"}), json_type, {
                "WWW-Authenticate": 'Basic realm="UAA/client", error="unauthorized", error_description="Bad credentials"',
                **no_store,
            }
        self.client_id = client.id
        grant = form.get("grant_type")
        if not grant:
            self.note = "no grant_type"
            return 400, dumps({"error": "invalid_request", "error_description": "Missing grant type"}), \
                json_type, no_store
        if grant != "client_credentials":
            self.note = f"grant_type={grant}"
            if grant in ("password", "refresh_token", "authorization_code", "implicit"):
                return 401, dumps({"error": "invalid_client",
                                        "error_description": f"Unauthorized grant type: {grant}"}), json_type, no_store
            return 400, dumps({"error": "unsupported_grant_type",
                                    "error_description": f"Unsupported grant type: {grant}"}), json_type, no_store
        token, jti = self.director.issue_token(client)
        self.note = f"token issued jti={jti}"
        lifetime = self.director.token_lifetime
        response = {
            "access_token": token,
            "token_type": "bearer",
            "expires_in": int(lifetime) if self.director.reported_expires_in is None
            else int(self.director.reported_expires_in),
            "scope": " ".join(client.scopes),
            "jti": jti,
        }
        return 200, dumps(response), json_type, no_store

    # -- Director -----------------------------------------------------------------------------

    def route(self, method, body):
        director = self.director
        url = urlsplit(self.path)
        path = url.path
        query = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        json_type = "application/json"
        html_type = "text/html;charset=utf-8"

        if path == "/info" and method == "GET":
            user = None
            if self.headers.get("Authorization"):
                try:
                    user = director.authenticate(self.headers.get("Authorization")).id
                except HttpError:
                    user = None
            if director.auth == "uaa":
                uaa_url = f"https://{director.address}:{director.uaa_port}"
                authentication = {"type": "uaa", "options": {"url": uaa_url, "urls": [uaa_url]}}
            else:
                authentication = {"type": "basic", "options": {}}
            info = {
                "name": director.name,
                "uuid": director.uuid,
                "version": director.version,
                "user": user,
                "cpi": director.cpi,
                "stemcell_os": "ubuntu-jammy",
                "stemcell_version": "1.0",
                "user_authentication": authentication,
                "features": {
                    "local_dns": {"status": True, "extras": {"domain_name": "bosh"}},
                    "power_dns": {"status": False, "extras": {"domain_name": "bosh"}},
                    "compiled_package_cache": {"status": False, "extras": {"provider": None}},
                    "snapshots": {"status": False},
                    "config_server": {"status": False, "extras": {"urls": []}},
                },
            }
            return 200, dumps(info), json_type, {}

        try:
            client = director.authenticate(self.headers.get("Authorization"))
        except HttpError as error:
            raise HttpError(401, f"Not authorized: '{path}'\n",
                            headers={"WWW-Authenticate": 'Basic realm="BOSH Director"'}, note=error.note)
        self.client_id = client.id
        context_id = self.headers.get("X-Bosh-Context-Id", "")

        segments = [unquote(s) for s in path.split("/")[1:]]
        if segments and segments[-1] == "" and len(segments) > 1:
            segments = segments[:-1]

        if method == "GET" and segments == ["deployments"]:
            listing = []
            for deployment in sorted(director.deployments, key=lambda d: d.name):
                if not client.may_access(deployment):
                    continue
                listing.append({
                    "name": deployment.name,
                    "releases": sorted(({"name": r["name"], "version": str(r["version"])}
                                        for r in deployment.releases), key=lambda r: (r["name"], r["version"])),
                    "stemcells": [{"name": s["name"], "version": str(s["version"])} for s in deployment.stemcells],
                    "cloud_config": "none",
                    "teams": deployment.teams,
                })
            return 200, dumps(listing), html_type, {}

        if len(segments) >= 2 and segments[0] == "deployments":
            name = segments[1]
            rest = segments[2:]
            if method == "GET" and rest == []:
                deployment = director.deployment(name)
                director.authorize_deployment(client, deployment, "read")
                return 200, dumps({"manifest": deployment.manifest()}), html_type, {}
            if method == "GET" and rest in (["vms"], ["instances"]):
                deployment = director.deployment(name)
                director.authorize_deployment(client, deployment, "read")
                if query.get("format") == "full":
                    def work(_task, deployment=deployment):
                        return "".join(dumps(director.vm_info(i)) + "\n" for i in deployment.instances())

                    task = director.start_task("vms", "retrieve vm-stats", client, deployment, context_id, work)
                    return self.redirect(task)
                listing = [{"agent_id": i.agent_id, "cid": i.vm_cid, "job": i.group.name, "index": i.index,
                            "id": i.id, "az": i.az, "ips": [i.address], "vm_created_at": i.created_at,
                            "active": True} for i in deployment.instances()]
                return 200, dumps(listing), html_type, {}
            if method == "POST" and rest == ["ssh"]:
                content_type = (self.headers.get("Content-Type") or "").split(";")[0].strip()
                if content_type != "application/json":
                    raise HttpError(404, f"Endpoint '{path}' not found. Please consider upgrading your director",
                                    note=f"content-type {content_type or 'missing'}")
                deployment = director.deployment(name)
                director.authorize_deployment(client, deployment, "admin")
                return self.ssh(deployment, client, body, context_id)

        if method == "GET" and segments == ["tasks"]:
            verbose = query.get("verbose", "1")
            with director.lock:
                tasks = sorted(director.tasks.values(), key=lambda t: (t.timestamp, t.id), reverse=True)
            tasks = [t for t in tasks if director.may_read_task(client, t)]
            if verbose == "1":
                tasks = []  # only deploy-like task types are listed by default; ours are vms and ssh
            if query.get("deployment"):
                tasks = [t for t in tasks if t.deployment == query["deployment"]]
            if query.get("state"):
                tasks = [t for t in tasks if t.state in query["state"].split(",")]
            if query.get("limit", "").isdigit():
                tasks = tasks[: max(int(query["limit"]), 1)]
            with director.lock:
                listing = [t.to_json() for t in tasks]
            return 200, dumps(listing), json_type, {}

        if method == "GET" and len(segments) == 2 and segments[0] == "tasks":
            task = director.task(segments[1])
            if not director.may_read_task(client, task):
                scopes = ", ".join(director.expected_scopes(task.teams, "read"))
                raise director_error(
                    401, 600000, f"One of the following scopes is required to access this task: {scopes}",
                    note="forbidden")
            with director.lock:
                return 200, dumps(task.to_json()), json_type, {}

        if method == "GET" and len(segments) == 3 and segments[0] == "tasks" and segments[2] == "output":
            task = director.task(segments[1])
            log_type = query.get("type")
            if log_type in (None, "debug", "cpi"):
                permission = "admin"
            elif log_type in ("event", "result", "none"):
                permission = "read"
            else:
                raise director_error(401, 600000, f"Unknown type {log_type}")
            if not director.may_read_task(client, task):
                scopes = ", ".join(director.expected_scopes(task.teams, permission))
                raise director_error(401, 600000, f"Require one of the scopes: {scopes}", note="forbidden")
            if log_type == "none":
                return 204, "", "text/plain", {}
            with director.lock:
                output = task.output.get(log_type or "debug", "").encode()
            return self.ranged(output)

        raise HttpError(404, f"Endpoint '{path}' not found. Please consider upgrading your director")

    def ranged(self, data):
        """Output with Range support like Rack: bytes=N- etc.; 416 if unsatisfiable."""
        header = self.headers.get("Range")
        match = re.fullmatch(r"\s*bytes=(\d*)-(\d*)\s*", header or "")
        if not header or not match or (not match.group(1) and not match.group(2)):
            return 200, data, "text/plain", {}
        size = len(data)
        first, last = match.group(1), match.group(2)
        if first == "":
            start, end = max(size - int(last), 0), size - 1
        else:
            start = int(first)
            end = min(int(last), size - 1) if last else size - 1
        if start >= size or start > end:
            return 416, "Byte range unsatisfiable", "text/plain", {"Content-Range": f"bytes */{size}"}
        return 206, data[start:end + 1], "text/plain", {"Content-Range": f"bytes {start}-{end}/{size}"}

    def redirect(self, task):
        director = self.director
        host = self.headers.get("Host") or f"{director.address}:{director.port}"
        if director.redirect_location == "relative":
            location = f"/tasks/{task.id}"
        elif director.redirect_location == "absolute":
            location = f"https://{host}/tasks/{task.id}"
        else:  # nginx passes `Host: $host` (no port) and the Director builds an absolute URL
            if host.startswith("["):
                bare = host.split("]")[0] + "]"
            else:
                bare = host.split(":")[0] if host.count(":") == 1 else host
            location = f"https://{bare}/tasks/{task.id}"
        self.note = (self.note + " " if self.note else "") + f"task={task.id}"
        return 302, "", "text/html;charset=utf-8", {"Location": location}

    def ssh(self, deployment, client, body, context_id):
        director = self.director
        try:
            payload = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError):
            # JSON::ParserError is not a DirectorError: Sinatra answers 500 with an empty body.
            raise HttpError(500, "", note="bad-json")
        if not isinstance(payload, dict):
            raise HttpError(500, "", note="bad-json (not an object)")
        command = payload.get("command")
        target = payload.get("target")
        params = payload.get("params")
        problems = director.bbr_shape_problems(deployment, payload)
        summary = f"ssh {command}"
        if isinstance(params, dict):
            summary += f" user={params['user']}" if "user" in params else ""
            summary += f" user_regex={params['user_regex']}" if "user_regex" in params else ""
        if isinstance(target, dict):
            summary += f" job={target.get('job')} ids={target.get('ids')}"
        self.note = summary + (f" not-bbr-shape: {'; '.join(problems)}" if problems else "")

        def work(_task):
            if problems and director.strict:
                raise TaskError("Cairn Director stand-in: ssh body differs from bbr's: " + "; ".join(problems))
            instances = director.ssh_targets(deployment, target)
            if command == "setup":
                results = director.ssh_setup(instances, params)
            elif command == "cleanup":
                results = director.ssh_cleanup(instances, params)
            else:
                raise TaskError("Action Failed ssh: Unknown command for SSH method")
            return dumps(results) + "\n"

        description = f"ssh: {command}:{ruby_inspect(target)}"
        task = director.start_task("ssh", description, client, deployment, context_id, work)
        return self.redirect(task)


# ---------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------


def bind(director, port, fallback, context, listener):
    try:
        return TLSServer((director.address, port), Handler, context, director, listener)
    except OSError as error:
        if not fallback or port == 0:
            raise
        log(f"{listener}: port {port} on {director.address} is taken ({error}), using an ephemeral port")
        return TLSServer((director.address, 0), Handler, context, director, listener)


def main():
    parser = argparse.ArgumentParser(description="BOSH Director stand-in for Cairn's tests")
    parser.add_argument("--config", required=True)
    arguments = parser.parse_args()
    with open(arguments.config) as handle:
        config = json.load(handle)
    try:
        director = Director(config)
    except (ConfigError, KeyError, ValueError, TypeError) as error:
        log(f"bad config {arguments.config}: {error!r}")
        return 2

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(config["tls_cert"], config["tls_key"])
    fallback = bool(config.get("port_fallback", True))

    servers = [bind(director, int(config.get("port", 25555)), fallback, context, "director")]
    director.port = servers[0].server_address[1]
    if director.auth == "uaa":
        servers.append(bind(director, int(config.get("uaa_port", 8443)), fallback, context, "uaa"))
        director.uaa_port = servers[1].server_address[1]
    for server in servers:
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True).start()

    ready = config["ready_file"]
    with open(ready + ".tmp", "w") as handle:
        handle.write(f"port={director.port}\nuaa_port={director.uaa_port or ''}\npid={os.getpid()}\n")
    os.rename(ready + ".tmp", ready)
    log(f"listening on https://{director.address}:{director.port}"
        + (f", UAA on https://{director.address}:{director.uaa_port}" if director.uaa_port else "")
        + f"; {len(director.deployments)} deployment(s), auth {director.auth}")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
