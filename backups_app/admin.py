from django.contrib import admin, messages
from django.utils.html import format_html

from backups_app import jobs
from backups_app.models import CronRun
from backups_app.templatetags.backups_tags import duration

admin.site.site_header = "Stanza Backups"
admin.site.site_title = "Stanza Backups"
admin.site.index_title = "Dashboard"


@admin.register(CronRun)
class CronRunAdmin(admin.ModelAdmin):
    """The run history, read-only: history is recorded by the jobs, never edited by hand."""

    list_display = ("started_at", "job_name", "status_badge", "took", "trigger", "result")
    list_display_links = ("started_at",)
    list_filter = ("job_name", "status")
    search_fields = ("error", "result")
    list_per_page = 50
    # The unfiltered count is a second COUNT(*) over the whole history on every page.
    show_full_result_count = False
    fields = (
        "job_name",
        "status",
        "trigger",
        "started_at",
        "finished_at",
        "took",
        "result",
        "error_output",
        "hostname",
        "pid",
    )
    readonly_fields = ("took", "error_output")
    actions = ("run_again",)

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.display(description="status", ordering="status")
    def status_badge(self, run):
        colours = {"success": "#1e7b34", "failure": "#ba2121", "running": "#1f5f8b"}
        return format_html(
            '<strong style="color: {}">{}</strong>', colours.get(run.status, ""), run.status
        )

    @admin.display(description="duration", ordering="duration")
    def took(self, run):
        return duration(run.duration) or "—"

    @admin.display(description="error output")
    def error_output(self, run):
        if not run.error:
            return "—"
        return format_html('<pre style="white-space: pre-wrap; margin: 0">{}</pre>', run.error)

    @admin.action(description="Run the selected runs’ jobs again now")
    def run_again(self, request, queryset):
        from backups_app.views import run_job_by_hand

        registry = jobs.registry()
        names = sorted(set(queryset.values_list("job_name", flat=True)))
        unknown = [name for name in names if name not in registry]
        runs = [run_job_by_hand(request.user, name) for name in names if name in registry]
        failed = [run.job_name for run in runs if run.status != CronRun.Status.SUCCESS]
        if runs:
            self.message_user(
                request,
                f"Ran {len(runs)} job{'s' if len(runs) != 1 else ''} now: "
                + ", ".join(f"{run.job_name} ({run.status})" for run in runs)
                + ".",
                messages.ERROR if failed else messages.SUCCESS,
            )
        if unknown:
            self.message_user(
                request,
                f"Not run, no longer registered: {', '.join(unknown)}.",
                messages.WARNING,
            )
