"""Offsite copies under S3 Object Lock (issue 22), on moto's real S3 server: every object of a
copy is written locked, a delete with the site's own credentials is refused, the purge leaves a
locked copy and says so, and a bucket that cannot lock fails the copy with one line."""

import io
import time
import uuid
from datetime import timedelta

import boto3
import pytest
from botocore.exceptions import ClientError
from django.core.management import call_command
from django.utils import timezone

from backups_app.engine import backups
from backups_app.jobs import jobs
from backups_app.offsite import lock, state
from backups_app.offsite import media as media_offsite
from backups_app.offsite import purge as offsite_purge
from backups_app.offsite import store as offsite_store

pytestmark = [pytest.mark.s3, pytest.mark.django_db]

LOCK_DAYS = 10


@pytest.fixture
def s3(moto_s3, monkeypatch):
    """A client of moto's server with the site's own credentials (the AWS_* the site uses)."""
    for name, value in moto_s3.items():
        monkeypatch.setenv(name, value)
    return boto3.client("s3", endpoint_url=moto_s3["AWS_ENDPOINT_URL"])


@pytest.fixture
def locked_bucket(s3, settings, data_dir):
    name = f"stanza-locked-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=name, ObjectLockEnabledForBucket=True)
    settings.STANZA_OFFSITE_URL = f"s3://{name}/site"
    settings.STANZA_OFFSITE_LOCK_DAYS = LOCK_DAYS
    settings.FILE_UPLOAD_TEMP_DIR = data_dir / "tmp"
    return name


def copies_made(n, backups_folder):
    """`n` backups, each copied offsite at once (a second apart: S3 times are whole seconds)."""
    made = []
    for i in range(n):
        if i:
            time.sleep(1.1)
        made.append(backups.create_backup(label="manual"))
        run = jobs.run_job("copy-offsite")
        assert run.status == "success", run.error
    return made


SUFFIXES = ("", ".json", ".media", ".sha256")  # a copy's objects (the site files aside)


def copy_keys(s3, bucket):
    found = s3.list_objects_v2(Bucket=bucket)["Contents"]
    return sorted(o["Key"] for o in found if not o["Key"].startswith("site/media/"))


def versions(s3, bucket, key):
    answer = s3.list_object_versions(Bucket=bucket, Prefix=key)
    return [v for v in answer.get("Versions", []) if v["Key"] == key]


def test_every_object_of_a_copy_is_written_locked(
    s3, locked_bucket, live_database, backups_folder, settings, site_media_root
):
    settings.STANZA_OFFSITE_LOCK_MODE = "compliance"
    site_media_root.mkdir(parents=True)
    (site_media_root / "photo.jpg").write_bytes(b"a site file")
    (backup,) = copies_made(1, backups_folder)
    written = timezone.now()

    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=locked_bucket)["Contents"])

    copy = [f"site/{backup.name}{s}" for s in ("", ".json", ".media", ".sha256")]
    assert [k for k in keys if not k.startswith("site/media/")] == copy
    assert len([k for k in keys if k.startswith("site/media/objects/")]) == 1  # the site file
    for key in keys:
        head = s3.head_object(Bucket=locked_bucket, Key=key)
        assert head["ObjectLockMode"] == "COMPLIANCE", key
        until = head["ObjectLockRetainUntilDate"]
        assert written + timedelta(days=LOCK_DAYS, minutes=-5) < until, key
        assert until <= written + timedelta(days=LOCK_DAYS), key


def test_a_delete_with_the_sites_credentials_is_refused(
    s3, locked_bucket, live_database, backups_folder
):
    (backup,) = copies_made(1, backups_folder)
    key = f"site/{backup.name}"
    (version,) = versions(s3, locked_bucket, key)

    with pytest.raises(ClientError) as refused:
        s3.delete_object(Bucket=locked_bucket, Key=key, VersionId=version["VersionId"])
    # Without a version the store only hides the object behind a delete marker: the locked
    # data stays.
    s3.delete_object(Bucket=locked_bucket, Key=key)

    assert refused.value.response["Error"]["Code"] == "AccessDenied"
    assert [v["VersionId"] for v in versions(s3, locked_bucket, key)] == [version["VersionId"]]


