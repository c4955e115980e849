import gzip
import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from backups_app.core import files
from backups_app.engine import backups, listing, names
from backups_app.engine.backups import BackupError, create_backup, list_backups
from tests.conftest import count_rows, make_database, make_large_database, write_backup_file


def test_it_writes_a_verified_backup_with_checksum(source_db, tmp_path):
    out = tmp_path / "out"
    out.mkdir()

    backup = create_backup(source_db, folder=out)

    assert backups.is_backup_name(backup.name)
    assert count_rows(backup.path) == 100
    sidecar = backup.path.with_name(backup.name + ".sha256")
    digest = hashlib.sha256(backup.path.read_bytes()).hexdigest()
    assert sidecar.read_text() == f"{digest}  {backup.name}\n"
    manifest = json.loads(backup.path.with_name(backup.name + ".json").read_text())
    assert manifest["tables"] == {"django_migrations": 0, "item": 100}
    assert sorted(p.name for p in out.iterdir()) == [
        backup.name,
        backup.name + ".json",
        sidecar.name,
    ]


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


def test_listing_keeps_no_descriptor_open_whatever_happens(source_db, tmp_path, monkeypatch):
    """Pages list the folder on every view: a descriptor left open per view would run a
    long-lived server out of them."""
    create_backup(source_db, folder=tmp_path)
    before = len(os.listdir("/proc/self/fd"))

    for _ in range(50):
        list_backups(tmp_path)
    with pytest.raises(BackupError, match="does not exist"):
        list_backups(tmp_path / "missing")

    def bad_setting():
        raise BackupError("Stanza Backups needs SQLite")

    monkeypatch.setattr(names, "live_database_path", bad_setting)
    with pytest.raises(BackupError, match="needs SQLite"):
        list_backups(tmp_path)

    assert len(os.listdir("/proc/self/fd")) == before


def mtimes(folder, **kwargs):
    return {item.name: item.mtime for item in backups.scan_backups(folder, **kwargs)}


def test_a_settled_folders_listing_is_reused_until_the_folder_changes(tmp_path, monkeypatch):
    """Pages list 5000 backups in ~40 ms of stat calls; a folder that did not change since is
    not read again. A new, deleted or renamed backup changes the folder: read again."""
    monkeypatch.setattr(listing, "SETTLED_SECONDS", 0)  # the guard has its own test below
    first = write_backup_file(tmp_path, "database.sqlite.20261125T020000Z.bak")
    time.sleep(0.05)  # past the file system's time granularity, as SETTLED_SECONDS is
    read = mtimes(tmp_path, reuse=True)

    os.utime(first, (1_000_000_000, 1_000_000_000))  # in place: the folder does not change
    assert mtimes(tmp_path, reuse=True) == read
    assert mtimes(tmp_path) == {first.name: 1_000_000_000}  # decisions read the folder

    second = write_backup_file(tmp_path, "database.sqlite.20261126T020000Z.bak")
    time.sleep(0.05)
    assert mtimes(tmp_path, reuse=True) == {
        first.name: 1_000_000_000,
        second.name: second.stat().st_mtime,
    }
    second.unlink()
    time.sleep(0.05)
    assert mtimes(tmp_path, reuse=True) == {first.name: 1_000_000_000}
    first.rename(tmp_path / "database.sqlite.20261127T020000Z.bak")
    assert mtimes(tmp_path, reuse=True) == {"database.sqlite.20261127T020000Z.bak": 1_000_000_000}


def test_a_folder_that_just_changed_is_read_every_time(tmp_path):
    """Within SETTLED_SECONDS of its last change a folder's times may not move again for the
    next change (their granularity): its listing is not kept."""
    backup = write_backup_file(tmp_path, "database.sqlite.20261125T020000Z.bak")
    mtimes(tmp_path, reuse=True)

    os.utime(backup, (1_000_000_000, 1_000_000_000))

    assert mtimes(tmp_path, reuse=True) == {backup.name: 1_000_000_000}


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


