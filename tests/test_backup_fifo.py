"""A FIFO named like a backup or a sidecar never blocks a reader (issue 8.8).

Opening a FIFO for reading waits for a writer that never comes: each test runs under an alarm
so that a regression fails instead of hanging the suite.
"""

import os
import signal

import pytest
from django.urls import reverse

from backups_app.engine import backups
from backups_app.restore import drill
from tests.conftest import write_backup_file

NAME = "database.sqlite.20261127T020000Z.bak"
FIFO_NAME = "database.sqlite.20261127T030000Z.bak"


@pytest.fixture(autouse=True)
def fail_instead_of_hanging():
    def hung(signum, frame):
        raise AssertionError("blocked on a FIFO")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(60)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


@pytest.fixture
def fifos(backups_folder):
    """A real backup whose .sha256 and .json are FIFOs, and a FIFO with a backup's name."""
    write_backup_file(backups_folder, NAME, checksum=False)
    for name in (NAME + ".sha256", NAME + ".json", FIFO_NAME, FIFO_NAME + ".sha256"):
        os.mkfifo(backups_folder / name)
    return backups_folder


def test_the_listing_skips_a_fifo_and_counts_no_fifo_as_a_checksum(fifos):
    listed = backups.list_backups(fifos)

    assert [(b.name, b.has_checksum) for b in listed] == [(NAME, False)]


def test_get_backup_and_open_backup_refuse_a_fifo(fifos):
    with pytest.raises(backups.BackupError, match="does not exist"):
        backups.get_backup(FIFO_NAME, fifos)
    with pytest.raises(backups.BackupError, match="does not exist"):
        backups.open_backup(FIFO_NAME, fifos)
    assert backups.get_backup(NAME, fifos).has_checksum is False


def test_sidecars_that_are_fifos_read_as_untrusted_or_missing(fifos):
    assert backups.read_checksum(fifos / NAME) == ""
    assert backups.read_manifest(fifos / NAME) is None
    assert drill.drill_result(backups.get_backup(NAME, fifos)) is None
    with pytest.raises(OSError):
        backups.sha256_of(fifos / FIFO_NAME)


def test_the_clean_up_does_not_wait_on_a_fifo_named_like_a_temp_file(backups_folder):
    fifo = backups_folder / f"{backups.TEMP_PREFIX}1-abcd.partial"
    os.mkfifo(fifo)

    assert backups.remove_abandoned_temp_files(backups_folder) == 1
    assert not fifo.exists()


def test_a_backup_next_to_fifos_is_written_and_listed(fifos, source_db):
    backup = backups.create_backup(source_db, folder=fifos)

    assert backups.list_backups(fifos)[0].name == backup.name


def test_pages_healthz_and_downloads_answer(fifos, staff_client, live_database):
    assert staff_client.get(reverse("backups:backups")).status_code == 200
    assert staff_client.get("/healthz").status_code in (200, 503)
    fifo_download = staff_client.get(reverse("backups:download", args=[FIFO_NAME]))
    assert fifo_download.status_code == 404
    response = staff_client.get(reverse("backups:download", args=[NAME]))
    assert response.status_code == 200
    assert "X-Checksum-SHA256" not in response
