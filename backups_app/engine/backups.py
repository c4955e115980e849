"""The backup engine: consistent, atomic, verified copies of a live SQLite database.

Plain functions over paths. Views, commands and jobs call these and hold no logic of their own.
"""

import contextlib
import errno
import functools
import hashlib
import json
import logging
import os
import re
import resource
import stat
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import NamedTuple

from django.utils import timezone

from backups_app import conf, db
from backups_app.core import files
from backups_app.core.files import TEMP_PREFIX, create_locked, is_locked, open_regular
from backups_app.media import record as media_record

logger = logging.getLogger(__name__)

DATABASE_FILENAME = "database.sqlite"
LABELS = ("manual", "pre-migrate", "pre-restore", "uploaded")
STAMP_FORMAT = "%Y%m%dT%H%M%SZ"
# After the live database's name (see name_prefix: `database.sqlite.` here), and before the
# engine's suffix (`.bak` for SQLite).
BACKUP_NAME_PATTERN = (
    r"\A{prefix}\.(?P<stamp>[0-9]{{4}}(?:0[1-9]|1[0-2])(?:0[1-9]|[12][0-9]|3[01])"
    r"T(?:[01][0-9]|2[0-3])[0-5][0-9][0-5][0-9]Z)(?:-(?P<seq>[1-9][0-9]{{0,5}}))?"
    r"(?:\.(?P<label>manual|pre-migrate|pre-restore|uploaded))?{suffix}(?P<gz>\.gz)?\Z"
)
CHECKSUM_SUFFIX = ".sha256"
SHA256_RE = re.compile(r"\A[0-9a-f]{64}\Z")
MANIFEST_SUFFIX = ".json"
CHECK_KINDS = ("quick", "full")
MEDIA_SUFFIX = ".media"  # the site files' list (backups_app.media)
try:  # zlib-ng deflates 2-3x faster than zlib for the same ratio (bench/backup.py --tune)
    from zlib_ng import zlib_ng as deflate

    GZIP_LEVEL = 3  # on a 1 GB backup: ~4% larger than gzip -6 for a fifth of its CPU
except ImportError:  # pragma: no cover
    import zlib as deflate

    GZIP_LEVEL = 4  # ~5% larger than gzip -6 for half of its CPU
# Each block is one gzip member, compressed on its own core; 1 MB blocks compress as well as
# 16 MB ones (bench/backup.py --tune) and keep memory low: a few blocks are in flight.
GZIP_BLOCK = 1024 * 1024
READ_CHUNK = 1024 * 1024
FLUSH_EVERY = 32 * 1024 * 1024
MANIFEST_MAX_BYTES = 1024 * 1024
# Sidecars without their backup older than this are debris of a killed backup (seconds).
ORPHAN_AGE = 600


class BackupError(Exception):
    """Anything that stops a backup, with a message a hurried admin understands."""


@dataclass(frozen=True)
class Backup:
    path: Path
    size: int
    modified: datetime
    has_checksum: bool = False

    @property
    def name(self):
        return self.path.name

    @property
    def label(self):
        return parse_backup_name(self.name)["label"] or ""

    @property
    def compressed(self):
        return self.name.endswith(".gz")

    @property
    def created(self):
        """The moment the data was captured, from the name (UTC)."""
        stamp = parse_backup_name(self.name)["stamp"]
        return datetime.strptime(stamp, STAMP_FORMAT).replace(tzinfo=UTC)


# --- names -------------------------------------------------------------------------------


def name_prefix():
    """Backup names start with the live database's name (`db.sqlite3.` in a new site)."""
    return database_engine().base_name(live_database())


def backup_suffix():
    """What a backup's name ends with before any `.gz`: the database engine's (`.bak`)."""
    return database_engine().SUFFIX


def backup_endings():
    """What a backup ends with: the cheap test before the name pattern."""
    suffix = backup_suffix()
    return (suffix, suffix + ".gz")


@functools.lru_cache(maxsize=8)
def backup_name_re(prefix, suffix=".bak"):
    # ASCII: `\d` is otherwise any Unicode digit, and such a "date" is no date.
    pattern = BACKUP_NAME_PATTERN.format(prefix=re.escape(prefix), suffix=re.escape(suffix))
    return re.compile(pattern, re.ASCII)


