"""Files every capability writes or reads: safe opens, temporary and scratch files, fsync.

Temporary files of the product start with TEMP_PREFIX and are named after a `.partial` file
their process holds an flock on (see engine's remove_abandoned_temp_files): the kernel drops
the lock when the process dies, so a clean-up can tell debris from work in progress.
Imports only core.errors.
"""

import contextlib
import errno
import fcntl
import os
import secrets
import stat
from pathlib import Path

from backups_app.core.errors import BackupError

TEMP_PREFIX = ".stanza-tmp-"
# What SQLite (or another tool) may leave beside a scratch file it opened.
SCRATCH_LEFTOVERS = ("-journal", "-wal", "-shm")


def temp_path(folder):
    """A new name for a temporary file in `folder` that the engine's clean-up recognises."""
    return Path(folder) / f"{TEMP_PREFIX}{os.getpid()}-{secrets.token_hex(4)}.partial"


def create_locked(path):
    """Create `path` (0600, never an existing file) and hold an flock on it; return the fd.

    The lock tells `remove_abandoned_temp_files` that a live process owns the file and every
    temporary file named after it; the kernel drops it when the process dies.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


@contextlib.contextmanager
def scratch_file(folder):
    """Yield the path of a new empty locked temporary file in `folder`; delete it (and
    SQLite's `-journal`, `-wal`, `-shm` beside it) after.

    BackupError, naming the folder, when it cannot be created.
    """
    path = temp_path(folder)
    try:
        fd = create_locked(path)
    except OSError as err:
        raise BackupError(f"cannot write a temporary file in {folder}: {err.strerror}") from err
    try:
        yield path
    finally:
        for leftover in (path, *(Path(f"{path}{s}") for s in SCRATCH_LEFTOVERS)):
            leftover.unlink(missing_ok=True)
        os.close(fd)


def is_locked(path):
    """Whether a live process holds an flock on `path` (the kernel drops it when one dies)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)  # never wait on a FIFO
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def open_regular(path):
    """Open `path` for reading: never through a symlink, never blocking, regular files only.

    `O_NONBLOCK` keeps a FIFO given a backup's name from hanging a web worker in open();
    anything but a regular file (FIFO, device, folder) is refused with OSError.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", str(path))
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return os.fdopen(fd, "rb")


def is_regular(path):
    """Whether `path` is a regular file itself (not a symlink, FIFO or folder)."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def fsync(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(folder):
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
