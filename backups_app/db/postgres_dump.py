"""pg_dump of a PostgreSQL database into a backup file, with the dump's own row counts.

The dump runs in a snapshot our own connection exports, so the rows counted in that snapshot
are exactly the dump's. They are counted after pg_dump, on a thread of their own, while the
engine's quick check and SHA-256 read the file (`Counting`): counting while pg_dump ran cost
it 3-4 s on 1 GB (bench/postgres.py), after it 0.3 s, off the critical path.

pg_dump writes the file itself (a seekable file: its table of contents gets the offsets a
parallel pg_restore needs) without its closing fsync (`--no-sync`): the file is flushed here
while it grows, so the fsync the engine runs with the SHA-256 has little left to write.

Nothing waits forever: a lock another session holds (a migration's ACCESS EXCLUSIVE) stops
pg_dump after LOCK_WAIT seconds (`--lock-wait-timeout`), a server that stops answering after
STALL_WAIT seconds without a byte written, each with one line in words.
"""

import contextlib
import os
import threading
import time

import backups_app.db.postgres_client as pgc
from backups_app.db.postgres_client import (
    COMPRESSION,
    PostgresError,
    client,
    client_env,
    first_line,
    row_counts,
    start,
    supervise,
    tables,
)

# Seconds without a byte written: the server stopped answering (a dump of a large table
# writes all along; before it writes, pg_dump reads the catalog, which takes seconds).
STALL_WAIT = 600
# The growing file is flushed once this much more was written.
FLUSH_EVERY = 32 * 1024 * 1024


class Counting:
    """The row counts of a dump, read in its snapshot on a thread while the caller goes on.

    Owns the snapshot's connection (closed once counted). `tables` is known at once (the
    snapshot's catalog); `result()` waits for {table: rows}.
    """

    def __init__(self, conn, *, dumped=0.0):
        self.tables = frozenset(tables(conn))
        self._conn = conn
        self._counts = self._error = None
        self.dumped, self.seconds = dumped, 0.0  # how long pg_dump took, and the counts
        self._thread = threading.Thread(target=self._count, name="stanza-pg-counts", daemon=True)
        self._thread.start()

    def _count(self):
        started = time.monotonic()
        try:
            self._counts = row_counts(self._conn)
        except BaseException as err:  # noqa: BLE001 -- handed to the caller by result()
            self._error = err
        finally:
            with contextlib.suppress(Exception):
                self._conn.close()
            self.seconds = time.monotonic() - started

    def result(self):
        self._thread.join()
        if isinstance(self._error, PostgresError):
            raise self._error
        if self._error is not None:
            raise PostgresError(
                f"could not count the dump's rows: {first_line(self._error)}"
            ) from self._error
        return self._counts


def dump(server, dest, folder, *, dbname=None, compression=COMPRESSION):
    """`pg_dump -Fc` of the database into `dest`; return its Counting (tables now, rows soon).

    The caller owns `dest` (a locked temporary file, removed on failure); `folder` holds the
    passfile.
    """
    dbname = dbname or server.name
    conn = server.connect(dbname)
    try:
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        (snapshot,) = conn.execute("SELECT pg_export_snapshot()").fetchone()
        with client_env(server, folder, dbname) as env:
            args = [
                client("pg_dump"),
                "--format=custom",
                f"--compress={int(compression)}",
                f"--snapshot={snapshot}",
                f"--lock-wait-timeout={pgc.LOCK_WAIT * 1000}",
                "--no-sync",
                "--no-password",
                f"--file={dest}",
            ]
            started = time.monotonic()
            growth = _Growth(dest)
            try:
                supervise(start(args, env), "pg_dump failed", growth)
            finally:
                growth.close()
        return Counting(conn, dumped=time.monotonic() - started)
    except BaseException:
        conn.close()
        raise


class _Growth:
    """Whether pg_dump is stuck: its file has not grown for STALL_WAIT seconds. Meanwhile the
    file is flushed each time it grew FLUSH_EVERY bytes (see the module's docstring)."""

    def __init__(self, dest):
        self.dest, self.fd = dest, None
        self.size = self.flushed = 0
        self.grew = time.monotonic()

    def __call__(self):
        if self.fd is None:  # pg_dump creates the file when the caller has not
            with contextlib.suppress(FileNotFoundError):
                self.fd = os.open(self.dest, os.O_RDONLY)
        size = os.fstat(self.fd).st_size if self.fd is not None else 0
        if size != self.size:
            self.size, self.grew = size, time.monotonic()
        elif time.monotonic() - self.grew > STALL_WAIT:
            return f"it wrote nothing for {STALL_WAIT} s (the PostgreSQL server stopped answering)"
        if self.fd is not None and size - self.flushed >= FLUSH_EVERY:
            os.fdatasync(self.fd)
            self.flushed = size
        return None

    def close(self):
        if self.fd is not None:
            os.close(self.fd)
