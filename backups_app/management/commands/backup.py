import sys
import threading
import time
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from backups_app.core.formatting import human_size
from backups_app.core.interrupts import ignore_stop_signals, on_stop_signals, signal_name
from backups_app.engine.backups import (
    DATABASE_FILENAME,
    BackupError,
    BackupInterrupted,
    create_backup,
    database_engine,
)

# Progress appears only for a backup that takes longer than this (seconds).
PROGRESS_DELAY = 0.5


class Command(BaseCommand):
    help = "Back up the database into one verified file (VACUUM INTO, written atomically)."
    # A backup must work even when the project has a check error (a half-done deploy).
    requires_system_checks = []
    from_command_line = False  # run_from_argv: `manage.py backup`, not call_command

    def add_arguments(self, parser):
        parser.add_argument(
            "--output", help="exact path of the file to write (default: standard name in .)"
        )
        parser.add_argument("--compress", action="store_true", help="gzip the backup")
        parser.add_argument(
            "--full-check",
            action="store_true",
            help="run the full PRAGMA integrity_check (slower) instead of quick_check",
        )
        parser.add_argument(
            "--data-dir",
            type=Path,
            help="back up DIR/database.sqlite instead of the configured database",
        )

    def handle(self, *args, output, compress, full_check, data_dir, **options):
        if data_dir:
            try:
                engine = database_engine()
            except BackupError as err:
                raise CommandError(str(err)) from err
            if not engine.IS_FILE:
                raise CommandError(
                    f"--data-dir backs up an SQLite file, and this site's database is "
                    f"{engine.NAME}: back it up without --data-dir"
                )
        source = data_dir / DATABASE_FILENAME if data_dir else None
        progress = Progress(self.stderr) if sys.stderr.isatty() else None
        published = []

        def stop(signum, frame):
            if not published:  # once the backup has its name, a signal changes nothing of it
                raise KeyboardInterrupt

        def on_published(path):
            published.append(path)
            if self.from_command_line:  # the process ends with the command: ignore to the end
                ignore_stop_signals()

        # A signal at any moment is reported by what is on disk: a backup that got its name is
        # whole (with its sidecars). From the command line the signals stay ignored until the
        # process exits (Python restores the default action while it finalizes), so a late
        # signal never ends it with a bare KeyboardInterrupt or a death by signal.
        with on_stop_signals(stop, restore=not self.from_command_line) as received:
            try:
                backup = create_backup(
                    source,
                    folder=Path.cwd(),
                    output=output,
                    compress=compress,
                    progress=progress,
                    check="full" if full_check else "quick",
                    on_published=on_published,
                )
            except BackupError as err:
                raise CommandError(str(err)) from err
            except KeyboardInterrupt as err:
                name, signum = signal_name(received)
                written = err.path if isinstance(err, BackupInterrupted) else None
                outcome = (
                    f"the backup was written: {written}" if written else "no backup was written"
                )
                raise CommandError(
                    f"interrupted by {name}; {outcome}", returncode=128 + signum
                ) from None
            finally:
                if progress:
                    progress.clear()
            self.stdout.write(f"{backup.path} ({human_size(backup.size)}, {backup.size} bytes)")

    def run_from_argv(self, argv):
        self.from_command_line = True
        super().run_from_argv(argv)


class Progress:
    """One self-rewriting line on a terminal: bytes written against the expected size."""

    VERBS = {
        "copy": "Copying",
        "verify": "Verifying",
        "compress": "Compressing",
        "files": "Recording site files",
    }

    def __init__(self, stream):
        self.stream = stream
        self.started = time.monotonic()
        self.shown = False
        self.lock = threading.Lock()  # called from the engine's helper threads too

    def __call__(self, phase, done, total, size=None):
        if phase == "done":
            self.clear()
            return
        if time.monotonic() - self.started < PROGRESS_DELAY:
            return
        verb = self.VERBS.get(phase, phase)
        if phase == "files":  # counted as they are recorded: the total is not known ahead
            text = f"{verb}: {done} so far" + (f" ({human_size(size)})" if size else "")
        elif total:
            text = f"{verb}: {human_size(done)} of {human_size(total)} ({100 * done // total}%)"
        else:
            text = f"{verb}..."
        with self.lock:
            self.stream.write(f"\r\033[K{text}", ending="")
            self.stream.flush()
            self.shown = True

    def clear(self):
        with self.lock:
            if self.shown:
                self.stream.write("\r\033[K", ending="")
                self.stream.flush()
                self.shown = False
