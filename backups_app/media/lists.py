"""`NAME.media`: a backup's list of site files, gzip'd JSON lines, one per regular file.

`{"path": "relative/posix/path", "size": N, "mtime": SECONDS, "mode": "0644", "sha256": HEX}`,
plus what makes the next backup's stat cache exact (`mtime_ns`, `ino`; no `ino` when the file
was too fresh to trust a later stat) and, for a name that is not UTF-8, `path_b64` (its bytes,
base64) beside a readable `path`. Paths are kept as bytes inside the code, byte for byte.
"""

import base64
import gzip
import io
import json
import os
import re
import stat
import zlib
from operator import itemgetter
from pathlib import Path
from typing import NamedTuple

SUFFIX = ".media"
SHA256_RE = re.compile(r"\A[0-9a-f]{64}\Z")
# One line per file; a line longer than this is no line of ours (a damaged or hostile list).
MAX_LINE = 64 * 1024
# A line's size and content as encode() writes them (size before sha256): one search over a
# whole list finds every content it names, 5x faster than decoding each line (named()).
CONTENT_RE = re.compile(r'"size":(\d+),[^\n]*?"sha256":"([0-9a-f]{64})"')


class ListError(Exception):
    """A NAME.media that cannot be read, or names a path outside the folder."""


class Entry(NamedTuple):
    path: bytes  # relative, b"/"-separated, as the file system names it
    size: int
    mtime_ns: int
    mode: int  # permission bits
    sha256: str
    ino: int = 0  # 0: do not trust a stat cache for this file
    line: bytes = b""  # as read from a list: written again as it is when nothing changed

    @property
    def name(self):
        """The path in words (for messages and pages)."""
        return self.path.decode("utf-8", "backslashreplace")


def list_path(backup_path):
    backup_path = Path(backup_path)
    return backup_path.with_name(backup_path.name + SUFFIX)


def encode(entry):
    if entry.line:
        return entry.line
    line = {
        "path": entry.name,
        "size": entry.size,
        "mtime": entry.mtime_ns / 1e9,
        "mode": f"{entry.mode:04o}",
        "sha256": entry.sha256,
        "mtime_ns": entry.mtime_ns,
    }
    try:
        entry.path.decode("utf-8")
    except UnicodeDecodeError:
        line["path_b64"] = base64.b64encode(entry.path).decode("ascii")
    if entry.ino:
        line["ino"] = entry.ino
    return (json.dumps(line, separators=(",", ":")) + "\n").encode()


def decode(raw):
    try:
        line = json.loads(raw)
        path = (
            base64.b64decode(line["path_b64"], validate=True)
            if "path_b64" in line
            else line["path"].encode("utf-8")
        )
        size, sha = int(line["size"]), str(line["sha256"])
        mtime_ns = int(line["mtime_ns"]) if "mtime_ns" in line else int(line["mtime"] * 1e9)
        mode = int(str(line.get("mode", "0644")), 8) & 0o7777
        ino = int(line.get("ino", 0))
    except (ValueError, KeyError, TypeError, AttributeError, UnicodeEncodeError) as err:
        raise ListError(f"a line of the list cannot be read ({err})") from None
    check_path(path)
    if size < 0 or not SHA256_RE.match(sha):
        raise ListError(f"the list's line for {path!r} is damaged")
    line = raw if raw.endswith(b"\n") else raw + b"\n"
    return Entry(path, size, mtime_ns, mode, sha, ino, line)


def check_path(path):
    """Refuse a path that could reach outside the folder or is no file name."""
    parts = path.split(b"/")
    if not path or b"\0" in path or any(p in (b"", b".", b"..") for p in parts):
        raise ListError(f"the list names {path!r}, which is not a path inside the folder")


class Writer:
    """Write a list as its entries arrive (memory flat), gzip'd, into an open binary file."""

    def __init__(self, fileobj):
        # Level 1: a list is read back once a night at most; its writing is on every backup.
        self.gz = gzip.GzipFile(fileobj=fileobj, mode="wb", compresslevel=1, mtime=0)
        self.buffer = io.BytesIO()

    def add(self, entry):
        self.buffer.write(encode(entry))
        if self.buffer.tell() > 256 * 1024:
            self._flush()

    def _flush(self):
        self.gz.write(self.buffer.getvalue())
        self.buffer = io.BytesIO()

    def close(self):
        self._flush()
        self.gz.close()


def read(path):
    """Yield the entries of the list at `path` (streamed); ListError when it is damaged."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as err:
        raise ListError(f"{Path(path).name} cannot be read: {err.strerror}") from None
    with open(fd, "rb") as raw, gzip.GzipFile(fileobj=raw) as gz:
        try:
            for line in iter(lambda: gz.readline(MAX_LINE), b""):
                if not line.endswith(b"\n"):
                    raise ListError(f"{Path(path).name} is damaged (a line is cut short)")
                yield decode(line)
        except (OSError, EOFError, zlib.error) as err:
            raise ListError(f"{Path(path).name} is damaged: not a whole gzip file") from err


def read_all(path):
    return list(read(path))


class Named(NamedTuple):
    sizes: dict  # {sha256: size} of each content the list names
    bytes: int  # the bytes of its files, each file counted (the same content twice too)


def named(path):
    """The contents the list at `path` names, read in one pass (retention, the clean-up and
    the offsite copies need no more of it); ListError when it is damaged."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as err:
        raise ListError(f"{Path(path).name} cannot be read: {err.strerror}") from None
    with open(fd, "rb") as raw:
        return named_in(raw.read(), Path(path).name)


def named_in(data, what):
    """What named() says of a list's bytes `data` (gzip'd); `what` names it in errors."""
    try:
        text = gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as err:
        raise ListError(f"{what} is damaged: not a whole gzip file") from err
    pairs = CONTENT_RE.findall(text.decode("utf-8", "surrogateescape"))
    if len(pairs) != text.count(b"\n") or (text and not text.endswith(b"\n")):
        # Not as encode() writes lines: each line decoded and checked.
        entries = [decode(line) for line in text.splitlines(keepends=True)]
        return Named({e.sha256: e.size for e in entries}, sum(e.size for e in entries))
    sizes = list(map(int, map(itemgetter(0), pairs)))
    return Named(dict(zip(map(itemgetter(1), pairs), sizes, strict=True)), sum(sizes))


def exists(backup_path):
    try:
        return stat.S_ISREG(os.stat(list_path(backup_path), follow_symlinks=False).st_mode)
    except OSError:
        return False
