import contextlib
import email
import errno
import itertools
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import types
import urllib.request
from pathlib import Path

import pytest

REPO_DIR = Path(__file__).resolve().parent.parent
MANAGE = REPO_DIR / "manage.py"


def pytest_collection_modifyitems(items):
    """`page` is pytest-playwright's fixture: a test elsewhere that names an argument `page`
    starts the browser's event loop, and every database test after it then fails with
    SynchronousOnlyOperation (a CI run showed 353 errors). Refuse such a test at collection."""
    misnamed = [
        item.nodeid
        for item in items
        if "page" in getattr(item, "fixturenames", ()) and not item.get_closest_marker("browser")
    ]
    if misnamed:
        names = ", ".join(misnamed)
        raise pytest.UsageError(f"only browser tests may use `page` (playwright's): {names}")


@pytest.fixture(scope="session", autouse=True)
def fast_password_hashing():
    """Hash test users' passwords with MD5: PBKDF2 costs 0.6 s a user, and no test is about it."""
    from django.test import override_settings

    with override_settings(PASSWORD_HASHERS=["django.contrib.auth.hashers.MD5PasswordHasher"]):
        yield


@pytest.fixture(autouse=True)
def site_database_file(monkeypatch, tmp_path):
    """The live database's path as the app sees it: `data/database.sqlite` in the test's folder.

    pytest-django's test database lives in memory, with no file or folder; the app derives
    backup names, its lock files and its default backups folder from that path, so each
    in-process test gets one of its own (`live_database` puts a real database there).
    """
    from backups_app import conf

    path = tmp_path / "data" / "database.sqlite"  # in the folder `data_dir` makes, as here
    monkeypatch.setattr(conf, "live_database_path", lambda: path)
    return path


@pytest.fixture(autouse=True)
def site_media_root(settings, tmp_path):
    """The site's uploaded files (STANZA_MEDIA_DIR's default): `data/media` in the test's folder,
    missing until a test puts files there, so no test backs up the repository's own."""
    settings.MEDIA_ROOT = str(tmp_path / "data" / "media")
    return tmp_path / "data" / "media"


@pytest.fixture
def data_dir(tmp_path, settings):
    """A data folder with its backups folder, used by the code under test through settings."""
    data = tmp_path / "data"
    (data / "backups").mkdir(parents=True)
    settings.STANZA_DATA_DIR = data
    settings.STANZA_BACKUPS_DIR = data / "backups"
    return data


@pytest.fixture
def backups_folder(data_dir):
    return data_dir / "backups"


def make_database(path, rows=100, *, wal=True):
    """A real SQLite file with a few tables, an index and some rows; returns its path."""
    conn = sqlite3.connect(path, isolation_level=None)
    if wal:
        conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE IF NOT EXISTS django_migrations (id INTEGER PRIMARY KEY, app, name)")
    conn.execute("CREATE TABLE IF NOT EXISTS item (id INTEGER PRIMARY KEY, name TEXT, n INT)")
    conn.execute("CREATE INDEX IF NOT EXISTS item_name ON item (name)")
    conn.execute("BEGIN")
    conn.executemany(
        "INSERT INTO item (name, n) VALUES (?, ?)", ((f"item {i}", i) for i in range(rows))
    )
    conn.execute("COMMIT")
    conn.close()
    return path


def damaged_database(path):
    """A database whose index disagrees with its table: SQLite's integrity_check prints a
    line per row (the way a corrupt upload looks)."""
    make_database(path, rows=200, wal=False)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA writable_schema=ON")
    conn.execute(
        "UPDATE sqlite_master SET sql = 'CREATE INDEX item_name ON item (n)' "
        "WHERE name = 'item_name'"
    )
    conn.close()
    return path


@pytest.fixture
def source_db(tmp_path):
    return make_database(tmp_path / "database.sqlite")


def count_rows(path, table="item"):
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
    finally:
        conn.close()


