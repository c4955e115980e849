"""The backups folder as a list: read, found by name, opened, deleted (the folder is the truth)."""

import os
import stat
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import NamedTuple

from backups_app.core import files
from backups_app.core.files import open_regular
from backups_app.engine.names import (
    CHECKSUM_SUFFIX,
    Backup,
    BackupError,
    backup_endings,
    backup_name_re,
    backup_suffix,
    backups_dir,
    is_backup_name,
    is_real_date,
    name_prefix,
    sidecars,
)


class Listed(NamedTuple):
    """One backup as the folder's listing found it: cheap to make by the thousand."""

    mtime: float
    name: str
    size: int
    has_checksum: bool

    label = Backup.label
    own = Backup.own

    def backup(self, folder):
        return Backup(
            path=Path(folder) / self.name,
            size=self.size,
            modified=datetime.fromtimestamp(self.mtime, UTC),
            has_checksum=self.has_checksum,
        )


def list_backups(folder=None):
    """Every backup in the folder, newest first, from one read of the folder."""
    folder = Path(folder or backups_dir())
    return [item.backup(folder) for item in scan_backups(folder)]


# The last listing of each folder read with reuse=True: {(folder, prefix): (its state, listing)}.
_listings = {}
# A listing is kept only when its folder last changed this long before: a change within the
# file system's time granularity of the read could otherwise leave the folder's times as they were.
SETTLED_SECONDS = 3


def scan_backups(folder=None, *, reuse=False):
    """Every backup in the folder as `Listed` tuples, newest first, from one read of the folder.

    For pages that count thousands of backups and show a few. The folder is read through its
    descriptor, so each stat is relative to it (no path walked per file), and only names that
    end like a backup are matched and stat'd: 5000 backups in 40 ms instead of 67 ms here.

    `reuse` (the pages and the health verdict): the listing read at the folder's present state
    (its inode, size, modification and change times) is returned again without a stat per
    backup. Backups are never rewritten in place: one is linked in under its name and unlinked
    when deleted, and both change the folder's times. A backup rewritten or touched in place by
    hand shows its new time and size once the folder next changes. Retention, the drill and
    the offsite copies always read the folder.
    """
    folder = Path(folder or backups_dir())
    prefix, suffix = name_prefix(), backup_suffix()
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except FileNotFoundError:
        raise BackupError(f"backups folder {folder} does not exist") from None
    except NotADirectoryError:
        raise BackupError(f"backups folder {folder} is a file, not a folder") from None
    except PermissionError:
        raise BackupError(f"backups folder {folder} cannot be read (permission denied)") from None
    try:
        if reuse:
            st = os.fstat(fd)
            state = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
            kept_state, kept = _listings.get((folder, prefix, suffix), (None, None))
            if kept_state == state:
                return list(kept)
        found = _read_listing(fd, folder, backup_name_re(prefix, suffix).match, backup_endings())
    finally:
        os.close(fd)
    if reuse and time.time() - st.st_ctime > SETTLED_SECONDS:
        _listings[(folder, prefix, suffix)] = (state, tuple(found))
    return found


def _read_listing(fd, folder, matches, endings):
    """The backups in the folder open as `fd`, newest first (see scan_backups)."""
    # A symlink could point anywhere, a FIFO would block its reader: only regular files in
    # the folder are backups, or checksums.
    checksums, candidates = set(), []
    try:
        with os.scandir(fd) as listing:
            for entry in listing:
                name = entry.name
                if name.endswith(CHECKSUM_SUFFIX):
                    if entry.is_file(follow_symlinks=False):
                        checksums.add(name)
                elif (
                    name.endswith(endings)
                    and (match := matches(name))
                    and is_real_date(match["stamp"])
                    and entry.is_file(follow_symlinks=False)
                ):
                    candidates.append(entry)
        found = []
        for entry in candidates:
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:  # deleted between the listing and the stat
                continue
            name = entry.name
            found.append(Listed(st.st_mtime, name, st.st_size, name + CHECKSUM_SUFFIX in checksums))
    except PermissionError:  # r-- without x: the names can be read, not their entries
        raise BackupError(f"backups folder {folder} cannot be read (permission denied)") from None
    found.sort(reverse=True)  # by time, then name: newest first
    return found


def get_backup(name, folder=None):
    """The backup called `name` in the folder; BackupError for a bad or missing name."""
    if not is_backup_name(name):
        raise BackupError(f"{name!r} is not a backup file name")
    folder = Path(folder or backups_dir())
    path = folder / name
    try:
        st = path.lstat()
    except FileNotFoundError:
        raise BackupError(f"backup {name} does not exist") from None
    if not stat.S_ISREG(st.st_mode):
        raise BackupError(f"backup {name} does not exist")
    return _backup(path, st, files.is_regular(folder / (name + CHECKSUM_SUFFIX)))


def _backup(path, st, has_checksum):
    return Backup(
        path=path,
        size=st.st_size,
        modified=datetime.fromtimestamp(st.st_mtime, UTC),
        has_checksum=has_checksum,
    )


def delete_backup(name, folder=None):
    """Delete the backup called `name` and its sidecars; return the Backup that was deleted."""
    backup = get_backup(name, folder)
    try:
        backup.path.unlink()
    except FileNotFoundError:  # deleted meanwhile, by hand or by the purge
        raise BackupError(f"backup {name} does not exist") from None
    except OSError as err:
        raise BackupError(f"cannot delete {name}: {err.strerror}") from err
    for sidecar in sidecars(backup.path):
        sidecar.unlink(missing_ok=True)
    files.fsync_dir(backup.path.parent)
    return backup


def get_backup_at(path):
    path = Path(path)
    return _backup(path, path.stat(), files.is_regular(path.with_name(path.name + CHECKSUM_SUFFIX)))


def open_backup(name, folder=None):
    """Open a backup by name for reading, never through a symlink; BackupError if none."""
    if not is_backup_name(name):
        raise BackupError(f"{name!r} is not a backup file name")
    try:  # ELOOP for a symlink, wherever it points; refused for a FIFO, folder or device
        return open_regular(Path(folder or backups_dir()) / name)
    except OSError:
        raise BackupError(f"backup {name} does not exist") from None
