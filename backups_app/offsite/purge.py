"""Offsite retention: delete copies older than STANZA_OFFSITE_RETENTION_DAYS.

One listing of the store, grouped once into copies (each knows its own objects), so the purge
is linear in the objects. Imports: conf, engine.backups, offsite.store, offsite.copies,
offsite.state.
"""

import logging
from datetime import timedelta

from django.utils import timezone

from backups_app import conf
from backups_app.engine.backups import CHECKSUM_SUFFIX
from backups_app.media import offsite as media_offsite
from backups_app.offsite import state
from backups_app.offsite import store as offsite_store
from backups_app.offsite.copies import list_copies, newest_copy, own_copies

logger = logging.getLogger(__name__)


def purge_old_copies(now=None, retention_days=None):
    """Delete offsite copies older than STANZA_OFFSITE_RETENTION_DAYS; return their names.

    A copy's age is that of its newest object. The newest complete copy is always kept, and so
    is the newest one of the site's own backups (as local retention does: an upload after a
    run of failed copies must not leave the store without one), and only objects named like a
    backup or its sidecars are ever deleted.
    """
    now = now or timezone.now()
    if retention_days is None:
        retention_days = conf.get("STANZA_OFFSITE_RETENTION_DAYS")
    store = offsite_store.storage()
    removed = []
    with state.recording() as record:
        copies = list_copies(store)
        record.listed(copies)
        keep = {c.name for c in (newest_copy(copies), newest_copy(own_copies(copies))) if c}
        cutoff = now - timedelta(days=retention_days)
        for copy in sorted(copies.values(), key=lambda c: c.modified):
            if copy.name in keep or (retention_days and copy.modified >= cutoff):
                continue
            # The .sha256 first: once it is gone the copy no longer counts, whatever happens next.
            for member in sorted(copy.members, key=lambda o: not o.endswith(CHECKSUM_SUFFIX)):
                offsite_store.delete(store, member)
                record.deleted(copy.name)
            removed.append(copy.name)
        # Their NAME.media, then the site file objects no remaining copy names.
        media_offsite.purge(store, set(copies) - set(removed), now)
    logger.info(
        "purged %d offsite cop(ies) older than %d day(s)",
        len(removed),
        retention_days,
        extra={"event": "offsite_purge", "removed": len(removed)},
    )
    return removed
