"""Offsite copies against a real S3 API: moto's server on loopback, real boto3, django-storages."""

import contextlib
import hashlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from datetime import timedelta
from pathlib import Path

import boto3
import pytest
from django.utils import timezone

from backups_app.engine import backups
from backups_app.health import alerts, health
from backups_app.jobs import jobs
from backups_app.models import CronRun
from backups_app.offsite import copies, fetch, purge, upload
from backups_app.offsite import store as offsite_store
from backups_app.offsite.store import OffsiteError
from tests.conftest import (
    count_rows,
    make_database,
    make_large_database,
    manage,
    read_runs,
    write_backup_file,
)

pytestmark = pytest.mark.s3

AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """moto's S3 server as a real subprocess on a free loopback port; its endpoint URL."""
    yield from run_moto(tmp_path_factory.mktemp("moto"))


@pytest.fixture(scope="module")
def checking_s3_server(tmp_path_factory):
    """A moto server that checks credentials (it knows none, so every key is wrong)."""
    yield from run_moto(tmp_path_factory.mktemp("moto-auth"), INITIAL_NO_AUTH_ACTION_COUNT="0")


def run_moto(folder, **env):
    port = free_port()
    log = folder / "moto.log"
    moto = Path(sys.executable).with_name("moto_server")
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [str(moto), "-H", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=out,
            env={**os.environ, **env},
        )
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                pytest.fail(f"moto_server did not start: {log.read_text()[-2000:]}")
            time.sleep(0.1)
    yield f"http://127.0.0.1:{port}"
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture
def s3_env(s3_server, monkeypatch):
    """The AWS_* variables pointing boto3 at the moto server (AWS_CA_BUNDLE stays as set)."""
    env = {**AWS_ENV, "AWS_ENDPOINT_URL": s3_server}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


@pytest.fixture
def s3(s3_env):
    return boto3.client("s3", endpoint_url=s3_env["AWS_ENDPOINT_URL"])


@pytest.fixture
def bucket(s3):
    name = f"stanza-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    return name


@pytest.fixture
def offsite_on(settings, bucket, data_dir):
    settings.STANZA_OFFSITE_URL = f"s3://{bucket}/site-a"
    settings.FILE_UPLOAD_TEMP_DIR = data_dir / "tmp"
    return bucket


def keys(s3, bucket, prefix="site-a/"):
    found = s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])
    return sorted(item["Key"] for item in found)


def body(s3, bucket, key):
    return s3.get_object(Bucket=bucket, Key=key)["Body"].read()


@pytest.fixture
def live(data_dir):
    return make_database(data_dir / "database.sqlite", rows=2000)


def make_backup(live, folder, age=None, **kwargs):
    backup = backups.create_backup(live, folder=folder, **kwargs)
    if age is not None:
        when = time.time() - age.total_seconds()
        os.utime(backup.path, (when, when))
    return backups.get_backup(backup.name, folder)


def age_keys(tmp_path):
    from pyrage import x25519

    identity = x25519.Identity.generate()
    path = tmp_path / "offsite.key"
    path.write_text(f"# created: now\n# public key: {identity.to_public()}\n{identity}\n")
    return str(identity.to_public()), path


# --- copying ------------------------------------------------------------------------------


@pytest.mark.django_db
def test_it_copies_every_backup_with_its_sidecars_and_is_idempotent(
    offsite_on, s3, live, backups_folder
):
    older = make_backup(live, backups_folder, age=timedelta(hours=3))
    newer = make_backup(live, backups_folder, label="manual")

    run = jobs.run_job("copy-offsite")

    assert run.status == CronRun.Status.SUCCESS, run.error
    assert run.result.startswith("copied 2 backups (")
    names = [older.name, newer.name]
    assert keys(s3, offsite_on) == sorted(
        f"site-a/{n}{s}" for n in names for s in ("", ".json", ".media", ".sha256")
    )
    for backup in (older, newer):
        assert body(s3, offsite_on, f"site-a/{backup.name}") == backup.path.read_bytes()
        sidecar = backup.path.with_name(backup.name + ".sha256").read_bytes()
        assert body(s3, offsite_on, f"site-a/{backup.name}.sha256") == sidecar
    listed = copies.list_copies()
    assert all(listed[n].complete for n in names)

    again = jobs.run_job("copy-offsite")

    assert again.status == CronRun.Status.SUCCESS
    assert again.result.startswith("copied 0 backups (") and "2 already there" in again.result


