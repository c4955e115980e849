"""Time /healthz and the Backups page while the offsite store hangs (a listener on loopback that
accepts every connection and never answers) and the newest backup is two hours old.

    .venv/bin/python bench/request_path.py [--tree DIR] [--repeat 3] [--closed | --off]

Nothing on a request may wait for the store: both should take milliseconds. `--tree DIR`
measures another checkout of the project (an older commit in a `git worktree`, say) with the
same script, for a before/after; `--closed` points at a port where nothing listens instead (a
stopped store), `--off` turns offsite copies off (the same pages without any store, to tell
what the machine's load costs from what the store does). Each measurement runs in a child
process with Django's test client against a freshly migrated data folder; the times are
medians.
"""

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent

CHILD = r"""
import json, os, sys, time
import django
django.setup()
from django.core.management import call_command
from django.contrib.auth import get_user_model
from django.test import Client
from backups_app.engine import backups

call_command("migrate", "--no-input", verbosity=0)
user = get_user_model().objects.create_superuser("bench", "b@example.com", "bench-password")
backup = backups.create_backup(label="manual")
old = time.time() - 2 * 3600
os.utime(backup.path, (old, old))
client = Client()
client.force_login(user)
times = {"/healthz": [], "/admin/backups/": []}
for _ in range(int(sys.argv[1])):
    for path in times:
        started = time.perf_counter()
        status = client.get(path).status_code
        times[path].append((time.perf_counter() - started, status))
print(json.dumps(times))
"""


def hanging_listener():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    held = []

    def serve():
        while True:
            try:
                held.append(server.accept()[0])
            except OSError:
                return

    threading.Thread(target=serve, daemon=True).start()
    return server, held


def closed_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", type=Path, default=HERE)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--closed", action="store_true")
    parser.add_argument("--off", action="store_true")
    args = parser.parse_args()
    server, held = hanging_listener()
    port = closed_port() if args.closed else server.getsockname()[1]
    with tempfile.TemporaryDirectory(prefix="stanza-bench-") as folder:
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "stanza_site.settings",
            "DJANGO_ALLOWED_HOSTS": "testserver",
            "DJANGO_SECRET_KEY": "bench",
            "STANZA_DATA_DIR": folder,
            "STANZA_OFFSITE_URL": "s3://stanza-bench/site",
            "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
            "AWS_ACCESS_KEY_ID": "bench",
            "AWS_SECRET_ACCESS_KEY": "bench",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
        if args.off:
            del env["STANZA_OFFSITE_URL"]
        result = subprocess.run(
            [sys.executable, "-c", CHILD, str(args.repeat)],
            cwd=args.tree,
            env=env,
            capture_output=True,
            text=True,
        )
    if result.returncode != 0:
        sys.exit(result.stderr[-3000:])
    times = json.loads(result.stdout.strip().splitlines()[-1])
    store = "a closed port" if args.closed else "a listener that never answers"
    store = "none (offsite copies off)" if args.off else store
    print(f"# bench/request_path.py: {args.tree}, store: {store}, load {os.getloadavg()[0]:.2f}")
    for path, samples in times.items():
        median = statistics.median(seconds for seconds, _status in samples)
        statuses = sorted({status for _seconds, status in samples})
        print(f"{path:<18} median {median * 1000:10.1f} ms over {len(samples)} ({statuses})")
    print(f"connections the store accepted: {len(held)}")
    server.close()


if __name__ == "__main__":
    main()
