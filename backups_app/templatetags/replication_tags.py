"""The replication card of the Backups page: formats the status the view read (no I/O here)."""

from django import template

register = template.Library()


@register.inclusion_tag("backups/_replication.html", takes_context=True)
def replication_panel(context):
    """The card for `replica`, the `replication.status()` the page's view put in its context."""
    replica = context.get("replica")
    return {"replica": replica, "max_lag": getattr(replica, "max_lag", None)}