def parse_backup_name(name):
    """Return the parts of a backup file name, or None when it is not one."""
    match = backup_name_re(name_prefix(), backup_suffix()).match(name)
    return match.groupdict() if match and is_real_date(match["stamp"]) else None


def is_backup_name(name):
    return parse_backup_name(name) is not None


def is_real_date(stamp):
    """The name pattern admits day 31 of every month: only a date the calendar has (not
    20260230) names a backup. Cheap for the days every month has."""
    return stamp[6:8] <= "28" or _parses_as_date(stamp)


@functools.lru_cache(maxsize=512)
def _parses_as_date(stamp):
    try:
        datetime.strptime(stamp, STAMP_FORMAT)
    except ValueError:
        return False
    return True


SIZE_UNITS = ("KB", "MB", "GB", "TB", "PB")


def human_size(size, space=" "):
    """Bytes in human units (1024-based, one decimal), never "1000.0 KB": that is "1.0 MB"."""
    if size < 1000:
        return f"{size}{space}byte{'' if size == 1 else 's'}"
    value = size / 1024
    for unit in SIZE_UNITS:
        if round(value, 1) < 1000 or unit == SIZE_UNITS[-1]:
            return f"{value:.1f}{space}{unit}"
        value /= 1024


def backup_name(when, *, label="", compress=False, seq=1):
    if label and label not in LABELS:
        raise ValueError(f"unknown backup label {label!r}")
    stamp = when.astimezone(UTC).strftime(STAMP_FORMAT)
    suffix = f"-{seq}" if seq > 1 else ""
    label_part = f".{label}" if label else ""
    ending = backup_suffix() + (".gz" if compress else "")
    return f"{name_prefix()}.{stamp}{suffix}{label_part}{ending}"


# --- settings-derived locations -----------------------------------------------------------


def live_database_path():
    try:
        return conf.live_database_path()
    except conf.ConfigError as err:  # a bad setting fails the backup (or page) that meets it
        raise BackupError(str(err)) from None


def database_engine():
    """The database seam's module for the site's database (see backups_app.db)."""
    try:
        return db.engine()
    except db.UnsupportedDatabase as err:  # as a bad setting: fails what meets it
        raise BackupError(str(err)) from None


def live_database():
    """The live database as the seam's functions take it: its file when the engine's database
    is a file on this machine (SQLite), else None (DATABASES["default"] on its server)."""
    return live_database_path() if database_engine().IS_FILE else None


def backups_dir():
    try:
        return conf.backups_dir()
    except conf.ConfigError as err:
        raise BackupError(str(err)) from None


# --- listing ------------------------------------------------------------------------------


class Listed(NamedTuple):
    """One backup as the folder's listing found it: cheap to make by the thousand."""

    mtime: float
    name: str
    size: int
    has_checksum: bool

    def backup(self, folder):
        return Backup(
            path=Path(folder) / self.name,
            size=self.size,
            modified=datetime.fromtimestamp(self.mtime, UTC),
            has_checksum=self.has_checksum,
        )


def list_backups(folder=None):
    """Every backup in the folder, newest first, from one read of the folder."""
    folder = Path(folder or backups_dir())
    return [item.backup(folder) for item in scan_backups(folder)]


# The last listing of each folder read with reuse=True: {(folder, prefix): (its state, listing)}.
_listings = {}
# A listing is kept only when its folder last changed this long before: a change within the
# file system's time granularity of the read could otherwise leave the folder's times as they were.
SETTLED_SECONDS = 3


