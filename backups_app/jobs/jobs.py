"""The registry of scheduled jobs, and the one wrapper that records every run in CronRun.

The scheduler, `runjob`, the Cron page and the admin all read `registry()`: a job is
declared once.
"""

import logging
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from django import db
from django.conf import settings
from django.utils import timezone
from django_apscheduler import util
from django_apscheduler.models import DjangoJobExecution

from backups_app import conf, signals
from backups_app.core.formatting import human_size
from backups_app.cron import crontab_trigger
from backups_app.engine import backups
from backups_app.jobs import actions
from backups_app.media import record as media_record
from backups_app.models import CronRun
from backups_app.offsite import purge as offsite_purge
from backups_app.offsite import store as offsite_store
from backups_app.offsite import upload as offsite_upload
from backups_app.retention import purge

logger = logging.getLogger(__name__)

CRON_RUN_HISTORY = timedelta(days=90)
# The longest gap between two due times of a 5-field cron expression: "0 0 29 2 *" (8 years).
LONGEST_CRON_GAP = timedelta(days=366 * 8 + 2)


@dataclass(frozen=True)
class Job:
    name: str
    schedule: str  # 5-field cron expression, read in settings.TIME_ZONE
    func: Callable[[], str]  # does the work; returns the one-line result
    description: str
    timeout: timedelta = timedelta(hours=1)  # a run taking longer is logged as a warning
    grace: timedelta = timedelta(hours=1)  # how late a run may start and still be on time
    dry_run: Callable[[], list[str]] | None = None  # what a run would do, in lines; changes nothing


# --- the jobs ------------------------------------------------------------------------------


def plural(count, word, words=None):
    """'1 backup', '3 backups'; `words` for the irregular: plural(2, "copy", "copies")."""
    return f"{count} {word if count == 1 else words or word + 's'}"


# How long the daily backup waits for a restore or upload to finish before it gives up.
OPERATION_WAIT = 30 * 60


def daily_backup():
    backup = actions.backup_locked(by="the daily-backup job", wait=OPERATION_WAIT)
    copy_offsite_soon()  # its own recorded run; an offsite failure never fails the backup
    return f"{backup.name} ({human_size(backup.size)})" + media_record.words(
        (backups.read_manifest(backup.path) or {}).get("media"), human_size
    )


def purge_old_backups():
    now = timezone.now()
    result = purge.purge_job(now)  # with the site files' clean-up
    if offsite_store.enabled():  # after the local purge, which a store down must not stop
        result += f"; offsite: {offsite_purge.purge_old_copies(now).line}"
    return result


def preview_purge():
    now = timezone.now()
    offsite = offsite_purge.preview(now) if offsite_store.enabled() else []
    return purge.preview(now) + offsite


def purge_old_cron_runs():
    cutoff = timezone.now() - CRON_RUN_HISTORY
    runs = CronRun.objects.delete_older_than(cutoff)
    # django-apscheduler's own record of each execution would grow forever too.
    executions, _ = DjangoJobExecution.objects.filter(run_time__lt=cutoff).delete()
    return (
        f"deleted {plural(runs, 'run')} and {plural(executions, 'scheduler execution record')} "
        f"older than {CRON_RUN_HISTORY.days} days"
    )


def verify_latest_backup():
    # The drills build on restore, which the other jobs need not load.
    from backups_app.restore import drill, offsite_drill

    checks = [drill.verify_latest_backup]
    if offsite_store.enabled():
        checks.append(offsite_drill.drill_newest_copy)
    results, failures = [], []
    for check in checks:  # every drill runs, whichever fails
        try:
            results.append(check())
        except backups.BackupError as err:
            failures.append(str(err))
    if failures:
        raise drill.DrillError("; ".join(failures))
    return "; ".join(results)


def verify_replica():
    from backups_app.replication import replication

    return replication.verify_replica()


