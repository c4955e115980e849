"""What is running and how far it got (issue 20): a backup writes its progress beside the
operation lock at most twice a second, and the Backups page (and its `?progress` JSON, which
"Back up now" polls while its POST is pending) says who runs what, since when, and how far."""

import json
import os
import re
import subprocess
import sys
import time

import pytest
from django.test import Client

from backups_app.core import operations
from backups_app.jobs import actions
from tests.conftest import wait_until

URL = "/admin/backups/"
PROGRESS = "/admin/backups/?progress"
JSON = {"HTTP_ACCEPT": "application/json"}
HIDDEN_BOX = re.compile(r'<p class="stanza-operation" id="operation"[^>]* hidden>')


def words(html):
    """The text of an HTML fragment, as a person reads it."""
    return " ".join(re.sub(r"<[^>]+>", "", html).split())


def written(database=None):
    """The progress file's content now, or None."""
    try:
        return json.loads(operations.progress_path(database).read_text())
    except (OSError, ValueError):
        return None


def test_nothing_is_running_says_so(staff_client, backups_folder):
    answer = staff_client.get(PROGRESS, **JSON)
    page = staff_client.get(URL).content.decode()

    assert answer.status_code == 200
    assert answer.json() == {"running": False, "operation": None, "html": ""}
    assert HIDDEN_BOX.search(page)


def test_it_says_who_runs_what_since_when_and_how_far(staff_client, backups_folder):
    with (
        operations.exclusive("backup", by="admin") as holder,
        operations.reporting(holder, last_files=5000) as progress,
    ):
        progress("files", 1234, 0, 5 * 2**20)
        wait_until(lambda: (written() or {}).get("done") == 1234, timeout=5)
        answer = staff_client.get(PROGRESS, **JSON).json()
        page = staff_client.get(URL).content.decode()

    assert answer["running"] is True
    assert answer["operation"]["by"] == "admin"
    assert answer["operation"]["progress"]["phase"] == "files"
    text = words(answer["html"])
    assert re.fullmatch(
        r"A backup is running, started by admin \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC \([^)]*\): "
        r"recording the site files, 1,234 of about 5,000 \(5\.0 MB\)\.",
        text,
    ), text
    box = page.split('id="operation"', 1)[1].split("</p>", 1)[0]
    assert "hidden" not in box.split(">", 1)[0]
    # The same words on the page (but for "how long ago", read a moment later).
    ago = re.compile(r"\((now|[^)]* ago)\)")
    assert ago.sub("", words(box.split(">", 1)[1])) == ago.sub("", text)
    assert written() is None  # the file goes with the operation
    assert staff_client.get(PROGRESS, **JSON).json()["running"] is False


@pytest.mark.parametrize(
    ("call", "said"),
    [
        (("copy", 3 * 2**20, 12 * 2**20), "copying the database, 3.0 MB of 12.0 MB"),
        (("files", 7, 0, 2048), "recording the site files, 7 so far (2.0 KB)"),
        (("verify", 0, 0), "checking the copy"),
        (("compress", 2**20, 4 * 2**20), "compressing the copy, 1.0 MB of 4.0 MB"),
    ],
)
def test_each_step_reads_in_words(staff_client, backups_folder, call, said):
    with (
        operations.exclusive("backup", by="the daily-backup job") as holder,
        operations.reporting(holder) as progress,
    ):
        progress(*call)
        wait_until(lambda: (written() or {}).get("phase") == call[0], timeout=5)
        text = words(staff_client.get(PROGRESS, **JSON).json()["html"])

    assert text.startswith("A backup is running, started by the daily-backup job ")
    assert text.endswith(f": {said}.")


def test_it_writes_at_most_twice_a_second_and_always_the_latest(backups_folder, monkeypatch):
    writes = []
    real = operations._write_json
    monkeypatch.setattr(
        operations, "_write_json", lambda path, data: (writes.append(data), real(path, data))
    )
    with operations.exclusive("backup") as holder, operations.reporting(holder) as progress:
        started = time.monotonic()
        done = 0
        while time.monotonic() - started < 2.0:  # a call every millisecond or so
            done += 1
            progress("copy", done, 10**9)
            time.sleep(0.001)
        wait_until(lambda: (written() or {}).get("done") == done, timeout=5)

    assert done > 500
    assert 2 <= len(writes) <= 6, len(writes)  # about five in two seconds, not hundreds
    assert writes[-1]["done"] == done


def test_other_operations_show_without_progress(staff_client, backups_folder):
    with operations.exclusive("restore", by="the restore command"):
        text = words(staff_client.get(PROGRESS, **JSON).json()["html"])

    assert re.fullmatch(
        r"A restore is running, started by the restore command \S+ \S+ UTC \([^)]*\)\.", text
    )


def test_a_note_left_by_a_killed_holder_is_not_a_running_operation(
    staff_client, backups_folder, tmp_path
):
    lock = operations.lock_path()
    code = (
        "import fcntl, json, os, sys; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT);"
        "fcntl.flock(fd, fcntl.LOCK_EX);"
        "os.write(fd, json.dumps({'operation': 'backup', 'by': 'admin', 'pid': os.getpid(),"
        "'since': '2026-12-06T23:00:00+00:00'}).encode()); os._exit(9)"
    )
    subprocess.run([sys.executable, "-c", code, str(lock)], check=False)

    assert json.loads(lock.read_text())["operation"] == "backup"  # the note stayed
    assert staff_client.get(PROGRESS, **JSON).json()["running"] is False
    assert HIDDEN_BOX.search(staff_client.get(URL).content.decode())


def test_progress_is_for_staff_only(user_client, backups_folder):
    assert Client().get(PROGRESS, **JSON).status_code == 401
    assert user_client.get(PROGRESS, **JSON).status_code == 403


def test_a_backup_reports_its_steps_then_removes_the_file(
    backups_folder, live_database, site_media_root, monkeypatch
):
    site_media_root.mkdir(parents=True)
    for n in range(3):
        (site_media_root / f"file-{n}.txt").write_text(f"site file {n}")
    actions.backup_locked("manual", by="admin")  # the last list: 3 files
    phases = []
    real = operations._write_json
    monkeypatch.setattr(
        operations, "_write_json", lambda path, data: (phases.append(data), real(path, data))
    )

    backup = actions.backup_locked("manual", by="admin")

    assert backup.label == "manual"
    assert phases, "no progress was written"
    assert {data["last_files"] for data in phases} == {3}
    assert all(data["pid"] == os.getpid() for data in phases)
    assert {data["phase"] for data in phases} <= {"copy", "files", "verify", "compress", "done"}
    assert written() is None
