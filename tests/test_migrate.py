"""`manage.py migrate` backs up the database first when it is about to change it."""

import re
import resource
import sqlite3

from tests.conftest import count_rows, live_env, manage

BACKED_UP = re.compile(r"^Backed up the database before migrating: (\S+)$", re.MULTILINE)


def applied(path, app="backups_app"):
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = conn.execute("SELECT name FROM django_migrations WHERE app = ?", (app,))
        return sorted(name for (name,) in rows)
    finally:
        conn.close()


def backup_files(folder):
    return sorted(p.name for p in (folder / "backups").iterdir())


def add_run(folder):
    conn = sqlite3.connect(folder / "database.sqlite")
    with conn:
        conn.execute(
            "INSERT INTO cron_runs (job_name, started_at, status, result, error, trigger, "
            "hostname, process_start) VALUES ('daily-backup', '2026-11-26 02:00:00', "
            "'success', 'ok', '', 'scheduler', 'host', '')"
        )
    conn.close()


def test_it_makes_no_backup_of_a_database_that_does_not_exist_yet(tmp_path):
    result = manage("migrate", "--no-input", env=live_env(tmp_path))

    assert result.returncode == 0, result.stderr
    assert "Applying backups_app.0001_initial... OK" in result.stdout
    assert "Backed up" not in result.stdout
    assert backup_files(tmp_path) == []


def test_it_makes_no_backup_when_there_is_nothing_to_migrate(live_data):
    result = manage("migrate", "--no-input", env=live_env(live_data))

    assert result.returncode == 0, result.stderr
    assert "No migrations to apply." in result.stdout
    assert "Backed up" not in result.stdout
    assert backup_files(live_data) == []


def test_it_backs_up_before_migrating_backwards_and_forwards(live_data):
    add_run(live_data)
    database = live_data / "database.sqlite"
    latest = applied(database)
    assert len(latest) > 1

    backwards = manage("migrate", "--no-input", "backups_app", "0001", env=live_env(live_data))

    assert backwards.returncode == 0, backwards.stderr
    before_backwards = BACKED_UP.search(backwards.stdout).group(1)
    assert backwards.stdout.index("Backed up") < backwards.stdout.index("Unapplying")
    assert before_backwards.endswith(".pre-migrate.bak")
    assert applied(before_backwards) == latest  # the state before the migration
    assert count_rows(before_backwards, "cron_runs") == 1
    assert applied(database) == ["0001_initial"]

    forwards = manage("migrate", "--no-input", env=live_env(live_data))

    assert forwards.returncode == 0, forwards.stderr
    before_forwards = BACKED_UP.search(forwards.stdout).group(1)
    assert applied(before_forwards) == ["0001_initial"]
    assert applied(database) == latest
    names = [p.rsplit("/", 1)[1] for p in (before_backwards, before_forwards)]
    assert backup_files(live_data) == sorted(
        [*names, *(n + suffix for n in names for suffix in (".json", ".media", ".sha256"))]
    )


def test_it_makes_no_backup_when_it_only_shows_or_checks_the_plan(live_data):
    manage("migrate", "--no-input", "backups_app", "0001", env=live_env(live_data), check=True)
    before = backup_files(live_data)

    plan = manage("migrate", "--plan", env=live_env(live_data))
    check = manage("migrate", "--check", env=live_env(live_data))

    assert plan.returncode == 0
    assert "backups_app.0004_cronrun_process_start_due_at" in plan.stdout
    assert check.returncode == 1
    assert backup_files(live_data) == before
    assert applied(live_data / "database.sqlite") == ["0001_initial"]


def limit_file_size():
    # The database (~200 KB) stays readable; a backup of it cannot be written: a full disk.
    resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))


def test_a_failing_backup_stops_the_migration(live_data):
    before = applied(live_data / "database.sqlite")
    result = manage(
        "migrate",
        "--no-input",
        "backups_app",
        "0001",
        env=live_env(live_data),
        preexec_fn=limit_file_size,
    )

    assert result.returncode == 1
    error = result.stderr.splitlines()[-1]
    assert error.startswith(
        "CommandError: the pre-migrate backup failed, so nothing was migrated: "
    )
    assert f"{live_data / 'backups'}" in error
    assert "disk full" in error
    assert "Traceback" not in result.stderr
    assert "Unapplying" not in result.stdout
    assert applied(live_data / "database.sqlite") == before
    assert backup_files(live_data) == []
