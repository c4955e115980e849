"""The backup engine: consistent, atomic, verified copies of the live database.

Making a backup (create_backup) and the checks around it; the engine's other modules hold
names and locations (names), the folder's listing (listing), sidecars (sidecars), publishing
(publish) and hashing/compressing (compress); their public names are imported here, so callers
use `backups.NAME`. The database itself is reached through the db seam only. Plain functions
over paths: views, commands and jobs call these and hold no logic of their own. May import
core, db, media (the site files recorded with a backup) and conf.
"""

import contextlib
import errno
import logging
import os
import resource
import time
from pathlib import Path

from backups_app.core import files
from backups_app.core.files import TEMP_PREFIX, create_locked, is_locked, open_regular
from backups_app.core.formatting import human_size
from backups_app.engine import compress as compress_

# The engine's public names, whichever of its modules holds them: callers use `backups.NAME`.
from backups_app.engine.compress import GZIP_BLOCK, GZIP_LEVEL, READ_CHUNK, deflate, sha256_of  # noqa: F401
from backups_app.engine.listing import (  # noqa: F401
    SETTLED_SECONDS,
    Listed,
    delete_backup,
    get_backup,
    get_backup_at,
    list_backups,
    open_backup,
    scan_backups,
)
from backups_app.engine.names import (  # noqa: F401
    CHECKSUM_SUFFIX,
    DATABASE_FILENAME,
    LABELS,
    MANIFEST_SUFFIX,
    MEDIA_SUFFIX,
    STAMP_FORMAT,
    Backup,
    BackupError,
    BackupInterrupted,
    backup_name,
    backup_suffix,
    backups_dir,
    database_engine,
    is_backup_name,
    is_own_name,
    live_database,
    live_database_path,
    name_prefix,
    parse_backup_name,
    sidecars,
)
from backups_app.engine.publish import publish  # noqa: F401
from backups_app.engine.sidecars import (  # noqa: F401
    checksum_line,
    new_manifest,
    parse_checksum,
    read_checksum,
    read_manifest,
    record_check,
    write_checksum,
    write_manifest,
)
from backups_app.media import record as media_record

logger = logging.getLogger(__name__)

# Sidecars without their backup older than this are debris of a killed backup (seconds).
ORPHAN_AGE = 600


def create_backup(
    source=None,
    *,
    folder=None,
    output=None,
    label="",
    compress=False,
    progress=None,
    check="quick",
    on_published=None,
    until_locked=None,
    on_copied=None,
):
    """Copy the database at `source` into a verified backup file and return it.

    The copy is made with `VACUUM INTO` (consistent, includes the WAL, does not block
    writers), written under a temporary name, checked (`check`: "quick" or "full"), hashed,
    optionally gzip'd, and only then linked under its final name, its sidecars first, so no
    reader ever sees a partial backup or one without its `.sha256` and `.json`. With
    `output` the exact path is written; otherwise a standard name in `folder` (the backups
    folder). `progress(phase, done, total)` is called from time to time during long steps
    (phases "copy", "verify", "compress", and "done" once at the end; "files" counts the site
    files recorded so far, with their bytes as a fourth argument); it may be called from
    another thread. `on_published(path)` is called the moment the backup has its name.
    `until_locked` (a restore's safety backup): the engine copies what it can while writers go
    on, then calls it (it returns once the caller holds the database's write lock) and finishes
    the copy; `on_copied()` is called once the copy is made (the caller's restore may go on).

    A signal whose Python handler raises (Ctrl-C, or SIGTERM turned into KeyboardInterrupt)
    stops the backup even inside SQLite; the temporary files are removed and the exception
    is raised again: KeyboardInterrupt when no backup was written, BackupInterrupted (whose
    `path` is the backup) when it came after the backup got its name.
    """
    started = time.monotonic()
    engine = database_engine()
    source = Path(source) if source else live_database()
    target = check_output(output) if output is not None else None
    folder = target.parent if target else Path(folder or backups_dir())
    check_source(source)
    check_folder(folder)
    remove_abandoned_temp_files(folder)

    partial = files.temp_path(folder)
    gz = Path(f"{partial}.gz")
    leftovers = [partial, Path(f"{partial}-journal"), gz, *sidecars(partial)]
    timings = {}
    lock_fd = final = None
    recordings = contextlib.ExitStack()  # the site files' recording, until the backup's name
    try:
        try:
            lock_fd = create_locked(partial)
            with _timed(timings, "copy"):
                # A copy that is compressed next is deleted after: no point flushing it.
                tables = engine.copy_live(
                    partial,
                    database=source,
                    progress=progress and (lambda done, total: progress("copy", done, total)),
                    flush=not compress,
                    until_locked=until_locked,
                )
            if on_copied is not None:
                on_copied()
            with _timed(timings, "files"):
                into_backups = target is None and _is_live_into_backups(source, folder)
                recording = media_record.for_backup(
                    into_backups, folder, partial, is_backup_name, progress
                )
                media = recordings.enter_context(recording)
            with _timed(timings, "verify_compress" if compress else "verify"):

                def verify(cancel):
                    return _check_database(partial, tables, cancel, kind=check)

                if compress:
                    digest, counts = compress_.verify_and_gzip(partial, gz, verify, progress)
                else:
                    # A restore's safety backup is checked under the restore's lock, beside
                    # its copy: one core each, so the copy the site waits for is not slowed.
                    digest, counts = compress_.verify_and_hash(
                        partial, verify, progress, alongside=until_locked is None
                    )
            manifest = new_manifest(counts, check, by="backup")
            if media is not None:
                manifest["media"] = media.as_manifest()
            final = publish(
                gz if compress else partial,
                digest,
                manifest,
                folder=folder,
                target=target,
                label=label,
                compress=compress,
                media_list=None if media is None else media_record.staged_list(partial),
                on_published=on_published,
            )
        except engine.Error as err:
            _raise_if_interrupted(err)
            raise BackupError(_explain_copy_error(err, source, folder)) from err
        except OSError as err:
            raise BackupError(_explain_os_error(err, folder)) from err
        finally:
            recordings.close()
            for path in leftovers:
                path.unlink(missing_ok=True)
            if lock_fd is not None:
                os.close(lock_fd)
        backup = get_backup_at(final)
        _log_backup(backup, time.monotonic() - started, timings)
        if progress:
            progress("done", backup.size, backup.size)
    except KeyboardInterrupt as err:
        if final is None or isinstance(err, BackupInterrupted):
            raise
        raise BackupInterrupted(final) from err
    return backup


