"""No request body reaches the disk except a staff member's backup upload, and that one bounded.

Django streams any multipart file bigger than FILE_UPLOAD_MAX_MEMORY_SIZE into
FILE_UPLOAD_TEMP_DIR before a view runs (the CSRF check alone parses the body), so an
anonymous visitor could fill the data disk through the login page. This middleware decides
before the body is read: a staff session posting to the upload URL gets an upload handler
that writes to disk and stops at the upload limit; every other request keeps files in memory
only, and a body too big for memory is answered 413 unread.

Add it after AuthenticationMiddleware: `"backups_app.upload_gate.UploadGateMiddleware"`.
"""

import logging
import tempfile

from django.conf import settings
from django.core.files.uploadedfile import TemporaryUploadedFile, UploadedFile
from django.core.files.uploadhandler import (
    FileUploadHandler,
    MemoryFileUploadHandler,
    StopUpload,
    TemporaryFileUploadHandler,
)
from django.http import HttpResponse, JsonResponse
from django.urls import reverse

from backups_app import conf
from backups_app.restore import uploads
from backups_app.restore.uploads import UploadTooLarge

logger = logging.getLogger(__name__)

# The multipart framing around the file (boundaries, headers, the CSRF token field).
MULTIPART_SLACK = 64 * 1024


class UploadGateMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if request.method in ("GET", "HEAD", "OPTIONS"):
            return self.get_response(request)
        length = content_length(request)
        if is_staff_upload(request):
            refused = bound_staff_upload(request)
            if refused:
                return refused
        else:
            in_memory = max(settings.FILE_UPLOAD_MAX_MEMORY_SIZE, memory_limit())
            if length > in_memory + MULTIPART_SLACK:
                return too_large(request, None)
            request.upload_handlers = [MemoryFileUploadHandler(request), MemoryOnly(request)]
        return self.get_response(request)

    def process_exception(self, request, exception):
        if isinstance(exception, UploadTooLarge):
            return too_large(request, exception)
        return None


def bound_staff_upload(request):
    """Stream the upload into the app's upload folder, stopping at the limit; a 413 response
    when the declared length is already over it (nothing read), else None."""
    limit = uploads.upload_limit()
    if content_length(request) > limit + MULTIPART_SLACK:
        return too_large(request, UploadTooLarge(limit))
    request.upload_handlers = [LimitedUploadHandler(request, limit)]
    return None


def memory_limit():
    return settings.DATA_UPLOAD_MAX_MEMORY_SIZE or 0


def content_length(request):
    try:
        return max(0, int(request.META.get("CONTENT_LENGTH") or 0))
    except ValueError:
        return 0


def is_staff_upload(request):
    """A staff session posting to the upload URL: decided from the session, not the body."""
    if request.path_info != reverse("backups:upload"):
        return False
    user = getattr(request, "user", None)
    return bool(user and user.is_authenticated and user.is_active and user.is_staff)


def too_large(request, error):
    message = str(error) if error else "the request body is too large"
    logger.warning("refused a request body (413) on %s: %s", request.path_info, message)
    if "application/json" in request.headers.get("Accept", ""):
        return JsonResponse({"error": message}, status=413)
    text = message[:1].upper() + message[1:] + "."
    return HttpResponse(text, status=413, content_type="text/plain; charset=utf-8")


class LimitedUploadHandler(TemporaryFileUploadHandler):
    """Django's temporary-file handler that stops, and deletes its file, past `limit` bytes.

    It writes into the app's own upload folder (`conf.upload_dir()`), not the site's
    FILE_UPLOAD_TEMP_DIR, so the purge of abandoned uploads never touches a file of the site's.
    """

    def __init__(self, request, limit):
        super().__init__(request)
        self.limit = limit

    def new_file(self, *args, **kwargs):
        FileUploadHandler.new_file(self, *args, **kwargs)
        folder = conf.upload_dir()
        folder.mkdir(mode=0o700, exist_ok=True)
        self.file = UploadedToFolder(
            folder, self.file_name, self.content_type, 0, self.charset, self.content_type_extra
        )

    def receive_data_chunk(self, raw_data, start):
        if start + len(raw_data) > self.limit:
            self.file.close()  # a temporary upload file is deleted when closed
            raise UploadTooLarge(self.limit)
        return super().receive_data_chunk(raw_data, start)


class UploadedToFolder(TemporaryUploadedFile):
    """Django's TemporaryUploadedFile, in a folder of our choosing."""

    def __init__(self, folder, name, content_type, size, charset, content_type_extra=None):
        # Open for the upload's lifetime; Django closes (and so deletes) it when the request ends.
        file = tempfile.NamedTemporaryFile(suffix=".upload", dir=folder)  # noqa: SIM115
        UploadedFile.__init__(self, file, name, content_type, size, charset, content_type_extra)


class MemoryOnly(FileUploadHandler):
    """After Django's memory handler: a file it did not take is not written anywhere."""

    def new_file(self, *args, **kwargs):
        raise StopUpload(connection_reset=True)

    def receive_data_chunk(self, raw_data, start):
        return None

    def file_complete(self, file_size):
        return None
