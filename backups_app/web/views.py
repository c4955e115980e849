"""The Backups page and its actions: the page, "Back up now", downloads and uploads.
Each view: one check, one call, one ending (the shared parts are in common.py)."""

import logging
import shutil
from urllib.parse import quote

from django.core.paginator import Paginator
from django.http import FileResponse, JsonResponse
from django.shortcuts import render
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.utils.http import RFC3986_SUBDELIMS
from django.views.decorators.csrf import csrf_exempt, csrf_protect
from django.views.decorators.http import require_safe

from backups_app import conf, upload_gate
from backups_app.audit import CHANGE, audit, recent_entries
from backups_app.core import operations
from backups_app.core.formatting import human_size
from backups_app.engine import backups
from backups_app.health import health, recovery
from backups_app.jobs import actions, jobs
from backups_app.media import store as media_store
from backups_app.offsite import state as offsite_state
from backups_app.restore import drill, uploads
from backups_app.retention import purge
from backups_app.web.common import (
    BACKUPS_PAGE,
    admin_context,
    done,
    failed,
    headline,
    lookup,
    post_only,
    staff_required,
    wants_json,
)
from backups_app.web.forms import UploadForm

logger = logging.getLogger(__name__)

# A row of backups costs ~0.3 ms to render (a checksum and a manifest read, two times): 50
# rows keep the page under 100 ms at 5000 backups (bench/dashboard.py) and short on a phone.
BACKUPS_PAGE_SIZE = 50


