"""Restore to a point in time from the replica: the confirmation page, and the restore."""

import logging
import zoneinfo
from datetime import UTC

from django.contrib import messages
from django.shortcuts import redirect, render
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.views.decorators.http import require_http_methods

from backups_app import conf
from backups_app.engine import backups
from backups_app.replication import replication
from backups_app.templatetags.backups_tags import time_text
from backups_app.web.common import admin_context, staff_required
from backups_app.web.restore_views import point_in_time_changes, run_restore

logger = logging.getLogger(__name__)


def parse_when(text, zone=""):
    """A time from the form: ISO 8601; without an offset it is read in `zone` (the browser's,
    which the page's script sends), else in the site's time zone."""
    try:
        value = parse_datetime((text or "").strip())
        if value is None:
            return None
        if timezone.is_naive(value):
            value = timezone.make_aware(value, named_zone(zone))
        return value.astimezone(UTC)
    except (ValueError, OverflowError):  # well-formed but no such time (month 13, year 0)
        return None


def named_zone(name):
    """The time zone called `name` (an IANA name such as "Europe/Berlin"), else the site's."""
    try:
        return zoneinfo.ZoneInfo(name) if name else timezone.get_current_timezone()
    except (ValueError, zoneinfo.ZoneInfoNotFoundError):
        return timezone.get_current_timezone()


@staff_required
@require_http_methods(["GET", "HEAD", "POST"])
def restore_at(request):
    """GET ?at=TIME: what restoring to that time would do (nothing changes). POST: do it."""
    if not replication.enabled():
        messages.error(request, "Replication is off: set STANZA_REPLICA_URL.")
        return redirect("backups:backups")
    raw = request.POST.get("at") if request.method == "POST" else request.GET.get("at")
    when = parse_when(raw, request.GET.get("tz", ""))
    if when is None:
        messages.error(request, f"{raw or 'No time'!r} is not a date and time.")
        return redirect("backups:backups")
    if request.method == "POST":
        return restore_now(request, when)
    current = replication.status()
    problem = ""
    if current.window is None:
        problem = "the replica's window is not known yet (is manage.py replicate running?)"
    elif when not in current.window:
        problem = (
            f"{replication.format_time(when)} is outside the replica's window ({current.window})"
        )
    changes, later_migrations = point_in_time_changes(when)
    return render(
        request,
        "backups/restore_at.html",
        admin_context(
            request,
            "Restore to a point in time",
            when=when,
            at=when.isoformat(),
            replica=current,
            problem=problem,
            changes=changes,
            later_migrations=later_migrations,
            database=backups.live_database_path(),
            folder=backups.backups_dir(),
        ),
    )


def restore_now(request, when):
    return run_restore(
        request,
        f"restore to {replication.format_time(when)}",
        lambda **who: replication.restore_at(when, **who),
        errors=(backups.BackupError, conf.ConfigError),
        named=f"the replica at {time_text(when)}",  # what the user chose, not a scratch file
    )
