"""What the backups folder holds, as the size cap (STANZA_BACKUPS_MAX_MB) counts it: each backup
with its sidecars, and once each, the site-file objects its NAME.media names.

The purge reads every list once (`measure`), while it holds the media lock, and that one read
serves both the cap (policy.Shared: the objects grouped by the backups that name them, as runs
of backups in time order, so deciding is linear in the groups, not in the files) and the
clean-up of the objects no remaining list names (`clean_up`). It records what it measured in
`BACKUPS_DIR/media/usage.json`, which the Backups page reads instead of the lists (`for_page`):
a backup made since that purge counts its own size and sidecars and the bytes its files added
(its NAME.json), and is taken to name what the newest backup of the record named; the next
purge reads its list. Imports: engine, media.lists, media.store, retention.policy.
"""

import contextlib
import json
import os
import threading
import uuid
from pathlib import Path
from typing import NamedTuple

from backups_app.engine import backups
from backups_app.media import lists
from backups_app.media import store as media_store
from backups_app.retention import policy

RECORD = "usage.json"


class Usage(NamedTuple):
    items: list  # policy.Item of every backup, oldest first (policy.chronological)
    shared: list  # policy.Shared: the objects, grouped by the backups naming them
    runs: dict  # {sha256: [(first, last), ...]}: which backups name each object
    listed_bytes: list  # the bytes of each backup's files (its list's total), by position
    error: str = ""  # a list that cannot be read ("" when every one was read)


def sidecar_bytes(path):
    """The bytes of the sidecars beside the backup at `path`."""
    total = 0
    for sidecar in backups.sidecars(path):
        with contextlib.suppress(OSError):
            total += os.lstat(sidecar).st_size
    return total


def measure(folder, found):
    """The Usage of the backups `found` in `folder` (engine listing), reading each list once."""
    folder = Path(folder)
    items, listed_bytes, error = [], [], ""
    before = set()  # the contents the backup before names
    opened = {}  # {sha256: where its present run of backups began}
    runs, sizes = {}, {}
    for position, listed in enumerate(policy.chronological(found)):
        path = folder / listed.name
        items.append(
            policy.Item(listed.mtime, listed.name, listed.size + sidecar_bytes(path), listed.own)
        )
        named = lists.Named({}, 0)
        if lists.exists(path):
            try:
                named = lists.named(lists.list_path(path))
            except lists.ListError as err:  # counted as naming nothing; nothing cleaned up
                error = error or str(err)
        listed_bytes.append(named.bytes)
        for sha in named.sizes.keys() - before:  # set arithmetic in C: a few ms per 10k files
            opened[sha] = position
            sizes.setdefault(sha, named.sizes[sha])
        for sha in before - named.sizes.keys():
            runs.setdefault(sha, []).append((opened.pop(sha), position - 1))
        before = set(named.sizes)
    for sha, first in opened.items():
        runs.setdefault(sha, []).append((first, len(items) - 1))
    groups = {}
    for sha, its_runs in runs.items():
        key = tuple(its_runs)
        groups[key] = groups.get(key, 0) + sizes[sha]
    shared = [policy.Shared(size, key) for key, size in groups.items()]
    return Usage(items, shared, runs, listed_bytes, error)


def remaining(usage, removed):
    """The Usage of what is left once the backups named in `removed` are deleted."""
    gone = set(removed)
    keep = [p for p, item in enumerate(usage.items) if item.name not in gone]
    moved = _moves(len(usage.items), keep)
    runs = {}
    for sha, its_runs in usage.runs.items():
        left = [r for r in (moved(first, last) for first, last in its_runs) if r]
        if left:
            runs[sha] = left
    shared = []
    for size, its_runs in usage.shared:
        left = tuple(r for r in (moved(first, last) for first, last in its_runs) if r)
        if left:
            shared.append(policy.Shared(size, left))
    items = [usage.items[p] for p in keep]
    return Usage(items, shared, runs, [usage.listed_bytes[p] for p in keep], usage.error)


