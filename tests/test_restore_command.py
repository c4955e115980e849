import os
import pty
import select
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from backups_app.engine.backups import create_backup
from tests.conftest import MANAGE, REPO_DIR, copy_database, corrupt_middle, file_state, manage

pytestmark = pytest.mark.slow


@pytest.fixture
def project(tmp_path, migrated_database):
    """A data folder holding a migrated database and one backup of it; returns (dir, backup)."""
    data = tmp_path / "project"
    (data / "backups").mkdir(parents=True)
    copy_database(migrated_database, data / "database.sqlite")
    backup = create_backup(data / "database.sqlite", folder=data / "backups")
    add_group(data, "made after the backup")
    return data, backup


def add_group(data, name):
    conn = sqlite3.connect(data / "database.sqlite", isolation_level=None)
    conn.execute("INSERT INTO auth_group (name) VALUES (?)", (name,))
    conn.close()


def groups(data):
    conn = sqlite3.connect(data / "database.sqlite")
    try:
        return [name for (name,) in conn.execute("SELECT name FROM auth_group")]
    finally:
        conn.close()


def history(data):
    conn = sqlite3.connect(data / "database.sqlite")
    try:
        return conn.execute("SELECT job_name, status FROM cron_runs").fetchall()
    finally:
        conn.close()


def env_for(data):
    return {"STANZA_DATA_DIR": str(data), "DJANGO_SECRET_KEY": "test"}


def error_lines(result):
    """What the user is told (system check warnings aside)."""
    return [line for line in result.stderr.splitlines() if line.startswith("CommandError")]


def pre_restore_backups(data):
    return sorted((data / "backups").glob("*.pre-restore.bak"))


def test_it_restores_a_backup_named_in_the_backups_folder(project):
    data, backup = project

    result = manage("restore", backup.name, "--yes", env=env_for(data), stdin=subprocess.DEVNULL)

    assert result.returncode == 0, result.stderr
    assert groups(data) == []
    [safety] = pre_restore_backups(data)
    assert f"Restored {backup.name}" in result.stdout
    assert f"Safety backup of the previous database: {safety}" in result.stdout
    assert history(data) == [("restore", "success")]


def test_it_restores_into_the_data_dir_given(project, tmp_path):
    data, backup = project
    configured = tmp_path / "configured"

    result = manage(
        "restore",
        str(backup.path),
        "--data-dir",
        str(data),
        "--yes",
        env=env_for(configured),
        stdin=subprocess.DEVNULL,
    )

    assert result.returncode == 0, result.stderr
    assert groups(data) == []
    assert len(pre_restore_backups(data)) == 1
    assert not (configured / "backups").exists() or not any((configured / "backups").iterdir())


def test_it_refuses_without_a_terminal_and_without_yes(project):
    data, backup = project
    before = file_state(data)

    result = manage("restore", backup.name, env=env_for(data), stdin=subprocess.DEVNULL)

    assert result.returncode == 1
    assert len(error_lines(result)) == 1
    assert "pass --yes" in error_lines(result)[0]
    assert "Traceback" not in result.stderr
    assert file_state(data) == before


@pytest.mark.parametrize(("answer", "restored"), [("y", True), ("n", False)])
def test_it_asks_on_a_terminal(project, answer, restored):
    data, backup = project
    output, returncode = run_on_terminal(
        ["restore", backup.name], answer, env={**os.environ, **env_for(data)}
    )

    assert "[y/N]" in output
    assert backup.name in output
    if restored:
        assert returncode == 0, output
        assert groups(data) == []
        assert len(pre_restore_backups(data)) == 1
    else:
        assert returncode == 1
        assert "cancelled" in output
        assert groups(data) == ["made after the backup"]
        assert pre_restore_backups(data) == []


def test_it_refuses_a_corrupt_backup_in_one_line(project):
    data, backup = project
    backup.path.with_name(backup.name + ".sha256").write_text("0" * 64 + f"  {backup.name}\n")
    before = file_state(data / "backups")

    result = manage("restore", backup.name, "--yes", env=env_for(data), stdin=subprocess.DEVNULL)

    assert result.returncode == 1
    [error] = error_lines(result)
    assert "does not match its .sha256 checksum" in error
    assert "Traceback" not in result.stderr
    assert groups(data) == ["made after the backup"]
    assert file_state(data / "backups") == before


def test_it_refuses_a_damaged_file(project):
    data, backup = project
    backup.path.with_name(backup.name + ".sha256").unlink()
    corrupt_middle(backup.path, length=backup.size // 4)

    result = manage("restore", backup.name, "--yes", env=env_for(data), stdin=subprocess.DEVNULL)

    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert groups(data) == ["made after the backup"]
    assert pre_restore_backups(data) == []


def test_it_refuses_a_missing_file(project):
    data, _backup = project

    result = manage("restore", "database.sqlite.20200101T000000Z.bak", "--yes", env=env_for(data))

    assert result.returncode == 1
    assert "does not exist" in result.stderr


def run_on_terminal(args, answer, env):
    """Run manage.py ARGS with a pseudo-terminal as stdin/stdout; type `answer` at the prompt."""
    leader, follower = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, str(MANAGE), *args],
        stdin=follower,
        stdout=follower,
        stderr=follower,
        cwd=REPO_DIR,
        env=env,
    )
    os.close(follower)
    output = b""
    answered = False
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ready, _, _ = select.select([leader], [], [], 0.1)
        if ready:
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # the process closed the terminal
                break
            if not chunk:
                break
            output += chunk
        if not answered and b"[y/N]" in output:
            os.write(leader, answer.encode() + b"\n")
            answered = True
        if process.poll() is not None and not ready:
            break
    os.close(leader)
    process.wait(timeout=60)
    return output.decode(errors="replace"), process.returncode


