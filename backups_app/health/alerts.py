"""Email STANZA_ALERT_EMAILS once when a job fails or becomes late, and once more when it recovers.

The state of each job (ok, failing, late) and what the admins were last told about it live in
`AlertState`, so restarts never repeat an email, and an email that could not be sent (SMTP
down) is sent at the next check.
"""

import logging

from django.conf import settings
from django.core.mail import get_connection, send_mail
from django.db import transaction
from django.utils import timezone

from backups_app import conf
from backups_app.health import health
from backups_app.jobs import jobs
from backups_app.models import AlertState, CronRun

logger = logging.getLogger(__name__)

SMTP_TIMEOUT = 30
ERROR_LINES = 20


def notify_run_finished(run):
    """Call after each run of a job: a failure or a recovery changes its state (and mails)."""
    if run.job_name not in jobs.registry():  # e.g. a restore from the page: not a job
        return
    if run.status == CronRun.Status.FAILURE:
        _set_state(run.job_name, AlertState.State.FAILING, run=run)
    elif run.status == CronRun.Status.SUCCESS:
        _set_state(run.job_name, AlertState.State.OK, run=run)


def check_lateness(now=None):
    """Bring every job's state up to date (late, failing, ok) and send what is pending.

    Called periodically (by the scheduler, or `checkbackups --notify` from cron) so a job
    that stops running, which no run can report, still raises an alert.
    """
    now = now or timezone.now()
    latest = CronRun.objects.latest_per_job(jobs.registry())
    for name, state in health.job_states(now).items():
        _set_state(name, state, run=latest.get(name), now=now)
    for name, found in source_problems(now).items():
        state = AlertState.State.FAILING if found else AlertState.State.OK
        _set_state(name, state, now=now)


def source_problems(now):
    """{alert name: problems} of each health problem source (offsite copies, replication).

    A source's alert name ("offsite", "replication") is kept beside the jobs' names in
    AlertState, so each problem is mailed once and its recovery once.
    """
    return {name: source(now) for name, source in health.problem_sources().items()}


def _set_state(job_name, state, *, run=None, now=None):
    now = now or timezone.now()
    # One write transaction (IMMEDIATE on SQLite), so when two processes see the same change
    # only the first claims its notice.
    with transaction.atomic():
        alert, created = AlertState.objects.get_or_create(
            job_name=job_name,
            defaults={"state": state, "changed_at": now, "notified_state": AlertState.State.OK},
        )
        if not created and alert.state != state:
            alert.state = state
            alert.changed_at = now
            alert.save(update_fields=("state", "changed_at"))
        told = (alert.notified_state, alert.notified_at)
        if not alert.needs_notice:
            return alert
        alert.notified_state, alert.notified_at = state, now
        alert.save(update_fields=("notified_state", "notified_at"))
    if not _send_notice(alert, told[0], run, now):
        # Give the claim back: the next check sends it.
        AlertState.objects.filter(id=alert.id, notified_state=state, notified_at=now).update(
            notified_state=told[0], notified_at=told[1]
        )
    return alert


def _send_notice(alert, previous, run, now):
    """Email STANZA_ALERT_EMAILS about the job's new state; False when it could not be sent."""
    recipients = conf.get("STANZA_ALERT_EMAILS")
    if not recipients:
        return True
    subject, body = _message(alert, previous, run, now)
    timeout = getattr(settings, "EMAIL_TIMEOUT", None) or SMTP_TIMEOUT
    try:
        send_mail(
            subject,
            body,
            settings.SERVER_EMAIL,
            recipients,
            connection=get_connection(timeout=timeout),
        )
    except Exception:
        logger.exception("could not send the alert for job %s", alert.job_name)
        return False
    logger.info(
        "alert sent for job %s: %s",
        alert.job_name,
        alert.state,
        extra={"event": "alert", "job": alert.job_name, "state": alert.state},
    )
    return True


def _message(alert, previous, run, now):
    name = alert.job_name
    if name not in jobs.registry() and name in health.problem_sources():
        subject, lines = _source_message(alert, previous, now)
    elif alert.state == AlertState.State.FAILING:
        subject = f"[Stanza Backups] job {name} failed"
        lines = [f"The last run of job {name} failed."]
        if run is not None and run.error:
            lines += ["", "Error (last lines):", *run.error.strip().splitlines()[-ERROR_LINES:]]
    elif alert.state == AlertState.State.LATE:
        subject = f"[Stanza Backups] job {name} is late"
        job = jobs.registry().get(name)
        lines = [f"Job {name} has not run when it was due."]
        if job is not None:
            lines.append(f"Schedule: {job.schedule} ({settings.TIME_ZONE}), grace {job.grace}.")
        if run is not None:
            lines.append(f"Last run started at {run.started_at:%Y-%m-%d %H:%M:%S %Z}.")
        lines.append("Is the scheduler (manage.py runscheduler) running?")
    else:
        subject = f"[Stanza Backups] job {name} recovered"
        lines = [f"Job {name} is back to normal (it was {previous})."]
        if run is not None and run.result:
            lines.append(f"Last run: {run.result}")
    lines += ["", f"Checked at {now:%Y-%m-%d %H:%M:%S %Z}."]
    return subject, "\n".join(lines) + "\n"


def _source_message(alert, previous, now):
    """Offsite copies or replication: the problems in words, each with what to do next."""
    name = alert.job_name
    if alert.state == AlertState.State.OK:
        return f"[Stanza Backups] {name} recovered", [
            f"{name} is back to normal (it was {previous})."
        ]
    found = source_problems(now).get(name) or [f"{name} is not healthy"]
    lines = []
    for problem in found:
        lines.append(str(problem))
        if getattr(problem, "advice", ""):
            lines.append(problem.advice)
    return f"[Stanza Backups] {name} is failing: {found[0]}", lines
