#!/usr/bin/env python3
"""A scripted Azure Blob server with blob versioning, for the paths Azurite cannot test:
Azurite has no blob versioning, so nothing there ever answers `x-ms-version-id`. This server
speaks just enough of Azure Blob's REST API for Cairn's Azure adapter (object_store's client
plus the adapter's own Delete Blob) on an account with versioning on. Python 3 stdlib only.

    azure_versioned.py --account devstoreaccount1 --container NAME --ready FILE [--log FILE]

Listens on 127.0.0.1 (ephemeral port, written as `port=N` to the ready file); the endpoint is
`http://127.0.0.1:PORT/ACCOUNT`. Only the named container exists. Requests are not
authenticated (the signature is not checked), so a test can also write behind Cairn's back
with a plain `PUT` (header `x-ms-blob-type: BlockBlob`).

What it does, as Azure does with versioning on (REST API version 2023-11-03):
- Put Blob, and Put Block + Put Block List: each commit creates a new version and answers
  `x-ms-version-id` (a timestamp such as `2026-12-07T01:02:03.0000001Z`) and an ETag;
- Get Blob / Get Blob Properties (GET, HEAD): the current version, or `?versionid=`; `If-Match`;
  `Range`/`x-ms-range: bytes=S-E` (206 with `Content-Range`, 416 `InvalidRange` from past the end);
- List Blobs (`restype=container&comp=list`, `prefix`, `maxresults`, `marker`): current blobs;
- Delete Blob: without `versionid` the current version becomes a previous version (still
  readable by its id); with it, that version is removed.
Not implemented (the adapter does not use them here): open-ended or multiple ranges, leases, tags, snapshots, batches.
Every request is logged as `<method>\\t<path>\\t<status>` when --log is given.
"""

import argparse
import datetime
import email.utils
import http.server
import os
import threading
import urllib.parse
import xml.etree.ElementTree as ET


