"""Small filters the dashboard templates need: cron in words, durations, backup kinds."""

from cron_descriptor import ExpressionDescriptor, FormatException, Options
from django import template

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
