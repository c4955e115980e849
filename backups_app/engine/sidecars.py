"""A backup's sidecars: `NAME.sha256` (the format `sha256sum -c` reads) and `NAME.json` (the
manifest: row counts, and which check passed when). The one place a checksum line is written or
parsed."""

import json
import os
from pathlib import Path

from django.utils import timezone

from backups_app.core import files
from backups_app.core.files import create_locked, open_regular
from backups_app.engine.names import CHECKSUM_SUFFIX, MANIFEST_SUFFIX, SHA256_RE

CHECK_KINDS = ("quick", "full")
MANIFEST_MAX_BYTES = 1024 * 1024
CHECKSUM_MAX_BYTES = 4096


def checksum_line(name, digest):
    """A `.sha256` line for `name`, in the format `sha256sum -c` reads."""
    line = f"{digest}  {name}\n"
    if "\\" in name:  # coreutils' escaping: a leading backslash, then \\ for each backslash
        line = "\\" + line.replace("\\", "\\\\")
    return line


def write_checksum(path, digest, *, temp=None):
    """Write `NAME.sha256` beside a backup, in the format `sha256sum -c` reads."""
    return _write_sidecar(path, CHECKSUM_SUFFIX, checksum_line(Path(path).name, digest), temp=temp)


def read_manifest(path):
    """The `NAME.json` beside a backup as a dict, or None when there is none (or unreadable)."""
    path = Path(path)
    try:
        with open_regular(path.with_name(path.name + MANIFEST_SUFFIX)) as f:
            data = json.loads(f.read(MANIFEST_MAX_BYTES))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def new_manifest(counts, kind, *, by):
    """The manifest of a backup just checked: its row counts and which check passed when."""
    now = timezone.now().isoformat()
    return {
        "tables": dict(sorted(counts.items())),
        "counted_at": now,
        "check": {"kind": kind, "at": now, "by": by},
    }


def manifest_text(name, manifest):
    return json.dumps({"backup": name, **manifest}, indent=2) + "\n"


def write_manifest(path, counts=None, *, drill=None, check=None, temp=None):
    """Write or update `NAME.json` beside a backup: its row counts, its last check and drill.

    The counts are taken from the verified copy, which is the database as it was at the
    backup's moment; the restore drill compares a restored copy against them.
    """
    path = Path(path)
    data = read_manifest(path) or {"backup": path.name}
    if counts is not None:
        data["tables"] = dict(sorted(counts.items()))
        data["counted_at"] = timezone.now().isoformat()
    if drill is not None:
        data["drill"] = drill
    if check is not None:
        data["check"] = check
    return _write_sidecar(path, MANIFEST_SUFFIX, manifest_text(path.name, data), temp=temp)


def record_check(path, kind, by):
    """Record in a backup's manifest that its `kind` check ("quick"/"full") passed just now.

    `by` says who ran it ("backup", "drill", "restore", "upload"); the Backups page shows it.
    """
    if kind not in CHECK_KINDS:
        raise ValueError(f"unknown check kind {kind!r}")
    return write_manifest(path, check={"kind": kind, "at": timezone.now().isoformat(), "by": by})


def _write_sidecar(path, suffix, text, *, temp=None):
    """Write `NAME{suffix}` atomically through a temporary file.

    The temporary file is one a backup's `.partial` lock covers (`temp`), or is locked itself
    like one, so a backup starting now never takes it for debris and deletes it mid-write.
    """
    path = Path(path)
    sidecar = path.with_name(path.name + suffix)
    fd = None
    if temp is None:
        temp = files.temp_path(path.parent)
        fd = create_locked(temp)
    try:
        if fd is None:
            temp.write_text(text)
        else:
            os.write(fd, text.encode())
        os.replace(temp, sidecar)
    finally:
        if fd is not None:
            os.close(fd)
        temp.unlink(missing_ok=True)
    return sidecar


def read_checksum(path):
    """The digest in a backup's `.sha256`: None without one, "" when it holds no digest.

    The sidecar is never read through a symlink nor from a FIFO: that is not a checksum we trust.
    """
    path = Path(path)
    try:
        f = open_regular(path.with_name(path.name + CHECKSUM_SUFFIX))
    except FileNotFoundError:
        return None
    except OSError:
        return ""
    with f:
        return parse_checksum(f.read(CHECKSUM_MAX_BYTES))


def parse_checksum(data):
    """The SHA-256 a `.sha256` file's bytes hold (its first word, lower case), "" when none."""
    words = data[:CHECKSUM_MAX_BYTES].split()
    digest = words[0].decode("ascii", "replace").lstrip("\\").lower() if words else ""
    return digest if SHA256_RE.match(digest) else ""
