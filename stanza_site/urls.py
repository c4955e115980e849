from django.contrib import admin
from django.templatetags.static import static
from django.urls import include, path
from django.views.generic import RedirectView, TemplateView

urlpatterns = [
    # Before the admin's own URLs, whose catch-all would otherwise answer /admin/backups/.
    # The app's URLs include /healthz.
    path("", include("backups_app.urls")),
    path("admin/", admin.site.urls),
    # This site has no public pages: `/` (where the admin's "View site" leads) points to the
    # dashboard, and browsers asking for /favicon.ico get the dashboard's icon.
    path("", TemplateView.as_view(template_name="home.html"), name="home"),
    path("favicon.ico", RedirectView.as_view(url=static("backups/favicon.svg"))),
]
