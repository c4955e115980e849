"""The dashboard as a newcomer meets it (issue 19): no dead ends, failures in one sentence,
times in one format, and words that match what happened."""

import re
from datetime import UTC, datetime, timedelta

import pytest
from django.contrib.admin.models import LogEntry
from django.core.files.uploadedfile import SimpleUploadedFile

from backups_app.engine import backups
from backups_app.web.replication_views import parse_when
from tests.conftest import copy_database, damaged_database

URL = "/admin/backups/"


def messages_of(response):
    return [str(m) for m in response.context["messages"]] if response.context else []


# --- dead ends ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "button", "target"),
    [
        ("/admin/cron/daily-backup/run", "Run now", "/admin/cron/"),
        ("/admin/database/backup", "Back up now", "/admin/backups/"),
        ("/admin/backups/upload", "Upload", "/admin/backups/"),
    ],
)
def test_a_get_on_a_post_only_address_says_to_use_the_button(staff_client, path, button, target):
    response = staff_client.get(path)

    assert response.status_code == 405
    assert response["Allow"] == "POST"
    html = response.content.decode()
    assert f"when the {button} button is pressed" in html
    assert f'<a href="{target}" class="button">' in html
    api = staff_client.get(path, HTTP_ACCEPT="application/json")
    assert api.status_code == 405
    assert "Use POST" in api.json()["error"]


def test_a_get_on_a_post_only_address_changes_nothing(staff_client, live_database, backups_folder):
    staff_client.get("/admin/database/backup")

    assert backups.list_backups(backups_folder) == []


def test_this_sites_root_points_to_the_dashboard(client, db):
    response = client.get("/")

    assert response.status_code == 200
    html = response.content.decode()
    assert '<a href="/admin/backups/">the backups</a>' in html
    assert '<a href="/admin/cron/">the scheduled jobs</a>' in html


def test_the_favicon_is_the_dashboards_icon(client, staff_client):
    response = client.get("/favicon.ico")

    assert response.status_code == 302
    assert response["Location"] == "/static/backups/favicon.svg"
    assert '<link rel="icon" href="/static/backups/favicon.svg"' in (
        staff_client.get("/admin/cron/").content.decode()
    )


# --- a damaged upload ---------------------------------------------------------------------


def test_a_damaged_upload_is_one_sentence_with_the_checks_lines_behind_details(
    staff_client, backups_folder, tmp_path
):
    bad = damaged_database(tmp_path / "damaged.sqlite")
    upload = SimpleUploadedFile("damaged.sqlite", bad.read_bytes())

    response = staff_client.post("/admin/backups/upload", {"file": upload}, follow=True)

    [message] = messages_of(response)
    sentence, _, details = message.partition("\n\n")
    assert sentence == (
        "Upload of damaged.sqlite refused: damaged.sqlite is damaged: SQLite's integrity check "
        "found problems in it. Upload another copy of the backup (this one was damaged on its "
        "way or where it was kept), or restore one from the list."
    )
    assert "index item_name" in details
    html = response.content.decode()
    assert '<details class="stanza-message-details"><summary>details</summary>' in html
    # The audit trail keeps the sentence, not SQLite's lines.
    entry = LogEntry.objects.get()
    assert "\n" not in entry.change_message
    assert "index item_name" not in entry.change_message
    assert backups.list_backups(backups_folder) == []


def test_the_health_box_says_replication_stopped_in_plain_words(
    staff_client, settings, tmp_path, live_database
):
    settings.STANZA_REPLICA_URL = f"file://{tmp_path / 'replica'}"  # and no `replicate` running

    html = staff_client.get(URL).content.decode()
    health = re.sub(r"<[^>]+>", "", html.split('id="health"', 1)[1].split("</section>", 1)[0])

    assert "Start manage.py replicate (scripts/run starts it" in health
    assert "`" not in health  # markdown's code quotes, shown as they are in plain text


# --- delete and the offsite copy ----------------------------------------------------------


