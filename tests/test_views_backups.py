"""The Backups page and "Back up now" (POST /admin/database/backup)."""

import hashlib
import os
import re
from datetime import timedelta

import pytest
from django.contrib.admin.models import LogEntry
from django.test import Client
from django.urls import reverse

from backups_app.core import formatting, operations
from backups_app.engine import backups
from backups_app.restore import drill
from tests.conftest import count_rows, write_backup_file

URL = "/admin/backups/"
BACKUP_URL = "/admin/database/backup"
JSON = {"HTTP_ACCEPT": "application/json"}


def names_in_order(html):
    """The backup names of a page, in order (a name may break after its dots: <wbr>)."""
    found = re.findall(r'<code class="stanza-name">(.+?)</code>', html)
    return [name.replace("<wbr>", "") for name in found]


# --- the page ------------------------------------------------------------------------------


def test_it_lists_backups_newest_first_with_kind_size_time_checksum_and_link(
    staff_client, backups_folder
):
    write_backup_file(backups_folder, "database.sqlite.20260101T020000Z.bak", age=timedelta(days=2))
    write_backup_file(
        backups_folder,
        "database.sqlite.20260102T020000Z.manual.bak",
        b"x" * 2048,
        age=timedelta(hours=3),
        checksum=False,
    )
    write_backup_file(
        backups_folder, "database.sqlite.20260101T120000Z.pre-migrate.bak", age=timedelta(days=1)
    )

    response = staff_client.get(URL)

    assert response.status_code == 200
    html = response.content.decode()
    assert names_in_order(html) == [
        "database.sqlite.20260102T020000Z.manual.bak",
        "database.sqlite.20260101T120000Z.pre-migrate.bak",
        "database.sqlite.20260101T020000Z.bak",
    ]
    assert ">manual<" in html
    assert ">pre-migrate<" in html
    assert ">scheduled<" in html
    assert "2.0\xa0KB" in html
    assert "3\xa0hours ago" in html
    # The SHA-256 itself, to read or copy, where the backup has its .sha256.
    digest = hashlib.sha256(b"backup bytes").hexdigest()
    assert html.count('<code class="stanza-sha" ') == 2
    assert html.count(f'data-copy="{digest}"') == 2
    assert html.count(">no checksum<") == 1
    assert 'href="/admin/database/backups/database.sqlite.20260102T020000Z.manual.bak"' in html


def test_it_shows_count_total_size_and_free_space(staff_client, backups_folder):
    write_backup_file(backups_folder, "database.sqlite.20260101T020000Z.bak", b"x" * 1024)
    write_backup_file(backups_folder, "database.sqlite.20260102T020000Z.bak", b"x" * 1024)

    response = staff_client.get(URL)

    html = response.content.decode()
    assert '<span class="stanza-figure" id="backup-count">2 backups</span>' in html
    assert "2.0\xa0KB in total" in html
    assert re.search(r'id="free-space">[0-9.]+\xa0(KB|MB|GB|TB)<', html)


def test_it_leaves_out_files_that_are_not_backups_and_symlinks(
    staff_client, backups_folder, tmp_path
):
    write_backup_file(backups_folder, "database.sqlite.20260101T020000Z.bak")
    (backups_folder / "notes.txt").write_text("hello")
    (backups_folder / ".stanza-tmp-1-abcd.partial").write_text("partial")
    outside = tmp_path / "outside.bak"
    outside.write_text("secret")
    (backups_folder / "database.sqlite.20260103T020000Z.bak").symlink_to(outside)

    html = staff_client.get(URL).content.decode()

    assert names_in_order(html) == ["database.sqlite.20260101T020000Z.bak"]
    assert "notes.txt" not in html
    assert "partial" not in html


def test_it_shows_the_last_backup_in_red_when_older_than_the_health_check_allows(
    staff_client, backups_folder
):
    write_backup_file(
        backups_folder, "database.sqlite.20260101T020000Z.bak", age=timedelta(hours=27)
    )

    html = staff_client.get(URL).content.decode()

    assert 'class="stanza-card stanza-card-bad" id="last-backup"' in html
    assert "older than 26 hours" in html


def test_it_shows_a_recent_last_backup_without_alarm(staff_client, backups_folder):
    write_backup_file(
        backups_folder, "database.sqlite.20260101T020000Z.bak", age=timedelta(hours=25)
    )

    html = staff_client.get(URL).content.decode()

    assert 'class="stanza-card" id="last-backup"' in html
    assert "1\xa0day, 1\xa0hour ago" in html


def test_it_says_when_there_is_no_backup_yet(staff_client, backups_folder):
    html = staff_client.get(URL).content.decode()

    assert "No backups yet." in html
    assert 'class="stanza-card stanza-card-bad" id="last-backup"' in html


