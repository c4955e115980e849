import sys

from django.core.management.base import BaseCommand

from backups_app.health import alerts, health, recovery


class Command(BaseCommand):
    help = "Exit 0 when backups are healthy, 1 with the problems listed (for cron or Nagios)."

    def add_arguments(self, parser):
        parser.add_argument(
            "--notify",
            action="store_true",
            help="also email STANZA_ALERT_EMAILS about jobs now late or failing (or recovered)",
        )

    def handle(self, *args, notify, **options):
        if notify:
            alerts.check_lateness()
        verdict = health.verdict()
        problems = verdict.words
        if not problems:
            self.stdout.write("OK: backups are healthy")
        else:
            self.stdout.write(f"FAILING: {'; '.join(problems)}")
            for problem in problems:
                self.stdout.write(f"- {problem}")
        # After the verdict's lines, which scripts read; from what the verdict read.
        state = recovery.state(drills=verdict.drills, replica=verdict.replica)
        for line in state.sentences():
            self.stdout.write(line)
        if problems:
            sys.exit(1)
