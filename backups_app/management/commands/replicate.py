import threading

from django.core.management.base import BaseCommand, CommandError

from backups_app import conf
from backups_app.core.interrupts import on_stop_signals
from backups_app.replication import replication


class Command(BaseCommand):
    help = (
        "Replicate the live database continuously to STANZA_REPLICA_URL with Litestream, in "
        "the foreground; Litestream is restarted if it dies. Ctrl-C or SIGTERM stops it."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--print-config", action="store_true", help="print Litestream's config and exit"
        )

    def handle(self, *args, print_config, **options):
        try:
            if not replication.enabled():
                raise CommandError("replication is off: set STANZA_REPLICA_URL")
            if print_config:
                self.stdout.write(replication.config_text(), ending="")
                return
            replication.litestream_binary()
        except (conf.ConfigError, replication.ReplicationError) as err:
            raise CommandError(str(err)) from err
        stop = threading.Event()
        try:
            with on_stop_signals(lambda signum, frame: stop.set()), replication.only_replicator():
                replication.replicate(stop)
        except (OSError, replication.ReplicationError) as err:
            raise CommandError(f"replication stopped: {err}") from err
