"""The SQL copy of a backup into an SQLite file, and the product's records carried across it.

load_into loads a backup into a new file as SQL (its schema, then its rows, then its indexes,
views and triggers): the drill's scratch copy, and the scratch file a restore copies onto the
live database (sqlite_live). save_product_records/put_back_product_records carry the product's
own records (a `Keep`) from the live database into the restored content; kept_now counts them
for the confirmation page.
"""

import contextlib
import sqlite3
import time
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

from backups_app.db.sqlite_base import database_path, q, row_count, table_names

# How long the restore waits for other connections to let go of the live database.
LOCK_TIMEOUT = 60
# The page cache of a connection that writes a whole database, in KiB.
CACHE_KIB = 16384


def load_into(plain, database, *, page_size=None):
    """Load a checked plain backup into the new file `database` as SQL (its schema, rows and
    indexes): the drill's copy, and the restore's scratch file (`page_size`: the live one's)."""
    with _write_locked(database, plain, new_page_size=page_size, wal=False) as conn:
        replace_contents(conn, None)


def restore_in_one_transaction(plain, database, *, keep, before=None, unlocked=None):
    """Restore into a live database that is not in WAL mode, in one write transaction.

    With a rollback journal, the backup API's copy takes the exclusive lock at its first step,
    so the safety backup (`before()`, another connection) could no longer read the database.
    Here the write lock is BEGIN IMMEDIATE: readers, the safety backup among them, go on until
    the commit. `unlocked(seconds)` is told how long writers were held, from BEGIN IMMEDIATE to
    the commit. Returns what replace_contents returns.
    """
    with _write_locked(database, plain, wal=True, unlocked=unlocked) as conn:
        # The whole safety backup first: once this restore writes, it holds the database's
        # exclusive lock, which the safety backup's reads would wait for.
        if before is not None and callable(finish := before()):
            finish()
        return replace_contents(conn, keep)


def kept_now(keep, database=None):
    """(tables, {what: rows}) of the database: what a restore would carry forward.

    Read only, and without creating -wal/-shm files where there are none: a database with no
    -wal file is not open in WAL mode right now, so the main file holds all of it. None when
    the database cannot be read; (set(), {}) when there is none.
    """
    database = database_path(database)
    if not database.exists():
        return set(), {}
    in_use = Path(f"{database}-wal").exists()
    mode = "ro" if in_use else "ro&immutable=1"
    try:
        conn = sqlite3.connect(f"file:{quote(str(database))}?mode={mode}", uri=True, timeout=5)
    except sqlite3.Error:
        return None
    try:
        live = table_names(conn)
        kept = {
            what: row_count(conn, table) for table, what in keep.tables.items() if table in live
        }
        audit = _audit_rows(conn, live, keep.audit)
        if audit is not None:
            kept["audit of dashboard actions"] = audit
    except sqlite3.Error:
        return None
    finally:
        conn.close()
    return live, kept


@contextlib.contextmanager
def _write_locked(database, plain, *, new_page_size=None, wal=False, unlocked=None):
    """A connection to `database`, the backup attached as `bak`, inside BEGIN IMMEDIATE.

    From the BEGIN to the COMMIT no other connection can write (they wait, within their busy
    timeout); readers go on seeing the old data. Any error rolls everything back.
    """
    uri = f"file:{quote(str(database))}?mode=rwc"
    conn = sqlite3.connect(uri, uri=True, timeout=LOCK_TIMEOUT, isolation_level=None)
    try:
        conn.set_progress_handler(lambda: 0, 100_000)  # let signal handlers run
        # 16 MB of page cache (and of sorter memory for the indexes): the restore's memory
        # stays flat whatever the database's size.
        conn.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
        if not wal:  # a scratch file (the drill's, the restore's): nobody keeps it past a crash
            conn.execute("PRAGMA synchronous = OFF")
        if conn.execute("PRAGMA page_count").fetchone()[0] == 0:  # a new database
            if new_page_size:
                conn.execute(f"PRAGMA page_size = {int(new_page_size)}")
            if wal:
                conn.execute("PRAGMA journal_mode = WAL")
        uri = f"file:{quote(str(plain))}?mode=ro&immutable=1"
        conn.execute("ATTACH DATABASE ? AS bak", (uri,))
        conn.execute("BEGIN IMMEDIATE")
        locked = time.monotonic()
        try:
            yield conn
        except BaseException:
            if conn.in_transaction:
                # An interrupted statement may have rolled the transaction back already.
                with contextlib.suppress(sqlite3.OperationalError):
                    conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        if unlocked is not None:
            unlocked(time.monotonic() - locked)
    finally:
        conn.close()


