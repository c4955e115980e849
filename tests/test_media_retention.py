"""Retention deletes a backup's NAME.media with it, and in the same run the objects no
remaining list names; never while a backup is recording files (issue 20)."""

import threading

from backups_app.engine import backups
from backups_app.jobs import jobs
from backups_app.media import record, store


def test_it_deletes_the_list_with_its_backup_and_the_objects_no_list_names(
    db, live_database, backups_folder, site_media_root, settings
):
    settings.STANZA_BACKUP_RETENTION_DAYS = 0
    site_media_root.mkdir(parents=True)
    (site_media_root / "kept.txt").write_bytes(b"in both backups")
    (site_media_root / "gone.txt").write_bytes(b"only in the old one")
    old = backups.create_backup(label="manual")
    (site_media_root / "gone.txt").unlink()
    new = backups.create_backup(label="manual")

    result = jobs.purge_old_backups()

    assert not old.path.exists() and not (backups_folder / f"{old.name}.media").exists()
    assert (backups_folder / f"{new.name}.media").exists()
    names = {p.name for p in (backups_folder / "media" / "objects").rglob("*") if p.is_file()}
    assert names == {e.sha256 for e in record.lists.read(backups_folder / f"{new.name}.media")}
    assert len(names) == 1
    assert "removed 1 site file object(s) no backup lists (19 bytes), kept 1" in result


def test_it_leaves_every_object_while_a_backup_records_files(
    live_database, backups_folder, site_media_root
):
    site_media_root.mkdir(parents=True)
    (site_media_root / "a.txt").write_bytes(b"a")
    backups.create_backup(label="manual")
    for listed in backups_folder.glob("*.media"):
        listed.unlink()  # no list names the object now
    recording = store.Store(backups_folder).lock()  # what a backup holds while it records
    recording.__enter__()
    try:
        assert store.collect_garbage(backups_folder, backups.is_backup_name) is None
        assert sum(1 for p in (backups_folder / "media" / "objects").rglob("*") if p.is_file()) == 1
    finally:
        recording.__exit__(None, None, None)

    done = store.collect_garbage(backups_folder, backups.is_backup_name)

    assert done["removed"] == 1
    assert not [p for p in (backups_folder / "media" / "objects").rglob("*") if p.is_file()]


def test_a_backup_waits_for_the_clean_up_and_names_only_objects_that_exist(
    live_database, backups_folder, site_media_root
):
    site_media_root.mkdir(parents=True)
    (site_media_root / "a.txt").write_bytes(b"a")
    cleaning = store.Store(backups_folder)
    cleaning.root.mkdir(mode=0o700)
    with cleaning.lock(exclusive=True) as locked:
        assert locked
        made = []
        worker = threading.Thread(target=lambda: made.append(backups.create_backup()))
        worker.start()
        worker.join(0.5)
        assert worker.is_alive()  # waiting for the clean-up's lock
    worker.join(10)

    entries = record.lists.read_all(backups_folder / f"{made[0].name}.media")
    assert [e.path for e in entries] == [b"a.txt"]
    assert cleaning.has(entries[0].sha256, 1)
