#!/usr/bin/env python3
"""A stand-in for the clouds' instance metadata / identity endpoints, for Cairn's machine-identity
tests (Python 3 standard library only). One program serves all three on one loopback port:

  AWS EC2 IMDSv2   PUT /latest/api/token                        -> session token (needs the
                                                                   X-aws-ec2-metadata-token-ttl-seconds header)
                   GET /latest/meta-data/iam/security-credentials/        -> the role name
                   GET /latest/meta-data/iam/security-credentials/ROLE    -> temporary keys (JSON)
                   (both GETs need X-aws-ec2-metadata-token with a token issued here, else 401)
  Azure            GET /metadata/identity/oauth2/token?resource=R  -> {"access_token": JWT, ...}
                   (needs `Metadata: true`; with --identity-header also X-IDENTITY-HEADER equal to
                   it, as App Service's IDENTITY_ENDPOINT does). The JWT is unsigned but well formed,
                   with the claims Azurite's `--oauth basic` checks (iss, aud = R, iat, nbf, exp).
  GCE              GET /computeMetadata/v1/instance/service-accounts/default/token
                                                                 -> {"access_token", "expires_in"}
                   (needs `Metadata-Flavor: Google`, and every answer carries that header)
  AWS container    GET /v2/credentials/cairn                    -> temporary keys (JSON), as the
  credentials                                                       ECS/EKS Pod Identity agent
                   (with --container-token, the Authorization header must equal it, as the
                   SDKs send AWS_CONTAINER_AUTHORIZATION_TOKEN)

Clients select it with AWS_EC2_METADATA_SERVICE_ENDPOINT=http://127.0.0.1:PORT,
IDENTITY_ENDPOINT=http://127.0.0.1:PORT/metadata/identity/oauth2/token (+ IDENTITY_HEADER),
GCE_METADATA_HOST=127.0.0.1:PORT,
AWS_CONTAINER_CREDENTIALS_FULL_URI=http://127.0.0.1:PORT/v2/credentials/cairn (+
AWS_CONTAINER_AUTHORIZATION_TOKEN).

    metadata_standin.py --ready FILE [--control FILE] [--expires-in SECONDS] [--identity-header V]
                        [--container-token V]

Listens on 127.0.0.1 (ephemeral port, written as `port=N` to the ready file once it listens).
The control file (JSON, optional, re-read for every request so a test can change it while a
client runs) overrides the options:

    {"expires_in": 900,   # lifetime of every credential issued from now on (seconds)
     "fail": 500,         # answer every credential request with this status (0 or absent: serve)
     "role": "cairn-backup"}

Every credential is new: AWS access key ids are ASIASTANDIN<serial> (ASIACONTAINER<serial> from
the container endpoint), tokens carry the serial, so a refresh shows as a new serial. Keep
`expires_in` a few seconds to watch clients renew them during one run (the SDKs renew a
credential some time before it expires; docs/stores.md, "Credentials that expire", says when).
GET /_counts answers (and every request also writes, to `<ready>.counts`) a JSON object:

    {"requests": {"GET /latest/api/token": 1, ...},   # by method and path (without query)
     "issued": {"aws": 1, "ecs": 0, "azure": 0, "gce": 0},  # credentials handed out per
                                                       # source (ecs: the container endpoint)
     "refused": 0,                                     # requests answered with an error
     "tokens": ["ASIASTANDIN00001", "<jwt>", ...]}     # what was issued, in order
"""

import argparse
import base64
import datetime
import json
import os
import threading
import http.server
import socketserver
import urllib.parse

