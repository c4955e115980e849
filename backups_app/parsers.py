"""The parsers of the app's settings: each takes (name, raw) and returns the checked value or
raises ConfigError, one line naming the setting. conf.py reads every setting through them, and a
project's settings.py may use them for its own variables (through conf, which names them all)."""

import functools
import re
import zoneinfo
from pathlib import Path
from urllib.parse import urlsplit

from django.core.exceptions import ImproperlyConfigured


class ConfigError(ImproperlyConfigured):
    """A bad setting; its message names the setting and says what is wrong."""


# --- parsers: (name, raw value from settings or the environment) -> checked value -----------


def parse_str(name, raw):
    return str(raw).strip()


def parse_bool(name, raw):
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in {"1", "true", "yes", "on"}:
        return True
    if text in {"0", "false", "no", "off"}:
        return False
    raise ConfigError(f"{name}={raw!r} is not a boolean (use true or false)")


def parse_list(name, raw):
    """A comma-separated string, or a list/tuple given in settings.py."""
    items = raw.split(",") if isinstance(raw, str) else list(raw)
    return [str(item).strip() for item in items if str(item).strip()]


def int_parser(minimum=0, maximum=None):
    """A whole number at least `minimum` and, when given, at most `maximum` (a value beyond
    any sensible one is a typo, and would overflow the dates computed from it)."""

    def parse_int(name, raw):
        try:
            value = int(str(raw).strip())
        except ValueError:
            raise ConfigError(f"{name}={raw!r} is not a whole number") from None
        if value < minimum:
            raise ConfigError(f"{name}={raw!r} must be at least {minimum}")
        if maximum is not None and value > maximum:
            raise ConfigError(f"{name}={raw!r} must be at most {maximum}")
        return value

    return parse_int


def choice_parser(*choices):
    def parse_choice(name, raw):
        text = str(raw).strip().lower()
        if text not in choices:
            raise ConfigError(f"{name}={text!r} must be one of: {', '.join(choices)}")
        return text

    return parse_choice


def parse_lock_mode(name, raw):
    """S3 Object Lock's retention mode: GOVERNANCE or COMPLIANCE (any case)."""
    text = str(raw).strip().upper()
    if text not in ("GOVERNANCE", "COMPLIANCE"):
        raise ConfigError(f"{name}={str(raw).strip()!r} must be GOVERNANCE or COMPLIANCE")
    return text


def parse_time_zone(name, raw):
    text = str(raw).strip()
    try:
        zoneinfo.ZoneInfo(text)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ConfigError(
            f"{name}={text!r} is not a known time zone (e.g. UTC, Europe/Paris)"
        ) from None
    return text


def parse_cron(name, raw, time_zone="UTC"):
    """A 5-field cron expression, checked the way the scheduler will read it."""
    from datetime import UTC, datetime

    from backups_app.cron import crontab_trigger

    text = " ".join(str(raw).split())
    if len(text.split()) != 5:
        raise ConfigError(
            f"{name}={text!r} is not a cron expression: it needs 5 fields "
            "(minute hour day-of-month month day-of-week), e.g. '0 2 * * *'"
        )
    try:
        trigger = crontab_trigger(text, time_zone)
    except ValueError as err:
        raise ConfigError(f"{name}={text!r} is not a valid cron expression: {err}") from None
    if trigger.get_next_fire_time(None, datetime.now(UTC)) is None:
        raise ConfigError(f"{name}={text!r} never falls due (no such date)")
    return text


def parse_dir(name, raw):
    """An absolute folder path.

    Whether it exists is not checked here: start-up checks it (`check_all`), and a folder that
    vanishes or becomes a file later is a failure of whatever meets it (a backup, a page).
    """
    try:
        return Path(str(raw)).expanduser().resolve()
    except (RuntimeError, OSError) as err:  # a symlink loop: RuntimeError before Python 3.13
        raise ConfigError(f"{name} is {raw!s}, which cannot be followed: {err}") from None


def parse_path(name, raw):
    return Path(str(raw).strip()).expanduser() if str(raw).strip() else None


def parse_emails(name, raw):
    emails = parse_list(name, raw)
    for email in emails:
        local, _, domain = email.partition("@")
        if not local or "." not in domain:
            raise ConfigError(f"{name} holds {email!r}, which is not an email address")
    return emails


