import fcntl
import logging
import os
from datetime import UTC, datetime, timedelta

import pytest

from backups_app.engine import backups
from backups_app.retention import purge
from backups_app.retention.policy import Rules
from backups_app.retention.purge import remove_abandoned_uploads

NOW = datetime(2026, 11, 26, 2, 30, tzinfo=UTC)


def put(folder, name, age, *, sidecars=()):
    """A file in `folder` whose modification time is `age` before NOW; returns its path."""
    path = folder / name
    path.write_bytes(b"SQLite format 3\x00" + name.encode())
    stamp = (NOW - age).timestamp()
    os.utime(path, (stamp, stamp))
    for suffix in sidecars:
        sidecar = folder / (name + suffix)
        sidecar.write_text("x")
        os.utime(sidecar, (stamp, stamp))
    return path


def purge_old_backups(folder, days, now):
    """The purge with only the keep-everything window; the names it deleted."""
    return purge.purge_old_backups(folder, Rules(recent_days=days), now).removed


def names(folder):
    return sorted(p.name for p in folder.iterdir())


def test_it_deletes_backups_older_than_the_retention_with_their_sidecars(tmp_path):
    ages = {
        "database.sqlite.20261126T020000Z.bak": timedelta(minutes=30),
        "database.sqlite.20261123T020000Z.bak.gz": timedelta(days=3),
        "database.sqlite.20261119T030000Z.pre-migrate.bak": timedelta(days=6, hours=23),
        "database.sqlite.20261118T233000Z.bak": timedelta(days=7, hours=3),
        "database.sqlite.20261116T020000Z-2.manual.bak": timedelta(days=10),
        "database.sqlite.20261027T020000Z.uploaded.bak.gz": timedelta(days=30),
    }
    for name, age in ages.items():
        put(tmp_path, name, age, sidecars=(".sha256", ".json"))
    # Never touched, however old: other names, and a link that merely has a backup's name.
    put(tmp_path, "notes.txt", timedelta(days=400))
    put(tmp_path, "database.sqlite", timedelta(days=400))
    put(tmp_path, "database.sqlite.20200101T000000Z.bak.old", timedelta(days=400))
    put(tmp_path, "database.sqlite.20200101T000000Z.BAK", timedelta(days=400))
    put(tmp_path, "target", timedelta(days=400))
    (tmp_path / "database.sqlite.20200101T000000Z.bak").symlink_to(tmp_path / "target")

    removed = purge_old_backups(tmp_path, 7, NOW)

    assert sorted(removed) == [
        "database.sqlite.20261027T020000Z.uploaded.bak.gz",
        "database.sqlite.20261116T020000Z-2.manual.bak",
        "database.sqlite.20261118T233000Z.bak",
    ]
    kept = [n for n in ages if n not in removed]
    assert names(tmp_path) == sorted(
        [*kept, *(n + ".sha256" for n in kept), *(n + ".json" for n in kept)]
        + [
            "database.sqlite",
            "database.sqlite.20200101T000000Z.BAK",
            "database.sqlite.20200101T000000Z.bak",
            "database.sqlite.20200101T000000Z.bak.old",
            "notes.txt",
            "target",
        ]
    )


def test_it_keeps_the_newest_backup_when_all_are_old(tmp_path):
    # The newest by modification time, whatever its name says.
    put(tmp_path, "database.sqlite.20261001T020000Z.bak", timedelta(days=40), sidecars=(".sha256",))
    put(tmp_path, "database.sqlite.20261002T020000Z.bak", timedelta(days=50), sidecars=(".sha256",))
    put(tmp_path, "database.sqlite.20261003T020000Z.bak", timedelta(days=60))

    removed = purge_old_backups(tmp_path, 7, NOW)

    assert sorted(removed) == [
        "database.sqlite.20261002T020000Z.bak",
        "database.sqlite.20261003T020000Z.bak",
    ]
    assert names(tmp_path) == [
        "database.sqlite.20261001T020000Z.bak",
        "database.sqlite.20261001T020000Z.bak.sha256",
    ]


