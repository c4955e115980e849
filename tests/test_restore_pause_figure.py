"""The restore's figure for how long writers waited covers the whole write lock, its commit
included: a reader in another process sees the restored rows only at the commit, and the figure
is at least the time from the safety backup's start under the lock to that moment."""

import logging
import re
import sqlite3
import subprocess
import sys
import threading

import pytest

from backups_app.engine.backups import create_backup
from backups_app.restore import restore as restore_module
from backups_app.restore.restore import restore_backup
from tests.conftest import copy_database, wait_until
from tests.test_restore_readers import fill

# Prints the moment (the system's monotonic clock, as time.monotonic() in any process) a fresh
# connection first sees `rows` rows in `bulk`: the restore's commit.
WATCHER = r"""
import os, sqlite3, sys, time
path, rows, ready = sys.argv[1], int(sys.argv[2]), sys.argv[3]
open(ready, "w").close()
deadline = time.monotonic() + 120
while time.monotonic() < deadline:
    try:
        conn = sqlite3.connect(path, timeout=0)
        try:
            seen = conn.execute("SELECT count(*) FROM bulk").fetchone()[0]
        finally:
            conn.close()
    except sqlite3.Error:  # a rollback journal's commit holds readers off for a moment
        continue
    if seen == rows:
        print(time.monotonic())
        break
"""


def live_and_backup(data_dir, migrated_database, backups_folder, *, journal, rows):
    """(live database, a backup with `rows` rows in `bulk`); the live one has fewer now."""
    live = copy_database(migrated_database, data_dir / "database.sqlite")
    conn = sqlite3.connect(live, isolation_level=None)
    conn.execute(f"PRAGMA journal_mode = {journal}")
    conn.close()
    fill(live, rows, 2)
    backup = create_backup(live, folder=backups_folder)
    fill(live, rows * 3 // 4, 1)
    return live, backup


def restore_seen(live, backup, rows, backups_folder, tmp_path, caplog):
    """Restore `backup` into `live`; (its log record, the moment another process saw it)."""
    ready = tmp_path / "ready"
    watcher = subprocess.Popen(
        [sys.executable, "-c", WATCHER, str(live), str(rows), str(ready)],
        stdout=subprocess.PIPE,
        text=True,
    )
    wait_until(ready.exists)
    try:
        with caplog.at_level(logging.INFO, logger=restore_module.__name__):
            restore_backup(backup.path, database=live, backups_folder=backups_folder)
    finally:
        committed = float(watcher.communicate(timeout=120)[0])
    (record,) = [r for r in caplog.records if getattr(r, "event", None) == "restore"]
    return record, committed


@pytest.mark.slow
@pytest.mark.parametrize("journal", ["wal", "delete"])
def test_the_writers_wait_it_reports_lasts_until_the_commit(
    journal, data_dir, migrated_database, backups_folder, tmp_path, monkeypatch, caplog
):
    # About 40 MB: the copy's last step and its commit take long enough to be seen missing.
    live, backup = live_and_backup(
        data_dir, migrated_database, backups_folder, journal=journal, rows=80_000
    )
    under_lock = []
    start = restore_module._SafetyBackup.start

    def recording_start(self):
        under_lock.append(restore_module.time.monotonic())
        return start(self)

    monkeypatch.setattr(restore_module._SafetyBackup, "start", recording_start)
    record, committed = restore_seen(live, backup, 80_000, backups_folder, tmp_path, caplog)

    assert len(under_lock) == 1
    # The watcher sees the commit a moment after it happens; the figure starts before the
    # safety backup does (at the step that took the lock), so it is never the shorter one.
    assert record.locked >= committed - under_lock[0] - 0.01, (record.locked, committed)
    said = re.search(r"writers waited ([0-9.]+) s", record.getMessage())[1]
    assert abs(float(said) - record.locked) <= 0.006  # the same figure, rounded to 0.01 s


@pytest.mark.slow
def test_the_wait_for_another_writer_before_the_lock_is_not_counted(
    data_dir, migrated_database, backups_folder, tmp_path, monkeypatch, caplog
):
    """The restore waits its turn while another connection writes; only what comes after it
    took the lock held the site's writers."""
    live, backup = live_and_backup(
        data_dir, migrated_database, backups_folder, journal="wal", rows=20_000
    )
    released, threads = [], []
    ahead = restore_module._SafetyBackup.ahead

    def ahead_then_a_writer_holds_the_lock(self):
        ahead(self)
        other = sqlite3.connect(live, isolation_level=None, check_same_thread=False)
        other.execute("BEGIN IMMEDIATE")

        def release():
            restore_module.time.sleep(1)
            other.execute("COMMIT")
            released.append(restore_module.time.monotonic())
            other.close()

        threads.append(threading.Thread(target=release))
        threads[0].start()

    monkeypatch.setattr(restore_module._SafetyBackup, "ahead", ahead_then_a_writer_holds_the_lock)
    try:
        record, committed = restore_seen(live, backup, 20_000, backups_folder, tmp_path, caplog)
    finally:
        for thread in threads:
            thread.join()

    # The copy retries every BUSY_SLEEP after a busy step: at most that much of the wait counts.
    assert 0 < record.locked <= committed - released[0] + 0.06, (record.locked, committed)
