"""Every page as a first-time user sees it (issue 19), in Debian's Chromium through Playwright:
at 1280 px with the browser in Europe/Berlin and at 390 px, light and dark, with offsite copies
(moto's S3 on loopback) and replication on.

Each page: nothing scrolls sideways, every button is inside the window, no traceback, exception
class name, scratch file or query string in its text, and every time in the one format, in the
browser's zone. Screenshots of every page go to tests/artifacts/ (ignored by git).
"""

import os
import re

import boto3
import pytest
from playwright.sync_api import expect

from tests.conftest import gunicorn, manage, moto_server
from tests.test_browser import (  # noqa: F401 (fixtures)
    ARTIFACTS,
    CHROMIUM_ARGS,
    GUNICORN_ARGS,
    PASSWORD,
    base_url,
    browser_type_launch_args,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.s3]

BUCKET = "stanza-newcomer"
INTEGRITY_LINES = "\\n".join(
    f"On tree page 2 cell {n}: Rowid {n + 7} out of order" for n in range(30)
)
SEED = f"""
from datetime import timedelta
from django.contrib.auth import get_user_model
from django.utils import timezone
from backups_app.audit import audit
from backups_app.engine import backups
from backups_app.models import CronRun
from backups_app.replication import replication

now = timezone.now()
for label in ("", "manual", "manual"):
    backups.create_backup(label=label)
failed = CronRun.start("copy-offsite", trigger="scheduler")
failed.finish(
    CronRun.Status.FAILURE,
    error=(
        "Traceback (most recent call last):\\n  File \\"botocore/endpoint.py\\", line 1, in x\\n"
        "botocore.exceptions.EndpointConnectionError: Could not connect to the endpoint URL: "
        "\\"http://127.0.0.1:9/{BUCKET}?list-type=2&prefix=site%2F&encoding-type=url\\"\\n\\n"
        "During handling of the above exception, another exception occurred:\\n\\n"
        + "Traceback (most recent call last):\\n"
        + "".join(f"  File \\"backups_app/offsite/offsite.py\\", line {{n}}, in copy\\n    x = y\\n"
                  for n in range(40))
        + "backups_app.offsite.store.OffsiteError: the offsite store at s3://{BUCKET}/site is "
        "unreachable: Could not connect to the endpoint URL: "
        "\\"http://127.0.0.1:9/{BUCKET}?list-type=2&prefix=site%2F&encoding-type=url\\"\\n"
    ),
)
CronRun.objects.filter(pk=failed.pk).update(started_at=now - timedelta(hours=3))
admin = get_user_model().objects.get(username="admin")
# What an older version wrote into the audit trail for a damaged upload.
audit(admin, "Upload of bad.sqlite refused: bad.sqlite failed the integrity check: "
      "*** in database main ***\\n{INTEGRITY_LINES}")


class Result:
    class backup:
        name = ".stanza-tmp-21246-6add8b86.partial"


replication.note_restore(Result())  # as a point-in-time restore recorded it before the fix
"""


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """gunicorn serving the site with offsite copies to moto and a file replica configured."""
    folder = tmp_path_factory.mktemp("newcomer")
    data = folder / "data"
    with moto_server(folder) as aws:
        boto3.client("s3", endpoint_url=aws["AWS_ENDPOINT_URL"], **s3_keys(aws)).create_bucket(
            Bucket=BUCKET
        )
        env = {
            **os.environ,
            **aws,
            "STANZA_DATA_DIR": str(data),
            "STANZA_ADMIN_PASSWORD": PASSWORD,
            "STANZA_OFFSITE_URL": f"s3://{BUCKET}/site",
            "STANZA_REPLICA_URL": f"file://{folder / 'replica'}",
            "DJANGO_DEBUG": "false",
        }
        env.pop("DJANGO_SETTINGS_MODULE", None)
        env.pop("AWS_CA_BUNDLE", None)
        for args in (
            ["migrate", "--no-input"],
            ["ensureadmin"],
            ["collectstatic", "--no-input", "-v0"],
            ["shell", "-c", SEED],
            ["runjob", "copy-offsite"],
            ["runjob", "verify-latest-backup"],
        ):
            result = manage(*args, env=env)
            assert result.returncode == 0, (args, result.stdout, result.stderr)
        # The oldest backup deleted here by hand: it is offsite only now.
        backups_dir = data / "backups"
        oldest = sorted(p.name for p in backups_dir.glob("*.bak"))[0]
        for path in backups_dir.glob(f"{oldest}*"):
            path.unlink()
        with gunicorn(env, *GUNICORN_ARGS) as url:
            yield {"url": url, "data": data, "backups": backups_dir, "offsite_only": oldest}


