"""Django's `migrate`, which first backs up the database when it is about to change it."""

from pathlib import Path

from django.core.management.base import CommandError
from django.core.management.commands import migrate
from django.db import connections
from django.db.models.signals import pre_migrate

from backups_app.engine import backups

# The database is DATABASES["default"] on its server (not a file): create_backup(None) backs it up.
ON_SERVER = "on its server"


class Command(migrate.Command):
    help = (
        "Apply or unapply migrations, after backing up the database (label pre-migrate) "
        "into the backups folder when there is something to do and the database exists."
    )

    def handle(self, *args, **options):
        # Read before Django connects: connecting creates the file of a new database.
        self.source = self.database_file(options["database"])
        self.backed_up = False
        pre_migrate.connect(self.back_up, dispatch_uid="backups_app.pre_migrate_backup")
        try:
            return super().handle(*args, **options)
        finally:
            pre_migrate.disconnect(dispatch_uid="backups_app.pre_migrate_backup")

    def database_file(self, alias):
        """The database's file if it exists with content; None for a new or in-memory one.

        For the live database on a server (PostgreSQL): ON_SERVER once it has been migrated.
        """
        settings_dict = connections[alias].settings_dict
        if alias == "default" and not backups.database_engine().IS_FILE:
            tables = connections[alias].introspection.table_names()
            return ON_SERVER if "django_migrations" in tables else None
        if settings_dict["ENGINE"] != "django.db.backends.sqlite3":
            return None
        path = Path(str(settings_dict["NAME"]))
        try:
            return path if path.is_file() and path.stat().st_size > 0 else None
        except OSError:
            return None

    def back_up(self, plan=None, **kwargs):
        """Back up once, when the plan holds a migration to apply or unapply (forwards or back).

        Django sends pre_migrate once per app, after it has computed the plan and before it
        applies anything, so an error here stops the migration before it starts.
        """
        if self.backed_up or not plan or self.source is None:
            return
        self.backed_up = True
        try:
            source = None if self.source == ON_SERVER else self.source
            backup = backups.create_backup(source, label="pre-migrate")
        except backups.BackupError as err:
            raise CommandError(
                f"the pre-migrate backup failed, so nothing was migrated: {err}"
            ) from err
        if self.verbosity >= 1:
            self.stdout.write(f"Backed up the database before migrating: {backup.path}")
