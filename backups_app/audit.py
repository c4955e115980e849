"""The audit trail of what staff did from the dashboard: Django's LogEntry, under CronRun's
content type, so the admin's "Recent actions" lists it too."""

from django.contrib.admin.models import ADDITION, CHANGE, DELETION, LogEntry
from django.contrib.contenttypes.models import ContentType

from backups_app.models import CronRun

__all__ = ("ADDITION", "CHANGE", "DELETION", "audit", "recent_entries")

ENTRIES_SHOWN = 10


def audit(user, message, *, flag=ADDITION, obj=None):
    """Record one action; `message` names what happened ("Made backup X (1.2 MB)")."""
    LogEntry.objects.create(
        user_id=user.pk,
        content_type=ContentType.objects.get_for_model(CronRun),
        object_id=str(obj.pk) if obj is not None else None,
        # "Recent actions" on the admin index shows this line: the action, not an object.
        object_repr=message[:200],
        action_flag=flag,
        change_message=message,
    )


def recent_entries(limit=ENTRIES_SHOWN):
    content_type = ContentType.objects.get_for_model(CronRun)
    entries = LogEntry.objects.filter(content_type=content_type).select_related("user")
    return entries.order_by("-action_time", "-id")[:limit]


def is_dashboard_entry(entry):
    """A LogEntry written by `audit` (its message is words, not the admin's JSON)."""
    content_type = ContentType.objects.get_for_model(CronRun)
    return entry.content_type_id == content_type.pk and not entry.change_message.startswith("[")
