from django.core.management.base import BaseCommand, CommandError

from backups_app.core.errors import BackupError
from backups_app.core.interrupts import on_stop_signals
from backups_app.jobs import jobs


class Command(BaseCommand):
    help = "Run one registered job now, recorded in the run history like a scheduled run."

    def add_arguments(self, parser):
        parser.add_argument("name", help="the job's name, e.g. daily-backup")
        parser.add_argument(
            "--dry-run",
            action="store_true",
            help="say what the job would do, change nothing and record no run "
            "(purge-old-backups: each backup's fate and the rule that decides it)",
        )

    def handle(self, *args, name, dry_run, **options):
        known = jobs.registry()
        if name not in known:
            raise CommandError(f"unknown job {name!r}; known jobs: {', '.join(known)}")
        if dry_run:
            return self.dry_run(known[name])
        # SIGTERM stops the job like Ctrl-C, so its run is recorded as interrupted.
        try:
            with on_stop_signals():
                run = jobs.run_job(name, trigger="runjob")
        except KeyboardInterrupt:
            raise CommandError(f"{name} was interrupted") from None
        if run.status == run.Status.SKIPPED:
            raise CommandError(f"{name} did not run: {run.result}")
        if run.status != run.Status.SUCCESS:
            raise CommandError(f"{name} failed: {run.error_summary}")
        self.stdout.write(f"{name}: {run.result} ({run.duration.total_seconds():.2f} s)")

    def dry_run(self, job):
        if job.dry_run is None:
            raise CommandError(f"{job.name} has no dry run")
        try:
            lines = job.dry_run()
        except BackupError as err:
            raise CommandError(f"{job.name} (dry run) failed: {err}") from err
        self.stdout.write("\n".join(lines))
