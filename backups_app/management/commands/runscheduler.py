"""Run the scheduled jobs of the registry in the foreground, one scheduler at a time.

Only the process holding the scheduler lock runs jobs. A second `runscheduler` does not exit:
it says which process holds the lock and waits as a standby, taking over when that one stops
(a restart or a deploy that overlaps the old process loses no due time). Ctrl-C or SIGTERM
stops the scheduler: a running job is allowed to finish; a second signal abandons it, and
its run is recorded as interrupted.
"""

import logging
import os
import sys
import threading
import time

from apscheduler.events import (
    EVENT_JOB_MAX_INSTANCES,
    EVENT_JOB_MISSED,
    EVENT_SCHEDULER_STARTED,
)
from apscheduler.schedulers.background import BackgroundScheduler
from django.conf import settings
from django.core.management.base import BaseCommand
from django.db import connection
from django.utils import timezone
from django_apscheduler import util
from django_apscheduler.jobstores import DjangoJobStore
from django_apscheduler.models import DjangoJob

from backups_app.core.interrupts import on_stop_signals
from backups_app.core.processes import this_host
from backups_app.health import alerts
from backups_app.jobs import jobs, scheduler_lock
from backups_app.models import CronRun

logger = logging.getLogger(__name__)

LOCK_POLL_SECONDS = 1
LATENESS_CHECK_MINUTES = 5


class LatenessWatch(threading.Thread):
    """Every few minutes, mail the admins about jobs that became late (or recovered).

    A run that never happens cannot report itself. This is not a job of the registry (it
    would fill the run history) nor of the job store (django-apscheduler logs every job).
    """

    def __init__(self):
        super().__init__(name="lateness-watch", daemon=True)
        self.stopped = threading.Event()

    def run(self):
        while not self.stopped.is_set():
            self.check()
            self.stopped.wait(LATENESS_CHECK_MINUTES * 60)
        connection.close()

    @util.close_old_connections
    def check(self):
        try:
            alerts.check_lateness()
        except Exception:
            logger.exception("the lateness check failed")


