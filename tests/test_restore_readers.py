"""Readers never see a half-done restore (issue 18 item 1): processes that open a fresh
connection per query, as Django does per request, run throughout a restore and its commit; none
may get an error, and each sees the old data or the new, never a mix."""

import json
import subprocess
import sys
import time

import pytest

from backups_app.engine.backups import create_backup
from backups_app.restore.restore import restore_backup
from tests.conftest import copy_database, wait_until

READER = r"""
import json, os, random, sqlite3, sys, time
path, stop, ready = sys.argv[1:4]
queries, errors, seen = 0, [], set()
open(ready, "w").close()
while not os.path.exists(stop):
    try:
        conn = sqlite3.connect(path, timeout=5)  # Django's default timeout, a new connection
        try:
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
            rows, total = conn.execute("SELECT count(*), total(n) FROM bulk").fetchone()
            seen.add((rows, total))
            queries += 1
        finally:
            conn.close()
    except sqlite3.Error as err:
        errors.append(str(err))
    time.sleep(random.random() / 50)  # requests come and go: at times none is connected
print(json.dumps({"queries": queries, "errors": errors[:5], "n_errors": len(errors),
                  "seen": sorted(seen)}))
"""


def fill(path, rows, n):
    """A `bulk` table of `rows` rows, each with the value `n` (so a mix shows in the total)."""
    import sqlite3

    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("CREATE TABLE IF NOT EXISTS bulk (id INTEGER PRIMARY KEY, n INT, pad TEXT)")
    conn.execute("CREATE INDEX IF NOT EXISTS bulk_n ON bulk (n)")
    conn.execute("DELETE FROM bulk")
    conn.execute(
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < ?) "
        "INSERT INTO bulk (n, pad) SELECT ?, hex(randomblob(200)) FROM c",
        (rows, n),
    )
    conn.close()
    return rows, float(rows * n)


@pytest.mark.slow
def test_readers_on_fresh_connections_never_see_a_restore_half_done(
    data_dir, migrated_database, backups_folder, tmp_path
):
    live = copy_database(migrated_database, data_dir / "database.sqlite")
    # About 120 MB: the restore (and the checkpoint after it) lasts long enough to be read through.
    new = fill(live, 240_000, 2)
    backup = create_backup(live, folder=backups_folder)
    old = fill(live, 200_000, 1)
    stop, readers = tmp_path / "stop", []
    for i in range(4):
        ready = tmp_path / f"ready-{i}"
        readers.append(
            subprocess.Popen(
                [sys.executable, "-c", READER, str(live), str(stop), str(ready)],
                stdout=subprocess.PIPE,
                text=True,
            )
        )
        wait_until(ready.exists)
    time.sleep(0.3)
    try:
        restore_backup(backup.path, database=live, backups_folder=backups_folder)
        time.sleep(0.5)  # readers go on after the commit too
    finally:
        stop.touch()
        results = [json.loads(reader.communicate(timeout=60)[0]) for reader in readers]

    assert all(result["queries"] > 10 for result in results), results
    assert [result["errors"] for result in results] == [[]] * len(readers)
    seen = {tuple(pair) for result in results for pair in result["seen"]}
    assert seen <= {old, new}, seen  # the old data or the new, never a mix
    assert new in seen
