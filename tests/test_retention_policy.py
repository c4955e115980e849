"""Retention's one decision (retention/policy.py), over years of generated backups.

`decide` takes the moment it decides at, so time is fixed by argument here; the job, the page and
the dry run (tests/test_retention_rules.py) run with time frozen.
"""

import random
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from backups_app.retention import policy
from backups_app.retention.policy import MB, Item, Rules, decide, summary

NOW = datetime(2026, 12, 6, 2, 30, tzinfo=UTC)  # a Sunday, the purge's time
LARAVEL = Rules(7, 16, 8, 4, 2, 0, "UTC")


def stamp(when):
    return when.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


def nightly(days, *, now=NOW, at=timedelta(minutes=30), size=MB, label=""):
    """One backup a night for `days` nights, the newest `at` before `now`."""
    label = f".{label}" if label else ""
    items = []
    for n in range(days):
        when = now - at - timedelta(days=n)
        name = f"database.sqlite.{stamp(when)}{label}.bak"
        items.append(Item(when.timestamp(), name, size, label != ".uploaded"))
    return items


def item(when, label="", size=MB):
    """A backup made at `when`; the site made it itself unless its label is `uploaded`."""
    name = f"database.sqlite.{stamp(when)}{'.' + label if label else ''}.bak"
    return Item(when.timestamp(), name, size, label != "uploaded")


def kept(items, now=NOW, rules=LARAVEL):
    """{name date (YYYYMMDD): rule} of the kept ones."""
    return {f.name[16:24]: f.rule for f in decide(items, now, rules) if f.keep}


def oracle(items, now, rules):
    """The contract's rules written the slow, obvious way: which names some rule keeps."""
    tz = ZoneInfo(rules.time_zone)
    wall = now.astimezone(tz).replace(tzinfo=None)
    present = sorted((i for i in items if i.mtime <= now.timestamp()), key=lambda i: i.mtime)
    own = [i for i in present if i.own]
    keep = {i.name for i in items if i.mtime > now.timestamp()}  # ahead of the clock
    keep |= {i.name for i in present[-1:] + own[-1:]}  # the newest, the newest own
    keep |= {
        i.name for i in items if rules.recent_days and now - at(i) <= timedelta(rules.recent_days)
    }

    def newest_younger_than(key, oldest):
        newest = {}
        for i in items:  # the newest of each period
            k = key(at(i).astimezone(tz).date())
            if k not in newest or (i.mtime, i.name) > (newest[k].mtime, newest[k].name):
                newest[k] = i
        cut = oldest.replace(tzinfo=tz).timestamp()
        return {i.name for i in newest.values() if i.mtime >= cut}

    if rules.daily_days:
        keep |= newest_younger_than(lambda d: d, wall - timedelta(days=rules.daily_days))
    if rules.weekly_weeks:
        keep |= newest_younger_than(
            lambda d: d.isocalendar()[:2], wall - timedelta(weeks=rules.weekly_weeks)
        )
    if rules.monthly_months:
        keep |= newest_younger_than(
            lambda d: (d.year, d.month), months_back(wall, rules.monthly_months)
        )
    if rules.yearly_years:
        keep |= newest_younger_than(lambda d: d.year, months_back(wall, 12 * rules.yearly_years))
    return keep


def months_back(wall, n):
    year, month = wall.year, wall.month
    for _ in range(n):
        year, month = (year, month - 1) if month > 1 else (year - 1, 12)
    days = [31, 29 if year % 4 == 0 and (year % 100 or year % 400 == 0) else 28, 31, 30, 31, 30]
    days += [31, 31, 30, 31, 30, 31]
    return wall.replace(year=year, month=month, day=min(wall.day, days[month - 1]))


def at(i):
    return datetime.fromtimestamp(i.mtime, UTC)


# --- every rule, over years ------------------------------------------------------------------


