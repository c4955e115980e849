"""The dashboard in a real browser (Debian's Chromium through Playwright) against gunicorn.

One stack for the module: a fresh data folder, `migrate`, `ensureadmin`, `collectstatic`, a
seeded run history, and gunicorn started the way `scripts/run` starts it (DEBUG off, static
files through whitenoise). Each test logs in and drives the pages like a person would.
Screenshots of every page land in tests/artifacts/ (ignored by git).
"""

import hashlib
import json
import os
import re
import sqlite3
import urllib.request
from pathlib import Path

import pytest
from playwright.sync_api import expect

from backups_app.engine.backups import is_backup_name, verify_database
from tests.conftest import REPO_DIR, gunicorn, manage

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ARTIFACTS = Path(__file__).parent / "artifacts"
PASSWORD = "browser-test-password-1"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
# The same worker setup as scripts/run.
GUNICORN_ARGS = [
    *("--workers", "2", "--worker-class", "gthread", "--threads", "4"),
    "--no-control-socket",
]

SEED = """
from datetime import timedelta
from django.utils import timezone
from backups_app.engine import backups
from backups_app.models import CronRun

now = timezone.now()
ok = CronRun.start("daily-backup", trigger="scheduler")
ok.finish(CronRun.Status.SUCCESS, result="database.sqlite.X.bak (120 KB)")
CronRun.objects.filter(pk=ok.pk).update(started_at=now - timedelta(days=1, minutes=5))
bad = CronRun.start("daily-backup", trigger="scheduler")
bad.finish(
    CronRun.Status.FAILURE,
    error="Traceback (most recent call last):\\n  File \\"backups_app/jobs.py\\", line 60\\n"
    "backups_app.engine.backups.BackupError: disk full while writing to /srv/backups; "
    "the partial backup was removed\\n",
)
CronRun.objects.filter(pk=bad.pk).update(started_at=now - timedelta(hours=2))
backups.create_backup()
"""


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args):
    """Debian's Chromium: Playwright cannot download its own browser here."""
    return {
        **browser_type_launch_args,
        "executable_path": "/usr/bin/chromium",
        "args": CHROMIUM_ARGS,
    }


@pytest.fixture(scope="session")
def base_url():
    """Replaces pytest-playwright's (a class method pytest 9 deprecates); tests use full URLs."""
    return None


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """gunicorn serving the site on a free port, on a data folder of its own."""
    data = tmp_path_factory.mktemp("stack") / "data"
    env = {
        **os.environ,
        "STANZA_DATA_DIR": str(data),
        "STANZA_ADMIN_PASSWORD": PASSWORD,
        "DJANGO_DEBUG": "false",
    }
    env.pop("DJANGO_SETTINGS_MODULE", None)
    for args in (
        ["migrate", "--no-input"],
        ["ensureadmin"],
        ["collectstatic", "--no-input", "-v0"],
        ["shell", "-c", SEED],
    ):
        result = manage(*args, env=env)
        assert result.returncode == 0, result.stderr

    with gunicorn(env, *GUNICORN_ARGS) as url:
        yield {"url": url, "data": data, "backups": data / "backups"}


def shoot(page, name):
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def log_in(page, stack, path="/admin/backups/"):
    page.goto(stack["url"] + path)
    expect(page).to_have_url(re.compile(r"/admin/login/\?next="))
    page.fill("#id_username", "admin")
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    expect(page).to_have_url(stack["url"] + path)


def backup_names(page):
    return page.locator("#backups code.stanza-name").all_inner_texts()


def test_it_backs_up_now_and_shows_the_new_row_and_message(page, stack):
    page.set_viewport_size({"width": 1280, "height": 800})
    page.goto(stack["url"] + "/admin/backups/")
    shoot(page, "login")
    log_in(page, stack)
    before = backup_names(page)
    assert len(before) == 1

    page.click("text=Back up now")

    message = page.locator(".messagelist .success")
    expect(message).to_contain_text("made")
    after = backup_names(page)
    assert len(after) == 2
    new = after[0]
    assert new not in before
    assert ".manual.bak" in new
    assert new in message.inner_text()
    assert (stack["backups"] / new).is_file()
    expect(page.locator("#backup-count")).to_have_text("2 backups")
    expect(page.locator("#backups tbody tr").first).to_contain_text("manual")
    shoot(page, "backups")


