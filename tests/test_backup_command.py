"""`manage.py backup` end to end, in real subprocesses."""

import contextlib
import json
import os
import resource
import signal
import sqlite3
import subprocess
import sys

import pytest

from backups_app.engine.backups import is_backup_name
from tests.conftest import (
    REPO_DIR,
    count_rows,
    make_database,
    make_large_database,
    manage,
    wait_until,
)


@pytest.fixture
def env(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    make_database(data / "database.sqlite", rows=50)
    return {"STANZA_DATA_DIR": str(data), "DJANGO_SECRET_KEY": "test", "STANZA_LOG_FORMAT": ""}


@pytest.fixture
def cwd(tmp_path):
    folder = tmp_path / "cwd"
    folder.mkdir()
    return folder


def backup(*args, env, cwd, **kwargs):
    return manage("backup", *args, env=env, cwd=cwd, **kwargs)


def assert_one_line_error(result, text):
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("CommandError:")]
    assert len(errors) == 1, result.stderr
    assert text in errors[0]


def names(folder):
    return sorted(p.name for p in folder.iterdir())


def test_it_writes_the_standard_name_in_the_current_folder_and_prints_it(env, cwd):
    result = backup(env=env, cwd=cwd)

    assert result.returncode == 0, result.stderr
    [name, manifest, sidecar] = names(cwd)
    assert is_backup_name(name) and sidecar == name + ".sha256" and manifest == name + ".json"
    size = (cwd / name).stat().st_size
    assert result.stdout.strip().startswith(str(cwd / name))
    assert f"{size} bytes" in result.stdout
    assert count_rows(cwd / name) == 50
    check = subprocess.run(["sha256sum", "-c", sidecar], cwd=cwd, capture_output=True, text=True)
    assert check.stdout == f"{name}: OK\n"


def test_it_writes_exactly_the_output_path(env, cwd, tmp_path):
    result = backup("--output", "sub/my backup.db", env=env, cwd=cwd)
    assert_one_line_error(result, "does not exist")

    (cwd / "sub").mkdir()
    result = backup("--output", "sub/my backup.db", env=env, cwd=cwd)

    assert result.returncode == 0, result.stderr
    assert names(cwd / "sub") == ["my backup.db", "my backup.db.json", "my backup.db.sha256"]
    assert names(cwd) == ["sub"]


