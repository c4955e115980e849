"""Benchmark a restore's write pause and memory against a bare VACUUM INTO plus a one-step
backup-API copy of the same database (issue 18 item 3), measured side by side in one run.

    .venv/bin/python bench/restore.py [--size 300] [--repeat 3] [--workdir DIR]
                                      [--against CHECKOUT] [--drop-caches]

Builds a migrated project database with a `bulk` table of about --size MB (cached in
--workdir), backs it up with `manage.py backup`, then for each repeat: times a bare `VACUUM
INTO` and a one-step backup-API copy of the live database (the baseline), and runs `manage.py
restore BACKUP --yes` in a child process (peak RSS from wait4) while a writer in another
process commits a row every 5 ms with a 60 s busy timeout; the writer's longest commit is the
pause the site saw, and the restore's log says how long it held the lock. Prints medians and
ratios. Read ratios from one run, not absolute times.

--against CHECKOUT runs that checkout's `manage.py restore` too, in every round right after this
one's (before and after, alternating in one window). --drop-caches (root) empties the kernel's
page cache before each timing and reads the database and the backup back into it: on this
shared VM, writes into page cache that has grown to many GB cost several times more CPU, which
moves a restore's pause by 2x from one hour to the next.
"""

import argparse
import os
import re
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import run_child

REPO_DIR = Path(__file__).resolve().parent.parent
MANAGE = REPO_DIR / "manage.py"

WRITER = r"""
import sqlite3, sys, time, os
path, stop = sys.argv[1:3]
worst, commits = 0.0, 0
while not os.path.exists(stop):
    started = time.monotonic()
    conn = sqlite3.connect(path, timeout=60, isolation_level=None)
    conn.execute("INSERT INTO bench_writes (at) VALUES (?)", (time.time(),))
    conn.close()
    worst = max(worst, time.monotonic() - started)
    commits += 1
    time.sleep(0.005)
print(worst, commits)
"""


def env_for(data):
    return {**os.environ, "STANZA_DATA_DIR": str(data), "DJANGO_SECRET_KEY": "bench"}


