"""The offsite restore drill: prove the newest offsite copy of the site's own backups by
fetching it (download, decrypt, SHA-256) and running the local drill on it.

The verdict goes into the copy's `NAME.json` in the store, as the local drill writes the local
one, and into the offsite record the pages read (offsite.state).
Imports: engine.backups, restore.drill, offsite.
"""

import contextlib
import json

from django.utils import timezone

from backups_app.engine import backups
from backups_app.engine.backups import MANIFEST_SUFFIX, BackupError
from backups_app.offsite import state
from backups_app.offsite import store as offsite_store
from backups_app.offsite.copies import list_copies, newest_copy, own_copies
from backups_app.offsite.fetch import fetched, stored_manifest
from backups_app.offsite.store import OffsiteError
from backups_app.restore import drill


def drill_newest_copy():
    """Prove the newest offsite copy: download, decrypt, hash, restore into scratch, check."""
    store = offsite_store.storage()
    # The drill proves a backup the site made itself, like the local drill.
    copy = newest_copy(own_copies(list_copies(store)))
    if copy is None:
        raise drill.DrillError("no offsite copy to verify")
    error = None
    try:
        with fetched(copy.name, store) as path:
            try:
                summary = drill.verify_latest_backup(path.parent)
            except BackupError as err:
                error = err
            result = backups.read_manifest(path) or {}
            if result.get("drill"):
                offsite_store.put_small(store, copy.name + MANIFEST_SUFFIX, _json(result))
                state.record_drill(copy.name, result["drill"])
    except OffsiteError as err:
        error = err
        with contextlib.suppress(BackupError):
            _record_failure(store, copy, str(err))
    if error is not None:
        raise drill.DrillError(f"offsite drill of {copy.name} failed: {error}") from error
    how = "downloaded, decrypted" if copy.encrypted else "downloaded"
    return f"offsite {how}, SHA-256 ok: {summary}"


def _record_failure(store, copy, problem):
    """Record a drill that could not even fetch the copy, in its NAME.json in the store."""
    verdict = {"at": timezone.now().isoformat(), "ok": False, "problems": [problem]}
    state.record_drill(copy.name, verdict)
    data = stored_manifest(store, copy.name)
    data["drill"] = verdict
    offsite_store.put_small(store, copy.name + MANIFEST_SUFFIX, _json(data))


def _json(data):
    return (json.dumps(data, indent=2) + "\n").encode()
