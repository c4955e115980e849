"""Restore: check a backup file, then make it the live database's content.

Every check runs before anything is written, so a refused file changes nothing. The restore
itself happens inside ONE write transaction of the live database, taken before the safety
backup and committed after the copy: writers wait (within their busy timeout) instead of
committing rows that neither the safety backup nor the restored database would hold. The
copy is SQL (the backup's schema, then its rows), so the live file keeps its own page size and
journal mode, and open connections see either the old data or the restored data, never a mix.
The product's own records (run history, alert state, the scheduler's job store, the audit of
dashboard actions) are carried forward from the live database: a restore replaces the site's
data, not the product's history.
"""

import contextlib
import dataclasses
import gzip
import logging
import shutil
import sqlite3
import time
import zlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

from backups_app import signals
from backups_app.db import sqlite
from backups_app.engine import backups
from backups_app.engine.backups import BackupError
from backups_app.media import put_back as media_put_back

logger = logging.getLogger(__name__)

GZIP_MAGIC = b"\x1f\x8b"
CHUNK = backups.READ_CHUNK
# How long the restore waits for other connections to let go of the live database.
LOCK_TIMEOUT = 60
# Decompressing never leaves less than this free on the disk the live database is on.
FREE_SPACE_MARGIN = 64 * 1024 * 1024
# The apps whose audit entries (django_admin_log rows of their content types) are the
# product's own: the dashboard records its actions under them.
AUDIT_APPS = ("backups_app",)


class RestoreError(BackupError):
    """A backup file that cannot be restored, or a restore that failed; nothing was changed."""


class RestoreCancelled(RestoreError):
    """The person asked said no; nothing was changed."""

    def __init__(self, message="restore cancelled; nothing was changed"):
        super().__init__(message)


@dataclass(frozen=True)
class BackupInfo:
    """What the checks found out about a backup file."""

    path: Path
    compressed: bool
    size: int  # the file as stored
    database_size: int  # the SQLite database inside it
    page_size: int
    checksum_verified: bool  # False when there is no .sha256 sidecar
    row_counts: dict = field(default_factory=dict)  # {table: rows}
    migrations: frozenset = frozenset()  # {(app, name)} applied in the backup
    pending_migrations: tuple = ()  # known to the code, not applied in the backup

    @property
    def name(self):
        return self.path.name

    @property
    def total_rows(self):
        return sum(self.row_counts.values())


@dataclass(frozen=True)
class RestoreResult:
    backup: BackupInfo
    database: Path
    safety_backup: backups.Backup | None  # None when there was no database to save
    duration: float
    kept: dict = field(default_factory=dict)  # {what was carried forward: rows}
    notes: tuple = ()  # what could not be carried forward, in words
    run: object = None  # the CronRun that records it, when it went into the live database

    def summary(self):
        """One line for a run history, a message or a log."""
        safety = self.safety_backup.name if self.safety_backup else "none (no database)"
        line = (
            f"restored {self.backup.name} ({len(self.backup.row_counts)} tables, "
            f"{self.backup.total_rows} rows); safety backup: {safety}"
        )
        if self.kept:
            line += "; kept " + ", ".join(f"{what} ({rows})" for what, rows in self.kept.items())
        return line


# --- checking -----------------------------------------------------------------------------


def check_backup_file(path, *, scratch_dir=None):
    """Check that `path` is a sound backup of this project's database; return BackupInfo.

    Raises RestoreError saying what is wrong. A gzip'd file is decompressed (streaming) into
    a temporary file in `scratch_dir` (default: the backup's own folder), removed after.
    """
    with opened_backup(path, scratch_dir=scratch_dir) as (info, _plain):
        return info


@contextlib.contextmanager
def opened_backup(path, *, scratch_dir=None, limit=None):
    """Check a backup and yield (BackupInfo, path of the plain SQLite file) while it is needed.

    For a gzip'd backup the plain file is a temporary one, deleted when the block ends; it
    never grows past what its SQLite header declares, `limit` bytes, or the free space.
    """
    path = Path(path)
    _check_is_file(path)
    checksum_verified = _check_checksum(path)
    compressed = is_gzip(path)
    if not compressed:
        yield inspect(path, path, compressed, checksum_verified), path
        return
    folder = Path(scratch_dir or path.parent)
    with scratch_file(folder) as plain:
        inflate(path, plain, name=path.name, limit=limit)
        yield inspect(path, plain, compressed, checksum_verified), plain


