"""What the offsite jobs recorded about the store, for pages, /healthz and `checkbackups`.

Nothing on a request may wait for the network, so pages and the health verdict never ask the
store: `copy-offsite`, the offsite purge and the offsite drill write what they learnt (the
complete copies of the store's last listing plus what they copied or deleted since, the last
store error, each copy's drill verdict) into `.stanza-offsite/state.json` in the app's working
folder (beside the live database file), and readers read that file: parsed once while it is
unchanged (a stat per read). Beside it, `locks.json`: until when each site-file object is
retained under Object Lock, as the copies set it (offsite.lock.extend), read by the jobs only.
Imports: conf, engine.backups, health.problems, offsite.store, offsite.copies.
"""

import contextlib
import fcntl
import json
import logging
import os
import secrets
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from django.utils import timezone
from django.utils.dateparse import parse_datetime

from backups_app import conf
from backups_app.core.errors import BackupError
from backups_app.core.problems import Problem
from backups_app.engine import backups
from backups_app.offsite.copies import OffsiteCopy, newest_copy
from backups_app.offsite.store import OffsiteError, enabled, location

logger = logging.getLogger(__name__)

STATE_FOLDER = ".stanza-offsite"
STATE_NAME = "state.json"
LOCKS_NAME = "locks.json"
BEHIND_AFTER = timedelta(hours=1)


@dataclass(frozen=True)
class Recorded:
    """The store as the jobs last saw it."""

    copies: dict = field(default_factory=dict)  # {backup name: complete OffsiteCopy}
    drills: dict = field(default_factory=dict)  # {backup name: {"ok", "at", "problems"}}
    listed_at: datetime | None = None  # when a job last listed the store
    error: str = ""  # the last run's store error; "" once a run reached the store again
    error_at: datetime | None = None


def state_path():
    """The record, in the app's working folder (beside an SQLite database file)."""
    return conf.working_dir() / STATE_FOLDER / STATE_NAME


# --- reading (pages, /healthz, checkbackups) --------------------------------------------------

_parsed = {}  # {"signature": (dev, inode, size, mtime), "recorded": Recorded}
_parsing = threading.Lock()


def recorded():
    """The record of the store, for this location; an empty one when there is none yet."""
    path = state_path()
    try:
        st = os.lstat(path)
    except OSError:
        return Recorded()
    with _parsing:
        if _parsed.get("signature") == _signature(st):
            return _parsed["recorded"]
    try:
        with backups.open_regular(path) as f:  # never a FIFO, never through a symlink
            signature = _signature(os.fstat(f.fileno()))
            data = json.loads(f.read())
    except (OSError, ValueError):
        return Recorded()
    result = _from_json(data)
    with _parsing:
        _parsed.update(signature=signature, recorded=result)
    return result


def _signature(st):
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def _from_json(data):
    if not isinstance(data, dict) or data.get("location") != location():
        return Recorded()  # another store's record: nothing is known of this one
    copies = {}
    for name, item in (data.get("copies") or {}).items():
        with contextlib.suppress(TypeError, ValueError, KeyError, AttributeError):
            copied = parse_datetime(item["copied"])
            copies[name] = OffsiteCopy(name, item["key"], int(item["size"]), copied, copied)
    drills = data.get("drills") if isinstance(data.get("drills"), dict) else {}
    return Recorded(
        copies=copies,
        drills={k: _drill_for_page(v) for k, v in drills.items() if isinstance(v, dict)},
        listed_at=_time(data.get("listed_at")),
        error=str(data.get("error") or ""),
        error_at=_time(data.get("error_at")),
    )


def _time(text):
    with contextlib.suppress(TypeError, ValueError):
        return parse_datetime(text)
    return None


def _drill_for_page(result):
    problems = result.get("problems")
    return {
        "ok": result.get("ok") is True,
        "at": str(result.get("at") or ""),
        "problems": [str(p) for p in problems] if isinstance(problems, list) else [],
    }


def page_state(listed=()):
    """What the Backups page shows of the offsite copies, from the record alone.

    `listed`: the page's listing of the backups folder (names are enough), so the backups that
    are only offsite can be told apart.
    """
    state = {"on": enabled(), "copies": {}, "error": "", "drill": None, "newest": None}
    state.update(offsite_only=[], complete=0, location="", listed_at=None)
    if not state["on"]:
        return state
    record = recorded()
    newest = newest_copy(record.copies)
    local = {item.name for item in listed}
    only = [copy for name, copy in record.copies.items() if name not in local]
    state.update(
        copies=record.copies,
        error=record.error,
        newest=newest,
        drill=record.drills.get(newest.name) if newest else None,
        offsite_only=sorted(only, key=lambda c: c.name, reverse=True),
        complete=len(record.copies),
        location=location(),
        listed_at=record.listed_at,
    )
    return state


