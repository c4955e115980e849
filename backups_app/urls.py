from django.urls import path

from backups_app.web import (
    cron_views,
    health_views,
    media_views,
    metrics_views,
    offsite_views,
    replication_views,
    restore_views,
    views,
)

app_name = "backups"

urlpatterns = [
    path("admin/backups/", views.backups_page, name="backups"),
    path("admin/database/backup", views.backup_now, name="backup-now"),
    # GET: the confirmation page (the backup is checked, nothing changes); POST: restore.
    path("admin/backups/restore/<path:filename>", restore_views.restore_backup, name="restore"),
    # GET ?at=TIME: the confirmation page (nothing changes); POST: restore from the replica.
    path("admin/backups/restore-at", replication_views.restore_at, name="restore-at"),
    # GET: the confirmation page; POST: delete the backup and its sidecars.
    path("admin/backups/delete/<path:filename>", restore_views.delete_backup, name="delete"),
    path("admin/backups/upload", views.upload_backup, name="upload"),
    # The site files of a backup (before the download's `path`, which would take it whole).
    path(
        "admin/database/backups/<str:filename>/media.tar",
        media_views.download_media,
        name="media-download",
    ),
    # `path`, not `str`: a name holding "/" (even %2F-encoded) still reaches the view, which
    # answers 400 for anything that is not a backup file name.
    path("admin/database/backups/<path:filename>", views.download_backup, name="download"),
    path(
        "admin/backups/offsite/<path:filename>",
        offsite_views.download_offsite,
        name="offsite-download",
    ),
    path(
        "admin/backups/offsite-fetch/<path:filename>",
        offsite_views.fetch_offsite,
        name="offsite-fetch",
    ),
    path("admin/cron/", cron_views.cron_page, name="cron"),
    path("admin/cron/runs/<int:pk>/", cron_views.run_detail, name="run"),
    path("admin/cron/<str:name>/run", cron_views.run_job_now, name="run-job"),
    # No login: for monitoring (200 or 503).
    path("healthz", health_views.healthz, name="healthz"),
    # Prometheus text: a Bearer token (STANZA_METRICS_TOKEN) or a staff login; 404 while unset.
    path("metrics", metrics_views.metrics_view, name="metrics"),
]