def _check_is_file(path):
    if not path.exists():
        raise RestoreError(f"{path} does not exist")
    if not path.is_file():
        raise RestoreError(f"{path} is not a file")
    if path.stat().st_size == 0:
        raise RestoreError(f"{path.name} is empty")
    wal = Path(f"{path}-wal")
    if wal.exists() and wal.stat().st_size > 0:
        # Part of its data is in the -wal file, which a backup never has: it is in use.
        raise RestoreError(
            f"{path.name} is a database in use (it has a -wal file), not a backup; "
            "back it up first with `manage.py backup`"
        )


def _check_checksum(path):
    expected = backups.read_checksum(path)
    if expected is None:
        return False
    actual = backups.sha256_of(path)
    if actual != expected.lower():
        raise RestoreError(
            f"{path.name} does not match its .sha256 checksum (the file changed after it was "
            "written, or the checksum belongs to another file)"
        )
    return True


def is_gzip(path):
    with open(path, "rb") as f:
        return f.read(2) == GZIP_MAGIC


def declared_size(header):
    """The database size an SQLite header declares (page size x page count), or None.

    The page count is valid only when the two change counters agree (SQLite's own rule).
    """
    if len(header) < 100 or header[:16] != sqlite.HEADER:
        return None
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    pages = int.from_bytes(header[28:32], "big")
    if header[24:28] != header[92:96] or not pages:
        return None
    return page_size * pages


def inflate(source, dest, *, name=None, limit=None):
    """Decompress a gzip'd backup into `dest` as a stream; return the bytes written.

    A gzip bomb stops here: the SQLite header is read first, and the output may not grow past
    the size it declares, nor `limit` bytes, nor the free space of `dest`'s disk less a
    margin. Memory stays at one chunk whatever the file.
    """
    name = name or Path(source).name
    written = 0
    try:
        with gzip.open(source, "rb") as fin, open(dest, "wb") as fout:
            header = fin.read(100)
            if header[:16] != sqlite.HEADER:
                raise RestoreError(f"{name} is not an SQLite database (gzip'd)")
            bounds = [declared_size(header), limit, _free_space(Path(dest).parent)]
            bound = min(b for b in bounds if b is not None)
            chunk = header
            while chunk:
                written += len(chunk)
                if written > bound:
                    raise RestoreError(_too_big(name, bound, bounds))
                fout.write(chunk)
                chunk = fin.read(CHUNK)
    except (gzip.BadGzipFile, EOFError, zlib.error) as err:
        raise RestoreError(f"{name} is not a valid gzip file (truncated or damaged)") from err
    except OSError as err:
        raise RestoreError(f"cannot decompress {name}: {err.strerror or err}") from err
    return written


def _free_space(folder):
    try:
        return max(0, shutil.disk_usage(folder).free - FREE_SPACE_MARGIN)
    except OSError:
        return None


def _too_big(name, bound, bounds):
    declared, limit, _free = bounds
    if bound == declared:
        return (
            f"{name} decompresses to more than the {backups.human_size(declared)} its SQLite "
            "header declares; refused (damaged, or not a backup)"
        )
    if bound == limit:
        return f"{name} decompresses to more than the {backups.human_size(limit)} allowed"
    return f"{name} does not fit on the disk once decompressed; nothing was kept"


