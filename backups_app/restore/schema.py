"""What a backup's own migrations promise: its tables (and their columns), from Django's
migration graph at the backup's `django_migrations` state, and whether this code knows them."""


def _migration_loader():
    from django.db.migrations.loader import MigrationLoader

    return MigrationLoader(None, ignore_no_migrations=True)


def compare_migrations(applied):
    """(unknown, pending) for a set of applied (app, name) migrations.

    unknown: migrations of this code's apps that the code does not have (a newer schema);
    pending: migrations the code has that are not applied (an older schema, fine to restore).
    """
    disk = _migration_loader().disk_migrations
    known = set(disk) | {r for m in disk.values() for r in (m.replaces or ())}
    apps = {app for app, _name in disk}
    unknown = {key for key in applied if key[0] in apps and key not in known}
    applied_squashes = {r for key, m in disk.items() if key in applied for r in (m.replaces or ())}
    pending = {
        key
        for key, migration in disk.items()
        if key not in applied
        and key not in applied_squashes
        and not (migration.replaces and set(migration.replaces) <= applied)
    }
    return unknown, pending


def expected_tables(applied):
    """The tables (lower case) a database must have once `applied` migrations ran."""
    return set(expected_schema(applied))


def expected_schema(applied):
    """{table: {column, ...}} (lower case) a database must have once `applied` migrations ran.

    Django's migration loader projects the installed apps' models at that state (the
    backup's own, not this code's); their db_table names, with the many-to-many tables Django
    creates for them, and each one's concrete columns, are what a complete backup holds.
    Unmanaged and proxy models have no table of their own.
    """
    loader = _migration_loader()
    graph = loader.graph
    nodes = {key for key in applied if key in graph.nodes}
    for key, migration in loader.disk_migrations.items():
        if key in graph.nodes and migration.replaces and set(migration.replaces) <= applied:
            nodes.add(key)  # a squash whose replaced migrations were all applied
    if not nodes:
        return {}
    state = graph.make_state(nodes=sorted(nodes), at_end=True, real_apps=loader.unmigrated_apps)
    return {
        model._meta.db_table.lower(): {
            field.column.lower() for field in model._meta.local_concrete_fields if field.column
        }
        for model in state.apps.get_models(include_auto_created=True)
        if model._meta.managed and not model._meta.proxy and not model._meta.swapped
    }


def missing_columns(expected, columns):
    """[(table, column)] that `expected` (expected_schema) promises and `columns` ({table:
    (column, ...)}, what a backup holds) lacks, sorted; tables it lacks altogether aside."""
    held = {table.lower(): {c.lower() for c in cols} for table, cols in columns.items()}
    return sorted(
        (table, column)
        for table, wanted in expected.items()
        if table in held
        for column in wanted - held[table]
    )
