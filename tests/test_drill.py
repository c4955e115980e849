import json
import os
import sqlite3

import pytest

from backups_app.engine import backups
from backups_app.engine.backups import create_backup
from backups_app.models import DrillRun
from backups_app.restore import drill
from backups_app.restore.drill import DrillError, drill_result, verify_latest_backup
from tests.conftest import corrupt_middle, make_database

# A drill of the backups folder records its verdict as a DrillRun.
pytestmark = pytest.mark.django_db


@pytest.fixture
def live(data_dir):
    return make_database(data_dir / "database.sqlite", rows=3000)


def backup_with_manifest(live, folder, **kwargs):
    return create_backup(live, folder=folder, **kwargs)  # the engine writes the manifest


def make_newest(backup):
    """Give a backup the newest modification time of its folder."""
    newest = max(b.modified for b in backups.list_backups(backup.path.parent))
    stamp = newest.timestamp() + 60
    os.utime(backup.path, (stamp, stamp))


def test_it_records_row_counts_beside_a_backup(live, backups_folder):
    backup = backup_with_manifest(live, backups_folder)

    manifest = json.loads(backup.path.with_name(backup.name + ".json").read_text())

    assert manifest["backup"] == backup.name
    assert manifest["tables"] == {"django_migrations": 0, "item": 3000}


def test_it_passes_a_sound_backup_and_records_the_result(live, backups_folder, time_machine):
    time_machine.move_to("2026-11-26 03:00:00Z", tick=False)
    backup = backup_with_manifest(live, backups_folder)

    result = verify_latest_backup()

    assert result.startswith(f"{backup.name}: restored, integrity ok, 2 tables, 3000 rows")
    assert drill_result(backup) == {"at": "2026-11-26T03:00:00+00:00", "ok": True, "problems": []}
    leftovers = [p.name for p in backups_folder.iterdir() if p.name.startswith(".stanza-tmp-")]
    assert leftovers == []


def test_it_drills_a_gzipped_backup(live, backups_folder):
    backup = backup_with_manifest(live, backups_folder, compress=True)

    verify_latest_backup()

    assert drill_result(backup)["ok"] is True


def test_it_catches_a_backup_corrupted_on_disk(live, backups_folder):
    backup = backup_with_manifest(live, backups_folder)
    corrupt_middle(backup.path)

    with pytest.raises(DrillError, match="does not match its .sha256 checksum"):
        verify_latest_backup()

    result = drill_result(backup)
    assert result["ok"] is False
    assert "checksum" in result["problems"][0]


def test_it_catches_corruption_without_a_checksum(live, backups_folder):
    backup = backup_with_manifest(live, backups_folder)
    backup.path.with_name(backup.name + ".sha256").unlink()
    corrupt_middle(backup.path)

    with pytest.raises(DrillError):
        verify_latest_backup()

    assert drill_result(backup)["ok"] is False


def test_it_catches_missing_rows(live, backups_folder):
    backup = backup_with_manifest(live, backups_folder)
    drill.write_manifest(backup.path, {"django_migrations": 0, "item": 3001, "gone": 1})

    with pytest.raises(DrillError) as info:
        verify_latest_backup()

    assert "table item has 3000 rows, 3001 at backup time" in str(info.value)
    assert "table gone is missing" in drill_result(backup)["problems"]


def test_it_drills_only_the_newest_backup(live, backups_folder):
    old = backup_with_manifest(live, backups_folder)
    corrupt_middle(old.path)
    new = backup_with_manifest(live, backups_folder, label="manual")
    make_newest(new)

    verify_latest_backup()

    assert drill_result(new)["ok"] is True
    assert drill_result(old) is None


def test_it_records_counts_when_a_backup_has_no_manifest(live, backups_folder):
    backup = create_backup(live, folder=backups_folder)
    backup.path.with_name(backup.name + ".json").unlink()  # e.g. a backup copied in by hand

    result = verify_latest_backup()

    assert "recorded them now" in result
    assert drill.read_manifest(backup.path)["tables"]["item"] == 3000
    assert drill_result(backup)["ok"] is True


def test_it_fails_when_there_is_no_backup(backups_folder):
    with pytest.raises(DrillError, match="no backup to verify"):
        verify_latest_backup()


