"""The purge: deletes what retention/policy.py decides, says what each rule kept, previews it
(the dry run, the Backups page), and clears what killed processes left behind.

The rules come from the settings here (rules_from_settings); nothing else in the app reads them.
What the folder holds, for the size cap, is retention/usage.py's.
"""

import contextlib
import dataclasses
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import NamedTuple

from backups_app import conf
from backups_app.core.formatting import human_size
from backups_app.engine import backups
from backups_app.media import store as media_store
from backups_app.retention import policy, usage

logger = logging.getLogger(__name__)


def rules_from_settings(recent_setting="STANZA_BACKUP_RETENTION_DAYS", *, cap=True):
    """The retention rules of this site: `recent_setting` is the keep-everything window
    (offsite copies have their own), `cap` whether STANZA_BACKUPS_MAX_MB applies."""
    return policy.Rules(
        recent_days=conf.get(recent_setting),
        daily_days=conf.get("STANZA_KEEP_DAILY_DAYS"),
        weekly_weeks=conf.get("STANZA_KEEP_WEEKLY_WEEKS"),
        monthly_months=conf.get("STANZA_KEEP_MONTHLY_MONTHS"),
        yearly_years=conf.get("STANZA_KEEP_YEARLY_YEARS"),
        max_bytes=conf.get("STANZA_BACKUPS_MAX_MB") * policy.MB if cap else 0,
        time_zone=conf.time_zone(),
    )


class Purge(NamedTuple):
    fates: list  # policy.Fate of every backup the folder held, newest first
    removed: list  # names deleted
    line: str  # what each rule kept and what was deleted
    cleaned: str = ""  # "; removed N site file object(s)...": the site files' clean-up


def purge_old_backups(folder, rules, now):
    """Delete the backups in `folder` that `rules` do not keep at `now`, with their sidecars,
    then the site-file objects no remaining backup names.

    A backup's age is its file's modification time (see policy.decide). The lists of site
    files are read once, under the media lock (no backup records files meanwhile), for the
    size cap and the clean-up alike. Files whose names do not match the backup pattern are
    never touched, except temporary files of backups whose process died, which are removed.
    """
    folder = Path(folder)
    store = media_store.Store(folder)
    has_store = store.root.is_dir()
    with store.lock(exclusive=True) if has_store else contextlib.nullcontext(False) as locked:
        found = backups.scan_backups(folder)  # newest first; only regular files with backup names
        measured = usage.measure(folder, found)
        fates = policy.decide(measured.items[::-1], now, rules, measured.shared)  # newest first
        removed = []
        for fate in fates:
            if fate.keep:
                continue
            try:  # with its sidecars, as every delete
                backups.delete_backup(fate.name, folder)
            except backups.BackupError:  # deleted meanwhile by hand or by another purge
                continue
            removed.append(fate.name)
        left = usage.remaining(measured, removed)
        cleaned = ""
        if has_store:
            usage.record(folder, left)  # for the Backups page
            done = usage.clean_up(store, left) if locked else None  # None: a backup records
            cleaned = media_store.clean_up_words(done, human_size)
    temp_files = backups.remove_abandoned_temp_files(folder)
    line = policy.summary(fates, rules)
    logger.info(
        "purge of %s: %s; removed %d temporary file(s)",
        folder,
        line,
        temp_files,
        extra={
            "event": "purge",
            "removed": len(removed),
            "kept": sum(fate.keep for fate in fates),
            "over_cap": sum(fate.over_cap for fate in fates),
            "kept_bytes": fates.kept_bytes,
            "temp_files": temp_files,
        },
    )
    return Purge(fates, removed, line, cleaned)


def purge_job(now):
    """The local part of the purge-old-backups job; its result line."""
    done = purge_old_backups(backups.backups_dir(), rules_from_settings(), now)
    remove_abandoned_uploads(conf.upload_dir(), now)
    return done.line + done.cleaned


def describe_rules(rules=None):
    """The rules in words, for the Cron page: "Keep every backup for 7 days, the newest of each
    day for 16 days, ...; delete the rest, never the newest one"."""
    rules = rules or rules_from_settings()
    parts = [f"every backup for {_count(rules.recent_days, 'day')}"] if rules.recent_days else []
    for period, count, unit in (
        ("day", rules.daily_days, "day"),
        ("ISO week", rules.weekly_weeks, "week"),
        ("month", rules.monthly_months, "month"),
        ("year", rules.yearly_years, "year"),
    ):
        if count:
            parts.append(f"the newest of each {period} for {_count(count, unit)}")
    kept = f"Keep {', '.join(parts)}" if parts else "Keep only the newest backup"
    cap = f", within {rules.max_mb} MB" if rules.max_bytes else ""
    return f"{kept}{cap}; delete the rest, never the newest one"


