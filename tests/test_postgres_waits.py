"""A PostgreSQL job never waits forever: on a lock another session holds (a migration's ACCESS
EXCLUSIVE), on a server that accepts and never answers, on a server that stops answering
mid-dump, on a local file that never ends. Each fails in one line of words, changing nothing.

Each wait is run on a thread with a guard far above the bound under test: without the bound,
the test fails instead of hanging the suite."""

import os
import signal
import socket
import subprocess
import threading

import pytest

from backups_app.db import (
    postgres,
    postgres_client,
    postgres_contents,
    postgres_dump,
    postgres_scratch,
)
from backups_app.db.facts import Keep
from tests.pgcluster import wait_for_connections

pytestmark = pytest.mark.postgres

GUARD = 60  # seconds: only reached when a wait is unbounded


@pytest.fixture
def pg_live(pg_site, monkeypatch, settings):
    monkeypatch.setitem(settings.DATABASES, "default", pg_site.cluster.settings(pg_site.name))
    pg_site.query("CREATE TABLE item (id serial PRIMARY KEY, name text)")
    pg_site.query("INSERT INTO item (name) SELECT 'item ' || g FROM generate_series(1, 100) g")
    return pg_site


def bounded(call):
    """Run `call()` on a thread; return the exception it raised (None if it returned)."""
    outcome = {}

    def run():
        try:
            call()
        except BaseException as err:  # noqa: BLE001 -- the test looks at it
            outcome["error"] = err

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(GUARD)
    assert not thread.is_alive(), f"still waiting after {GUARD} s"
    return outcome.get("error")


def holding_lock(site, table):
    """A session that holds ACCESS EXCLUSIVE on `table`, as a migration altering it does."""
    conn = site.connect()
    conn.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
    return conn


def test_a_dump_waiting_for_a_lock_a_migration_holds_fails_saying_so(
    pg_live, monkeypatch, tmp_path
):
    monkeypatch.setattr(postgres_client, "LOCK_WAIT", 1)
    dest = tmp_path / "out.dump"
    migration = holding_lock(pg_live, "item")
    try:
        error = bounded(lambda: postgres.copy_live(dest))
    finally:
        migration.close()

    assert isinstance(error, postgres_client.PostgresError)
    line = str(error)
    assert "\n" not in line
    assert "waited 1 s for a lock on table public.item held by another session" in line
    assert "LOCK TABLE" not in line and "ERROR" not in line


def test_a_restore_waiting_for_a_lock_on_the_product_records_fails_and_changes_nothing(
    pg_live, monkeypatch, tmp_path
):
    dest = tmp_path / "out.dump"
    postgres.copy_live(dest)
    postgres.check_file(dest, "quick")
    pg_live.query("DELETE FROM item WHERE id > 10")
    monkeypatch.setattr(postgres_client, "LOCK_WAIT", 1)
    keep = Keep(tables={"cron_runs": "run history"}, runs_table="cron_runs")
    migration = holding_lock(pg_live, "cron_runs")
    try:
        error = bounded(lambda: postgres.restore_live(dest, keep=keep))
    finally:
        migration.close()

    assert isinstance(error, postgres_client.PostgresError)
    assert str(error).startswith("waited 1 s for a lock held by another session")
    assert pg_live.query("SELECT count(*) FROM item") == [(10,)]
    assert {d for d in pg_live.cluster.databases() if "__stanza_" in d} == set()


def test_the_confirmation_page_does_not_wait_for_a_lock(pg_live, monkeypatch):
    monkeypatch.setattr(postgres, "PAGE_LOCK_WAIT", 1)
    keep = Keep(tables={"cron_runs": "run history"}, runs_table="cron_runs")
    assert postgres.kept_now(keep) is not None
    migration = holding_lock(pg_live, "cron_runs")
    try:
        found = {}
        error = bounded(lambda: found.setdefault("now", postgres.kept_now(keep)))
    finally:
        migration.close()

    assert error is None and found["now"] is None


