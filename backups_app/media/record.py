"""Record the site's files with a backup: scan the media folder, store new contents, list all.

A file whose size, modification time and inode match the last list is neither read nor copied:
its entry is carried over (its object checked present by a stat). A new or changed file is
read once: hashed and, when its content is new, copied in the same pass. A file that changes
while it is read is read again (a few times), then recorded as read and named in the result:
its hash always matches its object. Symlinks, FIFOs, sockets and devices are skipped and
counted, never followed. A file or folder that cannot be read is named in the result; the
backup is still made.
"""

import contextlib
import hashlib
import logging
import os
import stat
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from backups_app import conf
from backups_app.media import lists
from backups_app.media.store import CHUNK, SMALL, Store, WriteFailed, write_all, writing
from backups_app.media.store import lists_in as store_lists

logger = logging.getLogger(__name__)

WORKERS = 4  # hashing and copying release the GIL: both cores, and I/O overlapped
IN_FLIGHT = 2 * WORKERS
RETRIES = 3
# A file modified this close to its stat may change again within the same timestamp tick:
# its entry gets no inode, so the next backup reads it again instead of trusting the stat.
FRESH_NS = 2_000_000_000
NAMED_MAX = 20  # unreadable / changing files named in the result (all are counted)


@dataclass
class Summary:
    files: int = 0
    bytes: int = 0
    new_bytes: int = 0
    new_objects: int = 0
    read: int = 0  # files read (not taken from the stat cache)
    skipped: int = 0  # symlinks, FIFOs, sockets, devices
    unreadable: list = field(default_factory=list)
    unreadable_count: int = 0
    changing: list = field(default_factory=list)  # changed while read (recorded as read)
    missing: bool = False  # no media folder: an empty list

    def as_manifest(self):
        data = {
            "files": self.files,
            "bytes": self.bytes,
            "new_bytes": self.new_bytes,
            "new_objects": self.new_objects,
            "read": self.read,
            "skipped": self.skipped,
        }
        if self.unreadable_count:
            data["unreadable"] = self.unreadable[:NAMED_MAX]
            data["unreadable_count"] = self.unreadable_count
        if self.changing:
            data["changed_while_read"] = self.changing[:NAMED_MAX]
        return data

    def cannot_read(self, name, reason):
        self.unreadable_count += 1
        if len(self.unreadable) < NAMED_MAX:
            self.unreadable.append(f"{name}: {reason}")
        logger.warning("site file %s not backed up: %s", name, reason)


def words(summary, size=str):
    """'; 1234 site files (12.0 MB new)' for a job's result line, from NAME.json's summary."""
    if not isinstance(summary, dict) or "files" not in summary:
        return ""
    text = f"; {summary['files']} site files ({size(summary.get('new_bytes', 0))} new"
    if summary.get("unreadable_count"):
        text += f"; {summary['unreadable_count']} could not be read: {summary['unreadable'][0]}"
    return text + ")"


def stat_cache(list_path):
    """{path: Entry} from the last list, for the entries whose stat can be trusted."""
    cache = {}
    if list_path is None:
        return cache
    try:
        for entry in lists.read(list_path):
            if entry.ino:
                cache[entry.path] = entry
    except lists.ListError as err:  # no cache: every file is read (and nothing is lost)
        logger.warning("the last list of site files cannot be read, reading every file: %s", err)
        return {}
    return cache


def walk_key(path):
    """Where `walk` yields `path`: a folder's files (by name) before its subfolders (by name)."""
    *folders, name = path.split(b"/")
    return (*((1, folder) for folder in folders), (0, name))


class LastList:
    """The last list, read alongside the walk in one pass: both are in walk order, so memory
    stays flat whatever the number of files. A list in another order only costs reads."""

    def __init__(self, list_path):
        self.entries = lists.read(list_path) if list_path else iter(())
        self.current = self.key = None
        self._advance()

    def _advance(self):
        try:
            self.current = next(self.entries, None)
        except lists.ListError as err:  # from here on every file is read (nothing is lost)
            logger.warning("the last list of site files cannot be read, reading the rest: %s", err)
            self.current = None
        self.key = walk_key(self.current.path) if self.current is not None else None

    def get(self, path):
        key = walk_key(path)
        while self.current is not None and self.key < key:
            self._advance()
        return self.current if self.current is not None and self.current.path == path else None