def test_it_keeps_only_the_newest_with_zero_days(tmp_path):
    put(tmp_path, "database.sqlite.20261126T021500Z.bak", timedelta(minutes=15))
    put(tmp_path, "database.sqlite.20261126T022000Z.bak", timedelta(minutes=10))
    put(tmp_path, "database.sqlite.20261126T022500Z.bak", timedelta(minutes=5))
    # Modified "in the future" (a clock that was ahead): kept until the clock passes it, and it
    # never takes the place of the newest backup, which is kept too (issue 22).
    put(tmp_path, "database.sqlite.20261126T023000Z.manual.bak", -timedelta(minutes=1))

    removed = purge_old_backups(tmp_path, 0, NOW)

    assert sorted(removed) == [
        "database.sqlite.20261126T021500Z.bak",
        "database.sqlite.20261126T022000Z.bak",
    ]
    assert names(tmp_path) == [
        "database.sqlite.20261126T022500Z.bak",
        "database.sqlite.20261126T023000Z.manual.bak",
    ]


def test_it_keeps_a_single_backup_and_handles_an_empty_folder(tmp_path):
    assert purge_old_backups(tmp_path, 7, NOW) == []

    put(tmp_path, "database.sqlite.20200101T000000Z.bak", timedelta(days=2000))

    assert purge_old_backups(tmp_path, 7, NOW) == []
    assert names(tmp_path) == ["database.sqlite.20200101T000000Z.bak"]


def test_it_removes_temporary_files_of_killed_backups_but_not_of_running_ones(tmp_path):
    put(tmp_path, "database.sqlite.20261126T020000Z.bak", timedelta(minutes=30))
    prefix = backups.TEMP_PREFIX
    for name in (f"{prefix}111-aa.partial", f"{prefix}111-aa.partial-journal"):
        put(tmp_path, name, timedelta(hours=5))  # a backup killed hours ago
    running = put(tmp_path, f"{prefix}222-bb.partial", timedelta(hours=2))
    fd = os.open(running, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)  # what a backup in progress holds
    try:
        purge_old_backups(tmp_path, 7, NOW)
    finally:
        os.close(fd)

    assert names(tmp_path) == [
        f"{prefix}222-bb.partial",
        "database.sqlite.20261126T020000Z.bak",
    ]


def test_it_logs_how_many_it_removed(tmp_path, caplog):
    put(tmp_path, "database.sqlite.20261126T020000Z.bak", timedelta(hours=1))
    put(tmp_path, "database.sqlite.20261001T020000Z.bak", timedelta(days=56))

    with caplog.at_level(logging.INFO, logger="backups_app.retention.purge"):
        purge_old_backups(tmp_path, 7, NOW)

    (record,) = caplog.records
    assert f"purge of {tmp_path}: kept 1 recent; deleted 1" in record.getMessage()
    assert (record.removed, record.kept) == (1, 1)


def test_it_fails_with_a_clear_error_when_the_folder_is_missing(tmp_path):
    with pytest.raises(backups.BackupError, match="does not exist"):
        purge_old_backups(tmp_path / "missing", 7, NOW)


def test_it_removes_uploads_a_killed_worker_left_but_not_one_in_progress(tmp_path):
    put(tmp_path, "tmpab12.upload.bak", timedelta(hours=7))
    put(tmp_path, "tmpcd34.upload.bak", timedelta(minutes=5))

    assert remove_abandoned_uploads(tmp_path, NOW) == 1
    assert names(tmp_path) == ["tmpcd34.upload.bak"]
    assert remove_abandoned_uploads(tmp_path / "missing", NOW) == 0


@pytest.mark.django_db
def test_the_purge_job_clears_abandoned_uploads(settings, backups_folder, time_machine):
    from backups_app.jobs import jobs

    time_machine.move_to(NOW, tick=False)
    uploads = backups_folder.parent / ".stanza-uploads"  # the app's own, beside the database
    uploads.mkdir()
    put(uploads, "tmpab12.upload.bak", timedelta(days=1))

    assert jobs.run_job("purge-old-backups").status == "success"
    assert names(uploads) == []


def test_it_keeps_the_newest_backup_the_site_made_itself_when_an_upload_is_newer(tmp_path):
    put(tmp_path, "database.sqlite.20261126T010000Z.uploaded.bak", timedelta(hours=1))
    put(tmp_path, "database.sqlite.20261118T020000Z.bak", timedelta(days=8))  # the last own one
    put(tmp_path, "database.sqlite.20261117T020000Z.bak", timedelta(days=9))

    removed = purge_old_backups(tmp_path, 7, NOW)

    assert removed == ["database.sqlite.20261117T020000Z.bak"]
    assert names(tmp_path) == [
        "database.sqlite.20261118T020000Z.bak",
        "database.sqlite.20261126T010000Z.uploaded.bak",
    ]