@pytest.mark.django_db
def test_it_copies_oldest_first_and_resumes_a_copy_that_stopped_half_way(
    offsite_on, s3, live, backups_folder, monkeypatch
):
    first = make_backup(live, backups_folder, age=timedelta(hours=2))
    second = make_backup(live, backups_folder)
    # A run that died after the data but before its .sha256: not offsite.
    s3.put_object(Bucket=offsite_on, Key=f"site-a/{first.name}", Body=b"half")
    order = []
    real = upload.copy_backup
    monkeypatch.setattr(
        upload, "copy_backup", lambda b, **kw: order.append(b.name) or real(b, **kw)
    )

    run = jobs.run_job("copy-offsite")

    assert run.status == CronRun.Status.SUCCESS, run.error
    assert order == [first.name, second.name]
    assert body(s3, offsite_on, f"site-a/{first.name}") == first.path.read_bytes()


@pytest.mark.django_db
def test_it_uploads_in_parts_each_confirmed_and_leaves_no_upload_open(
    offsite_on, s3, data_dir, backups_folder, monkeypatch
):
    monkeypatch.setattr(offsite_store, "PART_SIZE", 5 * 1024 * 1024)  # S3's smallest part
    big = make_large_database(data_dir / "database.sqlite", 12)
    backup = make_backup(big, backups_folder)

    run = jobs.run_job("copy-offsite")

    assert run.status == CronRun.Status.SUCCESS, run.error
    head = s3.head_object(Bucket=offsite_on, Key=f"site-a/{backup.name}", ChecksumMode="ENABLED")
    assert head["ContentLength"] == backup.size
    assert body(s3, offsite_on, f"site-a/{backup.name}") == backup.path.read_bytes()
    assert not s3.list_multipart_uploads(Bucket=offsite_on).get("Uploads")


class CuttableProxy:
    """A TCP proxy in front of moto's server that cuts: once `cut_after` bytes went up, it
    closes every connection and answers none again (the store went away mid-upload)."""

    def __init__(self, upstream, cut_after):
        self.upstream, self.cut_after = upstream, cut_after
        self.sent, self.cut, self.sockets = 0, False, []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self.cut:
                client.close()
                continue
            server = socket.create_connection(self.upstream)
            self.sockets += [client, server]
            threading.Thread(target=self.pump, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self.pump, args=(server, client, False), daemon=True).start()

    def pump(self, source, dest, up):
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                if up:
                    self.sent += len(data)
                    if self.sent > self.cut_after:
                        self.cut = True
                        for sock in self.sockets:
                            with contextlib.suppress(OSError):
                                sock.shutdown(socket.SHUT_RDWR)
                        return
                dest.sendall(data)

    def close(self):
        self.listener.close()
        for sock in self.sockets:
            sock.close()


@pytest.mark.django_db
def test_an_upload_the_store_cut_is_aborted_by_the_next_run(
    offsite_on, s3, s3_server, data_dir, backups_folder, monkeypatch
):
    monkeypatch.setattr(offsite_store, "PART_SIZE", 5 * 1024 * 1024)  # S3's smallest part
    backup = make_backup(make_large_database(data_dir / "database.sqlite", 12), backups_folder)
    foreign = s3.create_multipart_upload(Bucket=offsite_on, Key="site-a/notes.txt")["UploadId"]
    port = int(s3_server.rsplit(":", 1)[1])
    proxy = CuttableProxy(("127.0.0.1", port), cut_after=7 * 1024 * 1024)
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)

    cut = jobs.run_job("copy-offsite")
    proxy.close()

    assert cut.status == CronRun.Status.FAILURE and proxy.cut
    assert "closed the connection while trying to store" in cut.error_summary
    left = s3.list_multipart_uploads(Bucket=offsite_on)["Uploads"]
    assert sorted(u["Key"] for u in left) == sorted(["site-a/notes.txt", f"site-a/{backup.name}"])
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server)  # the store is back
    monkeypatch.setattr(upload, "STALE_UPLOAD_AGE", timedelta(0))  # as if an hour had passed

    again = jobs.run_job("copy-offsite")

    assert again.status == CronRun.Status.SUCCESS, again.error
    assert "aborted 1 unfinished upload" in again.result
    [still] = s3.list_multipart_uploads(Bucket=offsite_on)["Uploads"]  # not ours: left alone
    assert (still["Key"], still["UploadId"]) == ("site-a/notes.txt", foreign)
    assert body(s3, offsite_on, f"site-a/{backup.name}") == backup.path.read_bytes()


