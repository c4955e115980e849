"""The run history in the Django admin (read-only), its "run again" action, the index links."""

from datetime import timedelta

import pytest
from django.contrib.admin.models import LogEntry
from django.utils import timezone

from backups_app.jobs import jobs
from backups_app.models import CronRun

CHANGELIST = "/admin/backups_app/cronrun/"


@pytest.fixture
def registry(monkeypatch):
    test_jobs = {"daily-backup": jobs.Job("daily-backup", "0 2 * * *", lambda: "done", "Back up")}
    monkeypatch.setattr(jobs, "registry", lambda: test_jobs)
    return test_jobs


def make_run(job_name="daily-backup", status="success", **fields):
    return CronRun.objects.create(job_name=job_name, status=status, **fields)


def test_it_lists_runs_with_filters_by_job_and_status(admin_client):
    make_run("daily-backup", "success", result="database.sqlite.X.bak (1 MB)")
    make_run("purge-old-backups", "failure", error="OSError: nope")

    response = admin_client.get(CHANGELIST)

    assert response.status_code == 200
    html = response.content.decode()
    assert "database.<wbr>sqlite.<wbr>X.<wbr>bak (1 MB)" in html  # breaks after its dots
    assert "?job_name=purge-old-backups" in html
    assert "?status__exact=failure" in html
    # Every registered job and restores are offered, even before they ran.
    for name in [*jobs.registry(), "restore"]:
        assert f"?job_name={name}" in html
    # Each run links to its page; failures are in words, results in full.
    assert 'href="/admin/backups_app/cronrun/' in html
    assert "Nope." in html
    assert "OSError" not in html
    filtered = admin_client.get(CHANGELIST, {"status__exact": "failure"}).content.decode()
    assert "purge-old-backups" in filtered
    assert "database.sqlite.X.bak (1 MB)" not in filtered


def test_it_searches_the_error_text(admin_client):
    make_run("daily-backup", "failure", error="sqlite3.OperationalError: disk I/O error")
    make_run("purge-old-backups", "failure", error="PermissionError: denied")

    html = admin_client.get(CHANGELIST, {"q": "disk I/O"}).content.decode()

    assert "1 result" in html
    assert 'class="field-job_name">daily-backup<' in html
    assert 'class="field-job_name">purge-old-backups<' not in html


def test_it_shows_a_run_on_the_dashboards_run_page_with_its_error_output(admin_client):
    run = make_run("daily-backup", "failure", error="Traceback\n<script>x</script>")

    response = admin_client.get(f"{CHANGELIST}{run.pk}/change/", follow=True)

    assert response.redirect_chain == [(f"/admin/cron/runs/{run.pk}/", 302)]
    assert response.status_code == 200
    html = response.content.decode()
    assert "<pre" in html
    assert "&lt;script&gt;x&lt;/script&gt;" in html
    assert 'type="submit" value="Save"' not in html


def test_it_refuses_to_add_change_or_delete_history(admin_client):
    run = make_run("daily-backup", "success")

    assert admin_client.get(f"{CHANGELIST}add/").status_code == 403
    response = admin_client.post(f"{CHANGELIST}{run.pk}/change/", {"status": "failure"})
    assert response.status_code == 403
    assert admin_client.post(f"{CHANGELIST}{run.pk}/delete/", {"post": "yes"}).status_code == 403
    response = admin_client.post(
        CHANGELIST, {"action": "delete_selected", "_selected_action": [run.pk], "post": "yes"}
    )
    run.refresh_from_db()
    assert run.status == "success"
    assert CronRun.objects.count() == 1
    assert "Add cron run" not in admin_client.get(CHANGELIST).content.decode()


def test_it_runs_the_selected_runs_jobs_again(admin_client, admin_user, registry):
    old = make_run(
        "daily-backup", "failure", started_at=timezone.now() - timedelta(hours=2), error="x"
    )
    gone = make_run("retired-job", "success", started_at=timezone.now() - timedelta(hours=3))

    response = admin_client.post(
        CHANGELIST,
        {"action": "run_again", "_selected_action": [old.pk, old.pk, gone.pk]},
        follow=True,
    )

    html = response.content.decode()
    assert "Ran 1 job now: daily-backup (success)." in html
    assert "Not run, no longer registered: retired-job." in html
    assert "restore" not in html.split('class="messagelist"')[1].split("</ul>")[0]
    new = CronRun.objects.exclude(pk__in=[old.pk, gone.pk]).get()
    assert new.job_name == "daily-backup"
    assert new.trigger == "admin:admin"
    assert LogEntry.objects.get().user == admin_user


def test_it_lists_the_dashboard_pages_on_the_admin_index(admin_client):
    html = admin_client.get("/admin/").content.decode()

    assert '<a href="/admin/backups/">Backups</a>' in html
    assert '<a href="/admin/cron/">Cron jobs</a>' in html
    assert html.count('href="/admin/backups/"') >= 2  # the link and its "View"


def test_it_lists_the_dashboard_pages_for_staff_without_model_permissions(staff_client):
    html = staff_client.get("/admin/").content.decode()

    assert '<a href="/admin/backups/">Backups</a>' in html
    assert '<a href="/admin/cron/">Cron jobs</a>' in html


def test_it_lists_the_dashboard_pages_in_the_navigation_sidebar(admin_client, backups_folder):
    html = admin_client.get("/admin/cron/").content.decode()

    sidebar = html.split('id="nav-sidebar"')[1].split("</nav>")[0]
    assert 'href="/admin/backups/"' in sidebar
    assert 'class="model-dashboard-cron current-model"' in sidebar
    assert 'aria-current="page">Cron jobs</a>' in sidebar


def test_it_does_not_run_restores_again(admin_client, registry):
    restored = make_run("restore", "success", result="restored X")

    response = admin_client.post(
        CHANGELIST, {"action": "run_again", "_selected_action": [restored.pk]}, follow=True
    )

    html = response.content.decode()
    assert "Not run again: restore is not a scheduled job" in html
    assert "no longer registered" not in html
    assert CronRun.objects.count() == 1


def test_it_hides_the_schedulers_own_tables_and_views_the_dashboard_as_the_site(admin_client):
    html = admin_client.get("/admin/").content.decode()

    assert "Django job executions" not in html
    assert "/admin/django_apscheduler/" not in html
    assert admin_client.get("/admin/django_apscheduler/djangojobexecution/").status_code == 404
    # "View site" is the site's own `/`, which on this project's site points to the dashboard.
    assert '<a href="/">View site</a>' in html
    home = admin_client.get("/").content.decode()
    assert '<a href="/admin/backups/">the backups</a>' in home


def test_the_admin_index_shows_the_health_verdict_and_names_dashboard_actions(
    admin_client, admin_user, backups_folder
):
    from backups_app.audit import audit

    audit(admin_user, "Deleted backup database.sqlite.20260101T020000Z.bak (1.0 MB)")

    html = admin_client.get("/admin/").content.decode()

    assert 'id="health"' in html
    # The button a problem names is a link to it.
    assert (
        'No backup yet: make one with <a href="/admin/backups/#backup-now">Back up now</a>' in html
    )
    recent = html.split('id="recent-actions-module"')[1].replace("<wbr>", "")
    assert "Deleted backup database.sqlite.20260101T020000Z.bak (1.0 MB)" in recent
    assert "Cron run" not in recent