def _moves(count, keep):
    """A function mapping a run (first, last) of positions among `count` backups to the run of
    those of them at the positions `keep` (in their new positions), or None when none is."""
    new = {old: n for n, old in enumerate(keep)}
    after, before = [None] * (count + 1), [None] * count  # the next / last one kept
    for p in range(count - 1, -1, -1):
        after[p] = p if p in new else after[p + 1]
    for p in range(count):
        before[p] = p if p in new else (before[p - 1] if p else None)

    def moved(first, last):
        a, b = after[first], before[last]
        if a is None or b is None or a > b:
            return None
        return (new[a], new[b])

    return moved


def clean_up(store, usage):
    """Delete the objects no backup of `usage` names (the caller holds the media lock
    exclusively); what media.store.sweep returns."""
    if usage.error:
        raise media_store.StoreError(f"no site file was cleaned up: {usage.error}")
    return media_store.sweep(store, usage.runs.keys(), sum(usage.listed_bytes))


# --- the record the Backups page reads ---------------------------------------------------------


def record(folder, usage):
    """Keep what the purge measured for the page (in the media folder; never fails the purge)."""
    root = Path(folder) / media_store.FOLDER
    if not root.is_dir():
        return
    data = {
        "names": [item.name for item in usage.items],
        "sizes": [item.size for item in usage.items],
        "shared": [[size, [n for run in runs for n in run]] for size, runs in usage.shared],
    }
    temp = root / f".{RECORD}.{uuid.uuid4().hex}"
    with contextlib.suppress(OSError):
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with open(fd, "w") as f:
            json.dump(data, f, separators=(",", ":"))
        os.replace(temp, root / RECORD)
    with contextlib.suppress(OSError):
        temp.unlink()


_read = {}  # {path: (signature, data)}: the record parsed once while it is unchanged
_reading = threading.Lock()


def _recorded(folder):
    path = Path(folder) / media_store.FOLDER / RECORD
    try:
        with backups.open_regular(path) as f:
            st = os.fstat(f.fileno())
            signature = (st.st_ino, st.st_size, st.st_mtime_ns)
            with _reading:
                if _read.get(path, (None,))[0] == signature:
                    return _read[path][1]
            data = json.loads(f.read())
        names, sizes = data["names"], data["sizes"]
        shared = [
            (int(size), tuple(zip(map(int, flat[::2]), map(int, flat[1::2]), strict=True)))
            for size, flat in data["shared"]
        ]
        data = (list(names), [int(s) for s in sizes], shared)
    except (OSError, ValueError, TypeError, KeyError):
        return None
    with _reading:
        _read[path] = (signature, data)
    return data


def for_page(folder, found):
    """(items, shared) for policy.decide on the Backups page, from the purge's record: no list
    is read (see the module's docstring for the backups made since)."""
    chron = policy.chronological(found)
    has_store = (Path(folder) / media_store.FOLDER).is_dir()
    recorded = _recorded(folder) if has_store else None
    names, sizes, shared = recorded if recorded else ([], [], [])
    at = {item.name: p for p, item in enumerate(chron)}
    sized = dict(zip(names, sizes, strict=False))
    items, extra = [], []
    for p, listed in enumerate(chron):
        size = sized.get(listed.name)
        if size is None:  # made since the last purge (or before any): its sidecars and new files
            path = Path(folder) / listed.name
            size = listed.size + sidecar_bytes(path)
            media = (backups.read_manifest(path) or {}).get("media") if has_store else None
            new = media.get("new_bytes") if isinstance(media, dict) else 0
            if isinstance(new, int) and new > 0:
                extra.append(policy.Shared(new, ((p, len(chron) - 1),)))
        items.append(policy.Item(listed.mtime, listed.name, size, listed.own))
    keep = [k for k, name in enumerate(names) if name in at]
    moved = _moves(len(names), keep)
    newest = len(chron) - 1
    last_recorded = len(names) - 1
    page_shared = []
    for size, runs in shared:
        left = []
        for first, last in runs:
            run = moved(first, last) if 0 <= first <= last < len(names) else None
            if run is None:
                continue
            # positions among the kept recorded ones -> positions in today's listing
            a, b = at[names[keep[run[0]]]], at[names[keep[run[1]]]]
            left.append((a, newest if last == last_recorded else b))
        if left:
            page_shared.append(policy.Shared(size, tuple(left)))
    return items, page_shared + extra
