"""The site files on the dashboard: the restore page says what would change, the restore puts
them back, and media.tar streams a backup's files (staff only) (issue 20)."""

import io
import os
import tarfile
from datetime import UTC, datetime, timedelta

import pytest
from django.test import Client

from backups_app.engine import backups
from backups_app.media import lists
from tests.test_media_restore import tree, write
from tests.test_views_replication import replica_url, write_status  # noqa: F401


def tar_url(name):
    return f"/admin/database/backups/{name}/media.tar"


@pytest.fixture
def backup(live_database, backups_folder, site_media_root):
    write(site_media_root, "avatars/ann.png", b"ann" * 200_000)  # several chunks
    write(site_media_root, "notes/a.txt", b"note a")
    with open(os.path.join(os.fsencode(site_media_root), b"notes/\xff odd\nname"), "wb") as f:
        f.write(b"odd")
    return backups.create_backup(label="manual")


def test_it_streams_the_files_of_a_backup_as_a_tar(staff_client, backup):
    response = staff_client.get(tar_url(backup.name))

    assert response.status_code == 200
    assert response["Content-Type"] == "application/x-tar"
    assert response["Content-Disposition"] == f'attachment; filename="{backup.name}.media.tar"'
    body = b"".join(response.streaming_content)
    with tarfile.open(fileobj=io.BytesIO(body), encoding="utf-8", errors="surrogateescape") as tar:
        members = {m.name: m for m in tar.getmembers()}
        assert tar.extractfile(members["avatars/ann.png"]).read() == b"ann" * 200_000
        assert tar.extractfile(members["notes/a.txt"]).read() == b"note a"
        odd = os.fsdecode(b"notes/\xff odd\nname")
        assert tar.extractfile(members[odd]).read() == b"odd"
        assert members["notes/a.txt"].mode == 0o644


def test_it_is_for_staff_only(db, backup, django_user_model):
    anonymous = Client()
    assert anonymous.get(tar_url(backup.name)).status_code == 302  # to the login page
    visitor = Client()
    visitor.force_login(django_user_model.objects.create_user("visitor", password="pw-12345678"))
    assert visitor.get(tar_url(backup.name)).status_code == 403


def test_it_refuses_a_bad_name_and_a_backup_without_files(staff_client, backup):
    assert staff_client.get(tar_url("..")).status_code in (400, 404)
    assert staff_client.get(tar_url("nothing.bak")).status_code == 400
    lists.list_path(backup.path).unlink()
    json = staff_client.get(tar_url(backup.name), HTTP_ACCEPT="application/json")
    assert json.status_code == 404
    assert json.json() == {"error": f"{backup.name} has no list of site files"}


def test_the_restore_page_says_how_many_files_change_appear_and_disappear(
    staff_client, backup, site_media_root
):
    (site_media_root / "notes/a.txt").write_bytes(b"changed")
    write(site_media_root, "new.txt", b"new")
    (site_media_root / "avatars/ann.png").unlink()
    now = tree(site_media_root)

    html = staff_client.get(f"/admin/backups/restore/{backup.name}").content.decode()

    assert "3 files; 1 would change, 1 would appear, 1 would disappear" in html
    assert tree(site_media_root) == now


def test_the_restore_puts_the_files_back_and_says_so(staff_client, backup, site_media_root):
    before = tree(site_media_root)
    write(site_media_root, "new.txt", b"new")

    response = staff_client.post(f"/admin/backups/restore/{backup.name}", follow=True)

    assert tree(site_media_root) == before
    said = [str(m) for m in response.context["messages"]]
    assert any("Site files restored as the backup lists them (3 site files" in m for m in said)


def test_the_restore_page_says_a_backup_without_files_restores_the_database_alone(
    staff_client, backup
):
    lists.list_path(backup.path).unlink()

    html = staff_client.get(f"/admin/backups/restore/{backup.name}").content.decode()

    assert "has no list of site files" in html and "database alone would be restored" in html


def test_the_backups_page_shows_each_backups_files_and_what_storing_each_content_once_saved(
    staff_client, backup
):
    second = backups.create_backup(label="manual")  # the same files again: nothing new

    html = staff_client.get("/admin/backups/").content.decode().replace("\xa0", " ")

    assert "3 site files, 585.9 KB (585.9 KB new)" in html
    assert "3 site files, 585.9 KB (0 bytes new)" in html
    assert f'href="/admin/database/backups/{second.name}/media.tar"' in html
    assert "site files: 585.9 KB stored for 1.1 MB listed by the backups" in html
    assert "(each content once saved 585.9 KB)" in html


def test_the_point_in_time_page_says_the_files_are_not_part_of_it(
    staff_client,
    replica_url,  # noqa: F811 - the fixture, imported
    live_database,
):
    write_status(live_database)
    when = (datetime.now(UTC) - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S")

    page = staff_client.get("/admin/backups/restore-at", {"at": when}).content.decode()

    assert "Site files are not part of a restore to a point in time" in page
