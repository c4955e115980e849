"""GET /metrics: Prometheus text, read back with prometheus_client's own parser."""

import os
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from backups_app.engine import backups
from backups_app.jobs import jobs
from backups_app.models import CronRun
from backups_app.restore import drill
from tests.conftest import write_backup_file, write_replica_status

pytestmark = pytest.mark.django_db

TOKEN = "s3cret-token"
CONTRACT_NAMES = {
    "stanza_backup_last_success_timestamp_seconds",
    "stanza_backup_last_size_bytes",
    "stanza_backups_count",
    "stanza_backups_size_bytes",
    "stanza_media_size_bytes",
    "stanza_job_last_run_timestamp_seconds",
    "stanza_job_last_success_timestamp_seconds",
    "stanza_job_last_duration_seconds",
    "stanza_job_failing",
    "stanza_restore_drill_last_success_timestamp_seconds",
    "stanza_restore_drill_duration_seconds",
    "stanza_healthy",
}


@pytest.fixture
def metrics_on(settings):
    settings.STANZA_METRICS_TOKEN = TOKEN


def scrape(client, token=TOKEN):
    response = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {token}")
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain; version=")
    return parse(response.content.decode())


def parse(text):
    """{metric name: {frozenset of label pairs: value}} as a Prometheus server reads them."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, {})[frozenset(sample.labels.items())] = sample.value
    return found


def value(metrics, name, **labels):
    return metrics[name][frozenset(labels.items())]


def test_it_reads_every_contract_metric_after_a_backup_a_drill_a_failure_and_a_recovery(
    client, metrics_on, data_dir, live_database, settings
):
    before = time.time()
    first = jobs.run_job("daily-backup")
    jobs.run_job("verify-latest-backup")
    newest = backups.list_backups()[0]

    after_drill = scrape(client)

    assert set(after_drill) >= CONTRACT_NAMES
    assert value(after_drill, "stanza_healthy") == 1
    assert value(after_drill, "stanza_backups_count") == 1
    assert value(after_drill, "stanza_backup_last_size_bytes") == newest.size > 0
    assert value(after_drill, "stanza_backups_size_bytes") == newest.size
    assert value(after_drill, "stanza_backup_last_success_timestamp_seconds") == pytest.approx(
        newest.modified.timestamp(), abs=1e-3
    )
    passed = drill.recent_drills().passed
    assert value(after_drill, "stanza_restore_drill_duration_seconds") == passed.restore_seconds
    assert 0 < passed.restore_seconds < 60
    assert value(after_drill, "stanza_restore_drill_last_success_timestamp_seconds") >= before
    assert value(after_drill, "stanza_recovery_time_seconds") == passed.restore_seconds
    assert 0 <= value(after_drill, "stanza_recovery_point_seconds") < 60
    assert value(after_drill, "stanza_job_failing", job="daily-backup") == 0
    assert value(after_drill, "stanza_job_last_run_timestamp_seconds", job="daily-backup") == (
        first.started_at.timestamp()
    )
    assert value(after_drill, "stanza_job_last_duration_seconds", job="daily-backup") == (
        first.duration.total_seconds()
    )
    never = value(after_drill, "stanza_job_last_run_timestamp_seconds", job="purge-old-backups")
    assert never == 0
    assert {dict(labels)["job"] for labels in after_drill["stanza_job_failing"]} == set(
        jobs.registry()
    )

    backups_dir = settings.STANZA_BACKUPS_DIR
    settings.STANZA_BACKUPS_DIR = data_dir / "gone"  # the next backup fails
    failed = jobs.run_job("daily-backup")
    assert failed.status == CronRun.Status.FAILURE

    after_failure = scrape(client)

    assert value(after_failure, "stanza_job_failing", job="daily-backup") == 1
    assert value(after_failure, "stanza_healthy") == 0
    assert value(
        after_failure, "stanza_job_last_success_timestamp_seconds", job="daily-backup"
    ) == (first.finished_at.timestamp())

    settings.STANZA_BACKUPS_DIR = backups_dir
    recovered = jobs.run_job("daily-backup")
    assert recovered.status == CronRun.Status.SUCCESS

    after_recovery = scrape(client)

    assert value(after_recovery, "stanza_job_failing", job="daily-backup") == 0
    assert value(after_recovery, "stanza_healthy") == 1
    assert value(after_recovery, "stanza_backups_count") == 2
    assert (
        value(after_recovery, "stanza_job_last_success_timestamp_seconds", job="daily-backup")
        == recovered.finished_at.timestamp()
    )


def test_it_is_404_while_no_token_is_set(client, settings, admin_client):
    settings.STANZA_METRICS_TOKEN = ""

    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer ").status_code == 404
    assert admin_client.get("/metrics").status_code == 404


def test_it_wants_the_token_or_a_staff_login(metrics_on, staff_user, user_client):
    from django.test import Client

    anonymous, staff_client = Client(), Client()
    staff_client.force_login(staff_user)
    assert anonymous.get("/metrics").status_code == 401
    assert anonymous.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 401
    assert anonymous.get("/metrics", HTTP_AUTHORIZATION=f"Basic {TOKEN}").status_code == 401
    assert anonymous.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}").status_code == 200
    assert user_client.get("/metrics").status_code == 401
    assert staff_client.get("/metrics").status_code == 200
    assert anonymous.post("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}").status_code == 405


def test_it_opens_no_file_per_backup(client, metrics_on, backups_folder, monkeypatch):
    for day in range(1, 29):
        write_backup_file(backups_folder, f"database.sqlite.202602{day:02}T020000Z.bak")
    opened = []
    for module in (backups, drill):
        for name in ("read_manifest", "read_checksum", "open_regular"):
            if hasattr(module, name):
                real = getattr(module, name)
                monkeypatch.setattr(
                    module, name, lambda *a, real=real, **k: opened.append(a) or real(*a, **k)
                )

    metrics = scrape(client)

    assert value(metrics, "stanza_backups_count") == 28
    assert opened == []


def test_it_says_when_there_is_no_backup_yet(client, metrics_on, backups_folder):
    metrics = scrape(client)

    assert value(metrics, "stanza_backups_count") == 0
    assert value(metrics, "stanza_backup_last_success_timestamp_seconds") == 0
    assert value(metrics, "stanza_recovery_point_seconds") == float("inf")
    assert value(metrics, "stanza_healthy") == 0
    assert "stanza_recovery_time_seconds" not in metrics


def test_it_counts_the_site_files_kept_with_the_backups(
    client, metrics_on, settings, data_dir, live_database, tmp_path
):
    media = tmp_path / "media"
    (media / "photos").mkdir(parents=True)
    (media / "photos" / "a.jpg").write_bytes(b"a" * 1000)
    (media / "b.txt").write_bytes(b"b" * 234)
    settings.STANZA_MEDIA_DIR = str(media)

    jobs.run_job("daily-backup")

    assert value(scrape(client), "stanza_media_size_bytes") == 1234


def test_it_never_asks_the_offsite_store(
    client, metrics_on, settings, backups_folder, hanging_store
):
    """The store hangs: a scrape answers from what the offsite jobs recorded, at once."""
    from datetime import UTC, datetime

    from backups_app.offsite import state as offsite_state
    from backups_app.offsite.copies import OffsiteCopy

    settings.STANZA_OFFSITE_URL = "s3://stanza-hung/site-a"
    old = write_backup_file(backups_folder, "database.sqlite.20260201T020000Z.bak")
    new = write_backup_file(backups_folder, "database.sqlite.20260202T020000Z.bak")
    for path, hours_ago in ((old, 50), (new, 26)):
        when = time.time() - hours_ago * 3600
        os.utime(path, (when, when))
    now = datetime.now(UTC)
    with offsite_state.recording() as record:
        record.copied(OffsiteCopy(old.name, old.name, 12, now, now))

    metrics = scrape(client)

    assert value(metrics, "stanza_offsite_last_copy_timestamp_seconds") == (
        datetime(2026, 2, 1, 2, tzinfo=UTC).timestamp()
    )
    assert "stanza_replication_lag_seconds" not in metrics  # replication is off
    assert hanging_store.accepted == []


def test_it_reads_the_replicas_lag_from_replicates_status_file(
    client, metrics_on, settings, backups_folder, tmp_path
):
    settings.STANZA_REPLICA_URL = f"file://{tmp_path / 'replica'}"
    write_replica_status(lag=4)

    metrics = scrape(client)

    assert 4 <= value(metrics, "stanza_replication_lag_seconds") < 60
    assert value(metrics, "stanza_recovery_point_seconds") == pytest.approx(
        value(metrics, "stanza_replication_lag_seconds"), abs=1
    )
