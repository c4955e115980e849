"""Offsite copies: every backup also in S3-compatible storage, verified, optionally encrypted.

The store is Django's `STORAGES["offsite"]` when the site defines it (any django-storages
backend), else an S3Storage built from `STANZA_OFFSITE_URL` (credentials and endpoint from the
standard `AWS_*` variables, which boto3 reads). Objects: `PREFIX/NAME` (or `PREFIX/NAME.age`,
encrypted to `STANZA_OFFSITE_AGE_RECIPIENTS`), then `PREFIX/NAME.json`, then `PREFIX/NAME.sha256`
(the SHA-256 of the unencrypted backup). The `.sha256` is written last and only once the store
confirmed the bytes it holds, so the store's listing is the record of what is offsite: a backup
with its `.sha256` there has a complete, verified copy; anything else is not offsite (yet).
"""

import base64
import contextlib
import hashlib
import logging
import os
import posixpath
import queue
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

from django.conf import settings
from django.utils import timezone

from backups_app import conf
from backups_app.core import files
from backups_app.core.formatting import human_size
from backups_app.engine import backups
from backups_app.engine.backups import CHECKSUM_SUFFIX, MANIFEST_SUFFIX, BackupError
from backups_app.health.problems import Problem

logger = logging.getLogger(__name__)

JOB_NAME = "copy-offsite"
ENCRYPTED_SUFFIX = ".age"
# Parts of 8 MiB, four in flight: memory stays near 50 MB whatever the backup's size, and four
# connections keep a store busy (bench/offsite.py compares this with boto3's upload_file).
PART_SIZE = 8 * 1024 * 1024
PARTS_IN_FLIGHT = 4
CHUNK = 1024 * 1024
BEHIND_AFTER = timedelta(hours=1)
FETCH_PREFIX = ".stanza-offsite-"
FETCH_LEFTOVER_AGE = timedelta(hours=6)


class OffsiteError(BackupError):
    """The offsite store is unreachable, refused, or holds no sound copy; one plain line."""


@dataclass(frozen=True)
class OffsiteCopy:
    """One backup's objects in the store."""

    name: str  # the backup's name (without .age)
    key: str | None  # the object holding its data: NAME or NAME.age; None when only sidecars
    size: int
    copied: datetime | None  # when its .sha256 was written: the copy was confirmed then
    modified: datetime  # the newest of its objects

    @property
    def complete(self):
        return self.key is not None and self.copied is not None

    @property
    def encrypted(self):
        return bool(self.key and self.key.endswith(ENCRYPTED_SUFFIX))


# --- settings and the store ---------------------------------------------------------------


def enabled():
    """Offsite copies are on when STANZA_OFFSITE_URL is set or the site defines the storage."""
    return bool(conf.get("STANZA_OFFSITE_URL")) or "offsite" in settings.STORAGES


def location():
    """Where the copies go, in words (for result lines and pages)."""
    url = conf.get("STANZA_OFFSITE_URL")
    return url or 'STORAGES["offsite"]'


def storage():
    """The Django storage that holds the offsite copies."""
    if "offsite" in settings.STORAGES:
        from django.core.files.storage import storages

        return storages["offsite"]
    url = conf.get("STANZA_OFFSITE_URL")
    if not url:
        raise OffsiteError("offsite copies are off: STANZA_OFFSITE_URL is not set")
    from botocore.config import Config
    from storages.backends.s3 import S3Storage

    parts = urlsplit(url)
    endpoint = os.environ.get("AWS_ENDPOINT_URL", "").strip() or None
    return S3Storage(
        bucket_name=parts.netloc,
        location=parts.path.strip("/"),
        endpoint_url=endpoint,
        file_overwrite=True,
        # Path-style addressing: an endpoint such as http://127.0.0.1:9000 has no DNS names
        # for buckets. Few retries and short connect timeouts: a store that is down should
        # fail a run (or show on a page) in seconds, not minutes.
        client_config=Config(
            s3={"addressing_style": "path" if endpoint else "auto"},
            connect_timeout=5,
            read_timeout=60,
            retries={"max_attempts": 3, "mode": "standard"},
            max_pool_connections=PARTS_IN_FLIGHT + 2,
        ),
    )


