"""Uploads of backups made elsewhere (backups_app/uploads.py): checked, bounded, not twice."""

import gzip
import sqlite3
import tracemalloc

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from backups_app.engine import backups, names
from backups_app.engine.backups import create_backup
from backups_app.restore import drill, restore
from backups_app.restore.restore import RestoreError
from backups_app.restore.uploads import DuplicateUpload, UploadTooLarge, accept_upload, upload_limit
from tests.conftest import count_rows, file_state, make_database, make_large_database


@pytest.fixture
def live(data_dir):
    return make_database(data_dir / "database.sqlite", rows=100)


def add_migration(path, app, name):
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("INSERT INTO django_migrations (app, name) VALUES (?, ?)", (app, name))
    conn.close()


def chunks_of(path, size=64 * 1024):
    with open(path, "rb") as f:
        while chunk := f.read(size):
            yield chunk


def test_it_keeps_an_upload_under_a_contract_name(live, backups_folder, time_machine):
    time_machine.move_to("2026-11-26 10:00:00Z", tick=False)

    backup = accept_upload(chunks_of(live), backups_folder)

    assert backup.name == "database.sqlite.20261126T100000Z.uploaded.bak"
    assert backup.label == "uploaded"
    assert backups.read_checksum(backup.path) == backups.sha256_of(backup.path)
    assert drill.read_manifest(backup.path)["tables"] == {"django_migrations": 0, "item": 100}
    assert sorted(file_state(backups_folder)) == [
        backup.name,
        backup.name + ".json",
        backup.name + ".sha256",
    ]
    assert count_rows(backup.path) == 100


def test_it_keeps_a_gzipped_upload_gzipped(live, backups_folder, tmp_path):
    made = create_backup(live, folder=tmp_path, compress=True)
    upload = SimpleUploadedFile("whatever-name.gz", made.path.read_bytes())

    backup = accept_upload(upload, backups_folder)

    assert backup.name.endswith(".uploaded.bak.gz")
    assert backup.path.read_bytes() == made.path.read_bytes()
    assert gzip.decompress(backup.path.read_bytes())[:16] == b"SQLite format 3\x00"


@pytest.mark.parametrize(
    "content",
    [b"", b"not a database at all" * 100, gzip.compress(b"not a database either" * 100)],
    ids=["empty", "text", "gzipped-text"],
)
def test_it_refuses_a_bad_upload_and_leaves_nothing(backups_folder, content):
    with pytest.raises(RestoreError):
        accept_upload(iter([content]), backups_folder)

    assert list(backups_folder.iterdir()) == []


def test_it_refuses_an_upload_from_a_newer_schema(backups_folder, tmp_path):
    newer = make_database(tmp_path / "newer.sqlite", rows=5)
    add_migration(newer, "backups_app", "9999_from_the_future")

    with pytest.raises(RestoreError, match="newer version"):
        accept_upload(chunks_of(newer), backups_folder)
    assert list(backups_folder.iterdir()) == []


@pytest.mark.slow
def test_an_upload_does_not_sit_in_memory(backups_folder, tmp_path):
    big = make_database(tmp_path / "big.sqlite", rows=200_000, wal=False)
    size = big.stat().st_size
    assert size > 8 * 1024 * 1024

    tracemalloc.start()
    try:
        backup = accept_upload(chunks_of(big), backups_folder)
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert backup.size == size
    assert peak < size / 4


# --- limits: the upload size, gzip bombs, duplicates ----------------------------------------


def gzip_bomb(path, declared_pages=2, inflated_mb=64):
    """A gzip'd file that starts as a tiny SQLite database and inflates to `inflated_mb` MB."""
    header = bytearray(100)
    header[:16] = b"SQLite format 3\x00"
    header[16:18] = (4096).to_bytes(2, "big")
    header[24:28] = header[92:96] = (1).to_bytes(4, "big")
    header[28:32] = declared_pages.to_bytes(4, "big")
    with gzip.open(path, "wb", compresslevel=9) as out:
        out.write(bytes(header))
        zeros = bytes(1024 * 1024)
        for _ in range(inflated_mb):
            out.write(zeros)
    return path


def test_it_stops_inflating_a_gzip_bomb_at_the_size_its_header_declares(backups_folder, tmp_path):
    bomb = gzip_bomb(tmp_path / "bomb.gz")
    assert bomb.stat().st_size < 200 * 1024

    with pytest.raises(RestoreError, match="more than the 8.0 KB its SQLite header declares"):
        accept_upload(chunks_of(bomb), backups_folder, limit=1024 * 1024 * 1024)

    assert list(backups_folder.iterdir()) == []


def test_it_stops_inflating_at_the_upload_limit_when_the_header_declares_no_size(
    backups_folder, tmp_path
):
    bomb = gzip_bomb(tmp_path / "bomb.gz", declared_pages=0)

    with pytest.raises(RestoreError, match="decompresses to more than the 4.0 MB allowed"):
        accept_upload(chunks_of(bomb), backups_folder, limit=4 * 1024 * 1024)

    assert list(backups_folder.iterdir()) == []


def test_a_restore_of_a_gzip_bomb_leaves_nothing_behind(live, backups_folder, tmp_path):
    from backups_app.restore.restore import restore_backup

    bomb = gzip_bomb(backups_folder / "database.sqlite.20261126T020000Z.bak.gz")
    before = file_state(live.parent)

    with pytest.raises(RestoreError, match="its SQLite header declares"):
        restore_backup(bomb, database=live, backups_folder=backups_folder)

    assert file_state(live.parent) == before
    assert sorted(p.name for p in backups_folder.iterdir()) == [bomb.name]


def test_it_refuses_an_upload_over_the_limit_and_keeps_nothing(backups_folder, live):
    with pytest.raises(UploadTooLarge, match="larger than the 8.0 KB allowed"):
        accept_upload(chunks_of(live), backups_folder, limit=8 * 1024)

    assert list(backups_folder.iterdir()) == []


def test_it_refuses_a_copy_of_a_backup_already_there_naming_it(live, backups_folder):
    made = create_backup(live, folder=backups_folder)

    with pytest.raises(DuplicateUpload, match=f"same file as the backup {made.name}"):
        accept_upload(chunks_of(made.path), backups_folder)

    assert len(backups.list_backups(backups_folder)) == 1


def test_the_default_limit_follows_the_live_database_and_the_setting(
    backups_folder, settings, tmp_path, monkeypatch
):
    small = make_database(tmp_path / "small.sqlite", rows=10, wal=False)
    big = make_large_database(tmp_path / "big.sqlite", 40, wal=False)
    monkeypatch.setattr(names, "live_database_path", lambda: small)
    assert upload_limit() == 64 * 1024 * 1024  # a small database: the floor
    monkeypatch.setattr(names, "live_database_path", lambda: big)
    assert upload_limit() == 2 * big.stat().st_size
    settings.STANZA_UPLOAD_MAX_MB = 3
    assert upload_limit() == 3 * 1024 * 1024


def test_the_limit_never_exceeds_the_free_space_less_a_margin(
    data_dir, backups_folder, settings, mount_point
):
    disk = mount_point("size=100m")
    settings.STANZA_BACKUPS_DIR = disk
    settings.STANZA_UPLOAD_MAX_MB = 1000

    assert upload_limit() <= 100 * 1024 * 1024 - restore.FREE_SPACE_MARGIN
