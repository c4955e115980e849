import sys
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from backups_app import backups, conf, replication, restore
from backups_app.backups import DATABASE_FILENAME, BackupError


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

    def handle(self, *args, backup, data_dir, yes, at, **options):
        if at is not None:
            if backup or data_dir:
                raise CommandError("--at restores the live database from the replica: no BACKUP")
            return self.restore_at(at, yes)
        if not backup:
            raise CommandError("name a backup to restore (or --at TIME)")
        database = data_dir / DATABASE_FILENAME if data_dir else backups.live_database_path()
        folder = data_dir / "backups" if data_dir else backups.backups_dir()
        if not yes and not sys.stdin.isatty():
            raise CommandError("not restoring without confirmation: no terminal; pass --yes")
        path = find_backup(backup, folder)
        # The run history lives in the configured database; record only restores into it.
        is_live = database.resolve() == backups.live_database_path().resolve()
        try:
            result = restore.restore_backup(
                path,
                database=database,
                backups_folder=folder,
                confirm=None if yes else lambda info: self.ask(info, database),
            )
        except BackupError as err:
            if is_live and "cancelled" not in str(err):
                restore.record_restore(error=err, trigger="command")
            raise CommandError(str(err)) from err
        except KeyboardInterrupt:
            raise CommandError("interrupted; the database was not changed") from None
        if is_live:
            restore.record_restore(result, trigger="command")
        self.stdout.write(f"Restored {restore.describe(result.backup)} into {result.database}")
        if result.safety_backup:
            safety = result.safety_backup.path
            self.stdout.write(f"Safety backup of the previous database: {safety}")
        else:
            self.stdout.write("No safety backup: there was no database before")
        pending = result.backup.pending_migrations
        if pending:
            self.stdout.write(
                f"The backup predates {len(pending)} migration(s) of this code; "
                "run `python manage.py migrate` next."
            )

    def restore_at(self, at, yes):
        try:
            when = replication.parse_time(at)
        except ValueError as err:
            raise CommandError(f"--at {at!r} is not an ISO 8601 time with Z or an offset") from err
        if not yes and not sys.stdin.isatty():
            raise CommandError("not restoring without confirmation: no terminal; pass --yes")
        database = backups.live_database_path()
        try:
            result = replication.restore_at(
                when, confirm=None if yes else lambda info: self.ask_at(info, when, database)
            )
        except BackupError as err:
            if "cancelled" not in str(err):
                restore.record_restore(error=err, trigger="command")
            raise CommandError(str(err)) from err
        except (conf.ConfigError, KeyboardInterrupt) as err:
            raise CommandError(str(err) or "interrupted; the database was not changed") from None
        restore.record_restore(result, trigger="command")
        self.stdout.write(f"Restored {result.backup.name} into {result.database}")
        if result.safety_backup:
            self.stdout.write(
                f"Safety backup of the previous database: {result.safety_backup.path}"
            )

    def ask_at(self, info, when, database):
        self.stdout.write(
            f"Restore {database} as it was at {replication.format_time(when)} "
            f"({len(info.row_counts)} tables, {info.total_rows} rows)?"
        )
        return self.confirm()

    def ask(self, info, database):
        self.stdout.write(f"Restore {restore.describe(info)}")
        self.stdout.write(f"into {database}?")
        return self.confirm()

    def confirm(self):
        self.stdout.write("A pre-restore safety backup of the current database is made first.")
        self.stdout.write("Restore? [y/N] ", ending="")
        self.stdout.flush()
        answer = sys.stdin.readline().strip().lower()
        return answer in ("y", "yes")


def find_backup(argument, folder):
    """A path as given when it exists, else a backup of that name in the backups folder."""
    path = Path(argument)
    if path.exists() or not backups.is_backup_name(argument):
        return path
    return Path(folder) / argument
