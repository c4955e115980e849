"""A PostgreSQL site end to end on a real server: the commands, jobs and checks a site runs,
through manage.py in real processes (settings: tests/pg_settings.py)."""

import json
import subprocess

import pytest

pytestmark = pytest.mark.postgres


def one_line_error(result):
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    [line] = result.stderr.strip().splitlines()
    return line


def add_items(site, rows, label="row"):
    site.query("CREATE TABLE IF NOT EXISTS item (id serial PRIMARY KEY, name text)")
    site.query(
        "INSERT INTO item (name) SELECT %s || ' ' || g FROM generate_series(1, %s) g",
        (label, rows),
    )


def backups_in(site):
    return sorted(p.name for p in site.backups.iterdir() if p.name.endswith(".dump"))


def test_it_backs_up_into_the_backups_folder_with_its_sidecars(pg_site):
    add_items(pg_site, 25)

    result = pg_site.manage("runjob", "daily-backup", env={"STANZA_LOG_FORMAT": "json"})

    assert result.returncode == 0, result.stderr
    assert pg_site.cluster.passwords["stanza_site"] not in result.stdout + result.stderr
    [name] = backups_in(pg_site)
    assert name.startswith(f"{pg_site.name}.") and name.endswith("Z.dump")
    check = subprocess.run(
        ["sha256sum", "-c", f"{name}.sha256"], cwd=pg_site.backups, capture_output=True
    )
    assert check.returncode == 0
    manifest = json.loads((pg_site.backups / f"{name}.json").read_text())
    assert manifest["tables"]["item"] == 25
    assert manifest["check"]["kind"] == "quick"
    runs = pg_site.query("SELECT status, result FROM cron_runs WHERE job_name = 'daily-backup'")
    assert runs[0][0] == "success" and name in runs[0][1]


def test_backup_full_check_and_output(pg_site, tmp_path):
    add_items(pg_site, 5)
    out = tmp_path / "by-hand.dump"

    result = pg_site.manage("backup", "--full-check", "--output", str(out))

    assert result.returncode == 0, result.stderr
    assert str(out) in result.stdout
    assert json.loads(out.with_name("by-hand.dump.json").read_text())["check"]["kind"] == "full"
    assert {d for d in pg_site.cluster.databases() if "__stanza_" in d} == set()


def test_backup_data_dir_is_refused_in_one_line(pg_site, tmp_path):
    result = pg_site.manage("backup", "--data-dir", str(tmp_path))

    line = one_line_error(result)
    assert "--data-dir backs up an SQLite file" in line and "PostgreSQL" in line
    assert list(tmp_path.iterdir()) == [pg_site.folder]


def test_manage_py_check_passes_and_names_what_a_postgresql_site_may_not_set(pg_site):
    assert pg_site.manage("check").returncode == 0

    replica = pg_site.manage("check", env={"STANZA_REPLICA_URL": "file:///tmp/replica"})
    unset = pg_site.manage("check", env={"STANZA_BACKUPS_DIR": ""})

    assert replica.returncode != 0 and "Traceback" not in replica.stderr
    assert "STANZA_REPLICA_URL must be empty" in replica.stderr
    assert "needs SQLite" not in unset.stderr + replica.stderr
    assert "STANZA_BACKUPS_DIR must be set" in unset.stderr


def test_the_drill_restores_the_newest_backup_into_a_scratch_database(pg_site):
    add_items(pg_site, 40)
    assert pg_site.manage("runjob", "daily-backup").returncode == 0

    result = pg_site.manage("runjob", "verify-latest-backup")

    assert result.returncode == 0, result.stderr
    [(status, line)] = pg_site.query(
        "SELECT status, result FROM cron_runs WHERE job_name = 'verify-latest-backup'"
    )
    assert status == "success" and "restored" in line
    assert {d for d in pg_site.cluster.databases() if "__stanza_" in d} == set()
    healthy = pg_site.manage("checkbackups")
    assert healthy.returncode == 0, healthy.stdout + healthy.stderr


def test_it_restores_a_backup_keeping_a_safety_backup_and_the_run_history(pg_site):
    add_items(pg_site, 10, "before")
    assert pg_site.manage("runjob", "daily-backup").returncode == 0
    [backup] = backups_in(pg_site)
    add_items(pg_site, 7, "after")

    result = pg_site.manage("restore", backup, "--yes")

    assert result.returncode == 0, result.stderr
    assert pg_site.query("SELECT count(*) FROM item") == [(10,)]
    [safety] = [name for name in backups_in(pg_site) if ".pre-restore." in name]
    assert f"Safety backup of the previous database: {pg_site.backups / safety}" in result.stdout
    manifest = json.loads((pg_site.backups / f"{safety}.json").read_text())
    assert manifest["tables"]["item"] == 17
    secret = pg_site.cluster.passwords["stanza_site"]
    assert secret not in result.stdout + result.stderr  # the output and the log
    jobs = [job for (job,) in pg_site.query("SELECT job_name FROM cron_runs ORDER BY id")]
    assert jobs == ["daily-backup", "restore"]  # the backup's run carried, the restore's added
    assert {d for d in pg_site.cluster.databases() if "__stanza_" in d} == set()


def test_migrate_backs_up_a_migrated_database_first(pg_site):
    applied = pg_site.query(
        "SELECT name FROM django_migrations WHERE app = 'backups_app' ORDER BY name"
    )
    previous = applied[-2][0]

    back = pg_site.manage("migrate", "backups_app", previous)
    forward = pg_site.manage("migrate")

    assert back.returncode == 0 and forward.returncode == 0, back.stderr + forward.stderr
    # Oldest first by time: two backups in one second are T...Z and T...Z-2, and "-" sorts first.
    dumps = [p for p in pg_site.backups.iterdir() if p.name.endswith(".dump")]
    made = [p.name for p in sorted(dumps, key=lambda p: p.stat().st_mtime_ns)]
    assert len(made) == 2 and all(".pre-migrate.dump" in name for name in made)
    assert f"Backed up the database before migrating: {pg_site.backups / made[0]}" in back.stdout
