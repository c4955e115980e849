"""PostgreSQL's side of the database seam on a real server: pg_dump and its quick check, the
full check in a scratch database (dropped whatever happens), and where the password goes."""

import os
import subprocess
import threading
from pathlib import Path

import pytest

from backups_app.db import facts, postgres, postgres_contents
from tests.conftest import free_port

pytestmark = pytest.mark.postgres


@pytest.fixture
def pg_live(pg_site, monkeypatch, settings):
    """The app's DATABASES["default"] in this process is `pg_site`'s database."""
    monkeypatch.setitem(settings.DATABASES, "default", pg_site.cluster.settings(pg_site.name))
    return pg_site


def add_items(site, rows=50):
    with site.connect(autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS item (id serial PRIMARY KEY, name text)")
        conn.execute(
            "INSERT INTO item (name) SELECT 'item ' || g FROM generate_series(1, %s) g", (rows,)
        )


def make_dump(folder):
    folder = Path(folder) / "out"
    folder.mkdir(exist_ok=True)
    dest = folder / "out.dump"
    tables = postgres.copy_live(dest)
    return dest, tables


def test_it_dumps_with_the_row_counts_of_the_dump_itself(pg_live, tmp_path):
    add_items(pg_live, 50)

    dest, tables = make_dump(tmp_path)
    problems, counts = postgres.check_file(dest, "quick")

    assert problems == []
    assert {"item", "django_migrations", "cron_runs"} <= tables
    assert counts["item"] == 50 and counts["django_migrations"] > 10
    assert postgres_contents.list_contents(dest).dbname == pg_live.name
    assert postgres.is_backup_header(dest.read_bytes()[:100])
    assert os.listdir(dest.parent) == ["out.dump"]  # no passfile left behind
    assert postgres.base_name() == pg_live.name


def test_the_full_check_restores_into_a_scratch_database_and_drops_it(pg_live, tmp_path):
    add_items(pg_live, 20)
    dest, _tables = make_dump(tmp_path)
    postgres.check_file(dest, "quick")
    before = pg_live.cluster.databases()

    problems, counts = postgres.check_file(dest, "full")
    read = postgres.read_file(dest)

    assert problems == [] and counts["item"] == 20
    assert read.counts == counts
    assert read.columns["item"] == ("id", "name")
    assert ("backups_app", "0001_initial") in read.migrations
    assert pg_live.cluster.databases() == before


def test_it_reads_what_a_dump_holds_without_restoring_it(pg_live, monkeypatch, settings, tmp_path):
    add_items(pg_live, 20)
    pg_live.query(
        'CREATE TABLE "Odd ""Name""" ("Mixed Case" int, plain text, CHECK (plain <> \'\'))'
    )
    pg_live.query("CREATE SCHEMA shop")
    pg_live.query("CREATE TABLE shop.invoice (id serial PRIMARY KEY, total int)")
    dest, _tables = make_dump(tmp_path)
    full = postgres.read_file(dest)
    # No server is needed: the database settings now point where nobody listens.
    nowhere = {**pg_live.cluster.settings(pg_live.name), "PORT": str(free_port())}
    monkeypatch.setitem(settings.DATABASES, "default", nowhere)

    read = postgres.read_contents(dest)

    assert read.columns == full.columns
    assert read.columns['Odd "Name"'] == ("Mixed Case", "plain")
    assert read.columns["shop.invoice"] == ("id", "total")
    assert read.migrations == full.migrations
    assert ("backups_app", "0001_initial") in read.migrations
    assert read.counts == {} and read.details == {"full_check": False}


def test_a_file_that_is_no_dump_is_a_bad_file_in_words(pg_live, tmp_path):
    bogus = tmp_path / "shop.20261127T020000Z.dump"
    bogus.write_bytes(b"PGDMP not really a dump at all" * 10)

    with pytest.raises(facts.BadFile, match=r"\Ais not a readable PostgreSQL dump"):
        postgres.read_file(bogus)
    problems, _counts = postgres.check_file(bogus, "quick")
    assert problems and "readable PostgreSQL dump" in problems[0]


def test_without_createdb_the_full_check_fails_with_one_line_saying_so(
    pg_site, monkeypatch, settings, tmp_path
):
    from tests.pgcluster import PLAIN_ROLE

    with pg_site.cluster.admin(pg_site.name) as conn:
        conn.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {PLAIN_ROLE}")
        conn.execute(f"GRANT SELECT ON ALL SEQUENCES IN SCHEMA public TO {PLAIN_ROLE}")
    settings_dict = pg_site.cluster.settings(pg_site.name, role=PLAIN_ROLE)
    monkeypatch.setitem(settings.DATABASES, "default", settings_dict)
    dest, _tables = make_dump(tmp_path)

    problems, _counts = postgres.check_file(dest, "full")

    [line] = problems
    assert "\n" not in line
    assert f"the database user {PLAIN_ROLE} may not create databases: it needs CREATEDB" in line


def test_scratch_databases_a_killed_process_left_are_dropped_by_the_next_full_check(
    pg_live, tmp_path, caplog
):
    dest, _tables = make_dump(tmp_path)
    gone_pid = _a_dead_pid()
    leftover = f"{pg_live.name}__stanza_check_{gone_pid}_0123abcd"
    alive = f"{pg_live.name}__stanza_check_{os.getpid()}_0123abcd"
    old = f"{pg_live.name}__stanza_old_{gone_pid}_0123abcd"
    for name in (leftover, alive, old):
        pg_live.cluster.create_database(name)

    problems, _counts = postgres.check_file(dest, "full")

    assert problems == []
    databases = pg_live.cluster.databases()
    assert leftover not in databases
    assert alive in databases  # a process still running owns it
    assert old in databases  # the only copy of a swapped-out database: never dropped here
    assert f"database {old} holds the data a restore replaced" in caplog.text


def _a_dead_pid():
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def test_the_password_is_never_on_a_command_line_nor_in_a_child_environment(pg_live, tmp_path):
    add_items(pg_live, 300_000)
    password = pg_live.cluster.passwords["stanza_site"]
    seen, done = [], threading.Event()

    def watch():
        while not done.is_set():
            for pid in os.listdir("/proc"):
                if not pid.isdigit():
                    continue
                try:
                    args = Path(f"/proc/{pid}/cmdline").read_bytes()
                    environ = Path(f"/proc/{pid}/environ").read_bytes()
                except OSError:
                    continue
                if args.startswith(b"/usr/bin/pg_dump") or b"pg_dump\0" in args:
                    seen.append((args, environ))

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        make_dump(tmp_path)
    finally:
        done.set()
        watcher.join()
    ps = subprocess.run(["ps", "-eww", "-o", "args"], capture_output=True, text=True).stdout

    assert seen, "pg_dump was never seen running"
    for args, environ in seen:
        assert password.encode() not in args
        assert password.encode() not in environ
        assert b"PGPASSFILE=" in environ
    assert password not in ps


def test_the_counts_are_the_dumps_own_while_a_writer_commits(pg_live, tmp_path):
    add_items(pg_live, 200_000)
    stop, writing = threading.Event(), threading.Event()

    def writer():
        with pg_live.connect(autocommit=True) as conn:
            while not stop.is_set():
                conn.execute("INSERT INTO item (name) VALUES ('during')")
                writing.set()

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        assert writing.wait(30)
        dest, _tables = make_dump(tmp_path)
    finally:
        stop.set()
        thread.join()
    counted = postgres._counted[str(dest)].result()

    problems, restored = postgres.check_file(dest, "full")

    assert problems == []
    assert restored["item"] == counted["item"] > 200_000
