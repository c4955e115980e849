"""Hostile and odd input to the folder read, the pagers and the one-backup views: what an
attacker, a hurried admin or a broken disk puts there gets a clear answer, never a hang or a 500."""

import os
import re
import signal
import socket
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import pytest
from django.core.paginator import Paginator
from django.utils import timezone

from backups_app.engine import backups
from backups_app.models import CronRun
from tests.conftest import write_backup_file

URL = "/admin/backups/"
CRON = "/admin/cron/"
NAME = "database.sqlite.20260101T020000Z.bak"


@contextmanager
def within(seconds):
    """Fail instead of hanging: SIGALRM interrupts a blocking open() in the main thread."""

    def hung(signum, frame):
        raise TimeoutError("hangs")

    old = signal.signal(signal.SIGALRM, hung)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def names_in_order(html):
    """The backup names of a page, in order (a name may break after its dots: <wbr>)."""
    found = re.findall(r'<code class="stanza-name">(.+?)</code>', html)
    return [name.replace("<wbr>", "") for name in found]


# --- HistoryPaginator against Django's own --------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("orphans", [0, 1, 2])
def test_history_pages_are_djangos_pages_for_every_count_and_number(orphans):
    from backups_app.web.cron_views import HistoryPaginator

    now = timezone.now()
    for count in range(0, 12):
        CronRun.objects.all().delete()
        for i in range(count):
            # ties on started_at: the id breaks them, in both directions
            CronRun.objects.create(
                job_name="daily-backup", status="success", started_at=now - timedelta(i // 2)
            )
        runs = CronRun.objects.order_by("-started_at", "-id")
        for per_page in (1, 2, 3, 5):
            ours, theirs = (
                HistoryPaginator(runs, per_page, orphans),
                Paginator(runs, per_page, orphans),
            )
            assert ours.num_pages == theirs.num_pages
            for number in [
                "1",
                "0",
                "-1",
                "x",
                "",
                None,
                "99999999999999999999",
                "9" * 5000,
                *map(str, range(1, theirs.num_pages + 2)),
            ]:
                a, b = ours.get_page(number), theirs.get_page(number)
                assert (a.number, list(a), a.start_index(), a.end_index()) == (
                    b.number,
                    list(b),
                    b.start_index(),
                    b.end_index(),
                ), (count, per_page, orphans, number)


@pytest.mark.django_db
@pytest.mark.parametrize(
    "extra",
    ["", "&status=failure", "&job=daily-backup", "&job=gone-job&status=success", "&status=bogus"],
)
def test_cron_history_pages_through_every_run_once(staff_client, data_dir, extra):
    """Walking every page (50 a page) shows each run exactly once, newest first, across the
    half-way switch, with filters kept in the links."""
    now = timezone.now()
    made = []
    for i in range(151):
        job = ("daily-backup", "gone-job")[i % 2]
        status = ("success", "failure", "success")[i % 3]
        made.append(
            CronRun.objects.create(
                job_name=job, status=status, started_at=now - timedelta(minutes=i // 3)
            )
        )
    seen = []
    number = 1
    while True:
        html = staff_client.get(CRON + "?" + extra.lstrip("&") + f"&page={number}").content.decode()
        body = re.search(r'<table id="runs".*?<tbody>(.*?)</tbody>', html, re.S).group(1)
        ids = [int(x) for x in re.findall(r'href="/admin/cron/runs/(\d+)/"', body)]
        # each row links to its run once at least; keep order, drop repeats within the row
        row_ids = list(dict.fromkeys(ids))
        seen.extend(row_ids)
        nxt = re.search(r'href="\?([^"]*)page=(\d+)#history" rel="next"', html)
        if not nxt:
            break
        assert nxt.group(1).replace("&amp;", "&") == (extra.lstrip("&") + "&" if extra else "")
        number = int(nxt.group(2))
    qs = CronRun.objects.order_by("-started_at", "-id")
    if "status=failure" in extra:
        qs = qs.filter(status="failure")
    if "status=success" in extra:
        qs = qs.filter(status="success")
    if "job=daily-backup" in extra:
        qs = qs.filter(job_name="daily-backup")
    if "job=gone-job" in extra:
        qs = qs.filter(job_name="gone-job")
    assert seen == list(qs.values_list("pk", flat=True))


@pytest.mark.django_db
@pytest.mark.parametrize(
    "number", ["0", "-1", "abc", "1.5", "1e3", "99999999999999999999", "9" * 5000, "", "%00"]
)
def test_cron_page_with_any_page_number(staff_client, data_dir, number):
    for i in range(120):
        CronRun.objects.create(
            job_name="daily-backup",
            status="success",
            started_at=timezone.now() - timedelta(minutes=i),
        )
    assert staff_client.get(CRON, {"page": number}).status_code == 200
    assert staff_client.get(CRON, {"page": number, "status": "failure"}).status_code == 200


@pytest.mark.django_db
def test_empty_history_with_filters(staff_client, data_dir):
    for q in (
        {},
        {"page": "3"},
        {"job": "x" * 101, "page": "-2"},
        {"status": "failure", "page": "2"},
    ):
        assert staff_client.get(CRON, q).status_code == 200


# --- Backups page pager ------------------------------------------------------------------


@pytest.mark.parametrize(
    "number", ["0", "-1", "abc", "1.5", "99999999999999999999", "9" * 5000, "", "4"]
)
def test_backups_page_with_any_page_number(staff_client, backups_folder, number):
    for i in range(120):
        write_backup_file(
            backups_folder,
            f"database.sqlite.20260101T02{i // 60:02d}{i % 60:02d}Z.bak",
            age=timedelta(minutes=i),
            checksum=False,
        )
    response = staff_client.get(URL, {"page": number})
    assert response.status_code == 200
    assert 1 <= len(names_in_order(response.content.decode())) <= 50


# --- hostile folders and names --------------------------------------------------------------


def stamp(i):
    return f"database.sqlite.202601{i + 1:02d}T020000Z.bak"


def test_hostile_entries_are_left_out_and_the_page_does_not_hang(
    staff_client, backups_folder, tmp_path
):
    write_backup_file(backups_folder, stamp(0))
    os.mkfifo(backups_folder / stamp(1))
    (backups_folder / stamp(2)).mkdir()
    outside = tmp_path / "outside.bak"
    outside.write_bytes(b"secret")
    (backups_folder / stamp(3)).symlink_to(outside)
    write_backup_file(backups_folder, stamp(4), checksum=False)
    (backups_folder / (stamp(4) + ".sha256")).mkdir()  # a folder: no checksum
    write_backup_file(backups_folder, stamp(5), checksum=False)
    (backups_folder / (stamp(5) + ".sha256")).symlink_to(outside)  # a symlink: no checksum
    (backups_folder / (stamp(6) + "\n")).write_bytes(b"x")  # newline at the end
    (backups_folder / ("\n" + stamp(7))).write_bytes(b"x")
    os.mkfifo(backups_folder / (stamp(9) + ".sha256"))
    write_backup_file(backups_folder, stamp(9), checksum=False)
    sock = socket.socket(socket.AF_UNIX)
    cwd = os.getcwd()
    os.chdir(backups_folder)
    try:
        sock.bind(stamp(10))
    finally:
        os.chdir(cwd)

    with within(20):
        response = staff_client.get(URL)
    sock.close()
    assert response.status_code == 200
    html = response.content.decode()
    assert sorted(names_in_order(html)) == [stamp(0), stamp(4), stamp(5), stamp(9)]
    assert html.count(">no checksum<") == 3


def test_a_name_with_non_ascii_digits_is_not_a_backup(staff_client, backups_folder):
    """A file named with Arabic-Indic digits is listed, drilled and offered as a backup, and
    its URL is a 404 rather than the 400 of a name that is not a backup's."""
    name = stamp(8).replace("2026", "\u0662\u0660\u0662\u0666")
    write_backup_file(backups_folder, name)

    assert not backups.is_backup_name(name)
    assert names_in_order(staff_client.get(URL).content.decode()) == []


@pytest.mark.parametrize("kind", ["missing", "file", "fifo", "symlink-dir", "dangling"])
def test_backups_page_for_a_bad_folder(staff_client, data_dir, settings, tmp_path, kind):
    folder = tmp_path / "elsewhere"
    if kind == "file":
        folder.write_text("x")
    elif kind == "fifo":
        os.mkfifo(folder)
    elif kind == "symlink-dir":
        real = tmp_path / "real"
        real.mkdir()
        write_backup_file(real, NAME)
        folder.symlink_to(real)
    elif kind == "dangling":
        folder.symlink_to(tmp_path / "nowhere")
    settings.STANZA_BACKUPS_DIR = folder

    with within(20):
        response = staff_client.get(URL)
    assert response.status_code == 200, kind
    html = response.content.decode()
    if kind == "symlink-dir":
        assert names_in_order(html) == [NAME]
    else:
        assert "stanza-problem" in html or 'role="alert"' in html, kind


# --- the one-backup views: who may, and which names -----------------------------------------

ONE_BACKUP = [
    "/admin/database/backups/{}",
    "/admin/backups/delete/{}",
    "/admin/backups/restore/{}",
    "/admin/backups/offsite/{}",
    "/admin/backups/offsite-fetch/{}",
]
OTHER = ["/admin/backups/", "/admin/cron/", "/admin/backups/restore-at"]


@pytest.mark.django_db
@pytest.mark.parametrize("method", ["get", "head", "post"])
@pytest.mark.parametrize(
    "url", [u.format(NAME) for u in ONE_BACKUP] + [u.format("../x") for u in ONE_BACKUP] + OTHER
)
def test_anonymous_and_non_staff_never_reach_a_view(
    client, django_user_model, backups_folder, method, url
):
    write_backup_file(backups_folder, NAME)
    response = getattr(client, method)(url)
    assert response.status_code == 302 and "/admin/login/" in response["Location"], (method, url)
    user = django_user_model.objects.create_user("visitor", password="pw")
    client.force_login(user)
    response = getattr(client, method)(url)
    assert response.status_code == 403
    assert (backups_folder / NAME).exists()


BAD = ["x.bak", "..%2F..%2Fetc%2Fpasswd", "../database.sqlite", NAME + ".sha256", "%00"]


@pytest.mark.parametrize("bad", BAD)
@pytest.mark.parametrize("url", ONE_BACKUP[:3])
def test_bad_names_are_400_and_missing_ones_404(staff_client, backups_folder, url, bad):
    write_backup_file(backups_folder, NAME)
    assert staff_client.get(url.format(bad)).status_code == 400, bad
    assert staff_client.post(url.format(bad)).status_code in (400, 405), bad
    missing = NAME.replace("0101", "0102")
    assert staff_client.get(url.format(missing)).status_code == 404
    # A newline never reaches the view: `<path:>` does not match it (404, as at c054c47).
    assert staff_client.get(url.format(NAME + "%0A")).status_code == 404


@pytest.mark.parametrize("url", ONE_BACKUP[:3])
@pytest.mark.parametrize("kind", ["dir", "fifo", "symlink"])
def test_a_backup_name_that_is_not_a_regular_file_is_404(
    staff_client, backups_folder, tmp_path, url, kind
):
    path = backups_folder / NAME
    if kind == "dir":
        path.mkdir()
    elif kind == "fifo":
        os.mkfifo(path)
    else:
        target = tmp_path / "secret"
        target.write_bytes(b"secret")
        path.symlink_to(target)
    with within(20):
        assert staff_client.get(url.format(NAME)).status_code == 404


@pytest.mark.parametrize("url", ONE_BACKUP[:3])
@pytest.mark.parametrize(
    "stamp", ["20261340T250000Z", "20260230T020000Z", "20250229T020000Z", "20260101T240000Z"]
)
def test_a_name_with_an_impossible_date_is_no_backup(staff_client, backups_folder, url, stamp):
    """Month 13, 30 February, 29 February of a common year, hour 24: the name's date is the
    backup's time (restore shows it), so a date the calendar has not is not a backup's name."""
    name = f"database.sqlite.{stamp}.bak"
    write_backup_file(backups_folder, name)
    write_backup_file(backups_folder, "database.sqlite.20240229T020000Z.bak")  # a leap day

    assert staff_client.get(url.format(name)).status_code == 400
    assert names_in_order(staff_client.get(URL).content.decode()) == [
        "database.sqlite.20240229T020000Z.bak"
    ]


# --- replicate: SIGTERM and SIGINT stop it cleanly ------------------------------------------


@pytest.mark.litestream
@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_replicate_stops_cleanly_on_a_stop_signal(live_data, tmp_path, signum):
    from tests.conftest import live_env, wait_until
    from tests.test_replication import Replicating, _alive, litestream_pid, status_of

    run = Replicating(live_data, live_env(live_data, STANZA_REPLICA_URL=f"file://{tmp_path / 'r'}"))
    try:
        child = wait_until(lambda: litestream_pid(live_data), interval=0.2)
        run.proc.send_signal(signum)
        assert run.proc.wait(30) == 0, run.log_path.read_text()
    finally:
        if run.proc.poll() is None:
            run.proc.kill()
    assert _alive(child) is None
    assert status_of(live_data)["litestream_running"] is False
    log = run.log_path.read_text()
    assert "Traceback" not in log, log


# --- a folder that can be read but not searched -----------------------------------------


def as_nobody(work):
    """`work()` in a forked child running as nobody (root reads everything): its result or
    its exception's type and message."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        os.close(read)
        try:
            os.setgid(65534)
            os.setuid(65534)
            try:
                outcome = repr(work())
            except BaseException as err:  # noqa: BLE001 - reported to the parent
                outcome = f"{type(err).__name__}: {err}"
            os.write(write, outcome.encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        outcome = pipe.read().decode()
    os.waitpid(pid, 0)
    return outcome


def test_a_folder_without_search_permission_is_a_backup_error(settings, data_dir):
    """r-- on the folder: the names can be listed, but no entry can be stat'd. The page shows
    "cannot be read", like for a folder with no read permission, instead of a 500."""
    import shutil
    import tempfile

    outside = Path(tempfile.mkdtemp(prefix="stanza-attack-"))  # /tmp: others may enter
    try:
        outside.chmod(0o755)
        folder = outside / "backups"
        folder.mkdir()
        write_backup_file(folder, NAME)
        settings.STANZA_BACKUPS_DIR = folder
        backups.name_prefix(), backups.backups_dir()  # settings read as root, before the fork
        folder.chmod(0o644)
        outcome = as_nobody(lambda: backups.scan_backups(folder))
    finally:
        shutil.rmtree(outside)
    assert outcome.startswith("BackupError: ") and "cannot be read" in outcome, outcome


# --- the session's migrated folder stays as migrate left it -------------------------------


def test_copying_the_migrated_database_leaves_the_template_as_migrate_left_it(
    migrated_live_data, migrated_database, tmp_path
):
    """`live_data` copies the whole template folder: files a read-only opener leaves there
    (-wal, -shm) end up in every later test's copy, and tests then differ by their order."""
    from tests.conftest import copy_database

    copy_database(migrated_database, tmp_path / "copy.sqlite")

    # migrate leaves none (it closes the database); a read-only open of it makes both.
    assert not [p.name for p in migrated_live_data.iterdir() if p.name.endswith(("-wal", "-shm"))]


def test_a_backups_folder_that_is_a_symlink_loop_is_a_problem_not_a_500(
    staff_client, data_dir, settings, tmp_path
):
    folder = tmp_path / "elsewhere"
    folder.symlink_to(folder)
    settings.STANZA_BACKUPS_DIR = folder

    response = staff_client.get(URL)

    assert response.status_code == 200
    assert 'role="alert"' in response.content.decode()


@pytest.mark.litestream
@pytest.mark.slow
def test_ctrl_c_on_scripts_run_stops_replication_without_a_litestream_error(live_data, tmp_path):
    """scripts/run starts `replicate &`: bash starts it with SIGINT ignored, which
    on_stop_signals now keeps. Ctrl-C signals the whole foreground group, so Litestream (a
    child in that group) gets the SIGINT and exits; replicate, still running, takes that for
    a death ("ERROR litestream exited with status 0; restarting it in 1 s", restarts 1, the
    error kept in the status file) until the script's trap sends it SIGTERM. At c054c47,
    replicate caught the SIGINT too and stopped cleanly."""
    import subprocess
    import sys
    import time

    from tests.conftest import REPO_DIR, live_env, wait_until
    from tests.test_replication import litestream_pid, status_of

    def like_bash_background():
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGQUIT, signal.SIG_IGN)

    env = {**os.environ, **live_env(live_data, STANZA_REPLICA_URL=f"file://{tmp_path / 'r'}")}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    log_path = tmp_path / "replicate.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "manage.py", "replicate"],
            cwd=REPO_DIR,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=like_bash_background,
            start_new_session=True,  # its own group: the "terminal" below signals only it
        )
    try:
        wait_until(lambda: litestream_pid(live_data), interval=0.2)
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C: the terminal signals the whole group
        time.sleep(0.5)  # then scripts/run's trap: `kill -TERM` to each of its children
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    log = log_path.read_text()
    assert "litestream exited" not in log, log
    assert status_of(live_data)["error"] == ""
