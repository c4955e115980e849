"""The nightly drill checks the newest backup's site files: every object present, its SHA-256
read back (all of them, or a rotating seventh a day) (issue 20)."""

import datetime
import hashlib

import pytest

from backups_app.engine import backups
from backups_app.media import checks, lists
from backups_app.restore import drill
from tests.test_media_restore import write


@pytest.fixture
def backup(db, live_database, backups_folder, site_media_root):
    write(site_media_root, "a.txt", b"a")
    write(site_media_root, "b.txt", b"b")
    return backups.create_backup(label="manual")


def object_of(backups_folder, content):
    sha = hashlib.sha256(content).hexdigest()
    return backups_folder / "media" / "objects" / sha[:2] / sha


def test_it_reads_every_object_back_and_says_what_it_checked(backup):
    result = drill.verify_latest_backup()

    assert "site files: 2 listed, 2 of 2 stored contents present, all re-read, all match" in result


def test_it_fails_when_an_object_is_damaged_or_missing(backup, backups_folder):
    object_of(backups_folder, b"a").write_bytes(b"x")  # same size, other content
    object_of(backups_folder, b"b").unlink()

    with pytest.raises(drill.DrillError) as failed:
        drill.verify_latest_backup()

    assert "1 stored site file content(s) missing" in str(failed.value)
    assert "1 stored site file content(s) do not match their SHA-256" in str(failed.value)


def test_a_big_store_is_reread_a_seventh_a_day_so_each_object_weekly(
    backup, backups_folder, monkeypatch
):
    monkeypatch.setattr(checks, "READ_ALL_BYTES", 0)
    monkeypatch.setattr(checks, "READ_ALL_OBJECTS", 0)
    object_of(backups_folder, b"a").write_bytes(b"x")
    entries = lists.read_all(lists.list_path(backup.path))
    monday = datetime.date(2026, 12, 7)
    week = [monday + datetime.timedelta(days=n) for n in range(7)]

    verdicts = [checks.check_files(backup.path, backups_folder, day) for day in week]

    damaged = next(e.sha256 for e in entries if e.path == b"a.txt")
    failing_days = [day for day, (problems, _note) in zip(week, verdicts, strict=True) if problems]
    assert failing_days == [day for day in week if checks.in_todays_share(damaged, day)]
    assert len(failing_days) == 1  # each object falls in exactly one day of the week
    reread = [int(note.split("today's seventh (")[1].split(" of")[0]) for _p, note in verdicts]
    assert sum(reread) == 2  # a and b, each re-read on one day of the week
