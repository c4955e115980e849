"""Restore the site's files as a backup lists them.

Every object the list names is checked present first. The new tree is built beside the media
folder (same disk): a file whose content, size, time and mode are already there is hard-linked
from the present tree (it stays whole in the old tree), every other one copied from its object
and given its listed mode and time. Then the two trees are swapped (one `renameat2` exchange),
and the old one removed. A failure before the swap leaves the folder as it was; files the
backup does not list are gone from it afterwards (the pre-restore safety backup has them).
"""

import ctypes
import logging
import os
import shutil
import stat
import tempfile
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from backups_app import conf
from backups_app.core.errors import BackupError
from backups_app.media import lists, record
from backups_app.media.store import Store

logger = logging.getLogger(__name__)

COPY_WORKERS = 4
COPIES_IN_FLIGHT = 64
RENAME_EXCHANGE = 2
AT_FDCWD = -100


class PutBackError(BackupError):
    """The files cannot be restored; nothing in the media folder changed."""


@dataclass(frozen=True)
class FileChanges:
    """What restoring a list would do to the media folder (or did)."""

    files: int = 0  # files the backup lists
    change: int = 0
    appear: int = 0
    disappear: int = 0

    def words(self, done=True):
        """'3 site files: 1 changed, 1 appeared, 1 disappeared' (or '1 would change, ...')."""
        verbs = ("changed", "appeared", "disappeared")
        if not done:
            verbs = ("would change", "would appear", "would disappear")
        numbers = (self.change, self.appear, self.disappear)
        counts = ", ".join(f"{n} {verb}" for n, verb in zip(numbers, verbs, strict=True))
        return f"{self.files} site file{'s' if self.files != 1 else ''}: {counts}"


def present_files(media_folder):
    """{path: lstat} of the regular files now in the media folder (read only)."""
    found, summary = {}, record.Summary()
    if media_folder is not None and os.path.isdir(media_folder):
        for rel, _path, st in record.walk(os.fsencode(media_folder), None, summary):
            found[rel] = st
    return found


def changes(list_path, media_folder):
    """Compare a list with the media folder: files that would change, appear and disappear.

    A file counts as unchanged when its size and modification time are those listed (a
    restore gives every file its listed time); nothing is read.
    """
    present = present_files(media_folder)
    files = change = appear = 0
    for entry in lists.read(list_path):
        files += 1
        st = present.pop(entry.path, None)
        if st is None:
            appear += 1
        elif (st.st_size, st.st_mtime_ns) != (entry.size, entry.mtime_ns):
            change += 1
    return FileChanges(files=files, change=change, appear=appear, disappear=len(present))


def check_objects(list_path, backups_folder):
    """Refuse, before anything changes, a list whose objects are not all in the store."""
    store = Store(backups_folder)
    missing, first = 0, None
    for entry in lists.read(list_path):
        if not store.has(entry.sha256, entry.size):
            missing += 1
            first = first or entry.name
    if missing:
        raise PutBackError(
            f"{missing} site file{'s' if missing != 1 else ''} of {Path(list_path).name} "
            f"cannot be restored: the store lacks {'its' if missing == 1 else 'their'} content "
            f"(e.g. {first})"
        )


def put_back(list_path, backups_folder, media_folder, *, present_list=None):
    """Make `media_folder` hold exactly the files `list_path` lists; return FileChanges.

    `present_list` (the safety backup's list, just made) says which present files have which
    content, so unchanged ones are linked instead of copied.
    """
    media_folder = Path(media_folder)
    # Every object was checked present by plan(); one gone since fails the build, before the swap.
    before = changes(list_path, media_folder)
    known = record.stat_cache(present_list)
    store = Store(backups_folder)
    media_folder.parent.mkdir(parents=True, exist_ok=True)
    try:
        folder_mode = stat.S_IMODE(os.stat(media_folder).st_mode)
    except FileNotFoundError:
        folder_mode = 0o700
    new = Path(tempfile.mkdtemp(prefix=".stanza-media-restore-", dir=media_folder.parent))
    try:
        os.chmod(new, folder_mode)
        _build(new, list_path, store, media_folder, known, folder_mode)
        _swap(new, media_folder)
    except OSError as err:
        shutil.rmtree(new, ignore_errors=True)
        raise PutBackError(
            f"the site files could not be restored, the folder was left as it was: "
            f"{err.strerror or err}"
        ) from err
    except BaseException:
        shutil.rmtree(new, ignore_errors=True)
        raise
    shutil.rmtree(new, ignore_errors=True)  # the old tree, after the swap
    return before


