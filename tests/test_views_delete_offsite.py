"""Deleting a backup's offsite copy too (issue 19 item 6), against moto's real S3 server: the
delete page offers it (off by default) where the jobs recorded a copy and Object Lock allows,
says "locked until" where it does not, and the POST deletes the local backup at once while the
offsite copy goes in a recorded background run; a hung store never delays the answer."""

import re
import threading
import time
import uuid
from datetime import timedelta

import boto3
import pytest
from django.contrib.admin.models import LogEntry
from django.utils import timezone

from backups_app.engine import backups
from backups_app.jobs import actions, jobs
from backups_app.models import CronRun
from backups_app.offsite import state
from tests.conftest import moto_server
from tests.test_offsite_request_path import record_copies

pytestmark = [pytest.mark.s3, pytest.mark.django_db(transaction=True)]

TICK = {"delete_offsite": "on"}


@pytest.fixture(scope="module")
def moto(tmp_path_factory):
    with moto_server(tmp_path_factory.mktemp("moto")) as env:
        yield env


@pytest.fixture
def s3(moto, monkeypatch):
    for name, value in moto.items():
        monkeypatch.setenv(name, value)
    return boto3.client("s3", endpoint_url=moto["AWS_ENDPOINT_URL"])


def offsite_to(settings, data_dir, bucket):
    settings.STANZA_OFFSITE_URL = f"s3://{bucket}/site"
    settings.FILE_UPLOAD_TEMP_DIR = data_dir / "tmp"


@pytest.fixture
def two_copies(s3, settings, data_dir, live_database, backups_folder, site_media_root):
    """Two backups (with a site file each), both copied to a plain bucket by copy-offsite."""
    bucket = f"stanza-delete-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    offsite_to(settings, data_dir, bucket)
    site_media_root.mkdir(parents=True)
    made = []
    for n in range(2):
        (site_media_root / f"photo-{n}.jpg").write_bytes(b"a site file %d" % n)
        made.append(backups.create_backup(label="manual").name)
        time.sleep(1.1)  # a second apart: names and S3 times are whole seconds
    run = jobs.run_job("copy-offsite")
    assert run.status == "success", run.error
    return bucket, made


class Started(list):
    """The background runs a page started (threads), each held until `release()`."""

    def __init__(self):
        super().__init__()
        self.go = threading.Event()

    def release(self):
        self.go.set()


@pytest.fixture
def started(monkeypatch):
    """The background runs the page starts (the real ones), to wait for them. Each is held
    until the test has its answer: the test database (in memory, one shared cache) takes one
    thread at a time, and a run that recorded itself while the request still wrote its own rows
    met "database table is locked" (a file database waits its busy timeout instead)."""
    threads = Started()
    real_soon, real_run = actions.delete_offsite_soon, actions._delete_offsite

    def held(*args):
        threads.go.wait(60)
        real_run(*args)

    def soon(*args):
        threads.append(real_soon(*args))
        return threads[-1]

    monkeypatch.setattr(actions, "_delete_offsite", held)
    monkeypatch.setattr(actions, "delete_offsite_soon", soon)
    return threads


def keys(s3, bucket):
    found = s3.list_objects_v2(Bucket=bucket).get("Contents", [])
    return sorted(item["Key"] for item in found)


def messages_of(response):
    return [str(m) for m in response.context["messages"]]


def url(name):
    return f"/admin/backups/delete/{name}"


def test_it_offers_to_delete_the_offsite_copy_unticked(staff_client, two_copies):
    _bucket, (old, _new) = two_copies

    html = staff_client.get(url(old)).content.decode()

    box = re.search(r'<input type="checkbox" name="delete_offsite"[^>]*>', html)
    assert box and "checked" not in box.group(0)
    assert "Also delete its offsite copy" in html
    assert 'It stays unless you tick "Also delete its offsite copy" below' in html
    assert "was confirmed <time" in html  # the one time format


def test_the_post_deletes_the_local_backup_at_once_and_the_copy_in_the_background(
    staff_client, staff_user, two_copies, backups_folder, s3, started
):
    bucket, (old, new) = two_copies
    before = keys(s3, bucket)
    assert f"site/{old}.sha256" in before

    answer = staff_client.post(url(old), TICK)
    (thread,) = started
    started.release()
    thread.join(60)  # before the page is read: the test database takes one thread at a time
    response = staff_client.get(answer.url)

    assert not (backups_folder / old).exists()
    (message,) = messages_of(response)
    assert message.startswith(f"Deleted {old} (")
    assert f"Its offsite copy in s3://{bucket}/site is being deleted in the background" in message
    after = keys(s3, bucket)
    assert [k for k in after if k.startswith(f"site/{old}")] == []
    assert [k for k in before if k.startswith(f"site/{new}")] == [
        k for k in after if k.startswith(f"site/{new}")
    ]
    assert old not in state.recorded().copies and new in state.recorded().copies
    run = CronRun.objects.get(job_name="delete-offsite")
    assert run.status == CronRun.Status.SUCCESS, run.error
    assert run.result == f"deleted the offsite copy of {old} from s3://{bucket}/site"
    assert run.trigger == f"admin:{staff_user.get_username()}"
    run_page = staff_client.get(f"/admin/cron/runs/{run.pk}/").content.decode()
    assert f"by {staff_user.get_username()} from the Backups page" in run_page
    lines = list(LogEntry.objects.order_by("id").values_list("change_message", flat=True))
    assert lines[-2].startswith(f"Deleted backup {old} (")
    where = f"s3://{bucket}/site"
    assert lines[-2].endswith(f"; deleting its offsite copy in {where} in the background")
    assert lines[-1] == f"Deleted the offsite copy of {old} from s3://{bucket}/site"
    # Not listed under "Only offsite" on the Backups page.
    page = staff_client.get("/admin/backups/").content.decode().replace("<wbr>", "")
    assert 'id="offsite-only"' not in page  # the list is empty