def manage(*args, env=None, cwd=None, check=False, timeout=120, **kwargs):
    """Run `python manage.py ARGS` in a real subprocess; returns the CompletedProcess."""
    full_env = {**os.environ, **(env or {})}
    full_env.pop("DJANGO_SETTINGS_MODULE", None)
    return subprocess.run(
        [sys.executable, str(MANAGE), *args],
        env=full_env,
        cwd=cwd or REPO_DIR,
        capture_output=True,
        text=True,
        check=check,
        timeout=timeout,
        **kwargs,
    )


def free_port():
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Inbox:
    """An aiosmtpd handler that keeps every message it receives."""

    def __init__(self):
        self.messages = []
        self.port = None

    async def handle_DATA(self, server, session, envelope):
        self.messages.append(email.message_from_bytes(envelope.content))
        return "250 OK"

    @property
    def subjects(self):
        return [message["Subject"] for message in self.messages]


@contextlib.contextmanager
def smtp_inbox():
    """A real SMTP server on loopback; yields its Inbox (`.port` is where it listens)."""
    from aiosmtpd.controller import Controller

    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    inbox.port = controller.port
    try:
        yield inbox
    finally:
        controller.stop()


@contextlib.contextmanager
def gunicorn(env, *args):
    """Serve the site with gunicorn on a free port (its own choice); yield its base URL."""
    full_env = {**os.environ, **env}
    full_env.pop("DJANGO_SETTINGS_MODULE", None)
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "stanza_site.wsgi", "--bind", "127.0.0.1:0", *args],
        cwd=REPO_DIR,
        env=full_env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        yield _wait_for_gunicorn(server)
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        server.stderr.close()


def _wait_for_gunicorn(server):
    """Read gunicorn's log until it says where it listens, then until a page answers."""

    def listening_url():
        line = server.stderr.readline()
        assert line, f"gunicorn exited with status {server.poll()}"
        found = re.search(r"Listening at: (http://\S+)", line)
        return found.group(1) if found else None

    url = wait_until(listening_url, timeout=30, interval=0)
    # Keep draining its log so it never blocks on a full pipe.
    threading.Thread(target=lambda: [None for _ in server.stderr], daemon=True).start()

    def answers():
        try:
            with urllib.request.urlopen(f"{url}/admin/login/", timeout=5) as response:
                return response.status == 200
        except OSError:
            return False

    wait_until(answers, timeout=30, interval=0.2)
    return url


def make_large_database(path, megabytes, *, wal=True):
    """A real SQLite file of about `megabytes` MB (random text, indexed), built in SQLite's C."""
    make_database(path, rows=10, wal=wal)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute(
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < ?) "
        "INSERT INTO item (name, n) SELECT hex(randomblob(150)), x FROM c",
        (megabytes * 1024 * 1024 // 640,),
    )
    conn.close()
    return path


@pytest.fixture(scope="session")
def large_data_dir(tmp_path_factory):
    """A data folder holding a ~200 MB database, shared by tests that only read it."""
    data = tmp_path_factory.mktemp("large")
    make_large_database(data / "database.sqlite", 200)
    return data


@pytest.fixture
def mount_point(tmp_path):
    """A folder to mount a tmpfs on (skips when mounting is not allowed); unmounted after."""
    point = tmp_path / "mnt"
    point.mkdir()
    mounted = []

    def mount(*options):
        result = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", ",".join(options), "tmpfs", str(point)],
            capture_output=True,
        )
        if result.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {result.stderr.decode().strip()}")
        mounted.append(point)
        return point

    yield mount
    for path in mounted:
        subprocess.run(["umount", "-l", str(path)], check=False)


@pytest.fixture(scope="session")
def migrated_live_data(tmp_path_factory):
    """A data folder as one real `manage.py migrate` leaves it; copy, never write (`live_data`)."""
    folder = tmp_path_factory.mktemp("migrated-live") / "live"
    folder.mkdir()
    manage("migrate", "--no-input", "-v0", env=live_env(folder), check=True)
    return folder


