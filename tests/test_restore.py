import json
import sqlite3
import subprocess
import sys

import pytest

from backups_app.engine import backups
from backups_app.engine.backups import create_backup
from backups_app.restore import drill
from backups_app.restore.restore import RestoreError, check_backup_file, restore_backup
from tests.conftest import corrupt_middle, count_rows, file_state, make_database, wait_until


@pytest.fixture
def live(data_dir):
    return make_database(data_dir / "database.sqlite", rows=100)


def change_data(path):
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("DELETE FROM item WHERE n < 50")
    conn.execute("UPDATE item SET name = 'changed' WHERE n = 60")
    conn.execute("INSERT INTO item (name, n) VALUES ('after the backup', -1)")
    conn.close()


def names(path):
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return {row[0] for row in conn.execute("SELECT name FROM item")}
    finally:
        conn.close()


def add_migration(path, app, name):
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("INSERT INTO django_migrations (app, name) VALUES (?, ?)", (app, name))
    conn.close()


def unchanged_after(live, backups_folder, action):
    """Run `action`, expecting a RestoreError; assert the live database and folder unchanged."""
    before_db = file_state(live.parent)
    before_backups = file_state(backups_folder)
    with pytest.raises(RestoreError) as info:
        action()
    assert file_state(live.parent) == before_db
    assert file_state(backups_folder) == before_backups
    return str(info.value)


def test_it_restores_the_data_as_it_was_at_the_backup(live, backups_folder):
    backup = create_backup(live, folder=backups_folder)
    expected = names(live)
    change_data(live)

    result = restore_backup(backup.path, database=live, backups_folder=backups_folder)

    assert count_rows(live) == 100
    assert names(live) == expected
    assert result.safety_backup.label == "pre-restore"
    assert result.safety_backup.path.parent == backups_folder
    assert "after the backup" in names(result.safety_backup.path)
    assert result.backup.row_counts == {"django_migrations": 0, "item": 100}
    assert drill.read_manifest(result.safety_backup.path)["tables"]["item"] == 51
    conn = sqlite3.connect(live)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()


def test_it_refuses_to_restore_the_live_database_onto_itself(live, backups_folder):
    message = unchanged_after(live, backups_folder, lambda: restore_backup(live, database=live))

    assert "live database itself" in message


def test_it_refuses_a_database_in_use_whose_data_is_partly_in_its_wal(live, tmp_path):
    other = make_database(tmp_path / "other.sqlite", rows=5)
    holder = sqlite3.connect(other, isolation_level=None)
    holder.execute("PRAGMA wal_autocheckpoint=0")
    holder.execute("INSERT INTO item (name, n) VALUES ('only in the wal', 1)")

    with pytest.raises(RestoreError, match="in use"):
        restore_backup(other, database=live)
    holder.close()


def test_a_failed_restore_into_a_missing_database_leaves_no_file(data_dir, tmp_path):
    source = make_database(tmp_path / "elsewhere.sqlite", rows=3)
    target = data_dir / "missing-folder" / "database.sqlite"

    with pytest.raises(RestoreError):
        restore_backup(source, database=target)

    assert not target.parent.exists()


def test_it_restores_a_gzipped_backup(live, backups_folder):
    backup = create_backup(live, folder=backups_folder, compress=True)
    change_data(live)

    result = restore_backup(backup.path, database=live, backups_folder=backups_folder)

    assert result.backup.compressed
    assert result.backup.checksum_verified
    assert count_rows(live) == 100
    leftovers = [p.name for p in live.parent.iterdir() if p.name.startswith(".stanza-tmp-")]
    assert leftovers == []


def test_open_connections_see_the_restored_data(live, backups_folder):
    backup = create_backup(live, folder=backups_folder)
    change_data(live)
    reader = sqlite3.connect(live, isolation_level=None)
    assert reader.execute("SELECT count(*) FROM item").fetchone()[0] == 51

    restore_backup(backup.path, database=live, backups_folder=backups_folder)

    assert reader.execute("SELECT count(*) FROM item").fetchone()[0] == 100
    reader.close()


def test_it_refuses_a_corrupt_backup_and_changes_nothing(live, backups_folder, tmp_path):
    make_database(tmp_path / "big.sqlite", rows=20_000, wal=False)
    backup = create_backup(tmp_path / "big.sqlite", folder=backups_folder)
    backup.path.with_name(backup.name + ".sha256").unlink()
    corrupt_middle(backup.path)

    message = unchanged_after(
        live, backups_folder, lambda: restore_backup(backup.path, database=live)
    )

    assert "integrity check" in message or "not a sound SQLite database" in message


