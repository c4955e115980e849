"""Offsite copies of the site files: objects as `PREFIX/media/objects/HH/HASH` (`.age` when
encrypted), then the list as `PREFIX/NAME.media` (`.age`), both before the copy's `.sha256`
(so a copy counts as offsite only with its files). Only objects the store lacks are sent; with
Object Lock, those it has are kept retained as long as the new copy (offsite.lock.extend).
Offsite retention deletes NAME.media with its copy and the objects no remaining list names;
`restore --offsite` fetches the list and the objects the local store lacks, each checked
against its SHA-256. Imports: media, offsite.store, offsite.lock, offsite.state.
"""

import hashlib
import logging
import os
from datetime import UTC, timedelta
from pathlib import Path

from django.utils import timezone

from backups_app.core.errors import BackupError
from backups_app.media import lists
from backups_app.media.store import Store, write_all, writing
from backups_app.offsite import lock, state
from backups_app.offsite import store as offsite_store
from backups_app.offsite.store import OffsiteError, store_errors

logger = logging.getLogger(__name__)

OBJECTS = "media/objects/"
AGE = ".age"
SMALL = 8 * 1024 * 1024  # sent in one request; larger objects in parts
# An object no list names is left alone this long: a copy run may be between sending it and
# sending the list that names it.
UNNAMED_GRACE = timedelta(hours=6)


def object_key(sha, encrypted):
    return f"{OBJECTS}{sha[:2]}/{sha}" + (AGE if encrypted else "")


def list_key(name, encrypted):
    return name + lists.SUFFIX + (AGE if encrypted else "")


def stored_objects(store):
    """{object key: (size, modified)} of the site file objects in the store."""
    return offsite_store.list_objects(store, OBJECTS, nested=True)


def _encrypt(data, encrypt_to):
    import pyrage

    return pyrage.encrypt(data, encrypt_to) if encrypt_to else data


def copy_files(backup, store, encrypt_to, send_large):
    """Send a backup's site files offsite (the objects the store lacks, then its list).

    `send_large(store, key, file, encrypt_to, sha256)` sends a big object in parts (the
    copy-offsite job's own upload). Returns the bytes of the objects sent; 0 without a list.
    """
    if not lists.exists(backup.path):
        return 0
    list_path = lists.list_path(backup.path)
    local = Store(backup.path.parent)
    named = _named(list_path)
    encrypted = bool(encrypt_to)
    locked = {}  # {object key: retain-until} of what this copy wrote or extended
    reused = set()
    sent = _send_missing(store, local, named, encrypted, encrypt_to, send_large, locked, reused)
    offsite_store.put_small(
        store, list_key(backup.name, encrypted), _encrypt(list_path.read_bytes(), encrypt_to)
    )
    # An offsite purge running meanwhile may have removed an object the list now names.
    sent += _send_missing(store, local, named, encrypted, encrypt_to, send_large, locked, reused)
    if lock.days():  # before the copy's .sha256: it counts as offsite only once all is locked
        with store_errors(store, "extend the Object Lock of the site files it names"):
            locked |= lock.extend(store, reused - locked.keys(), state.locked_until())
        state.record_locked_until(locked)
    return sent


def _named(list_path):
    """{sha256: size} of the contents a list names."""
    try:
        return lists.named(list_path).sizes
    except lists.ListError as err:
        raise BackupError(f"its site files cannot be copied: {err}") from None


def _send_missing(store, local, named, encrypted, encrypt_to, send_large, locked, reused):
    """Send the objects of `named` the store lacks; add each sent to `locked` (with the lock
    on) and each the store has to `reused`; return the bytes sent."""
    if not named:
        return 0
    have = stored_objects(store)
    sent = 0
    for sha, size in named.items():
        key = object_key(sha, encrypted)
        if key in have:
            reused.add(key)
            continue
        until = lock.until()  # the moment before it is written: never later than the store's
        if not local.has(sha, size):
            raise OffsiteError(f"the site file content {sha} is not in the local store")
        with open(local.path(sha), "rb") as source:
            if size <= SMALL:
                data = source.read()
                if hashlib.sha256(data).hexdigest() != sha:
                    raise OffsiteError(f"the local site file content {sha} is damaged")
                offsite_store.put_small(store, key, _encrypt(data, encrypt_to))
            else:
                send_large(store, key, source, encrypt_to, sha)
        sent += size
        if until is not None:
            locked[key] = until
    return sent


