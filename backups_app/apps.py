from django.apps import AppConfig
from django.core import checks


class BackupsAppConfig(AppConfig):
    name = "backups_app"
    verbose_name = "Backups"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from backups_app import alerts, signals
        from backups_app.checks import check_settings

        signals.run_finished.connect(alerts.on_run_finished, dispatch_uid="backups_app.alerts")
        checks.register(check_settings, "backups_app")
