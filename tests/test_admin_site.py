"""What the app does to a site's admin: nothing by being installed; the opt-in is
StanzaAdminConfig (the README lists what it changes)."""

import json
import subprocess
import sys
import textwrap

from tests.conftest import REPO_DIR

PROBE = """
import django
from django.conf import settings

settings.configure(
    INSTALLED_APPS=[{admin!r}, "django.contrib.auth", "django.contrib.contenttypes",
                    "django.contrib.sessions", "django.contrib.messages",
                    "django_apscheduler", "backups_app"],
    DATABASES={{"default": {{"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}}},
    ROOT_URLCONF="backups_app.urls",
)
django.setup()
from django.contrib import admin
from django_apscheduler.models import DjangoJob
from backups_app.models import CronRun

import json
site = admin.site
print(json.dumps([site.__class__.__name__, str(site.site_header), str(site.site_title),
                  str(site.index_title), site.index_template, str(site.site_url),
                  site.is_registered(DjangoJob),
                  site.is_registered(CronRun)]))
"""


def probe(admin_app):
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(PROBE.format(admin=admin_app))],
        capture_output=True,
        text=True,
        cwd=REPO_DIR,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_it_changes_nothing_of_a_host_sites_admin_by_being_installed():
    assert probe("django.contrib.admin") == [
        "AdminSite",
        "Django administration",
        "Django site admin",
        "Site administration",
        None,
        "/",
        True,  # django-apscheduler's own models stay where that app put them
        True,  # the run history, the app's own model
    ]


def test_it_changes_the_header_index_and_scheduler_models_when_the_site_opts_in():
    assert probe("backups_app.admin_site.StanzaAdminConfig") == [
        "StanzaAdminSite",
        "Stanza Backups",
        "Stanza Backups",
        "Dashboard",
        "backups/admin_index.html",
        "/",  # "View site" is the site's: this project's own `/` points to the dashboard
        False,
        True,
    ]