def inspect(path, plain, compressed, checksum_verified, name=None):
    """Run the database checks on the plain file; return what they found.

    `name` is how errors call the file (default: its own name).
    """
    name = name or path.name
    _check_header(plain, name)
    try:
        conn = sqlite.open_readonly(plain)
    except sqlite3.Error as err:
        raise RestoreError(f"{name} cannot be opened as an SQLite database: {err}") from err
    try:
        problems = sqlite.check(conn, "full")
        if problems:
            raise RestoreError(f"{name} failed the integrity check: {'; '.join(problems[:3])}")
        tables = sqlite.table_names(conn)
        if "django_migrations" not in tables:
            raise RestoreError(
                f"{name} is not a database of this project (no django_migrations table)"
            )
        applied = _applied_migrations(conn, name)
        counts = sqlite.row_counts(conn)
        page_size = sqlite.pragma(conn, "page_size")
    except sqlite3.DatabaseError as err:
        raise RestoreError(f"{name} is not a sound SQLite database: {err}") from err
    finally:
        conn.close()
    unknown, pending = compare_migrations(applied)
    if unknown:
        shown = ", ".join(f"{app}.{name}" for app, name in sorted(unknown)[:3])
        more = f" and {len(unknown) - 3} more" if len(unknown) > 3 else ""
        raise RestoreError(
            f"{name} comes from a newer version of this project: it has migrations this "
            f"code does not know ({shown}{more}); upgrade the code first"
        )
    missing = sorted(expected_tables(applied) - {table.lower() for table in tables})
    if missing:
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        shown = ", ".join(missing[:5]) + more
        raise RestoreError(
            f"{name} is not a complete backup: its own migrations say it must have tables "
            f"it lacks ({shown})"
        )
    return BackupInfo(
        path=path,
        compressed=compressed,
        size=path.stat().st_size,
        database_size=plain.stat().st_size,
        page_size=page_size,
        checksum_verified=checksum_verified,
        row_counts=counts,
        migrations=frozenset(applied),
        pending_migrations=tuple(sorted(pending)),
    )


def _check_header(plain, name):
    """Refuse a file that is not SQLite, or shorter than its own header says (truncated)."""
    header = sqlite.read_header(plain)
    if header[:16] != sqlite.HEADER:
        raise RestoreError(f"{name} is not an SQLite database")
    if len(header) < 100:
        raise RestoreError(f"{name} is truncated")
    size = declared_size(header)
    if size and plain.stat().st_size < size:
        raise RestoreError(f"{name} is truncated ({plain.stat().st_size} bytes of {size})")


def table_names(conn, schema="main"):
    """The tables of one schema of a connection (`main`, an attached `bak`, `temp`)."""
    if schema == "main":
        return sqlite.table_names(conn)
    rows = conn.execute(f"SELECT name FROM {schema}.sqlite_master WHERE type = 'table'")
    return {name for (name,) in rows.fetchall()}


def _applied_migrations(conn, name):
    try:
        rows = conn.execute("SELECT app, name FROM django_migrations").fetchall()
    except sqlite3.OperationalError as err:
        raise RestoreError(f"{name} has a django_migrations table this code cannot read") from err
    return {(str(app), str(migration)) for app, migration in rows}


def _migration_loader():
    from django.db.migrations.loader import MigrationLoader

    return MigrationLoader(None, ignore_no_migrations=True)


def compare_migrations(applied):
    """(unknown, pending) for a set of applied (app, name) migrations.

    unknown: migrations of this code's apps that the code does not have (a newer schema);
    pending: migrations the code has that are not applied (an older schema, fine to restore).
    """
    disk = _migration_loader().disk_migrations
    known = set(disk) | {r for m in disk.values() for r in (m.replaces or ())}
    apps = {app for app, _name in disk}
    unknown = {key for key in applied if key[0] in apps and key not in known}
    applied_squashes = {r for key, m in disk.items() if key in applied for r in (m.replaces or ())}
    pending = {
        key
        for key, migration in disk.items()
        if key not in applied
        and key not in applied_squashes
        and not (migration.replaces and set(migration.replaces) <= applied)
    }
    return unknown, pending