def test_it_refuses_a_hollow_backup_in_one_line_and_changes_nothing(project, tmp_path):
    data, backup = project
    hollow = tmp_path / "hollow.bak"
    conn = sqlite3.connect(hollow, isolation_level=None)
    conn.execute("ATTACH DATABASE ? AS src", (str(backup.path),))
    conn.execute("CREATE TABLE django_migrations AS SELECT * FROM src.django_migrations")
    conn.close()
    before = file_state(data / "backups")

    result = manage("restore", str(hollow), "--yes", env=env_for(data), stdin=subprocess.DEVNULL)

    assert result.returncode == 1
    [line] = error_lines(result)
    assert "is not a complete backup: its own migrations say it must have tables" in line
    assert "Traceback" not in result.stderr
    assert file_state(data / "backups") == before  # not even a safety backup
    assert groups(data) == ["made after the backup"]


def test_it_keeps_the_run_history_and_records_the_restore_on_top(project):
    data, backup = project
    conn = sqlite3.connect(data / "database.sqlite", isolation_level=None)
    conn.execute(
        "INSERT INTO cron_runs (job_name, started_at, status, result, error, trigger, hostname, "
        "process_start) VALUES ('daily-backup', '2026-11-27 02:00:00', 'success', '', '', '', "
        "'h', '')"
    )
    conn.close()

    result = manage("restore", backup.name, "--yes", env=env_for(data), stdin=subprocess.DEVNULL)

    assert result.returncode == 0, result.stderr
    assert "Kept from the database as it was: run history (1 rows)" in result.stdout
    assert history(data) == [("daily-backup", "success"), ("restore", "success")]


def add_filler(data):
    """Make the database big enough that its restore takes a moment."""
    conn = sqlite3.connect(data / "database.sqlite", isolation_level=None)
    conn.execute("CREATE TABLE filler (x)")
    conn.execute(
        "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 60000) "
        "INSERT INTO filler SELECT randomblob(500) FROM c"
    )
    conn.execute("CREATE INDEX filler_x ON filler (x)")
    conn.close()


def start_restore(data, name):
    return subprocess.Popen(
        [sys.executable, str(MANAGE), "restore", name, "--yes"],
        env={**os.environ, **env_for(data)},
        cwd=REPO_DIR,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for_the_copy(data, child):
    """Until the safety backup's copy has begun: it is made under the write lock, and the
    restore's copy goes on alongside its checks."""
    deadline = time.monotonic() + 120
    while not list((data / "backups").glob(".stanza-tmp-*")) and child.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.005)
    assert child.poll() is None, "the restore finished before it could be stopped"


def test_a_restore_killed_during_its_copy_leaves_the_database_as_it_was(project):
    data, _ = project
    add_filler(data)
    backup = create_backup(data / "database.sqlite", folder=data / "backups")
    add_group(data, "made after the big backup")
    child = start_restore(data, backup.name)
    try:
        wait_for_the_copy(data, child)
        child.kill()
    finally:
        child.communicate()

    assert "made after the big backup" in groups(data)
    conn = sqlite3.connect(data / "database.sqlite", isolation_level=None, timeout=5)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.execute("INSERT INTO auth_group (name) VALUES ('writable again')")  # no lock held
    conn.close()
    for safety in pre_restore_backups(data):  # one named before the kill is whole
        assert Path(f"{safety}.sha256").exists() and Path(f"{safety}.json").exists()
        conn = sqlite3.connect(f"file:{safety}?mode=ro", uri=True)
        assert ("made after the big backup",) in conn.execute("SELECT name FROM auth_group")
        conn.close()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_restore_stopped_by_a_signal_says_so_in_one_line_and_leaves_nothing(project, signum):
    data, _ = project
    add_filler(data)
    backup = create_backup(data / "database.sqlite", folder=data / "backups", compress=True)
    add_group(data, "made after the big backup")
    child = start_restore(data, backup.name)
    try:
        wait_for_the_copy(data, child)
        child.send_signal(signum)
    finally:
        _out, err = child.communicate()

    assert child.returncode == 1
    assert [line for line in err.splitlines() if line.startswith("CommandError")] == [
        "CommandError: interrupted; the database was not changed"
    ]
    assert "Traceback" not in err
    assert "made after the big backup" in groups(data)
    assert not [p.name for p in data.iterdir() if p.name.startswith(".stanza-tmp-")]


def test_a_safety_backup_that_fails_after_its_copy_stops_the_restore_before_it_commits(
    project, mount_point
):
    # The safety backup's copy fits the backups folder; the site files it records next do not.
    # Its checks and files go on alongside the restore's copy: the restore must not commit.
    data, backup = project
    folder = mount_point("size=4m")
    shutil.copy(backup.path, folder / backup.name)
    media = data / "media"
    media.mkdir()
    (media / "big.bin").write_bytes(os.urandom(8 * 1024 * 1024))

    result = manage(
        "restore",
        str(folder / backup.name),
        "--yes",
        env={**env_for(data), "STANZA_BACKUPS_DIR": str(folder)},
        stdin=subprocess.DEVNULL,
    )

    assert result.returncode == 1
    [line] = error_lines(result)
    assert "the safety backup of the current database failed, so nothing was restored" in line
    assert "Traceback" not in result.stderr
    assert "made after the backup" in groups(data)
    assert not pre_restore_backups(data)
    assert not list(folder.glob("*.pre-restore.bak"))
    assert not list(folder.glob(".stanza-tmp-*"))
