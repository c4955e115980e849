"""Replication with Litestream: settings, config, status, and real Litestream processes."""

import contextlib
import json
import os
import signal
import sqlite3
import struct
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from backups_app import conf
from backups_app.replication import positions, replication
from tests.conftest import live_env, manage, read_runs, wait_until, write_replica_status

# --- settings and config (no Litestream needed) ----------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "ftp://host/path",
        "file://",
        "file:///",
        "file://otherhost/path",
        "s3://",
        "s3://bucket-only",
        "s3://Bad_Bucket/path",
        "/just/a/path",
        "s3://bucket/path?x=1",
    ],
)
def test_it_refuses_a_bad_replica_url_in_one_line(settings, url):
    settings.STANZA_REPLICA_URL = url
    with pytest.raises(conf.ConfigError) as err:
        conf.get("STANZA_REPLICA_URL")
    assert "STANZA_REPLICA_URL" in str(err.value)
    assert "\n" not in str(err.value)


def test_replicate_with_a_bad_url_says_one_line_and_fails(tmp_path):
    result = manage("replicate", env=live_env(tmp_path, STANZA_REPLICA_URL="ftp://x/y"))
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "STANZA_REPLICA_URL" in lines[0] and "Traceback" not in result.stderr


def test_replicate_refuses_when_replication_is_off(tmp_path):
    result = manage("replicate", env=live_env(tmp_path, STANZA_REPLICA_URL=""))
    assert result.returncode != 0
    assert "STANZA_REPLICA_URL" in result.stderr


def test_max_lag_must_be_a_positive_number(settings):
    settings.STANZA_REPLICA_MAX_LAG = "-5"
    with pytest.raises(conf.ConfigError):
        conf.get("STANZA_REPLICA_MAX_LAG")
    settings.STANZA_REPLICA_MAX_LAG = None
    assert conf.get("STANZA_REPLICA_MAX_LAG") == 300


def test_print_config_for_a_file_replica(tmp_path):
    target = tmp_path / "replica"
    result = manage(
        "replicate", "--print-config", env=live_env(tmp_path, STANZA_REPLICA_URL=f"file://{target}")
    )
    assert result.returncode == 0, result.stderr
    config = json.loads(result.stdout)
    (db,) = config["dbs"]
    assert db["path"] == str(tmp_path / "database.sqlite")
    assert db["replica"] == {"type": "file", "path": str(target), "sync-interval": "1s"}


def test_print_config_for_s3_uses_the_aws_variables_and_no_secrets(tmp_path):
    env = live_env(
        tmp_path,
        STANZA_REPLICA_URL="s3://stanza-replica/site/db",
        AWS_ENDPOINT_URL="http://127.0.0.1:9",
        AWS_DEFAULT_REGION="eu-west-3",
        AWS_SECRET_ACCESS_KEY="very-secret",
    )
    result = manage("replicate", "--print-config", env=env)
    assert result.returncode == 0, result.stderr
    replica = json.loads(result.stdout)["dbs"][0]["replica"]
    assert replica["type"] == "s3" and replica["bucket"] == "stanza-replica"
    assert replica["path"] == "site/db" and replica["region"] == "eu-west-3"
    assert replica["endpoint"] == "http://127.0.0.1:9" and replica["force-path-style"] is True
    assert "very-secret" not in result.stdout


def test_the_config_file_is_private(tmp_path, settings):
    settings.STANZA_REPLICA_URL = f"file://{tmp_path / 'replica'}"
    path = replication.write_config(database=tmp_path / "database.sqlite")
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.parent.stat().st_mode & 0o777 == 0o700


def test_litestream_never_gets_aws_ca_bundle(monkeypatch, tmp_path):
    bundle = tmp_path / "ca.pem"
    bundle.write_text("certificates")
    monkeypatch.setenv("AWS_CA_BUNDLE", str(bundle))
    env = replication.child_env()
    assert "AWS_CA_BUNDLE" not in env and env["SSL_CERT_FILE"] == str(bundle)
    monkeypatch.setenv("AWS_CA_BUNDLE", str(tmp_path / "missing.pem"))
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    env = replication.child_env()
    assert "AWS_CA_BUNDLE" not in env and "SSL_CERT_FILE" not in env


