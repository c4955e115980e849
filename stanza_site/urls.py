from django.contrib import admin
from django.urls import path

from backups_app import health_views

urlpatterns = [
    path("admin/", admin.site.urls),
    path("healthz", health_views.healthz, name="healthz"),
]
