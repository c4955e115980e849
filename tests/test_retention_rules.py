"""Retention as a site sees it (issue 22): the purge job over years of backups on disk, the size
cap, the dry run, the Backups page's "kept" badges and the settings, with time frozen."""

import io
import os
import re
from datetime import UTC, datetime, timedelta

import pytest
from django.core.management import CommandError, call_command

from backups_app import conf
from backups_app.jobs import jobs
from backups_app.models import CronRun
from backups_app.retention import policy, purge

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 12, 6, 2, 30, tzinfo=UTC)  # a Sunday, when the purge runs
LARAVEL = {
    "STANZA_BACKUP_RETENTION_DAYS": 7,
    "STANZA_KEEP_DAILY_DAYS": 16,
    "STANZA_KEEP_WEEKLY_WEEKS": 8,
    "STANZA_KEEP_MONTHLY_MONTHS": 4,
    "STANZA_KEEP_YEARLY_YEARS": 2,
}


def nightly(folder, nights, *, now=NOW, size=100):
    """A backup (with its .sha256) made at 02:00 each night for `nights` nights; their names."""
    made = []
    for n in range(nights):
        when = now - timedelta(minutes=30, days=n)
        name = f"database.sqlite.{when:%Y%m%dT%H%M%SZ}.bak"
        path = folder / name
        with open(path, "wb") as f:
            f.truncate(size)  # sparse: a year of "1 MB" backups costs no disk
        (folder / (name + ".sha256")).write_text(f"{'0' * 64}  {name}\n")
        for p in (path, folder / (name + ".sha256")):
            os.utime(p, (when.timestamp(), when.timestamp()))
        made.append(name)
    return made


@pytest.fixture
def laravel(settings):
    for name, value in LARAVEL.items():
        setattr(settings, name, value)
    return settings


def test_the_purge_job_keeps_a_year_in_a_months_space_and_says_what_each_rule_kept(
    backups_folder, laravel, time_machine
):
    time_machine.move_to(NOW, tick=False)
    made = nightly(backups_folder, 2 * 365)

    run = jobs.run_job("purge-old-backups")

    assert run.status == "success", run.error
    assert run.result == "kept 7 recent, 9 daily, 5 weekly, 3 monthly, 2 yearly; deleted 704"
    left = sorted(p.name for p in backups_folder.iterdir())
    kept = [n for n in made if n[16:24] in KEPT_AT_NOW]
    assert left == sorted(kept + [n + ".sha256" for n in kept])


KEPT_AT_NOW = {
    *(f"202612{d:02}" for d in range(1, 7)),
    *(f"202611{d:02}" for d in range(21, 31)),
    *("20261115", "20261108", "20261101", "20261025", "20261018"),  # weekly
    *("20261031", "20260930", "20260831"),  # monthly: 4 months back to 6 August
    *("20251231", "20241231"),  # yearly: 2 years back to 6 December 2024
}


def test_a_month_later_the_same_history_has_moved_on_by_the_rules(
    backups_folder, laravel, time_machine
):
    time_machine.move_to(NOW, tick=False)
    nightly(backups_folder, 2 * 365)
    jobs.run_job("purge-old-backups")
    time_machine.move_to(NOW + timedelta(days=31), tick=False)  # no backup in between

    run = jobs.run_job("purge-old-backups")

    # Nothing is recent, nor younger than 16 days; 8 weeks reach back to 11 November, 4 months
    # to 6 September, 2 years to 6 January 2025.
    assert run.result == "kept 4 weekly, 3 monthly, 1 yearly; deleted 18"
    assert sorted(p.name[16:24] for p in backups_folder.glob("*.bak")) == [
        "20251231",  # 2025's newest (2026's is the newest backup, kept weekly)
        "20260930",  # the newest of September, October and November
        "20261031",
        "20261115",  # the newest of the weeks of 9, 16, 23 and 30 November
        "20261122",
        "20261129",
        "20261130",
        "20261206",
    ]