def health_problems(now=None):
    """["offsite copy behind"] once the newest backup has had no offsite copy for an hour,
    as far as the last copy-offsite run knows (a store that is down fails that run too)."""
    if not enabled():
        return []
    now = now or timezone.now()
    try:
        listed = backups.scan_backups(reuse=True)  # the listing the verdict has just made
    except BackupError:
        return []  # the health check names the folder's own problem
    if not listed or now.timestamp() - listed[0].mtime < BEHIND_AFTER.total_seconds():
        return []
    if listed[0].name in recorded().copies:
        return []
    advice = (
        "The newest backup has had no offsite copy for over an hour: see the last "
        "copy-offsite run on the Cron page (is the store down, or refusing?)."
    )
    return [Problem("offsite copy behind", advice)]


# --- writing (the jobs) ----------------------------------------------------------------------


class Recording:
    """What one job run learns of the store, written when the run ends (see recording())."""

    def __init__(self):
        self.listing = None  # {name: OffsiteCopy} of a listing of the whole store
        self.added, self.removed = {}, set()

    def listed(self, copies):
        self.listing = {name: copy for name, copy in copies.items() if copy.complete}

    def copied(self, copy):
        self.added[copy.name] = copy

    def deleted(self, name):
        self.removed.add(name)


@contextlib.contextmanager
def recording():
    """Yield a Recording; when the block ends, however it ends, merge it into the record.

    A store error (OffsiteError) is kept as the record's error; a run that listed the store
    and ended without one clears it.
    """
    record = Recording()
    error = None
    try:
        yield record
    except OffsiteError as err:
        error = err
        raise
    finally:
        try:
            _merge(record, error)
        except (OSError, BackupError) as err:  # the run's own outcome matters more
            logger.warning("could not record the offsite store's state: %s", err)


def record_drill(name, result):
    """Keep the offsite drill's verdict of copy `name` for the page."""
    try:
        with _updating() as data:
            data.setdefault("drills", {})[name] = _drill_for_page(result)
    except OSError as err:  # the drill's verdict is in the store's NAME.json all the same
        logger.warning("could not record the offsite drill of %s: %s", name, err)


def locked_until():
    """{object name: retain-until} of the site-file objects, as copies recorded them ({} when
    nothing is recorded: each object is then read from the store once)."""
    try:
        with backups.open_regular(state_path().with_name(LOCKS_NAME)) as f:
            data = json.loads(f.read())
        if data.get("location") != location():
            return {}
        return {
            name: datetime.fromtimestamp(seconds, UTC) for name, seconds in data["until"].items()
        }
    except (OSError, ValueError, TypeError, KeyError, AttributeError, OverflowError):
        return {}


def record_locked_until(changed=(), removed=()):
    """Keep the retain-until of the objects `changed` ({name: moment}); forget `removed`."""
    if not changed and not removed:
        return
    try:
        with _updating(LOCKS_NAME) as data:
            until = data.setdefault("until", {})
            until.update({name: int(moment.timestamp()) for name, moment in dict(changed).items()})
            for name in removed:
                until.pop(name, None)
    except OSError as err:  # the next copy reads what it needs from the store again
        logger.warning("could not record the offsite objects' retention: %s", err)


def _merge(record, error):
    now = timezone.now().isoformat()
    with _updating() as data:
        copies = data.setdefault("copies", {})
        if record.listing is not None:
            copies.clear()
            copies.update({n: _copy_json(c) for n, c in record.listing.items()})
            data["listed_at"] = now
        copies.update({n: _copy_json(c) for n, c in record.added.items()})
        for name in record.removed:
            copies.pop(name, None)
        drills = data.setdefault("drills", {})
        for name in [n for n in drills if n not in copies]:
            del drills[name]
        if error is not None:
            data.update(error=str(error), error_at=now)
        elif record.listing is not None:
            data.update(error="", error_at=None)


def _copy_json(copy):
    return {"key": copy.key, "size": copy.size, "copied": copy.copied.isoformat()}


@contextlib.contextmanager
def _updating(name=STATE_NAME):
    """Yield the record as a dict to change, under a lock, then write it atomically (0600)."""
    path = state_path().with_name(name)
    path.parent.mkdir(mode=0o700, exist_ok=True)
    fd = os.open(path.parent / "state.lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            with backups.open_regular(path) as f:
                data = json.loads(f.read())
        except (OSError, ValueError):
            data = {}
        if not isinstance(data, dict) or data.get("location") != location():
            data = {"location": location()}
        yield data
        temp = path.with_name(f".{name}.{os.getpid()}-{secrets.token_hex(4)}")
        out = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            with os.fdopen(out, "w") as f:
                json.dump(data, f)
            os.replace(temp, path)
        finally:
            temp.unlink(missing_ok=True)
    finally:
        os.close(fd)
