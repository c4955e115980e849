"""Which backups retention keeps, by which rule and until when: one pure function, `decide`.

It reads what it is given only (names, modification times, sizes, whether the site made each
backup, the site-file objects they name; no disk, no settings, no clock), so the purge, the
Backups page, the dry run and offsite retention give the same answer for the same listing, and
thousands of backups are decided in milliseconds. The rules (the contract's "Retention"), first
that applies names the fate:

- `recent`: younger than `recent_days` (STANZA_BACKUP_RETENTION_DAYS), until its age reaches it;
- `daily`, `weekly`, `monthly`, `yearly`: the newest backup of its calendar day, ISO week, month
  or year in `time_zone`, while it is younger than N days, weeks, months or years (counted from
  now on the calendar of `time_zone`);
- `ahead of the clock`: modified after now (a clock that was ahead, or is behind now): it is
  judged once the clock passes it, never deleted before;
- `newest`, `newest own`: the newest backup, and the newest the site made itself (not
  `uploaded`), among those not ahead of the clock, whatever their age.
Then, with `max_bytes`, the oldest of the kept go until the rest fit, never the newest or the
newest own (nor one ahead of the clock before them, being newer than any other). What must fit
is what the folder holds: each kept backup with its sidecars (`Item.size`), and once each, the
site-file objects a kept backup names (`Shared`); an object is freed only with the last kept
backup that names it.
"""

import calendar
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import NamedTuple
from zoneinfo import ZoneInfo

RECENT, DAILY, WEEKLY, MONTHLY, YEARLY = "recent", "daily", "weekly", "monthly", "yearly"
AHEAD, NEWEST, NEWEST_OWN = "ahead of the clock", "newest", "newest own"
RULES = (RECENT, DAILY, WEEKLY, MONTHLY, YEARLY, AHEAD, NEWEST, NEWEST_OWN)

MB = 1024 * 1024
# Files dated after this (year 9000: by hand, on a file system that allows it) fall on its day
# for the calendar rules, where no arithmetic of a century can overflow.
MAX_TS = datetime(9000, 1, 1, tzinfo=UTC).timestamp()


@dataclass(frozen=True)
class Rules:
    recent_days: int = 7
    daily_days: int = 0
    weekly_weeks: int = 0
    monthly_months: int = 0
    yearly_years: int = 0
    max_bytes: int = 0  # 0: no cap
    time_zone: str = "UTC"

    @property
    def max_mb(self):
        return self.max_bytes // MB


class Item(NamedTuple):
    """What decide() needs of a backup (engine.backups.Listed has the same fields)."""

    mtime: float  # seconds since the epoch
    name: str
    size: int  # the backup's bytes, with its sidecars where the cap should count them
    own: bool = True  # the site made it (engine: Backup.own); False for an upload


class Shared(NamedTuple):
    """Site-file objects of `size` bytes in all, each named by exactly the same backups: those
    at the positions `runs` ((first, last), inclusive) of `chronological(items)`."""

    size: int
    runs: tuple


class Fates(list):
    """decide()'s answer, a Fate per item; `kept_bytes`: what the kept hold, when capped."""

    kept_bytes = None


def chronological(items):
    """The items oldest first: the order `Shared.runs` count positions in."""
    return sorted(items, key=lambda i: (i.mtime, i.name))


class Fate(NamedTuple):
    """What retention does with one backup: kept by `rule` until `until`, or deleted."""

    name: str
    rule: str = ""  # the first rule that keeps it; "" when none does
    until: datetime | None = None  # when that rule lets it go; None: while it is the newest
    over_cap: bool = False  # a rule keeps it, but the size cap deletes it

    @property
    def keep(self):
        return bool(self.rule) and not self.over_cap


def decide(items, now, rules, shared=()):
    """The fate of every item (see the module's docstring), in the order of `items`.

    `shared`: the site-file objects the items name (Shared), counted against the cap."""
    now_ts = now.timestamp()
    order = chronological(items)[::-1]  # newest first
    present = [i for i in order if i.mtime <= now_ts]
    newest = present[0].name if present else None
    newest_own = next((i.name for i in present if i.own), None)
    calendar = _Calendar(now, rules)
    recent_cut = now_ts - rules.recent_days * 86400 if rules.recent_days else float("inf")
    fates = {}
    for item in order:
        ts, name = item.mtime, item.name
        kept = calendar.claim(ts)  # first: it records which period's newest this is
        if ts >= recent_cut:
            fate = Fate(name, RECENT, _utc(ts + rules.recent_days * 86400))
        elif kept:
            fate = Fate(name, *kept)
        elif ts > now_ts:
            fate = Fate(name, AHEAD, _utc(ts))
        elif name == newest:
            fate = Fate(name, NEWEST)
        elif name == newest_own:
            fate = Fate(name, NEWEST_OWN)
        else:
            fate = Fate(name)
        fates[name] = fate
    answer = Fates()
    if rules.max_bytes:
        chron = order[::-1]
        answer.kept_bytes = _apply_cap(chron, fates, rules.max_bytes, {newest, newest_own}, shared)
    answer.extend(fates[item.name] for item in items)
    return answer


