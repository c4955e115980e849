"""Deleting a backup: GET /admin/backups/delete/<name> asks, POST deletes it and its sidecars."""

import re

import pytest
from django.contrib.admin.models import DELETION, LogEntry

from backups_app.engine import backups
from tests.conftest import write_backup_file

OLD = "database.sqlite.20260101T020000Z.bak"
NEW = "database.sqlite.20260102T020000Z.manual.bak"
JSON = {"HTTP_ACCEPT": "application/json"}


def delete_url(name):
    return f"/admin/backups/delete/{name}"


@pytest.fixture
def two_backups(backups_folder):
    old = write_backup_file(backups_folder, OLD)
    backups.write_manifest(old, {"item": 3})
    new = write_backup_file(backups_folder, NEW)
    return old, new


def messages_of(response):
    return [str(m) for m in response.context["messages"]]


def test_it_offers_a_delete_link_on_each_row(staff_client, two_backups):
    html = staff_client.get("/admin/backups/").content.decode()

    assert f'href="{delete_url(OLD)}"' in html
    assert f'href="{delete_url(NEW)}"' in html


def test_it_asks_first_and_changes_nothing_on_get(staff_client, two_backups, backups_folder):
    before = sorted(p.name for p in backups_folder.iterdir())

    response = staff_client.get(delete_url(OLD))

    assert response.status_code == 200
    html = response.content.decode()
    assert OLD in html
    assert "with its <code>.sha256</code> checksum and <code>.json</code> manifest" in html
    form = re.search(r'<form method="post" action="([^"]+)".*?</form>', html, re.S)
    assert form.group(1) == delete_url(OLD)
    assert 'name="csrfmiddlewaretoken"' in form.group(0)
    assert 'name="confirm_last"' not in form.group(0)  # not the last one: one click is enough
    assert sorted(p.name for p in backups_folder.iterdir()) == before
    assert not LogEntry.objects.exists()


def test_it_deletes_the_backup_and_its_sidecars_and_records_who(
    staff_client, staff_user, two_backups, backups_folder
):
    response = staff_client.post(delete_url(OLD), follow=True)

    assert response.redirect_chain == [("/admin/backups/", 302)]
    assert messages_of(response) == [f"Deleted {OLD} (12 bytes)."]
    assert sorted(p.name for p in backups_folder.iterdir()) == [NEW, f"{NEW}.sha256"]
    entry = LogEntry.objects.get()
    assert entry.user == staff_user
    assert entry.action_flag == DELETION
    assert entry.change_message == f"Deleted backup {OLD} (12 bytes)"


def test_it_answers_api_clients_with_json(staff_client, two_backups, backups_folder):
    response = staff_client.post(delete_url(OLD), **JSON)

    assert response.status_code == 200
    assert response.json() == {"deleted": OLD}
    assert not (backups_folder / OLD).exists()


def test_the_last_backup_needs_a_second_explicit_confirmation(staff_client, backups_folder):
    write_backup_file(backups_folder, OLD)

    page = staff_client.get(delete_url(OLD)).content.decode()
    refused = staff_client.post(delete_url(OLD))
    refused_json = staff_client.post(delete_url(OLD), **JSON)

    assert "This is the only backup there is" in page
    assert 'name="confirm_last"' in page
    assert refused.status_code == 400
    assert "This is the only backup: confirm that you want to be left with none." in (
        refused.content.decode()
    )
    assert refused_json.status_code == 400
    assert "only backup" in refused_json.json()["error"]
    assert (backups_folder / OLD).exists()
    assert not LogEntry.objects.exists()

    response = staff_client.post(delete_url(OLD), {"confirm_last": "on"}, follow=True)

    assert messages_of(response) == [f"Deleted {OLD} (12 bytes)."]
    assert list(backups_folder.iterdir()) == []