def registry():
    """Every job, by name, with schedules from the settings of this process."""
    jobs = [
        Job(
            name="daily-backup",
            schedule=conf.get("STANZA_BACKUP_SCHEDULE"),
            func=daily_backup,
            description="Back up the database into the backups folder",
        ),
        Job(
            name="purge-old-backups",
            schedule=conf.get("STANZA_PURGE_SCHEDULE"),
            func=purge_old_backups,
            description=purge.describe_rules(),
            dry_run=preview_purge,
        ),
        Job(
            name="purge-old-cron-runs",
            schedule="0 4 * * 0",
            func=purge_old_cron_runs,
            description=f"Delete run history older than {CRON_RUN_HISTORY.days} days",
        ),
        Job(
            name="verify-latest-backup",
            schedule="0 3 * * *",
            func=verify_latest_backup,
            description="Restore the newest backup into a scratch file and check what it holds",
        ),
    ]
    if offsite_store.enabled():
        jobs.append(
            Job(
                name=offsite_upload.JOB_NAME,
                schedule=conf.get("STANZA_OFFSITE_SCHEDULE"),
                func=offsite_upload.copy_offsite,
                description=f"Copy new backups to {offsite_store.location()}",
            )
        )
    if conf.get("STANZA_REPLICA_URL"):
        jobs.append(
            Job(
                name="verify-replica",
                schedule="0 * * * *",
                func=verify_replica,
                description=(
                    "Write a canary row, restore the replica's latest state into a scratch "
                    "file, check it and find the canary"
                ),
                timeout=timedelta(minutes=10),
            )
        )
    return {job.name: job for job in jobs}


# --- due times -----------------------------------------------------------------------------


def cron_trigger(job):
    """The job's schedule as APScheduler reads it: its cron expression in settings.TIME_ZONE."""
    return crontab_trigger(job.schedule, settings.TIME_ZONE)


def next_run_time(job, after=None):
    """The job's first due time strictly after `after` (default: now), in settings.TIME_ZONE."""
    after = after or timezone.now()
    return cron_trigger(job).get_next_fire_time(None, after + timedelta(microseconds=1))


def previous_due_time(job, before):
    """The job's most recent due time at or before `before`; None if it never falls due."""
    trigger = cron_trigger(job)

    def due_between(start):  # is there a due time in [start, before]?
        first = trigger.get_next_fire_time(None, start)
        return first is not None and first <= before

    if not due_between(before - LONGEST_CRON_GAP):  # e.g. "0 0 31 2 *"
        return None
    # Cron can only be read forwards: widen a window back from `before` until it holds a
    # due time, then bisect for the last one (about 50 steps even for a leap-day schedule).
    window = timedelta(minutes=1)
    while not due_between(before - window):
        window *= 2
    low, high = before - window, before + timedelta(seconds=1)
    # Due times fall on whole seconds, so once low and high are a second apart, the first due
    # time at or after low is the last one at or before `before`.
    while high - low > timedelta(seconds=1):
        middle = low + (high - low) / 2
        if due_between(middle):
            low = middle
        else:
            high = middle
    return trigger.get_next_fire_time(None, low)


# --- the wrapper every run goes through -----------------------------------------------------


def run_job(name, trigger="manual", *, due_at=None):
    """Run one job now, recorded in CronRun like a scheduled run; return the finished run.

    A run while the previous run of the job is still going (in any process) does nothing and
    is returned as a skipped run that says so (CronRun.objects.begin decides, in its write
    transaction, so two runs starting together cannot both run nor fail). With `due_at` (the
    scheduler's runs), returns None without running when that due time already has a run.
    """
    job = registry()[name]
    run = CronRun.objects.begin(job.name, trigger=trigger, due_at=due_at)
    if run is None:
        logger.warning(
            "job %s already ran for its due time %s; not running it again",
            job.name,
            due_at,
            extra={"event": "job_duplicate", "job": job.name, "due_at": due_at},
        )
        return None
    if run.status == CronRun.Status.RUNNING:
        signals.send(signals.run_started, run=run)  # pings; never fails the run
        _execute(job, run)
    _log_run(job, run)
    _alert(run)
    return run


def _alert(run):
    """Tell whoever listens (alerts) that a run finished; their problems never fail the run."""
    signals.send(signals.run_finished, run=run)


def _execute(job, run):
    try:
        result = job.func() or ""
    except Exception:
        run.finish(CronRun.Status.FAILURE, error=traceback.format_exc())
    except BaseException:  # KeyboardInterrupt, SystemExit: the process is being stopped
        run.finish(
            CronRun.Status.FAILURE,
            error="interrupted: the process was stopped during the run\n" + traceback.format_exc(),
        )
        _log_run(job, run)
        raise
    else:
        run.finish(CronRun.Status.SUCCESS, result=" ".join(str(result).split()))


