"""Site files offsite, against moto's S3 server: objects the store lacks are sent once, then
NAME.media; offsite retention removes objects no copy names; a fetch brings back and checks
what the list names (issue 20)."""

# The S3 fixtures are test_offsite's, imported: pytest passes them by name (F811).
# ruff: noqa: F811

import hashlib
import shutil
import time
from datetime import timedelta

import pytest
from django.utils import timezone

from backups_app.jobs import jobs
from backups_app.media import lists
from backups_app.models import CronRun
from backups_app.offsite import fetch, purge
from backups_app.offsite.store import OffsiteError
from backups_app.restore import restore
from tests.test_media_restore import tree, write
from tests.test_offsite import (  # noqa: F401
    age_keys,
    body,
    bucket,
    keys,
    live,
    make_backup,
    offsite_on,
    s3,
    s3_env,
    s3_server,
)

pytestmark = [pytest.mark.s3, pytest.mark.django_db]


def objects(s3, bucket):
    return [k for k in keys(s3, bucket) if k.startswith("site-a/media/objects/")]


def sha(content):
    return hashlib.sha256(content).hexdigest()


def test_it_sends_each_content_once_then_the_list_before_the_checksum(
    offsite_on, s3, live, backups_folder, site_media_root
):
    write(site_media_root, "a.txt", b"a")
    write(site_media_root, "copy-of-a.txt", b"a")
    first = make_backup(live, backups_folder, label="manual")
    assert jobs.run_job("copy-offsite").status == CronRun.Status.SUCCESS
    write(site_media_root, "b.txt", b"b")
    second = make_backup(live, backups_folder, label="manual")

    run = jobs.run_job("copy-offsite")

    assert run.status == CronRun.Status.SUCCESS, run.error
    assert objects(s3, offsite_on) == sorted(
        f"site-a/media/objects/{h[:2]}/{h}" for h in (sha(b"a"), sha(b"b"))
    )
    for backup in (first, second):
        stored = body(s3, offsite_on, f"site-a/{backup.name}.media")
        assert stored == lists.list_path(backup.path).read_bytes()
    assert body(s3, offsite_on, f"site-a/media/objects/{sha(b'b')[:2]}/{sha(b'b')}") == b"b"


def test_an_encrypted_copy_round_trips_the_files_each_checked(
    offsite_on, s3, live, backups_folder, site_media_root, settings, tmp_path
):
    public, identity = age_keys(tmp_path)
    settings.STANZA_OFFSITE_AGE_RECIPIENTS = public
    settings.STANZA_OFFSITE_AGE_IDENTITY = str(identity)
    write(site_media_root, "avatars/ann.png", b"ann" * 1000)
    write(site_media_root, "notes.txt", b"notes")
    backup = make_backup(live, backups_folder, label="manual")
    before = tree(site_media_root)
    assert jobs.run_job("copy-offsite").status == CronRun.Status.SUCCESS
    stored = body(s3, offsite_on, f"site-a/media/objects/{sha(b'notes')[:2]}/{sha(b'notes')}.age")
    assert stored.startswith(b"age-encryption.org/v1") and b"notes" not in stored
    assert f"site-a/{backup.name}.media.age" in keys(s3, offsite_on)
    shutil.rmtree(backups_folder / "media")  # the machine lost its store and the files
    shutil.rmtree(site_media_root)

    with fetch.fetched(backup.name) as path:  # what `restore --offsite NAME` does
        entries = lists.read_all(lists.list_path(path))
        result = restore.restore_and_record(path, trigger="command", by="test")

    assert sorted(e.path for e in entries) == [b"avatars/ann.png", b"notes.txt"]
    for content in (b"ann" * 1000, b"notes"):
        h = sha(content)
        assert (backups_folder / "media" / "objects" / h[:2] / h).read_bytes() == content
    assert tree(site_media_root) == before
    assert "site files restored as the backup lists them (2 site files" in result.notes[-1]