def test_two_deletes_at_once_never_leave_no_backup_unconfirmed(
    staff_client, two_backups, monkeypatch
):
    """The other delete finishes just before this one gets the lock: under the lock this one
    finds itself the last backup, and asks for the second confirmation instead of deleting."""
    import contextlib

    from backups_app.core import operations

    old, new = two_backups
    real_exclusive = operations.exclusive

    @contextlib.contextmanager
    def after_the_other_delete(*args, **kwargs):
        backups.delete_backup(NEW)  # the other request, which held the lock a moment ago
        with real_exclusive(*args, **kwargs) as holder:
            yield holder

    monkeypatch.setattr(operations, "exclusive", after_the_other_delete)
    response = staff_client.post(delete_url(OLD), **JSON)

    assert response.status_code == 400
    assert "only backup" in response.json()["error"]
    assert old.exists()


@pytest.mark.parametrize(
    "raw",
    [
        "..%2F..%2Fetc%2Fpasswd",
        "%2Fetc%2Fpasswd",
        "database.sqlite",
        f"{OLD}.sha256",
        f"{OLD}%00",
        "..%5Cdatabase.sqlite",
        "notes.txt",
    ],
)
def test_it_answers_400_for_names_that_are_not_backup_names(
    staff_client, two_backups, backups_folder, raw
):
    (backups_folder / "notes.txt").write_text("not a backup")
    (backups_folder.parent / "database.sqlite").write_bytes(b"live")
    before = sorted(p.name for p in backups_folder.parent.rglob("*"))

    page = staff_client.get(delete_url(raw))
    post = staff_client.post(delete_url(raw))
    api = staff_client.post(delete_url(raw), **JSON)

    assert page.status_code == post.status_code == api.status_code == 400
    # A page inside the admin's layout for a browser, JSON for an API client.
    assert "This is not the name of a backup." in page.content.decode()
    assert 'id="nav-sidebar"' in page.content.decode()
    assert api.json() == {"error": "not a backup file name"}
    assert sorted(p.name for p in backups_folder.parent.rglob("*")) == before
    assert not LogEntry.objects.exists()


def test_it_answers_404_for_a_backup_that_is_not_there(staff_client, backups_folder):
    page = staff_client.get(delete_url(OLD))
    api = staff_client.post(delete_url(OLD), **JSON)

    assert page.status_code == 404
    assert f'There is no backup called <code class="stanza-name">{OLD}</code>' in (
        page.content.decode()
    )
    assert api.status_code == 404
    assert api.json() == {"error": "no such backup"}


def test_it_never_deletes_through_a_symlink(staff_client, backups_folder, tmp_path):
    target = tmp_path / "precious.bak"
    target.write_bytes(b"precious")
    (backups_folder / OLD).symlink_to(target)

    assert staff_client.post(delete_url(OLD)).status_code == 404
    assert target.read_bytes() == b"precious"


def test_it_does_not_delete_without_a_csrf_token(staff_user, two_backups):
    from django.test import Client

    csrf_client = Client(enforce_csrf_checks=True)
    csrf_client.force_login(staff_user)

    assert csrf_client.post(delete_url(OLD)).status_code == 403
    assert csrf_client.get(delete_url(OLD)).status_code == 200
    assert two_backups[0].exists()


def test_anonymous_and_non_staff_users_cannot_delete(user_client, two_backups):
    from django.test import Client

    anonymous = Client().post(delete_url(OLD))
    visitor = user_client.post(delete_url(OLD))

    assert anonymous.status_code == 302
    assert "/admin/login/" in anonymous["Location"]
    assert visitor.status_code == 403
    assert two_backups[0].exists()


def test_a_bad_download_name_gets_a_page_in_the_admin_layout(staff_client, backups_folder):
    page = staff_client.get("/admin/database/backups/notes.txt")
    api = staff_client.get("/admin/database/backups/notes.txt", **JSON)
    missing = staff_client.get(f"/admin/database/backups/{OLD}")

    assert page.status_code == 400
    assert 'id="nav-sidebar"' in page.content.decode()
    assert api.status_code == 400
    assert api.json() == {"error": "not a backup file name"}
    assert missing.status_code == 404
    assert "There is no backup called" in missing.content.decode()


def test_it_refuses_to_delete_while_a_backup_or_restore_runs(staff_client, two_backups):
    from backups_app.core import operations

    with operations.exclusive("restore", by="someone"):
        response = staff_client.post(delete_url(OLD), **JSON)

    assert response.status_code == 409
    assert response.json()["error"].startswith("a restore is running (by someone")
    assert two_backups[0].exists()
