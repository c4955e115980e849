"""What every dashboard view shares: the staff check, POST-only answers, endings
(a redirect with a message, or JSON), the admin's page context, and the lookup of a backup
by the name in its URL."""

import logging
from functools import wraps

from django.contrib import admin, messages
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.http import JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_http_methods

from backups_app.core import failures
from backups_app.engine import backups

logger = logging.getLogger(__name__)


# --- access and endings --------------------------------------------------------------------


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


def done(request, data, message, to="backups:backups"):
    """A successful action: its JSON for an API client, else a message and a redirect."""
    if wants_json(request):
        return JsonResponse(data)
    messages.success(request, message)
    return redirect(to)


def failed(request, error, status, to="backups:backups"):
    """A refused or failed action: `{"error"}` for an API client, else a message and a redirect.

    The message is one sentence with what to do; tool output (SQLite's integrity_check lines)
    goes behind a "details" disclosure (DETAILS splits them in the message, base.html folds).
    """
    sentence, details = failures.split_details(error)
    if wants_json(request):
        return JsonResponse(
            {"error": sentence, **({"details": details} if details else {})}, status=status
        )
    text = failures.sentence(sentence)
    messages.error(request, f"{text}{DETAILS}{details}" if details else text)
    return redirect(to)


def headline(err):
    """An error's one sentence, without a tool's output: what the audit trail records."""
    return failures.split_details(str(err))[0]


# Between a message's sentence and its details (see backups_tags.message_parts).
DETAILS = "\n\n"


def post_only(page, button):
    """POST only; a GET (a bookmarked or typed address) gets a page saying which button on which
    page does this (405 with words, not an empty body)."""

    def decorate(view):
        @wraps(view)
        def wrapper(request, *args, **kwargs):
            if request.method == "POST":
                return view(request, *args, **kwargs)
            text = f"This address does its work when the {button} button is pressed."
            if wants_json(request):
                response = JsonResponse({"error": f"{text} Use POST."}, status=405)
            else:
                context = admin_context(
                    request,
                    "Use the button",
                    text=text,
                    button=button,
                    page=page,
                    page_url=reverse(page[1]),
                )
                response = render(request, "backups/post_only.html", context, status=405)
            response["Allow"] = "POST"
            return response

        return wrapper

    return decorate


BACKUPS_PAGE = ("the Backups page", "backups:backups")
CRON_PAGE = ("the Cron page", "backups:cron")


def admin_context(request, title, **extra):
    """The admin's own context (header, navigation sidebar), so our pages sit inside it."""
    return {**admin.site.each_context(request), "title": title, **extra}


def refuse_name(request, filename, status):
    """A name that is not a backup's (400) or no such backup (404): a page, or JSON."""
    error = "not a backup file name" if status == 400 else "no such backup"
    if wants_json(request):
        return JsonResponse({"error": error}, status=status)
    context = admin_context(request, "Not a backup" if status == 400 else "No such backup")
    context.update(filename=filename, status=status)
    return render(request, "backups/bad_name.html", context, status=status)


def lookup(request, filename, find=backups.get_backup):
    """(`find(filename)`, None), or (None, the page refusing the name).

    The name is checked before any path is built from it: 400 when it is not a backup's name,
    404 when `find` finds no such backup.
    """
    if not backups.is_backup_name(filename):
        return None, refuse_name(request, filename, 400)
    try:
        return find(filename), None
    except backups.BackupError:
        return None, refuse_name(request, filename, 404)


def confirm_view(view):
    """A staff page of one backup that says what an action would do (GET, nothing changes) and
    does it (POST): the URL's name is looked up first, and `view` gets the backup."""

    @staff_required
    @require_http_methods(["GET", "HEAD", "POST"])
    @wraps(view)
    def wrapper(request, filename):
        backup, refused = lookup(request, filename)
        if refused is not None:
            return refused
        return view(request, backup)

    return wrapper


def posted(request):
    """The form's data for a POST, or None (an unbound form) for a GET."""
    return request.POST if request.method == "POST" else None


# --- Backups page --------------------------------------------------------------------------
