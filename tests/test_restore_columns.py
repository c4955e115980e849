"""A backup whose tables lack columns its own migrations promise is refused, changing nothing,
by name (issue 18 item 2): an upload, and `restore --yes`."""

import sqlite3
import subprocess

import pytest
from django.contrib.messages import get_messages
from django.core.files.uploadedfile import SimpleUploadedFile

from backups_app.engine.backups import create_backup
from backups_app.restore.restore import RestoreError, check_backup_file
from tests.conftest import copy_database, file_state, manage

UPLOAD_URL = "/admin/backups/upload"
DROPPED = [("auth_user", "password"), ("cron_runs", "status")]


def without_column(source, dest, table, column):
    """A sound copy of `source` whose `table` lacks `column` (its indexes dropped first)."""
    copy_database(source, dest, wal=False)
    conn = sqlite3.connect(dest, isolation_level=None)
    indexes = conn.execute(
        "SELECT DISTINCT il.name FROM pragma_index_list(?) il, pragma_index_info(il.name) ii "
        "WHERE ii.name = ? AND il.origin = 'c'",
        (table, column),
    ).fetchall()
    for (index,) in indexes:
        conn.execute(f'DROP INDEX "{index}"')
    conn.execute(f'ALTER TABLE "{table}" DROP COLUMN "{column}"')
    conn.close()
    return dest


def site_data(path):
    """The live database's schema and the site's rows (the product's own records aside)."""
    conn = sqlite3.connect(path)
    try:
        schema = conn.execute("SELECT type, name, sql FROM sqlite_master ORDER BY name").fetchall()
        users = conn.execute("SELECT * FROM auth_user ORDER BY id").fetchall()
        groups = conn.execute("SELECT * FROM auth_group ORDER BY id").fetchall()
    finally:
        conn.close()
    return schema, users, groups


@pytest.mark.parametrize(("table", "column"), DROPPED)
def test_it_names_the_column_a_backup_lacks(migrated_database, tmp_path, table, column):
    broken = without_column(migrated_database, tmp_path / "broken.bak", table, column)

    with pytest.raises(RestoreError) as refused:
        check_backup_file(broken)

    assert "is not a complete backup" in str(refused.value)
    assert f"({table}.{column})" in str(refused.value)


def test_a_column_the_backups_own_migrations_do_not_promise_is_not_asked_for(
    migrated_database, tmp_path
):
    """An older backup lacks what later migrations add: its own migrations are the measure."""
    older = copy_database(migrated_database, tmp_path / "older.bak", wal=False)
    conn = sqlite3.connect(older, isolation_level=None)
    conn.execute("DROP INDEX IF EXISTS cron_runs_process_idx")  # harmless if absent
    latest = conn.execute(
        "SELECT name FROM django_migrations WHERE app = 'backups_app' ORDER BY name DESC LIMIT 1"
    ).fetchone()[0]
    conn.execute("DELETE FROM django_migrations WHERE app = 'backups_app' AND name = ?", (latest,))
    conn.close()

    info = check_backup_file(older)

    assert ("backups_app", latest) in info.pending_migrations


@pytest.mark.parametrize(("table", "column"), DROPPED)
def test_an_upload_lacking_a_column_is_refused_and_nothing_is_kept(
    staff_client, backups_folder, migrated_database, tmp_path, table, column
):
    broken = without_column(migrated_database, tmp_path / "broken.bak", table, column)

    response = staff_client.post(
        UPLOAD_URL, {"file": SimpleUploadedFile("broken.bak", broken.read_bytes())}, follow=True
    )

    [message] = [str(m) for m in get_messages(response.wsgi_request)]
    assert message.startswith("Upload of broken.bak refused: ")
    assert f"{table}.{column}" in message
    assert list(backups_folder.iterdir()) == []


@pytest.mark.slow
@pytest.mark.parametrize(("table", "column"), DROPPED)
def test_restore_yes_of_a_backup_lacking_a_column_changes_nothing(
    tmp_path, migrated_database, table, column
):
    data = tmp_path / "project"
    (data / "backups").mkdir(parents=True)
    live = copy_database(migrated_database, data / "database.sqlite")
    backup = create_backup(live, folder=data / "backups")
    conn = sqlite3.connect(live, isolation_level=None)
    conn.execute("INSERT INTO auth_group (name) VALUES ('made after the backup')")
    conn.close()
    broken = without_column(backup.path, tmp_path / "broken.bak", table, column)
    before = site_data(live), file_state(data / "backups")

    result = manage(
        "restore",
        str(broken),
        "--yes",
        env={"STANZA_DATA_DIR": str(data), "DJANGO_SECRET_KEY": "test"},
        stdin=subprocess.DEVNULL,
    )

    assert result.returncode == 1
    [line] = [line for line in result.stderr.splitlines() if line.startswith("CommandError")]
    assert f"{table}.{column}" in line and "is not a complete backup" in line
    assert "Traceback" not in result.stderr
    # not even a safety backup (the refused restore is recorded in the run history, that is all)
    assert (site_data(live), file_state(data / "backups")) == before
