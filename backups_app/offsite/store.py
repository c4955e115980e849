"""The offsite store, and every request this app sends to it.

Owns: the settings of offsite copies (on or off, where, the age keys); the one S3 client of
the process, made on first use and reused (boto3 clients are thread-safe); and each call to
the store: list, put (confirmed by the store's SHA-256), read, delete, multipart uploads and
their abort. Every S3 request has connect and read timeouts and one retry, so a store that
accepts connections and never answers costs a job or a command about 20 s and one line
(OffsiteError), never minutes. Nothing on a page or /healthz calls this module (see state.py).

The store is Django's `STORAGES["offsite"]` when the site defines it (any django-storages
backend; with S3Storage its settings, with our timeouts), else the bucket and prefix of
`STANZA_OFFSITE_URL` with credentials and endpoint from the standard `AWS_*` variables.
Imports: conf and engine.backups (BackupError, the engine's scratch files) only.
"""

import base64
import contextlib
import hashlib
import logging
import os
import posixpath
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings

from backups_app import conf
from backups_app.core.errors import BackupError
from backups_app.core.files import scratch_file
from backups_app.offsite import lock
from backups_app.parsers import age_identities

logger = logging.getLogger(__name__)

# Parts of 8 MiB, four in flight: memory stays near 50 MB whatever the backup's size, and four
# connections keep a store busy (bench/offsite.py compares this with boto3's upload_file).
PART_SIZE = 8 * 1024 * 1024
PARTS_IN_FLIGHT = 4
CHUNK = 1024 * 1024
# A request waits at most READ_TIMEOUT for the store's answer and is tried ATTEMPTS times:
# a hanging store fails a call in about ATTEMPTS x READ_TIMEOUT (FIELD-NOTES: botocore's
# defaults, 60 s and retries, made it 4 minutes).
CONNECT_TIMEOUT = 5
READ_TIMEOUT = 10
ATTEMPTS = 2
# The one call that may take long before its first byte: a store assembles the whole object
# before it answers CompleteMultipartUpload (S3 sends spaces meanwhile; moto and some
# S3-compatible stores send nothing, ~10-40 s for 1 GB under load). Tried once: a retry of a
# completion that did succeed is refused (NoSuchUpload), and the copy is simply made again.
COMPLETE_TIMEOUT = 120


class OffsiteError(BackupError):
    """The offsite store is unreachable, refused, or holds no sound copy; one plain line."""


# --- settings -----------------------------------------------------------------------------


def enabled():
    """Offsite copies are on when STANZA_OFFSITE_URL is set (even to a bad value: the copy-offsite
    run then fails naming it) or the site defines STORAGES["offsite"]. Never raises."""
    return conf.raw_value("STANZA_OFFSITE_URL") is not None or "offsite" in settings.STORAGES


def location():
    """Where the copies go, in words (for result lines and pages)."""
    url = conf.raw_value("STANZA_OFFSITE_URL")
    return str(url).strip() if url is not None else 'STORAGES["offsite"]'


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
    return age_identities(path.read_text())


# --- the store and its one client -----------------------------------------------------------


@dataclass(frozen=True)
class Store:
    """Where the copies are: a bucket and prefix behind one boto3 client (and one more for the
    slow completion of uploads), or a Django storage."""

    where: str  # the endpoint or location, in words
    client: Any = None  # a boto3 S3 client; None for another django-storages backend
    bucket: str = ""
    prefix: str = ""  # without a trailing "/"
    storage: Any = None  # the Django storage, when it is not S3
    completing: Any = None  # the client for CompleteMultipartUpload alone (COMPLETE_TIMEOUT)

    def key(self, name):
        """The S3 key of `name` under the prefix."""
        return posixpath.join(self.prefix, name) if self.prefix else name


_made = {}  # {what the store is made from: Store}: one entry, replaced when settings change
_making = threading.Lock()


def storage():
    """The offsite store of this process, made on first use and reused."""
    made_from = _made_from()
    with _making:
        store = _made.get(made_from)
        if store is None:
            try:
                store = _make_store()
            except conf.ConfigError as err:  # a bad STANZA_OFFSITE_URL: the run says which
                raise OffsiteError(str(err)) from None
            _made.clear()
            _made[made_from] = store
        return store


def _made_from():
    if "offsite" in settings.STORAGES:
        from django.core.files.storage import storages

        return ("storage", id(storages["offsite"]))
    names = ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")
    return ("url", location(), *(os.environ.get(name, "") for name in names))


