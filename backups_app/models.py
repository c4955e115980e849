import os
import socket

from django.db import models
from django.db.models import OuterRef, Subquery
from django.utils import timezone


class CronRunQuerySet(models.QuerySet):
    def latest_per_job(self):
        """The newest run of each job, in one query: {job_name: CronRun}."""
        newest = (
            CronRun.objects.filter(job_name=OuterRef("job_name"))
            .order_by("-started_at", "-id")
            .values("id")[:1]
        )
        runs = self.filter(id=Subquery(newest))
        return {run.job_name: run for run in runs}


class CronRun(models.Model):
    """One run of a scheduled job, recorded when it starts and completed when it ends."""

    class Status(models.TextChoices):
        RUNNING = "running"
        SUCCESS = "success"
        FAILURE = "failure"

    job_name = models.CharField(max_length=100)
    started_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)
    duration = models.DurationField(null=True, blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.RUNNING)
    result = models.CharField(max_length=500, blank=True)
    error = models.TextField(blank=True)
    trigger = models.CharField(max_length=100, blank=True, help_text="what started the run")
    hostname = models.CharField(max_length=255, blank=True)
    pid = models.PositiveIntegerField(null=True, blank=True)

    objects = CronRunQuerySet.as_manager()

    class Meta:
        db_table = "cron_runs"
        ordering = ("-started_at", "-id")
        indexes = (
            # CronRunQuerySet.latest_per_job() and the Cron page's history of one job.
            models.Index(fields=("job_name", "-started_at"), name="cron_runs_job_started"),
            # The Cron page's run history, newest first, and the purge of old history.
            models.Index(fields=("-started_at",), name="cron_runs_started"),
            # The history filtered by status, and the search for runs left `running`.
            models.Index(fields=("status", "-started_at"), name="cron_runs_status_started"),
        )

    def __str__(self):
        return f"{self.job_name} at {self.started_at:%Y-%m-%d %H:%M:%S} ({self.status})"

    @classmethod
    def start(cls, job_name, trigger=""):
        return cls.objects.create(
            job_name=job_name,
            trigger=trigger[:100],
            hostname=socket.gethostname()[:255],
            pid=os.getpid(),
        )

    def finish(self, status, *, result="", error=""):
        self.finished_at = timezone.now()
        self.duration = self.finished_at - self.started_at
        self.status = status
        self.result = result[:500]
        self.error = error
        self.save(update_fields=("finished_at", "duration", "status", "result", "error"))


class AlertState(models.Model):
    """What the admins were last told about one job, so each change is emailed once.

    Kept in the database so a restart of the scheduler does not send the same alert again.
    """

    class State(models.TextChoices):
        OK = "ok"
        FAILING = "failing"
        LATE = "late"

    job_name = models.CharField(max_length=100, unique=True)
    state = models.CharField(max_length=10, choices=State.choices, default=State.OK)
    changed_at = models.DateTimeField(default=timezone.now)
    # What the last email said, and when; a state that differs is still to be sent.
    notified_state = models.CharField(max_length=10, choices=State.choices, default=State.OK)
    notified_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "alert_states"

    def __str__(self):
        return f"{self.job_name}: {self.state}"

    @property
    def needs_notice(self):
        return self.state != self.notified_state
