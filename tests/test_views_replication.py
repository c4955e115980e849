"""The Backups page's replication card and "Restore to a point in time"."""

import os
import sqlite3
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest

from backups_app.engine import backups
from backups_app.replication import positions, replication
from tests.conftest import count_rows, wait_until, write_replica_status


@pytest.fixture
def replica_url(settings, tmp_path, live_database, data_dir):
    settings.STANZA_REPLICA_URL = f"file://{tmp_path / 'replica'}"
    settings.STANZA_REPLICA_MAX_LAG = 300
    return settings.STANZA_REPLICA_URL


def write_status(database, *, lag=1, span=None, **extra):
    """A running `replicate`'s status, with a replica holding files from 2 hours ago."""
    now = datetime.now(UTC)
    span = span or (now - timedelta(hours=2), now - timedelta(seconds=30))
    files_span = [t.isoformat() for t in span]
    write_replica_status(database, lag=lag, files_span=files_span, **extra)


def test_the_backups_page_shows_replication_status_and_window(
    staff_client, replica_url, live_database
):
    write_status(live_database, lag=3)
    page = staff_client.get("/admin/backups/").content.decode()
    assert "Continuous replication" in page
    assert "&#10003; running" in page and 'id="replication-lag">3 s' in page
    assert "Restore to a point in time" in page and 'name="at"' in page


def test_the_page_says_what_the_replica_holds_and_when_it_holds_nothing(
    staff_client, replica_url, live_database
):
    write_status(live_database, lag=3)
    page = staff_client.get("/admin/backups/").content.decode()
    assert "Replica holds" in page and "every commit before" in page
    assert "the last second or so before that time may be missing" in page
    write_status(live_database, lag=3, replica_problem="empty")
    page = staff_client.get("/admin/backups/").content.decode()
    assert "nothing a restore can use" in page and "every commit before" not in page


def test_it_says_on_the_card_when_and_why_replicate_last_restarted_litestream(
    staff_client, replica_url, live_database
):
    why = "it read none of the site's commits for 16 s: hung or stopped"
    restart = {"at": "2026-12-06T23:40:02+00:00", "why": why}
    write_status(live_database, lag=3, restarts=2, last_restart=restart)

    page = staff_client.get("/admin/backups/").content.decode()

    state = page.split('id="replication-state">', 1)[1].split("</dd>", 1)[0]
    assert "restarted 2 times, last " in state
    assert 'datetime="2026-12-06T23:40:02+00:00"' in state
    assert state.endswith(
        ": it read none of the site&#x27;s commits for 16 s: hung or stopped</span>"
    )


def test_the_page_says_when_replication_stopped(staff_client, replica_url, live_database):
    page = staff_client.get("/admin/backups/").content.decode()
    assert "stopped" in page and "manage.py replicate" in page


def test_no_replication_card_when_it_is_off(staff_client, settings, live_database):
    settings.STANZA_REPLICA_URL = ""
    page = staff_client.get("/admin/backups/").content.decode()
    assert "Continuous replication" not in page


def test_the_page_says_a_new_history_began_after_a_restore(
    staff_client, replica_url, live_database
):
    write_status(live_database)
    replication.note_restore(type("R", (), {"backup": type("B", (), {"name": "x.bak"})()})())
    page = staff_client.get("/admin/backups/").content.decode()
    assert "A new history began" in page and "x.bak" in page


