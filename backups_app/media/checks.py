"""The drill's check of a backup's site files: every object it names is in the store, and its
SHA-256 is read back, all of them when the store is small, else a rotating seventh a day, so
a daily drill re-reads every object at least once a week."""

import datetime
import logging

from backups_app.media import lists
from backups_app.media.store import Store, sha256_file

logger = logging.getLogger(__name__)

SHARES = 7
# Below both, every object is re-read every night.
READ_ALL_BYTES = 256 * 1024 * 1024
READ_ALL_OBJECTS = 1000


def in_todays_share(sha, day):
    return int(sha[:8], 16) % SHARES == day.toordinal() % SHARES


def check_files(backup_path, backups_folder, day=None):
    """(problems, note) of a backup's files; ([], "") when it has no list."""
    if not lists.exists(backup_path):
        return [], ""
    day = day or datetime.date.today()
    store = Store(backups_folder)
    objects, files = {}, 0
    try:
        for entry in lists.read(lists.list_path(backup_path)):
            files += 1
            objects[entry.sha256] = entry.size
    except lists.ListError as err:
        return [f"the list of site files cannot be read: {err}"], ""
    read_all = sum(objects.values()) <= READ_ALL_BYTES or len(objects) <= READ_ALL_OBJECTS
    missing, damaged, reread = [], [], 0
    for sha, size in objects.items():
        if not store.has(sha, size):
            missing.append(sha)
            continue
        if read_all or in_todays_share(sha, day):
            reread += 1
            try:
                actual = sha256_file(store.path(sha))
            except OSError:
                actual = ""
            if actual != sha:
                damaged.append(sha)
    problems = []
    if missing:
        problems.append(f"{len(missing)} stored site file content(s) missing (e.g. {missing[0]})")
    if damaged:
        problems.append(
            f"{len(damaged)} stored site file content(s) do not match their SHA-256 "
            f"(e.g. {damaged[0]})"
        )
    share = "all" if read_all else f"today's seventh ({reread} of {len(objects)}; each weekly)"
    note = (
        f"site files: {files} listed, {len(objects) - len(missing)} of {len(objects)} stored "
        f"contents present, {share} re-read" + ("" if problems else ", all match")
    )
    return problems, note


def check_into(backup_path, backups_folder, problems, notes):
    """The drill's hook: add the files' problems and note to the drill's own."""
    found, note = check_files(backup_path, backups_folder)
    problems.extend(found)
    if note:
        notes.append(note)
