"""The opt-in admin site: what a site gets by listing `StanzaAdminConfig` in INSTALLED_APPS.

Installing `backups_app` changes nothing of the host site's admin (its header, index, "View
site" link and registered models stay as they are). A site that puts
"backups_app.admin_site.StanzaAdminConfig" in place of "django.contrib.admin" gets, and only
gets (README, "Use it in your own Django site"):

- the header and title "Stanza Backups", the index titled "Dashboard";
- the admin index with the health verdict on top, the dashboard's pages (Backups, Cron jobs)
  listed first in the Backups app and in the navigation sidebar, and "Recent actions" that
  name what the dashboard did;
- django-apscheduler's job store and executions hidden from the admin (the run history is the
  record people read).
"""

import contextlib

from django.contrib import admin
from django.contrib.admin.apps import AdminConfig
from django.contrib.admin.exceptions import NotRegistered
from django.urls import reverse

APP_LABEL = "backups_app"
DASHBOARD = (("Backups", "backups:backups", "backups"), ("Cron jobs", "backups:cron", "cron"))


def dashboard_entries():
    """The dashboard's pages in the shape of the admin's model entries."""
    return [
        {
            "name": name,
            "object_name": f"dashboard-{slug}",
            "admin_url": reverse(url_name),
            "add_url": None,
            "view_only": True,
            "perms": {"view": True},
        }
        for name, url_name, slug in DASHBOARD
    ]


class StanzaAdminSite(admin.AdminSite):
    site_header = "Stanza Backups"
    site_title = "Stanza Backups"
    index_title = "Dashboard"
    # Django's index with the health verdict on top and "Recent actions" that name the action.
    index_template = "backups/admin_index.html"

    def get_app_list(self, request, app_label=None):
        app_list = super().get_app_list(request, app_label)
        user = request.user
        if not (user.is_active and user.is_staff) or app_label not in (None, APP_LABEL):
            return app_list
        app = next((a for a in app_list if a["app_label"] == APP_LABEL), None)
        if app is None:
            app = {
                "name": "Backups",
                "app_label": APP_LABEL,
                "app_url": reverse("backups:backups"),
                "has_module_perms": True,
                "models": [],
            }
            app_list.insert(0, app)
        app["models"] = dashboard_entries() + app["models"]
        return app_list


class StanzaAdminConfig(AdminConfig):
    """In INSTALLED_APPS in place of "django.contrib.admin": makes admin.site a StanzaAdminSite."""

    default_site = "backups_app.admin_site.StanzaAdminSite"

    def ready(self):
        super().ready()  # autodiscovers every app's admin module
        from django_apscheduler.models import DjangoJob, DjangoJobExecution

        # The scheduler's internals: the run history (CronRun) is the one users read.
        for model in (DjangoJob, DjangoJobExecution):
            with contextlib.suppress(NotRegistered):
                admin.site.unregister(model)