def test_it_downloads_a_backup_byte_for_byte(page, stack):
    log_in(page, stack)
    name = backup_names(page)[0]

    with page.expect_download() as info:
        page.locator("#backups tbody tr").first.get_by_text("Download").click()

    download = info.value
    assert download.suggested_filename == name
    on_disk = (stack["backups"] / name).read_bytes()
    assert Path(download.path()).read_bytes() == on_disk
    recorded = (stack["backups"] / f"{name}.sha256").read_text().split()[0]
    assert hashlib.sha256(on_disk).hexdigest() == recorded


def test_it_shows_the_cron_page_with_a_failed_run_and_the_next_run(page, stack):
    page.set_viewport_size({"width": 1280, "height": 800})
    log_in(page, stack, "/admin/cron/")

    row = page.locator("#job-daily-backup")
    expect(row).to_contain_text("At 02:00 every day")
    expect(row).to_contain_text("Failure")
    expect(row).to_contain_text("failing")
    expect(row.locator(".stanza-next-run time")).to_have_text(
        re.compile(r"\d{4}-\d\d-\d\d 02:00:00 UTC")
    )
    expect(row).to_contain_text("scheduler not running")
    # Never-run jobs say so, with when they are first due, not "ok".
    expect(page.locator("#job-purge-old-backups .stanza-job-health")).to_contain_text("never run")
    expect(page.locator("#job-purge-old-backups .stanza-job-health")).to_contain_text("first due")

    # The failure in words; no traceback on the page.
    failed = page.locator("#runs tr.stanza-run-failure").first
    expect(failed).to_contain_text("Disk full while writing to /srv/backups")
    expect(failed).to_contain_text("Free some space in the backups folder")
    expect(failed).not_to_contain_text("Traceback")
    shoot(page, "cron")

    # One click away: the run's own page, with the whole error output full width.
    failed.get_by_role("link", name="Error output").click()
    expect(page).to_have_url(re.compile(r"/admin/cron/runs/\d+/#error-output$"))
    traceback = page.locator("pre.stanza-traceback")
    expect(traceback).to_contain_text("BackupError: disk full while writing to /srv/backups")
    expect(page.locator("#run-explained")).to_contain_text("Free some space")
    content = page.locator("#content").bounding_box()
    assert traceback.bounding_box()["width"] > content["width"] * 0.9
    shoot(page, "run-detail")


def test_it_navigates_the_run_history_in_the_admin(page, stack):
    page.set_viewport_size({"width": 1280, "height": 800})
    log_in(page, stack, "/admin/backups_app/cronrun/")

    # Every job (and restores) is in the filter before it ran.
    sidebar = page.locator("#changelist-filter")
    for name in ("daily-backup", "purge-old-backups", "verify-latest-backup", "restore"):
        expect(sidebar.get_by_role("link", name=name, exact=True)).to_be_visible()
    # The result column is not cut off: the table fits its box at 1280 px.
    results = page.locator("#changelist .results")
    assert results.evaluate("el => el.scrollWidth <= el.clientWidth")
    expect(page.locator("#result_list")).to_contain_text("Free some space in the backups folder")
    shoot(page, "run-history-admin")

    page.locator("#result_list tbody tr th a").first.click()

    expect(page).to_have_url(re.compile(r"/admin/cron/runs/\d+/$"))
    expect(page.locator("#run-facts")).to_contain_text("daily-backup")


def test_it_runs_a_job_now_from_the_cron_page(page, stack):
    page.set_viewport_size({"width": 1280, "height": 800})
    log_in(page, stack, "/admin/cron/")
    files_before = set(os.listdir(stack["backups"]))

    page.locator("#job-daily-backup").get_by_role("button", name="Run now").click()

    expect(page.locator(".messagelist .success")).to_contain_text("Job daily-backup succeeded")
    expect(page.locator("#job-daily-backup")).to_contain_text("Success")
    newest = page.locator("#runs tbody tr").first
    expect(newest).to_contain_text("run by admin with Run now")
    expect(newest).to_contain_text("Success")
    expect(page.locator(".stanza-audit")).to_contain_text("Ran job daily-backup by hand: success")
    new = set(os.listdir(stack["backups"])) - files_before
    [made] = [name for name in new if name.endswith(".bak")]
    sidecars = {f"{made}.sha256", f"{made}.json"}
    assert sidecars <= new <= {made, *sidecars, f"{made}.media"}  # .media: the site's files
    shoot(page, "cron-after-run-now")


def test_it_lists_the_dashboard_on_the_admin_index(page, stack):
    page.set_viewport_size({"width": 1280, "height": 800})
    log_in(page, stack, "/admin/")

    page.get_by_role("link", name="Cron jobs").first.click()

    expect(page).to_have_url(stack["url"] + "/admin/cron/")
    page.goto(stack["url"] + "/admin/")
    shoot(page, "admin-index")


