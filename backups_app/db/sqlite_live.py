"""Restoring into the live SQLite database with the shortest write pause (the seam's restore_live).

Everything that can happen before the lock does: the backup is loaded into a scratch file in the
live database's folder with the live file's page size (SQL: its schema, then its rows, then its
indexes, as the drill loads it), and the safety backup's copy is made from a snapshot while
writers go on (sqlite_catchup). Under the live database's write lock there is only what must be
there: the safety backup brought up to date (`before()`), the product's own records carried from
the live database into the scratch file, and SQLite's backup API copying the scratch file's
pages onto the live connection. The backup API holds the live database's write lock from its
first step to its commit, and the first step's progress callback runs under it: writers wait
(within their busy timeout) until the restore is committed, so no committed write is lost;
readers see the old data until the commit, then the new, never a mix. The safety backup's
checks, hash and site files go on alongside the copy and must be whole before the copy's last
step commits. Any failure aborts the copy, which rolls the live database back.
"""

import contextlib
import logging
import sqlite3
import time
from pathlib import Path
from urllib.parse import quote

from backups_app.core.files import fsync, scratch_file
from backups_app.db.sqlite_base import (
    database_path,
    page_size_of,
    pragma,
    read_header,
    watching,
)
from backups_app.db.sqlite_restore import (
    CACHE_KIB,
    LOCK_TIMEOUT,
    load_into,
    put_back_product_records,
    restore_in_one_transaction,
    save_product_records,
)

logger = logging.getLogger(__name__)

# Bytes per step of the copy onto the live database: half its connection's page cache, so
# the first step's pages are all still in that cache (not yet in the WAL) when its callback
# carries the product's records and changes a few of them. A page this transaction already
# wrote to the WAL would be overwritten there in place, and then the commit re-reads and
# re-checksums every frame after it: 0.5-0.8 s more of the site's pause on 1 GB.
STEP_BYTES = CACHE_KIB * 1024 // 2
SQLITE_OK, SQLITE_BUSY, SQLITE_LOCKED = 0, 5, 6
# Seconds the copy sleeps after a step that found the live database busy.
BUSY_SLEEP = 0.05


def restore_live(plain, *, keep, database=None, before=None, ahead=None, unlocked=None):
    """Replace the database's contents with the backup `plain`'s (see the module's docstring).

    `ahead()` runs once the backup is loaded, just before the lock (the safety backup's copy);
    `before()` runs first under the lock (the safety backup made whole); `unlocked(seconds)`
    is told how long writers were held, from the step that took the lock to the commit.
    Returns ({what was kept: rows}, [what could not be kept, in words]). When there was no
    database, the file the connection created is removed again on failure.
    """
    database = database_path(database)
    existed = database.exists() and database.stat().st_size > 0
    live = sqlite3.connect(
        f"file:{quote(str(database))}?mode=rwc",
        uri=True,
        timeout=LOCK_TIMEOUT,
        isolation_level=None,
    )
    try:
        live.execute(f"PRAGMA cache_size = -{CACHE_KIB}")  # holds a step (STEP_BYTES)
        if pragma(live, "page_count") == 0:  # a new database: the backup's page size, WAL
            live.execute(f"PRAGMA page_size = {_page_size(plain)}")
            live.execute("PRAGMA journal_mode = WAL")
        elif pragma(live, "journal_mode") != "wal":  # a rollback journal (Django's default)
            live.close()
            return restore_in_one_transaction(
                plain, database, keep=keep, before=before, unlocked=unlocked
            )
        with scratch_file(database.parent) as scratch:
            load_into(plain, scratch, page_size=pragma(live, "page_size"))
            # Written without waiting for the disk; flushed now, before the lock, or the kernel
            # writes it back while the copy under the lock writes the WAL (both on one disk).
            fsync(scratch)
            if ahead is not None:
                ahead()
            kept, held = _copy_onto(scratch, live, database, keep, before)
            if unlocked is not None:
                unlocked(held)
            # The restored pages are in the WAL: move them into the database file at once,
            # after the lock, rather than in the next writer's commit (a checkpoint that is
            # running makes the writers' own automatic ones give way; this one waits for none).
            live.execute("PRAGMA wal_checkpoint(PASSIVE)")
        return kept
    except BaseException:
        if not existed:
            live.close()
            for leftover in (database, *(Path(f"{database}{s}") for s in ("-wal", "-shm"))):
                leftover.unlink(missing_ok=True)
        raise
    finally:
        live.close()


