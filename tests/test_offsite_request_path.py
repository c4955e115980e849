"""Nothing on a request waits for the offsite store (issue 17), and a store that accepts
connections and never answers costs a job one line, not minutes (issue 18 item 7).

The store here is real enough to hurt: a listener on loopback that accepts every connection
and never answers (`hanging_store`), which is what a hung store or a broken network looks like.
"""

import os
import subprocess
import sys
import time

import pytest
from django.contrib.admin.models import LogEntry
from django.core.management import call_command
from django.utils import timezone

from backups_app.engine.backups import create_backup
from backups_app.health import health
from backups_app.jobs import jobs
from backups_app.models import CronRun
from backups_app.offsite import state
from backups_app.offsite import store as offsite_store
from backups_app.offsite.copies import OffsiteCopy
from tests.conftest import MANAGE, live_env, make_database, read_runs

pytestmark = pytest.mark.django_db

GONE = "database.sqlite.20261101T020000Z.bak"  # a copy whose local backup was purged


@pytest.fixture
def offsite_hung(settings, hanging_store, data_dir):
    settings.STANZA_OFFSITE_URL = "s3://stanza-hung/site-a"
    settings.FILE_UPLOAD_TEMP_DIR = data_dir / "tmp"
    return hanging_store


@pytest.fixture
def old_backup(data_dir, backups_folder):
    """The newest backup, made two hours ago: old enough for health to ask about its copy."""
    make_database(data_dir / "database.sqlite", rows=10)
    backup = create_backup(data_dir / "database.sqlite", folder=backups_folder)
    when = time.time() - 2 * 3600
    os.utime(backup.path, (when, when))
    return backup


def record_copies(*copies):
    """What a copy-offsite run that reached the store records (the job's own writer)."""
    with state.recording() as record:
        record.listed({})
        for name, key, size in copies:
            now = timezone.now()
            record.copied(OffsiteCopy(name, key, size, now, now))


def test_it_answers_healthz_without_asking_a_hung_store(client, offsite_hung, old_backup):
    response = client.get("/healthz")

    assert response.status_code == 503
    assert "offsite copy behind" in response.json()["problems"]
    assert offsite_hung.accepted == []


def test_health_reads_what_the_last_copy_recorded(offsite_hung, old_backup):
    assert "offsite copy behind" in health.problems()

    record_copies((old_backup.name, old_backup.name, old_backup.size))

    assert "offsite copy behind" not in health.problems()
    assert offsite_hung.accepted == []


def test_the_backups_page_shows_the_recorded_copies_without_asking_a_hung_store(
    staff_client, offsite_hung, old_backup
):
    record_copies((old_backup.name, old_backup.name, old_backup.size), (GONE, GONE + ".age", 99))

    response = staff_client.get("/admin/backups/")

    page = response.content.decode()
    assert response.status_code == 200
    assert "here and offsite" in page
    assert 'id="offsite-only"' in page and GONE in page and "encrypted" in page
    assert offsite_hung.accepted == []


def test_checkbackups_judges_offsite_copies_without_asking_a_hung_store(
    offsite_hung, old_backup, capsys
):
    with pytest.raises(SystemExit) as exited:
        call_command("checkbackups")

    assert exited.value.code == 1
    assert "- offsite copy behind" in capsys.readouterr().out
    assert offsite_hung.accepted == []


def test_a_record_of_another_store_is_not_believed(offsite_hung, old_backup, settings):
    record_copies((old_backup.name, old_backup.name, old_backup.size))

    settings.STANZA_OFFSITE_URL = "s3://another-bucket/site-a"

    assert "offsite copy behind" in health.problems()


def test_a_fifo_or_garbage_as_the_record_is_no_record(offsite_hung, old_backup):
    path = state.state_path()
    path.parent.mkdir(mode=0o700)
    os.mkfifo(path)  # would block a reader that opened it plainly

    assert "offsite copy behind" in health.problems()

    record_copies((old_backup.name, old_backup.name, old_backup.size))  # replaces the FIFO

    assert "offsite copy behind" not in health.problems()
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    path.write_text("[1, 2")
    assert state.recorded() == state.Recorded()