def scan_backups(folder=None, *, reuse=False):
    """Every backup in the folder as `Listed` tuples, newest first, from one read of the folder.

    For pages that count thousands of backups and show a few. The folder is read through its
    descriptor, so each stat is relative to it (no path walked per file), and only names that
    end like a backup are matched and stat'd: 5000 backups in 40 ms instead of 67 ms here.

    `reuse` (the pages and the health verdict): the listing read at the folder's present state
    (its inode, size, modification and change times) is returned again without a stat per
    backup. Backups are never rewritten in place: one is linked in under its name and unlinked
    when deleted, and both change the folder's times. A backup rewritten or touched in place by
    hand shows its new time and size once the folder next changes. Retention, the drill and
    the offsite copies always read the folder.
    """
    folder = Path(folder or backups_dir())
    prefix, suffix = name_prefix(), backup_suffix()
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except FileNotFoundError:
        raise BackupError(f"backups folder {folder} does not exist") from None
    except NotADirectoryError:
        raise BackupError(f"backups folder {folder} is a file, not a folder") from None
    except PermissionError:
        raise BackupError(f"backups folder {folder} cannot be read (permission denied)") from None
    try:
        if reuse:
            st = os.fstat(fd)
            state = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
            kept_state, kept = _listings.get((folder, prefix, suffix), (None, None))
            if kept_state == state:
                return list(kept)
        found = _read_listing(fd, folder, backup_name_re(prefix, suffix).match, backup_endings())
    finally:
        os.close(fd)
    if reuse and time.time() - st.st_ctime > SETTLED_SECONDS:
        _listings[(folder, prefix, suffix)] = (state, tuple(found))
    return found


def _read_listing(fd, folder, matches, endings):
    """The backups in the folder open as `fd`, newest first (see scan_backups)."""
    # A symlink could point anywhere, a FIFO would block its reader: only regular files in
    # the folder are backups, or checksums.
    checksums, candidates = set(), []
    try:
        with os.scandir(fd) as listing:
            for entry in listing:
                name = entry.name
                if name.endswith(CHECKSUM_SUFFIX):
                    if entry.is_file(follow_symlinks=False):
                        checksums.add(name)
                elif (
                    name.endswith(endings)
                    and (match := matches(name))
                    and is_real_date(match["stamp"])
                    and entry.is_file(follow_symlinks=False)
                ):
                    candidates.append(entry)
        found = []
        for entry in candidates:
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:  # deleted between the listing and the stat
                continue
            name = entry.name
            found.append(Listed(st.st_mtime, name, st.st_size, name + CHECKSUM_SUFFIX in checksums))
    except PermissionError:  # r-- without x: the names can be read, not their entries
        raise BackupError(f"backups folder {folder} cannot be read (permission denied)") from None
    found.sort(reverse=True)  # by time, then name: newest first
    return found


def get_backup(name, folder=None):
    """The backup called `name` in the folder; BackupError for a bad or missing name."""
    if not is_backup_name(name):
        raise BackupError(f"{name!r} is not a backup file name")
    folder = Path(folder or backups_dir())
    path = folder / name
    try:
        st = path.lstat()
    except FileNotFoundError:
        raise BackupError(f"backup {name} does not exist") from None
    if not stat.S_ISREG(st.st_mode):
        raise BackupError(f"backup {name} does not exist")
    return _backup(path, st, files.is_regular(folder / (name + CHECKSUM_SUFFIX)))


def _backup(path, st, has_checksum):
    return Backup(
        path=path,
        size=st.st_size,
        modified=datetime.fromtimestamp(st.st_mtime, UTC),
        has_checksum=has_checksum,
    )


def sidecars(path):
    """The files the product writes beside a backup."""
    path = Path(path)
    return [path.with_name(path.name + s) for s in (CHECKSUM_SUFFIX, MANIFEST_SUFFIX, MEDIA_SUFFIX)]


def delete_backup(name, folder=None):
    """Delete the backup called `name` and its sidecars; return the Backup that was deleted."""
    backup = get_backup(name, folder)
    try:
        backup.path.unlink()
    except FileNotFoundError:  # deleted meanwhile, by hand or by the purge
        raise BackupError(f"backup {name} does not exist") from None
    except OSError as err:
        raise BackupError(f"cannot delete {name}: {err.strerror}") from err
    for sidecar in sidecars(backup.path):
        sidecar.unlink(missing_ok=True)
    files.fsync_dir(backup.path.parent)
    return backup


# --- making a backup ----------------------------------------------------------------------


