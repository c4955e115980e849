"""Restores that cannot hurt (issue 8): hollow backups refused, no write lost, the product's
history kept, any page size."""

import sqlite3
import subprocess
import sys

import pytest

from backups_app.engine import backups
from backups_app.engine.backups import create_backup
from backups_app.restore.restore import RestoreError, changes, check_backup_file, restore_backup
from tests.conftest import copy_database, count_rows, file_state, make_database, wait_until


def rows(path, sql, args=()):
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


def execute(path, *statements):
    conn = sqlite3.connect(path, isolation_level=None, timeout=30)
    try:
        for statement in statements:
            if isinstance(statement, tuple):
                conn.execute(*statement)
            else:
                conn.execute(statement)
    finally:
        conn.close()


@pytest.fixture
def live(data_dir, migrated_database):
    return copy_database(migrated_database, data_dir / "database.sqlite")


def hollow_copy(source, dest):
    """A sound SQLite file holding only the django_migrations table of `source`."""
    execute(
        dest,
        ("ATTACH DATABASE ? AS src", (f"file:{source}?mode=ro",)),
        "CREATE TABLE django_migrations AS SELECT * FROM src.django_migrations",
    )
    return dest


# --- 8.1: a backup must hold what its own migrations say --------------------------------------


def test_it_refuses_a_backup_without_the_tables_its_migrations_promise(
    live, backups_folder, tmp_path
):
    hollow = hollow_copy(live, tmp_path / "hollow.bak")
    before = file_state(live.parent), file_state(backups_folder)

    with pytest.raises(RestoreError) as refused:
        restore_backup(hollow, database=live, backups_folder=backups_folder)

    assert (file_state(live.parent), file_state(backups_folder)) == before
    message = str(refused.value)
    assert "not a complete backup" in message
    assert "alert_states" in message and "auth_group" in message  # the first few, by name
    assert "more" in message


def test_it_names_a_missing_many_to_many_table(live, tmp_path):
    broken = copy_database(live, tmp_path / "broken.bak", wal=False)
    execute(broken, "DROP TABLE auth_user_groups")

    with pytest.raises(RestoreError, match=r"tables it lacks \(auth_user_groups\)"):
        check_backup_file(broken)


def test_a_complete_backup_of_the_project_passes(live, backups_folder):
    backup = create_backup(live, folder=backups_folder)

    info = check_backup_file(backup.path)

    assert "cron_runs" in info.row_counts
    assert info.pending_migrations == ()


# --- 8.4: any page size ----------------------------------------------------------------------


def test_it_restores_an_8192_byte_page_backup_into_a_4096_byte_page_database_with_data(
    live, backups_folder, tmp_path
):
    execute(live, "INSERT INTO auth_group (name) VALUES ('live only')")
    big_pages = copy_database(live, tmp_path / "big-pages.bak", page_size=8192, wal=False)
    execute(big_pages, "DELETE FROM auth_group", "INSERT INTO auth_group (name) VALUES ('backup')")
    assert rows(big_pages, "PRAGMA page_size") == [(8192,)]
    assert rows(live, "PRAGMA page_size") == [(4096,)]

    restore_backup(big_pages, database=live, backups_folder=backups_folder)

    assert rows(live, "SELECT name FROM auth_group") == [("backup",)]
    assert rows(live, "PRAGMA page_size") == [(4096,)]
    assert rows(live, "PRAGMA journal_mode") == [("wal",)]
    assert rows(live, "PRAGMA integrity_check") == [("ok",)]


# --- 8.5: no committed write is lost ----------------------------------------------------------

WRITER = r"""
import os, sqlite3, sys, time
path, stop = sys.argv[1], sys.argv[2]
conn = sqlite3.connect(path, timeout=60, isolation_level=None)
n = 0
print("ready", flush=True)
while not os.path.exists(stop):
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO item (name, n) VALUES ('writer', ?)", (n,))
        conn.execute("COMMIT")
    except sqlite3.Error as err:
        print("error", err, flush=True)
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        continue
    print("committed", n, flush=True)  # only what the database confirmed
    n += 1
    time.sleep(0.001)
"""


def writer_numbers(path):
    found = rows(path, "SELECT n FROM item WHERE name = 'writer'")
    return {n for (n,) in found}


