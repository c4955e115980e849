"""Offsite retention: delete the copies no retention rule keeps (retention.purge.offsite_fates:
the local daily, weekly, monthly and yearly rules, with STANZA_OFFSITE_RETENTION_DAYS as the
keep-everything window), never one still under S3 Object Lock (offsite.lock).

One listing of the store, grouped once into copies (each knows its own objects), so the purge
is linear in the objects. Imports: conf, engine.backups, retention.purge, offsite.store,
offsite.copies, offsite.state, offsite.lock.
"""

import logging

from django.utils import timezone

from backups_app import conf
from backups_app.engine.backups import CHECKSUM_SUFFIX
from backups_app.offsite import lock, state
from backups_app.offsite import media as media_offsite
from backups_app.offsite import store as offsite_store
from backups_app.offsite.copies import list_copies, newest_copy, own_copies
from backups_app.offsite.store import store_errors
from backups_app.retention import policy
from backups_app.retention import purge as retention

logger = logging.getLogger(__name__)


class Purged(list):
    """The names of the copies deleted; `locked`: how many the purge had to leave under Object
    Lock; `line`: what each rule kept, for the job's result."""

    locked = 0
    line = ""


def purge_old_copies(now=None, retention_days=None):
    """Delete the offsite copies no retention rule keeps; return their names (a Purged).

    A copy is dated by its backup's name (when the data was captured: copies sent together
    after an outage keep their own days). The newest complete copy is always kept, and so is
    the newest one of the site's own backups (as local retention does: an upload after a run
    of failed copies must not leave the store without one). A copy any of whose objects is
    retained by Object Lock is left alone and counted. Only objects named like a backup or its
    sidecars are ever deleted; on a locked bucket, every version of them.
    """
    now = now or timezone.now()
    if retention_days is None:
        retention_days = conf.get("STANZA_OFFSITE_RETENTION_DAYS")
    store = offsite_store.storage()
    removed = Purged()
    with state.recording() as record:
        copies = list_copies(store)
        record.listed(copies)
        fates = decide(copies, now, retention_days)
        for copy in sorted(copies.values(), key=lambda c: c.modified):
            if fates[copy.name].keep:
                continue
            if _retained(store, copy, now):
                fates[copy.name] = policy.Fate(copy.name, LOCKED)  # not counted as kept
                removed.locked += 1
                continue
            # The .sha256 first: once it is gone the copy no longer counts, whatever happens next.
            for member in sorted(copy.members, key=lambda o: not o.endswith(CHECKSUM_SUFFIX)):
                offsite_store.delete(store, member)
                record.deleted(copy.name)
            removed.append(copy.name)
        # Their NAME.media, then the site file objects no remaining copy names.
        media_offsite.purge(store, set(copies) - set(removed), now)
    removed.line = policy.summary(fates.values()) + (
        f"; left {removed.locked} locked until their retention ends" if removed.locked else ""
    )
    logger.info(
        "offsite purge: %s",
        removed.line,
        extra={"event": "offsite_purge", "removed": len(removed), "locked": removed.locked},
    )
    return removed


LOCKED = "under Object Lock"


def decide(copies, now, retention_days=None):
    """{name: policy.Fate} of every copy: retention's rules (retention.purge.offsite_fates),
    and the newest complete copy and the newest complete own copy kept whatever their age."""
    keep = {c.name for c in (newest_copy(copies), newest_copy(own_copies(copies))) if c}
    fates = retention.offsite_fates(copies.values(), now, retention_days)
    for name in keep:  # the newest complete copies, whatever is newer but incomplete
        fates[name] = fates[name] if fates[name].keep else policy.Fate(name, policy.NEWEST)
    return fates


def _retained(store, copy, now):
    with store_errors(store, f"read the retention of {copy.name}"):
        return lock.retained(store, copy.members, now)


def delete_copy(name, now=None):
    """Delete the offsite copy of backup `name` now (a person asked for it on the delete page):
    its objects (the .sha256 first, as the purge does) and its NAME.media; the site file
    objects no remaining copy names go with the next purge. OffsiteError while Object Lock
    still retains any of it. Returns the result line."""
    now = now or timezone.now()
    store = offsite_store.storage()
    with state.recording() as record:
        objects = offsite_store.list_objects(store, starting=name)
        copy = list_copies(store, objects).get(name)
        lists = {media_offsite.list_key(name, encrypted) for encrypted in (False, True)}
        members = [*(copy.members if copy else ()), *(key for key in objects if key in lists)]
        if not members:
            record.deleted(name)
            return f"no offsite copy of {name} was left in {offsite_store.location()}"
        with store_errors(store, f"read the retention of {name}"):
            locked = lock.retained(store, members, now)
        if locked:
            raise offsite_store.OffsiteError(
                f"the offsite copy of {name} is under Object Lock, which refuses every delete "
                "until its retention ends; offsite retention deletes it after that"
            )
        for member in sorted(members, key=lambda o: not o.endswith(CHECKSUM_SUFFIX)):
            offsite_store.delete(store, member)
            record.deleted(name)
    return f"deleted the offsite copy of {name} from {offsite_store.location()}"


def preview(now):
    """What the offsite purge would do now, for the dry run: a line per copy (newest first; one
    still under Object Lock says so) and the result line; nothing is deleted."""
    store = offsite_store.storage()
    copies = list_copies(store)
    fates = decide(copies, now)
    for name, fate in fates.items():
        if not fate.keep and _retained(store, copies[name], now):
            fates[name] = policy.Fate(name, LOCKED)
    fates = sorted(fates.values(), key=lambda f: f.name, reverse=True)
    rules = retention.rules_from_settings("STANZA_OFFSITE_RETENTION_DAYS", cap=False)
    locked = sum(fate.rule == LOCKED for fate in fates)
    left = f"; left {locked} locked until their retention ends" if locked else ""
    return [
        f"offsite copies in {offsite_store.location()}:",
        *retention.fate_lines(fates, rules),
        f"offsite, a purge now would have {policy.summary(fates)}{left} (dry run: nothing deleted)",
    ]
