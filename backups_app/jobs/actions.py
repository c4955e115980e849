"""What the dashboard's buttons start beside the scheduled jobs: a backup under the operation
lock with its progress written beside the lock (Back up now, and the daily job), and deleting
an offsite copy in a background run recorded in the history (job "delete-offsite"), so that
no answer waits on the store.
"""

import logging
import threading
import traceback

from django import db

from backups_app.audit import DELETION, audit
from backups_app.core import failures, operations
from backups_app.engine import backups
from backups_app.models import CronRun
from backups_app.offsite import purge as offsite_purge

logger = logging.getLogger(__name__)

DELETE_OFFSITE = "delete-offsite"  # in jobs.PSEUDO_JOBS: recorded, never scheduled


def backup_locked(label="", *, by, wait=0):
    """A backup of the live database into the backups folder (the daily job, Back up now),
    under the operation lock that uploads and restores take too, its progress written beside
    the lock for the Backups page. OperationRunning when another operation holds the lock."""
    with (
        operations.exclusive("backup", by=by, wait=wait) as holder,
        operations.reporting(holder, last_files=last_files_count()) as progress,
    ):
        return backups.create_backup(label=label, progress=progress)


def last_files_count():
    """How many site files the newest backup that recorded them listed (what a backup's files
    step will likely count to), or None."""
    try:
        folder = backups.backups_dir()
        newest = backups.scan_backups(folder, reuse=True)[:3]  # uploads list none: a few more
    except backups.BackupError:
        return None
    for item in newest:
        media = (backups.read_manifest(folder / item.name) or {}).get("media")
        if isinstance(media, dict) and isinstance(media.get("files"), int):
            return media["files"]
    return None


def delete_offsite_soon(name, user):
    """Start deleting the offsite copy of backup `name` in a thread, for staff `user` (the
    delete page): one run in the history, and a line in the audit trail when it is done.
    The store's timeouts bound it (about 20 s for a store that never answers). The thread is
    not a daemon, so a worker that stops waits for it. Returns the thread."""
    thread = threading.Thread(
        target=_delete_offsite, args=(name, user), name=DELETE_OFFSITE, daemon=False
    )
    thread.start()
    return thread


def _delete_offsite(name, user):
    try:
        run = CronRun.start(DELETE_OFFSITE, trigger=f"admin:{user.get_username()}")
        try:
            result = offsite_purge.delete_copy(name)
        except backups.BackupError as err:  # the store refused, or is down: one line
            run.finish(CronRun.Status.FAILURE, error=str(err))
        except Exception:
            logger.exception("deleting the offsite copy of %s failed", name)
            run.finish(CronRun.Status.FAILURE, error=traceback.format_exc())
        else:
            run.finish(CronRun.Status.SUCCESS, result=result)
        if run.status == CronRun.Status.SUCCESS:
            audit(user, failures.capital(run.result), flag=DELETION, obj=run)
        else:
            text = f"Could not delete the offsite copy of {name}: {run.error_summary}"
            audit(user, text, obj=run)
        logger.info("%s of %s: %s", DELETE_OFFSITE, name, run.result or run.error_summary)
    except Exception:  # the run history itself cannot be written
        logger.exception("could not record the deletion of the offsite copy of %s", name)
    finally:
        db.connection.close()  # this thread's own connection