def test_it_keeps_a_year_of_history_in_a_months_space_with_laravels_rules():
    items = nightly(3 * 365)  # three years of nightly backups at 02:00

    fates = decide(items, NOW, LARAVEL)

    assert kept(items) == {
        **{f"202612{d:02}": "recent" for d in range(1, 7)},
        "20261130": "recent",
        **{f"202611{d:02}": "daily" for d in range(21, 30)},  # the 16 days back from today
        # The newest of each ISO week (its Sunday) for 8 weeks: the weeks of 30 Nov, 23 Nov
        # and 16 Nov are already kept by recent and daily backups.
        "20261115": "weekly",
        "20261108": "weekly",
        "20261101": "weekly",
        "20261025": "weekly",
        "20261018": "weekly",
        # The newest of each month for 4 months (back to 6 August): December's and
        # November's are recent.
        "20261031": "monthly",
        "20260930": "monthly",
        "20260831": "monthly",
        # The newest of each year for 2 years (back to 6 December 2024): 2026's is recent.
        "20251231": "yearly",
        "20241231": "yearly",
    }
    assert summary(fates, LARAVEL) == (
        "kept 7 recent, 9 daily, 5 weekly, 3 monthly, 2 yearly; deleted 1069"
    )
    assert {f.name for f in fates if f.keep} == oracle(items, NOW, LARAVEL)


@pytest.mark.parametrize("time_zone", ["UTC", "Europe/Paris", "America/Santiago", "Asia/Kolkata"])
@pytest.mark.parametrize("seed", range(4))
def test_it_agrees_with_the_rules_written_plainly_on_random_histories(time_zone, seed):
    rng = random.Random(seed)
    now = NOW + timedelta(days=rng.randrange(800), seconds=rng.randrange(86400))
    # Several backups some days, none on others, at any hour: four years of them.
    items = [
        item(now - timedelta(seconds=rng.randrange(4 * 365 * 86400)), rng.choice(["", "manual"]))
        for _ in range(1500)
    ]
    items = list({i.name: i for i in items}.values())
    rules = Rules(*(rng.randrange(0, n) for n in (10, 40, 12, 14, 4)), 0, time_zone)

    fates = decide(items, now, rules)

    assert {f.name for f in fates if f.keep} == oracle(items, now, rules)
    assert [f.name for f in fates] == [i.name for i in items]  # in the order given


def test_it_keeps_the_newest_of_each_day_while_it_is_younger_than_the_days():
    rules = Rules(recent_days=0, daily_days=3, time_zone="UTC")
    items = [
        item(datetime(2026, 12, 6, 1, tzinfo=UTC)),
        item(datetime(2026, 12, 5, 22, tzinfo=UTC)),
        item(datetime(2026, 12, 5, 2, tzinfo=UTC)),  # not the newest of its day
        item(datetime(2026, 12, 3, 2, 31, tzinfo=UTC)),
        item(datetime(2026, 12, 2, 2, tzinfo=UTC)),  # over 3 days old: out
    ]

    fates = decide(items, NOW, rules)

    utc = ZoneInfo("UTC")
    assert [(f.rule, f.until) for f in fates] == [
        ("daily", datetime(2026, 12, 9, 1, tzinfo=utc)),
        ("daily", datetime(2026, 12, 8, 22, tzinfo=utc)),
        ("", None),
        ("daily", datetime(2026, 12, 6, 2, 31, tzinfo=utc)),  # a minute after the purge
        ("", None),
    ]


def test_it_counts_iso_weeks_from_monday_across_the_new_year():
    # Thursday 31 Dec 2026 and Sunday 3 Jan 2027 are one ISO week (2026-W53); Monday 4 Jan
    # begins the next.
    now = datetime(2027, 1, 5, 12, tzinfo=UTC)
    rules = Rules(recent_days=0, weekly_weeks=2, time_zone="UTC")
    items = [
        item(datetime(2027, 1, 4, 1, tzinfo=UTC)),
        item(datetime(2027, 1, 3, 23, tzinfo=UTC)),
        item(datetime(2026, 12, 31, 2, tzinfo=UTC)),
        item(datetime(2026, 12, 27, 2, tzinfo=UTC)),  # the newest of its week, 9 days old
        item(datetime(2026, 12, 20, 2, tzinfo=UTC)),  # over two weeks old
    ]

    assert [(f.rule, f.until and f.until.date()) for f in decide(items, now, rules)] == [
        ("weekly", date(2027, 1, 18)),
        ("weekly", date(2027, 1, 17)),
        ("", None),
        ("weekly", date(2027, 1, 10)),
        ("", None),
    ]