def test_without_the_tick_the_offsite_copy_stays(staff_client, two_copies, s3, started):
    bucket, (old, _new) = two_copies

    response = staff_client.post(url(old), follow=True)

    assert started == []
    assert messages_of(response)[0].endswith(
        "Its offsite copy, if one was made, stays in the offsite store."
    )
    assert f"site/{old}.sha256" in keys(s3, bucket)


def test_an_api_client_is_told_the_copy_is_being_deleted(staff_client, two_copies, started):
    _bucket, (old, _new) = two_copies

    response = staff_client.post(url(old), TICK, HTTP_ACCEPT="application/json")
    started.release()
    started[0].join(60)

    assert response.json() == {"deleted": old, "offsite": "deleting"}


def test_a_locked_copy_is_not_offered_and_says_until_when(
    staff_client, s3, settings, data_dir, live_database, backups_folder, started
):
    bucket = f"stanza-locked-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
    offsite_to(settings, data_dir, bucket)
    settings.STANZA_OFFSITE_LOCK_DAYS = 10
    old = backups.create_backup(label="manual").name
    time.sleep(1.1)
    backups.create_backup(label="manual")
    assert jobs.run_job("copy-offsite").status == "success"
    copied = state.recorded().copies[old].copied

    html = staff_client.get(url(old)).content.decode()
    # A forged tick changes nothing: the copy is not deletable.
    response = staff_client.post(url(old), TICK, follow=True)

    assert 'name="delete_offsite"' not in html
    until = re.search(r'<strong id="offsite-locked">locked until (.*?)</strong>', html).group(1)
    assert f'datetime="{(copied + timedelta(days=10)).isoformat()}"' in until
    assert "the site's credentials cannot delete it before then" in html
    assert started == []
    assert messages_of(response)[0].endswith("stays in the offsite store.")
    assert f"site/{old}.sha256" in keys(s3, bucket)


def test_a_copy_whose_lock_has_ended_is_offered(
    staff_client, settings, data_dir, backups_folder, time_machine
):
    settings.STANZA_OFFSITE_URL = "s3://stanza-bucket/site"
    settings.STANZA_OFFSITE_LOCK_DAYS = 10
    name = "database.sqlite.20261101T020000Z.bak"
    for other in (name, "database.sqlite.20261102T020000Z.bak"):
        (backups_folder / other).write_bytes(b"x")
    time_machine.move_to(timezone.now() - timedelta(days=11), tick=False)
    record_copies((name, f"site/{name}", 1))  # copied (and locked for 10 days) 11 days ago
    time_machine.move_to(timezone.now() + timedelta(days=11), tick=False)

    html = staff_client.get(url(name)).content.decode()

    assert 'name="delete_offsite"' in html
    assert "locked until" not in html


def test_a_hung_store_does_not_delay_the_answer(
    staff_client, settings, data_dir, backups_folder, hanging_store, started
):
    settings.STANZA_OFFSITE_URL = "s3://stanza-hung/site"
    settings.FILE_UPLOAD_TEMP_DIR = data_dir / "tmp"
    name = "database.sqlite.20261201T020000Z.bak"
    for other in (name, "database.sqlite.20261202T020000Z.bak"):
        (backups_folder / other).write_bytes(b"x")
    record_copies((name, f"site/{name}", 1))  # what the last copy-offsite run saw

    began = time.monotonic()
    response = staff_client.post(url(name), TICK)
    answered = time.monotonic() - began
    (thread,) = started
    started.release()
    thread.join(120)

    assert response.status_code == 302
    assert not (backups_folder / name).exists()
    # The store's wait is bounded (about 20 s: two tries of 10 s); the answer took none of it.
    assert answered < 5, f"{answered:.1f} s"
    assert hanging_store.accepted  # the background run did meet the store
    run = CronRun.objects.get(job_name="delete-offsite")
    assert run.status == CronRun.Status.FAILURE
    assert "did not answer within" in run.error_summary
    line = LogEntry.objects.order_by("id").last().change_message
    assert line.startswith(f"Could not delete the offsite copy of {name}: the offsite store at ")
    assert "Traceback" not in line and "Error" not in line