class Blobs:
    """Every version of every blob of the one container."""

    def __init__(self):
        self.lock = threading.Lock()
        self.versions = {}  # name -> list of version dicts, oldest first
        self.current = {}   # name -> version id of the current version
        self.blocks = {}    # (name, block id) -> bytes
        self.counter = 0

    def commit(self, name, data):
        with self.lock:
            self.counter += 1
            now = datetime.datetime.now(datetime.timezone.utc)
            version = {
                "id": now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{self.counter:07d}Z",
                "etag": f'"0x8DC{self.counter:013X}"',
                "modified": email.utils.format_datetime(now, usegmt=True),
                "data": data,
            }
            self.versions.setdefault(name, []).append(version)
            self.current[name] = version["id"]
            return version

    def find(self, name, version_id=None):
        with self.lock:
            return self.find_unlocked(name, version_id)

    def find_unlocked(self, name, version_id=None):
        wanted = version_id or self.current.get(name)
        return next((v for v in self.versions.get(name, []) if v["id"] == wanted), None)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--account", required=True)
    parser.add_argument("--container", required=True)
    parser.add_argument("--ready", required=True)
    parser.add_argument("--log")
    args = parser.parse_args()
    blobs = Blobs()
    log = open(args.log, "a", buffering=1) if args.log else None

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *_):
            pass

        def answer(self, status, headers=(), body=b"", length=None):
            if log:
                log.write(f"{self.command}\t{self.path}\t{status}\n")
            self.send_response(status)
            for name, value in headers:
                self.send_header(name, value)
            self.send_header("x-ms-request-id", "scripted")
            self.send_header("Content-Length", str(len(body) if length is None else length))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def error(self, status, code):
            body = (f'<?xml version="1.0" encoding="utf-8"?><Error><Code>{code}</Code>'
                    f"<Message>{code}</Message></Error>").encode()
            self.answer(status, [("x-ms-error-code", code),
                                 ("Content-Type", "application/xml")], body)

        def parse(self):
            """(container, blob name, query) of the request, or None for another account."""
            url = urllib.parse.urlsplit(self.path)
            parts = urllib.parse.unquote(url.path).lstrip("/").split("/", 2)
            if parts[0] != args.account or len(parts) < 2:
                return None
            query = dict(urllib.parse.parse_qsl(url.query, keep_blank_values=True))
            return parts[1], (parts[2] if len(parts) > 2 else ""), query

        def request_body(self):
            length = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(length) if length else b""

        def route(self):
            data = self.request_body()
            parsed = self.parse()
            if parsed is None:
                return self.error(400, "InvalidUri")
            container, name, query = parsed
            if container != args.container:
                return self.error(404, "ContainerNotFound")
            if not name:
                if self.command == "GET" and query.get("comp") == "list":
                    return self.list_blobs(query)
                return self.error(400, "UnsupportedOperation")
            handler = {"PUT": self.put, "GET": self.get, "HEAD": self.get,
                       "DELETE": self.delete}.get(self.command)
            if handler is None:
                return self.error(405, "UnsupportedHttpVerb")
            return handler(name, query, data)

        def committed(self, version):
            self.answer(201, [("ETag", version["etag"]), ("Last-Modified", version["modified"]),
                              ("x-ms-version-id", version["id"]),
                              ("x-ms-request-server-encrypted", "true")])

        def put(self, name, query, data):
            comp = query.get("comp")
            if comp == "block":
                with blobs.lock:
                    blobs.blocks[(name, query["blockid"])] = data
                return self.answer(201)
            if comp == "blocklist":
                ids = [element.text or "" for element in ET.fromstring(data)]
                with blobs.lock:
                    missing = [i for i in ids if (name, i) not in blobs.blocks]
                    if missing:
                        return self.error(400, "InvalidBlockList")
                    content = b"".join(blobs.blocks[(name, i)] for i in ids)
                    for key in [key for key in blobs.blocks if key[0] == name]:
                        del blobs.blocks[key]
                return self.committed(blobs.commit(name, content))
            if comp is not None:
                return self.error(400, "UnsupportedQueryParameter")
            return self.committed(blobs.commit(name, data))

        def get(self, name, query, _data):
            version = blobs.find(name, query.get("versionid"))
            if version is None:
                return self.error(404, "BlobNotFound")
            expected = self.headers.get("If-Match")
            if expected and expected != "*" and expected != version["etag"]:
                return self.error(412, "ConditionNotMet")
            with blobs.lock:
                is_current = blobs.current.get(name) == version["id"]
            headers = [("ETag", version["etag"]), ("Last-Modified", version["modified"]),
                       ("x-ms-version-id", version["id"]),
                       ("x-ms-is-current-version", "true" if is_current else "false"),
                       ("x-ms-blob-type", "BlockBlob"),
                       ("Content-Type", "application/octet-stream")]
            data = version["data"]
            wanted = self.headers.get("x-ms-range") or self.headers.get("Range")
            if wanted and wanted.startswith("bytes="):
                first, _, last = wanted[len("bytes="):].partition("-")
                start, end = int(first), min(int(last), len(data) - 1)
                if start >= len(data):
                    return self.error(416, "InvalidRange")
                headers.append(("Content-Range", f"bytes {start}-{end}/{len(data)}"))
                part = data[start:end + 1]
                return self.answer(206, headers, part, len(part))
            self.answer(200, headers, data, len(data))

        def delete(self, name, query, _data):
            version_id = query.get("versionid")
            with blobs.lock:
                versions = blobs.versions.get(name, [])
                if version_id is None:
                    current = blobs.current.pop(name, None)
                    if current is None:
                        return self.error(404, "BlobNotFound")
                    return self.answer(202)
                kept = [v for v in versions if v["id"] != version_id]
                if len(kept) == len(versions):
                    return self.error(404, "BlobNotFound")
                blobs.versions[name] = kept
                if blobs.current.get(name) == version_id:
                    del blobs.current[name]
            return self.answer(202)

        def list_blobs(self, query):
            prefix = query.get("prefix", "")
            marker = query.get("marker", "")
            limit = int(query.get("maxresults") or 5000)
            with blobs.lock:
                names = sorted(n for n in blobs.current
                               if n.startswith(prefix) and n >= marker)
                found = [(n, blobs.find_unlocked(n)) for n in names[:limit]]
                following = names[limit] if len(names) > limit else ""
            items = "".join(
                f"<Blob><Name>{escape(n)}</Name><VersionId>{v['id']}</VersionId>"
                "<IsCurrentVersion>true</IsCurrentVersion><Properties>"
                f"<Last-Modified>{v['modified']}</Last-Modified><Etag>{v['etag']}</Etag>"
                f"<Content-Length>{len(v['data'])}</Content-Length>"
                "<Content-Type>application/octet-stream</Content-Type>"
                "<BlobType>BlockBlob</BlobType></Properties></Blob>"
                for n, v in found)
            body = ('<?xml version="1.0" encoding="utf-8"?>'
                    f'<EnumerationResults ContainerName="{escape(args.container)}">'
                    f"<Prefix>{escape(prefix)}</Prefix><MaxResults>{limit}</MaxResults>"
                    f"<Blobs>{items}</Blobs><NextMarker>{escape(following)}</NextMarker>"
                    "</EnumerationResults>").encode()
            self.answer(200, [("Content-Type", "application/xml")], body)

        do_GET = do_PUT = do_HEAD = do_DELETE = route

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    with open(args.ready + ".tmp", "w") as handle:
        handle.write(f"port={server.server_address[1]}\n")
    os.replace(args.ready + ".tmp", args.ready)
    server.serve_forever()


def escape(text):
    return (text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace('"', "&quot;"))

if __name__ == "__main__":
    main()
