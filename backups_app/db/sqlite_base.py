"""SQLite underneath the seam: connections a signal can stop, tables, rows, checks, copies.

Shared by sqlite (the seam's functions) and sqlite_restore; imports nothing of the app.
"""

import contextlib
import os
import sqlite3
import threading
from pathlib import Path
from urllib.parse import quote

from django.conf import settings

HEADER = b"SQLite format 3\x00"
CHECK_PRAGMAS = {"quick": "quick_check", "full": "integrity_check"}
# How many SQLite VM steps between two calls of the progress handler (see connect()).
PROGRESS_STEPS = 20_000


def database_path(database=None):
    """The database file: `database`, or DATABASES["default"]'s NAME (absolute, not resolved:
    the name stays the configured one when the file is a symlink)."""
    if database is not None:
        return Path(database)
    return Path(settings.DATABASES["default"]["NAME"]).absolute()


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


def table_names(conn, schema="main"):
    """The tables of one schema of a connection (`main`, an attached `bak`, `temp`)."""
    rows = conn.execute(f"SELECT name FROM {schema}.sqlite_master WHERE type = 'table'")
    return {name for (name,) in rows.fetchall()}


def row_count(conn, table):
    return conn.execute(f"SELECT count(*) FROM {q(table)}").fetchone()[0]


def row_counts(conn):
    """{table: rows} for every table, sorted by name."""
    return {table: row_count(conn, table) for table in sorted(table_names(conn))}


def pragma(conn, name):
    return conn.execute(f"PRAGMA {name}").fetchone()[0]


def q(name):
    """An SQL identifier, quoted."""
    return '"' + str(name).replace('"', '""') + '"'


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


class watching:
    """While SQLite writes `path`: report its size to `progress(size, total)` and flush it to
    disk every `flush` bytes it grew (0: every tick, for a file rewritten in place such as a
    WAL; None: never), so that a flush the caller waits for later finds little left to write
    (a gigabyte flushed at once stalls the site's own commits). Closing this descriptor drops
    no lock: SQLite locks neither a copy it writes nor a WAL file."""

    TICK = 0.1  # seconds

    def __init__(self, path, *, total=None, progress=None, flush=None):
        self.path, self.total, self.progress, self.flush = path, total, progress, flush
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, name="watch-size", daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def _run(self):
        flushed = 0
        with contextlib.suppress(OSError):
            fd = os.open(self.path, os.O_RDONLY)
            try:
                while not self.done.wait(self.TICK):
                    size = os.fstat(fd).st_size
                    if self.flush is not None and size - flushed >= self.flush:
                        os.fdatasync(fd)
                        flushed = size
                    if self.progress:
                        self.progress(size, self.total)
            finally:
                os.close(fd)

    def __exit__(self, *exc):
        self.done.set()
        self.thread.join()
        return False


def page_size_of(header):
    """The page size a database header (its first 18 bytes or more) records."""
    size = int.from_bytes(header[16:18], "big")
    return 65536 if size == 1 else size
