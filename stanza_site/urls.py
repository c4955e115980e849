from django.contrib import admin
from django.urls import include, path

from backups_app import health_views

urlpatterns = [
    # Before the admin's own URLs, whose catch-all would otherwise answer /admin/backups/.
    path("", include("backups_app.urls")),
    path("admin/", admin.site.urls),
    path("healthz", health_views.healthz, name="healthz"),
]
