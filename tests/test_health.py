import os
from datetime import UTC, datetime, timedelta

import pytest
from django.core.management import call_command
from django.db.migrations.recorder import MigrationRecorder

from backups_app.engine.backups import create_backup
from backups_app.health import health
from backups_app.jobs import jobs
from backups_app.models import CronRun, DrillRun
from backups_app.restore import drill
from tests.conftest import finished_run, make_database, write_backup_file

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def utc(settings):
    settings.TIME_ZONE = "UTC"


@pytest.fixture
def fresh_backup(data_dir, backups_folder):
    return make_backup(data_dir, backups_folder, age=timedelta(hours=8))


def make_backup(data_dir, folder, *, age, label=""):
    source = data_dir / "database.sqlite"
    if not source.exists():
        make_database(source, rows=10)
    backup = create_backup(source, folder=folder, label=label)
    stamp = (NOW - age).timestamp()
    os.utime(backup.path, (stamp, stamp))
    return backup


def database_created_at(when):
    MigrationRecorder.Migration.objects.update(applied=when)


run = finished_run


@pytest.fixture
def jobs_on_time():
    """Every registered job ran a minute ago, and the database is a week old."""
    database_created_at(NOW - timedelta(days=7))
    for name in jobs.registry():
        run(name, NOW - timedelta(minutes=1))


def test_it_is_healthy(fresh_backup, jobs_on_time):
    assert health.problems(NOW) == []


def test_it_reports_no_backup(backups_folder, jobs_on_time):
    assert health.problems(NOW) == ["no backup"]


def test_it_reports_an_old_backup(data_dir, backups_folder, jobs_on_time):
    make_backup(data_dir, backups_folder, age=timedelta(hours=27))

    assert health.problems(NOW) == ["newest backup older than 26 hours"]


def test_an_uploaded_file_does_not_count_as_a_backup(data_dir, backups_folder, jobs_on_time):
    make_backup(data_dir, backups_folder, age=timedelta(hours=1), label="uploaded")

    assert health.problems(NOW) == ["no backup"]


def drilled(backup, ok, at):
    return DrillRun.objects.create(
        backup_name=backup.name, backup_size=backup.size, finished_at=at, ok=ok, restore_seconds=1
    )


def test_it_reports_a_failed_drill(fresh_backup, jobs_on_time):
    drilled(fresh_backup, False, NOW)

    assert health.problems(NOW) == ["restore drill failed"]


def test_only_the_newest_drill_counts(data_dir, backups_folder, fresh_backup, jobs_on_time):
    older = make_backup(data_dir, backups_folder, age=timedelta(hours=30))
    drilled(older, False, datetime(2026, 11, 25, 3, tzinfo=UTC))
    drilled(fresh_backup, True, datetime(2026, 11, 26, 3, tzinfo=UTC))

    assert health.problems(NOW) == []


def test_it_keeps_a_failed_drill_among_many_newer_backups(data_dir, backups_folder, jobs_on_time):
    """A site making a backup every half hour: the drill's verdict is what the drill recorded,
    not found among the newest backups' manifests (it was lost past the newest 20)."""
    failed = make_backup(data_dir, backups_folder, age=timedelta(hours=20))
    with pytest.raises(drill.DrillError):
        corrupt_and_drill(failed)
    for half_hour in range(30):
        made = NOW - timedelta(minutes=30 * half_hour + 5)
        write_backup_file(backups_folder, f"database.sqlite.{made:%Y%m%dT%H%M%SZ}.bak", age=None)
        os.utime(
            backups_folder / f"database.sqlite.{made:%Y%m%dT%H%M%SZ}.bak", (made.timestamp(),) * 2
        )

    assert health.problems(NOW) == ["restore drill failed"]


def corrupt_and_drill(backup):
    backup.path.write_bytes(b"not a database any more")
    drill.verify_latest_backup()


def test_it_reports_a_failing_job(fresh_backup, jobs_on_time):
    run("daily-backup", NOW, status=CronRun.Status.FAILURE)

    assert health.problems(NOW) == ["job daily-backup failing"]


def test_a_job_is_late_when_a_due_time_and_its_grace_passed(fresh_backup, jobs_on_time):
    CronRun.objects.filter(job_name="daily-backup").delete()
    run("daily-backup", datetime(2026, 11, 25, 2, 0, 3, tzinfo=UTC))
    due = datetime(2026, 11, 26, 2, 0, tzinfo=UTC)

    assert health.job_states(due + timedelta(minutes=59))["daily-backup"] == "ok"
    assert health.job_states(due + timedelta(minutes=61))["daily-backup"] == "late"
    assert "job daily-backup late" in health.problems(NOW)


def test_a_run_at_the_due_time_itself_counts(fresh_backup, jobs_on_time):
    CronRun.objects.filter(job_name="daily-backup").delete()
    run("daily-backup", datetime(2026, 11, 26, 2, 0, 0, tzinfo=UTC))

    assert health.job_states(NOW)["daily-backup"] == "ok"


def test_a_job_that_never_ran_is_late_only_after_the_database_is_old_enough(fresh_backup):
    CronRun.objects.all().delete()

    database_created_at(NOW - timedelta(hours=2))  # after today's 02:00
    assert health.job_states(NOW)["daily-backup"] == "ok"

    database_created_at(NOW - timedelta(days=1))  # yesterday 10:00, before today's 02:00
    assert health.job_states(NOW)["daily-backup"] == "late"