def expected_tables(applied):
    """The tables (lower case) a database must have once `applied` migrations ran.

    Django's migration loader projects the installed apps' models at that state; their
    db_table names, with the many-to-many tables Django creates for them, are what a
    complete backup holds. Unmanaged and proxy models have no table of their own.
    """
    loader = _migration_loader()
    graph = loader.graph
    nodes = {key for key in applied if key in graph.nodes}
    for key, migration in loader.disk_migrations.items():
        if key in graph.nodes and migration.replaces and set(migration.replaces) <= applied:
            nodes.add(key)  # a squash whose replaced migrations were all applied
    if not nodes:
        return set()
    state = graph.make_state(nodes=sorted(nodes), at_end=True, real_apps=loader.unmigrated_apps)
    return {
        model._meta.db_table.lower()
        for model in state.apps.get_models(include_auto_created=True)
        if model._meta.managed and not model._meta.proxy and not model._meta.swapped
    }


# --- what a restore would change ------------------------------------------------------------


@dataclass(frozen=True)
class Changes:
    """What restoring a backup would do to the live database, for the confirmation page."""

    disappear: tuple = ()  # tables the live database has and the backup has not
    appear: tuple = ()  # tables the backup has and the live database has not
    kept: dict = field(default_factory=dict)  # {what is carried forward: rows now}


def changes(info, database=None):
    """Compare a checked backup with the live database (read only; nothing changes)."""
    database = Path(database or backups.live_database_path())
    if not database.exists():
        return Changes(appear=tuple(sorted(info.row_counts)))
    # Read only, and without creating -wal/-shm files where there are none: a database with
    # no -wal file is not open in WAL mode right now, so the main file holds all of it.
    in_use = Path(f"{database}-wal").exists()
    mode = "ro" if in_use else "ro&immutable=1"
    try:
        conn = sqlite3.connect(f"file:{quote(str(database))}?mode={mode}", uri=True, timeout=5)
    except sqlite3.Error:
        return Changes()
    try:
        live = sqlite.table_names(conn)
        kept = {}
        for table, what in product_tables().items():
            if table in live and table in info.row_counts:
                kept[what] = sqlite.row_count(conn, table)
        audit = _audit_rows(conn, live)
        if audit is not None and "django_admin_log" in info.row_counts:
            kept["audit of dashboard actions"] = audit
    except sqlite3.Error:
        return Changes()
    finally:
        conn.close()
    backup = set(info.row_counts)
    return Changes(
        disappear=tuple(sorted(live - backup)), appear=tuple(sorted(backup - live)), kept=kept
    )


def product_tables():
    """{table: what it holds} for the product's own tables, carried forward by a restore."""
    from django_apscheduler.models import DjangoJob, DjangoJobExecution

    from backups_app.models import AlertState, CronRun, DrillRun

    return {
        CronRun._meta.db_table: "run history",
        AlertState._meta.db_table: "alert state",
        DrillRun._meta.db_table: "restore drill history",
        DjangoJob._meta.db_table: "scheduler job store",
        DjangoJobExecution._meta.db_table: "scheduler executions",
    }


def _audit_tables():
    """(log table, content type table, user table, username column, user pk column)."""
    from django.contrib.admin.models import LogEntry
    from django.contrib.auth import get_user_model
    from django.contrib.contenttypes.models import ContentType

    user = get_user_model()
    username = user._meta.get_field(user.USERNAME_FIELD).column
    return (
        LogEntry._meta.db_table,
        ContentType._meta.db_table,
        user._meta.db_table,
        username,
        user._meta.pk.column,
    )


def _audit_rows(conn, tables, schema="main"):
    log, content_types, _user, _username, _pk = _audit_tables()
    if not {log, content_types} <= tables:
        return None
    marks = ", ".join("?" for _ in AUDIT_APPS)
    return conn.execute(
        f"SELECT count(*) FROM {schema}.{q(log)} WHERE content_type_id IN "
        f"(SELECT id FROM {schema}.{q(content_types)} WHERE app_label IN ({marks}))",
        AUDIT_APPS,
    ).fetchone()[0]


# --- restoring ----------------------------------------------------------------------------


