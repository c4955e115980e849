"""Uploads of backups made elsewhere: bounded, checked like a restore, kept as `...uploaded.bak`.

The size limit is `STANZA_UPLOAD_MAX_MB`, by default derived from the live database (twice
its size, at least 64 MB), and never more than the free space of the backups folder less a
margin: an upload can never fill the disk the live database writes to.
"""

import hashlib
import logging
import os
import shutil
from pathlib import Path

from backups_app import conf
from backups_app.core import files
from backups_app.core.errors import BackupError
from backups_app.core.formatting import human_size
from backups_app.engine import backups
from backups_app.restore import restore
from backups_app.restore.restore import RestoreError

logger = logging.getLogger(__name__)

CHUNK = backups.READ_CHUNK
MB = 1024 * 1024
MIN_DEFAULT_LIMIT = 64 * MB


class UploadTooLarge(RestoreError):
    """The upload is over the limit (HTTP 413); nothing was kept."""

    status = 413

    def __init__(self, limit):
        self.limit = limit
        super().__init__(
            f"the upload is larger than the {human_size(limit)} allowed "
            "(STANZA_UPLOAD_MAX_MB, and the free space of the backups folder); nothing was kept"
        )


class DuplicateUpload(RestoreError):
    """The upload is byte for byte a backup already there (HTTP 409)."""

    status = 409

    def __init__(self, existing):
        self.existing = existing
        super().__init__(f"it is the same file as the backup {existing.name} (same SHA-256)")


def upload_limit():
    """The largest upload accepted, in bytes (see the module's docstring)."""
    configured = conf.get("STANZA_UPLOAD_MAX_MB")
    if configured:
        limit = configured * MB
    else:
        size = backups.database_engine().database_size(backups.live_database())
        limit = max(2 * size, MIN_DEFAULT_LIMIT)
    for folder in (backups.backups_dir(), conf.working_dir()):
        try:
            free = shutil.disk_usage(folder).free
        except (OSError, TypeError):
            continue
        limit = min(limit, max(0, free - restore.FREE_SPACE_MARGIN))
    return limit


def accept_upload(upload, folder=None, *, limit=None):
    """Stream an uploaded backup into the backups folder, check it, and keep it; return Backup.

    `upload` is a Django UploadedFile, a file object, or an iterable of byte chunks; it is
    written a chunk at a time, never held in memory, and never past `limit` bytes (default:
    `upload_limit()`), decompressed or not. A gzip'd upload stays gzip'd. Anything a restore
    would refuse is refused here, and so is a copy of a backup already there; nothing is
    left behind.
    """
    folder = Path(folder or backups.backups_dir())
    try:
        backups.check_folder(folder)
    except BackupError as err:
        raise RestoreError(str(err)) from err
    limit = upload_limit() if limit is None else limit
    # Errors name what the admin uploaded, not the temporary file it was streamed into.
    shown = Path(getattr(upload, "name", "") or "the uploaded file").name
    with files.scratch_file(folder) as temp:
        digest = _store(upload, temp, limit, folder)
        if temp.stat().st_size == 0:
            raise RestoreError("the uploaded file is empty")
        existing = find_by_checksum(digest, folder)
        if existing is not None:
            raise DuplicateUpload(existing)
        compressed = restore.is_gzip(temp)
        with files.scratch_file(folder) as plain:
            if compressed:
                restore.inflate(temp, plain, name=shown, limit=limit)
            info = restore.inspect(temp, plain if compressed else temp, compressed, False, shown)
        manifest = backups.new_manifest(info.row_counts, "full", by="upload")
        final = backups.publish(
            temp, digest, manifest, folder=folder, label="uploaded", compress=compressed
        )
    logger.info(
        "uploaded backup kept as %s (%d bytes)",
        final.name,
        info.size,
        extra={"event": "upload", "file": final.name, "size": info.size},
    )
    return backups.get_backup_at(final)


def _store(upload, temp, limit, folder):
    """Write the upload into `temp`, refusing it as soon as it passes `limit`; its SHA-256."""
    digest = hashlib.sha256()
    written = 0
    try:
        with open(temp, "wb") as out:
            for chunk in _chunks(upload):
                written += len(chunk)
                if written > limit:
                    raise UploadTooLarge(limit)
                out.write(chunk)
                digest.update(chunk)
            out.flush()
            os.fsync(out.fileno())
    except OSError as err:
        raise RestoreError(f"cannot store the upload in {folder}: {err.strerror}") from err
    return digest.hexdigest()


def find_by_checksum(digest, folder=None):
    """The backup in `folder` whose `.sha256` holds `digest`, or None."""
    for backup in backups.list_backups(folder):
        if backup.has_checksum and backups.read_checksum(backup.path) == digest:
            return backup
    return None


def _chunks(upload):
    if hasattr(upload, "chunks"):
        yield from upload.chunks(CHUNK)
    elif hasattr(upload, "read"):
        while chunk := upload.read(CHUNK):
            yield chunk
    else:
        yield from upload
