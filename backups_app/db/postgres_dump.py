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
import subprocess
import threading
import time

import backups_app.db.postgres_client as pgc
from backups_app.db.postgres_client import (
    COMPRESSION,
    PostgresError,
    check_exit,
    client,
    client_env,
    first_line,
    row_counts,
    start,
    stop,
    tables,
)

# Seconds without a byte written: the server stopped answering (a dump of a large table
# writes all along; before it writes, pg_dump reads the catalog, which takes seconds).
STALL_WAIT = 600
# How often the growing file is looked at, and flushed once this much more was written.
POLL_SECONDS = 0.5
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
            _watch(start(args, env), dest)
        return Counting(conn, dumped=time.monotonic() - started)
    except BaseException:
        conn.close()
        raise


def _watch(child, dest):
    """Wait for pg_dump, flushing `dest` as it grows; stop it when it writes nothing for
    STALL_WAIT seconds. PostgresError in words when it failed."""
    stderr = []
    reader = threading.Thread(target=lambda: stderr.append(child.stderr.read()), daemon=True)
    reader.start()
    fd = None
    try:
        size = flushed = 0
        grew = time.monotonic()
        while True:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(POLL_SECONDS)
            if child.returncode is not None:
                break
            if fd is None:  # pg_dump creates the file when the caller has not
                with contextlib.suppress(FileNotFoundError):
                    fd = os.open(dest, os.O_RDONLY)
            now_size = os.fstat(fd).st_size if fd is not None else 0
            if now_size != size:
                size, grew = now_size, time.monotonic()
            elif time.monotonic() - grew > STALL_WAIT:
                stop(child, read=False)
                raise PostgresError(
                    f"pg_dump failed: it wrote nothing for {STALL_WAIT} s (the PostgreSQL "
                    "server stopped answering); it was stopped"
                )
            if fd is not None and size - flushed >= FLUSH_EVERY:
                os.fdatasync(fd)
                flushed = size
    except BaseException:
        if child.returncode is None:
            stop(child, read=False)
        raise
    finally:
        if fd is not None:
            os.close(fd)
        reader.join()
    check_exit(child.returncode, "".join(stderr), "pg_dump failed")