class Command(BaseCommand):
    help = (
        "Run the scheduled jobs in the foreground. A second runscheduler waits as a standby "
        "until the running one stops. Ctrl-C or SIGTERM stops it after the running job ends."
    )

    def handle(self, *args, **options):
        with on_stop_signals():
            try:
                lock = self.wait_for_lock()
            except KeyboardInterrupt:
                logger.info("stopped while waiting for the other scheduler")
                return
            try:
                self.run_scheduler()
            except KeyboardInterrupt:  # a signal during start-up, before the scheduler ran
                logger.info("stopped during start-up", extra={"event": "scheduler_stopped"})
            finally:
                os.close(lock)

    def wait_for_lock(self):
        lock = scheduler_lock.try_acquire()
        if lock is None:
            holder = self.lock_holder()
            logger.warning(
                "another scheduler is running (pid %s); waiting to take over when it stops "
                "(Ctrl-C to quit)",
                holder,
                extra={"event": "scheduler_standby", "holder_pid": holder},
            )
        while lock is None:
            time.sleep(LOCK_POLL_SECONDS)
            lock = scheduler_lock.try_acquire()
        return lock

    def lock_holder(self):
        try:
            return scheduler_lock.lock_path().read_text().strip() or "unknown"
        except OSError:
            return "unknown"

    def run_scheduler(self):
        """Run the jobs until a signal asks to stop, then stop as `stop()` says.

        The scheduler runs in the background and this thread only waits for a signal. The
        handler sets a flag instead of raising: APScheduler swallows any exception, even
        KeyboardInterrupt, raised while it notifies its listeners, so a signal that raised
        at that moment was lost and the scheduler ran on.
        """
        closed = CronRun.objects.close_interrupted()
        if closed:
            logger.warning("closed %d run(s) left running by a process that died", closed)
        stop_requested = threading.Event()

        def request_stop(signum, frame):
            if stop_requested.is_set():
                raise KeyboardInterrupt  # a second signal: abandon the running job
            stop_requested.set()

        watch = LatenessWatch()
        try:
            with on_stop_signals(request_stop):
                scheduler = self.build_scheduler()
                scheduler.start()
                watch.start()
                while not stop_requested.wait(1):
                    pass
                self.stop(scheduler)
        finally:
            watch.stopped.set()

    def build_scheduler(self):
        registry = jobs.registry()
        scheduler = BackgroundScheduler(timezone=settings.TIME_ZONE)
        scheduler.add_jobstore(DjangoJobStore(), "default")
        removed, _ = DjangoJob.objects.exclude(id__in=registry).delete()
        if removed:
            logger.info("removed %d stored job(s) that are no longer in the registry", removed)
        for job in registry.values():
            options = {}
            resume_at = self.stored_due_time(job)
            if resume_at is not None:
                options["next_run_time"] = resume_at
            scheduler.add_job(
                jobs.run_scheduled,
                trigger=jobs.cron_trigger(job),
                args=(job.name,),
                id=job.name,
                name=job.description,
                replace_existing=True,
                max_instances=1,
                coalesce=True,
                misfire_grace_time=int(job.grace.total_seconds()),
                **options,
            )
        scheduler.add_listener(self.on_started_event(scheduler), EVENT_SCHEDULER_STARTED)
        scheduler.add_listener(self.on_skipped, EVENT_JOB_MAX_INSTANCES)
        scheduler.add_listener(self.on_missed, EVENT_JOB_MISSED)
        return scheduler

    def stored_due_time(self, job):
        """The due time the job store holds for `job`, if it is one of its current schedule.

        Resuming from it runs a due time that passed while no scheduler was running (a
        restart, a deploy) if it is less than the job's grace late; a new schedule starts afresh.
        """
        stored = (
            DjangoJob.objects.filter(id=job.name).values_list("next_run_time", flat=True).first()
        )
        if stored is None or jobs.previous_due_time(job, stored) != stored:
            return None
        return stored

    def on_started_event(self, scheduler):
        def log_next_runs(event):
            now = timezone.now()
            for job in scheduler.get_jobs():
                when = job.next_run_time
                if when is not None and when <= now:
                    message = "job %s (%s) was due at %s while no scheduler ran: running it now"
                else:
                    message = "job %s (%s) next runs at %s"
                logger.info(
                    message,
                    job.id,
                    jobs.registry()[job.id].schedule,
                    when.isoformat() if when else "never",
                    extra={"event": "scheduler_next_run", "job": job.id, "next_run_time": when},
                )
            logger.info(
                "scheduler started (pid %d, time zone %s)",
                os.getpid(),
                settings.TIME_ZONE,
                extra={"event": "scheduler_started"},
            )

        return log_next_runs

    def on_skipped(self, event):
        due = max(event.scheduled_run_times)
        run = CronRun.objects.record_skipped(event.job_id, trigger="scheduler", due_at=due)
        logger.error(
            "job %s skipped at its due time %s: the previous run is still going",
            event.job_id,
            due.isoformat(),
            extra={"event": "job_skipped", "job": event.job_id, "run_id": run and run.pk},
        )

    def on_missed(self, event):
        logger.warning(
            "job %s missed its due time %s by more than its grace (no scheduler was running); "
            "it runs again at its next due time",
            event.job_id,
            event.scheduled_run_time.isoformat(),
            extra={"event": "job_missed", "job": event.job_id},
        )

    def stop(self, scheduler):
        mine = CronRun.objects.filter(
            status=CronRun.Status.RUNNING, hostname=this_host(), pid=os.getpid()
        )
        running = list(mine.values_list("job_name", flat=True))
        if running:
            logger.info(
                "stopping: waiting for %s to finish (signal again to abandon it)",
                ", ".join(running),
            )
        if not scheduler.running:
            return
        try:
            scheduler.shutdown(wait=True)
        except KeyboardInterrupt:
            closed = CronRun.objects.close_own_runs(
                "interrupted: the scheduler was stopped before the run finished"
            )
            logger.warning(
                "stopped; %d running job(s) abandoned and recorded as interrupted", closed
            )
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(1)  # the job's thread cannot be stopped; leave without waiting for it
        logger.info("scheduler stopped", extra={"event": "scheduler_stopped"})
