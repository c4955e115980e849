"""Restore: check a backup file, then make it the live database's content.

Every check runs before anything is written, so a refused file changes nothing. The restore
itself is the database engine's (`restore_live` of the db seam): under the live database's write
lock the safety backup is taken and the contents replaced, so no committed write is lost and
readers see the old data or the new, never a mix. The product's own records (run history,
alert state, the scheduler's job store, the audit of dashboard actions) are carried forward
from the live database: a restore replaces the site's data, not the product's history.
"""

import contextlib
import dataclasses
import gzip
import logging
import shutil
import time
import zlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from backups_app import db, signals
from backups_app.core import files
from backups_app.engine import backups
from backups_app.engine.backups import BackupError
from backups_app.media import put_back as media_put_back

logger = logging.getLogger(__name__)

GZIP_MAGIC = b"\x1f\x8b"
CHUNK = backups.READ_CHUNK
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
    page_size: int  # SQLite's; 0 for an engine without one
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
    database: Path | None  # None: DATABASES["default"] on its server
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
def opened_backup(path, *, scratch_dir=None, limit=None, check=True):
    """Check a backup and yield (BackupInfo, path of the plain SQLite file) while it is needed.

    For a gzip'd backup the plain file is a temporary one, deleted when the block ends; it
    never grows past what its SQLite header declares, `limit` bytes, or the free space.
    `check=False`: only the file's checks (checksum, gzip); the BackupInfo holds no database
    facts yet, and `judge` gives them once the engine has read the file (a restore into a
    database whose engine checks while restoring).
    """
    path = Path(path)
    _check_is_file(path)
    checksum_verified = _check_checksum(path)
    compressed = is_gzip(path)
    if not compressed:
        yield _inspected(path, path, compressed, checksum_verified, check), path
        return
    folder = Path(scratch_dir or path.parent)
    with scratch_file(folder) as plain:
        inflate(path, plain, name=path.name, limit=limit)
        yield _inspected(path, plain, compressed, checksum_verified, check), plain


def _inspected(path, plain, compressed, checksum_verified, check):
    if check:
        return inspect(path, plain, compressed, checksum_verified)
    return BackupInfo(
        path=path,
        compressed=compressed,
        size=path.stat().st_size,
        database_size=plain.stat().st_size,
        page_size=0,
        checksum_verified=checksum_verified,
    )


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
            engine = backups.database_engine()
            if not engine.is_backup_header(header):
                raise RestoreError(f"{name} is not {engine.A_BACKUP} (gzip'd)")
            bounds = [engine.declared_size(header), limit, _free_space(Path(dest).parent)]
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
    engine = backups.database_engine()
    try:
        facts = engine.read_file(plain)
    except db.BadFile as err:
        raise RestoreError(f"{name} {err}") from err
    except engine.Error as err:
        if engine.interrupted(err):
            raise KeyboardInterrupt from err
        raise RestoreError(f"{name} is not a sound {engine.NAME} database: {err}") from err
    info = BackupInfo(
        path=path,
        compressed=compressed,
        size=path.stat().st_size,
        database_size=plain.stat().st_size,
        page_size=facts.details.get("page_size", 0),
        checksum_verified=checksum_verified,
    )
    return judge(info, facts, name)


def judge(info, facts, name=None):
    """The restore's checks of what the engine read in a backup; the BackupInfo with them.

    RestoreError when it is not of this project, comes from a newer schema, or lacks a table
    its own migrations promise.
    """
    name = name or info.name
    if facts.migrations is None:
        raise RestoreError(f"{name} is not a database of this project (no django_migrations table)")
    applied = set(facts.migrations)
    unknown, pending = compare_migrations(applied)
    if unknown:
        shown = ", ".join(f"{app}.{name}" for app, name in sorted(unknown)[:3])
        more = f" and {len(unknown) - 3} more" if len(unknown) > 3 else ""
        raise RestoreError(
            f"{name} comes from a newer version of this project: it has migrations this "
            f"code does not know ({shown}{more}); upgrade the code first"
        )
    missing = sorted(expected_tables(applied) - {table.lower() for table in facts.columns})
    if missing:
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        shown = ", ".join(missing[:5]) + more
        raise RestoreError(
            f"{name} is not a complete backup: its own migrations say it must have tables "
            f"it lacks ({shown})"
        )
    return dataclasses.replace(
        info,
        row_counts=facts.counts,
        migrations=frozenset(applied),
        pending_migrations=tuple(sorted(pending)),
    )


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
    keep = product_records()
    now = backups.database_engine().kept_now(keep, database)
    if now is None:
        return Changes()
    live, kept_now = now
    backup = set(info.row_counts)
    wanted = {what for table, what in keep.tables.items() if table in backup}
    if keep.audit is not None and keep.audit.log in backup:
        wanted.add(AUDIT_WHAT)
    kept = {what: rows for what, rows in kept_now.items() if what in wanted}
    return Changes(
        disappear=tuple(sorted(live - backup)), appear=tuple(sorted(backup - live)), kept=kept
    )


