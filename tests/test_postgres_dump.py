"""PostgreSQL's side of the database seam on a real server: pg_dump, its checks, scratch
databases, and where the password goes (never a command line)."""

import os
import subprocess
import threading
import time
from pathlib import Path

import pytest

from backups_app.db import postgres
from backups_app.db.postgres import PostgresError

pytestmark = pytest.mark.postgres


def add_items(site, rows=50):
    with site.connect(autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS item (id serial PRIMARY KEY, name text)")
        conn.execute("INSERT INTO item (name) SELECT 'item ' || g FROM generate_series(1, %s) g",
                     (rows,))


def test_it_dumps_with_the_row_counts_of_the_dump_itself(pg_site, tmp_path):
    add_items(pg_site, 50)
    folder = tmp_path / "out"
    folder.mkdir()
    dest = folder / "out.dump"

    counts = postgres.dump(pg_site.server(), dest, folder)

    assert counts["item"] == 50 and counts["django_migrations"] > 10
    contents = postgres.quick_check(dest, counts)
    assert contents.dbname == pg_site.name
    assert {"item", "django_migrations", "cron_runs"} <= contents.tables
    assert postgres.is_dump(dest)
    assert os.listdir(folder) == ["out.dump"]  # no passfile left behind
