"""The app's own Django signals: how the run recorder tells others without importing them."""

from django.dispatch import Signal

# Sent by jobs.run_job after every recorded run of a job, with `run` (the finished CronRun).
# alerts connects to it (BackupsAppConfig.ready), so jobs need not import alerts, which reads
# the job states, which read the job registry.
run_finished = Signal()
