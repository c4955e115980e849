"""The offsite parts of the Backups page: download an offsite copy, fetch one back to restore.

Both views go through the same staff check as the rest of it.
"""

import logging
from functools import wraps

from django.contrib import messages
from django.http import Http404, HttpResponseBadRequest, StreamingHttpResponse
from django.shortcuts import redirect
from django.views.decorators.http import require_POST, require_safe

from backups_app.audit import CHANGE, audit
from backups_app.engine import backups
from backups_app.offsite import fetch as offsite_fetch
from backups_app.offsite import store as offsite_store
from backups_app.offsite.copies import find_copy
from backups_app.offsite.store import OffsiteError
from backups_app.web.common import staff_required

logger = logging.getLogger(__name__)


def offsite_copy_view(view):
    """Look up the offsite copy the URL names before `view` gets it: 400 for a name that is
    not a backup's (nothing is asked of the store), 404 when copies are off or it has none."""

    @wraps(view)
    def wrapper(request, filename):
        if not backups.is_backup_name(filename):
            return HttpResponseBadRequest("Not a backup file name.", content_type="text/plain")
        if not offsite_store.enabled():
            raise Http404("Offsite copies are off.")
        try:
            copy = find_copy(filename)
        except OffsiteError as err:
            raise Http404(str(err)) from None
        return view(request, copy)

    return wrapper


@staff_required
@require_safe
@offsite_copy_view
def download_offsite(request, copy):
    """Stream an offsite copy from the store through the dashboard, decrypted when it is."""
    store = offsite_store.storage()
    try:
        digest = offsite_fetch.stored_checksum(copy, store)
        if copy.encrypted:
            offsite_store.identities()  # say now, not half-way, that it cannot be decrypted
    except OffsiteError as err:
        return HttpResponseBadRequest(str(err), content_type="text/plain", status=502)
    response = StreamingHttpResponse(
        offsite_fetch.stream_plain(copy, store) if request.method == "GET" else iter(()),
        content_type="application/octet-stream",
    )
    response["Content-Disposition"] = f'attachment; filename="{copy.name}"'
    response["X-Checksum-SHA256"] = digest
    if not copy.encrypted:
        response["Content-Length"] = str(copy.size)
    if request.method == "GET":
        audit(request.user, f"Downloaded offsite copy {copy.name}", flag=CHANGE)
    return response


@staff_required
@require_POST
@offsite_copy_view
def fetch_offsite(request, copy):
    """Put an offsite-only backup back into the backups folder, then show its restore page."""
    try:
        backup = offsite_fetch.fetch_into_backups(copy.name)
    except backups.BackupError as err:
        logger.error("fetching %s from the offsite store failed: %s", copy.name, err)
        messages.error(request, f"Could not fetch {copy.name} from the offsite store: {err}.")
        return redirect("backups:backups")
    audit(request.user, f"Fetched {copy.name} from the offsite store")
    messages.success(
        request, f"Fetched {copy.name} from the offsite store and checked its SHA-256."
    )
    return redirect("backups:restore", backup.name)