@staff_required
@require_safe
def backups_page(request):
    if "progress" in request.GET and wants_json(request):
        return operation_progress(request)
    found, problem = [], ""
    try:
        folder = backups.backups_dir()
    except backups.BackupError as err:  # its setting cannot be followed (a symlink loop, say)
        folder, problem = conf.raw_value("STANZA_BACKUPS_DIR") or "", str(err)
    else:
        try:
            found = backups.scan_backups(folder, reuse=True)  # Backup objects for the rows shown
        except backups.BackupError as err:
            problem = str(err)
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        free = None
    # The card shows what the verdict judges: the newest backup the site made itself.
    own = health.newest_own(found)
    newest = own.backup(folder) if own else None
    verdict = health.verdict(scanned=None if problem else found)
    # Recovery point and time, from what the verdict read (replicate's status file: once).
    rpo_rto = recovery.state(listed=found, drills=verdict.drills, replica=verdict.replica)
    page = Paginator(found, BACKUPS_PAGE_SIZE).get_page(request.GET.get("page"))
    shown = [item.backup(folder) for item in page]
    now = timezone.now()
    fates = purge.fates_by_name(found, now, folder)  # the whole folder, as the purge decides
    links = {view: backup_link(view) for view in ("download", "restore", "delete")}
    return render(
        request,
        "backups/backups.html",
        admin_context(
            request,
            "Backups",
            count=len(found),
            page=page,
            # Only the rows shown: a manifest and a checksum read each, whatever the folder holds.
            rows=[
                {
                    "backup": backup,
                    "drill": drill_status(backup),
                    "files": media_summary(backup),
                    "fate": fates.get(backup.name),
                    "sha256": backups.read_checksum(backup.path) if backup.has_checksum else "",
                    "urls": {view: link(backup.name) for view, link in links.items()},
                }
                for backup in shown
            ],
            folder=folder,
            problem=problem,
            total_size=sum(b.size for b in found),
            media_store=None if problem else media_store.page_stats(folder),
            free_space=free,
            newest=newest,
            stale=own is None or health.too_old(own, now),
            **retention_context(now),
            stale_after_hours=int(health.MAX_BACKUP_AGE.total_seconds() // 3600),
            alert_emails=list(conf.get("STANZA_ALERT_EMAILS")),
            verdict=verdict,
            replica=verdict.replica,  # the replication card: what the verdict read
            recovery=rpo_rto,
            recovery_stale=(rpo_rto.point_seconds or 0) > health.MAX_BACKUP_AGE.total_seconds(),
            offsite=offsite_state.page_state(found),  # what the jobs recorded: no network
            upload_form=UploadForm(),
            audit_entries=recent_entries(),
            operation=operations.running(),
        ),
    )


def operation_progress(request):
    """`GET /admin/backups/?progress` (JSON): the operation running now and how far it got,
    with the words the page shows (what "Back up now" polls while its POST is pending). Two
    small local files are read, nothing else."""
    operation = operations.running()
    html = render_to_string("backups/_operation.html", {"operation": operation}).strip()
    return JsonResponse({"running": operation is not None, "operation": operation, "html": html})


def retention_context(now):
    """What the "kept" badges need besides each backup's fate: when the next purge runs
    ("deleted by the next purge at 2026-12-07 02:30:00 UTC"), the size cap, and today."""
    return {
        "cap_mb": conf.get("STANZA_BACKUPS_MAX_MB"),
        "next_purge": jobs.next_run_time(jobs.registry()["purge-old-backups"], now),
        "today": timezone.localdate(now),
    }


def backup_link(view):
    """A function making the `backups:<view>` link of a backup name: one reverse() for a page
    of rows instead of one per row (300 reverses were ~15 ms of the Backups page)."""
    prefix = reverse(f"backups:{view}", args=["-"])[:-1]  # the name is the link's last part
    return lambda name: prefix + quote(name, safe=RFC3986_SUBDELIMS + "/~:@")  # as reverse()


def media_summary(backup):
    """The backup's site files for its row ({"files", "bytes", "new_bytes"}), or None."""
    summary = (backups.read_manifest(backup.path) or {}).get("media")
    return summary if isinstance(summary, dict) and "files" in summary else None


def drill_status(backup):
    """The backup's last restore drill, for the page: {"ok", "at", "problems"} or None."""
    result = drill.drill_result(backup)
    if result is None:
        return None
    problems = result.get("problems")
    at = result.get("at")
    return {
        "ok": result.get("ok") is True,
        "at": parse_datetime(at) if isinstance(at, str) else None,
        "problems": [str(p) for p in problems] if isinstance(problems, list) else [],
    }


@staff_required
@post_only(BACKUPS_PAGE, "Back up now")
def backup_now(request):
    try:
        backup = actions.backup_locked("manual", by=request.user.get_username())
    except operations.OperationRunning as err:
        return failed(request, str(err), 409)
    except backups.BackupError as err:
        logger.error("backup requested by %s failed: %s", request.user.get_username(), err)
        audit(request.user, f"Back up now failed: {headline(err)}")
        return failed(request, f"backup failed: {err}", 500)
    jobs.copy_offsite_soon()  # its own recorded run, in a thread: the answer does not wait
    size = human_size(backup.size)
    audit(request.user, f"Made backup {backup.name} ({size})")
    return done(
        request, {"file": backup.name, "size": backup.size}, f"Backup {backup.name} made ({size})."
    )


@staff_required
@require_safe
def download_backup(request, filename):
    f, refused = lookup(request, filename, find=backups.open_backup)
    if refused is not None:
        return refused
    response = FileResponse(
        f, as_attachment=True, filename=filename, content_type="application/octet-stream"
    )
    digest = backups.read_checksum(backups.backups_dir() / filename)
    if digest:
        response["X-Checksum-SHA256"] = digest
    if request.method == "GET":
        audit(request.user, f"Downloaded backup {filename}", flag=CHANGE)
    return response


@csrf_exempt  # checked below, after the staff check, so nobody else can make us read a body
@staff_required
@post_only(BACKUPS_PAGE, "Upload")
def upload_backup(request):
    # Before the body is read: stream the file into the app's upload folder, stopping at the
    # limit (the same as this site's UploadGateMiddleware does; a site without it gets it here).
    refused = upload_gate.bound_staff_upload(request)
    if refused:
        return refused
    try:
        return _upload_backup(request)
    except uploads.UploadTooLarge as err:  # while streaming
        return upload_gate.too_large(request, err)


@csrf_protect
def _upload_backup(request):
    form = UploadForm(request.POST, request.FILES)
    if not form.is_valid():
        return failed(request, form.errors["file"][0], 400)
    upload = form.cleaned_data["file"]
    try:
        with operations.exclusive("upload", by=request.user.get_username()):
            backup = uploads.accept_upload(upload)
    except backups.BackupError as err:
        logger.warning("upload of %s refused: %s", upload.name, err)
        audit(request.user, f"Upload of {upload.name} refused: {headline(err)}")
        status = getattr(err, "status", 400)
        return failed(request, f"upload of {upload.name} refused: {err}", status)
    size = human_size(backup.size)
    audit(request.user, f"Uploaded {upload.name} as {backup.name} ({size})")
    text = f"Uploaded {upload.name}: it passed the checks and is kept as {backup.name} ({size})."
    return done(request, {"file": backup.name, "size": backup.size}, text)


# --- Cron page and runs --------------------------------------------------------------------