def replace_contents(conn, keep):
    """Inside the caller's transaction: make `main` hold the schema and rows of `bak`.

    With `keep`, the product's own records of `main` are kept (its tables, and the audit
    entries of its apps); a `running` run that came with the backup is closed.
    Returns ({what was kept: rows}, [what could not be kept, in words]).
    """
    saved = save_product_records(conn, keep) if keep else {}
    _drop_everything(conn)
    _copy_schema_and_rows(conn)
    if not keep:
        return {}, []
    return put_back_product_records(conn, saved, keep)


def _columns(conn, schema, table):
    return [row[1] for row in conn.execute(f"PRAGMA {schema}.table_info({q(table)})")]


def save_product_records(conn, keep, schema="main"):
    """Copy the product's records of the live database (`schema` of `conn`) into temp tables;
    return what was saved."""
    tables = table_names(conn, schema)
    saved = {}
    for table in keep.tables:
        if table in tables:
            conn.execute(
                f"CREATE TEMP TABLE {q('keep_' + table)} AS SELECT * FROM {schema}.{q(table)}"
            )
            saved[table] = True
    audit = keep.audit
    if audit and {audit.log, audit.content_types, audit.user} <= tables:
        marks = ", ".join("?" for _ in audit.apps)
        conn.execute(
            f"CREATE TEMP TABLE keep_audit AS SELECT l.*, u.{q(audit.username)} AS "
            f"stanza_username, ct.app_label AS stanza_app, ct.model AS stanza_model "
            f"FROM {schema}.{q(audit.log)} l "
            f"JOIN {schema}.{q(audit.user)} u ON u.{q(audit.pk)} = l.user_id "
            f"JOIN {schema}.{q(audit.content_types)} ct ON ct.id = l.content_type_id "
            f"WHERE ct.app_label IN ({marks})",
            audit.apps,
        )
        saved["audit"] = True
    if "sqlite_sequence" in tables:
        conn.execute(f"CREATE TEMP TABLE keep_sequence AS SELECT * FROM {schema}.sqlite_sequence")
    return saved


def _drop_everything(conn):
    rows = conn.execute(
        "SELECT type, name, sql FROM main.sqlite_master WHERE name NOT LIKE 'sqlite^_%' ESCAPE '^'"
    ).fetchall()
    for kind in ("trigger", "view"):
        for row_kind, name, _sql in rows:
            if row_kind == kind:
                conn.execute(f"DROP {kind.upper()} IF EXISTS main.{q(name)}")
    tables = [(name, sql or "") for kind, name, sql in rows if kind == "table"]
    # Virtual tables first: dropping one drops its shadow tables.
    tables.sort(key=lambda t: not t[1].upper().startswith("CREATE VIRTUAL"))
    for name, _sql in tables:
        conn.execute(f"DROP TABLE IF EXISTS main.{q(name)}")
    if "sqlite_sequence" in table_names(conn):
        conn.execute("DELETE FROM main.sqlite_sequence")


def _copy_schema_and_rows(conn):
    """Create bak's tables in main, copy their rows, then build indexes, views and triggers."""
    rows = conn.execute(
        "SELECT type, name, sql FROM bak.sqlite_master "
        "WHERE sql IS NOT NULL AND name NOT LIKE 'sqlite^_%' ESCAPE '^'"
    ).fetchall()
    tables = [(name, sql) for kind, name, sql in rows if kind == "table"]
    virtual = [(n, s) for n, s in tables if s.upper().startswith("CREATE VIRTUAL")]
    for _name, sql in virtual:
        conn.execute(sql)
    existing = table_names(conn)  # shadow tables of the virtual ones exist now
    for name, sql in tables:
        if (name, sql) in virtual:
            continue
        if name in existing:
            conn.execute(f"DELETE FROM main.{q(name)}")
        else:
            conn.execute(sql)
        conn.execute(f"INSERT INTO main.{q(name)} SELECT * FROM bak.{q(name)}")
    if "sqlite_sequence" in table_names(conn, "bak"):
        conn.execute("DELETE FROM main.sqlite_sequence")
        conn.execute("INSERT INTO main.sqlite_sequence SELECT name, seq FROM bak.sqlite_sequence")
    for kind in ("index", "view", "trigger"):
        for row_kind, _name, sql in rows:
            if row_kind == kind:
                conn.execute(sql)
    for pragma in ("user_version", "application_id"):
        value = int(conn.execute(f"PRAGMA bak.{pragma}").fetchone()[0])
        conn.execute(f"PRAGMA main.{pragma} = {value}")