def recipients():
    """The age recipients copies are encrypted to; [] means plain copies."""
    from pyrage import ssh, x25519

    keys = conf.get("STANZA_OFFSITE_AGE_RECIPIENTS")
    return [(ssh if k.startswith("ssh-") else x25519).Recipient.from_str(k) for k in keys]


def identities():
    """The age identities that decrypt copies; OffsiteError when none is configured."""
    path = conf.get("STANZA_OFFSITE_AGE_IDENTITY")
    if path is None:
        raise OffsiteError(
            "the copy is encrypted: set STANZA_OFFSITE_AGE_IDENTITY to an age identity file"
        )
    return conf.age_identities(path.read_text())


def _s3(store):
    """(boto3 client, bucket) when the store is django-storages' S3Storage, else None."""
    try:
        from storages.backends.s3 import S3Storage
    except ImportError:  # pragma: no cover
        return None
    if not isinstance(store, S3Storage):
        return None
    return store.connection.meta.client, store.bucket_name


def _key(store, name):
    """The S3 key of `name` under the storage's location (its prefix)."""
    prefix = (getattr(store, "location", "") or "").strip("/")
    return posixpath.join(prefix, name) if prefix else name


@contextlib.contextmanager
def _store_errors(store, doing):
    """Turn what boto3 or a storage raises into one plain line."""
    from botocore.exceptions import (
        BotoCoreError,
        ClientError,
        ConnectionError,
        NoCredentialsError,
    )

    try:
        yield
    except OffsiteError:
        raise
    except ClientError as err:
        error = err.response.get("Error", {})
        code, message = error.get("Code", "error"), error.get("Message", "")
        raise OffsiteError(
            f"the offsite store refused to {doing}: {code}" + (f" ({message})" if message else "")
        ) from err
    except NoCredentialsError as err:
        raise OffsiteError(
            "no credentials for the offsite store: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
        ) from err
    except ConnectionError as err:
        s3 = _s3(store)
        where = s3[0].meta.endpoint_url if s3 else location()
        raise OffsiteError(f"the offsite store at {where} is unreachable: {err}") from err
    except BotoCoreError as err:
        raise OffsiteError(f"offsite store error while trying to {doing}: {err}") from err
    except OSError as err:  # another django-storages backend, or the local disk
        raise OffsiteError(f"offsite copy failed while trying to {doing}: {err}") from err


# --- what is offsite ----------------------------------------------------------------------


def list_objects(store):
    """{object name under the prefix: (size, modified)} of the store (one listing)."""
    s3 = _s3(store)
    found = {}
    with _store_errors(store, "list the offsite copies"):
        if s3 is None:
            for name in store.listdir("")[1]:
                found[name] = (store.size(name), store.get_modified_time(name))
            return found
        client, bucket = s3
        prefix = _key(store, "")
        prefix = prefix + "/" if prefix and not prefix.endswith("/") else prefix
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        for page in pages:
            for item in page.get("Contents", ()):
                name = item["Key"][len(prefix) :]
                if "/" not in name:  # objects in "subfolders" are not ours
                    found[name] = (item["Size"], item["LastModified"])
    return found


def backup_name_of(object_name):
    """(backup name, role) of an object: role "data", "sha256" or "json"; None if not ours."""
    for suffix, role in ((CHECKSUM_SUFFIX, "sha256"), (MANIFEST_SUFFIX, "json")):
        if object_name.endswith(suffix):
            base = object_name[: -len(suffix)]
            return (base, role) if backups.is_backup_name(base) else None
    if object_name.endswith(ENCRYPTED_SUFFIX):
        base = object_name[: -len(ENCRYPTED_SUFFIX)]
        return (base, "data") if backups.is_backup_name(base) else None
    return (object_name, "data") if backups.is_backup_name(object_name) else None


