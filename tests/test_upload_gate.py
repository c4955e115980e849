"""No request body reaches the disk except a staff upload, and that one is bounded (issue 8.2)."""

import pytest
from django.core.files import uploadhandler
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from backups_app import upload_gate
from backups_app.engine import backups
from backups_app.restore import uploads
from tests.conftest import make_database

UPLOAD_URL = "/admin/backups/upload"
JSON = {"HTTP_ACCEPT": "application/json"}


@pytest.fixture
def upload_dir(data_dir):
    """The app's own upload folder, beside the live database."""
    folder = data_dir / ".stanza-uploads"
    folder.mkdir()
    return folder


@pytest.fixture
def files_written(monkeypatch):
    """Every upload streamed to a temporary file during the test, by Django's handler or the
    app's (paths)."""
    written = []

    def record(owner, name):
        class Recorded(getattr(owner, name)):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, **kwargs)
                written.append(self.temporary_file_path())

        monkeypatch.setattr(owner, name, Recorded)

    record(uploadhandler, "TemporaryUploadedFile")
    record(upload_gate, "UploadedToFolder")
    return written


def test_an_anonymous_multipart_post_to_the_login_page_never_reaches_the_disk(
    db, upload_dir, files_written
):
    client = Client(enforce_csrf_checks=True)
    client.get("/admin/login/")  # any visitor gets the CSRF cookie
    token = client.cookies["csrftoken"].value
    big = SimpleUploadedFile("fill.bin", b"x" * (4 * 1024 * 1024))

    response = client.post(
        "/admin/login/", {"csrfmiddlewaretoken": token, "username": "a", "file": big}
    )

    assert response.status_code == 413
    assert files_written == []
    assert list(upload_dir.iterdir()) == []


def test_a_logged_in_user_who_is_not_staff_cannot_stream_to_disk_either(
    user_client, upload_dir, files_written
):
    big = SimpleUploadedFile("fill.bin", b"x" * (4 * 1024 * 1024))

    response = user_client.post(UPLOAD_URL, {"file": big})

    assert response.status_code == 413
    assert files_written == []


def test_a_small_form_post_still_works(db, django_user_model):
    django_user_model.objects.create_user("admin", password="pw-admin-123", is_staff=True)
    client = Client()

    response = client.post(
        "/admin/login/?next=/admin/", {"username": "admin", "password": "pw-admin-123"}
    )

    assert response.status_code == 302
    assert response.url == "/admin/"


def test_a_staff_upload_over_the_limit_is_refused_413_before_its_body_is_read(
    staff_client, backups_folder, upload_dir, files_written, settings, tmp_path
):
    settings.STANZA_UPLOAD_MAX_MB = 1
    made = make_database(tmp_path / "big.sqlite", rows=60_000, wal=False)
    assert made.stat().st_size > 2 * 1024 * 1024

    response = staff_client.post(
        UPLOAD_URL, {"file": SimpleUploadedFile("big.bak", made.read_bytes())}, **JSON
    )

    assert response.status_code == 413
    assert response.json() == {
        "error": "the upload is larger than the 1.0 MB allowed (STANZA_UPLOAD_MAX_MB, and the "
        "free space of the backups folder); nothing was kept"
    }
    assert files_written == []
    assert list(backups_folder.iterdir()) == []


def test_a_staff_upload_is_counted_as_it_streams_and_stopped_at_the_limit(
    staff_client, backups_folder, upload_dir, files_written, monkeypatch, tmp_path
):
    made = make_database(tmp_path / "made.sqlite", rows=3000, wal=False)
    size = made.stat().st_size
    # Within the multipart allowance of the Content-Length check, over the limit itself.
    monkeypatch.setattr(uploads, "upload_limit", lambda: size - 1000)

    response = staff_client.post(
        UPLOAD_URL, {"file": SimpleUploadedFile("made.bak", made.read_bytes())}
    )

    assert response.status_code == 413
    assert "larger than the" in response.content.decode()
    assert len(files_written) == 1  # it was being written, and is gone
    assert list(upload_dir.iterdir()) == []
    assert list(backups_folder.iterdir()) == []


def test_a_copy_of_an_existing_backup_is_refused_409_naming_it(
    staff_client, backups_folder, upload_dir, live_database
):
    made = backups.create_backup(label="manual")

    response = staff_client.post(
        UPLOAD_URL, {"file": SimpleUploadedFile("again.bak", made.path.read_bytes())}, **JSON
    )

    assert response.status_code == 409
    assert response.json()["error"] == (
        f"upload of again.bak refused: it is the same file as the backup {made.name} (same SHA-256)"
    )
    assert [b.name for b in backups.list_backups(backups_folder)] == [made.name]
