"""A backup's site files as a tar stream, built on the fly: one object's chunk in memory at a
time, whatever the number or size of the files."""

import logging
import os
import tarfile

from backups_app.media import lists
from backups_app.media.store import CHUNK, Store

logger = logging.getLogger(__name__)

BLOCK = tarfile.BLOCKSIZE


def header(entry):
    """The tar header of one listed file (GNU format: any name, byte for byte)."""
    info = tarfile.TarInfo(os.fsdecode(entry.path))
    info.size = entry.size
    info.mode = entry.mode
    info.mtime = entry.mtime_ns // 1_000_000_000
    info.type = tarfile.REGTYPE
    return info.tobuf(tarfile.GNU_FORMAT, "utf-8", "surrogateescape")


def stream(list_path, backups_folder):
    """Yield the tar of the files `list_path` lists, from the store's objects."""
    store = Store(backups_folder)
    for entry in lists.read(list_path):
        yield header(entry)
        sent = 0
        with open(store.path(entry.sha256), "rb") as f:
            while sent < entry.size and (chunk := f.read(min(CHUNK, entry.size - sent))):
                sent += len(chunk)
                yield chunk
        if sent != entry.size:  # the object changed under us: a truncated tar, never a wrong one
            raise OSError(f"the stored content of {entry.name} is shorter than listed")
        if entry.size % BLOCK:
            yield b"\0" * (BLOCK - entry.size % BLOCK)
    yield b"\0" * (2 * BLOCK)