def test_the_cap_deletes_the_oldest_first_and_the_result_says_so(
    backups_folder, settings, time_machine
):
    time_machine.move_to(NOW, tick=False)
    settings.STANZA_BACKUP_RETENTION_DAYS = 30
    settings.STANZA_BACKUPS_MAX_MB = 5
    made = nightly(backups_folder, 10, size=policy.MB)

    run = jobs.run_job("purge-old-backups")

    # Five 1 MB backups with their .sha256 beside them are more than 5 MB: four fit.
    assert run.result == "kept 4 recent; deleted 6 (6 over the 5 MB cap; 4.0 MB left)"
    assert sorted(p.name for p in backups_folder.glob("*.bak")) == sorted(made[:4])


def test_the_dry_run_prints_every_decision_and_deletes_nothing(
    backups_folder, laravel, time_machine
):
    time_machine.move_to(NOW, tick=False)
    made = nightly(backups_folder, 40)
    before = sorted(p.name for p in backups_folder.iterdir())
    out = io.StringIO()

    call_command("runjob", "purge-old-backups", "--dry-run", stdout=out)

    lines = out.getvalue().splitlines()
    assert len(lines) == 41
    assert lines[0].split() == ["keep", made[0], "recent", "until", "13", "Dec", "2026", "02:00"]
    assert lines[7].split() == ["keep", made[7], "daily", "until", "15", "Dec", "2026", "02:00"]
    assert lines[17].split() == ["delete", made[17], "no", "rule", "keeps", "it"]
    assert lines[-1] == (
        "a purge now would have kept 7 recent, 9 daily, 3 weekly, 1 monthly; deleted 20 "
        "(dry run: nothing deleted)"
    )
    assert sorted(p.name for p in backups_folder.iterdir()) == before
    assert not CronRun.objects.exists()


def test_the_dry_run_says_which_backups_the_cap_would_delete(
    backups_folder, settings, time_machine
):
    time_machine.move_to(NOW, tick=False)
    settings.STANZA_BACKUPS_MAX_MB = 2
    made = nightly(backups_folder, 3, size=policy.MB)

    lines = purge.preview(NOW)

    assert lines[2].split()[:2] == ["delete", made[2]]
    assert lines[2].endswith("over the 2 MB cap (else recent until 11 Dec 2026 02:00)")


def test_a_job_without_a_dry_run_says_so(data_dir):
    with pytest.raises(CommandError, match="daily-backup has no dry run"):
        call_command("runjob", "daily-backup", "--dry-run")
    assert not CronRun.objects.exists()


def fate_texts(html):
    """The text of each "deleted by the next purge" badge in `html`, without its tags."""
    found = re.findall(r'<div class="stanza-missing stanza-kept"[^>]*>(.*?)</div>', html)
    return [" ".join(re.sub(r"<[^>]+>", "", text).split()) for text in found]


def test_the_backups_page_shows_each_backups_fate(
    staff_client, backups_folder, laravel, time_machine
):
    time_machine.move_to(NOW + timedelta(hours=18), tick=False)  # 20:30: the purge is at 02:30
    laravel.TIME_ZONE = "UTC"
    made = nightly(backups_folder, 40)

    html = staff_client.get("/admin/backups/").content.decode()

    assert 'data-rule="recent">kept: recent until 13 Dec</div>' in html
    assert 'data-rule="daily">kept: daily until 15 Dec</div>' in html  # 29 November's
    assert 'data-rule="weekly">kept: weekly until 10 Jan 2027</div>' in html  # 15 November's
    assert 'data-rule="monthly">kept: monthly until 28 Feb 2027</div>' in html  # 31 October's
    # The one time format (the `when` filter): date, time, zone, and how far off.
    assert (
        fate_texts(html)
        == ["deleted by the next purge at 2026-12-07 02:30:00 UTC (6 hours from now)"] * 20
    )
    assert 'title="2026-12-07 02:30:00 UTC"' in html  # UTC on hover; the browser shows its zone
    # Each row's badge is its own backup's.
    row = (
        html.replace("<wbr>", "").split(made[17], 1)[1].split("</tr>", 1)[0]
    )  # names break at dots
    assert fate_texts(row) == [fate_texts(html)[0]]


