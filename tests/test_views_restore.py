"""Restore from the Backups page (/admin/backups/restore/NAME) and uploads of backups."""

import re
import sqlite3
import tracemalloc

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.messages.storage.fallback import FallbackStorage
from django.contrib.sessions.backends.db import SessionStore
from django.contrib.sessions.models import Session
from django.core.files.uploadedfile import SimpleUploadedFile, TemporaryUploadedFile
from django.test import Client, RequestFactory

from backups_app.core import formatting, operations
from backups_app.engine import backups
from backups_app.models import CronRun
from backups_app.restore import drill, restore, uploads
from backups_app.web import views
from tests.conftest import corrupt_middle, count_rows, file_state, make_database

URL = "/admin/backups/"
UPLOAD_URL = "/admin/backups/upload"
JSON = {"HTTP_ACCEPT": "application/json"}


def restore_url(name):
    return f"/admin/backups/restore/{name}"


@pytest.fixture
def backup(live_database, backups_folder):
    """A real backup of the live database (100 rows in `item`), with its .sha256."""
    return backups.create_backup(label="manual")


@pytest.fixture
def upload_dir(data_dir):
    """Where the app streams uploads while they arrive: its own folder beside the database."""
    return data_dir / ".stanza-uploads"


def change_data(path):
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("DELETE FROM item WHERE n < 50")
    conn.execute("INSERT INTO item (name, n) VALUES ('after the backup', -1)")
    conn.close()


def nothing_changes(live_database, backups_folder):
    """The live database's folder and the backups folder, byte for byte, to compare later."""
    return file_state(live_database.parent), file_state(backups_folder)


def messages_of(response):
    return [str(m) for m in response.context["messages"]] if response.context else []


# --- the button and the confirmation page -------------------------------------------------


def test_it_offers_a_restore_button_on_each_row(staff_client, backup):
    html = staff_client.get(URL).content.decode()

    assert f'class="button stanza-restore" href="{restore_url(backup.name)}"' in html


def test_it_asks_first_and_changes_nothing_on_get(
    staff_client, backup, live_database, backups_folder
):
    change_data(live_database)
    before = nothing_changes(live_database, backups_folder)

    response = staff_client.get(restore_url(backup.name))

    assert response.status_code == 200
    html = response.content.decode()
    assert backup.name in html
    assert f"{backup.created:%Y-%m-%d %H:%M:%S} UTC" in html
    info = restore.check_backup_file(backup.path)
    assert f"sound</span>: {len(info.row_counts)} tables, {info.total_rows} rows" in html
    assert "2 tables, 100 rows" in html
    assert "matches its <code>.sha256</code> checksum" in html
    assert "<code>pre-restore</code> safety backup" in html
    form = re.search(
        r'<form method="post" action="([^"]+)" class="stanza-confirm">.*?</form>', html, re.S
    )
    assert form.group(1) == restore_url(backup.name)
    assert 'name="csrfmiddlewaretoken"' in form.group(0)
    assert ">Restore this backup</button>" in form.group(0)
    assert nothing_changes(live_database, backups_folder) == before
    assert count_rows(live_database) == 51
    assert not CronRun.objects.exists()
    assert not LogEntry.objects.exists()


def test_it_shows_why_a_corrupt_backup_cannot_be_restored_without_a_button(
    staff_client, live_database, backups_folder, tmp_path
):
    make_database(tmp_path / "big.sqlite", rows=20_000, wal=False)
    bad = backups.create_backup(tmp_path / "big.sqlite", folder=backups_folder)
    corrupt_middle(bad.path)

    html = staff_client.get(restore_url(bad.name)).content.decode()

    assert "This backup cannot be restored." in html
    assert "does not match its .sha256 checksum" in html
    assert "Restore this backup" not in html
    assert 'class="stanza-confirm"' not in html


# --- restoring ---------------------------------------------------------------------------