def test_it_reads_days_and_months_in_the_time_zone():
    # 23:30 UTC on 30 November is 00:30 on 1 December in Paris.
    late = item(datetime(2026, 11, 30, 23, 30, tzinfo=UTC))
    earlier = item(datetime(2026, 11, 30, 12, tzinfo=UTC))
    now = datetime(2027, 1, 10, tzinfo=UTC)

    def monthly(time_zone):
        rules = Rules(recent_days=0, monthly_months=3, time_zone=time_zone)
        return [f.rule for f in decide([late, earlier], now, rules)]

    # In UTC both are November's and the later is its newest; in Paris each is its month's.
    assert monthly("UTC") == ["monthly", ""]
    assert monthly("Europe/Paris") == ["monthly", "monthly"]


def test_it_keeps_the_newest_and_the_newest_own_whatever_their_age():
    rules = Rules(recent_days=7, time_zone="UTC")
    upload = item(NOW - timedelta(days=20), "uploaded")
    own = item(NOW - timedelta(days=30), "pre-migrate")
    older = item(NOW - timedelta(days=31))

    fates = decide([older, upload, own], NOW, rules)

    assert [(f.rule, f.keep) for f in fates] == [
        ("", False),
        ("newest", True),
        ("newest own", True),
    ]
    assert summary(fates, rules) == "kept 1 newest, 1 newest own; deleted 1"


# --- the cap -----------------------------------------------------------------------------------


def test_the_cap_deletes_the_oldest_kept_first_and_says_so():
    rules = Rules(recent_days=30, max_bytes=10 * MB, time_zone="UTC")
    items = nightly(20, size=3 * MB)  # 60 MB kept by the rules

    fates = decide(items, NOW, rules)

    assert [f.keep for f in fates] == [True] * 3 + [False] * 17
    assert all(f.over_cap and f.rule == "recent" for f in fates[3:])
    assert summary(fates, rules) == "kept 3 recent; deleted 17 (17 over the 10 MB cap; 9.0 MB left)"


def test_the_cap_never_deletes_the_newest_nor_the_newest_own():
    rules = Rules(recent_days=30, max_bytes=1 * MB, time_zone="UTC")
    upload = item(NOW - timedelta(hours=1), "uploaded", size=5 * MB)
    own = item(NOW - timedelta(days=1), size=5 * MB)
    older = item(NOW - timedelta(days=2), size=1)

    fates = decide([upload, own, older], NOW, rules)

    assert [(f.keep, f.over_cap) for f in fates] == [(True, False), (True, False), (False, True)]


def test_what_no_rule_keeps_is_not_counted_against_the_cap():
    rules = Rules(recent_days=2, max_bytes=3 * MB, time_zone="UTC")
    items = nightly(10, size=MB)  # 2 recent (2 MB) fit; the 8 others go by the rules

    fates = decide(items, NOW, rules)

    assert sum(f.over_cap for f in fates) == 0
    assert summary(fates, rules) == "kept 2 recent; deleted 8"


def test_the_cap_counts_each_site_file_object_once_however_many_backups_name_it():
    rules = Rules(recent_days=30, max_bytes=12 * MB, time_zone="UTC")
    items = nightly(5, size=MB)  # 5 MB of backups...
    photos = policy.Shared(10 * MB, ((0, 4),))  # ...naming the same 10 MB of site files

    fates = decide(items, NOW, rules, [photos])

    # 15 MB: the three oldest go (each frees its own 1 MB; the files stay with the others).
    assert [f.over_cap for f in fates] == [False, False, True, True, True]
    assert fates.kept_bytes == 12 * MB
    assert summary(fates, rules) == "kept 2 recent; deleted 3 (3 over the 12 MB cap; 12.0 MB left)"
    assert not any(f.over_cap for f in decide(items, NOW, rules))  # 5 MB alone fit


def test_an_object_is_freed_only_with_the_last_kept_backup_that_names_it():
    rules = Rules(recent_days=30, max_bytes=5 * MB, time_zone="UTC")
    items = nightly(4, size=MB)  # positions oldest first: items[3] is 0, items[0] is 3
    # A 10 MB video in the oldest backup and the third, not in the second (removed, put back).
    video = policy.Shared(10 * MB, ((0, 0), (2, 2)))

    fates = decide(items, NOW, rules, [video])

    # 14 MB; the oldest goes (13), the second (12), the third frees the video (1): fits.
    assert [f.over_cap for f in fates] == [False, True, True, True]
    assert fates.kept_bytes == 1 * MB