def test_schedules_are_read_in_the_configured_time_zone(settings):
    settings.TIME_ZONE = "Europe/Paris"
    job = jobs.Job(name="x", schedule="0 2 * * *", func=str, description="")

    due = jobs.next_run_time(job, NOW)

    assert due.astimezone(UTC) == datetime(2026, 11, 27, 1, 0, tzinfo=UTC)


# --- /healthz -----------------------------------------------------------------------------


def test_healthz_says_ok(client, fresh_backup, jobs_on_time, time_machine):
    time_machine.move_to(NOW, tick=False)

    response = client.get("/healthz")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert "no-cache" in response["Cache-Control"]


def test_healthz_names_the_problems_without_details(client, data_dir, time_machine):
    time_machine.move_to(NOW, tick=False)
    database_created_at(NOW - timedelta(days=7))
    run("daily-backup", NOW, status=CronRun.Status.FAILURE)

    response = client.get("/healthz")

    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "failing"
    assert "no backup" in body["problems"]
    assert "job daily-backup failing" in body["problems"]
    assert str(data_dir) not in response.content.decode()


def test_healthz_reports_an_unreadable_backups_folder(client, settings, tmp_path, jobs_on_time):
    settings.STANZA_BACKUPS_DIR = tmp_path / "missing"

    response = client.get("/healthz")

    assert response.status_code == 503
    assert response.json()["problems"][0] == "backups folder unreadable"
    assert "missing" not in response.content.decode()


def test_healthz_only_answers_get(client, fresh_backup):
    assert client.post("/healthz").status_code == 405


# --- checkbackups -------------------------------------------------------------------------


def test_checkbackups_exits_0_when_healthy(fresh_backup, jobs_on_time, time_machine, capsys):
    time_machine.move_to(NOW, tick=False)

    call_command("checkbackups")

    out = capsys.readouterr().out.splitlines()
    assert out[0] == "OK: backups are healthy"
    assert out[1].startswith("Recovery point: 8 hours.")


def test_checkbackups_exits_1_with_the_problems(backups_folder, jobs_on_time, time_machine, capsys):
    time_machine.move_to(NOW, tick=False)
    run("daily-backup", NOW, status=CronRun.Status.FAILURE)

    with pytest.raises(SystemExit) as exit_info:
        call_command("checkbackups")

    assert exit_info.value.code == 1
    out = capsys.readouterr().out
    assert out.startswith("FAILING: no backup; job daily-backup failing\n")
    assert "- no backup\n- job daily-backup failing\n" in out


# --- one verdict everywhere ---------------------------------------------------------------


def problems_shown(html):
    """The problems a page's health summary lists, by their words."""
    import re

    summary = re.search(r'<section class="stanza-health-summary.*?</section>', html, re.S)
    return re.findall(r'<li data-problem="([^"]*)">', summary.group(0))


def test_every_page_shows_the_verdict_healthz_gives(admin_client, data_dir, time_machine):
    time_machine.move_to(NOW, tick=False)
    database_created_at(NOW - timedelta(days=7))
    run("daily-backup", NOW, status=CronRun.Status.FAILURE, error="OSError: disk full")

    expected = admin_client.get("/healthz").json()["problems"]

    assert expected[:2] == ["no backup", "job daily-backup failing"]
    for url in ("/admin/", "/admin/backups/", "/admin/cron/"):
        html = admin_client.get(url).content.decode()
        assert problems_shown(html) == expected, url
        assert (
            'No backup yet: make one with <a href="/admin/backups/#backup-now">Back up now' in html
        )
        assert "Job daily-backup failed its last run. Disk full. Free some space" in html
        assert "OSError" not in html


def test_a_fresh_install_is_not_shown_as_healthy(admin_client, data_dir, time_machine):
    # Just migrated, nothing ran: no backup, and no job is "ok" before it ran.
    time_machine.move_to(NOW, tick=False)
    database_created_at(NOW - timedelta(minutes=5))

    html = admin_client.get("/admin/cron/").content.decode()

    assert admin_client.get("/healthz").status_code == 503
    assert problems_shown(html) == ["no backup"]
    assert "Backups are healthy" not in html
    assert html.count('stanza-health-never">never run</span>') == len(jobs.registry())
    assert 'class="stanza-health stanza-health-ok"' not in html


def test_a_never_run_job_says_when_it_is_first_due(data_dir):
    database_created_at(NOW - timedelta(minutes=5))

    verdict = health.verdict(NOW)

    daily = verdict.jobs["daily-backup"]
    assert daily.state == health.NEVER_RUN
    assert daily.due == datetime(2026, 11, 27, 2, 0, tzinfo=UTC)
    assert health.job_states(NOW)["daily-backup"] == "ok"  # alerts: nothing to report


def test_problem_sources_can_be_added(fresh_backup, jobs_on_time, monkeypatch):
    sources = health.problem_sources()
    monkeypatch.setattr(
        health, "problem_sources", lambda replica=None: {**sources, "more": offsite_behind}
    )

    verdict = health.verdict(NOW)

    assert verdict.words == ["offsite copies behind"]
    assert verdict.problems[0].sentence == "Offsite copies are 3 backups behind: check the store."
    assert health.problems(NOW) == ["offsite copies behind"]


def offsite_behind(now):
    return [
        health.Problem(
            "offsite copies behind", "Offsite copies are 3 backups behind: check the store."
        )
    ]