def build(workdir, megabytes):
    """A migrated project database with ~`megabytes` MB in `bulk`, and one backup of it."""
    data = workdir / f"data-{megabytes}"
    ready = data / "ready"
    if ready.exists():
        return data
    shutil.rmtree(data, ignore_errors=True)
    data.mkdir(parents=True)
    print(f"building a {megabytes} MB project database (once)...", file=sys.stderr, flush=True)
    subprocess.run([sys.executable, str(MANAGE), "migrate", "-v0"], env=env_for(data), check=True)
    conn = sqlite3.connect(data / "database.sqlite", isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE bulk (id INTEGER PRIMARY KEY, n INT, pad TEXT)")
    conn.execute("CREATE INDEX bulk_n ON bulk (n)")
    conn.execute("CREATE TABLE bench_writes (id INTEGER PRIMARY KEY, at REAL)")
    conn.execute(
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < ?) "
        "INSERT INTO bulk (n, pad) SELECT abs(random()) % 1000, hex(randomblob(200)) FROM c",
        (megabytes * 1024 * 1024 // 480,),
    )
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    (data / "backups").mkdir(exist_ok=True)
    subprocess.run(
        [sys.executable, str(MANAGE), "backup", "--output", str(data / "the.bak")],
        env=env_for(data),
        check=True,
        stdout=subprocess.DEVNULL,
    )
    ready.touch()
    return data


def settle(data, drop_caches):
    """With --drop-caches: an empty page cache holding just the database and the backup."""
    if not drop_caches:
        return
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError as err:
        raise SystemExit(f"--drop-caches needs root: {err}") from err
    for path in (data / "database.sqlite", data / "the.bak"):
        with open(path, "rb") as f:
            while f.read(1 << 24):
                pass


def baseline(live, scratch):
    """(VACUUM INTO seconds, one-step backup-API copy seconds) of the live database."""
    out = scratch / "vacuum.db"
    out.unlink(missing_ok=True)
    conn = sqlite3.connect(live)
    started = time.monotonic()
    conn.execute("VACUUM INTO ?", (str(out),))
    vacuum = time.monotonic() - started
    copy = sqlite3.connect(scratch / "copy.db")
    started = time.monotonic()
    conn.backup(copy, pages=-1)
    backup = time.monotonic() - started
    copy.close()
    conn.close()
    for path in (out, scratch / "copy.db"):
        path.unlink(missing_ok=True)
    return vacuum, backup


def restore(data, scratch, manage=MANAGE):
    """(writer's longest commit, lock held, restore seconds, peak RSS MB) of one `manage.py
    restore` (of the checkout `manage` is in)."""
    stop = scratch / "stop"
    stop.unlink(missing_ok=True)
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(data / "database.sqlite"), str(stop)],
        stdout=subprocess.PIPE,
        text=True,
    )
    time.sleep(1)
    try:
        took, rss, log = run_child(
            [sys.executable, str(manage), "restore", str(data / "the.bak"), "--yes"],
            env=env_for(data),
            stdout=subprocess.DEVNULL,
        )
    finally:
        time.sleep(0.5)
        stop.touch()
        worst = float(writer.communicate(timeout=120)[0].split()[0])
    for safety in (data / "backups").glob("*.pre-restore.bak*"):
        safety.unlink()
    # The restore's own account: how long it held the live database's write lock.
    held = float(re.search(r"writers waited ([0-9.]+) s", log)[1])
    return worst, held, took, rss


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=300, help="MB in the bulk table")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--workdir", type=Path, default=Path(tempfile.gettempdir()) / "stanza-bench"
    )
    parser.add_argument("--against", type=Path, help="another checkout, restored alternately")
    parser.add_argument("--drop-caches", action="store_true", help="see the docstring (root)")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    data = build(args.workdir, args.size)
    live = data / "database.sqlite"
    runs = {"this checkout": MANAGE}
    if args.against:
        runs[f"--against {args.against}"] = args.against.resolve() / "manage.py"
    rows = {name: [] for name in runs}
    for _ in range(args.repeat):
        settle(data, args.drop_caches)
        vacuum, backup = baseline(live, args.workdir)
        for name, manage in runs.items():
            settle(data, args.drop_caches)
            pause, held, took, rss = restore(data, args.workdir, manage)
            base = vacuum + backup
            rows[name].append((vacuum, backup, pause, held, took, rss, pause / base, held / base))
            print(
                f"{name}: VACUUM INTO {vacuum:.2f} s, backup API {backup:.2f} s; restore "
                f"{took:.2f} s, lock held {held:.2f} s, writer paused {pause:.2f} s "
                f"({pause / base:.2f}x), peak RSS {rss:.0f} MB",
                file=sys.stderr,
                flush=True,
            )
    size = live.stat().st_size / 1e6
    for name, runs_of in rows.items():
        med = [statistics.median(column) for column in zip(*runs_of, strict=True)]
        vacuum, backup, pause, held, took, rss, pause_ratio, held_ratio = med
        print(f"\n{name}")
        print(f"| {size:.0f} MB database, medians of {args.repeat} | seconds |")
        print("|---|---:|")
        print(f"| bare VACUUM INTO | {vacuum:.2f} |")
        print(f"| one-step backup-API copy | {backup:.2f} |")
        print(f"| restore (manage.py restore --yes, whole) | {took:.2f} |")
        print(f"| the restore's write lock held (its log) | {held:.2f} |")
        print(f"| longest wait of a writer during it | {pause:.2f} |")
        print()
        # Each round's pause against the same round's baseline, then the median of those.
        print(f"lock held / (VACUUM INTO + backup API): {held_ratio:.2f}x (target <= 1)")
        print(f"writer's longest wait / (VACUUM INTO + backup API): {pause_ratio:.2f}x")
        print(f"peak RSS of the restore: {rss:.0f} MB (target < 100)")
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