def _build(new, list_path, store, media_folder, known, folder_mode):
    """Fill `new` with the listed files; copies run on a few threads (the kernel copies, so
    they overlap), at most COPIES_IN_FLIGHT at a time."""
    top = os.fsencode(new)
    present_top = os.fsencode(media_folder)
    made = {b""}
    pending = deque()
    with ThreadPoolExecutor(max_workers=COPY_WORKERS) as pool:
        try:
            for entry in lists.read(list_path):
                parent = entry.path.rpartition(b"/")[0]
                if parent not in made:
                    _make_folders(top, parent, made, folder_mode)
                dest = os.path.join(top, entry.path)
                if not _link_unchanged(entry, known.get(entry.path), present_top, dest):
                    pending.append(pool.submit(_copy, store.path(entry.sha256), dest, entry))
                while len(pending) > COPIES_IN_FLIGHT or (pending and pending[0].done()):
                    pending.popleft().result()
            while pending:
                pending.popleft().result()
        except BaseException:
            for future in pending:
                future.cancel()
            raise


def _make_folders(top, folder, made, mode):
    """mkdir `folder` and the parents it lacks (in the new tree: no stat needed to know)."""
    missing = []
    while folder not in made:
        missing.append(folder)
        folder = folder.rpartition(b"/")[0]
    for folder in reversed(missing):
        os.mkdir(os.path.join(top, folder), mode)
        made.add(folder)


def _copy(source, dest, entry):
    shutil.copyfile(source, dest)
    os.chmod(dest, entry.mode)
    os.utime(dest, ns=(entry.mtime_ns, entry.mtime_ns))


def _link_unchanged(entry, known, present_top, dest):
    """Hard-link the present file when it is exactly the listed one (content, time, mode)."""
    if known is None or known.sha256 != entry.sha256:
        return False
    source = os.path.join(present_top, entry.path)
    try:
        st = os.lstat(source)
        if (
            not stat.S_ISREG(st.st_mode)
            or (
                st.st_size,
                st.st_mtime_ns,
                st.st_ino,
                stat.S_IMODE(st.st_mode),
            )
            != (known.size, known.mtime_ns, known.ino, entry.mode)
            or (entry.mtime_ns != known.mtime_ns)
        ):
            return False
        os.link(source, dest, follow_symlinks=False)
    except OSError:
        return False
    return True


def _swap(new, media_folder):
    """Put `new` in the media folder's place; afterwards `new` names the old tree (if any)."""
    if not os.path.lexists(media_folder):
        os.rename(new, media_folder)
        os.mkdir(new)  # an empty "old tree", for the caller to remove
        return
    if _renameat2 is not None:
        done = _renameat2(
            AT_FDCWD, os.fsencode(new), AT_FDCWD, os.fsencode(media_folder), RENAME_EXCHANGE
        )
        if done == 0:
            return
    # No atomic exchange here: two renames (a crash between them leaves both trees beside).
    old = Path(f"{new}-old")
    os.rename(media_folder, old)
    try:
        os.rename(new, media_folder)
    except OSError:
        os.rename(old, media_folder)
        raise
    os.rename(old, new)


def _load_renameat2():
    try:
        function = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):  # pragma: no cover - an old C library
        return None
    function.argtypes = [
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_uint,
    ]
    return function


_renameat2 = _load_renameat2()


