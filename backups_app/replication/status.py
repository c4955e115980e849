"""Replication's status as pages, health checks and jobs see it, from the files `replicate` keeps.

`status.json` is rewritten by `replicate` every few seconds; `history.json` by a restore into
the live database. Both are read here only, through `config.read_json` (the safe open: a FIFO
or a device there is refused at once), so /healthz, the Backups page and `checkbackups` never
wait on them, and never talk to Litestream.
"""

import json
import logging
import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from backups_app import conf
from backups_app.core.problems import Problem
from backups_app.core.processes import process_is_alive
from backups_app.replication.config import (
    HISTORY_NAME,
    STATUS_NAME,
    enabled,
    format_time,
    live_database,
    max_lag,
    private_dir,
    read_json,
    replica_url,
    state_dir,
    time_or_none,
    write_private,
)

logger = logging.getLogger(__name__)

STALE_AFTER = 60.0  # a status file not refreshed for this long means `replicate` is not running


def status_path(database=None):
    return state_dir(database) / STATUS_NAME


def history_path(database=None):
    return state_dir(database) / HISTORY_NAME


def write_status(status, database=None):
    folder = private_dir(state_dir(database))
    write_private(folder / STATUS_NAME, json.dumps(status, default=str) + "\n")


# --- the history: restores start a new one -----------------------------------------------------


def note_restore(result, database=None):
    """Called after a restore into the live database: a new history begins now.

    The `replicate` command notices the change and restarts Litestream on the restored
    database; the Backups page says from when the new history runs.
    """
    if not enabled():
        return
    database = live_database(database)
    if database.resolve() != live_database().resolve():
        return
    record = {
        "began_at": datetime.now(UTC).isoformat(),
        "restored": getattr(getattr(result, "backup", None), "name", ""),
    }
    try:
        folder = private_dir(state_dir(database))
        write_private(folder / HISTORY_NAME, json.dumps(record) + "\n")
    except OSError:
        logger.warning("could not note the restore for replication", exc_info=True)


def name_restore(label, database=None):
    """Name the newest restore for what the user chose ("the replica at ...") instead of the
    scratch file a point-in-time restore went through. The record keeps its time (what
    `replicate` goes by) and its file its modification time: it is not another restore."""
    path = history_path(live_database(database))
    record = read_json(path)
    if not record or "began_at" not in record:
        return
    try:
        stamp = path.stat()
        write_private(path, json.dumps({**record, "restored": label}) + "\n")
        os.utime(path, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))
    except OSError:
        logger.warning("could not name the restore for replication", exc_info=True)


def history(database=None):
    """{"began_at": datetime, "restored": name} of the newest restore, or None."""
    record = read_json(history_path(database))
    began = time_or_none(record.get("began_at")) if record else None
    if began is None:
        return None
    return {"began_at": began, "restored": str(record.get("restored", ""))}


# --- the window: which times a restore can reach --------------------------------------------


@dataclass(frozen=True)
class Window:
    start: datetime
    end: datetime

    def __contains__(self, when):
        return self.start <= when <= self.end

    def __str__(self):
        return f"{format_time(self.start)} to {format_time(self.end)}"


def window_from(span, last_sync=None, now=None):
    """The times a restore can reach, from the replica files' (oldest, newest) times.

    File times have whole seconds and the first file may have been written up to a second
    after its stamp, so the window starts a second later to be sure. It ends at the newest
    file, or at the last sync when that is later (nothing changed after the newest file).
    """
    oldest, newest = span
    end = newest
    if last_sync and last_sync > end:
        end = last_sync.replace(microsecond=0)
    now = now or datetime.now(UTC)
    return Window(start=oldest + timedelta(seconds=1), end=min(end, now))


# --- status for pages, health and jobs ---------------------------------------------------------


@dataclass(frozen=True)
class Status:
    enabled: bool
    running: bool = False
    url: str = ""
    last_sync: datetime | None = None  # every commit before it is in the replica
    lag: float | None = None  # seconds the replica is behind the live database, now
    checked_at: datetime | None = None
    restarts: int = 0  # restarts nobody asked for: Litestream died or hung
    last_restart_at: datetime | None = None
    last_restart_why: str = ""  # "it read none of the site's commits for 300 s: hung or stopped"
    error: str = ""
    replica_problem: str = ""  # "empty", "missing files": a restore from it would fail
    history_began: datetime | None = None
    history_restored: str = ""
    window: Window | None = None  # as of the last listing of the replica's files
    max_lag: int | None = None

    @property
    def behind(self):
        return self.lag is not None and self.max_lag is not None and self.lag > self.max_lag


