"""Deleting and restoring one backup: the confirmation pages and the actions."""

import logging
from datetime import timedelta
from types import SimpleNamespace

from django.contrib import messages
from django.contrib.admin.models import LogEntry
from django.db import DatabaseError, connection
from django.db.migrations.recorder import MigrationRecorder
from django.http import JsonResponse
from django.shortcuts import redirect, render
from django.utils import timezone

from backups_app import conf
from backups_app.audit import DELETION, audit
from backups_app.core import failures, operations
from backups_app.core.formatting import human_size
from backups_app.engine import backups
from backups_app.jobs import actions
from backups_app.media import put_back as media_put_back
from backups_app.offsite import lock as offsite_lock
from backups_app.offsite import state as offsite_state
from backups_app.offsite import store as offsite_store
from backups_app.restore import restore
from backups_app.web.common import (
    admin_context,
    confirm_view,
    done,
    failed,
    headline,
    posted,
    wants_json,
)
from backups_app.web.forms import DeleteForm, RestoreForm

logger = logging.getLogger(__name__)


@confirm_view
def delete_backup(request, backup):
    """GET: what deleting this backup means (nothing changes). POST: delete it and its sidecars,
    and with "Also delete its offsite copy", start deleting that in the background."""
    offsite = offsite_facts(backup.name)
    if request.method != "POST":
        return delete_page(request, backup, *delete_form(request, backup), offsite)
    try:
        with operations.exclusive("delete", by=request.user.get_username()):
            # The folder is read under the lock: two deletes at once cannot both find another
            # backup left and leave none without the second confirmation.
            form, listed = delete_form(request, backup)
            if form.is_valid():
                backups.delete_backup(backup.name)
    except operations.OperationRunning as err:
        return failed(request, str(err), 409)
    except backups.BackupError as err:
        logger.error("delete of %s failed: %s", backup.name, err)
        return failed(request, f"could not delete {backup.name}: {err}", 500)
    if form.errors:
        if wants_json(request):
            return JsonResponse({"error": form.non_field_errors()[0]}, status=400)
        return delete_page(request, backup, form, listed, offsite)
    also_offsite = bool(offsite and offsite["can_delete"] and form.cleaned_data["delete_offsite"])
    if also_offsite:
        actions.delete_offsite_soon(backup.name, request.user)  # the answer does not wait
    return deleted(request, backup, offsite, also_offsite)


def deleted(request, backup, offsite, also_offsite):
    """Say what was done: the backup is gone; its offsite copy is being deleted, or stays."""
    size = human_size(backup.size)
    logger.info("backup %s deleted by %s", backup.name, request.user.get_username())
    action = f"Deleted backup {backup.name} ({size})"
    text = f"Deleted {backup.name} ({size})."
    if also_offsite:
        action += f"; deleting its offsite copy in {offsite['location']} in the background"
        text += (
            f" Its offsite copy in {offsite['location']} is being deleted in the background: "
            "Recent dashboard actions and the run history (delete-offsite) say when it is gone."
        )
    elif offsite:
        text += " Its offsite copy, if one was made, stays in the offsite store."
    audit(request.user, action, flag=DELETION)
    data = {"deleted": backup.name, **({"offsite": "deleting"} if also_offsite else {})}
    return done(request, data, text)


def delete_form(request, backup):
    """(the delete form, bound on a POST, and the folder's listing it was judged against)."""
    listed = backups.scan_backups()
    others = [item for item in listed if item.name != backup.name]
    return DeleteForm(posted(request), is_last=not others), listed


def delete_page(request, backup, form, listed, offsite):
    return render(
        request,
        "backups/delete.html",
        admin_context(
            request,
            "Delete a backup",
            backup=backup,
            form=form,
            is_last=form.is_last,
            is_newest=bool(listed) and listed[0].name == backup.name,
            offsite=offsite,
        ),
        status=400 if form.errors else 200,
    )


def offsite_facts(name):
    """What the delete page says of the backup's offsite copy (None: offsite copies are off):
    where copies go and how long they stay, the copy the jobs recorded (or None), until when
    Object Lock keeps it, and whether it may be deleted now.

    From the settings and the jobs' record alone: the page never asks the store. A copy's
    objects were locked for STANZA_OFFSITE_LOCK_DAYS when they were written, its .sha256 last.
    """
    if not offsite_store.enabled():
        return None
    copy = offsite_state.recorded().copies.get(name)
    locked_until = None
    if copy is not None and offsite_lock.days():
        copied = copy.copied or timezone.now()  # unknown: as if copied now (not offered)
        locked_until = copied + timedelta(days=offsite_lock.days())
        if locked_until <= timezone.now():
            locked_until = None
    return {
        "location": offsite_store.location(),
        "retention_days": conf.get("STANZA_OFFSITE_RETENTION_DAYS"),
        "copy": copy,
        "locked_until": locked_until,
        "can_delete": copy is not None and locked_until is None,
    }