AWS_ROLE = "cairn-backup"
AZURE_TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
CONTAINER_PATH = "/v2/credentials/cairn"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--ready", required=True)
    parser.add_argument("--control")
    parser.add_argument("--expires-in", type=float, default=3600)
    parser.add_argument("--identity-header")
    parser.add_argument("--container-token")
    args = parser.parse_args()
    lock = threading.Lock()
    state = {"requests": {}, "issued": {"aws": 0, "ecs": 0, "azure": 0, "gce": 0}, "refused": 0,
             "tokens": [], "session_tokens": set(), "serial": 0}
    counts_file = args.ready + ".counts"

    def settings():
        values = {"expires_in": args.expires_in, "fail": 0, "role": AWS_ROLE}
        if args.control:
            try:
                with open(args.control) as handle:
                    values.update(json.load(handle))
            except (OSError, ValueError):
                pass
        return values

    def snapshot():
        return {key: state[key] for key in ("requests", "issued", "refused", "tokens")}

    def write_counts():
        with open(counts_file + ".tmp", "w") as handle:
            json.dump(snapshot(), handle)
        os.replace(counts_file + ".tmp", counts_file)

    def next_serial():
        state["serial"] += 1
        return state["serial"]

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *_):
            pass

        def answer(self, status, body, content_type="text/plain", extra=()):
            payload = body.encode() if isinstance(body, str) else body
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(payload)))
            for name, value in extra:
                self.send_header(name, value)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload)

        def refuse(self, status, why, extra=()):
            with lock:
                state["refused"] += 1
                write_counts()
            self.answer(status, why + "\n", extra=extra)

        def handle_any(self):
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            url = urllib.parse.urlsplit(self.path)
            query = dict(urllib.parse.parse_qsl(url.query))
            if url.path == "/_counts":
                with lock:
                    return self.answer(200, json.dumps(snapshot()), "application/json")
            with lock:
                key = f"{self.command} {url.path}"
                state["requests"][key] = state["requests"].get(key, 0) + 1
                write_counts()
            current = settings()
            path = url.path
            if path == "/latest/api/token" or path.startswith("/latest/meta-data/"):
                return self.aws(path, current)
            if path == "/metadata/identity/oauth2/token":
                return self.azure(query, current)
            if path.startswith("/computeMetadata/"):
                return self.gce(path, current)
            if path == CONTAINER_PATH:
                return self.container(current)
            return self.refuse(404, "no such metadata path")

        def failing(self, current, extra=()):
            status = int(current.get("fail") or 0)
            if status:
                self.refuse(status, "the stand-in was told to fail", extra)
                return True
            return False

        def aws(self, path, current):
            if path == "/latest/api/token":
                if self.command != "PUT" or not self.headers.get("X-aws-ec2-metadata-token-ttl-seconds"):
                    return self.refuse(400, "PUT with X-aws-ec2-metadata-token-ttl-seconds expected")
                if self.failing(current):
                    return None
                with lock:
                    token = f"imds-session-{next_serial()}"
                    state["session_tokens"].add(token)
                ttl = self.headers.get("X-aws-ec2-metadata-token-ttl-seconds")
                return self.answer(200, token, extra=[("X-aws-ec2-metadata-token-ttl-seconds", ttl)])
            with lock:
                known = self.headers.get("X-aws-ec2-metadata-token") in state["session_tokens"]
            if not known:
                return self.refuse(401, "IMDSv2 session token missing or unknown")
            prefix = "/latest/meta-data/iam/security-credentials/"
            if not path.startswith(prefix):
                return self.refuse(404, "not served by the stand-in")
            if self.failing(current):
                return None
            role = path[len(prefix):]
            if role == "":
                return self.answer(200, current["role"])
            if role != current["role"]:
                return self.refuse(404, "no such role")
            expiry = now() + datetime.timedelta(seconds=float(current["expires_in"]))
            with lock:
                serial = next_serial()
                key_id = f"ASIASTANDIN{serial:05d}"
                state["issued"]["aws"] += 1
                state["tokens"].append(key_id)
                write_counts()
            body = {
                "Code": "Success",
                "LastUpdated": iso(now()),
                "Type": "AWS-HMAC",
                "AccessKeyId": key_id,
                "SecretAccessKey": f"standin-secret-{serial}",
                "Token": f"standin-session-{serial}",
                "Expiration": iso(expiry),
            }
            return self.answer(200, json.dumps(body), "application/json")

        def container(self, current):
            if args.container_token is not None and \
                    self.headers.get("Authorization") != args.container_token:
                return self.refuse(401, "Authorization missing or not the container token")
            if self.failing(current):
                return None
            expiry = now() + datetime.timedelta(seconds=float(current["expires_in"]))
            with lock:
                serial = next_serial()
                key_id = f"ASIACONTAINER{serial:05d}"
                state["issued"]["ecs"] += 1
                state["tokens"].append(key_id)
                write_counts()
            body = {
                "AccessKeyId": key_id,
                "SecretAccessKey": f"standin-secret-{serial}",
                "Token": f"standin-container-session-{serial}",
                "Expiration": iso(expiry),
                "RoleArn": f"arn:aws:iam::123456789012:role/{current['role']}",
            }
            return self.answer(200, json.dumps(body), "application/json")

        def azure(self, query, current):
            if self.headers.get("Metadata", "").lower() != "true":
                return self.refuse(400, "Metadata: true header expected")
            if args.identity_header is not None and \
                    self.headers.get("X-IDENTITY-HEADER") != args.identity_header:
                return self.refuse(401, "X-IDENTITY-HEADER missing or wrong")
            resource = query.get("resource")
            if not resource:
                return self.refuse(400, "resource parameter expected")
            if self.failing(current):
                return None
            issued = int(now().timestamp())
            expires = issued + int(float(current["expires_in"]))
            with lock:
                serial = next_serial()
            claims = {"aud": resource.rstrip("/"), "iss": f"https://sts.windows.net/{AZURE_TENANT}/",
                      "iat": issued - 60, "nbf": issued - 60, "exp": expires,
                      "oid": "00000000-0000-0000-0000-00000000cafe", "tid": AZURE_TENANT,
                      "jti": f"standin-{serial}"}
            token = ".".join(b64url(json.dumps(part).encode())
                             for part in ({"alg": "none", "typ": "JWT"}, claims)) + "." + b64url(b"standin")
            with lock:
                state["issued"]["azure"] += 1
                state["tokens"].append(token)
                write_counts()
            body = {"access_token": token, "expires_in": str(expires - issued),
                    "expires_on": str(expires), "not_before": str(issued - 60),
                    "resource": resource, "token_type": "Bearer"}
            return self.answer(200, json.dumps(body), "application/json")

        def gce(self, path, current):
            flavor = [("Metadata-Flavor", "Google")]
            if self.headers.get("Metadata-Flavor") != "Google":
                return self.refuse(403, "Metadata-Flavor: Google header expected", flavor)
            if path != "/computeMetadata/v1/instance/service-accounts/default/token":
                return self.refuse(404, "not served by the stand-in", flavor)
            if self.failing(current, flavor):
                return None
            with lock:
                serial = next_serial()
                token = f"ya29.standin-gce-{serial}"
                state["issued"]["gce"] += 1
                state["tokens"].append(token)
                write_counts()
            body = {"access_token": token, "expires_in": int(float(current["expires_in"])),
                    "token_type": "Bearer"}
            return self.answer(200, json.dumps(body), "application/json", flavor)

        do_GET = do_PUT = do_POST = do_HEAD = handle_any

    class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
        daemon_threads = True

    server = Server(("127.0.0.1", 0), Handler)
    with lock:
        write_counts()
    with open(args.ready + ".tmp", "w") as handle:
        handle.write(f"port={server.server_address[1]}\n")
    os.replace(args.ready + ".tmp", args.ready)
    server.serve_forever()


def now():
    return datetime.datetime.now(datetime.timezone.utc)


def iso(moment):
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


if __name__ == "__main__":
    main()
