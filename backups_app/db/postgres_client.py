"""PostgreSQL's client side: who the site is on the server, and pg_dump/pg_restore run safely.

Credentials reach the client programs through a 0600 passfile and their environment, never
their command line (`ps` shows it) nor a message. Nothing waits forever: connections give up
after CONNECT_TIMEOUT (ours, and the client programs' PGCONNECT_TIMEOUT), a lock another
session holds after LOCK_WAIT (our sessions' lock_timeout), a program reading a local file
after LOCAL_WAIT; a program whose server went silent is stopped, its forked workers too
(`supervise`, with the caller's test of being stuck). Errors are PostgresError, in words.
Imports nothing of the app but core.files and core.processes. psycopg is imported when there:
an SQLite site needs none.
"""

import contextlib
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from backups_app.core.files import create_locked, temp_path
from backups_app.core.processes import descendants, process_identity, process_is_alive

try:
    import psycopg
    from psycopg import errors, sql
except ImportError:  # pragma: no cover -- no `postgres` extra: an SQLite site never calls here
    psycopg = errors = sql = None

# pg_dump's own default (gzip level 6): the size of django-dbbackup's dumps, which use it too.
COMPRESSION = 6
# Seconds: a server that does not answer a connection (libpq's connect_timeout, and the client
# programs' PGCONNECT_TIMEOUT).
CONNECT_TIMEOUT = 10
# Seconds a job waits for a lock another session holds (a migration's ACCESS EXCLUSIVE, a long
# transaction) before it fails saying so: pg_dump's --lock-wait-timeout, our lock_timeout.
LOCK_WAIT = 60
# Seconds a client program that only reads a file here (`pg_restore --list`) may take.
LOCAL_WAIT = 120
# Seconds a client program has to end after SIGTERM before it is killed.
STOP_WAIT = 10
# How often a supervised client program is looked at (seconds).
POLL_SECONDS = 0.5
# The maintenance databases a role may connect to for CREATE/DROP/ALTER DATABASE.
MAINTENANCE = ("postgres", "template1")
# How many lines of a client program's error output a message quotes.
ERROR_LINES = 2


class PostgresError(Exception):
    """Something PostgreSQL or its tools refused, said in words a hurried admin understands."""


class NeedsCreatedb(PostgresError):
    """The full check needs a scratch database, and the site's user may not create one."""


@dataclass(frozen=True)
class Server:
    """Where the live database is and who the site is there: DATABASES["default"]."""

    name: str
    user: str = ""
    password: str = ""
    host: str = ""
    port: str = ""
    sslmode: str = ""

    @classmethod
    def from_settings(cls, database):
        options = database.get("OPTIONS") or {}
        return cls(
            name=str(database.get("NAME") or ""),
            user=str(database.get("USER") or ""),
            password=str(database.get("PASSWORD") or ""),
            host=str(database.get("HOST") or ""),
            port=str(database.get("PORT") or ""),
            sslmode=str(options.get("sslmode") or ""),
        )

    def __repr__(self):  # never the password, wherever a Server is shown
        return f"Server(name={self.name!r}, user={self.user!r}, host={self.host!r})"

    def connect(self, dbname=None, **kwargs):
        """A psycopg connection (in this process: the password never leaves it)."""
        if psycopg is None:
            raise PostgresError(
                "PostgreSQL needs psycopg 3: install the app with its postgres extra "
                "(pip install 'stanza-backups[postgres]')"
            )
        try:
            conn = psycopg.connect(**self._params(dbname), **kwargs)
        except psycopg.OperationalError as err:
            raise PostgresError(
                f"cannot connect to database {dbname or self.name}: {first_line(err)}"
            ) from err
        try:  # a session variable, not the `options` parameter (which pgbouncer refuses)
            conn.execute("SELECT set_config('lock_timeout', %s, false)", (f"{LOCK_WAIT}s",))
            if not conn.autocommit:
                conn.commit()
        except BaseException:
            conn.close()
            raise
        return conn

    def _params(self, dbname=None):
        """libpq's connection parameters for `dbname` (the site's by default)."""
        params = {
            "dbname": dbname or self.name,
            "user": self.user or None,
            "password": self.password or None,
            "host": self.host or None,
            "port": self.port or None,
            "sslmode": self.sslmode or None,
            "connect_timeout": CONNECT_TIMEOUT,
            "application_name": "stanza-backups",
        }
        return {k: v for k, v in params.items() if v is not None}

    def answers(self):
        """Whether the server completes a new connection within CONNECT_TIMEOUT: refusing it
        is an answer too (a server that is down makes its clients fail by themselves); only
        silence is not."""
        if psycopg is None:
            return True
        started = time.monotonic()
        try:
            psycopg.connect(**self._params()).close()
        except psycopg.Error:
            return time.monotonic() - started < CONNECT_TIMEOUT
        return True

    def maintenance(self):
        """An autocommit connection to a database other than the live one (for DDL on it)."""
        failure = None
        for dbname in MAINTENANCE:
            try:
                return self.connect(dbname, autocommit=True)
            except PostgresError as err:
                failure = err
        raise failure

    def role(self):
        return self.user or os.environ.get("PGUSER") or "the database user"


