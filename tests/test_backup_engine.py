import gzip
import hashlib
import sqlite3

import pytest

from backups_app import backups
from backups_app.backups import BackupError, create_backup, list_backups
from tests.conftest import count_rows, make_database


def test_it_writes_a_verified_backup_with_checksum(source_db, tmp_path):
    out = tmp_path / "out"
    out.mkdir()

    backup = create_backup(source_db, folder=out)

    assert backups.is_backup_name(backup.name)
    assert count_rows(backup.path) == 100
    sidecar = backup.path.with_name(backup.name + ".sha256")
    digest = hashlib.sha256(backup.path.read_bytes()).hexdigest()
    assert sidecar.read_text() == f"{digest}  {backup.name}\n"
    assert sorted(p.name for p in out.iterdir()) == [backup.name, sidecar.name]


def test_it_includes_data_still_in_the_wal(tmp_path):
    source = make_database(tmp_path / "database.sqlite", rows=10)
    holder = sqlite3.connect(source, isolation_level=None)
    holder.execute("PRAGMA wal_autocheckpoint=0")
    holder.execute("INSERT INTO item (name, n) VALUES ('in the wal', 1)")
    assert (tmp_path / "database.sqlite-wal").stat().st_size > 0

    backup = create_backup(source, folder=tmp_path)

    holder.close()
    assert count_rows(backup.path) == 11


def test_it_gzips_into_a_file_gunzip_reads(source_db, tmp_path):
    backup = create_backup(source_db, folder=tmp_path, compress=True)

    assert backup.name.endswith(".bak.gz")
    restored = tmp_path / "restored.sqlite"
    restored.write_bytes(gzip.decompress(backup.path.read_bytes()))
    assert count_rows(restored) == 100


def test_it_never_overwrites_in_the_same_second(source_db, tmp_path, time_machine):
    time_machine.move_to("2026-11-26 02:00:00Z", tick=False)

    first = create_backup(source_db, folder=tmp_path)
    second = create_backup(source_db, folder=tmp_path)

    assert first.name == "database.sqlite.20261126T020000Z.bak"
    assert second.name == "database.sqlite.20261126T020000Z-2.bak"


def test_it_lists_backups_newest_first_and_ignores_other_files(source_db, tmp_path):
    made = [create_backup(source_db, folder=tmp_path, label=label) for label in ("", "manual")]
    (tmp_path / "notes.txt").write_text("not a backup")

    listed = list_backups(tmp_path)

    assert {b.name for b in listed} == {b.name for b in made}
    assert listed[0].modified >= listed[1].modified
    assert all(b.has_checksum for b in listed)


def test_it_refuses_a_missing_database(tmp_path):
    with pytest.raises(BackupError, match="no database"):
        create_backup(tmp_path / "nope.sqlite", folder=tmp_path)


def test_it_refuses_a_file_that_is_not_a_database(tmp_path):
    bogus = tmp_path / "database.sqlite"
    bogus.write_text("hello")

    with pytest.raises(BackupError, match="not an SQLite database"):
        create_backup(bogus, folder=tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["database.sqlite"]


def test_it_refuses_an_existing_output(source_db, tmp_path):
    target = tmp_path / "exists.bak"
    target.write_text("keep me")

    with pytest.raises(BackupError, match="already exists"):
        create_backup(source_db, output=target)
    assert target.read_text() == "keep me"
