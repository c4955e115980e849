"""GET /admin/database/backups/<filename>: streamed, checked, never outside the folder."""

import hashlib
import os

import pytest
from django.contrib.admin.models import LogEntry
from django.http import FileResponse
from django.test import Client

from tests.conftest import write_backup_file

NAME = "database.sqlite.20260101T020000Z.bak"
URL = f"/admin/database/backups/{NAME}"


def test_it_downloads_a_backup_with_its_size_name_and_checksum(staff_client, backups_folder):
    content = os.urandom(50_000)
    write_backup_file(backups_folder, NAME, content)

    response = staff_client.get(URL)

    assert response.status_code == 200
    assert isinstance(response, FileResponse)
    assert response.streaming
    assert b"".join(response.streaming_content) == content
    assert response["Content-Type"] == "application/octet-stream"
    assert response["Content-Disposition"] == f'attachment; filename="{NAME}"'
    assert response["Content-Length"] == "50000"
    assert response["X-Checksum-SHA256"] == hashlib.sha256(content).hexdigest()


def test_it_downloads_compressed_and_labelled_backups(staff_client, backups_folder):
    name = "database.sqlite.20260101T020000Z-2.pre-restore.bak.gz"
    write_backup_file(backups_folder, name, b"gz bytes")

    response = staff_client.get(f"/admin/database/backups/{name}")

    assert response.status_code == 200
    assert b"".join(response.streaming_content) == b"gz bytes"


def test_it_leaves_out_the_checksum_header_without_a_sidecar(staff_client, backups_folder):
    write_backup_file(backups_folder, NAME, checksum=False)

    response = staff_client.get(URL)

    assert response.status_code == 200
    assert "X-Checksum-SHA256" not in response


def test_it_streams_from_disk_in_small_chunks(staff_client, backups_folder):
    path = backups_folder / NAME
    with open(path, "wb") as f:
        f.truncate(20 * 1024 * 1024)  # sparse: costs no disk

    response = staff_client.get(URL)

    total = largest = 0
    for chunk in response.streaming_content:
        total += len(chunk)
        largest = max(largest, len(chunk))
    response.close()
    assert total == 20 * 1024 * 1024
    assert largest <= 1024 * 1024


def test_it_records_who_downloaded_a_backup(staff_client, staff_user, backups_folder):
    write_backup_file(backups_folder, NAME)

    staff_client.head(URL).close()
    staff_client.get(URL).close()

    entry = LogEntry.objects.get()
    assert entry.user == staff_user
    assert entry.change_message == f"Downloaded backup {NAME}"


@pytest.mark.parametrize(
    "raw",
    [
        "..%2F..%2Fetc%2Fpasswd",
        "..%2Fdatabase.sqlite",
        "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
        "%252e%252e%252fetc%252fpasswd",
        "%2Fetc%2Fpasswd",
        "..%5C..%5Cetc%5Cpasswd",
        "database.sqlite.20260101T020000Z.bak%5C..%5Cdatabase.sqlite",
        f"{NAME}%00",
        f"{NAME}%00.txt",
        f"{NAME}%2F..%2F..%2Fdatabase.sqlite",
        "database.sqlite",
        "database.sqlite-wal",
        ".secret_key",
        f"{NAME}.sha256",
        "database.sqlite.20260101T020000Z.evil.bak",
        "database.sqlite.2026-01-01.bak",
        "notes.txt",
        "%20" + NAME,
    ],
)
def test_it_answers_400_for_anything_that_is_not_a_backup_name(
    staff_client, backups_folder, raw, settings
):
    write_backup_file(backups_folder, NAME)
    (backups_folder / "notes.txt").write_text("not a backup")
    (backups_folder.parent / "database.sqlite").write_bytes(b"the live database")

    response = staff_client.get(f"/admin/database/backups/{raw}")

    assert response.status_code == 400
    assert b"live database" not in response.content
    assert not LogEntry.objects.exists()


@pytest.mark.parametrize("raw", ["/etc/passwd", "/admin/database/backups/../../etc/passwd"])
def test_it_never_serves_absolute_or_dotted_paths(staff_client, backups_folder, raw):
    response = staff_client.get(f"/admin/database/backups/{raw}")

    assert response.status_code in (400, 404)
    assert b"root:" not in response.content


def test_it_answers_404_for_a_valid_name_that_is_not_there(staff_client, backups_folder):
    assert staff_client.get(URL).status_code == 404


def test_it_answers_404_when_the_backups_folder_is_gone(staff_client, backups_folder):
    backups_folder.rmdir()
    assert staff_client.get(URL).status_code == 404
    backups_folder.write_text("a file now")
    assert staff_client.get(URL).status_code == 404


def test_it_never_follows_a_symlink_out_of_the_folder(staff_client, backups_folder, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"TOP SECRET")
    (backups_folder / NAME).symlink_to(secret)

    response = staff_client.get(URL)

    assert response.status_code == 404
    assert b"TOP SECRET" not in response.content


def test_it_never_follows_a_symlink_even_to_another_backup(staff_client, backups_folder):
    write_backup_file(backups_folder, "database.sqlite.20260102T020000Z.bak")
    (backups_folder / NAME).symlink_to(backups_folder / "database.sqlite.20260102T020000Z.bak")

    assert staff_client.get(URL).status_code == 404


def test_it_ignores_a_checksum_sidecar_that_is_a_symlink(staff_client, backups_folder, tmp_path):
    write_backup_file(backups_folder, NAME, checksum=False)
    outside = tmp_path / "outside.sha256"
    outside.write_text("a" * 64 + "  something\n")
    (backups_folder / f"{NAME}.sha256").symlink_to(outside)

    response = staff_client.get(URL)

    assert response.status_code == 200
    assert "X-Checksum-SHA256" not in response


def test_it_ignores_a_checksum_sidecar_that_is_not_a_checksum(staff_client, backups_folder):
    write_backup_file(backups_folder, NAME, checksum=False)
    (backups_folder / f"{NAME}.sha256").write_text("<script>alert(1)</script>\n")

    response = staff_client.get(URL)

    assert "X-Checksum-SHA256" not in response


def test_it_answers_404_for_a_folder_with_a_backups_name(staff_client, backups_folder):
    (backups_folder / NAME).mkdir()

    assert staff_client.get(URL).status_code == 404


def test_it_is_for_staff_only(user_client, backups_folder):
    write_backup_file(backups_folder, NAME)

    assert Client().get(URL).status_code == 302
    assert user_client.get(URL).status_code == 403
    assert not LogEntry.objects.exists()
