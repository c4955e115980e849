"""How long retention takes to decide, against the listing it decides on.

Run by hand: `python bench/retention.py [BACKUP_FILES ...]` (default 1000 5000 20000). For each
count it makes that many empty backups (one every 6 hours, back in time) in a temporary folder
and prints medians of 9 runs: the folder's listing (`scan_backups`, what the purge and the
Backups page read first: the baseline), `decide` with the seed's rule (7 days), with the
laravel-like rules (7 days, 16 daily, 8 weekly, 4 monthly, 2 yearly, 5000 MB cap) in UTC and in
Europe/Paris, and the ratio of each to the listing.
"""

import os
import shutil
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta

from _common import django_in_new_data_dir

COUNTS = [int(a) for a in sys.argv[1:]] or [1000, 5000, 20000]

tmp = django_in_new_data_dir("stanza-bench-retention-")

from backups_app.engine import backups  # noqa: E402
from backups_app.retention import policy  # noqa: E402

NOW = datetime.now(UTC)
RULES = {
    "seed (7 days)": policy.Rules(7),
    "laravel-like, UTC": policy.Rules(7, 16, 8, 4, 2, 5000 * policy.MB, "UTC"),
    "laravel-like, Europe/Paris": policy.Rules(7, 16, 8, 4, 2, 5000 * policy.MB, "Europe/Paris"),
}


def median_ms(run, times=9):
    taken = []
    for _ in range(times):
        started = time.perf_counter()
        run()
        taken.append(time.perf_counter() - started)
    return statistics.median(taken) * 1000


def make_folder(count):
    folder = tmp / f"backups-{count}"
    folder.mkdir()
    prefix = backups.name_prefix()
    for n in range(count):
        when = NOW - timedelta(hours=6 * n)
        path = folder / f"{prefix}.{when:%Y%m%dT%H%M%SZ}.bak"
        path.touch()
        os.utime(path, (when.timestamp(), when.timestamp()))
    return folder


def main():
    print(f"load average {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f}")
    try:
        for count in COUNTS:
            folder = make_folder(count)
            listed = backups.scan_backups(folder)
            base = median_ms(lambda folder=folder: backups.scan_backups(folder))
            print(f"\n{count} backups: listing the folder {base:.2f} ms (1.00x)")
            for label, rules in RULES.items():
                taken = median_ms(
                    lambda rules=rules, listed=listed: policy.decide(listed, NOW, rules)
                )
                print(f"  decide, {label}: {taken:.2f} ms ({taken / base:.2f}x the listing)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"\nload average {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f}")


if __name__ == "__main__":
    main()