def test_two_clicks_at_once_never_make_a_broken_backup(page, stack):
    log_in(page, stack)
    before = set(backup_names(page))

    statuses = page.evaluate(
        """async () => {
            const token = document.querySelector("[name=csrfmiddlewaretoken]").value;
            const post = () => fetch("/admin/database/backup", {
                method: "POST",
                headers: {"X-CSRFToken": token, "Accept": "application/json"},
            }).then(async (r) => [r.status, await r.json()]);
            return Promise.all([post(), post()]);
        }"""
    )

    assert sorted(status for status, _ in statuses) in ([200, 200], [200, 409])
    for status, body in statuses:
        if status == 409:
            assert re.fullmatch(
                r"a backup is running \(by admin, since \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC\); "
                r"try again when it has finished",
                body["error"],
            )
    page.reload()
    new = set(backup_names(page)) - before
    assert len(new) == sum(1 for status, _ in statuses if status == 200)
    for name in new:
        assert is_backup_name(name)
        verify_database(stack["backups"] / name, {"django_migrations", "cron_runs"})
    assert not [n for n in os.listdir(stack["backups"]) if n.startswith(".stanza-tmp-")]


def test_it_serves_static_files_and_plain_error_pages(stack):
    with urllib.request.urlopen(f"{stack['url']}/static/backups/dashboard.css") as response:
        assert response.status == 200
        assert b".stanza-card" in response.read()
    try:
        urllib.request.urlopen(f"{stack['url']}/no/such/page")
    except urllib.error.HTTPError as err:
        body = err.read().decode()
        assert err.code == 404
        assert "Page not found" in body
        assert str(REPO_DIR) not in body
        assert "Traceback" not in body
    else:
        raise AssertionError("expected a 404")


def test_back_up_now_says_it_is_working_and_cannot_be_clicked_twice(page, stack):
    page.set_viewport_size({"width": 1280, "height": 800})
    log_in(page, stack)
    before = len(backup_names(page))
    # Hold the form's submission, to look at the button while the request would be running.
    page.evaluate(
        """() => document.querySelector("#backup-now").form.addEventListener(
            "submit", (event) => { window.submits = (window.submits || 0) + 1;
                                   event.preventDefault(); })"""
    )

    page.click("#backup-now")

    button = page.locator("#backup-now")
    expect(button).to_be_disabled()
    expect(button).to_have_text(re.compile("Backing up"))
    button.click(force=True)  # a second click on the disabled button does nothing
    assert page.evaluate("window.submits") == 1
    assert page.locator("#backup-now").evaluate("b => b.form.getAttribute('aria-busy')") == "true"
    page.reload()
    assert len(backup_names(page)) == before


