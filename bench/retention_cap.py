"""The size cap with site files: what the purge reads, what deciding costs, what the page costs.

Run by hand: `python bench/retention_cap.py [BACKUPS] [FILES]` (defaults 400 and 10000). Builds,
in a temporary data folder, BACKUPS backups a day apart, each with its `.sha256` and a NAME.media
listing FILES site files (from one backup to the next 25 change, 5 appear, 5 go), and prints:

- the purge's one read of every list (retention/usage.measure), against reading them line by
  line as the clean-up did before (lists.read: the baseline, one run);
- `decide` with the cap and the site-file groups, against `decide` on the listing alone;
- the Backups page (GET, staff) with the cap on, its record parsed afresh for each request
  ("fresh") and parsed once, against the same page with no cap (the baseline).
Medians; the load average before and after.
"""

import os
import random
import shutil
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta

from _common import django_in_new_data_dir

BACKUPS = int(sys.argv[1]) if len(sys.argv) > 1 else 400
FILES = int(sys.argv[2]) if len(sys.argv) > 2 else 10000

tmp = django_in_new_data_dir("stanza-bench-cap-")

from django.conf import settings  # noqa: E402
from django.contrib.auth.models import User  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.test import Client  # noqa: E402

from backups_app.engine import backups  # noqa: E402
from backups_app.media import lists  # noqa: E402
from backups_app.retention import policy, purge, usage  # noqa: E402

NOW = datetime.now(UTC)


def median_ms(run, times=9):
    taken = []
    for _ in range(times):
        started = time.perf_counter()
        run()
        taken.append(time.perf_counter() - started)
    return statistics.median(taken) * 1000


def build(folder):
    rng = random.Random(1)
    serial = iter(range(10**9))

    def content():
        return f"{next(serial):064x}", rng.randrange(1000, 2_000_000)

    files = {f"uploads/{n // 100}/file-{n}.jpg".encode(): content() for n in range(FILES)}
    prefix = backups.name_prefix()
    (folder / "media").mkdir(mode=0o700, parents=True)
    for n in range(BACKUPS):
        when = NOW - timedelta(days=BACKUPS - n, hours=-1)
        name = f"{prefix}.{when:%Y%m%dT%H%M%SZ}.bak"
        path = folder / name
        path.write_bytes(b"\0" * 4096)
        (folder / (name + ".sha256")).write_text(f"{'0' * 64}  {name}\n")
        if n:
            for key in rng.sample(sorted(files), 25):  # 25 change
                files[key] = content()
            for key in list(files)[:5]:
                del files[key]
            for i in range(5):
                files[f"new/{n}/{i}.pdf".encode()] = content()
        with open(lists.list_path(path), "wb") as f:
            writer = lists.Writer(f)
            for rel, (sha, size) in files.items():
                writer.add(lists.Entry(rel, size, 0, 0o644, sha, 1))
            writer.close()
        os.utime(path, (when.timestamp(), when.timestamp()))


def main():
    print(f"load average {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f}")
    try:
        call_command("migrate", verbosity=0)
        User.objects.create_superuser("bench", password="bench-pass-1")
        folder = backups.backups_dir()
        started = time.perf_counter()
        build(folder)
        built = time.perf_counter() - started
        print(f"{BACKUPS} backups x {FILES} site files built in {built:.0f} s")
        found = backups.scan_backups(folder)

        started = time.perf_counter()
        for item in found:
            for _entry in lists.read(lists.list_path(folder / item.name)):
                pass
        baseline = time.perf_counter() - started
        measure_ms = median_ms(lambda: usage.measure(folder, found), times=3)
        measured = usage.measure(folder, found)
        print(
            f"\nreading every list: line by line {baseline:.2f} s (1.00x); the purge's one read "
            f"{measure_ms / 1000:.2f} s ({measure_ms / 1000 / baseline:.2f}x); "
            f"{len(measured.shared)} groups of objects, {len(measured.runs)} objects"
        )

        total = sum(i.size for i in measured.items) + sum(s.size for s in measured.shared)
        rules = policy.Rules(7, 16, 8, 4, 2, total // 2, "UTC")  # half of it fits
        plain = median_ms(lambda: policy.decide(found, NOW, rules))
        capped = median_ms(lambda: policy.decide(measured.items, NOW, rules, measured.shared))
        fates = policy.decide(measured.items, NOW, rules, measured.shared)
        print(
            f"decide, laravel-like with a cap at half: on the listing alone {plain:.2f} ms "
            f"(1.00x); with the site files {capped:.2f} ms ({capped / plain:.2f}x); "
            f"{sum(f.over_cap for f in fates)} over the cap"
        )
        usage.record(folder, measured)
        record = folder / "media" / usage.RECORD
        print(f"the purge's record: {record.stat().st_size / 1024:.0f} KB")

        client = Client(HTTP_HOST="localhost")
        client.force_login(User.objects.get(username="bench"))

        def page():
            assert client.get("/admin/backups/").status_code == 200

        def fresh_page():
            usage._read.clear()
            page()

        settings.STANZA_BACKUPS_MAX_MB = 0
        page()
        no_cap = median_ms(page)
        settings.STANZA_BACKUPS_MAX_MB = max(1, total // 2 // policy.MB)
        fresh = median_ms(fresh_page)
        warm = median_ms(page)
        fates_fresh = median_ms(lambda: (usage._read.clear(), purge.fates_by_name(found, NOW)))
        print(
            f"Backups page: no cap {no_cap:.1f} ms (1.00x); with the cap, record read afresh "
            f"{fresh:.1f} ms ({fresh / no_cap:.2f}x), parsed once {warm:.1f} ms "
            f"({warm / no_cap:.2f}x); the fates alone, afresh {fates_fresh:.1f} ms"
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"\nload average {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f}")


if __name__ == "__main__":
    main()
