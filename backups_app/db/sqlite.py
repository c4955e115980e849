"""SQLite helpers shared by the backup engine, the restore and the drill.

One way to open a database, list its tables, count its rows, check it and copy it, so that a
fix to any of these (a signal that must stop a long statement, a page size that must be kept)
reaches every caller. Errors are sqlite3's own: each caller words them for its user.
"""

import contextlib
import fcntl
import os
import secrets
import sqlite3
from pathlib import Path
from urllib.parse import quote

HEADER = b"SQLite format 3\x00"
# Temporary files of the product start with this; see remove_abandoned_temp_files in backups.py.
TEMP_PREFIX = ".stanza-tmp-"
CHECK_PRAGMAS = {"quick": "quick_check", "full": "integrity_check"}
# How many SQLite VM steps between two calls of the progress handler (see connect()).
PROGRESS_STEPS = 20_000


def connect(path, *, readonly=False, immutable=False, cancel=None, timeout=30):
    """Open an SQLite connection that a signal (or `cancel`) can stop inside a long statement.

    The progress handler gives Python's signal handlers a chance to run while SQLite works
    (on the main thread only); when one raises, SQLite stops with "interrupted".
    `immutable` (read-only files nobody writes, such as a backup) keeps SQLite from creating
    `-wal`/`-shm` files beside the file, but it also makes SQLite ignore `PRAGMA page_size`:
    open without it to copy into another page size.
    """
    mode = "ro" if readonly or immutable else "rw"
    uri = f"file:{quote(str(path))}?mode={mode}" + ("&immutable=1" if immutable else "")
    conn = sqlite3.connect(uri, uri=True, timeout=timeout, isolation_level=None)
    handler = (lambda: 0) if cancel is None else cancel.is_set
    conn.set_progress_handler(handler, PROGRESS_STEPS)
    return conn


def open_readonly(path, *, immutable=True, cancel=None):
    """Open a database file (a backup, a scratch copy) for reading only."""
    return connect(path, readonly=True, immutable=immutable, cancel=cancel)


def interrupted(err):
    """Whether SQLite stopped because a signal handler raised in our progress handler."""
    return isinstance(err, sqlite3.OperationalError) and str(err) == "interrupted"


def table_names(conn):
    rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
    return {name for (name,) in rows}


def row_count(conn, table):
    quoted = '"' + table.replace('"', '""') + '"'
    return conn.execute(f"SELECT count(*) FROM {quoted}").fetchone()[0]


def row_counts(conn):
    """{table: rows} for every table, sorted by name."""
    return {table: row_count(conn, table) for table in sorted(table_names(conn))}


def pragma(conn, name):
    return conn.execute(f"PRAGMA {name}").fetchone()[0]


def check(conn, kind="quick"):
    """Run `PRAGMA quick_check` ("quick") or `integrity_check` ("full"); return its problems.

    An empty list means the check passed. `quick_check` finds what damages the file itself;
    the full check also compares every index with its table (VACUUM INTO rebuilds indexes
    from the rows, so a fresh backup needs it less than a file of unknown origin).
    """
    rows = conn.execute(f"PRAGMA {CHECK_PRAGMAS[kind]}").fetchall()
    return [] if rows == [("ok",)] else [str(row[0]) for row in rows]


def copy_into(conn, dest, *, page_size=None):
    """`VACUUM INTO dest` from an open connection: a compact, consistent copy.

    `page_size` sets the copy's page size; SQLite ignores it on an `immutable` connection.
    """
    if page_size:
        conn.execute(f"PRAGMA page_size = {int(page_size)}")
    conn.execute("VACUUM INTO ?", (str(dest),))


def read_header(path):
    """The first 100 bytes of a file (the SQLite header), b"" when it is empty."""
    with open(path, "rb") as f:
        return f.read(100)


# --- temporary files ------------------------------------------------------------------------


def temp_path(folder):
    """A new name for a temporary file in `folder` that the engine's clean-up recognises."""
    return Path(folder) / f"{TEMP_PREFIX}{os.getpid()}-{secrets.token_hex(4)}.partial"


def create_locked(path):
    """Create `path` (0600, never an existing file) and hold an flock on it; return the fd.

    The lock tells `backups.remove_abandoned_temp_files` that a live process owns the file
    and every temporary file named after it; the kernel drops it when the process dies.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


@contextlib.contextmanager
def scratch_file(folder):
    """Yield the path of a new empty locked temporary file; delete it (and SQLite's) after.

    OSError when the file cannot be created.
    """
    path = temp_path(folder)
    fd = create_locked(path)
    try:
        yield path
    finally:
        for leftover in (path, *(Path(f"{path}{s}") for s in ("-journal", "-wal", "-shm"))):
            leftover.unlink(missing_ok=True)
        os.close(fd)
