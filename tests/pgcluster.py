"""A throwaway PostgreSQL cluster for the `postgres` tests (see FIELD-NOTES: PostgreSQL here).

`initdb` refuses to run as root, so the cluster is made and run by the `postgres` user, in a
folder that user owns under /tmp (pytest's own tmp folders are 0700 root). It listens on
127.0.0.1 on a port of its own and on a socket in its folder; local connections as `postgres`
are trusted (the tests' administration), TCP ones need a password (the site's role).
"""

import contextlib
import glob
import os
import secrets
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg
from psycopg import sql

SITE_ROLE = "stanza_site"
# A role that may log in but not create databases (the full check says it needs CREATEDB).
PLAIN_ROLE = "stanza_plain"


def server_binary(name):
    """`initdb`/`pg_ctl`: on PATH where installed so, else Debian's versioned folder."""
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not candidates:
        raise RuntimeError(f"{name} is not installed (apt-get install postgresql)")
    return candidates[-1]


def as_postgres(*args, **kwargs):
    return subprocess.run(
        ["runuser", "-u", "postgres", "--", *args],
        check=True,
        capture_output=True,
        text=True,
        **kwargs,
    )


class Cluster:
    """One PostgreSQL server in a temporary folder; `stop()` kills it and removes the folder."""

    def __init__(self, port, *, durable=False):
        self.port = port
        # Tests run with fsync off (nothing to keep); the bench keeps PostgreSQL's defaults.
        self.durable = durable
        self.folder = Path(tempfile.mkdtemp(prefix="stanza-pg-"))
        shutil.chown(self.folder, "postgres", "postgres")
        self.data = self.folder / "data"
        self.log = self.folder / "log"
        self.superuser_password = secrets.token_urlsafe(12)
        self.passwords = {}

    def start(self):
        pwfile = self.folder / "pwfile"
        pwfile.write_text(self.superuser_password + "\n")
        shutil.chown(pwfile, "postgres", "postgres")
        as_postgres(
            server_binary("initdb"),
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            f"--pwfile={pwfile}",
            "--no-sync",
        )
        pwfile.unlink()
        self.pg_ctl("start", "-w", "-o", self._options())

    def _options(self):
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1"
        if not self.durable:
            options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        return options

    def pg_ctl(self, action, *args):
        return as_postgres(
            server_binary("pg_ctl"), "-D", str(self.data), "-l", str(self.log), *args, action
        )

    def stop(self, mode="immediate"):
        with contextlib.suppress(subprocess.CalledProcessError):
            self.pg_ctl("stop", "-m", mode)

    def restart(self):
        self.pg_ctl("start", "-w", "-o", self._options())

    def is_running(self):
        return (
            subprocess.run(
                [
                    "runuser",
                    "-u",
                    "postgres",
                    "--",
                    server_binary("pg_ctl"),
                    "-D",
                    str(self.data),
                    "status",
                ],
                capture_output=True,
            ).returncode
            == 0
        )

    def remove(self):
        self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)

    def admin(self, dbname="postgres"):
        """A superuser connection over the cluster's socket (autocommit)."""
        return psycopg.connect(
            host=str(self.folder), port=self.port, user="postgres", dbname=dbname, autocommit=True
        )

    def create_role(self, role, *, createdb=True):
        password = secrets.token_urlsafe(16)
        with self.admin() as conn:
            conn.execute(
                sql.SQL("CREATE ROLE {} LOGIN {} PASSWORD {}").format(
                    sql.Identifier(role),
                    sql.SQL("CREATEDB" if createdb else "NOCREATEDB"),
                    sql.Literal(password),
                )
            )
        self.passwords[role] = password
        return password

    def create_database(self, name, owner=SITE_ROLE):
        with self.admin() as conn:
            conn.execute(
                sql.SQL("CREATE DATABASE {} OWNER {}").format(
                    sql.Identifier(name), sql.Identifier(owner)
                )
            )
        return name

    def drop_database(self, name):
        with self.admin() as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )

    def databases(self):
        with self.admin() as conn:
            rows = conn.execute("SELECT datname FROM pg_database").fetchall()
        return {name for (name,) in rows}

    def settings(self, name, role=SITE_ROLE):
        """DATABASES["default"] of a site using database `name` as `role`, over TCP."""
        return {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": name,
            "USER": role,
            "PASSWORD": self.passwords[role],
            "HOST": "127.0.0.1",
            "PORT": str(self.port),
        }

    def env(self, name, role=SITE_ROLE):
        """The environment `tests.pg_settings` reads to point a subprocess at database `name`."""
        settings = self.settings(name, role)
        return {
            "DJANGO_SETTINGS_MODULE": "tests.pg_settings",
            "TEST_PG_NAME": name,
            "TEST_PG_USER": role,
            "TEST_PG_PASSWORD": settings["PASSWORD"],
            "TEST_PG_HOST": settings["HOST"],
            "TEST_PG_PORT": settings["PORT"],
        }

    def connect(self, name, role=SITE_ROLE, **kwargs):
        """A connection as the site's role, as the site makes them (TCP, password)."""
        s = self.settings(name, role)
        return psycopg.connect(
            host=s["HOST"],
            port=s["PORT"],
            user=role,
            password=s["PASSWORD"],
            dbname=name,
            **kwargs,
        )


def wait_for_connections(cluster, name, count, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with cluster.admin() as conn:
            (n,) = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = %s", (name,)
            ).fetchone()
        if n >= count:
            return n
        time.sleep(0.05)
    raise AssertionError(f"{count} connections to {name} never came")


def start_cluster(port, *, durable=False):
    cluster = Cluster(port, durable=durable)
    try:
        cluster.start()
        cluster.create_role(SITE_ROLE, createdb=True)
        cluster.create_role(PLAIN_ROLE, createdb=False)
    except BaseException:
        cluster.remove()
        raise
    return cluster


os.environ.setdefault("PGCONNECT_TIMEOUT", "10")
