"""Restore: check a backup file, then copy it into the live database; accept uploaded backups.

Every check runs before anything is written, so a refused file changes nothing. The copy goes
through SQLite's online backup API in one step: it is one write transaction on the live
database, so open connections see either the old data or the restored data, never a mix.
"""

import contextlib
import gzip
import hashlib
import logging
import os
import secrets
import sqlite3
import time
import zlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

from backups_app import backups
from backups_app.backups import BackupError

logger = logging.getLogger(__name__)

GZIP_MAGIC = b"\x1f\x8b"
CHUNK = backups.READ_CHUNK
# How long the restore waits for other connections to let go of the live database.
LOCK_TIMEOUT = 60


class RestoreError(BackupError):
    """A backup file that cannot be restored, or a restore that failed; nothing was changed."""


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

    def summary(self):
        """One line for a run history, a message or a log."""
        safety = self.safety_backup.name if self.safety_backup else "none (no database)"
        return (
            f"restored {self.backup.name} ({len(self.backup.row_counts)} tables, "
            f"{self.backup.total_rows} rows); safety backup: {safety}"
        )


# --- checking -----------------------------------------------------------------------------


def check_backup_file(path, *, scratch_dir=None):
    """Check that `path` is a sound backup of this project's database; return BackupInfo.

    Raises RestoreError saying what is wrong. A gzip'd file is decompressed (streaming) into
    a temporary file in `scratch_dir` (default: the backup's own folder), removed after.
    """
    with opened_backup(path, scratch_dir=scratch_dir) as (info, _plain):
        return info


@contextlib.contextmanager
def opened_backup(path, *, scratch_dir=None):
    """Check a backup and yield (BackupInfo, path of the plain SQLite file) while it is needed.

    For a gzip'd backup the plain file is a temporary one, deleted when the block ends.
    """
    path = Path(path)
    _check_is_file(path)
    checksum_verified = _check_checksum(path)
    compressed = _is_gzip(path)
    if not compressed:
        yield _inspect(path, path, compressed, checksum_verified), path
        return
    with scratch_file(Path(scratch_dir or path.parent)) as plain:
        _gunzip(path, plain)
        yield _inspect(path, plain, compressed, checksum_verified), plain


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


def _is_gzip(path):
    with open(path, "rb") as f:
        return f.read(2) == GZIP_MAGIC


def _gunzip(source, dest, name=None):
    """Decompress `source` into `dest` a chunk at a time (a big backup never sits in memory)."""
    try:
        with gzip.open(source, "rb") as fin, open(dest, "wb") as fout:
            while chunk := fin.read(CHUNK):
                fout.write(chunk)
    except (gzip.BadGzipFile, EOFError, zlib.error) as err:
        raise RestoreError(
            f"{name or source.name} is not a valid gzip file (truncated or damaged)"
        ) from err
    except OSError as err:
        raise RestoreError(
            f"cannot decompress {name or source.name}: {err.strerror or err}"
        ) from err


def _inspect(path, plain, compressed, checksum_verified, name=None):
    """Run the database checks on the plain file; return what they found.

    `name` is how errors call the file (default: its own name).
    """
    name = name or path.name
    _check_header(plain, name)
    try:
        conn = open_readonly(plain)
    except sqlite3.Error as err:
        raise RestoreError(f"{name} cannot be opened as an SQLite database: {err}") from err
    try:
        result = conn.execute("PRAGMA integrity_check").fetchall()
        if result != [("ok",)]:
            details = "; ".join(str(row[0]) for row in result[:3])
            raise RestoreError(f"{name} failed the integrity check: {details}")
        tables = _table_names(conn)
        if "django_migrations" not in tables:
            raise RestoreError(
                f"{name} is not a database of this project (no django_migrations table)"
            )
        applied = _applied_migrations(conn, name)
        counts = {table: backups.row_count(conn, table) for table in sorted(tables)}
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
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


def open_readonly(path):
    """Open a backup file for reading only, as the single file it is.

    `immutable=1`: a backup is not written while we read it, and SQLite must not create
    `-wal`/`-shm` files beside it (it would, for a file copied from a WAL database).
    """
    conn = sqlite3.connect(
        f"file:{quote(str(path))}?mode=ro&immutable=1", uri=True, isolation_level=None
    )
    conn.set_progress_handler(lambda: 0, 100_000)  # let signal handlers run
    return conn