@pytest.mark.slow
def test_no_write_committed_during_a_restore_is_lost(data_dir, backups_folder, tmp_path):
    live = make_database(data_dir / "database.sqlite", rows=20_000)
    backup = create_backup(live, folder=backups_folder)
    backup_rows = rows(backup.path, "SELECT id, name, n FROM item ORDER BY id")
    stop = tmp_path / "stop"
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(live), str(stop)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert writer.stdout.readline().strip() == "ready"
        wait_until(lambda: len(writer_numbers(live)) >= 50)

        result = restore_backup(backup.path, database=live, backups_folder=backups_folder)

        restored_rows = rows(live, "SELECT id, name, n FROM item WHERE name != 'writer'")
        wait_until(lambda: len(writer_numbers(live)) >= 20)  # it goes on after the restore
    finally:
        stop.touch()
        out, _ = writer.communicate(timeout=120)
    committed = {int(line.split()[1]) for line in out.splitlines() if line.startswith("committed")}
    assert [line for line in out.splitlines() if line.startswith("error")] == []
    in_safety = writer_numbers(result.safety_backup.path)
    after_restore = writer_numbers(live)
    assert committed, "the writer committed nothing"
    assert committed - in_safety - after_restore == set()  # every committed row is somewhere
    assert in_safety & after_restore == set()  # and in one place: the safety copy, or after
    assert restored_rows == [r for r in backup_rows if r[1] != "writer"]  # exactly the backup


# --- 8.6: the product's own history is kept ------------------------------------------------


def audit_entry(path, message, username="admin"):
    execute(
        path,
        (
            "INSERT INTO django_admin_log (action_time, object_id, object_repr, action_flag, "
            "change_message, content_type_id, user_id) SELECT '2026-11-27 10:00:00', NULL, "
            "'x', 1, ?, ct.id, u.id FROM django_content_type ct, auth_user u "
            "WHERE ct.app_label = 'backups_app' AND ct.model = 'cronrun' AND u.username = ?",
            (message, username),
        ),
    )


def add_user(path, username):
    execute(
        path,
        (
            "INSERT INTO auth_user (password, is_superuser, username, first_name, last_name, "
            "email, is_staff, is_active, date_joined) "
            "VALUES ('!', 1, ?, '', '', '', 1, 1, '2026-11-27 09:00:00')",
            (username,),
        ),
    )


def add_run(path, job, status, started="2026-11-27 02:00:00"):
    execute(
        path,
        (
            "INSERT INTO cron_runs (job_name, started_at, status, result, error, trigger, "
            "hostname, process_start) VALUES (?, ?, ?, '', '', 'scheduler', 'h', '')",
            (job, started, status),
        ),
    )


def test_a_restore_keeps_the_run_history_alerts_job_store_and_audit(live, backups_folder, tmp_path):
    add_user(live, "admin")
    add_run(live, "daily-backup", "running")  # caught in the backup while it ran
    audit_entry(live, "before the backup")
    execute(live, "INSERT INTO auth_group (name) VALUES ('site data at backup time')")
    backup = create_backup(live, folder=backups_folder)
    execute(
        live,
        "UPDATE cron_runs SET status = 'success'",
        "INSERT INTO auth_group (name) VALUES ('site data after the backup')",
        "INSERT INTO alert_states (job_name, state, changed_at, notified_state) "
        "VALUES ('daily-backup', 'failing', '2026-11-27 03:00:00', 'failing')",
        "INSERT INTO django_apscheduler_djangojob (id, next_run_time, job_state) "
        "VALUES ('daily-backup', '2026-11-28 02:00:00', x'00')",
    )
    add_run(live, "purge-old-backups", "success", "2026-11-27 02:30:00")
    execute(
        live,
        "INSERT INTO drill_runs (backup_name, backup_size, finished_at, ok, problems) "
        f"VALUES ('{backup.name}', 1, '2026-11-27 03:00:00', 1, '')",
    )
    audit_entry(live, "after the backup")
    preview = changes(check_backup_file(backup.path), live)

    result = restore_backup(backup.path, database=live, backups_folder=backups_folder)

    assert rows(live, "SELECT name FROM auth_group") == [("site data at backup time",)]
    assert rows(live, "SELECT job_name, status FROM cron_runs ORDER BY id") == [
        ("daily-backup", "success"),
        ("purge-old-backups", "success"),
    ]
    assert rows(live, "SELECT job_name, state FROM alert_states") == [("daily-backup", "failing")]
    assert rows(live, "SELECT id FROM django_apscheduler_djangojob") == [("daily-backup",)]
    assert rows(live, "SELECT backup_name, ok FROM drill_runs") == [(backup.name, 1)]
    assert rows(
        live,
        "SELECT change_message, u.username FROM django_admin_log l "
        "JOIN auth_user u ON u.id = l.user_id ORDER BY l.id",
    ) == [("before the backup", "admin"), ("after the backup", "admin")]
    assert result.kept == {
        "run history": 2,
        "alert state": 1,
        "restore drill history": 1,
        "scheduler job store": 1,
        "scheduler executions": 0,
        "audit of dashboard actions": 2,
    }
    assert preview.kept == result.kept
    assert rows(live, "PRAGMA foreign_key_check") == []
    assert rows(live, "PRAGMA integrity_check") == [("ok",)]
    # New ids never reuse ones the live history already handed out.
    add_run(live, "verify-latest-backup", "success")
    assert rows(live, "SELECT max(id) FROM cron_runs") == [(3,)]