def _count(n, unit):
    return f"{n} {unit}{'' if n == 1 else 's'}"


def offsite_fates(copies, now, recent_days=None):
    """{name: policy.Fate} of offsite copies (each with `name` and `size`): the daily, weekly,
    monthly and yearly rules, with STANZA_OFFSITE_RETENTION_DAYS (or `recent_days`) as the
    keep-everything window and no size cap. A copy is dated by its backup's name, when its data
    was captured: copies sent together after an outage keep their own days."""
    rules = rules_from_settings("STANZA_OFFSITE_RETENTION_DAYS", cap=False)
    if recent_days is not None:
        rules = dataclasses.replace(rules, recent_days=recent_days)
    items = [
        policy.Item(_captured(c.name), c.name, c.size, backups.is_own_name(c.name)) for c in copies
    ]
    return {fate.name: fate for fate in policy.decide(items, now, rules)}


def _captured(name):
    stamp = backups.parse_backup_name(name)["stamp"]
    return datetime.strptime(stamp, backups.STAMP_FORMAT).replace(tzinfo=UTC).timestamp()


# --- previews: the dry run and the Backups page -----------------------------------------------


def fates_by_name(listed, now, folder=None):
    """{name: policy.Fate} of every backup in `listed` (the folder's listing) for a page;
    {} when a retention setting is bad (the page's health banner names it). With the size
    cap, what the folder holds comes from the last purge's record (usage.for_page): no list
    of site files is read on a request."""
    try:
        rules = rules_from_settings()
    except conf.ConfigError:
        return {}
    items, shared = listed, ()
    if rules.max_bytes:
        items, shared = usage.for_page(folder or backups.backups_dir(), listed)
    return {fate.name: fate for fate in policy.decide(items, now, rules, shared)}


def preview(now, folder=None):
    """The decisions the purge would make now, one line per backup and the result line;
    nothing is deleted (the lists of site files are read as the purge reads them)."""
    rules = rules_from_settings()
    folder = folder or backups.backups_dir()
    measured = usage.measure(folder, backups.scan_backups(folder))
    fates = policy.decide(measured.items[::-1], now, rules, measured.shared)
    return [
        *fate_lines(fates, rules),
        f"a purge now would have {policy.summary(fates, rules)} (dry run: nothing deleted)",
    ]


def fate_lines(fates, rules):
    """One line per fate: "keep    NAME  daily until 22 Dec 2026"."""
    width = max((len(fate.name) for fate in fates), default=0)
    return [
        f"{'keep' if f.keep else 'delete':6}  {f.name:{width}}  {describe(f, rules)}" for f in fates
    ]


def describe(fate, rules):
    """Why a backup is kept or deleted, in words: "daily until 22 Dec 2026"."""
    if fate.over_cap:
        return f"over the {rules.max_mb} MB cap (else {_reason(fate, rules)})"
    if not fate.keep:
        return "no rule keeps it"
    return _reason(fate, rules)


def _reason(fate, rules):
    words = {
        policy.NEWEST: "the newest backup",
        policy.NEWEST_OWN: "the newest backup the site made itself",
        "under Object Lock": "under Object Lock: left until its retention ends",
    }.get(fate.rule, fate.rule)
    if fate.until is None:
        return words
    from zoneinfo import ZoneInfo

    until = fate.until.astimezone(ZoneInfo(rules.time_zone))
    return f"{words} until {until.day} {until:%b %Y %H:%M}".removesuffix(" 00:00")


UPLOAD_LEFTOVER_AGE = timedelta(hours=6)


def remove_abandoned_uploads(folder, now):
    """Delete uploads a killed web worker left in the upload folder; return how many.

    Django deletes an upload's temporary file when its request ends, so only a worker that
    died mid-upload leaves one. A file not written to for hours belongs to no upload.
    """
    removed = 0
    try:
        entries = list(Path(folder).iterdir())
    except FileNotFoundError:
        return 0
    for path in entries:
        try:
            stat = path.lstat()
        except FileNotFoundError:
            continue
        if path.is_file() and now.timestamp() - stat.st_mtime > UPLOAD_LEFTOVER_AGE.total_seconds():
            path.unlink(missing_ok=True)
            removed += 1
    if removed:
        logger.info("removed %d abandoned upload(s) from %s", removed, folder)
    return removed