def _check_header(plain, name):
    """Refuse a file that is not SQLite, or shorter than its own header says (truncated)."""
    with open(plain, "rb") as f:
        header = f.read(100)
    if header[:16] != backups.SQLITE_HEADER:
        raise RestoreError(f"{name} is not an SQLite database")
    if len(header) < 100:
        raise RestoreError(f"{name} is truncated")
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    pages = int.from_bytes(header[28:32], "big")
    # The page count in the header is valid when the two change counters agree.
    if header[24:28] == header[92:96] and pages and plain.stat().st_size < pages * page_size:
        raise RestoreError(
            f"{name} is truncated ({plain.stat().st_size} bytes of {pages * page_size})"
        )


def _table_names(conn):
    rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
    return {name for (name,) in rows}


def _applied_migrations(conn, name):
    try:
        rows = conn.execute("SELECT app, name FROM django_migrations").fetchall()
    except sqlite3.OperationalError as err:
        raise RestoreError(f"{name} has a django_migrations table this code cannot read") from err
    return {(str(app), str(migration)) for app, migration in rows}


def compare_migrations(applied):
    """(unknown, pending) for a set of applied (app, name) migrations.

    unknown: migrations of this code's apps that the code does not have (a newer schema);
    pending: migrations the code has that are not applied (an older schema, fine to restore).
    """
    from django.db.migrations.loader import MigrationLoader

    disk = MigrationLoader(None, ignore_no_migrations=True).disk_migrations
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


# --- restoring ----------------------------------------------------------------------------


def restore_backup(path, *, database=None, backups_folder=None, confirm=None):
    """Check `path`, make a pre-restore safety backup, then copy the backup into `database`.

    `confirm(info)`, when given, is asked after the checks and before any change; a false
    answer cancels. Raises RestoreError with nothing changed when the checks or the copy fail.
    """
    database = Path(database or backups.live_database_path())
    folder = Path(backups_folder or backups.backups_dir())
    started = time.monotonic()
    if database.exists() and Path(path).exists() and Path(path).samefile(database):
        raise RestoreError(f"{path} is the live database itself, not a backup")
    with opened_backup(path, scratch_dir=_scratch_dir_for(database)) as (info, plain):
        if confirm is not None and not confirm(info):
            raise RestoreError("restore cancelled; nothing was changed")
        safety = _safety_backup(database, folder) if database.exists() else None
        try:
            _copy_into(plain, database, info)
        except RestoreError:
            if safety is None:  # the copy created an empty file where there was none
                for leftover in (database, *(Path(f"{database}{s}") for s in ("-wal", "-shm"))):
                    leftover.unlink(missing_ok=True)
            raise
    result = RestoreResult(
        backup=info, database=database, safety_backup=safety, duration=time.monotonic() - started
    )
    logger.info(
        "%s into %s in %.2f s",
        result.summary(),
        database,
        result.duration,
        extra={"event": "restore", "file": info.name, "duration": round(result.duration, 3)},
    )
    from backups_app import replication  # replication builds on restore

    replication.note_restore(result, database)
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
    """Record a restore in the run history (job "restore"), after the copy so it survives it.

    Pass the RestoreResult, or the error of a restore that failed. Returns the CronRun, or
    None when the restored database cannot take the record (a backup older than the table).
    """
    from django.db import DatabaseError

    from backups_app.models import CronRun

    try:
        run = CronRun.start("restore", trigger=trigger)
        if error is None:
            run.finish(CronRun.Status.SUCCESS, result=result.summary())
        else:
            run.finish(CronRun.Status.FAILURE, error=str(error))
    except DatabaseError:
        logger.warning("could not record the restore in the run history", exc_info=True)
        return None
    return run


def _scratch_dir_for(database):
    """Where a gzip'd backup is decompressed: beside the live database (same disk)."""
    return database.parent if database.parent.is_dir() else None


