#!/usr/bin/env python
"""Django's command-line utility, with start-up configuration errors shown as one line."""

import os
import sys


def main():
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "stanza_site.settings")
    from backups_app.conf import ConfigError

    try:
        from django.conf import settings
        from django.core.management import execute_from_command_line

        settings.INSTALLED_APPS  # noqa: B018 -- load settings here so a bad value is one line
        execute_from_command_line(sys.argv)
    except ConfigError as err:
        sys.stderr.write(f"Configuration error: {err}\n")
        sys.exit(2)


if __name__ == "__main__":
    main()
