"""The `copy-offsite` job: every local backup also in the store, verified, optionally encrypted.

Objects: `PREFIX/NAME` (or `PREFIX/NAME.age`, encrypted to `STANZA_OFFSITE_AGE_RECIPIENTS`), then
`PREFIX/NAME.json`, then `PREFIX/NAME.sha256` (the SHA-256 of the unencrypted backup). The
`.sha256` is written last and only once the store confirmed the bytes it holds, so the store's
listing is the record of what is offsite. Each run also aborts the multipart uploads a cut run
left behind, and records what it saw of the store (offsite.state) for the pages.
Imports: engine.backups, offsite.store, offsite.multipart, offsite.copies, offsite.state.
"""

import contextlib
import logging
import time
from datetime import timedelta

from django.template.defaultfilters import pluralize
from django.utils import timezone

from backups_app.core.formatting import human_size
from backups_app.engine import backups
from backups_app.engine.backups import MANIFEST_SUFFIX, BackupError
from backups_app.offsite import lock, state
from backups_app.offsite import media as media_offsite
from backups_app.offsite import store as offsite_store
from backups_app.offsite.copies import ENCRYPTED_SUFFIX, OffsiteCopy, backup_name_of, list_copies
from backups_app.offsite.multipart import (
    HashingReader,
    HashingWriter,
    MultipartUpload,
    abort_stale_uploads,
)
from backups_app.offsite.store import OffsiteError, spool_file, store_errors

logger = logging.getLogger(__name__)

JOB_NAME = "copy-offsite"
# An unfinished upload this old is a cut run's (runs of the job never overlap; a part takes
# seconds): aborted by the next run.
STALE_UPLOAD_AGE = timedelta(hours=1)


def copy_offsite():
    """The `copy-offsite` job: copy every local backup not offsite yet, oldest first.

    Idempotent and resumable: a backup counts as offsite once its `.sha256` is in the store,
    which is written last, so a run that stopped half-way copies that backup again next time.
    """
    started = timezone.now()
    store = offsite_store.storage()
    with store_errors(store, "read the bucket's Object Lock settings"):
        lock.check_bucket(store)  # with STANZA_OFFSITE_LOCK_DAYS: nothing is written unlocked
    encrypt_to = offsite_store.recipients()
    backups.remove_abandoned_temp_files(offsite_store.scratch_dir())  # spools of dead copies
    local = sorted(backups.list_backups(), key=lambda b: (b.modified, b.name))
    copied, total, problems = [], 0, []
    with state.recording() as record:
        copies = list_copies(store)
        record.listed(copies)
        aborted = _abort_stale_uploads(store, started - STALE_UPLOAD_AGE)
        todo = [b for b in local if not (b.name in copies and copies[b.name].complete)]
        for backup in todo:
            try:
                copy = copy_backup(backup, store=store, encrypt_to=encrypt_to)
            except OffsiteError:
                raise  # the store is down or refusing: the next backups would fail the same way
            except BackupError as err:  # this one local file: tell, and go on with the others
                if backup.path.exists():
                    problems.append(str(err))
                continue
            record.copied(copy)
            total += copy.size
            copied.append(backup.name)
    where = offsite_store.location()
    if problems:
        count = len(problems)
        raise BackupError(f"{count} backup{pluralize(count)} not copied to {where}: {problems[0]}")
    kept = len(local) - len(todo)
    result = (
        f"copied {len(copied)} backup{pluralize(len(copied))} ({human_size(total)}) "
        f"to {where}; "
        f"{kept} already there"
    )
    return result + (
        f"; aborted {aborted} unfinished upload{pluralize(aborted)}" if aborted else ""
    )


def _abort_stale_uploads(store, started_before):
    """Abort what cut runs left; a store (or a key) that does not allow listing unfinished
    uploads only loses that clean-up, never the copies."""
    try:
        return abort_stale_uploads(
            store, started_before, lambda name: backup_name_of(name) is not None
        )
    except OffsiteError as err:
        logger.warning("could not abort unfinished uploads in the offsite store: %s", err)
        return 0


def copy_backup(backup, *, store=None, encrypt_to=None):
    """Copy one local backup and its sidecars into the store; return its OffsiteCopy.

    The data is streamed (and encrypted) in parts, each confirmed by the store's SHA-256;
    the plain bytes are hashed on the way and must match the backup's own `.sha256`.
    """
    store = store or offsite_store.storage()
    encrypt_to = offsite_store.recipients() if encrypt_to is None else encrypt_to
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
        offsite_store.put_small(store, name + MANIFEST_SUFFIX, manifest.read_bytes())
    media_offsite.copy_files(backup, store, encrypt_to, _upload_data)  # objects, then NAME.media
    # Last: from now on the copy counts as offsite.
    offsite_store.put_small(store, name + backups.CHECKSUM_SUFFIX, f"{digest}  {name}\n".encode())
    seconds = time.monotonic() - started
    logger.info(
        "copied %s offsite as %s (%d bytes) in %.2f s",
        name,
        key,
        size,
        seconds,
        extra={"event": "offsite_copy", "file": name, "size": size, "duration": round(seconds, 3)},
    )
    now = timezone.now()
    return OffsiteCopy(name=name, key=key, size=size, copied=now, modified=now)


def _upload_data(store, key, source, encrypt_to, expected):
    """Upload `source` as `key`, confirmed; return (SHA-256 of the plain bytes, bytes sent)."""
    with store_errors(store, f"store {key}"):
        if not encrypt_to:
            return _upload_stream(store, key, source, expected)
        # Encrypt into a scratch file, then upload that. pyrage holds the GIL while it
        # encrypts, which starved the upload threads when both ran as one pipe (a 1 GB copy
        # took 3x as long); encrypting alone runs at ~250 MB/s, and memory stays flat.
        with spool_file() as spool:
            with open(spool, "wb") as out:
                digest = encode(source, out, encrypt_to)
            _check_digest(digest, expected, key)
            with open(spool, "rb") as encrypted:
                _ignored, size = _upload_stream(store, key, encrypted, None)
        return digest, size


def _upload_stream(store, key, f, expected):
    """Upload the file object `f` as `key`; return (its SHA-256, its size)."""
    if store.client is None:
        return _upload_by_storage(store, key, f, expected)
    sink = MultipartUpload(store, key)
    try:
        digest = encode(f, sink, None)
        _check_digest(digest, expected, key)
        sink.complete()
    except BaseException:
        sink.abort()
        raise
    return digest, sink.size


def encode(source, sink, encrypt_to):
    """Write `source` into `sink` (encrypted when there are recipients); return its SHA-256."""
    reader = HashingReader(source)
    if encrypt_to:
        import pyrage

        pyrage.encrypt_io(reader, sink, encrypt_to)
    else:
        while chunk := reader.read(offsite_store.PART_SIZE):
            sink.write(chunk)
    return reader.hexdigest()


def _check_digest(digest, expected, key):
    if expected and digest != expected:
        raise BackupError(
            f"{key} does not match its .sha256 (it changed after it was written); not copied"
        )


def _upload_by_storage(store, key, f, expected):
    """Any other django-storages backend: spool, save, then read back and hash."""
    from django.core.files import File

    with spool_file() as spool:
        with open(spool, "wb") as out:
            sink = HashingWriter(out)
            digest = encode(f, sink, None)
        _check_digest(digest, expected, key)
        with open(spool, "rb") as spooled:
            offsite_store.save(store, key, File(spooled, name=key))
    if offsite_store.hash_stored(store, key) != digest:
        raise OffsiteError(f"the offsite store did not keep {key} intact (read back and hashed)")
    return digest, sink.size