def _is_live_into_backups(source, folder):
    """Whether a backup is the live database's, into the backups folder: those record files."""
    try:
        live = live_database()
        is_live = source == live or (
            source is not None and live is not None and source.resolve() == live.resolve()
        )
        return is_live and folder.resolve() == backups_dir().resolve()
    except OSError:
        return False


def _log_backup(backup, duration, timings):
    logger.info(
        "backup written: %s (%d bytes) in %.2f s",
        backup.name,
        backup.size,
        duration,
        extra={
            "event": "backup",
            "file": backup.name,
            "path": str(backup.path),
            "size": backup.size,
            "duration": round(duration, 3),
            "timings": {step: round(seconds, 3) for step, seconds in timings.items()},
        },
    )


def check_output(output):
    """Refuse, before any work, an --output that cannot be a new file; return it as a Path."""
    raw = os.fspath(output)
    if not raw or raw.endswith(os.sep) or Path(raw).name in ("", ".", ".."):
        raise BackupError(f"{raw!r} is a folder; --output takes the path of the file to write")
    target = Path(raw)
    if any(ord(char) < 32 or char == "\x7f" for char in target.name):
        raise BackupError(f"{raw!r}: the file name must not contain control characters")
    if target.is_dir():
        raise BackupError(f"{target} is a folder; --output takes the path of the file to write")
    if target.exists() or target.is_symlink():
        raise BackupError(f"{target} already exists; choose another --output or remove it first")
    return target


def check_source(source=None):
    """Refuse, before any work, a database that is missing or is not one (None: the live one)."""
    problem = database_engine().source_problem(source)
    if problem:
        raise BackupError(problem)


