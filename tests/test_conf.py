"""The app's settings (`backups_app.conf`) and its system checks, as any Django site sees them."""

import os
import re
import stat
import subprocess
import sys

import pytest
from pyrage import x25519

from backups_app import checks, conf
from backups_app.engine import backups
from backups_app.jobs import scheduler_lock
from tests.conftest import REPO_DIR, make_database

REAL_LIVE_DATABASE_PATH = conf.live_database_path  # before the autouse fixture patches it


def test_it_reads_the_site_settings_then_the_environment_then_the_default(settings, monkeypatch):
    assert conf.get("STANZA_BACKUP_RETENTION_DAYS") == 7

    monkeypatch.setenv("STANZA_BACKUP_RETENTION_DAYS", "3")
    assert conf.get("STANZA_BACKUP_RETENTION_DAYS") == 3

    settings.STANZA_BACKUP_RETENTION_DAYS = 12
    assert conf.get("STANZA_BACKUP_RETENTION_DAYS") == 12


def test_values_set_in_settings_py_are_checked_like_environment_ones(settings):
    settings.STANZA_ALERT_EMAILS = ["ops@example.com", "nobody"]

    with pytest.raises(conf.ConfigError, match="STANZA_ALERT_EMAILS holds 'nobody'"):
        conf.get("STANZA_ALERT_EMAILS")


def test_the_system_checks_name_each_bad_value(settings, monkeypatch):
    settings.STANZA_BACKUP_SCHEDULE = "every night"
    monkeypatch.setenv("STANZA_REPLICA_MAX_LAG", "0")

    errors = checks.check_settings()

    assert [error.id for error in errors] == ["backups_app.E001", "backups_app.E001"]
    assert "STANZA_BACKUP_SCHEDULE='every night' is not a cron expression" in errors[0].msg
    assert "STANZA_REPLICA_MAX_LAG='0' must be at least 1" in errors[1].msg


def test_the_system_checks_pass_good_values(settings, tmp_path):
    settings.STANZA_BACKUPS_DIR = tmp_path
    settings.STANZA_OFFSITE_URL = "s3://bucket/site"
    # A real key: the parser checks it with pyrage (bech32 checksum included), not a pattern.
    settings.STANZA_OFFSITE_AGE_RECIPIENTS = [str(x25519.Identity.generate().to_public())]
    settings.STANZA_REPLICA_URL = "file:///srv/replica"

    assert checks.check_settings() == []


def test_the_system_checks_warn_about_a_backups_folder_that_is_not_there(settings, tmp_path):
    settings.STANZA_BACKUPS_DIR = tmp_path / "not-yet"

    [warning] = checks.check_settings()

    assert warning.id == "backups_app.W001"
    assert "does not exist" in warning.msg


def test_a_backups_folder_that_is_a_file_is_an_error(settings, tmp_path):
    (tmp_path / "a-file").write_text("x")
    settings.STANZA_BACKUPS_DIR = tmp_path / "a-file"

    [error] = checks.check_settings()

    assert error.id == "backups_app.E001"
    assert "is a file, not a folder" in error.msg


def test_the_default_backups_folder_is_made_beside_the_database_when_first_needed(
    site_database_file,
):
    site_database_file.parent.mkdir()
    folder = site_database_file.parent / "backups"

    assert backups.backups_dir() == folder
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert backups.list_backups() == []


def test_a_backups_folder_set_in_the_settings_is_never_made(settings, tmp_path):
    settings.STANZA_BACKUPS_DIR = tmp_path / "mounted-disk"

    with pytest.raises(backups.BackupError, match="does not exist"):
        backups.list_backups()
    assert not (tmp_path / "mounted-disk").exists()


@pytest.mark.parametrize("file_name", ["db.sqlite3", "my+site (prod).db"])
def test_backups_are_named_after_the_live_database_file(monkeypatch, tmp_path, file_name):
    live = make_database(tmp_path / file_name)
    monkeypatch.setattr(conf, "live_database_path", lambda: live)

    backup = backups.create_backup(label="manual")

    assert backup.name.startswith(f"{file_name}.")
    assert backup.path.parent == tmp_path / "backups"
    assert [b.name for b in backups.list_backups()] == [backup.name]
    assert backups.parse_backup_name(backup.name)["label"] == "manual"
    # Another database's backups (this project's name) are not this site's.
    assert not backups.is_backup_name(backup.name.replace(file_name, "database.sqlite"))
    assert not backups.is_backup_name(backup.name.replace(file_name, "dbXsqlite3"))


def test_the_app_keeps_its_lock_files_beside_the_live_database(site_database_file):
    assert scheduler_lock.lock_path() == site_database_file.parent / "scheduler.lock"
    assert conf.upload_dir() == site_database_file.parent / ".stanza-uploads"


