"""A PostgreSQL restore at the seam, on a real server: the backup is restored into a new
database, the product's records are carried into it, and it is swapped in for the live one;
no committed write is lost, whoever keeps writing."""

import threading
import time

import psycopg
import pytest

from backups_app.db import facts, postgres

pytestmark = pytest.mark.postgres


@pytest.fixture
def pg_live(pg_site, monkeypatch, settings):
    monkeypatch.setitem(settings.DATABASES, "default", pg_site.cluster.settings(pg_site.name))
    with pg_site.connect(autocommit=True) as conn:
        conn.execute("CREATE TABLE item (id serial PRIMARY KEY, name text)")
        conn.execute("INSERT INTO item (name) SELECT 'old ' || g FROM generate_series(1, 10) g")
    return pg_site


KEEP = facts.Keep(tables={"cron_runs": "run history"}, runs_table="cron_runs")


def dump_to(folder, database=None):
    folder.mkdir(exist_ok=True)
    dest = folder / f"{database or 'live'}.dump"
    postgres.copy_live(dest, database=database)
    postgres.check_file(dest, "quick")
    return dest


def add_run(site, job="daily-backup"):
    site.query(
        "INSERT INTO cron_runs (job_name, started_at, status, error, result, trigger, hostname, "
        "pid, process_start) VALUES (%s, now(), 'success', '', '', 'manual', 'h', 1, '')",
        (job,),
    )


def test_it_swaps_in_the_backup_and_keeps_the_product_records(pg_live, tmp_path):
    backup = dump_to(tmp_path / "b")
    pg_live.query("INSERT INTO item (name) SELECT 'new ' || g FROM generate_series(1, 20) g")
    add_run(pg_live)
    safety = {}

    def before(old):
        safety["path"] = dump_to(tmp_path / "s", database=old)
        safety["base"] = postgres.base_name(old)

    kept, notes = postgres.restore_live(backup, keep=KEEP, before=before)

    assert pg_live.query("SELECT count(*) FROM item") == [(10,)]
    assert kept == {"run history": 1} and notes == []
    assert pg_live.query("SELECT job_name FROM cron_runs") == [("daily-backup",)]
    _problems, counts = postgres.check_file(safety["path"], "full")
    assert counts["item"] == 30
    assert safety["base"] == pg_live.name
    assert {d for d in pg_live.cluster.databases() if "__stanza_" in d} == set()
    # The carried run history goes on from where the live one was.
    add_run(pg_live, "purge-old-backups")
    assert len(pg_live.query("SELECT DISTINCT id FROM cron_runs")) == 2


def test_a_backup_the_checks_refuse_changes_nothing(pg_live, tmp_path):
    backup = dump_to(tmp_path / "b")
    pg_live.query("INSERT INTO item (name) VALUES ('after')")

    def refuse(found):
        assert found.counts["item"] == 10
        raise facts.BadFile("is not what we want")

    with pytest.raises(facts.BadFile):
        postgres.restore_live(backup, keep=KEEP, checked=refuse)

    assert pg_live.query("SELECT count(*) FROM item") == [(11,)]
    assert {d for d in pg_live.cluster.databases() if "__stanza_" in d} == set()


def test_no_write_committed_during_the_restore_is_lost(pg_live, tmp_path):
    pg_live.query("INSERT INTO item (name) SELECT 'more ' || g FROM generate_series(1, 50000) g")
    backup = dump_to(tmp_path / "b")
    acknowledged, errors, stop = [], [], threading.Event()

    def writer():
        conn = None
        n = 0
        while not stop.is_set():
            n += 1
            try:
                if conn is None or conn.closed:
                    conn = pg_live.connect(autocommit=True)
                (new,) = conn.execute(
                    "INSERT INTO item (name) VALUES (%s) RETURNING id", (f"w{n}",)
                ).fetchone()
                acknowledged.append(f"w{n}")
            except psycopg.Error as err:
                errors.append(str(err).splitlines()[0])
                conn = None
                time.sleep(0.005)

    in_old = {}

    def before(old):
        with pg_live.cluster.connect(old) as conn:
            in_old["names"] = {r[0] for r in conn.execute("SELECT name FROM item")}

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        time.sleep(0.3)
        postgres.restore_live(backup, keep=KEEP, before=before)
        time.sleep(0.3)
    finally:
        stop.set()
        thread.join()

    live = {r[0] for r in pg_live.query("SELECT name FROM item")}
    lost = [name for name in acknowledged if name not in live and name not in in_old["names"]]
    assert acknowledged and lost == []
    assert any(name in live for name in acknowledged)  # writers reached the restored database
    assert any(name in in_old["names"] for name in acknowledged)


def test_a_swapped_out_database_that_cannot_be_dropped_leaves_the_restore_done(
    pg_live, tmp_path, caplog
):
    backup = dump_to(tmp_path / "b")
    pg_live.query("INSERT INTO item (name) VALUES ('after')")
    held = {}

    def before(old):
        # A session this role may not end (a superuser's) stays on the swapped-out database.
        held["conn"] = pg_live.cluster.admin(old)
        held["old"] = old

    try:
        kept, _notes = postgres.restore_live(backup, keep=KEEP, before=before)
    finally:
        if "conn" in held:
            held["conn"].close()

    assert pg_live.query("SELECT count(*) FROM item") == [(10,)]  # restored, and says so
    assert kept == {"run history": 0}
    assert held["old"] in pg_live.cluster.databases()
    assert f"database {held['old']}, the data this restore replaced" in caplog.text
    pg_live.cluster.drop_database(held["old"])
