"""Benchmark replication: lag from commit to restorable, and what Litestream costs the writer.

    .venv/bin/python bench/replication.py [--seconds 30] [--probes 30] [--workdir DIR]

One run, three phases on the same small WAL database, with bench/backup.py's writer (small
transactions, ~800 commits/s, synchronous=NORMAL) committing from another process:
1. no replication: the writer's commit latency;
2. Litestream replicating to a file replica (sync-interval 1s, as `manage.py replicate`
   configures it): the writer's commit latency, and meanwhile a prober commits a marker row,
   then restores the replica's latest state (`litestream restore`) until the marker is there:
   the lag from commit to restorable is the start of the first restore that held it;
3. no replication again (the machine may have changed meanwhile).
"""

import argparse
import json
import secrets
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.backup import Writer, latency_stats  # noqa: E402

LITESTREAM = Path(sys.executable).parent / "litestream"


def make_database(path):
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE writer_log (id INTEGER PRIMARY KEY, t REAL, note TEXT)")
    conn.execute("CREATE TABLE probe (id INTEGER PRIMARY KEY, token TEXT)")
    # A few MB of data, so the snapshot is not empty; kept small so a restore takes little
    # time next to the lag it measures.
    conn.execute(
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 20000) "
        "INSERT INTO writer_log (t, note) SELECT x, hex(randomblob(100)) FROM c"
    )
    conn.close()


def write_config(workdir, database):
    config = workdir / "litestream.yml"
    replica = {"type": "file", "path": str(workdir / "replica"), "sync-interval": "1s"}
    config.write_text(json.dumps({"dbs": [{"path": str(database), "replica": replica}]}))
    return config


def restore_has(config, database, out, token):
    out.unlink(missing_ok=True)
    subprocess.run(
        [str(LITESTREAM), "restore", "-config", str(config), "-o", str(out), str(database)],
        check=True,
        capture_output=True,
    )
    conn = sqlite3.connect(f"file:{out}?mode=ro", uri=True)
    try:
        return conn.execute("SELECT 1 FROM probe WHERE token = ?", (token,)).fetchone()
    finally:
        conn.close()
        for suffix in ("", "-wal", "-shm"):
            Path(f"{out}{suffix}").unlink(missing_ok=True)


def probe_lags(config, database, workdir, count, stop):
    """Commit a marker, then restore until it is there; the lags in seconds."""
    lags = []
    conn = sqlite3.connect(database, isolation_level=None, timeout=5)
    out = workdir / "probe-restore.sqlite"
    while len(lags) < count and not stop.is_set():
        token = secrets.token_hex(8)
        conn.execute("INSERT INTO probe (token) VALUES (?)", (token,))
        committed = time.monotonic()
        while not stop.is_set():
            started = time.monotonic()
            if restore_has(config, database, out, token):
                lags.append(started - committed)
                break
        time.sleep(0.3)
    conn.close()
    return lags


def phase(database, seconds, config=None, probes=0, workdir=None):
    litestream = None
    if config is not None:
        litestream = subprocess.Popen(
            [str(LITESTREAM), "replicate", "-config", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(3)  # its first snapshot
    writer = Writer(database)
    started = time.monotonic()
    stop = threading.Event()
    lags = []
    prober = None
    if probes:
        prober = threading.Thread(
            target=lambda: lags.extend(probe_lags(config, database, workdir, probes, stop))
        )
        prober.start()
    time.sleep(seconds)
    stop.set()
    if prober:
        prober.join()
    ended = time.monotonic()
    samples, errors = writer.stop()
    if litestream is not None:
        litestream.terminate()
        litestream.wait(15)
    stats = latency_stats(samples, [(started, ended)])
    stats["rate"] = stats["n"] / (ended - started)
    stats["errors"] = len(errors)
    return stats, lags


def percentile(values, fraction):
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * fraction))]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--probes", type=int, default=40)
    parser.add_argument("--workdir", type=Path)
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="stanza-bench-replication-"))
    workdir.mkdir(parents=True, exist_ok=True)
    database = workdir / "database.sqlite"
    if not database.exists():
        make_database(database)
    config = write_config(workdir, database)

    rows = [("no replication", *phase(database, args.seconds))]
    rows.append(
        ("Litestream replicating", *phase(database, args.seconds, config, args.probes, workdir))
    )
    rows.append(("no replication (again)", *phase(database, args.seconds)))

    print(f"\nwriter for {args.seconds:.0f} s per phase; database {database}")
    print(f"{'phase':<24} {'commits/s':>9} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7} {'errors':>6}")
    for name, stats, _lags in rows:
        print(
            f"{name:<24} {stats['rate']:>9.0f} {stats['p50']:>7.2f} {stats['p99']:>7.2f} "
            f"{stats['max']:>7.1f} {stats['errors']:>6}"
        )
    lags = rows[1][2]
    if lags:
        p50, p99 = percentile(lags, 0.5), percentile(lags, 0.99)
        print(
            f"\nlag from commit to restorable ({len(lags)} probes): "
            f"p50 {p50:.2f} s, p99 {p99:.2f} s, max {max(lags):.2f} s"
        )


if __name__ == "__main__":
    main()
