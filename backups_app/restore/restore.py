"""Restore: check a backup file, then make it the live database's content.

Every check runs before anything is written, so a refused file changes nothing. The restore
itself is the database engine's (`restore_live` of the db seam): under the live database's write
lock the safety backup is taken and the contents replaced, so no committed write is lost and
readers see the old data or the new, never a mix. The product's own records (run history,
alert state, the scheduler's job store, the audit of dashboard actions) are carried forward
from the live database: a restore replaces the site's data, not the product's history.
"""

import dataclasses
import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from backups_app import db, signals
from backups_app.core.errors import BackupError
from backups_app.core.formatting import human_size
from backups_app.engine import backups
from backups_app.media import put_back as media_put_back
from backups_app.restore.checks import (  # noqa: F401 (the restore's checks, as restore.NAME)
    FREE_SPACE_MARGIN,
    BackupInfo,
    RestoreError,
    check_backup_file,
    inflate,
    inspect,
    is_gzip,
    judge,
    opened_backup,
    preview_backup_file,
)

logger = logging.getLogger(__name__)

# The apps whose audit entries (django_admin_log rows of their content types) are the
# product's own: the dashboard records its actions under them.
AUDIT_APPS = ("backups_app",)


class RestoreCancelled(RestoreError):
    """The person asked said no; nothing was changed."""

    def __init__(self, message="restore cancelled; nothing was changed"):
        super().__init__(message)


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
    before the restore: it is copied while writers go on, and brought up to date under the lock
    they wait for until the restore is committed.
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

        def unlocked(seconds):  # how long the site's writers were held, the engine says
            under_lock["paused"] = seconds

        def before(source=None):
            if source is None:
                under_lock["safety"] = None
                if not existed:
                    return None
                pre_restore.start()

                def finish():
                    under_lock["safety"] = pre_restore.finish()

                return finish
            try:  # the swapped-out database, after the swap (see CHECKS_WHILE_RESTORING)
                under_lock["safety"] = backups.create_backup(
                    source, folder=folder, label="pre-restore"
                )
            except BackupError as err:
                raise RestoreError(
                    f"the backup was restored, but the safety backup of the previous data "
                    f"failed ({err}); the previous data is kept in database {source}"
                ) from err

        pre_restore = _SafetyBackup(database, folder)
        if while_restoring:
            extra = {"checked": checked}
        else:  # the engine starts the safety backup's copy once the backup is loaded
            extra = {"ahead": pre_restore.ahead if existed else None}
        try:
            with pre_restore:
                kept, notes = engine.restore_live(
                    plain,
                    keep=product_records(),
                    database=database,
                    before=before,
                    unlocked=unlocked,
                    **extra,
                )
            locked = under_lock["paused"]
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


class _SafetyBackup:
    """The `pre-restore` backup: every write committed before the restore, in the least of the
    time writers wait for it.

    ahead(), called just before the restore's lock, copies the live database while writers go on
    and returns once the copy is made; the engine then waits for the lock (`_until_locked`),
    holding the snapshot it copied (SQLite: a read transaction, as long as a backup's own; a
    RESTART or TRUNCATE checkpoint another process runs meanwhile waits for it, holding the
    site's writers, so it is kept short). start(), under the lock, lets it
    make the copy whole (SQLite: the pages written since) and returns once it has; its checks,
    hash and site files go on in its thread while the restore copies, and finish() waits for
    them (the restore commits only after). Leaving the `with` releases a copy still waiting for
    a lock that never came (the restore failed first), then waits for the thread, so nothing is
    left half written.
    """

    class NotNeeded(Exception):
        """The restore stopped before its lock: the copy made ahead is thrown away."""

    def __init__(self, database, folder):
        self.database, self.folder = database, folder
        self.thread = None
        # The copy is made (and waits for the lock); the lock is taken; the copy is whole.
        self.ready, self.locked, self.copied = (threading.Event() for _ in range(3))
        self.outcome = {}

    def ahead(self):
        self.folder.mkdir(parents=True, exist_ok=True)
        self.thread = threading.Thread(target=self._run, name="pre-restore backup", daemon=True)
        self.thread.start()
        self.ready.wait()
        self._raise_if_failed()

    def start(self):
        if self.thread is None:
            self.ahead()
        self.locked.set()
        self.copied.wait()
        self._raise_if_failed()

    def finish(self):
        self.thread.join()
        self._raise_if_failed()
        return self.outcome["backup"]

    def _until_locked(self):
        self.ready.set()
        self.locked.wait()
        if "abandoned" in self.outcome:
            raise self.NotNeeded

    def _run(self):
        try:
            self.outcome["backup"] = backups.create_backup(
                self.database,
                folder=self.folder,
                label="pre-restore",
                until_locked=self._until_locked,
                on_copied=self.copied.set,
            )
        except BaseException as err:  # reported by ahead(), start() or finish()
            self.outcome["error"] = err
        finally:
            self.ready.set()
            self.copied.set()

    def _raise_if_failed(self):
        err = self.outcome.get("error")
        if err is None:
            return
        if isinstance(err, BackupError):
            raise RestoreError(
                f"the safety backup of the current database failed, so nothing was restored: {err}"
            ) from err
        raise err

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.thread is not None:
            if not self.locked.is_set():
                self.outcome["abandoned"] = True
                self.locked.set()
            self.thread.join()
        return False


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


def describe(info):
    """A few words on a checked backup, for a confirmation prompt or page."""
    parts = backups.parse_backup_name(info.name)
    when = ""
    if parts:
        created = datetime.strptime(parts["stamp"], backups.STAMP_FORMAT).replace(tzinfo=UTC)
        when = f"made {created:%Y-%m-%d %H:%M:%S} UTC, "
    return (
        f"{info.name} ({when}{human_size(info.size)}, {len(info.row_counts)} tables, "
        f"{info.total_rows} rows)"
    )
