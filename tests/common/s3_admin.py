#!/usr/bin/env python3
"""S3 administration for the tests, through the S3 API with boto3 (installed with moto).

What a test does "with the same credentials" as ocvault, outside ocvault: the attacker who
deletes and overwrites, the bucket lifecycle rule that moves packs to GLACIER, the operator
who creates buckets. Called by tests/common/s3_admin.rs:

    s3_admin.py ACTION --endpoint URL [--bucket B] [--prefix P] [--storage-class C]

Credentials come from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (never argv). Actions that
act on given objects read a JSON list of {"key": ..., "version_id": ...} from --targets FILE.
Every action prints one JSON document on standard output; a failure of one object is
reported in its entry ("ok": false, "error": the S3 error code), a failure of the action
itself exits 1 with the reason on standard error.
"""

import argparse
import json
import sys
import urllib.request

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

# Every request under a time limit, and no retry loops that would hide a refusal.
CONFIG = Config(
    connect_timeout=10,
    read_timeout=30,
    retries={"max_attempts": 2, "mode": "standard"},
    s3={"addressing_style": "path"},
)


def client(endpoint, service="s3"):
    return boto3.client(service, endpoint_url=endpoint, region_name="us-east-1", config=CONFIG)


def error_code(e):
    return e.response.get("Error", {}).get("Code", str(e))


def iso(d):
    return d.isoformat() if d is not None else None


def create_bucket(s3, a):
    s3.create_bucket(Bucket=a.bucket, ObjectLockEnabledForBucket=a.object_lock)
    if a.versioning and not a.object_lock:
        s3.put_bucket_versioning(Bucket=a.bucket, VersioningConfiguration={"Status": "Enabled"})
    status = s3.get_bucket_versioning(Bucket=a.bucket).get("Status")
    return {"bucket": a.bucket, "versioning": status, "object_lock": a.object_lock}


def list_keys(s3, a):
    out = []
    pages = s3.get_paginator("list_objects_v2").paginate(
        Bucket=a.bucket, Prefix=a.prefix
    )
    for page in pages:
        for o in page.get("Contents", []):
            out.append(
                {
                    "key": o["Key"],
                    "size": o["Size"],
                    "storage_class": o.get("StorageClass", "STANDARD"),
                    "last_modified": iso(o.get("LastModified")),
                }
            )
    return out


def list_versions(s3, a):
    out = []
    pages = s3.get_paginator("list_object_versions").paginate(
        Bucket=a.bucket, Prefix=a.prefix
    )
    for page in pages:
        for v in page.get("Versions", []):
            out.append(
                {
                    "key": v["Key"],
                    "version_id": v["VersionId"],
                    "is_latest": v["IsLatest"],
                    "delete_marker": False,
                    "size": v["Size"],
                    "storage_class": v.get("StorageClass", "STANDARD"),
                    "last_modified": iso(v.get("LastModified")),
                }
            )
        for m in page.get("DeleteMarkers", []):
            out.append(
                {
                    "key": m["Key"],
                    "version_id": m["VersionId"],
                    "is_latest": m["IsLatest"],
                    "delete_marker": True,
                    "size": 0,
                    "storage_class": None,
                    "last_modified": iso(m.get("LastModified")),
                }
            )
    return out


def per_object(a, targets, call):
    """Runs `call(target)` for each target; one entry per target, refusals included."""
    out = []
    for t in targets:
        entry = {"key": t["key"], "version_id": t.get("version_id"), "ok": True, "error": None}
        try:
            entry.update(call(t) or {})
        except ClientError as e:
            entry["ok"] = False
            entry["error"] = error_code(e)
        out.append(entry)
    return out


def version_args(t):
    return {"VersionId": t["version_id"]} if t.get("version_id") else {}


def delete(s3, a, targets):
    def one(t):
        r = s3.delete_object(Bucket=a.bucket, Key=t["key"], **version_args(t))
        return {"delete_marker": bool(r.get("DeleteMarker")), "new_version_id": r.get("VersionId")}

    return per_object(a, targets, one)


def overwrite(s3, a, targets):
    def one(t):
        junk = b"encrypted by ransomware: pay up\n" * 8
        r = s3.put_object(Bucket=a.bucket, Key=t["key"], Body=junk)
        return {"new_version_id": r.get("VersionId")}

    return per_object(a, targets, one)


def put_locked(s3, a, targets):
    """PUT a small object with COMPLIANCE retention until now + --days (harness self-test)."""
    import datetime

    until = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=a.days)

    def one(t):
        r = s3.put_object(
            Bucket=a.bucket,
            Key=t["key"],
            Body=b"locked test object\n",
            ObjectLockMode="COMPLIANCE",
            ObjectLockRetainUntilDate=until,
        )
        return {"new_version_id": r.get("VersionId")}

    return per_object(a, targets, one)