@pytest.fixture
def silent_server():
    """A TCP port that accepts connections and never answers (an overloaded or broken server)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    accepted, stop = [], threading.Event()

    def accept():
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    stop.set()
    thread.join()
    for conn in accepted:
        conn.close()
    listener.close()


def test_a_server_that_accepts_and_never_answers_is_given_up(
    pg_live, silent_server, monkeypatch, settings, tmp_path
):
    dest = tmp_path / "out.dump"
    postgres.copy_live(dest)
    postgres.check_file(dest, "quick")
    monkeypatch.setattr(postgres_client, "CONNECT_TIMEOUT", 2)
    silent = {**pg_live.cluster.settings(pg_live.name), "PORT": str(silent_server)}
    monkeypatch.setitem(settings.DATABASES, "default", silent)
    server = postgres_client.live_server()
    from backups_app.db.postgres_scratch import restore_into

    problem = {}
    ours = bounded(lambda: problem.setdefault("line", postgres.source_problem()))
    child = bounded(lambda: restore_into(server, dest, pg_live.name, tmp_path))

    assert ours is None and "timeout expired" in problem["line"]
    assert isinstance(child, postgres_client.PostgresError)  # pg_restore: PGCONNECT_TIMEOUT
    assert "timeout expired" in str(child) and "\n" not in str(child)


def while_stopping(stopper, stopped, call):
    """Run `call` bounded while `stopper` SIGSTOPs server processes (into `stopped`) on a
    thread; resume them after. Returns what bounded() returns."""
    watcher = threading.Thread(target=stopper, daemon=True)
    watcher.start()
    try:
        return bounded(call)
    finally:
        watcher.join(GUARD)
        for pid in stopped:
            os.kill(pid, signal.SIGCONT)


def copying_items(conn, dbname):
    """The pid of the server process copying table `item`'s rows in `dbname`, if one is."""
    row = conn.execute(
        "SELECT pid FROM pg_stat_activity WHERE datname = %s AND query LIKE 'COPY public.item%%'",
        (dbname,),
    ).fetchone()
    return row and row[0]


def test_a_server_that_stops_answering_mid_dump_is_given_up(pg_live, monkeypatch, tmp_path):
    pg_live.query(
        "INSERT INTO item (name) SELECT repeat(md5(g::text), 20) FROM generate_series(1, 300000) g"
    )
    monkeypatch.setattr(postgres_dump, "STALL_WAIT", 2)
    dest = tmp_path / "out.dump"
    stopped = []

    def stop_the_server_side():
        """SIGSTOP the server process that sends pg_dump the table's rows, once it does."""
        with pg_live.cluster.admin() as conn:
            while not stopped:
                pid = copying_items(conn, pg_live.name)
                if pid and dest.exists() and dest.stat().st_size > 0:
                    os.kill(pid, signal.SIGSTOP)
                    stopped.append(pid)

    error = while_stopping(stop_the_server_side, stopped, lambda: postgres.copy_live(dest))

    assert stopped, "the dump finished before its server process was stopped"
    assert isinstance(error, postgres_client.PostgresError)
    assert str(error) == (
        "pg_dump failed: it wrote nothing for 2 s (the PostgreSQL server stopped answering); "
        "it was stopped"
    )
    wait_for_connections(pg_live.cluster, pg_live.name, 0)


def test_a_file_that_never_ends_is_given_up(monkeypatch, tmp_path):
    monkeypatch.setattr(postgres_client, "LOCAL_WAIT", 1)
    fifo = tmp_path / "shop.20261127T020000Z.dump"
    os.mkfifo(fifo)  # pg_restore waits for a writer that never comes

    error = bounded(lambda: postgres_contents.list_contents(fifo))

    assert isinstance(error, postgres_client.PostgresError)
    assert str(error) == "is not a readable PostgreSQL dump: reading it took longer than 1 s"


def server_processes(cluster):
    """The postmaster and every process it started."""
    postmaster = int((cluster.data / "postmaster.pid").read_text().split()[0])
    found = subprocess.run(["pgrep", "-P", str(postmaster)], capture_output=True, text=True)
    return [postmaster, *(int(pid) for pid in found.stdout.split())]


def test_a_server_that_stops_answering_mid_restore_is_given_up(pg_live, monkeypatch, tmp_path):
    pg_live.query(
        "INSERT INTO item (name) SELECT repeat(md5(g::text), 20) FROM generate_series(1, 300000) g"
    )
    dest = tmp_path / "out.dump"
    postgres.copy_live(dest)
    monkeypatch.setattr(postgres_client, "CONNECT_TIMEOUT", 2)  # libpq's least
    monkeypatch.setattr(postgres_scratch, "PROBE_EVERY", 0.5)
    monkeypatch.setattr(postgres_scratch, "SILENCE_WAIT", 3)
    target = "waits_restore_target"
    pg_live.cluster.create_database(target)
    server = postgres_client.live_server()
    stopped = []

    def stop_the_whole_server():
        """SIGSTOP the server (every process of it) once pg_restore copies the table's rows."""
        with pg_live.cluster.admin() as conn:
            while not copying_items(conn, target):
                pass
            for pid in server_processes(pg_live.cluster):
                os.kill(pid, signal.SIGSTOP)
                stopped.append(pid)

    error = while_stopping(
        stop_the_whole_server,
        stopped,
        lambda: postgres_scratch.restore_into(server, dest, target, tmp_path),
    )

    assert stopped, "the restore finished before its server was stopped"
    assert isinstance(error, postgres_client.PostgresError)
    assert str(error) == (
        "could not be restored: the PostgreSQL server has not answered for 3 s; it was stopped"
    )
    wait_for_connections(pg_live.cluster, target, 0)
