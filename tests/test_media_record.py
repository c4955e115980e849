"""Site files recorded with every backup into the backups folder: each content once, named by
its SHA-256; an unchanged file costs a stat; the list is NAME.media (issue 20)."""

import errno
import gzip
import hashlib
import json
import os

import pytest

from backups_app.engine import backups
from backups_app.media import lists, record, store


def make_files(root, files):
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        path.chmod(0o644)
    return root


def age_files(root, ns=1_700_000_000 * 10**9):
    for path in root.rglob("*"):
        if path.is_file():
            os.utime(path, ns=(ns, ns))


def raw_lines(backup):
    with gzip.open(lists.list_path(backup.path)) as f:
        return [json.loads(line) for line in f]


def objects_in(folder):
    return sorted(p for p in (folder / "media" / "objects").rglob("*") if p.is_file())


@pytest.fixture
def media(site_media_root):
    return make_files(
        site_media_root,
        {
            "avatars/ann.png": b"ann" * 1000,
            "avatars/bob.png": b"bob" * 100_000,  # past store.SMALL: streamed
            "invoices/2026/1.pdf": b"invoice one",
            "copy-of-1.pdf": b"invoice one",  # same content: stored once
        },
    )


def test_it_records_every_file_and_stores_each_content_once(live_database, backups_folder, media):
    backup = backups.create_backup(label="manual")

    lines = raw_lines(backup)
    assert sorted(line["path"] for line in lines) == [
        "avatars/ann.png",
        "avatars/bob.png",
        "copy-of-1.pdf",
        "invoices/2026/1.pdf",
    ]
    line = next(line for line in lines if line["path"] == "avatars/ann.png")
    assert line["sha256"] == hashlib.sha256(b"ann" * 1000).hexdigest()
    assert line["size"] == 3000 and line["mode"] == "0644"
    assert line["mtime"] == pytest.approx((media / "avatars/ann.png").stat().st_mtime)
    stored = objects_in(backups_folder)
    assert len(stored) == 3
    for path in stored:
        assert path.parent.name == path.name[:2]
        assert hashlib.sha256(path.read_bytes()).hexdigest() == path.name
        assert path.stat().st_mode & 0o777 == 0o600
    summary = backups.read_manifest(backup.path)["media"]
    total = 3000 + 300_000 + 11 + 11
    assert (summary["files"], summary["bytes"], summary["new_bytes"]) == (4, total, total - 11)


def test_it_reads_nothing_and_writes_nothing_when_nothing_changed(
    live_database, backups_folder, media
):
    age_files(media)  # not fresh: see record.FRESH_NS
    backups.create_backup(label="manual")
    before = {p: p.stat().st_mtime_ns for p in objects_in(backups_folder)}
    os.utime(media / "avatars/ann.png", ns=(10**18, 10**18))
    first = backups.create_backup(label="manual")  # the stat cache learns the new time
    second = backups.create_backup(label="manual")

    assert backups.read_manifest(first.path)["media"]["read"] == 1
    summary = backups.read_manifest(second.path)["media"]
    assert summary["read"] == 0 and summary["new_bytes"] == 0 and summary["files"] == 4
    assert {p: p.stat().st_mtime_ns for p in objects_in(backups_folder)} == before
    assert raw_lines(second) == raw_lines(first)


def test_it_reads_only_the_file_that_changed(live_database, backups_folder, media):
    age_files(media)
    backups.create_backup(label="manual")
    (media / "invoices/2026/1.pdf").write_bytes(b"invoice one, corrected")

    backup = backups.create_backup(label="manual")

    summary = backups.read_manifest(backup.path)["media"]
    assert summary["read"] == 1 and summary["new_bytes"] == len(b"invoice one, corrected")
    assert len(objects_in(backups_folder)) == 4


def test_it_reads_again_a_file_too_fresh_to_trust_its_stat(live_database, backups_folder, media):
    backups.create_backup(label="manual")  # the files were written just now

    backup = backups.create_backup(label="manual")

    assert backups.read_manifest(backup.path)["media"]["read"] == 4
    assert all("ino" not in line for line in raw_lines(backup))


def test_it_skips_and_counts_symlinks_and_fifos_never_following_them(
    live_database, backups_folder, media, tmp_path
):
    secret = tmp_path / "secret.txt"
    secret.write_text("not the site's")
    (media / "link-to-secret").symlink_to(secret)
    (media / "link-to-folder").symlink_to(tmp_path, target_is_directory=True)
    os.mkfifo(media / "a-fifo")

    backup = backups.create_backup(label="manual")

    assert len(raw_lines(backup)) == 4
    assert backups.read_manifest(backup.path)["media"]["skipped"] == 3