def list_copies(store=None, objects=None):
    """{backup name: OffsiteCopy} of every backup with an object in the store."""
    store = store or storage()
    objects = list_objects(store) if objects is None else objects
    grouped = {}
    for object_name, (size, modified) in objects.items():
        parsed = backup_name_of(object_name)
        if parsed is not None:
            grouped.setdefault(parsed[0], {})[object_name] = (parsed[1], size, modified)
    copies = {}
    for name, members in grouped.items():
        data = sorted(o for o, (role, _s, _m) in members.items() if role == "data")
        key = name if name in data else (data[0] if data else None)  # plain first
        checksum = members.get(name + CHECKSUM_SUFFIX)
        copies[name] = OffsiteCopy(
            name=name,
            key=key,
            size=members[key][1] if key else 0,
            copied=_aware(checksum[2]) if checksum else None,
            modified=max(_aware(m) for (_r, _s, m) in members.values()),
        )
    return copies


def newest_copy(copies):
    """The most recently confirmed complete copy, or None."""
    complete = [c for c in copies.values() if c.complete]
    return max(complete, key=lambda c: (c.copied, c.name), default=None)


def own_copies(copies):
    """The copies of backups this site made itself: any label but `uploaded`."""
    return {name: copy for name, copy in copies.items() if backups.is_own_name(name)}


def is_offsite(name, store=None):
    """Whether `name` has a complete offsite copy (one request: its .sha256 is there)."""
    store = store or storage()
    with _store_errors(store, f"look for {name}"):
        return store.exists(name + CHECKSUM_SUFFIX)


def _aware(moment):
    return moment if timezone.is_aware(moment) else moment.replace(tzinfo=UTC)


# --- copying ------------------------------------------------------------------------------


def copy_offsite():
    """The `copy-offsite` job: copy every local backup not offsite yet, oldest first.

    Idempotent and resumable: a backup counts as offsite once its `.sha256` is in the store,
    which is written last, so a run that stopped half-way copies that backup again next time.
    """
    store = storage()
    encrypt_to = recipients()
    backups.remove_abandoned_temp_files(scratch_dir())  # spools of copies whose process died
    local = sorted(backups.list_backups(), key=lambda b: (b.modified, b.name))
    copies = list_copies(store)
    todo = [b for b in local if not (b.name in copies and copies[b.name].complete)]
    copied, total, problems = [], 0, []
    for backup in todo:
        try:
            total += copy_backup(backup, store=store, encrypt_to=encrypt_to)
        except OffsiteError:
            raise  # the store is down or refusing: the next backups would fail the same way
        except BackupError as err:  # this one local file: tell, and go on with the others
            if backup.path.exists():
                problems.append(str(err))
            continue
        copied.append(backup.name)
    where = location()
    if problems:
        raise BackupError(f"{len(problems)} backup(s) not copied to {where}: {problems[0]}")
    kept = len(local) - len(todo)
    return f"copied {len(copied)} backup(s) ({human_size(total)}) to {where}; {kept} already there"


def copy_backup(backup, *, store=None, encrypt_to=None):
    """Copy one local backup and its sidecars into the store; return the bytes uploaded.

    The data is streamed (and encrypted) in parts, each confirmed by the store's SHA-256;
    the plain bytes are hashed on the way and must match the backup's own `.sha256`.
    """
    store = store or storage()
    encrypt_to = recipients() if encrypt_to is None else encrypt_to
    name = backup.name
    expected = backups.read_checksum(backup.path)
    if expected == "":
        raise BackupError(f"{name}.sha256 is malformed; not copied")
    key = name + (ENCRYPTED_SUFFIX if encrypt_to else "")
    started = time.monotonic()
    with backups.open_backup(name, backup.path.parent) as source:
        digest, size = _upload_data(store, key, source, encrypt_to, expected)
    manifest = backup.path.with_name(name + MANIFEST_SUFFIX)
    with contextlib.suppress(FileNotFoundError):
        _put_small(store, name + MANIFEST_SUFFIX, manifest.read_bytes())
    # Last: from now on the copy counts as offsite.
    _put_small(store, name + CHECKSUM_SUFFIX, f"{digest}  {name}\n".encode())
    seconds = time.monotonic() - started
    logger.info(
        "copied %s offsite as %s (%d bytes) in %.2f s",
        name,
        key,
        size,
        seconds,
        extra={"event": "offsite_copy", "file": name, "size": size, "duration": round(seconds, 3)},
    )
    return size