# --- status and health (status files written by hand) -----------------------------------------


@pytest.fixture
def replica_on(settings, tmp_path, monkeypatch):
    database = tmp_path / "database.sqlite"
    monkeypatch.setattr(conf, "live_database_path", lambda: database)
    settings.STANZA_REPLICA_URL = f"file://{tmp_path / 'replica'}"
    settings.STANZA_REPLICA_MAX_LAG = 300
    return database


write_status = write_replica_status  # the status file as a running `replicate` writes it


def test_replication_off_is_no_problem(settings):
    settings.STANZA_REPLICA_URL = ""
    assert replication.problems() == []
    assert not replication.status().enabled


def test_replication_without_a_status_file_is_stopped(replica_on):
    assert replication.problems() == ["replication stopped (is manage.py replicate running?)"]


def test_replication_in_sync_is_healthy(replica_on):
    write_status(replica_on, lag=2)
    current = replication.status()
    assert current.running and current.lag == pytest.approx(2, abs=0.5)
    assert replication.problems() == []


def test_the_lag_runs_against_the_clock_not_the_last_heartbeat(replica_on):
    # A replicate that keeps writing the same "synced through" while time passes (as it did
    # when Litestream was stopped) is behind by the time since, not by what it last wrote.
    write_status(replica_on, age=40, lag=0)
    later = datetime.now(UTC) + timedelta(seconds=270)
    assert replication.status(later).lag == pytest.approx(310, abs=1)


def test_replication_behind_the_limit_is_a_problem(replica_on):
    write_status(replica_on, lag=301)
    assert replication.problems() == ["replication 301 s behind (limit 300 s)"]


def test_a_dead_replicate_process_or_an_old_heartbeat_is_stopped(replica_on):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    write_status(replica_on, pid=dead.pid)
    assert replication.problems()[0].startswith("replication stopped")
    write_status(replica_on, age=replication.STALE_AFTER + 1)
    assert replication.problems()[0].startswith("replication stopped")
    write_status(replica_on, running=False)  # replicate waits to restart Litestream
    assert replication.problems()[0].startswith("replication stopped")


def test_a_replica_that_lost_its_files_is_a_problem_at_once(replica_on):
    write_status(replica_on, lag=0, replica_problem="missing files")
    assert replication.problems() == ["replica missing files (a restore from it would fail)"]
    write_status(replica_on, lag=0, replica_problem="empty")
    assert replication.problems() == ["replica empty (a restore from it would fail)"]
    (problem,) = replication.health_problems()
    assert "new snapshot" in problem.advice


def test_renaming_the_newest_restore_is_not_another_restore(replica_on):
    from backups_app.replication import config, run, status

    restored = type("R", (), {"backup": type("B", (), {"name": "x.bak"})()})()
    status.note_restore(restored)
    first = run._history_stamp(replica_on)
    record = replication.read_json(status.history_path())
    time.sleep(0.01)  # a rewrite a moment later has another modification time
    config.write_private(status.history_path(), json.dumps({**record, "restored": "renamed"}))
    assert run._history_stamp(replica_on) == first
    status.note_restore(restored)
    assert run._history_stamp(replica_on) != first


def test_a_pid_reused_by_another_process_is_not_replicate(replica_on):
    write_status(replica_on, pid=os.getpid(), pid_identity="another-boot/12345")
    assert replication.problems()[0].startswith("replication stopped")


def ltx_file(low, high, level=0):
    return positions.LtxFile(level, low, high, datetime.now(UTC))


def test_only_the_chain_from_a_snapshot_can_be_restored():
    assert positions.restorable_txid([]) == 0
    snapshot_and_on = [ltx_file(1, 7, level=9), ltx_file(8, 8), ltx_file(9, 9), ltx_file(8, 9, 1)]
    assert positions.restorable_txid(snapshot_and_on) == 9
    assert positions.restorable_txid([ltx_file(8, 8), ltx_file(9, 9)]) == 0  # snapshot deleted
    assert positions.restorable_txid([ltx_file(1, 7, 9), ltx_file(9, 12)]) == 7  # a gap


