"""Reading a finished copy on both cores: hash or gzip it while the database check reads it."""

import hashlib
import os
import threading
from collections import deque
from concurrent.futures import ThreadPoolExecutor

from backups_app.core import files
from backups_app.core.files import open_regular

try:  # zlib-ng deflates 2-3x faster than zlib for the same ratio (bench/backup.py --tune)
    from zlib_ng import zlib_ng as deflate

    GZIP_LEVEL = 3  # on a 1 GB backup: ~4% larger than gzip -6 for a fifth of its CPU
except ImportError:  # pragma: no cover
    import zlib as deflate

    GZIP_LEVEL = 4  # ~5% larger than gzip -6 for half of its CPU


# Each block is one gzip member, compressed on its own core; 1 MB blocks compress as well as
# 16 MB ones (bench/backup.py --tune) and keep memory low: a few blocks are in flight.
GZIP_BLOCK = 1024 * 1024
READ_CHUNK = 1024 * 1024
FLUSH_EVERY = 32 * 1024 * 1024


class Cancelled(Exception):
    """A helper thread stopped because the main step failed; never seen by callers."""


def _alongside(main, side):
    """Run `side(cancel)` in a thread while `main(cancel)` runs here; return main's result.

    Both read the finished copy and release the GIL (sqlite3, hashlib, zlib), so they use
    both cores. When one fails the other is told to stop, and the real error is raised.
    """
    cancel = threading.Event()

    def run_side():
        try:
            return side(cancel)
        except BaseException:
            cancel.set()
            raise

    with ThreadPoolExecutor(max_workers=1) as pool:
        future = pool.submit(run_side)
        try:
            result = main(cancel)
            side_result = future.result()
        except Cancelled:
            future.result()  # main stopped because the side failed: raise the side's error
            raise
        except BaseException:
            cancel.set()
            raise
    return result, side_result


def verify_and_hash(partial, check, progress, *, alongside=True):
    """Run `check(cancel)` (the database check: row counts) while hashing and flushing the
    copy; return (SHA-256, row counts).

    Not `alongside`: one after the other on one core, when the other core is wanted for
    something else meanwhile (a restore's copy, which the site's writers wait for).
    """
    if progress:
        progress("verify", 0, 0)

    def hash_and_flush(cancel):
        digest = _sha256_of(partial, cancel)
        files.fsync(partial)
        return digest

    if not alongside:
        never = threading.Event()
        counts = check(never)
        return hash_and_flush(never), counts
    return _alongside(hash_and_flush, check)


def verify_and_gzip(partial, gz, check, progress):
    """Compress the copy while `check(cancel)` reads it; return (SHA-256 of the .gz, counts)."""
    return _alongside(lambda cancel: _gzip(partial, gz, progress, cancel), check)


def sha256_of(path):
    return _sha256_of(path)


def _sha256_of(path, cancel=None):
    digest = hashlib.sha256()
    with open_regular(path) as f:
        while chunk := f.read(READ_CHUNK):
            if cancel is not None and cancel.is_set():
                raise Cancelled
            digest.update(chunk)
    return digest.hexdigest()


def _gzip(source, dest, progress=None, cancel=None):
    """gzip `source` into `dest` on every core; return the SHA-256 of what was written.

    The output is a series of gzip members, one per GZIP_BLOCK, compressed in parallel
    (zlib releases the GIL); `gunzip` and `zcat` read such a file as one stream. At most
    two blocks per worker are in flight, so memory stays flat whatever the database size.
    """
    workers = max(1, os.cpu_count() or 1)
    total = source.stat().st_size
    digest = hashlib.sha256()
    done = 0
    pending = deque()
    with (
        open(source, "rb") as fin,
        open(os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as fout,
        ThreadPoolExecutor(max_workers=workers) as pool,
    ):
        written = flushed = 0

        def write_next():
            nonlocal written, flushed
            member = pending.popleft().result()
            fout.write(member)
            digest.update(member)
            written += len(member)
            if written - flushed >= FLUSH_EVERY:  # flush as we go, as _watch_size does
                fout.flush()
                os.fdatasync(fout.fileno())
                flushed = written

        try:
            while block := fin.read(GZIP_BLOCK):
                if cancel is not None and cancel.is_set():
                    raise Cancelled
                pending.append(pool.submit(deflate.compress, block, GZIP_LEVEL, 31))
                done += len(block)
                if len(pending) >= 2 * workers:
                    write_next()
                    if progress:
                        progress("compress", done, total)
            while pending:
                write_next()
            fout.flush()
            os.fsync(fout.fileno())
        except BaseException:
            for future in pending:
                future.cancel()
            raise
    return digest.hexdigest()
