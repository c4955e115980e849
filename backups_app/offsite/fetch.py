"""Offsite copies back on this machine: downloaded into a file, fetched into the backups
folder or a private scratch folder (for a restore or the drill), or streamed to a browser;
always decrypted and checked against the store's `.sha256` before anyone relies on them.
Imports: engine.backups, db.sqlite (scratch files), offsite.store, offsite.copies.
"""

import contextlib
import hashlib
import json
import logging
import os
import queue
import shutil
import tempfile
import threading
import time
from datetime import timedelta
from pathlib import Path

from django.utils import timezone

from backups_app.core.files import scratch_file
from backups_app.engine import backups
from backups_app.engine.backups import CHECKSUM_SUFFIX, MANIFEST_SUFFIX, BackupError
from backups_app.offsite import media as media_offsite
from backups_app.offsite import store as offsite_store
from backups_app.offsite.copies import find_copy
from backups_app.offsite.multipart import HashingWriter
from backups_app.offsite.store import CHUNK, OffsiteError, identities, scratch_dir

logger = logging.getLogger(__name__)

FETCH_PREFIX = ".stanza-offsite-"
FETCH_LEFTOVER_AGE = timedelta(hours=6)


def stored_checksum(copy, store):
    """The SHA-256 of the unencrypted backup, from the copy's `.sha256` object."""
    digest = backups.parse_checksum(
        offsite_store.read_small(store, copy.name + CHECKSUM_SUFFIX) or b""
    )
    if not digest:
        raise OffsiteError(f"the offsite {copy.name}.sha256 holds no SHA-256")
    return digest


def download(copy, dest, store=None):
    """Write the plain backup into file object `dest`; OffsiteError unless its SHA-256 matches."""
    store = store or offsite_store.storage()
    expected = stored_checksum(copy, store)
    sink = HashingWriter(dest)
    offsite_store.read_plain(store, copy.key, sink, copy.encrypted)
    if sink.hexdigest() != expected:
        raise OffsiteError(f"the offsite copy of {copy.name} does not match its .sha256")
    return expected


@contextlib.contextmanager
def fetched(name, store=None):
    """Fetch a backup from the store into a private folder of the data folder's tmp.

    Yields the path of the plain backup, with its `.sha256` (and `.json`) beside it, checked
    against the store's `.sha256`; the folder is deleted afterwards.
    """
    store = store or offsite_store.storage()
    copy = find_copy(name, store)
    remove_abandoned_fetches()
    folder = Path(tempfile.mkdtemp(prefix=FETCH_PREFIX, dir=scratch_dir()))
    try:
        path = folder / name
        digest = download_to(path, copy, store, mode="xb")
        backups.write_checksum(path, digest)
        manifest = offsite_store.read_small(store, name + MANIFEST_SUFFIX)
        if manifest:
            path.with_name(name + MANIFEST_SUFFIX).write_bytes(manifest)
        media_offsite.fetch_files(store, name, path, backups.backups_dir())  # checked, each
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


def remove_abandoned_fetches():
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
    store = store or offsite_store.storage()
    copy = find_copy(name, store)
    with scratch_file(folder) as temp:
        digest = download_to(temp, copy, store)
        moment = backups.Backup(path=folder / name, size=0, modified=timezone.now()).created
        os.utime(temp, (moment.timestamp(), moment.timestamp()))
        manifest = stored_manifest(store, name)
        manifest = {k: v for k, v in manifest.items() if k != "backup"} or None
        with contextlib.suppress(BackupError):  # another request fetched it meanwhile: fine
            backups.publish(temp, digest, manifest, folder=folder, target=folder / name)
    return backups.get_backup(name, folder)


def stored_manifest(store, name):
    """The NAME.json of a copy in the store as a dict: {} when missing or not a JSON object
    (a hand-edited or foreign file must not stop a fetch or hide a drill's own error)."""
    try:
        data = json.loads(offsite_store.read_small(store, name + MANIFEST_SUFFIX) or b"{}")
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


# --- streaming a copy to a browser ---------------------------------------------------------


def stream_plain(copy, store=None):
    """Yield the plain backup in chunks, decrypting on the way; the last chunk is held back
    until the SHA-256 matched, so a bad copy never arrives complete."""
    store = store or offsite_store.storage()
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
    body = offsite_store.open_object(store, copy.key)
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