def live_server():
    """The site's DATABASES["default"] as a Server (it must be PostgreSQL)."""
    from django.conf import settings

    return Server.from_settings(settings.DATABASES["default"])


def first_line(err):
    text = str(getattr(err, "diag", None) and err.diag.message_primary or err).strip()
    return plain_reason(text.splitlines()[0] if text else "no reason given")


# What libpq and the server say when the server stops, restarts or cannot be reached: the same
# event, worded differently by the moment it struck.
SERVER_GONE = re.compile(
    r"server closed the connection|the database system is (shutting down|starting up|in "
    r"recovery mode)|terminating connection due to administrator command|connection refused|"
    r"could not connect to server|no connection to the server|consuming input failed|"
    r"SSL connection has been closed",
    re.IGNORECASE,
)
SERVER_GONE_WORDS = "the PostgreSQL server stopped or closed the connection"
LOCK_TIMEOUT = re.compile(r"canceling statement due to lock timeout", re.IGNORECASE)


def lock_words(table=None):
    """A job that waited LOCK_WAIT seconds for a lock, in words."""
    what = f"a lock on table {table}" if table else "a lock"
    return (
        f"waited {LOCK_WAIT} s for {what} held by another session (a migration or a long "
        "transaction); try again once it is done"
    )


def plain_reason(text):
    """A reason in a person's words: the server going away is one sentence, however libpq put
    it, and so is a lock waited for in vain."""
    if SERVER_GONE.search(text):
        return SERVER_GONE_WORDS
    if LOCK_TIMEOUT.search(text):
        return lock_words()
    return text


# --- the client programs -------------------------------------------------------------------


def client(name):
    """The path of `pg_dump`, `pg_restore` or `psql`; PostgresError when not installed."""
    found = shutil.which(name)
    if not found:
        raise PostgresError(f"{name} is not installed (it comes with PostgreSQL's client package)")
    return found


@contextlib.contextmanager
def client_env(server, folder, dbname=None):
    """The environment of a client program: who and where, and the password in a passfile.

    The passfile is a 0600 file in `folder` (the backups folder), locked like a backup's
    temporary file, so the engine's clean-up removes it if this process is killed.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update(
        {
            key: value
            for key, value in (
                ("PGDATABASE", dbname or server.name),
                ("PGUSER", server.user),
                ("PGHOST", server.host),
                ("PGPORT", server.port),
                ("PGSSLMODE", server.sslmode),
                ("PGCONNECT_TIMEOUT", str(CONNECT_TIMEOUT)),
                ("PGAPPNAME", "stanza-backups"),
            )
            if value
        }
    )
    if not server.password:
        yield env
        return
    if "\n" in server.password or "\r" in server.password:
        raise PostgresError("the database password holds a line break, which a passfile cannot")
    path = temp_path(folder)
    fd = create_locked(path)
    try:
        escaped = server.password.replace("\\", "\\\\").replace(":", "\\:")
        os.write(fd, f"*:*:*:*:{escaped}\n".encode())
        env["PGPASSFILE"] = str(path)
        yield env
    finally:
        path.unlink(missing_ok=True)
        os.close(fd)


# pg_dump's --lock-wait-timeout ends in a statement timeout on one of these.
DUMP_LOCK = re.compile(
    r"canceling statement due to (statement|lock) timeout.*?LOCK TABLE (\S+)", re.S
)


def complaint(stderr, returncode):
    if waited := DUMP_LOCK.search(stderr):
        return lock_words(waited[2])
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    # "pg_dump: error: connection to server ...": the program's name says nothing to a reader.
    lines = [re.sub(r"\A(pg_dump|pg_restore|psql): (error: |detail: )?", "", x) for x in lines]
    if not lines and returncode < 0:
        return f"stopped by signal {-returncode}"
    return plain_reason("; ".join(lines[:ERROR_LINES])) or f"exit status {returncode}"


# --- tables and row counts -----------------------------------------------------------------

TABLES_SQL = """
    SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
      AND n.nspname NOT LIKE 'pg\\_toast%%' AND n.nspname NOT LIKE 'pg\\_temp%%'
    ORDER BY 1, 2