def test_the_confirmation_page_changes_nothing(staff_client, replica_url, live_database):
    write_status(live_database)
    before = live_database.read_bytes()
    when = (datetime.now(UTC) - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S")
    response = staff_client.get("/admin/backups/restore-at", {"at": when})
    page = response.content.decode()
    assert response.status_code == 200
    assert "Restore to this time" in page and 'name="at"' in page
    assert live_database.read_bytes() == before


def test_a_time_outside_the_window_is_refused_on_the_confirmation_page(
    staff_client, replica_url, live_database
):
    write_status(live_database)
    response = staff_client.get("/admin/backups/restore-at", {"at": "2001-01-01T00:00:00"})
    page = response.content.decode()
    assert "outside the replica&#x27;s window" in page
    assert "Restore to this time" not in page


def test_a_time_that_is_not_a_time_goes_back_with_a_message(staff_client, replica_url):
    response = staff_client.get("/admin/backups/restore-at", {"at": "soon"}, follow=True)
    assert "is not a date and time" in response.content.decode()


def test_anonymous_users_cannot_restore(client, db, replica_url, live_database):
    before = live_database.read_bytes()
    response = client.post("/admin/backups/restore-at", {"at": "2026-01-01T00:00:00Z"})
    assert response.status_code == 302 and "/admin/login/" in response["Location"]
    assert live_database.read_bytes() == before


def test_non_staff_users_cannot_restore(user_client, replica_url, live_database):
    before = live_database.read_bytes()
    response = user_client.post("/admin/backups/restore-at", {"at": "2026-01-01T00:00:00Z"})
    assert response.status_code == 403
    assert live_database.read_bytes() == before


def insert(database, count, start):
    conn = sqlite3.connect(database, isolation_level=None, timeout=20)
    conn.execute("BEGIN IMMEDIATE")
    conn.executemany(
        "INSERT INTO item (name, n) VALUES ('x', ?)", ((start + i,) for i in range(count))
    )
    conn.execute("COMMIT")
    conn.close()


@pytest.mark.litestream
@pytest.mark.slow
def test_restore_to_a_time_from_the_page(staff_client, replica_url, live_database):
    config = replication.write_config()
    child = replication.start_litestream(config)
    tracker = positions.Tracker(live_database, config)
    try:
        wait_until(lambda: tracker.beat(), timeout=30, interval=0.2)
        time.sleep(1.5)
        rows = count_rows(live_database)
        insert(live_database, 5, 1000)
        time.sleep(2.5)
        between = datetime.now(UTC)
        time.sleep(2.5)
        insert(live_database, 7, 2000)
        inserted = time.time()
        wait_until(lambda: (tracker.beat() or 0) > inserted, timeout=30, interval=0.2)

        response = staff_client.post(
            "/admin/backups/restore-at", {"at": between.isoformat()}, follow=True
        )
        assert "Restored the replica at" in response.content.decode()
        assert count_rows(live_database) == rows + 5
        assert [b for b in backups.list_backups() if b.label == "pre-restore"]
    finally:
        child.terminate()
        child.wait(15)


@pytest.mark.parametrize("at", ["2026-13-01T00:00:00", "0001-01-01T00:00:00+14:00", "", "x" * 5000])
def test_hostile_times_go_back_with_a_message(staff_client, replica_url, at):
    response = staff_client.get("/admin/backups/restore-at", {"at": at}, follow=True)
    assert response.status_code == 200
    assert "is not a date and time" in response.content.decode()


# --- a FIFO where a state file belongs (issue 18, item 6) ------------------------------------


class FifoWatchdog:
    """After `after` seconds, keeps releasing whoever waits on the FIFO (opens it for writing
    and closes it: the reader gets end of file), so a test that would hang fails instead.
    Far longer than the requests take even on a loaded machine: a release means one waited."""

    def __init__(self, path, after=30.0):
        self.path, self.after = path, after
        self.done = threading.Event()
        self.released = 0
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        if self.done.wait(self.after):
            return
        while not self.done.is_set():
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_NONBLOCK)
            except OSError:  # no reader waiting right now
                time.sleep(0.01)
                continue
            os.close(fd)
            self.released += 1

    def stop(self):
        self.done.set()
        self.thread.join(5)


@pytest.mark.parametrize("name", [replication.STATUS_NAME, replication.HISTORY_NAME])
def test_it_answers_at_once_with_a_fifo_as_a_state_file(
    client, staff_client, replica_url, live_database, name, capsys
):
    from django.core.management import call_command

    folder = replication.state_dir()
    folder.mkdir(mode=0o700, exist_ok=True)
    os.mkfifo(folder / name)
    watchdog = FifoWatchdog(folder / name)
    try:
        healthz = client.get("/healthz")
        page = staff_client.get("/admin/backups/")
        with pytest.raises(SystemExit) as checked:
            call_command("checkbackups")
    finally:
        watchdog.stop()
    assert watchdog.released == 0, "a request waited on the FIFO until it was released"
    assert healthz.status_code == 503 and "replication stopped" in healthz.content.decode()
    assert page.status_code == 200 and "Continuous replication" in page.content.decode()
    assert checked.value.code == 1 and "replication stopped" in capsys.readouterr().out


# --- replicate's files, read once per request (issue 17) -------------------------------------


@pytest.fixture
def state_file_reads(monkeypatch):
    """{file name: times read} of replication's state files, counted where status reads them."""
    from backups_app.replication import status

    reads = {}

    def counting(path, real=status.read_json):
        reads[path.name] = reads.get(path.name, 0) + 1
        return real(path)

    monkeypatch.setattr(status, "read_json", counting)
    return reads


@pytest.mark.parametrize("path", ["/admin/backups/", "/healthz", "/metrics", "checkbackups"])
def test_it_reads_replicates_files_once_per_request(
    client, staff_client, settings, replica_url, live_database, state_file_reads, path, capsys
):
    from django.core.management import call_command

    settings.STANZA_METRICS_TOKEN = "token"
    write_status(live_database, lag=3)
    replication.note_restore(type("R", (), {"backup": type("B", (), {"name": "x.bak"})()})())

    if path == "checkbackups":
        with pytest.raises(SystemExit):  # no backup yet
            call_command("checkbackups")
        assert "the replica is 3 seconds behind" in capsys.readouterr().out
    elif path == "/admin/backups/":
        page = staff_client.get(path).content.decode()
        assert 'id="replication-lag">3 s' in page and "A new history began" in page
        assert "the replica is 3 seconds behind" in page  # the recovery point's card
    else:
        response = client.get(path, HTTP_AUTHORIZATION="Bearer token")
        assert response.status_code in (200, 503)

    assert state_file_reads == {replication.STATUS_NAME: 1, replication.HISTORY_NAME: 1}