@pytest.mark.django_db
def test_finding_one_copy_is_one_request_for_its_own_objects(offsite_on, s3, live, backups_folder):
    made = [make_backup(live, backups_folder, age=timedelta(hours=h)) for h in (3, 2, 1)]
    jobs.run_job("copy-offsite")
    client = offsite_store.storage().client
    sent = []

    def count(params, **kwargs):
        sent.append(params)

    client.meta.events.register("before-call.s3", count)
    try:
        copy = copies.find_copy(made[1].name)
    finally:
        client.meta.events.unregister("before-call.s3", count)

    assert copy.name == made[1].name and copy.complete
    assert len(sent) == 1
    assert sent[0]["query_string"]["prefix"] == f"site-a/{made[1].name}"


@pytest.mark.django_db
def test_a_backup_that_does_not_match_its_checksum_is_not_copied(
    offsite_on, s3, live, backups_folder
):
    good = make_backup(live, backups_folder, age=timedelta(hours=1))
    bad = write_backup_file(backups_folder, "database.sqlite.20261101T000000Z.bak", b"x" * 100)
    bad.with_name(bad.name + ".sha256").write_text("0" * 64 + f"  {bad.name}\n")

    run = jobs.run_job("copy-offsite")

    assert run.status == CronRun.Status.FAILURE
    assert bad.name in run.error_summary and ".sha256" in run.error_summary
    assert not [k for k in keys(s3, offsite_on) if bad.name in k]
    assert copies.list_copies()[good.name].complete
    assert not s3.list_multipart_uploads(Bucket=offsite_on).get("Uploads")


@pytest.mark.django_db
def test_the_store_down_fails_the_run_in_one_line_and_leaves_the_backup_alone(
    offsite_on, live, backups_folder, monkeypatch
):
    backup = make_backup(live, backups_folder)
    before = backup.path.read_bytes()
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")  # nothing listens

    run = jobs.run_job("copy-offsite")

    assert run.status == CronRun.Status.FAILURE
    summary = run.error_summary
    assert summary.startswith("the offsite store at http://127.0.0.1:")  # no class name
    assert "unreachable" in summary and "\n" not in summary
    assert backup.path.read_bytes() == before
    assert backups.list_backups(backups_folder)[0].name == backup.name


@pytest.mark.django_db
def test_a_missing_bucket_is_a_refusal_in_one_line(settings, s3_env, live, backups_folder):
    settings.STANZA_OFFSITE_URL = "s3://no-such-bucket-here/site"
    make_backup(live, backups_folder)

    run = jobs.run_job("copy-offsite")

    assert run.status == CronRun.Status.FAILURE
    assert "refused" in run.error_summary and "NoSuchBucket" in run.error_summary


@pytest.mark.django_db
def test_a_wrong_key_is_a_refusal_in_one_line(
    offsite_on, checking_s3_server, live, backups_folder, monkeypatch
):
    monkeypatch.setenv("AWS_ENDPOINT_URL", checking_s3_server)
    backup = make_backup(live, backups_folder)

    run = jobs.run_job("copy-offsite")

    assert run.status == CronRun.Status.FAILURE
    assert "refused" in run.error_summary and "InvalidAccessKeyId" in run.error_summary
    assert backups.get_backup(backup.name, backups_folder).size == backup.size