@pytest.fixture
def live_data(tmp_path, migrated_live_data):
    """A data folder with a migrated database, for commands run in subprocesses.

    A copy (modes included) of the folder one real migrate made for the session: a migrate
    subprocess per test cost a second. Returns the folder; `live_env(folder)` gives the
    environment that points a subprocess at it.
    """
    return Path(shutil.copytree(migrated_live_data, tmp_path / "live"))


def live_env(folder, **extra):
    """The environment of a subprocess using data folder `folder` (which `hold_jobs` can hold)."""
    hold = str(Path(__file__).parent / "hold")
    pythonpath = os.pathsep.join(filter(None, [hold, os.environ.get("PYTHONPATH")]))
    return {
        "STANZA_DATA_DIR": str(folder),
        "PYTHONPATH": pythonpath,
        "TEST_HOLD_JOBS": "1",
        **extra,
    }


def read_runs(folder, job_name=None):
    """The rows of cron_runs in the database of data folder `folder`, oldest first, as dicts."""
    conn = sqlite3.connect(f"file:{folder / 'database.sqlite'}?mode=ro", uri=True, timeout=20)
    conn.row_factory = sqlite3.Row
    try:
        rows = conn.execute("SELECT * FROM cron_runs ORDER BY id").fetchall()
    finally:
        conn.close()
    return [dict(row) for row in rows if job_name in (None, row["job_name"])]


def wait_until(predicate, timeout=60, interval=0.05):
    """Poll `predicate` until it returns something true; return that, or fail after `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {predicate.__name__}")


def hold_jobs(backups_dir):
    """Make the jobs that check the backups folder's temporary files wait until `release()`.

    A FIFO named like a backup's temporary file: a subprocess started with `live_env` waits
    when it lists that folder (tests/hold/sitecustomize.py) until a writer opens the FIFO. So
    a real job in a real process lasts as long as a test wants.
    """
    fifo = Path(backups_dir) / ".stanza-tmp-held.partial"
    os.mkfifo(fifo)
    return fifo


def release(fifo):
    """Let a job held by `hold_jobs` go on (it then removes the FIFO as an abandoned file)."""

    def open_for_writing():
        try:
            return os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as err:  # ENXIO: the job has not opened it yet
            if err.errno != errno.ENXIO:
                raise
            return None

    os.close(wait_until(open_for_writing))


# --- restore, drills, health, alerts ---------------------------------------------------------


def corrupt_middle(path, length=4096):
    """Overwrite `length` bytes in the middle of a file, as a failing disk might."""
    size = Path(path).stat().st_size
    offset = (size // 2) // 4096 * 4096
    with open(path, "r+b") as f:
        f.seek(offset)
        original = f.read(length)
        f.seek(offset)
        f.write(bytes(b ^ 0xFF for b in original))


def file_state(folder):
    """{name: bytes} of every file in a folder, to prove that nothing changed."""
    return {p.name: p.read_bytes() for p in sorted(Path(folder).iterdir()) if p.is_file()}


# --- the dashboard (views, admin, browser) ------------------------------------------------


@pytest.fixture
def live_database(monkeypatch, source_db):
    """The database the site backs up: a real file, since the test database lives in memory."""
    from backups_app.engine import backups, names

    # names holds it; backups.live_database_path is the same function under the engine's name
    for module in (names, backups):
        monkeypatch.setattr(module, "live_database_path", lambda: source_db)
    return source_db


@pytest.fixture
def staff_user(db, django_user_model):
    """A staff user with no model permissions: the dashboard is open to every staff user."""
    return django_user_model.objects.create_user("staff", password="pw-staff-123", is_staff=True)


@pytest.fixture
def staff_client(client, staff_user):
    client.force_login(staff_user)
    return client


@pytest.fixture
def user_client(client, db, django_user_model):
    """A logged-in user who is not staff."""
    user = django_user_model.objects.create_user("visitor", password="pw-visitor-123")
    client.force_login(user)
    return client


def write_backup_file(folder, name, content=b"backup bytes", *, age=None, checksum=True):
    """A file with a backup's name (content need not be a database for listing or download)."""
    import hashlib
    import time

    path = Path(folder) / name
    path.write_bytes(content)
    if checksum:
        digest = hashlib.sha256(content).hexdigest()
        path.with_name(name + ".sha256").write_text(f"{digest}  {name}\n")
    if age is not None:
        when = time.time() - age.total_seconds()
        os.utime(path, (when, when))
    return path