def _client_configs(base=None, **extra):
    """(the config of every request, the config of CompleteMultipartUpload), over `base`."""
    from botocore.config import Config

    ours = Config(
        connect_timeout=CONNECT_TIMEOUT,
        read_timeout=READ_TIMEOUT,
        retries={"total_max_attempts": ATTEMPTS, "mode": "standard"},
        max_pool_connections=PARTS_IN_FLIGHT + 2,
        **extra,
    )
    ours = base.merge(ours) if base is not None else ours
    slow = Config(read_timeout=COMPLETE_TIMEOUT, retries={"total_max_attempts": 1})
    return ours, ours.merge(slow)


def _make_store():
    if "offsite" in settings.STORAGES:
        from django.core.files.storage import storages

        site_storage = storages["offsite"]
        try:
            from storages.backends.s3 import S3Storage
        except ImportError:  # pragma: no cover
            S3Storage = ()  # noqa: N806
        if not isinstance(site_storage, S3Storage):
            return Store(where=location(), storage=site_storage)
        # The site's S3 settings, as S3Storage makes its own client, with our timeouts.
        session = site_storage._create_session()
        client, completing = (
            session.client(
                "s3",
                region_name=site_storage.region_name,
                use_ssl=site_storage.use_ssl,
                endpoint_url=site_storage.endpoint_url,
                config=config,
                verify=site_storage.verify,
            )
            for config in _client_configs(site_storage.client_config)
        )
        prefix = (site_storage.location or "").strip("/")
        where = client.meta.endpoint_url
        return Store(where, client, site_storage.bucket_name, prefix, completing=completing)
    url = conf.get("STANZA_OFFSITE_URL")  # ConfigError (one line) when it is not s3://...
    if not url:
        raise OffsiteError("offsite copies are off: STANZA_OFFSITE_URL is not set")
    import boto3

    parts = urlsplit(url)
    endpoint = os.environ.get("AWS_ENDPOINT_URL", "").strip() or None
    # Path-style addressing: an endpoint such as http://127.0.0.1:9000 has no DNS names
    # for buckets.
    configs = _client_configs(s3={"addressing_style": "path" if endpoint else "auto"})
    # Keys from the environment given as such (as django-storages does): boto3 then neither
    # searches for them nor logs where it found them on every command's output.
    keys = {
        "aws_access_key_id": os.environ.get("AWS_ACCESS_KEY_ID") or None,
        "aws_secret_access_key": os.environ.get("AWS_SECRET_ACCESS_KEY") or None,
        "aws_session_token": os.environ.get("AWS_SESSION_TOKEN") or None,
    }
    session = boto3.session.Session(**keys)
    client, completing = (session.client("s3", endpoint_url=endpoint, config=c) for c in configs)
    where, prefix = client.meta.endpoint_url, parts.path.strip("/")
    return Store(where, client, parts.netloc, prefix, completing=completing)


