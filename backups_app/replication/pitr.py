"""Restores from the replica: to a point in time (`restore --at`, the Backups page), and the
`verify-replica` job's restore of its latest state.

What a restore to T holds: Litestream stamps each file when it has read the WAL, about a
second after the commits in it, and a restore to T applies the files stamped up to T. So it
holds every commit Litestream had synced by T, which may leave out the last second or so
before T (the pages and the README say so).
"""

import contextlib
import os
import secrets
import time
from dataclasses import replace
from datetime import UTC
from pathlib import Path
from urllib.parse import urlsplit

from backups_app.core import files
from backups_app.db import sqlite
from backups_app.models import ReplicaCanary
from backups_app.replication.config import (
    RESTORE_TIMEOUT,
    ReplicationError,
    enabled,
    format_time,
    live_database,
    replica_url,
    run_litestream,
    write_config,
)
from backups_app.replication.positions import Tracker, files_span, replica_files
from backups_app.replication.status import name_restore, status, window_from
from backups_app.restore import restore


def window(database=None, now=None):
    """The replica's window now (lists its files; for a restore, not for a page)."""
    database = live_database(database)
    config = write_config(database=database)
    span = files_span(replica_files(config, database))
    if span is None:
        raise ReplicationError("the replica holds nothing yet; is manage.py replicate running?")
    current = status(now, database)
    return window_from(span, current.last_sync if current.running else None, now)


@contextlib.contextmanager
def restored_copy(when=None, database=None):
    """Yield the path of a scratch file holding the replica's database at `when` (UTC), or
    its latest state when `when` is None. The file is deleted afterwards."""
    database = live_database(database)
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
    database = live_database(database)
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
    label = f"the replica at {when.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC"  # the one format
    name_restore(label, database)  # the history names what was chosen, not the scratch file
    return _renamed(result, label)


def _renamed(result, label):
    """The result with the backup named for what it was, not for its scratch file (the run
    history's line too)."""
    result = replace(result, backup=replace(result.backup, path=Path(label)))
    run = getattr(result, "run", None)
    if run is not None:
        type(run).objects.filter(pk=run.pk).update(result=result.summary())
    return result


def verify_replica(timeout=60):
    """Write a canary row, wait until the replica holds it (measured as `replicate` measures
    it), restore the replica's latest state into a scratch file, check it fully, and find
    the canary there."""
    if not enabled():
        raise ReplicationError("replication is off")
    database = live_database()
    config = write_config(database=database)
    if not status(database=database).running:
        raise ReplicationError("replication is not running (is manage.py replicate running?)")
    canary = ReplicaCanary.objects.create(token=secrets.token_hex(8))
    ReplicaCanary.objects.filter(id__lt=canary.id).delete()  # only the newest is needed
    committed = time.time()
    tracker = Tracker(database, config, remote=urlsplit(replica_url()).scheme != "file")
    deadline = time.monotonic() + timeout
    while (tracker.beat() or 0) <= committed:
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
