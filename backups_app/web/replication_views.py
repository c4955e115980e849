"""Restore to a point in time from the replica: the confirmation page, and the restore."""

import logging
from datetime import UTC

from django.contrib import messages
from django.shortcuts import redirect, render
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.views.decorators.http import require_http_methods

from backups_app import conf
from backups_app.engine import backups
from backups_app.replication import replication
from backups_app.web import views

logger = logging.getLogger(__name__)


def parse_when(text):
    """A time from the form: ISO 8601; without a zone it is read in the site's time zone."""
    try:
        value = parse_datetime((text or "").strip())
        if value is None:
            return None
        if timezone.is_naive(value):
            value = timezone.make_aware(value)
        return value.astimezone(UTC)
    except (ValueError, OverflowError):  # well-formed but no such time (month 13, year 0)
        return None


@views.staff_required
@require_http_methods(["GET", "HEAD", "POST"])
def restore_at(request):
    """GET ?at=TIME: what restoring to that time would do (nothing changes). POST: do it."""
    if not replication.enabled():
        messages.error(request, "Replication is off: set STANZA_REPLICA_URL.")
        return redirect("backups:backups")
    raw = request.POST.get("at") if request.method == "POST" else request.GET.get("at")
    when = parse_when(raw)
    if when is None:
        messages.error(request, f"{raw or 'No time'!r} is not a date and time.")
        return redirect("backups:backups")
    if request.method == "POST":
        return restore_now(request, when)
    current = replication.status()
    problem = ""
    if current.window is None:
        problem = "the replica's window is not known yet (is `manage.py replicate` running?)"
    elif when not in current.window:
        problem = (
            f"{replication.format_time(when)} is outside the replica's window ({current.window})"
        )
    return render(
        request,
        "backups/restore_at.html",
        views.admin_context(
            request,
            "Restore to a point in time",
            when=when,
            at=when.isoformat(),
            replica=current,
            problem=problem,
            database=backups.live_database_path(),
            folder=backups.backups_dir(),
        ),
    )


def restore_now(request, when):
    return views.run_restore(
        request,
        f"restore to {replication.format_time(when)}",
        lambda **who: replication.restore_at(when, **who),
        errors=(backups.BackupError, conf.ConfigError),
    )
