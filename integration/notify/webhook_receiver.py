#!/usr/bin/env python3
"""A webhook receiver for Cairn's notifications (`--notify-url`): the end-to-end tests'
stand-in for a chat or alerting system, and the example of docs/operations.md
("Notifications") of how a receiver checks `X-Cairn-Signature`.

    webhook_receiver.py --record FILE [--secret-file FILE] [--fail-first N] [--hang]

Listens on a free loopback port and prints it as the first line on stdout. Every POST is
recorded as one JSON line in FILE, before it is answered: its path, headers, body and whether
its signature is valid under the secret (null without --secret-file). It answers 500 to the
first N requests (--fail-first), never answers (--hang: holds the connection for 10 minutes),
or answers 204, and 401 to a request whose signature is not valid.
"""

import argparse
import hashlib
import hmac
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def signature_valid(secret: bytes, body: bytes, header: str) -> bool:
    """The check a receiver makes: HMAC-SHA256 of the exact body bytes, compared in
    constant time with the header's `sha256=<hex>`."""
    expected = "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, header or "")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--record", required=True)
    parser.add_argument("--secret-file")
    parser.add_argument("--fail-first", type=int, default=0)
    parser.add_argument("--hang", action="store_true")
    args = parser.parse_args()
    secret = None
    if args.secret_file:
        with open(args.secret_file, "rb") as f:
            # The secret is the file's first line, without its line end (as Cairn reads it).
            secret = f.read().split(b"\n", 1)[0].rstrip(b"\r")
    lock = threading.Lock()
    seen = [0]

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(length)
            valid = None
            if secret is not None:
                valid = signature_valid(secret, body, self.headers.get("X-Cairn-Signature"))
            with lock:
                seen[0] += 1
                number = seen[0]
                if args.hang:
                    status = None
                elif number <= args.fail_first:
                    status = 500
                elif valid is False:
                    status = 401
                else:
                    status = 204
                record = {
                    "path": self.path,
                    "headers": {k.lower(): v for k, v in self.headers.items()},
                    "body": body.decode("utf-8", "replace"),
                    "signature_valid": valid,
                    "status": status,
                }
                with open(args.record, "a", encoding="utf-8") as out:
                    out.write(json.dumps(record) + "\n")
            if status is None:
                time.sleep(600)
                return
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format, *log_args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    print(server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
