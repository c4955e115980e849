import json
import logging
import os
import signal
import socket
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django_apscheduler.models import DjangoJob, DjangoJobExecution

from backups_app.core.processes import process_identity
from backups_app.health import health
from backups_app.jobs import jobs
from backups_app.models import CronRun
from stanza_site.logformat import JsonFormatter
from tests.conftest import MANAGE, hold_jobs, live_env, manage, read_runs, release, wait_until

pytestmark = pytest.mark.django_db

FAILURE, RUNNING, SUCCESS = CronRun.Status.FAILURE, CronRun.Status.RUNNING, CronRun.Status.SUCCESS
SKIPPED = CronRun.Status.SKIPPED


def dead_pid():
    """The pid of a process that has ended (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def old_run(job_name="purge-old-backups", **fields):
    fields = {"hostname": socket.gethostname(), "pid": os.getpid(), **fields}
    return CronRun.objects.create(job_name=job_name, **fields)


# --- the registry ---------------------------------------------------------------------------


def test_it_declares_the_jobs_with_schedules_from_the_settings(settings):
    settings.STANZA_BACKUP_SCHEDULE = "15 1 * * *"
    settings.STANZA_PURGE_SCHEDULE = "45 1 * * *"

    registry = jobs.registry()

    assert list(registry) == [
        "daily-backup",
        "purge-old-backups",
        "purge-old-cron-runs",
        "verify-latest-backup",
    ]
    assert registry["daily-backup"].schedule == "15 1 * * *"
    assert registry["purge-old-backups"].schedule == "45 1 * * *"
    assert registry["purge-old-cron-runs"].schedule == "0 4 * * 0"
    assert registry["verify-latest-backup"].schedule == "0 3 * * *"
    assert all(job.name == name and job.description for name, job in registry.items())


# --- due times ------------------------------------------------------------------------------


def test_it_reads_cron_expressions_in_the_configured_time_zone(settings):
    settings.TIME_ZONE = "Europe/Paris"
    job = jobs.registry()["daily-backup"]  # 0 2 * * *
    after = datetime(2026, 11, 26, 1, 30, tzinfo=UTC)  # 02:30 in Paris

    next_time = jobs.next_run_time(job, after)

    assert next_time == datetime(2026, 11, 27, 2, 0, tzinfo=ZoneInfo("Europe/Paris"))
    assert next_time == datetime(2026, 11, 27, 1, 0, tzinfo=UTC)
    assert jobs.previous_due_time(job, after) == datetime(2026, 11, 26, 1, 0, tzinfo=UTC)


def test_it_gives_the_next_due_time_strictly_after_and_the_previous_one_at_or_before(settings):
    job = jobs.registry()["daily-backup"]
    due = datetime(2026, 11, 26, 2, 0, tzinfo=UTC)

    assert jobs.next_run_time(job, due - timedelta(microseconds=1)) == due
    assert jobs.next_run_time(job, due) == due + timedelta(days=1)
    assert jobs.previous_due_time(job, due) == due
    assert jobs.previous_due_time(job, due - timedelta(microseconds=1)) == due - timedelta(days=1)
    assert jobs.previous_due_time(job, due + timedelta(hours=23)) == due


def test_it_defaults_the_next_due_time_to_after_now(time_machine):
    time_machine.move_to(datetime(2026, 11, 29, 12, 0, tzinfo=UTC), tick=False)
    weekly = jobs.registry()["purge-old-cron-runs"]  # 0 4 * * 0: Sundays

    assert jobs.next_run_time(weekly) == datetime(2026, 12, 6, 4, 0, tzinfo=UTC)
    assert jobs.previous_due_time(weekly, datetime.now(UTC)) == datetime(
        2026, 11, 29, 4, 0, tzinfo=UTC
    )


@pytest.mark.parametrize(
    ("schedule", "after", "expected"),
    [
        # Cron counts weekdays from Sunday (0 or 7); 2026-11-26 is a Thursday.
        ("0 4 * * 0", "2026-11-26T00:00:00+00:00", "2026-11-29T04:00:00+00:00"),
        ("0 4 * * 7", "2026-11-26T00:00:00+00:00", "2026-11-29T04:00:00+00:00"),
        ("0 4 * * sun", "2026-11-26T00:00:00+00:00", "2026-11-29T04:00:00+00:00"),
        ("0 2 * * 1-5", "2026-11-27T03:00:00+00:00", "2026-11-30T02:00:00+00:00"),
        ("0 2 * * 5-7", "2026-11-24T03:00:00+00:00", "2026-11-27T02:00:00+00:00"),
        ("0 2 * * */3", "2026-11-26T03:00:00+00:00", "2026-11-28T02:00:00+00:00"),
        # Day of month and day of week both restricted: cron runs on either.
        ("0 0 1 * 1", "2026-11-26T00:00:00+00:00", "2026-11-30T00:00:00+00:00"),
        ("0 0 1 * 1", "2026-11-30T00:00:00+00:00", "2026-12-01T00:00:00+00:00"),
        ("0 0 1 * *", "2026-11-26T00:00:00+00:00", "2026-12-01T00:00:00+00:00"),
    ],
)
def test_it_reads_cron_expressions_as_cron_does(settings, schedule, after, expected):
    settings.STANZA_BACKUP_SCHEDULE = schedule
    job = jobs.registry()["daily-backup"]

    next_time = jobs.next_run_time(job, datetime.fromisoformat(after))

    assert next_time == datetime.fromisoformat(expected)
    assert jobs.previous_due_time(job, next_time + timedelta(seconds=59)) == next_time


@pytest.mark.parametrize(
    ("schedule", "before", "expected"),
    [
        ("* * * * *", "2026-11-26T02:00:59.9+00:00", "2026-11-26T02:00:00+00:00"),
        ("*/5 * * * *", "2026-11-26T02:04:00+00:00", "2026-11-26T02:00:00+00:00"),
        ("* 2 * * *", "2026-11-26T01:00:00+00:00", "2026-11-25T02:59:00+00:00"),
        ("0 0 1 * *", "2026-03-31T23:59:59+00:00", "2026-03-01T00:00:00+00:00"),
        ("0 0 29 2 *", "2031-01-01T00:00:00+00:00", "2028-02-29T00:00:00+00:00"),
        ("0 0 31 2 *", "2026-11-26T00:00:00+00:00", None),  # never falls due
    ],
)
def test_it_finds_the_previous_due_time_of_any_schedule(schedule, before, expected):
    # Built directly: the settings refuse a schedule that never falls due before a job has it.
    job = jobs.Job(name="daily-backup", schedule=schedule, func=str, description="")

    found = jobs.previous_due_time(job, datetime.fromisoformat(before))

    assert found == (datetime.fromisoformat(expected) if expected else None)


# --- the recording wrapper ------------------------------------------------------------------


def test_it_records_a_successful_run(data_dir):
    run = jobs.run_job("purge-old-backups", trigger="button")

    run.refresh_from_db()
    assert run.status == SUCCESS
    assert run.result == "kept none; deleted 0"
    assert run.error == ""
    assert run.trigger == "button"
    assert run.finished_at >= run.started_at
    assert run.duration == run.finished_at - run.started_at
    assert (run.hostname, run.pid) == (socket.gethostname(), os.getpid())
    assert run.process_start == process_identity()


def test_it_records_a_job_that_raises_with_its_traceback(data_dir, settings):
    settings.STANZA_BACKUPS_DIR = data_dir / "vanished"

    run = jobs.run_job("purge-old-backups")

    run.refresh_from_db()
    assert run.status == FAILURE
    assert run.result == ""
    assert run.error.startswith("Traceback (most recent call last):")
    assert "retention/purge.py" in run.error
    assert run.error_summary == f"backups folder {data_dir / 'vanished'} does not exist"
    assert run.finished_at is not None


def test_it_records_an_interrupted_run_and_lets_the_interrupt_through(data_dir, monkeypatch):
    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr("backups_app.retention.purge.purge_old_backups", interrupted)

    with pytest.raises(KeyboardInterrupt):
        jobs.run_job("purge-old-backups")

    run = CronRun.objects.get()
    assert run.status == FAILURE
    assert run.error.startswith("interrupted: the process was stopped during the run")


def test_it_writes_one_structured_log_line_per_run(data_dir, caplog):
    with caplog.at_level(logging.INFO, logger="backups_app.jobs.jobs"):
        run = jobs.run_job("purge-old-backups")

    (record,) = [r for r in caplog.records if r.name == "backups_app.jobs.jobs"]
    entry = json.loads(JsonFormatter().format(record))
    assert entry["event"] == "job_run"
    assert entry["job"] == "purge-old-backups"
    assert entry["status"] == "success"
    assert entry["run_id"] == run.pk
    assert entry["result"] == run.result
    assert entry["message"].startswith("job purge-old-backups succeeded in ")


def test_it_logs_a_failure_with_its_error(data_dir, settings, caplog):
    settings.STANZA_BACKUPS_DIR = data_dir / "vanished"

    with caplog.at_level(logging.INFO, logger="backups_app.jobs.jobs"):
        jobs.run_job("purge-old-backups")

    (record,) = [r for r in caplog.records if r.name == "backups_app.jobs.jobs"]
    assert record.levelname == "ERROR"
    assert record.status == "failure"
    assert "does not exist" in record.getMessage()
    assert record.error.startswith("Traceback")


# --- runs left behind, overlapping runs, due times ------------------------------------------


def test_it_closes_a_run_whose_process_died_when_the_job_runs_again(data_dir):
    dead = old_run(pid=dead_pid(), process_start="")

    run = jobs.run_job("purge-old-backups")

    dead.refresh_from_db()
    assert dead.status == FAILURE
    assert dead.error.startswith(f"interrupted: the process that ran it (pid {dead.pid} on ")
    assert dead.finished_at is not None
    assert run.status == SUCCESS


def test_it_tells_a_reused_pid_from_the_process_that_made_the_run(data_dir):
    boot, _, ticks = process_identity().partition("/")
    reused = old_run(process_start=f"{boot}/{int(ticks) - 1}")  # this pid, an earlier process
    before_reboot = old_run(job_name="daily-backup", process_start=f"other-boot/{ticks}")
    alive = old_run(job_name="purge-old-cron-runs", process_start=process_identity())
    elsewhere = old_run(job_name="daily-backup", hostname="another-host", pid=dead_pid())

    assert CronRun.objects.close_interrupted() == 2

    statuses = {r.pk: r.status for r in CronRun.objects.all()}
    assert statuses == {
        reused.pk: FAILURE,
        before_reboot.pk: FAILURE,
        alive.pk: RUNNING,
        elsewhere.pk: RUNNING,  # another machine: we cannot tell, so we leave it
    }


def test_it_skips_a_run_while_the_previous_one_is_still_going(data_dir, backups_folder):
    previous = old_run(process_start=process_identity())  # this process: alive
    old = backups_folder / "database.sqlite.20200101T000000Z.bak"
    old.write_bytes(b"old")
    (backups_folder / "database.sqlite.20200102T000000Z.bak").write_bytes(b"old")
    os.utime(old, (0, 0))

    run = jobs.run_job("purge-old-backups")

    assert run.status == SKIPPED  # not a failure: nothing failed
    assert run.result.startswith("skipped: the previous run of purge-old-backups (started ")
    assert run.result.endswith(f"pid {os.getpid()} on {socket.gethostname()}) is still running")
    assert run.error == ""
    assert old.exists()  # the job did not run
    previous.refresh_from_db()
    assert previous.status == RUNNING


def test_a_skipped_run_neither_fails_the_job_nor_hides_the_failure_it_waited_for(data_dir):
    going = old_run(process_start=process_identity())  # this process: alive

    skipped = jobs.run_job("purge-old-backups")

    assert skipped.status == SKIPPED
    assert health.job_states()["purge-old-backups"] == "ok"  # one is running: not failing
    going.finish(FAILURE, error="RuntimeError: boom")
    assert health.job_states()["purge-old-backups"] == "failing"  # the skip does not hide it


def test_it_runs_a_job_once_per_due_time(data_dir):
    due = datetime(2026, 11, 26, 2, 30, tzinfo=UTC)

    first = jobs.run_job("purge-old-backups", trigger="scheduler", due_at=due)
    second = jobs.run_job("purge-old-backups", trigger="scheduler", due_at=due)
    third = jobs.run_job("purge-old-backups", trigger="scheduler", due_at=due + timedelta(days=1))

    assert first.status == SUCCESS
    assert second is None
    assert third.status == SUCCESS
    assert CronRun.objects.filter(job_name="purge-old-backups").count() == 2


def test_the_scheduler_entry_point_records_the_due_time(data_dir, time_machine):
    time_machine.move_to(datetime(2026, 11, 26, 2, 30, 0, 400_000, tzinfo=UTC), tick=False)

    jobs.run_scheduled("purge-old-backups")
    jobs.run_scheduled("purge-old-backups")  # a second scheduler, or a replay: not run again

    run = CronRun.objects.get()
    assert (run.trigger, run.status) == ("scheduler", SUCCESS)
    assert run.due_at == datetime(2026, 11, 26, 2, 30, tzinfo=UTC)


def test_it_records_a_skipped_due_time_once(data_dir):
    old_run(process_start=process_identity())
    due = datetime(2026, 11, 26, 2, 30, tzinfo=UTC)

    skipped = CronRun.objects.record_skipped("purge-old-backups", "scheduler", due)

    assert skipped.status == SKIPPED
    assert "still running" in skipped.result
    assert CronRun.objects.record_skipped("purge-old-backups", "scheduler", due) is None


def test_it_purges_run_history_older_than_ninety_days(data_dir, time_machine):
    time_machine.move_to(datetime(2026, 8, 1, tzinfo=UTC), tick=False)
    old_run(status=SUCCESS)
    stored = DjangoJob.objects.create(id="daily-backup", job_state=b"")
    DjangoJobExecution.objects.create(
        job=stored, status=DjangoJobExecution.SUCCESS, run_time=datetime.now(UTC)
    )
    time_machine.move_to(datetime(2026, 8, 30, tzinfo=UTC), tick=False)
    kept = old_run(status=SUCCESS)
    time_machine.move_to(datetime(2026, 11, 26, tzinfo=UTC), tick=False)

    run = jobs.run_job("purge-old-cron-runs")

    assert run.result == "deleted 1 run and 1 scheduler execution record older than 90 days"
    assert set(CronRun.objects.values_list("pk", flat=True)) == {kept.pk, run.pk}
    assert not DjangoJobExecution.objects.exists()


# --- runjob ---------------------------------------------------------------------------------


def test_runjob_lists_the_known_jobs_for_an_unknown_name():
    with pytest.raises(CommandError) as caught:
        call_command("runjob", "nightly")

    assert str(caught.value) == (
        "unknown job 'nightly'; known jobs: daily-backup, purge-old-backups, purge-old-cron-runs, "
        "verify-latest-backup"
    )
    assert not CronRun.objects.exists()


def test_runjob_fails_with_one_line_when_the_job_fails(data_dir, settings):
    settings.STANZA_BACKUPS_DIR = data_dir / "vanished"

    with pytest.raises(CommandError) as caught:
        call_command("runjob", "purge-old-backups")

    assert str(caught.value) == (  # no exception class name
        f"purge-old-backups failed: backups folder {data_dir / 'vanished'} does not exist"
    )
    assert CronRun.objects.get().status == FAILURE


@pytest.mark.slow  # real runjob processes
def test_runjob_backs_up_the_live_database_in_a_real_process(live_data):
    result = manage("runjob", "daily-backup", env=live_env(live_data))

    assert result.returncode == 0, result.stderr
    (backup,) = (live_data / "backups").glob("*.bak")
    assert result.stdout.startswith(f"daily-backup: {backup.name} (")
    assert "job daily-backup succeeded" in result.stderr


def start_runjob(folder, name):
    env = {**os.environ, **live_env(folder)}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    return subprocess.Popen(
        [sys.executable, str(MANAGE), "runjob", name],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def running(folder):
    return [r for r in read_runs(folder) if r["status"] == "running"]


@pytest.mark.slow  # real runjob processes
def test_a_killed_run_is_closed_as_interrupted_when_the_job_runs_again(live_data):
    fifo = hold_jobs(live_data / "backups")
    held = start_runjob(live_data, "purge-old-backups")
    (run,) = wait_until(lambda: running(live_data))
    held.kill()
    held.communicate()
    fifo.unlink()

    result = manage("runjob", "purge-old-backups", env=live_env(live_data))

    assert result.returncode == 0, result.stderr
    killed, again = read_runs(live_data)
    assert killed["id"] == run["id"]
    assert killed["status"] == "failure"
    assert killed["error"] == (
        f"interrupted: the process that ran it (pid {held.pid} on {socket.gethostname()}) "
        "ended before the run finished"
    )
    assert killed["finished_at"] is not None
    assert again["status"] == "success"


@pytest.mark.slow  # real runjob processes
def test_a_run_while_another_process_runs_the_job_is_skipped_not_failed(live_data):
    fifo = hold_jobs(live_data / "backups")
    held = start_runjob(live_data, "purge-old-backups")
    wait_until(lambda: running(live_data))

    second = manage("runjob", "purge-old-backups", env=live_env(live_data))
    release(fifo)
    held.communicate(timeout=60)

    assert second.returncode == 1
    assert second.stderr.splitlines()[-1].startswith(
        "CommandError: purge-old-backups did not run: skipped: the previous run of "
        "purge-old-backups (started "
    )
    assert f"pid {held.pid} on" in second.stderr
    assert held.returncode == 0
    first, skipped = read_runs(live_data)
    assert (first["status"], first["pid"]) == ("success", held.pid)
    assert skipped["status"] == "skipped"
    assert not fifo.exists()


@pytest.mark.slow  # real runjob processes
def test_sigterm_stops_runjob_and_records_the_run_as_interrupted(live_data):
    hold_jobs(live_data / "backups")
    held = start_runjob(live_data, "purge-old-backups")
    wait_until(lambda: running(live_data))

    held.send_signal(signal.SIGTERM)
    _, stderr = held.communicate(timeout=60)

    assert held.returncode == 1
    assert stderr.splitlines()[-1] == "CommandError: purge-old-backups was interrupted"
    (run,) = read_runs(live_data)
    assert run["status"] == "failure"
    assert run["error"].startswith("interrupted: the process was stopped during the run")
