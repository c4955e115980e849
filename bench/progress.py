"""What showing a backup's progress costs: the `?progress` answer "Back up now" polls against
the Backups page itself, and a backup with its progress written beside the lock against the
same backup without.

    .venv/bin/python bench/progress.py [BACKUPS] [SITE_FILES]   # defaults 5000 and 20000

Builds a temporary data folder: a migrated database, BACKUPS backup files (sparse) and a site
files folder of SITE_FILES small files. Pages: the Django test client, one warm-up, then the
median of 21 requests while a backup holds the operation lock and reports a step. Backups: the
live database with its site files (unchanged since the first backup, as on most nights),
in turn without progress, as Back up now makes it, and with the progress file
alone (no count of the last backup's files), medians of 7. Prints medians and ratios.
"""

import os
import statistics
import sys
import time

from _common import django_in_new_data_dir

BACKUPS = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
SITE_FILES = int(sys.argv[2]) if len(sys.argv) > 2 else 20000

tmp = django_in_new_data_dir("stanza-bench-progress-")

from django.contrib.auth.models import User  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.test import Client  # noqa: E402

from backups_app.core import operations  # noqa: E402
from backups_app.engine import backups  # noqa: E402
from backups_app.jobs import actions  # noqa: E402


def median_ms(action, repeat):
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def main():
    call_command("migrate", verbosity=0)
    folder = backups.backups_dir()
    folder.mkdir(parents=True, exist_ok=True)
    for n in range(BACKUPS):
        name = f"database.sqlite.2026{1 + n // 2000:02d}{1 + n % 28:02d}T{n % 24:02d}0000Z-{n}.bak"
        with open(folder / name, "wb") as f:
            f.truncate(100_000)
    media = tmp / "media"
    for n in range(SITE_FILES):
        sub = media / f"uploads-{n % 100:02d}"
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"file-{n}.bin").write_bytes(n.to_bytes(4, "big") * 256)
    User.objects.create_superuser("bench", password="bench-password-1")
    client = Client(HTTP_HOST="localhost")
    client.force_login(User.objects.get(username="bench"))

    def page():
        assert client.get("/admin/backups/").status_code == 200

    def progress():
        answer = client.get("/admin/backups/?progress", HTTP_ACCEPT="application/json")
        assert answer.json()["running"] is True

    with (
        operations.exclusive("backup", by="bench") as holder,
        operations.reporting(holder, last_files=SITE_FILES) as report,
    ):
        report("files", SITE_FILES // 2, 0, 123_456_789)
        time.sleep(1)  # written
        page()
        progress()
        page_ms = median_ms(page, 21)
        progress_ms = median_ms(progress, 21)
    print(f"{BACKUPS} backups listed; while a backup runs:")
    print(f"  Backups page            {page_ms:8.1f} ms")
    ratio = progress_ms / page_ms
    print(f"  ?progress (JSON)        {progress_ms:8.1f} ms   {ratio:.3f}x the page")

    actions.backup_locked(by="bench")  # the first: every site file read and stored
    plain, reported = [], []

    def without():
        with operations.exclusive("backup", by="bench"):
            backups.create_backup()

    def with_progress():
        actions.backup_locked(by="bench")

    def with_file_only():
        with (
            operations.exclusive("backup", by="bench") as holder,
            operations.reporting(holder) as report,
        ):
            backups.create_backup(progress=report)

    file_only = []
    for _ in range(7):
        plain.append(median_ms(without, 1))
        reported.append(median_ms(with_progress, 1))
        file_only.append(median_ms(with_file_only, 1))
    a, b = statistics.median(plain), statistics.median(reported)
    count_ms = median_ms(actions.last_files_count, 5)  # the folder changed: read afresh
    print(f"a backup with {SITE_FILES} unchanged site files (medians of 7, in turn):")
    print(f"  without progress        {a:8.1f} ms")
    print(f"  with progress written   {b:8.1f} ms   {b / a:.3f}x")
    c = statistics.median(file_only)
    print(f"  the progress file alone {c:8.1f} ms   {c / a:.3f}x")
    print(f"  the last files count    {count_ms:8.1f} ms (the listing, then one manifest)")
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