# --- consistency while the site writes -----------------------------------------------------

WRITER = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=5)
conn.execute("PRAGMA synchronous=NORMAL")
print("ready", flush=True)
while True:
    conn.execute("INSERT INTO item (name, n) VALUES ('writer', ?)", (time.time_ns(),))
    time.sleep(0.0005)
"""


@pytest.mark.slow
def test_it_copies_a_consistent_snapshot_while_another_process_writes(tmp_path):
    source = make_large_database(tmp_path / "database.sqlite", 40)
    out = tmp_path / "out"
    out.mkdir()
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(source)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert writer.stdout.readline() == "ready\n"
        time.sleep(0.2)
        before = count_rows(source)
        started = time.time_ns()
        backup = create_backup(source, folder=out)
        finished = time.time_ns()
        after = count_rows(source)
        assert writer.poll() is None, "the writer died (database is locked?)"
    finally:
        writer.terminate()
        writer.wait()

    conn = sqlite3.connect(source)
    during = conn.execute(
        "SELECT count(*) FROM item WHERE name = 'writer' AND n BETWEEN ? AND ?",
        (started, finished),
    ).fetchone()[0]
    conn.close()
    assert during > 0, "the writer did not commit while the backup ran"
    assert before <= count_rows(backup.path) <= after
    backups.verify_database(backup.path, {"item", "django_migrations"})


# --- atomicity -------------------------------------------------------------------------------


def test_it_removes_temp_files_of_dead_backups_but_not_of_live_ones(source_db, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    dead = out / ".stanza-tmp-1-dead.partial"
    dead.write_bytes(b"half a backup")
    (out / ".stanza-tmp-1-dead.partial-journal").write_bytes(b"journal")
    (out / ".stanza-tmp-2-orphan.partial.gz").write_bytes(b"gz")
    live = out / ".stanza-tmp-3-live.partial"
    fd = files.create_locked(live)
    try:
        backup = create_backup(source_db, folder=out)
        names = sorted(p.name for p in out.iterdir())
    finally:
        os.close(fd)

    assert names == [live.name, backup.name, backup.name + ".json", backup.name + ".sha256"]


def test_it_leaves_no_temp_file_when_verification_fails(source_db, tmp_path, monkeypatch):
    def fail(path, tables, cancel=None, **kwargs):
        raise BackupError("failed the integrity check")

    monkeypatch.setattr(backups, "_check_database", fail)

    for compress in (False, True):
        out = tmp_path / f"out-{compress}"
        out.mkdir()
        with pytest.raises(BackupError, match="integrity check"):
            create_backup(source_db, folder=out, compress=compress)
        assert list(out.iterdir()) == []


def test_it_treats_a_signal_inside_sqlite_like_ctrl_c(tmp_path):
    source = make_large_database(tmp_path / "database.sqlite", 20)
    out = tmp_path / "out"
    out.mkdir()

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGALRM, interrupt)
    signal.setitimer(signal.ITIMER_REAL, 0.02)
    try:
        with pytest.raises(KeyboardInterrupt):
            create_backup(source, folder=out)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert list(out.iterdir()) == []


# --- bad destinations --------------------------------------------------------------------


def test_it_refuses_a_missing_destination_folder(source_db, tmp_path):
    with pytest.raises(BackupError, match="does not exist"):
        create_backup(source_db, folder=tmp_path / "missing")
    with pytest.raises(BackupError, match="does not exist"):
        create_backup(source_db, output=tmp_path / "missing" / "x.bak")


def test_it_refuses_a_read_only_destination(source_db, mount_point):
    folder = mount_point("ro", "size=1m")

    with pytest.raises(BackupError, match="not writable"):
        create_backup(source_db, folder=folder)


@pytest.mark.parametrize("content", [None, b"", b"not a database at all"])
def test_it_refuses_every_existing_output_and_leaves_it_alone(source_db, tmp_path, content):
    target = tmp_path / "exists.bak"
    if content is None:
        create_backup(source_db, output=target)  # a valid database
    else:
        target.write_bytes(content)
    before = target.read_bytes(), target.stat().st_mtime_ns

    with pytest.raises(BackupError, match="already exists"):
        create_backup(source_db, output=target)
    assert (target.read_bytes(), target.stat().st_mtime_ns) == before


def test_it_refuses_an_output_that_appears_during_the_backup(source_db, tmp_path, monkeypatch):
    target = tmp_path / "late.bak"
    real = backups.publish

    def someone_else_first(*args, **kwargs):
        target.write_text("theirs")
        return real(*args, **kwargs)

    monkeypatch.setattr(backups, "publish", someone_else_first)

    with pytest.raises(BackupError, match="already exists"):
        create_backup(source_db, output=target)
    assert target.read_text() == "theirs"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["database.sqlite", "late.bak"]


@pytest.mark.parametrize(
    "output, message",
    [
        ("", "is a folder"),
        (".", "is a folder"),
        ("newdir/", "is a folder"),
        ("bad\nname.bak", "control characters"),
        ("bad\rname.bak", "control characters"),
    ],
)
def test_it_refuses_hostile_outputs(source_db, tmp_path, monkeypatch, output, message):
    monkeypatch.chdir(tmp_path)

    with pytest.raises(BackupError, match=message):
        create_backup(source_db, output=output)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["database.sqlite"]


def test_it_refuses_an_output_that_is_a_symlink(source_db, tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("precious")
    link = tmp_path / "link.bak"
    link.symlink_to(victim)
    dangling = tmp_path / "dangling.bak"
    dangling.symlink_to(tmp_path / "nowhere")

    for target in (link, dangling):
        with pytest.raises(BackupError, match="already exists"):
            create_backup(source_db, output=target)
    assert victim.read_text() == "precious"
    assert not (tmp_path / "nowhere").exists()


def test_it_writes_a_checksum_sha256sum_reads_for_an_odd_name(source_db, tmp_path):
    target = tmp_path / "odd \\ name.bak"

    backup = create_backup(source_db, output=target)

    result = subprocess.run(
        ["sha256sum", "-c", backup.name + ".sha256"], cwd=tmp_path, capture_output=True
    )
    assert result.returncode == 0, result.stderr
    assert backups.read_checksum(backup.path) == backups.sha256_of(backup.path)


def test_it_refuses_a_source_that_is_a_folder(tmp_path):
    (tmp_path / "database.sqlite").mkdir()

    with pytest.raises(BackupError, match="not a file"):
        create_backup(tmp_path / "database.sqlite", folder=tmp_path)


# --- disk full ----------------------------------------------------------------------------


@pytest.mark.parametrize("compress", [False, True])
def test_it_says_disk_full_on_a_small_tmpfs_and_removes_the_partial_file(
    tmp_path, mount_point, compress
):
    folder = mount_point("size=4m")
    other = folder / "someone-elses-file"
    other.write_bytes(b"x" * 1000)
    # Plain: the copy itself does not fit. Compressed: the copy fits, its .gz does not.
    source = make_large_database(tmp_path / "database.sqlite", 3 if compress else 6)

    with pytest.raises(BackupError, match="disk full"):
        create_backup(source, folder=folder, compress=compress)
    assert [p.name for p in folder.iterdir()] == [other.name]
    assert other.read_bytes() == b"x" * 1000


def test_it_verifies_the_copy_beside_the_compression(source_db, tmp_path):
    backup = create_backup(source_db, folder=tmp_path, compress=True)

    assert backups.read_checksum(backup.path) == backups.sha256_of(backup.path)
    assert gzip.decompress(backup.path.read_bytes())[:16] == b"SQLite format 3\x00"
