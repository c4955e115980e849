"""The app's settings: each `STANZA_*` value from the site's settings, else the environment
variable of the same name, else its default; every value checked by one parser.

`get(name)` is read lazily (inside functions, never at import time), so tests that change
`settings` or the environment see the change. A bad value raises ConfigError, whose message is
one line naming the setting; `checks.py` reports the same as Django system checks
(`manage.py check`), and a project's settings.py may call `check_environment()` (and read its
own variables with `from_env` and parsers.py's parsers) so a bad environment variable stops
start-up.

The app keeps its own working files where the site's database is: lock files, and a folder
for uploads being received, beside the live database file (as SQLite keeps its -wal and -shm
files), or inside the backups folder when the database is PostgreSQL (which a site must then
set). It needs nothing from the project it is installed in.
"""

import contextlib
import os
from pathlib import Path

from backups_app.parsers import (
    ConfigError,
    int_parser,
    parse_age_identity,
    parse_age_recipients,
    parse_cron,
    parse_dir,
    parse_emails,
    parse_lock_mode,
    parse_ping_url,
    parse_replica_url,
    parse_s3_url,
    parse_str,
)

# --- the settings --------------------------------------------------------------------------

# The longest period any retention setting may name: a century.
MAX_DAYS = 36500

# name -> (default, parser). A default that is a callable is computed when read. Every
# setting here may be set in the site's settings.py or as an environment variable; the README's
# "Use it in your own Django site" table lists them all (a test keeps it so).
SETTINGS = {
    "STANZA_BACKUPS_DIR": (lambda: default_backups_dir(), parse_dir),
    "STANZA_BACKUP_SCHEDULE": ("0 2 * * *", parse_cron),
    "STANZA_PURGE_SCHEDULE": ("30 2 * * *", parse_cron),
    "STANZA_BACKUP_RETENTION_DAYS": (7, int_parser(0, MAX_DAYS)),
    # Retention (retention/policy.py): beyond the days above, the newest backup of each day,
    # ISO week, month and year for that long; then a cap on the folder's size.
    "STANZA_KEEP_DAILY_DAYS": (0, int_parser(0, MAX_DAYS)),
    "STANZA_KEEP_WEEKLY_WEEKS": (0, int_parser(0, MAX_DAYS // 7)),
    "STANZA_KEEP_MONTHLY_MONTHS": (0, int_parser(0, MAX_DAYS // 28)),
    "STANZA_KEEP_YEARLY_YEARS": (0, int_parser(0, MAX_DAYS // 365)),
    "STANZA_BACKUPS_MAX_MB": (0, int_parser(0, 1024**3)),  # 0: no cap; at most 1 EB
    "STANZA_ALERT_EMAILS": ((), parse_emails),
    "STANZA_UPLOAD_MAX_MB": (None, int_parser(1)),
    "STANZA_OFFSITE_URL": ("", parse_s3_url),
    "STANZA_OFFSITE_SCHEDULE": ("*/15 * * * *", parse_cron),
    "STANZA_OFFSITE_RETENTION_DAYS": (30, int_parser(0, MAX_DAYS)),
    # S3 Object Lock on every object of a copy, retained this many days (0: off); S3 allows
    # at most 100 years.
    "STANZA_OFFSITE_LOCK_DAYS": (0, int_parser(0, MAX_DAYS)),
    "STANZA_OFFSITE_LOCK_MODE": ("GOVERNANCE", parse_lock_mode),
    "STANZA_OFFSITE_AGE_RECIPIENTS": ((), parse_age_recipients),
    "STANZA_OFFSITE_AGE_IDENTITY": (None, parse_age_identity),
    "STANZA_REPLICA_URL": ("", parse_replica_url),
    "STANZA_REPLICA_MAX_LAG": (300, int_parser(1)),
    # Read through media_dir(): set but empty turns it off, which get() cannot tell from unset.
    "STANZA_MEDIA_DIR": (lambda: default_media_dir(), parse_dir),
    "STANZA_METRICS_TOKEN": ("", parse_str),
    "STANZA_PING_URL": ("", parse_ping_url),
}

_MISSING = object()


def raw_value(name):
    """The unparsed value: the site's settings, else the environment, else None."""
    from django.conf import settings

    value = getattr(settings, name, _MISSING)
    if value is not _MISSING and value is not None and value != "":
        return value
    env = os.environ.get(name, "").strip()
    return env or None


def get(name):
    """The checked value of a `STANZA_*` setting (see SETTINGS); ConfigError when bad."""
    default, parse = SETTINGS[name]
    raw = raw_value(name)
    if raw is None:
        raw = default() if callable(default) else default
        if raw is None or raw == "" or raw == ():
            return raw if raw != () else []
    if parse is parse_cron:
        return parse_cron(name, raw, time_zone())
    return parse(name, raw)


def from_env(name, default=None, parse=None):
    """For a project's settings.py: the environment variable, checked, else `default`.

    Uses the parser registered for `name` unless one is given (any parser above takes
    `(name, raw)`); a bad value raises ConfigError naming the variable.
    """
    parse = parse or SETTINGS[name][1]
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    return parse(name, raw)


def check_environment(time_zone="UTC"):
    """Check every app setting given as an environment variable; ConfigError on the first bad one.

    For a project's settings.py, which runs before Django's settings can be read: a bad
    variable then stops start-up with one line. Values set in settings.py itself are checked
    by the system checks.
    """
    for name, (_default, parse) in SETTINGS.items():
        raw = os.environ.get(name, "").strip()
        if raw:
            value = parse_cron(name, raw, time_zone) if parse is parse_cron else parse(name, raw)
            _check_on_disk(name, value, parse)


def time_zone():
    from django.conf import settings

    return settings.TIME_ZONE


SQLITE = "django.db.backends.sqlite3"
POSTGRESQL = "django.db.backends.postgresql"


def database_engine():
    """The engine of DATABASES["default"]: "sqlite" or "postgresql"; ConfigError otherwise."""
    from django.conf import settings

    engine = settings.DATABASES["default"].get("ENGINE")
    if engine == SQLITE:
        return "sqlite"
    if engine == POSTGRESQL:
        return "postgresql"
    raise ConfigError(
        f"Stanza Backups needs SQLite or PostgreSQL: DATABASES['default'] uses {engine}, "
        "and other databases are not supported yet"
    )


def is_postgresql():
    return database_engine() == "postgresql"


def live_database_path():
    """The live database: DATABASES["default"], which must be SQLite (a file)."""
    from django.conf import settings

    if database_engine() != "sqlite":
        raise ConfigError(
            "this needs an SQLite database file, and DATABASES['default'] is PostgreSQL"
        )
    # absolute(), not resolve(): cheap (backup names are matched against its name), and the
    # name stays the configured one when the file is a symlink.
    return Path(settings.DATABASES["default"]["NAME"]).absolute()


def live_database_name():
    """What backup names start with: the SQLite file's name, or the PostgreSQL database's."""
    from django.conf import settings

    if database_engine() == "sqlite":
        return live_database_path().name
    return str(settings.DATABASES["default"].get("NAME") or "")


def default_backups_dir():
    """`backups/` beside the live database file (a PostgreSQL site must set its own)."""
    if database_engine() != "sqlite":
        raise ConfigError(
            "STANZA_BACKUPS_DIR must be set: the database is PostgreSQL, which has no folder "
            "of its own on this machine to keep backups beside"
        )
    return live_database_path().parent / "backups"


def backups_dir():
    """The backups folder. The default one is created (0700) when first needed; one set in the
    settings is the site's to create, and a failure of whatever meets it if it went missing."""
    if raw_value("STANZA_BACKUPS_DIR") is not None:
        return get("STANZA_BACKUPS_DIR")
    folder = default_backups_dir()
    with contextlib.suppress(OSError):  # a file there, or no permission: the user of it says so
        folder.mkdir(mode=0o700, exist_ok=True)
    return folder


def working_dir():
    """Where the app keeps its lock files and uploads: beside an SQLite database file (every
    process that uses the database shares that folder, on this machine's disk, so an flock
    there is exact); inside the backups folder for PostgreSQL."""
    if database_engine() == "sqlite":
        return live_database_path().parent
    return get("STANZA_BACKUPS_DIR")


def default_media_dir():
    """The default storage's folder when it is Django's FileSystemStorage with a location (its
    `location`, i.e. MEDIA_ROOT), else None (off): the site's uploaded files."""
    from django.core.files.storage import FileSystemStorage, storages

    try:
        storage = storages["default"]
    except Exception:  # a backend that cannot be built here is not one we can read files of
        return None
    if not isinstance(storage, FileSystemStorage) or not str(storage.base_location or ""):
        return None  # no MEDIA_ROOT: Django would use the current folder, which is no media
    return storage.location


def media_dir():
    """STANZA_MEDIA_DIR: the site's uploaded files, or None when off (set but empty, or no
    FileSystemStorage to default to)."""
    from django.conf import settings

    raw = getattr(settings, "STANZA_MEDIA_DIR", None)
    if raw is None:
        raw = os.environ.get("STANZA_MEDIA_DIR")
    if raw is not None and not str(raw).strip():
        return None
    return get("STANZA_MEDIA_DIR")


def lock_path(name):
    """A lock file of the app, in its working folder (see working_dir)."""
    return working_dir() / name


UPLOADS_FOLDER = ".stanza-uploads"


def upload_dir():
    """Where uploads are streamed while they arrive: a folder of the app's own beside the live
    database (the data disk; inside the backups folder for PostgreSQL), so the purge of
    abandoned uploads never touches a site's files."""
    return working_dir() / UPLOADS_FOLDER


def postgresql_problems():
    """What a PostgreSQL site must not set, or must set, each as one line."""
    problems = []
    if raw_value("STANZA_BACKUPS_DIR") is None:
        problems.append(
            "STANZA_BACKUPS_DIR must be set: the database is PostgreSQL, which has no folder "
            "of its own on this machine to keep backups beside"
        )
    if raw_value("STANZA_REPLICA_URL") is not None:
        problems.append(
            "STANZA_REPLICA_URL must be empty: continuous replication (Litestream) is for "
            "SQLite databases, and DATABASES['default'] is PostgreSQL (its backups, drills and "
            "offsite copies work without it)"
        )
    return problems


def _check_on_disk(name, value, parse):
    if parse is parse_dir and value is not None and value.exists() and not value.is_dir():
        raise ConfigError(f"{name}={str(value)!r} is a file, not a folder")


def check_all():
    """Every setting's problem as one line each (empty when all are fine); for start-up.

    A database that is neither SQLite nor PostgreSQL is one problem, reported once (the default
    backups folder, derived from it, is not reported again).
    """
    try:
        engine = database_engine()
    except ConfigError as err:
        return [str(err)]
    problems = postgresql_problems() if engine == "postgresql" else []
    if problems:
        return problems
    for name, (_default, parse) in SETTINGS.items():
        try:
            _check_on_disk(name, get(name), parse)
        except ConfigError as err:
            problems.append(str(err))
    return problems