# --- offsite retention ----------------------------------------------------------------------


def purge(store, kept, now=None):
    """After copies were purged: delete the lists of copies not `kept`, then the objects no
    remaining list names. A list or object younger than UNNAMED_GRACE is left alone (a copy
    run may be sending it). Returns how many objects were deleted; nothing is deleted when a
    list cannot be read.
    """
    now = now or timezone.now()
    named = set()
    for key, (_size, modified) in offsite_store.list_objects(store).items():
        name = key.removesuffix(AGE).removesuffix(lists.SUFFIX)
        if name == key.removesuffix(AGE):
            continue  # not a list
        if name in kept or _aware(modified) > now - UNNAMED_GRACE:
            named |= set(_read_stored_list(store, key))
        else:
            offsite_store.delete(store, key)
    deleted = []
    retained = state.locked_until() if lock.days() else {}
    for key, (_size, modified) in stored_objects(store).items():
        sha = key.rsplit("/", 1)[-1].removesuffix(AGE)
        if sha in named or _aware(modified) > now - UNNAMED_GRACE:
            continue
        if key in retained and retained[key] > now:
            continue  # extended by a copy since purged: deleted once its retention ends
        offsite_store.delete(store, key)
        deleted.append(key)
    if retained:
        state.record_locked_until(removed=deleted)
    if deleted:
        logger.info("deleted %d offsite site file object(s) no copy names", len(deleted))
    return len(deleted)


def _aware(moment):
    return moment if timezone.is_aware(moment) else moment.replace(tzinfo=UTC)


def _read_stored_list(store, key):
    data = offsite_store.read_small(store, key) or b""
    if key.endswith(AGE):
        data = _decrypt(data, key)
    try:
        return lists.named_in(data, key).sizes.keys()
    except lists.ListError as err:
        raise OffsiteError(f"the offsite {key} cannot be read, so no site file was purged") from err


def _decrypt(data, what):
    import pyrage

    try:
        return pyrage.decrypt(data, offsite_store.identities())
    except pyrage.DecryptError as err:
        raise OffsiteError(f"{what} cannot be decrypted with STANZA_OFFSITE_AGE_IDENTITY") from err


# --- fetching back --------------------------------------------------------------------------


def fetch_files(store, name, path, backups_folder):
    """Put NAME.media beside the fetched backup at `path`, and every object it names that the
    local store lacks into it, each checked against its SHA-256. Returns how many were fetched;
    0 when the copy has no list (the restore then says the files are not part of it)."""
    plain, encrypted = list_key(name, False), list_key(name, True)
    data = offsite_store.read_small(store, plain)
    if data is None:
        data = offsite_store.read_small(store, encrypted)
        if data is None:
            return 0
        data = _decrypt(data, encrypted)
    list_path = lists.list_path(path)
    list_path.write_bytes(data)
    local = Store(backups_folder)
    have = stored_objects(store)
    fetched = 0
    for sha, size in _named(list_path).items():
        if local.has(sha, size):
            continue
        key = object_key(sha, False)
        if key not in have:
            key = object_key(sha, True)
            if key not in have:
                raise OffsiteError(f"the offsite store lacks the site file content {sha} of {name}")
        _fetch_object(store, key, sha, local)
        fetched += 1
    return fetched


class _Sink:
    """Where a fetched object is written: a temporary file of the local store, hashed."""

    def __init__(self, fd):
        self.fd, self.digest = fd, hashlib.sha256()

    def write(self, data):
        self.digest.update(data)
        with writing():
            write_all(self.fd, data)
        return len(data)


def _fetch_object(store, key, sha, local):
    temp, fd = local.new_temp()
    sink = _Sink(fd)
    try:
        offsite_store.read_plain(store, key, sink, key.endswith(AGE))
    except BaseException:
        os.close(fd)
        Path(temp).unlink(missing_ok=True)
        raise
    os.close(fd)
    if sink.digest.hexdigest() != sha:
        Path(temp).unlink(missing_ok=True)
        raise OffsiteError(f"the offsite site file content {sha} does not match its SHA-256")
    local.adopt(temp, sha)
