"""The site files of a backup as a tar download (staff only). One check, one stream."""

import logging

from django.http import StreamingHttpResponse
from django.views.decorators.http import require_safe

from backups_app.audit import CHANGE, audit
from backups_app.engine import backups
from backups_app.media import lists, put_back, tarstream
from backups_app.web.common import failed, lookup, staff_required

logger = logging.getLogger(__name__)


@staff_required
@require_safe
def download_media(request, filename):
    """GET /admin/database/backups/<NAME>/media.tar: the files NAME.media lists, as a tar."""
    backup, refused = lookup(request, filename)
    if refused is not None:
        return refused
    if not lists.exists(backup.path):
        return failed(request, f"{filename} has no list of site files", 404)
    folder = backups.backups_dir()
    try:
        put_back.check_objects(lists.list_path(backup.path), folder)
    except (backups.BackupError, lists.ListError) as err:
        return failed(request, str(err), 409)
    response = StreamingHttpResponse(
        tarstream.stream(lists.list_path(backup.path), folder), content_type="application/x-tar"
    )
    response["Content-Disposition"] = f'attachment; filename="{filename}.media.tar"'
    if request.method == "GET":
        audit(request.user, f"Downloaded the site files of backup {filename}", flag=CHANGE)
    return response