def _page_size(plain):
    header = read_header(plain)
    return page_size_of(header) if len(header) >= 18 else 4096


def _copy_onto(scratch, live, database, keep, before):
    """The backup API from `scratch` onto `live`; its first step's callback, under the lock,
    runs `before()` and carries the product's records into the scratch file. Returns (what
    the carry returned, seconds from the step that took the lock to the commit)."""
    source = sqlite3.connect(f"file:{quote(str(scratch))}", uri=True, isolation_level=None)
    try:
        # The scratch file is thrown away after: the carry's commit need not reach its disk.
        source.execute("PRAGMA synchronous = OFF")
        source.execute("PRAGMA journal_mode = MEMORY")
        total = pragma(source, "page_count")
        step = step_pages(pragma(source, "page_size"), total)
        deadline = time.monotonic() + LOCK_TIMEOUT
        # A step never waits inside SQLite for another writer: it returns busy, and the copy
        # tries again after BUSY_SLEEP (until LOCK_TIMEOUT), so the time the lock was taken is
        # known: the copy's start, or the end of the sleep after the last busy step.
        live.execute("PRAGMA busy_timeout = 0")
        done = {"asked": time.monotonic()}

        def progress(status, remaining, pages):
            if status in (SQLITE_BUSY, SQLITE_LOCKED):  # another connection writes: wait
                if time.monotonic() > deadline:
                    raise sqlite3.OperationalError("database is locked")
                done["asked"] = time.monotonic() + BUSY_SLEEP
                return
            if "kept" not in done:  # the first step: the live database's write lock is ours
                done["version"] = pragma(probe, "data_version")
                done["finish"] = before() if before is not None else None
                done["kept"] = _carry(source, database, keep)
            # The carry only adds pages, so a step can be the last (the commit) only when this
            # many remained: the safety backup must be whole by then.
            if remaining <= step and callable(finish := done.pop("finish", None)):
                finish()

        # Another connection's view of the live database: its data_version moves when the
        # copy commits (no other writer can commit between the first step and that).
        probe = sqlite3.connect(f"file:{quote(str(database))}?mode=ro", uri=True)
        try:
            # At least two steps, so the first callback comes before the copy commits.
            # The WAL is flushed as the copy writes it: the commit's own flush (writers wait
            # for it) then finds little left to write.
            with watching(Path(f"{database}-wal"), flush=0):
                source.backup(live, pages=step, progress=progress, sleep=BUSY_SLEEP)
                held = time.monotonic() - done["asked"]
        except KeyboardInterrupt:
            # A signal in the callback after the last step comes after the commit: the restore
            # is whole, and saying "nothing was changed" would be false.
            if "version" not in done or pragma(probe, "data_version") == done["version"]:
                raise
            logger.warning("a stop signal came as the restore committed; the restore is whole")
            held = time.monotonic() - done["asked"]
        finally:
            probe.close()
        if "kept" not in done:  # a one-page database: copied in one step, before any callback
            raise sqlite3.OperationalError("the restored copy is empty; nothing was restored")
        return done["kept"], held
    finally:
        source.close()


def step_pages(page_size, total):
    """Pages per step of the copy: at most STEP_BYTES, and at least two steps, so the first
    callback (the lock's work) comes before the copy commits."""
    return max(1, min(STEP_BYTES // page_size, total // 2))


def _carry(source, database, keep):
    """Copy the product's records of the live database (attached read only, its committed
    state) into the scratch file, through the backup's own source connection (so the copy
    onto the live database takes the change with it)."""
    if not keep:
        return {}, []
    source.execute("ATTACH DATABASE ? AS live", (f"file:{quote(str(database))}?mode=ro",))
    try:
        source.execute("BEGIN")
        saved = save_product_records(source, keep, schema="live")
        kept = put_back_product_records(source, saved, keep)
        source.execute("COMMIT")
    except BaseException:
        # An interrupted statement may have rolled back already, or still hold `live` ("database
        # live is locked"): the error that stopped the carry is the one to report.
        with contextlib.suppress(sqlite3.OperationalError):
            if source.in_transaction:
                source.execute("ROLLBACK")
            source.execute("DETACH DATABASE live")
        raise
    source.execute("DETACH DATABASE live")
    return kept