def create_backup(
    source=None,
    *,
    folder=None,
    output=None,
    label="",
    compress=False,
    progress=None,
    check="quick",
):
    """Copy the database at `source` into a verified backup file and return it.

    The copy is made with `VACUUM INTO` (consistent, includes the WAL, does not block
    writers), written under a temporary name, checked (`check`: "quick" or "full"), hashed,
    optionally gzip'd, and only then linked under its final name, its sidecars first, so no
    reader ever sees a partial backup or one without its `.sha256` and `.json`. With
    `output` the exact path is written; otherwise a standard name in `folder` (the backups
    folder). `progress(phase, done, total)` is called from time to time during long steps
    (phases "copy", "verify", "compress", and "done" once at the end); it may be called from
    another thread.

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
                )
            with _timed(timings, "files"):
                into_backups = target is None and _is_live_into_backups(source, folder)
                recording = media_record.for_backup(
                    into_backups, folder, partial, is_backup_name, progress
                )
                media = recordings.enter_context(recording)
            with _timed(timings, "verify_compress" if compress else "verify"):
                if compress:
                    digest, counts = _verify_and_gzip(partial, gz, tables, progress, check)
                else:
                    digest, counts = _verify_and_hash(partial, tables, progress, check)
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


class BackupInterrupted(KeyboardInterrupt):
    """A signal arrived after the backup got its name: the backup is whole, with its sidecars."""

    def __init__(self, path):
        super().__init__(str(path))
        self.path = Path(path)


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


def get_backup_at(path):
    path = Path(path)
    return _backup(path, path.stat(), files.is_regular(path.with_name(path.name + CHECKSUM_SUFFIX)))


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
            raise _Cancelled from err
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


class _Cancelled(Exception):
    """A helper thread stopped because the main step failed; never seen by callers."""


def _alongside(main, side):
    """Run `side(cancel)` in a thread while `main(cancel)` runs here; return main's result.

    Both read the finished copy and release the GIL (sqlite3, hashlib, zlib), so they use
    both cores. When one fails the other is told to stop, and the real error is raised.
    """
    cancel = threading.Event()

    def run_side():
        try:
            return side(cancel)
        except BaseException:
            cancel.set()
            raise

    with ThreadPoolExecutor(max_workers=1) as pool:
        future = pool.submit(run_side)
        try:
            result = main(cancel)
            side_result = future.result()
        except _Cancelled:
            future.result()  # main stopped because the side failed: raise the side's error
            raise
        except BaseException:
            cancel.set()
            raise
    return result, side_result


def _verify_and_hash(partial, tables, progress, kind):
    """Check the copy while hashing and flushing it; return (SHA-256, row counts)."""
    if progress:
        progress("verify", 0, 0)

    def hash_and_flush(cancel):
        digest = _sha256_of(partial, cancel)
        files.fsync(partial)
        return digest

    return _alongside(
        hash_and_flush,
        lambda cancel: _check_database(partial, tables, cancel, kind=kind),
    )


def _verify_and_gzip(partial, gz, tables, progress, kind):
    """Compress the copy while the check reads it; return (SHA-256 of the .gz, counts)."""
    return _alongside(
        lambda cancel: _gzip(partial, gz, progress, cancel),
        lambda cancel: _check_database(partial, tables, cancel, kind=kind),
    )


def sha256_of(path):
    return _sha256_of(path)


def _sha256_of(path, cancel=None):
    digest = hashlib.sha256()
    with open_regular(path) as f:
        while chunk := f.read(READ_CHUNK):
            if cancel is not None and cancel.is_set():
                raise _Cancelled
            digest.update(chunk)
    return digest.hexdigest()


def _gzip(source, dest, progress=None, cancel=None):
    """gzip `source` into `dest` on every core; return the SHA-256 of what was written.

    The output is a series of gzip members, one per GZIP_BLOCK, compressed in parallel
    (zlib releases the GIL); `gunzip` and `zcat` read such a file as one stream. At most
    two blocks per worker are in flight, so memory stays flat whatever the database size.
    """
    workers = max(1, os.cpu_count() or 1)
    total = source.stat().st_size
    digest = hashlib.sha256()
    done = 0
    pending = deque()
    with (
        open(source, "rb") as fin,
        open(os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as fout,
        ThreadPoolExecutor(max_workers=workers) as pool,
    ):
        written = flushed = 0

        def write_next():
            nonlocal written, flushed
            member = pending.popleft().result()
            fout.write(member)
            digest.update(member)
            written += len(member)
            if written - flushed >= FLUSH_EVERY:  # flush as we go, as _watch_size does
                fout.flush()
                os.fdatasync(fout.fileno())
                flushed = written

        try:
            while block := fin.read(GZIP_BLOCK):
                if cancel is not None and cancel.is_set():
                    raise _Cancelled
                pending.append(pool.submit(deflate.compress, block, GZIP_LEVEL, 31))
                done += len(block)
                if len(pending) >= 2 * workers:
                    write_next()
                    if progress:
                        progress("compress", done, total)
            while pending:
                write_next()
            fout.flush()
            os.fsync(fout.fileno())
        except BaseException:
            for future in pending:
                future.cancel()
            raise
    return digest.hexdigest()


def publish(
    temp, digest, manifest, *, folder, target=None, label="", compress=False, media_list=None
):
    """Give a finished backup its name, its sidecars first; return the backup's path.

    `temp` is a `.partial` file this process holds locked (its sidecars are written beside it
    under its name). For each candidate name: `NAME.sha256` and `NAME.json` are linked, then
    `NAME` itself. `os.link` fails when a name exists, so two processes backing up in the same
    second each get their own name (`...Z-2.bak`) without a lock between them, and a signal or
    a crash at any moment leaves either no backup or a backup with both sidecars (at worst
    sidecars without a backup, which the next backup's clean-up removes). `media_list`, the
    site files' list (a staged file), is linked as `NAME.media` with them.
    """
    if target:
        candidates = [Path(target)]
    else:
        now = timezone.now()
        candidates = (
            folder / backup_name(now, label=label, compress=compress, seq=seq)
            for seq in range(1, 1000)
        )
    staged = {MEDIA_SUFFIX: Path(media_list)} if media_list else {}
    try:
        for final in candidates:
            if digest:
                staged[CHECKSUM_SUFFIX] = _stage(
                    temp, CHECKSUM_SUFFIX, checksum_line(final.name, digest)
                )
            if manifest:
                staged[MANIFEST_SUFFIX] = _stage(
                    temp, MANIFEST_SUFFIX, manifest_text(final.name, manifest)
                )
            try:
                for suffix, path in staged.items():
                    os.link(path, final.with_name(final.name + suffix))
                os.link(temp, final)
                files.fsync_dir(folder)
            except FileExistsError:
                _take_back(final, staged)
                if target:
                    raise BackupError(f"{target} already exists; nothing was overwritten") from None
                continue
            except BaseException as err:
                if not _is_same_file(final, temp):  # not published: take the sidecars back
                    _take_back(final, staged)
                    raise
                if isinstance(err, KeyboardInterrupt) and not isinstance(err, BackupInterrupted):
                    raise BackupInterrupted(final) from err
                raise
            return final
    finally:
        _unlink_all(staged.values())
    raise BackupError(f"too many backups in the same second in {folder}")


def _stage(temp, suffix, text):
    """Write a sidecar's text, flushed, in a new file beside `temp` (covered by its lock)."""
    staged = Path(f"{temp}{suffix}")
    staged.unlink(missing_ok=True)  # it may be linked as a taken name's sidecar: never rewrite
    fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        os.write(fd, text.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    return staged


def _take_back(final, staged):
    """Unlink the sidecars of `final` that are our staged files (never another's)."""
    for suffix, path in staged.items():
        sidecar = final.with_name(final.name + suffix)
        if _is_same_file(sidecar, path):
            sidecar.unlink(missing_ok=True)


def _unlink_all(paths):
    for path in paths:
        path.unlink(missing_ok=True)


def _is_same_file(a, b):
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def checksum_line(name, digest):
    """A `.sha256` line for `name`, in the format `sha256sum -c` reads."""
    line = f"{digest}  {name}\n"
    if "\\" in name:  # coreutils' escaping: a leading backslash, then \\ for each backslash
        line = "\\" + line.replace("\\", "\\\\")
    return line


def write_checksum(path, digest, *, temp=None):
    """Write `NAME.sha256` beside a backup, in the format `sha256sum -c` reads."""
    return _write_sidecar(path, CHECKSUM_SUFFIX, checksum_line(Path(path).name, digest), temp=temp)


def read_manifest(path):
    """The `NAME.json` beside a backup as a dict, or None when there is none (or unreadable)."""
    path = Path(path)
    try:
        with open_regular(path.with_name(path.name + MANIFEST_SUFFIX)) as f:
            data = json.loads(f.read(MANIFEST_MAX_BYTES))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def new_manifest(counts, kind, *, by):
    """The manifest of a backup just checked: its row counts and which check passed when."""
    now = timezone.now().isoformat()
    return {
        "tables": dict(sorted(counts.items())),
        "counted_at": now,
        "check": {"kind": kind, "at": now, "by": by},
    }


def manifest_text(name, manifest):
    return json.dumps({"backup": name, **manifest}, indent=2) + "\n"


def write_manifest(path, counts=None, *, drill=None, check=None, temp=None):
    """Write or update `NAME.json` beside a backup: its row counts, its last check and drill.

    The counts are taken from the verified copy, which is the database as it was at the
    backup's moment; the restore drill compares a restored copy against them.
    """
    path = Path(path)
    data = read_manifest(path) or {"backup": path.name}
    if counts is not None:
        data["tables"] = dict(sorted(counts.items()))
        data["counted_at"] = timezone.now().isoformat()
    if drill is not None:
        data["drill"] = drill
    if check is not None:
        data["check"] = check
    return _write_sidecar(path, MANIFEST_SUFFIX, manifest_text(path.name, data), temp=temp)


def record_check(path, kind, by):
    """Record in a backup's manifest that its `kind` check ("quick"/"full") passed just now.

    `by` says who ran it ("backup", "drill", "restore", "upload"); the Backups page shows it.
    """
    if kind not in CHECK_KINDS:
        raise ValueError(f"unknown check kind {kind!r}")
    return write_manifest(path, check={"kind": kind, "at": timezone.now().isoformat(), "by": by})


def last_check(backup):
    """{"kind", "at", "by"} of the last check that passed, from the manifest, or None."""
    manifest = read_manifest(getattr(backup, "path", backup))
    check = manifest.get("check") if manifest else None
    return check if isinstance(check, dict) else None


def _write_sidecar(path, suffix, text, *, temp=None):
    """Write `NAME{suffix}` atomically through a temporary file.

    The temporary file is one a backup's `.partial` lock covers (`temp`), or is locked itself
    like one, so a backup starting now never takes it for debris and deletes it mid-write.
    """
    path = Path(path)
    sidecar = path.with_name(path.name + suffix)
    fd = None
    if temp is None:
        temp = files.temp_path(path.parent)
        fd = create_locked(temp)
    try:
        if fd is None:
            temp.write_text(text)
        else:
            os.write(fd, text.encode())
        os.replace(temp, sidecar)
    finally:
        if fd is not None:
            os.close(fd)
        temp.unlink(missing_ok=True)
    return sidecar


def read_checksum(path):
    """The digest in a backup's `.sha256`: None without one, "" when it holds no digest.

    The sidecar is never read through a symlink nor from a FIFO: that is not a checksum we trust.
    """
    path = Path(path)
    try:
        f = open_regular(path.with_name(path.name + CHECKSUM_SUFFIX))
    except FileNotFoundError:
        return None
    except OSError:
        return ""
    with f:
        words = f.read(4096).split()
    digest = words[0].decode("ascii", "replace").lstrip("\\").lower() if words else ""
    return digest if SHA256_RE.match(digest) else ""


def open_backup(name, folder=None):
    """Open a backup by name for reading, never through a symlink; BackupError if none."""
    if not is_backup_name(name):
        raise BackupError(f"{name!r} is not a backup file name")
    try:  # ELOOP for a symlink, wherever it points; refused for a FIFO, folder or device
        return open_regular(Path(folder or backups_dir()) / name)
    except OSError:
        raise BackupError(f"backup {name} does not exist") from None


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
