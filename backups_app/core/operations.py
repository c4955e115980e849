"""One operation on the live database at a time: a backup by hand, a restore, an upload.

The lock is an flock on a file beside the live database, so the web workers, the `restore`
command and the scheduler's jobs all take the same one, and the kernel drops it when its
holder dies (even by SIGKILL). The holder writes what it is doing into the file, so whoever is
refused can be told what is running instead of a bare "busy".
"""

import contextlib
import fcntl
import json
import os
import time
from datetime import UTC, datetime
from pathlib import Path

from backups_app import conf
from backups_app.core.errors import BackupError

LOCK_FILENAME = "operation.lock"
# How long a refused caller waits for a new holder's note (written right after its lock).
NOTE_GRACE = 1.0
# What the holder is doing, in the words a refused user is told.
WHAT = {
    "backup": "a backup",
    "restore": "a restore",
    "upload": "an upload",
    "drill": "a restore drill",
    "delete": "a delete",
}


class OperationRunning(BackupError):
    """Another backup, restore or upload holds the lock; the message says which."""

    status = 409

    def __init__(self, holder):
        self.holder = holder
        what = WHAT.get(holder.get("operation"), "another backup or restore")
        parts = []
        if holder.get("by"):
            parts.append(f"by {holder['by']}")
        if holder.get("since"):
            parts.append(f"since {holder['since'][11:19]} UTC")
        detail = f" ({', '.join(parts)})" if parts else ""
        super().__init__(f"{what} is running{detail}; try again when it has finished")


def lock_path(database=None):
    """The lock file: beside the live database, or beside `database` when it is another one."""
    if database is not None:
        return Path(database).parent / LOCK_FILENAME
    return conf.lock_path(LOCK_FILENAME)


@contextlib.contextmanager
def exclusive(operation, *, by="", database=None, wait=0):
    """Hold the operation lock while the block runs; OperationRunning if another holds it.

    `database`: only for a database other than the live one (`restore --data-dir`).
    `wait`: seconds to wait for the holder to finish (the scheduler's jobs wait; a person
    clicking a button is answered at once).
    """
    path = lock_path(database)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                now = time.monotonic()
                if now >= deadline:
                    holder = _read_holder(fd)
                    # An empty note: its holder is between taking the lock and writing it (or
                    # between clearing it and letting go): a moment tells who, or frees the lock.
                    if holder or now >= deadline + NOTE_GRACE:
                        raise OperationRunning(holder) from None
                time.sleep(0.2 if now < deadline else 0.02)
        holder = {
            "operation": operation,
            "by": by,
            "pid": os.getpid(),
            "since": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder).encode(), 0)
        try:
            yield holder
        finally:
            os.ftruncate(fd, 0)
    finally:
        os.close(fd)  # releases the lock


def _read_holder(fd):
    try:
        data = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}