def test_the_page_names_the_cap_and_a_purge_more_than_a_day_away(
    staff_client, backups_folder, settings, time_machine
):
    time_machine.move_to(NOW, tick=False)
    settings.STANZA_PURGE_SCHEDULE = "30 2 * * 0"  # Sundays: the next is a week away
    settings.STANZA_BACKUPS_MAX_MB = 1
    nightly(backups_folder, 3, size=policy.MB)

    html = staff_client.get("/admin/backups/").content.decode()

    over_cap = "over the 1 MB cap: deleted by the next purge at 2026-12-13 02:30:00 UTC"
    assert fate_texts(html) == [f"{over_cap} (1 week from now)"] * 2
    assert "kept: recent until" in html


def test_the_page_shows_the_newest_kept_whatever_its_age(
    staff_client, backups_folder, settings, time_machine
):
    time_machine.move_to(NOW + timedelta(days=10), tick=False)
    nightly(backups_folder, 2)

    html = staff_client.get("/admin/backups/").content.decode()

    assert 'data-rule="newest">kept: the newest backup</div>' in html
    assert fate_texts(html) == [
        "deleted by the next purge at 2026-12-17 02:30:00 UTC (1 day from now)"
    ]


# --- settings -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "STANZA_KEEP_DAILY_DAYS",
        "STANZA_KEEP_WEEKLY_WEEKS",
        "STANZA_KEEP_MONTHLY_MONTHS",
        "STANZA_KEEP_YEARLY_YEARS",
        "STANZA_BACKUPS_MAX_MB",
        "STANZA_BACKUP_RETENTION_DAYS",
        "STANZA_OFFSITE_RETENTION_DAYS",
        "STANZA_OFFSITE_LOCK_DAYS",
    ],
)
@pytest.mark.parametrize("value", ["-1", "10000000000000", "two"])
def test_a_negative_or_absurd_retention_setting_is_an_error_naming_it(
    name, value, monkeypatch, settings
):
    monkeypatch.setenv(name, value)

    with pytest.raises(conf.ConfigError, match=f"^{name}="):
        conf.check_environment()
    assert [p for p in conf.check_all() if p.startswith(f"{name}=")]


def test_the_lock_mode_is_governance_or_compliance(monkeypatch):
    assert conf.get("STANZA_OFFSITE_LOCK_MODE") == "GOVERNANCE"
    monkeypatch.setenv("STANZA_OFFSITE_LOCK_MODE", "compliance")
    assert conf.get("STANZA_OFFSITE_LOCK_MODE") == "COMPLIANCE"
    monkeypatch.setenv("STANZA_OFFSITE_LOCK_MODE", "forever")

    with pytest.raises(conf.ConfigError, match="^STANZA_OFFSITE_LOCK_MODE='forever' must be "):
        conf.check_environment()


def test_the_retention_settings_default_to_the_seeds_rule(settings):
    rules = purge.rules_from_settings()

    assert rules == policy.Rules(7, 0, 0, 0, 0, 0, settings.TIME_ZONE)
    assert purge.describe_rules(rules) == (
        "Keep every backup for 7 days; delete the rest, never the newest one"
    )
    assert purge.describe_rules(policy.Rules(7, 16, 8, 4, 2, 5000 * policy.MB)) == (
        "Keep every backup for 7 days, the newest of each day for 16 days, the newest of each "
        "ISO week for 8 weeks, the newest of each month for 4 months, the newest of each year "
        "for 2 years, within 5000 MB; delete the rest, never the newest one"
    )
