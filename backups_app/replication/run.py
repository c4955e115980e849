"""The `replicate` command's work: run Litestream, keep it running, and keep the status file.

Litestream runs in the foreground from the config generated in `config`; it is restarted when
it dies (backing off), when it hangs (it read none of the site's commits for
STANZA_REPLICA_MAX_LAG seconds: stopped by SIGSTOP, or stuck), when a restore started a new
history, and when the replica lost its files (a new Litestream writes a new snapshot). Every
HEARTBEAT the `positions.Tracker` measures the live database against the replica and the
status file is rewritten.
"""

import contextlib
import fcntl
import logging
import os
import signal
import subprocess
import time
from urllib.parse import urlsplit

from backups_app.core.processes import process_identity
from backups_app.replication.config import (
    LOCK_NAME,
    STATUS_NAME,
    ReplicationError,
    child_env,
    litestream_binary,
    live_database,
    max_lag,
    now_iso,
    private_dir,
    read_json,
    replica_url,
    state_dir,
    write_config,
)
from backups_app.replication.positions import HEARTBEAT, Tracker
from backups_app.replication.status import history_path, write_status

logger = logging.getLogger(__name__)

BACKOFF_FIRST, BACKOFF_MAX = 1.0, 60.0
STOP_TIMEOUT = 15  # seconds Litestream gets to finish its last sync when asked to stop
HUNG_TIMEOUT = 5  # seconds a hung Litestream gets after SIGTERM, before SIGKILL
HUNG_AFTER_MIN = 15.0  # three heartbeats: one slow read is not a hang, whatever the limit
REPAIR_EVERY = 300.0  # at most one restart per 5 minutes for a replica that lost its files


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
    folder = private_dir(state_dir(database))
    fd = os.open(folder / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            record = read_json(folder / STATUS_NAME) or {}
            raise ReplicationError(
                f"another manage.py replicate (pid {record.get('pid', '?')}) already "
                "replicates this database"
            ) from None
        yield
    finally:
        os.close(fd)


def replicate(stop, database=None):
    """Run Litestream until `stop` (a threading.Event) is set; restart it when it dies.

    Restarts back off from 1 s to 60 s while it keeps dying early; a restore noted by
    `note_restore` restarts it at once. Every HEARTBEAT the status file is rewritten.
    """
    database = live_database(database)
    config = write_config(database=database)
    remote = urlsplit(replica_url()).scheme != "file"
    tracker = Tracker(database, config, remote=remote, stop=stop)
    state = {
        "pid": os.getpid(),
        "pid_identity": process_identity(),
        "started_at": now_iso(),
        "restarts": 0,
        "error": "",
    }
    backoff = BACKOFF_FIRST
    seen_history = _history_stamp(database)
    repaired = 0.0
    hung_after = max(float(max_lag()), HUNG_AFTER_MIN)
    while not stop.is_set():
        child = start_litestream(config)
        started = time.monotonic()
        logger.info("litestream started (pid %d) for %s", child.pid, database)
        state.update(litestream_pid=child.pid, litestream_running=True, error="")
        tracker.litestream_restarted()
        reason = _watch(child, stop, tracker, state, database, seen_history, repaired, hung_after)
        if reason == "stop":
            _stop_child(child)
            break
        if reason == "hung":
            seconds = tracker.unread_for()
            logger.warning(
                "litestream (pid %d) read none of the site's commits for %.0f s, hung or "
                "stopped: restarting it",
                child.pid,
                seconds,
            )
            why = f"it read none of the site's commits for {seconds:.0f} s: hung or stopped"
            _stop_child(child, HUNG_TIMEOUT)
            _restarted(state, why)
            backoff = BACKOFF_FIRST
            continue
        if reason in ("restore", "repair"):
            if reason == "restore":
                seen_history = _history_stamp(database)
                logger.info("the database was restored: restarting litestream for a new history")
            else:
                repaired = time.monotonic()
                logger.warning(
                    "the replica is %s: restarting litestream so it writes a new snapshot",
                    tracker.replica_problem,
                )
            _stop_child(child)
            backoff = BACKOFF_FIRST
            continue
        state["error"] = f"litestream exited with status {child.returncode}"
        _restarted(state, f"it exited with status {child.returncode}")
        state["litestream_running"] = False
        _write_state(state, tracker, database)
        if time.monotonic() - started > BACKOFF_MAX:
            backoff = BACKOFF_FIRST  # it ran for a while: this is a new failure
        logger.error("%s; restarting it in %.0f s", state["error"], backoff)
        stop.wait(backoff)
        backoff = min(backoff * 2, BACKOFF_MAX)
    state["litestream_running"] = False
    _write_state(state, tracker, database)


def _restarted(state, why):
    """Count a restart that was not asked for, and keep when and why for the status file."""
    state["restarts"] += 1
    state["last_restart"] = {"at": now_iso(), "why": why}


def _watch(child, stop, tracker, state, database, seen_history, repaired, hung_after):
    """Beat until the child exits ("died"), a stop is asked ("stop"), a restore happened
    ("restore"), the replica lost its files ("repair") or the child read nothing of the
    site's commits for `hung_after` seconds ("hung")."""
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
            due = not repaired or time.monotonic() - repaired > REPAIR_EVERY
            if tracker.replica_problem and due:
                return "repair"
            if tracker.unread_for() > hung_after:
                return "hung"
        stop.wait(0.2)


def _stop_child(child, timeout=STOP_TIMEOUT):
    """SIGTERM (and SIGCONT, so a stopped one can act on it), then SIGKILL after `timeout`."""
    if child.poll() is None:
        child.terminate()
        with contextlib.suppress(ProcessLookupError):
            os.kill(child.pid, signal.SIGCONT)
        try:
            child.wait(timeout)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def _write_state(state, tracker, database):
    span = tracker.files_span
    record = {
        **state,
        "heartbeat_at": now_iso(),
        "synced_through": tracker.synced_iso(),
        "restorable_txid": tracker.restorable_txid,
        "replica_txid": tracker.newest_txid,
        "replica_problem": tracker.replica_problem,
        "files_span": [t.isoformat() for t in span] if span else None,
        "error": tracker.error or state.get("error", ""),
    }
    try:
        write_status(record, database)
    except OSError:
        logger.exception("could not write the replication status file")


def _history_stamp(database):
    """Which restore the history names: when it began (renaming it is not another restore)."""
    record = read_json(history_path(database))
    return record.get("began_at") if record else None
