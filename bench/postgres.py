"""Benchmark PostgreSQL backups and restores against bare pg_dump/pg_restore and django-dbbackup.

    .venv/bin/python bench/postgres.py [--megabytes 1000] [--repeat 1] [--workdir DIR]

Starts a throwaway PostgreSQL cluster (tests/pgcluster.py: initdb as the postgres user, a port
of its own, fsync on), migrates a site database and fills it with a table of about
--megabytes (rows and three indexes, made here), then measures, in one run:

- `manage.py backup` (pg_dump -Fc, the quick check, SHA-256, NAME.json) against a bare
  `pg_dump -Fc` at the same compression, and against django-dbbackup's `dbbackup` (which runs
  `pg_dump --format=custom` too; it runs from a venv of its own made in --workdir, as
  bench/backup.py does); the three take turns at going first, after one read of the table;
- `manage.py restore --yes` (the checks, the swap, the pre-restore safety backup) against a bare
  `pg_restore` into an empty database, while a writer in another process commits small
  transactions: the longest time it could not commit is the writers' pause;
- the peak RSS of each (wait4: the largest process of the command's tree).

Prints medians and the ratios of issue 21's targets. The machine may be shared: read ratios
from one run, and the load average printed with them.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO_DIR = Path(__file__).resolve().parent.parent
MANAGE = REPO_DIR / "manage.py"
PYTHON = sys.executable
sys.path.insert(0, str(REPO_DIR))

import _common  # noqa: E402
from _common import run_child  # noqa: E402

from tests.pgcluster import SITE_ROLE, start_cluster  # noqa: E402

SITE = "benchshop"
COMPRESSION = "6"  # the app's (backups_app.db.postgres_client.COMPRESSION) and pg_dump's default
JOBS = str(max(1, min(4, os.cpu_count() or 1)))  # the app's restore runs pg_restore with these


# --- the database -----------------------------------------------------------------------------


def build(cluster, megabytes, workdir):
    cluster.create_database(SITE)
    env = site_env(cluster, workdir)
    run([PYTHON, str(MANAGE), "migrate", "--no-input", "-v0"], env=env)
    with cluster.connect(SITE, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE bench_order (id bigserial PRIMARY KEY, customer text, status text, "
            "amount integer, created timestamptz, note text)"
        )
        batch = 200_000
        n = 0
        while True:
            conn.execute(
                "INSERT INTO bench_order (customer, status, amount, created, note) "
                "SELECT 'customer ' || (g %% 50000), "
                "(ARRAY['pending','approved','shipped','refunded'])[1 + g %% 4], g %% 10007, "
                "now() - (g || ' seconds')::interval, "
                "repeat(md5(g::text), 2) || ' order note for delivery to warehouse ' || g "
                "FROM generate_series(%s, %s) g",
                (n + 1, n + batch),
            )
            n += batch
            if n == batch:
                conn.execute("CREATE INDEX bench_order_customer ON bench_order (customer)")
                conn.execute("CREATE INDEX bench_order_created ON bench_order (created)")
                conn.execute("CREATE INDEX bench_order_status ON bench_order (status, amount)")
            (size,) = conn.execute("SELECT pg_database_size(%s)", (SITE,)).fetchone()
            if size >= megabytes * 1024 * 1024:
                break
        conn.execute("VACUUM ANALYZE bench_order")
        # The restore's writer commits here (in the backups too, so it goes on after the swap).
        conn.execute("CREATE TABLE bench_writes (id serial PRIMARY KEY, at text)")
    return size, n


def site_env(cluster, workdir):
    return {
        **cluster.env(SITE),
        "PYTHONPATH": str(REPO_DIR),
        "STANZA_DATA_DIR": str(workdir / "data"),
        "STANZA_BACKUPS_DIR": str(workdir / "backups"),
        "DJANGO_SECRET_KEY": "bench",
        "STANZA_LOG_FORMAT": "json",
    }


def pg_env(cluster, dbname=SITE):
    s = cluster.settings(dbname)
    return {
        "PGHOST": s["HOST"],
        "PGPORT": s["PORT"],
        "PGUSER": SITE_ROLE,
        "PGPASSWORD": s["PASSWORD"],  # the bench's own baselines; the app never does this
        "PGDATABASE": dbname,
    }


# --- running and measuring ----------------------------------------------------------------------


def run(args, *, env=None):
    """Run a command (its output dropped); return (seconds, peak RSS in MB, stderr)."""
    return run_child(args, env=env, stdout=subprocess.DEVNULL)


class Writer:
    """Another process's writes: one small transaction at a time, reconnecting on errors;
    records when each commit returned, so the longest gap is the writers' pause."""

    def __init__(self, cluster):
        self.cluster = cluster
        self.stop = threading.Event()
        self.commits, self.errors = [], 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def _run(self):
        import psycopg

        conn = None
        while not self.stop.is_set():
            try:
                if conn is None:
                    conn = self.cluster.connect(SITE, autocommit=True)
                conn.execute("INSERT INTO bench_writes (at) VALUES (now()::text)")
                self.commits.append(time.monotonic())
                time.sleep(0.002)
            except psycopg.Error:
                self.errors += 1
                conn = None
                time.sleep(0.01)

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()

    def longest_pause(self):
        gaps = [b - a for a, b in zip(self.commits, self.commits[1:], strict=False)]
        return max(gaps, default=0.0)


