"""What is offsite: the store's objects grouped into copies of backups.

A backup is offsite once its `.sha256` is in the store (written last, after the store confirmed
the data), so one listing says which copies are complete. Imports: engine.backups, offsite.store.
"""

from dataclasses import dataclass
from datetime import UTC, datetime

from django.utils import timezone

from backups_app.engine import backups
from backups_app.engine.backups import CHECKSUM_SUFFIX, MANIFEST_SUFFIX
from backups_app.offsite import store as offsite_store
from backups_app.offsite.store import OffsiteError

ENCRYPTED_SUFFIX = ".age"


@dataclass(frozen=True)
class OffsiteCopy:
    """One backup's objects in the store."""

    name: str  # the backup's name (without .age)
    key: str | None  # the object holding its data: NAME or NAME.age; None when only sidecars
    size: int
    copied: datetime | None  # when its .sha256 was written: the copy was confirmed then
    modified: datetime  # the newest of its objects
    members: tuple = ()  # the names of all its objects

    @property
    def complete(self):
        return self.key is not None and self.copied is not None

    @property
    def encrypted(self):
        return bool(self.key and self.key.endswith(ENCRYPTED_SUFFIX))


def backup_name_of(object_name):
    """(backup name, role) of an object: role "data", "sha256" or "json"; None if not ours."""
    for suffix, role in ((CHECKSUM_SUFFIX, "sha256"), (MANIFEST_SUFFIX, "json")):
        if object_name.endswith(suffix):
            base = object_name[: -len(suffix)]
            return (base, role) if backups.is_backup_name(base) else None
    if object_name.endswith(ENCRYPTED_SUFFIX):
        base = object_name[: -len(ENCRYPTED_SUFFIX)]
        return (base, "data") if backups.is_backup_name(base) else None
    return (object_name, "data") if backups.is_backup_name(object_name) else None


def list_copies(store=None, objects=None):
    """{backup name: OffsiteCopy} of every backup with an object in the store (one pass)."""
    store = store or offsite_store.storage()
    objects = offsite_store.list_objects(store) if objects is None else objects
    grouped = {}
    for object_name, (size, modified) in objects.items():
        parsed = backup_name_of(object_name)
        if parsed is not None:
            grouped.setdefault(parsed[0], {})[object_name] = (parsed[1], size, modified)
    copies = {}
    for name, members in grouped.items():
        data = sorted(o for o, (role, _s, _m) in members.items() if role == "data")
        key = name if name in data else (data[0] if data else None)  # plain first
        checksum = members.get(name + CHECKSUM_SUFFIX)
        copies[name] = OffsiteCopy(
            name=name,
            key=key,
            size=members[key][1] if key else 0,
            copied=aware(checksum[2]) if checksum else None,
            modified=max(aware(m) for (_r, _s, m) in members.values()),
            members=tuple(sorted(members)),
        )
    return copies


def newest_copy(copies):
    """The most recently confirmed complete copy, or None."""
    complete = [c for c in copies.values() if c.complete]
    return max(complete, key=lambda c: (c.copied, c.name), default=None)


def own_copies(copies):
    """The copies of backups this site made itself: any label but `uploaded`."""
    return {name: copy for name, copy in copies.items() if backups.is_own_name(name)}


def find_copy(name, store=None):
    """The complete offsite copy of backup `name` (one listing request of its own objects);
    OffsiteError when there is none."""
    if not backups.is_backup_name(name):
        raise OffsiteError(f"{name!r} is not a backup file name")
    store = store or offsite_store.storage()
    copy = list_copies(store, offsite_store.list_objects(store, starting=name)).get(name)
    if copy is None or not copy.complete:
        raise OffsiteError(f"{name} has no complete offsite copy in {offsite_store.location()}")
    return copy


def aware(moment):
    return moment if timezone.is_aware(moment) else moment.replace(tzinfo=UTC)