def finished_run(job_name, started_at, status="success", error=""):
    """A finished CronRun of `job_name` that started at `started_at` and took a second."""
    from datetime import timedelta

    from backups_app.models import CronRun

    return CronRun.objects.create(
        job_name=job_name,
        started_at=started_at,
        finished_at=started_at + timedelta(seconds=1),
        duration=timedelta(seconds=1),
        status=status,
        result="database.sqlite.20261126T020000Z.bak (1 MB)" if not error else "",
        error=error,
    )


@pytest.fixture(scope="session")
def migrated_database(migrated_live_data, tmp_path_factory):
    """A database migrated by this project's code (real `manage.py migrate`); copy, never write.

    A file of its own: opening it, even read-only, adds -wal and -shm beside it, and those
    must not join the folder every `live_data` copies.
    """
    folder = tmp_path_factory.mktemp("migrated")
    return Path(shutil.copy2(migrated_live_data / "database.sqlite", folder / "database.sqlite"))


def copy_database(source, dest, *, page_size=None, wal=True):
    """A standalone copy of an SQLite file (optionally with another page size) at `dest`."""
    conn = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
    if page_size:
        conn.execute("VACUUM INTO ?", (str(dest),))  # then convert below
        conn.close()
        out = sqlite3.connect(dest, isolation_level=None)
        out.execute(f"PRAGMA page_size = {page_size}")
        out.execute("VACUUM")
    else:
        out = sqlite3.connect(dest, isolation_level=None)
        conn.backup(out)
        conn.close()
    if wal:
        out.execute("PRAGMA journal_mode=WAL")
    out.close()
    return dest


@pytest.fixture
def offsite_folder(settings, tmp_path):
    """Offsite copies in another Django storage than S3 (a FileSystemStorage): its folder."""
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    settings.STORAGES = {
        **settings.STORAGES,
        "offsite": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(folder)},
        },
    }
    return folder


# --- S3 on loopback (moto's server) ----------------------------------------------------------


@pytest.fixture
def moto_s3(tmp_path):
    """moto's S3 server on a free loopback port, as a real subprocess; yields its env vars.

    The dict holds the AWS_* variables that point a client (boto3, Litestream) at it.
    """
    with moto_server(tmp_path) as env:
        yield env