def test_the_last_backup_card_judges_what_the_verdict_judges(staff_client, backups_folder):
    """An upload from today does not make the card green while the site's own backups stopped
    two days ago: card and verdict both look at the newest backup the site made itself."""
    write_backup_file(backups_folder, "database.sqlite.20260101T020000Z.bak", age=timedelta(days=2))
    write_backup_file(backups_folder, "database.sqlite.20260103T020000Z.uploaded.bak")

    html = staff_client.get(URL).content.decode()

    assert 'class="stanza-card stanza-card-bad" id="last-backup"' in html
    assert "older than 26 hours" in re.search(r'id="last-backup".*?</div>', html, re.S).group(0)
    assert "newest backup older than 26 hours" in html  # the verdict above it


@pytest.mark.parametrize("state", ["missing", "file"])
def test_it_says_clearly_when_the_backups_folder_is_missing_or_a_file(
    staff_client, backups_folder, state
):
    backups_folder.rmdir()
    if state == "file":
        backups_folder.write_text("not a folder")

    response = staff_client.get(URL)

    assert response.status_code == 200
    html = response.content.decode()
    assert "The backups folder cannot be read." in html
    expected = "does not exist" if state == "missing" else "is a file, not a folder"
    assert expected in html
    assert f"Folder <code>{backups_folder}</code>" in html  # where to look


def test_it_names_the_default_folder_when_it_cannot_be_read(staff_client, settings, data_dir):
    """With no STANZA_BACKUPS_DIR the folder is the database's `backups/`: named all the same."""
    del settings.STANZA_BACKUPS_DIR
    default = backups.backups_dir()
    default.rmdir()
    default.write_text("not a folder")

    html = staff_client.get(URL).content.decode()

    assert "is a file, not a folder" in html
    assert f"Folder <code>{default}</code>" in html


def test_it_reads_the_folder_without_a_query_per_backup(
    staff_client, backups_folder, django_assert_max_num_queries
):
    for day in range(1, 29):
        for hour in range(0, 24, 4):
            write_backup_file(backups_folder, f"database.sqlite.202602{day:02}T{hour:02}0000Z.bak")

    # 9: the last drill's record is one query (it was up to 20 manifest reads).
    with django_assert_max_num_queries(9):
        response = staff_client.get(URL)

    html = response.content.decode()
    assert '<span class="stanza-figure" id="backup-count">168 backups</span>' in html
    assert len(names_in_order(html)) == 50


def test_it_pages_thousands_of_backups_fifty_at_a_time(staff_client, backups_folder):
    for day in range(1, 29):
        for hour in range(0, 24, 4):
            write_backup_file(
                backups_folder, f"database.sqlite.202602{day:02}T{hour:02}0000Z.bak", checksum=False
            )
    everything = sorted(os.listdir(backups_folder), reverse=True)  # names sort by time here

    first = staff_client.get(URL).content.decode()
    second = staff_client.get(URL, {"page": 2}).content.decode()
    last = staff_client.get(URL, {"page": 4}).content.decode()

    assert names_in_order(first) == everything[:50]
    assert names_in_order(second) == everything[50:100]
    assert names_in_order(last) == everything[150:]
    assert "backups 51–100 of 168" in second
    assert "backups 151–168 of 168" in last
    assert 'href="?page=2"' in first


def test_it_has_a_back_up_now_form_with_csrf(staff_client, backups_folder):
    html = staff_client.get(URL).content.decode()

    form = re.search(r'<form method="post" action="/admin/database/backup".*?</form>', html, re.S)
    assert form
    assert 'name="csrfmiddlewaretoken"' in form.group(0)
    assert ">Back up now</button>" in form.group(0)


# --- Back up now ---------------------------------------------------------------------------


def test_it_backs_up_from_the_form_and_returns_to_the_page_with_a_message(
    staff_client, backups_folder, live_database
):
    response = staff_client.post(BACKUP_URL, follow=True)

    assert response.redirect_chain == [(URL, 302)]
    [backup] = backups.list_backups(backups_folder)
    assert backup.label == "manual"
    assert backup.has_checksum
    assert count_rows(backup.path) == 100
    html = response.content.decode()
    assert f"Backup {backup.name} made (" in html
    assert names_in_order(html) == [backup.name]


def test_it_answers_api_clients_with_json(staff_client, backups_folder, live_database):
    response = staff_client.post(BACKUP_URL, **JSON)

    assert response.status_code == 200
    body = response.json()
    [backup] = backups.list_backups(backups_folder)
    assert body == {"file": backup.name, "size": backup.size}
    assert backup.name.endswith(".manual.bak")
    assert os.path.getsize(backups_folder / body["file"]) == body["size"]