def s3_keys(aws):
    return {
        "aws_access_key_id": aws["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": aws["AWS_SECRET_ACCESS_KEY"],
        "region_name": aws["AWS_DEFAULT_REGION"],
    }


def log_in(page, stack):
    page.goto(stack["url"] + "/admin/login/?next=/admin/backups/")
    page.fill("#id_username", "admin")
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    expect(page).to_have_url(stack["url"] + "/admin/backups/")


def pages_of(page, stack):
    """{label: path} of every page a staff user can open."""
    page.goto(stack["url"] + "/admin/backups/")
    name = page.locator("#backups code.stanza-name").first.inner_text()
    page.goto(stack["url"] + "/admin/cron/?status=failure")
    failed = page.locator("#runs a.stanza-run-link").first.get_attribute("href")
    return {
        "backups": "/admin/backups/",
        "cron": "/admin/cron/",
        "run-failed": failed,
        "run-history": "/admin/backups_app/cronrun/",
        "restore-confirm": f"/admin/backups/restore/{name}",
        "delete-confirm": f"/admin/backups/delete/{name}",
        "restore-at-confirm": (
            "/admin/backups/restore-at?at=2026-12-06+19%3A42%3A47&tz=Europe%2FBerlin"
        ),
        "admin-index": "/admin/",
        "post-only": "/admin/cron/daily-backup/run",
        "bad-name": "/admin/backups/delete/..%2Fdatabase.sqlite",
        "home": "/",
    }


OVERFLOW = """() => {
    const width = document.documentElement.clientWidth;
    const out = [];
    if (document.documentElement.scrollWidth > width) {
        out.push("page " + document.documentElement.scrollWidth + " > " + width);
    }
    const boxes = ".stanza-table-module, .module, #changelist .results";
    document.querySelectorAll(boxes).forEach((el) => {
        if (el.scrollWidth > el.clientWidth + 1) {
            out.push((el.id || el.className) + " scrolls " + el.scrollWidth + "/" + el.clientWidth);
        }
    });
    document.querySelectorAll("button, input[type=submit], a.button").forEach((el) => {
        const box = el.getBoundingClientRect();
        if (box.width === 0 || el.closest("details:not([open])")) { return; }
        if (box.left < 0 || box.right > width + 0.5) {
            out.push("button outside: " + el.textContent.trim() + " " + box.left + "-" + box.right);
        }
    });
    return out;
}"""

# What a person must never read on a page.
NEVER = {
    "a traceback": re.compile(r"Traceback"),
    "an exception class name": re.compile(r"\b[A-Z]\w*(?:Error|Exception)\b"),
    "a scratch file": re.compile(r"\.stanza-tmp"),
    "a query string": re.compile(r"\?list-type"),
    "a raw ISO time": re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d"),
    "SQLite's check output": re.compile(r"On tree page"),
    "markdown in plain text": re.compile(r"`"),
}
LOCAL_TIME = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d (GMT\+1|CET)$")


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_every_page_fits_and_reads_plainly_in_berlin_and_on_a_phone(browser, stack, scheme):
    context = browser.new_context(timezone_id="Europe/Berlin", color_scheme=scheme)
    page = context.new_page()
    problems = {}
    try:
        log_in(page, stack)
        for label, path in pages_of(page, stack).items():
            for width, height in ((1280, 800), (390, 844)):
                page.set_viewport_size({"width": width, "height": height})
                page.goto(stack["url"] + path)
                ARTIFACTS.mkdir(exist_ok=True)
                page.screenshot(
                    path=str(ARTIFACTS / f"newcomer-{label}-{width}-{scheme}.png"), full_page=True
                )
                found = page.evaluate(OVERFLOW)
                text = page.locator("body").inner_text()
                found += [what for what, pattern in NEVER.items() if pattern.search(text)]
                times = page.locator("time.stanza-time").all_inner_texts()
                found += [f"time {t!r}" for t in times if not LOCAL_TIME.match(" ".join(t.split()))]
                if found:
                    problems[f"{label} at {width}"] = found
    finally:
        context.close()
    assert not problems, problems


def test_the_cron_page_keeps_run_now_and_schedules_whole_at_1280_in_berlin(browser, stack):
    context = browser.new_context(timezone_id="Europe/Berlin")
    page = context.new_page()
    try:
        page.set_viewport_size({"width": 1280, "height": 800})
        log_in(page, stack)
        page.goto(stack["url"] + "/admin/cron/")

        module = page.locator(".stanza-table-module").first
        assert module.evaluate("el => el.scrollWidth <= el.clientWidth")
        for button in page.locator("#jobs button.stanza-run").all():
            box = button.bounding_box()
            assert box["x"] + box["width"] <= 1280
        for code in page.locator("#jobs code.stanza-cron").all():
            assert code.evaluate("el => el.getClientRects().length") == 1  # one line
    finally:
        context.close()


def test_the_offsite_and_replication_panels_read_as_what_happened(browser, stack):
    context = browser.new_context(timezone_id="Europe/Berlin")
    page = context.new_page()
    try:
        page.set_viewport_size({"width": 1280, "height": 800})
        log_in(page, stack)

        only = page.locator("#offsite-only")
        expect(only).to_contain_text(stack["offsite_only"])
        expect(only.locator("caption")).to_contain_text("no longer in the backups folder")
        expect(only.locator("caption")).not_to_contain_text("local retention removed them")
        expect(page.locator("#replication-history")).to_contain_text(
            "a point in time from the replica"
        )
        expect(page.locator("#restore-at-form label")).to_contain_text("Europe/Berlin time")
        assert page.locator("#restore-at-form input[name=tz]").input_value() == "Europe/Berlin"
        # The health and replication boxes are as wide as the rows around them.
        table = page.locator(".stanza-table-module").first.bounding_box()["width"]
        for box in ("#health", "#replication"):
            assert page.locator(box).bounding_box()["width"] >= table - 2, box
    finally:
        context.close()


def test_a_failed_runs_page_leads_with_the_reason_and_folds_the_traceback(browser, stack):
    context = browser.new_context(timezone_id="Europe/Berlin")
    page = context.new_page()
    try:
        page.set_viewport_size({"width": 1280, "height": 800})
        log_in(page, stack)
        page.goto(stack["url"] + "/admin/cron/?status=failure")
        page.locator("#runs a.stanza-run-link").first.click()

        expect(page.locator("#run-explained")).to_contain_text(
            f"The offsite store at s3://{BUCKET}/site is unreachable"
        )
        expect(page.locator("pre.stanza-traceback")).not_to_be_visible()
        page.locator("#error-output summary").click()
        expect(page.locator("pre.stanza-traceback")).to_be_visible()
        expect(page.locator("pre.stanza-traceback")).to_contain_text("OffsiteError")

        # The Cron page's link to the error output opens it unfolded.
        page.goto(stack["url"] + "/admin/cron/?status=failure")
        page.locator("#runs .stanza-details-link").first.click()
        expect(page.locator("pre.stanza-traceback")).to_be_visible()
    finally:
        context.close()


def test_the_admin_index_links_back_up_now_and_the_site_has_no_dead_ends(browser, stack):
    context = browser.new_context()
    page = context.new_page()
    missing = []
    page.on("response", lambda r: missing.append(r.url) if r.status == 404 else None)
    try:
        log_in(page, stack)
        page.goto(stack["url"] + "/admin/")
        page.get_by_role("link", name="View site").click()
        expect(page).to_have_url(stack["url"] + "/")
        page.get_by_role("link", name="the backups").click()
        expect(page).to_have_url(stack["url"] + "/admin/backups/")

        page.goto(stack["url"] + "/admin/cron/daily-backup/run")
        expect(page.locator("#post-only")).to_contain_text("Run now")
        page.get_by_role("link", name="Go to the Cron page").click()
        expect(page).to_have_url(stack["url"] + "/admin/cron/")
        assert not missing, missing  # /favicon.ico included
    finally:
        context.close()
