"""Benchmark recording and restoring the site's files (issue 20) against cp -a and
django-dbbackup's mediabackup, on a generated tree of 10,000 files (~1 GB, mixed sizes).

    .venv/bin/python bench/media.py [--workdir DIR] [--files 10000] [--rss-files 100000]

Each step runs in a child process (peak RSS from wait4). The tree is made once (cached in the
workdir); django-dbbackup runs from the venv bench/backup.py makes there. Prints times, ratios
against the baselines of the same run, bytes written, and the load average.
"""

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from backup import PYTHON, dbbackup_python, run_child  # noqa: E402

REPO = Path(__file__).resolve().parent.parent

# The children time their own work too ("work"): the files' part of a backup or restore runs
# inside a process that is already up (a job, a command), so that is what the targets compare.
RECORD = """
import json, sys, time
sys.path.insert(0, {repo!r})
from backups_app.media import record
media, backups, last, out = sys.argv[1:5]
started = time.monotonic()
with open(out, "wb") as f:
    summary = record.record_files(media, backups, f, last_list=last or None)
print(json.dumps({{**summary.as_manifest(), "work": time.monotonic() - started}}))
"""
RESTORE = """
import json, sys, time
sys.path.insert(0, {repo!r})
from backups_app.media import put_back
listed, backups, target = sys.argv[1:4]
started = time.monotonic()
put_back.put_back(listed, backups, target)
print(json.dumps({{"work": time.monotonic() - started}}))
"""
MEDIABACKUP_SETTINGS = """
import os
SECRET_KEY = "bench"
USE_TZ = True
INSTALLED_APPS = ["dbbackup"]
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}
MEDIA_ROOT = os.environ["BENCH_MEDIA"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "dbbackup": {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": os.environ["BENCH_OUT"]},
    },
}
"""


def make_tree(root, files, *, total_mb=None, seed=20):
    """A tree of `files` files in nested folders; mixed sizes totalling about `total_mb`."""
    if (root / ".done").exists():
        return
    shutil.rmtree(root, ignore_errors=True)
    rng = random.Random(seed)
    print(f"generating {files} files in {root} (once)...", file=sys.stderr, flush=True)
    for n in range(files):
        if total_mb is None:
            size = 100
        else:  # 90% small (1-64 KB), 9% medium (64 KB-1 MB), 1% large (4-12 MB): ~1 GB
            kind = rng.random()
            if kind < 0.90:
                size = rng.randint(1024, 64 * 1024)
            elif kind < 0.99:
                size = rng.randint(64 * 1024, 1024 * 1024)
            else:
                size = rng.randint(4 * 1024 * 1024, 12 * 1024 * 1024)
        folder = root / f"d{n % 97:02d}" / f"e{n % 13}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"file-{n}.bin").write_bytes(os.urandom(size))
    (root / ".done").write_text("")
    time.sleep(2.1)  # older than record.FRESH_NS: the stat cache may trust every file


def du(path):
    total = 0
    for folder, _dirs, names in os.walk(path):
        for name in names:
            total += os.lstat(os.path.join(folder, name)).st_size
    return total


def record_once(media, store_dir, last, out):
    os.sync()  # no earlier step's writes in this one's time (each step starts with none dirty)
    script = RECORD.format(repo=str(REPO))
    before = du(store_dir)
    proc_out = out.with_suffix(".stdout")
    with open(proc_out, "w") as f:
        t, rss, _ = run_child(
            [PYTHON, "-c", script, str(media), str(store_dir), last, str(out)], stdout=f
        )
    summary = json.loads(proc_out.read_text())
    written = du(store_dir) - before + out.stat().st_size
    return {"time": t, "rss": rss, "written": written, **summary}


def cp_a(source, dest, *, sync=False):
    shutil.rmtree(dest, ignore_errors=True)
    os.sync()  # no earlier step's writes in this one's time
    command = ["sh", "-c", 'cp -a "$0" "$1" && sync', str(source), str(dest)]
    t, rss, _ = run_child(command if sync else ["cp", "-a", str(source), str(dest)])
    return {"time": t, "rss": rss, "written": du(dest)}


def mediabackup(python, workdir, media, out_dir, name):
    os.sync()
    out_dir.mkdir(exist_ok=True)
    (workdir / "mediabackup_bench_settings.py").write_text(MEDIABACKUP_SETTINGS)
    env = {
        "PYTHONPATH": str(workdir),
        "DJANGO_SETTINGS_MODULE": "mediabackup_bench_settings",
        "BENCH_MEDIA": str(media),
        "BENCH_OUT": str(out_dir),
    }
    args = [str(python), "-m", "django", "mediabackup", "--noinput", "-o", name]
    t, rss, _ = run_child(args, env=env, stdout=subprocess.DEVNULL)
    return {"time": t, "rss": rss, "written": (out_dir / name).stat().st_size}


def restore_files(listed, store_dir, target):
    shutil.rmtree(target, ignore_errors=True)
    os.sync()
    script = RESTORE.format(repo=str(REPO))
    proc_out = target.with_suffix(".stdout")
    with open(proc_out, "w") as f:
        command = [PYTHON, "-c", script, str(listed), str(store_dir), str(target)]
        t, rss, _ = run_child(command, stdout=f)
    work = json.loads(proc_out.read_text())["work"]
    return {"time": t, "work": work, "rss": rss, "written": du(target)}


