"""Backup names, labels and locations: what a backup is called and where backups live.

The name pattern, the labels, the `Backup` a listing returns, the sidecars beside a backup, and
the live database and backups folder the settings name. Imports only conf and the db seam.
"""

import functools
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from backups_app import conf, db
from backups_app.core.errors import BackupError

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
MEDIA_SUFFIX = ".media"  # the site files' list (backups_app.media)


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
        """`manual`, `pre-migrate`, `pre-restore`, `uploaded`, or "" (the daily job, `backup`)."""
        return parse_backup_name(self.name)["label"] or ""

    @property
    def own(self):
        """Whether this site made the backup itself: any label but `uploaded` (pre-restore and
        pre-migrate copies are this site's data too). Health, the drill, retention and the
        offsite copies keep and judge the site's own backups by this one rule (is_own_name)."""
        return is_own_name(self.name)

    @property
    def compressed(self):
        return self.name.endswith(".gz")

    @property
    def created(self):
        """The moment the data was captured, from the name (UTC)."""
        stamp = parse_backup_name(self.name)["stamp"]
        return datetime.strptime(stamp, STAMP_FORMAT).replace(tzinfo=UTC)


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


def is_own_name(name):
    """Whether the backup called `name` is one this site made itself (see Backup.own)."""
    return (parse_backup_name(name) or {}).get("label") != "uploaded"


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


def backup_name(when, *, label="", compress=False, seq=1):
    if label and label not in LABELS:
        raise ValueError(f"unknown backup label {label!r}")
    stamp = when.astimezone(UTC).strftime(STAMP_FORMAT)
    suffix = f"-{seq}" if seq > 1 else ""
    label_part = f".{label}" if label else ""
    ending = backup_suffix() + (".gz" if compress else "")
    return f"{name_prefix()}.{stamp}{suffix}{label_part}{ending}"


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


def sidecars(path):
    """The files the product writes beside a backup."""
    path = Path(path)
    return [path.with_name(path.name + s) for s in (CHECKSUM_SUFFIX, MANIFEST_SUFFIX, MEDIA_SUFFIX)]


class BackupInterrupted(KeyboardInterrupt):
    """A signal arrived after the backup got its name: the backup is whole, with its sidecars."""

    def __init__(self, path):
        super().__init__(str(path))
        self.path = Path(path)
