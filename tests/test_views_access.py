"""Who may see the dashboard, CSRF on every POST, and error pages that give nothing away."""

import pytest
from django.test import Client

from backups_app.engine import backups
from tests.conftest import manage

PAGES = [
    ("get", "/admin/backups/"),
    ("get", "/admin/cron/"),
    ("get", "/admin/database/backups/database.sqlite.20260101T020000Z.bak"),
    ("post", "/admin/database/backup"),
    ("post", "/admin/cron/daily-backup/run"),
    ("get", "/admin/backups/restore/database.sqlite.20260101T020000Z.bak"),
    ("post", "/admin/backups/restore/database.sqlite.20260101T020000Z.bak"),
    ("post", "/admin/backups/upload"),
]


@pytest.mark.parametrize(("method", "url"), PAGES)
def test_it_sends_anonymous_users_to_the_admin_login(db, backups_folder, method, url):
    response = getattr(Client(), method)(url)

    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/?next=")
    assert backups.list_backups(backups_folder) == []


@pytest.mark.parametrize(("method", "url"), PAGES)
def test_it_answers_anonymous_api_clients_401(db, backups_folder, method, url):
    response = getattr(Client(), method)(url, HTTP_ACCEPT="application/json")

    assert response.status_code == 401
    assert response.json() == {"error": "login required"}


@pytest.mark.parametrize(("method", "url"), PAGES)
def test_it_forbids_users_who_are_not_staff(user_client, backups_folder, method, url):
    response = getattr(user_client, method)(url)

    assert response.status_code == 403
    assert b"staff users only" in response.content
    api = getattr(user_client, method)(url, HTTP_ACCEPT="application/json")
    assert api.status_code == 403
    assert backups.list_backups(backups_folder) == []


@pytest.mark.parametrize(
    "url",
    [
        "/admin/database/backup",
        "/admin/cron/daily-backup/run",
        "/admin/backups/restore/database.sqlite.20260101T020000Z.bak",
        "/admin/backups/upload",
    ],
)
def test_it_refuses_posts_without_a_csrf_token(staff_user, backups_folder, live_database, url):
    client = Client(enforce_csrf_checks=True)
    client.force_login(staff_user)

    response = client.post(url)

    assert response.status_code == 403
    assert backups.list_backups(backups_folder) == []


def test_it_shows_a_plain_404_page(staff_client, settings):
    settings.DEBUG = False

    response = staff_client.get("/admin/nothing-here/at-all")

    assert response.status_code == 404
    assert b"Page not found" in response.content


def test_it_hides_paths_and_tracebacks_on_server_errors(
    staff_client, backups_folder, monkeypatch, settings
):
    settings.DEBUG = False

    def broken(folder=None):
        raise RuntimeError(f"boom in {backups_folder}/secret")

    monkeypatch.setattr(backups, "scan_backups", broken)  # what the Backups page lists with
    staff_client.raise_request_exception = False

    response = staff_client.get("/admin/backups/")

    assert response.status_code == 500
    html = response.content.decode()
    assert "Server error" in html
    assert str(backups_folder) not in html
    assert "Traceback" not in html
    assert "RuntimeError" not in html


def test_it_hides_paths_on_404s_of_missing_backups(staff_client, backups_folder, settings):
    settings.DEBUG = False

    response = staff_client.get("/admin/database/backups/database.sqlite.20260101T020000Z.bak")

    assert response.status_code == 404
    assert str(backups_folder) not in response.content.decode()


PRODUCTION = {
    "DJANGO_SECRET_KEY": "x7#kq2!vz9@lm4$np8^rt6&wy3*bc5(df1)gh0_jk-ls+qa=ze",
    "DJANGO_DEBUG": "false",
    "DJANGO_ALLOWED_HOSTS": "example.com",
}
TLS_WARNINGS = {"security.W004", "security.W008", "security.W012", "security.W016"}
# HSTS for subdomains and the preload list are the domain owner's call, not the product's.
HSTS_POLICY_WARNINGS = {"security.W005", "security.W021"}


def check_ids(output):
    return {
        line.split("(")[1].split(")")[0] for line in output.splitlines() if line.startswith("?: (")
    }


@pytest.mark.slow
def test_it_passes_the_deploy_check_apart_from_tls(tmp_path):
    result = manage("check", "--deploy", env={**PRODUCTION, "STANZA_DATA_DIR": str(tmp_path)})

    assert result.returncode == 0, result.stderr
    assert check_ids(result.stderr) <= TLS_WARNINGS, result.stderr


@pytest.mark.slow
def test_it_passes_the_deploy_check_with_tls_on(tmp_path):
    env = {**PRODUCTION, "DJANGO_SECURE_TLS": "true", "STANZA_DATA_DIR": str(tmp_path)}

    result = manage("check", "--deploy", env=env)

    assert result.returncode == 0, result.stderr
    assert check_ids(result.stderr) <= HSTS_POLICY_WARNINGS, result.stderr
