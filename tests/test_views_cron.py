"""The Cron page (/admin/cron/) and "Run now" (POST /admin/cron/<job>/run)."""

import os
import re
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.contrib.admin.models import LogEntry
from django_apscheduler.models import DjangoJob

from backups_app.jobs import jobs, scheduler_lock
from backups_app.models import CronRun

URL = "/admin/cron/"
NOW = datetime(2026, 11, 26, 9, 31, 7, tzinfo=UTC)


def failing_job():
    raise RuntimeError("disk on fire <b>really</b>")


@pytest.fixture
def registry(monkeypatch):
    """Two jobs: one that works, one that always fails."""
    test_jobs = {
        "daily-backup": jobs.Job("daily-backup", "0 2 * * *", lambda: "made it", "Back up"),
        "always-fails": jobs.Job("always-fails", "*/15 * * * *", failing_job, "Fails"),
    }
    monkeypatch.setattr(jobs, "registry", lambda: test_jobs)
    return test_jobs


def make_run(job_name="daily-backup", status="success", *, minutes_ago=0, **fields):
    started = NOW - timedelta(minutes=minutes_ago)
    fields.setdefault("finished_at", started + timedelta(seconds=2))
    fields.setdefault("duration", timedelta(seconds=2))
    return CronRun.objects.create(job_name=job_name, status=status, started_at=started, **fields)


def job_row(html, name):
    return re.search(rf'<tr id="job-{name}"[^>]*>.*?</tr>', html, re.S).group(0)


def history_rows(html):
    body = re.search(r'<table id="runs".*?<tbody>(.*?)</tbody>', html, re.S).group(1)
    return re.findall(r"<tr class=.*?</tr>", body, re.S)


@time_machine.travel(NOW, tick=False)
def test_it_lists_every_job_with_its_schedule_in_words(staff_client, registry):
    html = staff_client.get(URL).content.decode()

    row = job_row(html, "daily-backup")
    assert '<code class="stanza-cron">0 2 * * *</code>' in row  # never wraps
    assert "At 02:00 every day" in row
    assert "Every 15 minutes" in job_row(html, "always-fails")
    assert "Schedules are read in UTC." in html


@time_machine.travel(NOW, tick=False)
def test_it_shows_the_last_run_of_each_job(staff_client, registry):
    make_run("daily-backup", "success", minutes_ago=200)
    make_run("daily-backup", "failure", minutes_ago=90, error="Traceback\nOSError: full")
    make_run("always-fails", "running", minutes_ago=1, duration=None, finished_at=None)

    html = staff_client.get(URL).content.decode()

    daily = job_row(html, "daily-backup")
    assert 'class="stanza-status stanza-status-failure">Failure<' in daily
    assert "an hour ago" in daily
    assert "took 2.0 s" in daily
    assert 'stanza-status-running">Running<' in job_row(html, "always-fails")


@time_machine.travel(NOW, tick=False)
def test_it_computes_the_next_run_when_no_scheduler_is_up(staff_client, registry, data_dir):
    html = staff_client.get(URL).content.decode()

    daily = job_row(html, "daily-backup")
    assert (
        '<time class="stanza-time" datetime="2026-11-27T02:00:00+00:00" '
        'title="2026-11-27 02:00:00 UTC"><span class="stanza-date">2026-11-27</span> '
        '<span class="stanza-clock">02:00:00 UTC</span></time>'
    ) in daily
    assert "scheduler not running" in daily
    assert "09:45:00 UTC" in job_row(html, "always-fails")
    assert "The scheduler is not running" in html


@time_machine.travel(NOW, tick=False)
def test_it_reads_the_next_run_from_the_scheduler_when_one_is_up(staff_client, registry, data_dir):
    DjangoJob.objects.create(id="daily-backup", next_run_time=NOW + timedelta(hours=5))
    fd = scheduler_lock.try_acquire()
    try:
        html = staff_client.get(URL).content.decode()
    finally:
        os.close(fd)

    daily = job_row(html, "daily-backup")
    assert "2026-11-26 14:31:07 UTC" in daily
    assert "scheduler not running" not in daily
    assert "not scheduled" in job_row(html, "always-fails")
    assert "The scheduler is running" in html


