from datetime import UTC, datetime, timedelta

import pytest
from django.core.management import call_command
from django.db.migrations.recorder import MigrationRecorder

from backups_app import signals
from backups_app.health import alerts
from backups_app.jobs import jobs
from backups_app.models import AlertState, CronRun
from tests.conftest import finished_run, free_port, smtp_inbox

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)


@pytest.fixture
def smtp(settings):
    """A real SMTP server on loopback, with Django's SMTP backend pointed at it."""
    with smtp_inbox() as inbox:
        settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
        settings.EMAIL_HOST = "127.0.0.1"
        settings.EMAIL_PORT = inbox.port
        settings.EMAIL_USE_TLS = False
        settings.EMAIL_HOST_USER = ""
        settings.EMAIL_HOST_PASSWORD = ""
        settings.STANZA_ALERT_EMAILS = ["ops@example.com"]
        settings.TIME_ZONE = "UTC"
        yield inbox


@pytest.fixture
def jobs_on_time():
    MigrationRecorder.Migration.objects.update(applied=NOW - timedelta(days=7))
    for name in jobs.registry():
        finished_run(name, NOW - timedelta(minutes=1))


def fail(job_name="daily-backup", when=NOW):
    run = finished_run(
        job_name,
        when,
        CronRun.Status.FAILURE,
        error="Traceback (most recent call last):\nBackupError: disk full while writing",
    )
    alerts.notify_run_finished(run)
    return run


def succeed(job_name="daily-backup", when=NOW):
    run = finished_run(job_name, when)
    alerts.notify_run_finished(run)
    return run


def test_it_sends_one_email_per_failure_and_one_per_recovery(smtp, jobs_on_time):
    fail()
    fail()
    fail()
    assert smtp.subjects == ["[Stanza Backups] job daily-backup failed"]
    assert smtp.messages[0]["To"] == "ops@example.com"
    assert "disk full while writing" in smtp.messages[0].get_payload()

    succeed()
    succeed()
    assert smtp.subjects == [
        "[Stanza Backups] job daily-backup failed",
        "[Stanza Backups] job daily-backup recovered",
    ]

    fail()
    assert len(smtp.messages) == 3


def test_a_first_success_sends_nothing(smtp, jobs_on_time):
    succeed()

    assert smtp.messages == []
    assert AlertState.objects.get(job_name="daily-backup").state == "ok"


def test_it_sends_one_email_when_a_job_becomes_late_and_one_when_it_runs(smtp, jobs_on_time):
    CronRun.objects.filter(job_name="daily-backup").delete()
    finished_run("daily-backup", NOW - timedelta(days=2))

    alerts.check_lateness(NOW)
    alerts.check_lateness(NOW + timedelta(minutes=5))
    alerts.check_lateness(NOW + timedelta(minutes=10))

    assert smtp.subjects == ["[Stanza Backups] job daily-backup is late"]
    assert "runscheduler" in smtp.messages[0].get_payload()

    succeed(when=NOW + timedelta(minutes=11))
    alerts.check_lateness(NOW + timedelta(minutes=15))

    assert smtp.subjects[1:] == ["[Stanza Backups] job daily-backup recovered"]


def test_a_late_job_that_then_fails_sends_a_failure(smtp, jobs_on_time):
    CronRun.objects.filter(job_name="daily-backup").delete()
    finished_run("daily-backup", NOW - timedelta(days=2))
    alerts.check_lateness(NOW)

    fail(when=NOW + timedelta(minutes=1))
    alerts.check_lateness(NOW + timedelta(minutes=5))

    assert smtp.subjects == [
        "[Stanza Backups] job daily-backup is late",
        "[Stanza Backups] job daily-backup failed",
    ]


def test_lateness_checks_also_catch_failures_no_one_reported(smtp, jobs_on_time):
    finished_run("daily-backup", NOW, CronRun.Status.FAILURE, error="boom")

    alerts.check_lateness(NOW)
    alerts.check_lateness(NOW)

    assert smtp.subjects == ["[Stanza Backups] job daily-backup failed"]


def test_an_email_that_could_not_be_sent_is_sent_at_the_next_check(smtp, settings, jobs_on_time):
    settings.EMAIL_PORT = free_port()  # nobody listens there

    fail()

    alert = AlertState.objects.get(job_name="daily-backup")
    assert alert.state == "failing"
    assert alert.notified_state == "ok"

    settings.EMAIL_PORT = smtp.port
    alerts.check_lateness(NOW + timedelta(minutes=5))
    alerts.check_lateness(NOW + timedelta(minutes=10))

    assert smtp.subjects == ["[Stanza Backups] job daily-backup failed"]


def test_without_admins_nothing_is_sent_but_the_state_is_kept(smtp, settings, jobs_on_time):
    settings.STANZA_ALERT_EMAILS = []

    fail()
    settings.STANZA_ALERT_EMAILS = ["ops@example.com"]
    fail()

    assert smtp.messages == []
    assert AlertState.objects.get(job_name="daily-backup").notified_state == "failing"


def test_runs_of_things_that_are_not_jobs_send_nothing(smtp, jobs_on_time):
    fail(job_name="restore")

    assert smtp.messages == []
    assert not AlertState.objects.filter(job_name="restore").exists()


def test_checkbackups_notify_sends_the_alerts(smtp, backups_folder, jobs_on_time, time_machine):
    time_machine.move_to(NOW, tick=False)
    finished_run("daily-backup", NOW, CronRun.Status.FAILURE, error="boom")

    with pytest.raises(SystemExit):
        call_command("checkbackups", "--notify")

    assert smtp.subjects == ["[Stanza Backups] job daily-backup failed"]


def test_a_real_failed_run_mails_through_the_run_finished_signal(
    smtp, jobs_on_time, settings, tmp_path
):
    settings.STANZA_BACKUPS_DIR = tmp_path / "gone"

    run = jobs.run_job("daily-backup")

    assert run.status == CronRun.Status.FAILURE
    assert smtp.subjects == ["[Stanza Backups] job daily-backup failed"]


def test_a_failing_receiver_never_fails_the_run(smtp, jobs_on_time, caplog):
    def broken(sender, run, **kwargs):
        raise RuntimeError("receiver bug")

    signals.run_finished.connect(broken)
    try:
        run = jobs.run_job("purge-old-cron-runs")
    finally:
        signals.run_finished.disconnect(broken)

    assert run.status == CronRun.Status.SUCCESS
    assert "receiver bug" in caplog.text