def same_tree(a, b):
    result = subprocess.run(["diff", "-r", "-q", str(a), str(b)], capture_output=True)
    return result.returncode == 0


def mb(n):
    return f"{n / 1024 / 1024:.1f} MB"


def say(text):
    print(f"- {text}")


def line(name, r):
    work = f"{r['work']:.2f} s" if "work" in r else ""
    print(f"| {name} | {r['time']:.2f} s | {work} | {r['rss']:.0f} MB | {mb(r['written'])} |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/stanza-bench"))
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--rss-files", type=int, default=100_000)
    args = parser.parse_args()
    work = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    media = work / f"media-{args.files}"
    make_tree(media, args.files, total_mb=1000)
    python = dbbackup_python(work)
    runs = work / "media-runs"
    shutil.rmtree(runs, ignore_errors=True)
    runs.mkdir()
    store_dir = runs / "backups"
    store_dir.mkdir()
    print(f"load average before: {os.getloadavg()}")
    print(f"tree: {args.files} files, {mb(du(media))}\n")

    results = {}
    cp_a(media, runs / "cp-copy")  # warm-up: every step reads the tree from the page cache
    subprocess.run(["cat", *[str(p) for p in media.rglob("*.bin")][:0]])  # nothing: page cache
    results["cp -a"] = cp_a(media, runs / "cp-copy")
    results["cp -a + sync"] = cp_a(media, runs / "cp-copy", sync=True)
    results["first"] = record_once(media, store_dir, "", runs / "1.media")
    results["second"] = record_once(media, store_dir, str(runs / "1.media"), runs / "2.media")
    changed = next(media.rglob("file-5.bin"))
    changed.write_bytes(os.urandom(changed.stat().st_size))
    time.sleep(2.1)  # past record.FRESH_NS, so the next run trusts the other files' stat
    results["one changed"] = record_once(media, store_dir, str(runs / "2.media"), runs / "3.media")
    results["fourth"] = record_once(media, store_dir, str(runs / "3.media"), runs / "4.media")
    results["mediabackup 1"] = mediabackup(python, work, media, runs / "dbb", "m1.tar")
    results["mediabackup 2"] = mediabackup(python, work, media, runs / "dbb", "m2.tar")
    results["restore"] = restore_files(runs / "4.media", store_dir, runs / "restored")
    results["cp -a (restore)"] = cp_a(media, runs / "cp-copy")
    exact = same_tree(media, runs / "restored")

    print("| step | process | its work | peak RSS | new disk |\n|---|---:|---:|---:|---:|")
    steps = ("cp -a", "cp -a + sync", "first", "second", "one changed")
    for name in (*steps, "mediabackup 1", "mediabackup 2"):
        line(name, results[name])
    line("restore (put_back)", results["restore"])
    line("cp -a (again, restore baseline)", results["cp -a (restore)"])
    first, second, one = results["first"], results["second"], results["one changed"]
    dbb1, dbb2 = results["mediabackup 1"], results["mediabackup 2"]
    cp = results["cp -a"]["time"]
    cp_again = results["cp -a (restore)"]["time"]
    print()
    say(f"first backup's files / cp -a: {first['work'] / cp:.2f}x (target <= 1.3)")
    say(f"  (the whole child process, interpreter start included: {first['time'] / cp:.2f}x)")
    synced = results["cp -a + sync"]["time"]
    say(
        f"  (against cp -a then sync, as the objects are on disk before a list names them: "
        f"{first['work'] / synced:.2f}x)"
    )
    say(
        f"second backup, nothing changed: {second['work']:.2f} s (target < 2 s), "
        f"files read {second['read']}, new bytes {second['new_bytes']}"
    )
    say(f"one file changed: files read {one['read']} (target 1), new bytes {one['new_bytes']}")
    say(f"mediabackup first / ours first: {dbb1['time'] / first['time']:.2f}x (target > 1)")
    say(f"mediabackup second / ours second: {dbb2['time'] / second['time']:.1f}x (target >= 20)")
    ratio = dbb2["written"] / max(1, second["written"])
    say(f"mediabackup second's new disk / ours: {ratio:.0f}x (target >= 50)")
    restored = results["restore"]["work"] / cp_again
    say(f"restore / cp -a: {restored:.2f}x (target <= 1.5); identical tree: {exact}")
    say(f"  (the whole child process: {results['restore']['time'] / cp_again:.2f}x)")

    rss_media = work / f"media-{args.rss_files}"
    make_tree(rss_media, args.rss_files)
    rss_store = runs / "rss-backups"
    rss_store.mkdir()
    big1 = record_once(rss_media, rss_store, "", runs / "r1.media")
    big2 = record_once(rss_media, rss_store, str(runs / "r1.media"), runs / "r2.media")
    for name, r in (("first", big1), ("second (stat cache)", big2)):
        say(
            f"{args.rss_files} files, {name}: {r['time']:.2f} s, peak RSS {r['rss']:.0f} MB "
            f"(target < 100), files read {r['read']}"
        )
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