def test_it_restores_and_names_the_safety_backup(
    staff_client, staff_user, backup, live_database, backups_folder
):
    change_data(live_database)

    response = staff_client.post(restore_url(backup.name), follow=True)

    assert response.redirect_chain == [(URL, 302)]
    assert count_rows(live_database) == 100
    [safety] = [b for b in backups.list_backups(backups_folder) if b.label == "pre-restore"]
    assert count_rows(safety.path) == 51
    assert messages_of(response)[0] == (
        f"Restored {backup.name}. The database as it was before is in the safety backup "
        f"{safety.name}."
    )
    html = response.content.decode()
    assert safety.name in html  # the new row
    run = CronRun.objects.get(job_name="restore")
    assert run.status == CronRun.Status.SUCCESS
    assert run.trigger == "admin:staff"
    assert safety.name in run.result
    entry = LogEntry.objects.get()
    assert entry.user == staff_user
    assert entry.change_message == f"Restored backup {backup.name}; safety backup: {safety.name}"
    assert entry.change_message in html.replace("<wbr>", "")


def test_it_says_to_migrate_after_restoring_an_older_schema_only(
    staff_client, live_database, backups_folder, migrated_database
):
    older = backups.create_backup(label="manual")  # its django_migrations is empty
    # The live database becomes the project's own, with every table its migrations made.
    source = sqlite3.connect(f"file:{migrated_database}?mode=ro", uri=True)
    dest = sqlite3.connect(live_database)
    source.backup(dest)
    dest.close()
    source.close()
    current = backups.create_backup(label="manual")

    after_older = messages_of(staff_client.post(restore_url(older.name), follow=True))
    after_current = messages_of(staff_client.post(restore_url(current.name), follow=True))

    assert len(after_older) == 2
    assert re.fullmatch(
        r"This backup predates \d+ migrations? of this code: run python manage.py migrate "
        r"\(or restart with scripts/run\) before using the site\.",
        after_older[1],
    )
    assert len(after_current) == 1
    assert after_current[0].startswith(f"Restored {current.name}.")


def test_it_answers_api_clients_with_json(staff_client, backup, live_database, backups_folder):
    change_data(live_database)

    response = staff_client.post(restore_url(backup.name), **JSON)

    assert response.status_code == 200
    body = response.json()
    assert body["restored"] == backup.name
    assert backups.parse_backup_name(body["safety_backup"])["label"] == "pre-restore"
    assert count_rows(live_database) == 100


def test_the_page_waits_for_no_full_check_and_the_restore_runs_it_first(
    staff_client, backup, live_database, backups_folder
):
    # An index that disagrees with its table: the quick check passes, the full check fails.
    conn = sqlite3.connect(backup.path, isolation_level=None)
    conn.execute("PRAGMA writable_schema=ON")
    conn.execute(
        "UPDATE sqlite_master SET sql = 'CREATE INDEX item_name ON item (n)' "
        "WHERE name = 'item_name'"
    )
    conn.close()
    backup.path.with_name(backup.name + ".sha256").unlink()
    before = nothing_changes(live_database, backups_folder)

    page = staff_client.get(restore_url(backup.name))

    text = page.content.decode()
    assert page.status_code == 200
    assert "the quick check passed" in text and "the full check runs when you restore" in text
    assert f'action="{restore_url(backup.name)}"' in text  # the restore button is offered

    response = staff_client.post(restore_url(backup.name), follow=True)

    [message] = messages_of(response)
    assert message.startswith("Restore failed, nothing was changed: ")
    assert "integrity check" in message
    assert nothing_changes(live_database, backups_folder) == before


