"""Are the backups healthy? One verdict for /healthz, `checkbackups`, the Cron page and alerts."""

import logging
from datetime import UTC, datetime, timedelta

from django.db.migrations.recorder import MigrationRecorder
from django.utils import timezone

from backups_app import backups, drill, jobs, replication
from backups_app.backups import BackupError
from backups_app.models import CronRun

logger = logging.getLogger(__name__)

MAX_BACKUP_AGE = timedelta(hours=26)
OK, FAILING, LATE = "ok", "failing", "late"


def problems(now=None):
    """The problems with the backups, in a few words each; an empty list means healthy."""
    now = now or timezone.now()
    found = backup_problems(now)
    for name, state in job_states(now).items():
        if state != OK:
            found.append(f"job {name} {state}")
    return found + replication.problems(now)


def backup_problems(now):
    try:
        listed = backups.list_backups()
    except BackupError:
        return ["backups folder unreadable"]
    # An uploaded file proves nothing about this machine's own backups.
    own = [b for b in listed if b.label != "uploaded"]
    found = []
    if not own:
        found.append("no backup")
    elif now - own[0].modified > MAX_BACKUP_AGE:
        found.append("newest backup older than 26 hours")
    newest_drill = drill.latest_drill(listed)
    if newest_drill is not None and not newest_drill.get("ok"):
        found.append("restore drill failed")
    return found


def job_states(now=None):
    """{job name: "ok" | "failing" | "late"} for every registered job."""
    now = now or timezone.now()
    registry = jobs.registry()
    latest = CronRun.objects.latest_per_job(registry)
    created = None
    states = {}
    for name, job in registry.items():
        run = latest.get(name)
        if run is not None and run.status == CronRun.Status.FAILURE:
            states[name] = FAILING
            continue
        if run is not None:
            since = run.started_at
        else:
            created = created or database_created()
            since = created
        states[name] = LATE if overdue_since(job, since, now) else OK
    return states


def overdue_since(job, since, now):
    """The first due time after `since` whose grace has run out by `now`, or None."""
    if since is None:
        return None
    due = jobs.next_run_time(job, since)
    if due is not None and due + job.grace <= now:
        return due
    return None


def database_created():
    """When the database was created: its first migration, else None."""
    first = (
        MigrationRecorder.Migration.objects.order_by("applied")
        .values_list("applied", flat=True)
        .first()
    )
    if first is not None:
        return first if timezone.is_aware(first) else first.replace(tzinfo=UTC)
    path = backups.live_database_path()
    try:
        return datetime.fromtimestamp(path.stat().st_ctime, UTC)
    except OSError:
        return None
