from django import template

from backups_app.replication import replication

register = template.Library()


@register.inclusion_tag("backups/_replication.html")
def replication_panel():
    """The replication card of the Backups page: reads the replicate command's status file."""
    current = replication.status()
    return {"replica": current, "max_lag": replication.max_lag() if current.enabled else None}
