"""Uploads of backups made elsewhere (backups_app/uploads.py): checked, bounded, not twice."""

import gzip
import sqlite3
import tracemalloc

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from backups_app import backups, drill
from backups_app.backups import create_backup
from backups_app.restore import RestoreError
from backups_app.uploads import accept_upload
from tests.conftest import count_rows, file_state, make_database


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
