"""The database seam for PostgreSQL (see backups_app.db for the functions every engine offers).

A backup is `pg_dump`'s custom format of the live database (`DBNAME.{timestamp}.dump`), taken
in a snapshot our own connection exports, so the row counts its `NAME.json` records are the
dump's own (postgres_dump). Quick check: `pg_restore --list` reads the whole table of contents,
with a table for every table counted. Full check: the dump restored into a scratch database on
the same server (the site's user needs CREATEDB), read there, and dropped whatever happens. The
confirmation page reads the dump without restoring it (read_contents, postgres_contents). A
restore swaps a checked scratch database in for the live one (postgres_scratch). The client
side (who the site is, pg_dump and pg_restore, passfiles, timeouts) is postgres_client.
"""

import errno
import logging
import time
from pathlib import Path

from backups_app.db.facts import BadFile, FileFacts
from backups_app.db.postgres_carry import carry, columns, kept_rows
from backups_app.db.postgres_client import (
    COMPRESSION,
    NeedsCreatedb,
    PostgresError,
    applied_migrations,
    first_line,
    live_server,
    psycopg,
    row_counts,
    tables,
)
from backups_app.db.postgres_contents import list_contents
from backups_app.db.postgres_contents import read_contents as read_dump_contents
from backups_app.db.postgres_dump import dump
from backups_app.db.postgres_scratch import SCRATCH_RE, drop_database, scratch_restore, swap_in

NAME = "PostgreSQL"
logger = logging.getLogger(__name__)

SUFFIX = ".dump"
A_BACKUP = "a PostgreSQL dump"
# The database is on a server, maybe another machine: lock files and uploads go in the
# backups folder (which a PostgreSQL site must set).
IS_FILE = False
Error = (PostgresError, psycopg.Error) if psycopg else PostgresError
# The full check restores into a scratch database: a restore checks the database it restored
# (`restore_live(checked=...)`) rather than restoring twice.
CHECKS_WHILE_RESTORING = True
HEADER = b"PGDMP"
SAFETY_COMPRESSION = 1
# The row counts of dumps this process made, read in the dump's own snapshot, maybe still
# being read: {path: postgres_dump.Counting}.
_counted = {}
# A page that reads the live database waits this long (seconds) for a lock, then goes without.
PAGE_LOCK_WAIT = 2


# --- the seam: names --------------------------------------------------------------------------


def _dbname(database):
    """A database name from a `database` argument (the engine passes names as paths too)."""
    return str(database) if database else None


def base_name(database=None):
    """Backup names start with the database's name on the server (`shop.` for `shop`).

    A restore's swapped-out database (`shop__stanza_old_...`) is named as the live one: its
    dump is the live database's `pre-restore` safety backup.
    """
    name = _dbname(database) or live_server().name
    match = SCRATCH_RE.search(name)
    return name[: match.start()] if match else name


def database_size(database=None):
    """The database's size on the server, in bytes (0 when it cannot be read)."""
    try:
        with live_server().connect(_dbname(database), autocommit=True) as conn:
            return conn.execute("SELECT pg_database_size(current_database())").fetchone()[0]
    except Error:
        return 0


def is_backup_header(header):
    return header[: len(HEADER)] == HEADER


def declared_size(header):
    """A dump does not declare its size."""
    return None


def source_problem(database=None):
    """Why the database cannot be backed up (the server cannot be reached), or None."""
    server = live_server()
    if not server.name:
        return "DATABASES['default'] names no database"
    try:
        server.connect(_dbname(database)).close()
    except PostgresError as err:
        return str(err)
    return None


# --- the seam: copying ------------------------------------------------------------------------


def copy_live(dest, *, database=None, progress=None, flush=True, until_locked=None):
    """`pg_dump -Fc` of the database into `dest`; return its tables (see postgres_dump).

    The rows, counted in the dump's snapshot while the engine hashes `dest`, are collected by
    check_file's quick check of it. `until_locked` is called first: a dump reads one snapshot.
    """
    if until_locked is not None:
        until_locked()
    server = live_server()
    # A database a restore swapped out is dumped while the restore's caller waits: at gzip
    # level 1 (a third of the time of level 6 for a slightly bigger file).
    database = _dbname(database)
    swapped_out = database and (m := SCRATCH_RE.search(database)) and m["kind"] == "old"
    level = SAFETY_COMPRESSION if swapped_out else COMPRESSION
    counting = dump(server, dest, Path(dest).parent, dbname=database, compression=level)
    _counted[str(dest)] = counting
    if progress:
        size = Path(dest).stat().st_size
        progress(size, size)
    return counting.tables


def error_kind(err):
    """What a failed copy_live met, as backups_app.db lists them, or None."""
    message = str(err)
    if "No space left" in message or getattr(err, "errno", None) == errno.ENOSPC:
        return "disk-full"
    if "could not open output file" in message or "Permission denied" in message:
        return "cannot-open"
    return None


def interrupted(err):
    """A signal stops pg_dump/pg_restore with us (same process group): no error of theirs
    stands for it; the KeyboardInterrupt is Python's own."""
    return False


# --- the seam: checking a backup file ---------------------------------------------------------


def check_file(path, kind="quick", *, cancel=None):
    """(problems, {table: rows}) of the dump at `path`.

    "quick": its table of contents reads whole and has every table its dump counted (the
    counts are those copy_live read; {} for a dump this process did not make). "full": it
    restores into a scratch database, whose rows are counted (and compared with the dump's).
    """
    counting = _counted.pop(str(path), None)
    try:
        if kind == "quick":
            started = time.monotonic()
            contents = list_contents(path)  # while the rows are counted
            counted = _collect(counting, started)
            missing = sorted(set(counted) - contents.tables)
            problems = [f"tables missing: {', '.join(missing[:5])}"] if missing else []
            return problems, counted
        counted = _collect(counting)
        facts = read_file(path)
    except (PostgresError, BadFile) as err:
        return [str(err)], {}
    problems = [
        f"table {t}: {facts.counts.get(t)} rows restored, {n} at the backup's moment"
        for t, n in sorted((counted or {}).items())
        if facts.counts.get(t) != n
    ]
    return problems, facts.counts