def _apply_cap(chron, fates, max_bytes, protected, shared):
    """Delete the oldest kept backups until the kept, and the objects they name, fit in
    `max_bytes` (see decide); return the bytes left. Linear in the backups and the runs."""
    kept = [fates[item.name].keep for item in chron]
    pinned = [p for p, item in enumerate(chron) if kept[p] and item.name in protected]
    latest, last = [], -1  # latest[p]: the newest kept position at or before p (-1: none)
    for p, keep in enumerate(kept):
        last = p if keep else last
        latest.append(last)
    total = sum(item.size for p, item in enumerate(chron) if kept[p])
    freed = [0] * len(chron)  # freed[p]: the objects' bytes deleting backup p frees
    for size, runs in shared:
        runs = [(first, last) for first, last in runs if 0 <= first <= last < len(chron)]
        newest = max((latest[last] for first, last in runs if latest[last] >= first), default=-1)
        if newest < 0:
            continue  # no kept backup names them: they go with the backups the rules delete
        total += size
        if not any(first <= p <= last for p in pinned for first, last in runs):
            # Kept while the newest kept backup naming them is: the cap deletes oldest first.
            freed[newest] += size
    for p, item in enumerate(chron):  # oldest first
        if total <= max_bytes:
            break
        fate = fates[item.name]
        if kept[p] and p not in pinned:
            fates[item.name] = fate._replace(over_cap=True)
            total -= item.size + freed[p]
    return total


def _utc(ts):
    """The moment `ts` (seconds); the last one datetime has for a file dated beyond it."""
    try:
        return datetime.fromtimestamp(ts, UTC)
    except (OverflowError, OSError, ValueError):
        return datetime.max.replace(tzinfo=UTC)


class _Calendar:
    """The daily, weekly, monthly and yearly rules: fed backups newest first, it tells which
    one is the newest of its day, ISO week, month or year, and whether it is young enough."""

    def __init__(self, now, rules):
        self.tz = ZoneInfo(rules.time_zone)
        wall = now.astimezone(self.tz).replace(tzinfo=None)  # now on the local calendar
        counts = zip(
            (DAILY, WEEKLY, MONTHLY, YEARLY),
            (rules.daily_days, rules.weekly_weeks, rules.monthly_months, rules.yearly_years),
            strict=True,
        )
        # (rule, N, the oldest time the rule keeps) for each rule that is on, in order.
        self.rules = [(r, n, self.local(_shift(wall, r, -n)).timestamp()) for r, n in counts if n]
        # Older than that for every rule, a backup is kept by none of them (nor are all older
        # ones): its day need not even be looked up.
        self.oldest = min((cut for _rule, _n, cut in self.rules), default=float("inf"))
        self.last = (None, None, None, None)  # the day, week, month and year last claimed

    def local(self, wall):
        return wall.replace(tzinfo=self.tz)

    def claim(self, ts):
        """(rule, until) of the first calendar rule that keeps the backup modified at `ts`,
        or (); call it for every backup, newest first."""
        if ts < self.oldest:
            return ()
        wall = datetime.fromtimestamp(min(ts, MAX_TS), self.tz).replace(tzinfo=None)
        day = wall.date()
        last = self.last
        if day == last[0]:  # an older backup of a day already claimed: nothing left
            return ()
        self.last = (day, day.toordinal() - day.weekday(), _month(day), day.year)
        newest_of = [key != old for key, old in zip(self.last, last, strict=True)]
        for rule, count, cut in self.rules:
            if newest_of[PERIODS[rule]] and ts >= cut:
                return rule, self.local(_shift(wall, rule, count))
        return ()


PERIODS = {DAILY: 0, WEEKLY: 1, MONTHLY: 2, YEARLY: 3}


def _shift(wall, rule, n):
    """The local time `n` days, weeks, months or years after `wall` (before, when negative);
    the 31st becomes the month's last day, 29 February the 28th."""
    if rule in (DAILY, WEEKLY):
        return wall + timedelta(days=n * (7 if rule == WEEKLY else 1))
    months = wall.year * 12 + wall.month - 1 + (n if rule == MONTHLY else 12 * n)
    year, month = divmod(months, 12)
    day = min(wall.day, calendar.monthrange(year, month + 1)[1])
    return wall.replace(year=year, month=month + 1, day=day)


def _month(day):
    return day.year * 12 + day.month - 1


def summary(fates, rules=None):
    """The purge's result line: "kept 7 recent, 9 daily, 1 newest; deleted 12 (3 over the
    5000 MB cap; 4987.2 MB left)"."""
    counts = Counter(fate.rule for fate in fates if fate.keep)
    kept = ", ".join(f"{counts[rule]} {rule}" for rule in RULES if counts[rule]) or "none"
    deleted = sum(not fate.keep for fate in fates)
    capped = sum(fate.over_cap for fate in fates)
    line = f"kept {kept}; deleted {deleted}"
    if capped:
        left = getattr(fates, "kept_bytes", None)
        line += f" ({capped} over the {rules.max_mb if rules else '?'} MB cap"
        line += f"; {left / MB:.1f} MB left)" if left is not None else ")"
    return line
