"""Pings to a cron monitor (Healthchecks.io style) at the start and end of every job run."""

import logging
import time
import uuid

import pytest

from backups_app.jobs import jobs, pings
from backups_app.models import CronRun
from tests.conftest import free_port, live_env, manage

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def drained(monkeypatch):
    """Every ping of a test is sent (or given up) before the next test starts; retries come
    quickly (the pause is not what these tests are about)."""
    monkeypatch.setattr(pings, "RETRY_AFTER", 0.05)
    yield
    assert pings.flush(60)


def test_it_pings_start_then_success_or_fail_with_the_runs_rid(settings, http_recorder, data_dir):
    settings.STANZA_PING_URL = http_recorder.url + "/ping/KEY/{job}"

    purge = jobs.run_job("purge-old-cron-runs")
    drill = jobs.run_job("verify-latest-backup")  # no backup yet: it fails
    assert pings.flush(10)

    received = http_recorder.received
    assert [(method, path) for method, path, _query, _body in received] == [
        ("GET", "/ping/KEY/purge-old-cron-runs/start"),
        ("POST", "/ping/KEY/purge-old-cron-runs"),
        ("GET", "/ping/KEY/verify-latest-backup/start"),
        ("POST", "/ping/KEY/verify-latest-backup/fail"),
    ]
    rids = [query["rid"] for _method, _path, query, _body in received]
    assert rids[0] == rids[1] == pings.rid_of(purge)
    assert rids[2] == rids[3] == pings.rid_of(drill)
    assert rids[0] != rids[2]
    assert str(uuid.UUID(rids[0])) == rids[0]
    assert received[0][3] == b""
    assert received[1][3].decode() == purge.result
    assert purge.result.startswith("deleted 0 runs")
    assert received[3][3].decode() == drill.error
    assert received[3][3].decode().rstrip().endswith("DrillError: no backup to verify")


def test_it_sends_the_last_10_kB_of_the_error_in_a_fail_ping(settings, http_recorder):
    settings.STANZA_PING_URL = http_recorder.url + "/{job}"
    run = CronRun.objects.create(job_name="daily-backup", status="failure")
    run.error = "Traceback\n" + "x" * 30_000 + "\nOSError: the disk is full\n"

    pings.on_run_finished(run=run)
    assert pings.flush(10)

    [(method, path, query, body)] = http_recorder.received
    assert (method, path) == ("POST", "/daily-backup/fail")
    assert len(body) == 10_000
    assert body.endswith(b"x\nOSError: the disk is full\n")


def test_it_retries_a_ping_once(settings, http_recorder):
    settings.STANZA_PING_URL = http_recorder.url + "/{job}"
    http_recorder.answers = [503]

    jobs.run_job("purge-old-cron-runs")
    assert pings.flush(10)

    paths = [path for _method, path, _query, _body in http_recorder.received]
    assert paths == ["/purge-old-cron-runs/start"] * 2 + ["/purge-old-cron-runs"]


def test_it_sends_nothing_for_a_run_skipped_while_the_job_runs(settings, http_recorder):
    settings.STANZA_PING_URL = http_recorder.url + "/{job}"
    CronRun.start("purge-old-cron-runs", "scheduler")  # this process: still going

    run = jobs.run_job("purge-old-cron-runs")
    assert pings.flush(10)

    assert run.status == CronRun.Status.SKIPPED
    assert http_recorder.received == []


def test_it_keeps_the_urls_own_query_and_quotes_the_job(settings, http_recorder):
    url = pings.ping_url("https://hc-ping.com/KEY/{job}?create=1", "copy offsite", "start", "R")

    assert url == "https://hc-ping.com/KEY/copy%20offsite/start?create=1&rid=R"
    assert pings.ping_url("http://h/p/{job}/", "a", "success", "R") == "http://h/p/a?rid=R"


def test_it_sends_nothing_while_unset(settings, http_recorder):
    settings.STANZA_PING_URL = ""

    jobs.run_job("purge-old-cron-runs")
    assert pings.flush(10)

    assert http_recorder.received == []


def test_it_logs_a_dead_ping_url_and_changes_nothing(settings, caplog):
    settings.STANZA_PING_URL = f"http://127.0.0.1:{free_port()}/secret-key/{{job}}"

    with caplog.at_level(logging.WARNING, logger="backups_app.jobs.pings"):
        run = jobs.run_job("purge-old-cron-runs")
        assert pings.flush(30)

    assert run.status == CronRun.Status.SUCCESS
    failures = [r.getMessage() for r in caplog.records if r.name == "backups_app.jobs.pings"]
    assert len(failures) == 2  # the start ping and the end ping, each after its retry
    assert all(message.startswith("ping to http://127.0.0.1:") for message in failures)
    assert not any("secret-key" in message for message in failures)


def test_it_does_not_delay_the_job_for_a_hanging_ping_url(settings, hanging_server):
    """The server accepts and never answers: each ping waits out its timeout, in the
    background; the job's run and its recorded duration do not wait for them."""
    settings.STANZA_PING_URL = hanging_server + "/{job}"

    started = time.monotonic()
    run = jobs.run_job("purge-old-cron-runs")
    took = time.monotonic() - started

    assert run.status == CronRun.Status.SUCCESS
    assert took < pings.TIMEOUT / 2
    assert run.duration.total_seconds() < pings.TIMEOUT / 2
    assert not pings.flush(0.1)  # the start ping is still waiting for its answer


def test_it_never_fails_the_job_for_a_bad_ping_url(settings):
    settings.STANZA_PING_URL = "not a url"

    run = jobs.run_job("purge-old-cron-runs")

    assert run.status == CronRun.Status.SUCCESS


@pytest.mark.slow
def test_it_sends_a_runjob_process_pings_before_it_exits(live_data, http_recorder):
    """The sender is a daemon thread: the process waits (a few seconds at most) for the pings
    still queued when the job is done, or the end ping would die with it."""
    env = live_env(live_data, STANZA_PING_URL=http_recorder.url + "/{job}")
    http_recorder.delay = 1  # a monitor slower than the job and the process's exit

    result = manage("runjob", "purge-old-cron-runs", env=env)

    assert result.returncode == 0, result.stderr
    received = [(method, path) for method, path, _query, _body in http_recorder.received]
    assert received == [("GET", "/purge-old-cron-runs/start"), ("POST", "/purge-old-cron-runs")]
    assert http_recorder.received[1][3].startswith(b"deleted 0 runs")
