"""Small filters the dashboard templates need: cron in words, durations, backup kinds, the one
time format, sizes, triggers and failures in words."""

import re
from datetime import UTC, datetime

from cron_descriptor import ExpressionDescriptor, FormatException, Options
from django import template
from django.contrib.humanize.templatetags.humanize import naturaltime
from django.urls import reverse
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.utils.html import escape, format_html, format_html_join
from django.utils.safestring import mark_safe

from backups_app.core import failures
from backups_app.core.formatting import human_size
from backups_app.engine import backups
from backups_app.jobs import jobs

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


DATE_FORMAT = "%Y-%m-%d"
CLOCK_FORMAT = "%H:%M:%S %Z"
TIME_FORMAT = f"{DATE_FORMAT} {CLOCK_FORMAT}"


def as_datetime(value):
    """A datetime, or one written in ISO 8601 (as a manifest or status file records it)."""
    if isinstance(value, str):
        text = value.strip()
        if text.endswith(" UTC"):  # time_text's own format, in UTC
            text = text[:-4] + "+00:00"
        try:
            value = parse_datetime(text)
        except ValueError:
            return None
    if not isinstance(value, datetime):
        return None
    return value if timezone.is_aware(value) else timezone.make_aware(value, UTC)


def time_text(value):
    """THE time format as plain text, in the site's time zone: '2026-12-06 19:42:47 UTC'."""
    value = as_datetime(value)
    return timezone.localtime(value).strftime(TIME_FORMAT) if value else ""


@register.filter
def when(value, relative=True):
    """THE time format: date, time with seconds and zone, then how long ago (or until).

    Takes a datetime or an ISO 8601 string. The page's script (dashboard.js) shows the
    browser's local time in its place, with this one (in UTC) on hover; the date and the time
    each stay on one line, but may go to two. `|when:False` leaves out the relative part.
    """
    value = as_datetime(value)
    if value is None:
        return ""
    local = timezone.localtime(value)
    stamp = format_html(
        '<time class="stanza-time" datetime="{}" title="{}"><span class="stanza-date">{}</span> '
        '<span class="stanza-clock">{}</span></time>',
        value.isoformat(),
        value.astimezone(UTC).strftime(TIME_FORMAT),
        local.strftime(DATE_FORMAT),
        local.strftime(CLOCK_FORMAT),
    )
    if not relative:
        return stamp
    return format_html('{} <span class="stanza-ago">({})</span>', stamp, naturaltime(value))


@register.filter
def name_breaks(name):
    """A backup's name that may break after its dots on a narrow screen, never inside a word."""
    *parts, last = str(name).split(".")
    return format_html("{}{}", format_html_join("", "{}.<wbr>", ((p,) for p in parts)), last)


@register.filter
def message_parts(message):
    """(sentence, details) of a dashboard message: web.common.failed() puts tool output after a
    blank line, for a "details" disclosure."""
    sentence, _, details = str(message).partition("\n\n")
    return sentence, details


@register.filter
def problem_parts(message):
    """(sentence, details) of a problem shown on a page (SQLite's check output as details)."""
    return failures.split_details(str(message))


@register.filter
def name_words(text):
    """Text in which file names may break after their dots on a narrow screen."""
    return mark_safe(re.sub(r"\.(?=\S)", ".<wbr>", str(escape(text))))  # escaped just above


# Buttons and pages a sentence names, linked to where they are.
PAGE_LINKS = (
    ("Back up now", "backups:backups", "#backup-now"),
    ("Cron page", "backups:cron", ""),
)


@register.filter
def page_links(text):
    """A sentence with the buttons and pages it names ("make one with Back up now") as links."""
    html = str(escape(text))
    for words, url_name, anchor in PAGE_LINKS:
        link = format_html('<a href="{}{}">{}</a>', reverse(url_name), anchor, words)
        html = html.replace(words, link, 1)
    return mark_safe(html)  # the text was escaped above; the links are format_html's


@register.filter
def restored_words(name):
    """What a restore restored, for the replication panel: a backup's name, or a point in time
    (older records named the scratch file a point-in-time restore went through)."""
    if backups.is_backup_name(str(name)):
        return format_html('<code class="stanza-name">{}</code>', name_breaks(name))
    if not name or str(name).startswith("."):
        return "a point in time from the replica"
    prefix, _, at = str(name).partition(" at ")
    if prefix == "the replica" and as_datetime(at):
        return format_html("the replica at {}", when(at, False))
    return name


register.filter("time_text", time_text)


@register.filter
def plain_error(message):
    """An error message as a person reads it: one sentence, no query strings or tool output."""
    return failures.split_details(str(message))[0]


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
        if run.job_name in jobs.PSEUDO_JOBS:  # a restore, deleting an offsite copy
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
    from backups_app import audit

    return audit.is_dashboard_entry(entry)