@contextlib.contextmanager
def moto_server(folder):
    """moto's S3 server as a real subprocess (its log in `folder`), for any fixture scope."""
    import shutil
    import urllib.request

    server = Path(sys.executable).parent / "moto_server"
    if not server.exists():
        server = shutil.which("moto_server")
    if not server:
        pytest.skip('moto_server is not installed (pip install "moto[server]")')
    port = free_port()
    with open(Path(folder) / "moto.log", "wb") as log:  # the child keeps its own copy
        proc = subprocess.Popen(
            [str(server), "-H", "127.0.0.1", "-p", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    endpoint = f"http://127.0.0.1:{port}"

    def answering():
        try:
            with urllib.request.urlopen(endpoint, timeout=1):
                return True
        except OSError as err:
            return getattr(err, "code", None) is not None  # an HTTP error is an answer

    try:
        wait_until(answering, timeout=30, interval=0.2)
        yield {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ENDPOINT_URL": endpoint,
        }
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# --- PostgreSQL (tests marked `postgres`) ----------------------------------------------------


@pytest.fixture(scope="session")
def pg_cluster():
    """A throwaway PostgreSQL 15 server for the session (see tests/pgcluster.py)."""
    from tests.pgcluster import start_cluster

    cluster = start_cluster(free_port())
    yield cluster
    cluster.remove()


@pytest.fixture(scope="session")
def pg_migrated(pg_cluster, tmp_path_factory):
    """A database one real `manage.py migrate` made, as a template; copy it, never write."""
    name = pg_cluster.create_database("stanza_template")
    folder = tmp_path_factory.mktemp("pg-migrated")
    env = {**live_env(folder), **pg_cluster.env(name), "STANZA_BACKUPS_DIR": str(folder)}
    result = pg_manage("migrate", "--no-input", "-v0", env=env)
    assert result.returncode == 0, result.stderr
    return name


class PgSite:
    """A site whose database is a fresh copy of the migrated template on the test cluster."""

    def __init__(self, cluster, name, folder):
        self.cluster, self.name, self.folder = cluster, name, folder
        self.backups = folder / "backups"
        self.backups.mkdir(parents=True, mode=0o700)

    def env(self, **extra):
        """The environment of `pg_manage` for this site."""
        return {
            **live_env(self.folder),
            **self.cluster.env(self.name),
            "STANZA_BACKUPS_DIR": str(self.backups),
            **extra,
        }

    def manage(self, *args, **kwargs):
        return pg_manage(*args, env=self.env(**kwargs.pop("env", {})), **kwargs)

    def connect(self, **kwargs):
        return self.cluster.connect(self.name, **kwargs)

    def server(self):
        from backups_app.db.postgres import Server

        return Server.from_settings(self.cluster.settings(self.name))

    def query(self, statement, params=()):
        """Run one statement; its rows (None for a statement that returns none)."""
        with self.connect(autocommit=True) as conn:
            cursor = conn.execute(statement, params)
            return cursor.fetchall() if cursor.description else None


@pytest.fixture
def pg_site(pg_cluster, pg_migrated, tmp_path):
    """A PostgreSQL site: a migrated database of its own, and a data folder with backups/."""
    from psycopg import sql

    name = f"shop_{os.getpid()}_{next(_pg_numbers)}"
    with pg_cluster.admin() as conn:
        conn.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {} OWNER stanza_site").format(
                sql.Identifier(name), sql.Identifier(pg_migrated)
            )
        )
    site = PgSite(pg_cluster, name, tmp_path / "site")
    yield site
    for database in pg_cluster.databases():
        if database.startswith(name) and pg_cluster.is_running():
            pg_cluster.drop_database(database)


_pg_numbers = itertools.count(1)


def pg_manage(*args, env, timeout=300, **kwargs):
    """`python manage.py ARGS` with a PostgreSQL site's settings (`env` from PgSite.env)."""
    full_env = {**os.environ, **env}
    full_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_DIR), env.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, str(MANAGE), *args],
        env=full_env,
        cwd=REPO_DIR,
        capture_output=True,
        text=True,
        timeout=timeout,
        **kwargs,
    )


# --- HTTP servers on loopback (pings) --------------------------------------------------------


@pytest.fixture
def http_recorder():
    """A real HTTP server on loopback that records each request as (method, path, {query},
    body), in the order received, and answers 200 (or the statuses a test puts in `.answers`,
    first to last) after `.delay` seconds; yields the server (`.url`, `.received`, `.answers`,
    `.delay`)."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from urllib.parse import parse_qsl, urlsplit

    class Recorder(BaseHTTPRequestHandler):
        def handle_one(self):
            parts = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            with self.server.lock:
                self.server.received.append(
                    (self.command, parts.path, dict(parse_qsl(parts.query)), body)
                )
                status = self.server.answers.pop(0) if self.server.answers else 200
            time.sleep(self.server.delay)
            self.send_response(status)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"OK")

        do_GET = do_POST = do_HEAD = handle_one

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    server.received, server.answers, server.lock = [], [], threading.Lock()
    server.delay = 0  # seconds each answer waits: a slow monitor
    server.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def hanging_server():
    """A TCP listener on loopback that accepts connections and never answers (a broken network
    or an overloaded server); yields its base URL. Closed, with its connections, afterwards."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    held = []

    def accept():
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            held.append(conn)

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        with contextlib.suppress(OSError):
            listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() above
        listener.close()
        for conn in held:
            conn.close()


