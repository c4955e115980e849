from django.apps import AppConfig


class BackupsAppConfig(AppConfig):
    name = "backups_app"
    verbose_name = "Backups"

    def ready(self):
        from backups_app import signals

        signals.run_finished.connect(alert_on_run_finished, dispatch_uid="backups_app.alerts")


def alert_on_run_finished(sender, run, **kwargs):
    """Update the job's alert state (and mail) after each run; see signals.run_finished.

    alerts is imported here, on the first run, not at start-up: it pulls in the scheduler's
    libraries, which a command such as `backup` never needs.
    """
    from backups_app import alerts

    alerts.notify_run_finished(run)
