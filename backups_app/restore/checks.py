"""Checking a backup file before a restore or an upload keeps it: whole, its checksum, the
database engine's full check, and what the backup's own migrations promise (restore.schema).
Every check runs before anything is written, so a refused file changes nothing."""

import contextlib
import dataclasses
import gzip
import shutil
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from backups_app import db
from backups_app.core import files
from backups_app.core.errors import BackupError
from backups_app.core.formatting import human_size
from backups_app.engine import backups
from backups_app.restore import schema

GZIP_MAGIC = b"\x1f\x8b"


CHUNK = backups.READ_CHUNK


# Decompressing never leaves less than this free on the disk the live database is on.
FREE_SPACE_MARGIN = 64 * 1024 * 1024


class RestoreError(BackupError):
    """A backup file that cannot be restored, or a restore that failed; nothing was changed."""


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
    # False: read without the engine's full check (the confirmation page of an engine whose
    # full check is a restore); the row counts are NAME.json's (None: not recorded).
    full_check: bool = True

    @property
    def name(self):
        return self.path.name

    @property
    def total_rows(self):
        return sum(rows for rows in self.row_counts.values() if rows is not None)


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
    with files.scratch_file(folder) as plain:
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


def preview_backup_file(path):
    """What the restore confirmation page shows of `path`: a BackupInfo, or RestoreError.

    The file's own checks, then the engine's reading that does not wait on long work
    (`read_contents`: SQLite's quick check and schema; PostgreSQL's reads the dump's tables,
    columns and migrations without restoring it; the row counts are those NAME.json
    recorded). A restore runs the full check itself, before anything changes.
    """
    with opened_backup(path, check=False) as (info, plain):
        facts = _read(backups.database_engine().read_contents, plain, info.name)
    info = dataclasses.replace(info, page_size=facts.details.get("page_size", 0))
    if not facts.details.get("full_check", True):
        recorded = (backups.read_manifest(path) or {}).get("tables") or {}
        counts = {table: recorded.get(table) for table in sorted(facts.columns)}
        facts = dataclasses.replace(facts, counts=counts)
        info = dataclasses.replace(info, full_check=False)
    return judge(info, facts)


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
            "back it up first with manage.py backup"
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
            f"{name} decompresses to more than the {human_size(declared)} its SQLite "
            "header declares; refused (damaged, or not a backup)"
        )
    if bound == limit:
        return f"{name} decompresses to more than the {human_size(limit)} allowed"
    return f"{name} does not fit on the disk once decompressed; nothing was kept"


def inspect(path, plain, compressed, checksum_verified, name=None):
    """Run the database checks on the plain file; return what they found.

    `name` is how errors call the file (default: its own name).
    """
    name = name or path.name
    facts = _read(backups.database_engine().read_file, plain, name)
    info = BackupInfo(
        path=path,
        compressed=compressed,
        size=path.stat().st_size,
        database_size=plain.stat().st_size,
        page_size=facts.details.get("page_size", 0),
        checksum_verified=checksum_verified,
    )
    return judge(info, facts, name)


def _read(reader, plain, name):
    """FileFacts from the engine's `reader` of the plain file; RestoreError in words."""
    engine = backups.database_engine()
    try:
        return reader(plain)
    except db.BadFile as err:
        raise RestoreError(f"{name} {err}") from err
    except engine.Error as err:
        if engine.interrupted(err):
            raise KeyboardInterrupt from err
        raise RestoreError(f"{name} is not a sound {engine.NAME} database: {err}") from err


def judge(info, facts, name=None):
    """The restore's checks of what the engine read in a backup; the BackupInfo with them.

    RestoreError when it is not of this project, comes from a newer schema, or lacks a table
    its own migrations promise.
    """
    name = name or info.name
    if facts.migrations is None:
        raise RestoreError(f"{name} is not a database of this project (no django_migrations table)")
    applied = set(facts.migrations)
    unknown, pending = schema.compare_migrations(applied)
    if unknown:
        shown = ", ".join(f"{app}.{name}" for app, name in sorted(unknown)[:3])
        more = f" and {len(unknown) - 3} more" if len(unknown) > 3 else ""
        raise RestoreError(
            f"{name} comes from a newer version of this project: it has migrations this "
            f"code does not know ({shown}{more}); upgrade the code first"
        )
    expected = schema.expected_schema(applied)
    missing = sorted(set(expected) - {table.lower() for table in facts.columns})
    if missing:
        raise RestoreError(
            f"{name} is not a complete backup: its own migrations say it must have tables "
            f"it lacks ({_some(missing)})"
        )
    # A table with a column dropped passes every check but the pages that read it (a login
    # without auth_user.password is a 500 nobody can log in to undo).
    lacking = schema.missing_columns(expected, facts.columns)
    if lacking:
        raise RestoreError(
            f"{name} is not a complete backup: its own migrations say its tables must have "
            f"columns it lacks ({_some([f'{table}.{column}' for table, column in lacking])})"
        )
    return dataclasses.replace(
        info,
        row_counts=facts.counts,
        migrations=frozenset(applied),
        pending_migrations=tuple(sorted(pending)),
    )


def _some(names, shown=5):
    """The first few names, and how many more."""
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more
