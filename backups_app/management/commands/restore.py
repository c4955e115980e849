import contextlib
import sys
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from backups_app import conf
from backups_app.core.interrupts import on_stop_signals
from backups_app.engine import backups
from backups_app.engine.backups import DATABASE_FILENAME, BackupError
from backups_app.media import put_back as media_put_back
from backups_app.offsite import fetch as offsite_fetch
from backups_app.offsite import store as offsite_store
from backups_app.replication import replication
from backups_app.restore import restore


class Command(BaseCommand):
    help = (
        "Restore a backup (plain or gzip'd) into the live database, after checking it and "
        "making a pre-restore safety backup."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "backup", nargs="?", help="path of a backup file, or its name in the backups folder"
        )
        parser.add_argument(
            "--at",
            metavar="TIME",
            help="restore the live database as it was at TIME (ISO 8601 with Z or an offset) "
            "from the replica",
        )
        parser.add_argument(
            "--data-dir",
            type=Path,
            help="restore into DIR/database.sqlite (safety backup in DIR/backups)",
        )
        parser.add_argument("--yes", action="store_true", help="do not ask for confirmation")
        parser.add_argument(
            "--offsite",
            action="store_true",
            dest="from_offsite",
            help="BACKUP is the name of an offsite copy: fetch (and decrypt) it first",
        )
        files = parser.add_mutually_exclusive_group()
        files.add_argument(
            "--no-media", action="store_true", help="restore the database alone, not the site files"
        )
        files.add_argument(
            "--media-only",
            action="store_true",
            help="restore the site files alone (after a pre-restore safety backup)",
        )

    def handle(
        self,
        *args,
        backup,
        data_dir,
        yes,
        at=None,
        from_offsite=False,
        no_media=False,
        media_only=False,
        **options,
    ):
        try:
            # SIGTERM too stops the restore cleanly: rolled back, temporary files removed.
            with on_stop_signals(), contextlib.ExitStack() as stack:
                if at is not None:
                    if media_only:
                        raise CommandError("--at restores the database alone: no --media-only")
                    return self.restore_at(at, backup, data_dir, yes, from_offsite)
                if data_dir and media_only:
                    raise CommandError("--media-only restores the site's files: no --data-dir")
                if not backup:
                    raise CommandError("name a backup to restore (or --at TIME)")
                if from_offsite:  # fetched into the data folder's tmp, removed after
                    backup = stack.enter_context(fetch_offsite(backup))
                if media_only:
                    return self.restore_files(backup, yes)
                self.restore(backup, data_dir, yes, media=not no_media)
        except CommandError:
            raise
        except (BackupError, conf.ConfigError) as err:
            raise CommandError(str(err)) from err
        except KeyboardInterrupt:
            raise CommandError("interrupted; the database was not changed") from None
        except Exception as err:  # one line, never a traceback, never exit status 0
            raise CommandError(f"restore failed: {type(err).__name__}: {err}") from err

    def restore(self, backup, data_dir, yes, media=True):
        if data_dir and not backups.database_engine().IS_FILE:
            raise CommandError(
                "--data-dir restores into an SQLite file, and this site's database is "
                f"{backups.database_engine().NAME}: restore without --data-dir"
            )
        database = data_dir / DATABASE_FILENAME if data_dir else backups.live_database()
        folder = data_dir / "backups" if data_dir else backups.backups_dir()
        if not yes and not sys.stdin.isatty():
            raise CommandError("not restoring without confirmation: no terminal; pass --yes")
        path = find_backup(backup, folder)
        result = restore.restore_and_record(
            path,
            trigger="command",
            by="the restore command",
            database=database,
            backups_folder=folder,
            confirm=None if yes else lambda info: self.ask(info, database, media),
            media=media,
        )
        into = restore.database_shown(result.database)
        self.stdout.write(f"Restored {restore.describe(result.backup)} into {into}")
        self.report(result)

    def restore_at(self, at, backup, data_dir, yes, from_offsite):
        if backup or data_dir or from_offsite:
            raise CommandError("--at restores the live database from the replica: no BACKUP")
        try:
            when = replication.parse_time(at)
        except ValueError as err:
            raise CommandError(f"--at {at!r} is not an ISO 8601 time with Z or an offset") from err
        if not yes and not sys.stdin.isatty():
            raise CommandError("not restoring without confirmation: no terminal; pass --yes")
        result = replication.restore_at(
            when,
            trigger="command",
            by="the restore command",
            confirm=None if yes else lambda info: self.ask_at(info, when),
        )
        self.stdout.write(f"Restored {result.backup.name} into {result.database}")
        self.report(result)
        self.stdout.write(f"Note: {media_put_back.AT_TIME}")

    def restore_files(self, backup, yes):
        path = find_backup(backup, backups.backups_dir())
        if not yes:
            if not sys.stdin.isatty():
                raise CommandError("not restoring without confirmation: no terminal; pass --yes")
            facts = media_put_back.confirm_facts(path)
            self.stdout.write(f"Restore the site files of {path.name} ({facts_words(facts)})?")
            self.stdout.write("A pre-restore safety backup records the present files first.")
            if not self.confirm_only():
                raise CommandError("restore cancelled; nothing was changed")
        safety, line = media_put_back.restore_files_only(
            path, trigger="command", by="the restore command"
        )
        self.stdout.write(f"Restored: {line}")
        self.stdout.write(f"Safety backup of the previous files: {safety.path}")

    def ask_at(self, info, when):
        self.stdout.write(
            f"Restore {backups.live_database_path()} as it was at "
            f"{replication.format_time(when)} ({len(info.row_counts)} tables, "
            f"{info.total_rows} rows)?"
        )
        return self.confirm()

    def report(self, result):
        if result.safety_backup:
            safety = result.safety_backup.path
            self.stdout.write(f"Safety backup of the previous database: {safety}")
        else:
            self.stdout.write("No safety backup: there was no database before")
        if result.kept:
            kept = ", ".join(f"{what} ({rows} rows)" for what, rows in result.kept.items())
            self.stdout.write(f"Kept from the database as it was: {kept}")
        for note in result.notes:
            self.stdout.write(f"Note: {note}")
        pending = result.backup.pending_migrations
        if pending:
            self.stdout.write(
                f"The backup predates {len(pending)} migration(s) of this code; "
                "run python manage.py migrate next."
            )

    def ask(self, info, database, media=False):
        self.stdout.write(f"Restore {restore.describe(info)}")
        self.stdout.write(f"into {restore.database_shown(database)}?")
        if media and database == backups.live_database():
            facts = media_put_back.confirm_facts(info.path)
            self.stdout.write(f"Site files: {facts_words(facts)}")
        return self.confirm()

    def confirm(self):
        self.stdout.write("A pre-restore safety backup of the current database is made first;")
        self.stdout.write("the run history, alert state, job store and audit are kept.")
        return self.confirm_only()

    def confirm_only(self):
        self.stdout.write("Restore? [y/N] ", ending="")
        self.stdout.flush()
        answer = sys.stdin.readline().strip().lower()
        return answer in ("y", "yes")


def facts_words(facts):
    return facts if isinstance(facts, str) else facts.words(done=False)


@contextlib.contextmanager
def fetch_offsite(name):
    """The offsite copy `name`, fetched (decrypted) into the data folder's tmp and checked."""
    if not offsite_store.enabled():
        raise BackupError("offsite copies are off: set STANZA_OFFSITE_URL")
    with offsite_fetch.fetched(name) as path:
        yield str(path)


def find_backup(argument, folder):
    """A path as given when it exists, else a backup of that name in the backups folder."""
    path = Path(argument)
    if path.exists() or not backups.is_backup_name(argument):
        return path
    return Path(folder) / argument