def test_it_reads_next_runs_in_the_configured_time_zone(registry, settings):
    settings.TIME_ZONE = "Europe/Paris"
    after = datetime(2026, 7, 1, 12, 0, tzinfo=UTC)

    when = jobs.next_run_time(registry["daily-backup"], after=after)

    assert when == datetime(2026, 7, 2, 0, 0, tzinfo=UTC)  # 02:00 in Paris, summer time


def test_it_shows_the_history_newest_first_with_failures_in_words(staff_client, registry):
    ok = make_run("daily-backup", "success", minutes_ago=30, result="database.sqlite.X.bak (1 MB)")
    failed = make_run(
        "always-fails",
        "failure",
        minutes_ago=10,
        error="Traceback\n  File x\nbackups_app.drill.DrillError: no backup to verify",
    )

    html = staff_client.get(URL).content.decode()

    rows = history_rows(html)
    assert len(rows) == 2
    assert "always-fails" in rows[0]
    # The error in words with what to do next; the traceback is one click away.
    assert "No backup to verify yet: make one with Back up now." in rows[0]
    assert "DrillError" not in rows[0]
    assert "Traceback" not in rows[0]
    assert f'href="/admin/cron/runs/{failed.pk}/#error-output"' in rows[0]
    assert "database.sqlite.X.bak (1 MB)" in rows[1].replace("<wbr>", "")
    assert f'href="/admin/cron/runs/{ok.pk}/"' in rows[1]
    assert "Error output" not in rows[1]


def test_it_shows_a_runs_details_with_its_whole_error_output(staff_client, registry):
    error = "Traceback (most recent call last):\n  File x\nRuntimeError: disk on fire <b>really</b>"
    run = make_run("always-fails", "failure", error=error, trigger="admin:staff")

    response = staff_client.get(f"/admin/cron/runs/{run.pk}/")

    assert response.status_code == 200
    html = response.content.decode()
    assert "Disk on fire &lt;b&gt;really&lt;/b&gt;." in html
    assert "(RuntimeError)" not in html
    assert (
        '<pre class="stanza-traceback">Traceback (most recent call last):\n  File x\n'
        "RuntimeError: disk on fire &lt;b&gt;really&lt;/b&gt;</pre>"
    ) in html
    assert "run by staff with Run now" in html
    assert 'action="/admin/cron/always-fails/run"' in html
    assert 'href="/admin/cron/?job=always-fails#history"' in html


def test_a_restore_run_is_not_offered_to_run_again(staff_client, registry):
    run = make_run("restore", "success", result="restored X", trigger="admin:staff")

    html = staff_client.get(f"/admin/cron/runs/{run.pk}/").content.decode()

    assert "by staff from the Backups page" in html
    assert "/admin/cron/restore/run" not in html
    assert staff_client.get("/admin/cron/runs/999999/").status_code == 404


def test_it_pages_the_history_fifty_at_a_time(staff_client, registry):
    CronRun.objects.bulk_create(
        CronRun(job_name="daily-backup", status="success", started_at=NOW - timedelta(hours=i))
        for i in range(120)
    )

    first = staff_client.get(URL).content.decode()
    third = staff_client.get(URL, {"page": 3}).content.decode()
    beyond = staff_client.get(URL, {"page": 99}).content.decode()
    junk = staff_client.get(URL, {"page": "x"})

    assert len(history_rows(first)) == 50
    assert "page 1 of 3" in first
    assert "120 runs" in first
    assert len(history_rows(third)) == 20
    assert "page 3 of 3" in beyond
    assert junk.status_code == 200


def test_it_filters_the_history_by_job_and_status(staff_client, registry):
    make_run("daily-backup", "success", minutes_ago=3)
    make_run("daily-backup", "failure", minutes_ago=2, error="boom")
    make_run("always-fails", "failure", minutes_ago=1, error="boom")

    by_job = staff_client.get(URL, {"job": "daily-backup"}).content.decode()
    by_both = staff_client.get(URL, {"job": "daily-backup", "status": "failure"}).content.decode()
    bad_status = staff_client.get(URL, {"status": "bogus"}).content.decode()

    assert len(history_rows(by_job)) == 2
    assert len(history_rows(by_both)) == 1
    assert '<option value="failure" selected>' in by_both
    assert len(history_rows(bad_status)) == 3


