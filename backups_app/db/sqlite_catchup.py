"""A copy of a WAL database made while its writers go on, brought up to date under the lock.

A restore's safety backup must hold every write committed before the restore. Copied whole under
the write lock, it was most of the site's pause (bench/restore.py). Instead its pages are copied
from a read transaction that stays open (`pinned`) while writers go on. As long as that
transaction is open, SQLite can neither restart the WAL nor copy into the database file a frame
committed after it began; so once the caller holds the write lock, every page changed since the
copy is in the WAL, among its committed frames (1..mxFrame, the count a checkpoint reports as
"log"). Writing the newest of those frames over the copy's pages and cutting the file to the last
commit's size gives the database as it is now, page for page (`catch_up`).

The WAL file is read with a descriptor of our own; the database file and its `-shm` never are:
closing a descriptor drops every POSIX lock this process holds on that file, and SQLite locks
those two (the WAL file it does not lock).
"""

import contextlib
import os
import sqlite3
import struct
from pathlib import Path
from urllib.parse import quote

from backups_app.db.sqlite_base import page_size_of

WAL_HEADER, FRAME_HEADER = 32, 24
WAL_MAGIC = (0x377F0682, 0x377F0683)
# Bytes 18-19 of a database header: 1, 1 for a rollback journal (2, 2 say WAL).
JOURNAL_FORMAT_AT, ROLLBACK_JOURNAL = 18, b"\x01\x01"


class CannotCatchUp(Exception):
    """The WAL is not as expected: the copy must be made whole under the lock instead."""


@contextlib.contextmanager
def pinned(conn):
    """Keep `conn` in a read transaction (a snapshot) for the block, if the database is in WAL
    mode; yields whether it is (a rollback journal's reader would stop the writers)."""
    if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
        yield False
        return
    conn.execute("BEGIN")
    try:
        conn.execute("SELECT count(*) FROM sqlite_schema").fetchone()  # the snapshot starts here
        yield True
    finally:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("COMMIT")


def catch_up(dest, database):
    """Write over `dest` the pages the WAL of `database` changed since `dest` was copied (from a
    transaction `pinned` still holds); the caller holds the write lock. Returns pages written."""
    frames = _committed_frames(database)
    if frames <= 0:  # nothing was committed since: the WAL was not even restarted
        return 0
    fd = os.open(f"{database}-wal", os.O_RDONLY)
    try:
        magic, _version, page_size, _seq, *salts = _read(fd, ">6I", 0)
        if magic not in WAL_MAGIC:
            raise CannotCatchUp("the WAL file has no WAL header")
        newest, pages_after = {}, 0
        for n in range(frames):
            at = WAL_HEADER + n * (FRAME_HEADER + page_size)
            page, commit_size, *frame_salts = _read(fd, ">4I", at)
            if frame_salts != salts:
                raise CannotCatchUp(f"frame {n + 1} of the WAL is not of its generation")
            newest[page] = at + FRAME_HEADER
            pages_after = commit_size or pages_after
        if not pages_after:
            raise CannotCatchUp("the WAL's last frame is not a commit")
        out = os.open(dest, os.O_RDWR)
        try:
            if page_size_of(os.pread(out, 18, 0)) != page_size:
                raise CannotCatchUp("the copy's page size is not the WAL's")
            for page in sorted(p for p in newest if p <= pages_after):
                os.pwrite(out, os.pread(fd, page_size, newest[page]), (page - 1) * page_size)
            os.ftruncate(out, pages_after * page_size)
            os.pwrite(out, ROLLBACK_JOURNAL, JOURNAL_FORMAT_AT)  # as the copy was, not WAL
        finally:
            os.close(out)
    finally:
        os.close(fd)
    return len(newest)


def _committed_frames(database):
    """The WAL's committed frames, as SQLite's index counts them: a PASSIVE checkpoint's "log"
    (it waits for nothing; the open snapshot keeps it from copying anything newer)."""
    conn = sqlite3.connect(f"file:{quote(str(Path(database)))}?mode=rw", uri=True, timeout=0)
    try:
        _busy, log, _done = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    finally:
        conn.close()
    if log < 0:
        raise CannotCatchUp("the database is not in WAL mode")
    return log


def _read(fd, layout, at):
    data = os.pread(fd, struct.calcsize(layout), at)
    if len(data) < struct.calcsize(layout):
        raise CannotCatchUp("the WAL file is shorter than its index says")
    return struct.unpack(layout, data)