def test_the_purge_leaves_locked_copies_says_so_and_deletes_them_once_they_are_free(
    s3, locked_bucket, live_database, backups_folder, settings
):
    settings.STANZA_OFFSITE_RETENTION_DAYS = 0
    oldest, middle, newest = copies_made(3, backups_folder)
    soon = timezone.now() + timedelta(days=LOCK_DAYS - 1)

    purged = offsite_purge.purge_old_copies(soon, 0)

    assert purged == []
    assert purged.locked == 2
    assert purged.line == "kept 1 newest; deleted 0; left 2 locked until their retention ends"
    assert len(copy_keys(s3, locked_bucket)) == 12  # 3 copies of 4 objects

    # The bucket's owner ends the lock of the two older copies early (GOVERNANCE allows it
    # with the bypass permission; the store's clock cannot be moved).
    free_at = timezone.now() + timedelta(seconds=2)
    for gone in (oldest, middle):
        for suffix in SUFFIXES:
            for version in versions(s3, locked_bucket, f"site/{gone.name}{suffix}"):
                s3.put_object_retention(
                    Bucket=locked_bucket,
                    Key=version["Key"],
                    VersionId=version["VersionId"],
                    Retention={"Mode": "GOVERNANCE", "RetainUntilDate": free_at},
                    BypassGovernanceRetention=True,
                )
    time.sleep(3)

    purged = offsite_purge.purge_old_copies(timezone.now(), 0)

    assert sorted(purged) == sorted([oldest.name, middle.name])
    assert (purged.locked, purged.line) == (0, "kept 1 newest; deleted 2")
    # The site files' lists of fresh copies are left to the media purge's grace (6 hours).
    lists = [f"site/{gone.name}.media" for gone in (oldest, middle)]
    assert copy_keys(s3, locked_bucket) == sorted(
        lists + [f"site/{newest.name}{s}" for s in SUFFIXES]
    )
    # Deleted means gone: no version of a purged copy's objects is left behind.
    for gone in (oldest, middle):
        for suffix in ("", ".json", ".sha256"):
            assert versions(s3, locked_bucket, f"site/{gone.name}{suffix}") == []
    all_versions = s3.list_object_versions(Bucket=locked_bucket)
    assert "DeleteMarkers" not in all_versions


def test_the_dry_run_shows_the_offsite_decisions_and_the_locked_copies(
    s3, locked_bucket, live_database, backups_folder, settings
):
    settings.STANZA_OFFSITE_RETENTION_DAYS = 0
    settings.STANZA_BACKUP_RETENTION_DAYS = 30
    oldest, middle, newest = copies_made(3, backups_folder)
    before = copy_keys(s3, locked_bucket)
    out = io.StringIO()

    call_command("runjob", "purge-old-backups", "--dry-run", stdout=out)

    lines = out.getvalue().splitlines()
    offsite = lines[lines.index(f"offsite copies in s3://{locked_bucket}/site:") + 1 :]
    assert [line.split()[:2] for line in offsite[:3]] == [
        ["keep", newest.name],
        ["keep", middle.name],
        ["keep", oldest.name],
    ]
    assert offsite[0].endswith("the newest backup")
    assert offsite[1].endswith("under Object Lock: left until its retention ends")
    assert offsite[-1] == (
        "offsite, a purge now would have kept 1 newest; deleted 0; left 2 locked until their "
        "retention ends (dry run: nothing deleted)"
    )
    assert copy_keys(s3, locked_bucket) == before


def test_a_bucket_without_object_lock_fails_the_copy_with_one_line(
    s3, live_database, backups_folder, settings, data_dir
):
    name = f"stanza-plain-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=name)
    settings.STANZA_OFFSITE_URL = f"s3://{name}/site"
    settings.STANZA_OFFSITE_LOCK_DAYS = LOCK_DAYS
    settings.FILE_UPLOAD_TEMP_DIR = data_dir / "tmp"
    backups.create_backup(label="manual")

    run = jobs.run_job("copy-offsite")

    assert run.status == "failure"
    assert run.error_summary.endswith(
        f"bucket {name} has no Object Lock, which STANZA_OFFSITE_LOCK_DAYS needs: use a bucket "
        "created with Object Lock enabled, or set STANZA_OFFSITE_LOCK_DAYS=0"
    )
    assert "Contents" not in s3.list_objects_v2(Bucket=name)  # nothing written unlocked


def test_without_the_setting_nothing_is_locked(s3, live_database, backups_folder, settings):
    name = f"stanza-plain-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=name)
    settings.STANZA_OFFSITE_URL = f"s3://{name}/site"
    (backup,) = copies_made(1, backups_folder)

    head = s3.head_object(Bucket=name, Key=f"site/{backup.name}")

    assert "ObjectLockMode" not in head
    assert lock.put_args() == {}