def test_a_database_that_is_neither_sqlite_nor_postgresql_is_one_clear_error(monkeypatch, settings):
    monkeypatch.setattr(conf, "live_database_path", REAL_LIVE_DATABASE_PATH)
    monkeypatch.setitem(
        settings.DATABASES, "default", {"ENGINE": "django.db.backends.mysql", "NAME": "x"}
    )

    [error] = checks.check_settings()

    assert error.id == "backups_app.E001"
    assert "needs SQLite or PostgreSQL" in error.msg and "mysql" in error.msg
    with pytest.raises(backups.BackupError, match="needs SQLite or PostgreSQL"):
        backups.create_backup()


def test_a_postgresql_site_must_set_its_backups_folder(monkeypatch, settings):
    monkeypatch.setattr(conf, "live_database_path", REAL_LIVE_DATABASE_PATH)
    monkeypatch.delenv("STANZA_BACKUPS_DIR", raising=False)
    monkeypatch.setitem(settings.DATABASES, "default", {"ENGINE": conf.POSTGRESQL, "NAME": "x"})

    [error] = checks.check_settings()

    assert error.id == "backups_app.E001"
    assert error.msg.startswith("STANZA_BACKUPS_DIR must be set: the database is PostgreSQL")
    with pytest.raises(conf.ConfigError, match="STANZA_BACKUPS_DIR must be set"):
        conf.backups_dir()


def test_a_postgresql_site_keeps_uploads_and_locks_in_its_backups_folder(
    monkeypatch, settings, tmp_path
):
    monkeypatch.setattr(conf, "live_database_path", REAL_LIVE_DATABASE_PATH)
    monkeypatch.setitem(settings.DATABASES, "default", {"ENGINE": conf.POSTGRESQL, "NAME": "shop"})
    settings.STANZA_BACKUPS_DIR = tmp_path

    assert checks.check_settings() == []
    assert conf.upload_dir() == tmp_path / ".stanza-uploads"
    assert scheduler_lock.lock_path() == tmp_path / "scheduler.lock"
    assert conf.live_database_name() == "shop"


def test_replication_with_postgresql_is_a_settings_error_naming_why(
    monkeypatch, settings, tmp_path
):
    monkeypatch.setattr(conf, "live_database_path", REAL_LIVE_DATABASE_PATH)
    monkeypatch.setitem(settings.DATABASES, "default", {"ENGINE": conf.POSTGRESQL, "NAME": "shop"})
    settings.STANZA_BACKUPS_DIR = tmp_path
    settings.STANZA_REPLICA_URL = f"file://{tmp_path}/replica"

    [error] = checks.check_settings()

    assert error.id == "backups_app.E001"
    assert "STANZA_REPLICA_URL must be empty" in error.msg
    assert "Litestream" in error.msg and "SQLite" in error.msg


def test_manage_py_check_names_a_database_that_is_not_sqlite(tmp_path):
    # Django's dummy backend: another engine that loads without a driver installed here.
    (tmp_path / "pg_settings.py").write_text(
        "from stanza_site.settings import *  # noqa\n"
        "DATABASES = {'default': {'ENGINE': 'django.db.backends.dummy', 'NAME': 'site'}}\n"
    )
    env = {
        **os.environ,
        "PYTHONPATH": f"{tmp_path}{os.pathsep}{REPO_DIR}",
        "DJANGO_SETTINGS_MODULE": "pg_settings",
        "STANZA_DATA_DIR": str(tmp_path / "data"),
        "DJANGO_SECRET_KEY": "test",
    }

    result = subprocess.run(
        [sys.executable, "-m", "django", "check"], env=env, capture_output=True, text=True
    )

    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert len(re.findall(r"backups_app\.E\d+", result.stderr)) == 1, result.stderr
    assert "Stanza Backups needs SQLite or PostgreSQL: DATABASES['default'] uses" in result.stderr


def test_every_app_setting_is_in_the_readme_table():
    readme = (REPO_DIR / "README.md").read_text()
    section = readme.split("## Use it in your own Django site", 1)[1].split("\n## ", 1)[0]

    for name in conf.SETTINGS:
        assert f"| `{name}` |" in section, name


def test_the_app_imports_nothing_from_this_project():
    for path in (REPO_DIR / "backups_app").rglob("*.py"):
        assert "stanza_site" not in path.read_text(), path


def test_the_system_checks_pass_a_site_without_media_root(settings, monkeypatch):
    """A startproject site: no MEDIA_ROOT, so site files are off, not a crash of `check`."""
    settings.MEDIA_ROOT = ""
    monkeypatch.delenv("STANZA_MEDIA_DIR", raising=False)
    if hasattr(settings, "STANZA_MEDIA_DIR"):
        del settings.STANZA_MEDIA_DIR

    assert conf.media_dir() is None
    assert checks.check_settings() == []