def test_the_live_position_is_the_last_commit_in_the_wal(tmp_path):
    database = tmp_path / "live.sqlite"
    conn = sqlite3.connect(database, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA wal_autocheckpoint=0")
    conn.execute("CREATE TABLE item (id INTEGER PRIMARY KEY, name TEXT)")
    first = positions.live_position(database)
    conn.execute("INSERT INTO item (name) VALUES ('x')")
    second = positions.live_position(database)
    wal = Path(f"{database}-wal").read_bytes()
    conn.close()
    assert first.salts == second.salts == struct.unpack(">II", wal[16:24])
    assert first.end < second.end == len(wal)  # every frame written is committed here
    assert positions.live_position(tmp_path / "missing.sqlite") is None


def test_health_checkbackups_and_healthz_report_replication(replica_on, db, client):
    from backups_app.health import health

    write_status(replica_on, lag=900)
    assert "replication 900 s behind (limit 300 s)" in health.problems()
    response = client.get("/healthz")
    assert response.status_code == 503
    assert "replication 900 s behind (limit 300 s)" in response.json()["problems"]


def test_an_alert_email_when_replication_stops(replica_on, db, settings, mailoutbox):
    from backups_app.health import alerts

    settings.STANZA_ALERT_EMAILS = "ops@example.com"
    alerts.check_lateness()
    assert any("replication is failing" in m.subject for m in mailoutbox)
    mailoutbox.clear()
    write_status(replica_on, lag=1)
    alerts.check_lateness()
    assert [m.subject for m in mailoutbox if "replication" in m.subject] == [
        "[Stanza Backups] replication recovered"
    ]


def test_verify_replica_is_a_job_only_when_replication_is_on(settings):
    from backups_app.jobs import jobs

    settings.STANZA_REPLICA_URL = ""
    assert "verify-replica" not in jobs.registry()
    settings.STANZA_REPLICA_URL = "file:///tmp/replica"
    assert jobs.registry()["verify-replica"].schedule == "0 * * * *"


# --- real Litestream ---------------------------------------------------------------------------


def insert_items(database, names):
    conn = sqlite3.connect(database, timeout=20, isolation_level=None)
    try:
        conn.execute("CREATE TABLE IF NOT EXISTS item (id INTEGER PRIMARY KEY, name TEXT)")
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany("INSERT INTO item (name) VALUES (?)", ((n,) for n in names))
        conn.execute("COMMIT")
    finally:
        conn.close()


def item_names(database):
    conn = sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=20)
    try:
        return [row[0] for row in conn.execute("SELECT name FROM item ORDER BY id")]
    except sqlite3.OperationalError:
        return []
    finally:
        conn.close()


def settled():
    """A time a little after the last commit: Litestream stamps a change when it syncs it,
    up to a second after the commit, and a restore to T holds what was synced by T."""
    time.sleep(2)
    return datetime.now(UTC)


def status_of(folder):
    return replication.read_json(folder / replication.STATE_DIRNAME / replication.STATUS_NAME)


