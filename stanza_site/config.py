"""Read and check the environment variables of the contract, so bad values stop start-up early."""

import os
import zoneinfo
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

REPO_DIR = Path(__file__).resolve().parent.parent


class ConfigError(ImproperlyConfigured):
    """A bad environment variable; its message names the variable and says what is wrong."""


def env_str(name, default=""):
    """The variable's value; unset or blank means the default (`VAR=` in a unit file)."""
    return os.environ.get(name, "").strip() or default


def env_bool(name, default=False):
    raw = env_str(name)
    if not raw:
        return default
    if raw.lower() in {"1", "true", "yes", "on"}:
        return True
    if raw.lower() in {"0", "false", "no", "off"}:
        return False
    raise ConfigError(f"{name}={raw!r} is not a boolean (use true or false)")


def env_list(name, default=()):
    raw = env_str(name)
    if not raw:
        return list(default)
    return [item.strip() for item in raw.split(",") if item.strip()]


def env_int(name, default, minimum=0):
    raw = env_str(name)
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a whole number") from None
    if value < minimum:
        raise ConfigError(f"{name}={raw!r} must be at least {minimum}")
    return value


def env_choice(name, default, choices):
    raw = env_str(name, default).lower()
    if raw not in choices:
        raise ConfigError(f"{name}={raw!r} must be one of: {', '.join(choices)}")
    return raw


def env_time_zone(name, default="UTC"):
    raw = env_str(name, default)
    try:
        zoneinfo.ZoneInfo(raw)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ConfigError(
            f"{name}={raw!r} is not a known time zone (e.g. UTC, Europe/Paris)"
        ) from None
    return raw


def env_cron(name, default, time_zone):
    """Return a 5-field cron expression, checked the way the scheduler will read it."""
    from datetime import UTC, datetime

    from backups_app.cron import crontab_trigger

    raw = " ".join(env_str(name, default).split())
    if len(raw.split()) != 5:
        raise ConfigError(
            f"{name}={raw!r} is not a cron expression: it needs 5 fields "
            "(minute hour day-of-month month day-of-week), e.g. '0 2 * * *'"
        )
    try:
        trigger = crontab_trigger(raw, time_zone)
    except ValueError as err:
        raise ConfigError(f"{name}={raw!r} is not a valid cron expression: {err}") from None
    if trigger.get_next_fire_time(None, datetime.now(UTC)) is None:
        raise ConfigError(f"{name}={raw!r} never falls due (no such date)")
    return raw


def env_dir(name, default):
    """Return an absolute folder path; create it if missing, refuse a path that is a file."""
    raw = env_str(name)
    path = Path(raw).expanduser() if raw else Path(default)
    path = path.resolve()
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{name}={str(path)!r} is a file, not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(f"{name}={str(path)!r} cannot be created: {err.strerror}") from None
    return path


def env_emails(name):
    emails = env_list(name)
    for email in emails:
        local, _, domain = email.partition("@")
        if not local or "." not in domain:
            raise ConfigError(f"{name} holds {email!r}, which is not an email address")
    return emails


def local_secret_key(data_dir):
    """Keep one generated key in the data folder, so sessions survive restarts and workers agree."""
    import tempfile

    from django.core.management.utils import get_random_secret_key

    key_file = Path(data_dir) / ".secret_key"
    if not key_file.exists():
        try:
            fd, tmp = tempfile.mkstemp(dir=data_dir, prefix=".secret_key.")
            with os.fdopen(fd, "w") as f:
                f.write(get_random_secret_key())
            try:
                os.link(tmp, key_file)  # never replaces a key another process just wrote
            except FileExistsError:
                pass
            finally:
                os.unlink(tmp)
        except OSError as err:
            raise ConfigError(
                f"DJANGO_SECRET_KEY is not set and {key_file} cannot be written: {err.strerror}"
            ) from None
    return key_file.read_text().strip()
