from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    # Before the admin's own URLs, whose catch-all would otherwise answer /admin/backups/.
    # The app's URLs include /healthz.
    path("", include("backups_app.urls")),
    path("admin/", admin.site.urls),
]