def test_it_keeps_names_with_newlines_and_invalid_utf8_byte_for_byte(
    live_database, backups_folder, site_media_root
):
    site_media_root.mkdir(parents=True)
    odd = [b"line\nbreak.txt", b"latin1-\xe9t\xe9.txt", b"caf\xc3\xa9.txt"]
    for name in odd:
        with open(os.path.join(os.fsencode(site_media_root), name), "wb") as f:
            f.write(name)

    backup = backups.create_backup(label="manual")

    entries = lists.read_all(lists.list_path(backup.path))
    assert sorted(e.path for e in entries) == sorted(odd)
    assert all(e.sha256 == hashlib.sha256(e.path).hexdigest() for e in entries)
    latin = next(line for line in raw_lines(backup) if "path_b64" in line)
    assert latin["path"] == "latin1-\\xe9t\\xe9.txt"


def test_it_records_an_empty_list_when_the_media_folder_is_missing(live_database, backups_folder):
    backup = backups.create_backup(label="manual")

    assert raw_lines(backup) == []
    assert backups.read_manifest(backup.path)["media"]["files"] == 0


def test_it_records_no_files_when_turned_off(live_database, backups_folder, media, settings):
    settings.STANZA_MEDIA_DIR = ""

    backup = backups.create_backup(label="manual")

    assert not lists.list_path(backup.path).exists()
    assert "media" not in backups.read_manifest(backup.path)


def test_it_records_no_files_with_a_backup_written_elsewhere(
    live_database, backups_folder, media, tmp_path
):
    backup = backups.create_backup(output=tmp_path / "elsewhere.bak")

    assert not lists.list_path(backup.path).exists()
    assert not (backups_folder / "media").exists()


def test_it_names_an_unreadable_file_and_still_makes_the_backup(
    live_database, backups_folder, media, monkeypatch
):
    read_file = record.read_file

    def refuse_one(store_, path, name):  # root reads every file: the refusal is simulated
        if path.endswith(b"bob.png"):
            raise PermissionError(errno.EACCES, "Permission denied")
        return read_file(store_, path, name)

    monkeypatch.setattr(record, "read_file", refuse_one)

    backup = backups.create_backup(label="manual")

    summary = backups.read_manifest(backup.path)["media"]
    assert summary["files"] == 3
    assert summary["unreadable"] == ["avatars/bob.png: Permission denied"]


def test_it_rereads_a_file_that_changed_while_it_was_read(
    live_database, backups_folder, media, monkeypatch
):
    target = media / "invoices/2026/1.pdf"
    read_small = record._read_small
    calls = []

    def change_during_first_read(fd):
        data = read_small(fd)
        if not calls:
            calls.append(1)
            with open(target, "ab") as f:
                f.write(b" and more")
        return data

    monkeypatch.setattr(record, "_read_small", change_during_first_read)

    backup = backups.create_backup(label="manual")

    line = next(line for line in raw_lines(backup) if line["path"] == "invoices/2026/1.pdf")
    assert line["sha256"] == hashlib.sha256(b"invoice one and more").hexdigest()
    assert line["size"] == len(b"invoice one and more")
    stored = backups_folder / "media" / "objects" / line["sha256"][:2] / line["sha256"]
    assert stored.read_bytes() == b"invoice one and more"


def test_a_failed_recording_leaves_no_backup_and_no_list(
    live_database, backups_folder, media, monkeypatch
):
    def disk_full(fd, data):  # what os.write says on a full disk
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(store, "write_all", disk_full)
    monkeypatch.setattr(record, "write_all", disk_full)

    with pytest.raises(backups.BackupError, match="disk full"):
        backups.create_backup(label="manual")

    assert backups.list_backups(backups_folder) == []
    assert not list(backups_folder.glob("*.media"))
    assert not list((backups_folder / "media" / "tmp").glob("*"))


def test_it_does_not_back_up_the_backups_folder_inside_the_media_folder(
    live_database, data_dir, settings
):
    settings.STANZA_MEDIA_DIR = str(data_dir)  # the whole data folder, backups included
    backups.create_backup(label="manual")

    backup = backups.create_backup(label="manual")

    assert all(not line["path"].startswith("backups/") for line in raw_lines(backup))


def test_the_daily_backup_says_how_many_files_it_recorded_and_what_was_new(
    db, live_database, backups_folder, media
):
    from backups_app.jobs import jobs

    result = jobs.daily_backup()

    assert result.endswith("; 4 site files (295.9 KB new)")


def test_it_is_off_by_default_when_the_default_storage_is_not_on_this_disk(
    live_database, backups_folder, media, settings
):
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {"BACKEND": "django.core.files.storage.InMemoryStorage"},
    }

    backup = backups.create_backup(label="manual")

    assert not lists.list_path(backup.path).exists()


def test_it_follows_the_setting_over_media_root(
    live_database, backups_folder, media, settings, tmp_path
):
    elsewhere = make_files(tmp_path / "elsewhere", {"only-here.txt": b"x"})
    settings.STANZA_MEDIA_DIR = str(elsewhere)

    backup = backups.create_backup(label="manual")

    assert [line["path"] for line in raw_lines(backup)] == ["only-here.txt"]
