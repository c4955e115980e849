"""The "Back up now" button shows how far the backup got while its request runs (issue 20),
in Debian's Chromium against gunicorn: a site-files folder of 20,000 files takes the files
step a few seconds, the page polls `?progress` meanwhile, and the words appear under the
button before the success message."""

import json
import os
import re
import time

import pytest
from playwright.sync_api import expect

from tests.conftest import gunicorn, manage
from tests.test_browser import (  # noqa: F401 (fixtures)
    ARTIFACTS,
    GUNICORN_ARGS,
    PASSWORD,
    base_url,
    browser_type_launch_args,
)
from tests.test_browser_newcomer import OVERFLOW

pytestmark = [pytest.mark.browser, pytest.mark.slow]

JSON = {"Accept": "application/json"}  # what the page's own poll sends
FILES = 20_000  # about 3 s of recording here (hashed and stored once each)
# Keeps every text the progress box shows (its local times included) in sessionStorage.
WATCH = """() => {
    const box = document.getElementById("operation");
    new MutationObserver(() => {
        if (box.hidden) { return; }
        const shown = JSON.parse(sessionStorage.getItem("shown") || "[]");
        shown.push(box.innerText);
        sessionStorage.setItem("shown", JSON.stringify(shown));
    }).observe(box, { childList: true, subtree: true, characterData: true, attributes: true });
}"""


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    data = tmp_path_factory.mktemp("progress") / "data"
    env = {
        **os.environ,
        "STANZA_DATA_DIR": str(data),
        "STANZA_ADMIN_PASSWORD": PASSWORD,
        "DJANGO_DEBUG": "false",
    }
    env.pop("DJANGO_SETTINGS_MODULE", None)
    setup = (["migrate", "--no-input"], ["ensureadmin"], ["collectstatic", "--no-input", "-v0"])
    for args in setup:
        result = manage(*args, env=env)
        assert result.returncode == 0, result.stderr
    media = data / "media"  # this site's MEDIA_ROOT: the site files every backup records
    for n in range(FILES):
        folder = media / f"uploads-{n % 100:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"invoice-{n}.pdf").write_bytes(os.urandom(2048) + n.to_bytes(4, "big"))
    with gunicorn(env, *GUNICORN_ARGS) as url:
        yield {"url": url, "data": data}


def test_back_up_now_shows_the_files_step_then_the_success_message(browser, stack):
    context = browser.new_context(timezone_id="Europe/Berlin")
    page = context.new_page()
    asked = []
    page.on("request", lambda r: asked.append(r.url) if r.url.endswith("?progress") else None)
    try:
        page.set_viewport_size({"width": 1280, "height": 800})
        page.goto(stack["url"] + "/admin/login/?next=/admin/backups/")
        page.fill("#id_username", "admin")
        page.fill("#id_password", PASSWORD)
        page.click("input[type=submit]")
        expect(page).to_have_url(stack["url"] + "/admin/backups/")
        expect(page.locator("#operation")).to_be_hidden()

        # What the page shows while its request runs, kept where the next page can read it
        # (Playwright reaches a page only once its navigation ends, as a person's eyes do not).
        page.evaluate(WATCH)

        page.click("#backup-now", no_wait_after=True)
        # The click only sends the POST: wait until the server has begun the backup (its
        # lock taken), or the page below could be served before the backup starts.
        began = time.monotonic()
        progress = stack["url"] + "/admin/backups/?progress"
        while not context.request.get(progress, headers=JSON).json()["running"]:
            assert time.monotonic() - began < 30, "the backup never started"
            time.sleep(0.05)

        # Meanwhile the Backups page, opened afresh on a phone, says what runs (server-rendered).
        other = context.new_page()
        other.set_viewport_size({"width": 390, "height": 844})
        other.goto(stack["url"] + "/admin/backups/")
        running = other.locator("#operation")
        expect(running).to_be_visible()
        expect(running).to_contain_text("A backup is running, started by admin")
        assert other.evaluate(OVERFLOW) == []
        ARTIFACTS.mkdir(exist_ok=True)
        other.screenshot(path=str(ARTIFACTS / "backup-progress-390.png"), full_page=True)

        success = page.locator(".messagelist .success")
        expect(success).to_contain_text(re.compile(r"Backup \S+ made"), timeout=60_000)
        # The page opened meanwhile followed the backup to its end.
        expect(running).to_have_text("It has finished: reload the page to see what it did.")
        shown = json.loads(page.evaluate("() => sessionStorage.getItem('shown') || '[]'"))
        files = [" ".join(text.split()) for text in shown if "site files" in text]
        assert files, shown
        assert re.fullmatch(
            r"A backup is running, started by admin \d{4}-\d\d-\d\d \d\d:\d\d:\d\d (CET|GMT\+1) "
            r"\([^)]*\): recording the site files, [\d,]+ so far \([\d.]+\s[KMG]?B\)\.",
            files[0],
        ), files[0]
        counts = [int(re.search(r"files, ([\d,]+)", t).group(1).replace(",", "")) for t in files]
        assert counts == sorted(counts) and counts[-1] <= FILES
        assert asked, "the page never asked for the progress"
        expect(page.locator("#operation")).to_be_hidden()  # the new page: nothing is running
        page.screenshot(path=str(ARTIFACTS / "backup-progress-done-1280.png"), full_page=True)
    finally:
        context.close()