def set_storage_class(s3, a, targets):
    """CopyObject onto itself with a new class: what a lifecycle transition does."""

    def one(t):
        r = s3.copy_object(
            Bucket=a.bucket,
            Key=t["key"],
            CopySource={"Bucket": a.bucket, "Key": t["key"]},
            StorageClass=a.storage_class,
            MetadataDirective="COPY",
        )
        return {"new_version_id": r.get("VersionId")}

    return per_object(a, targets, one)


def head(s3, a, targets):
    def one(t):
        r = s3.head_object(Bucket=a.bucket, Key=t["key"], **version_args(t))
        # moto answers GetObjectTagging of a GLACIER object with InvalidObjectState (S3 does
        # not): the tags of such an object are unknown (null), the HEAD still counts.
        try:
            tagging = s3.get_object_tagging(Bucket=a.bucket, Key=t["key"], **version_args(t))
            tags = {x["Key"]: x["Value"] for x in tagging.get("TagSet", [])}
        except ClientError as e:
            if error_code(e) != "InvalidObjectState":
                raise
            tags = None
        return {
            "tags": tags,
            "version_id": r.get("VersionId"),
            "size": r.get("ContentLength"),
            "storage_class": r.get("StorageClass", "STANDARD"),
            "lock_mode": r.get("ObjectLockMode"),
            "retain_until": iso(r.get("ObjectLockRetainUntilDate")),
            "restore": r.get("Restore"),
        }

    return per_object(a, targets, one)


def iam_setup(a):
    """Creates an admin user (everything allowed) and a backup-host user (S3 without any
    delete or retention bypass), then switches moto's authentication on: from then on
    every request must be signed with one of these keys and is checked against its policy.
    Must be the first use of the server's IAM (auth is off until then)."""
    iam = client(a.endpoint, "iam")

    def user(name, statements):
        iam.create_user(UserName=name)
        policy = {"Version": "2012-10-17", "Statement": statements}
        iam.put_user_policy(UserName=name, PolicyName=name, PolicyDocument=json.dumps(policy))
        k = iam.create_access_key(UserName=name)["AccessKey"]
        return {"access_key_id": k["AccessKeyId"], "secret_access_key": k["SecretAccessKey"]}

    admin = user("ocvault-admin", [{"Effect": "Allow", "Action": "*", "Resource": "*"}])
    denied = [
        "s3:DeleteObject",
        "s3:DeleteObjectVersion",
        "s3:BypassGovernanceRetention",
        "s3:PutBucketLifecycleConfiguration",
        "s3:PutBucketVersioning",
        "s3:PutBucketObjectLockConfiguration",
    ]
    backup = user(
        "ocvault-backup-host",
        [
            {"Effect": "Allow", "Action": "s3:*", "Resource": "*"},
            {"Effect": "Deny", "Action": denied, "Resource": "*"},
        ],
    )
    # moto's server mode: POST a count to /moto-api/reset-auth; that many more requests go
    # unauthenticated, every later one is authenticated and authorised.
    req = urllib.request.Request(
        a.endpoint + "/moto-api/reset-auth",
        data=b"0",
        method="POST",
        headers={"Content-Type": "text/plain"},
    )
    with urllib.request.urlopen(req, timeout=30) as r:
        r.read()
    return {"admin": admin, "backup": backup}


def main():
    p = argparse.ArgumentParser()
    p.add_argument(
        "action",
        choices=[
            "create-bucket",
            "list",
            "versions",
            "delete",
            "overwrite",
            "put-locked",
            "set-class",
            "head",
            "iam-setup",
        ],
    )
    p.add_argument("--endpoint", required=True)
    p.add_argument("--bucket")
    p.add_argument("--prefix", default="")
    p.add_argument("--object-lock", action="store_true")
    p.add_argument("--versioning", action="store_true")
    p.add_argument("--storage-class", default="GLACIER")
    p.add_argument("--days", type=int, default=1)
    p.add_argument("--targets", help="JSON file: [{key, version_id}]")
    a = p.parse_args()
    if a.action == "iam-setup":
        result = iam_setup(a)
    else:
        s3 = client(a.endpoint)
        simple = {"create-bucket": create_bucket, "list": list_keys, "versions": list_versions}
        if a.action in simple:
            result = simple[a.action](s3, a)
        else:
            with open(a.targets) as f:
                targets = json.load(f)
            acts = {"delete": delete, "overwrite": overwrite,
                "put-locked": put_locked, "set-class": set_storage_class, "head": head}
            result = acts[a.action](s3, a, targets)
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    try:
        main()
    except ClientError as e:
        sys.stderr.write(f"s3_admin: {error_code(e)}: {e}\n")
        sys.exit(1)