# --- for restores ---------------------------------------------------------------------------

NO_LIST = (
    "this backup has no list of site files (an upload or an older backup): the database "
    "alone was restored, the site's files were left as they are"
)
OFF = "site files are off (STANZA_MEDIA_DIR is empty): the database alone was restored"
AT_TIME = (
    "site files are not part of a restore to a point in time: the database alone was "
    "restored, the site's files were left as they are"
)


def is_files_note(note):
    """Whether a restore's note is the site files' (every one names them)."""
    return "site files" in note


@dataclass(frozen=True)
class Plan:
    """The files part of one restore, checked before anything changes."""

    backup_path: Path
    backups_folder: Path
    media_folder: Path | None
    has_list: bool

    def put_back(self, safety=None):
        """Restore the files (after the safety backup recorded the present ones): one line,
        or "" when the backup lists no file and the folder has none."""
        if self.media_folder is None:
            return OFF
        if not self.has_list:
            return NO_LIST
        present = lists.list_path(safety.path) if safety and lists.exists(safety.path) else None
        started = time.monotonic()
        try:
            done = put_back(
                lists.list_path(self.backup_path),
                self.backups_folder,
                self.media_folder,
                present_list=present,
            )
        except (PutBackError, lists.ListError) as err:
            logger.error("the site files of %s were not restored: %s", self.backup_path.name, err)
            return f"the site files could not be restored ({err}); the folder was left as it was"
        if not (done.files or done.disappear):
            return ""  # no files then, none now: nothing to say
        logger.info(
            "restored the site files of %s in %.2f s: %s",
            self.backup_path.name,
            time.monotonic() - started,
            done.words(),
        )
        return f"site files restored as the backup lists them ({done.words()})"


def plan(backup_path, backups_folder):
    """Check the files part of a restore of `backup_path`; PutBackError when it cannot be done."""
    backup_path = Path(backup_path)
    media_folder = conf.media_dir()
    has_list = lists.exists(backup_path)
    if media_folder is not None and has_list:
        try:
            check_objects(lists.list_path(backup_path), backups_folder)
        except lists.ListError as err:
            raise PutBackError(str(err)) from None
    return Plan(backup_path, Path(backups_folder), media_folder, has_list)


def confirm_facts(backup_path):
    """For a confirmation page: FileChanges, or the reason no file changes (words)."""
    media_folder = conf.media_dir()
    if media_folder is None:
        return OFF
    if not lists.exists(backup_path):
        return NO_LIST.replace("was restored", "would be restored").replace("were left", "stay")
    try:
        return changes(lists.list_path(backup_path), media_folder)
    except lists.ListError as err:
        return f"the list of site files cannot be read: {err}"


def restore_files_only(backup_path, *, trigger, by=""):
    """`restore --media-only`: a pre-restore safety backup, then the files alone; one line.

    Under the operation lock like every restore, and recorded in the run history (job
    "restore"). The database is not touched.
    """
    from backups_app.core import operations
    from backups_app.engine import backups
    from backups_app.models import CronRun

    backup_path = Path(backup_path)
    with operations.exclusive("restore", by=by):
        run = CronRun.start("restore", trigger=trigger)
        try:
            files = plan(backup_path, backups.backups_dir())
            if files.media_folder is None:
                raise PutBackError(
                    "site files are off (STANZA_MEDIA_DIR is empty); nothing changed"
                )
            if not files.has_list:
                raise PutBackError(
                    f"{backup_path.name} has no list of site files (an upload or an older "
                    "backup); nothing changed"
                )
            safety = backups.create_backup(label="pre-restore")
            line = files.put_back(safety) or "no site files, then or now: nothing changed"
        except BackupError as err:
            run.finish(CronRun.Status.FAILURE, error=str(err))
            raise
        result = f"{line}; from {backup_path.name}; safety backup: {safety.name}"
        run.finish(CronRun.Status.SUCCESS, result=result)
    return safety, line