def test_it_shows_times_in_the_browsers_zone_with_utc_on_hover(browser, stack):
    context = browser.new_context(timezone_id="America/New_York")
    page = context.new_page()
    try:
        log_in(page, stack)
        stamp = page.locator("#backups tbody tr").first.locator("time.stanza-time")
        utc = stamp.get_attribute("title")
        assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", utc)
        expect(stamp).to_have_text(re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d (EST|EDT)$"))
        expect(page.locator("#backups tbody tr").first).to_contain_text("ago")
    finally:
        context.close()


def test_it_shows_the_sha256_and_copies_it(browser, stack):
    context = browser.new_context(permissions=["clipboard-read", "clipboard-write"])
    page = context.new_page()
    try:
        log_in(page, stack)
        row = page.locator("#backups tbody tr").first
        name = row.locator("code.stanza-name").inner_text()
        recorded = (stack["backups"] / f"{name}.sha256").read_text().split()[0]
        expect(row.locator("code.stanza-sha")).to_have_text(recorded)

        row.get_by_role("button", name=re.compile("Copy the SHA-256")).click()

        expect(row.get_by_role("button", name=re.compile("Copy the SHA-256"))).to_have_text(
            "Copied"
        )
        assert page.evaluate("navigator.clipboard.readText()") == recorded
    finally:
        context.close()


def test_the_admin_index_pages_and_healthz_give_one_verdict(page, stack):
    page.set_viewport_size({"width": 1280, "height": 800})
    log_in(page, stack, "/admin/")
    with urllib.request.urlopen(urllib.request.Request(f"{stack['url']}/healthz")) as response:
        expected = json.loads(response.read())["problems"] if response.status != 200 else []
    shown = {}
    for path in ("/admin/", "/admin/backups/", "/admin/cron/"):
        page.goto(stack["url"] + path)
        shown[path] = page.locator("#health li").evaluate_all(
            "items => items.map((li) => li.dataset.problem)"
        )
    assert all(problems == expected for problems in shown.values()), (expected, shown)
    page.goto(stack["url"] + "/admin/")
    expect(page.locator("#health")).to_be_visible()
    expect(page.get_by_role("link", name="View site")).to_have_attribute("href", "/")
    expect(page.locator("#content-main")).not_to_contain_text("Django job executions")


def test_it_deletes_a_backup_after_asking(page, stack):
    page.set_viewport_size({"width": 1280, "height": 800})
    log_in(page, stack)
    page.click("text=Back up now")
    expect(page.locator(".messagelist .success")).to_contain_text("made")
    name = backup_names(page)[0]

    page.locator("#backups tbody tr", has_text=name).get_by_role("link", name="Delete").click()

    expect(page).to_have_url(stack["url"] + f"/admin/backups/delete/{name}")
    expect(page.locator("#delete-warning")).to_contain_text("cannot be undone")
    expect(page.locator("#delete-last")).to_have_count(0)
    assert (stack["backups"] / name).exists()  # nothing changed yet
    shoot(page, "delete-confirm")
    page.click("#delete-confirm")

    expect(page.locator(".messagelist .success")).to_contain_text(f"Deleted {name}")
    assert name not in backup_names(page)
    assert not [p for p in os.listdir(stack["backups"]) if p.startswith(name)]
    expect(page.locator(".stanza-audit")).to_contain_text(f"Deleted backup {name}")

    page.goto(stack["url"] + "/admin/backups/delete/..%2F..%2Fdatabase.sqlite")
    expect(page.locator("#name-problem")).to_contain_text("not the name of a backup")
    expect(page.locator("#nav-sidebar")).to_have_count(1)


PAGE_FITS = """() => document.documentElement.scrollWidth <= window.innerWidth"""


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_no_page_is_wider_than_a_phone(browser, stack, scheme):
    """At 390 px nothing scrolls sideways; screenshots at 1280 and 390 px to look at."""
    context = browser.new_context(color_scheme=scheme)
    page = context.new_page()
    try:
        log_in(page, stack)
        name = backup_names(page)[0]
        page.goto(stack["url"] + "/admin/cron/")
        run_path = page.locator("#runs a.stanza-run-link").first.get_attribute("href")
        pages = {
            "backups": "/admin/backups/",
            "cron": "/admin/cron/",
            "run-history": "/admin/backups_app/cronrun/",
            "run-detail": run_path,
            "restore-confirm": f"/admin/backups/restore/{name}",
            "delete-confirm": f"/admin/backups/delete/{name}",
            "admin-index": "/admin/",
        }
        too_wide = {}
        for label, path in pages.items():
            for width, height in ((1280, 800), (390, 844)):
                page.set_viewport_size({"width": width, "height": height})
                page.goto(stack["url"] + path)
                shoot(page, f"{label}-{width}-{scheme}")
                if width == 390 and not page.evaluate(PAGE_FITS):
                    too_wide[label] = page.evaluate("document.documentElement.scrollWidth")
        assert not too_wide, f"wider than 390 px: {too_wide}"
    finally:
        context.close()


# --- restore and upload (these change the stack's database: keep them last) -----------------


TABLE_FITS = """() => {
    const module = document.querySelector(".stanza-table-module");
    return module.scrollWidth <= module.clientWidth;
}"""


def group_names(stack):
    conn = sqlite3.connect(f"file:{stack['data'] / 'database.sqlite'}?mode=ro", uri=True)
    try:
        return {name for (name,) in conn.execute("SELECT name FROM auth_group")}
    finally:
        conn.close()


def test_it_restores_a_backup_from_the_backups_page(page, stack):
    page.set_viewport_size({"width": 1280, "height": 800})
    log_in(page, stack)
    page.click("text=Back up now")
    expect(page.locator(".messagelist .success")).to_contain_text("made")
    name = backup_names(page)[0]
    # Data changed after the backup, through the admin.
    page.goto(stack["url"] + "/admin/auth/group/add/")
    page.fill("#id_name", "made after the backup")
    page.click("input[name=_save]")
    expect(page.locator(".messagelist .success")).to_contain_text("made after the backup")
    assert "made after the backup" in group_names(stack)

    page.goto(stack["url"] + "/admin/backups/")
    page.locator("#backups tbody tr", has_text=name).get_by_role("link", name="Restore").click()

    expect(page).to_have_url(stack["url"] + f"/admin/backups/restore/{name}")
    expect(page.locator("#restore-backup")).to_contain_text(name)
    expect(page.locator("#restore-checks")).to_contain_text("sound")
    expect(page.locator("#restore-checks")).to_contain_text("matches its .sha256 checksum")
    expect(page.locator("#restore-warning")).to_contain_text("pre-restore safety backup")
    expect(page.locator("#restore-kept")).to_contain_text("audit of dashboard actions")
    assert "made after the backup" in group_names(stack)  # nothing changed yet
    shoot(page, "restore-confirm")

    page.click("#restore-confirm")

    expect(page).to_have_url(stack["url"] + "/admin/backups/")
    message = page.locator(".messagelist .success")
    expect(message).to_contain_text(f"Restored {name}.")
    expect(message).to_contain_text(".pre-restore.bak")
    safety = re.search(r"safety backup (\S+\.pre-restore\.bak)", message.inner_text()).group(1)
    assert backup_names(page)[0] == safety
    assert "made after the backup" not in group_names(stack)
    expect(page.locator(".stanza-audit")).to_contain_text(f"Restored backup {name}")
    # The audit made after the backup was kept through the restore.
    expect(page.locator(".stanza-audit")).to_contain_text(f"Made backup {name}")
    page.goto(stack["url"] + "/admin/auth/group/")
    expect(page.locator("#content")).not_to_contain_text("made after the backup")

    # A restore drill of the newest backup (the safety backup) shows on the page.
    env = {"STANZA_DATA_DIR": str(stack["data"])}
    drill = "from backups_app.restore import drill; drill.verify_latest_backup()"
    assert manage("shell", "-c", drill, env=env).returncode == 0
    page.goto(stack["url"] + "/admin/backups/")
    expect(page.locator("#backups tbody tr").first.locator(".stanza-drill")).to_contain_text(
        "passed"
    )
    shoot(page, "backups-after-restore")
    assert page.evaluate(TABLE_FITS), "the backups table scrolls sideways at 1280 px"


def test_it_asks_to_log_in_again_after_restoring_an_older_database(page, stack):
    page.set_viewport_size({"width": 1280, "height": 800})
    log_in(page, stack)
    oldest = backup_names(page)[-1]  # the stack's first backup: made before anyone logged in
    page.goto(stack["url"] + f"/admin/backups/restore/{oldest}")

    page.click("#restore-confirm")

    expect(page).to_have_url(re.compile(r"/admin/login/\?next=/admin/backups/$"))
    messages = page.locator(".messagelist")
    expect(messages).to_contain_text(f"Restored {oldest}.")
    expect(messages).to_contain_text("please log in again")
    shoot(page, "restore-logged-out")
    page.fill("#id_username", "admin")
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    expect(page).to_have_url(stack["url"] + "/admin/backups/")
    expect(page.locator(".stanza-audit")).to_contain_text(f"Restored backup {oldest}")


def test_it_uploads_a_backup_and_refuses_a_file_that_is_not_one(page, stack, tmp_path):
    page.set_viewport_size({"width": 1280, "height": 800})
    log_in(page, stack)
    oldest = backup_names(page)[-1]
    copy = tmp_path / "copy.bak"
    copy.write_bytes((stack["backups"] / oldest).read_bytes())
    elsewhere = tmp_path / "from-another-machine.sqlite"  # the same site, other data
    source = sqlite3.connect(f"file:{copy}?mode=ro", uri=True)
    dest = sqlite3.connect(elsewhere, isolation_level=None)
    source.backup(dest)
    dest.execute("INSERT INTO auth_group (name) VALUES ('only on the other machine')")
    dest.close()
    source.close()
    not_one = tmp_path / "notes.txt"
    not_one.write_text("not a backup\n" * 100)

    page.set_input_files("#upload-file", str(not_one))
    page.click("#upload")
    expect(page.locator(".messagelist .error")).to_contain_text(
        "Upload of notes.txt refused: notes.txt is not an SQLite database"
    )

    page.set_input_files("#upload-file", str(copy))
    page.click("#upload")
    expect(page.locator(".messagelist .error")).to_contain_text(
        f"Upload of copy.bak refused: it is the same file as the backup {oldest}"
    )

    page.set_input_files("#upload-file", str(elsewhere))
    page.click("#upload")

    message = page.locator(".messagelist .success")
    expect(message).to_contain_text("Uploaded from-another-machine.sqlite")
    kept = re.search(r"kept as (\S+\.uploaded\.bak)", message.inner_text()).group(1)
    assert backup_names(page)[0] == kept
    assert (stack["backups"] / kept).read_bytes() == elsewhere.read_bytes()
    expect(page.locator("#backups tbody tr").first).to_contain_text("uploaded")
    assert not list((stack["data"] / ".stanza-uploads").iterdir())
    shoot(page, "backups-after-upload")
