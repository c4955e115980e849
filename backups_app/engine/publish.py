"""Giving a finished backup its name, its sidecars first, without ever overwriting a name."""

import os
from pathlib import Path

from django.utils import timezone

from backups_app.core import files
from backups_app.engine.names import (
    CHECKSUM_SUFFIX,
    MANIFEST_SUFFIX,
    MEDIA_SUFFIX,
    BackupError,
    BackupInterrupted,
    backup_name,
)
from backups_app.engine.sidecars import checksum_line, manifest_text


def publish(
    temp,
    digest,
    manifest,
    *,
    folder,
    target=None,
    label="",
    compress=False,
    media_list=None,
    on_published=None,
):
    """Give a finished backup its name, its sidecars first; return the backup's path.

    `temp` is a `.partial` file this process holds locked (its sidecars are written beside it
    under its name). For each candidate name: `NAME.sha256` and `NAME.json` are linked, then
    `NAME` itself. `os.link` fails when a name exists, so two processes backing up in the same
    second each get their own name (`...Z-2.bak`) without a lock between them, and a signal or
    a crash at any moment leaves either no backup or a backup with both sidecars (at worst
    sidecars without a backup, which the next backup's clean-up removes). `media_list`, the
    site files' list (a staged file), is linked as `NAME.media` with them. `on_published(path)`
    is called the moment the backup has its name (a command stops treating signals as a stop).
    """
    if target:
        candidates = [Path(target)]
    else:
        now = timezone.now()
        candidates = (
            folder / backup_name(now, label=label, compress=compress, seq=seq)
            for seq in range(1, 1000)
        )
    staged = {MEDIA_SUFFIX: Path(media_list)} if media_list else {}
    final = None

    def interrupted(err):
        """A signal at any moment after the backup got its name says so (BackupInterrupted)."""
        if isinstance(err, BackupInterrupted) or final is None or not _is_same_file(final, temp):
            return err
        return BackupInterrupted(final)

    try:
        try:
            for final in candidates:
                if digest:
                    staged[CHECKSUM_SUFFIX] = _stage(
                        temp, CHECKSUM_SUFFIX, checksum_line(final.name, digest)
                    )
                if manifest:
                    staged[MANIFEST_SUFFIX] = _stage(
                        temp, MANIFEST_SUFFIX, manifest_text(final.name, manifest)
                    )
                try:
                    for suffix, path in staged.items():
                        os.link(path, final.with_name(final.name + suffix))
                    os.link(temp, final)
                    if on_published:
                        on_published(final)
                    files.fsync_dir(folder)
                except FileExistsError:
                    _take_back(final, staged)
                    if target:
                        raise BackupError(
                            f"{target} already exists; nothing was overwritten"
                        ) from None
                    continue
                except BaseException:
                    if not _is_same_file(final, temp):  # not published: take the sidecars back
                        _take_back(final, staged)
                    raise
                return final
        finally:
            _unlink_all(staged.values())
    except KeyboardInterrupt as err:
        written = interrupted(err)
        if written is err:
            raise
        raise written from err
    raise BackupError(f"too many backups in the same second in {folder}")


def _stage(temp, suffix, text):
    """Write a sidecar's text, flushed, in a new file beside `temp` (covered by its lock)."""
    staged = Path(f"{temp}{suffix}")
    staged.unlink(missing_ok=True)  # it may be linked as a taken name's sidecar: never rewrite
    fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        os.write(fd, text.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    return staged


def _take_back(final, staged):
    """Unlink the sidecars of `final` that are our staged files (never another's)."""
    for suffix, path in staged.items():
        sidecar = final.with_name(final.name + suffix)
        if _is_same_file(sidecar, path):
            sidecar.unlink(missing_ok=True)


def _unlink_all(paths):
    for path in paths:
        path.unlink(missing_ok=True)


def _is_same_file(a, b):
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False