class Replicating:
    """`manage.py replicate` for a data folder, as a real process."""

    def __init__(self, folder, env):
        self.folder, self.env = folder, env
        self.log_path = folder.parent / "replicate.log"
        full = {**os.environ, **env}
        full.pop("DJANGO_SETTINGS_MODULE", None)
        with open(self.log_path, "ab") as log:  # the child keeps its own copy
            self.proc = subprocess.Popen(
                [sys.executable, "manage.py", "replicate"],
                cwd=Path(__file__).resolve().parent.parent,
                env=full,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def wait_synced(self, after=None, timeout=60):
        """Wait until the status file says every commit before `after` (default now) is in."""
        after = after or datetime.now(UTC)

        def synced():
            record = status_of(self.folder) or {}
            through = record.get("synced_through")
            in_replica = (record.get("replica_txid") or 0) > 0  # its first file is there
            return in_replica and through and replication.parse_time(through) >= after and record

        return wait_until(synced, timeout=timeout, interval=0.2)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(30)
        return self.proc.returncode


@pytest.fixture
def replicating(live_data):
    started = []

    def start(url, **extra):
        env = live_env(live_data, STANZA_REPLICA_URL=url, **extra)
        started.append(Replicating(live_data, env))
        return started[-1]

    yield start
    for process in started:
        process.stop()


def litestream_pid(folder):
    record = status_of(folder) or {}
    return record.get("litestream_running") and _alive(record.get("litestream_pid"))


def _alive(pid):
    try:
        os.kill(int(pid), 0)
    except (TypeError, ValueError, ProcessLookupError):
        return None
    return int(pid)


@pytest.mark.litestream
@pytest.mark.slow
def test_restore_to_a_second_between_two_batches_gives_the_rows_before_it(
    live_data, replicating, tmp_path
):
    database = live_data / "database.sqlite"
    run = replicating(f"file://{tmp_path / 'replica'}")
    run.wait_synced()
    time.sleep(1.5)  # the window starts a second after the replica's first file
    insert_items(database, ["a1", "a2", "a3"])
    time.sleep(2.5)
    between = datetime.now(UTC)
    time.sleep(2.5)
    insert_items(database, ["b1", "b2"])
    run.wait_synced(after=datetime.now(UTC) + timedelta(seconds=1))

    result = manage("restore", "--at", between.isoformat(), "--yes", env=run.env)
    assert result.returncode == 0, result.stderr
    assert item_names(database) == ["a1", "a2", "a3"]
    assert "pre-restore" in result.stdout
    (restore_run,) = read_runs(live_data, "restore")
    assert restore_run["status"] == "success" and "the replica at" in restore_run["result"]


@pytest.mark.litestream
@pytest.mark.slow
def test_a_time_outside_the_window_is_refused_naming_it_and_nothing_changes(
    live_data, replicating, tmp_path
):
    database = live_data / "database.sqlite"
    run = replicating(f"file://{tmp_path / 'replica'}")
    insert_items(database, ["kept"])
    run.wait_synced(after=datetime.now(UTC) + timedelta(seconds=1))
    before = item_names(database)
    for when in ("2001-01-01T00:00:00Z", "2999-01-01T00:00:00+02:00"):
        result = manage("restore", "--at", when, "--yes", env=run.env)
        assert result.returncode != 0
        assert "outside the replica's window" in result.stderr
        assert " to " in result.stderr  # the window, from .. to ..
        assert item_names(database) == before
    assert not list((live_data / "backups").glob("*pre-restore*"))
    bad = manage("restore", "--at", "yesterday", "--yes", env=run.env)
    assert bad.returncode != 0 and "ISO 8601" in bad.stderr


@pytest.mark.litestream
@pytest.mark.slow
def test_litestream_killed_is_brought_back_and_replicates_on(live_data, replicating, tmp_path):
    database = live_data / "database.sqlite"
    run = replicating(f"file://{tmp_path / 'replica'}")
    run.wait_synced()
    time.sleep(2)  # the window starts a second after the replica's first file
    first = wait_until(lambda: litestream_pid(live_data), interval=0.2)
    os.kill(first, signal.SIGKILL)
    second = wait_until(
        lambda: (pid := litestream_pid(live_data)) and pid != first and pid, interval=0.2
    )
    assert second != first
    assert status_of(live_data)["restarts"] >= 1
    insert_items(database, ["after the kill"])
    after = settled()
    run.wait_synced(after=after)
    result = manage("restore", "--at", after.isoformat(), "--yes", env=run.env)
    assert result.returncode == 0, result.stderr
    assert item_names(database) == ["after the kill"]
    assert run.stop() == 0
    assert _alive(second) is None  # Litestream stopped with it


@pytest.mark.litestream
@pytest.mark.slow
def test_a_restore_while_replicating_starts_a_new_history_that_replicates(
    live_data, replicating, tmp_path
):
    database = live_data / "database.sqlite"
    run = replicating(f"file://{tmp_path / 'replica'}")
    run.wait_synced()
    time.sleep(1.5)  # the window starts a second after the replica's first file
    insert_items(database, ["old"])
    backup = manage("backup", "--output", str(tmp_path / "old.bak"), env=run.env, check=True)
    assert backup.returncode == 0
    insert_items(database, ["lost on restore"])
    before_restore = settled()
    run.wait_synced(after=before_restore)
    first = litestream_pid(live_data)

    result = manage("restore", str(tmp_path / "old.bak"), "--yes", env=run.env)
    assert result.returncode == 0, result.stderr
    assert item_names(database) == ["old"]
    wait_until(lambda: (pid := litestream_pid(live_data)) and pid != first, interval=0.2)
    record = replication.read_json(live_data / replication.STATE_DIRNAME / replication.HISTORY_NAME)
    assert record and replication.parse_time(record["began_at"]) >= before_restore

    insert_items(database, ["new"])
    after = settled()
    run.wait_synced(after=after)
    later = manage("restore", "--at", after.isoformat(), "--yes", env=run.env)
    assert later.returncode == 0, later.stderr
    assert item_names(database) == ["old", "new"]
    # The time before the restore is still there: the replica kept the old history.
    earlier = manage("restore", "--at", before_restore.isoformat(), "--yes", env=run.env)
    assert earlier.returncode == 0, earlier.stderr
    assert item_names(database) == ["old", "lost on restore"]


@pytest.mark.litestream
@pytest.mark.slow
def test_verify_replica_finds_its_canary_and_fails_when_replication_is_down(
    live_data, replicating, tmp_path
):
    url = f"file://{tmp_path / 'replica'}"
    run = replicating(url)
    run.wait_synced()
    result = manage("runjob", "verify-replica", env=run.env)
    assert result.returncode == 0, result.stdout + result.stderr
    (ok,) = read_runs(live_data, "verify-replica")
    assert ok["status"] == "success" and "canary" in ok["result"]

    run.stop()
    failed = manage("runjob", "verify-replica", env=run.env)
    assert failed.returncode != 0
    assert read_runs(live_data, "verify-replica")[-1]["status"] == "failure"


@pytest.mark.litestream
@pytest.mark.s3
@pytest.mark.slow
def test_an_s3_replica_on_moto_restores_to_a_time(moto_s3, live_data, replicating, tmp_path):
    import boto3

    boto3.client(
        "s3",
        endpoint_url=moto_s3["AWS_ENDPOINT_URL"],
        region_name="us-east-1",
        aws_access_key_id=moto_s3["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=moto_s3["AWS_SECRET_ACCESS_KEY"],
    ).create_bucket(Bucket="stanza-replica")
    database = live_data / "database.sqlite"
    # The machine's AWS_CA_BUNDLE would stop Litestream's S3 client: replicate drops it.
    run = replicating(
        "s3://stanza-replica/site", AWS_CA_BUNDLE="/etc/ssl/certs/ca-certificates.crt", **moto_s3
    )
    run.wait_synced()
    time.sleep(1.5)  # the window starts a second after the replica's first file
    insert_items(database, ["first"])
    time.sleep(2.5)
    between = datetime.now(UTC)
    time.sleep(2.5)
    insert_items(database, ["second"])
    run.wait_synced(after=datetime.now(UTC) + timedelta(seconds=1))
    result = manage("restore", "--at", between.isoformat(), "--yes", env=run.env)
    assert result.returncode == 0, result.stderr
    assert item_names(database) == ["first"]


@pytest.mark.parametrize(
    "text", ["2026-11-27T10:00:00", "yesterday", "0001-01-01T00:00:00+14:00", "2026-02-30T00:00Z"]
)
def test_parse_time_refuses_what_is_not_an_aware_time(text):
    with pytest.raises(ValueError):
        replication.parse_time(text)


def test_parse_time_reads_z_and_offsets():
    assert replication.parse_time("2026-11-27T10:00:00+02:00") == datetime(
        2026, 11, 27, 8, tzinfo=UTC
    )
    assert replication.parse_time("2026-11-27T08:00:00Z") == datetime(2026, 11, 27, 8, tzinfo=UTC)


@pytest.mark.litestream
@pytest.mark.slow
def test_one_replicate_per_database_and_no_orphan_when_it_is_killed(
    live_data, replicating, tmp_path
):
    url = f"file://{tmp_path / 'replica'}"
    run = replicating(url)
    child = wait_until(lambda: litestream_pid(live_data), interval=0.2)
    second = manage("replicate", env=run.env, timeout=60)
    assert second.returncode != 0
    assert "already replicates this database" in second.stderr
    assert len(second.stderr.strip().splitlines()) == 1
    run.proc.kill()  # SIGKILL: no chance to stop Litestream itself
    run.proc.wait()
    wait_until(lambda: _alive(child) is None or _zombie(child), timeout=30, interval=0.2)


def _zombie(pid):
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    except OSError:
        return True


def test_checkbackups_lists_a_stopped_replication(replica_on, db, capsys):
    from django.core.management import call_command

    with pytest.raises(SystemExit) as exit_:
        call_command("checkbackups")
    assert exit_.value.code == 1
    assert "replication stopped" in capsys.readouterr().out


# --- health that cannot be fooled (issue 18, items 4 and 5) ----------------------------------


class Writer:
    """Commits a row every 0.1 s from its own connection, as a busy site does."""

    def __init__(self, database):
        self.database, self.count = database, 0
        self.done = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        conn = sqlite3.connect(self.database, timeout=20, isolation_level=None)
        conn.execute("CREATE TABLE IF NOT EXISTS item (id INTEGER PRIMARY KEY, name TEXT)")
        while not self.done.wait(0.1):
            conn.execute("INSERT INTO item (name) VALUES (?)", (f"w{self.count}",))
            self.count += 1
        conn.close()

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.done.set()
        self.thread.join(30)


@pytest.fixture
def health_of(settings, monkeypatch):
    """Point this process's settings at a `replicating` data folder, so replication.problems()
    judges what that real `replicate` writes, as /healthz and checkbackups do."""

    def point(folder, url, max_lag=300):
        monkeypatch.setattr(conf, "live_database_path", lambda: folder / "database.sqlite")
        settings.STANZA_REPLICA_URL = url
        settings.STANZA_REPLICA_MAX_LAG = max_lag
        return replication.problems

    return point


LIMIT = 15  # STANZA_REPLICA_MAX_LAG of the tests that stop Litestream


@contextlib.contextmanager
def litestream_stopped(folder, run, problems, writer):
    """Once `run` has synced and `writer` commits with health clean, stop `run`'s Litestream
    with SIGSTOP (hung: alive, holding its files, doing nothing) and yield its pid; SIGCONT
    it on the way out, unless `replicate` has ended it."""
    run.wait_synced()
    pid = wait_until(lambda: litestream_pid(folder), interval=0.2)
    wait_until(lambda: writer.count > 20 and problems() == [], interval=0.2)
    os.kill(pid, signal.SIGSTOP)
    try:
        yield pid
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)


@pytest.mark.litestream
@pytest.mark.slow
def test_it_reports_a_stopped_litestream_as_behind_within_the_limit(
    live_data, replicating, tmp_path, health_of
):
    url = f"file://{tmp_path / 'replica'}"
    run = replicating(url, STANZA_REPLICA_MAX_LAG=str(LIMIT))
    problems = health_of(live_data, url, LIMIT)
    with Writer(live_data / "database.sqlite") as writer:
        with litestream_stopped(live_data, run, problems, writer):
            behind = wait_until(
                lambda: [p for p in problems() if "behind" in p],
                timeout=LIMIT + positions.HEARTBEAT + 10,
                interval=0.5,
            )
            assert behind[0].startswith("replication ") and f"(limit {LIMIT} s)" in behind[0]
            checked = manage("checkbackups", env=run.env)
            assert checked.returncode == 1 and "behind" in checked.stdout
        wait_until(lambda: problems() == [], timeout=60, interval=0.5)  # it catches up


@pytest.mark.litestream
@pytest.mark.slow
def test_it_reports_a_replica_whose_files_were_deleted_and_writes_a_new_one(
    live_data, replicating, tmp_path, health_of
):
    database = live_data / "database.sqlite"
    url = f"file://{tmp_path / 'replica'}"
    run = replicating(url)
    problems = health_of(live_data, url)
    insert_items(database, ["before"])
    run.wait_synced(after=datetime.now(UTC) + timedelta(seconds=1))
    assert problems() == []
    for ltx in (tmp_path / "replica").rglob("*.ltx"):
        ltx.unlink()
    insert_items(database, ["after"])  # Litestream sends this on as if nothing happened
    found = wait_until(
        lambda: [p for p in problems() if "would fail" in p], timeout=20, interval=0.2
    )
    assert found[0].startswith("replica ")
    # replicate restarts Litestream, which writes a new snapshot: the replica is whole again.
    wait_until(lambda: problems() == [], timeout=60, interval=0.5)
    assert "new snapshot" in run.log_path.read_text()
    verified = manage("runjob", "verify-replica", env=run.env)
    assert verified.returncode == 0, verified.stdout + verified.stderr


# --- a hung Litestream is restarted (issue 17's review) ---------------------------------------


def test_it_counts_how_long_a_commit_stays_unread_by_litestream(tmp_path):
    """No Litestream reads this database: the first commit a beat saw stays unread, and its
    time is what counts; a new Litestream starts the count again."""
    database = tmp_path / "live.sqlite"
    conn = sqlite3.connect(database, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE item (id INTEGER PRIMARY KEY, name TEXT)")
    tracker = positions.Tracker(database, tmp_path / "no-config.yml")

    tracker.beat(now=1000.0)  # sees the CREATE TABLE's commit
    conn.execute("INSERT INTO item (name) VALUES ('x')")
    tracker.beat(now=1005.0)
    conn.close()

    assert tracker.unread_for(now=1005.0) == 5  # from the first commit a beat saw unread
    assert tracker.unread_for(now=1020.0) == 20
    tracker.beat(now=1030.0)
    assert tracker.unread_for(now=1030.0) == 30
    tracker.litestream_restarted()
    assert tracker.unread_for(now=1030.0) == 0
    tracker.beat(now=1035.0)
    assert tracker.unread_for(now=1040.0) == 5  # the new one's count starts at its first beat


def test_it_says_when_and_why_replicate_restarted_litestream(replica_on, db):
    restart = {"at": "2026-12-06T23:40:02+00:00", "why": HUNG_WHY}
    write_status(replica_on, lag=400, restarts=1, last_restart=restart)

    current = replication.status()
    (problem,) = replication.health_problems(current=current)

    assert current.restarts == 1 and current.last_restart_why == HUNG_WHY
    assert current.last_restart_at == datetime(2026, 12, 6, 23, 40, 2, tzinfo=UTC)
    assert str(problem) == "replication 400 s behind (limit 300 s)"  # the words stay
    assert problem.sentence.endswith(
        f"replicate restarted Litestream at 2026-12-06T23:40:02Z: {HUNG_WHY}."
    )
    assert replication.health_problems()[0].sentence == problem.sentence  # reading it itself


HUNG_WHY = "it read none of the site's commits for 16 s: hung or stopped"


@pytest.mark.litestream
@pytest.mark.slow
def test_it_restarts_a_litestream_stopped_by_sigstop_and_the_replica_catches_up(
    live_data, replicating, tmp_path, health_of
):
    from backups_app.replication import run as replicate_run

    url = f"file://{tmp_path / 'replica'}"
    run = replicating(url, STANZA_REPLICA_MAX_LAG=str(LIMIT))
    problems = health_of(live_data, url, LIMIT)
    with Writer(live_data / "database.sqlite") as writer:
        with litestream_stopped(live_data, run, problems, writer) as hung:
            # Seen unread within a beat, restarted a limit and a beat later, gone in 5 s.
            bound = LIMIT + 2 * positions.HEARTBEAT + replicate_run.HUNG_TIMEOUT + 20
            fresh = wait_until(
                lambda: (pid := litestream_pid(live_data)) and pid != hung and pid,
                timeout=bound,
                interval=0.2,
            )
        assert _alive(hung) is None  # ended, not left stopped beside the new one
        restarted = replication.status()
        assert restarted.restarts == 1
        assert restarted.last_restart_why.endswith("s: hung or stopped")
        # The replica catches up with what the writer committed while Litestream was stopped.
        caught_up = datetime.now(UTC)
        run.wait_synced(after=caught_up)
        wait_until(lambda: problems() == [], timeout=30, interval=0.5)
        written = writer.count
    verified = manage("runjob", "verify-replica", env=run.env)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert written > 20
    assert litestream_pid(live_data) == fresh  # the new one replicates on, not restarted again
    assert replication.status().restarts == 1
    lines = [line for line in run.log_path.read_text().splitlines() if "hung or stopped" in line]
    assert len(lines) == 1 and f"litestream (pid {hung}) read none" in lines[0]
    assert "Traceback" not in run.log_path.read_text()
