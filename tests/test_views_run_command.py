"""README command 1, `scripts/run`: the dashboard and the scheduler together, stopped by Ctrl-C."""

import os
import re
import signal
import subprocess
import urllib.request

import pytest

from tests.conftest import REPO_DIR, free_port, manage, wait_until

pytestmark = pytest.mark.slow


def children_of(pgid):
    out = subprocess.run(["ps", "-o", "pid=", "-g", str(pgid)], capture_output=True, text=True)
    return [int(pid) for pid in out.stdout.split()]


def start_run(tmp_path, **settings):
    """`scripts/run` on a data folder of the test's, its output in `run.log`: (process, env, log).

    In a process group of its own, like a terminal's foreground job: Ctrl-C signals the group.
    """
    env = {
        **os.environ,
        "STANZA_DATA_DIR": str(tmp_path / "data"),
        "STANZA_ADMIN_PASSWORD": "",
        **settings,
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
    return run, env, log


def test_it_serves_the_dashboard_with_the_scheduler_and_stops_both_on_ctrl_c(tmp_path):
    port = free_port()
    run, env, log = start_run(tmp_path, STANZA_PORT=str(port))
    try:

        def listening():
            assert run.poll() is None, log.read_text()
            return "Listening at" in log.read_text()

        wait_until(listening, timeout=180, interval=0.3)
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
        wait_until(lambda: children_of(run.pid) == [], timeout=15, interval=0.2)
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
            run.wait()
    assert password not in manage("ensureadmin", env=env).stdout  # shown once only


@pytest.mark.litestream
def test_it_runs_replication_beside_them_when_a_replica_is_set_and_stops_it(tmp_path):
    run, _, log = start_run(
        tmp_path,
        STANZA_PORT=str(free_port()),
        STANZA_REPLICA_URL=f"file://{tmp_path / 'replica'}",
    )

    def commands():
        ps = ["ps", "-o", "args=", "-g", str(run.pid)]
        return subprocess.run(ps, capture_output=True, text=True).stdout

    try:

        def replicating():
            assert run.poll() is None, log.read_text()
            replica = tmp_path / "replica" / "ltx"
            return replica.is_dir() and "Listening at" in log.read_text()

        wait_until(replicating, timeout=180, interval=0.3)
        assert "manage.py replicate" in commands() and "litestream replicate" in commands()
        os.killpg(run.pid, signal.SIGINT)
        run.wait(timeout=30)
        wait_until(lambda: children_of(run.pid) == [], timeout=15, interval=0.2)
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
            run.wait()