@pytest.mark.django_db
def test_a_failing_copy_is_mailed_to_the_admins(
    offsite_on, live, backups_folder, monkeypatch, settings, mailoutbox
):
    settings.STANZA_ALERT_EMAILS = ["ops@example.com"]
    make_backup(live, backups_folder)
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")

    jobs.run_job("copy-offsite")

    assert len(mailoutbox) == 1
    assert "copy-offsite" in mailoutbox[0].subject
    assert "unreachable" in mailoutbox[0].body


def test_the_job_is_registered_only_when_offsite_copies_are_on(settings, data_dir, bucket):
    assert "copy-offsite" not in jobs.registry()
    settings.STANZA_OFFSITE_URL = f"s3://{bucket}/x"
    settings.STANZA_OFFSITE_SCHEDULE = "*/5 * * * *"

    job = jobs.registry()["copy-offsite"]

    assert job.schedule == "*/5 * * * *"


@pytest.mark.django_db
def test_another_django_storages_backend_works_through_the_storages_alias(
    offsite_folder, live, backups_folder
):
    """Any storage: the copy is read back and hashed, since it has no checksum on upload."""
    backup = make_backup(live, backups_folder)

    run = jobs.run_job("copy-offsite")

    assert run.status == CronRun.Status.SUCCESS, run.error
    assert (offsite_folder / backup.name).read_bytes() == backup.path.read_bytes()
    assert copies.list_copies()[backup.name].complete


# --- encryption ---------------------------------------------------------------------------


@pytest.mark.django_db
def test_an_encrypted_round_trip(offsite_on, s3, live, backups_folder, settings, tmp_path):
    public, identity = age_keys(tmp_path)
    settings.STANZA_OFFSITE_AGE_RECIPIENTS = public
    backup = make_backup(live, backups_folder)
    plain = backup.path.read_bytes()

    run = jobs.run_job("copy-offsite")

    assert run.status == CronRun.Status.SUCCESS, run.error
    assert keys(s3, offsite_on) == sorted(
        f"site-a/{backup.name}{s}" for s in (".age", ".json", ".media.age", ".sha256")
    )
    stored = body(s3, offsite_on, f"site-a/{backup.name}.age")
    assert stored.startswith(b"age-encryption.org/v1") and plain[:100] not in stored
    checksum = body(s3, offsite_on, f"site-a/{backup.name}.sha256").decode()
    assert checksum.split()[0] == hashlib.sha256(plain).hexdigest()
    # Without the identity the copy cannot be read back, and says so.
    with (
        pytest.raises(OffsiteError, match="STANZA_OFFSITE_AGE_IDENTITY"),
        fetch.fetched(backup.name),
    ):
        pass

    settings.STANZA_OFFSITE_AGE_IDENTITY = str(identity)
    with fetch.fetched(backup.name) as path:
        assert path.read_bytes() == plain
        assert backups.read_checksum(path) == hashlib.sha256(plain).hexdigest()
    assert not list((tmp_path / "data" / "tmp").iterdir())  # the fetch cleans up


@pytest.mark.django_db
def test_a_tampered_copy_is_refused_when_fetched(offsite_on, s3, live, backups_folder):
    backup = make_backup(live, backups_folder)
    jobs.run_job("copy-offsite")
    s3.put_object(Bucket=offsite_on, Key=f"site-a/{backup.name}", Body=b"SQLite format 3\x00junk")

    with (
        pytest.raises(OffsiteError, match="does not match its .sha256"),
        fetch.fetched(backup.name),
    ):
        pass


@pytest.mark.django_db
@pytest.mark.parametrize("manifest", [b"[1, 2]", b"not json", b'"a string"'])
def test_a_copy_whose_json_is_not_an_object_is_still_fetched_back(
    offsite_on, s3, live, backups_folder, manifest
):
    """NAME.json in the store is only a record: a foreign or hand-edited one is ignored."""
    backup = make_backup(live, backups_folder)
    jobs.run_job("copy-offsite")
    s3.put_object(Bucket=offsite_on, Key=f"site-a/{backup.name}.json", Body=manifest)
    for path in (backup.path, *backups.sidecars(backup.path)):
        path.unlink()

    fetched = fetch.fetch_into_backups(backup.name)

    assert fetched.name == backup.name
    assert backups.read_checksum(fetched.path) == backups.sha256_of(fetched.path)
    assert fetch.stored_manifest(offsite_store.storage(), backup.name) == {}