def _copy_into(plain, database, info):
    """Copy the plain backup file over `database` in one step of the online backup API."""
    try:
        dest = sqlite3.connect(database, timeout=LOCK_TIMEOUT, isolation_level=None)
    except sqlite3.Error as err:
        raise RestoreError(f"cannot open the live database {database}: {err}") from err
    try:
        with contextlib.ExitStack() as stack:
            source_path = plain
            dest_page_size = dest.execute("PRAGMA page_size").fetchone()[0]
            dest_is_wal = dest.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
            if dest_is_wal and _has_content(dest) and dest_page_size != info.page_size:
                # The backup API cannot change the page size of a WAL database: convert first.
                source_path = stack.enter_context(scratch_file(_scratch_dir_for(database)))
                _vacuum_into(plain, source_path, dest_page_size)
            source = open_readonly(source_path)
            stack.callback(source.close)
            deadline = time.monotonic() + LOCK_TIMEOUT

            def give_up_when_stuck(status, remaining, total):
                if time.monotonic() > deadline:
                    raise RestoreError("the live database stayed locked by another process")

            source.backup(dest, pages=-1, progress=give_up_when_stuck)
    except RestoreError:
        raise
    except sqlite3.Error as err:
        raise RestoreError(f"restore into {database} failed, nothing was changed: {err}") from err
    finally:
        dest.close()


def _has_content(conn):
    return conn.execute("PRAGMA page_count").fetchone()[0] > 0


def _vacuum_into(source, dest, page_size):
    dest.unlink()
    conn = open_readonly(source)
    try:
        conn.execute(f"PRAGMA page_size={int(page_size)}")
        conn.execute("VACUUM INTO ?", (str(dest),))
    finally:
        conn.close()


# --- scratch files ------------------------------------------------------------------------


@contextlib.contextmanager
def scratch_file(folder):
    """Yield the path of a new empty temporary file in `folder`; delete it (and SQLite's) after.

    It follows the engine's protocol for temporary files (a `.partial` held under flock), so
    `backups.remove_abandoned_temp_files` leaves it alone while it is in use and removes it
    if this process dies.
    """
    folder = Path(folder) if folder else Path(backups.backups_dir())
    path = folder / f"{backups.TEMP_PREFIX}{os.getpid()}-{secrets.token_hex(4)}.partial"
    try:
        fd = backups._create_locked(path)
    except OSError as err:
        raise RestoreError(f"cannot write a temporary file in {folder}: {err.strerror}") from err
    try:
        yield path
    finally:
        for leftover in (path, *(Path(f"{path}{s}") for s in ("-journal", "-wal", "-shm"))):
            leftover.unlink(missing_ok=True)
        os.close(fd)


# --- uploads ------------------------------------------------------------------------------


def accept_upload(upload, folder=None):
    """Stream an uploaded backup into the backups folder, check it, and keep it; return Backup.

    `upload` is a Django UploadedFile, a file object, or an iterable of byte chunks; it is
    written a chunk at a time, never held in memory. A gzip'd upload stays gzip'd. Anything
    that would be refused by a restore is refused here, and nothing is left behind.
    """
    folder = Path(folder or backups.backups_dir())
    try:
        backups.check_folder(folder)
    except BackupError as err:
        raise RestoreError(str(err)) from err
    with scratch_file(folder) as temp:
        digest = hashlib.sha256()
        try:
            with open(temp, "wb") as out:
                for chunk in _chunks(upload):
                    out.write(chunk)
                    digest.update(chunk)
                out.flush()
                os.fsync(out.fileno())
        except OSError as err:
            raise RestoreError(f"cannot store the upload in {folder}: {err.strerror}") from err
        if temp.stat().st_size == 0:
            raise RestoreError("the uploaded file is empty")
        compressed = _is_gzip(temp)
        # Errors name what the admin uploaded, not the temporary file it was streamed into.
        shown = Path(getattr(upload, "name", "") or "the uploaded file").name
        with scratch_file(folder) as plain:
            if compressed:
                _gunzip(temp, plain, name=shown)
            info = _inspect(temp, plain if compressed else temp, compressed, False, name=shown)
        final = backups.link_into_place(temp, None, folder, "uploaded", compressed)
        try:
            backups.write_checksum(final, digest.hexdigest())
            backups.write_manifest(final, info.row_counts)
        except BaseException:
            for path in (final, *backups.sidecars(final)):
                path.unlink(missing_ok=True)
            raise
    logger.info(
        "uploaded backup kept as %s (%d bytes)",
        final.name,
        info.size,
        extra={"event": "upload", "file": final.name, "size": info.size},
    )
    return backups.get_backup_at(final)


def _chunks(upload):
    if hasattr(upload, "chunks"):
        yield from upload.chunks(CHUNK)
    elif hasattr(upload, "read"):
        while chunk := upload.read(CHUNK):
            yield chunk
    else:
        yield from upload


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