def test_it_refuses_a_corrupt_backup_changes_nothing_and_says_why(
    staff_client, live_database, backups_folder, tmp_path
):
    make_database(tmp_path / "big.sqlite", rows=20_000, wal=False)
    bad = backups.create_backup(tmp_path / "big.sqlite", folder=backups_folder)
    bad.path.with_name(bad.name + ".sha256").unlink()
    corrupt_middle(bad.path)
    before = nothing_changes(live_database, backups_folder)

    response = staff_client.post(restore_url(bad.name), follow=True)

    assert response.redirect_chain == [(URL, 302)]
    assert nothing_changes(live_database, backups_folder) == before
    [message] = messages_of(response)
    assert message.startswith("Restore failed, nothing was changed: ")
    sentence, _, details = message.partition("\n\n")
    assert "is damaged: SQLite" in sentence  # one sentence; SQLite's own words are details
    assert "\n" not in sentence
    assert 'class="error"' in response.content.decode()
    run = CronRun.objects.get(job_name="restore")
    assert run.status == CronRun.Status.FAILURE
    assert run.trigger == "admin:staff"
    assert LogEntry.objects.get().change_message.startswith(f"Restore of {bad.name} failed: ")
    api = staff_client.post(restore_url(bad.name), **JSON)
    assert api.status_code == 400
    assert api.json()["error"].startswith("restore failed, nothing was changed: ")


def test_it_refuses_a_backup_from_a_newer_schema(
    staff_client, live_database, backups_folder, tmp_path
):
    newer = make_database(tmp_path / "newer.sqlite", wal=False)
    conn = sqlite3.connect(newer, isolation_level=None)
    conn.execute("INSERT INTO django_migrations (app, name) VALUES ('backups_app', '9999_future')")
    conn.close()
    made = backups.create_backup(newer, folder=backups_folder)
    before = nothing_changes(live_database, backups_folder)

    page = staff_client.get(restore_url(made.name)).content.decode()
    response = staff_client.post(restore_url(made.name), follow=True)

    assert "comes from a newer version of this project" in page
    assert "Restore this backup" not in page
    assert "comes from a newer version of this project" in messages_of(response)[0]
    assert nothing_changes(live_database, backups_folder) == before


def test_it_restores_one_at_a_time(staff_client, backup, live_database, backups_folder):
    change_data(live_database)
    before = nothing_changes(live_database, backups_folder)

    with operations.exclusive("backup", by="admin"):
        page = staff_client.post(restore_url(backup.name), follow=True)
        api = staff_client.post(restore_url(backup.name), **JSON)

    [message] = messages_of(page)
    assert re.fullmatch(
        r"A backup is running \(by admin, since \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC\); "
        r"try again when it has finished\.",
        message,
    )
    assert api.status_code == 409
    assert nothing_changes(live_database, backups_folder) == before
    # And a restore holds the same lock as "Back up now".
    assert staff_client.post(restore_url(backup.name), **JSON).status_code == 200


def test_it_sends_a_logged_out_admin_to_the_login_page_with_the_message(
    staff_client, backup, live_database, monkeypatch
):
    """A backup made before this login has no session for it: the admin must log in again."""
    real_restore = restore.restore_backup

    def restore_and_lose_the_sessions(path, **kwargs):
        result = real_restore(path, **kwargs)
        Session.objects.all().delete()  # what restoring an older database does to sessions
        return result

    monkeypatch.setattr(restore, "restore_backup", restore_and_lose_the_sessions)

    response = staff_client.post(restore_url(backup.name), follow=True)

    assert response.status_code == 200
    assert response.redirect_chain == [(URL, 302), (f"/admin/login/?next={URL}", 302)]
    shown = messages_of(response)
    assert shown[0].startswith(f"Restored {backup.name}.")
    assert shown[-1] == "Sessions were restored with the data: please log in again."
    assert "please log in again" in response.content.decode()


def test_it_does_not_restore_on_get_or_head(staff_client, backup, live_database, backups_folder):
    change_data(live_database)

    assert staff_client.get(restore_url(backup.name)).status_code == 200
    assert staff_client.head(restore_url(backup.name)).status_code == 200
    assert staff_client.put(restore_url(backup.name)).status_code == 405

    assert count_rows(live_database) == 51
    assert [b.label for b in backups.list_backups(backups_folder)] == ["manual"]


def test_it_refuses_a_post_without_a_csrf_token(staff_user, backup, live_database):
    change_data(live_database)
    client = Client(enforce_csrf_checks=True)
    client.force_login(staff_user)

    assert client.post(restore_url(backup.name)).status_code == 403
    assert count_rows(live_database) == 51

    html = client.get(restore_url(backup.name)).content.decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', html).group(1)
    assert client.post(restore_url(backup.name), {"csrfmiddlewaretoken": token}).status_code == 302
    assert count_rows(live_database) == 100


