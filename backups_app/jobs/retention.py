"""Retention: delete backups older than the configured number of days, never the newest one
nor the newest one this site made itself."""

import logging
from datetime import timedelta
from pathlib import Path

from backups_app.engine import backups

logger = logging.getLogger(__name__)


def purge_old_backups(folder, retention_days, now):
    """Delete the backups in `folder` older than `retention_days` at `now`; return their names.

    A backup's age is its file's modification time. The newest backup is always kept, however
    old, so a run of failing backups cannot leave none, and so is the newest backup the site
    made itself (not `uploaded`): an upload after a week of failing backups must not make the
    purge delete the last one of the site's own. With 0 days those two are the only ones kept.
    Files whose names do not match the backup pattern are never touched, except temporary
    files of backups whose process died, which are removed. Sidecars go with their backup.
    """
    folder = Path(folder)
    found = backups.list_backups(folder)  # newest first; only regular files with backup names
    cutoff = now - timedelta(days=retention_days)
    own = next((b for b in found if b.own), None)
    removed = []
    for backup in found[1:]:
        if backup is own or (retention_days and backup.modified >= cutoff):
            continue
        try:
            backups.delete_backup(backup.name, folder)
        except backups.BackupError:  # deleted meanwhile by hand or by another purge
            continue
        removed.append(backup.name)
    temp_files = backups.remove_abandoned_temp_files(folder)
    logger.info(
        "purged %d backup(s) older than %d day(s) from %s; kept %d; removed %d temporary file(s)",
        len(removed),
        retention_days,
        folder,
        len(found) - len(removed),
        temp_files,
        extra={
            "event": "purge",
            "removed": len(removed),
            "kept": len(found) - len(removed),
            "temp_files": temp_files,
        },
    )
    return removed


UPLOAD_LEFTOVER_AGE = timedelta(hours=6)


def remove_abandoned_uploads(folder, now):
    """Delete uploads a killed web worker left in the upload folder; return how many.

    Django deletes an upload's temporary file when its request ends, so only a worker that
    died mid-upload leaves one. A file not written to for hours belongs to no upload.
    """
    removed = 0
    try:
        entries = list(Path(folder).iterdir())
    except FileNotFoundError:
        return 0
    for path in entries:
        try:
            stat = path.lstat()
        except FileNotFoundError:
            continue
        if path.is_file() and now.timestamp() - stat.st_mtime > UPLOAD_LEFTOVER_AGE.total_seconds():
            path.unlink(missing_ok=True)
            removed += 1
    if removed:
        logger.info("removed %d abandoned upload(s) from %s", removed, folder)
    return removed