# --- settings -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, value",
    [
        ("STANZA_OFFSITE_URL", "https://bucket/prefix"),
        ("STANZA_OFFSITE_URL", "s3://Bad_Bucket/x"),
        ("STANZA_OFFSITE_URL", "s3:///prefix"),
        ("STANZA_OFFSITE_SCHEDULE", "every 15 minutes"),
        ("STANZA_OFFSITE_RETENTION_DAYS", "-3"),
        ("STANZA_OFFSITE_AGE_RECIPIENTS", "age1notakey"),
        ("STANZA_OFFSITE_AGE_IDENTITY", "/no/such/identity"),
    ],
)
def test_a_bad_offsite_setting_stops_start_up_with_one_line(tmp_path, name, value):
    env = {"STANZA_DATA_DIR": str(tmp_path / "data"), "DJANGO_SECRET_KEY": "test", name: value}

    result = manage("check", env=env)

    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    [line] = result.stderr.strip().splitlines()
    assert name in line


def test_an_identity_file_that_holds_no_key_is_refused_without_quoting_it(tmp_path):
    identity = tmp_path / "key.txt"
    identity.write_text("AGE-SECRET-KEY-1NOTREALLYASECRETBUTLOOKSLIKEONE\n")
    env = {
        "STANZA_DATA_DIR": str(tmp_path / "data"),
        "DJANGO_SECRET_KEY": "test",
        "STANZA_OFFSITE_AGE_IDENTITY": str(identity),
    }

    result = manage("check", env=env)

    [line] = result.stderr.strip().splitlines()
    assert "STANZA_OFFSITE_AGE_IDENTITY" in line and "line 1" in line
    assert "NOTREALLY" not in line


# --- health -------------------------------------------------------------------------------


@pytest.mark.django_db
def test_health_says_offsite_copy_behind_after_an_hour_without_a_copy(
    offsite_on, live, backups_folder
):
    backup = make_backup(live, backups_folder, age=timedelta(minutes=30))
    assert "offsite copy behind" not in health.problems()

    make_backup(live, backups_folder, age=timedelta(hours=2))  # not the newest
    when = time.time() - 3 * 3600 + 60
    os.utime(backup.path, (when, when))  # the newest, made 3 hours ago, not offsite
    assert "offsite copy behind" in health.problems()

    jobs.run_job("copy-offsite")

    assert "offsite copy behind" not in health.problems()


@pytest.mark.django_db
def test_health_counts_a_store_that_is_down_as_behind(
    offsite_on, live, backups_folder, monkeypatch
):
    make_backup(live, backups_folder, age=timedelta(hours=2))
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")

    assert "offsite copy behind" in health.problems()


@pytest.mark.django_db
def test_offsite_copy_behind_is_mailed_once_and_its_recovery_once(
    offsite_on, live, backups_folder, settings, mailoutbox
):
    settings.STANZA_ALERT_EMAILS = ["ops@example.com"]
    make_backup(live, backups_folder, age=timedelta(hours=2))

    alerts.check_lateness()
    alerts.check_lateness()  # still behind: no second email

    behind = [m for m in mailoutbox if "offsite" in m.subject]
    assert [m.subject for m in behind] == [
        "[Stanza Backups] offsite is failing: offsite copy behind"
    ]
    assert "copy-offsite run on the Cron page" in behind[0].body
    assert behind[0].to == ["ops@example.com"]

    jobs.run_job("copy-offsite")
    alerts.check_lateness()

    behind = [m for m in mailoutbox if "offsite" in m.subject]
    assert behind[-1].subject == "[Stanza Backups] offsite recovered"


# --- retention ----------------------------------------------------------------------------


