"""The database seam: the one place the rest of the app reaches the live database's engine.

`engine()` returns the module for `DATABASES["default"]["ENGINE"]` (see ENGINES). Every engine
module offers the same plain functions and constants, listed below; nothing outside
`backups_app.db` names a vendor. This package imports nothing else of the app (the engine, the
restore, the drill and the checks import it); the product's own records reach it as a `Keep`.

`database` arguments: None is the live database (`DATABASES["default"]`). An engine may accept
its own kind of location too (SQLite: the path of another database file, for `--data-dir` and
the drill's scratch copy). `path`/`plain` arguments are backup files on this machine, never
compressed (the engine gzips and gunzips around the seam).

Names and files
    NAME: str                          the engine's name in messages ("SQLite")
    A_BACKUP: str                      what a backup file is, in messages ("an SQLite database")
    SUFFIX: str                        what a backup file ends with, before any `.gz`
                                       (SQLite ".bak"; PostgreSQL ".dump")
    IS_FILE: bool                      the database is a file on this machine (SQLite): the
                                       engine passes its path as `database`, and tests or
                                       `--data-dir` point it elsewhere; False: None is passed
    base_name(database=None) -> str    what backup names start with: the database file's name
                                       (SQLite), the database's name on the server (PostgreSQL)
    source_problem(database=None) -> str | None
                                       why the database cannot be backed up (missing, not this
                                       engine's, unreadable), in words; None when it can
    is_backup_header(header) -> bool   whether a file's first 100 bytes start a backup file of
                                       this engine (a gzip'd one is sniffed after gunzip)
    declared_size(header) -> int|None  the size the header promises (bounds a gunzip), if known

Copying the live database
    copy_live(dest, *, database=None, progress=None, flush=True, until_locked=None)
        -> frozenset[str]
        Write a consistent copy (a point in time, whatever the site writes meanwhile) into the
        new file `dest`, which exists empty and is the caller's; return the tables the database
        had (the check after the copy requires them all). `progress(done, total)` in bytes,
        maybe from another thread. `flush=False`: the file is read once and deleted after (the
        caller compresses it), so it need not reach the disk. `until_locked` (a restore's
        safety backup): the engine copies what it can while writers go on, calls
        `until_locked()`, which returns once the caller holds the database's write lock, and
        makes the copy the database as it is then. SQLite: VACUUM INTO (until_locked: the backup
        API's page copy of a snapshot, then the pages the WAL changed since).

Checking a backup file
    check_file(path, kind="quick", *, cancel=None) -> (problems: list[str], counts: {table: rows})
        kind "quick" (the file is whole: run on every backup before it gets its name) or "full"
        (all the engine can check: before every restore and upload, in the drill). No problems:
        it passed. `cancel`: a threading.Event; when set, stop early with any error.
    read_file(path) -> FileFacts
        The full check, then what the restore compares with the backup's own migrations:
        tables and their columns, row counts, the applied migrations (None when it has no
        django_migrations table). Raises BadFile (words that follow the file's name: "is
        truncated", "failed the integrity check: ...") when it is not a sound backup file.
    read_contents(path) -> FileFacts
        What the restore confirmation page judges (a page never waits on long work): as
        read_file, without a full check that is long (PostgreSQL: the dump's tables, columns
        and migrations read by pg_restore on this machine, no restore; `counts` is {} and
        details["full_check"] False, the caller has NAME.json's). SQLite: the quick check and
        the schema, no counts.

Restoring
    restore_live(plain, *, keep, database=None, before=None, ahead=None, unlocked=None)
        -> (kept, notes)
        Replace the database's contents with the backup's, under the database's write lock:
        `ahead()` (SQLite: the safety backup's copy, made while writers go on) runs once the
        backup is loaded, just before the lock;
        `before()` (the safety backup) runs first under the lock, no write can commit between it
        and the end, readers see the old data or the new and never a mix (nor a malformed
        database), and any failure leaves the old data. `before()` may return a function: the
        rest of the safety backup (its checks, hash and name), which goes on alongside the
        restore's copy; it is called (and must succeed) before the restore commits. The
        product's own records (`keep`) are carried forward. `unlocked(seconds)` is told, once
        writers can go on, how long they were held (SQLite: from the step that took the write
        lock to the commit; PostgreSQL: the swap). Returns ({what was kept: rows}, [what could
        not be kept, in words]).
    CHECKS_WHILE_RESTORING: bool       False (SQLite): the caller runs read_file first. True
        (PostgreSQL, whose full check is itself a restore): restore_live(..., checked=f)
        restores into a new database, calls f(FileFacts) there (it raises to refuse, nothing
        changed), swaps the new database in, then calls before(old): the swapped-out
        database, which holds every write committed before the swap, is dumped as the safety
        backup.
    database_size(database=None) -> int
        The live database's size in bytes (bounds uploads).
    kept_now(keep, database=None) -> (tables: set[str], kept: {what: rows})
        The database's tables and what a restore would carry forward (the confirmation page).
    restore_scratch(plain, folder) -> (problems, counts)
        The drill: restore the backup the way restore_live does into a scratch database (a file
        in `folder`, or a database on the server), full-check it, count its rows, remove it.

Errors
    Error: the exception class (or tuple) the engine's database errors are instances of
    interrupted(err) -> bool           the engine stopped because a signal handler raised
    error_kind(err) -> str | None      what a failed copy_live met: "disk-full", "write",
                                       "cannot-open", "not-a-database", "locked", or None;
                                       the engine words it for the person
"""

from django.conf import settings

from backups_app.db import sqlite
from backups_app.db.facts import Audit, BadFile, FileFacts, Keep

__all__ = ("Audit", "BadFile", "FileFacts", "Keep", "engine")


def _sqlite():
    return sqlite


def _postgres():
    """Imported for a PostgreSQL site only: psycopg costs every process 10 MB of memory."""
    from backups_app.db import postgres

    return postgres


# One line per engine: DATABASES' ENGINE -> (its name in messages, the seam module's loader).
ENGINES = {
    "django.db.backends.sqlite3": ("SQLite", _sqlite),
    "django.db.backends.postgresql": ("PostgreSQL", _postgres),
}


class UnsupportedDatabase(Exception):
    """DATABASES["default"] uses an engine no module here implements."""


def engine(alias="default"):
    """The seam module of the site's database (read each call: settings are read lazily)."""
    name = settings.DATABASES[alias].get("ENGINE")
    try:
        _label, load = ENGINES[name]
    except KeyError:
        supported = " or ".join(label for label, _load in ENGINES.values())
        raise UnsupportedDatabase(
            f"Stanza Backups needs {supported}: DATABASES['{alias}'] uses {name}, "
            "and other databases are not supported yet"
        ) from None
    return load()