def walk(top, skip_dir, summary):
    """Yield (relative path bytes, absolute path bytes, lstat) of every regular file under top."""
    stack = [b""]
    while stack:
        rel = stack.pop()
        here = os.path.join(top, rel) if rel else top
        try:
            with os.scandir(here) as it:
                entries = sorted(it, key=lambda e: e.name)
        except FileNotFoundError:
            if not rel:
                summary.missing = True
            continue
        except OSError as err:
            summary.cannot_read((rel or b".").decode("utf-8", "backslashreplace"), _why(err))
            continue
        subdirs = []
        for entry in entries:
            path = rel + b"/" + entry.name if rel else entry.name
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            except OSError as err:
                summary.cannot_read(path.decode("utf-8", "backslashreplace"), _why(err))
                continue
            if stat.S_ISDIR(st.st_mode):
                if (st.st_dev, st.st_ino) != skip_dir:
                    subdirs.append(path)
            elif stat.S_ISREG(st.st_mode):
                yield path, entry.path, st
            else:
                summary.skipped += 1
        stack.extend(reversed(subdirs))


def _why(err):
    return err.strerror or str(err)


def _same(a, b):
    return (a.st_size, a.st_mtime_ns, a.st_ctime_ns, a.st_ino) == (
        b.st_size,
        b.st_mtime_ns,
        b.st_ctime_ns,
        b.st_ino,
    )


def read_file(store, path, name):
    """Hash (and store when new) one file; return (Entry fields, bytes written, changing)."""
    for attempt in range(RETRIES):
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        try:
            before = os.fstat(fd)
            if not stat.S_ISREG(before.st_mode):
                raise OSError(0, "no longer a regular file")
            os.set_blocking(fd, True)
            if before.st_size <= SMALL:
                data = _read_small(fd)
                sha = hashlib.sha256(data).hexdigest()
                after = os.fstat(fd)
                stable = _same(before, after) and len(data) == after.st_size
                if stable or attempt == RETRIES - 1:
                    written = store.put(sha, data)
                    return _fields(after, len(data), sha), written, not stable
            else:
                temp, sha, size = _copy_large(store, fd)
                after = os.fstat(fd)
                stable = _same(before, after) and size == after.st_size
                if stable or attempt == RETRIES - 1:
                    if store.has(sha, size):
                        temp.unlink()
                        written = 0
                    else:
                        written = size if store.adopt(temp, sha) else 0
                    return _fields(after, size, sha), written, not stable
                temp.unlink()
        finally:
            os.close(fd)
    raise AssertionError("unreachable")  # pragma: no cover


def _read_small(fd):
    parts = []
    while chunk := os.read(fd, CHUNK):
        parts.append(chunk)
    return b"".join(parts)


def _copy_large(store, fd):
    """Copy an open file into a temporary file of the store, hashing as it goes."""
    temp, out = store.new_temp()
    digest = hashlib.sha256()
    size = 0
    try:
        while chunk := os.read(fd, CHUNK):
            digest.update(chunk)
            with writing():
                write_all(out, chunk)
            size += len(chunk)
    except BaseException:
        os.close(out)
        temp.unlink(missing_ok=True)
        raise
    os.close(out)
    return temp, digest.hexdigest(), size


def _fields(st, size, sha):
    fresh = time.time_ns() - st.st_mtime_ns < FRESH_NS
    return size, st.st_mtime_ns, stat.S_IMODE(st.st_mode), sha, 0 if fresh else st.st_ino


def record_files(media_folder, backups_folder, out, *, last_list=None, progress=None):
    """Scan `media_folder`, store what is new, write the list into the open binary file `out`.

    The caller holds the store's lock (shared) until the backup that names these objects has
    its name. Returns a Summary.
    """
    store = Store(backups_folder)
    summary = Summary()
    cache = LastList(last_list)
    top = os.fsencode(media_folder)
    try:
        skip = os.stat(backups_folder)
        skip_dir = (skip.st_dev, skip.st_ino)  # never back up the backups themselves
    except OSError:
        skip_dir = None
    writer = lists.Writer(out)
    pending = deque()  # in list order: an Entry, or a future of one
    last_report = time.monotonic()

    def emit(item):
        nonlocal last_report
        if isinstance(item, lists.Entry):
            entry = item
        else:
            entry = _collect(item, summary)
            if entry is None:
                return
        writer.add(entry)
        summary.files += 1
        summary.bytes += entry.size
        if progress and time.monotonic() - last_report > 0.5:
            last_report = time.monotonic()
            progress("files", summary.files, 0, summary.bytes)  # the total is not known ahead

    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        try:
            for rel, path, st in walk(top, skip_dir, summary):
                known = _unchanged(cache.get(rel), st, store)
                pending.append(known or pool.submit(_read_one, store, rel, path))
                while pending and (len(pending) > IN_FLIGHT or _ready(pending[0])):
                    emit(pending.popleft())
            while pending:
                emit(pending.popleft())
        except BaseException:
            for item in pending:
                if _is_future(item):
                    item.cancel()
            raise
    writer.close()
    if summary.new_objects:  # one syncfs: every object on disk before a list names it
        store.flush()
    return summary


