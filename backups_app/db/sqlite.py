"""The database seam for SQLite (see backups_app.db for the functions every engine offers).

One way to open a database, list its tables, count its rows, check it and copy it, so that a
fix to any of these (a signal that must stop a long statement, a page size that must be kept)
reaches every caller. Restoring into a database is in sqlite_restore. Imports nothing of the
app but core.files and the seam's own shapes.
"""

import contextlib
import logging
import os
import sqlite3
from pathlib import Path

from backups_app.core.files import scratch_file
from backups_app.db.facts import BadFile, FileFacts
from backups_app.db.sqlite_base import (
    CHECK_PRAGMAS,
    HEADER,
    check,
    connect,
    copy_into,
    database_path,
    interrupted,
    open_readonly,
    pragma,
    q,
    read_header,
    row_count,
    row_counts,
    table_names,
    watching,
)
from backups_app.db.sqlite_catchup import CannotCatchUp, catch_up, pinned
from backups_app.db.sqlite_live import restore_live
from backups_app.db.sqlite_restore import kept_now, load_into

logger = logging.getLogger(__name__)

# What other modules use of this one besides the seam's functions (replication reads
# Litestream's copies with them; the engine and the tests too).
__all__ = (
    "CHECK_PRAGMAS",
    "HEADER",
    "check",
    "connect",
    "copy_into",
    "interrupted",
    "kept_now",
    "open_readonly",
    "pragma",
    "read_header",
    "restore_live",
    "row_count",
    "row_counts",
    "table_names",
)

NAME = "SQLite"
SUFFIX = ".bak"
# What a backup file is, in messages ("... is not an SQLite database").
A_BACKUP = "an SQLite database"
# The database is a file on this machine: lock files and uploads sit beside it.
IS_FILE = True
# The caller runs the full check (read_file) before restore_live.
CHECKS_WHILE_RESTORING = False
Error = sqlite3.Error
# A bigger page cache makes the full check of a 1 GB copy faster and stays within the memory
# budget whatever the size; the quick check reads each page once and gains nothing from it
# (0.74 s with SQLite's default 2 MB, 0.86 s with 32 MB on 1 GB), so it keeps the default.
CHECK_CACHE_KIB = 32 * 1024
# While VACUUM INTO writes, the copy is flushed every this many bytes (see watching).
FLUSH_EVERY = 32 * 1024 * 1024


# --- the seam: names --------------------------------------------------------------------------


def base_name(database=None):
    """Backup names start with the database file's name (`db.sqlite3.` in a new site)."""
    return database_path(database).name


def database_size(database=None):
    """The database file's size with its -wal file's, in bytes (0 when there is none)."""
    path = database_path(database)
    size = 0
    for part in (path, Path(f"{path}-wal")):
        with contextlib.suppress(OSError):
            size += part.stat().st_size
    return size


def is_backup_header(header):
    return header[:16] == HEADER


def declared_size(header):
    """The database size an SQLite header declares (page size x page count), or None.

    The page count is valid only when the two change counters agree (SQLite's own rule).
    """
    if len(header) < 100 or header[:16] != HEADER:
        return None
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    pages = int.from_bytes(header[28:32], "big")
    if header[24:28] != header[92:96] or not pages:
        return None
    return page_size * pages


def source_problem(database=None):
    """Why `database` cannot be backed up, in words; None when it can.

    The header is read through an SQLite connection, never by opening the file ourselves:
    closing any descriptor of a file drops every POSIX lock this process holds on it, and a
    restore in this process holds the live database's write lock while it backs it up.
    """
    source = database_path(database)
    if not source.exists():
        return f"no database at {source}"
    if not source.is_file():
        return f"{source} is not a file"
    if not os.access(source, os.R_OK):
        return f"{source} cannot be read (permission denied)"
    if source.stat().st_size == 0:
        return f"{source} is not an SQLite database"
    try:
        conn = connect(source, timeout=0)
        try:
            conn.execute("PRAGMA schema_version").fetchone()
        finally:
            conn.close()
    except sqlite3.DatabaseError as err:
        if "not a database" in str(err):
            return f"{source} is not an SQLite database"
        if "locked" in str(err) or "busy" in str(err):
            return None  # a database, busy this moment: the copy waits its turn
        return f"{source} cannot be read: {err}"
    return None


# --- the seam: copying ------------------------------------------------------------------------


def copy_live(dest, *, database=None, progress=None, flush=True, until_locked=None):
    """VACUUM INTO `dest`; return the source's table names, for the check that follows.

    `until_locked` (a restore's safety backup; see the seam): the pages are copied with the
    backup API from a snapshot kept open while writers go on, then, once `until_locked()` has
    returned, the pages the WAL changed since are written over them (sqlite_catchup), so the
    site's pause holds none of the copy. A rollback-journal database (or a WAL the catch-up
    does not understand) is copied whole after `until_locked()`.
    """
    source = database_path(database)
    conn = connect(source)
    try:
        # The output inherits this connection's `synchronous`; OFF keeps SQLite from flushing
        # every page (which stalls the site's writers); the whole file is fsync'd once after.
        conn.execute("PRAGMA synchronous=OFF")
        pages = pragma(conn, "page_count") - pragma(conn, "freelist_count")
        expected = pages * pragma(conn, "page_size")
        flushing = FLUSH_EVERY if flush else None
        with watching(dest, total=expected, progress=progress, flush=flushing):
            if until_locked is None:
                tables = table_names(conn)
                copy_into(conn, dest)
            else:
                _copy_ahead(conn, source, dest, until_locked)
                tables = table_names(conn)  # as they are now, under the caller's lock
    finally:
        conn.close()
    return frozenset(tables)


