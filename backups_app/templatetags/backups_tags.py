"""Small filters the dashboard templates need: cron in words, durations, backup kinds, the one
time format, sizes, triggers and failures in words."""

from datetime import UTC

from cron_descriptor import ExpressionDescriptor, FormatException, Options
from django import template
from django.contrib.humanize.templatetags.humanize import naturaltime
from django.utils import timezone
from django.utils.html import format_html

from backups_app.core.formatting import human_size
from backups_app.health import failures

register = template.Library()

KINDS = {"": "scheduled", "manual": "manual", "uploaded": "uploaded"}


@register.filter
def cron_words(expression):
    """'0 2 * * *' -> 'At 02:00 every day'."""
    options = Options()
    options.use_24hour_time_format = True
    try:
        words = ExpressionDescriptor(expression, options).get_description()
    except (FormatException, ValueError, KeyError, IndexError):
        return ""
    if expression.split()[2:] == ["*", "*", "*"] and words.startswith("At "):
        words += " every day"
    return words


@register.filter
def duration(value):
    """A timedelta in short human units: '0.04 s', '3.5 s', '3 min 12 s', '2 h 5 min'."""
    if value is None:
        return ""
    seconds = value.total_seconds()
    if seconds < 1:
        return f"{seconds:.2f} s"
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes, seconds = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {seconds} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


@register.filter
def backup_kind(label):
    """Where a backup came from, from the label in its name (none: the daily job)."""
    return KINDS.get(label, label)


TIME_FORMAT = "%Y-%m-%d %H:%M:%S %Z"


@register.filter
def when(value, relative=True):
    """THE time format: date, time with seconds and zone, then how long ago (or until).

    The page's script (dashboard.js) shows the browser's local time in its place, with this
    one (in UTC) on hover. `|when:False` leaves out the relative part.
    """
    if value is None:
        return ""
    local = timezone.localtime(value).strftime(TIME_FORMAT)
    utc = value.astimezone(UTC).strftime(TIME_FORMAT)
    stamp = format_html(
        '<time class="stanza-time" datetime="{}" title="{}">{}</time>',
        value.isoformat(),
        utc,
        local,
    )
    if not relative:
        return stamp
    return format_html('{} <span class="stanza-ago">({})</span>', stamp, naturaltime(value))


@register.filter
def size(value):
    """Bytes in human units: '1.0 MB' (never '1000.0 KB'); the same as the commands print."""
    if value is None:
        return ""
    return human_size(value, space="\xa0")


@register.filter
def trigger_words(run):
    """Who or what started a run, in plain words: "run by admin with Run now"."""
    trigger = run.trigger or ""
    who, _, user = trigger.partition(":")
    if who == "admin":
        if run.job_name == "restore":
            return f"by {user} from the Backups page"
        return f"run by {user} with Run now"
    return TRIGGERS.get(trigger, trigger or "—")


TRIGGERS = {
    "scheduler": "run by the scheduler",
    "runjob": "run with manage.py runjob",
    "command": "run with manage.py restore",
    "manual": "run by hand",
}


@register.filter
def explain(error):
    """A failed run's error in a sentence with what to do next."""
    return failures.explain(error)


@register.filter
def count(number, word):
    """'1 backup', '3 backups': `{{ n|count:"backup" }}` (or "child,children")."""
    singular, _, plural = word.partition(",")
    return f"{number:,} {singular if number == 1 else plural or singular + 's'}"


@register.simple_tag
def health_verdict():
    """The one health verdict, for the admin index's summary (the pages pass theirs)."""
    from backups_app.health import health

    return health.verdict()


@register.filter
def dashboard_entry(entry):
    """Whether an admin LogEntry is one the dashboard wrote (its message names the action)."""
    from backups_app.core import audit

    return audit.is_dashboard_entry(entry)
