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

During phase 2 the health measurement `manage.py replicate` makes runs beside it (a
`positions.Tracker` beat every second instead of every 5 s): what one beat costs, and the lag
it reports. Then Litestream is stopped (SIGSTOP) for --stall seconds while the writer runs:
the lag reported at the end of the stall (it should be about the stall), and how long after
SIGCONT the reported lag is back under 5 s.
"""

import argparse
import json
import os
import secrets
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from backups_app.replication import positions  # noqa: E402
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


class Watch:
    """A Tracker beating every second beside the phase: beat durations and reported lags."""

    def __init__(self, database, config):
        self.tracker = positions.Tracker(database, config)
        self.beats, self.lags = [], []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run)
        self.thread.start()

    def run(self):
        while not self.stop.wait(1.0):
            started = time.monotonic()
            synced = self.tracker.beat()
            self.beats.append(time.monotonic() - started)
            self.lags.append(time.time() - synced if synced else None)

    def lag(self):
        return self.lags[-1] if self.lags else None

    def close(self):
        self.stop.set()
        self.thread.join()


def stall(litestream, watch, seconds):
    """SIGSTOP Litestream for `seconds`; the reported lag then, and the catch-up time."""
    os.kill(litestream.pid, signal.SIGSTOP)
    time.sleep(seconds)
    reported = watch.lag()
    os.kill(litestream.pid, signal.SIGCONT)
    resumed = time.monotonic()
    while time.monotonic() - resumed < 60:
        time.sleep(0.2)
        current = watch.lag()
        if current is not None and current < 5 and len(watch.lags) > 1:
            break
    return reported, time.monotonic() - resumed


def phase(database, seconds, config=None, probes=0, workdir=None, stall_for=0):
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
    watch = Watch(database, config) if config is not None else None
    time.sleep(seconds)
    stop.set()
    if prober:
        prober.join()
    ended = time.monotonic()
    steady = (list(watch.beats), list(watch.lags)) if watch else ([], [])
    stalled = stall(litestream, watch, stall_for) if watch and stall_for else None
    samples, errors = writer.stop()
    if watch is not None:
        watch.close()
    if litestream is not None:
        litestream.terminate()
        litestream.wait(15)
    stats = latency_stats(samples, [(started, ended)])
    stats["rate"] = stats["n"] / (ended - started)
    stats["errors"] = len(errors)
    stats["steady"] = steady  # the health beats' durations and lags before the stall
    stats["stalled"] = stalled
    return stats, lags


def percentile(values, fraction):
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * fraction))]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--probes", type=int, default=40)
    parser.add_argument("--stall", type=float, default=20)
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
        (
            "Litestream replicating",
            *phase(database, args.seconds, config, args.probes, workdir, args.stall),
        )
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
    steady_beats, steady_lags = rows[1][1]["steady"]
    beats = [b * 1000 for b in steady_beats]
    reported = [lag for lag in steady_lags if lag is not None]
    if beats and reported:
        print(
            f"health beat ({len(beats)} beats, one per second): "
            f"p50 {percentile(beats, 0.5):.1f} ms, max {max(beats):.1f} ms; "
            f"reported lag p50 {percentile(reported, 0.5):.2f} s, "
            f"p99 {percentile(reported, 0.99):.2f} s"
        )
    stalled = rows[1][1]["stalled"]
    if stalled:
        said, caught_up = stalled
        said = f"{said:.1f} s" if said is not None else "unknown"
        print(
            f"Litestream stopped (SIGSTOP) for {args.stall:.0f} s under the writer: reported "
            f"lag {said}; back under 5 s {caught_up:.1f} s after SIGCONT"
        )


if __name__ == "__main__":
    main()