def _unchanged(known, st, store):
    """The last list's entry for a file whose stat matches it (and whose object is here)."""
    if known is None or (known.size, known.mtime_ns, known.ino) != (
        st.st_size,
        st.st_mtime_ns,
        st.st_ino,
    ):
        return None
    if not store.has(known.sha256, known.size):
        return None
    mode = stat.S_IMODE(st.st_mode)
    return known if mode == known.mode else known._replace(mode=mode, line=b"")


def _ready(item):
    return not _is_future(item) or item.done()


def _is_future(item):
    return not isinstance(item, lists.Entry)


def _read_one(store, rel, path):
    name = rel.decode("utf-8", "backslashreplace")
    try:
        fields, written, changing = read_file(store, path, name)
    except WriteFailed:
        raise  # the store's disk: that fails the backup
    except FileNotFoundError:
        return rel, None, "vanished"
    except OSError as err:
        return rel, None, _why(err)
    return rel, (fields, written, changing), None


def _collect(future, summary):
    rel, found, problem = future.result()
    name = rel.decode("utf-8", "backslashreplace")
    if found is None:
        if problem != "vanished":  # deleted since the listing: it is simply not there
            summary.cannot_read(name, problem)
        return None
    (size, mtime_ns, mode, sha, ino), written, changing = found
    summary.read += 1
    if written:
        summary.new_bytes += written
        summary.new_objects += 1
    if changing:
        ino = 0  # read while it changed: the next backup reads it again
        summary.changing.append(name)
        logger.warning("site file %s kept changing while it was read; recorded as read", name)
    return lists.Entry(rel, size, mtime_ns, mode, sha, ino)


@contextlib.contextmanager
def recorded(media_folder, backups_folder, staged, *, last_list=None, progress=None):
    """Record the files into the list `staged` and hold the media lock until the block ends.

    The engine links `staged` as NAME.media beside the backup inside the block: the objects it
    names cannot be cleaned up before the backup has its name.
    """
    store = Store(backups_folder)
    # No media folder: an empty list, and no store made for it (nothing to lock either).
    lock = store.lock() if os.path.isdir(media_folder) else contextlib.nullcontext()
    with lock:
        fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with open(fd, "wb") as out:
            summary = record_files(
                media_folder, backups_folder, out, last_list=last_list, progress=progress
            )
            out.flush()
            os.fsync(out.fileno())
        if summary.files:
            store.add_to_stats(summary.new_objects, summary.new_bytes, summary.bytes)
        yield summary


def newest_list(backups_folder, is_backup_name):
    """The most recently written NAME.media of a backup in the folder (the stat cache), or None."""
    newest, newest_time = None, -1
    for path in store_lists(backups_folder, is_backup_name):
        with contextlib.suppress(OSError):
            mtime = path.stat().st_mtime_ns
            if mtime > newest_time:
                newest, newest_time = path, mtime
    return newest


def staged_list(partial):
    """Where a backup in progress stages its NAME.media (beside its temporary file)."""
    return Path(f"{partial}{lists.SUFFIX}")


def for_backup(into_backups, folder, partial, is_backup_name, progress=None):
    """The recording of the site's files for one backup (a context yielding its Summary), or a
    context yielding None: files are recorded only with backups of the live database written
    into the backups folder (`into_backups`), while STANZA_MEDIA_DIR is on."""
    media_folder = conf.media_dir() if into_backups else None
    if media_folder is None:
        return contextlib.nullcontext()
    return recorded(
        media_folder,
        folder,
        staged_list(partial),
        last_list=newest_list(folder, is_backup_name),
        progress=progress,
    )
