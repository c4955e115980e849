"""The object store: each distinct file content once, as `BACKUPS_DIR/media/objects/HH/HASH`.

An object is named by the SHA-256 of its content and written under a temporary name in
`media/tmp/`, then renamed into place, so a name never holds a partial content of another
hash. Recording a backup's files holds the media lock shared; the clean-up (objects no list
names, temporary files) holds it exclusively, so it never removes an object a backup in
progress is about to name, whoever runs that backup (a job, a page, `migrate`, a restore).
"""

import contextlib
import ctypes
import fcntl
import hashlib
import json
import logging
import os
import stat
import uuid
from pathlib import Path

from backups_app.media import lists

logger = logging.getLogger(__name__)

FOLDER = "media"
CHUNK = 1024 * 1024
# A file up to this size is read into memory whole: an object we already have is not written.
SMALL = 256 * 1024
STATS = "stats.json"


class StoreError(Exception):
    """The store cannot be read or written; the message says why in words."""


class WriteFailed(OSError):
    """Writing into the store failed (a full disk...): that fails the backup, unlike a site
    file that cannot be read."""


@contextlib.contextmanager
def writing():
    try:
        yield
    except WriteFailed:
        raise
    except OSError as err:
        raise WriteFailed(err.errno, err.strerror, err.filename) from err


class Store:
    def __init__(self, backups_folder):
        self.backups_folder = Path(backups_folder)
        self.root = self.backups_folder / FOLDER
        self.objects = self.root / "objects"
        self._objects = str(self.objects)
        self.tmp = self.root / "tmp"
        self._dirs = set()

    def path(self, sha):
        return self.objects / sha[:2] / sha

    def has(self, sha, size):
        """Whether the object is here whole (a crash before the flush can leave it short)."""
        try:  # os.path, not pathlib: called once per file of every backup
            st = os.stat(os.path.join(self._objects, sha[:2], sha), follow_symlinks=False)
        except OSError:
            return False
        return stat.S_ISREG(st.st_mode) and st.st_size == size

    def _mkdir(self, folder):
        if folder not in self._dirs:
            for parent in (self.root, self.objects, self.tmp, folder):
                with contextlib.suppress(FileExistsError):
                    os.mkdir(parent, 0o700)
            self._dirs.add(folder)

    def new_temp(self):
        """An open temporary file in the store (0600): (its path, its descriptor)."""
        with writing():
            self._mkdir(self.tmp)
            path = self.tmp / f"{os.getpid()}-{uuid.uuid4().hex}"
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
            return path, os.open(path, flags, 0o600)

    def adopt(self, temp, sha):
        """Put a finished temporary file in place as object `sha`; False when another writer
        (a thread or a process storing the same content) put it there first.

        A link, not a rename: exactly one of two writers of the same content creates the
        object, so its bytes are counted once."""
        final = self.path(sha)
        with writing():
            self._mkdir(final.parent)
            try:
                os.link(temp, final)
            except FileExistsError:
                if not self.has(sha, os.stat(temp).st_size):  # short: a crash left it so
                    os.replace(temp, final)
                    return True
                return False
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(temp)
        return True

    def put(self, sha, data):
        """Store `data` (whose SHA-256 is `sha`) unless it is here; return the bytes written."""
        if self.has(sha, len(data)):
            return 0
        temp, fd = self.new_temp()
        try:
            with writing():
                write_all(fd, data)
        except BaseException:
            os.close(fd)
            temp.unlink(missing_ok=True)
            raise
        os.close(fd)
        return len(data) if self.adopt(temp, sha) else 0

    @contextlib.contextmanager
    def lock(self, *, exclusive=False):
        """The media lock: shared while a backup records files, exclusive for the clean-up.

        Yields False instead of waiting when the exclusive lock is taken by someone else.
        """
        with contextlib.suppress(FileExistsError):
            os.mkdir(self.root, 0o700)
        fd = os.open(self.root / "lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB if exclusive else fcntl.LOCK_SH)
            except BlockingIOError:
                yield False
                return
            yield True
        finally:
            os.close(fd)

    def flush(self):
        """Put every object written so far on the disk (one syncfs, not an fsync per file)."""
        if not self.root.is_dir():
            return
        fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)
        try:
            if _syncfs is None or _syncfs(fd) != 0:
                os.sync()
        finally:
            os.close(fd)

    def iter_objects(self):
        """(sha, path, size) of every object in the store."""
        with contextlib.suppress(FileNotFoundError), os.scandir(self.objects) as shards:
            for shard in shards:
                if len(shard.name) != 2 or not shard.is_dir(follow_symlinks=False):
                    continue
                with os.scandir(shard.path) as objects:
                    for entry in objects:
                        with contextlib.suppress(OSError):
                            st = entry.stat(follow_symlinks=False)
                            if stat.S_ISREG(st.st_mode):
                                yield entry.name, Path(entry.path), st.st_size

    # --- what pages show ---------------------------------------------------------------

    def stats(self):
        """{"objects", "bytes", "listed_bytes"} as the last backup or clean-up left them."""
        try:
            with open(self.root / STATS) as f:
                data = json.load(f)
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def write_stats(self, data):
        with contextlib.suppress(OSError):
            temp = self.root / f".{STATS}.{uuid.uuid4().hex}"
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with open(fd, "w") as f:
                json.dump(data, f)
            os.replace(temp, self.root / STATS)

    def add_to_stats(self, new_objects, new_bytes, listed_bytes):
        data = self.stats() or {"objects": 0, "bytes": 0, "listed_bytes": 0}
        data["objects"] = int(data.get("objects", 0)) + new_objects
        data["bytes"] = int(data.get("bytes", 0)) + new_bytes
        data["listed_bytes"] = int(data.get("listed_bytes", 0)) + listed_bytes
        self.write_stats(data)


