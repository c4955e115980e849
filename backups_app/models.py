import os

from django.db import models, transaction
from django.db.models import Q, Subquery
from django.utils import timezone

from backups_app.core import failures
from backups_app.core.processes import process_identity, process_is_alive, this_host


class CronRunQuerySet(models.QuerySet):
    def latest_per_job(self, job_names, status=None):
        """{job name: its newest run (of that `status`, if given)} for the named jobs, in one query.

        A skipped run is not a run of the job (it only notes that one was due while the job
        was still running): the run before it is the newest, unless `status` asks for skipped.

        Each `id = (SELECT ...)` is uncorrelated, so SQLite evaluates it once on the
        (job_name, started_at) index read backwards (job_name, status, started_at with a
        status): one index entry per job, whatever the history's size (a correlated subquery
        took ~1 s with a million runs; this takes ~30 ms).
        """
        condition = Q()
        for name in job_names:
            newest = CronRun.objects.filter(job_name=name)
            if status is not None:
                newest = newest.filter(status=status)
            else:
                newest = newest.exclude(status=CronRun.Status.SKIPPED)
            newest = newest.order_by("-started_at", "-id")
            condition |= Q(id=Subquery(newest.values("id")[:1]))
        if not condition:
            return {}
        return {run.job_name: run for run in self.filter(condition)}

    def close_interrupted(self, job_name=None):
        """Close as failed the runs left `running` by processes of this machine that are gone.

        A run on another machine is left alone: from here we cannot tell whether it is alive.
        Returns how many runs were closed.
        """
        runs = self.filter(status=CronRun.Status.RUNNING, hostname=this_host())
        if job_name is not None:
            runs = runs.filter(job_name=job_name)
        return sum(run.close_if_interrupted() for run in runs)

    def begin(self, job_name, trigger="", due_at=None):
        """Record the start of a run, unless it must not run; return the run, or None.

        In one write transaction (so two processes cannot both start the job): runs of the
        job whose process died are closed first; a second run for the same due time is
        refused (None); a run while another run of the job is still going is recorded as a
        skipped run that says so and returned finished: the caller must not do the work then.
        """
        with transaction.atomic():
            self.close_interrupted(job_name)
            return self._start(job_name, trigger, due_at, skip=False)

    def record_skipped(self, job_name, trigger="", due_at=None):
        """Record a due run that was not started because the previous run is still going."""
        with transaction.atomic():
            return self._start(job_name, trigger, due_at, skip=True)

    def _start(self, job_name, trigger, due_at, *, skip):
        if due_at is not None and self.filter(job_name=job_name, due_at=due_at).exists():
            return None
        previous = self.filter(job_name=job_name, status=CronRun.Status.RUNNING).first()
        run = CronRun.start(job_name, trigger, due_at=due_at)
        if previous is not None or skip:
            message = (
                previous.skip_message()
                if previous
                else f"skipped: the previous run of {job_name} was still running"
            )
            run.finish(CronRun.Status.SKIPPED, result=message)
        return run

    def close_own_runs(self, reason):
        """Close the runs this very process has `running` (it is about to exit without them)."""
        runs = self.filter(status=CronRun.Status.RUNNING, hostname=this_host(), pid=os.getpid())
        return sum(run.close_as_interrupted(reason) for run in runs)

    def delete_older_than(self, cutoff):
        """Delete the history of runs started before `cutoff`; return how many were deleted."""
        deleted, _ = self.filter(started_at__lt=cutoff).delete()
        return deleted


