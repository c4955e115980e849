"""The registry of scheduled jobs, and the one wrapper that records every run in CronRun.

The scheduler, `runjob`, the Cron page and the admin all read `registry()`: a job is
declared once.
"""

import logging
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import close_old_connections
from django.utils import timezone

from backups_app import backups
from backups_app.models import CronRun

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Job:
    name: str
    schedule: str  # 5-field cron expression, read in settings.TIME_ZONE
    func: Callable[[], str]  # does the work; returns the one-line result
    description: str
    timeout: timedelta = timedelta(hours=1)
    grace: timedelta = timedelta(hours=1)


def daily_backup():
    backup = backups.create_backup()
    return f"{backup.name} ({backups.human_size(backup.size)})"


def registry():
    """Every job, by name, with schedules from the settings of this process."""
    jobs = [
        Job(
            name="daily-backup",
            schedule=settings.STANZA_BACKUP_SCHEDULE,
            func=daily_backup,
            description="Back up the database into the backups folder",
        ),
    ]
    return {job.name: job for job in jobs}


def next_run_time(job, after=None):
    """When the job is next due after `after` (default: now), from its cron expression."""
    from apscheduler.triggers.cron import CronTrigger

    trigger = CronTrigger.from_crontab(job.schedule, timezone=settings.TIME_ZONE)
    return trigger.get_next_fire_time(None, after or timezone.now())


def run_job(name, trigger="manual"):
    """Run one job now, recorded in CronRun like a scheduled run; return the finished run."""
    job = registry()[name]
    close_old_connections()
    run = CronRun.start(job.name, trigger=trigger)
    started = time.monotonic()
    try:
        result = job.func() or ""
    except Exception as err:
        run.finish(CronRun.Status.FAILURE, error=traceback.format_exc())
        logger.error(
            "job %s failed after %.2f s: %s",
            job.name,
            time.monotonic() - started,
            err,
            extra={"event": "job", "job": job.name, "status": run.status},
        )
    else:
        run.finish(CronRun.Status.SUCCESS, result=result)
        logger.info(
            "job %s succeeded in %.2f s: %s",
            job.name,
            time.monotonic() - started,
            result,
            extra={"event": "job", "job": job.name, "status": run.status, "result": result},
        )
    finally:
        close_old_connections()
    return run