def site_file_key(s3, bucket):
    (key,) = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="site/media/")["Contents"]]
    return key


def test_a_copy_that_reuses_a_site_file_extends_its_lock_so_a_delete_stays_refused(
    s3, locked_bucket, live_database, backups_folder, site_media_root
):
    site_media_root.mkdir(parents=True)
    (site_media_root / "photo.jpg").write_bytes(b"a site file in every backup")
    copies_made(1, backups_folder)
    key = site_file_key(s3, locked_bucket)
    (version,) = versions(s3, locked_bucket, key)
    # The first copy's lock on it runs out (the bucket's owner ends it early: moto's clock
    # cannot be moved).
    s3.put_object_retention(
        Bucket=locked_bucket,
        Key=key,
        VersionId=version["VersionId"],
        Retention={"Mode": "GOVERNANCE", "RetainUntilDate": timezone.now() + timedelta(seconds=1)},
        BypassGovernanceRetention=True,
    )
    time.sleep(2)

    copies_made(1, backups_folder)  # names the same content: not sent again
    copied = timezone.now()

    assert len(versions(s3, locked_bucket, key)) == 1  # not sent again
    until = s3.head_object(Bucket=locked_bucket, Key=key)["ObjectLockRetainUntilDate"]
    # Extended past what this copy needs, by a week, so the next copies need no request.
    assert copied + timedelta(days=LOCK_DAYS) < until
    assert until <= copied + timedelta(days=LOCK_DAYS) + lock.MARGIN
    with pytest.raises(ClientError) as refused:
        s3.delete_object(Bucket=locked_bucket, Key=key, VersionId=version["VersionId"])
    assert refused.value.response["Error"]["Code"] == "AccessDenied"


def test_a_reused_object_retained_long_enough_costs_no_request_and_is_never_shortened(
    s3, locked_bucket, live_database, backups_folder, site_media_root, tmp_path
):
    site_media_root.mkdir(parents=True)
    (site_media_root / "photo.jpg").write_bytes(b"a site file in every backup")
    copies_made(1, backups_folder)
    key = site_file_key(s3, locked_bucket)
    far = (timezone.now() + timedelta(days=100)).replace(microsecond=0)
    s3.put_object_retention(  # the owner keeps it longer than any copy would
        Bucket=locked_bucket, Key=key, Retention={"Mode": "GOVERNANCE", "RetainUntilDate": far}
    )

    copies_made(1, backups_folder)  # recorded as retained 10 days: read, found longer, kept
    requests_before = (tmp_path / "moto.log").read_text().count(f"/{locked_bucket}/{key}")
    copies_made(1, backups_folder)  # recorded as retained 100 days: nothing to ask
    log = (tmp_path / "moto.log").read_text()

    assert s3.head_object(Bucket=locked_bucket, Key=key)["ObjectLockRetainUntilDate"] == far
    assert log.count(f"/{locked_bucket}/{key}") == requests_before
    assert requests_before > 0  # the log does show the requests on it


def test_the_purge_leaves_a_site_file_until_its_recorded_retention_ends(
    s3, locked_bucket, live_database, backups_folder, site_media_root
):
    site_media_root.mkdir(parents=True)
    (site_media_root / "photo.jpg").write_bytes(b"a site file")
    (backup,) = copies_made(1, backups_folder)
    key = site_file_key(s3, locked_bucket)
    # No list names it any more, and the store would let it go (the owner ended its lock early:
    # moto's clock cannot be moved); the copy recorded it as retained for 10 days.
    for name in (f"site/{backup.name}.media", key):
        for version in versions(s3, locked_bucket, name):
            if name == key:
                s3.put_object_retention(
                    Bucket=locked_bucket,
                    Key=name,
                    VersionId=version["VersionId"],
                    Retention={
                        "Mode": "GOVERNANCE",
                        "RetainUntilDate": timezone.now() + timedelta(seconds=1),
                    },
                    BypassGovernanceRetention=True,
                )
            else:
                s3.delete_object(
                    Bucket=locked_bucket,
                    Key=name,
                    VersionId=version["VersionId"],
                    BypassGovernanceRetention=True,
                )
    time.sleep(2)
    store = offsite_store.storage()

    left = media_offsite.purge(store, set(), timezone.now() + timedelta(hours=7))
    gone = media_offsite.purge(store, set(), timezone.now() + timedelta(days=LOCK_DAYS, hours=1))

    assert (left, gone) == (0, 1)
    assert versions(s3, locked_bucket, key) == []
    assert key.removeprefix("site/") not in state.locked_until()
