"""`backups_app` in someone else's Django site: a built wheel, and a fresh `startproject` site.

The site is made as a new user would make it: a fresh venv (nothing inherited from this
repository or its venv), `pip install` of the repository, `django-admin startproject`, and the
three changes of the README. Then it is used through its own `manage.py`.
"""

import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import textwrap
import zipfile

import pytest

from backups_app.engine.backups import is_locked
from tests.conftest import REPO_DIR, wait_until

pytestmark = pytest.mark.slow

# Never copied for a build: local state, build output, caches.
NOT_SOURCE = shutil.ignore_patterns(
    ".git", ".venv", "data", "build", "*.egg-info", "staticfiles", "__pycache__", "artifacts"
)


def clean_env(**extra):
    """This process's environment without anything that points at this repository's site."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("STANZA_", "DJANGO_", "VIRTUAL_ENV", "PYTHON"))
    }
    return {**env, **extra}


def run(args, **kwargs):
    result = subprocess.run(
        [str(arg) for arg in args], capture_output=True, text=True, timeout=600, **kwargs
    )
    assert result.returncode == 0, f"{args}\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A copy of the repository's files, so a build leaves nothing in the checkout."""
    folder = tmp_path_factory.mktemp("source") / "stanza-backups"
    shutil.copytree(REPO_DIR, folder, ignore=NOT_SOURCE)
    return folder


def test_the_wheel_holds_the_app_with_its_templates_static_files_and_migrations(source, tmp_path):
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", tmp_path, source])

    [wheel] = tmp_path.glob("*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    app = REPO_DIR / "backups_app"
    wanted = {
        path.relative_to(REPO_DIR).as_posix()
        for path in app.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }
    assert {name for name in wanted if "/templates/" in name}
    assert {name for name in wanted if "/static/" in name}
    assert {name for name in wanted if "/migrations/0" in name}
    assert {name for name in wanted if "/management/commands/" in name}
    assert {name for name in wanted if "/templatetags/" in name}
    assert wanted - names == set()
    assert not [name for name in names if name.startswith(("stanza_site/", "tests/", "bench/"))]


@pytest.fixture(scope="module")
def site(source, tmp_path_factory):
    """A `startproject` site in a fresh venv with the repository installed: the three lines."""
    base = tmp_path_factory.mktemp("mysite")
    venv = base / "venv"
    run([sys.executable, "-m", "venv", venv])
    python = venv / "bin" / "python"
    run([python, "-m", "pip", "install", "-q", "--disable-pip-version-check", source])
    folder = base / "mysite"
    folder.mkdir()
    run([venv / "bin" / "django-admin", "startproject", "mysite", folder], env=clean_env())

    settings = folder / "mysite" / "settings.py"
    text = settings.read_text()
    text, added = re.subn(
        r"(INSTALLED_APPS = \[\n(?:    .*\n)*?)\]",
        lambda m: m.group(1) + "    'django_apscheduler',\n    'backups_app',\n]",
        text,
        count=1,
    )
    assert added == 1
    settings.write_text(text)
    urls = folder / "mysite" / "urls.py"
    text = urls.read_text().replace(
        "from django.urls import path", "from django.urls import include, path"
    )
    text, added = re.subn(
        r"( *)(path\(['\"]admin/['\"])",
        r"\1path('', include('backups_app.urls')),\n\1\2",
        text,
        count=1,
    )
    assert added == 1
    urls.write_text(text)
    return {"folder": folder, "python": python}


def manage(site, *args, check=True, **env):
    kwargs = {"cwd": site["folder"], "env": clean_env(**env)}
    if check:
        return run([site["python"], "manage.py", *args], **kwargs)
    return subprocess.run(
        [str(site["python"]), "manage.py", *args],
        capture_output=True,
        text=True,
        timeout=600,
        **kwargs,
    )


# What a staff user does, through Django's test client inside the site's own `manage.py shell`.
STAFF_VISIT = textwrap.dedent(
    """
    import json
    from django.contrib.auth.models import User
    from django.test import Client
    from django.test.utils import setup_test_environment

    setup_test_environment()
    User.objects.create_user("ops", password="pw-ops-123", is_staff=True)
    client = Client()
    client.force_login(User.objects.get(username="ops"))
    made = client.post("/admin/database/backup", HTTP_ACCEPT="application/json")
    name = made.json()["file"]
    page = client.get("/admin/backups/")
    download = client.get(f"/admin/database/backups/{name}")
    answers = {
        "backup": [made.status_code, name],
        "page": [page.status_code, name in page.content.decode()],
        "download": [download.status_code, download["Content-Disposition"]],
        "bad name": client.get("/admin/database/backups/..%2Fdb.sqlite3").status_code,
        "cron": client.get("/admin/cron/").status_code,
        "healthz": Client().get("/healthz").status_code,
        "anonymous": Client().get("/admin/backups/").status_code,
    }
    print(json.dumps(answers))
    """
)


def test_a_startproject_site_backs_up_with_the_three_lines(site):
    folder = site["folder"]
    manage(site, "migrate", "--no-input")
    assert "no issues" in manage(site, "check").stdout

    made = manage(site, "backup").stdout
    [by_hand] = [p.name for p in folder.iterdir() if p.name.endswith(".bak")]
    assert by_hand.startswith("db.sqlite3.") and by_hand in made

    manage(site, "runjob", "daily-backup")
    backups = folder / "backups"
    assert stat.S_IMODE(backups.stat().st_mode) == 0o700
    [daily] = [p.name for p in backups.iterdir() if p.name.endswith(".bak")]
    assert re.fullmatch(r"db\.sqlite3\.\d{8}T\d{6}Z\.bak", daily)
    assert (backups / f"{daily}.sha256").is_file()

    visit = manage(site, "shell", "-c", STAFF_VISIT).stdout
    answers = json.loads(visit.strip().splitlines()[-1])  # after the shell's own notice
    status, name = answers["backup"]
    assert status == 200 and re.fullmatch(r"db\.sqlite3\.\d{8}T\d{6}Z(-\d+)?\.manual\.bak", name)
    assert answers["page"] == [200, True]
    assert answers["download"] == [200, f'attachment; filename="{name}"']
    assert answers["bad name"] in (400, 404)
    assert answers["cron"] == 200
    assert answers["healthz"] == 200
    assert answers["anonymous"] == 302

    restored = manage(site, "restore", backups / daily, "--yes").stdout
    assert re.search(r"db\.sqlite3\.\d{8}T\d{6}Z(-\d+)?\.pre-restore\.bak", restored)
    assert manage(site, "checkbackups", check=False).returncode == 0

    # The app's lock files sit beside the site's database, and nowhere else.
    scheduler = subprocess.Popen(
        [site["python"], "manage.py", "runscheduler"],
        cwd=folder,
        env=clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until(lambda: is_locked(folder / "scheduler.lock"))
        scheduler.send_signal(signal.SIGTERM)
        out, err = scheduler.communicate(timeout=60)
    finally:
        if scheduler.poll() is None:
            scheduler.kill()
            scheduler.wait()
    assert scheduler.returncode == 0, err
    assert "Traceback" not in err


def test_a_startproject_site_names_a_bad_setting_in_manage_py_check(site):
    result = manage(site, "check", check=False, STANZA_BACKUP_RETENTION_DAYS="-1")

    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert "(backups_app.E001) STANZA_BACKUP_RETENTION_DAYS='-1' must be at least 0" in (
        result.stderr
    )