def test_a_later_drill_replaces_the_result_but_keeps_the_counts(live, backups_folder):
    backup = backup_with_manifest(live, backups_folder)
    verify_latest_backup()
    conn = sqlite3.connect(backup.path)
    conn.execute("DELETE FROM item WHERE n < 10")
    conn.commit()
    conn.close()
    backup.path.with_name(backup.name + ".sha256").unlink()

    with pytest.raises(DrillError, match="table item has 2990 rows, 3000 at backup time"):
        verify_latest_backup()

    assert drill.read_manifest(backup.path)["tables"]["item"] == 3000
    assert drill_result(backup)["ok"] is False


def test_it_drills_the_newest_backup_the_site_made_not_a_newer_upload(live, backups_folder):
    from backups_app.restore.uploads import accept_upload

    own = backup_with_manifest(live, backups_folder)
    other = make_database(backups_folder.parent / "elsewhere.sqlite", rows=7, wal=False)
    with open(other, "rb") as f:
        uploaded = accept_upload(f, backups_folder)
    make_newest(uploaded)

    result = verify_latest_backup()

    assert result.startswith(f"{own.name}: restored")
    assert drill_result(own)["ok"] is True
    assert drill_result(uploaded) is None


def test_it_says_when_there_are_only_uploads_to_verify(live, backups_folder):
    from backups_app.restore.uploads import accept_upload

    with open(live, "rb") as f:
        accept_upload(f, backups_folder)

    with pytest.raises(DrillError, match=r"no backup to verify \(only uploaded ones\)"):
        verify_latest_backup()


def test_the_drill_copies_the_way_a_restore_does_whatever_the_page_size(backups_folder, tmp_path):
    big_pages = tmp_path / "big-pages.sqlite"
    conn = sqlite3.connect(big_pages, isolation_level=None)
    conn.execute("PRAGMA page_size = 16384")
    conn.close()
    make_database(big_pages, rows=500, wal=False)
    backup = create_backup(big_pages, folder=backups_folder)

    assert verify_latest_backup().startswith(f"{backup.name}: restored, integrity ok, 2 tables")


# --- the drill's record: what health, the pages and /metrics read --------------------------


def test_it_records_the_verdict_size_and_restore_time(live, backups_folder, time_machine):
    time_machine.move_to("2026-11-26 03:00:00Z", tick=False)
    backup = backup_with_manifest(live, backups_folder)

    verify_latest_backup()

    run = drill.recent_drills().last
    assert (run.backup_name, run.backup_size, run.ok, run.problems) == (
        backup.name,
        backup.path.stat().st_size,
        True,
        "",
    )
    assert run.finished_at.isoformat() == "2026-11-26T03:00:00+00:00"
    assert run.restore_seconds >= 0
    assert drill.recent_drills().passed == run


def test_it_keeps_the_last_passed_drill_apart_from_a_newer_failed_one(live, backups_folder):
    good = backup_with_manifest(live, backups_folder)
    verify_latest_backup()
    bad = backup_with_manifest(live, backups_folder, label="manual")
    make_newest(bad)
    corrupt_middle(bad.path)

    with pytest.raises(DrillError):
        verify_latest_backup()

    last, passed = drill.recent_drills()
    assert (last.backup_name, last.ok, last.restore_seconds) == (bad.name, False, None)
    assert "checksum" in last.problem_list[0]
    assert passed.backup_name == good.name


def test_it_records_no_drill_run_for_another_folder(live, backups_folder, tmp_path):
    elsewhere = tmp_path / "fetched"
    elsewhere.mkdir()
    create_backup(live, folder=elsewhere)

    verify_latest_backup(elsewhere)

    assert DrillRun.objects.count() == 0


def test_it_deletes_drill_records_older_than_the_drill_history(live, backups_folder, time_machine):
    backup_with_manifest(live, backups_folder)
    time_machine.move_to("2026-08-01 03:00:00Z", tick=False)
    verify_latest_backup()
    time_machine.move_to("2026-11-26 03:00:00Z", tick=False)
    verify_latest_backup()

    assert [run.finished_at.month for run in DrillRun.objects.all()] == [11]
