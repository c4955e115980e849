"""The lock that lets only one scheduler run jobs, and tells pages whether one is up.

The database is a local SQLite file, so every process that uses it shares this machine and
the database's folder: an flock on a file there is exact, and the kernel drops it when the
scheduler dies, even by SIGKILL.
"""

import fcntl
import os

from backups_app import conf
from backups_app.engine.backups import is_locked

LOCK_FILENAME = "scheduler.lock"


def lock_path():
    return conf.lock_path(LOCK_FILENAME)


def try_acquire():
    """Take the scheduler lock; return its file descriptor, or None if a scheduler holds it.

    Keep the descriptor open for as long as the scheduler runs; closing it releases the lock.
    """
    fd = os.open(lock_path(), os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def is_scheduler_running():
    return is_locked(lock_path())