AUDIT_WHAT = "audit of dashboard actions"


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


def product_records():
    """The product's own records a restore carries forward: its tables and its audit entries."""
    from django.contrib.admin.models import LogEntry
    from django.contrib.auth import get_user_model
    from django.contrib.contenttypes.models import ContentType

    from backups_app.models import CronRun

    user = get_user_model()
    audit = db.Audit(
        log=LogEntry._meta.db_table,
        content_types=ContentType._meta.db_table,
        user=user._meta.db_table,
        username=user._meta.get_field(user.USERNAME_FIELD).column,
        pk=user._meta.pk.column,
        apps=AUDIT_APPS,
    )
    return db.Keep(tables=product_tables(), audit=audit, runs_table=CronRun._meta.db_table)


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

    live = backups.live_database()  # None: the database is on a server (DATABASES["default"])
    database = Path(database) if database else live
    is_live = database == live or database.resolve() == Path(live).resolve()
    with operations.exclusive("restore", by=by, database=None if is_live else database):
        try:
            files = media_put_back.plan(path, backups.backups_dir()) if is_live and media else None
            result = restore_backup(
                path, database=database, backups_folder=backups_folder, confirm=confirm
            )
            if files is not None and (note := files.put_back(result.safety_backup)):
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
    engine = backups.database_engine()
    database = Path(database) if database else backups.live_database()
    folder = Path(backups_folder or backups.backups_dir())
    started = time.monotonic()
    if database is not None and _is_same_file(path, database):
        raise RestoreError(f"{path} is the live database itself, not a backup")
    scratch_dir = _scratch_dir_for(database) if database is not None else folder
    while_restoring = engine.CHECKS_WHILE_RESTORING
    with opened_backup(path, scratch_dir=scratch_dir, check=not while_restoring) as (info, plain):
        if not while_restoring and confirm is not None and not confirm(info):
            raise RestoreCancelled
        existed = database is None or (database.exists() and database.stat().st_size > 0)
        under_lock = {"info": info}

        def checked(facts):  # an engine that checks the database it restored into
            under_lock["info"] = judge(info, facts)
            if confirm is not None and not confirm(under_lock["info"]):
                raise RestoreCancelled

        def before(source=None, paused=None):
            under_lock["at"] = time.monotonic()
            under_lock["paused"] = paused
            if source is None:
                under_lock["safety"] = _safety_backup(database, folder) if existed else None
                return
            try:  # the swapped-out database, after the swap (see CHECKS_WHILE_RESTORING)
                under_lock["safety"] = backups.create_backup(
                    source, folder=folder, label="pre-restore"
                )
            except BackupError as err:
                raise RestoreError(
                    f"the backup was restored, but the safety backup of the previous data "
                    f"failed ({err}); the previous data is kept in database {source}"
                ) from err

        extra = {"checked": checked} if while_restoring else {}
        try:
            kept, notes = engine.restore_live(
                plain, keep=product_records(), database=database, before=before, **extra
            )
            locked = under_lock["paused"]
            if locked is None:
                locked = time.monotonic() - under_lock["at"]
            safety = under_lock["safety"]
            info = under_lock["info"]
        except engine.Error as err:
            if engine.interrupted(err):
                raise KeyboardInterrupt from err
            raise RestoreError(
                f"restore into {database_shown(database)} failed, nothing was changed: {err}"
            ) from err
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
        database_shown(database),
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


def _is_same_file(path, database):
    try:
        return database.exists() and Path(path).exists() and Path(path).samefile(database)
    except OSError:
        return False


def database_shown(database):
    """How messages name the database restored into: its file, or its name on the server."""
    return database if database is not None else backups.name_prefix()


def _scratch_dir_for(database):
    """Where a gzip'd backup is decompressed: beside the live database (same disk)."""
    return database.parent if database.parent.is_dir() else None


# --- scratch files ------------------------------------------------------------------------


@contextlib.contextmanager
def scratch_file(folder):
    """files.scratch_file, with the failure to create it as a RestoreError."""
    folder = Path(folder) if folder else Path(backups.backups_dir())
    try:
        scratch = files.scratch_file(folder)
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