def _upload_data(store, key, source, encrypt_to, expected):
    """Upload `source` as `key`, confirmed; return (SHA-256 of the plain bytes, bytes sent)."""
    with _store_errors(store, f"store {key}"):
        if not encrypt_to:
            return _upload_stream(store, key, source, expected)
        # Encrypt into a scratch file, then upload that. pyrage holds the GIL while it
        # encrypts, which starved the upload threads when both ran as one pipe (a 1 GB copy
        # took 3x as long); encrypting alone runs at ~250 MB/s, and memory stays flat.
        with _scratch_file() as spool:
            with open(spool, "wb") as out:
                digest = _encode(source, out, encrypt_to)
            _check_digest(digest, expected, key)
            with open(spool, "rb") as encrypted:
                _ignored, size = _upload_stream(store, key, encrypted, None)
        return digest, size


def _upload_stream(store, key, f, expected):
    """Upload the file object `f` as `key`; return (its SHA-256, its size)."""
    s3 = _s3(store)
    if s3 is None:
        return _upload_by_storage(store, key, f, expected)
    sink = _MultipartUpload(*s3, _key(store, key))
    try:
        digest = _encode(f, sink, None)
        _check_digest(digest, expected, key)
        sink.complete()
    except BaseException:
        sink.abort()
        raise
    return digest, sink.size


def _encode(source, sink, encrypt_to):
    """Write `source` into `sink` (encrypted when there are recipients); return its SHA-256."""
    reader = _HashingReader(source)
    if encrypt_to:
        import pyrage

        pyrage.encrypt_io(reader, sink, encrypt_to)
    else:
        while chunk := reader.read(PART_SIZE):
            sink.write(chunk)
    return reader.hexdigest()


def _check_digest(digest, expected, key):
    if expected and digest != expected:
        raise BackupError(
            f"{key} does not match its .sha256 (it changed after it was written); not copied"
        )


def _put_small(store, name, data):
    """Store a small object; with S3, confirmed by the store's SHA-256 of what it received."""
    s3 = _s3(store)
    with _store_errors(store, f"store {name}"):
        if s3 is None:
            from django.core.files.base import ContentFile

            _save(store, name, ContentFile(data))
            if _hash_stored(store, name) != hashlib.sha256(data).hexdigest():
                raise OffsiteError(f"the offsite store did not keep {name} intact")
            return
        client, bucket = s3
        response = client.put_object(
            Bucket=bucket, Key=_key(store, name), Body=data, ChecksumAlgorithm="SHA256"
        )
        _confirm(response, hashlib.sha256(data).digest(), name)


def _confirm(response, digest, what):
    confirmed = response.get("ChecksumSHA256")
    if confirmed != base64.b64encode(digest).decode():
        raise OffsiteError(
            f"the offsite store did not confirm the SHA-256 of {what} "
            f"({'it sent ' + confirmed if confirmed else 'it sent none'})"
        )


class _HashingReader:
    """A file wrapper that hashes what is read through it."""

    def __init__(self, f):
        self.f, self.digest = f, hashlib.sha256()

    def read(self, size=-1):
        data = self.f.read(size)
        self.digest.update(data)
        return data

    def hexdigest(self):
        return self.digest.hexdigest()


