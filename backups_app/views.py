"""The staff dashboard inside the admin: Backups page, "Back up now", downloads, restores,
uploads, Cron page."""

import logging
import shutil
from datetime import timedelta
from functools import wraps

from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin.models import ADDITION, CHANGE, LogEntry
from django.contrib.auth.views import redirect_to_login
from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db import DatabaseError
from django.http import FileResponse, Http404, HttpResponseBadRequest, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.views.decorators.csrf import csrf_exempt, csrf_protect
from django.views.decorators.http import require_http_methods, require_POST, require_safe

from backups_app import (
    backups,
    drill,
    health,
    jobs,
    operations,
    restore,
    scheduler_lock,
    upload_gate,
    uploads,
)
from backups_app.models import CronRun, last_line

logger = logging.getLogger(__name__)

# The Backups page shows the last backup in red when it is older than this.
STALE_AFTER = timedelta(hours=36)
HISTORY_PAGE_SIZE = 50
# A page of backups renders in ~10 ms; 5000 rows at once took 0.6 s (bench/dashboard.py).
BACKUPS_PAGE_SIZE = 100
AUDIT_ENTRIES_SHOWN = 10


# --- access --------------------------------------------------------------------------------


def wants_json(request):
    """An API request: its Accept header asks for JSON (a browser's asks for HTML)."""
    accept = request.headers.get("Accept", "")
    return "application/json" in accept and "text/html" not in accept


def staff_required(view):
    """Anonymous users go to the admin login (API clients get 401); non-staff users get 403."""

    @wraps(view)
    def wrapper(request, *args, **kwargs):
        user = request.user
        if not user.is_authenticated:
            if wants_json(request):
                return JsonResponse({"error": "login required"}, status=401)
            return redirect_to_login(request.get_full_path(), reverse("admin:login"))
        if not (user.is_active and user.is_staff):
            if wants_json(request):
                return JsonResponse({"error": "staff only"}, status=403)
            raise PermissionDenied
        return view(request, *args, **kwargs)

    return wrapper


# --- the audit trail: Django's LogEntry, under CronRun's content type ---------------------


def audit(user, message, *, flag=ADDITION, obj=None, repr_=""):
    """Record what a staff user did from the dashboard; shown on its pages and the admin index."""
    LogEntry.objects.create(
        user_id=user.pk,
        content_type=ContentType.objects.get_for_model(CronRun),
        object_id=str(obj.pk) if obj is not None else None,
        object_repr=(repr_ or str(obj or ""))[:200],
        action_flag=flag,
        change_message=message,
    )


def recent_audit_entries():
    content_type = ContentType.objects.get_for_model(CronRun)
    entries = LogEntry.objects.filter(content_type=content_type).select_related("user")
    return entries.order_by("-action_time", "-id")[:AUDIT_ENTRIES_SHOWN]


def admin_context(request, title, **extra):
    """The admin's own context (header, navigation sidebar), so our pages sit inside it."""
    return {**admin.site.each_context(request), "title": title, **extra}


# --- Backups page --------------------------------------------------------------------------


