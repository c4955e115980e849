"""The backup engine: consistent, atomic, verified copies of a live SQLite database.

Plain functions over paths. Views, commands and jobs call these and hold no logic of their own.
"""

import contextlib
import errno
import fcntl
import functools
import hashlib
import json
import logging
import os
import re
import resource
import secrets
import sqlite3
import stat
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

from django.template.defaultfilters import filesizeformat
from django.utils import timezone

from backups_app import conf

logger = logging.getLogger(__name__)

DATABASE_FILENAME = "database.sqlite"
LABELS = ("manual", "pre-migrate", "pre-restore", "uploaded")
STAMP_FORMAT = "%Y%m%dT%H%M%SZ"
# After the live database's file name (see name_prefix): `database.sqlite.` here.
BACKUP_NAME_PATTERN = (
    r"\A{prefix}\.(?P<stamp>\d{{8}}T\d{{6}}Z)(?:-(?P<seq>[1-9][0-9]{{0,5}}))?"
    r"(?:\.(?P<label>manual|pre-migrate|pre-restore|uploaded))?\.bak(?P<gz>\.gz)?\Z"
)
CHECKSUM_SUFFIX = ".sha256"
SHA256_RE = re.compile(r"\A[0-9a-f]{64}\Z")
MANIFEST_SUFFIX = ".json"
TEMP_PREFIX = ".stanza-tmp-"
SQLITE_HEADER = b"SQLite format 3\x00"
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
VERIFY_CACHE_KIB = 32 * 1024


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
    """Backup names start with the live database's file name (`db.sqlite3.` in a new site)."""
    return live_database_path().name


@functools.lru_cache(maxsize=8)
def backup_name_re(prefix):
    return re.compile(BACKUP_NAME_PATTERN.format(prefix=re.escape(prefix)))


def parse_backup_name(name):
    """Return the parts of a backup file name, or None when it is not one."""
    match = backup_name_re(name_prefix()).match(name)
    return match.groupdict() if match else None


def is_backup_name(name):
    return backup_name_re(name_prefix()).match(name) is not None


def human_size(size):
    """Bytes in human units, with a plain space (for commands and result lines)."""
    return filesizeformat(size).replace("\xa0", " ")


def backup_name(when, *, label="", compress=False, seq=1):
    if label and label not in LABELS:
        raise ValueError(f"unknown backup label {label!r}")
    stamp = when.astimezone(UTC).strftime(STAMP_FORMAT)
    suffix = f"-{seq}" if seq > 1 else ""
    label_part = f".{label}" if label else ""
    return f"{name_prefix()}.{stamp}{suffix}{label_part}.bak" + (".gz" if compress else "")


# --- settings-derived locations -----------------------------------------------------------


def live_database_path():
    try:
        return conf.live_database_path()
    except conf.ConfigError as err:  # a bad setting fails the backup (or page) that meets it
        raise BackupError(str(err)) from None


def backups_dir():
    try:
        return conf.backups_dir()
    except conf.ConfigError as err:
        raise BackupError(str(err)) from None


# --- listing ------------------------------------------------------------------------------


def list_backups(folder=None):
    """Every backup in the folder, newest first, from one read of the folder."""
    folder = Path(folder or backups_dir())
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        raise BackupError(f"backups folder {folder} does not exist") from None
    except NotADirectoryError:
        raise BackupError(f"backups folder {folder} is a file, not a folder") from None
    except PermissionError:
        raise BackupError(f"backups folder {folder} cannot be read (permission denied)") from None
    names = {entry.name for entry in entries}
    found = []
    for entry in entries:
        # A symlink could point anywhere; only regular files in the folder are backups.
        if not is_backup_name(entry.name) or not entry.is_file(follow_symlinks=False):
            continue
        try:
            stat = entry.stat(follow_symlinks=False)
        except FileNotFoundError:  # deleted between the listing and the stat
            continue
        found.append(
            Backup(
                path=folder / entry.name,
                size=stat.st_size,
                modified=datetime.fromtimestamp(stat.st_mtime, UTC),
                has_checksum=entry.name + CHECKSUM_SUFFIX in names,
            )
        )
    found.sort(key=lambda b: (b.modified, b.name), reverse=True)
    return found


def get_backup(name, folder=None):
    """The backup called `name` in the folder; BackupError for a bad or missing name."""
    if not is_backup_name(name):
        raise BackupError(f"{name!r} is not a backup file name")
    folder = Path(folder or backups_dir())
    path = folder / name
    try:
        stat = path.lstat()
    except FileNotFoundError:
        raise BackupError(f"backup {name} does not exist") from None
    if not path.is_file() or path.is_symlink():
        raise BackupError(f"backup {name} does not exist")
    return Backup(
        path=path,
        size=stat.st_size,
        modified=datetime.fromtimestamp(stat.st_mtime, UTC),
        has_checksum=(folder / (name + CHECKSUM_SUFFIX)).is_file(),
    )


