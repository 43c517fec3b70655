#!/usr/bin/env python3
"""A small HTTP fault proxy for the store tests: forwards requests to an object-store server
(moto) and, for a share of them, answers 500/503 the way S3 does, resets the connection, or
delays the answer. Python 3 stdlib only.

    fault_proxy.py --upstream http://127.0.0.1:PORT --control FILE --log FILE --ready FILE
                   [--auth-log FILE]

The upstream may be https (e.g. Azurite with --oauth, which takes bearer tokens only over
TLS); its certificate is not checked (a loopback emulator's self-signed one).

Listens on 127.0.0.1 (ephemeral port, written as `port=N` to the ready file). The control
file is JSON, re-read for every request so a test can change the faults while a backup runs:

    {"error_rate": 0.2,   # share of requests answered 500 InternalError / 503 SlowDown
     "reset_rate": 0.1,   # share of requests whose connection is closed without an answer
     "lost_rate": 0.0,    # share forwarded (the store acts on them), then closed without the answer
     "cut_rate": 0.0,     # share of answers with a body of 2 bytes or more cut after half of it
     "stall": 0.0,        # seconds every answer with a body pauses after half of it (slow answers)
     "delay": 0.0,        # seconds added before forwarding
     "down": false,       # true: every request gets 503 (the store is down)
     "seed": 7,           # random seed (read once, at start)
     "rules": [           # deterministic faults, each applied once, to the first request it fits:
       {"match": "^PUT ",     # regular expression searched in "METHOD /path?query"
        "outcome": "503",     # before forwarding: "500", "503", "reset"; after: "lost" (the store
                              # acted, the answer is dropped), "cut" (half the body, then closed),
                              # "stall" (half the body, a pause of stall_seconds, the rest),
                              # "late" (the store acted at once, the whole answer waits
                              # late_seconds: a long upload, seen from the client)
        "min_body": 0}],      # after-forwarding outcomes: only for answers with a body this large
     "stall_seconds": 2.0,
     "late_seconds": 2.0,
     "late_marker": "/tmp/y",  # written ("METHOD path") when a late answer starts to wait
     "hold": {"match": "^DELETE ", "after": 1, "marker": "/tmp/x"}}
                          # requests whose "METHOD path" matches the regex: the first
                          # `after` are forwarded, each next one is held (its path written
                          # to `marker`) until "hold" leaves the control file, then its
                          # connection is closed without forwarding it (outcome held)
Rules are used in order; a new list of rules in the control file starts them afresh.

Every request is logged as `<method>\\t<path>\\t<outcome>` (outcome: forwarded STATUS,
injected-500, injected-503, reset, lost STATUS, cut STATUS, stalled STATUS, late STATUS, down,
held). With --auth-log, every
request's Authorization header is also logged there as `<method>\\t<path>\\t<value>` (empty
when absent), so a test can see which credential a client really sent.
"""

import argparse
import http.client
import os
import time
import http.server
import json
import random
import re
import socket
import ssl
import threading
import urllib.parse

# Rule outcomes applied once the store has answered (the others replace forwarding).
AFTER_OUTCOMES = ("lost", "cut", "stall", "late")