def test_it_makes_one_client_per_process(offsite_hung):
    store = offsite_store.storage()

    assert offsite_store.storage() is store
    assert store.client.meta.config.read_timeout == offsite_store.READ_TIMEOUT
    assert store.client.meta.config.retries["total_max_attempts"] == offsite_store.ATTEMPTS


# --- Back up now, the daily backup and two copies at once --------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_bad_offsite_url_fails_only_the_copy(
    staff_client, settings, backups_folder, live_database, monkeypatch
):
    """A host site's STANZA_OFFSITE_URL that is not s3://...: Back up now and the daily backup
    still succeed (with their audit row); the copy's own run fails, naming the setting."""
    settings.STANZA_OFFSITE_URL = "https://bucket.example/prefix"
    started = []
    real = jobs.copy_offsite_soon
    # Its thread is started after the request here: the test database lives in memory, where
    # SQLite's shared cache locks whole tables rather than waiting like a real file.
    monkeypatch.setattr(jobs, "copy_offsite_soon", lambda: started.append(real))

    response = staff_client.post("/admin/database/backup", HTTP_ACCEPT="application/json")

    assert response.status_code == 200, response.content
    assert LogEntry.objects.filter(change_message__startswith="Made backup").exists()
    daily = jobs.run_job("daily-backup")
    assert daily.status == CronRun.Status.SUCCESS, daily.error
    assert len(started) == 2
    for start in started:
        start().join(60)
    runs = CronRun.objects.filter(job_name="copy-offsite")
    assert [run.status for run in runs] == [CronRun.Status.FAILURE] * 2
    assert all("STANZA_OFFSITE_URL" in run.error_summary for run in runs)


@pytest.mark.django_db(transaction=True)
def test_a_copy_after_a_backup_while_one_runs_is_recorded_as_skipped(
    settings, data_dir, hanging_store
):
    settings.STANZA_OFFSITE_URL = "s3://stanza-hung/site-a"
    going = CronRun.start("copy-offsite", "scheduler")  # this process: alive

    jobs.copy_offsite_soon().join(60)

    skipped = CronRun.objects.exclude(pk=going.pk).get()
    assert (skipped.status, skipped.trigger) == (CronRun.Status.SKIPPED, "after backup")
    assert skipped.result.startswith("skipped: the previous run of copy-offsite (started ")
    assert health.job_states()["copy-offsite"] == "ok"  # running, not failing
    assert hanging_store.accepted == []


@pytest.mark.slow  # real runjob processes, each waiting out the hung store
def test_two_runjobs_meet_a_hung_store_within_30_s_with_one_line(live_data, hanging_store):
    env = {
        **os.environ,
        **live_env(live_data),
        **hanging_store.env,
        "STANZA_OFFSITE_URL": "s3://stanza-hung/site-a",
    }
    env.pop("DJANGO_SETTINGS_MODULE", None)
    started = time.monotonic()
    processes = [
        subprocess.Popen(
            [sys.executable, str(MANAGE), "runjob", "copy-offsite"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=120) for p in processes]
    seconds = time.monotonic() - started

    # The store's wait is the run's own recorded duration; the wall time adds two start-ups of
    # Django on a machine that may be loaded, and only has to be far from a hang (about 240 s).
    assert seconds < 90, f"{seconds:.1f} s"
    assert [p.returncode for p in processes] == [1, 1]
    lines = sorted(err.strip().splitlines()[-1] for _out, err in outputs)
    assert lines[0].startswith("CommandError: copy-offsite did not run: skipped: the previous")
    assert lines[1].startswith("CommandError: copy-offsite failed: the offsite ")
    assert "did not answer within" in lines[1]
    assert all("Traceback" not in err for _out, err in outputs)
    runs = read_runs(live_data, "copy-offsite")
    assert sorted(run["status"] for run in runs) == ["failure", "skipped"]
    (failed,) = [run for run in runs if run["status"] == "failure"]
    assert failed["duration"] < 30_000_000, failed["duration"]  # microseconds in SQLite
    assert hanging_store.accepted  # the job did meet it