class _MultipartUpload:
    """A writable sink that uploads what is written to it as one S3 object, in parts.

    At most PARTS_IN_FLIGHT parts are in memory and on the wire at once (write() waits for
    the oldest to finish), and each part is sent with ChecksumAlgorithm=SHA256: the store
    hashes what it received and answers with the digest, which must be ours, or the upload
    fails. Plain threads rather than an executor: a copy started after a backup may still
    be running while the interpreter shuts down, when executors refuse new work.
    """

    def __init__(self, client, bucket, key):
        self.client, self.bucket, self.key = client, bucket, key
        self.upload_id = client.create_multipart_upload(
            Bucket=bucket, Key=key, ChecksumAlgorithm="SHA256"
        )["UploadId"]
        self.chunks, self.buffered = [], 0
        self.pending, self.parts, self.size, self.numbers = [], [], 0, 0

    def write(self, data):
        # Parts are at least PART_SIZE (S3 allows parts of different sizes), so what was
        # written is joined once per part and never sliced: one copy of each byte at most.
        self.chunks.append(bytes(data))
        self.buffered += len(data)
        if self.buffered >= PART_SIZE:
            self._send(self.chunks[0] if len(self.chunks) == 1 else b"".join(self.chunks))
            self.chunks, self.buffered = [], 0
        return len(data)

    def flush(self):
        pass

    def _send(self, data):
        while len(self.pending) >= PARTS_IN_FLIGHT:
            self._wait_oldest()
        self.numbers += 1
        self.size += len(data)
        part = {"number": self.numbers, "data": data}
        thread = threading.Thread(target=self._upload_part, args=(part,), daemon=True)
        thread.start()
        self.pending.append((thread, part))

    def _wait_oldest(self):
        thread, part = self.pending.pop(0)
        thread.join()
        if "error" in part:
            raise part["error"]
        self.parts.append(part["done"])

    def _upload_part(self, part):
        try:
            data, number = part.pop("data"), part["number"]
            digest = hashlib.sha256(data).digest()
            response = self.client.upload_part(
                Bucket=self.bucket,
                Key=self.key,
                UploadId=self.upload_id,
                PartNumber=number,
                Body=data,
                ChecksumAlgorithm="SHA256",
            )
            del data
            _confirm(response, digest, f"part {number} of {self.key}")
            part["done"] = {
                "PartNumber": number,
                "ETag": response["ETag"],
                "ChecksumSHA256": response["ChecksumSHA256"],
            }
        except Exception as err:  # raised in the writing thread by _wait_oldest
            part["error"] = err

    def complete(self):
        if self.chunks or not self.numbers:
            self._send(b"".join(self.chunks))
            self.chunks, self.buffered = [], 0
        while self.pending:
            self._wait_oldest()
        self.client.complete_multipart_upload(
            Bucket=self.bucket,
            Key=self.key,
            UploadId=self.upload_id,
            MultipartUpload={"Parts": sorted(self.parts, key=lambda p: p["PartNumber"])},
        )
        stored = self.client.head_object(Bucket=self.bucket, Key=self.key)["ContentLength"]
        if stored != self.size:
            raise OffsiteError(
                f"the offsite store holds {stored} bytes of {self.key}, not {self.size}"
            )

    def abort(self):
        for thread, _part in self.pending:
            thread.join()
        self.pending = []
        with contextlib.suppress(Exception):  # the store may be the reason we are aborting
            self.client.abort_multipart_upload(
                Bucket=self.bucket, Key=self.key, UploadId=self.upload_id
            )


def _upload_by_storage(store, key, f, expected):
    """Any other django-storages backend: spool, save, then read back and hash."""
    from django.core.files import File

    with _scratch_file() as spool:
        with open(spool, "wb") as out:
            sink = _HashingWriter(out)
            digest = _encode(f, sink, None)
        _check_digest(digest, expected, key)
        with open(spool, "rb") as spooled:
            _save(store, key, File(spooled, name=key))
    if _hash_stored(store, key) != digest:
        raise OffsiteError(f"the offsite store did not keep {key} intact (read back and hashed)")
    return digest, sink.size


def _save(store, name, content):
    if store.exists(name):  # Storage.save would pick another name rather than replace
        store.delete(name)
    saved = store.save(name, content)
    if saved != name:
        raise OffsiteError(f"the offsite store saved {name} as {saved}")