# --- the methods ---------------------------------------------------------------------------------


def bare_pg_dump(cluster, out):
    t, rss, _ = run(
        ["pg_dump", "--format=custom", f"--compress={COMPRESSION}", f"--file={out}"],
        env=pg_env(cluster),
    )
    return {"time": t, "rss": rss, "size": out.stat().st_size}


def app_backup(cluster, out, workdir):
    args = [PYTHON, str(MANAGE), "backup", "--output", str(out)]
    t, rss, stderr = run(args, env=site_env(cluster, workdir))
    result = {"time": t, "rss": rss, "size": out.stat().st_size}
    for line in stderr.splitlines():
        if line.startswith("{") and '"event": "backup"' in line:
            entry = json.loads(line)
            result["engine"] = entry.get("duration")
            result.update({f"t_{k}": v for k, v in entry.get("timings", {}).items()})
        if line.startswith("{") and '"event": "pg_dump"' in line:
            result.update({f"p_{k}": v for k, v in json.loads(line)["timings"].items()})
    for sidecar in (f"{out}.sha256", f"{out}.json"):
        Path(sidecar).unlink(missing_ok=True)
    return result


DBBACKUP_REQUIREMENTS = ("django-dbbackup>=5.4,<5.5", "Django>=5.2,<5.3", "psycopg[binary]>=3.2,<4")
DBBACKUP_SETTINGS = """
import os
SECRET_KEY = "bench"
USE_TZ = True
INSTALLED_APPS = ["dbbackup"]
DATABASES = {"default": {
    "ENGINE": "django.db.backends.postgresql", "NAME": os.environ["BENCH_NAME"],
    "USER": os.environ["BENCH_USER"], "PASSWORD": os.environ["BENCH_PASSWORD"],
    "HOST": os.environ["BENCH_HOST"], "PORT": os.environ["BENCH_PORT"],
}}
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "dbbackup": {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": os.environ["BENCH_OUT"]},
    },
}
"""


# The same tool as a site runs it: `manage.py dbbackup` in a project with the Django apps this
# project's own site has (admin, auth, sessions, messages, static files), which its start-up
# loads as ours does. The bare settings above start only dbbackup itself.
DBBACKUP_SITE_SETTINGS = DBBACKUP_SETTINGS.replace(
    'INSTALLED_APPS = ["dbbackup"]',
    """INSTALLED_APPS = [
    "django.contrib.admin", "django.contrib.auth", "django.contrib.contenttypes",
    "django.contrib.sessions", "django.contrib.messages", "django.contrib.humanize",
    "django.contrib.staticfiles", "dbbackup",
]
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
TEMPLATES = [{
    "BACKEND": "django.template.backends.django.DjangoTemplates", "APP_DIRS": True,
    "OPTIONS": {"context_processors": [
        "django.template.context_processors.request",
        "django.contrib.auth.context_processors.auth",
        "django.contrib.messages.context_processors.messages",
    ]},
}]
STATIC_URL = "static/"
""",
) + (
    'STORAGES["staticfiles"] = '
    '{"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}\n'
)


