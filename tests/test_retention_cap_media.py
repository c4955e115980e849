"""STANZA_BACKUPS_MAX_MB counts what the backups folder really holds (issue 22): the backups,
their sidecars and, once each, the site-file objects they name; an object is freed only with
the last remaining backup that names it. Real backups, real site files, time frozen."""

import gzip
import json
import os
from datetime import UTC, datetime, timedelta

import pytest

from backups_app.engine import backups
from backups_app.jobs import jobs
from backups_app.media import lists
from backups_app.retention import policy, purge, usage

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 12, 6, 2, 30, tzinfo=UTC)
MB = policy.MB


def held_bytes(folder):
    """What the folder holds as the cap counts it: backups, sidecars, site-file objects."""
    found = sum(p.stat().st_size for p in folder.iterdir() if p.is_file())
    objects = folder / "media" / "objects"
    return found + sum(p.stat().st_size for p in objects.rglob("*") if p.is_file())


@pytest.fixture
def four_backups(live_database, backups_folder, site_media_root, settings):
    """Four backups a day apart: {a}, {a, b}, {b, c}, {c}; each site file 1.5 MB."""
    settings.STANZA_BACKUP_RETENTION_DAYS = 30
    site_media_root.mkdir(parents=True)
    contents = {n: os.urandom(3 * MB // 2) for n in "abc"}
    made = []
    for days, present in zip((4, 3, 2, 1), ("a", "ab", "bc", "c"), strict=True):
        for stale in site_media_root.iterdir():
            stale.unlink()
        for name in present:
            (site_media_root / f"{name}.bin").write_bytes(contents[name])
        backup = backups.create_backup(label="manual")
        when = (NOW - timedelta(days=days)).timestamp()
        os.utime(backup.path, (when, when))
        made.append(backup.name)
    return made  # oldest first


def test_the_cap_counts_each_site_file_once_and_frees_it_with_its_last_backup(
    four_backups, backups_folder, settings, time_machine
):
    time_machine.move_to(NOW, tick=False)
    settings.STANZA_BACKUPS_MAX_MB = 4
    b1, b2, b3, b4 = four_backups
    assert 4.5 * MB < held_bytes(backups_folder) < 5 * MB  # a, b, c once, and 4 small backups

    run = jobs.run_job("purge-old-backups")

    # Deleting the oldest frees only its database (b2 still names a); deleting b2 frees a too.
    # Counting site files per backup (9 MB) would have deleted b3 as well; not counting them
    # at all, nothing.
    assert run.status == "success", run.error
    assert sorted(p.name for p in backups_folder.glob("*.bak")) == sorted([b3, b4])
    assert held_bytes(backups_folder) <= 4 * MB
    left = f"{held_bytes(backups_folder) / MB:.1f}"
    assert run.result.startswith(f"kept 2 recent; deleted 2 (2 over the 4 MB cap; {left} MB left)")
    # The clean-up of the same run, from the same read of the lists: a is gone, b and c stay.
    assert "removed 1 site file object(s) no backup lists (1.5 MB), kept 2 (3.0 MB)" in run.result
    named = {e.sha256 for n in (b3, b4) for e in lists.read_all(backups_folder / f"{n}.media")}
    stored = {p.name for p in (backups_folder / "media" / "objects").rglob("*") if p.is_file()}
    assert stored == named and len(stored) == 2


def test_the_page_shows_what_the_purge_will_delete_from_the_purges_record(
    four_backups, backups_folder, settings, time_machine, staff_client
):
    time_machine.move_to(NOW, tick=False)
    settings.STANZA_BACKUPS_MAX_MB = 100
    jobs.run_job("purge-old-backups")  # deletes nothing; records what the folder holds
    settings.STANZA_BACKUPS_MAX_MB = 4
    dry_run = purge.preview(NOW, backups_folder)  # reads the lists, as the purge will
    for listed in backups_folder.glob("*.media"):
        listed.unlink()  # the page reads the purge's record, never the lists

    fates = purge.fates_by_name(backups.scan_backups(backups_folder), NOW, backups_folder)
    html = staff_client.get("/admin/backups/").content.decode()

    assert [line.split()[0] for line in dry_run[:4]] == ["keep", "keep", "delete", "delete"]
    assert [fates[n].over_cap for n in four_backups] == [True, True, False, False]
    assert html.count("over the 4 MB cap: deleted by the next purge at <time") == 2


def test_a_backup_made_since_the_record_counts_its_new_files(
    four_backups, backups_folder, settings, time_machine, site_media_root
):
    time_machine.move_to(NOW, tick=False)
    settings.STANZA_BACKUPS_MAX_MB = 100
    jobs.run_job("purge-old-backups")
    (site_media_root / "d.bin").write_bytes(os.urandom(3 * MB))  # 3 MB more since the purge
    fifth = backups.create_backup(label="manual")
    os.utime(fifth.path, (NOW.timestamp() - 3600, NOW.timestamp() - 3600))
    settings.STANZA_BACKUPS_MAX_MB = 7

    listed = backups.scan_backups(backups_folder)
    items, shared = usage.for_page(backups_folder, listed)
    fates = {f.name: f for f in policy.decide(items, NOW, purge.rules_from_settings(), shared)}

    # 7.5 MB of site files and five backups: without b1 and b2 (and a), 6 MB and three: fits.
    assert [fates[n].over_cap for n in four_backups] == [True, True, False, False]
    assert fates[fifth.name].keep
    measured = usage.measure(backups_folder, listed)  # what the purge will read: the same
    exact = policy.decide(measured.items, NOW, purge.rules_from_settings(), measured.shared)
    assert {f.name: f.over_cap for f in exact} == {n: f.over_cap for n, f in fates.items()}


def test_a_list_written_otherwise_is_read_line_by_line_with_the_same_answer(tmp_path):
    entries = [
        lists.Entry(b"x.txt", 5, 0, 0o644, "a" * 64),
        lists.Entry(b"y.txt", 5, 0, 0o644, "a" * 64),  # the same content twice
        lists.Entry(b'odd "size":9,"sha256":"' + b"b" * 64 + b'"', 7, 0, 0o644, "c" * 64),
    ]
    ours, reordered = tmp_path / "ours.media", tmp_path / "reordered.media"
    with open(ours, "wb") as f:
        writer = lists.Writer(f)
        for entry in entries:
            writer.add(entry)
        writer.close()
    lines = [json.loads(line) for line in gzip.decompress(ours.read_bytes()).splitlines()]
    reordered.write_bytes(
        gzip.compress(
            b"".join(json.dumps(dict(reversed(d.items()))).encode() + b"\n" for d in lines)
        )
    )

    assert lists.named(ours) == lists.named(reordered) == ({"a" * 64: 5, "c" * 64: 7}, 17)
