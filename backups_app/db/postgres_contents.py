"""What a PostgreSQL dump holds, read on this machine by `pg_restore` (no server, no restore).

`list_contents`: the table of contents (the quick check: it reads whole). `read_contents`:
its tables with their columns and the migrations its django_migrations rows record, from the
TOC's schema and that one table's data; what the restore confirmation page shows and judges
before the full check, which restores the dump, runs in the restore itself.
"""

import re
from dataclasses import dataclass

from backups_app.db.facts import BadFile, FileFacts
from backups_app.db.postgres_client import PostgresError, client, run_local, table_key


@dataclass(frozen=True)
class Contents:
    """What `pg_restore --list` read in an archive's table of contents."""

    dbname: str
    tables: frozenset  # table keys with a TABLE entry
    data: frozenset  # table keys with a TABLE DATA entry
    lines: tuple = ()  # the TOC lines of the tables, and of django_migrations' data


TOC_LINE = re.compile(r"\A\d+; \d+ \d+ (?P<kind>TABLE DATA|TABLE) (?P<schema>\S+) (?P<name>\S+) ")
MIGRATIONS = "django_migrations"


def list_contents(path):
    """Read a dump's table of contents (no server needed); PostgresError when it is no dump."""
    listing = run_local(
        [client("pg_restore"), "--list", str(path)], "is not a readable PostgreSQL dump"
    )
    dbname, found, lines = "", {"TABLE": set(), "TABLE DATA": set()}, []
    for line in listing.splitlines():
        if line.startswith(";     dbname: "):
            dbname = line.split(": ", 1)[1].strip()
        elif match := TOC_LINE.match(line):
            key = table_key(match["schema"], match["name"])
            found[match["kind"]].add(key)
            if match["kind"] == "TABLE" or key == MIGRATIONS:
                lines.append(line)
    return Contents(dbname, frozenset(found["TABLE"]), frozenset(found["TABLE DATA"]), tuple(lines))


def read_contents(path):
    """FileFacts of a dump without restoring it: columns and migrations, no row counts.

    `pg_restore` writes, as SQL, the CREATE TABLE of every table and django_migrations' rows
    only (a list of those TOC entries on its stdin): quick, whatever the dump's size. BadFile,
    in words that follow the file's name, when it is no readable dump.
    """
    try:
        contents = list_contents(path)
        script = run_local(
            [client("pg_restore"), "--use-list=/dev/stdin", "--file=-", str(path)],
            "could not be read",
            stdin="\n".join(contents.lines) + "\n",
        )
    except PostgresError as err:
        raise BadFile(str(err)) from err
    columns = {}
    for match in CREATE_TABLE.finditer(script):
        key = table_key(*_qualified(match["name"]))
        columns[key] = tuple(_columns(match["body"]))
    migrations = None
    if MIGRATIONS in contents.tables:
        migrations = frozenset(_migrations(script))
    return FileFacts(
        columns=columns, counts={}, migrations=migrations, details={"full_check": False}
    )


NAME_PART = r'(?:"(?:[^"]|"")*"|[^\s."(]+)'
CREATE_TABLE = re.compile(
    rf"^CREATE (?:UNLOGGED )?TABLE (?P<name>{NAME_PART}(?:\.{NAME_PART})?) \((?P<body>.*?)\n\)",
    re.MULTILINE | re.DOTALL,
)
IDENT = re.compile(r'"((?:[^"]|"")*)"|([^".\s]+)')


def _qualified(name):
    """(schema, table) of `schema.table` as pg_restore writes it (quoted where needed)."""
    parts = [quoted.replace('""', '"') if quoted else bare for quoted, bare in IDENT.findall(name)]
    return (parts[0], parts[1]) if len(parts) > 1 else ("public", parts[0])


def _columns(body):
    """The column names of a CREATE TABLE's body, in order (constraints are not columns)."""
    for line in body.splitlines():
        line = line.strip()
        if not line or line.startswith("CONSTRAINT "):
            continue
        match = IDENT.match(line)
        if match:
            quoted, bare = match.groups()
            yield quoted.replace('""', '"') if quoted is not None else bare


COPY_MIGRATIONS = re.compile(
    r"^COPY \S*django_migrations \((?P<columns>[^)]*)\) FROM stdin;\n(?P<rows>.*?)^\\\.$",
    re.MULTILINE | re.DOTALL,
)
COPY_ESCAPE = re.compile(r"\\(.)")
COPY_ESCAPES = {"t": "\t", "n": "\n", "r": "\r", "b": "\b", "f": "\f", "v": "\v"}


def _unescape(field):
    return COPY_ESCAPE.sub(lambda m: COPY_ESCAPES.get(m[1], m[1]), field)


def _migrations(script):
    """{(app, name)} from django_migrations' COPY data in a pg_restore script."""
    match = COPY_MIGRATIONS.search(script)
    if not match:
        return set()
    names = [c.strip().strip('"') for c in match["columns"].split(",")]
    app, name = names.index("app"), names.index("name")
    found = set()
    for row in match["rows"].splitlines():
        fields = [_unescape(field) for field in row.split("\t")]
        found.add((fields[app], fields[name]))
    return found
