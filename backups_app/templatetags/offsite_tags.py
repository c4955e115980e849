"""The offsite parts of the Backups page, from one listing of the store per request."""

import contextlib

from django import template

from backups_app.engine import backups
from backups_app.offsite import offsite

register = template.Library()


def page_state(request):
    """{"on", "copies", "error", "drill", "newest"} for this request, from one store listing."""
    cached = getattr(request, "_stanza_offsite", None)
    if cached is not None:
        return cached
    state = {"on": False, "copies": {}, "error": "", "drill": None, "newest": None}
    try:
        state["on"] = offsite.enabled()
        if state["on"]:
            store = offsite.storage()
            state["copies"] = offsite.list_copies(store)
            state["newest"] = offsite.newest_copy(state["copies"])
            if state["newest"] is not None:
                state["drill"] = offsite.drill_of(state["newest"], store)
    except backups.BackupError as err:
        state["error"] = str(err)
    if request is not None:
        request._stanza_offsite = state
    return state


@register.inclusion_tag("backups/_offsite_where.html", takes_context=True)
def offsite_where(context, backup):
    """Where one local backup is: here only, or here and offsite (and since when)."""
    state = page_state(context.get("request"))
    copy = state["copies"].get(backup.name)
    return {"state": state, "copy": copy if copy and copy.complete else None}


@register.inclusion_tag("backups/_offsite.html", takes_context=True)
def offsite_section(context):
    """The offsite store's state, its last drill, and the backups that are only offsite."""
    state = page_state(context.get("request"))
    local = set()
    if state["on"]:  # names only: a Backup per file costs ~50 ms at 5000 backups
        with contextlib.suppress(backups.BackupError):
            local = {item.name for item in backups.scan_backups(reuse=True)}
    only = [c for c in state["copies"].values() if c.complete and c.name not in local]
    only.sort(key=lambda c: c.name, reverse=True)
    return {
        "state": state,
        "location": offsite.location() if state["on"] else "",
        "offsite_only": only,
        "complete": sum(1 for c in state["copies"].values() if c.complete),
        "request": context.get("request"),
        "csrf_token": context.get("csrf_token"),
    }