@contextlib.contextmanager
def store_errors(store, doing):
    """Turn what boto3 or a storage raises into one plain line."""
    from botocore.exceptions import (
        BotoCoreError,
        ClientError,
        ConnectionClosedError,
        ConnectionError,
        NoCredentialsError,
        ReadTimeoutError,
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
    except ReadTimeoutError as err:
        raise OffsiteError(
            f"the offsite store at {store.where} did not answer within {READ_TIMEOUT} s "
            f"({ATTEMPTS} tries) while trying to {doing}"
        ) from err
    except ConnectionClosedError as err:
        raise OffsiteError(
            f"the offsite store at {store.where} closed the connection while trying to {doing} "
            f"({ATTEMPTS} tries)"
        ) from err
    except ConnectionError as err:
        raise OffsiteError(f"the offsite store at {store.where} is unreachable: {err}") from err
    except BotoCoreError as err:
        raise OffsiteError(f"offsite store error while trying to {doing}: {err}") from err
    except OSError as err:  # another django-storages backend, or the local disk
        raise OffsiteError(f"offsite copy failed while trying to {doing}: {err}") from err


# --- requests -------------------------------------------------------------------------------


def list_objects(store, starting="", *, nested=False):
    """{object name under the prefix: (size, modified)} of the objects whose names start with
    `starting` (one listing request per 1000 objects). Only names without a "/" unless
    `nested` (the site files' `media/objects/HH/HASH`: `starting` is then their folder)."""
    found = {}
    with store_errors(store, "list the offsite copies"):
        if store.client is None:
            names = (
                _walk(store.storage, starting.rstrip("/"))
                if nested
                else (n for n in store.storage.listdir("")[1] if n.startswith(starting))
            )
            for name in names:
                found[name] = (store.storage.size(name), store.storage.get_modified_time(name))
            return found
        prefix = f"{store.prefix}/" if store.prefix else ""
        pages = store.client.get_paginator("list_objects_v2").paginate(
            Bucket=store.bucket, Prefix=prefix + starting
        )
        for page in pages:
            for item in page.get("Contents", ()):
                name = item["Key"][len(prefix) :]
                if nested or "/" not in name:
                    found[name] = (item["Size"], item["LastModified"])
    return found


def _walk(storage, folder):
    """The names of the files under `folder` of a Django storage, at any depth."""
    try:
        folders, files = storage.listdir(folder)
    except FileNotFoundError:  # a folder-like storage holding none yet
        return
    for name in files:
        yield posixpath.join(folder, name)
    for name in folders:
        yield from _walk(storage, posixpath.join(folder, name))


def put_small(store, name, data):
    """Store a small object; with S3, confirmed by the store's SHA-256 of what it received."""
    with store_errors(store, f"store {name}"):
        if store.client is None:
            from django.core.files.base import ContentFile

            save(store, name, ContentFile(data))
            if hash_stored(store, name) != hashlib.sha256(data).hexdigest():
                raise OffsiteError(f"the offsite store did not keep {name} intact")
            return
        response = store.client.put_object(
            Bucket=store.bucket,
            Key=store.key(name),
            Body=data,
            ChecksumAlgorithm="SHA256",
            **lock.put_args(),  # S3 Object Lock, when STANZA_OFFSITE_LOCK_DAYS is set
        )
        confirm(response, hashlib.sha256(data).digest(), name)


def confirm(response, digest, what):
    """OffsiteError unless the store answered with `digest` as the SHA-256 it computed."""
    confirmed = response.get("ChecksumSHA256")
    if confirmed != base64.b64encode(digest).decode():
        raise OffsiteError(
            f"the offsite store did not confirm the SHA-256 of {what} "
            f"({'it sent ' + confirmed if confirmed else 'it sent none'})"
        )


def read_small(store, name):
    """The bytes of a small object (a sidecar); None when it is not there."""
    with store_errors(store, f"read {name}"):
        if store.client is None:
            if not store.storage.exists(name):
                return None
            with store.storage.open(name, "rb") as f:
                return f.read()
        try:
            response = store.client.get_object(Bucket=store.bucket, Key=store.key(name))
        except store.client.exceptions.NoSuchKey:
            return None
        return response["Body"].read()


def open_object(store, name):
    """A readable stream of an object's bytes."""
    with store_errors(store, f"read {name}"):
        if store.client is None:
            return store.storage.open(name, "rb")
        return store.client.get_object(Bucket=store.bucket, Key=store.key(name))["Body"]


def read_plain(store, name, sink, encrypted):
    """Write the plain bytes of the object `name` into `sink` (a file-like `write`),
    decrypting it with STANZA_OFFSITE_AGE_IDENTITY when `encrypted`; OffsiteError, with the
    reason, when it cannot be read or decrypted. The caller checks what arrived."""
    body = open_object(store, name)
    with store_errors(store, f"read {name}"), contextlib.closing(body):
        if not encrypted:
            while chunk := body.read(CHUNK):
                sink.write(chunk)
            return
        import pyrage

        try:
            pyrage.decrypt_io(body, sink, identities())
        except pyrage.DecryptError as err:
            raise OffsiteError(
                f"{name} cannot be decrypted with STANZA_OFFSITE_AGE_IDENTITY: {err}"
            ) from err


def delete(store, name):
    """Delete one object (with Object Lock on, every version of it: see offsite.lock)."""
    with store_errors(store, f"delete {name}"):
        if store.client is None:
            store.storage.delete(name)
        elif lock.days():
            lock.delete_every_version(store, name)
        else:
            store.client.delete_object(Bucket=store.bucket, Key=store.key(name))


def save(store, name, content):
    """Any other django-storages backend: save `content` as exactly `name`, replacing it."""
    if store.storage.exists(name):  # Storage.save would pick another name rather than replace
        store.storage.delete(name)
    saved = store.storage.save(name, content)
    if saved != name:
        raise OffsiteError(f"the offsite store saved {name} as {saved}")


def hash_stored(store, name):
    """The SHA-256 of an object, read back from the store."""
    digest = hashlib.sha256()
    with store.storage.open(name, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


# --- local spool files ----------------------------------------------------------------------


def scratch_dir():
    """The data folder's tmp (beside the live database; in the backups folder for a database
    on a server), or the site's FILE_UPLOAD_TEMP_DIR."""
    folder = getattr(settings, "FILE_UPLOAD_TEMP_DIR", None)
    folder = Path(folder) if folder else conf.working_dir() / "tmp"
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    return folder


@contextlib.contextmanager
def spool_file():
    """A locked temporary file in scratch_dir(), deleted afterwards."""
    with scratch_file(scratch_dir()) as path:
        yield path