def test_it_offers_every_job_and_restores_in_the_filter_before_they_ran(staff_client, registry):
    html = staff_client.get(URL).content.decode()

    select = re.search(r'<select name="job".*?</select>', html, re.S).group(0)
    assert re.findall(r'<option value="([^"]*)"', select) == [
        "",
        "daily-backup",
        "always-fails",
        "restore",
        "delete-offsite",  # deleting an offsite copy from the delete page
    ]


@time_machine.travel(NOW, tick=False)
def test_a_job_that_never_ran_says_so_and_when_it_is_first_due(staff_client, registry, data_dir):
    make_run("always-fails", "success", minutes_ago=1)

    html = staff_client.get(URL).content.decode()

    cell = health_cell(html, "daily-backup")
    assert '<tr id="job-daily-backup" class="stanza-job-never-run">' in html
    assert ">never run</span>" in cell
    assert ">ok<" not in cell
    assert "first due" in cell and "2026-11-27 02:00:00 UTC" in cell


def test_it_keeps_the_filters_in_the_page_links(staff_client, registry):
    CronRun.objects.bulk_create(
        CronRun(job_name="daily-backup", status="failure", started_at=NOW - timedelta(hours=i))
        for i in range(60)
    )

    html = staff_client.get(URL, {"job": "daily-backup", "status": "failure"}).content.decode()

    assert 'href="?job=daily-backup&amp;status=failure&amp;page=2#history"' in html


def test_it_makes_the_same_queries_for_ten_runs_or_two_hundred(
    staff_client, registry, django_assert_num_queries
):
    def page_queries():
        from django.db import connection
        from django.test.utils import CaptureQueriesContext

        with CaptureQueriesContext(connection) as captured:
            assert staff_client.get(URL).status_code == 200
        return len(captured)

    for i in range(10):
        make_run("daily-backup", "failure", minutes_ago=i, error="boom")
    # Every job has run (a job that never ran costs one query for the database's age).
    make_run("always-fails", "failure", error="boom")
    few = page_queries()
    CronRun.objects.bulk_create(
        CronRun(job_name=name, status="failure", error="boom", started_at=NOW)
        for name in ("daily-backup", "always-fails", "old-job")
        for _ in range(70)
    )

    assert page_queries() == few


# --- Run now -------------------------------------------------------------------------------


def test_it_runs_a_job_now_and_says_how_it_went(staff_client, staff_user, registry):
    response = staff_client.post("/admin/cron/daily-backup/run", follow=True)

    assert response.redirect_chain == [(URL, 302)]
    run = CronRun.objects.get()
    assert run.status == "success"
    assert run.trigger == "admin:staff"
    assert "Job daily-backup succeeded: made it." in response.content.decode()
    entry = LogEntry.objects.get()
    assert entry.user == staff_user
    assert entry.object_id == str(run.pk)
    assert entry.change_message == "Ran job daily-backup by hand: success (made it)"


def test_it_shows_a_failed_run_now_as_an_error(staff_client, registry):
    response = staff_client.post("/admin/cron/always-fails/run", follow=True)

    html = response.content.decode()
    assert "Job always-fails failed. Disk on fire &lt;b&gt;really&lt;/b&gt;." in html
    run = CronRun.objects.get()
    assert run.status == "failure"
    assert "Traceback" in run.error


def test_it_answers_api_clients_with_the_run_as_json(staff_client, registry):
    ok = staff_client.post("/admin/cron/daily-backup/run", HTTP_ACCEPT="application/json")
    failed = staff_client.post("/admin/cron/always-fails/run", HTTP_ACCEPT="application/json")

    assert ok.status_code == 200
    assert ok.json() == {
        "job": "daily-backup",
        "status": "success",
        "result": "made it",
        "error": "",
    }
    assert failed.status_code == 500
    assert failed.json()["status"] == "failure"


def test_it_answers_404_for_an_unknown_job(staff_client, registry):
    assert staff_client.post("/admin/cron/no-such-job/run").status_code == 404
    assert not CronRun.objects.exists()


def test_it_does_not_run_jobs_on_get(staff_client, registry):
    assert staff_client.get("/admin/cron/daily-backup/run").status_code == 405
    assert not CronRun.objects.exists()


