"""Django's admin site, with the dashboard's pages listed in the Backups app.

The pages (Backups, Cron jobs) appear first in the app's module on the admin index and in the
navigation sidebar, rendered by Django's own `admin/app_list.html` as view-only entries. A
staff user who may not view the app's models still gets them, in a module of their own.
"""

from django.contrib import admin
from django.contrib.admin.apps import AdminConfig
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
