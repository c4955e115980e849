import signal
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from backups_app.backups import DATABASE_FILENAME, BackupError, create_backup, human_size

# Progress appears only for a backup that takes longer than this (seconds).
PROGRESS_DELAY = 0.5


@contextmanager
def signals_as_interrupt():
    """Turn SIGINT and SIGTERM into KeyboardInterrupt, so a stopped backup cleans up.

    Yields the list of signals received. A signal that was ignored when we started (a
    background job of a script) stays ignored, as Python itself does for SIGINT.
    """
    received = []

    def interrupt(signum, frame):
        received.append(signum)
        raise KeyboardInterrupt

    previous = {}
    for signum in (signal.SIGINT, signal.SIGTERM):
        if signal.getsignal(signum) is not signal.SIG_IGN:
            previous[signum] = signal.signal(signum, interrupt)
    try:
        yield received
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


class Command(BaseCommand):
    help = "Back up the database into one verified file (VACUUM INTO, written atomically)."
    # A backup must work even when the project has a check error (a half-done deploy).
    requires_system_checks = []

    def add_arguments(self, parser):
        parser.add_argument(
            "--output", help="exact path of the file to write (default: standard name in .)"
        )
        parser.add_argument("--compress", action="store_true", help="gzip the backup")
        parser.add_argument(
            "--data-dir",
            type=Path,
            help="back up DIR/database.sqlite instead of the configured database",
        )

    def handle(self, *args, output, compress, data_dir, **options):
        source = data_dir / DATABASE_FILENAME if data_dir else None
        progress = Progress(self.stderr) if sys.stderr.isatty() else None
        with signals_as_interrupt() as received:
            try:
                backup = create_backup(
                    source, folder=Path.cwd(), output=output, compress=compress, progress=progress
                )
            except BackupError as err:
                raise CommandError(str(err)) from err
            except KeyboardInterrupt:
                signum = received[-1] if received else signal.SIGINT
                raise CommandError(
                    f"interrupted by {signal.Signals(signum).name}; no backup was written",
                    returncode=128 + signum,
                ) from None
            finally:
                if progress:
                    progress.clear()
        self.stdout.write(f"{backup.path} ({human_size(backup.size)}, {backup.size} bytes)")


class Progress:
    """One self-rewriting line on a terminal: bytes written against the expected size."""

    VERBS = {"copy": "Copying", "verify": "Verifying", "compress": "Compressing"}

    def __init__(self, stream):
        self.stream = stream
        self.started = time.monotonic()
        self.shown = False
        self.lock = threading.Lock()  # called from the engine's helper threads too

    def __call__(self, phase, done, total):
        if phase == "done":
            self.clear()
            return
        if time.monotonic() - self.started < PROGRESS_DELAY:
            return
        verb = self.VERBS.get(phase, phase)
        if total:
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
