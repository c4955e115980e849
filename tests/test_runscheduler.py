"""`runscheduler` in real processes against a real database file.

A job falls due without waiting for the clock: the scheduler resumes from the due time its job
store holds, so setting that time to the last minute boundary is a due time that passed while
the scheduler was stopped (a restart), which it runs at once.
"""

import fcntl
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from apscheduler.events import EVENT_JOB_MAX_INSTANCES, JobSubmissionEvent
from django_apscheduler.models import DjangoJob

from backups_app.jobs import jobs
from backups_app.management.commands import runscheduler
from backups_app.models import CronRun
from tests.conftest import (
    MANAGE,
    hold_jobs,
    live_env,
    read_runs,
    release,
    smtp_inbox,
    wait_until,
)

EVERY_MINUTE = "* * * * *"


class Scheduler:
    """A `manage.py runscheduler` process whose log lines are collected as they come."""

    def __init__(self, folder, **env):
        full_env = {**os.environ, **live_env(folder, **env)}
        full_env.pop("DJANGO_SETTINGS_MODULE", None)
        self.proc = subprocess.Popen(
            [sys.executable, str(MANAGE), "runscheduler"],
            env=full_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.pid = self.proc.pid
        self.lines = []
        self.reader = threading.Thread(target=self.read, daemon=True)
        self.reader.start()

    def read(self):
        for line in self.proc.stdout:
            self.lines.append(line)

    @property
    def output(self):
        return "".join(self.lines)

    def wait_for(self, text, timeout=60):
        def logged():
            return text in self.output

        logged.__name__ = f"{text!r} in the log of pid {self.pid}"
        wait_until(logged, timeout)

    def signal(self, signum=signal.SIGTERM):
        self.proc.send_signal(signum)

    def wait(self, timeout=60):
        returncode = self.proc.wait(timeout)
        self.reader.join(timeout)
        return returncode


@pytest.fixture
def schedulers():
    """Start schedulers with `schedulers(folder, **env)`; any left running are killed after."""
    started = []

    def start(folder, **env):
        scheduler = Scheduler(folder, **env)
        started.append(scheduler)
        return scheduler

    yield start
    for scheduler in started:
        if scheduler.proc.poll() is None:
            scheduler.proc.kill()
            scheduler.wait()


def last_minute_boundary():
    return datetime.now(UTC).replace(second=0, microsecond=0)


def set_stored_due_time(folder, job_id, when):
    """Write the due time the job store holds for a job, as a scheduler that stopped left it."""
    conn = sqlite3.connect(folder / "database.sqlite", timeout=20)
    try:
        with conn:
            updated = conn.execute(
                "UPDATE django_apscheduler_djangojob SET next_run_time = ? WHERE id = ?",
                (when.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S"), job_id),
            ).rowcount
    finally:
        conn.close()
    assert updated == 1


def stored_job_ids(folder):
    conn = sqlite3.connect(folder / "database.sqlite", timeout=20)
    try:
        return {row[0] for row in conn.execute("SELECT id FROM django_apscheduler_djangojob")}
    finally:
        conn.close()


def lock_is_free(folder):
    fd = os.open(folder / "scheduler.lock", os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)


def start_with_due_job(schedulers, folder, job_id, **env):
    """A scheduler that finds `job_id` due at once (its due time passed while none ran).

    Returns the scheduler and that due time.
    """
    first = schedulers(folder, **env)
    first.wait_for("scheduler started")
    first.signal()
    assert first.wait() == 0
    due = last_minute_boundary()
    set_stored_due_time(folder, job_id, due)
    return schedulers(folder, **env), due


def finished_runs(folder):
    return [run for run in read_runs(folder) if run["status"] != "running"]


def one_run_per_due_time(runs):
    counts = Counter((run["job_name"], run["due_at"]) for run in runs)
    return all(n == 1 for n in counts.values())


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
@pytest.mark.slow  # real scheduler processes
def test_it_logs_each_jobs_next_run_and_stops_cleanly(live_data, schedulers, signum):
    scheduler = schedulers(live_data)
    scheduler.wait_for("scheduler started")

    scheduler.signal(signum)

    assert scheduler.wait() == 0
    log = scheduler.output
    assert "job daily-backup (0 2 * * *) next runs at " in log
    assert "job purge-old-backups (30 2 * * *) next runs at " in log
    assert "job purge-old-cron-runs (0 4 * * 0) next runs at " in log
    assert "job verify-latest-backup (0 3 * * *) next runs at " in log
    assert "scheduler stopped" in log
    assert "Traceback" not in log
    assert lock_is_free(live_data)
    assert stored_job_ids(live_data) == {
        "daily-backup",
        "purge-old-backups",
        "purge-old-cron-runs",
        "verify-latest-backup",
    }


@pytest.mark.slow  # real scheduler processes
def test_it_removes_stored_jobs_that_left_the_registry(live_data, schedulers):
    scheduler = schedulers(live_data)
    scheduler.wait_for("scheduler started")
    scheduler.signal()
    scheduler.wait()
    conn = sqlite3.connect(live_data / "database.sqlite")
    with conn:
        conn.execute(
            "INSERT INTO django_apscheduler_djangojob (id, next_run_time, job_state) "
            "VALUES ('old-job', NULL, x'')"
        )
    conn.close()

    scheduler = schedulers(live_data)
    scheduler.wait_for("scheduler started")
    scheduler.signal()

    assert scheduler.wait() == 0
    assert "removed 1 stored job(s) that are no longer in the registry" in scheduler.output
    assert "old-job" not in stored_job_ids(live_data)


@pytest.mark.slow  # real scheduler processes
def test_it_runs_a_due_job_and_records_it(live_data, schedulers):
    scheduler, due = start_with_due_job(
        schedulers, live_data, "daily-backup", STANZA_BACKUP_SCHEDULE=EVERY_MINUTE
    )

    run = wait_until(lambda: finished_runs(live_data))[0]
    scheduler.signal()

    assert scheduler.wait() == 0
    assert "was due at" in scheduler.output
    assert (run["status"], run["trigger"], run["pid"]) == ("success", "scheduler", scheduler.pid)
    due_at = datetime.fromisoformat(run["due_at"]).replace(tzinfo=UTC)
    assert due_at in (due, due + timedelta(minutes=1))  # a boundary may pass meanwhile
    made = sorted(p.name for p in (live_data / "backups").glob("*.bak"))
    assert run["result"].startswith(made[0])
    assert len(made) == len(finished_runs(live_data))  # one more if a boundary passed
    assert "job daily-backup succeeded" in scheduler.output


@pytest.mark.slow  # real scheduler processes
def test_sigterm_lets_the_running_job_finish(live_data, schedulers):
    fifo = hold_jobs(live_data / "backups")
    scheduler, _ = start_with_due_job(
        schedulers, live_data, "purge-old-backups", STANZA_PURGE_SCHEDULE=EVERY_MINUTE
    )
    wait_until(lambda: read_runs(live_data, "purge-old-backups"))

    scheduler.signal()
    scheduler.wait_for("stopping: waiting for purge-old-backups to finish")
    assert scheduler.proc.poll() is None
    release(fifo)

    assert scheduler.wait() == 0
    first = read_runs(live_data, "purge-old-backups")[0]
    assert first["status"] == "success"
    assert "scheduler stopped" in scheduler.output


@pytest.mark.slow  # real scheduler processes
def test_a_second_signal_abandons_the_running_job_and_records_it(live_data, schedulers):
    hold_jobs(live_data / "backups")
    scheduler, _ = start_with_due_job(
        schedulers, live_data, "purge-old-backups", STANZA_PURGE_SCHEDULE=EVERY_MINUTE
    )
    wait_until(lambda: read_runs(live_data, "purge-old-backups"))

    scheduler.signal()
    scheduler.wait_for("stopping: waiting for purge-old-backups to finish")
    scheduler.signal(signal.SIGINT)

    assert scheduler.wait() == 1
    assert "1 running job(s) abandoned and recorded as interrupted" in scheduler.output
    run = read_runs(live_data, "purge-old-backups")[0]
    assert run["status"] == "failure"
    assert run["error"] == "interrupted: the scheduler was stopped before the run finished"


@pytest.mark.slow  # real scheduler processes
def test_a_standby_takes_over_from_a_killed_scheduler_without_running_a_due_time_twice(
    live_data, schedulers
):
    fifo = hold_jobs(live_data / "backups")
    env = {"STANZA_PURGE_SCHEDULE": EVERY_MINUTE}
    first, _ = start_with_due_job(schedulers, live_data, "purge-old-backups", **env)
    wait_until(lambda: read_runs(live_data, "purge-old-backups"))
    standby = schedulers(live_data, **env)
    standby.wait_for(f"another scheduler is running (pid {first.pid}); waiting to take over")

    first.proc.kill()
    first.wait()
    fifo.unlink()
    standby.wait_for("scheduler started")
    standby.signal()

    assert standby.wait() == 0
    assert "closed 1 run(s) left running by a process that died" in standby.output
    runs = read_runs(live_data, "purge-old-backups")
    killed = runs[0]
    assert (killed["pid"], killed["status"]) == (first.pid, "failure")
    assert killed["error"] == (
        f"interrupted: the process that ran it (pid {first.pid} on {socket.gethostname()}) "
        "ended before the run finished"
    )
    # The standby resumes from the next due time: the killed one is not run again.
    assert one_run_per_due_time(runs)
    # Runs after the killed one are the standby's, or (when the held run straddled a minute
    # boundary under load) the first scheduler's record that it skipped a due time.
    assert all(run["pid"] == standby.pid or run["status"] == "skipped" for run in runs[1:])


@pytest.mark.slow
def test_two_schedulers_run_each_due_job_once(live_data, schedulers):
    """Two schedulers on one database, two jobs due at once (due times that passed)."""
    env = {"STANZA_BACKUP_SCHEDULE": EVERY_MINUTE, "STANZA_PURGE_SCHEDULE": EVERY_MINUTE}
    once = schedulers(live_data, **env)  # fills the job store, then stops
    once.wait_for("scheduler started")
    once.signal()
    assert once.wait() == 0
    due = last_minute_boundary()
    for job_id in ("daily-backup", "purge-old-backups"):
        set_stored_due_time(live_data, job_id, due)
    first = schedulers(live_data, **env)
    first.wait_for("scheduler started")
    second = schedulers(live_data, **env)
    second.wait_for("waiting to take over")

    def both_jobs_ran():
        done = {run["job_name"] for run in finished_runs(live_data)}
        return done >= {"daily-backup", "purge-old-backups"}

    wait_until(both_jobs_ran)
    first.signal()
    assert first.wait() == 0
    second.wait_for("scheduler started")
    second.signal()
    assert second.wait() == 0

    runs = read_runs(live_data)
    assert one_run_per_due_time(runs)
    assert {r["status"] for r in runs} == {"success"}
    ran_first = {r["job_name"] for r in runs if r["pid"] == first.pid}
    assert ran_first >= {"daily-backup", "purge-old-backups"}
    backups_made = [r for r in runs if r["job_name"] == "daily-backup"]
    assert len(list((live_data / "backups").glob("*.bak"))) == len(backups_made)
    # Only the scheduler holding the lock ran jobs while both were up.
    assert runs[0]["pid"] == first.pid
    assert "scheduler started" in second.output


@pytest.mark.slow  # real scheduler processes
def test_a_standby_stops_cleanly_while_it_waits(live_data, schedulers):
    first = schedulers(live_data)
    first.wait_for("scheduler started")
    standby = schedulers(live_data)
    standby.wait_for("waiting to take over")

    standby.signal()

    assert standby.wait() == 0
    assert "stopped while waiting for the other scheduler" in standby.output
    assert first.proc.poll() is None


@pytest.mark.django_db
def test_it_records_a_due_time_skipped_because_the_previous_run_is_still_going(data_dir):
    previous = CronRun.start("purge-old-backups", "scheduler")
    due = datetime(2026, 11, 26, 2, 31, tzinfo=UTC)
    event = JobSubmissionEvent(EVENT_JOB_MAX_INSTANCES, "purge-old-backups", "default", [due])

    runscheduler.Command().on_skipped(event)

    skipped = CronRun.objects.exclude(pk=previous.pk).get()
    assert (skipped.status, skipped.trigger, skipped.due_at) == ("skipped", "scheduler", due)
    assert skipped.result.startswith("skipped: the previous run of purge-old-backups (started ")


@pytest.mark.django_db
def test_it_resumes_from_a_stored_due_time_only_if_the_schedule_still_has_it(settings):
    settings.STANZA_BACKUP_SCHEDULE = "0 2 * * *"
    job = jobs.registry()["daily-backup"]
    stored = DjangoJob.objects.create(
        id="daily-backup", next_run_time=datetime(2026, 11, 26, 2, 0, tzinfo=UTC), job_state=b""
    )
    command = runscheduler.Command()

    assert command.stored_due_time(job) == stored.next_run_time

    settings.STANZA_BACKUP_SCHEDULE = "0 3 * * *"  # changed while the scheduler was stopped
    assert command.stored_due_time(jobs.registry()["daily-backup"]) is None


@pytest.mark.slow  # real scheduler processes
def test_it_mails_the_admins_when_a_job_is_late(live_data, schedulers):
    """A job that never runs cannot report itself: the running scheduler notices and mails."""
    conn = sqlite3.connect(live_data / "database.sqlite")
    with conn:  # a database made three days ago, on which no job has run since
        conn.execute("UPDATE django_migrations SET applied = datetime('now', '-3 days')")
    conn.close()
    with smtp_inbox() as inbox:
        scheduler = schedulers(
            live_data,
            STANZA_ALERT_EMAILS="ops@example.com",
            EMAIL_HOST="127.0.0.1",
            EMAIL_PORT=str(inbox.port),
        )
        wait_until(lambda: "[Stanza Backups] job daily-backup is late" in inbox.subjects)
        scheduler.signal()
        assert scheduler.wait() == 0

    assert inbox.messages[0]["To"] == "ops@example.com"
    assert "Traceback" not in scheduler.output
    assert "no longer exists" not in scheduler.output