def write_all(fd, data):
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def page_stats(backups_folder):
    """For the Backups page: {"objects", "bytes", "listed_bytes", "saved"} as the last backup
    or clean-up recorded them (one small file read), or None before any file was stored."""
    stats = Store(backups_folder).stats()
    if not stats:
        return None
    try:
        stored, listed = int(stats.get("bytes", 0)), int(stats.get("listed_bytes", 0))
        objects = int(stats.get("objects", 0))
    except (TypeError, ValueError):
        return None
    return {
        "objects": objects,
        "bytes": stored,
        "listed_bytes": listed,
        "saved": max(0, listed - stored),
    }


def _load_syncfs():
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.syncfs
    except (OSError, AttributeError):  # pragma: no cover - not Linux
        return None


_syncfs = _load_syncfs()


def sha256_file(path, cancel=None):
    """The SHA-256 of a file read back, never through a symlink."""
    digest = hashlib.sha256()
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    with open(fd, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


# --- the clean-up ---------------------------------------------------------------------------


def lists_in(backups_folder, is_backup_name):
    """The NAME.media files of the backups in the folder (a list whose backup is gone is none)."""
    found = []
    with contextlib.suppress(FileNotFoundError), os.scandir(backups_folder) as entries:
        for entry in entries:
            base = entry.name[: -len(lists.SUFFIX)]
            if (
                entry.name.endswith(lists.SUFFIX)
                and is_backup_name(base)
                and entry.is_file(follow_symlinks=False)
                and os.path.lexists(os.path.join(backups_folder, base))
            ):
                found.append(Path(entry.path))
    return found


def named_in(backups_folder, is_backup_name):
    """(the contents the folder's lists name, the bytes of their files); StoreError when a
    list cannot be read: an object it names would be lost."""
    named, listed_bytes = set(), 0
    for path in lists_in(backups_folder, is_backup_name):
        try:
            found = lists.named(path)
        except lists.ListError as err:
            raise StoreError(f"no site file was cleaned up: {err}") from None
        named.update(found.sizes)
        listed_bytes += found.bytes
    return named, listed_bytes


def collect_garbage(backups_folder, is_backup_name):
    """Delete the objects no remaining NAME.media names, and stale temporary files.

    Returns {"removed", "removed_bytes", "kept", "bytes"}, or None when a backup is recording
    files right now (the next run cleans up). Nothing is deleted when a list cannot be read.
    (The purge reads the lists once for its size cap and calls sweep() itself.)
    """
    store = Store(backups_folder)
    if not store.root.is_dir():
        return {"removed": 0, "removed_bytes": 0, "kept": 0, "bytes": 0}
    with store.lock(exclusive=True) as locked:
        if not locked:
            return None
        return sweep(store, *named_in(backups_folder, is_backup_name))


def sweep(store, named, listed_bytes):
    """Delete the objects not in `named`, and every temporary file; the caller holds the
    media lock exclusively (no backup is recording files). Returns what collect_garbage does."""
    removed = removed_bytes = kept = kept_bytes = 0
    for sha, path, size in store.iter_objects():
        if sha in named:
            kept += 1
            kept_bytes += size
            continue
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            removed += 1
            removed_bytes += size
    with contextlib.suppress(FileNotFoundError), os.scandir(store.tmp) as temps:
        for temp in temps:  # nobody records files now: every temporary file is debris
            with contextlib.suppress(OSError):
                os.unlink(temp.path)
    store.write_stats({"objects": kept, "bytes": kept_bytes, "listed_bytes": listed_bytes})
    if removed:
        logger.info(
            "removed %d site file object(s) no backup names (%d bytes)", removed, removed_bytes
        )
    return {"removed": removed, "removed_bytes": removed_bytes, "kept": kept, "bytes": kept_bytes}


def clean_up_words(done, size=str):
    """One phrase for the purge's result line from what the clean-up did (None: it could
    not run, a backup was recording files). `size` says a number of bytes in words."""
    if done is None:
        return "; site files not cleaned up (a backup was recording them; next run)"
    return (
        f"; removed {done['removed']} site file object(s) no backup lists "
        f"({size(done['removed_bytes'])}), kept {done['kept']} ({size(done['bytes'])})"
    )