def _copy_ahead(conn, source, dest, until_locked):
    """The backup API's page copy of a snapshot, then until_locked(), then the catch-up."""
    with pinned(conn) as is_wal:
        if is_wal:
            _copy_pages(conn, dest)
            until_locked()
            with contextlib.suppress(CannotCatchUp):
                catch_up(dest, source)
                return
            logger.warning("the safety backup could not catch up with the WAL; copied whole")
        else:
            until_locked()
    os.truncate(dest, 0)
    _copy_pages(conn, dest)


def _copy_pages(conn, dest):
    """The backup API's copy of `conn`'s database into `dest`, in one step, left in rollback
    journal mode (a WAL database's header would otherwise say WAL, as VACUUM INTO's does not)."""
    out = sqlite3.connect(dest, isolation_level=None)
    try:
        out.execute("PRAGMA synchronous=OFF")
        conn.backup(out, pages=-1)
        out.execute("PRAGMA journal_mode=DELETE")
    finally:
        out.close()


def error_kind(err):
    """What a failed copy_live met: "disk-full", "write", "cannot-open", "not-a-database",
    "locked", or None (anything else)."""
    message = str(err)
    if "disk is full" in message:
        return "disk-full"
    if "disk I/O error" in message:  # SQLite reports every failed write but ENOSPC so
        return "write"
    if "unable to open database" in message:
        return "cannot-open"
    if "not a database" in message:
        return "not-a-database"
    if "locked" in message or "busy" in message:
        return "locked"
    return None


# --- the seam: checking a backup file ---------------------------------------------------------


def check_file(path, kind="quick", *, cancel=None):
    """(problems, {table: rows}) of the backup file at `path` (see backups_app.db)."""
    conn = open_readonly(path, immutable=False, cancel=cancel)
    try:
        if kind == "full":
            conn.execute(f"PRAGMA cache_size = -{CHECK_CACHE_KIB}")
        return check(conn, kind), row_counts(conn)
    finally:
        conn.close()


def read_file(path, kind="full"):
    """The full check, tables and columns, rows and applied migrations of a backup file.

    BadFile, in words that follow the file's name, when it is not a sound SQLite database.
    `kind` "quick": the quick check and no row counts (read_contents, for a page).
    """
    _check_header(Path(path))
    try:
        conn = open_readonly(path)
    except sqlite3.Error as err:
        raise BadFile(f"cannot be opened as an SQLite database: {err}") from err
    try:
        problems = check(conn, kind)
        if problems:
            what = "integrity check" if kind == "full" else "quick check"
            raise BadFile(f"failed the {what}: {'; '.join(problems[:3])}")
        tables = table_names(conn)
        migrations = _applied_migrations(conn) if "django_migrations" in tables else None
        columns = {table: _columns(conn, table) for table in sorted(tables)}
        counts = row_counts(conn) if kind == "full" else {}
        page_size = pragma(conn, "page_size")
    except sqlite3.DatabaseError as err:
        if interrupted(err):
            raise
        raise BadFile(f"is not a sound SQLite database: {err}") from err
    finally:
        conn.close()
    return FileFacts(
        columns=columns,
        counts=counts,
        migrations=migrations,
        details={"page_size": page_size, "full_check": kind == "full"},
    )


def read_contents(path):
    """What the confirmation page judges: the quick check and the schema, not the full check
    (7 s on 1 GB) nor the row counts (NAME.json has them); the restore runs the full one."""
    return read_file(path, kind="quick")


def _columns(conn, table):
    """A table's columns, generated ones too (table_xinfo; hidden columns of virtual tables,
    hidden 1, are not the table's own)."""
    rows = conn.execute(f"PRAGMA table_xinfo({q(table)})").fetchall()
    return tuple(row[1] for row in rows if row[6] != 1)


def _check_header(path):
    """Refuse a file that is not SQLite, or shorter than its own header says (truncated)."""
    header = read_header(path)
    if header[:16] != HEADER:
        raise BadFile("is not an SQLite database")
    if len(header) < 100:
        raise BadFile("is truncated")
    size = declared_size(header)
    if size and path.stat().st_size < size:
        raise BadFile(f"is truncated ({path.stat().st_size} bytes of {size})")


def _applied_migrations(conn):
    try:
        rows = conn.execute("SELECT app, name FROM django_migrations").fetchall()
    except sqlite3.OperationalError as err:
        raise BadFile("has a django_migrations table this code cannot read") from err
    return frozenset((str(app), str(migration)) for app, migration in rows)


# --- the seam: the drill's scratch restore ----------------------------------------------------


def restore_scratch(plain, folder):
    """Restore `plain` into a scratch file in `folder` as a restore would; (problems, counts)."""
    with scratch_file(folder) as scratch:
        try:
            load_into(plain, scratch)
        except sqlite3.Error as err:
            if interrupted(err):
                raise
            return [f"the backup could not be restored into a scratch file: {err}"], {}
        try:
            problems, counts = check_file(scratch, "full")
        except sqlite3.DatabaseError as err:
            if interrupted(err):
                raise
            return [f"the restored copy is not a sound database: {err}"], {}
    if problems:
        return [f"the restored copy failed the integrity check: {problems[0]}"], counts
    return [], counts