def test_it_records_who_made_a_backup(staff_client, staff_user, backups_folder, live_database):
    staff_client.post(BACKUP_URL, **JSON)

    [backup] = backups.list_backups(backups_folder)
    entry = LogEntry.objects.get()
    assert entry.user == staff_user
    # "Recent actions" on the admin index shows the action, not just a file name.
    assert entry.object_repr.startswith(f"Made backup {backup.name} (")
    assert entry.change_message.startswith(f"Made backup {backup.name} (")
    html = staff_client.get(URL).content.decode().replace("<wbr>", "")
    assert f"Made backup {backup.name}" in html


def test_it_reports_a_failed_backup_as_json_error(staff_client, backups_folder, live_database):
    backups_folder.rmdir()

    response = staff_client.post(BACKUP_URL, **JSON)

    assert response.status_code == 500
    assert "does not exist" in response.json()["error"]
    assert not backups_folder.exists()
    assert "Back up now failed" in LogEntry.objects.get().change_message


def test_it_reports_a_failed_backup_on_the_page(staff_client, backups_folder, live_database):
    live_database.write_bytes(b"this is not a database at all")

    response = staff_client.post(BACKUP_URL, follow=True)

    assert response.redirect_chain == [(URL, 302)]
    assert "Backup failed: " in response.content.decode()
    assert "is not an SQLite database" in response.content.decode()
    assert backups.list_backups(backups_folder) == []


def test_it_refuses_a_second_backup_while_one_runs(staff_client, backups_folder, live_database):
    with operations.exclusive("backup", by="admin"):
        api = staff_client.post(BACKUP_URL, **JSON)
        page = staff_client.post(BACKUP_URL, follow=True)

    assert api.status_code == 409
    assert api.json()["error"].startswith("a backup is running (by admin, since ")
    assert api.json()["error"].endswith("UTC); try again when it has finished")
    assert "A backup is running (by admin" in page.content.decode()
    assert backups.list_backups(backups_folder) == []
    assert os.listdir(backups_folder) == []

    # The lock went with the request that held it.
    assert staff_client.post(BACKUP_URL, **JSON).status_code == 200


def test_back_up_now_during_a_restore_says_a_restore_is_running(
    staff_client, backups_folder, live_database
):
    with operations.exclusive("restore", by="the restore command"):
        api = staff_client.post(BACKUP_URL, **JSON)

    assert api.status_code == 409
    assert api.json()["error"].startswith("a restore is running (by the restore command, since ")
    assert backups.list_backups(backups_folder) == []