def sidecars(path):
    """The files the product writes beside a backup."""
    path = Path(path)
    return [path.with_name(path.name + s) for s in (CHECKSUM_SUFFIX, MANIFEST_SUFFIX)]


# --- making a backup ----------------------------------------------------------------------


def create_backup(
    source=None,
    *,
    folder=None,
    output=None,
    label="",
    compress=False,
    progress=None,
):
    """Copy the database at `source` into a verified backup file and return it.

    The copy is made with `VACUUM INTO` (consistent, includes the WAL, does not block
    writers), written under a temporary name, checked, optionally gzip'd, and only then
    linked under its final name, so no reader ever sees a partial backup. With `output` the
    exact path is written; otherwise a standard name in `folder` (the backups folder).
    `progress(phase, done, total)` is called from time to time during long steps (phases
    "copy", "verify", "compress", and "done" once at the end); it may be called from
    another thread.

    A signal whose Python handler raises (Ctrl-C, or SIGTERM turned into KeyboardInterrupt)
    stops the backup even inside SQLite; the temporary files are removed and the exception
    is raised again.
    """
    started = time.monotonic()
    source = Path(source or live_database_path())
    target = check_output(output) if output is not None else None
    folder = target.parent if target else Path(folder or backups_dir())
    check_source(source)
    check_folder(folder)
    remove_abandoned_temp_files(folder)

    token = f"{os.getpid()}-{secrets.token_hex(4)}"
    partial = folder / f"{TEMP_PREFIX}{token}.partial"
    gz = Path(f"{partial}.gz")
    leftovers = [
        partial,
        Path(f"{partial}-journal"),
        gz,
        *(Path(f"{partial}{suffix}") for suffix in (CHECKSUM_SUFFIX, MANIFEST_SUFFIX)),
    ]
    timings = {}
    lock_fd = None
    try:
        lock_fd = _create_locked(partial)
        with _timed(timings, "copy"):
            # A copy that is compressed next is deleted after: no point flushing it.
            tables = _vacuum_into(source, partial, progress, flush=not compress)
        with _timed(timings, "verify_compress" if compress else "verify"):
            if compress:
                digest, counts = _verify_and_gzip(partial, gz, tables, progress)
            else:
                digest, counts = _verify_and_hash(partial, tables, progress)
        publish_from = gz if compress else partial
        final = link_into_place(publish_from, target, folder, label, compress)
        try:
            write_checksum(final, digest, temp=Path(f"{partial}{CHECKSUM_SUFFIX}"))
            write_manifest(final, counts, temp=Path(f"{partial}{MANIFEST_SUFFIX}"))
        except BaseException:
            for path in (final, *sidecars(final)):
                path.unlink(missing_ok=True)
            raise
    except sqlite3.Error as err:
        _raise_if_interrupted(err)
        raise BackupError(_explain_sqlite_error(err, source, folder, partial)) from err
    except OSError as err:
        raise BackupError(_explain_os_error(err, folder)) from err
    finally:
        for path in leftovers:
            path.unlink(missing_ok=True)
        if lock_fd is not None:
            os.close(lock_fd)

    backup = get_backup_at(final)
    duration = time.monotonic() - started
    if progress:
        progress("done", backup.size, backup.size)
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
    return backup