def dbbackup_python(workdir):
    (workdir / "dbbackup_pg_site_settings.py").write_text(DBBACKUP_SITE_SETTINGS)
    return _common.dbbackup_python(
        workdir, DBBACKUP_REQUIREMENTS, "dbbackup_pg_settings", DBBACKUP_SETTINGS
    )


def dbbackup(cluster, out, workdir, python, settings="dbbackup_pg_settings"):
    s = cluster.settings(SITE)
    env = {
        "PYTHONPATH": str(workdir),
        "DJANGO_SETTINGS_MODULE": settings,
        "BENCH_NAME": SITE,
        "BENCH_USER": SITE_ROLE,
        "BENCH_PASSWORD": s["PASSWORD"],
        "BENCH_HOST": s["HOST"],
        "BENCH_PORT": s["PORT"],
        "BENCH_OUT": str(out.parent),
    }
    args = [str(python), "-m", "django", "dbbackup", "--noinput", "-o", out.name]
    t, rss, _ = run(args, env=env)
    return {"time": t, "rss": rss, "size": out.stat().st_size}


def bare_pg_restore(cluster, dump, n):
    name = f"bench_empty_{n}"
    cluster.create_database(name)
    try:
        t, rss, _ = run(
            [
                "pg_restore",
                "--no-owner",
                "--no-acl",
                "--exit-on-error",
                f"--jobs={JOBS}",
                f"--dbname={name}",
                str(dump),
            ],
            env=pg_env(cluster, name),
        )
    finally:
        cluster.drop_database(name)
    return {"time": t, "rss": rss}


def app_restore(cluster, dump, workdir):
    args = [PYTHON, str(MANAGE), "restore", str(dump), "--yes"]
    with Writer(cluster) as writer:
        time.sleep(1)
        t, rss, stderr = run(args, env=site_env(cluster, workdir))
        time.sleep(1)
    result = {"time": t, "rss": rss, "pause": writer.longest_pause(), "errors": writer.errors}
    for line in stderr.splitlines():
        if line.startswith("{") and '"event": "restore"' in line:
            result["locked"] = json.loads(line).get("locked")
        if line.startswith("{") and '"event": "swap"' in line:
            result.update({f"t_{k}": v for k, v in json.loads(line)["timings"].items()})
    for safety in (workdir / "backups").glob("*.pre-restore.dump*"):
        safety.unlink()
    return result


def warm_up(cluster):
    with cluster.connect(SITE, autocommit=True) as conn:
        conn.execute("SELECT count(*) FROM bench_order").fetchone()


# --- the run ------------------------------------------------------------------------------


def median(results, key):
    values = [r[key] for r in results if r.get(key) is not None]
    return statistics.median(values) if values else float("nan")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--megabytes", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--port", type=int, default=55432)
    options = parser.parse_args()
    workdir = options.workdir or Path(tempfile.mkdtemp(prefix="stanza-bench-pg-"))
    (workdir / "backups").mkdir(parents=True, exist_ok=True)
    (workdir / "out").mkdir(exist_ok=True)
    python = dbbackup_python(workdir)
    cluster = start_cluster(options.port, durable=True)
    try:
        started = time.monotonic()
        size, rows = build(cluster, options.megabytes, workdir)
        print(
            f"database: {size / 1024 / 1024:.0f} MB ({rows} rows of bench_order, 3 indexes), "
            f"built in {time.monotonic() - started:.0f} s",
            flush=True,
        )
        results = {
            k: []
            for k in ("pg_dump", "backup", "dbbackup", "dbbackup_site", "pg_restore", "restore")
        }
        out = workdir / "out"
        backups = {
            "pg_dump": lambda: bare_pg_dump(cluster, out / "bare.dump"),
            "backup": lambda: app_backup(cluster, out / f"{SITE}.app.dump", workdir),
            "dbbackup": lambda: dbbackup(cluster, out / "dbbackup.dump", workdir, python),
            "dbbackup_site": lambda: dbbackup(
                cluster, out / "dbbackup-site.dump", workdir, python, "dbbackup_pg_site_settings"
            ),
        }
        order = list(backups)
        for n in range(options.repeat):
            for path in out.iterdir():
                path.unlink()
            # The previous round's restore left a database nobody has read yet: its first
            # reader sets every row's hint bits (writes). Read it once here, and take turns,
            # so that no method always comes first or last.
            warm_up(cluster)
            for method in order:
                results[method].append(backups[method]())
            order = order[1:] + order[:1]
            results["pg_restore"].append(bare_pg_restore(cluster, out / "bare.dump", n))
            results["restore"].append(app_restore(cluster, out / f"{SITE}.app.dump", workdir))
            print(f"run {n + 1}: " + json.dumps({k: v[-1] for k, v in results.items()}), flush=True)
        report(results, os.getloadavg())
    finally:
        cluster.remove()


