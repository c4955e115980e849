"""Benchmark a hung Litestream under `manage.py replicate`: how soon it is restarted, caught up.

    .venv/bin/python bench/replication_hang.py [--limit 15] [--runs 3] [--workdir DIR]

`manage.py replicate` runs for bench/replication.py's small WAL database with
STANZA_REPLICA_MAX_LAG=--limit, while bench/backup.py's writer (~800 commits/s) commits from
another process. Each run stops Litestream with SIGSTOP and times, from the status file that
`replicate` writes (what health reads): when a new Litestream runs, and when the replica holds
every commit made before that restart. Medians of --runs; the writer's commit latency and
errors over the whole time (SIGSTOP, restart and catch-up included); the log's hang lines.
"""

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.backup import Writer, latency_stats  # noqa: E402
from bench.replication import make_database, percentile  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def status_of(data):
    try:
        return json.loads((data / ".stanza-replica" / "status.json").read_text())
    except (OSError, ValueError):
        return {}


def synced_at(record):
    text = record.get("synced_through")
    return datetime.fromisoformat(text).timestamp() if text else 0.0


def wait_for(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise SystemExit(f"gave up after {timeout:.0f} s waiting for {what}")


def hang_once(data, limit):
    """SIGSTOP the running Litestream; (seconds to a new one, seconds from it to caught up)."""
    record = status_of(data)
    hung = record["litestream_pid"]
    stopped = time.time()
    os.kill(hung, signal.SIGSTOP)
    try:
        wait_for(
            lambda: (
                (r := status_of(data)).get("litestream_pid") not in (None, hung)
                and r.get("litestream_running")
            ),
            limit + 60,
            "a new Litestream",
        )
    finally:
        with contextlib.suppress(ProcessLookupError):  # replicate ended it: the point
            os.kill(hung, signal.SIGCONT)
    restarted = time.time()
    wait_for(lambda: synced_at(status_of(data)) >= restarted, 120, "the replica to catch up")
    return restarted - stopped, time.time() - restarted


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=15, help="STANZA_REPLICA_MAX_LAG")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workdir", type=Path)
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="stanza-bench-hang-"))
    data = workdir / "data"
    data.mkdir(parents=True, exist_ok=True)
    database = data / "database.sqlite"
    if not database.exists():
        make_database(database)
    env = {
        **os.environ,
        "STANZA_DATA_DIR": str(data),
        "STANZA_REPLICA_URL": f"file://{workdir / 'replica'}",
        "STANZA_REPLICA_MAX_LAG": str(args.limit),
    }
    env.pop("DJANGO_SETTINGS_MODULE", None)
    log_path = workdir / "replicate.log"
    with open(log_path, "ab") as log:
        replicate = subprocess.Popen(
            [sys.executable, "manage.py", "replicate"],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    writer = Writer(database)
    began = time.monotonic()
    runs = []
    try:
        started = time.time()
        wait_for(
            lambda: (r := status_of(data)).get("replica_txid") and synced_at(r) >= started,
            60,
            "the first sync",
        )
        for _ in range(args.runs):
            runs.append(hang_once(data, args.limit))
            time.sleep(5)
    finally:
        samples, errors = writer.stop()
        replicate.send_signal(signal.SIGTERM)
        replicate.wait(60)
    stats = latency_stats(samples, [(began, time.monotonic())])
    restarts = [r for r, _ in runs]
    catch_ups = [c for _, c in runs]
    lines = [line for line in log_path.read_text().splitlines() if "hung or stopped" in line]
    print(f"\nSTANZA_REPLICA_MAX_LAG={args.limit}; {len(runs)} SIGSTOPs under the writer")
    print(
        f"new Litestream after SIGSTOP: median {percentile(restarts, 0.5):.1f} s "
        f"(min {min(restarts):.1f}, max {max(restarts):.1f}); "
        f"x limit {percentile(restarts, 0.5) / args.limit:.2f}"
    )
    print(
        f"replica caught up after the restart: median {percentile(catch_ups, 0.5):.1f} s "
        f"(max {max(catch_ups):.1f}; the status file is rewritten every 5 s)"
    )
    print(
        f"writer: {stats['n'] / (time.monotonic() - began):.0f} commits/s, p50 "
        f"{stats['p50']:.2f} / p99 {stats['p99']:.2f} / max {stats['max']:.1f} ms, "
        f"{len(errors)} errors"
    )
    print(f"log lines about the hang: {len(lines)}; e.g. {lines[0] if lines else '-'}")
    print("load average at the end: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))


if __name__ == "__main__":
    main()
