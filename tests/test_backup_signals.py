"""What `manage.py backup` says after a signal matches the disk, whenever the signal comes
(issue 18 item 8): once the backup has its name it is reported, and a signal after that ends
nothing (exit 0 with the path, never a bare KeyboardInterrupt or a death by signal)."""

import functools
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import (
    MANAGE,
    assert_backup_checked,
    backups_in,
    live_env,
    make_large_database,
    run_backup_child,
)

pytestmark = pytest.mark.slow  # real signals to real backup processes

# What the child (`run_backup_child`) does around `manage.py backup`: it signals itself at one
# moment, "staged" (the engine removes a staged sidecar file after the backup got its name) or
# "exit" (the command is done).
HOOKS = """
real_link, real_unlink = os.link, os.unlink
linked = []

def link(src, dst, *args, **kwargs):
    real_link(src, dst, *args, **kwargs)
    if str(dst).endswith(".bak"):
        linked.append(dst)

def unlink(path, *args, **kwargs):
    real_unlink(path, *args, **kwargs)
    if when == "staged" and linked and str(path).endswith((".partial.sha256", ".partial.json")):
        os.kill(os.getpid(), signum)

os.link, os.unlink = link, unlink
"""
AFTER = """
if when == "exit":
    os.kill(os.getpid(), signum)
    time.sleep(0.2)  # the signal is handled here, before the interpreter exits
"""
run_child = functools.partial(run_backup_child, HOOKS, after=AFTER)


def whole(folder):
    """The backups in `folder`, each checked whole: its .sha256 matches, its .json is there."""
    names = backups_in(folder)
    for name in names:
        assert_backup_checked(folder, name)
    return names


def assert_words_match_the_disk(result, out):
    """Whatever the moment: a printed path is a whole backup; "no backup" means none."""
    names = whole(out)
    if result.stdout:  # the path was printed: the command finished, and says so
        [name] = names
        assert result.stdout.startswith(f"{out / name} (")
        assert result.returncode == 0, result
        assert "Traceback" not in result.stderr and "KeyboardInterrupt" not in result.stderr
        return "done"
    if result.returncode not in (128 + signal.SIGINT, 128 + signal.SIGTERM):
        # A signal before the command began (Django still starting): nothing was done.
        assert "backup written" not in result.stderr
        assert names == []
        return "early"
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    if lines[-1].endswith("no backup was written"):
        assert names == []
        return "none"
    [name] = names
    assert lines[-1].endswith(f"the backup was written: {out / name}")
    return "written"


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_as_the_staged_sidecars_are_removed_ends_nothing(backup_folders, signum):
    data, out = backup_folders

    result = run_child(data, out, signum, "staged")

    assert assert_words_match_the_disk(result, out) == "done"
    assert result.returncode == 0


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_after_the_command_is_done_exits_0_with_the_path(backup_folders, signum):
    data, out = backup_folders

    result = run_child(data, out, signum, "exit")

    assert result.returncode == 0, result.stderr
    assert assert_words_match_the_disk(result, out) == "done"


def test_a_signal_at_any_moment_is_reported_as_the_disk_has_it(tmp_path):
    data = tmp_path / "data"
    (data / "backups").mkdir(parents=True)
    make_large_database(data / "database.sqlite", 30)
    env = {**os.environ, **live_env(data)}

    def backup(cwd, delay=None, signum=signal.SIGINT):
        cwd.mkdir()
        started = time.monotonic()
        proc = subprocess.Popen(
            [sys.executable, str(MANAGE), "backup"],
            env=env,
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        if delay is not None:
            time.sleep(delay)
            proc.send_signal(signum)
        stdout, stderr = proc.communicate(timeout=120)
        result = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
        return result, time.monotonic() - started

    result, took = backup(tmp_path / "plain")
    assert result.returncode == 0
    outcomes = []
    for i in range(12):  # from mid-copy to past the end, where the publish moment lies
        delay = took * (0.6 + 0.05 * i)
        signum = (signal.SIGINT, signal.SIGTERM)[i % 2]
        result, _ = backup(tmp_path / f"try-{i}", delay, signum)
        outcomes.append(assert_words_match_the_disk(result, tmp_path / f"try-{i}"))
    assert len(outcomes) == 12
