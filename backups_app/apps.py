from django.apps import AppConfig
from django.core import checks


class BackupsAppConfig(AppConfig):
    name = "backups_app"
    verbose_name = "Backups"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from backups_app import signals
        from backups_app.checks import check_settings
        from backups_app.jobs import pings

        # Pings first: they are only queued, while an alert email may wait on its server.
        signals.run_started.connect(pings.on_run_started, dispatch_uid="backups_app.pings")
        signals.run_finished.connect(pings.on_run_finished, dispatch_uid="backups_app.pings")
        signals.run_finished.connect(alert_on_run_finished, dispatch_uid="backups_app.alerts")
        signals.restored.connect(note_restore, dispatch_uid="backups_app.replication")
        checks.register(check_settings, "backups_app")


def alert_on_run_finished(sender, run, **kwargs):
    """Update the job's alert state (and mail) after each run; see signals.run_finished.

    alerts is imported here, on the first run, not at start-up: it pulls in the scheduler's
    libraries, which a command such as `backup` never needs.
    """
    from backups_app.health import alerts

    alerts.notify_run_finished(run)


def note_restore(sender, result, database, **kwargs):
    """Tell replication that a new history began (see signals.restored); imported lazily too."""
    from backups_app.replication import replication

    replication.note_restore(result, database)