@pytest.mark.django_db
def test_retention_purges_old_copies_never_the_newest_nor_foreign_objects(
    offsite_on, s3, live, backups_folder
):
    old = make_backup(live, backups_folder, age=timedelta(hours=2))
    jobs.run_job("copy-offsite")
    time.sleep(1.1)  # S3 times are whole seconds: the second copy must be newer
    new = make_backup(live, backups_folder)
    jobs.run_job("copy-offsite")
    s3.put_object(Bucket=offsite_on, Key="site-a/notes.txt", Body=b"mine")
    s3.put_object(Bucket=offsite_on, Key="site-a/database.sqlite.bak", Body=b"not a backup name")
    s3.put_object(Bucket=offsite_on, Key="site-b/" + old.name, Body=b"another prefix")
    now = timezone.now()

    assert purge.purge_old_copies(now, 30) == []  # young copies stay

    removed = purge.purge_old_copies(now + timedelta(days=31), 30)

    assert removed == [old.name]
    assert keys(s3, offsite_on, "") == sorted(
        ["site-a/notes.txt", "site-a/database.sqlite.bak", "site-b/" + old.name]
        + [f"site-a/{new.name}{s}" for s in ("", ".json", ".media", ".sha256")]
    )
    assert purge.purge_old_copies(now + timedelta(days=400), 0) == []  # the newest stays


@pytest.mark.django_db
def test_retention_keeps_the_newest_copy_of_the_sites_own_backups_after_an_upload(
    offsite_on, s3, live, backups_folder
):
    """As local retention: a later upload is the newest copy, and the site's own newest stays
    too, or the store would hold nothing of the site's own for the offsite drill."""
    own = make_backup(live, backups_folder, age=timedelta(hours=2))
    jobs.run_job("copy-offsite")
    time.sleep(1.1)  # S3 times are whole seconds: the upload's copy must be newer
    uploaded = make_backup(live, backups_folder, label="uploaded")
    jobs.run_job("copy-offsite")

    assert purge.purge_old_copies(timezone.now() + timedelta(days=400), 0) == []
    assert set(copies.list_copies()) == {own.name, uploaded.name}


@pytest.mark.django_db
def test_purge_old_backups_also_purges_offsite_and_says_so(
    offsite_on, s3, live, backups_folder, settings
):
    make_backup(live, backups_folder)
    jobs.run_job("copy-offsite")
    settings.STANZA_OFFSITE_RETENTION_DAYS = 0

    run = jobs.run_job("purge-old-backups")

    assert run.status == CronRun.Status.SUCCESS, run.error
    assert run.result.endswith("; offsite: kept 1 newest; deleted 0")


# --- the drill ----------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_drill_also_proves_the_newest_offsite_copy(
    offsite_on, s3, live, backups_folder, settings, tmp_path
):
    public, identity = age_keys(tmp_path)
    settings.STANZA_OFFSITE_AGE_RECIPIENTS = public
    settings.STANZA_OFFSITE_AGE_IDENTITY = str(identity)
    backup = make_backup(live, backups_folder)
    jobs.run_job("copy-offsite")

    run = jobs.run_job("verify-latest-backup")

    assert run.status == CronRun.Status.SUCCESS, run.error
    assert "offsite downloaded, decrypted, SHA-256 ok" in run.result
    manifest = json.loads(body(s3, offsite_on, f"site-a/{backup.name}.json"))
    assert manifest["drill"]["ok"] is True
    assert manifest["tables"]["item"] == 2000


@pytest.mark.django_db
def test_a_failed_offsite_drill_fails_the_job_and_is_recorded(offsite_on, s3, live, backups_folder):
    backup = make_backup(live, backups_folder)
    jobs.run_job("copy-offsite")
    s3.put_object(Bucket=offsite_on, Key=f"site-a/{backup.name}", Body=b"tampered")

    run = jobs.run_job("verify-latest-backup")

    assert run.status == CronRun.Status.FAILURE
    assert "offsite drill of" in run.error_summary
    manifest = json.loads(body(s3, offsite_on, f"site-a/{backup.name}.json"))
    assert manifest["drill"]["ok"] is False
    assert backups.read_manifest(backup.path)["drill"]["ok"] is True  # the local drill passed


# --- the Backups page ---------------------------------------------------------------------


