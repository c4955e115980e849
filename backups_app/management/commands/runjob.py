from django.core.management.base import BaseCommand, CommandError

from backups_app.core.interrupts import on_stop_signals
from backups_app.jobs import jobs


class Command(BaseCommand):
    help = "Run one registered job now, recorded in the run history like a scheduled run."

    def add_arguments(self, parser):
        parser.add_argument("name", help="the job's name, e.g. daily-backup")

    def handle(self, *args, name, **options):
        known = jobs.registry()
        if name not in known:
            raise CommandError(f"unknown job {name!r}; known jobs: {', '.join(known)}")
        # SIGTERM stops the job like Ctrl-C, so its run is recorded as interrupted.
        try:
            with on_stop_signals():
                run = jobs.run_job(name, trigger="runjob")
        except KeyboardInterrupt:
            raise CommandError(f"{name} was interrupted") from None
        if run.status != run.Status.SUCCESS:
            raise CommandError(f"{name} failed: {run.error_summary}")
        self.stdout.write(f"{name}: {run.result} ({run.duration.total_seconds():.2f} s)")