def test_it_runs_the_real_daily_backup(staff_client, backups_folder, live_database):
    response = staff_client.post("/admin/cron/daily-backup/run", follow=True)

    run = CronRun.objects.get()
    assert run.status == "success", run.error
    assert run.result.startswith("database.sqlite.")
    assert f"Job daily-backup succeeded: {run.result}." in response.content.decode()
    # the backup, its .sha256, its .json and its .media (the site has no files yet)
    assert len(os.listdir(backups_folder)) == 4


# --- health --------------------------------------------------------------------------------


def health_cell(html, name):
    cell = re.search(r'<td class="stanza-job-health"[^>]*>(.*?)</td>', job_row(html, name), re.S)
    return cell.group(1)


@time_machine.travel(NOW, tick=False)
def test_it_shows_failing_jobs_in_red_and_healthy_ones_plainly(staff_client, registry):
    make_run("daily-backup", "success", minutes_ago=30)
    make_run("always-fails", "failure", minutes_ago=5, error="boom")

    html = staff_client.get(URL).content.decode()

    assert '<tr id="job-always-fails" class="stanza-job-failing">' in html
    failing = health_cell(html, "always-fails")
    assert 'class="stanza-health stanza-health-failing"' in failing
    assert ">failing</span>" in failing
    assert '<tr id="job-daily-backup" class="stanza-job-ok">' in html
    ok = health_cell(html, "daily-backup")
    assert '<span class="stanza-health stanza-health-ok">ok</span>' in ok
    assert "grace 1 h" in ok


@time_machine.travel(NOW, tick=False)
def test_it_shows_a_job_that_missed_its_due_time_and_grace_as_late(staff_client, registry):
    registry["daily-backup"] = jobs.Job(
        "daily-backup", "0 2 * * *", lambda: "", "Back up", grace=timedelta(minutes=90)
    )
    make_run("daily-backup", "success", minutes_ago=60 * 31)  # yesterday 02:31; due today 02:00
    make_run("always-fails", "success", minutes_ago=1)

    html = staff_client.get(URL).content.decode()

    assert '<tr id="job-daily-backup" class="stanza-job-late">' in html
    late = health_cell(html, "daily-backup")
    assert 'class="stanza-health stanza-health-late"' in late
    assert "grace 1 h 30 min" in late
    assert ">ok</span>" in health_cell(html, "always-fails")


def test_it_shows_the_health_of_every_registered_job(staff_client, data_dir):
    html = staff_client.get(URL).content.decode()

    for name in jobs.registry():
        cell = health_cell(html, name)
        assert re.search(r">(ok|late|failing|never run)</span>", cell), name
        assert "grace " in cell


@pytest.mark.django_db
def test_the_history_is_counted_on_its_smallest_index():
    """The Cron page counts the whole history on every view: SQLite counts the index it thinks
    smallest, and ids alone are a quarter of started_at's (4 ms vs 16 ms at a million runs)."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    make_run(minutes_ago=2)
    make_run(minutes_ago=1)
    with CaptureQueriesContext(connection) as captured:
        assert CronRun.objects.count() == 2
    (count_sql,) = [q["sql"] for q in captured.captured_queries]
    with connection.cursor() as cursor:
        plan = " ".join(row[-1] for row in cursor.execute("EXPLAIN QUERY PLAN " + count_sql))

    assert "USING COVERING INDEX cron_runs_ids" in plan


@pytest.mark.django_db
def test_history_pages_in_the_older_half_are_read_from_the_oldest_end():
    """The same pages as Django's paginator gives, but the oldest page skips no rows at all."""
    from django.core.paginator import Paginator
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from backups_app.web.cron_views import HistoryPaginator

    for minutes in range(7):
        make_run(minutes_ago=minutes)
    runs = CronRun.objects.order_by("-started_at", "-id")
    ours, django_pages = HistoryPaginator(runs, 3), Paginator(runs, 3)

    for number in (1, 2, 3):
        assert list(ours.page(number)) == list(django_pages.page(number))
    with CaptureQueriesContext(connection) as captured:
        oldest = ours.page(3)
    ids_query = next(q["sql"] for q in captured.captured_queries if "LIMIT" in q["sql"])

    assert [run.started_at for run in oldest] == [NOW - timedelta(minutes=6)]
    assert 'ORDER BY "cron_runs"."started_at" ASC' in ids_query
    assert "OFFSET" not in ids_query