def _collect(counting, started=None):
    """{table: rows} of a dump this process made ({} for another), once counted."""
    if counting is None:
        return {}
    counts = counting.result()
    if started is not None:
        logger.info(
            "pg_dump took %.2f s; its rows were counted in %.2f s alongside the quick check "
            "(%.2f s in all)",
            counting.dumped,
            counting.seconds,
            time.monotonic() - started,
            extra={
                "event": "pg_dump",
                "timings": {
                    "dump": round(counting.dumped, 3),
                    "counts": round(counting.seconds, 3),
                    "quick_check": round(time.monotonic() - started, 3),
                },
            },
        )
    return counts


def read_file(path):
    """The full check (restored into a scratch database), then what the restore compares.

    BadFile, in words that follow the file's name, when it is not a dump that restores.
    """
    try:
        list_contents(path)
    except PostgresError as err:
        raise BadFile(str(err)) from err
    server = live_server()
    try:
        with (
            scratch_restore(server, path, Path(path).parent) as (name, _kept),
            server.connect(name, autocommit=True) as conn,
        ):
            return _facts(conn)
    except NeedsCreatedb:
        raise
    except PostgresError as err:
        raise BadFile(str(err)) from err


def read_contents(path):
    """What the restore confirmation page judges, without a restore: the dump's tables, their
    columns and its migrations (postgres_contents); no row counts (the caller has NAME.json's).
    """
    return read_dump_contents(path)


def _facts(conn):
    found = tables(conn)
    shape = {key: tuple(columns(conn, t, s)) for key, (s, t) in found.items()}
    migrations = applied_migrations(conn)
    return FileFacts(
        columns=shape,
        counts=row_counts(conn),
        migrations=None if migrations is None else frozenset(migrations),
    )


# --- the seam: the drill's scratch restore ----------------------------------------------------


def restore_scratch(plain, folder):
    """Restore `plain` into a scratch database as a restore would; (problems, counts)."""
    try:
        facts = read_file(plain)
    except BadFile as err:
        return [f"the backup could not be restored into a scratch database: {err}"], {}
    return [], facts.counts


# --- the seam: restoring ----------------------------------------------------------------------


def restore_live(
    plain, *, keep, database=None, before=None, ahead=None, checked=None, unlocked=None
):
    """Replace the live database with the backup `plain`; ({what was kept: rows}, [notes]).

    `ahead` is not called: the safety backup is the dump of the database swapped out.

    The backup is restored into a new database (`checked(facts)` may refuse it there, raising),
    the product's records (`keep`) are carried into it from the live one, and the two swap
    names in one transaction (`unlocked(seconds)` is told how long writers were cut off). Then
    `before(old)` dumps the swapped-out database, which holds every write committed before the
    swap, as the safety backup, and it is dropped; if that dump fails, the old database is kept
    under its name (the caller's error says so).
    """
    try:
        return _restore_live(plain, keep, database, before, checked, unlocked)
    except PostgresError:
        raise
    except Error as err:  # psycopg's: the server went away mid-way, say; in words, not libpq's
        raise PostgresError(first_line(err)) from err


def _restore_live(plain, keep, database, before, checked, unlocked):
    server = live_server()
    folder = Path(plain).parent
    timings, started = {}, time.monotonic()
    with server.maintenance() as admin:
        with scratch_restore(server, plain, folder, kind="restore") as (new, kept_names):
            timings["restore"] = time.monotonic() - started
            with server.connect(new) as dst:
                if checked is not None:
                    checked(_facts(dst))
                timings["check"] = time.monotonic() - started - timings["restore"]
                with server.connect(_dbname(database)) as src:
                    kept, notes = carry(src, dst, keep)
                dst.commit()
            cut_off = time.monotonic()
            old = swap_in(server, admin, new)
            timings["swap"] = time.monotonic() - cut_off
            kept_names.add(new)
        if unlocked is not None:
            unlocked(timings["swap"])
        if before is not None:
            safety = time.monotonic()
            before(old)  # on failure `old` stays: the previous data
            timings["safety"] = time.monotonic() - safety
        try:
            drop_database(admin, old)
        except Error as err:  # the restore is done: say what is left, never "nothing changed"
            logger.warning(
                "database %s, the data this restore replaced (in its safety backup), could "
                "not be dropped: %s; drop it by hand",
                old,
                first_line(err),
            )
    logger.info(
        "restored into a new database in %.1f s, checked it in %.1f s, swapped it in in %.2f s, "
        "safety backup of the old one in %.1f s",
        *(timings.get(step, 0) for step in ("restore", "check", "swap", "safety")),
        extra={"event": "swap", "timings": {k: round(v, 3) for k, v in timings.items()}},
    )
    return kept, notes


def kept_now(keep, database=None):
    """(tables, {what: rows}) of the live database: what a restore would carry forward."""
    try:
        with live_server().connect(_dbname(database), autocommit=True) as conn:
            # A page: a lock held elsewhere (a migration) is not waited for.
            conn.execute("SELECT set_config('lock_timeout', %s, false)", (f"{PAGE_LOCK_WAIT}s",))
            return kept_rows(conn, keep)
    except Error:
        return None