@pytest.fixture
def offsite_only(offsite_on, live, backups_folder, settings, tmp_path):
    """One backup here and offsite, one only offsite (encrypted), with the identity set."""
    public, identity = age_keys(tmp_path)
    settings.STANZA_OFFSITE_AGE_RECIPIENTS = public
    settings.STANZA_OFFSITE_AGE_IDENTITY = str(identity)
    gone = make_backup(live, backups_folder, age=timedelta(days=9))
    here = make_backup(live, backups_folder)
    jobs.run_job("copy-offsite")
    content = gone.path.read_bytes()
    for path in (gone.path, *backups.sidecars(gone.path)):
        path.unlink()
    return gone.name, content, here.name


@pytest.mark.django_db
def test_the_backups_page_shows_where_each_backup_is(staff_client, offsite_only):
    gone, _content, here = offsite_only

    page = staff_client.get("/admin/backups/").content.decode()

    assert "here and offsite" in page
    assert 'id="offsite-only"' in page and gone in page and "offsite only" in page
    assert f"/admin/backups/offsite/{gone}" in page


@pytest.mark.django_db
def test_an_offsite_only_backup_downloads_decrypted_through_the_dashboard(
    staff_client, offsite_only
):
    gone, content, _here = offsite_only

    response = staff_client.get(f"/admin/backups/offsite/{gone}")

    assert response.status_code == 200
    assert response["Content-Disposition"] == f'attachment; filename="{gone}"'
    assert response["X-Checksum-SHA256"] == hashlib.sha256(content).hexdigest()
    assert b"".join(response.streaming_content) == content


@pytest.mark.django_db
def test_the_offsite_download_refuses_strangers_and_bad_names(staff_client, offsite_only):
    from django.test import Client

    gone, _content, _here = offsite_only

    assert Client().get(f"/admin/backups/offsite/{gone}").status_code == 302  # to the login
    assert Client().post(f"/admin/backups/offsite-fetch/{gone}").status_code in (302, 403)
    assert staff_client.get("/admin/backups/offsite/..%2Fsecret").status_code in (400, 404)
    assert staff_client.get("/admin/backups/offsite/notes.txt").status_code == 400
    missing = "database.sqlite.20200101T000000Z.bak"
    assert staff_client.get(f"/admin/backups/offsite/{missing}").status_code == 404


@pytest.mark.django_db
def test_restore_from_the_page_fetches_the_copy_back_first(
    staff_client, offsite_only, backups_folder
):
    gone, content, _here = offsite_only

    response = staff_client.post(f"/admin/backups/offsite-fetch/{gone}")

    assert response.status_code == 302
    assert response["Location"] == f"/admin/backups/restore/{gone}"
    fetched = backups.get_backup(gone, backups_folder)
    assert fetched.path.read_bytes() == content and fetched.has_checksum
    assert fetched.modified == fetched.created  # its own time, not a fresh backup's
    assert staff_client.get(response["Location"]).status_code == 200


@pytest.mark.django_db(transaction=True)
def test_back_up_now_starts_its_own_copy_offsite_run(
    staff_client, offsite_on, s3, backups_folder, live_database, monkeypatch
):
    calls = []
    real = jobs.copy_offsite_soon
    monkeypatch.setattr(jobs, "copy_offsite_soon", lambda: calls.append("copy"))

    response = staff_client.post("/admin/database/backup", HTTP_ACCEPT="application/json")

    assert response.status_code == 200
    assert calls == ["copy"]
    # Its thread starts once the request is over here: the test database lives in memory,
    # where SQLite's shared cache locks whole tables rather than waiting like a real file.
    real().join(60)
    [run] = CronRun.objects.filter(job_name="copy-offsite")
    assert run.status == CronRun.Status.SUCCESS, run.error
    assert run.trigger == "after backup"
    name = response.json()["file"]
    assert f"site-a/{name}.sha256" in keys(s3, offsite_on)


@pytest.mark.django_db(transaction=True)
def test_a_backup_never_fails_because_offsite_failed(
    staff_client, offsite_on, backups_folder, live_database, monkeypatch
):
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    calls = []
    real = jobs.copy_offsite_soon
    monkeypatch.setattr(jobs, "copy_offsite_soon", lambda: calls.append("copy"))

    response = staff_client.post("/admin/database/backup", HTTP_ACCEPT="application/json")

    assert response.status_code == 200 and calls == ["copy"]
    real().join(60)
    [run] = CronRun.objects.filter(job_name="copy-offsite")
    assert run.status == CronRun.Status.FAILURE and "unreachable" in run.error_summary
    assert backups.get_backup(response.json()["file"], backups_folder).has_checksum


