"""The shapes that cross the database seam (no app imports: every engine module uses them)."""

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Audit:
    """Where dashboard actions are recorded: Django's admin log rows of `apps`' content types."""

    log: str  # django_admin_log
    content_types: str  # django_content_type
    user: str  # the user model's table
    username: str  # its USERNAME_FIELD column (users are matched by name across a restore)
    pk: str  # its primary key column
    apps: tuple = ("backups_app",)


@dataclass(frozen=True)
class Keep:
    """The product's own records, carried forward from the live database by a restore."""

    tables: dict = field(default_factory=dict)  # {table: what it holds, in words}
    audit: Audit | None = None
    # A run still `running` inside the backup was cut off by the backup's moment: closed.
    runs_table: str = ""


@dataclass(frozen=True)
class FileFacts:
    """What read_file found in a backup file that passed the engine's full check."""

    columns: dict  # {table: (column, ...)} in the file's order
    counts: dict  # {table: rows}
    migrations: frozenset | None  # {(app, name)} applied; None without django_migrations
    details: dict = field(default_factory=dict)  # engine-specific (SQLite: page_size)


class BadFile(Exception):
    """A backup file the engine cannot take; its words follow the file's name ("is truncated")."""
