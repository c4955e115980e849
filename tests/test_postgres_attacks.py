"""Attacks on a PostgreSQL site: SIGKILL during a backup, a full check and a restore; the
server stopping mid-restore; dumps that are foreign, hollow or from a newer schema. Nothing
half-done is ever visible, the live data is untouched, and scratch databases a killed process
left are dropped by the next full check or restore."""

import os
import signal
import subprocess
import sys

import pytest

from tests.conftest import REPO_DIR, wait_until

pytestmark = pytest.mark.postgres

MANAGE = str(REPO_DIR / "manage.py")


def fill(site, rows):
    site.query("CREATE TABLE IF NOT EXISTS item (id serial PRIMARY KEY, name text, body text)")
    site.query(
        "INSERT INTO item (name, body) SELECT 'item ' || g, repeat(md5(g::text), 8) "
        "FROM generate_series(1, %s) g",
        (rows,),
    )


def start(site, *args):
    """`manage.py ARGS` in its own process group, as a service manager would run it."""
    env = {**os.environ, **site.env()}
    env["PYTHONPATH"] = str(REPO_DIR)
    return subprocess.Popen(
        [sys.executable, MANAGE, *args],
        cwd=REPO_DIR,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def kill_group(process):
    os.killpg(process.pid, signal.SIGKILL)
    process.communicate(timeout=30)


def scratch(site, kind=""):
    return {d for d in site.cluster.databases() if f"__stanza_{kind}" in d}


def listed(site):
    """The backups and their sidecars (not the lock files, nor temporary files)."""
    return sorted(p.name for p in site.backups.iterdir() if ".dump" in p.name)


def make_backup(site):
    result = site.manage("runjob", "daily-backup")
    assert result.returncode == 0, result.stderr
    [name] = [n for n in listed(site) if n.endswith(".dump") and ".pre-restore." not in n][-1:]
    return name


def test_a_backup_killed_mid_dump_leaves_nothing_listed_and_the_next_one_cleans_up(pg_site):
    fill(pg_site, 300_000)
    process = start(pg_site, "runjob", "daily-backup")
    wait_until(lambda: any(p.name.startswith(".stanza-tmp-") for p in pg_site.backups.iterdir()))
    wait_until(
        lambda: any(
            p.stat().st_size > 0 for p in pg_site.backups.iterdir() if p.name.endswith(".partial")
        ),
        timeout=30,
    )

    os.kill(process.pid, signal.SIGKILL)  # the python process only: pg_dump goes on alone
    process.communicate(timeout=30)

    assert listed(pg_site) == []
    wait_until(lambda: subprocess.run(["pgrep", "-x", "pg_dump"]).returncode != 0, timeout=60)
    name = make_backup(pg_site)
    assert [n for n in listed(pg_site) if n.endswith(".dump")] == [name]
    assert {f"{name}.json", f"{name}.sha256"} <= set(listed(pg_site))
    assert not [p for p in pg_site.backups.iterdir() if p.name.startswith(".stanza-tmp-")]


def test_a_full_check_killed_leaves_a_scratch_database_the_next_one_drops(pg_site, tmp_path):
    fill(pg_site, 200_000)
    process = start(pg_site, "backup", "--full-check", "--output", str(tmp_path / "x.dump"))
    wait_until(lambda: scratch(pg_site, "check"), timeout=60)

    kill_group(process)

    left = scratch(pg_site, "check")
    assert left and not (tmp_path / "x.dump").exists()
    result = pg_site.manage("backup", "--full-check", "--output", str(tmp_path / "y.dump"))
    assert result.returncode == 0, result.stderr
    assert scratch(pg_site) == set()


def test_a_restore_killed_changes_nothing_and_its_database_is_dropped_next_time(pg_site):
    fill(pg_site, 200_000)
    name = make_backup(pg_site)
    pg_site.query("DELETE FROM item WHERE id > 1000")
    process = start(pg_site, "restore", name, "--yes")
    wait_until(lambda: scratch(pg_site, "restore"), timeout=60)

    kill_group(process)

    assert pg_site.query("SELECT count(*) FROM item") == [(1000,)]
    assert [n for n in listed(pg_site) if ".pre-restore." in n] == []
    result = pg_site.manage("restore", name, "--yes")
    assert result.returncode == 0, result.stderr
    assert pg_site.query("SELECT count(*) FROM item") == [(200_000,)]
    assert scratch(pg_site) == set()


def test_the_server_stopping_mid_restore_fails_in_one_line_and_changes_nothing(pg_site):
    fill(pg_site, 200_000)
    name = make_backup(pg_site)
    pg_site.query("DELETE FROM item WHERE id > 10")
    process = start(pg_site, "restore", name, "--yes")
    wait_until(lambda: scratch(pg_site, "restore"), timeout=60)

    pg_site.cluster.stop("immediate")
    try:
        _out, stderr = process.communicate(timeout=120)
    finally:
        pg_site.cluster.restart()

    assert process.returncode != 0
    assert "Traceback" not in stderr
    last = stderr.strip().splitlines()[-1]
    # The same sentence whichever moment the stop met (libpq says it several ways).
    assert "failed, nothing was changed" in last
    assert "the PostgreSQL server stopped or closed the connection" in last
    assert "FATAL" not in last and "127.0.0.1" not in last
    assert pg_site.query("SELECT count(*) FROM item") == [(10,)]
    assert pg_site.manage("runjob", "verify-latest-backup").returncode == 0
    assert scratch(pg_site) == set()


def dump_database(site, dbname, dest):
    env = {**os.environ, **site.env()}
    settings = site.cluster.settings(dbname)
    env.update(
        PGPASSWORD=settings["PASSWORD"],
        PGHOST=settings["HOST"],
        PGPORT=settings["PORT"],
        PGUSER="stanza_site",
    )
    subprocess.run(["pg_dump", "-Fc", "-f", str(dest), dbname], env=env, check=True)


def refused(site, dump):
    before = site.query("SELECT count(*) FROM item")
    result = site.manage("restore", str(dump), "--yes")
    line = f"{result.stderr.strip()}"
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert len(line.splitlines()) == 1, line
    assert site.query("SELECT count(*) FROM item") == before
    assert scratch(site) == set()
    assert [n for n in listed(site) if ".pre-restore." in n] == []
    return line


def test_a_dump_of_another_database_is_refused(pg_site, tmp_path):
    fill(pg_site, 5)
    other = pg_site.cluster.create_database(f"{pg_site.name}_other")
    with pg_site.cluster.connect(other, autocommit=True) as conn:
        conn.execute("CREATE TABLE invoice (id serial PRIMARY KEY, total int)")
    dump_database(pg_site, other, tmp_path / "other.dump")

    line = refused(pg_site, tmp_path / "other.dump")

    assert "is not a database of this project (no django_migrations table)" in line


def test_a_hollow_dump_is_refused_naming_the_missing_tables(pg_site, tmp_path):
    fill(pg_site, 5)
    hollow = pg_site.cluster.create_database(f"{pg_site.name}_hollow")
    with pg_site.cluster.connect(hollow, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE django_migrations (id serial, app text, name text, applied timestamptz)"
        )
    with pg_site.connect() as src, pg_site.cluster.connect(hollow) as dst:
        rows = src.execute("SELECT app, name, applied FROM django_migrations").fetchall()
        dst.cursor().executemany(
            "INSERT INTO django_migrations (app, name, applied) VALUES (%s, %s, %s)", rows
        )
        dst.commit()
    dump_database(pg_site, hollow, tmp_path / "hollow.dump")

    line = refused(pg_site, tmp_path / "hollow.dump")

    assert "is not a complete backup: its own migrations say it must have tables it lacks" in line
    assert "alert_states, auth_group" in line


def test_a_dump_of_a_newer_schema_is_refused(pg_site, tmp_path):
    fill(pg_site, 5)
    pg_site.query(
        "INSERT INTO django_migrations (app, name, applied) "
        "VALUES ('backups_app', '9999_from_the_future', now())"
    )
    dump_database(pg_site, pg_site.name, tmp_path / "newer.dump")
    pg_site.query("DELETE FROM django_migrations WHERE name = '9999_from_the_future'")

    line = refused(pg_site, tmp_path / "newer.dump")

    assert "comes from a newer version of this project" in line
    assert "backups_app.9999_from_the_future" in line
