"""Prometheus metrics: what /healthz reads, as numbers a monitoring system can graph and alert on.

A custom collector (`StanzaCollector`) gathers at scrape time from what the jobs recorded: the
backups folder's listing (reused while the folder is unchanged), the newest runs of each job,
the last drill's record, the offsite jobs' record of the store and `replicate`'s status file. No
network, and no file opened per backup. Names in base units (`_seconds`, `_bytes`, timestamps in
seconds since the epoch); a time that never happened is 0. `job` labels from the job registry.
"""

import math

from django.utils import timezone
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily

from backups_app.core.errors import BackupError
from backups_app.engine import backups
from backups_app.health import health, recovery
from backups_app.jobs import jobs
from backups_app.media import store as media_store
from backups_app.models import CronRun
from backups_app.restore import drill


def exposition(now=None):
    """The metrics in Prometheus' text format (bytes)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StanzaCollector(now))
    return generate_latest(registry)


class StanzaCollector:
    """Yields every metric of the contract's "Monitoring" list, gathered when collected."""

    def __init__(self, now=None):
        self.now = now

    def collect(self):
        now = self.now or timezone.now()
        try:
            listed = backups.scan_backups(reuse=True)
        except BackupError:
            listed = None  # the verdict names the folder's problem
        verdict = health.verdict(now, scanned=listed)
        listed = listed or []
        registry = jobs.registry()
        succeeded = CronRun.objects.latest_per_job(registry, status=CronRun.Status.SUCCESS)
        drills = verdict.drills or drill.recent_drills()
        state = recovery.state(now, listed=listed, drills=drills, replica=verdict.replica)
        yield from backup_metrics(listed)
        yield from job_metrics(verdict.jobs, succeeded)
        yield from drill_metrics(drills)
        yield from recovery_metrics(state)
        yield gauge(
            "stanza_healthy",
            "1 when /healthz answers 200, 0 when it answers 503.",
            1 if verdict.ok else 0,
        )


def gauge(name, documentation, value=None, labels=None):
    """A gauge with one sample (`value`), or, with `labels`, one to add samples to."""
    return GaugeMetricFamily(name, documentation, value=value, labels=labels)


def timestamp(moment):
    return moment.timestamp() if moment is not None else 0


def backup_metrics(listed):
    newest = health.newest_own(listed)
    yield gauge(
        "stanza_backup_last_success_timestamp_seconds",
        "When the newest backup the site made itself was written (0: none).",
        newest.mtime if newest else 0,
    )
    yield gauge(
        "stanza_backup_last_size_bytes",
        "Size of the newest backup the site made itself.",
        newest.size if newest else 0,
    )
    yield gauge("stanza_backups_count", "Backups in the backups folder.", len(listed))
    yield gauge(
        "stanza_backups_size_bytes",
        "Bytes of all the backups in the backups folder.",
        sum(item.size for item in listed),
    )
    yield gauge(
        "stanza_media_size_bytes",
        "Bytes of the site's files kept with the backups (each content once; 0: none).",
        media_bytes(),
    )


def media_bytes():
    """What the media store's own figures say (a small file the backups and clean-ups keep),
    not a walk of its objects."""
    try:
        stats = media_store.Store(backups.backups_dir()).stats() or {}
        return int(stats.get("bytes") or 0)
    except (BackupError, OSError, TypeError, ValueError):
        return 0


def job_metrics(states, succeeded):
    """Per job of the registry: its last run, last success, last duration, failing and late."""
    families = {
        "last_run": gauge(
            "stanza_job_last_run_timestamp_seconds",
            "When the job's newest run started (0: never ran).",
            labels=["job"],
        ),
        "last_success": gauge(
            "stanza_job_last_success_timestamp_seconds",
            "When the job's newest successful run finished (0: never succeeded).",
            labels=["job"],
        ),
        "duration": gauge(
            "stanza_job_last_duration_seconds",
            "How long the job's newest finished run took.",
            labels=["job"],
        ),
        "failing": gauge(
            "stanza_job_failing", "1 when the job's newest run failed.", labels=["job"]
        ),
        "late": gauge(
            "stanza_job_late",
            "1 when the job missed a due time (it did not run within its grace).",
            labels=["job"],
        ),
    }
    for name, job in states.items():
        run = job.last_run
        success = succeeded.get(name)
        families["last_run"].add_metric([name], timestamp(run.started_at if run else None))
        families["last_success"].add_metric(
            [name], timestamp(success.finished_at if success else None)
        )
        if run is not None and run.duration is not None:
            families["duration"].add_metric([name], run.duration.total_seconds())
        families["failing"].add_metric([name], 1 if job.state == health.FAILING else 0)
        families["late"].add_metric([name], 1 if job.state == health.LATE else 0)
    yield from families.values()


def drill_metrics(drills):
    last, passed = drills
    yield gauge(
        "stanza_restore_drill_last_success_timestamp_seconds",
        "When the newest restore drill that passed finished (0: none passed).",
        timestamp(passed.finished_at if passed else None),
    )
    if passed is not None and passed.restore_seconds is not None:
        yield gauge(
            "stanza_restore_drill_duration_seconds",
            "How long the newest drill that passed took to read, restore and check its backup.",
            passed.restore_seconds,
        )
        yield gauge(
            "stanza_restore_drill_backup_size_bytes",
            "Size of the backup the newest drill that passed restored.",
            passed.backup_size,
        )
    if last is not None:
        yield gauge(
            "stanza_restore_drill_ok", "1 when the newest restore drill passed.", int(last.ok)
        )


def recovery_metrics(state):
    if state.offsite_on:
        yield gauge(
            "stanza_offsite_last_copy_timestamp_seconds",
            "When the newest backup with an offsite copy was made (0: none).",
            timestamp(state.offsite_at),
        )
    if state.replica_on:
        lag = (
            recovery.age_seconds(state.replica_at, state.checked_at)
            if state.replica_at
            else math.inf
        )
        yield gauge(
            "stanza_replication_lag_seconds",
            "How far the replica is behind the live database (every commit older is in it).",
            lag,
        )
    point = state.point_seconds
    yield gauge(
        "stanza_recovery_point_seconds",
        "Data a lost disk would cost now: the age of the freshest backup, offsite copy or "
        "replica (+Inf: none).",
        math.inf if point is None else point,
    )
    if state.time_seconds is not None:
        yield gauge(
            "stanza_recovery_time_seconds",
            "How long the last drill that passed took to restore (the recovery time).",
            state.time_seconds,
        )