ERRORS = {
    500: ("InternalError", "We encountered an internal error. Please try again."),
    503: ("SlowDown", "Please reduce your request rate."),
}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--control", required=True)
    parser.add_argument("--log", required=True)
    parser.add_argument("--ready", required=True)
    parser.add_argument("--auth-log")
    args = parser.parse_args()
    upstream = urllib.parse.urlsplit(args.upstream)
    lock = threading.Lock()
    log = open(args.log, "a", buffering=1)
    auth_log = open(args.auth_log, "a", buffering=1) if args.auth_log else None

    def control():
        try:
            with open(args.control) as handle:
                return json.load(handle)
        except (OSError, ValueError):
            return {}

    rng = random.Random(control().get("seed", 7))
    used_rules = {"key": None, "used": set()}

    def take_rule(settings, request, after, size=0):
        """The outcome of the first unused rule fitting this request at this stage, or None."""
        rules = settings.get("rules", [])
        key = json.dumps(rules, sort_keys=True)
        with lock:
            if used_rules["key"] != key:
                used_rules["key"], used_rules["used"] = key, set()
            for index, rule in enumerate(rules):
                outcome = str(rule.get("outcome"))
                if index in used_rules["used"] or (outcome in AFTER_OUTCOMES) != after:
                    continue
                if not re.search(rule.get("match", ""), request) or size < rule.get("min_body", 0):
                    continue
                used_rules["used"].add(index)
                return outcome
        return None

    matched = [0]

    def should_hold(method, path):
        rule = control().get("hold")
        if not rule or not re.search(rule.get("match", ""), f"{method} {path}"):
            return False
        with lock:
            matched[0] += 1
            return matched[0] > int(rule.get("after", 0))

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *_):
            pass

        def record(self, outcome):
            with lock:
                log.write(f"{self.command}\t{self.path}\t{outcome}\n")

        def body(self):
            length = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(length) if length else b""

        def error(self, status):
            code, message = ERRORS[status]
            payload = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
                       f"<Message>{message}</Message></Error>").encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def hold(self):
            marker = control().get("hold", {}).get("marker")
            if marker:
                with open(marker + ".tmp", "w") as handle:
                    handle.write(f"{self.command} {self.path}\n")
                os.replace(marker + ".tmp", marker)
            while control().get("hold"):
                time.sleep(0.05)
            self.record("held")
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

        def handle_any(self):
            data = self.body()
            if auth_log:
                with lock:
                    auth_log.write(f"{self.command}\t{self.path}\t{self.headers.get('Authorization', '')}\n")
            if should_hold(self.command, self.path):
                return self.hold()
            settings = control()
            with lock:
                roll = rng.random()
            if settings.get("down"):
                self.record("down")
                return self.error(503)
            reset = settings.get("reset_rate", 0.0)
            failure = settings.get("error_rate", 0.0)
            rule = take_rule(settings, f"{self.command} {self.path}", after=False)
            if rule in ("500", "503"):
                self.record(f"injected-{rule}")
                return self.error(int(rule))
            if rule == "reset" or roll < reset:
                self.record("reset")
                self.close_connection = True
                try:
                    self.connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                return None
            if roll < reset + failure:
                status = 503 if rng.random() < 0.5 else 500
                self.record(f"injected-{status}")
                return self.error(status)
            lost = roll < reset + failure + settings.get("lost_rate", 0.0)
            cut = not lost and roll < reset + failure + settings.get("lost_rate", 0.0) + settings.get("cut_rate", 0.0)
            if settings.get("delay"):
                threading.Event().wait(float(settings["delay"]))
            if upstream.scheme == "https":
                connection = http.client.HTTPSConnection(
                    upstream.hostname, upstream.port, timeout=120,
                    context=ssl._create_unverified_context())
            else:
                connection = http.client.HTTPConnection(upstream.hostname, upstream.port, timeout=120)
            headers = {k: v for k, v in self.headers.items() if k.lower() != "connection"}
            connection.request(self.command, self.path, body=data, headers=headers)
            response = connection.getresponse()
            payload = response.read()
            size = len(payload) if self.command != "HEAD" else 0
            rule = take_rule(settings, f"{self.command} {self.path}", after=True, size=size)
            lost = lost or rule == "lost"
            cut = cut or rule == "cut"
            stall = float(settings.get("stall_seconds", 2.0)) if rule == "stall" else settings.get("stall")
            if lost:
                self.record(f"lost {response.status}")
                connection.close()
                self.close_connection = True
                try:
                    self.connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                return None
            cut = cut and self.command != "HEAD" and len(payload) >= 2
            if rule == "late":
                marker = settings.get("late_marker")
                if marker:
                    with open(marker + ".tmp", "w") as handle:
                        handle.write(f"{self.command} {self.path}\n")
                    os.replace(marker + ".tmp", marker)
                threading.Event().wait(float(settings.get("late_seconds", 2.0)))
            outcome = "cut" if cut else "stalled" if rule == "stall" else \
                "late" if rule == "late" else "forwarded"
            self.record(f"{outcome} {response.status}")
            self.send_response(response.status)
            for name, value in response.getheaders():
                if name.lower() not in ("transfer-encoding", "connection", "content-length"):
                    self.send_header(name, value)
            # HEAD answers carry the object's length, not the (empty) payload's.
            length = response.getheader("Content-Length") if self.command == "HEAD" else None
            self.send_header("Content-Length", length or str(len(payload)))
            self.end_headers()
            try:
                self.send_body(payload, cut, stall)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up on the answer (e.g. it needed only the status)
            connection.close()
            return None

        def send_body(self, payload, cut, stall):
            if self.command != "HEAD":
                half = len(payload) // 2
                self.wfile.write(payload[:half])
                self.wfile.flush()
                if cut:
                    self.close_connection = True
                    try:
                        self.connection.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
                    return None
                if stall and payload:
                    threading.Event().wait(float(stall))
                self.wfile.write(payload[half:])

        do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = handle_any

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    with open(args.ready + ".tmp", "w") as handle:
        handle.write(f"port={server.server_address[1]}\n")
    os.replace(args.ready + ".tmp", args.ready)
    server.serve_forever()


if __name__ == "__main__":
    main()
