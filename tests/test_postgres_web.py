"""A PostgreSQL site's pages on a real server (gunicorn, PostgreSQL): the Backups page lists
`.dump` backups, an upload of a dump is checked and kept, and the database password shows
nowhere: not in a page, a log, the run history or a backup's sidecars."""

import http.cookiejar
import json
import re
import secrets
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import gunicorn

pytestmark = pytest.mark.postgres

USER, PASSWORD = "admin", "stanza-pg-admin"


class Browser:
    """Just enough of a browser: cookies, the admin login, CSRF, JSON and multipart posts."""

    def __init__(self, url):
        self.url = url
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar))

    def get(self, path):
        with self.opener.open(f"{self.url}{path}", timeout=60) as response:
            body = response.read()
            return response.status, body.decode() if b"<html" in body[:500].lower() else body

    def csrf(self):
        return next(c.value for c in self.jar if c.name == "csrftoken")

    def login(self):
        self.get("/admin/login/")
        body = urllib.parse.urlencode(
            {"username": USER, "password": PASSWORD, "csrfmiddlewaretoken": self.csrf()}
        ).encode()
        request = urllib.request.Request(f"{self.url}/admin/login/?next=/admin/", data=body)
        request.add_header("Referer", f"{self.url}/admin/login/")
        with self.opener.open(request, timeout=60) as response:
            assert response.url.endswith("/admin/"), response.url

    def post_json(self, path):
        return self._send_json(urllib.request.Request(f"{self.url}{path}", data=b"", method="POST"))

    def upload(self, path):
        boundary = secrets.token_hex(8)
        body = (
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
                f'filename="{path.name}"\r\nContent-Type: application/octet-stream\r\n\r\n'
            ).encode()
            + path.read_bytes()
            + f"\r\n--{boundary}--\r\n".encode()
        )
        request = urllib.request.Request(f"{self.url}/admin/backups/upload", data=body)
        request.add_header("Content-Type", f"multipart/form-data; boundary={boundary}")
        return self._send_json(request)

    def _send_json(self, request):
        """Send a form post as the page's script would; (status, the JSON answer)."""
        request.add_header("Accept", "application/json")
        request.add_header("X-CSRFToken", self.csrf())
        request.add_header("Referer", f"{self.url}/admin/backups/")
        try:
            with self.opener.open(request, timeout=120) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read())


def make_admin(site):
    made = site.manage(
        "shell",
        "-c",
        "from django.contrib.auth.models import User; "
        f"User.objects.create_superuser({USER!r}, 'a@example.com', {PASSWORD!r})",
    )
    assert made.returncode == 0, made.stderr


def test_the_pages_list_dumps_take_an_upload_and_never_show_the_password(pg_site, tmp_path):
    pg_site.query("CREATE TABLE item (id serial PRIMARY KEY, name text)")
    pg_site.query("INSERT INTO item (name) SELECT 'item ' || g FROM generate_series(1, 30) g")
    make_admin(pg_site)
    assert pg_site.manage("runjob", "daily-backup").returncode == 0
    [own] = [p.name for p in pg_site.backups.iterdir() if p.name.endswith(".dump")]
    elsewhere = tmp_path / "from-elsewhere.dump"
    assert pg_site.manage("backup", "--output", str(elsewhere)).returncode == 0

    with gunicorn(pg_site.env(), "--env", "DJANGO_SETTINGS_MODULE=tests.pg_settings") as url:
        browser = Browser(url)
        browser.login()
        status, page = browser.get("/admin/backups/")
        uploaded_status, uploaded = browser.upload(elsewhere)
        again_status, _again = browser.upload(elsewhere)
        _status, after = browser.get("/admin/backups/")
        _status, cron = browser.get("/admin/cron/")
        download_status, dump = browser.get(f"/admin/database/backups/{own}")

    assert status == 200 and own in page
    assert uploaded_status == 200
    assert re.fullmatch(
        rf"{pg_site.name}\.\d{{8}}T\d{{6}}Z(-\d+)?\.uploaded\.dump", uploaded["file"]
    )
    assert (pg_site.backups / uploaded["file"]).exists()
    assert again_status == 409  # the same file again
    assert uploaded["file"] in after
    assert download_status == 200 and dump == (pg_site.backups / own).read_bytes()
    secret = pg_site.cluster.passwords["stanza_site"]
    assert secret not in page + after + cron
    for sidecar in Path(pg_site.backups).iterdir():
        if sidecar.is_file():
            assert secret.encode() not in sidecar.read_bytes(), sidecar.name
    runs = pg_site.query("SELECT job_name, result, error FROM cron_runs")
    assert runs and secret not in repr(runs)


def test_the_restore_page_restores_nothing_and_the_restore_runs_the_full_check(pg_site):
    from tests.pgcluster import PLAIN_ROLE

    pg_site.query("CREATE TABLE item (id serial PRIMARY KEY, name text)")
    pg_site.query("INSERT INTO item (name) SELECT 'item ' || g FROM generate_series(1, 30) g")
    pg_site.query("CREATE TABLE gone (id int)")
    make_admin(pg_site)
    assert pg_site.manage("runjob", "daily-backup").returncode == 0
    [name] = [p.name for p in pg_site.backups.iterdir() if p.name.endswith(".dump")]
    pg_site.query("DROP TABLE gone")
    pg_site.query("CREATE TABLE later (id int)")
    pg_site.query("DELETE FROM item WHERE id > 3")
    # The site runs as a role that may not create databases: a restore into a scratch
    # database, the full check, fails for it in words; the page must not need one.
    with pg_site.cluster.admin(pg_site.name) as conn:
        conn.execute(f"GRANT ALL ON ALL TABLES IN SCHEMA public TO {PLAIN_ROLE}")
        conn.execute(f"GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO {PLAIN_ROLE}")
    env = {**pg_site.env(), **pg_site.cluster.env(pg_site.name, role=PLAIN_ROLE)}

    with gunicorn(env, "--env", "DJANGO_SETTINGS_MODULE=tests.pg_settings") as url:
        browser = Browser(url)
        browser.login()
        status, page = browser.get(f"/admin/backups/restore/{name}")
        restore_status, restored = browser.post_json(f"/admin/backups/restore/{name}")

    assert status == 200, page
    assert "cannot be restored" not in page and "CREATEDB" not in page
    disappear = re.search(r'id="restore-disappear">(.*?)</p>', page, re.S)[1]
    appear = re.search(r'id="restore-appear">(.*?)</p>', page, re.S)[1]
    assert "<code>later</code>" in disappear and "<code>gone</code>" in appear
    assert re.search(r"<code>item</code></td><td[^>]*>30<", page)  # NAME.json's count
    assert "the full check runs when you restore, before anything changes" in page
    assert restore_status == 400
    assert f"the database user {PLAIN_ROLE} may not create databases" in restored["error"]
    assert pg_site.query("SELECT count(*) FROM item") == [(3,)]