S3_BUCKET_RE = re.compile(r"\A[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]\Z")


def off_when_empty(parse):
    """A URL setting that is off when empty: "" then, else `parse(name, text, urlsplit(text))`."""

    @functools.wraps(parse)
    def parse_url(name, raw):
        text = str(raw).strip()
        return parse(name, text, urlsplit(text)) if text else ""

    return parse_url


@off_when_empty
def parse_s3_url(name, text, parts):
    """`s3://BUCKET/PREFIX` (the prefix may be empty), or "" when off."""
    bucket = parts.netloc
    if parts.scheme != "s3" or not S3_BUCKET_RE.match(bucket) or parts.query or parts.fragment:
        raise ConfigError(f"{name}={text!r} is not an S3 location (use s3://BUCKET/PREFIX)")
    prefix = parts.path.strip("/")
    if "//" in prefix or any(part in (".", "..") for part in prefix.split("/")):
        raise ConfigError(f"{name}={text!r}: the prefix must be a plain path (s3://BUCKET/PREFIX)")
    return text


def parse_age_recipients(name, raw):
    """Comma-separated age public keys (`age1...`, or `ssh-ed25519 ...`/`ssh-rsa ...`)."""
    from pyrage import RecipientError, ssh, x25519

    keys = parse_list(name, raw)
    for key in keys:
        if key.upper().startswith("AGE-SECRET-KEY-"):  # never echo a secret key
            raise ConfigError(f"{name} holds a secret key (AGE-SECRET-KEY-...); give public keys")
        kind = ssh if key.startswith("ssh-") else x25519
        try:
            kind.Recipient.from_str(key)
        except (RecipientError, ValueError):
            shown = key[:80]
            raise ConfigError(f"{name} holds {shown!r}, which is not an age public key") from None
    return keys


def parse_age_identity(name, raw):
    """The path of an age identity file, checked readable and holding at least one key."""
    path = parse_path(name, raw)
    if path is None:
        return None
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"{name}={str(path)!r} does not exist") from None
    except (OSError, UnicodeDecodeError) as err:
        reason = getattr(err, "strerror", None) or "not a text file"
        raise ConfigError(f"{name}={str(path)!r} cannot be read: {reason}") from None
    try:
        if not age_identities(text):
            raise ConfigError(f"{name}={str(path)!r} holds no age identity (AGE-SECRET-KEY-1...)")
    except ValueError as err:  # the message never quotes the file: it holds secrets
        raise ConfigError(f"{name}={str(path)!r}: {err}") from None
    return path


def age_identities(text):
    """The identities of an age identity file (`age-keygen` output); ValueError when bad."""
    from pyrage import IdentityError, x25519

    found = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            found.append(x25519.Identity.from_str(line))
        except (IdentityError, ValueError):
            problem = f"line {number} is not an age identity (AGE-SECRET-KEY-1...)"
            raise ValueError(problem) from None
    return found


@off_when_empty
def parse_replica_url(name, text, parts):
    """`file:///ABSOLUTE/PATH` or `s3://BUCKET/PATH` (Litestream's replica), or "" (off)."""
    usage = f"{name}={text!r} is not a replica URL (use file:///PATH or s3://BUCKET/PATH)"
    if parts.query or parts.fragment:
        raise ConfigError(usage)
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost") or not parts.path.strip("/"):
            raise ConfigError(usage)
        return text
    if parts.scheme == "s3":
        bucket = parts.netloc
        if not S3_BUCKET_RE.match(bucket):
            raise ConfigError(f"{name}={text!r}: {bucket!r} is not a valid S3 bucket name")
        if not parts.path.strip("/"):
            raise ConfigError(usage)
        return text
    raise ConfigError(usage)


@off_when_empty
def parse_ping_url(name, text, parts):
    """An http(s) URL with `{job}` in it (each job pings its own check), or "" (off)."""
    if parts.scheme not in ("http", "https") or not parts.netloc or "{job}" not in text:
        raise ConfigError(
            f"{name}={text!r} is not a ping URL: use http(s)://HOST/PATH with {{job}} in it, "
            "e.g. https://hc-ping.com/KEY/{job}"
        )
    return text
