"""How fast the dashboard pages are with a million runs of history and thousands of backups.

Run by hand: `python bench/dashboard.py [ROWS] [BACKUP_FILES]` (defaults 1000000 and 5000).
Builds everything in a temporary data folder; prints medians of a few requests per page (wall
and CPU time), with the backups folder read afresh for each request and with its listing reused
(as while the folder does not change), and the query plans of the Cron page's queries.
"""

import os
import sqlite3
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta

from _common import django_in_new_data_dir

ROWS = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
BACKUP_FILES = int(sys.argv[2]) if len(sys.argv) > 2 else 5000
JOBS = ("daily-backup", "purge-old-backups", "purge-old-cron-runs", "verify-latest-backup")

# /metrics answers the scraper below.
tmp = django_in_new_data_dir("stanza-bench-", STANZA_METRICS_TOKEN="bench-token")

from django.conf import settings  # noqa: E402
from django.contrib.auth.models import User  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402
from django.test import Client  # noqa: E402
from django.test.utils import CaptureQueriesContext  # noqa: E402

from backups_app.engine import backups, listing  # noqa: E402


def build():
    call_command("migrate", verbosity=0)
    started = time.monotonic()
    db = sqlite3.connect(settings.DATABASES["default"]["NAME"])
    start = datetime(2020, 1, 1, tzinfo=UTC)
    error = "Traceback (most recent call last):\n" + "  File ...\n" * 20 + "OSError: boom\n"

    def rows():
        for i in range(ROWS):
            failed = i % 20 == 0
            when = start + timedelta(minutes=i)
            yield (
                JOBS[i % len(JOBS)],
                when.isoformat(" "),
                (when + timedelta(seconds=3)).isoformat(" "),
                3_000_000,
                "failure" if failed else "success",
                "" if failed else "database.sqlite.20200101T020000Z.bak (120.0 MB)",
                error if failed else "",
                "scheduler",
                "bench",
                1,
                "",
            )

    db.execute("BEGIN")
    db.executemany(
        "INSERT INTO cron_runs (job_name, started_at, finished_at, duration, status, result,"
        " error, trigger, hostname, pid, process_start) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        rows(),
    )
    db.execute(  # the last restore drill: /metrics and the Backups page read its record
        "INSERT INTO drill_runs (backup_name, backup_size, finished_at, ok, problems,"
        " restore_seconds) VALUES ('database.sqlite.20200101T020000Z.bak', 120000000,"
        " '2020-01-02 03:00:00', 1, '', 12.5)"
    )
    db.execute("COMMIT")
    db.execute("ANALYZE")
    db.close()
    folder = backups.backups_dir()
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(BACKUP_FILES):
        name = f"database.sqlite.{(start + timedelta(hours=i)):%Y%m%dT%H%M%SZ}.bak"
        (folder / name).write_bytes(b"x")
        (folder / (name + ".sha256")).write_text("0" * 64 + f"  {name}\n")
    print(f"built {ROWS} runs and {BACKUP_FILES} backups in {time.monotonic() - started:.1f} s")


def timed(client, url, repeat=5, status=200):
    """Print the page's median time twice: each request reading the backups folder afresh (the
    first view after the folder changed), and reusing the listing (the folder unchanged)."""
    # One request first, as a running server has served before: the first request of a process
    # compiles templates and URL patterns (~50 ms more, on whichever page happens to be first).
    client.get(url)
    medians = {}
    for fresh in (True, False):
        times, cpu = [], []
        for _ in range(repeat):
            if fresh:
                listing._listings.clear()
            started, started_cpu = time.monotonic(), time.process_time()
            response = client.get(url)
            times.append(time.monotonic() - started)
            cpu.append(time.process_time() - started_cpu)
            assert response.status_code == status, (url, response.status_code)
        medians[fresh] = (statistics.median(times) * 1000, statistics.median(cpu) * 1000)
    with CaptureQueriesContext(connection) as captured:
        client.get(url)
    queries = list(captured.captured_queries)
    # CPU time too: on a shared machine the wall time also counts other processes' turns.
    (fresh_ms, fresh_cpu), (reused_ms, reused_cpu) = medians[True], medians[False]
    print(
        f"{url:<58} {fresh_ms:6.1f} ms (cpu {fresh_cpu:5.1f}) fresh"
        f"  {reused_ms:6.1f} ms (cpu {reused_cpu:5.1f}) reused  {len(queries)} queries"
    )
    return queries


def main():
    build()
    time.sleep(backups.SETTLED_SECONDS + 0.5)  # a folder that just changed is read every time
    user = User.objects.create_user("bench", password="x", is_staff=True, is_superuser=True)
    client = Client(HTTP_HOST="localhost")
    client.force_login(user)
    queries = timed(client, "/admin/cron/")
    timed(client, "/admin/cron/?page=2")
    filtered = timed(client, "/admin/cron/?job=daily-backup&status=failure")
    timed(client, "/admin/cron/?status=failure&page=100")
    timed(client, f"/admin/cron/?page={ROWS // 50 // 2}", repeat=3)
    timed(client, "/admin/backups_app/cronrun/")
    timed(client, "/admin/backups_app/cronrun/?status__exact=failure")
    timed(client, "/admin/backups_app/cronrun/?job_name=daily-backup")
    timed(client, f"/admin/cron/runs/{ROWS // 2}/")
    timed(client, "/admin/backups/")
    timed(client, "/admin/backups/?page=50")
    newest = sorted(os.listdir(backups.backups_dir()))[-2]  # the newest backup's name
    timed(client, f"/admin/backups/delete/{newest}")
    timed(client, f"/admin/backups/restore/{newest}")
    timed(client, "/admin/")
    timed(client, "/healthz", status=503)  # the bench's backups are old: it says so
    # What /healthz reads, as Prometheus text, as a scraper asks for it (no session).
    scraper = Client(HTTP_HOST="localhost", HTTP_AUTHORIZATION="Bearer bench-token")
    timed(scraper, "/metrics")

    print("\nCron page queries, unfiltered then filtered by job and status (ms, plan):")
    with connection.cursor() as cursor:
        for query in queries + filtered:
            sql = query["sql"]
            if "cron_runs" not in sql:
                continue
            started = time.monotonic()
            cursor.execute(sql)
            cursor.fetchall()
            took = (time.monotonic() - started) * 1000
            plan = cursor.execute("EXPLAIN QUERY PLAN " + sql).fetchall()
            print(f"{took:8.1f}  {sql[:150]}")
            for row in plan:
                print(f"          {row[-1]}")


if __name__ == "__main__":
    main()
