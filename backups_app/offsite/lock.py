"""S3 Object Lock on offsite copies (STANZA_OFFSITE_LOCK_DAYS, STANZA_OFFSITE_LOCK_MODE).

With the lock on, every object of a copy is written retained for that many days: nobody with
the site's credentials (an intruder on the server included) can delete or overwrite it before.
A site-file object already in the store is not sent again: a copy that names it extends its
retention instead (`extend`), so it lasts at least as long as the newest copy naming it.
Owns: the arguments every write takes, the check that the bucket can lock, the extension of
reused objects, the test of whether an object is still retained, and deleting every version of
an object whose retention ended (a locked bucket keeps versions: a plain delete only hides an
object behind a delete marker; offsite.store.delete uses it while the lock is on).
Imports: conf and engine.backups only, so offsite.store can use it; callers make the requests
inside their own store_errors, which turns what the store says into one line.
"""

from datetime import timedelta

from django.utils import timezone

from backups_app import conf
from backups_app.core.errors import BackupError


class LockError(BackupError):
    """The lock is on, and the store cannot lock what it keeps."""


def days():
    return conf.get("STANZA_OFFSITE_LOCK_DAYS")


# A reused object's retention is extended this much beyond what the copy needs, so the copies
# of the following week need no request for it (offsite.state records each retain-until).
MARGIN = timedelta(days=7)


def until(now=None):
    """When an object written now is retained until; None when the lock is off."""
    n = days()
    return (now or timezone.now()) + timedelta(days=n) if n else None


def put_args(now=None):
    """What put_object and create_multipart_upload take to lock the object; {} when off."""
    n = days()
    if not n:
        return {}
    return {
        "ObjectLockMode": conf.get("STANZA_OFFSITE_LOCK_MODE"),
        "ObjectLockRetainUntilDate": (now or timezone.now()) + timedelta(days=n),
    }


def check_bucket(store):
    """LockError (one line) when the lock is on and the store cannot lock what it keeps."""
    if not days():
        return
    if store.client is None:
        raise LockError(
            "STANZA_OFFSITE_LOCK_DAYS needs an S3 store (STANZA_OFFSITE_URL, or an S3 backend "
            'as STORAGES["offsite"]): this one cannot lock objects'
        )
    client = store.client
    try:
        answer = client.get_object_lock_configuration(Bucket=store.bucket)
    except client.exceptions.ClientError as err:
        if err.response.get("Error", {}).get("Code") != "ObjectLockConfigurationNotFoundError":
            raise
        answer = {}
    if answer.get("ObjectLockConfiguration", {}).get("ObjectLockEnabled") != "Enabled":
        raise LockError(
            f"bucket {store.bucket} has no Object Lock, which STANZA_OFFSITE_LOCK_DAYS needs: "
            "use a bucket created with Object Lock enabled, or set STANZA_OFFSITE_LOCK_DAYS=0"
        )


def lock_written(store, name, head, args):
    """After a multipart upload (`head`: its head_object): lock the object if the store did not
    apply the lock asked for when the upload began (some S3-compatible stores do not)."""
    if not args or head.get("ObjectLockRetainUntilDate"):
        return
    store.client.put_object_retention(
        Bucket=store.bucket,
        Key=store.key(name),
        VersionId=head.get("VersionId"),
        Retention={
            "Mode": args["ObjectLockMode"],
            "RetainUntilDate": args["ObjectLockRetainUntilDate"],
        },
    )


def extend(store, names, recorded, now=None):
    """Keep the objects `names` (in the store already, named again by a copy being made)
    retained at least STANZA_OFFSITE_LOCK_DAYS from now, never shortened.

    `recorded`: {name: retain-until} as last recorded (offsite.state). An object recorded as
    retained long enough costs no request; any other is read (HEAD: its retention may be later
    than recorded) and, when sooner, extended to now + LOCK_DAYS + MARGIN. Returns {name:
    retain-until} of every object read, to record.
    """
    needed = until(now)
    if needed is None:
        return {}
    client, learnt = store.client, {}
    for name in names:
        known = recorded.get(name)
        if known is not None and known >= needed:
            continue
        head = client.head_object(Bucket=store.bucket, Key=store.key(name))
        retained_until = head.get("ObjectLockRetainUntilDate")
        if retained_until is None or retained_until < needed:
            retained_until = needed + MARGIN
            client.put_object_retention(
                Bucket=store.bucket,
                Key=store.key(name),
                VersionId=head.get("VersionId"),
                Retention={
                    "Mode": head.get("ObjectLockMode") or conf.get("STANZA_OFFSITE_LOCK_MODE"),
                    "RetainUntilDate": retained_until,
                },
            )
        learnt[name] = retained_until
    return learnt


def retained(store, names, now):
    """Whether any of the objects `names` is retained beyond `now` (its current version)."""
    if store.client is None:
        return False
    client = store.client
    for name in names:
        try:
            head = client.head_object(Bucket=store.bucket, Key=store.key(name))
        except client.exceptions.ClientError as err:
            if err.response.get("Error", {}).get("Code") in ("404", "NoSuchKey"):
                continue  # gone meanwhile
            raise
        until = head.get("ObjectLockRetainUntilDate")
        if until is not None and until > now:
            return True
    return False


def delete_every_version(store, name):
    """Delete every version (and delete marker) of the object `name`: on a bucket with Object
    Lock, which keeps versions, that is what deleting it means."""
    client, key = store.client, store.key(name)
    pages = client.get_paginator("list_object_versions").paginate(Bucket=store.bucket, Prefix=key)
    versions = [
        version["VersionId"]
        for page in pages
        for kind in ("Versions", "DeleteMarkers")
        for version in page.get(kind, ())
        if version["Key"] == key
    ]
    for version in versions:
        client.delete_object(Bucket=store.bucket, Key=key, VersionId=version)
