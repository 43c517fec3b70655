#!/usr/bin/env python3
"""Test-bed helper for the end-to-end store tests: create buckets and containers, overwrite,
delete and list objects behind Cairn's back, using each emulator's own API (standard library
only, plus boto3 from the moto venv for S3).

  fixture.py s3 ENDPOINT create-bucket BUCKET [versioned|unversioned|locked]
  fixture.py s3 ENDPOINT head-lock BUCKET KEY           (prints the Object Lock mode and date)
  fixture.py s3 ENDPOINT put|delete BUCKET KEY          (put writes b"tampered")
  fixture.py s3 ENDPOINT put-file BUCKET KEY FILE       (writes FILE's bytes: a forged object)
  fixture.py s3 ENDPOINT versions BUCKET PREFIX         (prints KEY<TAB>VERSION per line)
  fixture.py s3 ENDPOINT open-uploads BUCKET            (prints one key per line)
  fixture.py s3 ENDPOINT copy BUCKET FROM TO [OLD NEW]  (every object under prefix FROM to TO;
                                                        OLD replaced by NEW in manifest.json)
  fixture.py gcs ENDPOINT create-bucket BUCKET [versioned|unversioned]
  fixture.py gcs ENDPOINT put|delete BUCKET KEY
  fixture.py azure ENDPOINT create-container CONTAINER  (Azurite's well-known dev account)
  fixture.py azure ENDPOINT put|delete CONTAINER KEY
"""
import base64
import datetime
import hashlib
import hmac
import sys
import urllib.parse
import urllib.request

AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
TAMPERED = b"tampered"


def s3(endpoint, action, bucket, key=None, *more):
    mode = key or "versioned"
    import boto3

    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing")
    if action == "create-bucket" and mode == "locked":
        client.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
    elif action == "create-bucket":
        client.create_bucket(Bucket=bucket)
        if mode == "versioned":
            client.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    elif action == "put":
        client.put_object(Bucket=bucket, Key=key, Body=TAMPERED)
    elif action == "put-file":
        with open(more[0], "rb") as body:
            client.put_object(Bucket=bucket, Key=key, Body=body.read())
    elif action == "versions":
        pages = client.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=key)
        for page in pages:
            for version in page.get("Versions", []):
                print(f"{version['Key']}\t{version['VersionId']}")
    elif action == "delete":
        for version in client.list_object_versions(Bucket=bucket, Prefix=key).get("Versions", []):
            client.delete_object(Bucket=bucket, Key=version["Key"], VersionId=version["VersionId"])
    elif action == "head-lock":
        head = client.head_object(Bucket=bucket, Key=key)
        print(head.get("ObjectLockMode", ""), head.get("ObjectLockRetainUntilDate", ""))
    elif action == "copy":
        target, replace = more[0], more[1:]
        for item in client.list_objects_v2(Bucket=bucket, Prefix=key).get("Contents", []):
            body = client.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
            if replace and item["Key"].endswith("manifest.json"):
                body = body.replace(replace[0].encode(), replace[1].encode())
            client.put_object(Bucket=bucket, Key=target + item["Key"][len(key):], Body=body)
    elif action == "open-uploads":
        for upload in client.list_multipart_uploads(Bucket=bucket).get("Uploads", []):
            print(upload["Key"])


def request(method, url, data=None, headers=None):
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    with urllib.request.urlopen(req) as response:
        return response.read()


def gcs(endpoint, action, bucket, key=None):
    mode = key or "versioned"
    if action == "create-bucket":
        body = '{"name": "%s", "versioning": {"enabled": %s}}' % (bucket, "true" if mode == "versioned" else "false")
        request("POST", f"{endpoint}/storage/v1/b?project=test", body.encode(), {"Content-Type": "application/json"})
    elif action == "put":
        name = urllib.parse.quote(key, safe="")
        request("POST", f"{endpoint}/upload/storage/v1/b/{bucket}/o?uploadType=media&name={name}", TAMPERED,
                {"Content-Type": "application/octet-stream"})
    elif action == "delete":
        request("DELETE", f"{endpoint}/storage/v1/b/{bucket}/o/{urllib.parse.quote(key, safe='')}")


def azure(endpoint, action, container, key=None):
    path = f"/{container}" + (f"/{key}" if key else "")
    query = {"restype": "container"} if action == "create-container" else {}
    method = {"create-container": "PUT", "put": "PUT", "delete": "DELETE"}[action]
    data = TAMPERED if action == "put" else b""
    headers = {"x-ms-date": datetime.datetime.now(datetime.timezone.utc).strftime("%a, %d %b %Y %H:%M:%S GMT"),
               "x-ms-version": "2021-08-06"}
    if action == "put":
        headers["x-ms-blob-type"] = "BlockBlob"
    canonical_headers = "".join(f"{k}:{v}\n" for k, v in sorted(headers.items()))
    endpoint_path = urllib.parse.urlparse(endpoint).path.rstrip("/")
    resource = f"/{AZURITE_ACCOUNT}{endpoint_path}{urllib.parse.quote(path)}" + "".join(f"\n{k}:{v}" for k, v in sorted(query.items()))
    length = str(len(data)) if data else ""
    content_type = "application/octet-stream" if data else ""
    to_sign = "\n".join([method, "", "", length, "", content_type, "", "", "", "", "", ""]) + "\n" + canonical_headers + resource
    signature = base64.b64encode(hmac.new(base64.b64decode(AZURITE_KEY), to_sign.encode(), hashlib.sha256).digest()).decode()
    headers["Authorization"] = f"SharedKey {AZURITE_ACCOUNT}:{signature}"
    if content_type:
        headers["Content-Type"] = content_type
    url = endpoint.rstrip("/") + urllib.parse.quote(path) + ("?" + urllib.parse.urlencode(query) if query else "")
    request(method, url, data if data else None, headers)


def main():
    store, endpoint, action, *rest = sys.argv[1:]
    {"s3": s3, "gcs": gcs, "azure": azure}[store](endpoint, action, *rest)


if __name__ == "__main__":
    main()
