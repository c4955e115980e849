"""The app's own Django signals: how the run recorder tells others without importing them."""

import logging

from django.dispatch import Signal

logger = logging.getLogger(__name__)

# Sent by jobs.run_job when a recorded run starts its work, with `run` (the CronRun, running).
# pings connects to it (ready()), as to run_finished.
run_started = Signal()

# Sent by jobs.run_job after every recorded run of a job, with `run` (the finished CronRun).
# alerts connects to it (BackupsAppConfig.ready), so jobs need not import alerts, which reads
# the job states, which read the job registry.
run_finished = Signal()

# Sent by restore.restore_backup after a restore into a database, with `result` (the
# RestoreResult) and `database` (its path). replication connects to it (ready()), so restore
# need not import replication, which restores through restore.
restored = Signal()


def send(signal, **kwargs):
    """Send `signal` to every receiver; a receiver that fails is logged, never raised: what it
    reacts to (a run, a restore) already happened and stays done."""
    for receiver, outcome in signal.send_robust(sender=None, **kwargs):
        if isinstance(outcome, Exception):
            logger.error("%s failed", getattr(receiver, "__qualname__", receiver), exc_info=outcome)
