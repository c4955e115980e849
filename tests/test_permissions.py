"""Nothing the product creates under its data folder is readable by anyone but its owner (8.9)."""

import sqlite3
import stat
import urllib.error
import urllib.request

import pytest

from tests.conftest import gunicorn, live_env, manage


def open_to_others(folder):
    """Paths under `folder` (itself included) that the group or others may read or enter."""
    paths = [folder, *folder.rglob("*")]
    return {
        str(path.relative_to(folder.parent)): oct(stat.S_IMODE(path.lstat().st_mode))
        for path in paths
        if stat.S_IMODE(path.lstat().st_mode) & 0o077
    }


def get(url):
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as err:
        return err.code


@pytest.mark.slow
def test_the_data_folder_and_all_it_holds_are_for_the_owner_only(tmp_path):
    data = tmp_path / "site" / "data"  # the product creates it
    env = live_env(data)
    for args, cwd in (
        (["migrate", "--no-input"], None),
        (["runjob", "daily-backup"], None),
        (["backup", "--compress"], data / "backups"),
        (["migrate", "--no-input", "backups_app", "zero"], None),  # with a pre-migrate backup
    ):
        result = manage(*args, env=env, cwd=cwd)
        assert result.returncode == 0, result.stderr

    # A connection held open keeps the -wal and -shm files (SQLite gives them the database's mode).
    holder = sqlite3.connect(data / "database.sqlite")
    holder.execute("SELECT count(*) FROM django_migrations").fetchone()
    with gunicorn(env) as url:
        assert get(f"{url}/admin/login/") == 200
        assert get(f"{url}/healthz") in (200, 503)
        assert (data / "database.sqlite-wal").exists()
        assert (data / "database.sqlite-shm").exists()
        assert open_to_others(data) == {}
    holder.close()

    names = {p.name for p in (data / "backups").iterdir()}
    assert any(n.endswith(".pre-migrate.bak.sha256") for n in names)
    assert any(n.endswith(".bak.gz.json") for n in names)
    assert open_to_others(data) == {}


@pytest.mark.slow
def test_it_takes_back_what_an_older_install_left_open_to_others(tmp_path):
    data = tmp_path / "data"
    env = live_env(data)
    assert manage("migrate", "--no-input", env=env).returncode == 0
    assert manage("runjob", "daily-backup", env=env).returncode == 0
    # An older install, before the product set umask 077: all of it readable by everyone.
    for path in [data, *data.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    outside = tmp_path / "elsewhere"
    outside.write_text("not ours")
    outside.chmod(0o644)
    (data / "link-to-elsewhere").symlink_to(outside)
    assert "data/database.sqlite" in open_to_others(data)

    result = manage("migrate", "--no-input", env=env)

    assert result.returncode == 0, result.stderr
    assert set(open_to_others(data)) == {"data/link-to-elsewhere"}  # a symlink's own mode
    assert stat.S_IMODE(outside.stat().st_mode) == 0o644  # never followed