def restore_and_record(
    path, *, trigger, by="", database=None, backups_folder=None, confirm=None, media=True
):
    """The one way to restore: under the operation lock, recorded in the run history.

    Into the live database, with `media`, the site files the backup lists are restored too,
    after the safety backup recorded the present ones (backups_app.media.put_back).

    The restore is recorded (job "restore", success or failure) in the database it went
    into when that is the live database; a cancelled restore is not recorded. Raises
    operations.OperationRunning when a backup, restore or upload is already running.
    """
    from backups_app.core import operations

    database = Path(database or backups.live_database_path())
    is_live = database.resolve() == Path(backups.live_database_path()).resolve()
    with operations.exclusive("restore", by=by, database=None if is_live else database):
        try:
            files = media_put_back.plan(path, backups.backups_dir()) if is_live and media else None
            result = restore_backup(
                path, database=database, backups_folder=backups_folder, confirm=confirm
            )
            if files is not None:
                note = files.put_back(result.safety_backup)
                result = dataclasses.replace(result, notes=(*result.notes, note))
        except RestoreCancelled:
            raise
        except BackupError as err:
            if is_live:
                record_restore(error=err, trigger=trigger)
            raise
    if is_live:
        result = dataclasses.replace(result, run=record_restore(result, trigger=trigger))
    return result


def restore_backup(path, *, database=None, backups_folder=None, confirm=None):
    """Check `path`, then, under one write lock of `database`, save it and restore into it.

    `confirm(info)`, when given, is asked after the checks and before any change; a false
    answer raises RestoreCancelled. Raises RestoreError with nothing changed when the checks
    or the copy fail. The safety backup (label `pre-restore`) holds every write committed
    before the restore: writers wait from before it is taken until the restore is committed.
    """
    database = Path(database or backups.live_database_path())
    folder = Path(backups_folder or backups.backups_dir())
    started = time.monotonic()
    if database.exists() and Path(path).exists() and Path(path).samefile(database):
        raise RestoreError(f"{path} is the live database itself, not a backup")
    with opened_backup(path, scratch_dir=_scratch_dir_for(database)) as (info, plain):
        if confirm is not None and not confirm(info):
            raise RestoreCancelled
        existed = database.exists() and database.stat().st_size > 0
        try:
            with _write_locked(database, plain, new_page_size=info.page_size, wal=True) as conn:
                locked_at = time.monotonic()
                safety = _safety_backup(database, folder) if existed else None
                kept, notes = replace_contents(conn, carry=True)
            locked = time.monotonic() - locked_at
        except BaseException as err:
            if not existed:  # the connection created an empty file where there was none
                for leftover in (database, *(Path(f"{database}{s}") for s in ("-wal", "-shm"))):
                    leftover.unlink(missing_ok=True)
            if isinstance(err, sqlite3.Error):
                if sqlite.interrupted(err):
                    raise KeyboardInterrupt from err
                raise RestoreError(
                    f"restore into {database} failed, nothing was changed: {err}"
                ) from err
            raise
    result = RestoreResult(
        backup=info,
        database=database,
        safety_backup=safety,
        duration=time.monotonic() - started,
        kept=kept,
        notes=tuple(notes),
    )
    logger.info(
        "%s into %s in %.2f s (writers waited %.2f s of it)",
        result.summary(),
        database,
        result.duration,
        locked,
        extra={
            "event": "restore",
            "file": info.name,
            "duration": round(result.duration, 3),
            "locked": round(locked, 3),
        },
    )
    for note in notes:
        logger.warning("restore of %s: %s", info.name, note)
    signals.send(signals.restored, result=result, database=database)
    return result


def load_into(plain, database):
    """Load a checked plain backup into `database` the way a restore does (the drill's copy)."""
    try:
        with _write_locked(database, plain, wal=False) as conn:
            replace_contents(conn, carry=False)
    except sqlite3.Error as err:
        if sqlite.interrupted(err):
            raise KeyboardInterrupt from err
        raise RestoreError(f"the backup could not be copied into {database}: {err}") from err


def _safety_backup(database, folder):
    folder.mkdir(parents=True, exist_ok=True)
    try:
        safety = backups.create_backup(database, folder=folder, label="pre-restore")
    except BackupError as err:
        raise RestoreError(
            f"the safety backup of the current database failed, so nothing was restored: {err}"
        ) from err
    return safety