def check_folder(folder):
    if not folder.exists():
        raise BackupError(f"destination folder {folder} does not exist")
    if not folder.is_dir():
        raise BackupError(f"destination {folder} is a file, not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise BackupError(f"destination folder {folder} is not writable")


def remove_abandoned_temp_files(folder):
    """Delete temporary files of backups whose process died; return how many were removed.

    A backup holds an exclusive flock on its `.partial` file for its whole life, and the
    kernel drops it when the process dies, even by SIGKILL. Every other temporary file is
    named after its `.partial` (`NAME.partial.gz`, `NAME.partial-journal`, ...). So a
    `.partial` we can lock, and any temporary file without its `.partial`, belongs to nobody.
    """
    try:
        names = [n for n in os.listdir(folder) if n.startswith(TEMP_PREFIX)]
    except OSError:
        return 0
    owners = {n for n in names if n.endswith(".partial")}
    removed = 0
    for name in names:
        owner = name if name in owners else name.split(".partial", 1)[0] + ".partial"
        if owner in owners and is_locked(Path(folder) / owner):
            continue
        try:
            (Path(folder) / name).unlink()
            removed += 1
        except FileNotFoundError:
            pass
    removed += _remove_orphan_sidecars(folder)
    if removed:
        logger.info("removed %d temporary file(s) of interrupted backups in %s", removed, folder)
    return removed


def _remove_orphan_sidecars(folder):
    """Delete the sidecars of a backup that never got its name (its process was killed).

    `publish` links the sidecars a moment before the backup; one older than ORPHAN_AGE
    without its backup belongs to no backup in progress.
    """
    removed = 0
    cutoff = time.time() - ORPHAN_AGE
    with contextlib.suppress(OSError), os.scandir(folder) as entries:
        for entry in entries:
            base, dot, suffix = entry.name.rpartition(".")
            if not (dot and f".{suffix}" in (CHECKSUM_SUFFIX, MANIFEST_SUFFIX, MEDIA_SUFFIX)):
                continue
            if not is_backup_name(base) or os.path.lexists(os.path.join(folder, base)):
                continue
            with contextlib.suppress(OSError):
                if entry.stat(follow_symlinks=False).st_mtime < cutoff:
                    os.unlink(entry.path)
                    removed += 1
    return removed


@contextlib.contextmanager
def _timed(timings, step):
    started = time.monotonic()
    try:
        yield
    finally:
        timings[step] = time.monotonic() - started


def _raise_if_interrupted(err):
    """Turn the engine's "interrupted" (a signal handler raised in its progress handler) back
    into the KeyboardInterrupt Python would have raised, so callers treat it like Ctrl-C."""
    if database_engine().interrupted(err):
        raise KeyboardInterrupt from err


def verify_database(path, expected_tables=(), kind="full"):
    """Return {table: rows} of `path`; BackupError unless it is sound and has `expected_tables`.

    `kind` is the check: "quick" (`quick_check`) or "full" (`integrity_check`). Neither is
    enough alone: a write that failed half-way can leave a file that SQLite turns into an
    empty database which passes both (see FIELD-NOTES), hence the expected tables.
    """
    return _check_database(path, expected_tables, kind=kind)


def _check_database(path, expected_tables, cancel=None, *, kind="quick"):
    engine = database_engine()
    name = Path(path).name
    _check_header(Path(path))
    try:
        problems, counts = engine.check_file(path, kind, cancel=cancel)
    except engine.Error as err:
        if cancel is None:
            _raise_if_interrupted(err)
        elif cancel.is_set():
            raise compress_.Cancelled from err
        raise BackupError(f"{name} is not a sound {engine.NAME} database: {err}") from err
    if problems:
        label = "quick check" if kind == "quick" else "integrity check"
        raise BackupError(f"{name} failed the {label}: {'; '.join(problems[:3])}")
    # SQLite's own tables are not copied when empty and unused (an sqlite_sequence left over
    # from dropped AUTOINCREMENT tables, which cannot itself be dropped).
    missing = {t for t in set(expected_tables) - set(counts) if not t.startswith("sqlite_")}
    if missing:
        raise BackupError(f"{name} is incomplete: tables missing: {', '.join(sorted(missing))}")
    return counts


def _check_header(path):
    """Refuse a file that does not start like one of the engine's backups."""
    try:
        with open_regular(path) as f:
            header = f.read(100)
    except OSError as err:
        raise BackupError(f"{path} cannot be read: {err.strerror or err}") from None
    if not database_engine().is_backup_header(header):
        raise BackupError(f"{path} is not {database_engine().A_BACKUP}")


def _explain_copy_error(err, source, folder):
    kind = database_engine().error_kind(err)
    if kind == "disk-full":
        return f"disk full while writing to {folder}; the partial backup was removed"
    if kind == "write":
        return _explain_write_error(folder)
    if kind == "cannot-open":
        return f"cannot write a backup in {folder} (missing or not writable)"
    if kind == "not-a-database":
        return f"{source} is not an SQLite database"
    if kind == "locked":
        return f"{source} stayed locked by another process; try again"
    return f"backup failed: {err}"


def _explain_write_error(folder):
    """SQLite reports every failed write but ENOSPC as an I/O error; find the likely cause."""
    limit, _ = resource.getrlimit(resource.RLIMIT_FSIZE)
    if limit != resource.RLIM_INFINITY:
        return (
            f"disk full while writing to {folder}: the backup reached this process's file "
            f"size limit ({human_size(limit)}, see ulimit -f); the partial backup was removed"
        )
    with contextlib.suppress(OSError):
        stat = os.statvfs(folder)
        if stat.f_bavail * stat.f_frsize < 1024 * 1024:
            return f"disk full while writing to {folder}; the partial backup was removed"
    return f"write error in {folder} (disk full or failing); the partial backup was removed"


def _explain_os_error(err, folder):
    if err.errno == errno.EFBIG:
        return _explain_write_error(folder)
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"disk full while writing to {folder}; the partial backup was removed"
    if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"destination folder {folder} is not writable"
    if err.errno == errno.ENOENT:
        return f"destination folder {folder} does not exist"
    return f"backup failed: {err.strerror or err}"