HOSTILE = [
    "..",
    "../database.sqlite",
    "..%2Fdatabase.sqlite",
    "%2Fetc%2Fpasswd",
    "database.sqlite",
    "database.sqlite.20260101T020000Z.bak.sha256",
    "database.sqlite.20260101T020000Z.bak%00",
    "sub/database.sqlite.20260101T020000Z.bak",
    "database.sqlite.20260101T020000Z.bak\\x",
]


@pytest.mark.parametrize("name", HOSTILE)
@pytest.mark.parametrize("method", ["get", "post"])
def test_it_answers_400_for_names_that_are_not_backup_names(
    staff_client, backup, live_database, backups_folder, name, method
):
    before = nothing_changes(live_database, backups_folder)

    response = getattr(staff_client, method)(restore_url(name))

    assert response.status_code == 400
    assert nothing_changes(live_database, backups_folder) == before


@pytest.mark.parametrize("method", ["get", "post"])
def test_it_answers_404_for_a_backup_that_is_not_there(
    staff_client, live_database, backups_folder, method, tmp_path
):
    name = "database.sqlite.20260101T020000Z.bak"
    (tmp_path / "elsewhere.bak").write_bytes(b"x")
    (backups_folder / "database.sqlite.20260102T020000Z.bak").symlink_to(tmp_path / "elsewhere.bak")

    assert getattr(staff_client, method)(restore_url(name)).status_code == 404
    symlink = getattr(staff_client, method)(restore_url("database.sqlite.20260102T020000Z.bak"))
    assert symlink.status_code == 404
    assert not CronRun.objects.exists()


# --- uploads -----------------------------------------------------------------------------


def test_it_has_an_upload_form_with_csrf(staff_client, backups_folder):
    html = staff_client.get(URL).content.decode()

    form = re.search(r'<form method="post" action="/admin/backups/upload".*?</form>', html, re.S)
    assert 'enctype="multipart/form-data"' in form.group(0)
    assert 'name="csrfmiddlewaretoken"' in form.group(0)
    assert '<input type="file" name="file"' in form.group(0)


def test_it_keeps_a_sound_upload_and_names_it(
    staff_client, staff_user, backups_folder, upload_dir, tmp_path
):
    made = make_database(tmp_path / "elsewhere.sqlite", rows=30, wal=False)
    upload = SimpleUploadedFile("my-backup.sqlite", made.read_bytes())

    response = staff_client.post(UPLOAD_URL, {"file": upload}, follow=True)

    assert response.redirect_chain == [(URL, 302)]
    [kept] = backups.list_backups(backups_folder)
    assert kept.label == "uploaded"
    assert kept.has_checksum
    assert kept.path.read_bytes() == made.read_bytes()
    assert drill.read_manifest(kept.path)["tables"]["item"] == 30
    [message] = messages_of(response)
    assert message == (
        f"Uploaded my-backup.sqlite: it passed the checks and is kept as {kept.name} "
        f"({formatting.human_size(kept.size)})."
    )
    assert LogEntry.objects.get().user == staff_user
    assert f"Uploaded my-backup.sqlite as {kept.name}" in response.content.decode().replace(
        "<wbr>", ""
    )


def test_it_answers_api_uploads_with_json(staff_client, backups_folder, upload_dir, tmp_path):
    made = make_database(tmp_path / "elsewhere.sqlite", rows=30, wal=False)

    response = staff_client.post(
        UPLOAD_URL, {"file": SimpleUploadedFile("x.bak", made.read_bytes())}, **JSON
    )

    assert response.status_code == 200
    [kept] = backups.list_backups(backups_folder)
    assert response.json() == {"file": kept.name, "size": kept.size}


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (b"", "the uploaded file is empty"),
        (b"hello, this is not a database at all" * 10, "is not an SQLite database"),
        (b"\x1f\x8b\x08\x00 broken gzip", "is not a valid gzip file"),
    ],
)
def test_it_refuses_a_bad_upload_keeps_nothing_and_says_why(
    staff_client, backups_folder, upload_dir, content, why
):
    response = staff_client.post(
        UPLOAD_URL, {"file": SimpleUploadedFile("bad.bak", content)}, follow=True
    )

    assert response.redirect_chain == [(URL, 302)]
    [message] = messages_of(response)
    assert message.startswith("Upload of bad.bak refused: ")
    assert why in message
    assert ".stanza-tmp-" not in message
    assert list(backups_folder.iterdir()) == []
    assert "Upload of bad.bak refused" in LogEntry.objects.get().change_message


