"""Django system checks of the app's settings: `manage.py check` names a bad value.

Registered in `BackupsAppConfig.ready`, so they run wherever Django runs its checks (`check`,
`migrate`, `runserver`, `runscheduler`, ...) in any site the app is installed in.
"""

from django.core import checks

from backups_app import conf


def check_settings(app_configs=None, **kwargs):
    """Each bad `STANZA_*` value (or a database that is neither SQLite nor PostgreSQL) as one
    error."""
    errors = [checks.Error(problem, id="backups_app.E001") for problem in conf.check_all()]
    if errors:
        return errors
    folder = conf.get("STANZA_BACKUPS_DIR")
    if conf.raw_value("STANZA_BACKUPS_DIR") is not None and not folder.exists():
        return [
            checks.Warning(
                f"STANZA_BACKUPS_DIR={str(folder)!r} does not exist: backups fail until it does",
                hint="Create it (mode 0700), or leave the setting out for backups/ beside the "
                "database, which is created when first needed.",
                id="backups_app.W001",
            )
        ]
    return []