def record_restore(result=None, *, error=None, trigger="manual"):
    """Record a restore in the run history (job "restore") of the restored live database.

    restore_and_record calls it; a restore made another way (from a replica) calls it too.

    Returns the CronRun, or None when the database cannot take the record (a backup from
    before the run history existed); that is logged in one line, never a traceback.
    """
    from django.contrib.contenttypes.models import ContentType
    from django.db import DatabaseError

    from backups_app.models import CronRun

    ContentType.objects.clear_cache()  # ids in the restored database may differ
    try:
        run = CronRun.start("restore", trigger=trigger)
        if error is None:
            run.finish(CronRun.Status.SUCCESS, result=result.summary())
        else:
            run.finish(CronRun.Status.FAILURE, error=str(error))
    except DatabaseError as err:
        logger.warning("could not record the restore in the run history: %s", err)
        return None
    return run


def _scratch_dir_for(database):
    """Where a gzip'd backup is decompressed: beside the live database (same disk)."""
    return database.parent if database.parent.is_dir() else None


@contextlib.contextmanager
def _write_locked(database, plain, *, new_page_size=None, wal=False):
    """A connection to `database`, the backup attached as `bak`, inside BEGIN IMMEDIATE.

    From the BEGIN to the COMMIT no other connection can write (they wait, within their busy
    timeout); readers go on seeing the old data. Any error rolls everything back.
    """
    uri = f"file:{quote(str(database))}?mode=rwc"
    conn = sqlite3.connect(uri, uri=True, timeout=LOCK_TIMEOUT, isolation_level=None)
    try:
        conn.set_progress_handler(lambda: 0, 100_000)  # let signal handlers run
        conn.execute("PRAGMA cache_size = -65536")
        if conn.execute("PRAGMA page_count").fetchone()[0] == 0:  # a new database
            if new_page_size:
                conn.execute(f"PRAGMA page_size = {int(new_page_size)}")
            if wal:
                conn.execute("PRAGMA journal_mode = WAL")
        uri = f"file:{quote(str(plain))}?mode=ro&immutable=1"
        conn.execute("ATTACH DATABASE ? AS bak", (uri,))
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
    finally:
        conn.close()


def q(name):
    """An SQL identifier, quoted."""
    return '"' + str(name).replace('"', '""') + '"'


def replace_contents(conn, *, carry):
    """Inside the caller's transaction: make `main` hold the schema and rows of `bak`.

    With `carry`, the product's own records of `main` are kept (see `product_tables`, and
    the audit entries of AUDIT_APPS); a `running` run that came with the backup is closed.
    Returns ({what was kept: rows}, [what could not be kept, in words]).
    """
    saved = _save_product_records(conn) if carry else {}
    _drop_everything(conn)
    _copy_schema_and_rows(conn)
    if not carry:
        return {}, []
    return _put_back_product_records(conn, saved)


def _columns(conn, schema, table):
    return [row[1] for row in conn.execute(f"PRAGMA {schema}.table_info({q(table)})")]


def _save_product_records(conn):
    """Copy the product's records of the live database into temp tables; return what was saved."""
    tables = table_names(conn)
    saved = {}
    for table in product_tables():
        if table in tables:
            conn.execute(f"CREATE TEMP TABLE {q('keep_' + table)} AS SELECT * FROM main.{q(table)}")
            saved[table] = True
    log, content_types, user, username, pk = _audit_tables()
    if {log, content_types, user} <= tables:
        marks = ", ".join("?" for _ in AUDIT_APPS)
        conn.execute(
            f"CREATE TEMP TABLE keep_audit AS SELECT l.*, u.{q(username)} AS stanza_username, "
            f"ct.app_label AS stanza_app, ct.model AS stanza_model FROM main.{q(log)} l "
            f"JOIN main.{q(user)} u ON u.{q(pk)} = l.user_id "
            f"JOIN main.{q(content_types)} ct ON ct.id = l.content_type_id "
            f"WHERE ct.app_label IN ({marks})",
            AUDIT_APPS,
        )
        saved["audit"] = True
    if "sqlite_sequence" in tables:
        conn.execute("CREATE TEMP TABLE keep_sequence AS SELECT * FROM main.sqlite_sequence")
    return saved