def status(now=None, database=None):
    """What the replicate command last wrote, checked for being alive and fresh.

    The lag runs against the clock: a status file that stops changing, or that keeps saying
    the same time, is further behind every second.
    """
    if not enabled():
        return Status(enabled=False)
    now = now or datetime.now(UTC)
    record = read_json(status_path(database)) or {}
    found = history(database) or {}
    base = {
        "enabled": True,
        "url": replica_url(),
        "history_began": found.get("began_at"),
        "history_restored": found.get("restored", ""),
        "max_lag": max_lag(),
    }
    checked = time_or_none(record.get("heartbeat_at"))
    if checked is None:
        return Status(**base)
    alive = replicate_alive(record) and (now - checked).total_seconds() < STALE_AFTER
    synced = time_or_none(record.get("synced_through"))
    lag = max(0.0, (now - synced).total_seconds()) if synced else None
    running = alive and record.get("litestream_running") is True
    span = record.get("files_span") or ()
    times = [t for t in map(time_or_none, span if isinstance(span, list) else ()) if t]
    problem = record.get("replica_problem")
    restart = record.get("last_restart")
    restart = restart if isinstance(restart, dict) else {}
    return Status(
        **base,
        running=running,
        window=window_from(times, synced if running else None, now) if len(times) == 2 else None,
        last_sync=synced,
        lag=lag,
        checked_at=checked,
        restarts=_int(record.get("restarts")),
        last_restart_at=time_or_none(restart.get("at")),
        last_restart_why=str(restart.get("why") or "")[:200],
        error=str(record.get("error") or ""),
        replica_problem=problem if problem in ("empty", "missing files") else "",
    )


def replicate_alive(record):
    """Whether the `replicate` that wrote the record still runs (a reused pid is not it)."""
    pid = _int(record.get("pid"))
    return pid > 0 and process_is_alive(pid, str(record.get("pid_identity") or ""))


def _int(value):
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


def problems(now=None, current=None):
    """The replication problems for the health verdict (empty when off or fine)."""
    try:
        if not enabled():
            return []
        current = current or status(now)
    except conf.ConfigError as err:
        return [str(err)]
    if not current.running:
        return ["replication stopped (is manage.py replicate running?)"]
    if current.replica_problem:
        return [f"replica {current.replica_problem} (a restore from it would fail)"]
    if current.lag is None:
        return ["replication has not synced yet"]
    if current.behind:
        return [f"replication {current.lag:.0f} s behind (limit {current.max_lag} s)"]
    return []


ADVICE = {
    "stopped": "Start manage.py replicate (scripts/run starts it when STANZA_REPLICA_URL "
    "is set); its log says why Litestream stopped.",
    "would fail": "The replica's files were removed or are incomplete: manage.py replicate "
    "restarts Litestream, which writes a new snapshot; if this stays, see its log.",
    "behind": "Litestream is stopped, hung, cannot keep up or cannot reach the replica: "
    "see the log of manage.py replicate.",
    "synced": "Wait a few seconds after starting manage.py replicate; if this stays, see its log.",
}


def health_problems(now=None, current=None):
    """The same problems for the health verdict, each with what to do next, and when
    `replicate` last restarted Litestream on its own (it died or hung).

    `current`: the `status()` the caller has already read (read once per request)."""
    if current is None:
        try:
            current = status(now) if enabled() else None
        except conf.ConfigError:
            current = None  # problems() names it
    found = []
    for words in problems(now, current):
        kind = next((k for k in ADVICE if k in words), "")
        advice = ADVICE.get(kind, "")
        if current is not None and current.last_restart_at and kind in ("stopped", "behind"):
            advice += f" {restart_sentence(current)}"
        found.append(Problem(words, advice.strip()))
    return found


def restart_sentence(current):
    """'`replicate` restarted Litestream at 2026-12-06T23:40:02Z: it read none of ...'."""
    when = format_time(current.last_restart_at)
    return f"replicate restarted Litestream at {when}: {current.last_restart_why}."
