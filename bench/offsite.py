"""Benchmark the copy-offsite job against boto3's own upload_file, on a local S3 server.

    .venv/bin/python bench/offsite.py [--size 1000] [--repeat 3] [--workdir DIR]

Reuses bench/backup.py's database (about 1 GB, cached in --workdir) and backs it up once into a
data folder of its own. Starts moto's S3 server on a free loopback port, then, --repeat times
and in alternating order, uploads that backup with: boto3's `upload_file` (its defaults: 8 MB
parts, 10 threads), `manage.py runjob copy-offsite`, and the same job encrypting with age.
Each runs in a child process whose wall time and peak RSS (from wait4) are recorded; every
object is deleted after each run. Prints medians and ratios. Targets: the job within 1.2x
`upload_file`, peak RSS under 150 MB.
"""

import argparse
import os
import socket
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import run_child  # noqa: E402 -- the shared child-process timer
from backup import build_database  # noqa: E402 -- bench/backup.py's cached database

REPO_DIR = Path(__file__).resolve().parent.parent
MANAGE = REPO_DIR / "manage.py"
PYTHON = sys.executable
AWS = {
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench",
    "AWS_DEFAULT_REGION": "us-east-1",
}
UPLOAD_FILE = """
import sys, boto3
boto3.client("s3").upload_file(sys.argv[1], sys.argv[2], sys.argv[3])
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_moto(workdir):
    port = free_port()
    log = open(workdir / "moto.log", "wb")  # noqa: SIM115 -- lives as long as the server
    moto = Path(PYTHON).with_name("moto_server")
    process = subprocess.Popen(
        [str(moto), "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=log
    )
    for _ in range(300):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return process, f"http://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.1)
    process.kill()
    sys.exit("moto_server did not start; see moto.log")


def timed(args, env):
    """(seconds, peak RSS in MB) of a child process; the bench stops when it fails."""
    seconds, rss, _stderr = run_child(args, env=env, stdout=subprocess.DEVNULL)
    return seconds, rss


BENCH_BACKUP = "database.sqlite.20261127T000000Z.bak"


def make_backup(workdir, db):
    """The data folder holding one backup of `db` (made once) and a migrated database."""
    data = workdir / f"offsite-data-{db.stat().st_size // 1_000_000}mb"
    backups_dir = data / "backups"
    backups_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "STANZA_DATA_DIR": str(data)}
    backup = backups_dir / BENCH_BACKUP
    if not backup.exists():
        print("backing up the bench database (once)...", file=sys.stderr, flush=True)
        subprocess.run(
            [
                PYTHON,
                MANAGE,
                "backup",
                "--data-dir",
                str(db.parent),
                "--output",
                str(backup),
            ],
            env=env,
            check=True,
            capture_output=True,
        )
    subprocess.run([PYTHON, MANAGE, "migrate", "--no-input", "-v0"], env=env, check=True)
    for other in backups_dir.iterdir():  # e.g. migrate's pre-migrate backup: not measured
        if not other.name.startswith(BENCH_BACKUP):
            other.unlink()
    return data, backup


def age_recipient():
    from pyrage import x25519

    return str(x25519.Identity.generate().to_public())


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/stanza-bench"))
    parser.add_argument("--size", type=int, default=1000, help="database size in MB")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    folder = args.workdir / f"db-{args.size}mb"
    folder.mkdir(parents=True, exist_ok=True)
    db = build_database(folder / "database.sqlite", args.size)
    data, backup = make_backup(args.workdir, db)
    moto, endpoint = start_moto(args.workdir)
    import boto3

    s3 = boto3.client(
        "s3",
        endpoint_url=endpoint,
        **{k.lower(): v for k, v in AWS.items() if k != "AWS_DEFAULT_REGION"},
        region_name="us-east-1",
    )
    bucket = "stanza-bench"
    s3.create_bucket(Bucket=bucket)
    base = {**os.environ, **AWS, "AWS_ENDPOINT_URL": endpoint, "STANZA_DATA_DIR": str(data)}
    base.pop("DJANGO_SETTINGS_MODULE", None)
    recipient = age_recipient()

    def upload_file(tag):
        return timed([PYTHON, "-c", UPLOAD_FILE, str(backup), bucket, f"{tag}/{backup.name}"], base)

    def job(tag, encrypted=False):
        env = {**base, "STANZA_OFFSITE_URL": f"s3://{bucket}/{tag}"}
        if encrypted:
            env["STANZA_OFFSITE_AGE_RECIPIENTS"] = recipient
        return timed([PYTHON, MANAGE, "runjob", "copy-offsite"], env)

    methods = {
        "boto3 upload_file": upload_file,
        "copy-offsite": job,
        "copy-offsite, age-encrypted": lambda tag: job(tag, encrypted=True),
    }
    results = {name: [] for name in methods}
    try:
        for round_ in range(args.repeat):
            order = list(methods) if round_ % 2 == 0 else list(reversed(methods))
            for name in order:
                tag = uuid.uuid4().hex[:8]
                results[name].append(methods[name](tag))
                for item in s3.list_objects_v2(Bucket=bucket, Prefix=tag + "/").get("Contents", []):
                    s3.delete_object(Bucket=bucket, Key=item["Key"])
                print(
                    f"  {name}: {results[name][-1][0]:.2f} s, {results[name][-1][1]:.0f} MB",
                    file=sys.stderr,
                )
    finally:
        moto.terminate()
        moto.wait()

    size_mb = backup.stat().st_size / 1e6
    baseline = statistics.median(s for s, _ in results["boto3 upload_file"])
    print(
        f"# bench/offsite.py: {os.cpu_count()} cores, a {size_mb:.0f} MB backup to moto_server "
        f"on loopback, medians of {args.repeat} runs"
    )
    print("| method | time | vs upload_file | MB/s | peak RSS |")
    print("|---|---|---|---|---|")
    for name, runs in results.items():
        seconds = statistics.median(s for s, _ in runs)
        rss = max(r for _, r in runs)
        ratio = seconds / baseline
        print(
            f"| {name} | {seconds:.2f} s | {ratio:.2f}x | {size_mb / seconds:.0f} | {rss:.0f} MB |"
        )


if __name__ == "__main__":
    main()