"""


def table_key(schema, table):
    """How NAME.json names a table: `item` in the public schema, `shop.item` elsewhere."""
    return table if schema == "public" else f"{schema}.{table}"


def tables(conn):
    """{key: (schema, table)} of the ordinary tables of a connection's database."""
    rows = conn.execute(TABLES_SQL).fetchall()
    return {table_key(schema, table): (schema, table) for schema, table in rows}


def row_counts(conn):
    """{table: rows} for every table (see table_key), in the connection's snapshot."""
    return {
        key: conn.execute(
            sql.SQL("SELECT count(*) FROM {}.{}").format(sql.Identifier(s), sql.Identifier(t))
        ).fetchone()[0]
        for key, (s, t) in sorted(tables(conn).items())
    }


def applied_migrations(conn):
    """{(app, name)} of the database's django_migrations; None when it has no such table."""
    if "django_migrations" not in tables(conn):
        return None
    rows = conn.execute("SELECT app, name FROM django_migrations").fetchall()
    return {(str(app), str(name)) for app, name in rows}


# --- running the client programs -----------------------------------------------------


def start(args, env):
    try:
        return subprocess.Popen(
            args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
    except OSError as err:
        raise PostgresError(f"{Path(args[0]).name} failed: {err.strerror or err}") from err


def stop(child, *, read=True):
    """End a client program and the workers it forked (SIGTERM, then SIGKILL if it lingers);
    `read`: drain its output. A worker waiting on a server that went silent would hold its
    output open for ever, and go on writing once the server answers again."""
    workers = [(pid, process_identity(pid)) for pid in descendants(child.pid)]
    with contextlib.suppress(ProcessLookupError):
        child.send_signal(signal.SIGTERM)
    try:
        if read:
            child.communicate(timeout=STOP_WAIT)
        else:
            child.wait(STOP_WAIT)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()
    for pid, identity in workers:
        if process_is_alive(pid, identity):  # not a later process given the same pid
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def supervise(child, failed, stuck):
    """Wait for a client program, calling `stuck()` every POLL_SECONDS: it returns why the
    program is stuck (words) or None. A stuck program is stopped. PostgresError("{failed}:
    ...") when it failed or was stopped."""
    stderr = []
    reader = threading.Thread(target=lambda: stderr.append(child.stderr.read()), daemon=True)
    reader.start()
    try:
        while True:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(POLL_SECONDS)
            if child.returncode is not None:
                break
            if (why := stuck()) is not None:
                stop(child, read=False)
                raise PostgresError(f"{failed}: {why}; it was stopped")
    except BaseException:
        if child.returncode is None:
            stop(child, read=False)
        raise
    finally:
        reader.join()
    check_exit(child.returncode, "".join(stderr), failed)


def finish(child, failed):
    """Wait for a client program; PostgresError("{failed}: what it said") when it failed."""
    try:
        _out, stderr = child.communicate()
    except BaseException:
        stop(child)
        raise
    check_exit(child.returncode, stderr, failed)


def check_exit(returncode, stderr, failed):
    if returncode != 0:
        raise PostgresError(f"{failed}: {complaint(stderr, returncode)}")


def run_local(args, failed, *, stdin=""):
    """Run a client program that reads a file on this machine (no server); its output.

    Bounded by LOCAL_WAIT: such a program that takes longer is stuck (a file that is not what
    it seems), and is stopped. PostgresError("{failed}: ...") when it fails.
    """
    try:
        done = subprocess.run(
            args,
            input=stdin,
            capture_output=True,
            text=True,
            check=False,
            timeout=LOCAL_WAIT,
            env={k: v for k, v in os.environ.items() if not k.startswith("PG")},
        )
    except subprocess.TimeoutExpired as err:
        raise PostgresError(f"{failed}: reading it took longer than {LOCAL_WAIT} s") from err
    except OSError as err:
        raise PostgresError(f"{failed}: {err.strerror or err}") from err
    if done.returncode != 0:
        raise PostgresError(f"{failed}: {complaint(done.stderr, done.returncode)}")
    return done.stdout
