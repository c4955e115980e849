"""PostgreSQL behind the database seam: `pg_dump`/`pg_restore`, and scratch databases.

A backup is `pg_dump`'s custom format of the live database, taken in a snapshot exported by a
connection of ours, so the row counts written into `NAME.json` are those of the dump itself.
The quick check is `pg_restore --list` (the archive's table of contents reads whole, and has a
table for every table counted); the full check restores the dump into a scratch database on the
same server. A restore loads the backup into a new database, checks it there, carries the
product's own records over, and swaps the two databases' names in one transaction: writers are
cut off for the swap alone, and the old database, which holds every write committed before it,
becomes the `pre-restore` safety backup.

Credentials reach the client programs through a 0600 passfile beside their output and their
environment, never their command line. Scratch databases are named after the live database
and the process that made them (`DBNAME__stanza_check_PID_HEX`), so those of a killed process
are found and dropped by the next full check or restore. Errors are PostgresError, in words.
"""

import contextlib
import os
import re
import secrets
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import errors, sql

from backups_app.core.processes import process_is_alive
from backups_app.db.sqlite import create_locked, temp_path

ENGINE = "django.db.backends.postgresql"
SUFFIX = ".dump"
# pg_dump's own default (gzip level 6): the size of django-dbbackup's dumps, which use it too.
COMPRESSION = 6
# Scratch databases: DBNAME__stanza_{check,restore,old}_PID_HEX (63 bytes at most).
SCRATCH_MARK = "__stanza_"
SCRATCH_KINDS = ("check", "restore", "old")
NAME_LIMIT = 63
# How many times the swap cuts the live database's sessions off before it gives up.
SWAP_TRIES = 50
CONNECT_TIMEOUT = 10
# The maintenance databases a role may connect to for CREATE/DROP/ALTER DATABASE.
MAINTENANCE = ("postgres", "template1")
# How many lines of a client program's error output a message quotes.
ERROR_LINES = 2


class PostgresError(Exception):
    """Something PostgreSQL or its tools refused, said in words a hurried admin understands."""


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
        try:
            return psycopg.connect(**{k: v for k, v in params.items() if v is not None}, **kwargs)
        except psycopg.OperationalError as err:
            raise PostgresError(
                f"cannot connect to database {dbname or self.name}: {_first_line(err)}"
            ) from err

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


def _first_line(err):
    text = str(getattr(err, "diag", None) and err.diag.message_primary or err).strip()
    return text.splitlines()[0] if text else "no reason given"


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


def run_client(args, env, what):
    """Run a client program; PostgresError with the first lines of its complaint on failure.

    A signal that stops us (Ctrl-C) stops the child too: it is in our process group.
    """
    try:
        done = subprocess.run(args, env=env, capture_output=True, text=True, check=False)
    except OSError as err:
        raise PostgresError(f"{what} failed: {err.strerror or err}") from err
    if done.returncode != 0:
        raise PostgresError(f"{what} failed: {_complaint(done.stderr, done.returncode)}")
    return done.stdout


def _complaint(stderr, returncode):
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    # "pg_dump: error: connection to server ...": the program's name says nothing to a reader.
    lines = [re.sub(r"\A(pg_dump|pg_restore|psql): (error: |detail: )?", "", x) for x in lines]
    if not lines and returncode < 0:
        return f"stopped by signal {-returncode}"
    return "; ".join(lines[:ERROR_LINES]) or f"exit status {returncode}"


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


# --- backup ----------------------------------------------------------------------------------