# --- the command line (real processes) ----------------------------------------------------


@pytest.mark.slow
def test_a_scheduled_backup_starts_a_copy_and_restore_offsite_brings_it_back(
    s3_env, s3, bucket, live_data
):
    env = {**s3_env, "STANZA_DATA_DIR": str(live_data), "STANZA_OFFSITE_URL": f"s3://{bucket}/p"}
    db = live_data / "database.sqlite"
    conn = __import__("sqlite3").connect(db)
    conn.execute("CREATE TABLE sentinel (x)")
    conn.execute("INSERT INTO sentinel VALUES (1)")
    conn.commit()
    conn.close()

    made = manage("runjob", "daily-backup", env=env)

    assert made.returncode == 0, made.stderr
    [run] = read_runs(live_data, "copy-offsite")
    assert run["status"] == "success" and run["trigger"] == "after backup", run
    [name] = [b.name for b in backups.list_backups(live_data / "backups")]
    for path in (live_data / "backups").iterdir():
        path.unlink()  # the machine lost its backups
    conn = __import__("sqlite3").connect(db)
    conn.execute("DELETE FROM sentinel")
    conn.commit()
    conn.close()

    restored = manage("restore", "--offsite", name, "--yes", env=env)

    assert restored.returncode == 0, restored.stderr
    assert "Safety backup of the previous database" in restored.stdout
    assert count_rows(db, "sentinel") == 1
    assert not [p for p in (live_data / "tmp").iterdir() if p.name.startswith(".stanza")]


def test_restore_offsite_of_a_missing_copy_is_one_line(s3_env, bucket, live_data):
    env = {**s3_env, "STANZA_DATA_DIR": str(live_data), "STANZA_OFFSITE_URL": f"s3://{bucket}/p"}

    result = manage(
        "restore", "--offsite", "database.sqlite.20200101T000000Z.bak", "--yes", env=env
    )

    assert result.returncode != 0
    [line] = result.stderr.strip().splitlines()
    assert "has no complete offsite copy" in line


# --- memory -------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "encrypted"])
def test_a_200_mb_backup_is_uploaded_with_flat_memory(
    s3_env, s3, bucket, large_data_dir, tmp_path, encrypted
):
    data = tmp_path / "data"
    (data / "backups").mkdir(parents=True)
    backup = backups.create_backup(large_data_dir / "database.sqlite", folder=data / "backups")
    assert backup.size > 190 * 1024 * 1024
    env = {**os.environ, **s3_env, "STANZA_DATA_DIR": str(data)}
    env["STANZA_OFFSITE_URL"] = f"s3://{bucket}/big"
    if encrypted:
        env["STANZA_OFFSITE_AGE_RECIPIENTS"] = age_keys(tmp_path)[0]
    manage("migrate", "--no-input", "-v0", env=env, check=True)
    # A parent that waits for `runjob` and reports its children's peak RSS (KiB).
    measure = (
        "import resource, subprocess, sys; "
        "code = subprocess.run(sys.argv[1:]).returncode; "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(code)"
    )
    result = subprocess.run(
        [sys.executable, "-c", measure, sys.executable, "manage.py", "runjob", "copy-offsite"],
        env={k: v for k, v in env.items() if k != "DJANGO_SETTINGS_MODULE"},
        cwd=Path(__file__).resolve().parent.parent,
        capture_output=True,
        text=True,
        timeout=600,
    )

    assert result.returncode == 0, result.stderr
    peak_mb = int(result.stdout.strip().splitlines()[-1]) / 1024
    assert peak_mb < 150, f"peak RSS {peak_mb:.0f} MB"
    key = f"big/{backup.name}" + (".age" if encrypted else "")
    assert s3.head_object(Bucket=bucket, Key=key)["ContentLength"] >= backup.size
    for name in keys(s3, bucket, "big/"):  # moto keeps objects in memory
        s3.delete_object(Bucket=bucket, Key=name)