def get_backup_at(path):
    path = Path(path)
    stat = path.stat()
    return Backup(
        path=path,
        size=stat.st_size,
        modified=datetime.fromtimestamp(stat.st_mtime, UTC),
        has_checksum=path.with_name(path.name + CHECKSUM_SUFFIX).is_file(),
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


def check_source(source):
    """Refuse, before any work, a source that is missing or is not an SQLite database."""
    source = Path(source)
    if not source.exists():
        raise BackupError(f"no database at {source}")
    if not source.is_file():
        raise BackupError(f"{source} is not a file")
    try:
        with open(source, "rb") as f:
            header = f.read(len(SQLITE_HEADER))
    except PermissionError:
        raise BackupError(f"{source} cannot be read (permission denied)") from None
    if header != SQLITE_HEADER:
        raise BackupError(f"{source} is not an SQLite database")


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
    if removed:
        logger.info("removed %d temporary file(s) of interrupted backups in %s", removed, folder)
    return removed


def is_locked(path):
    """Whether a live process holds an flock on `path` (the kernel drops it when one dies)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def _create_locked(path):
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


@contextlib.contextmanager
def _timed(timings, step):
    started = time.monotonic()
    try:
        yield
    finally:
        timings[step] = time.monotonic() - started


def _connect(path, *, readonly=False, cancel=None):
    """Open an SQLite connection that a signal (or `cancel`) can stop inside a long statement.

    The progress handler gives Python's signal handlers a chance to run while SQLite works
    (on the main thread only); when one raises, SQLite stops with "interrupted".
    """
    mode = "ro" if readonly else "rw"
    conn = sqlite3.connect(
        f"file:{quote(str(path))}?mode={mode}", uri=True, timeout=30, isolation_level=None
    )
    if cancel is None:
        conn.set_progress_handler(lambda: 0, 20_000)
    else:
        conn.set_progress_handler(cancel.is_set, 20_000)
    return conn


def _raise_if_interrupted(err):
    """Turn SQLite's "interrupted" (a signal handler raised in our progress handler) back
    into the KeyboardInterrupt Python would have raised, so callers treat it like Ctrl-C."""
    if isinstance(err, sqlite3.OperationalError) and str(err) == "interrupted":
        raise KeyboardInterrupt from err


def _table_names(conn):
    rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
    return {name for (name,) in rows}


def _vacuum_into(source, partial, progress, *, flush=True):
    """VACUUM INTO `partial`; return the source's table names, for the check that follows."""
    conn = _connect(source)
    try:
        # The output inherits this connection's `synchronous`; OFF keeps SQLite from flushing
        # every page (which stalls the site's writers); the whole file is fsync'd once after.
        conn.execute("PRAGMA synchronous=OFF")
        tables = _table_names(conn)
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        free = conn.execute("PRAGMA freelist_count").fetchone()[0]
        expected = (pages - free) * page_size
        with _watch_size(partial, expected, progress, "copy", flush=flush):
            conn.execute("VACUUM INTO ?", (str(partial),))
    finally:
        conn.close()
    return tables


class _watch_size:
    """While a step writes `path`: report its growth to `progress`, and flush it to disk as
    it grows, so the fsync before the rename does not push a gigabyte of dirty pages at once
    (which stalls the site's own commits for a quarter of a second)."""

    def __init__(self, path, total, progress, phase, *, flush=True):
        self.path, self.total, self.progress, self.phase = path, total, progress, phase
        self.flush = flush
        self.done = threading.Event()

    def __enter__(self):
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        return self

    def _run(self):
        flushed = 0
        with contextlib.suppress(OSError):
            fd = os.open(self.path, os.O_RDONLY)
            try:
                while not self.done.wait(0.1):
                    size = os.fstat(fd).st_size
                    if self.flush and size - flushed >= FLUSH_EVERY:
                        os.fdatasync(fd)
                        flushed = size
                    if self.progress:
                        self.progress(self.phase, size, self.total)
            finally:
                os.close(fd)

    def __exit__(self, *exc):
        self.done.set()
        self.thread.join()
        return False


def verify_database(path, expected_tables=()):
    """Return {table: rows} of `path`; BackupError unless it is sound and has `expected_tables`.

    `integrity_check` alone is not enough: a write that failed half-way can leave a file
    that SQLite turns into an empty database which passes it (see FIELD-NOTES).
    """
    return _check_database(path, expected_tables)


def _check_database(path, expected_tables, cancel=None):
    check_source(Path(path))
    name = Path(path).name
    try:
        conn = _connect(path, readonly=True, cancel=cancel)
        try:
            # A bigger page cache makes the check of a 1 GB copy ~12% faster (it is the
            # longest step of a backup) and stays within the memory budget whatever the size.
            conn.execute(f"PRAGMA cache_size = -{VERIFY_CACHE_KIB}")
            result = conn.execute("PRAGMA integrity_check").fetchall()
            tables = _table_names(conn)
            counts = {table: row_count(conn, table) for table in sorted(tables)}
        finally:
            conn.close()
    except sqlite3.DatabaseError as err:
        if cancel is None:
            _raise_if_interrupted(err)
        elif cancel.is_set():
            raise _Cancelled from err
        raise BackupError(f"{name} is not a sound SQLite database: {err}") from err
    if result != [("ok",)]:
        problems = "; ".join(row[0] for row in result[:3])
        raise BackupError(f"{name} failed the integrity check: {problems}")
    missing = set(expected_tables) - tables
    if missing:
        raise BackupError(f"{name} is incomplete: tables missing: {', '.join(sorted(missing))}")
    return counts


def row_count(conn, table):
    quoted = '"' + table.replace('"', '""') + '"'
    return conn.execute(f"SELECT count(*) FROM {quoted}").fetchone()[0]


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


def _verify_and_hash(partial, tables, progress):
    """integrity_check the copy while hashing and flushing it; return (SHA-256, row counts)."""
    if progress:
        progress("verify", 0, 0)

    def hash_and_flush(cancel):
        digest = _sha256_of(partial, cancel)
        _fsync(partial)
        return digest

    return _alongside(
        hash_and_flush,
        lambda cancel: _check_database(partial, tables, cancel),
    )


def _verify_and_gzip(partial, gz, tables, progress):
    """Compress the copy while integrity_check reads it; return (SHA-256 of the .gz, counts)."""
    return _alongside(
        lambda cancel: _gzip(partial, gz, progress, cancel),
        lambda cancel: _check_database(partial, tables, cancel),
    )


def sha256_of(path):
    return _sha256_of(path)


def _sha256_of(path, cancel=None):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
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


def _fsync(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(folder):
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def link_into_place(temp, target, folder, label, compress):
    """Give the finished file its name without ever replacing an existing file.

    `os.link` fails when the name exists, so two processes backing up in the same second
    each get their own name (`...Z-2.bak`) without a lock between them.
    """
    if target:
        candidates = [target]
    else:
        now = timezone.now()
        candidates = (
            folder / backup_name(now, label=label, compress=compress, seq=seq)
            for seq in range(1, 1000)
        )
    for final in candidates:
        try:
            os.link(temp, final)
        except FileExistsError:
            if target:
                raise BackupError(f"{target} already exists; nothing was overwritten") from None
            continue
        _fsync_dir(folder)
        return final
    raise BackupError(f"too many backups in the same second in {folder}")


def write_checksum(path, digest, *, temp=None):
    """Write `NAME.sha256` beside a backup, in the format `sha256sum -c` reads."""
    name = Path(path).name
    line = f"{digest}  {name}\n"
    if "\\" in name:  # coreutils' escaping: a leading backslash, then \\ for each backslash
        line = "\\" + line.replace("\\", "\\\\")
    return _write_sidecar(path, CHECKSUM_SUFFIX, line, temp=temp)


def read_manifest(path):
    """The `NAME.json` beside a backup as a dict, or None when there is none (or unreadable)."""
    path = Path(path)
    try:
        data = json.loads(path.with_name(path.name + MANIFEST_SUFFIX).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_manifest(path, counts=None, *, drill=None, temp=None):
    """Write or update `NAME.json` beside a backup: its row counts per table, its last drill.

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
    return _write_sidecar(path, MANIFEST_SUFFIX, json.dumps(data, indent=2) + "\n", temp=temp)


def _write_sidecar(path, suffix, text, *, temp=None):
    """Write `NAME{suffix}` atomically through a temporary file.

    The temporary file is one a backup's `.partial` lock covers (`temp`), or is locked itself
    like one, so a backup starting now never takes it for debris and deletes it mid-write.
    """
    path = Path(path)
    sidecar = path.with_name(path.name + suffix)
    fd = None
    if temp is None:
        temp = path.with_name(f"{TEMP_PREFIX}{os.getpid()}-{secrets.token_hex(4)}.partial")
        fd = _create_locked(temp)
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

    The sidecar is never read through a symlink: a link there is not a checksum we trust.
    """
    path = Path(path)
    try:
        fd = os.open(path.with_name(path.name + CHECKSUM_SUFFIX), os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    except OSError:
        return ""
    with os.fdopen(fd, "rb") as f:
        words = f.read(4096).split()
    digest = words[0].decode("ascii", "replace").lstrip("\\").lower() if words else ""
    return digest if SHA256_RE.match(digest) else ""


def open_backup(name, folder=None):
    """Open a backup by name for reading, never through a symlink; BackupError if none."""
    if not is_backup_name(name):
        raise BackupError(f"{name!r} is not a backup file name")
    path = Path(folder or backups_dir()) / name
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)  # ELOOP for a symlink, wherever it points
    except OSError:
        raise BackupError(f"backup {name} does not exist") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):  # a folder or a device with a backup's name
        os.close(fd)
        raise BackupError(f"backup {name} does not exist")
    return os.fdopen(fd, "rb")


def _explain_sqlite_error(err, source, folder, partial=None):
    message = str(err)
    if "disk is full" in message:
        return f"disk full while writing to {folder}; the partial backup was removed"
    if "disk I/O error" in message:
        return _explain_write_error(folder, partial)
    if "unable to open database" in message:
        return f"cannot write a backup in {folder} (missing or not writable)"
    if "not a database" in message:
        return f"{source} is not an SQLite database"
    if "locked" in message or "busy" in message:
        return f"{source} stayed locked by another process; try again"
    return f"backup failed: {message}"


def _explain_write_error(folder, partial):
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
        return _explain_write_error(folder, None)
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"disk full while writing to {folder}; the partial backup was removed"
    if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"destination folder {folder} is not writable"
    if err.errno == errno.ENOENT:
        return f"destination folder {folder} does not exist"
    return f"backup failed: {err.strerror or err}"
