import signal
import sys
from contextlib import contextmanager
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from backups_app.backups import DATABASE_FILENAME, BackupError, create_backup, human_size


@contextmanager
def sigterm_as_interrupt():
    """Turn SIGTERM into KeyboardInterrupt so a killed backup cleans up like Ctrl-C."""

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class Command(BaseCommand):
    help = "Back up the database into one verified file (VACUUM INTO, written atomically)."

    def add_arguments(self, parser):
        parser.add_argument(
            "--output", type=Path, help="exact path to write (default: standard name in .)"
        )
        parser.add_argument("--compress", action="store_true", help="gzip the backup")
        parser.add_argument(
            "--data-dir",
            type=Path,
            help="back up DIR/database.sqlite instead of the configured database",
        )

    def handle(self, *args, output, compress, data_dir, **options):
        source = data_dir / DATABASE_FILENAME if data_dir else None
        progress = self.show_progress if sys.stderr.isatty() else None
        try:
            with sigterm_as_interrupt():
                backup = create_backup(
                    source, folder=Path.cwd(), output=output, compress=compress, progress=progress
                )
        except BackupError as err:
            raise CommandError(str(err)) from err
        except KeyboardInterrupt:
            raise CommandError("interrupted; no backup was written") from None
        finally:
            if progress:
                self.stderr.write("\r\033[K", ending="")
        self.stdout.write(f"{backup.path} ({human_size(backup.size)}, {backup.size} bytes)")

    def show_progress(self, phase, done, total):
        verb = {"copy": "Copying", "compress": "Compressing"}.get(phase, phase)
        percent = f" ({100 * done // total}%)" if total else ""
        self.stderr.write(
            f"\r\033[K{verb}: {human_size(done)} of {human_size(total)}{percent}",
            ending="",
        )
        self.stderr.flush()