def test_a_running_run_that_came_with_the_backup_is_closed_as_interrupted(
    live, backups_folder, data_dir
):
    add_run(live, "daily-backup", "running")
    backup = create_backup(live, folder=backups_folder)
    target = data_dir / "fresh" / "database.sqlite"
    target.parent.mkdir()

    restore_backup(backup.path, database=target, backups_folder=backups_folder)

    [(status, error, finished)] = rows(target, "SELECT status, error, finished_at FROM cron_runs")
    assert status == "failure"
    assert error.startswith("interrupted")
    assert finished is not None


def test_the_preview_names_tables_that_would_disappear_or_appear(live, tmp_path):
    other = copy_database(live, tmp_path / "other.bak", wal=False)
    execute(other, "CREATE TABLE shop_order (id INTEGER PRIMARY KEY)")
    execute(live, "CREATE TABLE blog_post (id INTEGER PRIMARY KEY)")

    preview = changes(check_backup_file(other), live)

    assert preview.disappear == ("blog_post",)
    assert preview.appear == ("shop_order",)
    assert preview.kept["run history"] == 0


def test_a_restore_that_fills_the_disk_changes_nothing_and_keeps_no_lock(
    live, backups_folder, tmp_path, mount_point
):
    disk = mount_point("size=3m")
    small = copy_database(live, disk / "database.sqlite")
    execute(small, "INSERT INTO auth_group (name) VALUES ('still here')")
    big = copy_database(live, tmp_path / "big.bak", wal=False)
    execute(
        big,
        "CREATE TABLE filler (x)",
        "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 5000) "
        "INSERT INTO filler SELECT randomblob(1000) FROM c",
    )

    with pytest.raises(RestoreError, match="nothing was changed"):
        restore_backup(big, database=small, backups_folder=backups_folder)

    assert rows(small, "SELECT name FROM auth_group") == [("still here",)]
    execute(small, "INSERT INTO auth_group (name) VALUES ('writable')")  # no lock left behind
    assert count_rows(small, "auth_group") == 2
    assert rows(small, "PRAGMA integrity_check") == [("ok",)]
    # The restored copy is prepared in a scratch file before the lock: the disk fills there,
    # before any safety backup was needed (issue 18 item 3).
    assert backups.list_backups(backups_folder) == []


def test_the_database_can_be_backed_up_after_restoring_one_without_autoincrement_tables(
    live, backups_folder, tmp_path
):
    plain = make_database(tmp_path / "plain.sqlite", rows=5, wal=False)  # no sqlite_sequence

    restore_backup(plain, database=live, backups_folder=backups_folder)
    after = create_backup(live, folder=backups_folder)

    assert count_rows(after.path) == 5


def test_the_restore_command_and_the_jobs_take_the_same_operation_lock(
    data_dir, settings, monkeypatch
):
    from backups_app.core import operations
    from backups_app.jobs import jobs

    monkeypatch.setattr(jobs, "OPERATION_WAIT", 0)
    with operations.exclusive("restore", by="the restore command"):
        with (
            pytest.raises(operations.OperationRunning, match="a restore is running"),
            operations.exclusive("backup"),
        ):
            pass
        with pytest.raises(operations.OperationRunning, match=r"by the restore command"):
            jobs.daily_backup()
