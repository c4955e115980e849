"""Benchmark the backup engine against cp, gzip -6, SQLite's online backup API and django-dbbackup.

    .venv/bin/python bench/backup.py [--sizes 100,1000] [--repeat 3] [--workdir DIR]
    .venv/bin/python bench/backup.py --tune [--sizes 1000]   # gzip level / block size sweep

Builds WAL databases of about 100 MB and 1 GB once (cached in --workdir), then, for each size,
runs every method --repeat times in a child process (its peak RSS comes from wait4) while a
writer in another process commits small transactions and records each commit's latency.
django-dbbackup runs from a venv of its own that the bench makes in --workdir (it is not a
dependency of the project). Prints a table of medians and the ratios of the targets (issue 9).
The machine may be shared: read ratios from one run, not absolute times.
"""

import argparse
import json
import os
import random
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _common
from _common import run_child

REPO_DIR = Path(__file__).resolve().parent.parent
MANAGE = REPO_DIR / "manage.py"
PYTHON = sys.executable

WORDS = (  # noqa: SIM905 -- a readable block of words
    "backup restore schedule daily purge retention archive invoice customer order payment "
    "shipment warehouse delivery account balance transfer ledger report summary status "
    "pending approved rejected cancelled refunded paris london berlin madrid rome lisbon "
    "vienna prague dublin oslo helsinki stockholm warsaw athens amsterdam brussels alpha "
    "beta gamma delta kappa sigma omega the a of and to in is for on with as by at from this "
    "that be are was were has have had not but or an will can all new more other about time "
    "year people way day man thing woman life child world school state family student group "
    "country problem hand part place case week company system program "
).split()


# --- the databases --------------------------------------------------------------------------