def _drop_everything(conn):
    rows = conn.execute(
        "SELECT type, name, sql FROM main.sqlite_master WHERE name NOT LIKE 'sqlite^_%' ESCAPE '^'"
    ).fetchall()
    for kind in ("trigger", "view"):
        for row_kind, name, _sql in rows:
            if row_kind == kind:
                conn.execute(f"DROP {kind.upper()} IF EXISTS main.{q(name)}")
    tables = [(name, sql or "") for kind, name, sql in rows if kind == "table"]
    # Virtual tables first: dropping one drops its shadow tables.
    tables.sort(key=lambda t: not t[1].upper().startswith("CREATE VIRTUAL"))
    for name, _sql in tables:
        conn.execute(f"DROP TABLE IF EXISTS main.{q(name)}")
    if "sqlite_sequence" in table_names(conn):
        conn.execute("DELETE FROM main.sqlite_sequence")


def _copy_schema_and_rows(conn):
    """Create bak's tables in main, copy their rows, then build indexes, views and triggers."""
    rows = conn.execute(
        "SELECT type, name, sql FROM bak.sqlite_master "
        "WHERE sql IS NOT NULL AND name NOT LIKE 'sqlite^_%' ESCAPE '^'"
    ).fetchall()
    tables = [(name, sql) for kind, name, sql in rows if kind == "table"]
    virtual = [(n, s) for n, s in tables if s.upper().startswith("CREATE VIRTUAL")]
    for _name, sql in virtual:
        conn.execute(sql)
    existing = table_names(conn)  # shadow tables of the virtual ones exist now
    for name, sql in tables:
        if (name, sql) in virtual:
            continue
        if name in existing:
            conn.execute(f"DELETE FROM main.{q(name)}")
        else:
            conn.execute(sql)
        conn.execute(f"INSERT INTO main.{q(name)} SELECT * FROM bak.{q(name)}")
    if "sqlite_sequence" in table_names(conn, "bak"):
        conn.execute("DELETE FROM main.sqlite_sequence")
        conn.execute("INSERT INTO main.sqlite_sequence SELECT name, seq FROM bak.sqlite_sequence")
    for kind in ("index", "view", "trigger"):
        for row_kind, _name, sql in rows:
            if row_kind == kind:
                conn.execute(sql)
    for pragma in ("user_version", "application_id"):
        value = int(conn.execute(f"PRAGMA bak.{pragma}").fetchone()[0])
        conn.execute(f"PRAGMA main.{pragma} = {value}")


def _put_back_product_records(conn, saved):
    restored = table_names(conn)
    kept, notes = {}, []
    for table, what in product_tables().items():
        if table not in saved:
            continue
        if table not in restored:
            notes.append(f"the backup has no {table} table, so the {what} could not be kept")
            continue
        keep = "keep_" + table
        columns = set(_columns(conn, "temp", keep))
        shared = ", ".join(q(c) for c in _columns(conn, "main", table) if c in columns)
        conn.execute(f"DELETE FROM main.{q(table)}")
        conn.execute(f"INSERT INTO main.{q(table)} ({shared}) SELECT {shared} FROM temp.{q(keep)}")
        kept[what] = conn.execute(f"SELECT count(*) FROM temp.{q(keep)}").fetchone()[0]
        _raise_sequence(conn, table)
    cron_runs = next(iter(product_tables()))
    if cron_runs in restored and cron_runs not in saved:
        _close_running_runs(conn, cron_runs)
    if "audit" in saved:
        kept_audit, note = _put_back_audit(conn, restored)
        if kept_audit is not None:
            kept["audit of dashboard actions"] = kept_audit
        if note:
            notes.append(note)
    return kept, notes


def _raise_sequence(conn, table):
    """Never let AUTOINCREMENT hand out again an id the live database already used."""
    if "keep_sequence" not in table_names(conn, "temp") or "sqlite_sequence" not in table_names(
        conn
    ):
        return
    row = conn.execute("SELECT seq FROM temp.keep_sequence WHERE name = ?", (table,)).fetchone()
    if row is None:
        return
    updated = conn.execute(
        "UPDATE main.sqlite_sequence SET seq = max(seq, ?) WHERE name = ?", (row[0], table)
    ).rowcount
    if not updated:
        conn.execute("INSERT INTO main.sqlite_sequence (name, seq) VALUES (?, ?)", (table, row[0]))