def _log_run(job, run):
    seconds = run.duration.total_seconds() if run.duration is not None else 0.0
    extra = {
        "event": "job_run",
        "job": job.name,
        "status": run.status,
        "trigger": run.trigger,
        "run_id": run.pk,
        "duration": round(seconds, 3),
        "due_at": run.due_at,
    }
    if run.status == CronRun.Status.SKIPPED:
        logger.info("job %s %s", job.name, run.result, extra={**extra, "result": run.result})
    elif run.status == CronRun.Status.SUCCESS:
        logger.info(
            "job %s succeeded in %.2f s: %s",
            job.name,
            seconds,
            run.result,
            extra={**extra, "result": run.result},
        )
    else:
        logger.error(
            "job %s failed after %.2f s: %s",
            job.name,
            seconds,
            run.error_summary,
            extra={**extra, "error": run.error},
        )
    if run.duration is not None and run.duration > job.timeout:
        logger.warning(
            "job %s took %s, longer than its timeout of %s",
            job.name,
            run.duration,
            job.timeout,
            extra={"event": "job_overtime", "job": job.name, "run_id": run.pk},
        )


@util.close_old_connections  # a scheduler lives for months: no run gets a stale connection
def run_scheduled(name):
    """What the scheduler calls when a job falls due: one recorded run for that due time."""
    job = registry().get(name)
    if job is None:  # removed from the registry since the scheduler stored it
        logger.warning("job %s is not in the registry any more; not running it", name)
        return
    run_job(name, trigger="scheduler", due_at=previous_due_time(job, timezone.now()))


# --- for the dashboard -----------------------------------------------------------------------

# Names the run history records that are not scheduled jobs: they cannot be run again.
PSEUDO_JOBS = ("restore", "delete-offsite")


def history_names():
    """Every name a run in the history can have, registered jobs first."""
    return [*registry(), *PSEUDO_JOBS]


def run_job_by_hand(name, user):
    """Run a registered job now for a staff user, recorded in the history and the audit trail."""
    from backups_app import audit
    from backups_app.core import failures

    run = run_job(name, trigger=f"admin:{user.get_username()}")
    ok = run.status == CronRun.Status.SUCCESS
    outcome = run.result if ok else failures.message_of(run.error)
    message = f"Ran job {name} by hand: {run.status}" + (f" ({outcome})" if outcome else "")
    audit.audit(user, message, obj=run)
    return run


def next_run_times(registry):
    """{job name: (next run time or None, note)}: from the scheduler's job store when one is up."""
    from backups_app.jobs import scheduler_lock

    if scheduler_lock.is_scheduler_running():
        from django_apscheduler.models import DjangoJob

        stored = dict(
            DjangoJob.objects.filter(id__in=list(registry)).values_list("id", "next_run_time")
        )
        return {
            name: (stored[name], "") if stored.get(name) else (None, "not scheduled")
            for name in registry
        }
    return {name: (next_run_time(job), "scheduler not running") for name, job in registry.items()}


# --- starting a copy after a backup -------------------------------------------------------


def copy_offsite_soon():
    """Start a recorded copy-offsite run in a thread, now that a backup was made.

    Never raises: the backup is done whatever happens offsite (a bad offsite setting fails the
    copy's own run, which names it). A run while another is going is recorded as skipped (see
    CronRun.objects.begin); the next scheduled run catches up. The thread is not a daemon, so
    a command that made a backup waits for its copy.
    """
    try:
        if not offsite_store.enabled():
            return None
        thread = threading.Thread(target=_copy_offsite_now, name="copy-offsite", daemon=False)
        thread.start()
    except Exception:
        logger.exception("could not start copy-offsite after the backup")
        return None
    return thread


def _copy_offsite_now():
    try:
        run_job(offsite_upload.JOB_NAME, trigger="after backup")
    except Exception:
        logger.exception("could not run copy-offsite after the backup")
    finally:
        db.connection.close()  # this thread's own connection
