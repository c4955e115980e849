from django.apps import AppConfig


class BackupsAppConfig(AppConfig):
    name = "backups_app"
    verbose_name = "Backups"

    def ready(self):
        from backups_app import alerts, signals

        signals.run_finished.connect(alerts.on_run_finished, dispatch_uid="backups_app.alerts")