@staff_required
@require_safe
def backups_page(request):
    folder = backups.backups_dir()
    problem = ""
    try:
        found = backups.list_backups(folder)
    except backups.BackupError as err:
        found, problem = [], str(err)
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        free = None
    newest = found[0] if found else None
    page = Paginator(found, BACKUPS_PAGE_SIZE).get_page(request.GET.get("page"))
    return render(
        request,
        "backups/backups.html",
        admin_context(
            request,
            "Backups",
            count=len(found),
            page=page,
            # Only the rows shown: one manifest read each, whatever the folder holds.
            rows=[{"backup": backup, "drill": drill_status(backup)} for backup in page],
            folder=folder,
            problem=problem,
            total_size=sum(b.size for b in found),
            free_space=free,
            newest=newest,
            stale=newest is None or timezone.now() - newest.modified > STALE_AFTER,
            stale_after_hours=int(STALE_AFTER.total_seconds() // 3600),
            audit_entries=recent_audit_entries(),
        ),
    )


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
@require_POST
def backup_now(request):
    try:
        with operations.exclusive("backup", by=request.user.get_username()):
            backup = backups.create_backup(label="manual")
    except operations.OperationRunning as err:
        error, status = str(err), 409
    except backups.BackupError as err:
        logger.error("backup requested by %s failed: %s", request.user.get_username(), err)
        error, status = f"backup failed: {err}", 500
        audit(request.user, f"Back up now failed: {err}", repr_="Back up now (failed)")
    else:
        size = backups.human_size(backup.size)
        audit(request.user, f"Made backup {backup.name} ({size})", repr_=backup.name)
        if wants_json(request):
            return JsonResponse({"file": backup.name, "size": backup.size})
        messages.success(request, f"Backup {backup.name} made ({size}).")
        return redirect("backups:backups")

    if wants_json(request):
        return JsonResponse({"error": error}, status=status)
    messages.error(request, error[:1].upper() + error[1:] + ".")
    return redirect("backups:backups")


@staff_required
@require_safe
def download_backup(request, filename):
    # The name is checked before any path is built from it.
    if not backups.is_backup_name(filename):
        return HttpResponseBadRequest("Not a backup file name.", content_type="text/plain")
    try:
        f = backups.open_backup(filename)
    except backups.BackupError:
        raise Http404("No such backup.") from None
    response = FileResponse(
        f, as_attachment=True, filename=filename, content_type="application/octet-stream"
    )
    digest = backups.read_checksum(backups.backups_dir() / filename)
    if digest:
        response["X-Checksum-SHA256"] = digest
    if request.method == "GET":
        audit(request.user, f"Downloaded backup {filename}", flag=CHANGE, repr_=filename)
    return response


# --- Restore and upload --------------------------------------------------------------------


def find_backup(filename):
    """The listed backup called `filename`: 400 for a name that is not a backup's, else 404."""
    if not backups.is_backup_name(filename):
        return None
    try:
        return backups.get_backup(filename)
    except backups.BackupError:
        raise Http404("No such backup.") from None


@staff_required
@require_http_methods(["GET", "HEAD", "POST"])
def restore_backup(request, filename):
    """GET: what restoring this backup would do (it is checked; nothing changes). POST: do it."""
    backup = find_backup(filename)
    if backup is None:
        return HttpResponseBadRequest("Not a backup file name.", content_type="text/plain")
    if request.method == "POST":
        return restore_now(request, backup)
    try:
        info, problem = restore.check_backup_file(backup.path), ""
    except backups.BackupError as err:
        info, problem = None, str(err)
    return render(
        request,
        "backups/restore.html",
        admin_context(
            request,
            "Restore a backup",
            backup=backup,
            info=info,
            summary=restore.describe(info) if info else "",
            changes=restore.changes(info) if info else None,
            problem=problem,
            database=backups.live_database_path(),
            folder=backups.backups_dir(),
        ),
    )


def restore_now(request, backup):
    user = request.user
    trigger = f"admin:{user.get_username()}"
    try:
        result = restore.restore_and_record(backup.path, trigger=trigger, by=user.get_username())
    except operations.OperationRunning as err:
        error, status = str(err), 409
    except backups.BackupError as err:
        logger.error("restore of %s requested by %s failed: %s", backup.name, trigger, err)
        error, status = f"restore failed, nothing was changed: {err}", 400
        audit(user, f"Restore of {backup.name} failed: {err}", repr_=backup.name)
    else:
        return restored(request, result, trigger)
    if wants_json(request):
        return JsonResponse({"error": error}, status=status)
    messages.error(request, error[:1].upper() + error[1:] + ".")
    return redirect("backups:backups")


def restored(request, result, trigger):
    """Say that a restore succeeded (restore_and_record recorded it in the run history).

    The restored database has its own sessions table: when it lacks this session, the next
    page is the login page, which shows the message (messages live in a cookie).
    """
    name = result.backup.name
    safety = result.safety_backup.name if result.safety_backup else ""
    try:
        audit(
            request.user, f"Restored backup {name}; safety backup: {safety or 'none'}", repr_=name
        )
    except DatabaseError:  # e.g. this user is not in the restored database
        logger.warning("could not record the restore of %s in the audit trail", name, exc_info=True)
    if wants_json(request):
        return JsonResponse({"restored": name, "safety_backup": safety or None})
    text = f"Restored {name}."
    if safety:
        text += f" The database as it was before is in the safety backup {safety}."
    messages.success(request, text)
    pending = len(result.backup.pending_migrations)
    if pending:
        messages.warning(
            request,
            f"This backup predates {pending} migration(s) of this code: run "
            "`python manage.py migrate` (or restart with scripts/run) before using the site.",
        )
    key = request.session.session_key
    if key and not request.session.exists(key):
        messages.info(request, "Sessions were restored with the data: please log in again.")
    return redirect("backups:backups")


@csrf_exempt  # checked below, after the staff check, so nobody else can make us read a body
@staff_required
@require_POST
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
    upload = request.FILES.get("file")
    status = 400
    if upload is None:
        error = "choose a backup file to upload"
    else:
        try:
            with operations.exclusive("upload", by=request.user.get_username()):
                backup = uploads.accept_upload(upload)
        except backups.BackupError as err:
            why = str(err)
            logger.warning("upload of %s refused: %s", upload.name, why)
            error = f"upload of {upload.name} refused: {why}"
            status = getattr(err, "status", 400)
            audit(request.user, f"Upload of {upload.name} refused: {why}", repr_=upload.name)
        else:
            size = backups.human_size(backup.size)
            audit(
                request.user, f"Uploaded {upload.name} as {backup.name} ({size})", repr_=backup.name
            )
            if wants_json(request):
                return JsonResponse({"file": backup.name, "size": backup.size})
            text = f"Uploaded {upload.name}: it passed the checks and is kept as {backup.name}"
            messages.success(request, f"{text} ({size}).")
            return redirect("backups:backups")
    if wants_json(request):
        return JsonResponse({"error": error}, status=status)
    messages.error(request, error[:1].upper() + error[1:] + ".")
    return redirect("backups:backups")


# --- Cron page -----------------------------------------------------------------------------


def next_run_times(registry):
    """{job name: (next run time or None, note)}: from the scheduler's job store when one is up."""
    if scheduler_lock.is_scheduler_running():
        from django_apscheduler.models import DjangoJob

        stored = dict(
            DjangoJob.objects.filter(id__in=list(registry)).values_list("id", "next_run_time")
        )
        return {
            name: (stored[name], "") if stored.get(name) else (None, "not scheduled")
            for name in registry
        }
    return {
        name: (jobs.next_run_time(job), "scheduler not running") for name, job in registry.items()
    }


@staff_required
@require_safe
def cron_page(request):
    registry = jobs.registry()
    latest = CronRun.objects.latest_per_job(registry)
    next_runs = next_run_times(registry)
    states = health.job_states()
    job_rows = [
        {
            "job": job,
            "state": states.get(name, ""),
            "grace": span_words(job.grace),
            "last_run": latest.get(name),
            "next_run": next_runs[name][0],
            "next_run_note": next_runs[name][1],
        }
        for name, job in registry.items()
    ]

    job_filter = request.GET.get("job", "")
    status_filter = request.GET.get("status", "")
    if status_filter not in CronRun.Status.values:
        status_filter = ""
    history = CronRun.objects.order_by("-started_at", "-id")
    if job_filter:
        history = history.filter(job_name=job_filter)
    if status_filter:
        history = history.filter(status=status_filter)
    page = Paginator(history, HISTORY_PAGE_SIZE).get_page(request.GET.get("page"))

    filters = request.GET.copy()
    filters.pop("page", None)
    return render(
        request,
        "backups/cron.html",
        admin_context(
            request,
            "Cron jobs",
            job_rows=job_rows,
            scheduler_running=scheduler_lock.is_scheduler_running(),
            time_zone=settings.TIME_ZONE,
            page=page,
            job_names=sorted(set(registry) | ({job_filter} - {""})),
            statuses=CronRun.Status.choices,
            job_filter=job_filter,
            status_filter=status_filter,
            filter_query=filters.urlencode(),
            audit_entries=recent_audit_entries(),
        ),
    )


def span_words(span):
    """A grace time in words: '1 h', '30 min', '2 h 30 min'."""
    hours, minutes = divmod(round(span.total_seconds() / 60), 60)
    words = [f"{hours} h"] if hours else []
    if minutes or not hours:
        words.append(f"{minutes} min")
    return " ".join(words)


def run_job_by_hand(user, name):
    """Run a registered job now for a staff user, recorded in the history and the audit trail."""
    run = jobs.run_job(name, trigger=f"admin:{user.get_username()}")
    outcome = run.result if run.status == CronRun.Status.SUCCESS else last_line(run.error)
    message = f"Ran job {name} by hand: {run.status}" + (f" ({outcome})" if outcome else "")
    audit(user, message, obj=run)
    return run


@staff_required
@require_POST
def run_job_now(request, name):
    if name not in jobs.registry():
        if wants_json(request):
            return JsonResponse({"error": f"no job called {name!r}"}, status=404)
        raise Http404("No such job.")
    run = run_job_by_hand(request.user, name)
    if wants_json(request):
        return JsonResponse(
            {"job": name, "status": run.status, "result": run.result, "error": run.error},
            status=200 if run.status == CronRun.Status.SUCCESS else 500,
        )
    if run.status == CronRun.Status.SUCCESS:
        messages.success(request, f"Job {name} succeeded: {run.result or 'done'}.")
    else:
        messages.error(request, f"Job {name} failed: {last_line(run.error) or run.status}.")
    return redirect("backups:cron")
