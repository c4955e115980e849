"""The recovery point (data a lost disk would cost now) and the recovery time (how long the last
drill took to restore), on the Backups page, in `checkbackups` and for /metrics."""

import os
import re
from datetime import UTC, datetime, timedelta

import pytest
from django.core.management import call_command

from backups_app.health import recovery
from backups_app.jobs import jobs
from backups_app.models import DrillRun
from tests.conftest import write_backup_file, write_replica_status

pytestmark = pytest.mark.django_db

URL = "/admin/backups/"


def backup_made(folder, hours_ago, label=""):
    made = datetime.now(UTC) - timedelta(hours=hours_ago)
    name = f"database.sqlite.{made:%Y%m%dT%H%M%SZ}{'.' + label if label else ''}.bak"
    path = write_backup_file(folder, name)
    os.utime(path, (made.timestamp(), made.timestamp()))
    return path


def drill_passed(seconds=12.4, size=120 * 1024 * 1024, name="database.sqlite.20261126T020000Z.bak"):
    return DrillRun.objects.create(
        backup_name=name, backup_size=size, ok=True, restore_seconds=seconds
    )


def card(html, card_id):
    return re.search(rf'<div[^>]*id="{card_id}".*?</div>', html, re.S).group(0)


def test_it_states_both_numbers_on_the_page_in_plain_words(staff_client, backups_folder):
    backup_made(backups_folder, 8)
    drill_passed()

    html = staff_client.get(URL).content.decode()

    point = card(html, "recovery-point")
    assert '<span class="stanza-figure">8 hours</span>' in point
    assert "of data lost if the disk died now" in point
    assert "the newest backup is 8 hours old" in point
    time = card(html, "recovery-time")
    assert '<span class="stanza-figure">about 12 seconds</span>' in time
    assert "a backup of 120.0\xa0MB" in time


def test_it_says_on_the_page_when_there_is_nothing_to_recover_from(staff_client, backups_folder):
    backup_made(backups_folder, 1, label="uploaded")  # not the site's own data

    html = staff_client.get(URL).content.decode()

    point = card(html, "recovery-point")
    assert "stanza-card-bad" in point
    assert "no backup yet: losing the disk now would lose all the data" in point
    assert "not measured" in card(html, "recovery-time")


def test_it_takes_no_recovery_time_from_a_failed_drill(staff_client, backups_folder):
    drill_passed(seconds=3)
    DrillRun.objects.create(backup_name="x", backup_size=1, ok=False, restore_seconds=None)

    assert recovery.state().time_seconds == 3  # the last drill that passed


def copied_offsite(*backup_paths):
    """Record copies in the offsite state as copy-offsite does after a run."""
    from backups_app.offsite import state as offsite_state
    from backups_app.offsite.copies import OffsiteCopy

    now = datetime.now(UTC)
    with offsite_state.recording() as record:
        for path in backup_paths:
            record.copied(OffsiteCopy(path.name, path.name, 1, now, now))


def test_it_takes_the_freshest_of_backup_offsite_copy_and_replica(
    settings, backups_folder, tmp_path, monkeypatch
):
    from backups_app import conf

    settings.STANZA_OFFSITE_URL = "s3://bucket-name/site"  # never reached: the record tells
    older = backup_made(backups_folder, 30)
    copied_offsite(older, backup_made(backups_folder, 2, label="uploaded"))
    backup_made(backups_folder, 5)

    offsite_only = recovery.state()

    assert offsite_only.point_seconds == pytest.approx(5 * 3600, abs=60)
    assert offsite_only.offsite_at == datetime.strptime(
        older.name.split(".")[2], "%Y%m%dT%H%M%SZ"
    ).replace(tzinfo=UTC)
    assert "the newest offsite copy is 30 hours old" in offsite_only.point_sentence()

    database = tmp_path / "live.sqlite"
    monkeypatch.setattr(conf, "live_database_path", lambda: database)
    settings.STANZA_REPLICA_URL = f"file://{tmp_path / 'replica'}"
    write_replica_status(database, lag=3)

    with_replica = recovery.state()

    assert with_replica.point_seconds == pytest.approx(3, abs=5)
    assert with_replica.freshest[0] == "the replica"
    assert "the replica is 3 seconds behind" in with_replica.point_sentence()


def test_it_says_when_there_is_no_offsite_copy_yet(settings, backups_folder):
    backup_made(backups_folder, 2)
    settings.STANZA_OFFSITE_URL = "s3://bucket-name/site"

    state = recovery.state()

    assert state.offsite_at is None
    assert "the newest offsite copy: none yet" in state.point_sentence()


def test_it_states_both_in_checkbackups_after_the_verdict(
    backups_folder, data_dir, live_database, capsys
):
    jobs.run_job("daily-backup")
    jobs.run_job("verify-latest-backup")

    call_command("checkbackups")

    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "OK: backups are healthy"
    assert lines[1].startswith("Recovery point: 1 second. Losing the disk now would lose up to ")
    assert "(the newest backup is 1 second old)" in lines[1]
    assert re.match(
        r"Recovery time: about \d+ seconds?\. The last restore drill \(\d{4}-\d\d-\d\d "
        r"\d\d:\d\d UTC\) read, restored and checked a backup of [\d.]+ KB in that time\.$",
        lines[2],
    )


@pytest.mark.parametrize(
    "seconds, words",
    [
        (0.04, "1 second"),
        (1, "1 second"),
        (40, "40 seconds"),
        (89, "89 seconds"),
        (90, "2 minutes"),
        (3600, "60 minutes"),
        (8 * 3600, "8 hours"),
        (47 * 3600, "47 hours"),
        (3 * 86400, "3 days"),
        (None, "unknown"),
    ],
)
def test_it_says_a_length_of_time_in_plain_words(seconds, words):
    assert recovery.age_words(seconds) == words


def test_it_warns_when_the_backups_share_the_databases_disk(staff_client, backups_folder):
    backup_made(backups_folder, 8)

    html = staff_client.get(URL).content.decode()

    assert recovery.state().same_disk is True  # the test's data folder holds both
    assert "stanza-card-warn" in card(html, "recovery-point")  # nothing off this disk
    assert "losing that disk loses the backups too" in card(html, "recovery-point")
    assert "losing that disk loses the backups too" in recovery.state().point_sentence()


def test_it_does_not_warn_when_the_backups_are_on_another_disk(
    staff_client, settings, data_dir, mount_point
):
    other_disk = mount_point("size=1m")
    settings.STANZA_BACKUPS_DIR = other_disk
    backup_made(other_disk, 8)

    html = staff_client.get(URL).content.decode()

    assert recovery.state().same_disk is False
    assert "stanza-card-warn" not in card(html, "recovery-point")
    assert "the newest backup is 8 hours old" in card(html, "recovery-point")
    assert "losing that disk" not in card(html, "recovery-point")