def put_back_product_records(conn, saved, keep):
    """Replace `main`'s product records with the saved ones; ({what: rows}, [notes])."""
    restored = table_names(conn)
    kept, notes = {}, []
    for table, what in keep.tables.items():
        if table not in saved:
            continue
        if table not in restored:
            notes.append(f"the backup has no {table} table, so the {what} could not be kept")
            continue
        temp = "keep_" + table
        columns = set(_columns(conn, "temp", temp))
        shared = ", ".join(q(c) for c in _columns(conn, "main", table) if c in columns)
        conn.execute(f"DELETE FROM main.{q(table)}")
        conn.execute(f"INSERT INTO main.{q(table)} ({shared}) SELECT {shared} FROM temp.{q(temp)}")
        kept[what] = conn.execute(f"SELECT count(*) FROM temp.{q(temp)}").fetchone()[0]
        _raise_sequence(conn, table)
    if keep.runs_table and keep.runs_table in restored and keep.runs_table not in saved:
        _close_running_runs(conn, keep.runs_table)
    if "audit" in saved:
        kept_audit, note = _put_back_audit(conn, restored, keep.audit)
        if kept_audit is not None:
            kept["audit of dashboard actions"] = kept_audit
        if note:
            notes.append(note)
    return kept, notes


def _raise_sequence(conn, table):
    """Never let AUTOINCREMENT hand out again an id the live database already used."""
    if "keep_sequence" not in table_names(conn, "temp") or "sqlite_sequence" not in table_names(
        conn
    ):
        return
    row = conn.execute("SELECT seq FROM temp.keep_sequence WHERE name = ?", (table,)).fetchone()
    if row is None:
        return
    updated = conn.execute(
        "UPDATE main.sqlite_sequence SET seq = max(seq, ?) WHERE name = ?", (row[0], table)
    ).rowcount
    if not updated:
        conn.execute("INSERT INTO main.sqlite_sequence (name, seq) VALUES (?, ?)", (table, row[0]))


def _close_running_runs(conn, table):
    """A run `running` inside a backup was cut off by the backup's moment: close it."""
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    with contextlib.suppress(sqlite3.OperationalError):  # an older schema without these columns
        conn.execute(
            f"UPDATE main.{q(table)} SET status = 'failure', finished_at = ?, error = ? "
            "WHERE status = 'running'",
            (now, "interrupted: the run was still going when the backup it came from was made"),
        )


def _put_back_audit(conn, restored, audit):
    """The live audit entries of the product's apps replace the backup's; users matched by name.

    Returns (entries kept or None when the backup has no audit table, a note or "").
    """
    if not {audit.log, audit.content_types, audit.user} <= restored:
        return None, "the backup has no audit table, so the audit of dashboard actions was not kept"
    log, content_types = q(audit.log), q(audit.content_types)
    kinds = conn.execute("SELECT DISTINCT stanza_app, stanza_model FROM temp.keep_audit").fetchall()
    for app, model in kinds:
        found = conn.execute(
            f"SELECT 1 FROM main.{content_types} WHERE app_label = ? AND model = ?",
            (app, model),
        ).fetchone()
        if not found:  # as Django's migrate would create it
            conn.execute(
                f"INSERT INTO main.{content_types} (app_label, model) VALUES (?, ?)",
                (app, model),
            )
    marks = ", ".join("?" for _ in audit.apps)
    conn.execute(
        f"DELETE FROM main.{log} WHERE content_type_id IN "
        f"(SELECT id FROM main.{content_types} WHERE app_label IN ({marks}))",
        audit.apps,
    )
    saved_columns = set(_columns(conn, "temp", "keep_audit"))
    plain = [
        c
        for c in _columns(conn, "main", audit.log)
        if c in saved_columns and c not in ("id", "user_id", "content_type_id")
    ]
    into = ", ".join([*(q(c) for c in plain), "user_id", "content_type_id"])
    select = ", ".join([*(f"k.{q(c)}" for c in plain), f"u.{q(audit.pk)}", "ct.id"])
    kept = conn.execute(
        f"INSERT INTO main.{log} ({into}) SELECT {select} FROM temp.keep_audit k "
        f"JOIN main.{q(audit.user)} u ON u.{q(audit.username)} = k.stanza_username "
        f"JOIN main.{content_types} ct ON ct.app_label = k.stanza_app "
        "AND ct.model = k.stanza_model ORDER BY k.action_time, k.id",
    ).rowcount
    total = conn.execute("SELECT count(*) FROM temp.keep_audit").fetchone()[0]
    note = ""
    if kept < total:
        note = (
            f"{total - kept} audit entr{'y' if total - kept == 1 else 'ies'} by users the backup "
            "does not have were not kept"
        )
    return kept, note


def _audit_rows(conn, tables, audit):
    if audit is None or not {audit.log, audit.content_types} <= tables:
        return None
    marks = ", ".join("?" for _ in audit.apps)
    return conn.execute(
        f"SELECT count(*) FROM main.{q(audit.log)} WHERE content_type_id IN "
        f"(SELECT id FROM main.{q(audit.content_types)} WHERE app_label IN ({marks}))",
        audit.apps,
    ).fetchone()[0]