# --- Restore and upload --------------------------------------------------------------------


@confirm_view
def restore_backup(request, backup):
    """GET: what restoring this backup would do (nothing changes; the full check of an engine
    whose full check is a restore runs in the POST). POST: do it."""
    form = RestoreForm(posted(request))
    if request.method == "POST" and form.is_valid():
        return restore_now(request, backup)
    try:
        info, problem = restore.preview_backup_file(backup.path), ""
    except backups.BackupError as err:
        info, problem = None, str(err)
    return render(
        request,
        "backups/restore.html",
        admin_context(
            request,
            "Restore a backup",
            backup=backup,
            form=form,
            info=info,
            changes=restore.changes(info) if info else None,
            files=media_put_back.confirm_facts(backup.path) if info else None,
            problem=problem,
            database=restore.database_shown(backups.live_database()),
            folder=backups.backups_dir(),
        ),
    )


def restore_now(request, backup):
    return run_restore(
        request,
        f"restore of {backup.name}",
        lambda **who: restore.restore_and_record(backup.path, **who),
    )


def run_restore(request, what, restore_as, errors=(backups.BackupError,), named=None):
    """Run `restore_as(trigger=..., by=...)` for the staff user and answer the page or API.

    One ending for every kind of restore (a backup, a point in time): busy is 409, a refused
    or failed restore is 400 with nothing changed, logged and audited under `what`. `named`
    is what the user chose, in words ("the replica at 2026-12-06 19:42:47 UTC"); by default
    "backup NAME".
    """
    user = request.user
    trigger = f"admin:{user.get_username()}"
    try:
        result = restore_as(trigger=trigger, by=user.get_username())
    except operations.OperationRunning as err:
        return failed(request, str(err), 409)
    except errors as err:
        logger.error("%s requested by %s failed: %s", what, trigger, err)
        audit(user, f"{what[:1].upper()}{what[1:]} failed: {headline(err)}")
        return failed(request, f"restore failed, nothing was changed: {err}", 400)
    return restored(request, result, named)


def restored(request, result, named=None):
    """Say that a restore succeeded (restore_and_record recorded it in the run history).

    The restored database has its own sessions table: when it lacks this session, the next
    page is the login page, which shows the message (messages live in a cookie).
    """
    name = named or result.backup.name
    chosen = named or f"backup {name}"
    safety = result.safety_backup.name if result.safety_backup else ""
    try:
        audit(request.user, f"Restored {chosen}; safety backup: {safety or 'none'}")
    except DatabaseError:  # e.g. this user is not in the restored database
        logger.warning("could not record the restore of %s in the audit trail", name, exc_info=True)
    if wants_json(request):
        return JsonResponse({"restored": name, "safety_backup": safety or None})
    text = f"Restored {name}."
    if safety:
        text += f" The database as it was before is in the safety backup {safety}."
    messages.success(request, text)
    for note in filter(media_put_back.is_files_note, result.notes):
        messages.info(request, failures.capital(note) + ".")
    pending = len(result.backup.pending_migrations)
    if pending:
        messages.warning(
            request,
            f"This backup predates {pending} migration{'s' if pending != 1 else ''} of this "
            "code: run python manage.py migrate (or restart with scripts/run) before using "
            "the site.",
        )
    key = request.session.session_key
    if key and not request.session.exists(key):
        messages.info(request, "Sessions were restored with the data: please log in again.")
    return redirect("backups:backups")


def point_in_time_changes(when):
    """(what a restore to `when` keeps, the migrations applied since `when`), from the live
    database alone: nothing is restored to show the confirmation page.

    The replica's state at `when` has the live database's tables unless a migration ran since:
    those migrations are named, oldest first.
    """
    records = [*restore.product_tables(), LogEntry._meta.db_table]
    info = SimpleNamespace(row_counts=dict.fromkeys(records, 0))
    kept = restore.changes(info, backups.live_database_path()).kept
    later = MigrationRecorder(connection).migration_qs.filter(applied__gt=when).order_by("applied")
    return restore.Changes(kept=kept), list(later)