def test_a_tampered_object_is_refused_when_fetched(
    offsite_on, s3, live, backups_folder, site_media_root
):
    write(site_media_root, "a.txt", b"a")
    backup = make_backup(live, backups_folder, label="manual")
    assert jobs.run_job("copy-offsite").status == CronRun.Status.SUCCESS
    s3.put_object(
        Bucket=offsite_on, Key=f"site-a/media/objects/{sha(b'a')[:2]}/{sha(b'a')}", Body=b"x"
    )
    shutil.rmtree(backups_folder / "media")

    with (
        pytest.raises(OffsiteError, match="does not match its SHA-256"),
        fetch.fetched(backup.name),
    ):
        pass

    assert not (backups_folder / "media" / "objects" / sha(b"a")[:2] / sha(b"a")).exists()


def test_an_object_that_cannot_be_decrypted_is_refused_with_the_reason(
    offsite_on, s3, live, backups_folder, site_media_root, settings, tmp_path
):
    public, identity = age_keys(tmp_path)
    settings.STANZA_OFFSITE_AGE_RECIPIENTS = public
    settings.STANZA_OFFSITE_AGE_IDENTITY = str(identity)
    write(site_media_root, "a.txt", b"a")
    backup = make_backup(live, backups_folder, label="manual")
    assert jobs.run_job("copy-offsite").status == CronRun.Status.SUCCESS
    key = f"site-a/media/objects/{sha(b'a')[:2]}/{sha(b'a')}.age"
    import pyrage

    other = pyrage.x25519.Identity.generate().to_public()  # encrypted to another key
    s3.put_object(Bucket=offsite_on, Key=key, Body=pyrage.encrypt(b"a", [other]))
    shutil.rmtree(backups_folder / "media")

    with pytest.raises(OffsiteError) as refused, fetch.fetched(backup.name):
        pass

    assert str(refused.value) == (
        f"{key.removeprefix('site-a/')} cannot be decrypted with STANZA_OFFSITE_AGE_IDENTITY: "
        "No matching keys found"
    )
    assert not (backups_folder / "media" / "objects" / sha(b"a")[:2] / sha(b"a")).exists()


def test_another_storage_backend_holds_each_site_file_once_and_gives_it_back(
    offsite_folder, live, backups_folder, site_media_root
):
    write(site_media_root, "a.txt", b"a")
    first = make_backup(live, backups_folder, label="manual")
    assert jobs.run_job("copy-offsite").status == CronRun.Status.SUCCESS
    stored = offsite_folder / "media" / "objects" / sha(b"a")[:2] / sha(b"a")
    inode = stored.stat().st_ino
    make_backup(live, backups_folder, label="manual")

    run = jobs.run_job("copy-offsite")

    assert run.status == CronRun.Status.SUCCESS, run.error
    assert stored.stat().st_ino == inode  # found by the listing under media/objects/: not sent
    shutil.rmtree(backups_folder / "media")
    with fetch.fetched(first.name):
        pass
    assert (backups_folder / "media" / "objects" / sha(b"a")[:2] / sha(b"a")).read_bytes() == b"a"


def test_offsite_retention_removes_the_list_and_the_objects_no_copy_names(
    offsite_on, s3, live, backups_folder, site_media_root
):
    write(site_media_root, "gone.txt", b"only in the old backup")
    write(site_media_root, "kept.txt", b"in both")
    old = make_backup(live, backups_folder, label="manual")
    assert jobs.run_job("copy-offsite").status == CronRun.Status.SUCCESS
    (site_media_root / "gone.txt").unlink()
    time.sleep(1.1)  # S3 times are whole seconds: the second copy must be newer
    new = make_backup(live, backups_folder, label="manual")
    assert jobs.run_job("copy-offsite").status == CronRun.Status.SUCCESS

    removed = purge.purge_old_copies(timezone.now() + timedelta(days=31), 30)

    assert removed == [old.name]
    assert f"site-a/{old.name}.media" not in keys(s3, offsite_on)
    assert f"site-a/{new.name}.media" in keys(s3, offsite_on)
    h = sha(b"in both")
    assert objects(s3, offsite_on) == [f"site-a/media/objects/{h[:2]}/{h}"]
