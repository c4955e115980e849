"""The offsite parts of the Backups page. Formatting only: the view gathers the state, from what
the offsite jobs recorded (offsite.state.page_state), into the context as `offsite`."""

from django import template

register = template.Library()

OFF = {"on": False, "copies": {}, "error": "", "drill": None, "newest": None}


def state_of(context):
    """The view's offsite state; off when the page was rendered without one (no I/O here)."""
    state = context.get("offsite")
    return state if state is not None else OFF


@register.inclusion_tag("backups/_offsite_where.html", takes_context=True)
def offsite_where(context, backup):
    """Where one local backup is: here only, or here and offsite (and since when)."""
    state = state_of(context)
    return {"state": state, "copy": state["copies"].get(backup.name)}


@register.inclusion_tag("backups/_offsite.html", takes_context=True)
def offsite_section(context):
    """The offsite store's state, its last drill, and the backups that are only offsite."""
    state = state_of(context)
    return {
        "state": state,
        "location": state.get("location", ""),
        "offsite_only": state.get("offsite_only", []),
        "complete": state.get("complete", 0),
        "request": context.get("request"),
        "csrf_token": context.get("csrf_token"),
    }