class CronRun(models.Model):
    """One run of a scheduled job, recorded when it starts and completed when it ends."""

    class Status(models.TextChoices):
        RUNNING = "running"
        SUCCESS = "success"
        FAILURE = "failure"
        # Due while the previous run of the job was still going: not run, and not a failure.
        SKIPPED = "skipped"

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
    process_start = models.CharField(
        max_length=64,
        blank=True,
        help_text="boot id and start time of the process, to tell it from a later one with the pid",
    )
    due_at = models.DateTimeField(
        null=True, blank=True, help_text="the due time a scheduled run was for"
    )

    objects = CronRunQuerySet.as_manager()

    class Meta:
        db_table = "cron_runs"
        ordering = ("-started_at", "-id")
        indexes = (
            # Ascending: SQLite reads them backwards for "-started_at", "-id" (an index's rowid
            # runs ascending, so a "-started_at" index needed a sort of each run of equal
            # times: 0.7 s for the history's page 10000 with a million runs, 40 ms this way).
            # CronRunQuerySet.latest_per_job() and the Cron page's history of one job.
            models.Index(fields=("job_name", "started_at"), name="cron_runs_job_started"),
            # The Cron page's run history, newest first, and the purge of old history.
            models.Index(fields=("started_at",), name="cron_runs_started"),
            # The history filtered by status, and the search for runs left `running`.
            models.Index(fields=("status", "started_at"), name="cron_runs_status_started"),
            # The Cron page's history filtered by job and status (its page and its count).
            models.Index(
                fields=("job_name", "status", "started_at"), name="cron_runs_job_status_started"
            ),
            # The history's COUNT(*): SQLite counts the smallest index it has, page by page.
            # Ids alone make one a quarter the size of started_at's: 4 ms instead of 16 ms
            # for a million runs, a fifth of the Cron page (bench/dashboard.py).
            models.Index(fields=("id",), name="cron_runs_ids"),
        )
        constraints = (
            # No job runs twice for the same due time, however many schedulers are started.
            models.UniqueConstraint(
                fields=("job_name", "due_at"),
                condition=Q(due_at__isnull=False),
                name="cron_runs_one_per_due_time",
            ),
        )

    def __str__(self):
        return f"{self.job_name} at {self.started_at:%Y-%m-%d %H:%M:%S} ({self.status})"

    @classmethod
    def start(cls, job_name, trigger="", *, due_at=None):
        return cls.objects.create(
            job_name=job_name,
            trigger=trigger[:100],
            hostname=this_host(),
            pid=os.getpid(),
            process_start=process_identity(),
            due_at=due_at,
        )

    def finish(self, status, *, result="", error=""):
        self.finished_at = timezone.now()
        self.duration = self.finished_at - self.started_at
        self.status = status
        self.result = result[:500]
        self.error = error
        self.save(update_fields=("finished_at", "duration", "status", "result", "error"))

    @property
    def error_summary(self):
        """The error in one line as a person reads it: the last exception's message, without
        its class name, module path or a URL's query string (health.failures)."""
        return failures.split_details(failures.message_of(self.error))[0]

    def process_is_gone(self):
        """Whether the process that made this run has certainly ended (only known on its host)."""
        if self.hostname != this_host() or self.pid is None:
            return False
        return not process_is_alive(self.pid, self.process_start)

    def close_if_interrupted(self):
        """Close this `running` run as failed if its process is gone; return whether it did."""
        if self.status != self.Status.RUNNING or not self.process_is_gone():
            return False
        return self.close_as_interrupted(
            f"interrupted: the process that ran it (pid {self.pid} on {self.hostname}) "
            "ended before the run finished"
        )

    def close_as_interrupted(self, reason):
        # Conditional, so a run that finished meanwhile, or that another process closed, is kept.
        # Duration stays empty: the moment the process died is not known.
        closed = CronRun.objects.filter(pk=self.pk, status=self.Status.RUNNING).update(
            status=self.Status.FAILURE, finished_at=timezone.now(), error=reason
        )
        if closed:
            self.refresh_from_db()
        return bool(closed)

    def skip_message(self):
        """The error of a run skipped because this run of the same job is still going."""
        started = timezone.localtime(self.started_at)
        return (
            f"skipped: the previous run of {self.job_name} (started {started:%Y-%m-%d %H:%M:%S %Z}"
            f", pid {self.pid} on {self.hostname}) is still running"
        )


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


class DrillRunQuerySet(models.QuerySet):
    def recent(self):
        """(the most recent drill, the most recent that passed), each None if none, in one
        query: each `id = (SELECT ...)` is one step down its index."""
        newest = self.order_by("-finished_at", "-id").values("id")[:1]
        passed = self.filter(ok=True).order_by("-finished_at", "-id").values("id")[:1]
        condition = Q(id=Subquery(newest)) | Q(id=Subquery(passed))
        rows = list(self.filter(condition).order_by("-finished_at", "-id"))
        return (rows[0] if rows else None), next((row for row in rows if row.ok), None)


class DrillRun(models.Model):
    """One restore drill of a local backup: its verdict, and how long the restore took.

    The health verdict, the pages and /metrics read the last drill here (one indexed row),
    whatever the backups folder holds; the drilled backup's NAME.json keeps the verdict too,
    for its row on the Backups page.
    """

    backup_name = models.CharField(max_length=255)
    backup_size = models.BigIntegerField(help_text="bytes of the backup file drilled")
    finished_at = models.DateTimeField(default=timezone.now)
    ok = models.BooleanField()
    # One problem a line. Not a JSONField: its system check connects to the database, and
    # `migrate` must not create the file of a new database before it decides on a backup.
    problems = models.TextField(blank=True)
    restore_seconds = models.FloatField(
        null=True,
        blank=True,
        help_text="reading, restoring and checking the backup; empty when it could not restore",
    )

    objects = DrillRunQuerySet.as_manager()

    class Meta:
        db_table = "drill_runs"
        ordering = ("-finished_at", "-id")
        indexes = (
            # DrillRunQuerySet.newest(): the last drill, and the last one that passed.
            models.Index(fields=("ok", "finished_at"), name="drill_runs_ok_finished"),
            models.Index(fields=("finished_at",), name="drill_runs_finished"),
        )

    @property
    def problem_list(self):
        return self.problems.splitlines()

    def __str__(self):
        verdict = "passed" if self.ok else "failed"
        return f"drill of {self.backup_name} at {self.finished_at:%Y-%m-%d %H:%M:%S} ({verdict})"


class ReplicaCanary(models.Model):
    """A row the verify-replica job writes, then looks for in a restore from the replica."""

    token = models.CharField(max_length=32)
    written_at = models.DateTimeField(default=timezone.now)

    class Meta:
        db_table = "replica_canary"

    def __str__(self):
        return f"canary {self.token} ({self.written_at:%Y-%m-%d %H:%M:%S})"