def test_a_click_in_the_instant_another_takes_the_lock_still_names_who_holds_it(
    staff_client, backups_folder, live_database
):
    """The holder writes its note just after its lock: the refused click waits that moment
    instead of answering "another backup or restore" (seen with two clicks at once)."""
    import fcntl
    import json
    import threading

    fd = os.open(operations.lock_path(), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # locked, not yet noted
        note = {"operation": "backup", "by": "admin", "since": "2026-11-27T23:30:00+00:00"}
        writer = threading.Timer(0.3, lambda: os.pwrite(fd, json.dumps(note).encode(), 0))
        writer.start()
        api = staff_client.post(BACKUP_URL, **JSON)
        writer.join()
    finally:
        os.close(fd)

    assert api.status_code == 409
    assert api.json()["error"] == (
        "a backup is running (by admin, since 2026-11-27 23:30:00 UTC); try again when it has "
        "finished"
    )


def test_it_does_not_back_up_on_get(staff_client, backups_folder, live_database):
    assert staff_client.get(BACKUP_URL).status_code == 405
    assert backups.list_backups(backups_folder) == []


def test_it_refuses_a_post_without_csrf_token(staff_user, backups_folder, live_database):
    client = Client(enforce_csrf_checks=True)
    client.force_login(staff_user)

    assert client.post(BACKUP_URL).status_code == 403
    assert client.post(BACKUP_URL, **JSON).status_code == 403
    assert backups.list_backups(backups_folder) == []


def test_it_accepts_a_post_with_the_pages_csrf_token(staff_user, backups_folder, live_database):
    client = Client(enforce_csrf_checks=True)
    client.force_login(staff_user)
    html = client.get(URL).content.decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', html).group(1)

    response = client.post(BACKUP_URL, {"csrfmiddlewaretoken": token})

    assert response.status_code == 302
    assert len(backups.list_backups(backups_folder)) == 1


# --- restore drills ------------------------------------------------------------------------


def drill_cell(html, name):
    html = html.replace("<wbr>", "")
    row = re.search(
        rf"<tr>\s*<td><code class=\"stanza-name\">{re.escape(name)}</code>.*?</tr>", html, re.S
    )
    return re.search(r'<td class="stanza-drill"[^>]*>(.*?)</td>', row.group(0), re.S).group(1)


def test_it_shows_each_backups_last_drill(staff_client, backups_folder):
    passed = write_backup_file(backups_folder, "database.sqlite.20260103T020000Z.bak")
    failed = write_backup_file(backups_folder, "database.sqlite.20260102T020000Z.bak")
    write_backup_file(backups_folder, "database.sqlite.20260101T020000Z.bak")
    drill.write_manifest(
        passed, {"item": 3}, drill={"at": "2026-01-03T03:00:00+00:00", "ok": True, "problems": []}
    )
    drill.write_manifest(
        failed,
        drill={
            "at": "2026-01-02T03:00:00+00:00",
            "ok": False,
            "problems": ["table item has 2 rows, 3 at backup time", "<script>x</script>"],
        },
    )

    html = staff_client.get(URL).content.decode()

    ok = drill_cell(html, passed.name)
    assert "&#10003; passed" in ok
    assert 'title="Restored into a scratch file and checked"' in ok
    assert '>2026-01-03</span> <span class="stanza-clock">03:00:00 UTC</span></time>' in ok
    bad = drill_cell(html, failed.name)
    assert "<summary>failed" in bad
    assert "<li>table item has 2 rows, 3 at backup time</li>" in bad
    assert "<li>&lt;script&gt;x&lt;/script&gt;</li>" in bad
    assert "not drilled" in drill_cell(html, "database.sqlite.20260101T020000Z.bak")


@pytest.mark.parametrize(
    "manifest",
    ['{"drill": "yes"}', '{"drill": {"ok": "true", "problems": "x"}}', "[1]", "not json"],
)
def test_it_survives_a_manifest_it_cannot_read(staff_client, backups_folder, manifest):
    path = write_backup_file(backups_folder, "database.sqlite.20260103T020000Z.bak")
    path.with_name(path.name + ".json").write_text(manifest)

    response = staff_client.get(URL)

    assert response.status_code == 200
    cell = drill_cell(response.content.decode(), path.name)
    assert "not drilled" in cell or "failed" in cell


def test_it_reads_the_manifests_of_the_rows_shown_only(staff_client, backups_folder, monkeypatch):
    for day in range(1, 29):
        for hour in range(0, 24, 4):
            write_backup_file(
                backups_folder, f"database.sqlite.202602{day:02}T{hour:02}0000Z.bak", checksum=False
            )
    read = []
    real_read = drill.read_manifest
    monkeypatch.setattr(drill, "read_manifest", lambda path: read.append(path) or real_read(path))

    staff_client.get(URL)
    first = list(read)
    read.clear()
    staff_client.get(URL, {"page": 2})

    # The rows shown, each once: the health verdict reads the last drill from its record.
    newest = sorted(backups_folder.glob("*.bak"), reverse=True)
    assert sorted(first, reverse=True) == newest[:50]
    assert sorted(read, reverse=True) == newest[50:100]


def test_it_says_where_alerts_go(staff_client, backups_folder, settings):
    settings.STANZA_ALERT_EMAILS = ""
    nowhere = staff_client.get(URL).content.decode()
    settings.STANZA_ALERT_EMAILS = "ops@example.com, me@example.com"
    somewhere = staff_client.get(URL).content.decode()

    assert "no alert address set" in nowhere
    assert "STANZA_ALERT_EMAILS" in nowhere
    assert "ops@example.com, me@example.com" in somewhere
    assert "no alert address set" not in somewhere


def test_it_shows_sizes_and_counts_in_plain_words(staff_client, backups_folder):
    write_backup_file(backups_folder, "database.sqlite.20260101T020000Z.bak", b"x" * 1_024_000)

    html = staff_client.get(URL).content.decode()

    assert '<span class="stanza-figure" id="backup-count">1 backup</span>' in html
    assert ">1.0\xa0MB<" in html
    assert "1000.0" not in html
    assert formatting.human_size(1_024_000) == "1.0 MB"
    assert formatting.human_size(1) == "1 byte"


def test_each_row_links_to_its_own_download_restore_and_delete(staff_client, backups_folder):
    """The rows' links are made without one reverse() each: they must be reverse()'s links."""
    names = ["database.sqlite.20260101T020000Z.bak", "database.sqlite.20260102T020000Z.manual.bak"]
    for name in names:
        write_backup_file(backups_folder, name, b"x")

    html = staff_client.get(URL).content.decode()

    for name in names:
        for view in ("download", "restore", "delete"):
            assert f'href="{reverse(f"backups:{view}", args=[name])}"' in html
