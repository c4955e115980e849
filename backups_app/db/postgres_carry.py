"""Carry the product's own records from one PostgreSQL database into another (a restore's).

The run history, alert state, job store (the tables of a `Keep`) and the audit of dashboard
actions of the live database replace the backup's, in the new database, before it is swapped
in. Rows stream with COPY between the two connections; identity sequences are raised so an id
the live database handed out is never handed out again.
"""

from backups_app.db.postgres_client import sql, tables

AUDIT_COLUMNS = ("action_time", "object_id", "object_repr", "action_flag", "change_message")


def columns(conn, table, schema="public"):
    """The columns of a table, in their order."""
    rows = conn.execute(
        "SELECT column_name FROM information_schema.columns "
        "WHERE table_schema = %s AND table_name = %s ORDER BY ordinal_position",
        (schema, table),
    ).fetchall()
    return [name for (name,) in rows]


def carry(src, dst, keep):
    """Replace `keep`'s records of `dst` with those of `src`; ({what: rows}, [notes]).

    `dst` is left inside a transaction the caller commits.
    """
    src_tables, dst_tables = tables(src), tables(dst)
    kept, notes = {}, []
    for table, what in keep.tables.items():
        if table not in src_tables:
            continue
        if table not in dst_tables:
            notes.append(f"the backup has no {table} table, so the {what} could not be kept")
            continue
        kept[what] = _copy_table(src, dst, table)
    runs = keep.runs_table
    if runs and runs in dst_tables and runs not in src_tables:
        _close_running_runs(dst, runs)
    if keep.audit is not None and {keep.audit.log, keep.audit.user} <= set(src_tables):
        kept_audit, note = _carry_audit(src, dst, keep.audit, dst_tables)
        if kept_audit is not None:
            kept["audit of dashboard actions"] = kept_audit
        if note:
            notes.append(note)
    return kept, notes


def _copy_table(src, dst, table):
    shared = [c for c in columns(dst, table) if c in set(columns(src, table))]
    names = sql.SQL(", ").join(sql.Identifier(c) for c in shared)
    ident = sql.Identifier(table)
    dst.execute(sql.SQL("DELETE FROM {}").format(ident))
    out = sql.SQL("COPY (SELECT {} FROM {}) TO STDOUT").format(names, ident)
    into = sql.SQL("COPY {} ({}) FROM STDIN").format(ident, names)
    with src.cursor().copy(out) as reader, dst.cursor().copy(into) as writer:
        for block in reader:
            writer.write(block)
    _raise_sequences(src, dst, table, shared)
    return dst.execute(sql.SQL("SELECT count(*) FROM {}").format(ident)).fetchone()[0]


def _raise_sequences(src, dst, table, shared):
    """Each identity/serial sequence of `table` in `dst` at least where the live one was."""
    for column in shared:
        seq = _sequence(dst, table, column)
        if not seq:
            continue
        live = _sequence(src, table, column)
        floor = 0
        if live:
            floor = src.execute(sql.SQL("SELECT last_value FROM {}").format(sql.SQL(live)))
            floor = floor.fetchone()[0]
        dst.execute(
            sql.SQL(
                "SELECT setval(%s, GREATEST(%s, (SELECT coalesce(max({}), 0) FROM {}), 1))"
            ).format(sql.Identifier(column), sql.Identifier(table)),
            (seq, floor),
        )


def _sequence(conn, table, column):
    """The qualified name of the sequence behind a column (identity or serial), or None."""
    relation = sql.Identifier(table).as_string(conn)
    return conn.execute("SELECT pg_get_serial_sequence(%s, %s)", (relation, column)).fetchone()[0]


def _close_running_runs(dst, table):
    """A run `running` inside a backup was cut off by the backup's moment: close it."""
    dst.execute(
        sql.SQL(
            "UPDATE {} SET status = 'failure', finished_at = now(), error = %s "
            "WHERE status = 'running'"
        ).format(sql.Identifier(table)),
        ("interrupted: the run was still going when the backup it came from was made",),
    )


def _carry_audit(src, dst, audit, dst_tables):
    """The live audit entries of `audit.apps` replace the backup's; users matched by name."""
    if not {audit.log, audit.content_types, audit.user} <= set(dst_tables):
        return None, "the backup has no audit table, so the audit of dashboard actions was not kept"
    log, ct, user = (sql.Identifier(t) for t in (audit.log, audit.content_types, audit.user))
    username, pk = sql.Identifier(audit.username), sql.Identifier(audit.pk)
    picked = sql.SQL(", ").join(sql.SQL("l.") + sql.Identifier(c) for c in AUDIT_COLUMNS)
    rows = src.execute(
        sql.SQL(
            "SELECT {picked}, u.{username}, ct.app_label, ct.model FROM {log} l "
            "JOIN {user} u ON u.{pk} = l.user_id JOIN {ct} ct ON ct.id = l.content_type_id "
            "WHERE ct.app_label = ANY(%s) ORDER BY l.action_time, l.id"
        ).format(picked=picked, username=username, log=log, user=user, pk=pk, ct=ct),
        (list(audit.apps),),
    ).fetchall()
    for app, model in {(row[-2], row[-1]) for row in rows}:
        dst.execute(
            sql.SQL(
                "INSERT INTO {} (app_label, model) VALUES (%s, %s) ON CONFLICT DO NOTHING"
            ).format(ct),
            (app, model),
        )
    dst.execute(
        sql.SQL(
            "DELETE FROM {log} WHERE content_type_id IN "
            "(SELECT id FROM {ct} WHERE app_label = ANY(%s))"
        ).format(log=log, ct=ct),
        (list(audit.apps),),
    )
    into = sql.SQL(", ").join(sql.Identifier(c) for c in AUDIT_COLUMNS)
    kept = 0
    for row in rows:
        *values, name, app, model = row
        kept += dst.execute(
            sql.SQL(
                "INSERT INTO {log} ({into}, user_id, content_type_id) "
                "SELECT {marks}, u.{pk}, ct.id FROM {user} u, {ct} ct "
                "WHERE u.{username} = %s AND ct.app_label = %s AND ct.model = %s"
            ).format(
                log=log,
                into=into,
                marks=sql.SQL(", ").join(sql.Placeholder() * len(values)),
                pk=pk,
                user=user,
                ct=ct,
                username=username,
            ),
            (*values, name, app, model),
        ).rowcount
    missing = len(rows) - kept
    note = ""
    if missing:
        note = (
            f"{missing} audit entr{'y' if missing == 1 else 'ies'} by users the backup does not "
            "have were not kept"
        )
    return kept, note


def kept_rows(conn, keep):
    """{what: rows} a restore would carry forward from the database of `conn`."""
    present = tables(conn)
    kept = {
        what: conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(t))).fetchone()[
            0
        ]
        for t, what in keep.tables.items()
        if t in present
    }
    audit = keep.audit
    if audit is not None and {audit.log, audit.content_types} <= set(present):
        kept["audit of dashboard actions"] = conn.execute(
            sql.SQL(
                "SELECT count(*) FROM {} WHERE content_type_id IN "
                "(SELECT id FROM {} WHERE app_label = ANY(%s))"
            ).format(sql.Identifier(audit.log), sql.Identifier(audit.content_types)),
            (list(audit.apps),),
        ).fetchone()[0]
    return set(present), kept