def test_delete_says_the_offsite_copy_stays(staff_client, backups_folder, settings):
    settings.STANZA_OFFSITE_URL = "s3://stanza-bucket/site"
    settings.STANZA_OFFSITE_RETENTION_DAYS = 30
    backups_folder.joinpath("database.sqlite.20261201T020000Z.bak").write_bytes(b"x")
    backups_folder.joinpath("database.sqlite.20261202T020000Z.bak").write_bytes(b"y")
    url = "/admin/backups/delete/database.sqlite.20261201T020000Z.bak"

    page = staff_client.get(url).content.decode()
    response = staff_client.post(url, follow=True)

    assert "Its offsite copy in <code>s3://stanza-bucket/site</code>" in page
    assert "is not deleted" in page
    assert "copies older than 30 days" in page
    assert messages_of(response)[0].endswith(
        "Its offsite copy, if one was made, stays in the offsite store."
    )


def test_delete_says_nothing_of_offsite_copies_when_they_are_off(staff_client, backups_folder):
    backups_folder.joinpath("database.sqlite.20261201T020000Z.bak").write_bytes(b"x")

    page = staff_client.get("/admin/backups/delete/database.sqlite.20261201T020000Z.bak")

    assert 'id="delete-offsite"' not in page.content.decode()


# --- the point-in-time picker --------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "zone", "utc"),
    [
        ("2026-12-06 19:42:47", "Europe/Berlin", datetime(2026, 12, 6, 18, 42, 47, tzinfo=UTC)),
        ("2026-07-06T19:42", "Europe/Berlin", datetime(2026, 7, 6, 17, 42, tzinfo=UTC)),
        ("2026-12-06 19:42:47", "", datetime(2026, 12, 6, 19, 42, 47, tzinfo=UTC)),  # site's
        ("2026-12-06 19:42:47", "../../etc/passwd", datetime(2026, 12, 6, 19, 42, 47, tzinfo=UTC)),
        ("2026-12-06 19:42:47", "Nowhere/Atlantis", datetime(2026, 12, 6, 19, 42, 47, tzinfo=UTC)),
        (
            "2026-12-06T19:42:47+05:00",
            "Europe/Berlin",
            datetime(2026, 12, 6, 14, 42, 47, tzinfo=UTC),
        ),
    ],
)
def test_the_picker_reads_the_browsers_local_time(text, zone, utc):
    assert parse_when(text, zone) == utc


# --- what a point-in-time restore is called --------------------------------------------------


def test_the_history_names_the_point_in_time_not_the_scratch_file(
    staff_client, settings, tmp_path, live_database, data_dir
):
    from backups_app.replication import status

    settings.STANZA_REPLICA_URL = f"file://{tmp_path / 'replica'}"
    scratch = type("R", (), {"backup": type("B", (), {"name": ".stanza-tmp-1-ab.partial"})()})
    status.note_restore(scratch())
    before = status.history_path().stat().st_mtime_ns

    status.name_restore("the replica at 2026-12-06 19:42:47 UTC")

    assert status.history()["restored"] == "the replica at 2026-12-06 19:42:47 UTC"
    assert status.history_path().stat().st_mtime_ns == before  # not another restore
    page = staff_client.get(URL).content.decode()
    assert (
        'with the restore of the replica at <time class="stanza-time" '
        'datetime="2026-12-06T19:42:47+00:00"'
    ) in page
    assert ".stanza-tmp" not in page


def test_the_point_in_time_confirmation_lists_what_the_backup_one_does(
    staff_client, settings, tmp_path, migrated_database, site_database_file, data_dir
):
    from tests.test_views_replication import write_status

    copy_database(migrated_database, site_database_file)
    settings.STANZA_REPLICA_URL = f"file://{tmp_path / 'replica'}"
    write_status(site_database_file)
    at = (datetime.now(UTC) - timedelta(hours=1)).strftime("%Y-%m-%d %H:%M:%S")

    html = staff_client.get("/admin/backups/restore-at", {"at": at, "tz": "UTC"}).content.decode()

    assert 'id="restore-kept">Kept as they are now' in html
    assert "run history" in html
    # The test database was migrated after that time: its migrations are named, five of them.
    assert "<strong>Migrations applied since then</strong>" in html
    assert re.search(r"and \d+ more\.</p>", html)
    assert "pre-restore" in html
