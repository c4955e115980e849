"""README command 1, `scripts/run`: the dashboard and the scheduler together, stopped by Ctrl-C."""

import os
import re
import signal
import socket
import subprocess
import time
import urllib.request

import pytest

from tests.conftest import REPO_DIR, manage

pytestmark = pytest.mark.slow


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def children_of(pgid):
    out = subprocess.run(["ps", "-o", "pid=", "-g", str(pgid)], capture_output=True, text=True)
    return [int(pid) for pid in out.stdout.split()]


def test_it_serves_the_dashboard_with_the_scheduler_and_stops_both_on_ctrl_c(tmp_path):
    if "runscheduler" not in manage("help", "--commands").stdout.split():
        pytest.skip("manage.py runscheduler is not there yet (the jobs issue adds it)")
    port = free_port()
    env = {
        **os.environ,
        "STANZA_DATA_DIR": str(tmp_path / "data"),
        "STANZA_PORT": str(port),
        "STANZA_ADMIN_PASSWORD": "",
    }
    env.pop("DJANGO_SETTINGS_MODULE", None)
    log = tmp_path / "run.log"
    with open(log, "w") as out:
        # Its own process group, like a terminal's foreground job: Ctrl-C signals the group.
        run = subprocess.Popen(
            [REPO_DIR / "scripts" / "run"],
            cwd=REPO_DIR,
            env=env,
            stdout=out,
            stderr=out,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 180
        while "Listening at" not in log.read_text():
            assert run.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.3)
        text = log.read_text()
        assert f"open http://127.0.0.1:{port}/admin/" in text
        [password] = re.findall(r"Admin login: admin / (\S+)", text)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/admin/login/") as response:
            assert response.status == 200
        assert len(children_of(run.pid)) >= 3  # the script, gunicorn, the scheduler

        os.killpg(run.pid, signal.SIGINT)
        try:
            run.wait(timeout=30)
        except subprocess.TimeoutExpired:
            tree = subprocess.run(
                ["ps", "-o", "pid,stat,args", "-g", str(run.pid)], text=True, capture_output=True
            ).stdout
            pytest.fail(f"scripts/run did not stop:\n{tree}\n{log.read_text()[-3000:]}")
        deadline = time.monotonic() + 15
        while children_of(run.pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert children_of(run.pid) == []
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
            run.wait()
    assert password not in manage("ensureadmin", env=env).stdout  # shown once only


@pytest.mark.litestream
def test_it_runs_replication_beside_them_when_a_replica_is_set_and_stops_it(tmp_path):
    port = free_port()
    env = {
        **os.environ,
        "STANZA_DATA_DIR": str(tmp_path / "data"),
        "STANZA_PORT": str(port),
        "STANZA_ADMIN_PASSWORD": "",
        "STANZA_REPLICA_URL": f"file://{tmp_path / 'replica'}",
    }
    env.pop("DJANGO_SETTINGS_MODULE", None)
    log = tmp_path / "run.log"
    with open(log, "w") as out:
        run = subprocess.Popen(
            [REPO_DIR / "scripts" / "run"],
            cwd=REPO_DIR,
            env=env,
            stdout=out,
            stderr=out,
            start_new_session=True,
        )

    def commands():
        out = subprocess.run(
            ["ps", "-o", "args=", "-g", str(run.pid)], capture_output=True, text=True
        ).stdout
        return out

    try:
        deadline = time.monotonic() + 180
        replica = tmp_path / "replica" / "ltx"
        while not (replica.is_dir() and "Listening at" in log.read_text()):
            assert run.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.3)
        assert "manage.py replicate" in commands() and "litestream replicate" in commands()
        os.killpg(run.pid, signal.SIGINT)
        run.wait(timeout=30)
        deadline = time.monotonic() + 15
        while children_of(run.pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert children_of(run.pid) == []
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
            run.wait()
