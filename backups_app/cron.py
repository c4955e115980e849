"""Cron expressions read as cron(8) reads them, on APScheduler's triggers.

Plain: no Django import, so the settings can check an expression with the same code that
will schedule it.
"""

from apscheduler.triggers.combining import OrTrigger
from apscheduler.triggers.cron import CronTrigger

CRON_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")


def crontab_trigger(expression, time_zone):
    """An APScheduler trigger that fires when cron(8) would run `expression`.

    `CronTrigger.from_crontab` differs from cron in two ways this corrects: it counts weekdays
    from Monday (so cron's `0 4 * * 0`, Sunday, would run on Mondays), and when both the day
    of month and the day of week are restricted, cron runs on either, not only on both.
    """
    minute, hour, day, month, day_of_week = expression.split()
    day_of_week = _day_of_week_names(day_of_week)
    common = {"minute": minute, "hour": hour, "month": month, "timezone": time_zone}
    if day.startswith("*") or day_of_week.startswith("*"):
        return CronTrigger(day=day, day_of_week=day_of_week, **common)
    return OrTrigger(
        [CronTrigger(day=day, **common), CronTrigger(day_of_week=day_of_week, **common)]
    )


def _day_of_week_names(field):
    """Cron's day-of-week field (0 or 7 is Sunday, names, ranges, steps) as a list of names."""
    if field == "*":
        return field

    def number(token):
        token = token.lower()
        value = CRON_DAYS.index(token) if token in CRON_DAYS else int(token)
        if not 0 <= value <= 7:
            raise ValueError(token)
        return value

    days = set()
    try:
        for part in field.split(","):
            base, has_step, step = part.partition("/")
            if base == "*":
                first, last = 0, 6
            elif "-" in base:
                first, last = (number(token) for token in base.split("-", 1))
            else:
                first = number(base)
                last = 6 if has_step else first
            days.update(d % 7 for d in range(first, last + 1, int(step) if has_step else 1))
    except ValueError:
        days = set()
    if not days:
        raise ValueError(f"{field!r} is not a cron day-of-week field")
    return ",".join(CRON_DAYS[d] for d in sorted(days))