def build_database(path, megabytes):
    """A WAL database of about `megabytes` MB: three tables, six indexes, ~7% deleted rows."""
    if path.exists():
        return path
    tmp = path.with_suffix(".building")
    for leftover in tmp.parent.glob(tmp.name + "*"):
        leftover.unlink()
    print(f"building {path} ({megabytes} MB, once)...", file=sys.stderr, flush=True)
    rng = random.Random(megabytes)
    conn = sqlite3.connect(tmp, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=OFF")
    conn.executescript(
        """
        CREATE TABLE django_migrations (id INTEGER PRIMARY KEY, app TEXT, name TEXT, applied TEXT);
        CREATE TABLE customer (id INTEGER PRIMARY KEY, name TEXT, email TEXT, city TEXT,
                               balance REAL, created INTEGER);
        CREATE INDEX customer_email ON customer (email);
        CREATE INDEX customer_city ON customer (city, created);
        CREATE TABLE purchase (id INTEGER PRIMARY KEY, customer_id INTEGER, total REAL,
                               status TEXT, note TEXT, created INTEGER);
        CREATE INDEX purchase_customer ON purchase (customer_id);
        CREATE INDEX purchase_status ON purchase (status, created);
        CREATE TABLE event (id INTEGER PRIMARY KEY, kind TEXT, payload TEXT, ts INTEGER);
        CREATE INDEX event_ts ON event (ts);
        CREATE INDEX event_kind ON event (kind, ts);
        CREATE TABLE writer_log (id INTEGER PRIMARY KEY, t REAL, note TEXT);
        """
    )
    target = megabytes * 1024 * 1024
    batch = 20_000
    n = 0

    def text(k):
        return " ".join(rng.choices(WORDS, k=k))

    while conn.execute("PRAGMA page_count").fetchone()[0] * 4096 < target:
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO customer VALUES (NULL, ?, ?, ?, ?, ?)",
            (
                (
                    text(2).title(),
                    f"user{n + i}@{rng.choice(WORDS)}.example.com",
                    rng.choice(WORDS[20:40]),
                    round(rng.uniform(-1000, 100000), 2),
                    1_700_000_000 + n + i,
                )
                for i in range(batch // 4)
            ),
        )
        conn.executemany(
            "INSERT INTO purchase VALUES (NULL, ?, ?, ?, ?, ?)",
            (
                (
                    rng.randrange(1, n // 4 + batch),
                    round(rng.uniform(1, 5000), 2),
                    rng.choice(WORDS[14:20]),
                    text(rng.randrange(3, 15)),
                    1_700_000_000 + n + i,
                )
                for i in range(batch)
            ),
        )
        conn.executemany(
            "INSERT INTO event VALUES (NULL, ?, ?, ?)",
            (
                (
                    rng.choice(WORDS[:14]),
                    json.dumps({"by": rng.randrange(10**6), "msg": text(rng.randrange(5, 30))}),
                    1_700_000_000 + n + i,
                )
                for i in range(batch)
            ),
        )
        conn.execute("COMMIT")
        n += batch
    # Runs of deleted rows, as a purge leaves them: free pages inside the file.
    for table, every in (("purchase", 13), ("event", 15), ("customer", 17)):
        conn.execute(f"DELETE FROM {table} WHERE (id / 500) % {every} = 0")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    tmp.rename(path)
    return path


def database_facts(path):
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        pages, free, size = (
            conn.execute(f"PRAGMA {p}").fetchone()[0]
            for p in ("page_count", "freelist_count", "page_size")
        )
    finally:
        conn.close()
    return pages * size, free / pages


# --- the writer in another process --------------------------------------------------------

WRITER = r"""
import json, sqlite3, sys, threading, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=5)
conn.execute("PRAGMA journal_mode=WAL")
conn.execute("PRAGMA synchronous=NORMAL")
conn.execute("DELETE FROM writer_log")  # keep the database the size it was built
stop = threading.Event()
threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
samples, errors = [], []
print("ready", flush=True)
while not stop.is_set():
    started = time.monotonic()
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO writer_log (t, note) VALUES (?, ?)", (started, "x" * 100))
        conn.execute("COMMIT")
    except sqlite3.OperationalError as err:
        errors.append(str(err))
        if conn.in_transaction:
            conn.execute("ROLLBACK")
    samples.append((started, time.monotonic() - started))
    time.sleep(0.001)
conn.close()
json.dump({"samples": samples, "errors": errors}, sys.stdout)
"""


class Writer:
    def __init__(self, db):
        self.proc = subprocess.Popen(
            [PYTHON, "-c", WRITER, str(db)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout.readline() == "ready\n"

    def stop(self):
        out, _ = self.proc.communicate("stop")
        data = json.loads(out)
        return data["samples"], data["errors"]


def latency_stats(samples, windows):
    picked = sorted(lat for t, lat in samples if any(a <= t <= b for a, b in windows))
    if not picked:
        return None
    return {
        "n": len(picked),
        "p50": picked[len(picked) // 2] * 1000,
        "p99": picked[min(len(picked) - 1, int(len(picked) * 0.99))] * 1000,
        "max": picked[-1] * 1000,
    }


# --- the methods ----------------------------------------------------------------------------


VACUUM = """
import sqlite3, sys
sqlite3.connect(sys.argv[1], isolation_level=None).execute("VACUUM INTO ?", (sys.argv[2],))
"""
ONLINE_BACKUP = """
import sqlite3, sys
src, dst = sqlite3.connect(sys.argv[1]), sqlite3.connect(sys.argv[2])
src.backup(dst)
dst.close()
"""


def method_cp(db, out, ctx):
    t, rss, _ = run_child(["cp", str(db), str(out)])
    return {"time": t, "rss": rss, "size": out.stat().st_size}


def method_vacuum(db, out, ctx):
    t, rss, _ = run_child([PYTHON, "-c", VACUUM, str(db), str(out)])
    return {"time": t, "rss": rss, "size": out.stat().st_size}


def method_backup_api(db, out, ctx):
    t, rss, _ = run_child([PYTHON, "-c", ONLINE_BACKUP, str(db), str(out)])
    return {"time": t, "rss": rss, "size": out.stat().st_size}


def _manage_backup(db, out, ctx, *extra):
    env = {
        "STANZA_DATA_DIR": str(ctx["data_dir"]),
        "DJANGO_SECRET_KEY": "bench",
        "STANZA_LOG_FORMAT": "json",
    }
    args = [PYTHON, str(MANAGE), "backup", "--data-dir", str(db.parent), "--output", str(out)]
    t, rss, stderr = run_child(args + list(extra), env=env, stdout=subprocess.DEVNULL)
    entry = next(
        json.loads(line)
        for line in stderr.splitlines()
        if line.startswith("{") and '"event": "backup"' in line
    )
    result = {"time": t, "rss": rss, "size": out.stat().st_size, "engine": entry["duration"]}
    result.update({f"t_{k}": v for k, v in entry["timings"].items()})
    for sidecar in (f"{out}.sha256", f"{out}.json"):
        Path(sidecar).unlink()
    return result


def method_plain(db, out, ctx):
    result = _manage_backup(db, out, ctx)
    if not ctx["plain_copy"].exists():  # keep one, the input of gzip -6
        os.link(out, ctx["plain_copy"])
    return result


def method_compressed(db, out, ctx):
    return _manage_backup(db, out, ctx, "--compress")


def method_gzip6(db, out, ctx):
    with open(out, "wb") as f:
        t, rss, _ = run_child(["gzip", "-6", "-c", str(ctx["plain_copy"])], stdout=f)
    return {"time": t, "rss": rss, "size": out.stat().st_size}


DBBACKUP_REQUIREMENTS = ("django-dbbackup>=5.4,<5.5", "Django>=5.2,<5.3")
DBBACKUP_SETTINGS = """
import os
SECRET_KEY = "bench"
USE_TZ = True
INSTALLED_APPS = ["dbbackup"]
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": os.environ["BENCH_DB"]}}
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "dbbackup": {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": os.environ["BENCH_OUT"]},
    },
}
"""


def dbbackup_python(workdir):
    return _common.dbbackup_python(
        workdir, DBBACKUP_REQUIREMENTS, "dbbackup_bench_settings", DBBACKUP_SETTINGS
    )


def _dbbackup(db, out, ctx, *extra):
    env = {
        "PYTHONPATH": str(ctx["workdir"]),
        "DJANGO_SETTINGS_MODULE": "dbbackup_bench_settings",
        "BENCH_DB": str(db),
        "BENCH_OUT": str(out.parent),
    }
    args = [str(ctx["dbbackup_python"]), "-m", "django", "dbbackup", "--noinput", "-o", out.name]
    t, rss, _ = run_child(args + list(extra), env=env, stdout=subprocess.DEVNULL)
    return {"time": t, "rss": rss, "size": out.stat().st_size}


def method_dbbackup(db, out, ctx):
    return _dbbackup(db, out, ctx)


def method_dbbackup_z(db, out, ctx):
    return _dbbackup(db, out, ctx, "-z")


METHODS = {
    "cp": method_cp,
    "VACUUM INTO (bare)": method_vacuum,
    "backup API (peer)": method_backup_api,
    "manage.py backup": method_plain,
    "manage.py backup --compress": method_compressed,
    "gzip -6 of the backup": method_gzip6,
    "django-dbbackup": method_dbbackup,
    "django-dbbackup -z": method_dbbackup_z,
}


def bench_size(db, workdir, repeat, idle_seconds=3.0, gap=1.0):
    ctx = {
        "data_dir": workdir / "data",
        "plain_copy": workdir / "plain-copy.bak",
        "workdir": workdir,
        "dbbackup_python": dbbackup_python(workdir),
    }
    ctx["plain_copy"].unlink(missing_ok=True)
    out_dir = Path(tempfile.mkdtemp(dir=workdir, prefix="out-"))
    writer = Writer(db)
    windows = {"idle": []}
    results = {name: [] for name in METHODS}
    try:
        t = time.monotonic()
        time.sleep(idle_seconds)
        windows["idle"].append((t, time.monotonic()))
        for run in range(repeat):
            for name, method in METHODS.items():
                out = out_dir / f"run{run}.out"
                time.sleep(gap)
                started = time.monotonic()
                results[name].append(method(db, out, ctx))
                windows.setdefault(name, []).append((started, time.monotonic()))
                out.unlink()
                print(f"  run {run + 1} {name}: {results[name][-1]['time']:.2f} s", file=sys.stderr)
    finally:
        samples, errors = writer.stop()
        shutil.rmtree(out_dir)
        ctx["plain_copy"].unlink(missing_ok=True)
    table = {}
    for name, runs in results.items():
        row = {key: statistics.median(r[key] for r in runs) for key in runs[0]}
        row["latency"] = latency_stats(samples, windows[name])
        table[name] = row
    return table, latency_stats(samples, windows["idle"]), errors


def print_table(size_label, db, table, idle, errors):
    size, free = database_facts(db)
    vac = table["VACUUM INTO (bare)"]["time"]
    gz6 = table["gzip -6 of the backup"]["size"]
    print(f"\n### {size_label}: {db.name}, {size / 1e6:.0f} MB, {free:.0%} free pages\n")
    print(
        "| method | time (s) | x VACUUM INTO | output (MB) | peak RSS (MB) "
        "| writer p50/p99/max (ms) |"
    )
    print("|---|---:|---:|---:|---:|---|")
    lat = idle
    print(f"| idle (no backup) | | | | | {lat['p50']:.2f} / {lat['p99']:.2f} / {lat['max']:.1f} |")
    for name, row in table.items():
        lat = row["latency"]
        lat_text = f"{lat['p50']:.2f} / {lat['p99']:.2f} / {lat['max']:.1f}" if lat else "-"
        print(
            f"| {name} | {row['time']:.2f} | {row['time'] / vac:.2f} | {row['size'] / 1e6:.0f} "
            f"| {row['rss']:.0f} | {lat_text} |"
        )
    plain, comp = table["manage.py backup"], table["manage.py backup --compress"]
    dbb, dbbz = table["django-dbbackup"], table["django-dbbackup -z"]
    print()
    print(f"- manage.py backup / bare VACUUM INTO: {plain['time'] / vac:.2f}x (target <= 2.0)")
    print(f"- manage.py backup / django-dbbackup: {plain['time'] / dbb['time']:.2f}x (target < 1)")
    print(
        f"- django-dbbackup -z / manage.py backup --compress: {dbbz['time'] / comp['time']:.1f}x "
        f"faster (target >= 4); size {comp['size'] / dbbz['size']:.2f}x its (target <= 1.0)"
    )
    print(
        f"- peak RSS: manage.py backup {plain['rss']:.0f} MB, --compress {comp['rss']:.0f} MB "
        f"(target < 100); django-dbbackup {dbb['rss']:.0f} MB"
    )
    print(f"- compressed size / gzip -6 size: {comp['size'] / gz6:.3f}")
    print(f"- start-up and exit of manage.py backup: {plain['time'] - plain['engine']:.2f} s")
    print(
        "- steps of manage.py backup: "
        + ", ".join(f"{k[2:]} {v:.2f} s" for k, v in plain.items() if k.startswith("t_"))
        + "; --compress: "
        + ", ".join(f"{k[2:]} {v:.2f} s" for k, v in comp.items() if k.startswith("t_"))
    )
    print(f"- writer errors (e.g. database is locked): {len(errors)}")


# --- gzip tuning ------------------------------------------------------------------------


def tune(db, workdir):
    """Compress one plain backup with the engine's gzip at several levels and block sizes."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "stanza_site.settings")
    os.environ.setdefault("STANZA_DATA_DIR", str(workdir / "data"))
    os.environ.setdefault("DJANGO_SECRET_KEY", "bench")
    sys.path.insert(0, str(REPO_DIR))
    import django

    django.setup()
    from backups_app.engine import compress

    plain = workdir / "tune.bak"
    plain.unlink(missing_ok=True)
    sqlite3.connect(db).execute("VACUUM INTO ?", (str(plain),))
    ref = workdir / "tune.gz6"
    with open(ref, "wb") as f:
        started = time.monotonic()
        subprocess.run(["gzip", "-6", "-c", str(plain)], stdout=f, check=True)
        print(f"gzip -6: {time.monotonic() - started:.2f} s, {ref.stat().st_size / 1e6:.1f} MB")
    import zlib

    from zlib_ng import zlib_ng

    print("| library | level | block (MB) | time (s) | size (MB) | / gzip -6 |")
    print("|---|---:|---:|---:|---:|---:|")
    for lib_name, lib, chosen in (("zlib-ng", zlib_ng, 3), ("zlib", zlib, 4)):
        combos = [(level, 4) for level in range(1, 7)] + [(chosen, 1), (chosen, 16)]
        for level, block in combos:
            compress.deflate, compress.GZIP_LEVEL = lib, level
            compress.GZIP_BLOCK = block * 1024 * 1024
            out = workdir / "tune.gz"
            out.unlink(missing_ok=True)
            started = time.monotonic()
            compress._gzip(plain, out)
            elapsed = time.monotonic() - started
            mb = out.stat().st_size / 1e6
            ratio = out.stat().st_size / ref.stat().st_size
            print(f"| {lib_name} | {level} | {block} | {elapsed:.2f} | {mb:.1f} | {ratio:.3f} |")
            out.unlink()
    plain.unlink()
    ref.unlink()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/stanza-bench"))
    parser.add_argument("--sizes", default="100,1000", help="database sizes in MB")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--tune", action="store_true", help="sweep gzip level and block size")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    (args.workdir / "data").mkdir(exist_ok=True)
    dbs = {}
    for mb in (int(s) for s in args.sizes.split(",")):
        folder = args.workdir / f"db-{mb}mb"
        folder.mkdir(exist_ok=True)
        dbs[mb] = build_database(folder / "database.sqlite", mb)
    print(
        f"# bench/backup.py: {os.cpu_count()} cores, sqlite {sqlite3.sqlite_version}, "
        f"medians of {args.repeat} runs"
    )
    for mb, db in dbs.items():
        if args.tune:
            tune(db, args.workdir)
            continue
        table, idle, errors = bench_size(db, args.workdir, args.repeat)
        print_table(f"{mb} MB", db, table, idle, errors)


if __name__ == "__main__":
    main()
