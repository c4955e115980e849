"""Stream a backup upload into the app's own upload folder, not the site's FILE_UPLOAD_TEMP_DIR.

The folder (`conf.upload_dir()`, inside the backups folder) belongs to the app, so the purge
job may remove what a killed web worker left there without touching a file of the site's.
"""

import tempfile

from django.core.files.uploadedfile import TemporaryUploadedFile, UploadedFile
from django.core.files.uploadhandler import FileUploadHandler, TemporaryFileUploadHandler

from backups_app import conf


class UploadedToFolder(TemporaryUploadedFile):
    """Django's TemporaryUploadedFile, in a folder of our choosing."""

    def __init__(self, folder, name, content_type, size, charset, content_type_extra=None):
        # Open for the upload's lifetime; Django closes (and so deletes) it when the request ends.
        file = tempfile.NamedTemporaryFile(suffix=".upload", dir=folder)  # noqa: SIM115
        UploadedFile.__init__(self, file, name, content_type, size, charset, content_type_extra)


class UploadFolderHandler(TemporaryFileUploadHandler):
    def new_file(self, *args, **kwargs):
        FileUploadHandler.new_file(self, *args, **kwargs)
        folder = conf.upload_dir()
        folder.mkdir(mode=0o700, exist_ok=True)
        self.file = UploadedToFolder(
            folder, self.file_name, self.content_type, 0, self.charset, self.content_type_extra
        )
