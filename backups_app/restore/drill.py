"""Restore drills: prove that the newest backup restores, and still holds what it held.

Beside each backup a manifest `NAME.json` records the row count of every table at backup
time. The drill (`verify-latest-backup`) restores the newest backup into a scratch file,
checks it, counts its rows again, compares, and writes its verdict into the manifest. A drill
of the backups folder also records its verdict, the backup's size and how long the restore
took as a `DrillRun`: what health, the pages and /metrics read as "the last drill" (the
recovery time), whatever number of backups the folder holds.
"""

import logging
import time
from datetime import timedelta
from typing import NamedTuple

from django.utils import timezone

from backups_app.engine import backups
from backups_app.engine.backups import BackupError, read_manifest, write_manifest
from backups_app.media import checks as media_checks
from backups_app.models import DrillRun
from backups_app.restore import restore

logger = logging.getLogger(__name__)

# Drill records older than this are deleted when a drill is recorded (one a night).
DRILL_HISTORY = timedelta(days=90)


class DrillError(BackupError):
    """The newest backup did not pass its restore drill."""


# --- manifests ----------------------------------------------------------------------------


def drill_result(backup):
    """The last drill of a backup: {"at", "ok", "problems"}, or None when none ran."""
    manifest = read_manifest(getattr(backup, "path", backup))
    drill = manifest.get("drill") if manifest else None
    return drill if isinstance(drill, dict) else None


class Drills(NamedTuple):
    """The drills of the backups folder that the pages, health and /metrics read."""

    last: DrillRun | None  # the most recent drill: its verdict is the health verdict's
    passed: DrillRun | None  # the most recent that passed: the recovery time


def recent_drills():
    """The last drill of the backups folder, and the last that passed: one query."""
    return Drills(*DrillRun.objects.recent())


# --- the drill ----------------------------------------------------------------------------


def backup_to_drill(listed):
    """The newest backup this site made itself: any label but `uploaded` (pre-restore and
    pre-migrate copies are this site's data too), else None. An upload is checked when it
    arrives; the drill proves that the site's own backups restore."""
    return next((b for b in listed if b.own), None)


def verify_latest_backup(folder=None):
    """Drill the newest backup the site made; return a one-line result, DrillError if it fails.

    Without `folder` (the backups folder), the verdict is also recorded as a DrillRun; a drill
    of another folder (the offsite drill's fetched copy) writes its manifest only.
    """
    listed = backups.list_backups(folder)
    backup = backup_to_drill(listed)
    if backup is None:
        raise DrillError("no backup to verify" + (" (only uploaded ones)" if listed else ""))
    started = time.monotonic()
    problems, notes, counts = _drill(backup)
    if folder is None:  # the backups folder's own store (an offsite drill fetched the backup)
        media_checks.check_into(backup.path, backup.path.parent, problems, notes)
    seconds = time.monotonic() - started
    result = {"at": timezone.now().isoformat(), "ok": not problems, "problems": problems}
    write_manifest(backup.path, drill=result)
    if folder is None:
        record_drill(backup, problems, seconds if counts else None)
    if not problems:
        backups.record_check(backup.path, "full", by="drill")
    if problems:
        logger.error(
            "restore drill of %s failed: %s",
            backup.name,
            "; ".join(problems),
            extra={"event": "drill", "file": backup.name, "ok": False},
        )
        raise DrillError(f"restore drill of {backup.name} failed: {'; '.join(problems)}")
    logger.info(
        "restore drill of %s passed",
        backup.name,
        extra={"event": "drill", "file": backup.name, "ok": True},
    )
    summary = f"{backup.name}: restored, integrity ok, {len(counts)} tables, "
    summary += f"{sum(counts.values())} rows"
    return summary + "".join(f"; {note}" for note in notes)


def record_drill(backup, problems, seconds):
    """Record a drill of the backups folder: the last drill is then one row away."""
    now = timezone.now()
    DrillRun.objects.filter(finished_at__lt=now - DRILL_HISTORY).delete()
    return DrillRun.objects.create(
        backup_name=backup.name,
        backup_size=backup.size,
        finished_at=now,
        ok=not problems,
        problems="\n".join(" ".join(str(p).split()) for p in problems),
        restore_seconds=seconds,
    )


def _drill(backup):
    """(problems, notes, counts) of restoring one backup into a scratch database."""
    problems, notes = [], []
    path = backup.path
    expected = (read_manifest(path) or {}).get("tables")
    engine = backups.database_engine()
    try:
        with restore.opened_backup(path, scratch_dir=path.parent) as (info, plain):
            if engine.CHECKS_WHILE_RESTORING:  # the full check just now was that restore
                problems, counts = [], dict(info.row_counts)
            else:
                problems, counts = engine.restore_scratch(plain, path.parent)
    except BackupError as err:
        return [str(err)], notes, {}
    if problems:
        return problems, notes, counts
    if not info.checksum_verified:
        notes.append("no .sha256 checksum to compare")
    if isinstance(expected, dict):
        problems.extend(_compare_counts(expected, counts))
    else:
        write_manifest(path, counts)
        notes.append("no row counts were recorded at backup time; recorded them now")
    return problems, notes, counts


def _compare_counts(expected, counts):
    problems = []
    for table in sorted(set(expected) | set(counts)):
        if table not in counts:
            problems.append(f"table {table} is missing")
        elif table not in expected:
            problems.append(f"table {table} was not there at backup time")
        elif counts[table] != expected[table]:
            problems.append(
                f"table {table} has {counts[table]} rows, {expected[table]} at backup time"
            )
    return problems