def test_objects_a_pinned_backup_names_are_never_freed_and_those_no_kept_one_names_not_counted():
    rules = Rules(recent_days=2, max_bytes=5 * MB, time_zone="UTC")
    upload = item(NOW - timedelta(hours=1), "uploaded")  # position 4: the newest
    own = item(NOW - timedelta(hours=2))  # position 3: the newest own, pinned
    middle = [item(NOW - timedelta(hours=h)) for h in (3, 4)]  # positions 2 and 1
    ancient = item(NOW - timedelta(days=10))  # position 0: no rule keeps it
    shared = [
        policy.Shared(10 * MB, ((1, 3),)),  # named by the newest own: stays whatever goes
        policy.Shared(50 * MB, ((0, 0),)),  # named only by what the rules delete
    ]

    fates = decide([upload, own, *middle, ancient], NOW, rules, shared)

    assert [(f.keep, f.over_cap) for f in fates] == [
        (True, False),
        (True, False),
        (False, True),
        (False, True),
        (False, False),
    ]
    assert fates.kept_bytes == 12 * MB  # over the cap still: the two it never deletes


# --- a clock that jumped -------------------------------------------------------------------------


def test_a_backup_from_the_future_never_takes_the_newest_ones_place():
    rules = Rules(recent_days=0, time_zone="UTC")
    ahead = item(NOW + timedelta(days=400))  # made while the clock read next year
    newest = item(NOW - timedelta(hours=1))
    older = item(NOW - timedelta(days=2))

    fates = decide([ahead, newest, older], NOW, rules)

    assert [(f.rule, f.keep) for f in fates] == [
        ("ahead of the clock", True),
        ("newest", True),
        ("", False),
    ]


def test_a_clock_set_back_years_deletes_nothing():
    # The clock now reads 2020: every backup is "from the future" and each is kept.
    items = nightly(50)
    fates = decide(items, datetime(2020, 1, 1, tzinfo=UTC), LARAVEL)

    assert all(f.keep for f in fates)


def test_it_decides_an_empty_folder_and_absurd_dates():
    assert decide([], NOW, LARAVEL) == []
    assert summary([], LARAVEL) == "kept none; deleted 0"
    far = Item(datetime(9999, 12, 31, tzinfo=UTC).timestamp(), "a.20261206T020000Z.bak", 1)
    ancient = Item(-(10**10), "a.20261205T020000Z.bak", 1)

    fates = decide([far, ancient], NOW, Rules(7, 3650, 520, 1200, 100, 0, "UTC"))

    assert [f.keep for f in fates] == [True, True]  # ahead of the clock; the newest


def test_it_takes_whether_the_site_made_a_backup_as_given_not_from_its_name():
    # The engine's one rule (Backup.own) decides that; the policy is told.
    rules = Rules(recent_days=0, time_zone="UTC")
    foreign = item(NOW - timedelta(days=1))._replace(own=False)  # a plain name, not the site's
    own = item(NOW - timedelta(days=2))
    older = item(NOW - timedelta(days=3))

    fates = decide([foreign, own, older], NOW, rules)

    assert [(f.rule, f.keep) for f in fates] == [
        ("newest", True),
        ("newest own", True),
        ("", False),
    ]


def test_it_gives_the_first_rule_that_keeps_a_backup():
    items = nightly(1)  # today's: recent, and the newest of its day, week, month and year

    (fate,) = decide(items, NOW, LARAVEL)

    assert fate.rule == "recent"
    assert fate.until == NOW - timedelta(minutes=30) + timedelta(days=7)


def test_it_is_checked_against_an_oracle_that_tells_one_day_apart():
    """The oracle is no tautology: one daily day fewer is a different answer."""
    items = nightly(60)
    one_day_short = Rules(7, 15, 8, 4, 2, 0, "UTC")

    assert oracle(items, NOW, one_day_short) != oracle(items, NOW, LARAVEL)