def test_it_refuses_an_upload_from_a_newer_schema(
    staff_client, backups_folder, upload_dir, tmp_path
):
    newer = make_database(tmp_path / "newer.sqlite", wal=False)
    conn = sqlite3.connect(newer, isolation_level=None)
    conn.execute("INSERT INTO django_migrations (app, name) VALUES ('backups_app', '9999_future')")
    conn.close()

    response = staff_client.post(
        UPLOAD_URL, {"file": SimpleUploadedFile("newer.bak", newer.read_bytes())}, follow=True
    )

    assert "comes from a newer version of this project" in messages_of(response)[0]
    assert list(backups_folder.iterdir()) == []


def test_it_asks_for_a_file_when_none_was_sent(staff_client, backups_folder, upload_dir):
    response = staff_client.post(UPLOAD_URL, follow=True)

    assert messages_of(response) == ["Choose a backup file to upload."]
    assert staff_client.post(UPLOAD_URL, **JSON).status_code == 400


def test_it_refuses_an_upload_without_a_csrf_token(
    staff_user, backups_folder, upload_dir, tmp_path
):
    made = make_database(tmp_path / "elsewhere.sqlite", rows=30, wal=False)
    client = Client(enforce_csrf_checks=True)
    client.force_login(staff_user)

    response = client.post(UPLOAD_URL, {"file": SimpleUploadedFile("x.bak", made.read_bytes())})

    assert response.status_code == 403
    assert list(backups_folder.iterdir()) == []


def test_it_does_not_read_uploads_of_users_who_are_not_staff(
    user_client, backups_folder, upload_dir, monkeypatch
):
    def must_not_parse(*args, **kwargs):
        raise AssertionError("the body was parsed")

    monkeypatch.setattr("django.http.multipartparser.MultiPartParser.parse", must_not_parse)

    response = user_client.post(UPLOAD_URL, {"file": SimpleUploadedFile("x.bak", b"data")})

    assert response.status_code == 403
    assert list(backups_folder.iterdir()) == []


def test_a_large_upload_is_streamed_to_the_data_folder_not_held_in_memory(
    staff_user, backups_folder, upload_dir, tmp_path, settings, monkeypatch
):
    big = make_database(tmp_path / "big.sqlite", rows=200_000, wal=False)
    size = big.stat().st_size
    assert size > 8 * settings.FILE_UPLOAD_MAX_MEMORY_SIZE
    seen = []
    real_accept = uploads.accept_upload

    def accept_and_look(upload, *args, **kwargs):
        seen.append((type(upload), upload.temporary_file_path()))
        return real_accept(upload, *args, **kwargs)

    monkeypatch.setattr(uploads, "accept_upload", accept_and_look)
    with open(big, "rb") as f:
        request = RequestFactory().post(UPLOAD_URL, {"file": f}, **JSON)  # body built here
    request.user = staff_user
    request.session = SessionStore()
    request._messages = FallbackStorage(request)
    request._dont_enforce_csrf_checks = True

    tracemalloc.start()
    try:
        response = views.upload_backup(request)
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert response.status_code == 200, response.content
    [(kind, temp_path)] = seen
    assert issubclass(kind, TemporaryUploadedFile)
    assert temp_path.startswith(str(upload_dir) + "/")
    assert peak < size / 4
    [kept] = backups.list_backups(backups_folder)
    assert kept.size == size
    request.close()  # as the handler does at the end of a request
    assert list(upload_dir.iterdir()) == []