def test_it_backs_up_another_data_dir(env, cwd, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    make_database(other / "database.sqlite", rows=7)

    result = backup("--data-dir", str(other), "--output", "x.bak", env=env, cwd=cwd)

    assert result.returncode == 0, result.stderr
    assert count_rows(cwd / "x.bak") == 7


def test_it_compresses_into_a_file_gunzip_and_zcat_read(env, cwd):
    plain = backup("--output", "plain.bak", env=env, cwd=cwd)
    result = backup("--compress", env=env, cwd=cwd)

    assert plain.returncode == 0 and result.returncode == 0, result.stderr
    [gz] = [n for n in names(cwd) if n.endswith(".bak.gz")]
    check = subprocess.run(["sha256sum", "-c", gz + ".sha256"], cwd=cwd, capture_output=True)
    assert check.returncode == 0
    with open(cwd / "zcat.sqlite", "wb") as out:
        subprocess.run(["zcat", gz], cwd=cwd, stdout=out, check=True)
    subprocess.run(["gunzip", "-k", gz], cwd=cwd, check=True)
    gunzipped = cwd / gz.removesuffix(".gz")
    assert gunzipped.read_bytes() == (cwd / "zcat.sqlite").read_bytes()
    integrity = subprocess.run(
        ["sqlite3", str(gunzipped), "PRAGMA integrity_check"], capture_output=True, text=True
    )
    assert integrity.stdout == "ok\n"
    assert dump(gunzipped) == dump(cwd / "plain.bak")


def dump(path):
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return list(conn.iterdump())
    finally:
        conn.close()


@pytest.mark.parametrize("kind", ["database", "empty", "text", "folder"])
def test_it_refuses_an_existing_output_and_leaves_it_alone(env, cwd, kind):
    target = cwd / "exists.bak"
    if kind == "database":
        make_database(target, rows=3, wal=False)
    elif kind == "folder":
        target.mkdir()
    else:
        target.write_bytes(b"" if kind == "empty" else b"keep me")
    before = names(cwd), target.stat().st_mtime_ns
    content = None if kind == "folder" else target.read_bytes()

    result = backup("--output", "exists.bak", env=env, cwd=cwd)

    assert_one_line_error(result, "is a folder" if kind == "folder" else "already exists")
    assert (names(cwd), target.stat().st_mtime_ns) == before
    if content is not None:
        assert target.read_bytes() == content


def test_it_refuses_a_missing_database(env, cwd, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()

    result = backup("--data-dir", str(empty), env=env, cwd=cwd)

    assert_one_line_error(result, f"no database at {empty / 'database.sqlite'}")
    assert names(cwd) == []


def test_it_refuses_a_file_that_is_not_a_database(env, cwd, tmp_path):
    bogus = tmp_path / "bogus"
    bogus.mkdir()
    (bogus / "database.sqlite").write_text("hello, not sqlite")

    result = backup("--data-dir", str(bogus), env=env, cwd=cwd)

    assert_one_line_error(result, "is not an SQLite database")
    assert names(cwd) == []


@pytest.mark.parametrize(
    "output, message",
    [
        ("newdir/", "is a folder"),
        ("..", "is a folder"),
        ("bad\nname.bak", "control characters"),
        ("/dev/null", "already exists"),
        ("/proc/self/nope.bak", "not writable"),
        ("a-file/child.bak", "is a file, not a folder"),
    ],
)
def test_it_refuses_hostile_outputs(env, cwd, output, message):
    (cwd / "a-file").write_text("x")

    result = backup("--output", output, env=env, cwd=cwd)

    assert_one_line_error(result, message)
    assert names(cwd) == ["a-file"]


def test_it_refuses_a_read_only_destination(env, mount_point):
    folder = mount_point("ro", "size=1m")

    result = backup(env=env, cwd=folder)

    assert_one_line_error(result, "is not writable")


# --- disk full ------------------------------------------------------------------------------


def limit_file_size():
    resource.setrlimit(resource.RLIMIT_FSIZE, (1024 * 1024, 1024 * 1024))


@pytest.mark.parametrize("compress", [False, True])
@pytest.mark.slow  # real limits on real processes
def test_it_says_disk_full_when_the_file_size_limit_is_hit(env, cwd, tmp_path, compress):
    big = tmp_path / "big"
    big.mkdir()
    make_large_database(big / "database.sqlite", 4)
    (cwd / "keep.txt").write_text("keep")
    args = ["--data-dir", str(big)] + (["--compress"] if compress else [])

    result = backup(*args, env=env, cwd=cwd, preexec_fn=limit_file_size)

    assert_one_line_error(result, "disk full")
    assert names(cwd) == ["keep.txt"]


@pytest.mark.parametrize("compress", [False, True])
@pytest.mark.slow  # real limits on real processes
def test_it_says_disk_full_on_a_small_filesystem(env, tmp_path, mount_point, compress):
    folder = mount_point("size=4m")
    big = tmp_path / "big"
    big.mkdir()
    make_large_database(big / "database.sqlite", 3 if compress else 6)
    args = ["--data-dir", str(big)] + (["--compress"] if compress else [])

    result = backup(*args, env=env, cwd=folder)

    assert_one_line_error(result, "disk full")
    assert names(folder) == []


# --- same second, many processes -------------------------------------------------------------

FROZEN_BACKUP = """
import os, sys
os.environ["DJANGO_SETTINGS_MODULE"] = "stanza_site.settings"
import django
django.setup()
import time_machine
from backups_app.engine.backups import create_backup
with time_machine.travel("2026-11-26 02:00:00Z", tick=False):
    print(create_backup(sys.argv[1], folder=sys.argv[2]).name)
"""


@pytest.mark.slow  # real limits on real processes
def test_it_gives_processes_backing_up_in_the_same_second_distinct_names(env, cwd):
    source = os.path.join(env["STANZA_DATA_DIR"], "database.sqlite")
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", FROZEN_BACKUP, source, str(cwd)],
            cwd=REPO_DIR,
            env={**os.environ, **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    printed = sorted(p.communicate(timeout=60)[0].strip() for p in procs)

    assert all(p.returncode == 0 for p in procs)
    stem = "database.sqlite.20261126T020000Z"
    expected = sorted([f"{stem}.bak"] + [f"{stem}-{n}.bak" for n in (2, 3, 4)])
    assert printed == expected
    assert names(cwd) == sorted(
        expected + [name + suffix for name in expected for suffix in (".json", ".sha256")]
    )
    for name in expected:
        check = subprocess.run(["sha256sum", "-c", f"{name}.sha256"], cwd=cwd, capture_output=True)
        assert check.returncode == 0
        assert count_rows(cwd / name) == 50


# --- logging and progress ----------------------------------------------------------------


def test_it_logs_one_json_line_per_backup(env, cwd):
    result = backup(env={**env, "STANZA_LOG_FORMAT": "json"}, cwd=cwd)

    assert result.returncode == 0, result.stderr
    entries = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    [entry] = [e for e in entries if e.get("event") == "backup"]
    [name] = [n for n in names(cwd) if n.endswith(".bak")]
    assert entry["file"] == name
    assert entry["size"] == (cwd / name).stat().st_size
    assert entry["duration"] > 0


def test_it_logs_one_readable_line_by_default(env, cwd):
    result = backup(env=env, cwd=cwd)

    [name] = [n for n in names(cwd) if n.endswith(".bak")]
    size = (cwd / name).stat().st_size
    lines = [line for line in result.stderr.splitlines() if "backup written" in line]
    assert len(lines) == 1
    assert f"backup written: {name} ({size} bytes) in " in lines[0]


@pytest.mark.slow  # the 200 MB database its terminal twin shows progress for
def test_it_shows_no_progress_without_a_terminal(env, cwd, large_data_dir):
    result = backup("--data-dir", str(large_data_dir), env=env, cwd=cwd)

    assert result.returncode == 0, result.stderr
    assert "\r" not in result.stderr
    assert "Copying" not in result.stderr


@pytest.mark.slow
def test_it_shows_progress_on_a_terminal(env, cwd, large_data_dir):
    leader, follower = os.openpty()
    proc = subprocess.Popen(
        [sys.executable, str(REPO_DIR / "manage.py"), "backup", "--compress"]
        + ["--data-dir", str(large_data_dir)],
        cwd=cwd,
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=follower,
        text=True,
    )
    os.close(follower)
    seen = b""
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # EIO: the command closed the terminal
            break
        if not chunk:
            break
        seen += chunk
    stdout = proc.communicate(timeout=120)[0]
    os.close(leader)
    text = seen.decode()

    assert proc.returncode == 0, text
    assert "MB of " in text and "%)" in text
    assert "Copying:" in text or "Compressing:" in text
    assert str(cwd) in stdout


# --- interruptions ----------------------------------------------------------------------


def start_backup(env, cwd, data_dir, *args):
    return subprocess.Popen(
        [sys.executable, str(REPO_DIR / "manage.py"), "backup", "--data-dir", str(data_dir), *args],
        cwd=cwd,
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for_temp_file(folder, suffix=".partial", min_size=1024 * 1024, timeout=60):
    def grown_temp_file():
        for path in folder.iterdir():
            with contextlib.suppress(FileNotFoundError):
                if path.name.endswith(suffix) and path.stat().st_size >= min_size:
                    return path
        return None

    return wait_until(grown_temp_file, timeout=timeout, interval=0.005)


@pytest.mark.slow
def test_it_leaves_only_a_temp_file_when_killed_and_the_next_backup_removes_it(
    env, cwd, large_data_dir
):
    proc = start_backup(env, cwd, large_data_dir)
    wait_for_temp_file(cwd)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()

    left = names(cwd)
    assert left and all(name.startswith(".stanza-tmp-") for name in left)
    assert not any(is_backup_name(name) for name in left)

    small = cwd.parent / "small"
    small.mkdir()
    make_database(small / "database.sqlite", rows=5)
    result = backup("--data-dir", str(small), env=env, cwd=cwd)

    assert result.returncode == 0, result.stderr
    [name, manifest, sidecar] = names(cwd)
    assert is_backup_name(name) and sidecar == name + ".sha256" and manifest == name + ".json"


@pytest.mark.slow
@pytest.mark.parametrize(
    "signum, phase",
    [
        (signal.SIGTERM, ".partial"),
        (signal.SIGINT, ".partial"),
        (signal.SIGTERM, ".partial.gz"),
        (signal.SIGINT, ".partial.gz"),
    ],
)
def test_it_stops_cleanly_on_sigterm_and_sigint(env, cwd, large_data_dir, signum, phase):
    args = ["--compress"] if phase.endswith(".gz") else []
    proc = start_backup(env, cwd, large_data_dir, *args)
    wait_for_temp_file(cwd, suffix=phase, min_size=64 * 1024)
    proc.send_signal(signum)
    stdout, stderr = proc.communicate(timeout=60)

    assert proc.returncode == 128 + signum
    assert "Traceback" not in stderr
    name = signal.Signals(signum).name
    assert stderr.splitlines()[-1] == f"CommandError: interrupted by {name}; no backup was written"
    assert names(cwd) == []
    assert stdout == ""