@pytest.fixture
def hanging_store(monkeypatch):
    """An S3 endpoint on loopback that accepts connections and never answers (a hung store, or
    a broken network), with the AWS_* variables pointing at it; `.accepted` counts the
    connections made to it."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    accepted = []

    def serve():
        while True:
            try:
                conn, _address = server.accept()
            except OSError:  # closed: the test is over
                return
            accepted.append(conn)  # held open, never read, never answered

    thread = threading.Thread(target=serve, name="hanging-store", daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.getsockname()[1]}"
    env = {
        "AWS_ENDPOINT_URL": url,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    try:
        yield types.SimpleNamespace(url=url, env=env, accepted=accepted)
    finally:
        server.close()
        for conn in accepted:
            conn.close()


# --- `manage.py backup` in a child that signals itself (test_backup_publish, _signals) -------

BACKUP_CHILD = """
import os, sys, time
sys.path.insert(0, {repo!r})
os.environ["DJANGO_SETTINGS_MODULE"] = "stanza_site.settings"
from django.core.management import execute_from_command_line

signum, when = int(sys.argv[1]), sys.argv[2]
{hooks}
execute_from_command_line(["manage.py", "backup", *sys.argv[3:]])
{after}
"""


def run_backup_child(hooks, data, cwd, signum, when, *args, after=""):
    """Run `manage.py backup ARGS` for data folder `data` in a real child that first runs
    `hooks` (Python that sees `signum` and `when`: wrapping `os.link`, say, to send itself
    `signum` at the moment named `when`), and `after` once the command returned."""
    env = {**os.environ, **live_env(data)}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    code = BACKUP_CHILD.format(repo=str(REPO_DIR), hooks=hooks, after=after)
    return subprocess.run(
        [sys.executable, "-c", code, str(int(signum)), when, *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def backup_folders(tmp_path):
    """(data, out): a data folder with a small live database, and an empty folder to run
    `manage.py backup` in (its default output)."""
    data = tmp_path / "data"
    (data / "backups").mkdir(parents=True)
    make_database(data / "database.sqlite", rows=50)
    out = tmp_path / "out"
    out.mkdir()
    return data, out


def backups_in(folder):
    """The backup names in `folder` (no sidecars, no temporary files), sorted."""
    from backups_app.engine import backups

    return sorted(p.name for p in folder.iterdir() if backups.is_backup_name(p.name))


def assert_backup_checked(folder, name):
    """The backup's `.sha256` matches it and its `.json` records the quick check."""
    from backups_app.engine import backups

    assert backups.read_checksum(folder / name) == backups.sha256_of(folder / name)
    assert backups.read_manifest(folder / name)["check"]["kind"] == "quick"


# --- replicate's status file, written as a running `replicate` writes it ----------------------


def write_replica_status(database=None, *, age=0, lag=0, pid=None, running=True, **extra):
    """Write `.stanza-replica/status.json` as this process's `replicate` would: its heartbeat
    `age` seconds ago, every commit up to `lag` seconds before that in the replica."""
    from datetime import UTC, datetime, timedelta

    from backups_app.replication import replication

    beat = datetime.now(UTC) - timedelta(seconds=age)
    replication.write_status(
        {
            "pid": pid or os.getpid(),
            "litestream_running": running,
            "heartbeat_at": beat.isoformat(),
            "synced_through": (beat - timedelta(seconds=lag)).isoformat(),
            **extra,
        },
        database,
    )
