"""Are the backups healthy? ONE verdict, computed here, for /healthz, `checkbackups`, alerts,
the admin index, the Cron page and the Backups page.

Each problem has a few words (what /healthz and `checkbackups` print, stable for monitoring)
and a sentence saying what to do next (what the pages show). Problems come from, in order:
- `backup_problems()`: the backups folder (no backup, too old, the last drill failed);
- `problem_sources()`: offsite copies' and replication's `health_problems(now)`, each
  returning a list of `Problem`s (or plain strings, shown as they are), from what their jobs
  and `replicate` recorded: never a request to a store. They are imported here, so a source
  must not import this module (`core.problems` is where `Problem` lives). Replicate's status
  file is read once per verdict and kept in it (`Verdict.replica`) for the caller to reuse;
- `job_health()`: every registered job whose last run failed, or that is late.
"""

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from django.db.migrations.recorder import MigrationRecorder
from django.utils import timezone

from backups_app import conf
from backups_app.core.errors import BackupError
from backups_app.core.failures import explain
from backups_app.core.problems import Problem
from backups_app.engine import backups
from backups_app.jobs import jobs
from backups_app.models import AlertState, CronRun
from backups_app.offsite import state as offsite_state
from backups_app.replication import replication
from backups_app.restore import drill

logger = logging.getLogger(__name__)

MAX_BACKUP_AGE = timedelta(hours=26)
State = AlertState.State
OK, FAILING, LATE = State.OK.value, State.FAILING.value, State.LATE.value
# Shown for a job that has not run yet and is not late: not "ok", which it has not proved.
NEVER_RUN = "never run"


@dataclass(frozen=True)
class JobHealth:
    name: str
    state: str  # OK, FAILING, LATE or NEVER_RUN
    last_run: CronRun | None = None
    due: datetime | None = None  # late: the due time missed; never run: when it is first due

    @property
    def alert_state(self):
        """The state alerts track: a job that never ran and is not late is fine."""
        return OK if self.state == NEVER_RUN else self.state


@dataclass
class Check:
    """What backup_problems looks at: the time, and the backups folder read once per verdict."""

    now: datetime
    scanned: list | None = None  # the caller's backups.scan_backups(), if it has one
    drills: drill.Drills | None = None  # the drills' records, once read

    @property
    def listed(self):
        """The backups as `backups.Listed` tuples, newest first (BackupError if unreadable)."""
        if self.scanned is None:
            self.scanned = backups.scan_backups(reuse=True)
        return self.scanned

    @property
    def recent_drills(self):
        if self.drills is None:
            self.drills = drill.recent_drills()
        return self.drills


@dataclass(frozen=True)
class Verdict:
    checked_at: datetime
    problems: list = field(default_factory=list)
    jobs: dict = field(default_factory=dict)  # {name: JobHealth}
    drills: drill.Drills | None = None  # what the verdict read of the drills, for reuse
    replica: replication.Status | None = None  # what it read of `replicate`'s status, for reuse

    @property
    def ok(self):
        return not self.problems

    @property
    def words(self):
        return [str(problem) for problem in self.problems]


def verdict(now=None, *, scanned=None):
    """The one health verdict: the problems (empty when healthy) and every job's state.

    `scanned`: the backups folder's `backups.scan_backups()`, when the caller has just read it.
    """
    now = now or timezone.now()
    check = Check(now, scanned)
    found = backup_problems(check)
    replica = replica_status(now)
    for source in problem_sources(replica).values():
        found += [p if isinstance(p, Problem) else Problem(str(p)) for p in source(now)]
    health = job_health(now)
    found += [job_problem(job) for job in health.values() if job.state in (FAILING, LATE)]
    return Verdict(
        checked_at=now, problems=found, jobs=health, drills=check.drills, replica=replica
    )


def problem_sources(replica=None):
    """{alert name: f(now) -> [Problem | str]}: the other capabilities' problems, in order.

    The alert name is what AlertState keeps beside the jobs' names, so each problem is mailed
    once and its recovery once. `replica`: replication's status when the caller has read it
    (else the source reads it).
    """
    return {
        "offsite": offsite_state.health_problems,
        "replication": lambda now: replication.health_problems(now, replica),
    }


def replica_status(now):
    """`replicate`'s status file, read once for a verdict; None when the replication settings
    cannot be read (the replication source then names why)."""
    try:
        return replication.status(now)
    except conf.ConfigError:
        return None


def problems(now=None):
    """The problems in a few words each; an empty list means healthy."""
    return verdict(now).words


def job_states(now=None):
    """{job name: "ok" | "failing" | "late"} for every registered job (what alerts track)."""
    return {name: job.alert_state for name, job in job_health(now).items()}


# --- the sources ---------------------------------------------------------------------------


def backup_problems(check):
    try:
        listed = check.listed
    except BackupError:
        return [
            Problem(
                "backups folder unreadable",
                "The backups folder cannot be read: check that it exists and that "
                "STANZA_BACKUPS_DIR points at it.",
            )
        ]
    own = newest_own(listed)
    found = []
    if own is None:
        found.append(
            Problem(
                "no backup",
                "No backup yet: make one with Back up now (the daily-backup job also makes "
                "one every night).",
            )
        )
    elif too_old(own, check.now):
        found.append(
            Problem(
                "newest backup older than 26 hours",
                "The newest backup is older than 26 hours: check the daily-backup job on the "
                "Cron page, or make one with Back up now.",
            )
        )
    # What the last drill recorded (one row), not the manifests: a site making more backups a
    # day than any number of manifests read would lose the verdict among them.
    newest_drill = check.recent_drills.last
    if newest_drill is not None and not newest_drill.ok:
        found.append(
            Problem(
                "restore drill failed",
                "The last restore drill failed (see the Backups page): make a new backup, "
                "then run verify-latest-backup on the Cron page.",
            )
        )
    return found


def newest_own(listed):
    """The newest backup this site made itself (`listed` newest first): an uploaded file
    proves nothing about this machine's own backups."""
    return next((item for item in listed if item.own), None)


def too_old(item, now):
    """Whether a listed backup is older than the 26 hours a healthy site allows."""
    return now.timestamp() - item.mtime > MAX_BACKUP_AGE.total_seconds()


def job_problem(job):
    if job.state == FAILING:
        why = explain(job.last_run.error) if job.last_run else ""
        return Problem(
            f"job {job.name} failing",
            f"Job {job.name} failed its last run. {why}".strip(),
        )
    due = timezone.localtime(job.due).strftime("%Y-%m-%d %H:%M:%S %Z") if job.due else ""
    return Problem(
        f"job {job.name} late",
        f"Job {job.name} did not run when it was due{f' ({due})' if due else ''}: "
        "is the scheduler (manage.py runscheduler, or scripts/run) running?",
    )


def job_health(now=None):
    """{job name: JobHealth} for every registered job, from its newest run."""
    now = now or timezone.now()
    registry = jobs.registry()
    latest = CronRun.objects.latest_per_job(registry)
    created = None
    health = {}
    for name, job in registry.items():
        run = latest.get(name)
        if run is not None and run.status == CronRun.Status.FAILURE:
            health[name] = JobHealth(name, FAILING, run)
            continue
        if run is not None:
            since = run.started_at
        else:
            created = created or database_created()
            since = created
        missed = overdue_since(job, since, now)
        if missed is not None:
            health[name] = JobHealth(name, LATE, run, missed)
        elif run is None:
            health[name] = JobHealth(name, NEVER_RUN, None, jobs.next_run_time(job, now))
        else:
            health[name] = JobHealth(name, OK, run)
    return health


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