def test_it_refuses_a_truncated_backup(live, backups_folder):
    backup = create_backup(live, folder=backups_folder)
    backup.path.with_name(backup.name + ".sha256").unlink()
    data = backup.path.read_bytes()
    backup.path.write_bytes(data[: len(data) // 2])

    message = unchanged_after(
        live, backups_folder, lambda: restore_backup(backup.path, database=live)
    )

    assert "truncated" in message


def test_it_refuses_a_truncated_gzip(live, backups_folder):
    backup = create_backup(live, folder=backups_folder, compress=True)
    backup.path.with_name(backup.name + ".sha256").unlink()
    data = backup.path.read_bytes()
    backup.path.write_bytes(data[: len(data) // 2])

    message = unchanged_after(
        live, backups_folder, lambda: restore_backup(backup.path, database=live)
    )

    assert "not a valid gzip file" in message


def test_it_refuses_a_wrong_checksum(live, backups_folder):
    backup = create_backup(live, folder=backups_folder)
    backups.write_checksum(backup.path, "0" * 64)

    message = unchanged_after(
        live, backups_folder, lambda: restore_backup(backup.path, database=live)
    )

    assert "does not match its .sha256 checksum" in message


def test_it_refuses_a_file_that_is_not_a_database(live, backups_folder, tmp_path):
    bogus = tmp_path / "notes.bak"
    bogus.write_text("hello, this is not a database\n" * 10)

    message = unchanged_after(live, backups_folder, lambda: restore_backup(bogus, database=live))

    assert "not an SQLite database" in message


def test_it_refuses_a_database_of_another_project(live, backups_folder, tmp_path):
    other = tmp_path / "other.sqlite"
    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY)")
    conn.close()

    message = unchanged_after(live, backups_folder, lambda: restore_backup(other, database=live))

    assert "no django_migrations table" in message


def test_it_refuses_a_backup_from_a_newer_schema(live, backups_folder, tmp_path):
    newer = make_database(tmp_path / "newer.sqlite", rows=5)
    add_migration(newer, "backups_app", "0001_initial")
    add_migration(newer, "backups_app", "9999_from_the_future")

    message = unchanged_after(live, backups_folder, lambda: restore_backup(newer, database=live))

    assert "newer version" in message
    assert "backups_app.9999_from_the_future" in message


def test_it_accepts_an_older_schema_and_names_the_pending_migrations(live, backups_folder):
    conn = sqlite3.connect(live, isolation_level=None)
    conn.execute(  # what 0001 created (its columns too: the check reads them)
        "CREATE TABLE cron_runs (id INTEGER PRIMARY KEY, job_name, started_at, finished_at, "
        "duration, status, result, error, trigger, hostname, pid)"
    )
    conn.close()
    add_migration(live, "backups_app", "0001_initial")
    add_migration(live, "some_removed_app", "0001_initial")  # not an app of this code

    info = check_backup_file(live)

    assert ("backups_app", "0001_initial") not in info.pending_migrations
    assert ("auth", "0001_initial") in info.pending_migrations


def test_it_restores_into_a_database_with_another_page_size(live, backups_folder, tmp_path):
    small_pages = tmp_path / "small-pages.sqlite"
    conn = sqlite3.connect(small_pages, isolation_level=None)
    conn.execute("PRAGMA page_size=1024")
    conn.close()
    make_database(small_pages, rows=7, wal=False)

    restore_backup(small_pages, database=live, backups_folder=backups_folder)

    assert count_rows(live) == 7


def test_it_restores_into_a_missing_database(data_dir, backups_folder, tmp_path):
    source = make_database(tmp_path / "elsewhere.sqlite", rows=3)
    target = data_dir / "database.sqlite"

    result = restore_backup(source, database=target, backups_folder=backups_folder)

    assert result.safety_backup is None
    assert count_rows(target) == 3


WRITER = r"""
import json, os, sqlite3, sys, time
path, stop = sys.argv[1], sys.argv[2]
conn = sqlite3.connect(path, timeout=30, isolation_level=None)
n, errors = 0, []
print("ready", flush=True)
while not os.path.exists(stop):
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO item (name, n) VALUES ('writer', ?)", (n,))
        conn.execute("COMMIT")
        n += 1
    except sqlite3.Error as err:
        errors.append(str(err))
        if conn.in_transaction:
            conn.execute("ROLLBACK")
    time.sleep(0.002)
seen = conn.execute("SELECT count(*) FROM item WHERE name = 'after the backup'").fetchone()[0]
integrity = conn.execute("PRAGMA integrity_check").fetchone()[0]
print(json.dumps({"commits": n, "errors": errors, "seen": seen, "integrity": integrity}))
"""


@pytest.mark.slow
def test_it_restores_while_another_process_writes(live, backups_folder, tmp_path):
    backup = create_backup(live, folder=backups_folder)
    change_data(live)
    stop = tmp_path / "stop"
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(live), str(stop)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert writer.stdout.readline().strip() == "ready"
        wait_until(lambda: writer_rows(live) >= 20)

        restore_backup(backup.path, database=live, backups_folder=backups_folder)

        # The writer keeps going on the restored database.
        wait_until(lambda: writer_rows(live) >= 20)
    finally:
        stop.touch()
        out, _ = writer.communicate(timeout=60)
    report = json.loads(out)
    assert writer.returncode == 0
    assert report["errors"] == []
    assert report["seen"] == 0  # the writer's own connection sees the restored data
    assert report["integrity"] == "ok"
    assert "after the backup" not in names(live)
    assert count_rows(live) == 100 + writer_rows(live)


def writer_rows(path):
    conn = sqlite3.connect(path, timeout=30)
    try:
        return conn.execute("SELECT count(*) FROM item WHERE name = 'writer'").fetchone()[0]
    finally:
        conn.close()


def test_it_restores_a_database_with_a_rollback_journal(live, backups_folder):
    """Django's default journal: the safety backup still reads the database under the lock."""
    conn = sqlite3.connect(live, isolation_level=None)
    conn.execute("PRAGMA journal_mode = DELETE")
    conn.close()
    backup = create_backup(live, folder=backups_folder)
    expected = names(live)
    change_data(live)
    changed = names(live)

    result = restore_backup(backup.path, database=live, backups_folder=backups_folder)

    assert names(live) == expected
    assert names(result.safety_backup.path) == changed
    conn = sqlite3.connect(live)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    conn.close()
