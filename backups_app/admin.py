"""The run history in the Django admin (read-only). Registering the app's own model is all
this module does to the admin: the header, index and the rest are opt-in (admin_site.py)."""

from django.contrib import admin, messages
from django.shortcuts import redirect
from django.utils.html import format_html

from backups_app.jobs import jobs
from backups_app.models import CronRun
from backups_app.templatetags.backups_tags import (
    duration,
    explain,
    name_words,
    trigger_words,
    when,
)


class JobFilter(admin.SimpleListFilter):
    """Every job (and restores), listed before they ever ran."""

    title = "job"
    parameter_name = "job_name"

    def lookups(self, request, model_admin):
        return [(name, name) for name in jobs.history_names()]

    def queryset(self, request, queryset):
        value = self.value()
        return queryset.filter(job_name=value) if value else queryset


@admin.register(CronRun)
class CronRunAdmin(admin.ModelAdmin):
    """The run history, read-only: history is recorded by the jobs, never edited by hand.

    A run's page is the dashboard's run detail page (plain words, error output full width).
    """

    list_display = ("started", "job_name", "status_badge", "took", "started_by", "outcome")
    list_display_links = ("started",)
    list_filter = (JobFilter, "status")
    search_fields = ("error", "result")
    list_per_page = 50
    # The unfiltered count is a second COUNT(*) over the whole history on every page.
    show_full_result_count = False
    actions = ("run_again",)

    class Media:
        js = ("backups/dashboard.js",)
        css = {"all": ("backups/dashboard.css",)}

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def change_view(self, request, object_id, form_url="", extra_context=None):
        """A run's page is the dashboard's; anything else (a POST) gets the admin's answer."""
        if request.method in ("GET", "HEAD") and object_id.isdigit():
            return redirect("backups:run", pk=object_id)
        return super().change_view(request, object_id, form_url, extra_context)

    @admin.display(description="started", ordering="started_at")
    def started(self, run):
        return when(run.started_at)

    @admin.display(description="status", ordering="status")
    def status_badge(self, run):
        return format_html(
            '<span class="stanza-status stanza-status-{}">{}</span>',
            run.status,
            run.get_status_display(),
        )

    @admin.display(description="duration", ordering="duration")
    def took(self, run):
        return duration(run.duration) or "—"

    @admin.display(description="started by", ordering="trigger")
    def started_by(self, run):
        return trigger_words(run)

    @admin.display(description="result")
    def outcome(self, run):
        if run.status == CronRun.Status.FAILURE:
            return format_html('<span class="stanza-result">{}</span>', explain(run.error))
        return format_html('<span class="stanza-result">{}</span>', name_words(run.result or "—"))

    @admin.action(description="Run the selected runs’ jobs again now")
    def run_again(self, request, queryset):
        registry = jobs.registry()
        names = sorted(set(queryset.values_list("job_name", flat=True)))
        not_jobs = [name for name in names if name in jobs.PSEUDO_JOBS]
        unknown = [name for name in names if name not in registry and name not in not_jobs]
        runs = [jobs.run_job_by_hand(name, request.user) for name in names if name in registry]
        failed = [run.job_name for run in runs if run.status != CronRun.Status.SUCCESS]
        if runs:
            self.message_user(
                request,
                f"Ran {len(runs)} job{'s' if len(runs) != 1 else ''} now: "
                + ", ".join(f"{run.job_name} ({run.status})" for run in runs)
                + ".",
                messages.ERROR if failed else messages.SUCCESS,
            )
        if not_jobs:
            self.message_user(
                request,
                f"Not run again: {', '.join(not_jobs)} is not a scheduled job "
                "(restore a backup from the Backups page).",
                messages.WARNING,
            )
        if unknown:
            self.message_user(
                request,
                f"Not run, no longer registered: {', '.join(unknown)}.",
                messages.WARNING,
            )
