"""PostgreSQL scratch databases: the full check's, and a restore's swap of two databases.

A scratch database is named after the live database and the process that made it
(`DBNAME__stanza_check_PID_HEX`), so those of a killed process are found and dropped by the
next full check or restore. A restore loads the backup into a new database, checks it there,
carries the product's own records over, and swaps the two databases' names in one transaction:
writers are cut off for the swap alone, and the old database holds every write committed before
it until it has been dumped as the `pre-restore` safety backup.
"""

import contextlib
import logging
import os
import re
import secrets
import time

from backups_app.core.processes import process_is_alive
from backups_app.db.postgres_client import (
    NeedsCreatedb,
    PostgresError,
    client,
    client_env,
    errors,
    first_line,
    psycopg,
    sql,
    start,
    supervise,
)

logger = logging.getLogger(__name__)

# Scratch databases: DBNAME__stanza_{check,restore,old}_PID_HEX (63 bytes at most).
SCRATCH_MARK = "__stanza_"
SCRATCH_KINDS = ("check", "restore", "old")
NAME_LIMIT = 63
# How many times the swap cuts the live database's sessions off before it gives up.
SWAP_TRIES = 50

# While pg_restore runs, the server is asked for a new connection this often (seconds), and
# given up once it has completed none for SILENCE_WAIT seconds.
PROBE_EVERY = 30
SILENCE_WAIT = 120


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
    """Drop a scratch or swapped-out database, cutting off this role's sessions on it first.

    Not `WITH (FORCE)`: that refuses when an autovacuum worker is at work there (it is no
    role's: "must be a member of the role whose process is being terminated"), which a
    freshly restored database soon has; a plain DROP DATABASE stops the worker itself, and
    waits up to 5 s for the sessions it cut off to end.
    """
    terminate(conn, name)
    conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))


def drop_abandoned(server, conn, *, keep_old=True):
    """Drop the check and restore databases a killed process left; return their names.

    An `old` one (a live database swapped out by a restore killed before its safety backup was
    written) is kept unless `keep_old` is false: it holds the only copy of that data.
    """
    dropped = []
    for name, kind in abandoned(server, conn).items():
        if kind == "old" and keep_old:
            logger.warning(
                "database %s holds the data a restore replaced (the restore was stopped before "
                "its safety backup was written): back it up or drop it by hand",
                name,
            )
            continue
        drop_database(conn, name)
        dropped.append(name)
    if dropped:
        logger.info("dropped %d scratch database(s) of stopped checks or restores", len(dropped))
    return dropped


def create_scratch(server, conn, kind):
    """Create an empty scratch database of `kind`; PostgresError naming CREATEDB if refused."""
    name = scratch_name(server.name, kind)
    try:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    except errors.InsufficientPrivilege as err:
        raise NeedsCreatedb(
            f"the full check restores the backup into a scratch database, and the database "
            f"user {server.role()} may not create databases: it needs CREATEDB "
            f"(ALTER ROLE {server.role()} CREATEDB)"
        ) from err
    except psycopg.Error as err:
        raise PostgresError(f"cannot create a scratch database: {first_line(err)}") from err
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
        child = start(args, {**env, "PGOPTIONS": "-c synchronous_commit=off"})
        supervise(child, "could not be restored", _ServerSilence(server))


class _ServerSilence:
    """Whether pg_restore is stuck because its server went silent: a new connection is tried
    every PROBE_EVERY seconds, and a server that completed none for SILENCE_WAIT seconds is
    given up (a long index build or a lock wait keeps answering; a stopped or unreachable
    server does not, and pg_restore would wait for it forever)."""

    def __init__(self, server):
        self.server = server
        self.answered = self.probed = time.monotonic()

    def __call__(self):
        if time.monotonic() - self.probed < PROBE_EVERY:
            return None
        if self.server.answers():
            self.answered = time.monotonic()
        self.probed = time.monotonic()
        if self.probed - self.answered > SILENCE_WAIT:
            return f"the PostgreSQL server has not answered for {SILENCE_WAIT} s"
        return None


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
