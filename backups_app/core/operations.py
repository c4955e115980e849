"""One operation on the live database at a time: a backup by hand, a restore, an upload.

The lock is an flock on a file beside the live database, so the web workers, the `restore`
command and the scheduler's jobs all take the same one, and the kernel drops it when its
holder dies (even by SIGKILL). The holder writes what it is doing into the file, so whoever is
refused can be told what is running instead of a bare "busy". A backup also writes how far it
got into a small file beside the lock (`reporting`), and the Backups page reads both
(`running`): files only, never the lock, so a page never stands in a holder's way.
"""

import contextlib
import fcntl
import json
import os
import secrets
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

from backups_app import conf
from backups_app.core.errors import BackupError
from backups_app.core.processes import process_identity, process_is_alive

LOCK_FILENAME = "operation.lock"
PROGRESS_FILENAME = "operation.progress"
# The progress file is rewritten at most this often (seconds): twice a second.
PROGRESS_EVERY = 0.5
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
        if holder.get("since"):  # the one time format, in UTC: "2026-12-06 19:42:47 UTC"
            parts.append(f"since {holder['since'][:19].replace('T', ' ')} UTC")
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
            "process": process_identity(),  # a reused pid is told apart (see running)
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


# --- what is running, and how far it got (the Backups page) ----------------------------------


def progress_path(database=None):
    """The progress file: beside the lock file."""
    return lock_path(database).with_name(PROGRESS_FILENAME)


@contextlib.contextmanager
def reporting(holder, database=None, **facts):
    """Yield a progress callback for the engine (`progress(phase, done, total, size=None)`);
    the latest call is written into the progress file beside the lock at most twice a second
    (by a small thread, so the callback costs nothing), with `facts` (what the page adds to the
    words, e.g. how many site files the last backup listed). The file goes when the block ends.
    """
    path = progress_path(database)
    latest = {}
    changed = threading.Event()
    stop = threading.Event()
    base = {"pid": holder["pid"], "since": holder["since"], **facts}

    def progress(phase, done, total, size=None):
        latest.update(phase=phase, done=done, total=total, size=size)  # one dict, GIL-safe
        changed.set()

    def write():
        while not stop.is_set():
            if changed.wait(PROGRESS_EVERY):
                changed.clear()
                _write_json(path, {**base, **latest, "at": datetime.now(UTC).isoformat()})
                stop.wait(PROGRESS_EVERY)  # at most twice a second

    writer = threading.Thread(target=write, name="operation-progress", daemon=True)
    writer.start()
    try:
        yield progress
    finally:
        stop.set()
        changed.set()
        writer.join()
        path.unlink(missing_ok=True)


def _write_json(path, data):
    """Replace the file at `path` with `data` at once (a reader sees the old or the new)."""
    temp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(data, f)
        os.replace(temp, path)
    except OSError:  # the page then shows no progress: never a reason to fail the backup
        temp.unlink(missing_ok=True)


def running(database=None):
    """The operation holding the lock now, as its holder noted it ({"operation", "what" (in
    words), "by", "since", "pid", ..., "progress": the last progress written or None}), or None.

    Reads the two files only (a stale note, left by a holder that was killed, names a process
    that is gone), so asking never delays an operation that is about to start.
    """
    holder = _read_json(lock_path(database))
    try:
        pid = int(holder.get("pid") or 0)
    except (TypeError, ValueError):
        return None
    if not holder.get("operation") or pid <= 0:
        return None
    if not process_is_alive(pid, str(holder.get("process") or "")):
        return None
    progress = _read_json(progress_path(database))
    same = progress.get("pid") == pid and progress.get("since") == holder.get("since")
    what = WHAT.get(holder["operation"], "another backup or restore")
    return {**holder, "what": what, "progress": progress if same else None}


def _read_json(path):
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return {}
    try:
        data = json.loads(os.read(fd, 65536) or b"{}")
    except (OSError, ValueError):
        return {}
    finally:
        os.close(fd)
    return data if isinstance(data, dict) else {}
