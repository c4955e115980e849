"""Restoring the site's files: exactly as the backup lists them, built beside the folder and
swapped in, so a failure half-way leaves the folder as it was (issue 20)."""

import hashlib
import os
import shutil
import subprocess

import pytest

from backups_app.engine import backups
from backups_app.media import lists, put_back
from tests.conftest import copy_database, manage

OLD = 1_700_000_000 * 10**9


def write(root, rel, content, mode=0o644, ns=OLD):
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    path.chmod(mode)
    os.utime(path, ns=(ns, ns))
    return path


def tree(root):
    """{relative path: (content, mode, mtime_ns)} of every file under root."""
    found = {}
    for path in sorted(root.rglob("*")):
        if path.is_file():
            st = path.lstat()
            found[str(path.relative_to(root))] = (
                path.read_bytes(),
                st.st_mode & 0o777,
                st.st_mtime_ns,
            )
    return found


@pytest.fixture
def backed_up(live_database, backups_folder, site_media_root):
    """A backup of a media folder with a few files; returns (backup, its tree)."""
    write(site_media_root, "kept.txt", b"never changes")
    write(site_media_root, "edited.txt", b"original text", mode=0o600)
    write(site_media_root, "deleted/later.txt", b"deleted after the backup")
    backup = backups.create_backup(label="manual")
    return backup, tree(site_media_root)


def change_everything(media):
    (media / "edited.txt").write_bytes(b"edited since")
    shutil.rmtree(media / "deleted")
    write(media, "new/since.txt", b"added since the backup")


def test_it_puts_the_files_back_exactly_as_listed(backed_up, backups_folder, site_media_root):
    backup, before = backed_up
    change_everything(site_media_root)
    kept_inode = (site_media_root / "kept.txt").stat().st_ino
    safety = backups.create_backup(label="pre-restore")  # what a restore makes first

    done = put_back.put_back(
        lists.list_path(backup.path),
        backups_folder,
        site_media_root,
        present_list=lists.list_path(safety.path),
    )

    assert tree(site_media_root) == before
    assert (done.files, done.change, done.appear, done.disappear) == (3, 1, 1, 1)
    assert (site_media_root / "kept.txt").stat().st_ino == kept_inode  # linked, not copied
    assert not list(site_media_root.parent.glob(".stanza-media-restore-*"))


def test_it_says_what_would_change_without_changing_anything(backed_up, site_media_root):
    backup, _before = backed_up
    change_everything(site_media_root)
    now = tree(site_media_root)

    facts = put_back.confirm_facts(backup.path)

    assert (facts.change, facts.appear, facts.disappear) == (1, 1, 1)
    assert facts.words(done=False) == (
        "3 site files: 1 would change, 1 would appear, 1 would disappear"
    )
    assert tree(site_media_root) == now


def test_a_failure_half_way_leaves_the_folder_as_it_was(
    backed_up, backups_folder, site_media_root, monkeypatch
):
    backup, _before = backed_up
    change_everything(site_media_root)
    now = tree(site_media_root)
    copies = []
    copyfile = shutil.copyfile

    def copy_then_fail(source, dest):
        if copies:
            raise OSError(28, "No space left on device")
        copies.append(dest)
        return copyfile(source, dest)

    monkeypatch.setattr(put_back.shutil, "copyfile", copy_then_fail)

    with pytest.raises(put_back.PutBackError, match="left as it was: No space left on device"):
        put_back.put_back(lists.list_path(backup.path), backups_folder, site_media_root)

    assert tree(site_media_root) == now
    assert not list(site_media_root.parent.glob(".stanza-media-restore-*"))


def test_it_refuses_a_list_whose_objects_are_missing_before_anything_changes(
    backed_up, backups_folder, site_media_root
):
    backup, _before = backed_up
    sha = hashlib.sha256(b"original text").hexdigest()
    (backups_folder / "media" / "objects" / sha[:2] / sha).unlink()
    change_everything(site_media_root)
    now = tree(site_media_root)

    with pytest.raises(put_back.PutBackError, match=r"1 site file .* the store lacks its content"):
        put_back.plan(backup.path, backups_folder)

    assert tree(site_media_root) == now