def _hash_stored(store, name):
    digest = hashlib.sha256()
    with store.open(name, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


class _HashingWriter:
    """A file wrapper that hashes and counts what is written through it."""

    def __init__(self, f):
        self.f, self.digest, self.size = f, hashlib.sha256(), 0

    def write(self, data):
        self.digest.update(data)
        self.size += len(data)
        return self.f.write(data)

    def flush(self):
        self.f.flush()

    def hexdigest(self):
        return self.digest.hexdigest()


# --- health -------------------------------------------------------------------------------


def health_problems(now=None):
    """["offsite copy behind"] once the newest backup has had no offsite copy for an hour."""
    if not enabled():
        return []
    now = now or timezone.now()
    try:
        listed = backups.scan_backups(reuse=True)  # the listing the verdict has just made
    except BackupError:
        return []  # the health check names the folder's own problem
    if not listed or now.timestamp() - listed[0].mtime < BEHIND_AFTER.total_seconds():
        return []
    try:
        if is_offsite(listed[0].name):
            return []
    except BackupError as err:
        logger.warning("cannot tell whether %s is offsite: %s", listed[0].name, err)
    advice = (
        "The newest backup has had no offsite copy for over an hour: see the last "
        "copy-offsite run on the Cron page (is the store down, or refusing?)."
    )
    return [Problem("offsite copy behind", advice)]


# --- retention ----------------------------------------------------------------------------


def purge_old_copies(now=None, retention_days=None):
    """Delete offsite copies older than STANZA_OFFSITE_RETENTION_DAYS; return their names.

    A copy's age is that of its newest object. The newest complete copy is always kept, and so
    is the newest one of the site's own backups (as local retention does: an upload after a
    run of failed copies must not leave the store without one), and only objects named like a
    backup or its sidecars are ever deleted.
    """
    now = now or timezone.now()
    if retention_days is None:
        retention_days = conf.get("STANZA_OFFSITE_RETENTION_DAYS")
    store = storage()
    objects = list_objects(store)
    copies = list_copies(store, objects)
    keep = {c.name for c in (newest_copy(copies), newest_copy(own_copies(copies))) if c}
    cutoff = now - timedelta(days=retention_days)
    removed = []
    for copy in sorted(copies.values(), key=lambda c: c.modified):
        if copy.name in keep or (retention_days and copy.modified >= cutoff):
            continue
        members = [o for o in objects if (backup_name_of(o) or ("",))[0] == copy.name]
        # The .sha256 first: once it is gone the copy no longer counts, whatever happens next.
        members.sort(key=lambda o: not o.endswith(CHECKSUM_SUFFIX))
        with _store_errors(store, f"delete {copy.name}"):
            for member in members:
                store.delete(member)
        removed.append(copy.name)
    logger.info(
        "purged %d offsite cop(ies) older than %d day(s)",
        len(removed),
        retention_days,
        extra={"event": "offsite_purge", "removed": len(removed)},
    )
    return removed


# --- fetching back ------------------------------------------------------------------------


def scratch_dir():
    """The data folder's tmp (beside the live database), or the site's FILE_UPLOAD_TEMP_DIR."""
    folder = getattr(settings, "FILE_UPLOAD_TEMP_DIR", None)
    folder = Path(folder) if folder else conf.live_database_path().parent / "tmp"
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    return folder


@contextlib.contextmanager
def _scratch_file():

    with files.scratch_file(scratch_dir()) as path:
        yield path


def find_copy(name, store=None):
    """The complete offsite copy of backup `name`; OffsiteError when there is none."""
    if not backups.is_backup_name(name):
        raise OffsiteError(f"{name!r} is not a backup file name")
    store = store or storage()
    copy = list_copies(store).get(name)
    if copy is None or not copy.complete:
        raise OffsiteError(f"{name} has no complete offsite copy in {location()}")
    return copy


def open_copy(copy, store=None):
    """A readable stream of the copy's stored bytes (still encrypted if it is)."""
    store = store or storage()
    s3 = _s3(store)
    with _store_errors(store, f"read {copy.key}"):
        if s3 is None:
            return store.open(copy.key, "rb")
        client, bucket = s3
        return client.get_object(Bucket=bucket, Key=_key(store, copy.key))["Body"]


def read_small(store, name):
    """The bytes of a small object (a sidecar); None when it is not there."""
    s3 = _s3(store)
    with _store_errors(store, f"read {name}"):
        if s3 is None:
            if not store.exists(name):
                return None
            with store.open(name, "rb") as f:
                return f.read()
        client, bucket = s3
        try:
            return client.get_object(Bucket=bucket, Key=_key(store, name))["Body"].read()
        except client.exceptions.NoSuchKey:
            return None


def stored_checksum(copy, store):
    """The SHA-256 of the unencrypted backup, from the copy's `.sha256` object."""
    digest = backups.parse_checksum(read_small(store, copy.name + CHECKSUM_SUFFIX) or b"")
    if not digest:
        raise OffsiteError(f"the offsite {copy.name}.sha256 holds no SHA-256")
    return digest


def download(copy, dest, store=None):
    """Write the plain backup into file object `dest`; OffsiteError unless its SHA-256 matches."""
    store = store or storage()
    expected = stored_checksum(copy, store)
    body = open_copy(copy, store)
    sink = _HashingWriter(dest)
    with _store_errors(store, f"read {copy.key}"), contextlib.closing(body):
        if copy.encrypted:
            import pyrage

            try:
                pyrage.decrypt_io(body, sink, identities())
            except pyrage.DecryptError as err:
                raise OffsiteError(
                    f"{copy.key} cannot be decrypted with STANZA_OFFSITE_AGE_IDENTITY: {err}"
                ) from err
        else:
            while chunk := body.read(CHUNK):
                sink.write(chunk)
    if sink.hexdigest() != expected:
        raise OffsiteError(f"the offsite copy of {copy.name} does not match its .sha256")
    return expected


@contextlib.contextmanager
def fetched(name, store=None):
    """Fetch a backup from the store into a private folder of the data folder's tmp.

    Yields the path of the plain backup, with its `.sha256` (and `.json`) beside it, checked
    against the store's `.sha256`; the folder is deleted afterwards.
    """
    store = store or storage()
    copy = find_copy(name, store)
    _remove_abandoned_fetches()
    folder = Path(tempfile.mkdtemp(prefix=FETCH_PREFIX, dir=scratch_dir()))
    try:
        path = folder / name
        digest = download_to(path, copy, store, mode="xb")
        backups.write_checksum(path, digest)
        manifest = read_small(store, name + MANIFEST_SUFFIX)
        if manifest:
            path.with_name(name + MANIFEST_SUFFIX).write_bytes(manifest)
        yield path
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def download_to(path, copy, store, mode="wb"):
    """Download an offsite copy into the file at `path`, flushed to disk; return its SHA-256."""
    try:
        with open(path, mode) as f:
            digest = download(copy, f, store)
            f.flush()
            os.fsync(f.fileno())
    except OSError as err:
        raise OffsiteError(f"cannot write {copy.name} into {Path(path).parent}: {err}") from err
    return digest


def _remove_abandoned_fetches():
    """Delete fetch folders a killed process left behind (untouched for hours)."""
    cutoff = time.time() - FETCH_LEFTOVER_AGE.total_seconds()
    for folder in scratch_dir().glob(FETCH_PREFIX + "*"):
        with contextlib.suppress(OSError):
            if folder.is_dir() and folder.stat().st_mtime < cutoff:
                shutil.rmtree(folder, ignore_errors=True)


def fetch_into_backups(name, store=None):
    """Put an offsite-only backup back into the backups folder (to restore it from the page).

    It is downloaded under a temporary name, checked against the store's `.sha256`, and
    published with its sidecars only then (the engine's never-overwrite naming); its file
    time is the backup's own time, so it does not pass for a fresh backup.
    """

    folder = Path(backups.backups_dir())
    with contextlib.suppress(BackupError):
        return backups.get_backup(name, folder)  # already here
    store = store or storage()
    copy = find_copy(name, store)
    with files.scratch_file(folder) as temp:
        digest = download_to(temp, copy, store)
        moment = backups.Backup(path=folder / name, size=0, modified=timezone.now()).created
        os.utime(temp, (moment.timestamp(), moment.timestamp()))
        manifest = stored_manifest(store, name)
        manifest = {k: v for k, v in manifest.items() if k != "backup"} or None
        with contextlib.suppress(BackupError):  # another request fetched it meanwhile: fine
            backups.publish(temp, digest, manifest, folder=folder, target=folder / name)
    return backups.get_backup(name, folder)


# --- the drill ----------------------------------------------------------------------------


def drill_newest_copy():
    """Prove the newest offsite copy: download, decrypt, hash, restore into scratch, check.

    The verdict is written into the copy's `NAME.json` in the store, as the local drill does.
    """
    from backups_app.restore import drill

    store = storage()
    # The drill proves a backup the site made itself, like the local drill.
    copies = list_copies(store)
    copy = newest_copy(own_copies(copies))
    if copy is None:
        raise drill.DrillError("no offsite copy to verify")
    error = None
    try:
        with fetched(copy.name, store) as path:
            try:
                summary = drill.verify_latest_backup(path.parent)
            except BackupError as err:
                error = err
            result = backups.read_manifest(path) or {}
            if result.get("drill"):
                _put_small(store, copy.name + MANIFEST_SUFFIX, _json(result))
    except OffsiteError as err:
        error = err
        with contextlib.suppress(BackupError):
            _record_drill(store, copy, str(err))
    if error is not None:
        raise drill.DrillError(f"offsite drill of {copy.name} failed: {error}") from error
    how = "downloaded, decrypted" if copy.encrypted else "downloaded"
    return f"offsite {how}, SHA-256 ok: {summary}"


def _record_drill(store, copy, problem):
    """Record a drill that could not even fetch the copy, in its NAME.json in the store."""
    data = stored_manifest(store, copy.name)
    data["drill"] = {"at": timezone.now().isoformat(), "ok": False, "problems": [problem]}
    _put_small(store, copy.name + MANIFEST_SUFFIX, _json(data))


def _json(data):
    import json

    return (json.dumps(data, indent=2) + "\n").encode()


def drill_of(copy, store):
    """The last drill recorded in the copy's NAME.json in the store, or None."""
    result = stored_manifest(store, copy.name).get("drill")
    return result if isinstance(result, dict) else None


def stored_manifest(store, name):
    """The NAME.json of a copy in the store as a dict: {} when missing or not a JSON object
    (a hand-edited or foreign file must not stop a fetch or hide a drill's own error)."""
    import json

    try:
        data = json.loads(read_small(store, name + MANIFEST_SUFFIX) or b"{}")
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


# --- streaming a copy to a browser ---------------------------------------------------------


def stream_plain(copy, store=None):
    """Yield the plain backup in chunks, decrypting on the way; the last chunk is held back
    until the SHA-256 matched, so a bad copy never arrives complete."""
    store = store or storage()
    expected = stored_checksum(copy, store)
    digest = hashlib.sha256()
    held = b""
    for chunk in _plain_chunks(copy, store):
        digest.update(chunk)
        if held:
            yield held
        held = chunk
    if digest.hexdigest() != expected:
        logger.error("offsite copy of %s does not match its .sha256; download cut", copy.name)
        raise OffsiteError(f"the offsite copy of {copy.name} does not match its .sha256")
    if held:
        yield held


def _plain_chunks(copy, store):
    body = open_copy(copy, store)
    if not copy.encrypted:
        with contextlib.closing(body):
            while chunk := body.read(CHUNK):
                yield chunk
        return
    yield from _decrypted_chunks(body, identities())


def _decrypted_chunks(body, keys):
    """Decrypt in a thread into a small queue, so the reader pulls chunks at its own pace."""
    import pyrage

    chunks = queue.Queue(maxsize=16)
    stop = threading.Event()
    done = object()

    class Sink:
        def write(self, data):
            while not stop.is_set():
                with contextlib.suppress(queue.Full):
                    chunks.put(bytes(data), timeout=0.5)
                    return len(data)
            raise OSError("download cancelled")

        def flush(self):
            pass

    def run():
        try:
            pyrage.decrypt_io(body, Sink(), keys)
            result = done
        except Exception as err:  # handed to the reader below
            result = err
        finally:
            body.close()
        while not stop.is_set():
            with contextlib.suppress(queue.Full):
                chunks.put(result, timeout=0.5)
                return

    thread = threading.Thread(target=run, name="offsite-decrypt", daemon=True)
    thread.start()
    try:
        while (item := chunks.get()) is not done:
            if isinstance(item, Exception):
                raise OffsiteError(f"the offsite copy cannot be decrypted: {item}") from item
            yield item
    finally:
        stop.set()
        thread.join()