def _close_running_runs(conn, table):
    """A run `running` inside a backup was cut off by the backup's moment: close it."""
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    with contextlib.suppress(sqlite3.OperationalError):  # an older schema without these columns
        conn.execute(
            f"UPDATE main.{q(table)} SET status = 'failure', finished_at = ?, error = ? "
            "WHERE status = 'running'",
            (now, "interrupted: the run was still going when the backup it came from was made"),
        )


def _put_back_audit(conn, restored):
    """The live audit entries of AUDIT_APPS replace the backup's; users matched by name.

    Returns (entries kept or None when the backup has no audit table, a note or "").
    """
    log, content_types, user, username, pk = _audit_tables()
    if not {log, content_types, user} <= restored:
        return None, "the backup has no audit table, so the audit of dashboard actions was not kept"
    kinds = conn.execute("SELECT DISTINCT stanza_app, stanza_model FROM temp.keep_audit").fetchall()
    for app, model in kinds:
        found = conn.execute(
            f"SELECT 1 FROM main.{q(content_types)} WHERE app_label = ? AND model = ?",
            (app, model),
        ).fetchone()
        if not found:  # as Django's migrate would create it
            conn.execute(
                f"INSERT INTO main.{q(content_types)} (app_label, model) VALUES (?, ?)",
                (app, model),
            )
    marks = ", ".join("?" for _ in AUDIT_APPS)
    conn.execute(
        f"DELETE FROM main.{q(log)} WHERE content_type_id IN "
        f"(SELECT id FROM main.{q(content_types)} WHERE app_label IN ({marks}))",
        AUDIT_APPS,
    )
    saved_columns = set(_columns(conn, "temp", "keep_audit"))
    plain = [
        c
        for c in _columns(conn, "main", log)
        if c in saved_columns and c not in ("id", "user_id", "content_type_id")
    ]
    into = ", ".join([*(q(c) for c in plain), "user_id", "content_type_id"])
    select = ", ".join([*(f"k.{q(c)}" for c in plain), f"u.{q(pk)}", "ct.id"])
    kept = conn.execute(
        f"INSERT INTO main.{q(log)} ({into}) SELECT {select} FROM temp.keep_audit k "
        f"JOIN main.{q(user)} u ON u.{q(username)} = k.stanza_username "
        f"JOIN main.{q(content_types)} ct ON ct.app_label = k.stanza_app "
        "AND ct.model = k.stanza_model ORDER BY k.action_time, k.id",
    ).rowcount
    total = conn.execute("SELECT count(*) FROM temp.keep_audit").fetchone()[0]
    note = ""
    if kept < total:
        note = (
            f"{total - kept} audit entr{'y' if total - kept == 1 else 'ies'} by users the backup "
            "does not have were not kept"
        )
    return kept, note


# --- scratch files ------------------------------------------------------------------------


@contextlib.contextmanager
def scratch_file(folder):
    """sqlite.scratch_file, with the failure to create it as a RestoreError."""
    folder = Path(folder) if folder else Path(backups.backups_dir())
    try:
        scratch = sqlite.scratch_file(folder)
        path = scratch.__enter__()
    except OSError as err:
        raise RestoreError(f"cannot write a temporary file in {folder}: {err.strerror}") from err
    with contextlib.ExitStack() as stack:
        stack.push(scratch)
        yield path


def describe(info):
    """A few words on a checked backup, for a confirmation prompt or page."""
    parts = backups.parse_backup_name(info.name)
    when = ""
    if parts:
        created = datetime.strptime(parts["stamp"], backups.STAMP_FORMAT).replace(tzinfo=UTC)
        when = f"made {created:%Y-%m-%d %H:%M:%S} UTC, "
    return (
        f"{info.name} ({when}{backups.human_size(info.size)}, {len(info.row_counts)} tables, "
        f"{info.total_rows} rows)"
    )