def test_it_restores_names_with_newlines_and_invalid_utf8(
    live_database, backups_folder, site_media_root
):
    site_media_root.mkdir(parents=True)
    names = [b"new\nline", b"\xff\xfe-latin"]
    for name in names:
        with open(os.path.join(os.fsencode(site_media_root), name), "wb") as f:
            f.write(name * 3)
    backup = backups.create_backup(label="manual")
    shutil.rmtree(site_media_root)

    put_back.put_back(lists.list_path(backup.path), backups_folder, site_media_root)

    found = sorted(os.listdir(os.fsencode(site_media_root)))
    assert found == sorted(names)
    for name in names:
        with open(os.path.join(os.fsencode(site_media_root), name), "rb") as f:
            assert f.read() == name * 3


# --- the command, end to end ------------------------------------------------------------------


@pytest.fixture
def project(tmp_path, migrated_database):
    data = tmp_path / "project"
    (data / "backups").mkdir(parents=True)
    copy_database(migrated_database, data / "database.sqlite")
    write(data / "media", "avatars/ann.png", b"ann's avatar")
    write(data / "media", "invoices/1.pdf", b"invoice 1")
    made = manage("runjob", "daily-backup", env=env_for(data))
    assert made.returncode == 0, made.stderr
    [backup] = (data / "backups").glob("*.bak")
    return data, backup


def env_for(data):
    return {"STANZA_DATA_DIR": str(data), "DJANGO_SECRET_KEY": "test"}


@pytest.mark.slow
def test_the_restore_command_puts_back_the_files_after_the_safety_backup_recorded_them(project):
    data, backup = project
    before = tree(data / "media")
    write(data / "media", "invoices/2.pdf", b"invoice 2, after the backup")

    result = manage("restore", backup.name, "--yes", env=env_for(data), stdin=subprocess.DEVNULL)

    assert result.returncode == 0, result.stderr
    assert tree(data / "media") == before
    restored = "site files restored as the backup lists them (2 site files: 0 changed, 0 "
    assert restored + "appeared, 1 disappeared)" in result.stdout
    [safety] = (data / "backups").glob("*.pre-restore.bak")
    listed = {e.path for e in lists.read(lists.list_path(safety))}
    assert b"invoices/2.pdf" in listed  # the file the restore removed is in the safety backup


@pytest.mark.slow
def test_no_media_restores_the_database_alone_and_media_only_the_files_alone(project):
    data, backup = project
    write(data / "media", "invoices/2.pdf", b"invoice 2, after the backup")
    after = tree(data / "media")

    alone = manage(
        "restore", backup.name, "--yes", "--no-media", env=env_for(data), stdin=subprocess.DEVNULL
    )

    assert alone.returncode == 0, alone.stderr
    assert tree(data / "media") == after
    files = manage(
        "restore", backup.name, "--yes", "--media-only", env=env_for(data), stdin=subprocess.DEVNULL
    )
    assert files.returncode == 0, files.stderr
    assert "invoices/2.pdf" not in tree(data / "media")
    assert len(list((data / "backups").glob("*.pre-restore.bak"))) == 2


@pytest.mark.slow
def test_a_backup_without_a_list_restores_the_database_alone_and_says_so(project):
    data, backup = project
    lists.list_path(backup).unlink()
    write(data / "media", "invoices/2.pdf", b"invoice 2, after the backup")
    after = tree(data / "media")

    result = manage("restore", backup.name, "--yes", env=env_for(data), stdin=subprocess.DEVNULL)

    assert result.returncode == 0, result.stderr
    assert "has no list of site files" in result.stdout and "database alone" in result.stdout
    assert tree(data / "media") == after