def paired_ratio(results, method, baseline):
    """The median of each round's method/baseline time."""
    pairs = zip(results[method], results[baseline], strict=True)
    return statistics.median(m["time"] / b["time"] for m, b in pairs)


def report(results, load):
    print(f"\nmedians ({len(results['backup'])} run(s)); load average {load[0]:.2f} {load[1]:.2f}")
    print(f"{'method':<12} {'time s':>8} {'RSS MB':>8} {'size MB':>9}")
    for method, rows in results.items():
        size = median(rows, "size")
        shown = f"{size / 1024 / 1024:9.1f}" if size == size else f"{'':>9}"
        print(f"{method:<12} {median(rows, 'time'):8.2f} {median(rows, 'rss'):8.0f} {shown}")
    backup, bare = median(results["backup"], "time"), median(results["pg_dump"], "time")
    dbb = median(results["dbbackup"], "time")
    restore, bare_restore = (
        median(results["restore"], "time"),
        median(results["pg_restore"], "time"),
    )
    paired = {  # each round's own ratio: the machine's load drifts less within a round
        pair: paired_ratio(results, *pair)
        for pair in (
            ("backup", "pg_dump"),
            ("backup", "dbbackup"),
            ("backup", "dbbackup_site"),
            ("restore", "pg_restore"),
        )
    }
    print(
        f"- backup / bare pg_dump -Z{COMPRESSION}: {backup / bare:.2f}x "
        f"(median of rounds {paired['backup', 'pg_dump']:.2f}x; target <= 1.2)"
    )
    sizes = median(results["backup"], "size") / median(results["dbbackup"], "size")
    print(
        f"- backup / dbbackup: {backup / dbb:.2f}x (median of rounds "
        f"{paired['backup', 'dbbackup']:.2f}x; target < 1), size {sizes:.3f}x (target <= 1)"
    )
    dbb_site = median(results["dbbackup_site"], "time")
    print(
        f"- backup / dbbackup in a project with this site's Django apps: {backup / dbb_site:.2f}x "
        f"(median of rounds {paired['backup', 'dbbackup_site']:.2f}x)"
    )
    print(
        f"- restore / bare pg_restore: {restore / bare_restore:.2f}x (median of rounds "
        f"{paired['restore', 'pg_restore']:.2f}x; target <= 2)"
    )
    print(
        f"- writers' longest pause during the restore: {median(results['restore'], 'pause'):.2f} s "
        f"(target < 2), the swap itself {median(results['restore'], 'locked') or 0:.2f} s; "
        f"{median(results['restore'], 'errors'):.0f} failed commits retried"
    )
    rows = results["backup"]
    print(
        f"- where the backup's time goes: start-up and exit "
        f"{median(rows, 'time') - median(rows, 'engine'):.1f} s, pg_dump "
        f"{median(rows, 'p_dump'):.1f} s, then quick check {median(rows, 'p_quick_check'):.2f} s "
        f"(rows counted alongside in {median(rows, 'p_counts'):.2f} s), verify step in all "
        f"{median(rows, 't_verify'):.2f} s (with the SHA-256 and fsync)"
    )
    steps = ("t_restore", "t_check", "t_swap", "t_safety")
    print(
        "- where the restore's time goes: "
        + ", ".join(f"{k[2:]} {median(results['restore'], k):.1f} s" for k in steps)
    )
    print(
        f"- peak RSS: backup {median(results['backup'], 'rss'):.0f} MB, restore "
        f"{median(results['restore'], 'rss'):.0f} MB (target < 100); dbbackup "
        f"{median(results['dbbackup'], 'rss'):.0f} MB"
    )


if __name__ == "__main__":
    main()