def dump(server, dest, folder, *, dbname=None, compression=COMPRESSION):
    """`pg_dump -Fc` of the database into `dest`; return its {table: rows} at the dump's moment.

    The counts are read in a snapshot this connection exports and pg_dump imports, so they are
    exactly the dump's. The caller owns `dest` (a locked temporary file, removed on failure).
    """
    dbname = dbname or server.name
    with server.connect(dbname) as conn:
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        (snapshot,) = conn.execute("SELECT pg_export_snapshot()").fetchone()
        with client_env(server, folder, dbname) as env:
            args = [
                client("pg_dump"),
                "--format=custom",
                f"--compress={int(compression)}",
                f"--snapshot={snapshot}",
                "--no-password",
                f"--file={dest}",
            ]
            child = _start(args, env)
            try:
                counts = row_counts(conn)  # while pg_dump writes, on the other core
            except BaseException:
                _stop(child)
                raise
            _finish(child, "pg_dump")
        conn.rollback()
    return counts


def _start(args, env):
    try:
        return subprocess.Popen(
            args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
    except OSError as err:
        raise PostgresError(f"{Path(args[0]).name} failed: {err.strerror or err}") from err


def _stop(child):
    with contextlib.suppress(ProcessLookupError):
        child.send_signal(signal.SIGTERM)
    child.communicate()


def _finish(child, what):
    try:
        _out, stderr = child.communicate()
    except BaseException:
        _stop(child)
        raise
    if child.returncode != 0:
        raise PostgresError(f"{what} failed: {_complaint(stderr, child.returncode)}")


@dataclass(frozen=True)
class Contents:
    """What `pg_restore --list` read in an archive's table of contents."""

    dbname: str
    tables: frozenset  # table keys with a TABLE entry
    data: frozenset  # table keys with a TABLE DATA entry


TOC_LINE = re.compile(r"\A\d+; \d+ \d+ (?P<kind>TABLE DATA|TABLE) (?P<schema>\S+) (?P<name>\S+) ")


def list_contents(path, folder=None):
    """Read a dump's table of contents (no server needed); PostgresError when it is no dump."""
    done = subprocess.run(
        [client("pg_restore"), "--list", str(path)],
        capture_output=True,
        text=True,
        check=False,
        env={k: v for k, v in os.environ.items() if not k.startswith("PG")},
    )
    if done.returncode != 0:
        raise PostgresError(
            f"{Path(path).name} is not a readable PostgreSQL dump: "
            f"{_complaint(done.stderr, done.returncode)}"
        )
    dbname, found = "", {"TABLE": set(), "TABLE DATA": set()}
    for line in done.stdout.splitlines():
        if line.startswith(";     dbname: "):
            dbname = line.split(": ", 1)[1].strip()
        elif match := TOC_LINE.match(line):
            found[match["kind"]].add(table_key(match["schema"], match["name"]))
    return Contents(dbname, frozenset(found["TABLE"]), frozenset(found["TABLE DATA"]))


def quick_check(path, counts):
    """The quick check of a fresh dump: its contents read, with every table counted in it."""
    contents = list_contents(path)
    missing = sorted(set(counts) - contents.tables)
    if missing:
        raise PostgresError(
            f"{Path(path).name} is incomplete: tables missing: {', '.join(missing[:5])}"
        )
    return contents


def is_dump(path):
    """Whether a file starts like pg_dump's custom format."""
    try:
        with open(path, "rb") as f:
            return f.read(5) == b"PGDMP"
    except OSError:
        return False


# --- scratch databases ---------------------------------------------------------------------


def scratch_name(live, kind):
    tail = f"{SCRATCH_MARK}{kind}_{os.getpid()}_{secrets.token_hex(4)}"
    return live.encode()[: NAME_LIMIT - len(tail)].decode(errors="ignore") + tail


SCRATCH_RE = re.compile(
    rf"{SCRATCH_MARK}(?P<kind>{'|'.join(SCRATCH_KINDS)})_(?P<pid>\d+)_[0-9a-f]{{8}}\Z"
)


def abandoned(server, conn):
    """Scratch databases of the live database whose process is gone: {name: kind}."""
    rows = conn.execute(
        "SELECT datname FROM pg_database WHERE position(%s in datname) > 0", (SCRATCH_MARK,)
    ).fetchall()
    found = {}
    for (name,) in rows:
        match = SCRATCH_RE.search(name)
        if (
            not match
            or not name.startswith(name[: match.start()])
            or not _ours(server, name, match)
        ):
            continue
        if not process_is_alive(int(match["pid"])):
            found[name] = match["kind"]
    return found


def _ours(server, name, match):
    live = server.name.encode()[: match.start()].decode(errors="ignore")
    return name[: match.start()] == live


def drop_database(conn, name):
    conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def drop_abandoned(server, conn, *, keep_old=True):
    """Drop the check and restore databases a killed process left; return their names.

    An `old` one (a live database swapped out by a restore killed before its safety backup was
    written) is kept unless `keep_old` is false: it holds the only copy of that data.
    """
    dropped = []
    for name, kind in abandoned(server, conn).items():
        if kind == "old" and keep_old:
            continue
        drop_database(conn, name)
        dropped.append(name)
    return dropped


def create_scratch(server, conn, kind):
    """Create an empty scratch database of `kind`; PostgresError naming CREATEDB if refused."""
    name = scratch_name(server.name, kind)
    try:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    except errors.InsufficientPrivilege as err:
        raise PostgresError(
            f"the full check restores the backup into a scratch database, and the database "
            f"user {server.role()} may not create databases: it needs CREATEDB "
            f"(ALTER ROLE {server.role()} CREATEDB)"
        ) from err
    except psycopg.Error as err:
        raise PostgresError(f"cannot create a scratch database: {_first_line(err)}") from err
    return name


def restore_into(server, path, dbname, folder, *, jobs=None):
    """`pg_restore` a dump into the empty database `dbname` (objects owned by the site's user)."""
    jobs = jobs or max(1, min(4, os.cpu_count() or 1))
    with client_env(server, folder, dbname) as env:
        args = [
            client("pg_restore"),
            "--no-owner",
            "--no-acl",
            "--exit-on-error",
            "--no-password",
            f"--jobs={jobs}",
            f"--dbname={dbname}",
            str(path),
        ]
        child = _start(args, {**env, "PGOPTIONS": "-c synchronous_commit=off"})
        _finish(child, f"restoring {Path(path).name}")


@contextlib.contextmanager
def scratch_restore(server, path, folder, kind="check"):
    """Restore a dump into a new scratch database; yield its name; drop it after, whatever
    happens, unless the block marks it kept (`kept.add(name)`, for a restore's swap).
    """
    kept = set()
    with server.maintenance() as admin:
        drop_abandoned(server, admin)
        name = create_scratch(server, admin, kind)
        try:
            restore_into(server, path, name, folder)
            yield name, kept
        finally:
            if name not in kept:
                with contextlib.suppress(psycopg.Error):
                    drop_database(admin, name)


# --- the swap ------------------------------------------------------------------------------


def swap_in(server, admin, new, *, tries=SWAP_TRIES):
    """Give database `new` the live database's name; return the name the old one got.

    In one transaction: the live database is renamed, then `new` takes its name. Renaming a
    database needs nobody connected to it, so the live database's other sessions are cut off
    just before (their next query fails, the next connection reaches the new database). A
    session that reconnects in between makes the rename fail: cut off and try again.
    """
    old = scratch_name(server.name, "old")
    live, new_id, old_id = (sql.Identifier(n) for n in (server.name, new, old))
    for attempt in range(tries):
        terminate(admin, server.name)
        try:
            with admin.transaction():
                admin.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(live, old_id))
                admin.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(new_id, live))
        except errors.ObjectInUse:
            time.sleep(0.01 * attempt)
            continue
        terminate(admin, old)
        return old
    raise PostgresError(
        f"database {server.name} kept being reconnected to: the restore could not swap it; "
        "nothing was changed"
    )


def terminate(admin, dbname):
    """Cut off every other session of `dbname` that this role may end (its own)."""
    admin.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s "
        "AND pid <> pg_backend_pid() AND pg_has_role(current_user, usesysid, 'MEMBER')",
        (dbname,),
    )
